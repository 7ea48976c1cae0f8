"""The send path end to end: REST room creation, WebSocket send on one node,
delivery on both nodes, persistence through Kafka into the MySQL primary and
its replica."""

import asyncio

from conftest import (cid, connect, create_room, query, redis, run_async, uid, wait_until)


def db_messages(room, role="primary"):
    return query("SELECT room_id, seq, sender_id, body, client_msg_id FROM messages "
                 "WHERE room_id=%s ORDER BY seq", (room,), role)


def db_last_seq(room, role="primary"):
    rows = query("SELECT last_seq FROM rooms WHERE id=%s", (room,), role)
    return rows[0]["last_seq"] if rows else None


def check_msg(frame, room, seq, sender, msg_cid, body):
    assert frame["room"] == room, frame
    assert frame["seq"] == seq, frame
    assert frame["from"] == sender, frame
    assert frame["cid"] == msg_cid, frame
    assert frame["body"] == body, frame
    assert isinstance(frame["ts"], int) and frame["ts"] > 1_600_000_000_000, frame


@run_async
async def test_end_to_end_across_nodes():
    u1, u2, u3 = uid(), uid(), uid()
    room = create_room(u1, [u1, u2, u3], node="a")

    c2 = await connect(u2, "b")      # remote member
    c3 = await connect(u3, "a")      # member on the sender's node
    c1 = await connect(u1, "a")
    try:
        c = cid()
        ack = await c1.request({"op": "send", "id": 7, "room": room, "cid": c, "body": "hi"})
        assert ack["op"] == "ack", ack
        assert ack["id"] == 7 and ack["room"] == room and ack["cid"] == c, ack
        assert ack["seq"] == 1, ack
        assert isinstance(ack["ts"], int) and ack["ts"] > 1_600_000_000_000, ack

        for rc in (c2, c3):
            m = await rc.expect("msg", room=room, seq=1)
            check_msg(m, room, 1, u1, c, "hi")
            assert m["ts"] == ack["ts"], (m, ack)

        # Persisted once on the primary, then replicated.
        rows = wait_until(lambda: db_messages(room), what="message row on the primary")
        assert rows == [{"room_id": room, "seq": 1, "sender_id": u1, "body": "hi", "client_msg_id": c}]
        wait_until(lambda: db_last_seq(room) == 1, what="rooms.last_seq = 1 on the primary")
        assert wait_until(lambda: db_messages(room, "replica"), what="message row on the replica") == rows
        wait_until(lambda: db_last_seq(room, "replica") == 1, what="rooms.last_seq = 1 on the replica")

        # A burst, pipelined: acks and deliveries in seq order, no gaps, no duplicates.
        n = 30
        cids = [cid() for _ in range(n)]
        ids = [c1.next_id() for _ in range(n)]
        for i in range(n):
            await c1.send({"op": "send", "id": ids[i], "room": room, "cid": cids[i], "body": "m%d" % i})
        for i in range(n):
            a = await c1.expect("ack", id=ids[i])
            assert a["seq"] == i + 2 and a["cid"] == cids[i], a
        for rc in (c2, c3):
            got = await rc.collect("msg", lambda fs: len(fs) >= n, room=room)
            assert [f["seq"] for f in got] == list(range(2, n + 2)), [f["seq"] for f in got]
            for i, f in enumerate(got):
                check_msg(f, room, i + 2, u1, cids[i], "m%d" % i)

        want = [1] + list(range(2, n + 2))
        wait_until(lambda: [r["seq"] for r in db_messages(room)] == want, what="%d rows on the primary" % (n + 1))
        wait_until(lambda: db_last_seq(room) == n + 1, what="rooms.last_seq = %d" % (n + 1))
        wait_until(lambda: [r["seq"] for r in db_messages(room, "replica")] == want,
                   what="%d rows on the replica" % (n + 1))
        rows = db_messages(room)
        assert [r["client_msg_id"] for r in rows] == [c] + cids
        assert all(r["sender_id"] == u1 for r in rows)

        # Nothing more arrives: no duplicate delivery on either node.
        for rc in (c2, c3):
            extra = [f for f in rc.pending if f.get("op") == "msg" and f.get("room") == room]
            assert extra == [], extra
    finally:
        for x in (c1, c2, c3):
            await x.close()


@run_async
async def test_reply_direction_and_both_nodes_send():
    """Both members send, each from their own node: one dense seq for the room."""
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2], node="b")
    c1 = await connect(u1, "a")
    c2 = await connect(u2, "b")
    try:
        seqs = []
        for i in range(5):
            a1 = await c1.send_msg(room, "from-a-%d" % i)
            a2 = await c2.send_msg(room, "from-b-%d" % i)
            assert a1["op"] == "ack" and a2["op"] == "ack", (a1, a2)
            seqs += [a1["seq"], a2["seq"]]
        assert seqs == list(range(1, 11)), seqs
        got2 = await c2.collect("msg", lambda fs: len(fs) >= 5, room=room, **{"from": u1})
        got1 = await c1.collect("msg", lambda fs: len(fs) >= 5, room=room, **{"from": u2})
        assert [f["seq"] for f in got2] == [1, 3, 5, 7, 9]
        assert [f["seq"] for f in got1] == [2, 4, 6, 8, 10]
        wait_until(lambda: [r["seq"] for r in db_messages(room)] == list(range(1, 11)), what="10 rows")
        wait_until(lambda: db_last_seq(room) == 10, what="rooms.last_seq = 10")
    finally:
        await c1.close()
        await c2.close()


@run_async
async def test_duplicate_cid_is_acked_once():
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c1 = await connect(u1, "a")
    c2 = await connect(u2, "b")
    try:
        c = cid()
        a1 = await c1.request({"op": "send", "id": 11, "room": room, "cid": c, "body": "once"})
        a2 = await c1.request({"op": "send", "id": 12, "room": room, "cid": c, "body": "once"})
        assert a1["op"] == "ack" and a2["op"] == "ack", (a1, a2)
        assert a1["seq"] == a2["seq"] == 1, (a1, a2)
        assert a2["id"] == 12 and a2["cid"] == c and a2["room"] == room, a2
        assert a2["ts"] == a1["ts"], (a1, a2)

        # A later message marks the point after which a duplicate would show.
        later = cid()
        a3 = await c1.send_msg(room, "later", later)
        assert a3["seq"] == 2, a3
        got = await c2.collect("msg", lambda fs: any(f["cid"] == later for f in fs), room=room)
        assert [f["seq"] for f in got] == [1, 2], got
        assert [f["cid"] for f in got] == [c, later], got

        wait_until(lambda: len(db_messages(room)) == 2, what="2 rows")
        rows = db_messages(room)
        assert [(r["seq"], r["client_msg_id"]) for r in rows] == [(1, c), (2, later)], rows

        # The same cid after a reconnect (the client retrying) is still the same message.
        await c1.close()
        c1 = await connect(u1, "b")
        a4 = await c1.request({"op": "send", "id": 13, "room": room, "cid": c, "body": "once"})
        assert a4["op"] == "ack" and a4["seq"] == 1, a4
        wait_until(lambda: db_last_seq(room) == 2, what="rooms.last_seq = 2")
        assert len(db_messages(room)) == 2
    finally:
        await c1.close()
        await c2.close()


@run_async
async def test_body_is_stored_verbatim():
    """SQL and JSON metacharacters and non-ASCII text pass through untouched."""
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c1 = await connect(u1, "a")
    c2 = await connect(u2, "b")
    try:
        bodies = ["it's \"quoted\" \\ back'; DROP TABLE messages; --",
                  "한국어 메시지 😀 \u00e9\u4e2d",
                  "line1\nline2\ttab </script> {\"op\":\"ack\"}"]
        for i, b in enumerate(bodies):
            a = await c1.send_msg(room, b)
            assert a["op"] == "ack" and a["seq"] == i + 1, a
        got = await c2.collect("msg", lambda fs: len(fs) >= len(bodies), room=room)
        assert [f["body"] for f in got] == bodies
        wait_until(lambda: [r["body"] for r in db_messages(room)] == bodies, what="verbatim rows")
        wait_until(lambda: [r["body"] for r in db_messages(room, "replica")] == bodies,
                   what="verbatim rows on the replica")
    finally:
        await c1.close()
        await c2.close()


@run_async
async def test_hostile_text_round_trips_byte_exact_through_mysql_and_history():
    """Every byte an SQL string literal treats specially (quotes,
    backslashes, escape-looking text, control bytes, emoji) goes through
    Kafka and the consumer's batch and comes back the same from MySQL (both
    servers), from the room list's preview, and from a history page served
    by MySQL."""
    u1 = uid()
    room = create_room(u1, [u1])
    c = await connect(u1, "a")
    try:
        bodies = ["'", "''", "\\", "ends in a backslash \\", "\\' OR 1=1; -- \\\\'",
                  "\\0 \\n \\Z \\% \\_ are text, not escapes",
                  "ctrl \x01\x08\t\n\r\x1a\x1b\x7f", "quote\"double\"",
                  "emoji \U0001F600 \U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467 \u2028 \ufeff",
                  "'" * 3000 + "\\" * 3000,
                  "last: \uc548\ub155 \\'\""]
        cids = ["c'%d\\\"%%_-%s" % (i, cid()) for i in range(len(bodies))]
        for i, b in enumerate(bodies):
            a = await c.send_msg(room, b, msg_cid=cids[i])
            assert a["op"] == "ack" and a["seq"] == i + 1, a
        want = [(b.encode().hex().upper(), k.encode().hex().upper()) for b, k in zip(bodies, cids)]

        def stored(role):
            return [(r["b"], r["c"]) for r in query("SELECT HEX(body) AS b, HEX(client_msg_id) AS c FROM messages "
                                                     "WHERE room_id=%s ORDER BY seq", (room,), role)]
        wait_until(lambda: stored("primary") == want, what="byte-exact rows")
        wait_until(lambda: stored("replica") == want, what="byte-exact rows on the replica")
        wait_until(lambda: query("SELECT last_preview FROM rooms WHERE id=%s", (room,))[0]["last_preview"]
                   == bodies[-1], what="the preview")

        redis("DEL", "{r:%d}:log" % room)            # the pages must come from MySQL
        got, before = [], None
        while True:
            req = {"op": "history", "room": room, "limit": 5}
            if before is not None:
                req["before"] = before
            h = await c.request(req, timeout=15)
            assert h["op"] == "history", h
            got += h["messages"]
            if not h["more"]:
                break
            before = h["messages"][-1]["seq"]
        got.reverse()
        assert [m["seq"] for m in got] == list(range(1, len(bodies) + 1)), got
        assert [m["body"] for m in got] == bodies
        assert [m["cid"] for m in got] == cids
    finally:
        await c.close()


@run_async
async def test_concurrent_senders_get_dense_seq():
    """Several members on both nodes send at once: seq is dense and unique."""
    users = [uid() for _ in range(4)]
    room = create_room(users[0], users)
    clients = [await connect(u, "ab"[i % 2]) for i, u in enumerate(users)]
    try:
        per = 10

        async def burst(c):
            acks = []
            for i in range(per):
                a = await c.send_msg(room, "u%d-%d" % (c.user, i))
                assert a["op"] == "ack", a
                acks.append(a["seq"])
            return acks

        results = await asyncio.gather(*(burst(c) for c in clients))
        allseq = sorted(s for r in results for s in r)
        assert allseq == list(range(1, per * len(users) + 1)), allseq
        for r in results:
            assert r == sorted(r), r           # each sender's own messages in order
        total = per * len(users)
        for c in clients:
            # Others' messages (a sender may or may not see its own echoed).
            got = await c.collect("msg", lambda fs: sum(f["from"] != c.user for f in fs) >= total - per,
                                  room=room)
            seqs = [f["seq"] for f in got]
            node_of = {cl.user: cl.node for cl in clients}
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), \
                "out-of-order or duplicate delivery to a member on node %s: %s" % (
                    c.node, " ".join("%d(%s)" % (f["seq"], node_of[f["from"]]) for f in got))
            others = sorted(s for r, cl in zip(results, clients) if cl is not c for s in r)
            assert [f["seq"] for f in got if f["from"] != c.user] == others
        wait_until(lambda: [r["seq"] for r in db_messages(room)] == list(range(1, total + 1)),
                   what="%d dense rows" % total)
    finally:
        for c in clients:
            await c.close()


@run_async
async def test_every_connection_of_a_member_receives():
    """A member connected on both nodes (two devices) gets the message on each;
    the sender's other device sees it too."""
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    s_a = await connect(u1, "a")
    s_b = await connect(u1, "b")       # the sender's second device
    r_a = await connect(u2, "a")
    r_b = await connect(u2, "b")
    try:
        assert r_a.hello["sid"] != r_b.hello["sid"]
        c = cid()
        a = await s_a.send_msg(room, "to all devices", c)
        assert a["op"] == "ack" and a["seq"] == 1, a
        for rc in (r_a, r_b, s_b):
            m = await rc.expect("msg", room=room, seq=1)
            check_msg(m, room, 1, u1, c, "to all devices")
        # One row, whatever the number of recipients' connections.
        wait_until(lambda: db_last_seq(room) == 1, what="rooms.last_seq = 1")
        assert len(db_messages(room)) == 1
    finally:
        for x in (s_a, s_b, r_a, r_b):
            await x.close()


@run_async
async def test_member_moves_to_the_other_node():
    """A member reconnects on the other node and receives what is sent next."""
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c1 = await connect(u1, "a")
    c2 = await connect(u2, "a")
    try:
        a = await c1.send_msg(room, "before")
        await c2.expect("msg", room=room, seq=a["seq"])
        await c2.close()
        c2 = await connect(u2, "b")
        a = await c1.send_msg(room, "after")
        m = await c2.expect("msg", room=room, seq=a["seq"])
        assert m["body"] == "after" and a["seq"] == 2, (a, m)
    finally:
        await c1.close()
        await c2.close()
