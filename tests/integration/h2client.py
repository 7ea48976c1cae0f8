"""A minimal HTTP/2 client for the tests: cleartext with prior knowledge,
or, when the stack speaks TLS (conftest.TLS), TLS with ALPN h2 (a server
that does not choose h2 fails the request).

Enough to put many GET requests in flight on one connection and read their
answers: the preface, SETTINGS (acknowledged), one HEADERS frame per
request with HPACK literals that need no table (as bench/h2c.c builds
them), and per stream the status (the first field of the answer's header
block: an indexed static entry or a literal with the :status name) and the
DATA.  (curl 7.88's --http2-prior-knowledge fails the second request of a
reused connection, so the tests do not use it.)
"""

import struct

from conftest import TLS, open_socket

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, high=0):
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([high | value])
    out = bytearray([high | top])
    value -= top
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name_index, value):
    """A literal field without indexing, with a static name and a raw value."""
    v = value.encode()
    return hpack_int(name_index, 4) + hpack_int(len(v), 7) + v


def get_headers(path, tok):
    block = bytes([0x82, 0x86]) + literal(4, path) + literal(1, "localhost")
    if tok is not None:
        block += literal(23, "Bearer " + tok)
    return block


def status_of(block, flags):
    if flags & PADDED:
        block = block[1:len(block) - block[0]]
    if flags & PRIORITY:
        block = block[5:]
    if block and block[0] & 0x80:
        return STATIC_STATUS.get(block[0] & 0x7F, 0)
    if len(block) >= 5 and block[0] in (0x48, 0x08, 0x18) and block[1] == 3:
        return int(block[2:5])
    return 0


def get_many(port, requests, timeout=20):
    """Sends every (path, token) request on one new connection, all in one
    write, and returns [(status, body bytes)] in request order (status 0
    for a stream the server reset).  Raises on a timeout or a closed
    connection before every stream ended."""
    sock = open_socket(port, timeout, alpn=("h2",))
    try:
        if TLS and sock.selected_alpn_protocol() != "h2":
            raise ConnectionError("ALPN chose %r, not h2" % (sock.selected_alpn_protocol(),))
        out = PREFACE + frame(SETTINGS, 0, 0)
        for i, (path, tok) in enumerate(requests):
            out += frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, get_headers(path, tok))
        sock.sendall(out)
        answers = {2 * i + 1: [0, b""] for i in range(len(requests))}
        open_streams = set(answers)
        buf = b""
        while open_streams:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed with streams %s open" % sorted(open_streams))
            buf += chunk
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                ftype, flags = buf[3], buf[4]
                stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload, buf = buf[9:9 + length], buf[9 + length:]
                if ftype == SETTINGS and not flags & ACK:
                    sock.sendall(frame(SETTINGS, ACK, 0))
                elif ftype == PING and not flags & ACK:
                    sock.sendall(frame(PING, ACK, 0, payload))
                elif ftype == GOAWAY:
                    raise ConnectionError("GOAWAY with streams %s open" % sorted(open_streams))
                elif ftype == RST_STREAM and stream in open_streams:
                    open_streams.discard(stream)
                elif ftype == HEADERS and stream in answers:
                    answers[stream][0] = status_of(payload, flags)
                elif ftype == DATA and stream in answers:
                    answers[stream][1] += payload
                if ftype in (HEADERS, DATA) and flags & END_STREAM:
                    open_streams.discard(stream)
        return [tuple(answers[2 * i + 1]) for i in range(len(requests))]
    finally:
        sock.close()
