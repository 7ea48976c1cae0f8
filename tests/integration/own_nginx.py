"""An nginx of a test's own, derived from the stack's node a.

Some limits can only be tested with settings the dev stack does not use (a
connection limit per address tight enough to cross in a few upgrades,
`minichat_limit_redis_down closed`, a Redis that is not there).  OwnNginx
takes $MINICHAT_RUN/nginx-a/nginx.conf (the module, the relay-worker a
socket, the JWT secret and, unless told otherwise, the stack's Redis or
Redis Cluster) and changes only: its own directory (pid, logs, temp paths),
its own port, one worker (or `workers`), the `minichat_limit_*` lines (the test's
instead; any other minichat_* directive the test gives replaces the
stack's line of that name), and optionally the Redis directive, more directives of the
test's (`extra`: TLS to Redis, for one) and a second port that speaks
HTTP/2 (`listen ... http2;`: cleartext with prior knowledge, or when the
stack runs TLS, TLS with ALPN h2).  A TLS stack's node a listens with
`ssl`: the derived nginx does too, with the same dev certificate, and
every client here speaks TLS to it (conftest.open_socket, ws_open,
urlopen); on a plain stack `tls` serves TLS on its port anyway, with a
self-signed certificate made by openssl in its directory (get() then
speaks https without checking it).  `listen_params` go on its listen line
(`reuseport` spreads connections over the workers, `sndbuf=8k` makes a
slow reader's queue fill soon).  bench/ratelimit.sh derives its bench
nginx the same way, and bench/idle_memory.py uses this class.

Tests of other directives (minichat_allowed_origins, minichat_jwt_issuer,
...) pass them in the same list: every line goes into the http block, in
place of the node's http-level line of the same directive if it has one
(`minichat_ws_deflate off` replaces the stack's `on`).
check_config() runs `nginx -t` on the derived configuration instead of
starting it, for the range checks of test_config_ranges.py.

stop() quits it gracefully (QUIT), waits for the master to go and returns
the error log's [alert]/[crit]/[emerg] and sanitizer lines, as
scripts/check-logs.sh does for the stack's nodes.  The directory is removed
when the log was clean and kept for a look otherwise.

raw_upgrade() is a WebSocket upgrade request on a plain socket that can
bind a source address: every 127.x.y.z is loopback, so a test has as many
client addresses as it wants (fresh_address()).
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from conftest import (RUN, SUBPROTOCOL, TLS, Client, open_socket, tls_context, token, wait_until, ws_open,
                      ws_url)

NGINX = "/usr/sbin/nginx"
BAD_LINE = re.compile(r"\[(alert|crit|emerg)\]|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                      r"runtime error:")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_address():
    """A random loopback address other than 127.0.0.1 (a client address no
    other test uses, so its per-address limit starts empty)."""
    return "127.%d.%d.%d" % (random.randint(1, 254), random.randint(0, 255), random.randint(1, 254))


class OwnNginx:
    """limits: the minichat_limit_* directives and any other http-level
    directives of the test (strings, without ';').
    redis: "host:port" for minichat_redis instead of the stack's Redis.
    extra: more http-level directives (strings, without ';').
    http2: also listen on h2_port with HTTP/2 (h2c, or h2 by ALPN over TLS).
    tls: serve TLS on port (on a plain stack with a self-signed certificate
    for 127.0.0.1; a TLS stack's own nginx is TLS anyway).
    workers: worker_processes; listen_params: more parameters of the listen
    line (strings)."""

    def __init__(self, limits, redis=None, extra=(), http2=False, tls=False, workers=1, listen_params=()):
        self.limits = limits
        self.workers = workers
        self.listen_params = list(listen_params)
        self.redis = redis
        self.extra = list(extra)
        self.own_cert = tls and not TLS
        self.tls = self.own_cert or TLS
        self.dir = tempfile.mkdtemp(prefix="own-nginx-", dir=RUN)
        if self.own_cert:
            self.extra += ["ssl_certificate %s/cert.pem" % self.dir, "ssl_certificate_key %s/key.pem" % self.dir]
        self.port = free_port()
        self.h2_port = free_port() if http2 else None
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.pid_file = os.path.join(self.dir, "nginx.pid")
        self.error_log = os.path.join(self.dir, "error.log")
        self.started = False

    def _derive(self):
        src_dir = os.path.join(RUN, "nginx-a")
        with open(os.path.join(src_dir, "nginx.conf")) as f:
            text = f.read()
        text = text.replace(src_dir + "/", self.dir + "/")
        text = re.sub(r"(?m)^worker_processes .*$", "worker_processes %d;" % self.workers, text)
        text = re.sub(r"(?m)^(\s*)access_log .*$", r"\1access_log off;", text)
        # node a's listen parameters (" ssl http2" on a TLS stack) are kept
        params = r"\2" + (" ssl" if self.own_cert else "") \
            + "".join(" " + p for p in self.listen_params)
        listen = r"\1listen 127.0.0.1:%d%s;" % (self.port, params)
        if self.h2_port:
            listen += r"\n\1listen 127.0.0.1:%d%s;" % (self.h2_port, " ssl http2" if TLS else " http2")
        text, n = re.subn(r"(?m)^(\s*)listen 127\.0\.0\.1:\d+((?: \w+)*);", listen, text)
        assert n == 1, "node a's nginx.conf has no single listen line"
        text = re.sub(r"(?m)^\s*minichat_limit_\w+ .*;\n", "", text)
        if self.redis:
            text, n = re.subn(r"(?m)^(\s*)minichat_redis(_cluster)? .*;$",
                              r"\1minichat_redis %s;\n\1minichat_redis_connect_timeout 300ms;\n"
                              r"\1minichat_reconnect_interval 200ms;" % self.redis, text)
            assert n == 1, "node a's nginx.conf has no single Redis directive"
        for d in self.limits + self.extra:
            text = re.sub(r"(?m)^    %s .*;\n" % re.escape(d.split()[0]), "", text)
        own = "".join("    %s;\n" % d for d in self.limits + self.extra)
        text, n = re.subn(r"(?m)^(\s*minichat_jwt_secret_file .*;\n)", lambda m: m.group(1) + own, text)
        assert n == 1, "node a's nginx.conf has no minichat_jwt_secret_file line"
        return text

    def start(self):
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        if self.own_cert:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-keyout", os.path.join(self.dir, "key.pem"),
                            "-out", os.path.join(self.dir, "cert.pem")], check=True, capture_output=True,
                           timeout=60)
        with open(self.conf, "w") as f:
            f.write(self._derive())
        subprocess.run([NGINX, "-p", self.dir, "-c", self.conf, "-e", self.error_log], check=True, timeout=10,
                       capture_output=True)
        self.started = True
        wait_until(lambda: self.get("/healthz")[0] == 200, 10, what="the own nginx to answer")
        return self

    def check_config(self):
        """(exit code, output) of `nginx -t` on the derived configuration;
        the directory is removed afterwards."""
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(self._derive())
        try:
            out = subprocess.run([NGINX, "-t", "-p", self.dir, "-c", self.conf, "-e", self.error_log],
                                 timeout=30, capture_output=True, text=True)
            return out.returncode, out.stdout + out.stderr
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self):
        """Quits nginx; returns the error log's bad lines (empty: clean)."""
        if self.started:
            try:
                with open(self.pid_file) as f:
                    os.kill(int(f.read()), signal.SIGQUIT)
            except (OSError, ValueError):
                pass
            wait_until(lambda: not os.path.exists(self.pid_file), 15, what="the own nginx to quit")
            self.started = False
        bad = [line for line in self.log().splitlines() if BAD_LINE.search(line)]
        if not bad:
            shutil.rmtree(self.dir, ignore_errors=True)
        return bad

    def log(self):
        try:
            with open(self.error_log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def url(self, path):
        return "%s://127.0.0.1:%d%s" % ("https" if self.tls else "http", self.port, path)

    def ssl_context(self):
        """A client context for this nginx's certificate: the dev CA's on a
        TLS stack, the self-signed one unchecked (None without TLS)."""
        if self.own_cert:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return tls_context() if self.tls else None

    def get(self, path, tok=None):
        """(status, headers, parsed JSON body or text) of a GET from 127.0.0.1."""
        req = urllib.request.Request(self.url(path))
        if tok:
            req.add_header("Authorization", "Bearer " + tok)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context()) as resp:
                status, headers, text = resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as e:
            status, headers, text = e.code, dict(e.headers), e.read().decode(errors="replace")
        try:
            return status, headers, json.loads(text)
        except ValueError:
            return status, headers, text

    def master_pid(self):
        with open(self.pid_file) as f:
            return int(f.read())


def raw_upgrade(port, user, source=None, timeout=10, tok=None, headers=None):
    """(status, headers, JSON body or None) of a WebSocket upgrade of `user`
    (or of the token `tok`, minted beforehand where a test's timing counts)
    to 127.0.0.1:port, from the source address `source` (127.0.0.1 when
    None), with the extra request `headers` (a dict).  A 101 is closed at
    once."""
    sock = open_socket(port, timeout, source)
    try:
        sock.sendall(("GET /ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n%s\r\n"
                      % (tok or token(user), "".join("%s: %s\r\n" % kv for kv in (headers or {}).items()))).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        resp_headers = dict(line.split(": ", 1) for line in lines[1:])
        if status == 101:
            return status, resp_headers, None
        want = int(resp_headers.get("Content-Length", "0"))
        while len(rest) < want:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        try:
            body = json.loads(rest.decode()) if rest else None
        except ValueError:
            body = None   # nginx's own HTML error page (a 503)
        return status, resp_headers, body
    finally:
        sock.close()


def upgrade_when_ready(port, user, source=None, timeout=15):
    """raw_upgrade until it is not 503 (a fresh worker's Redis connects a
    moment after nginx starts); returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        got = raw_upgrade(port, user, source)
        if got[0] != 503 or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


async def ws_connect(port, user):
    """A chat connection of `user` to the nginx on `port` (an OwnNginx, or
    one a test runs), once its hello came."""
    ws = await ws_open(ws_url(tok=token(user), port=port), subprotocols=[SUBPROTOCOL], open_timeout=5, close_timeout=2)
    c = Client(ws, user, "a")
    c.hello = await c.expect("hello")
    return c
