"""The status page and the readiness answer of the nginx nodes
(docs/operations.md, "Status and readiness of an nginx node"):
`location = /status { minichat_status; }` and `location = /ready {
minichat_ready; }` on both nodes of the dev stack.

Each answer comes from whichever worker takes the request, so a check of
something every worker must see is repeated until several answers in a row
agree (the workers reconnect on their own, a moment apart).
"""

import json
import os
import signal
import sys
import time

from conftest import (NGINX_PORTS, REDIS_MODE, connect, create_room, http_connection, in_a_row, open_socket, run_async,
                      uid, wait_until)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import faults  # noqa: E402
from own_nginx import OwnNginx, free_port  # noqa: E402

SLOTS = 16384


def get(path, node="a", method="GET"):
    """(status, content type, body text) of a request to the node."""
    conn = http_connection(NGINX_PORTS[node])
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read().decode()
    finally:
        conn.close()


def status(node="a"):
    st, ctype, body = get("/status", node)
    assert st == 200, (st, body)
    assert ctype == "application/json", ctype
    return json.loads(body)


def ready(node="a"):
    st, ctype, body = get("/ready", node)
    assert ctype == "application/json", ctype
    return st, json.loads(body)


def test_status_fields_on_both_nodes():
    for node in ("a", "b"):
        s = status(node)
        assert s["node"] == node, s
        assert isinstance(s["build"], str) and s["build"], s
        assert isinstance(s["pid"], int) and s["pid"] > 0, s
        assert 0 <= s["worker"] < s["workers"], s
        assert s["ready"] is True and "reason" not in s, s
        conns = s["connections"]
        assert conns["open"] >= conns["worker"] >= 0, s

        redis = s["redis"]
        assert redis["node_count"] == len(redis["nodes"]) >= 1, redis
        assert all(n["state"] == "ready" for n in redis["nodes"]), redis
        if REDIS_MODE == "cluster":
            assert redis["mode"] == "cluster", redis
            assert redis["mapped"] is True and redis["slots_ready"] == SLOTS, redis
            # every slot on one master, every master a master
            assert sum(n["slots"] for n in redis["nodes"]) == SLOTS, redis
            assert all(n["master"] for n in redis["nodes"] if n["slots"]), redis
        else:
            assert redis["mode"] == "single" and "slots_ready" not in redis, redis
            assert redis["nodes"][0]["master"] is True, redis

        relay = s["relay"]
        assert relay["state"] == "up" and relay["path"].endswith(".sock"), relay
        assert relay["since_ms"] > 0, relay

        # the relay-worker's own status, asked over the worker's link
        rw = s["relay_worker"]
        assert rw["service"] == "relay-worker" and rw["node"] == node, rw
        # (each program names the tree it was last compiled from: equal only
        # after a build of both from one commit)
        assert isinstance(rw["build"], str) and rw["build"], rw
        other = "b" if node == "a" else "a"
        assert [p["node"] for p in rw["peers"]] == [other], rw
        assert rw["workers"]["connections"] >= s["workers"], rw


@run_async
async def test_status_shows_the_peer_up_once_a_message_crossed():
    sender, reader = uid(), uid()
    room = create_room(sender, [sender, reader])
    cs = await connect(sender, "a")
    cr = await connect(reader, "b")
    try:
        ack = await cs.send_msg(room, "across")
        assert ack["op"] == "ack", ack
        await cr.expect("msg", room=room, seq=ack["seq"])
    finally:
        await cs.close()
        await cr.close()
    peer = status("a")["relay_worker"]["peers"][0]
    assert peer["node"] == "b" and peer["state"] == "up", peer
    assert peer["sent"] >= 1 and peer["last_ok_age_ms"] is not None, peer


@run_async
async def test_status_counts_connections():
    """connections.open is the node's (the metrics zone); .worker this
    worker's, which a connection of ours raises on one worker at least."""
    clients = [await connect(uid(), "a") for _ in range(4)]
    try:
        s = status("a")
        assert s["connections"]["open"] >= 4, s
        wait_until(lambda: status("a")["connections"]["worker"] >= 1, what="a worker holding a connection")
    finally:
        for c in clients:
            await c.close()


def test_ready_answers_200_and_other_methods_405():
    st, body = ready("a")
    assert (st, body) == (200, {"ready": True}), (st, body)
    for path in ("/ready", "/status"):
        for method in ("POST", "PUT", "DELETE"):
            st, _, _ = get(path, "a", method)
            assert st == 405, (path, method, st)
        st, _, body = get(path, "a", "HEAD")
        assert st == 200 and body == "", (path, st, body)


def test_ready_is_503_while_the_relay_worker_is_stopped():
    """A stopped relay-worker makes node a unready (the reason says why),
    node b stays ready; once it is started again node a is ready again."""
    fault = faults.RestartRelay("a")
    fault.inject()
    try:
        wait_until(in_a_row(lambda: ready("a")[0] == 503), what="node a unready")
        st, body = ready("a")
        assert st == 503 and body == {"ready": False, "reason": "relay-worker link down"}, (st, body)
        s = status("a")
        assert s["ready"] is False and s["reason"] == "relay-worker link down", s
        assert s["relay"]["state"] == "down", s
        assert s["relay_worker"] == {"error": "relay-worker link down"}, s
        assert ready("b") == (200, {"ready": True})
    finally:
        fault.repair()
    wait_until(in_a_row(lambda: ready("a")[0] == 200), timeout=30, what="node a ready again")
    s = status("a")
    assert s["relay"]["state"] == "up" and s["ready"] is True, s
    assert s["relay_worker"]["service"] == "relay-worker", s


def test_ready_is_503_without_redis():
    """An nginx of our own whose Redis is not there (nothing listens on the
    port): unready with the reason, and the status page shows the node down
    (or connecting, between two tries), while /healthz still answers."""
    node = OwnNginx([], redis="127.0.0.1:%d" % free_port()).start()
    try:
        st, _, body = node.get("/ready")
        assert st == 503 and body == {"ready": False, "reason": "redis not connected"}, (st, body)
        st, _, s = node.get("/status")
        assert st == 200 and s["ready"] is False and s["reason"] == "redis not connected", s
        assert s["redis"]["mode"] == "single", s
        assert [n["state"] for n in s["redis"]["nodes"]] in (["down"], ["connecting"]), s
        assert node.get("/healthz")[0] == 200
    finally:
        bad = node.stop()
        assert not bad, bad


def read_response(sock):
    """(status, headers, body text) of one HTTP/1.1 response with a
    Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed before a response: %r" % data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    want = int(headers["content-length"])
    while len(body) < want:
        chunk = sock.recv(4096)
        assert chunk, "closed inside a response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body[:want].decode()


def proc_title(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read()


def test_ready_is_503_shutting_down_on_an_old_worker_after_a_reload():
    """A reload (HUP) leaves the old worker finishing the requests it has:
    a request it was reading when the reload came is answered 503 "shutting
    down", while the new worker answers 200.  One keep-alive connection
    asks /status first (which worker holds it), then sends half of a /ready
    request: a connection inside a request is not idle, so the old worker
    keeps it through the reload instead of closing it, and answers once the
    request is complete.  The rest of the request goes only once nginx has
    retitled the old worker "shutting down" (the master signals it 100 ms
    after starting the new one: an answer before that would be a 200)."""
    node = OwnNginx([]).start()
    sock = None
    try:
        wait_until(lambda: node.get("/ready")[0] == 200, 15, what="the own nginx ready")
        sock = open_socket(node.port, 10)
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        st, _, body = read_response(sock)
        assert st == 200, (st, body)
        old = json.loads(body)["pid"]
        sock.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)   # the old worker reads it: the connection is no longer idle

        os.kill(node.master_pid(), signal.SIGHUP)
        wait_until(lambda: node.get("/status")[2]["pid"] != old, 15, what="a new worker answering")
        # the master tells the old worker to quit 100 ms after starting the
        # new one; nginx then retitles it (and it still holds the connection)
        wait_until(lambda: b"shutting down" in proc_title(old), 15, what="the old worker shutting down")

        sock.sendall(b"\r\n")
        st, headers, body = read_response(sock)
        assert st == 503 and json.loads(body) == {"ready": False, "reason": "shutting down"}, (st, body)
        assert headers["content-type"] == "application/json", headers
        assert node.get("/ready")[:3:2] == (200, {"ready": True})
    finally:
        if sock is not None:
            sock.close()
        bad = node.stop()
        assert not bad, bad
