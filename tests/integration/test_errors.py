"""Bad input gets a clear error (or HTTP status), and the connection and the
worker keep working."""

import asyncio
import json

import pytest
import websockets

from conftest import (Client, cid, connect, create_room, query, rest, run_async, token, uid,
                      wait_until, ws_open, ws_status, ws_url, SUBPROTOCOL)

ERROR_CODES = {"bad_request", "unauthorized", "forbidden", "not_found", "rate_limited", "banned",
               "too_large", "unavailable"}


def check_error(frame, code, req_id=None):
    assert frame["op"] == "error", frame
    assert frame["code"] in ERROR_CODES, frame
    assert frame["code"] == code, frame
    assert isinstance(frame.get("message", ""), str), frame
    if req_id is not None:
        assert frame.get("id") == req_id, frame


async def still_usable(c, room):
    """The connection still answers a valid send with an ack."""
    a = await c.send_msg(room, "still here")
    assert a["op"] == "ack", a
    return a


@run_async
async def test_non_member_is_forbidden():
    u1, u2, outsider = uid(), uid(), uid()
    room = create_room(u1, [u1, u2])
    c1 = await connect(u1, "a")
    co = await connect(outsider, "b")
    try:
        r = await co.request({"op": "send", "id": 5, "room": room, "cid": cid(), "body": "let me in"})
        check_error(r, "forbidden", 5)
        a = await c1.send_msg(room, "members only")
        assert a["op"] == "ack" and a["seq"] == 1, a     # the refused send took no seq
        await asyncio.sleep(0)  # let frames flow
        wait_until(lambda: len(query("SELECT seq FROM messages WHERE room_id=%s", (room,))) == 1,
                   what="the member's message persisted")
        rows = query("SELECT sender_id FROM messages WHERE room_id=%s", (room,))
        assert [r["sender_id"] for r in rows] == [u1]
        # The outsider gets nothing from the room.
        assert [f for f in co.frames if f.get("op") == "msg"] == []
    finally:
        await c1.close()
        await co.close()


@run_async
async def test_unknown_room():
    u1 = uid()
    c1 = await connect(u1, "a")
    try:
        r = await c1.request({"op": "send", "id": 9, "room": 987654321987, "cid": cid(), "body": "x"})
        assert r["op"] == "error" and r["code"] in ("forbidden", "not_found"), r
        assert r.get("id") == 9, r
    finally:
        await c1.close()


@run_async
async def test_bad_frames_keep_the_connection():
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c1 = await connect(u1, "a")
    try:
        # Not JSON at all: no id to echo.
        await c1.send("{this is not json")
        r = await c1.expect("error")
        check_error(r, "bad_request")
        await still_usable(c1, room)

        # JSON but not an object.
        await c1.send("[1,2,3]")
        check_error(await c1.expect("error"), "bad_request")

        # Unknown op, with an id to echo.
        r = await c1.request({"op": "frobnicate", "id": 21, "room": room})
        check_error(r, "bad_request", 21)

        # Missing and mistyped fields.
        r = await c1.request({"op": "send", "id": 22, "room": room, "cid": cid()})
        check_error(r, "bad_request", 22)
        r = await c1.request({"op": "send", "id": 23, "room": str(room), "cid": cid(), "body": "x"})
        check_error(r, "bad_request", 23)
        r = await c1.request({"op": "send", "id": 24, "room": room, "cid": 5, "body": "x"})
        check_error(r, "bad_request", 24)
        r = await c1.request({"op": 7, "id": 25})
        check_error(r, "bad_request", 25)

        a = await still_usable(c1, room)
        assert a["seq"] == 2, a          # only the two valid sends took a seq
    finally:
        await c1.close()


@run_async
async def test_oversize_message():
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c1 = await connect(u1, "a")
    try:
        big = "x" * (200 * 1024)      # above minichat_max_message_size (64k in the dev config)
        await c1.send({"op": "send", "id": 31, "room": room, "cid": cid(), "body": big})
        try:
            r = await c1.expect("error")
            raise AssertionError("expected close 1009, got %r" % r)
        except websockets.exceptions.ConnectionClosed as e:
            assert e.code == 1009, e      # docs/protocol.md: message too big
        c1 = await connect(u1, "a")
        await still_usable(c1, room)
    finally:
        await c1.close()


@run_async
async def test_ws_auth_is_checked_before_upgrade():
    u = uid()
    good = token(u)
    assert await ws_status("a", None) == 401                       # no token
    assert await ws_status("b", "") == 401                         # empty token
    assert await ws_status("a", "not.a.jwt") == 401
    assert await ws_status("a", good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")) == 401
    header, payload, sig = good.split(".")
    assert await ws_status("b", header + "." + payload + ".") == 401   # signature stripped
    # The same token in the Authorization header is accepted.
    ws = await ws_open(ws_url("a"), subprotocols=[SUBPROTOCOL],
                       extra_headers={"Authorization": "Bearer " + good})
    try:
        c = Client(ws, u, "a")
        h = await c.expect("hello")
        assert h["user"] == u and h["node"] == "a", h
    finally:
        await ws.close()


def test_rest_auth_and_validation():
    u1, u2 = uid(), uid()
    good = token(u1)
    body = {"kind": "group", "title": "t", "members": [u1, u2]}
    assert rest("POST", "/api/rooms", "a", None, body)[0] == 401
    assert rest("POST", "/api/rooms", "a", "garbage", body)[0] == 401
    assert rest("POST", "/api/rooms", "b", good[:-3] + "abc", body)[0] == 401
    assert rest("POST", "/api/rooms", "a", good, raw=b"{not json")[0] == 400
    assert rest("POST", "/api/rooms", "a", good, raw=b"")[0] == 400
    assert rest("POST", "/api/rooms", "a", good, {"kind": "nonsense", "title": "t", "members": [u1]})[0] == 400
    assert rest("POST", "/api/rooms", "b", good, {"kind": "group", "title": "t", "members": "x"})[0] == 400
    assert rest("POST", "/api/rooms", "a", good, {"kind": "group", "title": "t", "members": ["1"]})[0] == 400
    # And a valid one still works afterwards.
    status, resp = rest("POST", "/api/rooms", "a", good, body)
    assert status == 201 and isinstance(resp["id"], int), (status, resp)
