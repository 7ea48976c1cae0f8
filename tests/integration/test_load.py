"""A short load check of the whole message path (part of `make test`).

Ten rooms of six members each, the members spread over nodes a and b, every
third member with a second connection on the other node, and one member of
each room also in the next room (so some connections carry two rooms).  Every
member sends MSGS messages into each of its rooms at once, pipelined (up to
INFLIGHT sends awaiting their ack per connection).  Then:

- every send got exactly one reply, an ack; a room's acks hold the seqs
  1..N, each once;
- every connection of every member received, per room, exactly the messages
  of that room that were not sent on that very connection (so a member's
  other connection does get its own messages), each once, in strictly
  increasing seq order, with sender, cid, body and ts matching the ack;
- the MySQL primary and the replica converge to exactly N rows per room with
  seqs 1..N, matching senders, cids and bodies, and rooms.last_seq == N.

Deterministic in what it checks (the interleaving varies, the verdict must
not); runs in a few seconds.  tests/soak/soak.py is the heavier, manual
version.
"""

import asyncio
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import websockets

from conftest import (SUBPROTOCOL, create_room, query, run_async, token, uid, ws_open, ws_url)

ROOMS = 10
MEMBERS = 6
MSGS = 30            # per member per room
INFLIGHT = 8         # sends awaiting their ack, per connection
ACK_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 10.0
DB_TIMEOUT = 12.0
QUIET = 0.5          # seconds to keep reading after everything arrived (late duplicates)


class Conn:
    """One pipelined connection: a reader task routes replies to futures by id."""

    def __init__(self, ws, user, node, name):
        self.ws = ws
        self.user = user
        self.node = node
        self.name = name
        self.sem = asyncio.Semaphore(INFLIGHT)
        self.next_id = 0
        self.waiting = {}          # id -> future
        self.replied = set()       # ids already answered
        self.msgs = {}             # room -> [msg frames] in arrival order
        self.sent = {}             # room -> set of seqs acked on this connection
        self.problems = []
        self.closed = None
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        try:
            async for raw in self.ws:
                f = json.loads(raw)
                op = f.get("op")
                if op == "msg":
                    self.msgs.setdefault(f["room"], []).append(f)
                elif op == "presence":
                    pass           # members of a user's rooms come and go: not this test's subject
                elif op in ("ack", "error") and "id" in f:
                    fut = self.waiting.pop(f["id"], None)
                    if fut is None:
                        self.problems.append("%s: reply for id %r that awaits none (duplicate?): %r"
                                             % (self.name, f["id"], f))
                    else:
                        self.replied.add(f["id"])
                        fut.set_result(f)
                else:
                    self.problems.append("%s: unexpected frame %r" % (self.name, f))
        except websockets.exceptions.ConnectionClosed as e:
            self.closed = e
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.problems.append("%s: reader failed: %r" % (self.name, e))
            self.closed = e

    async def send(self, room, msg_cid, body):
        async with self.sem:
            self.next_id += 1
            rid = self.next_id
            fut = asyncio.get_running_loop().create_future()
            self.waiting[rid] = fut
            await self.ws.send(json.dumps({"op": "send", "id": rid, "room": room,
                                           "cid": msg_cid, "body": body}))
            try:
                reply = await asyncio.wait_for(fut, ACK_TIMEOUT)
            except asyncio.TimeoutError:
                raise AssertionError("%s: no reply to send id %d (room %d, cid %s) within %.0fs%s"
                                     % (self.name, rid, room, msg_cid, ACK_TIMEOUT,
                                        "; connection closed: %r" % self.closed if self.closed else ""))
        assert reply["op"] == "ack", "%s: send %s in room %d answered %r" % (self.name, msg_cid, room, reply)
        assert reply["room"] == room and reply["cid"] == msg_cid, (self.name, reply)
        assert isinstance(reply["seq"], int) and reply["seq"] > 0, reply
        assert isinstance(reply["ts"], int) and reply["ts"] > 1_600_000_000_000, reply
        self.sent.setdefault(room, set()).add(reply["seq"])
        return reply


async def open_conn(user, node, tok, name):
    ws = await ws_open(ws_url(node, tok), subprotocols=[SUBPROTOCOL], open_timeout=5,
                       close_timeout=2, max_size=2**22, max_queue=None)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert hello.get("op") == "hello" and hello["user"] == user and hello["node"] == node, hello
    return Conn(ws, user, node, name)


def body_for(room, user, i):
    # ASCII, 2-, 3- and 4-byte UTF-8, quotes and backslashes, varying length
    pad = "x" * random.randint(0, 300)
    return 'r%d u%d #%d "q" \\ ü € 😀 %s' % (room, user, i, pad)


def layout():
    """rooms -> member lists; member 0 of room r is also in room r+1."""
    users = [[uid() for _ in range(MEMBERS)] for _ in range(ROOMS)]
    for r in range(1, ROOMS):
        users[r][MEMBERS - 1] = users[r - 1][0]
    return users


def db_rows(rooms, role):
    rows = query("SELECT room_id, seq, sender_id, body, client_msg_id FROM messages WHERE room_id IN (%s) "
                 "ORDER BY room_id, seq" % ",".join(str(r) for r in rooms), role=role)
    out = {r: [] for r in rooms}
    for row in rows:
        out[row["room_id"]].append((row["seq"], row["sender_id"], row["client_msg_id"], row["body"]))
    last = {row["id"]: row["last_seq"] for row in
            query("SELECT id, last_seq FROM rooms WHERE id IN (%s)" % ",".join(str(r) for r in rooms), role=role)}
    return out, last


@run_async
async def test_load_many_rooms_pipelined_both_nodes():
    t_start = time.monotonic()
    members = layout()
    everyone = sorted({u for ms in members for u in ms})
    with ThreadPoolExecutor(8) as pool:
        toks = dict(zip(everyone, pool.map(token, everyone)))
        room_ids = list(pool.map(lambda r: create_room(members[r][0], members[r][1:], node="ab"[r % 2]),
                                 range(ROOMS)))
    rooms_of = {}
    for r, ms in enumerate(members):
        for u in ms:
            rooms_of.setdefault(u, []).append(room_ids[r])

    # every user on one node, every third one on both
    conns_of = {}
    specs = []
    for i, u in enumerate(everyone):
        first = "ab"[i % 2]
        nodes = [first] + ([{"a": "b", "b": "a"}[first]] if i % 3 == 0 else [])
        for n in nodes:
            specs.append((u, n))
    opened = await asyncio.gather(*(open_conn(u, n, toks[u], "user %d on %s" % (u, n)) for u, n in specs))
    for c in opened:
        conns_of.setdefault(c.user, []).append(c)
    conns = opened
    assert any(len(cs) == 2 for cs in conns_of.values())
    assert {c.node for c in conns} == {"a", "b"}

    try:
        # --- everyone sends at once ------------------------------------------------
        sent = {}                      # (room, cid) -> (sender, body, conn)

        async def one(c, room, i):
            msg_cid = "load-%d-%d-%d-%08x" % (room, c.user, i, random.getrandbits(32))
            body = body_for(room, c.user, i)
            sent[(room, msg_cid)] = (c.user, body, c)
            return await c.send(room, msg_cid, body)

        jobs = []
        for u, rs in rooms_of.items():
            cs = conns_of[u]
            for room in rs:
                for i in range(MSGS):
                    jobs.append(one(cs[i % len(cs)], room, i))
        random.shuffle(jobs)
        acks = await asyncio.gather(*jobs)
        t_sent = time.monotonic()

        # --- acks: one per send, dense distinct seqs per room -----------------------
        assert len(acks) == len(sent) == len(jobs)
        by_room = {r: {} for r in room_ids}                  # room -> seq -> (sender, cid, body, ts, conn)
        for a in acks:
            sender, body, c = sent[(a["room"], a["cid"])]
            assert a["seq"] not in by_room[a["room"]], ("seq acked twice", a, by_room[a["room"]][a["seq"]])
            by_room[a["room"]][a["seq"]] = (sender, a["cid"], body, a["ts"], c)
        expect_n = {room_ids[r]: MEMBERS * MSGS for r in range(ROOMS)}
        for room, seqs in by_room.items():
            assert sorted(seqs) == list(range(1, expect_n[room] + 1)), \
                "room %d: acked seqs are not 1..%d: %s" % (room, expect_n[room], sorted(seqs))

        # --- live delivery ------------------------------------------------------------
        want = {}                          # (conn, room) -> [seq, ...] it must receive, in order
        for c in conns:
            for room in rooms_of[c.user]:
                want[(c, room)] = [s for s in sorted(by_room[room]) if by_room[room][s][4] is not c]

        def complete():
            return all(len(c.msgs.get(room, [])) >= len(w) for (c, room), w in want.items())

        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while not complete() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(QUIET)         # late duplicates would land here
        t_delivered = time.monotonic()

        problems = [p for c in conns for p in c.problems]
        for (c, room), w in want.items():
            got = c.msgs.get(room, [])
            seqs = [f["seq"] for f in got]
            if seqs != w:
                missing = sorted(set(w) - set(seqs))
                dups = sorted({s for s in seqs if seqs.count(s) > 1})
                own = sorted(set(seqs) & c.sent.get(room, set()))
                disorder = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a][:5]
                problems.append("%s room %d: got %d msgs, want %d; missing %s; duplicated %s; "
                                "own echoed %s; out of order %s"
                                % (c.name, room, len(seqs), len(w), missing[:20], dups[:20], own[:20], disorder))
                continue
            for f in got:
                sender, msg_cid, body, ts, _ = by_room[room][f["seq"]]
                if (f["from"], f["cid"], f["body"], f["ts"]) != (sender, msg_cid, body, ts):
                    problems.append("%s room %d seq %d: got %r, acked as from=%d cid=%s ts=%d"
                                    % (c.name, room, f["seq"], f, sender, msg_cid, ts))
                    break
        for c in conns:
            stray = set(c.msgs) - set(rooms_of[c.user])
            if stray:
                problems.append("%s: messages of rooms it is not in: %s" % (c.name, sorted(stray)))
            if c.closed is not None:
                problems.append("%s: closed: %r" % (c.name, c.closed))
        # (delivery problems are reported after the MySQL check, so one run shows both)

        # --- MySQL primary and replica ---------------------------------------------
        want_rows = {room: [(s, v[0], v[1], v[2]) for s, v in sorted(seqs.items())]
                     for room, seqs in by_room.items()}
        for role in ("primary", "replica"):
            deadline = time.monotonic() + DB_TIMEOUT
            while True:
                rows, last = db_rows(room_ids, role)
                bad = [room for room in room_ids
                       if rows[room] != want_rows[room] or last.get(room) != expect_n[room]]
                if not bad or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.1)
            if bad:
                room = bad[0]
                have = {r[0]: r for r in rows[room]}
                diff = [(w, have.get(w[0])) for w in want_rows[room] if have.get(w[0]) != w][:5]
                extra = sorted(set(have) - {w[0] for w in want_rows[room]})[:10]
                raise AssertionError("%s: %d rooms did not converge within %.0fs; room %d: %d rows (want %d), "
                                     "last_seq %r (want %d); first differences %r; extra seqs %r"
                                     % (role, len(bad), DB_TIMEOUT, room, len(rows[room]), expect_n[room],
                                        last.get(room), expect_n[room], diff, extra)
                                     + ("\n%d delivery problems too:\n  %s"
                                        % (len(problems), "\n  ".join(problems[:40])) if problems else ""))
        t_db = time.monotonic()
        assert not problems, ("%d delivery problems (MySQL primary and replica are complete):\n  %s"
                              % (len(problems), "\n  ".join(problems[:40])))
        print("load: %d conns, %d sends, acked in %.2fs, delivered +%.2fs (incl. %.1fs quiet), MySQL +%.2fs"
              % (len(conns), len(acks), t_sent - t_start, t_delivered - t_sent, QUIET, t_db - t_delivered))
    finally:
        await asyncio.gather(*(c.ws.close() for c in conns), return_exceptions=True)
        for c in conns:
            c.reader.cancel()
