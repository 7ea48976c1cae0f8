"""permessage-deflate (RFC 7692) on the chat (/ws) and the echo (/echo),
which the dev stack turns on (`minichat_ws_deflate on`, threshold 256).

Interoperability with Python `websockets` with and without compression, and
at the frame level with a raw client that sees RSV1: what is negotiated for
which offer, large messages compressed and small ones plain, every
compressed message inflating on its own (the server keeps no context, so a
fan-out compresses once), client context takeover, and the failures: a
deflate bomb closes with 1009, corrupt data with 1007, RSV1 where it may not
be with 1002, and the worker goes on serving.
"""

import asyncio
import json
import os
import struct
import zlib

import websockets

from conftest import (NGINX_PORTS, SUBPROTOCOL, WS_SCHEME, connect, create_room, open_socket, run_async, token, uid,
                      ws_open, ws_url)
from test_ws_protocol import RawWS, handshake, read_head, upgrade_request, worker_still_serves, room_for

TIMEOUT = 5.0
PMD = "permessage-deflate"


def compress(data, z=None, wbits=15):
    """One message's compressed bytes (the sync flush's tail removed); z
    keeps context across messages when given."""
    z = z or zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate_alone(payload, wbits=15):
    """Inflates a message with a fresh context: fails if it refers back."""
    d = zlib.decompressobj(-wbits)
    return d.decompress(payload + b"\x00\x00\xff\xff") + d.flush()


class DeflateWS(RawWS):
    """A raw client that offers permessage-deflate (offer: the header value)."""

    def __init__(self, offer=PMD, user=None, node="a", path=None):
        self.sock = open_socket(NGINX_PORTS[node], TIMEOUT)
        if path is None:
            path = "/ws?token=" + token(user)
            headers = {"Sec-WebSocket-Protocol": SUBPROTOCOL, "Sec-WebSocket-Extensions": offer}
        else:
            headers = {"Sec-WebSocket-Extensions": offer}
        self.sock.sendall(upgrade_request(path, headers))
        status, self.head, self.buf = read_head(self.sock)
        assert status == 101, self.head
        if path.startswith("/ws"):
            hello = self.recv_frame_rsv()
            assert hello[0] == 0x1 and not hello[1] and json.loads(hello[2])["op"] == "hello", hello

    def recv_frame_rsv(self):
        """(opcode, rsv1, payload) of the next frame."""
        b0, b1 = self._read(2)
        assert not b1 & 0x80, "server frames must not be masked"
        assert not b0 & 0x30, "RSV2/RSV3 set"
        n = b1 & 0x7f
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x0f, bool(b0 & 0x40), self._read(n)

    def recv_message(self, wbits=15):
        """(opcode, rsv1, text) of the next data frame, inflated when compressed."""
        while True:
            op, rsv1, payload = self.recv_frame_rsv()
            if op in (0x1, 0x2):
                return op, rsv1, inflate_alone(payload, wbits) if rsv1 else payload


def extension_of(head):
    for line in head.split(b"\r\n"):
        if line.startswith(b"sec-websocket-extensions:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


# --- negotiation -------------------------------------------------------------

def test_negotiation_answers_the_first_acceptable_offer():
    cases = [
        (PMD, "permessage-deflate; server_no_context_takeover"),
        ("permessage-deflate; client_max_window_bits", "permessage-deflate; server_no_context_takeover"),
        ("permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
         "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_no_context_takeover"),
        # 8 is declined (zlib cannot deflate raw with 256 bytes): the next offer is taken
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9",
         "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"),
        ("x-unknown; a=1, permessage-deflate; bogus, permessage-deflate; server_no_context_takeover",
         "permessage-deflate; server_no_context_takeover"),
        ('permessage-deflate; server_max_window_bits="12"',
         "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
        # nothing acceptable, or a malformed header: no extension, still a WebSocket
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
        ("permessage-deflate; server_max_window_bits=", None),
        ("permessage-deflate;; server_no_context_takeover", None),
        ("x-webkit-deflate-frame", None),
    ]
    for offer, want in cases:
        for path in ("/echo", "/ws?token=" + token(uid())):
            headers = {"Sec-WebSocket-Extensions": offer}
            if path.startswith("/ws"):
                headers["Sec-WebSocket-Protocol"] = SUBPROTOCOL
            status, head = handshake(path, headers)
            assert status == 101, (offer, head)
            assert extension_of(head) == want, (path, offer, head)


def test_no_offer_no_extension():
    status, head = handshake("/echo")
    assert status == 101 and extension_of(head) is None, head


# --- the chat with Python websockets -----------------------------------------

async def chat_pair(compression_a, compression_b):
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await ws_open(ws_url("a", token(a)), subprotocols=[SUBPROTOCOL], compression=compression_a,
                       open_timeout=TIMEOUT, close_timeout=2)
    cb = await ws_open(ws_url("b", token(b)), subprotocols=[SUBPROTOCOL], compression=compression_b,
                       open_timeout=TIMEOUT, close_timeout=2)
    return room, ca, cb


async def recv_op(ws, op, **fields):
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if f.get("op") == op and all(f.get(k) == v for k, v in fields.items()):
            return f


@run_async
async def test_websockets_chat_with_and_without_compression():
    for ca_comp, cb_comp in (("deflate", "deflate"), (None, "deflate"), ("deflate", None), (None, None)):
        room, ca, cb = await chat_pair(ca_comp, cb_comp)
        try:
            for ws, comp in ((ca, ca_comp), (cb, cb_comp)):
                names = [e.name for e in ws.extensions]
                assert names == ([PMD] if comp else []), (comp, names)
            await recv_op(ca, "hello")
            await recv_op(cb, "hello")
            # one message well above the threshold, one below it
            for body in ("compress me " * 500, "tiny"):
                await ca.send(json.dumps({"op": "send", "id": 1, "room": room, "cid": os.urandom(8).hex(),
                                          "body": body}))
                ack = await recv_op(ca, "ack", room=room)
                m = await recv_op(cb, "msg", room=room, seq=ack["seq"])
                assert m["body"] == body, (ca_comp, cb_comp, m["body"][:50])
        finally:
            await ca.close()
            await cb.close()


@run_async
async def test_websockets_echo_large_messages_both_ways():
    async with ws_open("%s://127.0.0.1:%d/echo" % (WS_SCHEME, NGINX_PORTS["a"]), max_size=2**24,
                       open_timeout=TIMEOUT) as ws:
        assert [e.name for e in ws.extensions] == [PMD]
        for n in (0, 10, 255, 256, 5000, 1 << 20):
            text = ("abcdefgh%d " % n * (n // 8 + 1))[:n]
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == text
        data = os.urandom(100000)   # does not compress: comes back plain
        await ws.send(data)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == data


# --- frames on the wire -------------------------------------------------------

@run_async
async def test_fanout_frames_compressed_above_threshold_without_context():
    """Two raw recipients with the same parameters get a large message with
    RSV1 and the same compressed bytes, each inflating with a fresh context;
    a small one arrives plain; an event frame (read) too."""
    sender, r1, r2 = uid(), uid(), uid()
    room = create_room(sender, [sender, r1, r2])
    w1 = DeflateWS(user=r1)
    w2 = DeflateWS(user=r2)
    assert extension_of(w1.head) == "permessage-deflate; server_no_context_takeover"
    c = await connect(sender, "a")
    try:
        long_body = "the same words again and again " * 100
        got = {}
        for body in (long_body, "short", long_body):
            a = await c.send_msg(room, body)
            assert a["op"] == "ack", a
            frames = []
            for w in (w1, w2):
                while True:     # presence and other events may come first
                    op, rsv1, payload = w.recv_frame_rsv()
                    text = inflate_alone(payload) if rsv1 else payload
                    if op == 0x1 and json.loads(text).get("op") == "msg":
                        break
                m = json.loads(text)
                assert m["seq"] == a["seq"] and m["body"] == body, m
                assert rsv1 == (len(text) >= 256), (len(text), rsv1)
                frames.append(payload)
            assert len(frames) == 2 and frames[0] == frames[1], "recipients got different bytes"
            got.setdefault(body, []).append(frames[0])
        # the same body twice compresses to about the same length: no context
        # was carried over from the first (only seq, cid and ts differ)
        first, second = got[long_body]
        assert abs(len(first) - len(second)) <= 4, (len(first), len(second))
    finally:
        await c.close()
        w1.close()
        w2.close()


def test_echo_window_bits_and_client_takeover():
    """server_max_window_bits=9 is honoured (the frames inflate with a
    512-byte window); the client keeps its context across messages."""
    w = DeflateWS("permessage-deflate; server_max_window_bits=9", path="/echo")
    assert "server_max_window_bits=9" in extension_of(w.head)
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    try:
        text = ("window %d " * 200 % tuple(range(200))).encode()
        for i in range(3):
            body = compress(text, z)
            if i:
                assert len(body) < 40, len(body)   # refers back to the previous message
            w.send(0x1, body, rsv=4)
            op, rsv1, payload = w.recv_message(wbits=9)
            assert op == 0x1 and rsv1 and payload == text
    finally:
        w.close()


def test_echo_fragmented_compressed_message():
    w = DeflateWS(path="/echo")
    try:
        text = ("fragment me " * 1000).encode()
        body = compress(text)
        parts = [body[i:i + 100] for i in range(0, len(body), 100)]
        for i, part in enumerate(parts):
            # RSV1 on the first frame only; a ping in between is fine
            w.send(0x1 if i == 0 else 0x0, part, fin=i == len(parts) - 1, rsv=4 if i == 0 else 0)
            if i == 1:
                w.send(0x9, b"p")
        op, rsv1, payload = w.recv_message()
        assert op == 0x1 and payload == text
    finally:
        w.close()


def test_client_no_context_takeover_resets_per_message():
    """With client_no_context_takeover each message is inflated alone: a
    back reference to the previous message is invalid data (1007)."""
    w = DeflateWS("permessage-deflate; client_no_context_takeover", path="/echo")
    try:
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        text = ("no takeover " * 100).encode()
        w.send(0x1, compress(text, z), rsv=4)
        assert w.recv_message()[2] == text
        w.send(0x1, compress(text, z), rsv=4)
        w.expect_close(1007)
    finally:
        w.close()


# --- failures -----------------------------------------------------------------

@run_async
async def test_deflate_bomb_is_1009_on_chat_and_echo():
    u = uid()
    room = room_for(u)
    bomb = compress(b" " * (16 << 20))       # 16 MiB of spaces in about 16 KiB
    assert len(bomb) < 20000
    # the chat's limit is 64k: a bomb in one frame, and one in fragments
    w = DeflateWS(user=u)
    w.send(0x1, bomb, rsv=4)
    w.expect_close(1009)
    w.close()
    w = DeflateWS(user=u)
    w.send(0x1, bomb[:1000], fin=False, rsv=4)
    w.send(0x0, bomb[1000:])
    w.expect_close(1009)
    w.close()
    # the echo's limit is 16m: just past it
    w = DeflateWS(path="/echo")
    w.send(0x2, compress(b"\0" * ((16 << 20) + 1)), rsv=4)
    w.expect_close(1009)
    w.close()
    await worker_still_serves(u, room)


@run_async
async def test_bad_compressed_frames_close():
    u = uid()
    room = room_for(u)
    cases = [
        # corrupt deflate data (a reserved block type)
        (lambda w: w.send(0x1, b"\xff\xff\xff", rsv=4), 1007),
        # valid deflate, invalid UTF-8 inside a text message
        (lambda w: w.send(0x1, compress(b"\xc3\x28 bad"), rsv=4), 1007),
        # RSV1 on a continuation frame, and on a control frame
        (lambda w: (w.send(0x1, compress(b"a"), fin=False, rsv=4), w.send(0x0, b"", rsv=4)), 1002),
        (lambda w: w.send(0x9, b"", rsv=4), 1002),
        # RSV2 is still reserved
        (lambda w: w.send(0x1, compress(b"a"), rsv=2), 1002),
    ]
    for act, code in cases:
        for kw in ({"user": u}, {"path": "/echo"}):
            w = DeflateWS(**kw)
            act(w)
            w.expect_close(code)
            w.close()
    # without the extension RSV1 stays a protocol error
    w = RawWS(path="/echo")
    w.send(0x1, compress(b"hello"), rsv=4)
    w.expect_close(1002)
    w.close()
    await worker_still_serves(u, room)
