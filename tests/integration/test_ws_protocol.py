"""RFC 6455 behaviour at the frame level, with a raw socket.

Each violation must end in the documented close code (docs/protocol.md), and
the worker must go on serving: every test ends by checking that a fresh
connection still completes a send.
"""

import base64
import json
import os
import socket
import struct

from conftest import NGINX_PORTS, SUBPROTOCOL, cid, connect, create_room, run_async, token, uid

TIMEOUT = 5.0


class RawWS:
    """A minimal client that can send frames no library would send."""

    def __init__(self, user, node="a"):
        self.sock = socket.create_connection(("127.0.0.1", NGINX_PORTS[node]), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET /ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: %s\r\n\r\n" % (token(user), key, SUBPROTOCOL))
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"minichat.v1" in head, head
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
        except (ConnectionResetError, socket.timeout):
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
