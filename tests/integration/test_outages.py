"""Backing services that stop answering: the client gets a clear error in
bounded time, nothing hangs, and a retry with the same cid succeeds once the
service is back."""

import asyncio

from conftest import cid, connect, create_room, redis, run_async, uid


@run_async
async def test_redis_that_stops_answering_gives_unavailable_then_recovers():
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c = await connect(u1, "a")
    try:
        # Redis holds every client's commands for 7 s; the module's
        # minichat_redis_timeout (5 s) must answer before that
        redis("CLIENT", "PAUSE", "7000", "ALL")
        loop = asyncio.get_running_loop()
        start = loop.time()
        the_cid = cid()
        r = await c.request({"op": "send", "id": 1, "room": room, "cid": the_cid, "body": "during the pause"},
                            timeout=15)
        took = loop.time() - start
        assert r["op"] == "error" and r["code"] == "unavailable" and r["id"] == 1, r
        assert took < 6.9, "the error came only when Redis woke up (%.1fs)" % took

        # back to normal: the same cid is accepted once, with a dense seq
        deadline = loop.time() + 20
        while True:
            r = await c.request({"op": "send", "id": 2, "room": room, "cid": the_cid, "body": "during the pause"},
                                timeout=15)
            if r["op"] == "ack" or loop.time() > deadline:
                break
            assert r["op"] == "error" and r["code"] == "unavailable", r
            await asyncio.sleep(0.2)
        assert r["op"] == "ack" and r["seq"] == 1, r
    finally:
        await c.close()
