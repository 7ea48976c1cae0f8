#!/usr/bin/python3
"""`make chaos`: faults under steady sends on both nodes, and the proof that
MySQL holds exactly the acked messages and every listener got every stored
message in order (issue 8; docs/chaos.md).

    /usr/bin/python3 tests/chaos/chaos.py [--rooms 3] [--rate 5] [--faults all|NAME,...]

The stack of MINICHAT_RUN / MINICHAT_PORT_OFFSET (and MINICHAT_REDIS,
MINICHAT_TLS) must be running.  Per room, one sender on each node sends
`--rate` messages a second and one listener on each node reads every room
(traffic.py).  Then for each fault in turn (faults.py): inject, hold,
repair, wait until every sender is acked again (the recovery time), let
traffic run `--settle` seconds, and check (audit.py).  At the end the
senders stop once their last message is acked, the listeners resume every
room once, and a last check runs.  Prints the table; exits 1 when any count
of lost, duplicated, holes, undelivered or replica differences is not zero,
or a fault did not recover, 2 on a harness error.

tests/integration/test_chaos_short.py runs the same with fewer faults.
"""

import argparse
import asyncio
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import audit  # noqa: E402
import faults  # noqa: E402
import traffic  # noqa: E402
from conftest import create_room, uid  # noqa: E402

RECOVERY_TIMEOUT = 120.0


class Run:
    def __init__(self, rooms=3, rate=5.0, settle=3.0, give_up=False, log=print):
        self.nrooms = rooms
        self.give_up = give_up
        self.rate = rate
        self.settle = settle
        self.log = log
        self.ledger = traffic.Ledger()
        self.rooms = []
        self.senders = []
        self.listeners = []
        self.results = []

    async def start(self):
        la, lb = uid(), uid()
        for _ in range(self.nrooms):
            sa, sb, sg = uid(), uid(), uid()
            room = await asyncio.to_thread(create_room, sa, [sb, sg, la, lb])
            self.rooms.append(room)
            self.senders += [traffic.Sender(sa, "a", room, self.rate, self.ledger),
                             traffic.Sender(sb, "b", room, self.rate, self.ledger)]
            if self.give_up:
                # one client per room that never retries, on node a
                self.senders.append(traffic.Sender(sg, "a", room, self.rate, self.ledger, give_up=True))
        self.listeners = [traffic.Listener(la, "a", self.rooms), traffic.Listener(lb, "b", self.rooms)]
        for x in self.listeners + self.senders:
            await x.start()
        self.log("chaos: %d rooms %s, %d senders at %g msg/s each, listeners %d (a) and %d (b)"
                 % (len(self.rooms), self.rooms, len(self.senders), self.rate, la, lb))

    async def _recovered(self, since):
        """Seconds from `since` until every sender got an ack for a send it
        wrote after `since`; None after RECOVERY_TIMEOUT."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while time.monotonic() < deadline:
            if all(s.last_ack_sent >= since for s in self.senders if not s.give_up):
                return max(s.last_ack for s in self.senders if not s.give_up) - since
            await asyncio.sleep(0.05)
        return None

    async def _settle(self):
        """Traffic for `settle` seconds more, so that every sender has sent
        after the repair (the check then sees the fault's wake)."""
        await asyncio.sleep(self.settle)

    async def check(self, name, replica=False):
        res = await asyncio.to_thread(audit.check, name, self.rooms, self.ledger, self.listeners, replica)
        self.results.append(res)
        self.log("chaos: %-32s sends %d acked %d stored %d lost %d dup %d holes %d undelivered %d replica %d bad resumes %d"
                 % (name, res.sends, res.acked, res.stored, res.lost, res.duplicated, res.holes,
                    res.undelivered, res.replica, res.bad_resumes))
        for d in res.details[:20]:
            self.log("chaos:     " + d)
        return res

    async def fault(self, f):
        self.log("chaos: fault: %s" % f.name)
        t0 = time.monotonic()
        await asyncio.to_thread(f.inject)
        if f.hold:
            await asyncio.sleep(f.hold)
        await asyncio.to_thread(f.repair)
        # a fault held on purpose is timed from its repair; a kill from the
        # kill, its restart included
        rec = await self._recovered(time.monotonic() if f.hold else t0)
        await self._settle()
        res = await self.check(f.name, replica=isinstance(f, faults.ReplicaLag))
        res.recovery = rec
        if rec is None:
            res.unrecovered = True
            res.details.append("senders not acked again within %.0fs" % RECOVERY_TIMEOUT)
        return res

    async def finish(self):
        """Stop the senders once their message in flight is acked, sync the
        listeners, and check everything."""
        unfinished = 0
        for s in self.senders:
            if not await s.stop(RECOVERY_TIMEOUT):
                unfinished += 1
        for lst in self.listeners:
            await lst.sync()
        res = await self.check("end (senders stopped)", replica=True)
        if unfinished:
            res.details.append("%d senders stopped with a message never acked" % unfinished)
        for lst in self.listeners:
            await lst.stop()
        return res

    def failed(self):
        return any(r.bad() or r.unrecovered for r in self.results) or bool(self.ledger.refused)


async def run(fault_list, rooms, rate, settle, warmup, give_up=False):
    r = Run(rooms, rate, settle, give_up)
    try:
        await r.start()
        await asyncio.sleep(warmup)
        res = await r.check("no fault (warm-up)")
        res.recovery = 0.0
        for f in fault_list:
            try:
                await r.fault(f)
            finally:
                await asyncio.to_thread(f.cleanup)
        await r.finish()
    finally:
        for f in fault_list:
            await asyncio.to_thread(f.cleanup)
    print()
    print(audit.table(r.results))
    print()
    print("attempts %d for %d messages; abandoned %d; refused %d; resumes %d; reconnects %d"
          % (r.ledger.attempts, r.ledger.sends, r.ledger.abandoned, len(r.ledger.refused),
             r.results[-1].resumes, sum(x.conn.connects - 1 for x in r.senders + r.listeners)))
    for x in r.ledger.refused[:10]:
        print("refused: room %d cid %s: %r" % x)
    return r


def pick(names):
    every = {f.name: f for f in faults.full_sequence()}
    if names == "all":
        return list(every.values())
    out = []
    for n in names.split(","):
        hits = [f for k, f in every.items() if n.strip() in k]
        if not hits:
            sys.exit("chaos: no fault matches %r; faults: %s" % (n, ", ".join(every)))
        out += hits
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, default=3)
    ap.add_argument("--rate", type=float, default=5.0, help="messages a second per sender (2 senders a room)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of traffic after each recovery")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--faults", default="all", help="all, or parts of fault names, comma-separated")
    ap.add_argument("--give-up", action="store_true",
                    help="add per room a sender on node a that never retries (abandons a failed send)")
    a = ap.parse_args()
    try:
        r = asyncio.run(run(pick(a.faults), a.rooms, a.rate, a.settle, a.warmup, a.give_up))
    except Exception as e:  # noqa: BLE001 - a harness failure, not a finding
        print("chaos: harness error: %r" % (e,), file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if r.failed() else 0)


if __name__ == "__main__":
    main()
