"""Chat semantics over WebSocket on the two-node stack: read pointers,
typing, history pages with per-message unread counts, resume, the room
list, membership on every op, 64-bit user ids, and a Redis that loses
everything (FLUSHALL) while MySQL keeps the truth."""

import asyncio
import json
import random
import socket
import base64
import os

from conftest import (cid, connect, create_room, open_socket, query, redis, rest, run_async, token, uid,
                      wait_until, NGINX_PORTS)


async def send_n(c, room, n, prefix="m"):
    acks = []
    for i in range(n):
        a = await c.send_msg(room, "%s%d" % (prefix, i))
        assert a["op"] == "ack", a
        acks.append(a)
    return acks


def persisted(room, n):
    return wait_until(lambda: len(query("SELECT seq FROM messages WHERE room_id=%s", (room,))) == n,
                      what="%d messages of room %d in MySQL" % (n, room))


@run_async
async def test_user_id_above_2_53_is_not_rounded():
    big = 2**53 + 1 + random.randint(0, 10**6) * 2          # odd: a double cannot hold it
    near = big - 1                                           # what a double makes of it
    sender = uid()
    room = create_room(sender, [sender, big])
    members = set(redis("SMEMBERS", "{r:%d}:members" % room))
    assert str(big) in members and str(near) not in members, members
    cb = await connect(big, "b")
    cn = await connect(near, "b")
    cs = await connect(sender, "a")
    try:
        a = await cs.send_msg(room, "to the big one")
        assert a["op"] == "ack", a
        m = await cb.expect("msg", room=room)
        assert m["seq"] == a["seq"] and m["from"] == sender, m
        await asyncio.sleep(0.5)
        assert [f for f in cn.frames if f.get("op") == "msg"] == [], cn.frames
        # the big member can send, and its id arrives exact
        a2 = await cb.send_msg(room, "from the big one")
        assert a2["op"] == "ack", a2
        m2 = await cs.expect("msg", room=room, seq=a2["seq"])
        assert m2["from"] == big, m2
        persisted(room, 2)
        rows = query("SELECT sender_id FROM messages WHERE room_id=%s ORDER BY seq", (room,))
        assert [r["sender_id"] for r in rows] == [sender, big], rows
    finally:
        for c in (cb, cn, cs):
            await c.close()


@run_async
async def test_stored_time_is_the_acks_to_the_millisecond():
    # the consumer sends each row's time as decimal seconds (lib/src/msgbatch.c)
    sender = uid()
    room = create_room(sender, [sender, uid()])
    c = await connect(sender, "a")
    try:
        acks = await send_n(c, room, 5)
    finally:
        await c.close()
    persisted(room, 5)
    rows = query("SELECT seq, CAST(ROUND(UNIX_TIMESTAMP(created_at) * 1000) AS UNSIGNED) AS ms FROM messages"
                 " WHERE room_id=%s ORDER BY seq", (room,))
    assert [(r["seq"], r["ms"]) for r in rows] == [(a["seq"], a["ts"]) for a in acks], (rows, acks)


@run_async
async def test_read_pointer_moves_forward_only_and_members_are_told():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    cb = await connect(b, "b")
    try:
        await send_n(ca, room, 3)
        r = await cb.request({"op": "read", "room": room, "seq": 2})
        assert r["op"] == "ok" and r["seq"] == 2, r
        ev = await ca.expect("read", room=room, user=b)
        assert ev["seq"] == 2, ev
        r = await cb.request({"op": "read", "room": room, "seq": 1})      # backwards: stays
        assert r["op"] == "ok" and r["seq"] == 2, r
        r = await cb.request({"op": "read", "room": room, "seq": 99})     # past the end: clamped
        assert r["op"] == "ok" and r["seq"] == 3, r
        ev = await ca.expect("read", room=room, user=b)
        assert ev["seq"] == 3, ev
        # the reader's own connection is not told
        assert [f for f in cb.frames if f.get("op") == "read" and f.get("user") == b and "id" not in f] == []
        # and MySQL gets it through the write-back flusher; a sender has read its own messages
        wait_until(lambda: query("SELECT last_read_seq FROM room_members WHERE room_id=%s AND user_id=%s",
                                 (room, b))[0]["last_read_seq"] == 3, what="read pointer in MySQL")
        wait_until(lambda: query("SELECT last_read_seq FROM room_members WHERE room_id=%s AND user_id=%s",
                                 (room, a))[0]["last_read_seq"] == 3, what="the sender's pointer in MySQL")
    finally:
        await ca.close()
        await cb.close()


@run_async
async def test_typing_reaches_the_other_node_and_is_throttled():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    cb = await connect(b, "b")
    try:
        r = await ca.request({"op": "typing", "room": room})
        assert r["op"] == "ok", r
        ev = await cb.expect("typing", room=room, user=a)
        assert ev == {"op": "typing", "room": room, "user": a}, ev
        for _ in range(3):
            r = await ca.request({"op": "typing", "room": room})   # within minichat_typing_interval
            assert r["op"] == "ok", r
        await asyncio.sleep(0.5)
        assert len([f for f in cb.frames if f.get("op") == "typing"]) == 1, cb.frames
        assert redis("KEYS", "{r:%d}:typing*" % room) != []                  # ephemeral, with a TTL
        assert query("SELECT COUNT(*) AS n FROM messages WHERE room_id=%s", (room,))[0]["n"] == 0
    finally:
        await ca.close()
        await cb.close()


@run_async
async def test_history_pages_and_unread_counts():
    a, b, c = uid(), uid(), uid()
    room = create_room(a, [a, b, c])
    ca = await connect(a, "a")
    cb = await connect(b, "b")
    try:
        empty = await ca.request({"op": "history", "room": room})
        assert empty["messages"] == [] and empty["more"] is False and empty["last_seq"] == 0, empty
        await send_n(ca, room, 5)
        r = await cb.request({"op": "read", "room": room, "seq": 3})
        assert r["seq"] == 3, r

        p1 = await cb.request({"op": "history", "room": room, "limit": 2})
        assert [m["seq"] for m in p1["messages"]] == [5, 4] and p1["more"] is True, p1
        # a (sender, pointer 5) has read everything; b read up to 3; c nothing
        assert [m["unread"] for m in p1["messages"]] == [2, 2], p1
        assert p1["last_seq"] == 5 and p1["epoch"], p1
        p2 = await cb.request({"op": "history", "room": room, "before": 4, "limit": 2})
        assert [m["seq"] for m in p2["messages"]] == [3, 2] and p2["more"] is True, p2
        assert [m["unread"] for m in p2["messages"]] == [1, 1], p2
        p3 = await cb.request({"op": "history", "room": room, "before": 2, "limit": 2})
        assert [m["seq"] for m in p3["messages"]] == [1] and p3["more"] is False, p3
        p4 = await cb.request({"op": "history", "room": room, "before": 1})
        assert p4["messages"] == [] and p4["more"] is False, p4
        p5 = await cb.request({"op": "history", "room": room, "before": 1000, "limit": 50})
        assert [m["seq"] for m in p5["messages"]] == [5, 4, 3, 2, 1], p5
        m = p5["messages"][0]
        assert m["op"] == "msg" and m["from"] == a and m["body"] == "m4" and m["room"] == room, m

        # the same pages from MySQL once the recent log is gone
        persisted(room, 5)
        redis("DEL", "{r:%d}:log" % room)
        q1 = await cb.request({"op": "history", "room": room, "limit": 2})
        assert [(x["seq"], x["unread"], x["body"]) for x in q1["messages"]] == \
               [(x["seq"], x["unread"], x["body"]) for x in p1["messages"]], (q1, p1)
        q5 = await cb.request({"op": "history", "room": room, "before": 1000, "limit": 50})
        assert [x["seq"] for x in q5["messages"]] == [5, 4, 3, 2, 1], q5

        # REST gives the same page
        st, body = rest("GET", "/api/rooms/%d/messages?before=4&limit=2" % room, "a", token(b))
        assert st == 200 and [x["seq"] for x in body["messages"]] == [3, 2] and body["more"] is True, (st, body)

        bad = await cb.request({"op": "history", "room": room, "limit": 0})
        assert bad["op"] == "error" and bad["code"] == "bad_request", bad
    finally:
        await ca.close()
        await cb.close()


@run_async
async def test_every_op_is_for_members_only():
    a, outsider = uid(), uid()
    room = create_room(a, [a, uid()])
    co = await connect(outsider, "b")
    try:
        for req in ({"op": "send", "room": room, "cid": cid(), "body": "x"},
                    {"op": "read", "room": room, "seq": 1},
                    {"op": "typing", "room": room},
                    {"op": "history", "room": room},
                    {"op": "resume", "rooms": {str(room): 0}}):
            r = await co.request(req)
            assert r["op"] == "error" and r["code"] == "forbidden", (req, r)
        tok = token(outsider)
        for method, path, body in (("GET", "/api/rooms/%d" % room, None),
                                   ("GET", "/api/rooms/%d/messages" % room, None),
                                   ("POST", "/api/rooms/%d/read" % room, {"seq": 1}),
                                   ("POST", "/api/rooms/%d/invite" % room, {"members": [outsider]}),
                                   ("POST", "/api/rooms/%d/leave" % room, None)):
            st, resp = rest(method, path, "a", tok, body)
            assert st == 403 and resp["code"] == "forbidden", (path, st, resp)
        unknown = 987654321987
        r = await co.request({"op": "history", "room": unknown})
        assert r["op"] == "error" and r["code"] == "not_found", r
        # remembered for a while: the next request naming it costs no MySQL query
        assert redis("EXISTS", "{r:%d}:none" % unknown) == ["1"]
        r = await co.request({"op": "send", "room": unknown, "cid": cid(), "body": "x"})
        assert r["op"] == "error" and r["code"] == "not_found", r
    finally:
        await co.close()


@run_async
async def test_resume_after_disconnect_on_the_other_node():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    cb = await connect(b, "a")
    try:
        first = await ca.send_msg(room, "before")
        m = await cb.expect("msg", room=room)
        sid = cb.hello["sid"]
        await cb.close()
        await send_n(ca, room, 3, prefix="missed")
        # back on node b with the same session
        import websockets
        from conftest import ws_url, ws_open, SUBPROTOCOL, Client
        ws = await ws_open(ws_url("b", token(b), "sid=" + sid), subprotocols=[SUBPROTOCOL])
        cb = Client(ws, b, "b")
        hello = await cb.expect("hello")
        assert hello["sid"] == sid and hello["resumed"] is True, hello
        r = await cb.request({"op": "resume", "rooms": {str(room): m["seq"]}})
        got = [f for f in cb.frames if f.get("op") == "msg" and f.get("room") == room]
        assert [f["seq"] for f in got] == [2, 3, 4], cb.frames
        assert [f["body"] for f in got] == ["missed0", "missed1", "missed2"], got
        assert r["op"] == "resumed" and r["recovered"] is True and r["seq"] == 4 and r["room"] == room, r
        # live messages continue after the replay, without duplicates
        a5 = await ca.send_msg(room, "after")
        m5 = await cb.expect("msg", room=room, seq=a5["seq"])
        assert m5["body"] == "after"
        assert [f["seq"] for f in cb.frames if f.get("op") == "msg"] == [2, 3, 4, 5], cb.frames
        assert first["seq"] == 1
        # an epoch that is not the room's: not recovered
        r = await cb.request({"op": "resume", "rooms": {str(room): {"seq": 1, "epoch": "deadbeef"}}})
        assert r["op"] == "resumed" and r["recovered"] is False, r
        # nothing missed: recovered with nothing replayed
        r = await cb.request({"op": "resume", "rooms": {str(room): 5}})
        assert r["recovered"] is True and r["seq"] == 5, r
        bad = await cb.request({"op": "resume", "rooms": {"x": 1}})
        assert bad["op"] == "error" and bad["code"] == "bad_request", bad
    finally:
        await ca.close()
        await cb.close()


@run_async
async def test_resume_while_messages_keep_coming_gives_no_gap_and_no_duplicate():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    cb = await connect(b, "b")
    try:
        await send_n(ca, room, 5)
        sender = asyncio.ensure_future(send_n(ca, room, 30, prefix="live"))
        await asyncio.sleep(0.05)
        r = await cb.request({"op": "resume", "rooms": {str(room): 2}}, timeout=15)
        assert r["op"] == "resumed" and r["recovered"] is True, r
        await sender
        await cb.collect("msg", lambda got: any(f["seq"] == 35 for f in got), room=room)
        seqs = [f["seq"] for f in cb.frames if f.get("op") == "msg"]
        # live delivery started at 1; the resume replayed from 3; what follows
        # the replay continues without repeats
        after = seqs[seqs.index(r["seq"]) + 1:] if r["seq"] in seqs else []
        assert after == list(range(r["seq"] + 1, 36)) or seqs[-1] == 35, seqs
        assert sorted(set(seqs)) == list(range(1, 36)), seqs
    finally:
        await ca.close()
        await cb.close()


@run_async
async def test_flushall_rebuilds_rooms_from_mysql():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    cb = await connect(b, "b")
    try:
        first_cids = [a["cid"] for a in await send_n(ca, room, 3)]
        persisted(room, 3)
        await cb.collect("msg", lambda got: len(got) == 3, room=room)
        r = await cb.request({"op": "read", "room": room, "seq": 2})
        assert r["seq"] == 2
        wait_until(lambda: query("SELECT last_read_seq FROM room_members WHERE room_id=%s AND user_id=%s",
                                 (room, b))[0]["last_read_seq"] == 2, what="read pointer in MySQL")
        redis("FLUSHALL")
        # a send retried across the loss is still the same message
        again = await ca.send_msg(room, "m1", msg_cid=first_cids[1])
        assert again["op"] == "ack" and again["seq"] == 2, again
        a4 = await ca.send_msg(room, "after the flush")
        assert a4["op"] == "ack" and a4["seq"] == 4, a4
        m = await cb.expect("msg", room=room, seq=4)
        assert m["body"] == "after the flush"
        a5 = await cb.send_msg(room, "and from b")
        assert a5["seq"] == 5, a5
        persisted(room, 5)
        rows = query("SELECT seq, body FROM messages WHERE room_id=%s ORDER BY seq", (room,))
        assert [x["seq"] for x in rows] == [1, 2, 3, 4, 5], rows
        assert rows[3]["body"] == "after the flush"
        # the log was lost: a resume from before is not recovered, history still pages
        r = await cb.request({"op": "resume", "rooms": {str(room): 1}})
        assert r["recovered"] is False, r
        h = await cb.request({"op": "history", "room": room, "limit": 10})
        assert [x["seq"] for x in h["messages"]] == [5, 4, 3, 2, 1], h
        # read pointers came back from MySQL: b read 2 (and its own send, 5)
        ra = await ca.request({"op": "history", "room": room, "before": 4, "limit": 3})
        assert [x["unread"] for x in ra["messages"]] == [0, 0, 0], ra
    finally:
        await ca.close()
        await cb.close()


@run_async
async def test_retry_after_a_dropped_ack_is_the_same_message():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    the_cid = cid()
    await ca.send({"op": "send", "id": 1, "room": room, "cid": the_cid, "body": "once"})
    await ca.ws.close()                              # gone before the ack
    ca = await connect(a, "b")
    try:
        r = await ca.send_msg(room, "once", msg_cid=the_cid)
        assert r["op"] == "ack" and r["seq"] == 1, r
        r2 = await ca.send_msg(room, "once", msg_cid=the_cid)
        assert r2["seq"] == 1, r2
        persisted(room, 1)
        await asyncio.sleep(0.5)
        assert len(query("SELECT seq FROM messages WHERE room_id=%s", (room,))) == 1
    finally:
        await ca.close()


@run_async
async def test_rooms_list_by_activity_with_unread_and_cursor():
    me, other = uid(), uid()
    rooms = [create_room(me, [me, other], title="r%d" % i) for i in range(3)]
    cm = await connect(me, "a")
    co = await connect(other, "b")
    try:
        # activity order: rooms[1] newest, then rooms[0]; rooms[2] has no message
        await send_n(co, rooms[0], 2)
        await asyncio.sleep(0.01)
        await send_n(co, rooms[1], 1)
        wait_until(lambda: query("SELECT last_seq FROM rooms WHERE id=%s", (rooms[1],))[0]["last_seq"] == 1)
        # the list reads a replica
        wait_until(lambda: query("SELECT COUNT(*) AS n FROM room_members WHERE user_id=%s AND room_id IN (%s,%s)"
                                 " AND last_message_at > (SELECT created_at FROM rooms WHERE id=%s)",
                                 (me, rooms[0], rooms[1], rooms[2]), "replica")[0]["n"] == 2,
                   what="room list activity on the replica")
        r = await cm.request({"op": "rooms", "limit": 2})
        assert [x["id"] for x in r["rooms"]] == [rooms[1], rooms[0]], r
        assert [x["unread"] for x in r["rooms"]] == [1, 2], r
        assert r["cursor"], r
        r2 = await cm.request({"op": "rooms", "limit": 2, "cursor": r["cursor"]})
        assert [x["id"] for x in r2["rooms"]] == [rooms[2]] and r2["cursor"] is None, r2
        await cm.request({"op": "read", "room": rooms[0], "seq": 2})
        st, body = rest("GET", "/api/rooms?limit=5", "b", token(me))
        assert st == 200, body
        unread = {x["id"]: x["unread"] for x in body["rooms"]}
        assert unread == {rooms[0]: 0, rooms[1]: 1, rooms[2]: 0}, body
    finally:
        await cm.close()
        await co.close()


def test_room_creation_is_idempotent_with_a_key():
    a, b = uid(), uid()
    key = "k-%016x" % random.getrandbits(64)
    st1, r1 = rest("POST", "/api/rooms", "a", token(a), {"title": "once", "members": [b]},
                   headers={"Idempotency-Key": key})
    st2, r2 = rest("POST", "/api/rooms", "b", token(a), {"title": "once", "members": [b]},
                   headers={"Idempotency-Key": key})
    assert st1 == 201 and st2 == 201 and r1["id"] == r2["id"], (r1, r2)
    assert r1["existed"] is False and r2["existed"] is True, (r1, r2)
    st3, r3 = rest("POST", "/api/rooms", "a", token(a), {"title": "once", "members": [b], "idempotency_key": key})
    assert st3 == 201 and r3["id"] == r1["id"], r3
    assert len(query("SELECT room_id FROM room_requests WHERE creator_id=%s", (a,))) == 1
    # another user's same key is another room
    st4, r4 = rest("POST", "/api/rooms", "a", token(b), {"title": "once", "members": [a]},
                   headers={"Idempotency-Key": key})
    assert st4 == 201 and r4["id"] != r1["id"], r4
    st5, r5 = rest("POST", "/api/rooms", "a", token(a), {"members": [b]}, headers={"Idempotency-Key": "x" * 65})
    assert st5 == 400, r5


@run_async
async def test_invite_leave_and_details():
    a, b, c, d = uid(), uid(), uid(), uid()
    direct = create_room(a, [a, b], kind="direct")
    cb = await connect(b, "b")
    cc = await connect(c, "a")
    try:
        # a direct room past two members becomes a new group room
        st, r = rest("POST", "/api/rooms/%d/invite" % direct, "a", token(a), {"members": [c]})
        assert st == 200 and r["created"] is True and r["room"] != direct and r["added"] == [c], (st, r)
        group = r["room"]
        assert query("SELECT kind FROM rooms WHERE id=%s", (group,))[0]["kind"] == "group"
        assert sorted(int(x) for x in redis("SMEMBERS", "{r:%d}:members" % direct)) == sorted([a, b])
        assert sorted(int(x) for x in redis("SMEMBERS", "{r:%d}:members" % group)) == sorted([a, b, c])
        join = await cc.expect("msg", room=group)
        assert join["kind"] == "system" and json.loads(join["body"])["event"] == "join", join

        # a group room just gains a member
        st, r = rest("POST", "/api/rooms/%d/invite" % group, "b", token(b), {"members": [d, c]})
        assert st == 200 and r["created"] is False and r["room"] == group and r["added"] == [d], (st, r)

        st, info = rest("GET", "/api/rooms/%d" % group, "a", token(c))
        assert st == 200 and info["id"] == group and info["kind"] == "group", info
        assert sorted(m["user"] for m in info["members"]) == sorted([a, b, c, d]), info

        # c leaves: a system message, then nothing more for c
        before = (await cb.send_msg(group, "before c leaves"))["seq"]
        st, r = rest("POST", "/api/rooms/%d/leave" % group, "b", token(c))
        assert st == 200 and r["left_seq"] == before + 1, (st, r)
        leave = await cb.expect("msg", room=group, seq=before + 1)
        assert leave["kind"] == "system" and json.loads(leave["body"]) == {"event": "leave", "user": str(c)}, leave
        after = await cb.send_msg(group, "after c left")
        await asyncio.sleep(0.5)
        assert after["seq"] not in [f.get("seq") for f in cc.frames if f.get("room") == group], cc.frames
        r = await cc.send_msg(group, "let me back")
        assert r["op"] == "error" and r["code"] == "forbidden", r
        # c pages history up to its leave and no further
        h = await cc.request({"op": "history", "room": group, "limit": 50})
        assert h["op"] == "history" and h["messages"][0]["seq"] == before + 1, h
        assert wait_until(lambda: query("SELECT left_seq FROM room_members WHERE room_id=%s AND user_id=%s",
                                        (group, c))[0]["left_seq"] == before + 1)
        # leaving again is answered with the same leave (a retry after a 503 is safe)
        st, again = rest("POST", "/api/rooms/%d/leave" % group, "a", token(c))
        assert st == 200 and again["left_seq"] == before + 1, (st, again)
        await asyncio.sleep(0.3)
        assert len([f for f in cb.frames if f.get("op") == "msg" and f.get("kind") == "system"
                    and json.loads(f["body"]).get("event") == "leave"]) == 1, cb.frames
        # a retried invite changes nothing
        st, r = rest("POST", "/api/rooms/%d/invite" % group, "b", token(b), {"members": [d]})
        assert st == 200 and r["added"] == [], (st, r)
        # someone who never was a member cannot leave
        st, _ = rest("POST", "/api/rooms/%d/leave" % group, "a", token(uid()))
        assert st == 403
    finally:
        await cb.close()
        await cc.close()


@run_async
async def test_presence_online_and_offline_across_nodes():
    a, b = uid(), uid()
    create_room(a, [a, b])
    cb = await connect(b, "b")
    try:
        ca = await connect(a, "a")
        ev = await cb.expect("presence", user=a, online=True)
        assert ev == {"op": "presence", "user": a, "online": True}, ev
        ca2 = await connect(a, "b")                 # a second device: no new event
        await ca2.close()
        await asyncio.sleep(0.5)
        assert len([f for f in cb.frames if f.get("op") == "presence" and f.get("user") == a]) == 1, cb.frames
        await ca.close()
        ev = await cb.expect("presence", user=a, online=False, timeout=10)
        assert ev["last_seen"] > 0, ev
    finally:
        await cb.close()


@run_async
async def test_presence_of_a_crowd_connecting_at_once_is_all_announced():
    """A worker has at most 16 contacts lookups out at a time and queues the
    rest (a connection storm must not swamp the relay-worker): 40 contacts
    of one watcher coming online together are still each announced once."""
    watcher = uid()
    crowd = [uid() for _ in range(40)]
    create_room(watcher, [watcher] + crowd)
    toks = {u: token(u) for u in crowd}
    cw = await connect(watcher, "b")
    conns = []
    try:
        conns = await asyncio.gather(*[connect(u, "a", toks[u]) for u in crowd])
        want = set(crowd)
        await cw.collect("presence", lambda got: {f["user"] for f in got if f.get("online")} >= want,
                         timeout=20)
        try:
            while True:                         # a late duplicate would show here
                await cw.recv(timeout=0.5)
        except asyncio.TimeoutError:
            pass
        ups = [f["user"] for f in cw.frames if f.get("op") == "presence" and f.get("online") and f["user"] in want]
        assert sorted(ups) == sorted(crowd), ups
    finally:
        await asyncio.gather(*[c.close() for c in conns])
        await cw.close()


def _raw_ws(port, tok):
    s = open_socket(port, 5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (tok, key)).encode())
    return s


def _frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_frames(s):
    data = b""
    s.settimeout(5)
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    data = data[data.index(b"\r\n\r\n") + 4:]
    frames = []
    while len(data) >= 2:
        op, n = data[0] & 0x0f, data[1] & 0x7f
        off = 2
        if n == 126:
            n, off = int.from_bytes(data[2:4], "big"), 4
        frames.append((op, data[off:off + n]))
        data = data[off + n:]
    return frames


def test_no_data_frame_after_the_servers_close():
    a = uid()
    room = create_room(a, [a, uid()])
    s = _raw_ws(NGINX_PORTS["a"], token(a))
    # a send (its ack comes later, from Redis and Kafka) and at once a close
    req = json.dumps({"op": "send", "id": 1, "room": room, "cid": cid(), "body": "x"}).encode()
    s.sendall(_frame(1, req) + _frame(8, (1000).to_bytes(2, "big")))
    frames = _read_frames(s)
    s.close()
    ops = [op for op, _ in frames]
    assert 8 in ops, frames
    assert all(op == 8 for op in ops[ops.index(8):]), frames
    # the message itself was still admitted and persisted (the client retries with its cid to learn the seq)
    persisted(room, 1)


@run_async
async def test_large_pages_fit_the_clients_queue():
    """A page of big messages is cut to what the output queue holds (half of
    minichat_send_queue_size) instead of closing the connection; `more`
    leads to the rest.  A replay too large to send is not recovered."""
    a = uid()
    room = create_room(a, [a, uid()])
    c = await connect(a, "a")
    try:
        big = "x" * 60000
        for _ in range(20):                       # 1.2 MB in all, over the 512 KiB budget
            assert (await c.send_msg(room, big))["op"] == "ack"
        got, before = [], None
        while True:
            req = {"op": "history", "room": room, "limit": 50}
            if before:
                req["before"] = before
            h = await c.request(req, timeout=15)
            assert h["op"] == "history", h
            assert 0 < len(h["messages"]) < 20 or not h["more"], h["more"]
            got += [m["seq"] for m in h["messages"]]
            if not h["more"]:
                break
            before = h["messages"][-1]["seq"]
        assert got == list(range(20, 0, -1)), got
        r = await c.request({"op": "resume", "rooms": {str(room): 0}}, timeout=15)
        assert r["op"] == "resumed" and r["recovered"] is False, r
        assert (await c.send_msg(room, "still open"))["op"] == "ack"
    finally:
        await c.close()


@run_async
async def test_odd_requests_get_clear_errors():
    a = uid()
    c = await connect(a, "b")
    try:
        r = await c.request({"op": "rooms", "cursor": "garbage"})
        assert r["op"] == "error" and r["code"] == "bad_request", r
        st, body = rest("GET", "/api/rooms?cursor=garbage", "a", token(a))
        assert st == 400 and body["code"] == "bad_request", (st, body)
        await c.send('{"op":"send","id":3,"room":1,"cid":"x","body":"a\\u0000b"}')
        r = await c.expect("error")
        assert r["code"] == "bad_request" and "0000" in r["message"], r
        # up to 100 rooms in one resume: refused room by room, never rate_limited
        r = await c.request({"op": "resume", "rooms": {str(987650000 + i): 0 for i in range(70)}})
        codes = [r["code"]] + [(await c.expect("error"))["code"] for _ in range(69)]
        assert set(codes) <= {"not_found", "forbidden"}, codes
        r = await c.request({"op": "resume", "rooms": {str(i + 1): 0 for i in range(101)}})
        assert r["op"] == "error" and r["code"] == "bad_request", r
    finally:
        await c.close()


@run_async
async def test_same_sid_on_two_connections_keeps_the_user_online():
    a, b = uid(), uid()
    create_room(a, [a, b])
    cb = await connect(b, "a")
    import websockets
    from conftest import ws_url, ws_open, SUBPROTOCOL, Client
    sid = "00000000%08x" % random.getrandbits(32)
    try:
        first = Client(await ws_open(ws_url("a", token(a), "sid=" + sid), subprotocols=[SUBPROTOCOL]),
                       a, "a")
        await first.expect("hello")
        await cb.expect("presence", user=a, online=True)
        second = Client(await ws_open(ws_url("b", token(a), "sid=" + sid), subprotocols=[SUBPROTOCOL]),
                        a, "b")
        h = await second.expect("hello")
        assert h["sid"] == sid and h["resumed"] is True, h
        await first.close()                        # the old connection of the same session goes
        await asyncio.sleep(1)
        assert [f for f in cb.frames if f.get("op") == "presence" and f.get("online") is False] == [], cb.frames
        await second.close()
        await cb.expect("presence", user=a, online=False, timeout=10)
    finally:
        await cb.close()
