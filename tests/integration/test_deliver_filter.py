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
room is busy and resumes after hello misses nothing.  With a fake
relay-worker that never answers (one from before this), hellos still go and
the worker asks it for every message, then says nothing more."""

import asyncio
import json
import os
import random
import socket
import struct
import time

from conftest import RUN, connect, create_room, run_async, uid
from own_nginx import OwnNginx, ws_connect
from relaylink import EVENT, PUBLISH, Link, _fields, decode
from test_service_metrics import scrape, val

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
        metric_before = val(scrape("relay-a")[0], "minichat_relay_worker_deliver_skipped_total")
        peer_before = val(scrape("relay-b")[0], "minichat_relay_peer_messages_skipped_total", peer="a")
        for i in range(5):
            r = await sender.send_msg(room, "m%d" % i)
            assert r["op"] == "ack", r
        # nobody of the room is on node a: neither of its 2 workers got them.
        # Node b's relay-worker sends node a none of them (it knows a's
        # users: test_peer_users.py); one that did not know them would, and
        # relay-worker a would leave them out for both workers (the counters
        # may also count other traffic: at least, not exactly)
        peer_after = val(scrape("relay-b")[0], "minichat_relay_peer_messages_skipped_total", peer="a")
        metric_after = val(scrape("relay-a")[0], "minichat_relay_worker_deliver_skipped_total")
        assert (peer_after - peer_before) * 2 + relay_skipped("a") - before >= 2 * 5
        assert (peer_after - peer_before) * 2 + metric_after - metric_before >= 2 * 5, (metric_before, metric_after)

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


class FakeRelay:
    """A relay-worker from before users frames: it takes the link and
    answers nothing.  Reads are non-blocking, so what nginx wrote before
    something the test saw is there to read."""

    def __init__(self, path):
        self.path = path
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.conn = None
        self.buf = b""
        self.users = []   # the UserSet frames received: dicts

    def accept(self, timeout=15):
        self.srv.settimeout(timeout)
        self.conn, _ = self.srv.accept()

    def read(self, timeout=0.0):
        """Takes what has arrived (waiting up to timeout for something)."""
        if timeout > 0:
            self.conn.settimeout(timeout)
        else:
            self.conn.setblocking(False)
        try:
            while True:
                data = self.conn.recv(1 << 16)
                if not data:
                    break
                self.buf += data
                self.conn.setblocking(False)
        except (BlockingIOError, socket.timeout):
            pass
        while len(self.buf) >= 4:
            (n,) = struct.unpack(">I", self.buf[:4])
            if len(self.buf) < 4 + n:
                break
            for no, _wt, v in _fields(self.buf[4:4 + n]):
                if no == 42:
                    self.users.append(decode("UserSet", v))
            self.buf = self.buf[4 + n:]

    def read_until(self, cond, timeout=15):
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            assert left > 0, "the fake relay-worker got %s" % self.users
            self.read(timeout=min(left, 1))

    def close(self):
        if self.conn:
            self.conn.close()
        self.srv.close()


@run_async
async def test_an_older_relay_worker_gets_every_message_asked_and_hellos_go():
    x, y = uid(), uid()
    fake = FakeRelay(os.path.join(RUN, "fake-relay-%d.sock" % os.getpid()))
    own = None
    try:
        own = OwnNginx([], extra=["minichat_relay unix:%s" % fake.path, "minichat_relay_timeout 300ms"]).start()
        fake.accept()
        # the whole set (nobody yet) comes first, as a request
        fake.read_until(lambda: fake.users)
        assert fake.users[0]["full"] and fake.users[0]["add"] == [], fake.users

        # a connection's hello waits for an answer that never comes, then goes
        c = await ws_connect(own.port, x)
        await c.close()
        # having had no answer, the worker asks for every message ...
        fake.read_until(lambda: any(u["all"] for u in fake.users))
        # ... and says nothing more: a new user's hello comes at once, no
        # users frame was written before it
        n = len(fake.users)
        c = await ws_connect(own.port, y)
        fake.read()
        assert len(fake.users) == n, fake.users[n:]
        await c.close()
    finally:
        if own:
            bad = own.stop()
            assert not bad, bad
        fake.close()
        os.unlink(fake.path)
