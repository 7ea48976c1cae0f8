"""RFC 6455 behaviour at the frame level, with a raw socket.

Each violation must end in the documented close code (docs/protocol.md), and
the worker must go on serving: every test ends by checking that a fresh
connection still completes a send.  The handshake's own rules (426, tokens
in lists, the subprotocol, the token as a subprotocol entry, the handshake
timeout) and the echo endpoint (/echo, `minichat_ws_echo`) are tested here
too; tests/integration/test_conformance.py runs Autobahn against the echo.
"""

import base64
import json
import os
import socket
import ssl
import struct
import time

from conftest import NGINX_PORTS, SUBPROTOCOL, cid, connect, create_room, open_socket, run_async, token, uid

TIMEOUT = 5.0


def upgrade_request(path, headers=None, version="13"):
    """An upgrade request for path; headers (name -> value, None drops one)
    change or add to the usual ones."""
    h = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": version}
    h.update(headers or {})
    return ("GET %s HTTP/1.1\r\n" % path
            + "".join("%s: %s\r\n" % (k, v) for k, v in h.items() if v is not None) + "\r\n").encode()


def read_head(sock):
    """Reads a response head; returns (status, head in lower case, bytes after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, head.lower(), rest


def handshake(path, headers=None, version="13", node="a"):
    """Sends an upgrade request; returns (status, head in lower case)."""
    with open_socket(NGINX_PORTS[node], TIMEOUT) as sock:
        sock.sendall(upgrade_request(path, headers, version))
        status, head, _ = read_head(sock)
        return status, head


class RawWS:
    """A minimal client that can send frames no library would send.  On /ws
    it expects hello; on /echo (no token) nothing comes first.  `port`
    (instead of a node's), `source` (a loopback source address), `tok` (a
    token of the test's) and `rcvbuf` (SO_RCVBUF, set before connecting)
    serve tests that run an nginx of their own."""

    def __init__(self, user=None, node="a", path=None, port=None, source=None, tok=None, rcvbuf=None):
        self.sock = open_socket(port or NGINX_PORTS[node], TIMEOUT, source, rcvbuf=rcvbuf)
        if path is None:
            path = "/ws?token=" + (tok or token(user))
            headers = {"Sec-WebSocket-Protocol": SUBPROTOCOL}
        else:
            headers = {}
        self.sock.sendall(upgrade_request(path, headers))
        status, head, self.buf = read_head(self.sock)
        assert status == 101, head
        if path.startswith("/ws"):
            assert b"sec-websocket-protocol: minichat.v1" in head, head
            hello = self.recv_frame()
            assert hello[0] == 0x1 and json.loads(hello[1])["op"] == "hello", hello

    def frame(self, opcode, payload, fin=True, mask=True, rsv=0, length=None):
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload) if length is None else length
        if n < 126:
            hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            key = os.urandom(4)
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
            hdr += key
        return hdr + payload

    def send(self, opcode, payload, **kw):
        self.sock.sendall(self.frame(opcode, payload, **kw))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        b0, b1 = self._read(2)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7f
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x0f, self._read(n)

    def _take_frame(self):
        """The next whole frame in the buffer, or None (nothing is read)."""
        if len(self.buf) < 2:
            return None
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n, at = b1 & 0x7f, 2
        if n == 126:
            if len(self.buf) < 4:
                return None
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            if len(self.buf) < 10:
                return None
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        if len(self.buf) < at + n:
            return None
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return b0 & 0x0f, payload

    def read_until_close_sending(self, chunks, every=0.001):
        """Frames until the server's close frame while sending, in between,
        the byte strings `chunks` yields (one each turn, or every `every`
        seconds when nothing came), all from this one thread: a TLS socket
        must not be read and written by two threads at once (an OpenSSL
        object is not thread-safe, and Python does not lock it).  Sending
        stops at the first error or timeout (a client that stops writing
        midway is fine: the server drops the rest).  Returns (the frames,
        (opcode, payload), read before the close frame, its code, its
        reason); code and reason are None when the connection ended without
        one."""
        frames = []
        sending = iter(chunks)
        self.sock.settimeout(every)
        try:
            while True:
                f = self._take_frame()
                while f is not None:
                    if f[0] == 0x8:
                        return frames, struct.unpack("!H", f[1][:2])[0], f[1][2:].decode()
                    frames.append(f)
                    f = self._take_frame()
                try:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        return frames, None, None
                    self.buf += chunk
                except (socket.timeout, ssl.SSLWantReadError):
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    return frames, None, None
                if sending is not None:
                    try:
                        self.sock.sendall(next(sending))
                    except (StopIteration, OSError):
                        sending = None
        finally:
            self.sock.settimeout(TIMEOUT)

    def expect_close(self, code):
        """Reads frames until a close frame; asserts its code, then EOF."""
        while True:
            op, payload = self.recv_frame()
            if op == 0x8:
                got = struct.unpack("!H", payload[:2])[0]
                assert got == code, "close code %d, expected %d (%r)" % (got, code, payload[2:])
                break
        # the server closes the TCP connection after its close frame
        try:
            while self.sock.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout, ssl.SSLError):
            pass

    def close(self):
        self.sock.close()


async def worker_still_serves(user, room):
    c = await connect(user, "a")
    try:
        r = await c.request({"op": "send", "id": 1, "room": room, "cid": cid(), "body": "still here"})
        assert r["op"] == "ack", r
    finally:
        await c.close()


def room_for(u):
    return create_room(u, [u, uid()])


def check_violation(build, code):
    u = uid()
    room = room_for(u)
    ws = RawWS(u)
    try:
        build(ws)
        ws.expect_close(code)
    finally:
        ws.close()
    run_async(worker_still_serves)(u, room)


def test_unmasked_frame_is_1002():
    check_violation(lambda ws: ws.send(0x1, b'{"op":"x"}', mask=False), 1002)


def test_reserved_bits_are_1002():
    check_violation(lambda ws: ws.send(0x1, b'{"op":"x"}', rsv=4), 1002)


def test_unknown_opcode_is_1002():
    check_violation(lambda ws: ws.send(0x3, b"x"), 1002)


def test_continuation_without_start_is_1002():
    check_violation(lambda ws: ws.send(0x0, b"x"), 1002)


def test_fragmented_ping_is_1002():
    check_violation(lambda ws: ws.send(0x9, b"x", fin=False), 1002)


def test_binary_frame_is_1003():
    check_violation(lambda ws: ws.send(0x2, b"\x00\x01"), 1003)


def test_invalid_utf8_is_1007():
    check_violation(lambda ws: ws.send(0x1, b'{"op":"send","body":"\xc0\xaf"}'), 1007)


def test_invalid_utf8_across_fragments_is_1007():
    def build(ws):
        ws.send(0x1, b'{"body":"\xe2\x82', fin=False)   # valid only with the next byte
        ws.send(0x0, b'"}')
    check_violation(build, 1007)


def test_announced_oversize_is_1009_before_the_payload():
    # only the header is sent: the server must refuse on the announced length
    check_violation(lambda ws: ws.sock.sendall(ws.frame(0x1, b"", length=10 * 1024 * 1024)[:14]), 1009)


def test_fragments_adding_up_too_big_are_1009():
    def build(ws):
        chunk = b"x" * 40000
        ws.send(0x1, chunk, fin=False)
        ws.send(0x0, chunk, fin=False)            # 80000 > 64k
    check_violation(build, 1009)


def test_bad_close_code_is_1002():
    check_violation(lambda ws: ws.send(0x8, struct.pack("!H", 999)), 1002)


def test_close_is_echoed():
    check_violation(lambda ws: ws.send(0x8, struct.pack("!H", 1000) + b"bye"), 1000)


def test_ping_gets_pong_with_payload():
    u = uid()
    ws = RawWS(u)
    try:
        ws.send(0x9, b"are you there")
        op, payload = ws.recv_frame()
        assert (op, payload) == (0xA, b"are you there")
    finally:
        ws.close()


def test_fragmented_request_and_interleaved_ping():
    u = uid()
    room = room_for(u)
    ws = RawWS(u)
    try:
        msg = json.dumps({"op": "send", "id": 5, "room": room, "cid": cid(), "body": "in three pieces"}).encode()
        ws.send(0x1, msg[:10], fin=False)
        ws.send(0x9, b"p")                      # control frames may come between fragments
        ws.send(0x0, msg[10:20], fin=False)
        ws.send(0x0, msg[20:])
        op, payload = ws.recv_frame()
        assert (op, payload) == (0xA, b"p")
        op, payload = ws.recv_frame()
        ack = json.loads(payload)
        assert op == 0x1 and ack["op"] == "ack" and ack["id"] == 5 and ack["seq"] == 1, ack
    finally:
        ws.close()


def test_pipelined_frames_in_one_segment():
    u = uid()
    room = room_for(u)
    ws = RawWS(u)
    try:
        frames = b"".join(ws.frame(0x1, json.dumps({"op": "send", "id": i, "room": room, "cid": cid(),
                                                     "body": "m%d" % i}).encode()) for i in range(20))
        ws.sock.sendall(frames)
        seqs = []
        for _ in range(20):
            op, payload = ws.recv_frame()
            seqs.append(json.loads(payload)["seq"])
        assert seqs == list(range(1, 21)), seqs
    finally:
        ws.close()


# --- the handshake -----------------------------------------------------------

def test_version_other_than_13_is_426_naming_13():
    for path in ("/ws?token=" + token(uid()), "/echo"):
        for version in ("8", "14", "13, 8"):
            status, head = handshake(path, version=version)
            assert status == 426, (path, version, head)
            assert b"\r\nsec-websocket-version: 13" in head, head


def test_upgrade_and_connection_tokens_in_lists_any_case():
    path = "/ws?token=" + token(uid())
    ok = [{"Upgrade": "WebSocket", "Connection": "keep-alive, UPGRADE"},
          {"Upgrade": "websocket", "Connection": "Upgrade,keep-alive"},
          {"Upgrade": "h2c, websocket", "Connection": "close , upgrade"}]
    for headers in ok:
        status, head = handshake(path, headers)
        assert status == 101, (headers, head)
    for headers in ({"Connection": "keep-alive"}, {"Upgrade": "websocketx"}, {"Connection": "upgrades"},
                    {"Upgrade": None}, {"Sec-WebSocket-Key": None}, {"Sec-WebSocket-Key": "short"}):
        status, head = handshake(path, headers)
        assert status == 400, (headers, head)


def test_subprotocol_negotiated():
    path = "/ws?token=" + token(uid())
    status, head = handshake(path, {"Sec-WebSocket-Protocol": "chat.other, minichat.v1"})
    assert status == 101 and b"\r\nsec-websocket-protocol: minichat.v1\r\n" in head + b"\r\n", head
    # none offered: none named
    status, head = handshake(path)
    assert status == 101 and b"sec-websocket-protocol" not in head, head
    # offered, but not ours
    status, head = handshake(path, {"Sec-WebSocket-Protocol": "chat.other"})
    assert status == 400, head


def test_token_as_a_subprotocol_entry():
    """Browsers cannot set Authorization on an upgrade: the JWT may come as a
    Sec-WebSocket-Protocol entry "bearer.<JWT>", next to minichat.v1, and is
    never named back."""
    u = uid()
    with open_socket(NGINX_PORTS["b"], TIMEOUT) as sock:
        sock.sendall(upgrade_request("/ws", {"Sec-WebSocket-Protocol": "minichat.v1, bearer." + token(u)}))
        status, head, rest = read_head(sock)
        assert status == 101, head
        assert b"\r\nsec-websocket-protocol: minichat.v1" in head and b"bearer" not in head, head
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7f):
            rest += sock.recv(4096)
        hello = json.loads(rest[2:2 + (rest[1] & 0x7f)])
        assert hello["op"] == "hello" and hello["user"] == u, hello
    good = token(u)
    for entry in ("bearer." + good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), "bearer.", "Bearer." + good):
        status, head = handshake("/ws", {"Sec-WebSocket-Protocol": "minichat.v1, " + entry})
        assert status == 401, (entry, head)


def test_slow_upgrade_request_is_cut_off_by_the_handshake_timeout():
    """A slowloris: the upgrade request a byte at a time, past the dev
    stack's minichat_handshake_timeout (3s), is refused with 408, which nginx
    answers as it does a header timeout: it closes without a response."""
    req = upgrade_request("/ws?token=" + token(uid()), {"Sec-WebSocket-Protocol": SUBPROTOCOL})
    with open_socket(NGINX_PORTS["a"], TIMEOUT) as sock:
        pause = 4.0 / len(req)
        for i in range(len(req)):
            sock.sendall(req[i:i + 1])
            time.sleep(pause)
        status, head, rest = read_head(sock)
        assert (status, head, rest) == (0, b"", b""), head


def test_16mib_frame_gets_its_1009_while_the_client_still_sends():
    """Lingering close: the server's close frame reaches a client that is
    still writing a frame it will never read (no reset throws it away)."""
    u = uid()
    room = room_for(u)
    ws = RawWS(u)
    n = 16 * 1024 * 1024
    data = ws.frame(0x1, b"", length=n)[:14] + b"x" * n     # the payload unmasked: it is never read
    chunks = (data[i:i + 65536] for i in range(0, len(data), 65536))
    try:
        frames, code, reason = ws.read_until_close_sending(chunks, every=0.0005)
        assert code == 1009, (frames, code, reason)
    finally:
        ws.close()
    run_async(worker_still_serves)(u, room)


# --- the echo endpoint (minichat_ws_echo) -------------------------------------

def test_echo_sends_messages_back_as_they_came():
    ws = RawWS(path="/echo")
    try:
        ws.send(0x1, "héllo".encode())
        assert ws.recv_frame() == (0x1, "héllo".encode())
        ws.send(0x2, b"\x00\xff\x01")
        assert ws.recv_frame() == (0x2, b"\x00\xff\x01")
        # fragments become one message; a ping between them is answered first
        ws.send(0x2, b"ab", fin=False)
        ws.send(0x9, b"p")
        ws.send(0x0, b"cd", fin=False)
        ws.send(0x0, b"ef")
        assert ws.recv_frame() == (0xA, b"p")
        assert ws.recv_frame() == (0x2, b"abcdef")
        # larger than the chat's 64k limit: the echo has its own
        big = os.urandom(200000)
        ws.send(0x2, big)
        assert ws.recv_frame() == (0x2, big)
        ws.send(0x8, struct.pack("!H", 1000))
        ws.expect_close(1000)
    finally:
        ws.close()


def test_echo_fails_invalid_utf8_at_the_fragment_that_breaks_it():
    ws = RawWS(path="/echo")
    try:
        # the message would go on, but its first fragment can never be UTF-8
        ws.send(0x1, b"ok \xed\xa0\x80", fin=False)
        ws.expect_close(1007)
    finally:
        ws.close()


def test_echo_keeps_the_frame_rules():
    for build, code in ((lambda ws: ws.send(0x1, b"x", mask=False), 1002),
                        (lambda ws: ws.send(0x8, struct.pack("!H", 1015)), 1002),
                        (lambda ws: ws.send(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),
                        (lambda ws: ws.send(0x1, b"", length=17 * 1024 * 1024), 1009)):
        ws = RawWS(path="/echo")
        try:
            build(ws)
            ws.expect_close(code)
        finally:
            ws.close()

