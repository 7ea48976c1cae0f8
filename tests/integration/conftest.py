"""Helpers for MiniChat's integration tests.

The tests run against the local stack that `make test-integration` starts
(scripts/stack.sh): nginx nodes a and b, relay-workers, the roomlist-consumer,
Redis, MariaDB primary + replica and Kafka, all on 127.0.0.1.  The stack keeps
its data across runs, so every test makes up fresh random user ids.

MINICHAT_PORT_OFFSET (and MINICHAT_RUN) select a second stack, as in
scripts/stack.sh.  Everything waits by polling with a deadline, never by
sleeping a fixed time.

MINICHAT_TLS=1 says that the stack's nginx nodes speak TLS only (make
test's cluster pass, `make run TLS=1`): every client here then speaks
wss:// and https:// and trusts only the stack's dev CA
($MINICHAT_RUN/tls/ca.crt), checking the certificate against 127.0.0.1.
Tests reach the nodes through ws_url(), ws_open(), http_url(), urlopen()
and open_socket() (raw sockets, wrapped in TLS in that mode), never with a
scheme of their own.
"""

import asyncio
import functools
import http.client
import json
import os
import random
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pymysql
import pytest
import websockets

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OFF = int(os.environ.get("MINICHAT_PORT_OFFSET", "0"))
NGINX_PORTS = {"a": 8080 + OFF, "b": 8081 + OFF}
MYSQL_PORTS = {"primary": 13306 + OFF, "replica": 13307 + OFF}
REDIS_PORT = 16379 + OFF
# single, or cluster (scripts/stack.sh with MINICHAT_REDIS=cluster: six nodes,
# three masters, from 17000 + OFF)
REDIS_MODE = os.environ.get("MINICHAT_REDIS", "single")
CLUSTER_PORTS = [17000 + OFF + i for i in range(6)]
TOKEN_BIN = os.path.join(TOP, "build", "bin", "minichat-token")
SECRET_FILE = os.path.join(TOP, "conf", "dev-jwt-secret")
SUBPROTOCOL = "minichat.v1"
RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))
TLS = os.environ.get("MINICHAT_TLS", "0") == "1"
CA_FILE = os.path.join(RUN, "tls", "ca.crt")
HTTP_SCHEME, WS_SCHEME = ("https", "wss") if TLS else ("http", "ws")

WAIT_TIMEOUT = 20.0      # seconds for anything eventually consistent
FRAME_TIMEOUT = 5.0      # seconds for one expected frame


KAFKA_PORT = 19092 + OFF   # the stack's plaintext listener


def kafka_tool(cls, *args):
    """The command line of one of Kafka's Java tools (the stack's jars, e.g.
    org.apache.kafka.tools.TopicCommand) against the stack's broker."""
    log4j = os.path.join(RUN, "kafka", "tools-log4j2.properties")
    cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
    if os.path.exists(log4j):
        cmd.append("-Dlog4j2.configurationFile=" + log4j)
    return cmd + ["-cp", os.path.join(TOP, ".cache", "kafka", "libs", "*"), cls,
                  "--bootstrap-server", "127.0.0.1:%d" % KAFKA_PORT] + list(args)


# --- ids, tokens, polling ----------------------------------------------------

def uid():
    """A fresh user id; the stack's data outlives test runs."""
    return random.randint(10**6, 10**9)


def cid():
    """A fresh client message id."""
    return "t-%016x" % random.getrandbits(64)


def token(user, ttl=None, iss=None, aud=None):
    """A valid JWT for `user`, minted by build/bin/minichat-token (valid a
    day, or `ttl` seconds; with `iss` and `aud` claims when given)."""
    args = [TOKEN_BIN, "--secret-file", SECRET_FILE]
    for opt, val in (("--ttl", ttl), ("--iss", iss), ("--aud", aud)):
        if val is not None:
            args += [opt, str(val)]
    out = subprocess.run(args + [str(user)], check=True, capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


def wait_until(fn, timeout=WAIT_TIMEOUT, interval=0.05, what=None):
    """Call fn() until it returns something truthy; return that value.

    Fails the test with `what` (or fn's name) and the last value or exception
    when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling, report the last one
            last = e
        if time.monotonic() >= deadline:
            pytest.fail("timed out after %.0fs waiting for %s (last: %r)"
                        % (timeout, what or getattr(fn, "__name__", "condition"), last))
        time.sleep(interval)


def in_a_row(fn, n=8):
    """A predicate that holds once fn() held n times in a row (answers from
    every worker, most likely)."""
    seen = [0]

    def check():
        seen[0] = seen[0] + 1 if fn() else 0
        return seen[0] >= n
    return check


def run_async(fn):
    """Run an `async def test_...` with asyncio.run (no pytest-asyncio here)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 120))
    return wrapper


# --- transport: plain or TLS ------------------------------------------------

def tls_context(alpn=None):
    """A client context that trusts only the dev CA and checks the host
    name; `alpn`: the protocols to offer (none by default).  One context
    per offer, kept: a session it saw can be resumed through it."""
    return _tls_context(tuple(alpn) if alpn else ())


@functools.lru_cache(maxsize=None)
def _tls_context(alpn):
    ctx = ssl.create_default_context(cafile=CA_FILE)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def open_socket(port, timeout, source=None, alpn=None, rcvbuf=None):
    """A TCP connection to 127.0.0.1:port (from the address `source` when
    given; with SO_RCVBUF `rcvbuf`, set before connecting so that it shapes
    the window), in TLS with the dev CA's certificate checked when the stack
    speaks TLS."""
    if rcvbuf:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            if source:
                sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
    if not TLS:
        return sock
    try:
        return tls_context(alpn).wrap_socket(sock, server_hostname="127.0.0.1")
    except BaseException:
        sock.close()
        raise


def http_url(port, path):
    return "%s://127.0.0.1:%d%s" % (HTTP_SCHEME, port, path)


def http_connection(port, timeout=10):
    """An http.client connection to 127.0.0.1:port (HTTPS with the dev CA in
    TLS mode), for tests that keep one alive across requests."""
    if TLS:
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls_context())
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def urlopen(req, timeout):
    """urllib.request.urlopen, trusting the dev CA in TLS mode."""
    return urllib.request.urlopen(req, timeout=timeout, context=tls_context() if TLS else None)


def ws_open(url, **kwargs):
    """websockets.connect (awaitable, or an async context manager), with the
    dev CA trusted for a wss:// URL."""
    if url.startswith("wss:"):
        kwargs.setdefault("ssl", tls_context())
    return websockets.connect(url, **kwargs)


# --- WebSocket client --------------------------------------------------------

def ws_url(node="a", tok=None, extra="", port=None):
    """The chat URL of node a or b (or of the nginx on `port`)."""
    url = "%s://127.0.0.1:%d/ws" % (WS_SCHEME, port or NGINX_PORTS[node])
    if tok is not None:
        url += "?token=" + tok
        if extra:
            url += "&" + extra
    elif extra:
        url += "?" + extra
    return url


class Client:
    """One WebSocket connection speaking minichat.v1.

    Every received frame is kept in `frames`; `expect` hands out frames that
    no earlier `expect` returned, so frames of other kinds (presence, typing,
    ...) that arrive in between do not disturb a test."""

    def __init__(self, ws, user, node):
        self.ws = ws
        self.user = user
        self.node = node
        self.frames = []       # everything received, in order
        self.pending = []      # received and not yet returned by expect()
        self.hello = None
        self._next_id = 1

    def next_id(self):
        self._next_id += 1
        return self._next_id

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def recv(self, timeout=FRAME_TIMEOUT):
        """Read one frame (a JSON text frame) and record it."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), "expected a text frame, got %r" % (raw[:100],)
        frame = json.loads(raw)
        assert isinstance(frame, dict) and "op" in frame, frame
        self.frames.append(frame)
        self.pending.append(frame)
        return frame

    @staticmethod
    def _match(frame, op, fields):
        return frame.get("op") == op and all(frame.get(k) == v for k, v in fields.items())

    async def expect(self, op, timeout=FRAME_TIMEOUT, **fields):
        """The next not-yet-taken frame with this op and these field values."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i, f in enumerate(self.pending):
                if self._match(f, op, fields):
                    del self.pending[i]
                    return f
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError("user %d on node %s: no %s frame matching %r within %.1fs; got %s"
                                     % (self.user, self.node, op, fields, timeout, self.frames[-10:]))
            try:
                await self.recv(timeout=left)
            except asyncio.TimeoutError:
                pass

    async def request(self, obj, timeout=FRAME_TIMEOUT):
        """Send a request with a fresh id; return the reply (ack or error) carrying it."""
        obj = dict(obj)
        obj.setdefault("id", self.next_id())
        await self.send(obj)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i, f in enumerate(self.pending):
                if f.get("id") == obj["id"] and f.get("op") in ("ack", "error", "ok", "resumed", obj.get("op")):
                    del self.pending[i]
                    return f
                if f.get("op") == "error" and f.get("id") is None:
                    del self.pending[i]
                    return f
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError("user %d: no reply to %r within %.1fs; got %s"
                                     % (self.user, obj, timeout, self.frames[-10:]))
            try:
                await self.recv(timeout=left)
            except asyncio.TimeoutError:
                pass

    async def send_msg(self, room, body, msg_cid=None, **extra):
        """Send a chat message; return the reply (an ack or an error)."""
        req = {"op": "send", "room": room, "cid": msg_cid or cid(), "body": body}
        req.update(extra)
        return await self.request(req)

    async def collect(self, op, until, timeout=WAIT_TIMEOUT, **fields):
        """Frames with this op (and fields), in arrival order, until until(frames) holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        got = []
        while True:
            keep = []
            for f in self.pending:
                (got if self._match(f, op, fields) else keep).append(f)
            self.pending = keep
            if until(got):
                return got
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError("user %d: condition not met within %.1fs; %s frames so far: %s"
                                     % (self.user, timeout, op, got[-20:]))
            try:
                await self.recv(timeout=left)
            except asyncio.TimeoutError:
                pass

    async def close(self):
        await self.ws.close()


async def connect(user, node="a", tok=None, check_hello=True):
    """Connect `user` to node a or b; wait for and check the hello frame."""
    ws = await ws_open(ws_url(node, tok if tok is not None else token(user)),
                       subprotocols=[SUBPROTOCOL], open_timeout=FRAME_TIMEOUT,
                       close_timeout=2, max_size=2**22)
    c = Client(ws, user, node)
    if check_hello:
        assert ws.subprotocol == SUBPROTOCOL, ws.subprotocol
        c.hello = await c.expect("hello")
        assert c.hello["user"] == user, c.hello
        assert c.hello["node"] == node, c.hello
        assert isinstance(c.hello["sid"], str) and c.hello["sid"], c.hello
    return c


async def ws_status(node="a", tok=None, extra="", headers=None):
    """The HTTP status of a /ws upgrade that is expected to be refused (101 if accepted)."""
    try:
        ws = await ws_open(ws_url(node, tok, extra), subprotocols=[SUBPROTOCOL],
                           open_timeout=FRAME_TIMEOUT, extra_headers=headers or {})
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    return 101


# --- REST --------------------------------------------------------------------

def rest(method, path, node="a", tok=None, body=None, raw=None, headers=None, timeout=10):
    """(status, parsed JSON body or text) of a REST call to node a or b."""
    url = http_url(NGINX_PORTS[node], path)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if tok is not None:
        req.add_header("Authorization", "Bearer " + tok)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urlopen(req, timeout) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def create_room(creator, members, node="a", kind="group", title="t"):
    """Create a room through REST as `creator`; return its id."""
    status, body = rest("POST", "/api/rooms", node, token(creator),
                        {"kind": kind, "title": title, "members": members})
    assert status == 201, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("id"), int) and body["id"] > 0, body
    return body["id"]


# --- MySQL and Redis ---------------------------------------------------------

def db(role="primary"):
    """A connection to the primary or the replica (root, no password, db minichat)."""
    return pymysql.connect(host="127.0.0.1", port=MYSQL_PORTS[role], user="root", password="",
                           database="minichat", autocommit=True, connect_timeout=5,
                           cursorclass=pymysql.cursors.DictCursor, charset="utf8mb4")


def query(sql, args=None, role="primary"):
    """All rows of one query, as dicts (a fresh connection: no stale snapshot)."""
    conn = db(role)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def _redis_cli(port, args, follow=False):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--raw"] + (["-c"] if follow else [])
                         + [str(a) for a in args],
                         check=True, capture_output=True, text=True, timeout=10)
    return [line for line in out.stdout.splitlines() if line != ""]


def cluster_masters():
    """The ports of the cluster's masters that answer, as they see themselves now."""
    masters = []
    for port in CLUSTER_PORTS:
        try:
            if _redis_cli(port, ["ROLE"])[:1] == ["master"]:
                masters.append(port)
        except subprocess.SubprocessError:
            pass
    return masters


# commands about a node rather than a key: on a cluster they go to every master
_EVERY_MASTER = {"FLUSHALL", "FLUSHDB", "KEYS", "CLIENT", "SCRIPT"}


def redis(*args):
    """One redis-cli command against the stack's Redis (on a cluster: to the
    key's master, or to every master for FLUSHALL, KEYS, CLIENT, SCRIPT);
    its output lines."""
    if REDIS_MODE != "cluster":
        return _redis_cli(REDIS_PORT, args)
    if str(args[0]).upper() in _EVERY_MASTER:
        out = []
        for port in cluster_masters():
            out += _redis_cli(port, args)
        return out
    masters = cluster_masters()
    return _redis_cli(masters[0] if masters else CLUSTER_PORTS[0], args, follow=True)


# --- session check -----------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "redis_args(*args): extra redis-server arguments for own_stack")
    config.addinivalue_line("markers", "nginx_extra(text): extra directives for own_stack's nginx")


@pytest.fixture(scope="session", autouse=True)
def stack_is_up():
    """Fail fast, with a hint, when the stack is not running."""
    for node, port in NGINX_PORTS.items():
        try:
            with urlopen(http_url(port, "/healthz"), 3) as r:
                assert r.status == 200
        except Exception as e:  # noqa: BLE001
            pytest.exit("nginx node %s on %s is not up (%s); run `MINICHAT_TLS=%d bash scripts/stack.sh start`"
                        % (node, http_url(port, ""), e, TLS), returncode=3)
    if not os.access(TOKEN_BIN, os.X_OK):
        pytest.exit("%s missing; run `make`" % TOKEN_BIN, returncode=3)
    yield
