#!/usr/bin/env python3
"""Worker memory per idle authenticated WebSocket connection.

Starts an nginx of its own derived from the running stack's node a (as the
integration tests' OwnNginx does: one worker, no minichat_limit_*, its own
port), with worker_connections raised to take N connections.  Then it opens
N authenticated WebSocket connections (N different users, tokens minted
here with the dev JWT secret), waits until every one has its hello, lets
the connections sit idle (pings answered) for a while, and prints the
worker's memory before and after, divided by N:

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
import subprocess
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
    """OwnNginx with room for n connections (and optionally TLS)."""

    def __init__(self, n, tls_dir=None):
        extra = []
        if tls_dir:
            extra = ["ssl_certificate %s/cert.pem" % tls_dir, "ssl_certificate_key %s/key.pem" % tls_dir]
        super().__init__([], extra=extra)
        self.n = n
        self.tls = tls_dir is not None

    def _derive(self):
        text = super()._derive()
        text = re.sub(r"(?m)^(\s*)worker_connections .*;$", r"\1worker_connections %d;" % (self.n + 1000), text)
        text = re.sub(r"(?m)^worker_rlimit_nofile .*;\n", "", text)
        text = "worker_rlimit_nofile 20000;\n" + text
        if self.tls:
            text = re.sub(r"(?m)^(\s*)listen 127\.0\.0\.1:(\d+);", r"\1listen 127.0.0.1:\2 ssl;", text, count=1)
        return text

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


def make_cert(d):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", os.path.join(d, "key.pem"), "-out", os.path.join(d, "cert.pem")],
                   check=True, capture_output=True, timeout=60)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10000, help="connections (default 10000)")
    ap.add_argument("--idle", type=float, default=12, help="seconds to sit idle before measuring (default 12)")
    ap.add_argument("--tls", action="store_true", help="wss:// through a self-signed certificate")
    args = ap.parse_args()

    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    with open(os.path.join(TOP, "conf", "dev-jwt-secret"), "rb") as f:
        key = f.read().rstrip(b"\r\n ")

    tls_dir = None
    if args.tls:
        import tempfile
        tls_dir = tempfile.mkdtemp(prefix="idle-memory-tls-")
        make_cert(tls_dir)

    ngx = BenchNginx(args.n, tls_dir)
    if args.tls:
        ngx.started = False
        os.makedirs(os.path.join(ngx.dir, "tmp"), exist_ok=True)
        with open(ngx.conf, "w") as f:
            f.write(ngx._derive())
        subprocess.run(["/usr/sbin/nginx", "-p", ngx.dir, "-c", ngx.conf, "-e", ngx.error_log], check=True,
                       timeout=10, capture_output=True)
        ngx.started = True
        await asyncio.sleep(1)
    else:
        ngx.start()
    try:
        pid = ngx.worker()
        base = int.from_bytes(os.urandom(4), "big") % 10**9 + 10**9

        # warm-up: the worker's one-time allocations are not the connections'
        await close_conns(await open_conns(ngx.port, range(base, base + 200), key, args.tls))
        await asyncio.sleep(2)
        pss0, rss0 = memory(pid)

        t0 = time.monotonic()
        conns = await open_conns(ngx.port, range(base + 1000, base + 1000 + args.n), key, args.tls)
        t1 = time.monotonic()
        await asyncio.sleep(args.idle)
        alive = sum(1 for c in conns if not c.closed.done())
        pss1, rss1 = memory(pid)

        print("connections: %d opened in %.1f s, %d still open after %.0f s idle%s"
              % (args.n, t1 - t0, alive, args.idle, " (wss)" if args.tls else ""))
        print("worker Pss: %.1f MiB -> %.1f MiB: %.0f bytes per connection"
              % (pss0 / 2**20, pss1 / 2**20, (pss1 - pss0) / args.n))
        print("worker RSS: %.1f MiB -> %.1f MiB: %.0f bytes per connection"
              % (rss0 / 2**20, rss1 / 2**20, (rss1 - rss0) / args.n))
        await close_conns(conns)
    finally:
        bad = ngx.stop()
        if bad:
            print("error log of the bench nginx:\n" + "\n".join(bad[:20]))


if __name__ == "__main__":
    asyncio.run(main())
