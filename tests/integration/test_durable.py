"""Durability before delivery, and the repair of admitted messages whose
hand-off failed (issue 8):

- with the relay-worker's default `fanout = admitted`, recipients get a
  message at once, while the sender's ack waits for Kafka;
- with `fanout = durable`, recipients see a message only once Kafka has it
  (the relay-worker fans out from the delivery report), so they never see
  one that will not be stored;
- a message Redis admitted but the relay-worker refused (it arrived after
  publish_max_age_ms) is published again by the module's sweeper from the
  room's recent log, reaches MySQL once and reaches the recipients, though
  the client never retries;
- a retry with the same cid repairs it the same way, once;
- the dedup window's limit: a retry after minichat_dedup_ttl is a new
  message (stated in docs/protocol.md).
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys

from conftest import (TOP, cid, connect, create_room, query, redis, rest, run_async, token, uid, wait_until)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import faults  # noqa: E402


RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))


def _pid(path):
    with open(os.path.join(RUN, path)) as f:
        return int(f.read().strip())


def relay_pid(node):
    return _pid("relay-%s/relay.pid" % node)


def kafka_pid():
    return _pid("kafka/kafka.pid")


def stored(room):
    return [(r["seq"], r["client_msg_id"], r["body"])
            for r in query("SELECT seq, client_msg_id, body FROM messages WHERE room_id=%s ORDER BY seq", (room,))]


async def stopped_relay_send(client, room, body, msg_cid, node="a", pause=1.6):
    """Sends while node's relay-worker is stopped for `pause` seconds (longer
    than publish_max_age_ms, 1 s): Redis admits the message, the relay-worker
    then refuses it as too old, and the client is told `unavailable`."""
    pid = relay_pid(node)
    os.kill(pid, signal.SIGSTOP)
    try:
        rid = client.next_id()
        await client.send({"op": "send", "id": rid, "room": room, "cid": msg_cid, "body": body})
        await asyncio.sleep(pause)
    finally:
        os.kill(pid, signal.SIGCONT)
    reply = await client.expect("error", id=rid, timeout=15)
    assert reply["code"] == "unavailable", reply
    return reply


async def msg_count(client, room, seq, seconds, want):
    """Reads for `seconds`, then asserts that client got `want` msg frames
    for (room, seq) in all."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            break
        try:
            await client.recv(timeout=left)
        except asyncio.TimeoutError:
            break
    got = [f for f in client.frames if f.get("op") == "msg" and f.get("room") == room and f.get("seq") == seq]
    assert len(got) == want, got


async def three_members():
    """A room of three: the sender on node a, members on b and a; seq 1
    sent and delivered.  Returns (room, sender, [recipients])."""
    u1, u2, u3 = uid(), uid(), uid()
    room = create_room(u1, [u1, u2, u3])
    c1 = await connect(u1, "a")
    c2 = await connect(u2, "b")
    c3 = await connect(u3, "a")
    # right after a relay-worker restart the workers may still be
    # reconnecting: a send is refused `unavailable` until they are
    first = cid()
    for _ in range(50):
        ack = await c1.send_msg(room, "one", msg_cid=first)
        if ack.get("code") != "unavailable":
            break
        await asyncio.sleep(0.2)
    assert ack["op"] == "ack" and ack["seq"] == 1, ack
    for c in (c2, c3):
        await c.expect("msg", room=room, seq=1)
    return room, c1, [c2, c3]


def restart_relay(node, fanout):
    """Stops node's relay-worker and starts it again with `fanout = ...`
    (the nginx workers reconnect on their own)."""
    d = "relay-%s" % node
    faults._signal(os.path.join(d, "relay.pid"), os.path.join(RUN, d, "relay-worker.conf"), signal.SIGTERM)
    faults.stack_start(MINICHAT_RELAY_FANOUT=fanout)
    with open(os.path.join(RUN, d, "relay-worker.conf")) as f:
        assert "fanout = %s\n" % fanout in f.read()
    # every nginx worker of the node has its relay link again (reconnect
    # every 500 ms): a relay request answered on each of several tries
    ok = [0]

    def linked():
        status, _ = rest("GET", "/api/rooms?limit=1", node, token(uid()))
        ok[0] = ok[0] + 1 if status == 200 else 0
        return ok[0] >= 8
    wait_until(linked, timeout=30, interval=0.1, what="node %s's workers linked to the relay-worker" % node)


@contextlib.contextmanager
def durable_fanout(node="a"):
    """node's relay-worker runs with `fanout = durable` inside, and with the
    default (admitted) again afterwards."""
    restart_relay(node, "durable")
    try:
        yield
    finally:
        restart_relay(node, "admitted")


@run_async
async def test_admitted_fanout_delivers_before_kafka_has_it_and_acks_after():
    room, c1, (c2, c3) = await three_members()
    try:
        kp = kafka_pid()
        os.kill(kp, signal.SIGSTOP)
        try:
            rid = c1.next_id()
            c = cid()
            await c1.send({"op": "send", "id": rid, "room": room, "cid": c, "body": "early"})
            # admitted in Redis: the recipients on both nodes have it now
            for rc in (c2, c3):
                m = await rc.expect("msg", room=room, seq=2, timeout=10)
                assert m["body"] == "early" and m["cid"] == c, m
            # the sender's ack waits for Kafka
            await asyncio.sleep(0.5)
            assert not [f for f in c1.frames if f.get("id") == rid], c1.frames[-5:]
        finally:
            os.kill(kp, signal.SIGCONT)
        ack = await c1.expect("ack", id=rid, timeout=20)
        assert ack["seq"] == 2, ack
        wait_until(lambda: [s for s, _, _ in stored(room)] == [1, 2], timeout=40, what="seqs 1 and 2 stored")
        # once each
        await msg_count(c2, room, 2, 0.5, 1)
        await msg_count(c3, room, 2, 0.1, 1)
    finally:
        for cl in (c1, c2, c3):
            await cl.close()


@run_async
async def test_durable_fanout_recipients_see_a_message_only_once_kafka_has_it():
    with durable_fanout("a"):
        await _recipients_wait_for_kafka()


async def _recipients_wait_for_kafka():
    room, c1, (c2, c3) = await three_members()
    try:
        kp = kafka_pid()
        os.kill(kp, signal.SIGSTOP)
        try:
            rid = c1.next_id()
            c = cid()
            await c1.send({"op": "send", "id": rid, "room": room, "cid": c, "body": "held"})
            # admitted in Redis at once, but not durable: nobody sees it
            await msg_count(c2, room, 2, 2.0, 0)
            await msg_count(c3, room, 2, 0.1, 0)
            assert not [f for f in c1.frames if f.get("id") == rid], c1.frames[-5:]
        finally:
            os.kill(kp, signal.SIGCONT)

        # once Kafka has it (the ack, or the sweeper's repair after a timeout)
        for rc in (c2, c3):
            m = await rc.expect("msg", room=room, seq=2, timeout=40)
            assert m["body"] == "held" and m["cid"] == c, m
        wait_until(lambda: [s for s, _, _ in stored(room)] == [1, 2], timeout=40, what="seqs 1 and 2 stored")
    finally:
        for cl in (c1, c2, c3):
            await cl.close()


@run_async
async def test_admitted_message_the_relay_refused_is_published_again_by_the_sweeper():
    room, c1, (c2, c3) = await three_members()
    try:
        lost_cid = cid()
        await stopped_relay_send(c1, room, "two", lost_cid)
        # the client never retries; the next message goes through normally
        ack = await c1.send_msg(room, "three")
        assert ack["op"] == "ack" and ack["seq"] == 3, ack
        for c in (c2, c3):
            await c.expect("msg", room=room, seq=3)

        # the sweeper (minichat_repair_after 4s on the dev stack) publishes
        # seq 2 again from the recent log: stored once, and delivered to the
        # recipients who were skipped past it
        for c in (c2, c3):
            m = await c.expect("msg", room=room, seq=2, timeout=40)
            assert m["body"] == "two" and m["cid"] == lost_cid and m["from"] == c1.user, m
        wait_until(lambda: [(s, b) for s, _, b in stored(room)] == [(1, "one"), (2, "two"), (3, "three")],
                   timeout=40, what="seqs 1..3 stored once each")
        assert stored(room)[1][1] == lost_cid
        # delivered once: no second repair reaches anybody
        await msg_count(c2, room, 2, 6.0, 1)
    finally:
        for cl in (c1, c2, c3):
            await cl.close()


@run_async
async def test_retry_with_the_same_cid_repairs_for_the_recipients_once():
    room, c1, recipients = await three_members()
    try:
        c = cid()
        await stopped_relay_send(c1, room, "two", c)
        # the retry is answered from the cid: the same seq, published again
        ack = await c1.send_msg(room, "two", msg_cid=c)
        assert ack["op"] == "ack" and ack["seq"] == 2, ack
        for rc in recipients:
            m = await rc.expect("msg", room=room, seq=2, timeout=20)
            assert m["body"] == "two" and m["cid"] == c, m
        wait_until(lambda: [s for s, _, _ in stored(room)] == [1, 2], timeout=40, what="seqs 1 and 2 stored")
        # the retry's ack took the note out: the sweeper does not deliver it again
        for rc in recipients:
            await msg_count(rc, room, 2, 7.0 if rc is recipients[0] else 0.1, 1)
        assert [s for s, _, _ in stored(room)] == [1, 2]
    finally:
        for cl in [c1] + recipients:
            await cl.close()


@run_async
async def test_a_resume_over_a_gap_replays_the_missing_seq_and_the_repair_is_not_sent_again():
    """A connection that resumed a room keeps what it sent; a later live
    gap (seq 3 before seq 2, which is stuck) must not make the next resume
    skip seq 2 as if it had gone out (found by make chaos)."""
    room, c1, (c2, c3) = await three_members()
    try:
        r = await c2.request({"op": "resume", "rooms": {str(room): 0}})
        assert r["op"] == "resumed" and r["recovered"] is True and r["seq"] == 1, r

        stuck = cid()
        await stopped_relay_send(c1, room, "two", stuck)
        ack = await c1.send_msg(room, "three")
        assert ack["seq"] == 3, ack
        await c2.expect("msg", room=room, seq=3)

        # seq 2 is in the recent log (admitted): the resume replays it
        r = await c2.request({"op": "resume", "rooms": {str(room): 1}})
        assert r["op"] == "resumed" and r["recovered"] is True and r["seq"] == 3, r
        m = await c2.expect("msg", room=room, seq=2, timeout=2)
        assert m["cid"] == stuck, m
        # the sweeper's repair reaches c3 live, and not c2 a second time
        await c3.expect("msg", room=room, seq=2, timeout=40)
        await msg_count(c2, room, 2, 1.0, 1)
    finally:
        for cl in (c1, c2, c3):
            await cl.close()


@run_async
async def test_a_retry_after_the_dedup_window_is_a_new_message():
    """The stated limit: the cid is remembered for minichat_dedup_ttl (at
    least); a retry after that gets a new seq and is stored again.  The
    window's expiry is simulated by deleting the room's cid buckets."""
    u1 = uid()
    room = create_room(u1, [u1])
    c1 = await connect(u1, "a")
    try:
        c = cid()
        a1 = await c1.send_msg(room, "x", msg_cid=c)
        a2 = await c1.send_msg(room, "x", msg_cid=c)
        assert a1["seq"] == a2["seq"] == 1, (a1, a2)
        for key in redis_keys("{r:%d}:idem:*" % room):
            redis("DEL", key)
        a3 = await c1.send_msg(room, "x", msg_cid=c)
        assert a3["op"] == "ack" and a3["seq"] == 2, a3
        wait_until(lambda: stored(room) == [(1, c, "x"), (2, c, "x")], timeout=40, what="both stored")
    finally:
        await c1.close()


def redis_keys(pattern):
    return redis("KEYS", pattern)


def test_an_unknown_fanout_is_refused_at_start(tmp_path):
    with open(os.path.join(RUN, "relay-a", "relay-worker.conf")) as f:
        text = f.read()
    assert "\nfanout = " in text
    conf = tmp_path / "relay-worker.conf"
    conf.write_text("\n".join("fanout = soon" if line.startswith("fanout = ") else line
                              for line in text.split("\n")))
    p = subprocess.run([os.path.join(TOP, "build", "bin", "relay-worker"), "-c", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    # the error names the file and line since relay-worker -t (ac0c566)
    assert 'config: %s:' % conf in p.stderr, p.stderr
    assert 'fanout must be "admitted" or "durable", not "soon"' in p.stderr, p.stderr
