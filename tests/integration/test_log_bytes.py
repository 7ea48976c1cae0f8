"""A room's recent log in Redis is capped in bytes as well as in count.

send.lua keeps `{r:R}:logbytes`, the sum of the lengths of the entries of
`{r:R}:log`, and drops the oldest entries until the log is under both
`minichat_recent_log_size` and `minichat_recent_log_bytes` (the newest entry
always stays).  These tests read both caps from the stack's generated
nginx.conf (the dev stack's byte cap is small: conf/nginx.conf.in), check
the log and its total with redis-cli after each send, and check that
history and resume over what the byte cap evicted still come out complete
(from MySQL) or say they could not recover.  The total must stay right when
the log is rebuilt or deleted.  History is read right after the sends, not
after MySQL has them: a page the log does not cover comes from MySQL, and
the relay-worker waits for the consumer when the primary shows a hole.
"""

import json
import os
import re

from conftest import TOP, connect, create_room, query, redis, run_async, uid, wait_until

RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))
BIG = 60000     # body bytes of a big message: a send frame stays under the dev stack's 64k


def nginx_conf_value(name):
    """The value of directive `name` in node a's generated nginx.conf."""
    with open(os.path.join(RUN, "nginx-a", "nginx.conf")) as f:
        m = re.search(r"^\s*%s\s+(\S+);" % re.escape(name), f.read(), re.M)
    assert m, "%s not set in the stack's nginx.conf" % name
    return m.group(1)


def size_value(text):
    """An nginx size ("256k", "1m", "4096") in bytes."""
    m = re.fullmatch(r"(\d+)([kKmM]?)", text)
    assert m, text
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def log_state(room):
    """(seqs of the log's entries in order, their total length in bytes, the stored total)."""
    entries = [e.encode() for e in redis("ZRANGE", "{r:%d}:log" % room, 0, -1)]
    seqs = [json.loads(e)["seq"] for e in entries]
    stored = redis("GET", "{r:%d}:logbytes" % room)
    return seqs, sum(len(e) for e in entries), int(stored[0]) if stored else None


def check_log(room, last, byte_cap, count_cap):
    """The log is the newest seqs up to `last` without a hole, under both caps
    (or the newest entry alone), and its stored total is right.  Returns its seqs."""
    seqs, total, stored = log_state(room)
    assert seqs and seqs[-1] == last, (room, seqs[-5:], last)
    assert seqs == list(range(seqs[0], last + 1)), "room %d: log has a hole: %s" % (room, seqs)
    assert stored == total, "room %d: logbytes %r, entries add up to %d" % (room, stored, total)
    assert len(seqs) <= count_cap, (room, len(seqs))
    assert total <= byte_cap or len(seqs) == 1, "room %d: %d bytes in %d entries, cap %d" % (
        room, total, len(seqs), byte_cap)
    return seqs


def persisted(room, n):
    return wait_until(lambda: len(query("SELECT seq FROM messages WHERE room_id=%s", (room,))) == n,
                      what="%d messages of room %d in MySQL" % (n, room))


@run_async
async def test_big_messages_evict_small_ones_and_history_stays_complete():
    byte_cap = size_value(nginx_conf_value("minichat_recent_log_bytes"))
    count_cap = int(nginx_conf_value("minichat_recent_log_size"))
    n_small, n_big = 30, 6
    assert byte_cap < (n_big - 1) * BIG, "the stack's byte cap (%d) is too large for this test" % byte_cap
    assert count_cap > n_small + n_big, count_cap

    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    cb = await connect(b, "b")
    try:
        bodies = {}
        for i in range(n_small):
            # multibyte text: the cap counts bytes, not characters
            body = "small %d h\u00e9llo \u2713 \U0001F600" % i
            r = await ca.send_msg(room, body)
            assert r["op"] == "ack", r
            bodies[r["seq"]] = body
        last = r["seq"]
        assert check_log(room, last, byte_cap, count_cap) == list(range(1, last + 1))

        dropped_at_once = 0
        for i in range(n_big):
            before = log_state(room)[0]
            body = ("big %d " % i) + "x" * (BIG - 8)
            r = await ca.send_msg(room, body)
            assert r["op"] == "ack", r
            bodies[r["seq"]] = body
            last = r["seq"]
            after = check_log(room, last, byte_cap, count_cap)
            dropped_at_once = max(dropped_at_once, len(before) + 1 - len(after))
        # one big message pushed out every small one at once
        assert after[0] > n_small, after
        assert dropped_at_once >= n_small, dropped_at_once

        # the live messages all arrived, big ones included
        got = await cb.collect("msg", lambda fs: len(fs) >= last, room=room)
        assert [(m["seq"], m["body"]) for m in got] == sorted(bodies.items())

        # a resume from inside the log is recovered; from before it, not
        r = await cb.request({"op": "resume", "rooms": {str(room): last - 2}})
        assert r.get("recovered") is True, r
        r = await cb.request({"op": "resume", "rooms": {str(room): n_small}})
        assert r.get("recovered") is False, r

        # history right after the sends (an ack means Kafka has a message, not
        # yet MySQL): pages across the evicted range and the log's edge come
        # out complete and in order, from MySQL
        edge = after[0]
        page = await cb.request({"op": "history", "room": room, "limit": 50})
        assert [(m["seq"], m["body"]) for m in page["messages"]] == sorted(bodies.items(), reverse=True), page
        assert page["more"] is False, {k: v for k, v in page.items() if k != "messages"}
        page = await cb.request({"op": "history", "room": room, "before": edge + 2, "limit": 10})
        assert [m["seq"] for m in page["messages"]] == list(range(edge + 1, edge - 9, -1)), page
        assert all(m["body"] == bodies[m["seq"]] for m in page["messages"])
        page = await cb.request({"op": "history", "room": room, "before": n_small + 1, "limit": 5})
        assert [(m["seq"], m["body"]) for m in page["messages"]] == \
               [(s, bodies[s]) for s in range(n_small, n_small - 5, -1)], page
    finally:
        await ca.close()
        await cb.close()


@run_async
async def test_byte_total_survives_rebuild_and_a_lost_log():
    byte_cap = size_value(nginx_conf_value("minichat_recent_log_bytes"))
    count_cap = int(nginx_conf_value("minichat_recent_log_size"))
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    try:
        seq = 0

        async def send(body):
            nonlocal seq
            r = await ca.send_msg(room, body)
            assert r["op"] == "ack" and r["seq"] == seq + 1, r
            seq = r["seq"]

        for i in range(5):
            await send("before %d" % i)
        assert len(check_log(room, seq, byte_cap, count_cap)) == 5

        # Redis lost the room's seq (not the log): the next send rebuilds the
        # room from MySQL, whose load drops the old log and its total
        persisted(room, seq)
        redis("DEL", "{r:%d}:seq" % room)
        await send("after a rebuild")
        assert check_log(room, seq, byte_cap, count_cap) == [seq]

        # every key of the room gone (a FLUSHALL, a lost node): the same
        persisted(room, seq)
        keys = redis("KEYS", "{r:%d}:*" % room)
        assert "{r:%d}:logbytes" % room in keys, keys
        redis("DEL", *keys)
        await send("after losing every key")
        assert check_log(room, seq, byte_cap, count_cap) == [seq]
        for i in range(3):
            await send("more %d" % i)
        assert len(check_log(room, seq, byte_cap, count_cap)) == 4

        # the log alone deleted: its stale total is not carried over
        redis("DEL", "{r:%d}:log" % room)
        await send("after the log went")
        assert check_log(room, seq, byte_cap, count_cap) == [seq]

        # the total alone missing (a log written before the total existed):
        # counted again from the entries
        await send("one more")
        redis("DEL", "{r:%d}:logbytes" % room)
        await send("and another")
        assert check_log(room, seq, byte_cap, count_cap) == [seq - 2, seq - 1, seq]
    finally:
        await ca.close()
