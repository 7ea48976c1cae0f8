"""The server API for app backends (docs/protocol.md "Server API"): an API
key instead of a JWT; system messages into rooms, disconnects, bans.

The stack's nginx serves it at /server/ with the key file scripts/stack.sh
made in the run directory (server-api.keys).  Every user here is fresh
(uid()), so bans and closes touch nothing else.  Waits poll with deadlines;
nothing asserts on how long something took.
"""

import asyncio
import json
import os
import re
import stat
import sys
import time

import websockets

from conftest import (NGINX_PORTS, RUN, connect, create_room, http_connection, in_a_row, query, rest, run_async, token,
                      uid, wait_until, ws_status)
from own_nginx import OwnNginx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import faults  # noqa: E402

KEYS_FILE = os.path.join(RUN, "server-api.keys")


def api_key():
    with open(KEYS_FILE) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")][0]


def srv(method, path, node="a", body=None, raw=None, key=None, headers=None):
    """(status, parsed body) of a server API call, with the stack's key unless key is given."""
    return rest(method, "/server" + path, node, api_key() if key is None else key, body=body, raw=raw,
                headers=headers)


def publish(room, body, node="a", idem=None):
    return srv("POST", "/rooms/%d/messages" % room, node, {"body": body},
               headers={"Idempotency-Key": idem} if idem else None)


async def closed_with(c, timeout=10):
    """The close (code, reason) of a client's connection, reading what is left."""
    try:
        while True:
            await c.recv(timeout=timeout)
    except websockets.exceptions.ConnectionClosed as e:
        return e.code, e.reason


def metric(name, labels, node="a"):
    """One sample of node's /metrics (0 when absent)."""
    conn = http_connection(NGINX_PORTS[node])
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    want = "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in labels.items()))
    for line in text.splitlines():
        if line.startswith(want + " "):
            return int(line.split()[-1])
    return 0


# --- the key ------------------------------------------------------------------

def test_missing_or_wrong_key_is_401_on_both_nodes():
    user = uid()
    for node in ("a", "b"):
        for key, why in (("", "an API key is required"), ("x" * 64, "wrong API key"),
                         (api_key() + "x", "wrong API key")):
            status, body = srv("GET", "/users/%d/ban" % user, node, key=key)
            assert status == 401, (node, key, status, body)
            assert body["code"] == "unauthorized" and why in body["message"], body
        # a user's JWT is not a key
        status, body = srv("GET", "/users/%d/ban" % user, node, key=token(user))
        assert status == 401 and body["code"] == "unauthorized", body
        # and the key is not a JWT for the user API
        status, body = rest("GET", "/api/rooms", node, api_key())
        assert status == 401, (status, body)
    # the key never reaches the log
    for node in ("a", "b"):
        with open(os.path.join(RUN, "nginx-%s" % node, "error.log")) as f:
            assert api_key() not in f.read()


def test_the_stack_key_file_is_owner_only():
    mode = stat.S_IMODE(os.stat(KEYS_FILE).st_mode)
    assert mode & 0o077 == 0, oct(mode)


# --- publish --------------------------------------------------------------------

@run_async
async def test_publish_reaches_members_on_both_nodes_in_order_and_is_stored():
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c1 = await connect(u1, "a")
    c2 = await connect(u2, "b")
    try:
        ack = await c1.send_msg(room, "before")
        assert ack["op"] == "ack", ack
        before = metric("minichat_server_api_requests_total", {"endpoint": "publish", "status": "2xx"})

        data = {"notice": "maintenance at 17:00", "n": 3, "ok": True}
        status, body = publish(room, data, "b")
        assert status == 200, (status, body)
        assert body["room"] == room and body["seq"] == ack["seq"] + 1 and body["ts"] > 0, body

        for c in (c1, c2):
            m = await c.expect("msg", room=room, seq=body["seq"])
            assert m["kind"] == "system" and m["from"] == 0 and m["ts"] == body["ts"], m
            assert json.loads(m["body"]) == {"event": "server", "data": data}, m
        after = await c2.send_msg(room, "after")
        assert after["seq"] == body["seq"] + 1, after
        m = await c1.expect("msg", room=room, seq=after["seq"])
        # a string is a JSON value too
        status, body2 = publish(room, "plain text", "a")
        assert status == 200 and body2["seq"] == after["seq"] + 1, (status, body2)
        m = await c2.expect("msg", room=room, seq=body2["seq"])
        assert json.loads(m["body"]) == {"event": "server", "data": "plain text"}, m

        # in MySQL, through Kafka, and in the history pages
        row = wait_until(lambda: query("SELECT sender_id, kind, body FROM messages WHERE room_id=%s AND seq=%s",
                                       (room, body["seq"])), what="the system message in MySQL")
        assert row[0]["sender_id"] == 0 and row[0]["kind"] == "system", row
        assert json.loads(row[0]["body"]) == {"event": "server", "data": data}, row
        status, page = rest("GET", "/api/rooms/%d/messages" % room, "a", token(u2))
        assert status == 200, page
        seqs = [m["seq"] for m in page["messages"]]
        assert body["seq"] in seqs and body2["seq"] in seqs, page
        assert metric("minichat_server_api_requests_total", {"endpoint": "publish", "status": "2xx"}) >= before + 1
    finally:
        await c1.close()
        await c2.close()


@run_async
async def test_publish_retry_with_the_same_key_gives_the_same_seq_once():
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c2 = await connect(u2, "b")
    try:
        key = "deploy-%d" % uid()
        status, first = publish(room, {"v": 1}, "a", idem=key)
        assert status == 200, first
        status, again = publish(room, {"v": 1}, "b", idem=key)
        assert status == 200 and again == first, (first, again)
        status, other = publish(room, {"v": 2}, "a", idem=key + "-2")
        assert status == 200 and other["seq"] == first["seq"] + 1, other
        await c2.expect("msg", room=room, seq=other["seq"])
        got = [f for f in c2.frames if f.get("op") == "msg" and f.get("seq") == first["seq"]]
        assert len(got) == 1, c2.frames
        assert got[0]["cid"] == "srv:" + key, got
        rows = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(
            query("SELECT seq, client_msg_id FROM messages WHERE room_id=%s AND sender_id=0 ORDER BY seq", (room,))),
            what="both system messages in MySQL")
        assert [r["seq"] for r in rows] == [first["seq"], other["seq"]], rows
    finally:
        await c2.close()


def test_publish_into_a_room_that_does_not_exist_is_404():
    status, body = publish(10 ** 15 + uid(), {"x": 1})
    assert status == 404 and body["code"] == "not_found", (status, body)


# --- disconnect --------------------------------------------------------------------

@run_async
async def test_disconnect_closes_the_user_everywhere_and_the_user_comes_back():
    user, bystander = uid(), uid()
    room = create_room(user, [user, bystander])
    ca, cb = await connect(user, "a"), await connect(user, "b")
    other = await connect(bystander, "a")
    try:
        why = "account moved \u2014 \"see\" mail"
        status, body = srv("POST", "/users/%d/disconnect" % user, "b", {"reason": why})
        assert status == 202 and body == {"user": user}, (status, body)
        for c in (ca, cb):
            code, reason = await closed_with(c)
            assert (code, reason) == (4005, why), (code, reason)
        # without a body: the default reason
        again = await connect(user, "b")
        status, _ = srv("POST", "/users/%d/disconnect" % user, "a")
        assert status == 202
        assert await closed_with(again) == (4005, "disconnected by the server")
        # nothing else was touched, and the user may connect at once
        ack = await other.send_msg(room, "still here")
        assert ack["op"] == "ack", ack
        back = await connect(user, "a")
        m = await back.send_msg(room, "back")
        assert m["op"] == "ack", m
        await back.close()
    finally:
        await other.close()


@run_async
async def test_disconnect_is_503_and_sends_nothing_without_the_relay_worker():
    """The one thing a disconnect's answer promises (docs/protocol.md): 202
    only once the event is handed to the relay-worker link; with node a's
    relay-worker stopped, node a answers 503 `unavailable` on every worker,
    and the user's connection on node b stays open (nothing was sent)."""
    user, bystander = uid(), uid()
    room = create_room(user, [user, bystander])
    cb = await connect(user, "b")
    fault = faults.RestartRelay("a")
    fault.inject()
    try:
        wait_until(in_a_row(lambda: rest("GET", "/ready", "a")[0] == 503), what="node a's relay link down")
        for _ in range(8):
            status, body = srv("POST", "/users/%d/disconnect" % user, "a")
            assert status == 503 and body["code"] == "unavailable", (status, body)
    finally:
        fault.repair()
    try:
        await asyncio.sleep(0.5)
        ack = await cb.send_msg(room, "still connected")
        assert ack["op"] == "ack", ack
    finally:
        await cb.close()


# --- ban and unban ---------------------------------------------------------------

def user_row(user):
    rows = query("SELECT status, banned_until FROM users WHERE id=%s", (user,))
    return rows[0] if rows else None


@run_async
async def test_ban_closes_refuses_and_unban_lets_back_at_once():
    user, friend = uid(), uid()
    room = create_room(user, [user, friend])
    ca, cb = await connect(user, "a"), await connect(user, "b")

    t0 = time.time() * 1000
    why = 'spam: "links" \\ \u00e9'
    status, body = srv("POST", "/users/%d/ban" % user, "a", {"duration": 3600, "reason": why})
    assert status == 200, (status, body)
    assert body["user"] == user and body["banned"] is True, body
    assert t0 + 3590 * 1000 <= body["until"] <= time.time() * 1000 + 3600 * 1000 + 1000, body

    for c in (ca, cb):
        code, _ = await closed_with(c)
        assert code == 4003, code
        err = [f for f in c.frames if f.get("op") == "error" and f.get("code") == "banned"]
        assert err and err[0]["message"] == why and err[0]["until"] == body["until"], c.frames
    for node in ("a", "b"):
        assert await ws_status(node, token(user)) == 403
        status, refused = rest("GET", "/api/rooms", node, token(user))
        assert status == 403 and refused["code"] == "banned" and refused["until"] == body["until"], refused
    status, state = srv("GET", "/users/%d/ban" % user, "b")
    assert status == 200 and state["banned"] is True and state["until"] == body["until"], state
    row = user_row(user)
    assert row["status"] == "banned" and row["banned_until"] is not None, row

    status, body = srv("DELETE", "/users/%d/ban" % user, "b")
    assert status == 200 and body == {"user": user, "banned": False, "until": None}, (status, body)
    assert user_row(user)["status"] == "active"
    status, state = srv("GET", "/users/%d/ban" % user, "a")
    assert state == {"user": user, "banned": False, "until": None, "strikes": 0}, state
    for node in ("a", "b"):
        status, _ = rest("GET", "/api/rooms", node, token(user))
        assert status == 200
    c = await connect(user, "b")
    ack = await c.send_msg(room, "hello again")
    assert ack["op"] == "ack", ack
    await c.close()


@run_async
async def test_permanent_ban_and_its_lift():
    user = uid()
    c = await connect(user, "b")
    status, body = srv("POST", "/users/%d/ban" % user, "b", {"duration": "permanent"})
    assert status == 200 and body == {"user": user, "banned": True, "until": None}, (status, body)
    code, _ = await closed_with(c)
    assert code == 4003
    err = [f for f in c.frames if f.get("code") == "banned"]
    assert err and err[0]["until"] is None and err[0]["message"] == "banned permanently", c.frames
    row = user_row(user)
    assert row["status"] == "banned" and row["banned_until"] is None, row
    assert await ws_status("a", token(user)) == 403
    status, _ = srv("DELETE", "/users/%d/ban" % user, "a")
    assert status == 200
    assert user_row(user)["status"] == "active"
    assert await ws_status("a", token(user)) == 101


# --- bad input ---------------------------------------------------------------------

def test_bad_input_gets_clear_errors():
    user = uid()
    room = create_room(user, [user, uid()])
    cases = [
        # path, method, body or raw: (status, code)
        (("GET", "/nothing/here"), (404, "not_found")),
        (("GET", "/rooms/%d/messages" % room), (405, "bad_request")),
        (("PUT", "/users/%d/ban" % user), (405, "bad_request")),
        (("POST", "/rooms/abc/messages", {"body": 1}), (400, "bad_request")),
        (("POST", "/rooms/0/messages", {"body": 1}), (400, "bad_request")),
        (("POST", "/rooms/99999999999999999999999/messages", {"body": 1}), (400, "bad_request")),
        (("POST", "/rooms/%d/messages" % room, None, b"{not json"), (400, "bad_request")),
        (("POST", "/rooms/%d/messages" % room, None, b"[1,2]"), (400, "bad_request")),
        (("POST", "/rooms/%d/messages" % room, None, b'{"body":"\xff\xfe"}'), (400, "bad_request")),
        (("POST", "/rooms/%d/messages" % room, {"text": "no body field"}), (400, "bad_request")),
        (("POST", "/rooms/%d/messages" % room, {"body": "x" * 20000}), (413, "too_large")),
        (("POST", "/users/%d/ban" % user, {"reason": "no duration"}), (400, "bad_request")),
        (("POST", "/users/%d/ban" % user, {"duration": -5}), (400, "bad_request")),
        (("POST", "/users/%d/ban" % user, {"duration": 10 ** 9}), (400, "bad_request")),
        (("POST", "/users/%d/ban" % user, {"duration": 60, "reason": 7}), (400, "bad_request")),
        (("POST", "/users/%d/ban" % user, {"duration": 60, "reason": "r" * 101}), (400, "bad_request")),
        (("POST", "/users/%d/disconnect" % user, None, b"{oops"), (400, "bad_request")),
    ]
    for case, (want_status, want_code) in cases:
        method, path = case[0], case[1]
        body = case[2] if len(case) > 2 else None
        raw = case[3] if len(case) > 3 else None
        status, answer = srv(method, path, "a", body=body, raw=raw)
        assert status == want_status and answer["code"] == want_code, (case, status, answer)
        assert answer["message"], answer

    status, answer = srv("POST", "/rooms/%d/messages" % room, headers={"Idempotency-Key": "has space"},
                         body={"body": 1})
    assert status == 400 and answer["code"] == "bad_request", answer
    # a body over client_max_body_size: nginx's own 413
    status, _ = srv("POST", "/rooms/%d/messages" % room, raw=b'{"body":"' + b"x" * 70000 + b'"}')
    assert status == 413
    # none of it banned the user
    status, state = srv("GET", "/users/%d/ban" % user)
    assert status == 200 and state["banned"] is False, state


# --- key files ------------------------------------------------------------------

def key_file(dirpath, text, mode=0o600):
    path = os.path.join(dirpath, "keys-%d" % uid())
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def test_bad_key_files_are_refused_at_configuration_time():
    secret = "s3cr3t-" + "k" * 20
    cases = [
        (os.path.join(RUN, "no-such-keys"), "failed"),
        (key_file(RUN, "# only a comment\n\n"), "holds no key"),
        (key_file(RUN, secret + "\n", 0o644), "other users cannot read or write"),
        (key_file(RUN, "short\n"), "line 1: a key must be 16 to 256 bytes long"),
        (key_file(RUN, secret + "\nwith space in it 0123456789\n"), "line 2: a key must be printable ASCII"),
    ]
    for path, message in cases:
        rc, out = OwnNginx(["minichat_server_api_key_file %s" % path]).check_config()
        assert rc != 0 and "[emerg]" in out and message in out, (path, out)
        assert secret not in out, out


class KeyNginx(OwnNginx):
    """Node a's configuration with the server API on another key file."""

    def __init__(self, keys):
        super().__init__([])
        self.keys = keys

    def _derive(self):
        text = super()._derive()
        text, n = re.subn(r"(?m)^(\s*)minichat_server_api_key_file .*;$",
                          r"\1minichat_server_api_key_file %s;" % self.keys, text)
        assert n == 1, "no server API location in node a's nginx.conf"
        return text


def ban_get(port, user, key, timeout=15):
    """GET /server/users/<user>/ban on an nginx of the test's own with `key`,
    again while it answers 503 (a fresh worker's Redis, a cluster's slot map
    above all, comes a moment after nginx starts); (status, body)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http_connection(port)
        conn.request("GET", "/server/users/%d/ban" % user, headers={"Authorization": "Bearer " + key})
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
        conn.close()
        if status != 503 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.1)


def test_several_keys_at_once_for_a_rotation():
    old, new = "old-key-" + "o" * 24, "new-key-" + "n" * 24
    path = key_file(RUN, "# rotation: both until the backend moved\n%s\n  %s  \r\n" % (old, new))
    n = KeyNginx(path).start()
    try:
        user = uid()
        for key in (old, new):
            status, body = ban_get(n.port, user, key)
            assert status == 200, (key, status, body)
        status, body = ban_get(n.port, user, old + "x")
        assert status == 401, (status, body)
    finally:
        bad = n.stop()
    assert not bad, bad


def test_metrics_count_answers_by_endpoint_and_status():
    user = uid()
    labels = {"endpoint": "ban_state", "status": "4xx"}
    before = metric("minichat_server_api_requests_total", labels)
    srv("GET", "/users/%d/ban" % user, key="wrong-key-0123456789")
    srv("GET", "/users/%d/ban" % user, key="wrong-key-0123456789")
    assert metric("minichat_server_api_requests_total", labels) >= before + 2
    ok = {"endpoint": "ban_state", "status": "2xx"}
    before = metric("minichat_server_api_requests_total", ok)
    status, _ = srv("GET", "/users/%d/ban" % user)
    assert status == 200
    assert metric("minichat_server_api_requests_total", ok) >= before + 1
