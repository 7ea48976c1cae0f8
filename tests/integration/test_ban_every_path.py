"""A banned user is refused on every path, whatever limits are configured
(docs/protocol.md, "banned"; docs/ARCHITECTURE.md, "Rate limits, strikes
and bans").

An nginx of the test's own (OwnNginx) with no minichat_limit_* directive
at all, listening for HTTP/1.1 and HTTP/2.  The user's ban is written
straight into Redis ({u:<user>}:ban, as lua/ban.lua and lua/limit.lua write
it) without the "ban" event that would close the user's connections: the
case of an event that never reached a node (its relay-worker link down).
The open WebSocket's `send`, REST over HTTP/1.1 and REST over HTTP/2 must
all answer `banned` with the ban's end, and a refused send must spend no
seq; once the ban key is gone, everything works again.
"""

import time

from conftest import create_room, redis, run_async, token, uid, wait_until
from h2client import get_many
from own_nginx import OwnNginx, ws_connect


def ban_key(user):
    return "{u:%d}:ban" % user


@run_async
async def test_banned_user_refused_on_ws_rest_and_h2_without_limits():
    own = OwnNginx([], http2=True).start()
    c = None
    try:
        user, other = uid(), uid()
        tok = token(user)
        room = create_room(user, [other])
        wait_until(lambda: own.get("/api/rooms?limit=1", tok)[0] == 200, 10, what="the own nginx's REST")
        c = await ws_connect(own.port, user)

        first = await c.send_msg(room, "before the ban")
        assert first["op"] == "ack", first

        until = int(time.time() * 1000) + 60000
        redis("SET", ban_key(user), until, "PX", 60000)
        try:
            # WebSocket: the connection heard of no ban, the send is refused
            for _ in range(2):
                r = await c.send_msg(room, "while banned")
                assert r["op"] == "error" and r["code"] == "banned" and r["until"] == until, r

            # REST over HTTP/1.1: 403 with the same code and end
            status, _, body = own.get("/api/rooms?limit=1", tok)
            assert status == 403 and body["code"] == "banned" and body["until"] == until, (status, body)

            # REST over HTTP/2
            ((status, raw),) = get_many(own.h2_port, [("/api/rooms?limit=1", tok)])
            assert status == 403, (status, raw)
            assert b'"code":"banned"' in raw and (b'"until":%d' % until) in raw, raw
        finally:
            redis("DEL", ban_key(user))

        # lifted: the next send gets the next seq (the refused ones spent none)
        after = await c.send_msg(room, "after the ban")
        assert after["op"] == "ack" and after["seq"] == first["seq"] + 1, (first, after)
        assert own.get("/api/rooms?limit=1", tok)[0] == 200
        ((status, _),) = get_many(own.h2_port, [("/api/rooms?limit=1", tok)])
        assert status == 200, status
    finally:
        if c is not None:
            await c.close()
        bad = own.stop()
        assert not bad, bad
