"""The chaos run's check: MySQL against what was acked, listeners against
MySQL, and the table (docs/chaos.md says how to read it).

A check takes each room's seq from Redis (`{r:<room>}:seq`) as its horizon
S, then waits (polling, with a deadline) until the primary holds rows for
seqs 1..S and every listener holds 1..S in order.  What is still missing
at the deadline is counted:

- lost: an ack with seq <= S whose row is absent or holds another cid;
- duplicated: a (sender, cid) stored under more than one seq (the primary
  key makes two rows of one seq impossible), plus acks of one cid that
  named two seqs;
- holes: seqs in 1..S without a row (between 1 and the highest stored
  seq, and between that and Redis's seq);
- undelivered: per listener and room, stored seqs it does not hold, or
  holds with another cid than MySQL's;
- bad resumes: `resumed` replies with `recovered:true` after which the
  listener still missed a seq at or below the reply's `seq` (the server
  said it replayed everything and did not);
- replica: with `replica=True`, rows of the primary (seq <= S) that the
  replica lacks or holds differently.

Everything counts from the start of the run, so a row's numbers include
the rows above it: the first row where a count turns non-zero names the
fault that caused it.
"""

import time

from conftest import query, redis

SYNC_TIMEOUT = 90.0


def room_seq(room):
    out = redis("GET", "{r:%d}:seq" % room)
    return int(out[0]) if out else 0


def stored_rows(room, role="primary"):
    """seq -> (sender, cid) of one room."""
    rows = query("SELECT seq, sender_id, client_msg_id FROM messages WHERE room_id=%s", (room,), role)
    return {r["seq"]: (r["sender_id"], r["client_msg_id"]) for r in rows}


class Result:
    FIELDS = ("sends", "acked", "stored", "lost", "duplicated", "holes", "undelivered", "replica", "bad_resumes")

    def __init__(self, fault):
        self.fault = fault
        for k in self.FIELDS:
            setattr(self, k, 0)
        self.recovery = None      # seconds until every sender was acked again
        self.sync = None          # seconds the check waited for MySQL and listeners
        self.resumes = 0
        self.unrecovered = False
        self.details = []

    def bad(self):
        return (self.lost or self.duplicated or self.holes or self.undelivered or self.replica
                or self.bad_resumes)


def _stored_upto(rooms, horizon):
    """room -> rows when the primary holds every seq 1..S, else None."""
    out = {}
    for room in rooms:
        rows = stored_rows(room)
        if any(s not in rows for s in range(1, horizon[room] + 1)):
            return None
        out[room] = rows
    return out


def _listeners_upto(listeners, horizon):
    return all(lst.rooms[room].last >= s for lst in listeners for room, s in horizon.items())


def check(fault, rooms, ledger, listeners, replica=False, sync_timeout=SYNC_TIMEOUT):
    """One row of the table (blocking: call it from a thread)."""
    res = Result(fault)
    horizon = {room: room_seq(room) for room in rooms}
    t0 = time.monotonic()
    deadline = t0 + sync_timeout
    t_db = t_listeners = None
    while True:
        stored = _stored_upto(rooms, horizon)
        now = time.monotonic()
        if stored is not None and t_db is None:
            t_db = now - t0
        if _listeners_upto(listeners, horizon) and t_listeners is None:
            t_listeners = now - t0
        if t_db is not None and t_listeners is not None:
            break
        if now > deadline:
            stored = {room: stored_rows(room) for room in rooms}
            res.details.append("not caught up within %.0fs" % sync_timeout)
            break
        time.sleep(0.1)
    res.sync = time.monotonic() - t0
    if res.sync > 5:
        res.details.append("slow sync: MySQL had 1..S after %s s, the listeners after %s s"
                           % (_secs(t_db), _secs(t_listeners)))

    res.sends = ledger.sends
    res.acked = ledger.count()
    for room in rooms:
        s = horizon[room]
        rows = stored[room]
        res.stored += len([q for q in rows if q <= s])
        for seq, who in ledger.acked.get(room, {}).items():
            if seq <= s and rows.get(seq) != who:
                res.lost += 1
                res.details.append("room %d seq %d acked as %r, stored %r" % (room, seq, who, rows.get(seq)))
        seen = {}
        for seq, who in rows.items():
            seen.setdefault(who, []).append(seq)
        for who, seqs in seen.items():
            if len(seqs) > 1:
                res.duplicated += len(seqs) - 1
                res.details.append("room %d: %r stored at seqs %s" % (room, who, sorted(seqs)))
        missing = [q for q in range(1, s + 1) if q not in rows]
        res.holes += len(missing)
        if missing:
            res.details.append("room %d: no row for seqs %s (Redis seq %d, highest stored %d)"
                               % (room, _ranges(missing), s, max(rows) if rows else 0))
        for lst in listeners:
            v = lst.rooms[room]
            bad = [q for q in range(1, s + 1) if q in rows and v.got.get(q) != rows[q][1]]
            res.undelivered += len(bad)
            if bad:
                res.details.append("user %d on node %s, room %d: missing or wrong %s (holds 1..%d)"
                                   % (lst.conn.user, lst.conn.node, room, _ranges(bad), v.last))
        if replica:
            _check_replica(res, room, rows, s)
    res.duplicated += len(ledger.conflicts)
    for c in ledger.conflicts:
        res.details.append("room %d: cid %s acked as seq %d and as seq %d" % c)
    res.resumes = sum(v.resumes for lst in listeners for v in lst.rooms.values())
    res.bad_resumes = sum(v.bad_resumes for lst in listeners for v in lst.rooms.values())
    return res


def _check_replica(res, room, rows, s):
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        rep = stored_rows(room, "replica")
        diff = [q for q in range(1, s + 1) if q in rows and rep.get(q) != rows[q]]
        if not diff or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    res.replica += len(diff)
    if diff:
        res.details.append("room %d: replica lacks or differs at %s" % (room, _ranges(diff)))


def _secs(t):
    return "-" if t is None else "%.1f" % t


def _ranges(seqs):
    """'3-5,9' for [3, 4, 5, 9]."""
    out, start, prev = [], None, None
    for q in sorted(seqs):
        if start is None:
            start = prev = q
        elif q == prev + 1:
            prev = q
        else:
            out.append(str(start) if start == prev else "%d-%d" % (start, prev))
            start = prev = q
    if start is not None:
        out.append(str(start) if start == prev else "%d-%d" % (start, prev))
    return ",".join(out[:20]) + (",..." if len(out) > 20 else "")


def table(results):
    """The table of issue 8, one row per check."""
    head = ("fault", "sends", "acked", "stored", "lost", "dup", "holes", "undeliv", "replica", "resumes",
            "bad res", "recovery s", "sync s")
    rows = [head]
    for r in results:
        rows.append((r.fault, r.sends, r.acked, r.stored, r.lost, r.duplicated, r.holes, r.undelivered, r.replica,
                     r.resumes, r.bad_resumes, "-" if r.recovery is None else "%.1f" % r.recovery, "%.1f" % r.sync))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                               for i, c in enumerate(row)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
