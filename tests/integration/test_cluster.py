"""MiniChat on a Redis Cluster while the cluster changes.

Runs only when the stack runs in cluster mode (MINICHAT_REDIS=cluster, which
`make test` sets for its second pass): three masters and three replicas,
cluster-node-timeout 2000 ms (conf/redis-cluster.conf.in).

- A slot range moves (`redis-cli --cluster reshard`) while senders on both
  nginx nodes keep sending: no client sees an error (the module follows ASK,
  TRYAGAIN and MOVED), and no message is lost, duplicated or reordered.
- A master is killed (SIGKILL): sends to its slots fail with `unavailable`
  until its replica takes over, then resume by themselves within
  FAILOVER_BOUND seconds; every acked message reaches MySQL under the seq it
  was acked with, and no seq is issued twice.
- A master is killed while its replica lags (SIGSTOPped while the master
  acked messages): the promoted replica lacks the last seqs, the module sees
  its new replication id, revalidates the room against MySQL and continues
  after the highest acked seq; no acked message is lost, no seq reissued."""

import asyncio
import os
import signal
import subprocess
import time

import pytest
import websockets

from conftest import (CLUSTER_PORTS, REDIS_MODE, TOP, _redis_cli, cid, connect, create_room, query, run_async, uid,
                      wait_until)

pytestmark = pytest.mark.skipif(REDIS_MODE != "cluster", reason="needs the stack in cluster mode (MINICHAT_REDIS=cluster)")

RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))
# cluster-node-timeout (2 s) + the failure report and the election (~1 s on
# loopback) + the module's map refresh (every 500 ms while a master is down)
# + a reconnect; measured around 3-4 s
FAILOVER_BOUND = 10.0


def any_node(args):
    """args asked of the first cluster node that answers."""
    for port in CLUSTER_PORTS:
        try:
            return _redis_cli(port, args)
        except subprocess.SubprocessError:
            continue
    raise AssertionError("no cluster node answers")


def cluster_nodes():
    """The cluster as a node that answers sees it: dicts with id, port,
    master (bool), failed (bool), slots (set of int)."""
    lines = any_node(["CLUSTER", "NODES"])
    nodes = []
    for line in lines:
        f = line.split()
        slots = set()
        for r in f[8:]:
            if r.startswith("["):
                continue
            a, _, b = r.partition("-")
            slots.update(range(int(a), int(b or a) + 1))
        nodes.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]),
                      "master": "master" in f[2].split(","), "failed": "fail" in f[2].split(","),
                      "of": f[3], "slots": slots})
    return nodes


def room_slot(room):
    return int(any_node(["CLUSTER", "KEYSLOT", "{r:%d}:seq" % room])[0])


def owner(slot):
    for n in cluster_nodes():
        if n["master"] and not n["failed"] and slot in n["slots"]:
            return n
    return None


def cluster_ok():
    for port in CLUSTER_PORTS:
        try:
            if "cluster_state:ok" not in _redis_cli(port, ["CLUSTER", "INFO"]):
                return False
        except subprocess.SubprocessError:
            return False
    return True


def cluster_settled():
    """cluster_state:ok everywhere, no node flagged as failing, and every node
    sees the same masters with the same slots (a node restarted after a
    failover learns only after a while that it is a replica now)."""
    if not cluster_ok():
        return False
    views = set()
    for port in CLUSTER_PORTS:
        lines = _redis_cli(port, ["CLUSTER", "NODES"])
        if any("fail" in line.split()[2] for line in lines):
            return False
        views.add(tuple(sorted((f[0], " ".join(f[8:])) for f in (line.split() for line in lines)
                               if "master" in f[2])))
    return len(views) == 1


class Sender:
    """One user on one node sending to one room, one message at a time,
    retrying a message with the same cid while it gets `unavailable`."""

    def __init__(self, client, room, tag):
        self.c, self.room, self.tag = client, room, tag
        self.acked = []        # (seq, cid, body)
        self.ack_times = []
        self.errors = []       # every error reply, in order
        self.stop = False

    async def run(self):
        i = 0
        while not self.stop:
            body = "%s-%d" % (self.tag, i)
            the_cid = cid()
            while True:
                r = await self.c.send_msg(self.room, body, msg_cid=the_cid)
                if r["op"] == "ack":
                    self.acked.append((r["seq"], the_cid, body))
                    self.ack_times.append(time.monotonic())
                    # paced under the dev stack's limits (50/s per user, 100/s
                    # per room), whose refusals would become strikes
                    await asyncio.sleep(0.05)
                    break
                if r["op"] == "error" and r["code"] == "rate_limited":
                    # the dev stack's room limit, not the cluster: wait as told
                    await asyncio.sleep(r["retry_after_ms"] / 1000.0)
                    continue
                self.errors.append((time.monotonic(), r))
                assert r["op"] == "error" and r["code"] == "unavailable", r
                await asyncio.sleep(0.05)
            i += 1


class Receiver:
    """A member that only listens, reading every frame as it comes."""

    def __init__(self, client):
        self.c = client
        self.stop = False

    async def run(self):
        while not self.stop:
            try:
                await self.c.recv(timeout=0.2)
            except asyncio.TimeoutError:
                pass
            except websockets.exceptions.ConnectionClosed:
                return

    def msgs(self, room):
        return [f for f in self.c.frames if f.get("op") == "msg" and f.get("room") == room]


def check_room(room, senders, receivers):
    """Acked seqs are 1..n with no gap and no repeat; every receiver saw every
    message once, in seq order; MySQL has every acked message under its seq."""
    acked = sorted(a for s in senders for a in s.acked)
    seqs = [a[0] for a in acked]
    assert seqs == list(range(1, len(seqs) + 1)), "room %d: acked seqs not dense/unique: %s" % (room, seqs[:50])
    for rc in receivers:
        got = rc.msgs(room)
        got_seqs = [f["seq"] for f in got]
        assert got_seqs == sorted(set(got_seqs)), "room %d: out of order or twice: %s" % (room, got_seqs)
        assert [(f["seq"], f["cid"], f["body"]) for f in got] == acked, "room %d: delivery differs" % room

    def persisted():
        rows = query("SELECT seq, client_msg_id, body FROM messages WHERE room_id = %s ORDER BY seq", (room,))
        return rows if len(rows) >= len(acked) else None
    rows = wait_until(persisted, 30, what="room %d's messages in MySQL" % room)
    assert [(r["seq"], r["client_msg_id"], r["body"]) for r in rows] == acked, "room %d: MySQL differs" % room


async def wait_delivered(receivers, senders):
    """Until every receiver has as many messages of each room as were acked."""
    deadline = time.monotonic() + 20
    want = {}
    for s in senders:
        want[s.room] = want.get(s.room, 0) + len(s.acked)
    while time.monotonic() < deadline:
        if all(len(rc.msgs(room)) >= n for rc in receivers for room, n in want.items()):
            break
        await asyncio.sleep(0.1)
    for rc in receivers:
        rc.stop = True


@run_async
async def test_reshard_under_load_is_invisible_to_clients():
    wait_until(cluster_settled, 30, what="every cluster node to agree on the masters")
    rooms = []
    # two senders of their own per room: one user sending into all eight
    # rooms would pass the dev stack's 50 messages/s per user, and enough
    # refusals on a loaded box become a ban (minichat_limit_strikes)
    pairs = {}
    u3, u4 = uid(), uid()
    for _ in range(8):
        sa, sb = uid(), uid()
        room = create_room(sa, [sa, sb, u3, u4])
        rooms.append(room)
        pairs[room] = (sa, sb)
    # the reshard takes the lowest slots of its source: move enough of them to
    # carry the room that sits nearest the start of its master's range
    nodes = [n for n in cluster_nodes() if n["master"]]
    best = None
    for room in rooms:
        s = room_slot(room)
        src = owner(s)
        offset = sum(1 for x in src["slots"] if x < s)
        if best is None or offset < best[0]:
            best = (offset, room, s, src)
    offset, moved_room, moved_slot, src = best
    dst = [n for n in nodes if n["id"] != src["id"]][0]
    count = offset + 20

    receivers = [Receiver(await connect(u3, "a")), Receiver(await connect(u4, "b"))]
    senders = []
    try:
        for room in rooms:
            senders.append(Sender(await connect(pairs[room][0], "a"), room, "a"))
            senders.append(Sender(await connect(pairs[room][1], "b"), room, "b"))
        rtasks = [asyncio.ensure_future(rc.run()) for rc in receivers]
        tasks = [asyncio.ensure_future(s.run()) for s in senders]
        await asyncio.sleep(0.5)
        proc = await asyncio.create_subprocess_exec(
            "redis-cli", "--cluster", "reshard", "127.0.0.1:%d" % src["port"], "--cluster-from", src["id"],
            "--cluster-to", dst["id"], "--cluster-slots", str(count), "--cluster-yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, out.decode()[-2000:]
        # the moved rooms are revalidated on their new master (its
        # replication id is not the room's generation), which waits for the
        # consumer: give their senders time after that
        await asyncio.sleep(1.5)
        for s in senders:
            s.stop = True
        await asyncio.gather(*tasks)
        assert owner(moved_slot)["id"] == dst["id"], "slot %d did not move" % moved_slot
        print("reshard: %d slots from %d to %d (room %d, slot %d); %d acks" % (
            count, src["port"], dst["port"], moved_room, moved_slot, sum(len(s.acked) for s in senders)))
        for s in senders:
            assert not s.errors, "a client saw an error during the reshard: %s" % s.errors[:3]
            assert len(s.acked) > 5, "the senders hardly ran (%d acks)" % len(s.acked)
        await wait_delivered(receivers, senders)
        await asyncio.gather(*rtasks)
        for room in rooms:
            check_room(room, [s for s in senders if s.room == room], receivers)
    finally:
        for rc in receivers:
            rc.stop = True
        for c in [rc.c for rc in receivers] + [s.c for s in senders]:
            await c.close()
        # give the slots back, so that the next run starts from the same map
        wait_until(cluster_settled, 30, what="the cluster to settle after the reshard")
        subprocess.run(["redis-cli", "--cluster", "rebalance", "127.0.0.1:%d" % CLUSTER_PORTS[0]],
                       capture_output=True, timeout=120)


def node_pid(port):
    with open(os.path.join(RUN, "redis-cluster", str(port), "redis.pid")) as f:
        return int(f.read().strip())


@run_async
async def test_master_killed_sends_resume_after_failover():
    wait_until(cluster_settled, 30, what="every cluster node to agree on the masters")
    u1, u2, u3, u4 = uid(), uid(), uid(), uid()
    room = create_room(u1, [u1, u2, u3, u4])
    victim = owner(room_slot(room))
    receivers = [Receiver(await connect(u3, "a")), Receiver(await connect(u4, "b"))]
    senders = [Sender(await connect(u1, "a"), room, "a"), Sender(await connect(u2, "b"), room, "b")]
    restarted = False
    try:
        rtasks = [asyncio.ensure_future(rc.run()) for rc in receivers]
        tasks = [asyncio.ensure_future(s.run()) for s in senders]
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        os.kill(node_pid(victim["port"]), signal.SIGKILL)

        # sends fail with `unavailable` until the replica has taken over,
        # then resume by themselves
        def resumed_at(snd):
            """When snd's first ack after its last error came, or None."""
            last_err = max([t for t, _ in snd.errors] or [killed_at])
            later = [t for t in snd.ack_times if t > last_err]
            return later[0] if len(later) >= 5 else None
        deadline = killed_at + FAILOVER_BOUND + 10
        while not all(resumed_at(snd) for snd in senders) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for snd in senders:
            snd.stop = True
        await asyncio.gather(*tasks)
        took = [(resumed_at(snd) or deadline) - killed_at for snd in senders]
        print("failover: master %d killed; sends resumed after %s s; %d errors, %d acks" % (
            victim["port"], ["%.2f" % t for t in took], sum(len(snd.errors) for snd in senders),
            sum(len(snd.acked) for snd in senders)))
        assert any(snd.errors for snd in senders), "no send failed: was the room's master killed?"
        assert max(took) < FAILOVER_BOUND, "sends resumed only %.1fs after the kill (bound %.0fs)" % (
            max(took), FAILOVER_BOUND)
        assert owner(room_slot(room))["port"] != victim["port"]

        # the killed node comes back as a replica of the one that took over
        subprocess.run(["redis-server", os.path.join(RUN, "redis-cluster", str(victim["port"]), "redis.conf")],
                       check=True, timeout=10)
        restarted = True
        wait_until(cluster_settled, 30, what="every cluster node to agree on the masters again")

        await wait_delivered(receivers, senders)
        await asyncio.gather(*rtasks)
        check_room(room, senders, receivers)
    finally:
        for rc in receivers:
            rc.stop = True
        for c in [rc.c for rc in receivers] + [s.c for s in senders]:
            await c.close()
        if not restarted:
            subprocess.run(["redis-server", os.path.join(RUN, "redis-cluster", str(victim["port"]), "redis.conf")],
                           timeout=10)


async def send_acked(client, room, body, errors):
    """Sends one message until it is acked (retrying `unavailable` with the
    same cid, waiting out the dev stack's rate limits); returns (seq, cid, body)."""
    the_cid = cid()
    while True:
        r = await client.send_msg(room, body, msg_cid=the_cid)
        if r["op"] == "ack":
            return (r["seq"], the_cid, body)
        if r["op"] == "error" and r["code"] == "rate_limited":
            await asyncio.sleep(r["retry_after_ms"] / 1000.0)
            continue
        assert r["op"] == "error" and r["code"] == "unavailable", r
        errors.append(r)
        await asyncio.sleep(0.05)


@run_async
async def test_master_killed_with_lagging_replica_reissues_no_seq():
    wait_until(cluster_settled, 30, what="every cluster node to agree on the masters")
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    master = owner(room_slot(room))
    replica = [n for n in cluster_nodes() if n["of"] == master["id"] and not n["failed"]][0]
    ca, cb = await connect(u1, "a"), await connect(u2, "b")
    acked, errors = [], []
    stopped = killed = False
    try:
        # the room is loaded and replicated before the replica stops
        for i in range(3):
            acked.append(await send_acked(ca, room, "before-%d" % i, errors))
        wait_until(lambda: replica_caught_up(master["port"]), 10, what="the replica to catch up")
        # a stopped replica would still find the master's writes in its
        # socket buffer when it wakes: the master drops the link first
        os.kill(node_pid(replica["port"]), signal.SIGSTOP)
        stopped = True
        _redis_cli(master["port"], ["CLIENT", "KILL", "TYPE", "replica"])
        # acked by the master alone: the replica never gets these
        for i in range(8):
            acked.append(await send_acked(ca if i % 2 else cb, room, "lost-%d" % i, errors))
        os.kill(node_pid(master["port"]), signal.SIGKILL)
        killed = True
        os.kill(node_pid(replica["port"]), signal.SIGCONT)
        stopped = False
        # sends fail until the replica took over, then continue after the
        # highest seq acked, on both nodes
        for i in range(10):
            acked.append(await send_acked(cb if i % 2 else ca, room, "after-%d" % i, errors))
        assert owner(room_slot(room))["port"] == replica["port"], "the replica did not take over"
        print("lagging failover: master %d killed, replica %d promoted; %d errors, %d acks" % (
            master["port"], replica["port"], len(errors), len(acked)))

        seqs = sorted(a[0] for a in acked)
        assert len(set(seqs)) == len(seqs), "a seq was acked twice: %s" % sorted(acked)
        assert seqs == list(range(1, len(seqs) + 1)), "acked seqs are not dense: %s" % seqs

        def persisted():
            rows = query("SELECT seq, client_msg_id, body FROM messages WHERE room_id = %s ORDER BY seq", (room,))
            return rows if len(rows) >= len(acked) else None
        rows = wait_until(persisted, 30, what="room %d's messages in MySQL" % room)
        assert [(r["seq"], r["client_msg_id"], r["body"]) for r in rows] == sorted(acked), \
            "MySQL differs from what was acked"
    finally:
        await ca.close()
        await cb.close()
        if stopped:
            os.kill(node_pid(replica["port"]), signal.SIGCONT)
        if killed:
            # the killed node comes back as a replica of the one that took over
            subprocess.run(["redis-server", os.path.join(RUN, "redis-cluster", str(master["port"]), "redis.conf")],
                           timeout=10)
        wait_until(cluster_settled, 60, what="every cluster node to agree on the masters again")


def replica_caught_up(port):
    """The master at port has one replica, whose offset equals its own."""
    info = dict(line.split(":", 1) for line in _redis_cli(port, ["INFO", "replication"]) if ":" in line)
    slave = dict(kv.split("=", 1) for kv in info.get("slave0", "").split(",") if "=" in kv)
    return slave.get("offset") == info.get("master_repl_offset")
