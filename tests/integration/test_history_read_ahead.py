"""History pages read ahead (minichat_history_read_ahead, on by default).

Once a user's page of a room came from MySQL, that user's next pages of
the room at or below it are asked of the relay-worker at the same time as
the history script; the script's answer still decides.  These tests page
a room whose recent log is gone (every page from MySQL) on one WebSocket
connection, so every page after the first is read ahead by the same
worker, and check that the pages are exactly what the script allows:
the right seqs and unread counts, a former member's pages only up to its
leave, nothing for a non-member."""

import json

from conftest import connect, create_room, query, redis, rest, run_async, token, uid, wait_until


def persisted(room, n):
    return wait_until(lambda: len(query("SELECT seq FROM messages WHERE room_id=%s", (room,), role="replica")) == n,
                      what="%d messages of room %d on the replica" % (n, room))


async def send_n(c, room, n):
    for i in range(n):
        a = await c.send_msg(room, "m%d" % i)
        assert a["op"] == "ack", a


async def page_all(c, room, limit, first_before=None):
    """Pages the room from first_before (the newest when None) down to seq 1;
    returns the pages' seqs and unread counts, newest first."""
    seqs, unread, before = [], [], first_before
    while True:
        req = {"op": "history", "room": room, "limit": limit}
        if before:
            req["before"] = before
        h = await c.request(req)
        assert h["op"] == "history", h
        seqs += [m["seq"] for m in h["messages"]]
        unread += [m["unread"] for m in h["messages"]]
        if not h["more"]:
            return seqs, unread
        before = h["messages"][-1]["seq"]


@run_async
async def test_pages_from_mysql_read_ahead_are_exact():
    a, b, c = uid(), uid(), uid()
    room = create_room(a, [a, b, c])
    ca = await connect(a, "a")
    try:
        await send_n(ca, room, 23)
        r = await ca.request({"op": "read", "room": room, "seq": 23})
        assert r["seq"] == 23, r
        persisted(room, 23)
        redis("DEL", "{r:%d}:log" % room)          # every page from MySQL from now on
        for _ in range(2):                          # the second pass is read ahead from its first page
            seqs, unread = await page_all(ca, room, 5)
            assert seqs == list(range(23, 0, -1)), seqs
            assert unread == [2] * 23, unread       # b and c read nothing
        # a before above the newest is clamped by the script, then paged on
        seqs, _ = await page_all(ca, room, 4, first_before=1000)
        assert seqs == list(range(23, 0, -1)), seqs
        # the same pages over REST, one request at a time
        for before in (24, 9, 2):
            st, h = rest("GET", "/api/rooms/%d/messages?before=%d&limit=3" % (room, before), "a", token(a))
            assert st == 200, (st, h)
            assert [m["seq"] for m in h["messages"]] == list(range(before - 1, max(0, before - 4), -1)), h
    finally:
        await ca.close()


@run_async
async def test_a_former_member_reads_ahead_only_up_to_its_leave():
    a, b, d = uid(), uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    cb = await connect(b, "a")
    cd = await connect(d, "a")
    try:
        await send_n(ca, room, 12)
        persisted(room, 12)
        redis("DEL", "{r:%d}:log" % room)
        seqs, _ = await page_all(cb, room, 5)       # b's pages of the room are older than the log
        assert seqs == list(range(12, 0, -1)), seqs
        st, r = rest("POST", "/api/rooms/%d/leave" % room, "a", token(b))
        assert st == 200 and r["left_seq"] == 13, (st, r)
        await send_n(ca, room, 6)                   # 14 .. 19, which b must not see
        persisted(room, 19)
        redis("DEL", "{r:%d}:log" % room)
        for first in (None, 13, 100):
            seqs, _ = await page_all(cb, room, 5, first_before=first)
            want = list(range(13, 0, -1)) if first != 13 else list(range(12, 0, -1))
            assert seqs == want, (first, seqs)
            last = await cb.request({"op": "history", "room": room, "before": 14, "limit": 1})
            assert [m["seq"] for m in last["messages"]] == [13], last
            assert json.loads(last["messages"][0]["body"])["event"] == "leave", last
        # one who was never a member gets no page, read ahead or not
        for before in (0, 12, 5):
            req = {"op": "history", "room": room, "limit": 5}
            if before:
                req["before"] = before
            r = await cd.request(req)
            assert r["op"] == "error" and r["code"] == "forbidden", r
    finally:
        await ca.close()
        await cb.close()
        await cd.close()


@run_async
async def test_escaped_bodies_come_back_the_same_from_the_log_and_from_mysql():
    """Quotes, backslashes and control characters in a body and a cid: the
    delivery, a page from the log and pages from MySQL (read ahead) all
    give back exactly what was sent."""
    a = uid()
    room = create_room(a, [a, uid()])
    ca = await connect(a, "a")
    bodies = ['say "hi"\\n', "tab\there\nnew line\r\b\f", "ctl \x01\x1f\x7f end", "plain é 한국어 ✓", '\\"\\\\']
    try:
        for i, body in enumerate(bodies):
            r = await ca.send_msg(room, body, msg_cid='c"%d\\' % i)
            assert r["op"] == "ack", r
        want = list(reversed(bodies))
        h = await ca.request({"op": "history", "room": room, "limit": 10})
        assert [m["body"] for m in h["messages"]] == want, h
        persisted(room, len(bodies))
        redis("DEL", "{r:%d}:log" % room)
        for _ in range(2):
            seqs, got = [], []
            before = None
            while True:
                req = {"op": "history", "room": room, "limit": 2}
                if before:
                    req["before"] = before
                h = await ca.request(req)
                got += [(m["body"], m["cid"]) for m in h["messages"]]
                if not h["more"]:
                    break
                before = h["messages"][-1]["seq"]
            assert got == [(b, 'c"%d\\' % (len(bodies) - 1 - i)) for i, b in enumerate(want)], got
    finally:
        await ca.close()
