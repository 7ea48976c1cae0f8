"""A WebSocket connection after the hand-off (docs/ARCHITECTURE.md, "Memory
per connection").

At the first event after the 101 the module frees the HTTP request, its
pool and the client header buffers, and runs the connection itself.  These
tests check that nothing the connection needs went with them: the access
log's line for the upgrade is written then (while the connection is still
open, the token hidden), chat ops, permessage-deflate and pings work on
both sides, frames that came in the same segment as a long upgrade request
(read into a large header buffer) are handled, and a wss:// connection
through an nginx of the test's own (TLS, a self-signed certificate) works
and gets 1001 when that nginx shuts down.  The close codes (test_ws_protocol),
the token's expiry (4001, test_tokens) and a reload (1001, test_reload) run on
handed-off connections too.
"""

import asyncio
import json
import os
import socket
import time

import websockets

from conftest import SUBPROTOCOL, TOP, Client, NGINX_PORTS, cid, connect, create_room, open_socket, run_async, token, \
    uid, wait_until
from own_nginx import OwnNginx
from test_ws_protocol import RawWS, read_head, upgrade_request

RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))
LONG_BODY = "compressible " * 200   # past minichat_ws_deflate_threshold (256)


def access_log():
    with open(os.path.join(RUN, "nginx-a", "access.log"), errors="replace") as f:
        return f.read()


@run_async
async def test_upgrade_is_logged_at_once_and_chat_works_after_the_request_is_freed():
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    tok = token(u1)
    c1 = await connect(u1, "a", tok=tok)
    c2 = await connect(u2, "b")
    try:
        # the request was freed at the hand-off: its access log line (101,
        # the token's bytes hidden) is there while the connection is open
        line = '"GET /ws?token=%s HTTP/1.1" 101 ' % ("*" * len(tok))
        wait_until(lambda: line in access_log(), what="the upgrade's access log line")
        assert tok not in access_log()

        assert [e.name for e in c1.ws.extensions] == ["permessage-deflate"], c1.ws.extensions
        ack = await c1.send_msg(room, LONG_BODY)
        assert ack["op"] == "ack", ack
        m = await c2.expect("msg", room=room)
        assert m["body"] == LONG_BODY and m["seq"] == ack["seq"], m

        r = await c1.request({"op": "read", "room": room, "seq": ack["seq"]})
        assert r["op"] != "error", r
        h = await c1.request({"op": "history", "room": room, "limit": 10})
        assert [x["body"] for x in h["messages"]] == [LONG_BODY], h
        rooms = await c1.request({"op": "rooms", "limit": 5})
        assert room in [x["id"] for x in rooms["rooms"]], rooms

        pong = await c1.ws.ping(b"after the hand-off")
        await asyncio.wait_for(pong, 5)

        await c1.ws.close(1000, "bye")
        assert c1.ws.close_code == 1000, c1.ws.close_code
    finally:
        await c1.close()
        await c2.close()


def test_frames_behind_a_long_upgrade_request_in_one_segment():
    # a 3 KB header does not fit client_header_buffer_size (1k): the request
    # is read into a large header buffer, and the ping behind it too
    u = uid()
    room = create_room(u, [u, uid()])
    sock = open_socket(NGINX_PORTS["a"], 10)
    ws = RawWS.__new__(RawWS)
    ws.sock = sock
    try:
        req = upgrade_request("/ws?token=" + token(u), {"Sec-WebSocket-Protocol": SUBPROTOCOL, "X-Padding": "p" * 3000})
        sock.sendall(req + ws.frame(0x9, b"right behind"))
        status, head, ws.buf = read_head(sock)
        assert status == 101, head
        op, payload = ws.recv_frame()
        assert op == 0x1 and json.loads(payload)["op"] == "hello", payload
        assert ws.recv_frame() == (0xA, b"right behind")
        ws.send(0x1, json.dumps({"op": "send", "id": 3, "room": room, "cid": cid(), "body": "x"}).encode())
        op, payload = ws.recv_frame()
        assert json.loads(payload)["op"] == "ack", payload
    finally:
        sock.close()


def test_server_pings_a_silent_client_after_the_hand_off():
    u = uid()
    room = create_room(u, [u, uid()])
    ws = RawWS(u)
    try:
        # minichat_ping_interval 5s: a client silent for a whole tick is pinged
        ws.sock.settimeout(30)
        start = time.monotonic()
        op, payload = ws.recv_frame()
        while op != 0x9:
            op, payload = ws.recv_frame()
        assert time.monotonic() - start < 25
        ws.send(0xA, payload)
        ws.send(0x1, json.dumps({"op": "send", "id": 4, "room": room, "cid": cid(), "body": "pong"}).encode())
        op, payload = ws.recv_frame()
        while op != 0x1:
            op, payload = ws.recv_frame()
        assert json.loads(payload)["op"] == "ack", payload
    finally:
        ws.close()


@run_async
async def test_wss_through_an_own_tls_nginx():
    ngx = await asyncio.to_thread(lambda: OwnNginx([], tls=True).start())
    bad = []
    try:
        u1, u2 = uid(), uid()
        room = create_room(u1, [u1, u2])
        ws = await websockets.connect("wss://127.0.0.1:%d/ws?token=%s" % (ngx.port, token(u1)),
                                      subprotocols=[SUBPROTOCOL], ssl=ngx.ssl_context(), open_timeout=10,
                                      close_timeout=2)
        c = Client(ws, u1, "a")
        hello = await c.expect("hello")
        assert hello["user"] == u1, hello
        assert [e.name for e in ws.extensions] == ["permessage-deflate"], ws.extensions

        ack = await c.send_msg(room, LONG_BODY)
        assert ack["op"] == "ack", ack
        h = await c.request({"op": "history", "room": room, "limit": 10})
        assert [x["body"] for x in h["messages"]] == [LONG_BODY], h
        await asyncio.wait_for(await ws.ping(b"tls"), 5)

        # a graceful shutdown closes the idle connection with 1001, over TLS
        stopping = asyncio.create_task(asyncio.to_thread(ngx.stop))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 15)
        except websockets.exceptions.ConnectionClosed as e:
            assert e.code == 1001, e
        bad = await stopping
    finally:
        bad += await asyncio.to_thread(ngx.stop)
    assert not bad, bad
