"""The members cache (ngx_minichat_module/ngx_http_minichat_members.c): every
nginx worker keeps a room's member ids under the room's members version
({r:R}:mver), and send.lua, read.lua, typing.lua and repair.lua answer the
members only when the version differs.  A member who joined must get the very
next message, one who left must not, whatever the workers of either node
held; a room Redis lost and rebuilt from MySQL must not come back under a
version a worker still holds."""

import asyncio

import pytest

from conftest import connect, create_room, redis, rest, run_async, token, uid
from own_nginx import OwnNginx, ws_connect

# connections per sender and node: the stack's nginx runs 2 workers and a
# connection lands on either, so several make both workers hold the room
SENDERS = 4


def mver(room):
    """The room's members version, or None when it has none."""
    out = redis("GET", "{r:%d}:mver" % room)
    return out[0] if out else None


async def senders(user, room):
    """SENDERS connections of user on each node, each having sent into room
    (so that the worker it landed on holds the room's members)."""
    conns = []
    for node in ("a", "b"):
        for _ in range(SENDERS):
            conns.append(await connect(user, node))
    for c in conns:
        r = await c.send_msg(room, "warm")
        assert r["op"] == "ack", r
    return conns


async def close_all(conns):
    for c in conns:
        await c.close()


async def got_seqs(client, room, seqs):
    got = await client.collect("msg", lambda fs: set(seqs) <= {f["seq"] for f in fs}, room=room)
    return {f["seq"] for f in got}


def test_version_moves_with_membership():
    a, b, c = uid(), uid(), uid()
    room = create_room(a, [a, b])
    v0 = mver(room)
    assert v0 is not None and v0.isdigit(), v0

    st, r = rest("POST", "/api/rooms/%d/invite" % room, "a", token(a), {"members": [c]})
    assert st == 200 and r["added"] == [c], (st, r)
    v1 = mver(room)
    assert int(v1) == int(v0) + 1, (v0, v1)

    # a retried invite changes no member: no new version
    st, r = rest("POST", "/api/rooms/%d/invite" % room, "b", token(b), {"members": [c]})
    assert st == 200 and r["added"] == [], (st, r)
    assert mver(room) == v1

    st, r = rest("POST", "/api/rooms/%d/leave" % room, "b", token(c))
    assert st == 200, (st, r)
    assert int(mver(room)) == int(v1) + 1


@run_async
async def test_join_then_immediate_send_reaches_the_new_member():
    a, b, c = uid(), uid(), uid()
    room = create_room(a, [a, b])
    conns = await senders(a, room)
    ca, cb = await connect(c, "a"), await connect(c, "b")
    try:
        st, r = rest("POST", "/api/rooms/%d/invite" % room, "b", token(b), {"members": [c]})
        assert st == 200 and r["added"] == [c], (st, r)
        # at once, from every connection (both workers of both nodes)
        acks = [await s.send_msg(room, "after join %d" % i) for i, s in enumerate(conns)]
        assert all(x["op"] == "ack" for x in acks), acks
        seqs = [x["seq"] for x in acks]
        assert set(seqs) <= await got_seqs(ca, room, seqs)
        assert set(seqs) <= await got_seqs(cb, room, seqs)
    finally:
        await close_all(conns + [ca, cb])


@run_async
async def test_leave_then_immediate_send_skips_the_former_member():
    a, b, c = uid(), uid(), uid()
    room = create_room(a, [a, b, c])
    conns = await senders(a, room)
    cb, ca = await connect(b, "b"), await connect(c, "a")
    cc = await connect(c, "b")
    try:
        st, r = rest("POST", "/api/rooms/%d/leave" % room, "a", token(c))
        assert st == 200, (st, r)
        left = r["left_seq"]
        acks = [await s.send_msg(room, "after leave %d" % i) for i, s in enumerate(conns)]
        assert all(x["op"] == "ack" for x in acks), acks
        seqs = [x["seq"] for x in acks]
        # b gets every one (so they were delivered), c none
        assert set(seqs) <= await got_seqs(cb, room, seqs)
        await asyncio.sleep(0.5)
        for client in (ca, cc):
            late = [f["seq"] for f in client.frames if f.get("op") == "msg" and f.get("room") == room
                    and f["seq"] > left]
            assert late == [], (client.node, late)
    finally:
        await close_all(conns + [ca, cb, cc])


@run_async
async def test_rejoin_after_leave_is_delivered_again():
    a, b, c = uid(), uid(), uid()
    room = create_room(a, [a, b, c])
    conns = await senders(a, room)
    cc = await connect(c, "b")
    try:
        for _ in range(2):
            st, _ = rest("POST", "/api/rooms/%d/leave" % room, "a", token(c))
            assert st == 200
            st, r = rest("POST", "/api/rooms/%d/invite" % room, "a", token(a), {"members": [c]})
            assert st == 200 and r["added"] == [c], (st, r)
        acks = [await s.send_msg(room, "back %d" % i) for i, s in enumerate(conns)]
        seqs = [x["seq"] for x in acks]
        assert set(seqs) <= await got_seqs(cc, room, seqs)
    finally:
        await close_all(conns + [cc])


@run_async
async def test_room_rebuilt_from_mysql_is_not_taken_for_the_cached_one():
    """Redis loses the room; a member joins meanwhile (MySQL has it, Redis
    is told nothing: the room is not loaded); the next send rebuilds the
    room under a fresh version, so the workers that held the old list
    deliver to the new member too."""
    a, b, c = uid(), uid(), uid()
    room = create_room(a, [a, b])
    conns = await senders(a, room)
    cc = await connect(c, "a")
    try:
        old = mver(room)
        redis("DEL", *["{r:%d}:%s" % (room, k) for k in ("seq", "members", "mver", "gen", "log", "logbytes")])
        st, r = rest("POST", "/api/rooms/%d/invite" % room, "b", token(b), {"members": [c]})
        assert st == 200 and r["added"] == [c], (st, r)
        acks = [await s.send_msg(room, "after rebuild %d" % i) for i, s in enumerate(conns)]
        assert all(x["op"] == "ack" for x in acks), acks
        seqs = [x["seq"] for x in acks]
        assert set(seqs) <= await got_seqs(cc, room, seqs)
        new = mver(room)
        assert new is not None and new != old, (old, new)
    finally:
        await close_all(conns + [cc])


@run_async
async def test_typing_and_read_follow_membership():
    """The workers hold the room from the sends; a typing event and a read
    event right after an invite reach the new member."""
    a, b, c = uid(), uid(), uid()
    room = create_room(a, [a, b])
    conns = await senders(a, room)
    readers = [await connect(b, node) for node in ("a", "b") for _ in range(SENDERS)]
    cc = await connect(c, "b")
    try:
        st, r = rest("POST", "/api/rooms/%d/invite" % room, "a", token(a), {"members": [c]})
        assert st == 200 and r["added"] == [c], (st, r)
        await conns[0].request({"op": "typing", "room": room})
        await cc.expect("typing", room=room, user=a)

        # each of b's connections moves b's pointer one further: one read event each
        acks = [await conns[0].send_msg(room, "read me %d" % i) for i in range(len(readers))]
        for rd, ack in zip(readers, acks):
            await rd.request({"op": "read", "room": room, "seq": ack["seq"]})
        for ack in acks:
            await cc.expect("read", room=room, user=b, seq=ack["seq"])
    finally:
        await close_all(conns + readers + [cc])


@run_async
async def test_retried_send_answers_the_same_ack():
    """A retry (same cid) takes send.lua's other branch, which answers the
    members the same way."""
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    conns = await senders(a, room)
    cb = await connect(b, "b")
    try:
        first = await conns[0].send_msg(room, "once", msg_cid="same-cid")
        for s in conns:
            again = await s.send_msg(room, "once", msg_cid="same-cid")
            assert again["op"] == "ack" and again["seq"] == first["seq"], (first, again)
        got = await cb.collect("msg", lambda fs: any(f["seq"] == first["seq"] for f in fs), room=room)
        assert [f["seq"] for f in got].count(first["seq"]) == 1, got
        await asyncio.sleep(0.3)
        assert [f.get("seq") for f in cb.frames if f.get("op") == "msg"].count(first["seq"]) == 1, cb.frames
    finally:
        await close_all(conns + [cb])


@pytest.mark.parametrize("size", [0, 1])
@run_async
async def test_a_tiny_cache_or_none_still_delivers_to_the_members_now(size):
    """minichat_members_cache 1: three rooms in turn evict each other's
    entry while sends on it are in flight; 0: no cache, every send gets the
    list.  Members change between the rounds; each round's sends reach
    exactly the members of that moment."""
    a, b, c = uid(), uid(), uid()
    rooms = [create_room(a, [a, b]) for _ in range(3)]
    n = OwnNginx([], extra=["minichat_members_cache %d" % size]).start()
    conns = []
    try:
        sender = await ws_connect(n.port, a)
        cb, cc = await connect(b, "b"), await connect(c, "b")
        conns = [sender, cb, cc]
        for rnd in range(3):
            if rnd == 1:
                for room in rooms:
                    st, _ = rest("POST", "/api/rooms/%d/invite" % room, "a", token(a), {"members": [c]})
                    assert st == 200
            if rnd == 2:
                for room in rooms:
                    st, r = rest("POST", "/api/rooms/%d/leave" % room, "a", token(c))
                    assert st == 200, (st, r)
            # several sends per room in flight at once, rooms interleaved
            reqs = []
            for i in range(4):
                for room in rooms:
                    req = {"op": "send", "id": sender.next_id(), "room": room, "cid": "r%d-%d" % (rnd, i),
                           "body": "round %d" % rnd}
                    await sender.send(req)
                    reqs.append(req)
            acks = []
            for req in reqs:
                ack = await sender.expect("ack", id=req["id"])
                acks.append((req["room"], ack["seq"]))
            for room, seq in acks:
                await cb.expect("msg", room=room, seq=seq)
                if rnd == 1:
                    await cc.expect("msg", room=room, seq=seq)
            if rnd == 2:
                await asyncio.sleep(0.5)
                got = {(f["room"], f["seq"]) for f in cc.frames if f.get("op") == "msg"}
                assert not got & set(acks), sorted(got & set(acks))
    finally:
        await close_all(conns)
        bad = n.stop()
        assert not bad, bad
