"""Delivering only to the nginx workers that hold a recipient
(relay-worker/worker_users.c, ngx_minichat_module/ngx_http_minichat_users.c,
docs/ARCHITECTURE.md "Delivering only to workers with recipients").

With fake workers (relaylink.py) on relay-worker a: one that announced an
empty set gets no chat message, one that announced a recipient gets it, one
that never announced gets everything; a message left out for a worker
changes neither end's member-list table (the next one it gets carries its
list whole); removals and a new full set take effect.  With the stack's own
nginx: messages for users not on node a are not written to node a's
workers at all, a user who connects gets the next message live (hello waits
for the relay-worker to count the user), and a client that connects while a
room is busy and resumes after hello misses nothing."""

import asyncio
import json
import random

from conftest import connect, create_room, run_async, uid
from relaylink import EVENT, PUBLISH, Link

# ChatMessage fields (proto/minichat.proto)
ROOM, SEQ, SENDER, CID, BODY, TS, RECIPIENTS, ORIGIN_NODE, KIND, MEMBERS_VER = 1, 2, 3, 4, 5, 6, 7, 8, 11, 17


def publish(w, room, seq, sender, ver, members):
    w.send_message(PUBLISH, [(ROOM, room), (SEQ, seq), (SENDER, sender), (CID, "c%d" % seq), (BODY, "b%d" % seq),
                             (TS, 1732500000000 + seq), (ORIGIN_NODE, "a"), (KIND, "text"), (MEMBERS_VER, ver),
                             (RECIPIENTS, list(members))], req_id=seq)
    assert w.wait(lambda f: f[0] == seq)[2]["ok"]


def delivered(w, room, seq):
    return w.wait(lambda f: f[1] == "deliver" and f[2]["room"] == room and f[2]["seq"] == seq)[2]


def seqs_before(w, room, seq):
    """The seqs of room delivered to w before seq (taken off w's frames)."""
    delivered(w, room, seq)  # waits for it; frames before it are in w.frames already, or were taken
    got = [f[2]["seq"] for f in w.frames if f[1] == "deliver" and f[2]["room"] == room and f[2]["seq"] < seq]
    w.frames = [f for f in w.frames if not (f[1] == "deliver" and f[2]["room"] == room and f[2]["seq"] < seq)]
    return got


def test_fake_workers_get_what_their_users_need():
    pub, empty, holder, silent = Link("a"), Link("a"), Link("a"), Link("a")
    try:
        u, v, x = uid(), uid(), uid()
        room = pub.create_room(u, [v])["id"]
        ver = random.randint(1, 2**62)
        pub.users(full=True)           # the publisher holds nobody
        empty.users(full=True)
        holder.users(add=[x], full=True)
        holder.users(add=[u])          # a change on top of the full set

        publish(pub, room, 1, u, ver, [u, v])
        f = delivered(holder, room, 1)
        assert sorted(f["recipients"]) == sorted([u, v]) and not f["recipients_cached"], f
        assert delivered(silent, room, 1)["seq"] == 1   # never announced: everything

        # empty learns v; seq 2 is the first it gets: seq 1 never came, and
        # its list arrives whole (its table never held seq 1's)
        empty.users(add=[v])
        publish(pub, room, 2, u, ver, [u, v])
        assert seqs_before(empty, room, 2) == []
        assert delivered(holder, room, 2)["recipients_cached"]       # holder got seq 1's list
        empty.frames.clear()

        publish(pub, room, 3, u, ver, [u, v])
        assert delivered(empty, room, 3)["recipients_cached"]        # seq 2 carried it

        # holder lets u go: seq 4 skips it; u back, seq 5 reaches it
        holder.users(delete=[u])
        publish(pub, room, 4, u, ver, [u, v])
        holder.users(add=[u])
        publish(pub, room, 5, u, ver, [u, v])
        assert seqs_before(holder, room, 5) == [3]
        assert seqs_before(silent, room, 5) == [2, 3, 4]

        # a new full set replaces the old: holder holds x only now
        holder.users(add=[x], full=True)
        publish(pub, room, 6, u, ver, [u, v])
        publish(pub, room, 7, u, ver, [u, v, x])
        assert seqs_before(holder, room, 7) == []

        # the publisher held nobody all along: its first is the one after it says u
        pub.users(add=[u])
        publish(pub, room, 8, u, ver, [u, v])
        assert seqs_before(pub, room, 8) == []

        # events still reach every worker, whatever its set
        empty.users(full=True)
        pub.send_message(EVENT, [(ROOM, room), (SENDER, u), (KIND, "typing"), (RECIPIENTS, [u, v])])
        e = empty.wait(lambda f: f[1] == "event")[2]
        assert e["kind"] == "typing" and e["room"] == room, e
    finally:
        for w in (pub, empty, holder, silent):
            w.close()


def relay_skipped(node="a"):
    """Messages the node's relay-worker left out for a worker (its status, asked over the link)."""
    w = Link(node)
    try:
        return json.loads(w.status())["workers"]["deliver_skipped"]
    finally:
        w.close()


@run_async
async def test_nginx_workers_without_recipients_are_skipped():
    x, z = uid(), uid()
    room = create_room(x, [x, z], node="b")
    sender = await connect(x, "b")
    try:
        before = relay_skipped("a")
        for i in range(5):
            r = await sender.send_msg(room, "m%d" % i)
            assert r["op"] == "ack", r
        # nobody of the room is on node a: neither of its 2 workers got them
        # (the counter may also count other traffic: at least, not exactly)
        assert relay_skipped("a") - before >= 2 * 5

        # z connects on a: after hello, the very next message reaches z live
        zc = await connect(z, "a")
        try:
            r = await sender.send_msg(room, "live")
            assert r["op"] == "ack", r
            m = await zc.expect("msg", room=room, seq=r["seq"])
            assert m["body"] == "live", m
        finally:
            await zc.close()
    finally:
        await sender.close()


@run_async
async def test_resume_after_connecting_mid_stream_misses_nothing():
    x = uid()
    joiners = [uid() for _ in range(6)]
    room = create_room(x, [x] + joiners, node="b")
    sender = await connect(x, "b")
    stop = asyncio.Event()
    sent = []

    async def stream():
        i = 0
        while not stop.is_set():
            r = await sender.send_msg(room, "s%d" % i)
            assert r["op"] == "ack", r
            sent.append(r["seq"])
            i += 1

    task = asyncio.create_task(stream())
    try:
        for user in joiners:
            while not sent:
                await asyncio.sleep(0.01)
            since = sent[-1]
            c = await connect(user, "a")  # a first connection of a user on node a, mid-stream
            try:
                r = await c.request({"op": "resume", "rooms": {str(room): since}})
                assert r["op"] == "resumed" and r["recovered"], r
                # replayed and live messages, until past what was sent when it resumed
                target = sent[-1] + 3
                got = await c.collect("msg", lambda fs: fs and max(f["seq"] for f in fs) >= target, room=room)
                seqs = sorted({f["seq"] for f in got})
                assert seqs == list(range(since + 1, seqs[-1] + 1)), (user, since, seqs)
            finally:
                await c.close()
    finally:
        stop.set()
        await task
        await sender.close()
