"""The relay-workers' and the roomlist-consumer's operator endpoints
(http_listen; docs/metrics.md, docs/operations.md "Status and readiness"):
GET /metrics in Prometheus text 0.0.4, /status as JSON, /ready as 200
"ready" or 503 with the reasons, on 127.0.0.1:17061/17062 (relay-workers a
and b) and 17063 (the consumer), plus the port offset.

The text is parsed with test_metrics.py's strict parser.  Each family is
shown to move when its event happens, comparing a scrape before with one
after (other tests share the stack).  Bad requests get their status and the
service keeps answering.  Stopping relay-worker b shows b down on a's page;
a consumer whose topic does not exist is not ready.  What the stack cannot
show without breaking it for everyone (a worker link dropped for not
reading, a produce that fails) runs on a relay-worker of the test's own
(test_relay_socket_access.run_relay); the reorderer is fed forged peer
batches (build/bin/relay-forge).  docs/metrics.md "Tested by" lists which
test moves each family.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

from conftest import OFF, RUN, TOP, connect, create_room, db, kafka_tool, query, rest, run_async, token, uid, wait_until
from own_nginx import free_port
from relaylink import Link
from test_relay_socket_access import own_dir, run_relay  # noqa: F401 (a fixture)
from test_metrics import check_histograms, parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import faults  # noqa: E402

PORTS = {"relay-a": 17061 + OFF, "relay-b": 17062 + OFF, "consumer": 17063 + OFF}
CONSUMER_BIN = os.path.join(TOP, "build", "bin", "roomlist-consumer")


def raw(port, data, read=True, timeout=10):
    """Sends bytes to 127.0.0.1:port; returns (status, headers text, body) of the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return None
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head.decode(), body.decode()


def get(svc, path):
    return raw(PORTS[svc], ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())


def scrape(svc):
    status, head, text = get(svc, "/metrics")
    assert status == 200, (status, text[:300])
    assert "Content-Type: text/plain; version=0.0.4" in head, head
    series, types = parse(text)
    check_histograms(series, types)
    return series, types


def val(series, name, default=None, **labels):
    key = (name, tuple(sorted(labels.items())))
    if default is not None:
        return series.get(key, default)
    return series[key]


def d(after, before, name, **labels):
    """How far a counter moved between two scrapes."""
    return val(after, name, **labels) - val(before, name, **labels)


def status(svc):
    st, head, body = get(svc, "/status")
    assert st == 200 and "application/json" in head, (st, head)
    return json.loads(body)


def test_families_and_format():
    relay = ("minichat_relay_build_info", "minichat_relay_worker_connections", "minichat_relay_peer_up",
             "minichat_relay_peer_queue_messages", "minichat_relay_peer_messages_sent_total",
             "minichat_relay_peer_calls_total", "minichat_relay_peer_calls_failed_total",
             "minichat_relay_peer_batch_messages", "minichat_relay_peer_call_duration_seconds",
             "minichat_relay_kafka_up", "minichat_relay_kafka_produced_total", "minichat_relay_kafka_failed_total",
             "minichat_relay_kafka_pending_messages", "minichat_relay_kafka_produce_duration_seconds",
             "minichat_relay_order_held_messages", "minichat_relay_order_skipped_total",
             "minichat_relay_order_late_total", "minichat_relay_db_requests_total",
             "minichat_relay_db_queue_requests", "minichat_relay_db_request_duration_seconds")
    for svc in ("relay-a", "relay-b"):
        _, types = scrape(svc)
        for f in relay:
            assert f in types, (svc, f)
        assert types["minichat_relay_kafka_produce_duration_seconds"] == "histogram"
    _, types = scrape("consumer")
    for f in ("minichat_consumer_assigned_partitions", "minichat_consumer_lag_records", "minichat_consumer_rows_total",
              "minichat_consumer_batch_rows", "minichat_consumer_db_write_duration_seconds",
              "minichat_consumer_batch_retries_total", "minichat_consumer_read_flush_rounds_total",
              "minichat_consumer_push_events_total", "minichat_consumer_last_batch_age_seconds"):
        assert f in types, f


@run_async
async def test_a_message_moves_relay_and_consumer_counters():
    sender, reader, away = uid(), uid(), uid()     # away never connects: an offline push for it
    room = create_room(sender, [sender, reader, away])
    cs = await connect(sender, "a")
    cr = await connect(reader, "b")
    # the stream to b is up (a stack that just started may still be on its first connect)
    wait_until(lambda: val(scrape("relay-a")[0], "minichat_relay_peer_streaming", peer="b") == 1,
               what="relay-a streaming to b")
    a0, _ = scrape("relay-a")
    b0, _ = scrape("relay-b")
    c0, _ = scrape("consumer")
    try:
        ack = await cs.send_msg(room, "counted by the services")
        assert ack["op"] == "ack", ack
        await cr.expect("msg", room=room, seq=ack["seq"])
    finally:
        await cs.close()
        await cr.close()
    # a message counts as sent once b acks it: on the stream (the default
    # link) b acks a few ms after it delivered the batch
    # (and presence events of the two closes may follow it: wait for rest)
    a1 = wait_until(lambda: (lambda s: s if d(s, a0, "minichat_relay_peer_messages_sent_total", peer="b") >= 1
                             and val(s, "minichat_relay_peer_stream_unacked_batches", peer="b") == 0
                             else None)(scrape("relay-a")[0]), what="b's ack counted on relay-a, nothing unacked")
    b1, _ = scrape("relay-b")
    assert d(a1, a0, "minichat_relay_kafka_produced_total") >= 1
    assert d(a1, a0, "minichat_relay_kafka_delivered_total") >= 1
    assert d(a1, a0, "minichat_relay_kafka_produce_duration_seconds_count") >= 1
    assert val(a1, "minichat_relay_peer_streaming", peer="b") == 1
    assert d(a1, a0, "minichat_relay_peer_stream_batches_total", peer="b") >= 1
    assert d(a1, a0, "minichat_relay_peer_batch_messages_count") >= 1
    assert val(a1, "minichat_relay_peer_up", peer="b") == 1
    assert val(a1, "minichat_relay_peer_last_success_age_seconds", peer="b") < 60
    assert val(a1, "minichat_relay_worker_connections") >= 1
    assert val(a1, "minichat_relay_kafka_up") == 1
    # b's reorderer released it to b's workers
    assert d(b1, b0, "minichat_relay_order_released_total") >= 1
    # the consumer wrote it
    def written():
        c1, _ = scrape("consumer")
        return (d(c1, c0, "minichat_consumer_rows_total", result="new") >= 1
                and d(c1, c0, "minichat_consumer_records_total") >= 1
                and d(c1, c0, "minichat_consumer_batches_total") >= 1
                and d(c1, c0, "minichat_consumer_batch_rows_count") >= 1
                and d(c1, c0, "minichat_consumer_db_write_duration_seconds_count") >= 1
                and 0 <= val(c1, "minichat_consumer_last_batch_age_seconds") < 60
                and d(c1, c0, "minichat_consumer_push_events_total", result="pushed") >= 1)
    wait_until(written, what="the consumer's counters moved")
    c1, _ = scrape("consumer")
    lags = [v for (name, labels), v in c1.items() if name == "minichat_consumer_lag_records"]
    assert lags and all(v >= 0 for v in lags), lags
    # a partition nothing was read from since its assignment has no position, so no lag yet
    assert val(c1, "minichat_consumer_assigned_partitions") >= len(lags)


def test_db_requests_counted():
    user = uid()
    a0, _ = scrape("relay-a")
    st, _ = rest("GET", "/api/rooms?limit=5", "a", token(user))
    assert st == 200, st
    a1, _ = scrape("relay-a")
    assert val(a1, "minichat_relay_db_requests_total", result="ok") - \
        val(a0, "minichat_relay_db_requests_total", result="ok") >= 1
    assert val(a1, "minichat_relay_db_request_duration_seconds_count") - \
        val(a0, "minichat_relay_db_request_duration_seconds_count") >= 1
    assert val(a1, "minichat_relay_db_server_up", server="primary") == 1
    assert status("relay-a")["db"]["primary"] == "up"


def test_status_and_ready():
    for svc, node, peer in (("relay-a", "a", "b"), ("relay-b", "b", "a")):
        st, head, body = get(svc, "/ready")
        assert st == 200 and body == "ready\n", (svc, st, body)
        s = status(svc)
        assert s["service"] == "relay-worker" and s["node"] == node and s["ready"] is True, s
        assert s["uptime_s"] >= 0 and s["build"], s
        assert [p["node"] for p in s["peers"]] == [peer], s["peers"]
        assert s["peers"][0]["state"] in ("up", "unknown"), s["peers"]
        assert s["kafka"]["state"] == "ok", s["kafka"]
        assert s["workers"]["connections"] >= 1, s["workers"]
        assert s["db"]["configured"] is True, s["db"]
    st, _, body = get("consumer", "/ready")
    assert st == 200 and body == "ready\n", (st, body)
    s = status("consumer")
    assert s["service"] == "roomlist-consumer" and s["ready"] is True and s["unready"] == [], s
    assert s["group"] == "minichat-roomlist" and s["db"]["primary"] == "up", s
    assert len(s["partitions"]) >= 1, s


def test_status_over_the_worker_link():
    """LocalFrame status_req (40) is answered with the /status JSON (41)."""
    link = Link("a", name="test-status")
    try:
        s = json.loads(link.status())
    finally:
        link.close()
    assert s["service"] == "relay-worker" and s["node"] == "a", s
    assert s["workers"]["connections"] >= 1 and s["peers"][0]["node"] == "b", s


def test_bad_requests_answered_and_service_survives():
    for svc in ("relay-a", "consumer"):
        port = PORTS[svc]
        st, head, _ = raw(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert st == 405 and "Allow: GET" in head, (st, head)
        assert raw(port, b"GET /nothing-here HTTP/1.1\r\n\r\n")[0] == 404
        assert raw(port, b"GET /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789")[0] == 413
        assert raw(port, b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 5000 + b"\r\n\r\n")[0] == 431
        assert raw(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")[0] == 400
        assert raw(port, b"GET /ready HTTP/2.0\r\n\r\n")[0] == 505
        assert raw(port, b"GET /ready HTTP/1.0\n\n")[0] == 200
        # a client that sends half a request and goes away, and one that sends nothing
        raw(port, b"GET /met", read=False)
        idle = socket.create_connection(("127.0.0.1", port))
        # more silent clients than it serves at once: a request behind them
        # waits in the backlog until they are closed as idle (5 s), then is
        # answered; the silent ones see their connection closed
        held = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(20)]
        try:
            assert raw(port, b"GET /ready HTTP/1.1\r\n\r\n", timeout=30)[0] == 200
            assert held[0].recv(100) == b""
        finally:
            for s in held:
                s.close()
            idle.close()
        scrape(svc)


def test_peer_down_then_up():
    """relay-worker b stopped: a's Deliver calls to b fail, b shows down on
    a's page (a stays ready: peers are best-effort); b back: up again."""
    sender, reader = uid(), uid()
    room = create_room(sender, [sender, reader])

    @run_async
    async def send(body):
        cs = await connect(sender, "a")
        try:
            ack = await cs.send_msg(room, body)
            assert ack["op"] == "ack", ack
        finally:
            await cs.close()

    before, _ = scrape("relay-a")
    faults._signal("relay-b/relay.pid", os.path.join(RUN, "relay-b", "relay-worker.conf"), signal.SIGTERM)
    try:
        send("while b is down")

        def down():
            s = status("relay-a")
            return s["peers"][0]["state"] == "down"
        wait_until(down, timeout=30, what="b down on a's status")
        series, _ = scrape("relay-a")
        assert val(series, "minichat_relay_peer_up", peer="b") == 0
        assert val(series, "minichat_relay_peer_calls_failed_total", peer="b") >= 1
        assert get("relay-a", "/ready")[0] == 200
        # older than peer_max_age_ms (10 s) while b is away: dropped
        wait_until(lambda: d(scrape("relay-a")[0], before, "minichat_relay_peer_messages_dropped_total",
                             peer="b") >= 1, timeout=40, what="the message to b dropped as too old")
    finally:
        faults.stack_start()
    # the message above was dropped: a new one makes the next call to b
    send("after b is back")
    wait_until(lambda: status("relay-a")["peers"][0]["state"] == "up", timeout=60, what="b up again on a's status")
    assert get("relay-b", "/ready")[0] == 200
    # nothing left waiting for b
    def drained():
        s, _ = scrape("relay-a")
        return [val(s, n, peer="b") for n in ("minichat_relay_peer_queue_messages", "minichat_relay_peer_queue_bytes",
                                              "minichat_relay_peer_calls_in_flight")] == [0, 0, 0]
    wait_until(drained, what="a's queue to b empty")


def own_consumer(tmp_path, changes):
    """A roomlist-consumer of the test's own: the stack's settings with
    changes (without Redis and push unless changes give them), its log in
    tmp_path.  Returns (the process, its open log file)."""
    with open(os.path.join(RUN, "consumer", "roomlist-consumer.conf")) as f:
        lines = f.read().splitlines()
    changes = dict({"redis": "", "push_topic": ""}, **changes)
    conf = [ln for ln in lines if ln.split("=")[0].strip() not in changes]
    conf += ["%s = %s" % kv for kv in changes.items()]
    path = tmp_path / "roomlist-consumer.conf"
    path.write_text("\n".join(conf) + "\n")
    log = open(tmp_path / "consumer.log", "w")
    p = subprocess.Popen([CONSUMER_BIN, "-c", str(path)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return p, log


def test_consumer_without_partitions_is_not_ready(tmp_path):
    """A member with nothing assigned (its topic does not exist) answers
    /ready 503 naming why, and its /status says so; SIGTERM stops it."""
    port = free_port()
    group = "test-svc-ready-%d" % uid()
    p, log = own_consumer(tmp_path, {"kafka_topic": "minichat.no-such-topic-%d" % uid(), "kafka_group": group,
                                     "kafka_instance_id": group, "http_listen": "127.0.0.1:%d" % port})
    try:
        def answering():
            try:
                return raw(port, b"GET /ready HTTP/1.1\r\n\r\n")
            except OSError:
                return None
        wait_until(answering, timeout=30, what="the consumer's http port")
        time.sleep(1.5)  # a few snapshots: still nothing assigned
        st, head, body = answering()
        assert st == 503 and "application/json" in head, (st, body)
        reasons = json.loads(body)["reasons"]
        assert "kafka: no partitions assigned" in reasons, reasons
        s = json.loads(raw(port, b"GET /status HTTP/1.1\r\n\r\n")[2])
        assert s["ready"] is False and s["partitions"] == [] and s["group"] == group, s
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        log.close()


def test_relay_unready_while_kafka_is_down():
    """Kafka stopped: the relay-workers' producers find every broker down,
    /ready answers 503 naming Kafka and minichat_relay_kafka_up is 0.  Kafka
    back: both are ready again without a message going through (an idle
    producer delivers nothing; its statistics say a broker is up)."""
    faults.RestartKafka().inject()
    try:
        def unready():
            st, _, body = get("relay-a", "/ready")
            return st == 503 and "kafka: all brokers are down" in json.loads(body)["reasons"]
        wait_until(unready, timeout=60, what="relay-a unready without Kafka")
        series, _ = scrape("relay-a")
        assert val(series, "minichat_relay_kafka_up") == 0
        assert status("relay-a")["kafka"]["state"] == "brokers_down"

        # a message sent now waits in the producer (kafka_message_timeout_ms
        # is 30 s): pending; its answer does not matter here
        @run_async
        async def send_one():
            sender = uid()
            room = create_room(sender, [sender, uid()])
            cs = await connect(sender, "a")
            try:
                await cs.send({"op": "send", "id": 1, "room": room, "cid": "pending", "body": "while Kafka is down"})
                wait_until(lambda: val(scrape("relay-a")[0], "minichat_relay_kafka_pending_messages") >= 1,
                           what="a message pending in relay-a's producer")
            finally:
                await cs.close()
        send_one()
    finally:
        faults.stack_start()

    for svc in ("relay-a", "relay-b"):
        wait_until(lambda: get(svc, "/ready")[0] == 200, timeout=60, what="%s ready again" % svc)
    assert val(scrape("relay-a")[0], "minichat_relay_kafka_up") == 1
    wait_until(lambda: val(scrape("relay-a")[0], "minichat_relay_kafka_pending_messages") == 0, timeout=60,
               what="nothing pending once Kafka is back")



def test_identity_gauges():
    """build_info is 1 with the node and the build /status gives;
    start_time_seconds is when /status says the process started."""
    for svc, node in (("relay-a", "a"), ("relay-b", "b")):
        s = status(svc)
        series, _ = scrape(svc)
        info = [(dict(labels), v) for (name, labels), v in series.items() if name == "minichat_relay_build_info"]
        assert info == [({"node": node, "build": s["build"]}, 1)], info
        started = val(series, "minichat_relay_start_time_seconds")
        # /status's uptime is whole seconds, read a moment before the scrape
        assert time.time() - s["uptime_s"] - 5 <= started <= time.time() - s["uptime_s"] + 1, (started, s)


def forge(room, seq, member, sender, body):
    """One Deliver call to relay-worker a with node b's certificate, as b
    would make it (tests/tools/relay-forge.c); must end OK."""
    from test_peer_tls import FORGE, MESH, RELAY_A
    p = subprocess.run([FORGE, "--target", RELAY_A, "--from", "b", "--room", str(room), "--seq", str(seq),
                        "--recipient", str(member), "--sender", str(sender), "--body", body,
                        "--ca", os.path.join(MESH, "ca.crt"), "--name", "a",
                        "--cert", os.path.join(MESH, "relay-b.crt"), "--key", os.path.join(MESH, "relay-b.key")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)


@run_async
async def test_reorderer_counts_held_skipped_late_refused():
    """Peer batches forged into a fresh room on relay-worker a: seq 1 is
    released (the room remembered), seq 3 is held for the missing 2, 2 is
    skipped after order_gap_ms and 3 released, 3 again is late, and a seq
    more than order_max_ahead (10000) past the position is refused."""
    sender, member = uid(), uid()
    room = create_room(sender, [sender, member])
    cm = await connect(member, "a")
    try:
        s0, _ = scrape("relay-a")
        forge(room, 1, member, sender, "forged 1")
        await cm.expect("msg", room=room, seq=1)
        s1, _ = scrape("relay-a")
        assert d(s1, s0, "minichat_relay_order_released_total") >= 1
        assert val(s1, "minichat_relay_order_rooms") >= 1

        forge(room, 3, member, sender, "forged 3")
        # held until the gap is skipped (2 s): seen held, or already skipped
        held = []
        def held_or_skipped():
            s, _ = scrape("relay-a")
            held.append(val(s, "minichat_relay_order_held_messages"))
            return held[-1] >= 1 or d(s, s1, "minichat_relay_order_skipped_total") >= 1
        wait_until(held_or_skipped, what="seq 3 held")
        await cm.expect("msg", room=room, seq=3)
        s2, _ = scrape("relay-a")
        assert max(held) >= 1, held
        assert d(s2, s1, "minichat_relay_order_skipped_total") >= 1

        forge(room, 3, member, sender, "forged 3 again")
        forge(room, 3 + 10001 + 1, member, sender, "forged far ahead")
        wait_until(lambda: d(scrape("relay-a")[0], s2, "minichat_relay_order_late_total") >= 1
                   and d(scrape("relay-a")[0], s2, "minichat_relay_order_refused_total") >= 1,
                   what="a late and a refused message counted")
        assert not [f for f in cm.frames if f.get("body") in ("forged 3 again", "forged far ahead")], cm.frames
    finally:
        await cm.close()


def test_consumer_gauges():
    """db_up is 1 with the primary up; assigned_partitions is the number of
    partitions /status lists; the relay-workers' DB queue is empty at rest."""
    # an earlier test may have moved the group (test_consumer_fenced): wait for the assignment
    wait_until(lambda: status("consumer")["partitions"], what="the consumer's partitions assigned")
    series, _ = scrape("consumer")
    s = status("consumer")
    assert s["db"]["primary"] == "up", s
    assert val(series, "minichat_consumer_db_up") == 1
    assert val(series, "minichat_consumer_assigned_partitions") == len(s["partitions"]) >= 1, s["partitions"]
    for svc in ("relay-a", "relay-b"):
        assert val(scrape(svc)[0], "minichat_relay_db_queue_requests") == 0


@run_async
async def test_read_pointer_flush_counted():
    """A `read` is flushed to room_members within read_flush_ms (1 s): one
    round that moved at least this row."""
    sender, reader = uid(), uid()
    room = create_room(sender, [sender, reader])
    cs = await connect(sender, "a")
    cr = await connect(reader, "b")
    try:
        ack = await cs.send_msg(room, "to be read")
        await cr.expect("msg", room=room, seq=ack["seq"])
        c0, _ = scrape("consumer")
        r = await cr.request({"op": "read", "room": room, "seq": ack["seq"]})
        assert r["op"] == "ok", r
    finally:
        await cs.close()
        await cr.close()
    wait_until(lambda: d(scrape("consumer")[0], c0, "minichat_consumer_read_flush_rounds_total") >= 1
               and d(scrape("consumer")[0], c0, "minichat_consumer_read_flush_rows_total") >= 1,
               what="a read-pointer flush counted")
    c1, _ = scrape("consumer")
    assert d(c1, c0, "minichat_consumer_read_flush_failures_total") == 0


def consumer_batch_waiting(room):
    """The processlist row of the consumer's batch statement waiting on the
    lock this test holds, or None."""
    rows = query("SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE COMMAND <> 'Sleep' AND "
                 "(INFO LIKE 'INSERT IGNORE INTO messages%%' OR INFO LIKE 'UPDATE rooms%%') AND TIME >= 1")
    return rows[0] if rows else None


@run_async
async def test_consumer_store_failure_and_retry_counted():
    """The room's `rooms` row locked by a session of the test's own, a
    message's batch waits on it; its connection killed mid-transaction, the
    batch is rolled back (store_failures) and written again once the
    consumer has reconnected (batch_retries); with the lock released it is
    stored, once."""
    sender, reader = uid(), uid()
    room = create_room(sender, [sender, reader])
    lock = db()
    lock.autocommit(False)
    try:
        with lock.cursor() as cur:
            cur.execute("SELECT id FROM rooms WHERE id=%s FOR UPDATE", (room,))
            assert cur.fetchall()
        c0, _ = scrape("consumer")
        cs = await connect(sender, "a")
        try:
            ack = await cs.send_msg(room, "written twice, stored once")
            assert ack["op"] == "ack", ack
        finally:
            await cs.close()
        first = wait_until(lambda: consumer_batch_waiting(room), what="the consumer's batch waiting on the lock")
        query("KILL %d" % first["ID"])
        wait_until(lambda: d(scrape("consumer")[0], c0, "minichat_consumer_store_failures_total") >= 1,
                   what="the rolled back batch counted")
        wait_until(lambda: d(scrape("consumer")[0], c0, "minichat_consumer_batch_retries_total") >= 1,
                   what="the batch written again")
    finally:
        lock.rollback()
        lock.close()
    wait_until(lambda: [r["seq"] for r in query("SELECT seq FROM messages WHERE room_id=%s", (room,))]
               == [ack["seq"]], what="the message stored once")
    wait_until(lambda: val(scrape("consumer")[0], "minichat_consumer_db_up") == 1, what="the consumer's DB up again")


def test_a_record_that_is_not_a_chat_message_is_counted_malformed():
    """A line of text put on the messages topic with Kafka's console
    producer (the stack's Kafka jars, as test_push.py reads): the consumer
    skips it, counted in malformed_total, and keeps consuming."""
    c0, _ = scrape("consumer")
    args = kafka_tool("org.apache.kafka.tools.ConsoleProducer", "--topic", "minichat.messages")
    # '\x0e' opens field 1 with wire type 6, which protobuf does not have
    p = subprocess.run(args, input=b"\x0enot a chat message\n", capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    wait_until(lambda: d(scrape("consumer")[0], c0, "minichat_consumer_malformed_total") == 1, timeout=30,
               what="the record counted as malformed")
    c1, _ = scrape("consumer")
    assert d(c1, c0, "minichat_consumer_records_total") >= 1


def scrape_beside(sock):
    """The /metrics series of a relay-worker of a test's own, whose socket is
    sock: its http_listen is in the relay-worker.conf beside the socket."""
    with open(os.path.join(os.path.dirname(sock), "relay-worker.conf")) as f:
        listen = [ln.split("=", 1)[1].strip() for ln in f if ln.startswith("http_listen")][-1]
    st, _, text = raw(int(listen.rsplit(":", 1)[1]), b"GET /metrics HTTP/1.1\r\n\r\n")
    assert st == 200, st
    series, types = parse(text)
    check_histograms(series, types)
    return series


def own_link(sock, name):
    """A relaylink.Link to a relay-worker of the test's own."""
    import relaylink
    real = relaylink.sock_path
    relaylink.sock_path = lambda node: sock
    try:
        return relaylink.Link(name=name)
    finally:
        relaylink.sock_path = real


def test_a_worker_link_that_does_not_read_is_dropped(own_dir):
    """A relay-worker of the test's own with local_outbuf_max_mb = 1: a link
    that never reads while another sends events (each to every link, ~40 KB
    with its recipients) passes the bound and is closed, counted once."""
    from relaylink import EVENT
    with run_relay(own_dir, "local_outbuf_max_mb = 1\n") as (sock, _):
        idle, busy = own_link(sock, "idle"), own_link(sock, "busy")
        try:
            before = scrape_beside(sock)
            assert val(before, "minichat_relay_worker_connections") == 2
            recipients = list(range(10 ** 9, 10 ** 9 + 8000))
            for i in range(100):       # ~4 MB in all: past 1 MB plus the socket buffers
                busy.send_message(EVENT, [(1, 1), (3, 1), (7, recipients), (8, "access"), (11, "typing")])
                busy._read(0.01)       # the busy link reads what it gets back
                busy.frames.clear()
                if val(scrape_beside(sock), "minichat_relay_worker_dropped_total") >= 1:
                    break
            after = scrape_beside(sock)
            assert d(after, before, "minichat_relay_worker_dropped_total") == 1
            assert val(after, "minichat_relay_worker_connections") == 1
        finally:
            idle.close()
            busy.close()


def test_a_produce_that_fails_is_counted(own_dir):
    """A relay-worker of the test's own producing to a topic Kafka does not
    have, with kafka_message_timeout_ms = 1000: a publish is pending, then
    its delivery fails; the publisher is told so, and it is counted."""
    from test_relay_member_lists import publish
    topic = "minichat.no-such-topic-%d" % uid()
    with run_relay(own_dir, "kafka_topic = %s\nkafka_message_timeout_ms = 1000\n" % topic) as (sock, _):
        w = own_link(sock, "w")
        try:
            before = scrape_beside(sock)
            u = uid()
            publish(w, 10 ** 12 + u, 1, u, 1, members=[u], req_id=5)
            res = w.wait(lambda f: f[0] == 5, timeout=30)
            assert res[1] == "publish_result" and not res[2]["ok"], res
            after = scrape_beside(sock)
            assert d(after, before, "minichat_relay_kafka_produced_total") == 1
            assert d(after, before, "minichat_relay_kafka_failed_total") == 1
            assert d(after, before, "minichat_relay_kafka_delivered_total") == 0
            assert val(after, "minichat_relay_kafka_pending_messages") == 0
        finally:
            w.close()
