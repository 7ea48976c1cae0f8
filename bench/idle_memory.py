#!/usr/bin/env python3
"""Worker memory per idle authenticated WebSocket connection.

Starts an nginx of its own derived from the running stack's node a (as the
integration tests' OwnNginx does: one worker, no minichat_limit_*, its own
port), with worker_connections raised to take N connections.  Then it opens
N authenticated WebSocket connections (N different users, tokens minted
here with the dev JWT secret), waits until every one has its hello, lets
the connections sit idle (pings answered) for a while, and prints the
worker's memory at 0, N/5 and N connections, and the growth per connection
from 0 to N and from N/5 to N (the slope, free of what the warm-up left in
the heap):

  Pss  from /proc/PID/smaps_rollup (private pages plus a share of shared)
  RSS  from the same file

The "before" figure is taken after a warm-up of a few connections opened
and closed, so that the worker's one-time allocations (Redis scripts,
the registry's buckets, hiredis buffers) are not charged to the connections.

Usage (the stack must be running: scripts/stack.sh start):
  python3 bench/idle_memory.py [-n 10000] [--idle 12] [--tls]

--tls serves wss:// from a self-signed certificate made with openssl, to
show what OpenSSL adds per connection.  This prints numbers; it asserts
nothing about them.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import ssl
import sys
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))

from own_nginx import OwnNginx  # noqa: E402


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def mint(user, key):
    """An HS256 JWT like build/bin/minichat-token's (sub, exp in a day)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps({"sub": str(user), "exp": int(time.time()) + 86400}, separators=(",", ":")).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


class BenchNginx(OwnNginx):
    """OwnNginx with room for n connections."""

    def __init__(self, n, tls=False):
        super().__init__([], tls=tls)
        self.n = n

    def _derive(self):
        text = super()._derive()
        text = re.sub(r"(?m)^(\s*)worker_connections .*;$", r"\1worker_connections %d;" % (self.n + 1000), text)
        text = re.sub(r"(?m)^worker_rlimit_nofile .*;\n", "", text)
        return "worker_rlimit_nofile 20000;\n" + text

    def worker(self):
        with open(self.pid_file) as f:
            master = int(f.read())
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                return int(pid)
        raise RuntimeError("no worker of nginx %d" % master)


def memory(pid):
    """(Pss, Rss) in bytes of a process."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            m = re.match(r"(Pss|Rss):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2)) * 1024
    return out["Pss"], out["Rss"]


class Conn(asyncio.Protocol):
    """One client: sends the upgrade, waits for hello, answers pings."""

    def __init__(self, request, hello):
        self.request = request
        self.hello = hello
        self.buf = b""
        self.upgraded = False
        self.transport = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.fail(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                return
            self.upgraded = True
            self.buf = rest
        while len(self.buf) >= 2:
            op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
            hl = 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, hl = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, hl = int.from_bytes(self.buf[2:10], "big"), 10
            if len(self.buf) < hl + n:
                return
            payload, self.buf = self.buf[hl:hl + n], self.buf[hl + n:]
            if op == 0x9:
                # a pong with a zero mask echoes the ping's payload
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif op == 0x1 and not self.hello.done() and b'"op":"hello"' in payload:
                self.hello.set_result(True)
            elif op == 0x8:
                self.fail("closed by the server: %r" % payload[:40])

    def fail(self, why):
        if not self.hello.done():
            self.hello.set_exception(RuntimeError(why))
        self.transport.close()

    def connection_lost(self, exc):
        if not self.hello.done():
            self.hello.set_exception(RuntimeError("connection lost: %r" % exc))
        if not self.closed.done():
            self.closed.set_result(True)


async def open_conns(port, users, key, tls, parallel=200):
    loop = asyncio.get_running_loop()
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(parallel)
    conns = []

    async def one(user):
        req = ("GET /ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: minichat.v1\r\n\r\n" % mint(user, key)).encode()
        async with sem:
            hello = loop.create_future()
            _, proto = await loop.create_connection(lambda: Conn(req, hello), "127.0.0.1", port, ssl=ctx)
            conns.append(proto)
            await asyncio.wait_for(hello, 60)

    await asyncio.gather(*(one(u) for u in users))
    return conns


async def close_conns(conns):
    for c in conns:
        c.transport.close()
    await asyncio.gather(*(c.closed for c in conns))


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10000, help="connections (default 10000)")
    ap.add_argument("--idle", type=float, default=12, help="seconds to sit idle before measuring (default 12)")
    ap.add_argument("--tls", action="store_true", help="wss:// through a self-signed certificate")
    args = ap.parse_args()

    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    with open(os.path.join(TOP, "conf", "dev-jwt-secret"), "rb") as f:
        key = f.read().rstrip(b"\r\n ")

    ngx = BenchNginx(args.n, tls=args.tls).start()
    try:
        pid = ngx.worker()
        base = int.from_bytes(os.urandom(4), "big") % 10**9 + 10**9

        # warm-up: the worker's one-time allocations are not the connections'
        await close_conns(await open_conns(ngx.port, range(base, base + 200), key, args.tls))
        await asyncio.sleep(2)
        pss0, rss0 = memory(pid)

        # two steps, so that the slope between them is free of whatever the
        # warm-up left in the heap
        first = args.n // 5
        t0 = time.monotonic()
        conns = await open_conns(ngx.port, range(base + 1000, base + 1000 + first), key, args.tls)
        await asyncio.sleep(args.idle)
        pss1, rss1 = memory(pid)
        t1 = time.monotonic()
        conns += await open_conns(ngx.port, range(base + 1000 + first, base + 1000 + args.n), key, args.tls)
        t2 = time.monotonic()
        await asyncio.sleep(args.idle)
        alive = sum(1 for c in conns if not c.closed.done())
        pss2, rss2 = memory(pid)

        print("connections: %d opened in %.1f s, %d still open after %.0f s idle%s"
              % (args.n, (t2 - t1) + (t1 - t0 - args.idle), alive, args.idle, " (wss)" if args.tls else ""))
        for name, m0, m1, m2 in (("Pss", pss0, pss1, pss2), ("RSS", rss0, rss1, rss2)):
            print("worker %s: %.1f MiB at 0, %.1f MiB at %d, %.1f MiB at %d connections: %.0f bytes per connection"
                  " (0 to %d), %.0f (%d to %d)"
                  % (name, m0 / 2**20, m1 / 2**20, first, m2 / 2**20, args.n, (m2 - m0) / args.n, args.n,
                     (m2 - m1) / (args.n - first), first, args.n))
        await close_conns(conns)
    finally:
        bad = ngx.stop()
        if bad:
            print("error log of the bench nginx:\n" + "\n".join(bad[:20]))


if __name__ == "__main__":
    asyncio.run(main())
