"""The relay-worker's database requests and ephemeral events, spoken directly
on its unix socket as an nginx worker would (relaylink.py): idempotent room
creation, room state, history pages (and the replica fallback), room-list
cursor pages, room info, invites (a direct room becomes a new group room),
leaves, contacts, and events to the node's workers and the other node."""

import os
import random
import re
import urllib.request

import pytest

from conftest import db, query, uid, wait_until
from relaylink import EVENT, PUBLISH, Link


@pytest.fixture
def link():
    lk = Link("a")
    yield lk
    lk.close()


def insert_messages(room, seqs, sender, replicate=True, kind="text", bodies=None):
    """Message rows written straight to the primary (replicate=False: the
    replica never gets them, as if it lagged); bodies: seq -> body, else a
    short one per seq."""
    conn = db("primary")
    try:
        with conn.cursor() as cur:
            if not replicate:
                cur.execute("SET SESSION sql_log_bin=0")
            for s in seqs:
                cur.execute("INSERT INTO messages (room_id, seq, sender_id, kind, body, client_msg_id, created_at)"
                            " VALUES (%s, %s, %s, %s, %s, %s, FROM_UNIXTIME(%s))",
                            (room, s, sender, kind, bodies[s] if bodies else "body %d 'x\"\\" % s, "c%d" % s,
                             "1732500000.%03d" % s))
    finally:
        conn.close()


def replica_has(room, n):
    return len(query("SELECT seq FROM messages WHERE room_id=%s", (room,), "replica")) == n


# --- create ------------------------------------------------------------------

def test_create_is_idempotent_per_creator_and_key(link):
    u, a, b = uid(), uid(), uid()
    key = "k-%x' OR 1=1 --" % random.getrandbits(32)
    r1 = link.create_room(u, [a, b], title="x'); DROP TABLE rooms; --", key=key)
    assert r1["error"] == "" and r1["id"] > 0 and not r1["existed"], r1
    assert r1["members"] == sorted([u, a, b]), r1
    r2 = link.create_room(u, [a, b], key=key)
    assert r2["error"] == "" and r2["id"] == r1["id"] and r2["existed"], r2
    assert r2["members"] == r1["members"], r2
    # another creator with the same key, and no key at all: new rooms
    r3 = link.create_room(a, [u], key=key)
    assert r3["id"] not in (0, r1["id"]) and not r3["existed"], r3
    r4 = link.create_room(u, [a, b])
    assert r4["id"] not in (0, r1["id"], r3["id"]), r4
    assert query("SELECT title FROM rooms WHERE id=%s", (r1["id"],)) == [{"title": "x'); DROP TABLE rooms; --"}]
    rows = query("SELECT last_message_at FROM room_members WHERE room_id=%s", (r1["id"],))
    assert len(rows) == 3 and all(r["last_message_at"] is not None for r in rows), rows


def test_create_refuses_bad_requests(link):
    u = uid()
    assert link.create_room(u, [uid()], kind="channel")["error"].startswith("bad_request:")
    assert link.create_room(u, [uid(), uid()], kind="direct")["error"].startswith("bad_request:")
    assert link.create_room(u, [uid()], key="k" * 65)["error"].startswith("bad_request:")


# --- room state ----------------------------------------------------------------

def test_room_state(link):
    u, a, b = uid(), uid(), uid()
    room = link.create_room(u, [a, b])["id"]
    st = link.room_state(room)
    assert st == {"error": "", "found": True, "last_seq": 0, "members": sorted([u, a, b]), "left": [],
                  "left_seq": [], "read_user": [], "read_seq": [], "idem_sender": [], "idem_cid": [],
                  "idem_seq": [], "idem_ts": []}, st
    insert_messages(room, [1, 2, 3], u)
    query("UPDATE room_members SET last_read_seq=2 WHERE room_id=%s AND user_id=%s", (room, a))
    assert link.leave(room, b, 3)["error"] == ""
    st = link.room_state(room)
    assert st["found"] and st["last_seq"] == 3, st
    assert st["members"] == sorted([u, a]), st
    assert (st["left"], st["left_seq"]) == ([b], [3]), st
    assert dict(zip(st["read_user"], st["read_seq"])) == {a: 2}, st
    # the latest cids, newest first, so a retried send is recognised after a rebuild
    assert st["idem_seq"] == [3, 2, 1] and st["idem_sender"] == [u, u, u], st
    assert len(st["idem_cid"]) == 3 and all(st["idem_cid"]) and all(t > 0 for t in st["idem_ts"]), st
    st = link.room_state(10**15 + random.randint(0, 10**6))
    assert st["error"] == "" and not st["found"], st


# --- history -------------------------------------------------------------------

def test_history_pages(link):
    u = uid()
    room = link.create_room(u, [uid()])["id"]
    assert link.history(room, 1, 10) == {"error": "", "messages": []}        # empty room, before past the start
    assert link.history(room, 50, 10) == {"error": "", "messages": []}       # empty room
    insert_messages(room, range(1, 8), u)
    insert_messages(room, [8], u, kind="system")
    wait_until(lambda: replica_has(room, 8), what="8 rows on the replica")

    def seqs(before, limit):
        r = link.history(room, before, limit)
        assert r["error"] == "", r
        return [m["seq"] for m in r["messages"]]

    assert seqs(9, 3) == [8, 7, 6]            # first page
    assert seqs(6, 3) == [5, 4, 3]
    assert seqs(3, 3) == [2, 1]               # last page
    assert seqs(2, 3) == [1]
    assert seqs(1, 3) == []                   # before past the start
    assert seqs(100, 3) == [8, 7, 6]          # before past the end
    assert seqs(9, 0) == list(range(8, 0, -1))  # default limit
    m = link.history(room, 9, 2)["messages"]
    assert m[0]["kind"] == "system" and m[1]["kind"] == "text", m
    assert m[1] == {"room": room, "seq": 7, "sender": u, "cid": "c7", "body": "body 7 'x\"\\", "ts": 1732500000007,
                    "recipients": [], "origin_node": "", "origin_conn": 0, "persist_only": False, "kind": "text",
                    "seq_read": 0, "online": False, "last_seen": 0, "members_ver": 0,
                    "recipients_cached": False}, m[1]
    assert link.history(0, 5)["error"].startswith("bad_request:")


def test_history_bodies_of_every_length_come_back_whole(link):
    # the relay-worker fetches a page's columns into slots sized from the
    # page's longest values, and refetches a value longer than its cap (64 KiB)
    u = uid()
    room = link.create_room(u, [uid()])["id"]
    lengths = [0, 1, 63, 64, 65, 100, 4097, 65535, 65536, 70000, 64, 2]
    bodies = {}
    for i, n in enumerate(lengths):
        text = "%d:" % n + "\u00e9\u2713x" * n
        bodies[i + 1] = text.encode()[:n].decode("utf-8", "ignore")
    insert_messages(room, bodies.keys(), u, bodies=bodies)
    wait_until(lambda: replica_has(room, len(lengths)), what="%d rows on the replica" % len(lengths))
    r = link.history(room, len(lengths) + 1, 50)
    assert r["error"] == "", r["error"]
    got = [(m["seq"], m["body"], m["cid"]) for m in r["messages"]]
    want = [(s, bodies[s], "c%d" % s) for s in sorted(bodies, reverse=True)]
    assert [g[0] for g in got] == [w[0] for w in want]
    for g, w in zip(got, want):
        assert g == w, "seq %d: %d bytes back for %d" % (w[0], len(g[1].encode()), len(w[1].encode()))


def test_history_reads_the_primary_when_the_replica_lags(link):
    u = uid()
    room = link.create_room(u, [uid()])["id"]
    insert_messages(room, [1, 2, 3], u)
    wait_until(lambda: replica_has(room, 3), what="3 rows on the replica")
    insert_messages(room, [4, 5], u, replicate=False)   # the replica never sees 4 and 5
    r = link.history(room, 6, 10)
    assert [m["seq"] for m in r["messages"]] == [5, 4, 3, 2, 1], r
    r = link.history(room, 4, 2)                        # the replica's page is whole: it answers
    assert [m["seq"] for m in r["messages"]] == [3, 2], r


def loop_pages(node="a"):
    """relay-worker NODE's minichat_relay_history_loop_pages_total by result."""
    run = os.environ.get("MINICHAT_RUN", os.path.join(os.path.dirname(__file__), "..", "..", ".run"))
    with open(os.path.join(run, "relay-" + node, "relay-worker.conf")) as f:
        listen = [ln.split("=", 1)[1].strip() for ln in f if ln.startswith("http_listen")][-1]
    with urllib.request.urlopen("http://%s/metrics" % listen, timeout=5) as r:
        text = r.read().decode()
    return {m.group(1): int(float(m.group(2))) for m in
            re.finditer(r'^minichat_relay_history_loop_pages_total\{result="(\w+)"\} (\S+)$', text, re.M)}


def test_history_pages_are_read_on_the_main_loop(link):
    # history_on_loop (on by default): once the DB threads' routers have a
    # fresh verdict on the replica and the loop's connection is up, a page the
    # replica has whole is read on the main loop; the answer is the same
    u = uid()
    room = link.create_room(u, [uid()])["id"]
    insert_messages(room, range(1, 6), u)
    wait_until(lambda: replica_has(room, 5), what="5 rows on the replica")
    before = loop_pages()["answered"]

    def page_on_loop():
        r = link.history(room, 6, 3)
        assert r["error"] == "" and [m["seq"] for m in r["messages"]] == [5, 4, 3], r
        assert r["messages"][0]["body"] == "body 5 'x\"\\" and r["messages"][0]["ts"] == 1732500000005, r
        return loop_pages()["answered"] > before

    wait_until(page_on_loop, what="a page answered on the relay-worker's main loop")


# --- room list -----------------------------------------------------------------

def test_rooms_cursor_pages(link):
    u = uid()
    rooms = [link.create_room(u, [uid()], title="r%d" % i)["id"] for i in range(5)]
    # activity: rooms[2] newest, then rooms[0] and rooms[4] at the same time, then rooms[1], rooms[3]
    at = {rooms[2]: "2030-01-01 00:00:03.000", rooms[0]: "2030-01-01 00:00:02.500",
          rooms[4]: "2030-01-01 00:00:02.500", rooms[1]: "2030-01-01 00:00:01.000",
          rooms[3]: "2030-01-01 00:00:00.001"}
    for r, t in at.items():
        query("UPDATE room_members SET last_message_at=%s WHERE room_id=%s AND user_id=%s", (t, r, u))
    want = [rooms[2], max(rooms[0], rooms[4]), min(rooms[0], rooms[4]), rooms[1], rooms[3]]
    wait_until(lambda: len(query("SELECT 1 FROM room_members WHERE user_id=%s AND last_message_at >= '2030-01-01'",
                                 (u,), "replica")) == 5, what="activity on the replica")

    got, cursor, pages = [], None, 0
    while True:
        r = link.rooms(u, 2, cursor)
        assert r["error"] == "", r
        got += [s["id"] for s in r["rooms"]]
        pages += 1
        cursor = r["next_cursor"]
        if not cursor:
            break
        assert len(r["rooms"]) == 2, r
    assert got == want and pages == 3, (got, want, pages)
    first = link.rooms(u)["rooms"]
    assert [s["id"] for s in first] == want
    assert first[0]["title"] == "r2" and first[0]["kind"] == "group" and first[0]["members"] == 2, first[0]
    assert link.rooms(u, 0, "not-a-cursor")["error"].startswith("bad_request:")
    assert link.rooms(uid())["rooms"] == []


# --- room info, invite, leave, contacts ------------------------------------------

def test_room_info(link):
    u, a = uid(), uid()
    room = link.create_room(u, [a], title="info")["id"]
    r = link.room_info(room, a)
    assert r["error"] == "" and r["created_by"] == u and r["created_at"] > 1_600_000_000_000, r
    assert r["room"]["id"] == room and r["room"]["title"] == "info" and r["room"]["members"] == 2, r
    assert sorted(m["user"] for m in r["members"]) == sorted([u, a]), r
    assert link.room_info(room, uid())["error"].startswith("forbidden:")
    assert link.room_info(10**15, u)["error"].startswith("forbidden:")


def test_invite_group_and_rejoin(link):
    u, a, b, c = uid(), uid(), uid(), uid()
    room = link.create_room(u, [a])["id"]
    r = link.invite(room, u, [b, c, a], joined_seq=7)
    assert r["error"] == "" and r["room"] == room and not r["created"], r
    assert r["added"] == sorted([b, c]) and r["members"] == sorted([u, a, b, c]), r
    rows = query("SELECT last_read_seq, joined_seq FROM room_members WHERE room_id=%s AND user_id=%s", (room, b))
    assert rows == [{"last_read_seq": 7, "joined_seq": 7}], rows
    assert link.invite(room, u, [b])["added"] == []
    # a former member comes back
    assert link.leave(room, c, 9)["error"] == ""
    r = link.invite(room, a, [c], joined_seq=12)
    assert r["added"] == [c] and c in r["members"], r
    rows = query("SELECT left_at, left_seq, joined_seq, last_read_seq FROM room_members"
                 " WHERE room_id=%s AND user_id=%s", (room, c))
    assert rows == [{"left_at": None, "left_seq": 0, "joined_seq": 12, "last_read_seq": 12}], rows
    assert link.invite(room, uid(), [uid()])["error"].startswith("forbidden:")
    assert link.invite(10**15, u, [uid()])["error"].startswith("not_found:")


def test_invite_to_direct_makes_a_new_group(link):
    u, a, c = uid(), uid(), uid()
    direct = link.create_room(u, [a], kind="direct", title="dm")["id"]
    r = link.invite(direct, u, [c], joined_seq=3)
    assert r["error"] == "" and r["created"] and r["room"] != direct, r
    assert r["added"] == [c] and r["members"] == sorted([u, a, c]), r
    assert query("SELECT kind FROM rooms WHERE id=%s", (r["room"],)) == [{"kind": "group"}]
    old = query("SELECT user_id FROM room_members WHERE room_id=%s AND left_at IS NULL ORDER BY user_id", (direct,))
    assert [x["user_id"] for x in old] == sorted([u, a]), old
    r = link.invite(direct, u, [a])                      # nobody new: the direct room stays
    assert r["error"] == "" and r["room"] == direct and not r["created"] and r["added"] == [], r


def test_leave(link):
    u, a = uid(), uid()
    room = link.create_room(u, [a])["id"]
    assert link.leave(room, a, 5) == {"error": "", "left_seq": 5}
    assert link.leave(room, a, 5) == {"error": "", "left_seq": 5}       # a repeat
    # a retried leave (a second leave message, another seq) gets the first one back
    assert link.leave(room, a, 6) == {"error": "", "left_seq": 5}
    assert link.leave(room, a, 0) == {"error": "", "left_seq": 5}       # 0: only confirm
    assert link.leave(room, uid(), 5)["error"].startswith("forbidden:")  # never a member
    rows = query("SELECT left_seq, left_at IS NOT NULL AS gone FROM room_members WHERE room_id=%s AND user_id=%s",
                 (room, a))
    assert rows == [{"left_seq": 5, "gone": 1}], rows
    assert link.room_info(room, a)["error"].startswith("forbidden:")


def test_contacts(link):
    u, a, b, c = uid(), uid(), uid(), uid()
    link.create_room(u, [a, b])
    r2 = link.create_room(b, [u, c])["id"]
    wait_until(lambda: sorted(link.contacts(u)["users"]) == sorted([a, b, c]), what="contacts a, b, c")
    assert link.leave(r2, c, 1)["error"] == ""
    wait_until(lambda: sorted(link.contacts(u)["users"]) == sorted([a, b]), what="contacts a, b")
    assert len(link.contacts(u, 1)["users"]) == 1
    assert link.contacts(uid())["users"] == []


# --- events --------------------------------------------------------------------

def test_events_reach_every_worker_of_both_nodes():
    w1, w2, wb = Link("a"), Link("a"), Link("b")
    try:
        u, v = uid(), uid()
        room = random.randint(10**12, 10**13)
        w1.send_message(EVENT, [(1, room), (3, u), (7, [u, v]), (8, "a"), (9, 77), (11, "typing")])
        w1.send_message(EVENT, [(1, 0), (3, u), (7, [v]), (8, "a"), (11, "presence"), (13, True)])
        for w in (w1, w2, wb):
            f = w.wait(lambda f: f[1] == "event" and f[2]["sender"] == u and f[2]["kind"] == "typing")[2]
            assert f["room"] == room and f["seq"] == 0 and f["recipients"] == [u, v], f
            assert f["origin_node"] == "a" and f["origin_conn"] == 77, f
            f = w.wait(lambda f: f[1] == "event" and f[2]["sender"] == u and f[2]["kind"] == "presence")[2]
            assert f["online"] and f["room"] == 0, f
        # and the other way round
        wb.send_message(EVENT, [(1, room), (3, v), (7, [u, v]), (8, "b"), (11, "read"), (12, 42)])
        for w in (w1, w2, wb):
            f = w.wait(lambda f: f[1] == "event" and f[2]["sender"] == v)[2]
            assert f["kind"] == "read" and f["seq_read"] == 42, f
        # an event kind is not a message: never to Kafka
        w1.send_message(PUBLISH, [(1, room), (2, 1), (3, u), (11, "typing")], req_id=9)
        f = w1.wait(lambda f: f[0] == 9)
        assert f[1] == "publish_result" and not f[2]["ok"] and f[2]["error"].startswith("bad_request:"), f
    finally:
        for w in (w1, w2, wb):
            w.close()


def test_system_message_keeps_its_kind_across_nodes():
    wa, wb = Link("a"), Link("b")
    try:
        u = uid()
        room = wa.create_room(u, [uid()])["id"]
        body = '{"event":"leave","user":"%d"}' % u
        wa.send_message(PUBLISH, [(1, room), (2, 1), (3, u), (4, "sys-1"), (5, body), (6, 1732500000000),
                                  (7, [u]), (11, "system")], req_id=5)
        assert wa.wait(lambda f: f[0] == 5)[2]["ok"]
        f = wb.wait(lambda f: f[1] == "deliver" and f[2]["room"] == room)[2]
        assert f["kind"] == "system" and f["seq"] == 1 and f["body"] == body, f
        wait_until(lambda: query("SELECT seq FROM messages WHERE room_id=%s", (room,)), what="the row in MySQL")
    finally:
        wa.close()
        wb.close()


# --- rebuild safety ------------------------------------------------------------

def test_room_state_waits_for_the_consumer(link):
    """An acked message that the consumer has not written yet makes a room
    state answer unavailable (after rebuild_wait_ms), never a stale last_seq."""
    import os
    import signal
    from relaylink import RUN

    with open(os.path.join(RUN, "consumer", "consumer.pid")) as f:
        pid = int(f.read().strip())
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert b"roomlist-consumer" in f.read()
    u = uid()
    room = link.create_room(u, [uid()])["id"]
    os.kill(pid, signal.SIGSTOP)
    try:
        link.send_message(PUBLISH, [(1, room), (2, 1), (3, u), (4, "lag-1"), (5, "hi"), (6, 1732500000000),
                                    (7, [u])], req_id=77)
        assert link.wait(lambda f: f[0] == 77)[2]["ok"]
        st = link.room_state(room)
        assert st["error"] == "unavailable: consumer lagging", st
    finally:
        os.kill(pid, signal.SIGCONT)
    st = wait_until(lambda: (lambda s: s if s["error"] == "" else None)(link.room_state(room)),
                    what="room state once the consumer caught up")
    assert st["found"] and st["last_seq"] == 1, st
