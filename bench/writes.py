"""Write system calls per delivery on the receiving node (a measurement, not
a test): MEMBERS members of one room hold connections to node a; SENDERS
senders on node `--from` (b: deliveries arrive through the relay in batches;
a: through each send's own Redis reply) send MSGS messages each, pipelined.
The nginx workers' send, write and writev calls are counted by `perf stat`
on their syscall tracepoints.  Run against a started dev stack:
    /usr/bin/python3 bench/writes.py [--from a|b] [--members N] [--msgs N]
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from conftest import connect, create_room, token, uid  # noqa: E402


def worker_pids(node):
    run = os.environ.get("MINICHAT_RUN") or os.path.join(os.path.dirname(__file__), "..", "run")
    with open(os.path.join(run, "nginx-%s" % node, "nginx.pid")) as f:
        master = f.read().strip()
    out = subprocess.run(["pgrep", "-P", master], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


SENDS = ("syscalls:sys_enter_sendto", "syscalls:sys_enter_write", "syscalls:sys_enter_writev")


def count_sends(pids):
    """Starts perf counting the workers' send/write/writev calls; the
    returned function stops it and gives the total."""
    out = "/tmp/minichat-writes-%d.perf" % os.getpid()
    cmd = ["perf", "stat", "-x", ",", "-o", out, "-p", ",".join(map(str, pids))]
    for e in SENDS:
        cmd += ["-e", e]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)

    def stop():
        proc.send_signal(2)
        proc.wait(10)
        total = 0
        with open(out) as f:
            for line in f:
                parts = line.split(",")
                if len(parts) > 2 and parts[2] in SENDS:
                    total += int(parts[0])
        os.unlink(out)
        return total
    return stop


async def main(args):
    members = [uid() for _ in range(args.members)]
    senders = [uid() for _ in range(args.senders)]
    room = create_room(senders[0], members + senders[1:])
    # tokens first: minting runs a process, which would stall the event
    # loop (and the pongs of the connections already open)
    toks = {u: token(u) for u in members + senders}
    conns = [await connect(m, "a", toks[m]) for m in members]
    outs = [await connect(s, args.sender_node, toks[s]) for s in senders]
    pids = worker_pids("a")
    await asyncio.sleep(1.0)
    stop = count_sends(pids)
    t0 = time.monotonic()

    async def send_all(c):
        for i in range(args.msgs):
            await c.send({"op": "send", "id": c.next_id(), "room": room, "cid": "w-%d-%d" % (c.user, i),
                          "body": "m%d" % i})
            if i % 20 == 19:
                await asyncio.sleep(0.01)

    async def drain(c, want):
        got = 0
        try:
            while got < want:
                f = await c.recv(timeout=30)
                if f.get("op") == "msg":
                    got += 1
        except Exception as e:  # noqa: BLE001 - counted as short
            print("user %d: %d of %d, then %r" % (c.user, got, want, e), file=sys.stderr)
        return got

    want = args.msgs * args.senders
    results = await asyncio.gather(*[send_all(c) for c in outs], *[drain(c, want) for c in conns])
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.5)
    writes = stop()
    deliveries = sum(r for r in results if r)
    print(json.dumps({"from": args.sender_node, "members": args.members, "messages": want,
                      "deliveries": deliveries, "node_a_writes": writes,
                      "writes_per_delivery": round(writes / max(deliveries, 1), 3),
                      "seconds": round(elapsed, 2)}))
    for c in conns + outs:
        await c.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="sender_node", default="b")
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--msgs", type=int, default=60)
    asyncio.run(main(ap.parse_args()))
