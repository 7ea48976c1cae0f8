"""The floor (bench/floor, build/bin/floor): make bench's raw broadcaster.

A floor of its own on a free port, no stack involved (the fixture checks
only that the floor binary was built).  It must speak the part of MiniChat's
protocol v1 the load generator uses -- a room made by POST /api/rooms, the
upgrade with a token, hello, send -> ack, msg to every other connection of
every member -- and refuse bad input with a clear error, staying up.
"""

import asyncio
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
import websockets

from conftest import OFF, SECRET_FILE, SUBPROTOCOL, TOP, run_async, token, uid

# MINICHAT_FLOOR_BIN: another build, e.g. build/asan/bin/floor (ASan/UBSan)
FLOOR = os.environ.get("MINICHAT_FLOOR_BIN", os.path.join(TOP, "build", "bin", "floor"))
PORT = 8094 + OFF


@pytest.fixture(scope="module", autouse=True)
def floor():
    p = subprocess.Popen([FLOOR, "--port", str(PORT), "--secret-file", SECRET_FILE], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()
    assert line.startswith("floor: listening on 127.0.0.1:%d" % PORT), line
    yield p
    assert p.poll() is None, "the floor died"
    p.terminate()
    out = p.communicate(timeout=10)[0]
    assert p.returncode == 0 and "floor: result " in out, out


def rest_room(owner_tok, body):
    req = urllib.request.Request("http://127.0.0.1:%d/api/rooms" % PORT, data=body, method="POST",
                                 headers={"Authorization": "Bearer " + owner_tok} if owner_tok else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def make_room(owner, members):
    status, ans = rest_room(token(owner), json.dumps({"kind": "group", "members": members}).encode())
    assert status == 201 and ans["existed"] is False, (status, ans)
    return ans["id"]


async def connect(user):
    ws = await websockets.connect("ws://127.0.0.1:%d/ws?token=%s" % (PORT, token(user)),
                                  subprotocols=[SUBPROTOCOL], open_timeout=10, close_timeout=2)
    assert ws.subprotocol == SUBPROTOCOL
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert hello["op"] == "hello" and hello["user"] == user, hello
    return ws


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


@run_async
async def test_send_is_acked_and_delivered_to_every_other_connection():
    owner, m1, m2 = uid(), uid(), uid()
    room = make_room(owner, [m1, m2, m1])  # a duplicate member is dropped
    a, a2, b, c = await connect(owner), await connect(owner), await connect(m1), await connect(m2)
    for k in (1, 2):
        await a.send(json.dumps({"op": "send", "id": 10 + k, "room": room, "cid": "c%d" % k, "body": "hi %d" % k}))
        ack = await recv(a)
        assert (ack["op"], ack["id"], ack["room"], ack["seq"], ack["cid"]) == ("ack", 10 + k, room, k, "c%d" % k), ack
        for ws in (a2, b, c):  # the sender's other connection too
            msg = await recv(ws)
            assert (msg["op"], msg["room"], msg["seq"], msg["from"], msg["cid"], msg["body"]) \
                == ("msg", room, k, owner, "c%d" % k, "hi %d" % k), msg
            assert msg["ts"] == ack["ts"]
    # never the sending connection (once, and only once, per recipient)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(a.recv(), 0.5)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(b.recv(), 0.5)
    for ws in (a, a2, b, c):
        await ws.close()


@run_async
async def test_bad_requests_get_errors_and_the_connection_stays():
    owner, other = uid(), uid()
    room = make_room(owner, [])
    a, o = await connect(owner), await connect(other)
    cases = (
        (o, {"op": "send", "id": 1, "room": room, "cid": "x", "body": "y"}, "forbidden"),
        (a, {"op": "send", "id": 2, "room": room + 1000, "cid": "x", "body": "y"}, "not_found"),
        (a, {"op": "send", "id": 3, "room": room, "cid": "x"}, "bad_request"),
        (a, {"op": "read", "id": 4, "room": room, "seq": 1}, "bad_request"),
    )
    for ws, req, code in cases:
        await ws.send(json.dumps(req))
        err = await recv(ws)
        assert (err["op"], err["id"], err["code"]) == ("error", req["id"], code), err
        assert err["message"], err
    await a.send("{not json")
    err = await recv(a)
    assert (err["op"], err["code"]) == ("error", "bad_request"), err
    # still served
    await a.send(json.dumps({"op": "send", "id": 5, "room": room, "cid": "z", "body": "ok"}))
    assert (await recv(a))["op"] == "ack"
    await a.close()
    await o.close()


@run_async
async def test_binary_and_invalid_utf8_close_the_connection():
    for payload, code in ((b"\x01\x02", 1003), (None, 1007)):
        ws = await connect(uid())
        if payload is not None:
            await ws.send(payload)
        else:
            # a text frame with invalid UTF-8, written by hand (the client library refuses to)
            await ws.ensure_open()
            ws.transport.write(bytes([0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28]))
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == code, (payload, ws.close_code, ws.close_reason)


def raw_http(data):
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
        s.sendall(data)
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got


def test_bad_http_is_refused_clearly():
    assert rest_room(None, b'{"members":[]}')[0] == 401
    assert rest_room(token(uid()) + "x", b'{"members":[]}')[0] == 401
    assert rest_room(token(uid()), b'{"members":"all"}')[0] == 400
    assert rest_room(token(uid()), b'{"members":[1,-2]}')[0] == 400
    assert rest_room(token(uid()), json.dumps({"members": list(range(1, 1002))}).encode())[0] == 400
    assert raw_http(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert raw_http(b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_http(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_http(b"POST /api/rooms HTTP/1.1\r\nContent-Length: 999999\r\n\r\n").startswith(b"HTTP/1.1 413 ")
    # headers that never end: refused at 64 KiB, not buffered without end
    assert raw_http(b"GET /ws HTTP/1.1\r\n" + b"X: " + b"a" * 70000).startswith(b"HTTP/1.1 413 ")
