"""Steady chat traffic for the chaos run (tests/chaos/chaos.py), written as
a careful client of docs/protocol.md would be:

- A Sender is one user on one node sending to one room at a steady rate,
  one message in flight.  Each message gets a fresh cid and is sent again
  with the SAME cid after `unavailable`, `rate_limited`, a reply timeout or
  a dropped connection (reconnecting with `?sid=` first), until it is acked
  ("What the client must do", 6).  Every ack is recorded as (room, seq,
  cid); an ack that names another seq for a cid already acked is a conflict.
  A give-up sender (`--give-up`) is the client that does not retry: it
  abandons a message at its first failure.
- A Listener is one user on one node, a member of every room, who sends
  nothing.  It keeps per room the last seq it holds in order, parks a msg
  above last + 1, and asks `resume` from `last` for the gap; a msg at or
  below last is a duplicate and dropped (rules 2 and 3).  After a
  disconnect it reconnects with `?sid=` and resumes every room (rule 5);
  a `recovered:false` is filled from `history` pages (rule 4).  A
  `recovered:true` after which a seq at or below the reply's `seq` is
  still missing is counted as a bad resume.  What it
  delivers is therefore in order by construction: the check is that it
  reached every stored seq, with the cid MySQL holds there.

Everything runs on one asyncio loop; each connection has one reader task
that hands replies to whoever waits for their `id`.
"""

import asyncio
import json
import random
import time

import websockets

from conftest import SUBPROTOCOL, token, ws_open, ws_url

REPLY_TIMEOUT = 10.0     # a send or resume with no reply by then is sent again
RETRY_PAUSE = 0.2        # after `unavailable` or a failed connect, at first
RETRY_PAUSE_MAX = 2.0    # ... doubling up to this


class Conn:
    """One WebSocket of one user on one node, reconnecting with ?sid=.
    `on_frame(frame)` sees every frame that is not a reply someone awaits."""

    def __init__(self, user, node, on_frame=None):
        self.user = user
        self.node = node
        self.tok = token(user)
        self.sid = None
        self.ws = None
        self.reader = None
        self.waiters = {}       # request id -> future of the reply
        self.on_frame = on_frame
        self.next_id = 0
        self.connects = 0

    async def open(self):
        """Connect (again), resuming the session when there was one; returns
        once `hello` arrived.  Retries with backoff until it works."""
        pause = RETRY_PAUSE
        while True:
            try:
                extra = "sid=" + self.sid if self.sid else ""
                ws = await ws_open(ws_url(self.node, self.tok, extra), subprotocols=[SUBPROTOCOL],
                                   open_timeout=REPLY_TIMEOUT, close_timeout=2, max_size=2**22,
                                   ping_interval=None)
                hello = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
                if hello.get("op") != "hello":
                    raise ConnectionError("no hello: %r" % (hello,))
                break
            except (OSError, asyncio.TimeoutError, ConnectionError, websockets.exceptions.WebSocketException):
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX)
        self.sid = hello["sid"]
        self.ws = ws
        self.connects += 1
        self.reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws):
        try:
            async for raw in ws:
                frame = json.loads(raw)
                fut = self.waiters.get(frame.get("id")) if frame.get("op") != "msg" else None
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                elif self.on_frame:
                    self.on_frame(frame)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            if self.ws is ws:
                self.ws = None
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))

    def alive(self):
        return self.ws is not None

    async def request(self, obj, timeout=REPLY_TIMEOUT):
        """Send obj with a fresh id; its reply, or None on timeout or a drop."""
        self.next_id += 1
        rid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.waiters[rid] = fut
        try:
            await self.ws.send(json.dumps(dict(obj, id=rid)))
            return await asyncio.wait_for(fut, timeout)
        except (asyncio.TimeoutError, ConnectionError, AttributeError, websockets.exceptions.WebSocketException):
            return None
        finally:
            self.waiters.pop(rid, None)

    async def send_raw(self, obj):
        """Send without waiting; False when the connection is gone."""
        try:
            await self.ws.send(json.dumps(obj))
            return True
        except (AttributeError, websockets.exceptions.WebSocketException):
            return False

    async def close(self):
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


class Ledger:
    """What the senders were told: per room seq -> (sender, cid), every
    message begun, and the conflicts (one cid acked under two seqs)."""

    def __init__(self):
        self.acked = {}          # room -> {seq: (sender, cid)}
        self.by_cid = {}         # (room, sender, cid) -> seq
        self.sends = 0           # messages begun (a retry is not a new one)
        self.attempts = 0        # send frames written, retries included
        self.conflicts = []
        self.refused = []        # replies no retry can fix (bad_request, ...)
        self.abandoned = 0       # messages a give-up sender never got acked

    def ack(self, room, sender, msg_cid, seq):
        key = (room, sender, msg_cid)
        first = self.by_cid.setdefault(key, seq)
        if first != seq:
            self.conflicts.append((room, msg_cid, first, seq))
            return
        self.acked.setdefault(room, {})[seq] = (sender, msg_cid)

    def count(self):
        return sum(len(v) for v in self.acked.values())


class Sender:
    """One user sending to one room at `rate` messages a second.  With
    `give_up`, a client that does not retry: a message that got no ack at
    the first try is abandoned (counted in the ledger) and the next one
    goes out with a new cid."""

    def __init__(self, user, node, room, rate, ledger, give_up=False):
        self.conn = Conn(user, node)
        self.room = room
        self.rate = rate
        self.ledger = ledger
        self.give_up = give_up
        self.stopping = False
        self.task = None
        self.pending = None          # cid of the message not acked yet
        self.last_ack = 0.0          # time.monotonic() of the last ack
        self.last_ack_sent = 0.0     # when the attempt that got it was written

    async def start(self):
        await self.conn.open()
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        n = 0
        while not self.stopping:
            t0 = time.monotonic()
            n += 1
            await self._deliver("c%d-%d-%08x" % (self.conn.user, n, random.getrandbits(32)),
                                "m%d from %d" % (n, self.conn.user))
            await asyncio.sleep(max(0.0, 1.0 / self.rate - (time.monotonic() - t0)))

    async def _deliver(self, msg_cid, body):
        """Send one message until it is acked (or the run gives up on it)."""
        self.pending = msg_cid
        self.ledger.sends += 1
        pause = RETRY_PAUSE
        while True:
            if not self.conn.alive():
                await self.conn.open()
            sent_at = time.monotonic()
            self.ledger.attempts += 1
            r = await self.conn.request({"op": "send", "room": self.room, "cid": msg_cid, "body": body})
            if r is not None and r.get("op") == "ack":
                self.ledger.ack(self.room, self.conn.user, msg_cid, r["seq"])
                self.pending = None
                self.last_ack, self.last_ack_sent = time.monotonic(), sent_at
                return
            if self.give_up:
                self.ledger.abandoned += 1
                self.pending = None
                if r is None and self.conn.alive():
                    await self.conn.close()
                return
            if r is not None and r.get("op") == "error":
                code = r.get("code")
                if code == "rate_limited" and r.get("retry_after_ms"):
                    await asyncio.sleep(r["retry_after_ms"] / 1000.0)
                    continue
                if code not in ("unavailable", "rate_limited"):
                    self.ledger.refused.append((self.room, msg_cid, r))
                    self.pending = None
                    return
            elif r is None and self.conn.alive():
                # no reply in time: maybe a half-dead connection; start over
                await self.conn.close()
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_PAUSE_MAX)

    async def stop(self, timeout):
        """Stop after the message in flight is acked; False if that took
        longer than `timeout` (the message is then left unacked)."""
        self.stopping = True
        done, _ = await asyncio.wait([self.task], timeout=timeout)
        if not done:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.conn.close()
        return bool(done)


class RoomView:
    """A listener's copy of one room."""

    def __init__(self):
        self.last = 0            # every seq 1..last held, in order
        self.got = {}            # seq -> cid, for seqs 1..last
        self.parked = {}         # seq -> cid, above last + 1
        self.resuming = False
        self.resumes = 0
        self.dups = 0
        self.not_recovered = 0
        self.bad_resumes = 0     # recovered:true, and still a gap below its seq


class Listener:
    """One user on one node reading every room, as a client would."""

    def __init__(self, user, node, rooms):
        self.conn = Conn(user, node, self._on_frame)
        self.rooms = {r: RoomView() for r in rooms}
        self.task = None
        self.resumes = set()     # resume tasks in flight (the loop keeps weak references only)
        self.stopping = False

    async def start(self):
        await self.conn.open()
        self.task = asyncio.create_task(self._run())

    def _on_frame(self, f):
        if f.get("op") == "msg" and f.get("room") in self.rooms:
            self._take(self.rooms[f["room"]], f["seq"], f.get("cid"))

    @staticmethod
    def _take(v, seq, msg_cid):
        if seq <= v.last or seq in v.parked:
            v.dups += 1
            return
        v.parked[seq] = msg_cid
        while v.last + 1 in v.parked:
            v.last += 1
            v.got[v.last] = v.parked.pop(v.last)

    async def _run(self):
        """Reconnect after a drop and resume every room; resume a room with a
        gap; a tenth of a second between looks."""
        while not self.stopping:
            if not self.conn.alive():
                await self.conn.open()
                for room in self.rooms:
                    self._spawn(room)
            for room, v in self.rooms.items():
                if v.parked and not v.resuming:
                    self._spawn(room)
            await asyncio.sleep(0.1)

    def _spawn(self, room):
        t = asyncio.create_task(self._resume(room))
        self.resumes.add(t)
        t.add_done_callback(self.resumes.discard)

    async def _resume(self, room):
        """One `resume` of one room from what we hold; history pages when
        the server cannot replay (`recovered:false`)."""
        v = self.rooms[room]
        if v.resuming:
            return
        v.resuming = True
        v.resumes += 1
        try:
            r = await self.conn.request({"op": "resume", "rooms": {str(room): v.last}})
            # the replayed msgs came before the reply, through _on_frame
            if r is None or r.get("op") != "resumed":
                await asyncio.sleep(RETRY_PAUSE)      # unavailable or a drop: the loop asks again
                return
            if not r.get("recovered"):
                v.not_recovered += 1
                await self._page(room, r["seq"])
            elif v.last < r["seq"]:
                # "recovered": every seq up to r["seq"] came before the
                # reply, so none may be missing now
                v.bad_resumes += 1
        finally:
            v.resuming = False

    async def _page(self, room, upto):
        """Fill last+1..upto from history pages, oldest page last."""
        v = self.rooms[room]
        found = []
        before = upto + 1
        while before - 1 > v.last:
            h = await self.conn.request({"op": "history", "room": room, "before": before, "limit": 200})
            if h is None or h.get("op") != "history" or not h.get("messages"):
                return
            found += h["messages"]
            before = min(m["seq"] for m in h["messages"])
        for m in sorted(found, key=lambda m: m["seq"]):
            self._take(v, m["seq"], m.get("cid"))

    async def sync(self):
        """Resume every room once more (what a client does when it comes
        back to a room): a gap right before a quiet spell has no later msg
        to reveal it."""
        await asyncio.gather(*(self._resume(room) for room in self.rooms))

    async def stop(self):
        """Stop at once (a reconnect in progress is abandoned)."""
        self.stopping = True
        for t in [self.task] + list(self.resumes):
            if t is not None:
                t.cancel()
        await asyncio.gather(*[t for t in [self.task] + list(self.resumes) if t is not None],
                             return_exceptions=True)
        await self.conn.close()
