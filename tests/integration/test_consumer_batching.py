"""The roomlist-consumer's batches: a bounded wait (batch_ms) and offsets
committed asynchronously in steady state, synchronously at shutdown.

- A batch_ms or batch_size out of range, or a bulk_insert that is not on
  or off, stops the consumer at start with a message naming the key, the
  value and what it must be (nothing is contacted).
- With a long batch wait, messages sent one by one are stored all the same
  (the batch closes when the wait passes), in one transaction.
- Offsets committed asynchronously are settled at shutdown: a restarted
  consumer reads none of the records it had already stored (its first
  stats line counts no duplicate rows), and stores the new ones.
- A batch's rows go in one bulk execution (bulk_insert = on, the default
  with MariaDB) or as a multi-row INSERT (off): both store the same rows,
  value for value (bodies with quotes, backslashes, placeholders' `?`,
  non-ASCII text, control characters and 5,000 bytes), each with the
  time its ack gave.

The stack's consumer is restarted with a configuration of our own and
given its own back afterwards, as an operator's supervisor would
(`stack.sh start` starts what is not running)."""

import contextlib
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import RUN, TOP, cid, connect, create_room, query, run_async, uid, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import faults  # noqa: E402

BIN = os.path.join(TOP, "build", "bin", "roomlist-consumer")
CONF = os.path.join(RUN, "consumer", "roomlist-consumer.conf")
LOG = os.path.join(RUN, "consumer", "consumer.log")
PIDFILE = os.path.join("consumer", "consumer.pid")


def stored(room):
    return [r["seq"] for r in query("SELECT seq FROM messages WHERE room_id=%s ORDER BY seq", (room,))]


def consumer_log(since=0):
    with open(LOG, "rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace")


def stop_consumer():
    faults._signal(PIDFILE, "roomlist-consumer", signal.SIGTERM)


@contextlib.contextmanager
def consumer_with(**settings):
    """The stack's consumer runs with settings replacing its own keys inside
    (yields a function returning what it logged), and as the stack made it
    afterwards."""
    with open(CONF) as f:
        text = f.read()
    for key, value in settings.items():
        text, n = re.subn(r"(?m)^%s\s*=.*$" % key, "%s = %s" % (key, value), text)
        assert n == 1, key
    own = CONF.replace(".conf", "-test.conf")   # the pid check looks for "roomlist-consumer"
    with open(own, "w") as f:
        f.write(text)
    stop_consumer()
    since = os.path.getsize(LOG)
    log = open(LOG, "a")
    p = subprocess.Popen([BIN, "-c", own], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    with open(os.path.join(RUN, PIDFILE), "w") as f:
        f.write("%d\n" % p.pid)
    try:
        wait_until(lambda: "batch 2000 records / %s ms" % settings["batch_ms"] in consumer_log(since), timeout=30,
                   what="the consumer ready with our settings")
        yield lambda: consumer_log(since)
    finally:
        stop_consumer()
        p.wait(30)
        os.unlink(own)
        faults.stack_start()


@pytest.mark.parametrize("key,value,message", [
    ("batch_ms", "60001", 'batch_ms "60001" must be a number in [0, 60000]'),
    ("batch_ms", "-1", 'batch_ms "-1" must be a number in [0, 60000]'),
    ("batch_ms", "soon", 'batch_ms "soon" must be a number in [0, 60000]'),
    ("batch_size", "0", 'batch_size "0" must be a number in [1, 100000]'),
    ("bulk_insert", "maybe", 'bulk_insert "maybe" must be on or off'),
])
def test_a_batch_setting_out_of_range_is_refused_at_start(tmp_path, key, value, message):
    conf = tmp_path / "roomlist-consumer.conf"
    conf.write_text("%s = %s\nlog_level = info\n" % (key, value))
    r = subprocess.run([BIN, "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr


@run_async
async def test_messages_within_one_batch_wait_are_stored_in_one_transaction():
    u = uid()
    room = create_room(u, [u])
    with consumer_with(batch_ms=3000, stats_interval=1) as log:
        c = await connect(u, "a")
        try:
            for i in range(3):
                ack = await c.send_msg(room, "m%d" % i)
                assert ack["op"] == "ack", ack
        finally:
            await c.close()
        wait_until(lambda: stored(room) == [1, 2, 3], what="the three messages stored")
        # one batch held all three: the stats count batches (committed transactions)
        stats = wait_until(lambda: [s for s in re.findall(r"stats: consumed (\d+), .*?, batches (\d+),", log())
                                    if s[0] == "3" and s[1] != "0"], what="a stats line after the stored batch")
        assert stats[-1] == ("3", "1"), stats


@run_async
async def test_a_restarted_consumer_reads_none_of_the_records_it_stored():
    u = uid()
    room = create_room(u, [u])
    c = await connect(u, "a")
    try:
        for i in range(5):
            ack = await c.send_msg(room, "before %d" % i)
            assert ack["op"] == "ack", ack
        wait_until(lambda: stored(room) == [1, 2, 3, 4, 5], what="the first five stored")
        with consumer_with(batch_ms=20, stats_interval=1) as log:
            ack = await c.send_msg(room, "after")
            assert ack["op"] == "ack", ack
            wait_until(lambda: stored(room) == [1, 2, 3, 4, 5, 6], what="the sixth stored")
            # the new process read only the record it had not stored
            stats = wait_until(lambda: [s for s in re.findall(r"stats: consumed (\d+), rows new (\d+) dup (\d+),",
                                                              log()) if s[0] != "0"],
                               what="a stats line of the new process after a record")
            consumed, new, dup = (int(x) for x in stats[-1])
            assert dup == 0 and new == consumed == 1, stats
    finally:
        await c.close()


BODIES = [
    "plain",
    "quote ' and \\\" and \\\\ backslash",
    "? (?, ?) %s %d placeholders",
    "ein Grüße, 你好, emoji \U0001F600",
    "tab\tnew\nline\rreturn",
    "x" * 5000,
]


@pytest.mark.parametrize("bulk", ["on", "off"])
@run_async
async def test_a_batch_stores_the_same_rows_by_bulk_execution_or_multi_row_insert(bulk):
    u = uid()
    room = create_room(u, [u])
    with consumer_with(batch_ms=1000, bulk_insert=bulk) as log:
        c = await connect(u, "a")
        acks = []
        try:
            for body in BODIES:
                k = cid()
                ack = await c.send_msg(room, body, msg_cid=k)
                assert ack["op"] == "ack", ack
                acks.append((k, body, ack))
        finally:
            await c.close()
        n = len(BODIES)
        wait_until(lambda: stored(room) == list(range(1, n + 1)), what="the messages stored")
        rows = query("SELECT seq, sender_id, kind, body, client_msg_id, "
                     "CAST(ROUND(UNIX_TIMESTAMP(created_at) * 1000) AS UNSIGNED) AS ms "
                     "FROM messages WHERE room_id=%s ORDER BY seq", (room,))
        for row, (k, body, ack) in zip(rows, acks):
            assert row["seq"] == ack["seq"], (row, ack)
            assert (row["sender_id"], row["kind"], row["client_msg_id"]) == (u, "text", k), row
            assert row["body"] == body, (row["seq"], row["body"][:80], body[:80])
            assert row["ms"] == ack["ts"], (row, ack)
        said = log()
        assert ("batches go to MySQL as bulk executions" in said) == (bulk == "on"), said[-2000:]
        assert ("bulk_insert off: batches go to MySQL as multi-row inserts" in said) == (bulk == "off"), said[-2000:]
