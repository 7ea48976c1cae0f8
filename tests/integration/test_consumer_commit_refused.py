"""minichat_consumer_commit_failures_total moves when Kafka refuses an
offset commit, and the refusal loses nothing.

A roomlist-consumer of the test's own reads a topic of the test's own.  One
record (bench/kafka_fill, as a relay-worker would write it) goes into a
room whose `rooms` row the test holds locked, so the consumer's batch
waits inside MySQL and its main thread polls nothing.  Meanwhile the test
deletes the topic.  Released, the batch is stored and its offsets are
committed for a partition that librdkafka still has assigned (only the
application's rebalance callback, not yet served, could take it away) but
that the broker no longer knows: the commit is refused with
UNKNOWN_TOPIC_OR_PART, counted, and the row is in MySQL once."""

import os
import signal
import subprocess

from conftest import KAFKA_PORT, TOP, create_room, db, kafka_tool, query, uid, wait_until
from own_nginx import free_port
from test_service_metrics import consumer_batch_waiting, own_consumer, parse, raw

FILL_BIN = os.path.join(TOP, "build", "bin", "kafka_fill")


def topic(action, name):
    args = ["--topic", name]
    if action == "create":
        args += ["--create", "--partitions", "1", "--replication-factor", "1"]
    elif action == "delete":
        args += ["--delete"]
    else:
        args += ["--list"]
    p = subprocess.run(kafka_tool("org.apache.kafka.tools.TopicCommand", *args), capture_output=True,
                       timeout=120, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def metrics(port):
    st, _, text = raw(port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert st == 200, st
    return parse(text)[0]


def counter(port, name):
    return metrics(port)[(name, ())]


def ready(port):
    try:
        return raw(port, b"GET /ready HTTP/1.1\r\n\r\n")[0] == 200
    except OSError:
        return False


def test_a_refused_offset_commit_is_counted_and_nothing_is_lost(tmp_path):
    u = uid()
    room = create_room(u, [u])
    name = "minichat.test-commit-%d" % uid()
    topic("create", name)
    port = free_port()
    p, log = own_consumer(tmp_path, {"kafka_topic": name, "kafka_group": name, "kafka_instance_id": name,
                                     "http_listen": "127.0.0.1:%d" % port, "batch_ms": "10"})
    lock = None
    try:
        wait_until(lambda: ready(port), timeout=60, what="the test's consumer ready (its partition assigned)")
        assert counter(port, "minichat_consumer_commit_failures_total") == 0

        lock = db()
        lock.autocommit(False)
        with lock.cursor() as cur:
            cur.execute("SELECT id FROM rooms WHERE id=%s FOR UPDATE", (room,))
            assert cur.fetchall()
        fill = subprocess.run([FILL_BIN, "127.0.0.1:%d" % KAFKA_PORT, name, str(room), "1", "1", "20"],
                              capture_output=True, timeout=60, text=True)
        assert fill.returncode == 0, fill.stderr
        wait_until(lambda: consumer_batch_waiting(room), what="the consumer's batch waiting on the lock")

        topic("delete", name)
        wait_until(lambda: name not in topic("list", name).split(), timeout=30, what="the topic gone")
        # the write times out after 30 s (lib/src/db.c): it must still be waiting
        assert consumer_batch_waiting(room), "the batch stopped waiting before the topic was deleted"
        lock.rollback()
        lock.close()
        lock = None

        wait_until(lambda: counter(port, "minichat_consumer_commit_failures_total") >= 1, timeout=30,
                   what="the refused offset commit counted")
        rows = query("SELECT seq FROM messages WHERE room_id=%s", (room,))
        assert [r["seq"] for r in rows] == [1], rows
        assert counter(port, "minichat_consumer_store_failures_total") == 0
        with open(tmp_path / "consumer.log") as f:
            text = f.read()
        assert "offset commit failed" in text, text[-3000:]
        assert p.poll() is None, "the consumer exited"
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        log.close()
        if name in topic("list", name).split():
            topic("delete", name)
    # librdkafka 2.0 cannot finish a handle whose topic was deleted: the
    # stop is bounded all the same (consumer.c, consumer_destroy)
    assert rc == 0, rc
    with open(tmp_path / "consumer.log") as f:
        text = f.read()
    assert "exiting with status 0" in text, text[-3000:]
