"""Offline push (docs/push.md): the roomlist-consumer puts one event on the
push topic for every member of a message's room who is connected on no
node; none for the sender, none for a member online on either node.

The topic is read with Kafka's own console consumer (the stack's Kafka
jars, one JVM started before the sends), keys and values as lines."""

import json
import os
import queue
import re
import subprocess
import threading
import time

import pytest

from conftest import (OFF, RUN, TOP, cid, connect, create_room, query, redis, run_async, uid,
                      wait_until)

PUSH_TOPIC = "minichat.push"
KAFKA_PORT = 19092 + OFF
KAFKA_LIBS = os.path.join(TOP, ".cache", "kafka", "libs")
READ_TIMEOUT = 90.0   # seconds for an event to show up (a JVM starts first)


class PushReader:
    """Kafka's ConsoleConsumer over the push topic from its beginning: each
    record is a (key, parsed value) in `events` once read."""

    def __init__(self):
        log4j = os.path.join(RUN, "kafka", "tools-log4j2.properties")
        args = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
        if os.path.exists(log4j):
            args.append("-Dlog4j2.configurationFile=" + log4j)
        args += ["-cp", os.path.join(KAFKA_LIBS, "*"), "org.apache.kafka.tools.consumer.ConsoleConsumer",
                 "--bootstrap-server", "127.0.0.1:%d" % KAFKA_PORT, "--topic", PUSH_TOPIC, "--from-beginning",
                 "--property", "print.key=true", "--property", "key.separator=|"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines = queue.Queue()
        self.events = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pred, what, timeout=READ_TIMEOUT):
        """Read until an event matches pred; return it."""
        deadline = time.monotonic() + timeout
        for key, ev in self.events:
            if pred(key, ev):
                return ev
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    pytest.fail("the console consumer exited with %s" % self.proc.returncode)
                continue
            key, _, value = line.partition("|")
            ev = json.loads(value)
            self.events.append((key, ev))
            if pred(key, ev):
                return ev
        pytest.fail("no push event for %s within %.0fs" % (what, timeout))

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def reader():
    r = PushReader()
    yield r
    r.close()


def for_message(user, room, seq):
    return lambda key, ev: key == str(user) and ev["user"] == str(user) and ev["room"] == str(room) \
        and ev["seq"] == seq


def test_offline_members_get_events(reader):
    @run_async
    async def scenario():
        a, b, c, d = uid(), uid(), uid(), uid()   # b never connects; d connects and leaves
        room = create_room(a, [a, b, c, d], node="a")
        ca = await connect(a, "a")
        cc = await connect(c, "b")
        cd = await connect(d, "a")
        await cd.close()
        # d's last device is gone: it is off the presence index
        wait_until(lambda: redis("ZSCORE", "{presence}:online", d) == [], what="user d offline")
        try:
            body = 'say "hi" \\ \u00e9\u20ac ' + "x" * 120
            ack = await ca.request({"op": "send", "id": 1, "room": room, "cid": cid(), "body": body})
            assert ack["op"] == "ack", ack

            ev = reader.wait_for(for_message(b, room, 1), "offline member b")
            assert ev["v"] == 1 and ev["type"] == "message", ev
            assert ev["sender"] == str(a) and ev["ts"] == ack["ts"], ev
            assert ev["preview"] == body[:100] and ev["truncated"] is True, ev
            ev = reader.wait_for(for_message(d, room, 1), "member d, disconnected")
            assert ev["preview"] == body[:100], ev

            # A second message: every event of the first one was delivered
            # before the consumer took the batch of the second one.
            ack2 = await ca.request({"op": "send", "id": 2, "room": room, "cid": cid(), "body": "short"})
            assert ack2["seq"] == 2, ack2
            ev = reader.wait_for(for_message(b, room, 2), "offline member b, second message")
            assert ev["preview"] == "short" and ev["truncated"] is False, ev
            reader.wait_for(for_message(d, room, 2), "member d, second message")

            about = [(k, e) for k, e in reader.events if e["room"] == str(room)]
            assert sorted((e["user"], e["seq"]) for _, e in about) == \
                sorted([(str(b), 1), (str(d), 1), (str(b), 2), (str(d), 2)]), about
            await cc.expect("msg", room=room, seq=2)
        finally:
            await ca.close()
            await cc.close()

    scenario()


def test_expired_presence_counts_as_offline(reader):
    """A user whose node was killed stays in {presence}:online until the
    sweep, with an expiry in the past: it is offline for pushes at once."""
    @run_async
    async def scenario():
        a, e = uid(), uid()
        room = create_room(a, [a, e], node="a")
        redis("ZADD", "{presence}:online", int(time.time() * 1000) - 60000, e)
        ca = await connect(a, "a")
        try:
            ack = await ca.request({"op": "send", "id": 1, "room": room, "cid": cid(), "body": "you there?"})
            assert ack["op"] == "ack", ack
            reader.wait_for(for_message(e, room, 1), "member e, listed with an expired entry")
        finally:
            await ca.close()
            redis("ZREM", "{presence}:online", e)

    scenario()


def test_no_events_when_everybody_is_online(reader):
    @run_async
    async def scenario():
        a, c = uid(), uid()
        room = create_room(a, [a, c], node="a")
        ca = await connect(a, "a")
        cc = await connect(c, "b")
        # a room of its own with an offline member, as the barrier: its event
        # comes after every event of the first room's message
        b2 = uid()
        barrier = create_room(a, [a, b2], node="a")
        try:
            ack = await ca.request({"op": "send", "id": 1, "room": room, "cid": cid(), "body": "hello"})
            assert ack["op"] == "ack", ack
            await cc.expect("msg", room=room, seq=1)
            wait_until(lambda: query("SELECT 1 FROM messages WHERE room_id=%s", (room,)), what="message persisted")
            ack = await ca.request({"op": "send", "id": 2, "room": barrier, "cid": cid(), "body": "barrier"})
            assert ack["op"] == "ack", ack
            reader.wait_for(for_message(b2, barrier, 1), "the barrier room's offline member")
            assert [e for _, e in reader.events if e["room"] == str(room)] == []
        finally:
            await ca.close()
            await cc.close()

    scenario()


# --- a roomlist-consumer of its own ------------------------------------------
# These run a second consumer, in a consumer group of its own (so it reads
# the messages topic from its start and takes nothing from the stack's
# consumer), with one setting changed, and read its stats line.

STATS = re.compile(r"stats: consumed (\d+),.* lag (-?\d+), pushed (\d+) \(online skipped \d+, large-room messages \d+, "
                   r"stale messages (\d+), presence errors (\d+), push failures (\d+)\)")


def own_consumer_stats(tmp_path, changes):
    """Runs build/bin/roomlist-consumer with the stack's configuration and
    `changes` (key -> value) until it has consumed the whole topic (lag 0);
    returns its last stats as a dict."""
    with open(os.path.join(RUN, "consumer", "roomlist-consumer.conf")) as f:
        lines = f.read().splitlines()
    group = "test-push-%d" % uid()
    changes = dict(changes, kafka_group=group, kafka_instance_id=group, stats_interval="1",
                   read_flush_ms="3600000", http_listen="off")  # the stack's consumer has the port
    conf = [line for line in lines if line.split("=")[0].strip() not in changes]
    conf += ["%s = %s" % kv for kv in changes.items()]
    path = tmp_path / "roomlist-consumer.conf"
    path.write_text("\n".join(conf) + "\n")
    log = tmp_path / "consumer.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([os.path.join(TOP, "build", "bin", "roomlist-consumer"), "-c", str(path)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def caught_up():
            assert proc.poll() is None, log.read_text()[-2000:]
            found = STATS.findall(log.read_text())
            if found and int(found[-1][0]) > 0 and int(found[-1][1]) == 0:
                return found[-1]
            return None
        last = wait_until(caught_up, timeout=60, interval=0.2, what="the own consumer caught up")
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()[-2000:]
    keys = ("consumed", "lag", "pushed", "stale", "presence_errors", "push_failures")
    return dict(zip(keys, map(int, last)))


def send_one_with_offline_member():
    """One text message in a room with a member who never connects."""
    @run_async
    async def send():
        a, b = uid(), uid()
        room = create_room(a, [a, b], node="a")
        ca = await connect(a, "a")
        try:
            ack = await ca.request({"op": "send", "id": 1, "room": room, "cid": cid(), "body": "x"})
            assert ack["op"] == "ack", ack
        finally:
            await ca.close()
    send()


def test_redis_down_skips_pushes_and_completes_batches(tmp_path):
    send_one_with_offline_member()
    st = own_consumer_stats(tmp_path, {"redis": "127.0.0.1:1", "push_max_age_ms": "0"})
    # every batch completed (lag 0) without events and without a retry
    assert st["presence_errors"] > 0 and st["pushed"] == 0 and st["push_failures"] == 0, st


def test_old_messages_get_no_events(tmp_path):
    send_one_with_offline_member()
    st = own_consumer_stats(tmp_path, {"push_max_age_ms": "1"})
    assert st["stale"] > 0 and st["pushed"] == 0 and st["push_failures"] == 0, st
