"""Worker memory per idle authenticated WebSocket connection, plain (ws://)
and over TLS (wss://), on two one-worker nginxes derived from the running
stack's node a (tests/integration/own_nginx.py; the stack must run with
MINICHAT_TLS=1, whose dev certificate the TLS one uses, and the same
MINICHAT_PORT_OFFSET and MINICHAT_RUN).

For each: N connections of N users are opened and each waits for its
hello; then the worker's resident and private memory (/proc/PID/status
VmRSS, /proc/PID/smaps_rollup Private_Clean + Private_Dirty) is read
against what it was before the first one, divided by N.  A measurement,
not a test: it prints numbers and asserts nothing.

    MINICHAT_TLS=1 /usr/bin/python3 bench/tls_memory.py [N]   (default 2000)
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))

from conftest import SUBPROTOCOL, TLS, Client, token, tls_context  # noqa: E402
from own_nginx import OwnNginx  # noqa: E402

import websockets  # noqa: E402


def worker_pid(own):
    with open(own.pid_file) as f:
        master = f.read().strip()
    with open("/proc/%s/task/%s/children" % (master, master)) as f:
        kids = f.read().split()
    assert len(kids) == 1, kids
    return int(kids[0])


def memory_kb(pid):
    """(VmRSS, private) of a process, in KiB."""
    rss = private = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                private += int(line.split()[1])
    return rss, private


async def open_idle(port, tokens, use_tls):
    scheme = "wss" if use_tls else "ws"
    clients = []
    sem = asyncio.Semaphore(50)

    async def one(tok):
        async with sem:
            ws = await websockets.connect("%s://127.0.0.1:%d/ws?token=%s" % (scheme, port, tok),
                                          subprotocols=[SUBPROTOCOL], open_timeout=30, ping_interval=None,
                                          compression=None, ssl=tls_context() if use_tls else None)
            c = Client(ws, 0, "a")
            await c.expect("hello", timeout=30)
            clients.append(c)

    await asyncio.gather(*(one(t) for t in tokens))
    return clients


async def measure(own, tokens, use_tls):
    pid = worker_pid(own)
    before = memory_kb(pid)
    clients = await open_idle(own.port, tokens, use_tls)
    await asyncio.sleep(1)   # pings and presence settle; nothing is asserted on time
    after = memory_kb(pid)
    n = len(clients)
    await asyncio.gather(*(c.ws.close() for c in clients))
    return n, [(a - b) * 1024.0 / n for a, b in zip(after, before)]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    if not TLS:
        sys.exit("tls_memory.py: run the stack with MINICHAT_TLS=1 and export it here too")
    tokens = [token(10**9 + 7 * 10**6 + i) for i in range(n)]
    print("idle authenticated connections, one worker, %d each (bytes per connection)" % n)
    print("%-10s %12s %12s" % ("transport", "VmRSS", "private"))
    for name, plain in (("ws://", True), ("wss://", False)):
        own = OwnNginx([], plain=plain).start()
        try:
            got, (rss, private) = asyncio.run(measure(own, tokens, not plain))
        finally:
            bad = own.stop()
        print("%-10s %12.0f %12.0f%s" % (name, rss, private, "" if not bad else "  (error log: %s)" % bad[:3]))


if __name__ == "__main__":
    main()
