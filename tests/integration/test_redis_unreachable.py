"""A Redis that accepts no connection: sends fail fast with `unavailable`,
and service comes back by itself once Redis does.

Self-contained: the test runs its own redis-server and its own nginx (one
worker, the stack's module, connected to relay-worker a), so it can take
Redis away without touching the stack.  "Accepts no connection" is a
listening socket that never accepts, with its backlog full: the kernel drops
further SYNs, so the module's connect neither completes nor fails (this box
has no iptables to make a port drop SYNs; the socket is the same for the
client).  Without a connect timeout the worker would sit "connecting" for the
kernel's SYN retries, about two minutes."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import websockets

from conftest import (OFF, SECRET_FILE, SUBPROTOCOL, TOP, cid, create_room, run_async, token, uid,
                      wait_until, ws_open, ws_url)
from own_nginx import ws_connect

RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))
MODULE = os.path.join(TOP, "build", "nginx", "ngx_http_minichat_module.so")
CONNECT_TIMEOUT_MS = 300

NGINX_CONF = """
load_module %(module)s;
# as the stack's nginx: workers must reach the relay socket under the run
# directory, which may sit in a 0700 temporary directory (a CI clone)
user root;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log info;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    minichat_node a;
    minichat_redis 127.0.0.1:%(redis_port)d;
    minichat_redis_connect_timeout %(connect_timeout)dms;
    minichat_reconnect_interval 200ms;
    minichat_relay unix:%(relay_sock)s;
    %(extra)s
    minichat_jwt_secret_file %(secret)s;
    server {
        listen 127.0.0.1:%(port)d;
        location = /ws { minichat_ws; }
        location /api/ { minichat_api; }
    }
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Blackhole:
    """A listener on `port` that never accepts, its backlog filled."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(0)
        self.fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            self.fillers.append(c)

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


@pytest.fixture
def own_stack(request):
    """Our own redis-server (extra arguments from the test's `redis_args`
    mark) and nginx (extra directives from `nginx_extra`)."""
    if os.environ.get("MINICHAT_REDIS") == "cluster":
        pytest.skip("single-Redis test; it runs in the single-mode pass")
    m = request.node.get_closest_marker("redis_args")
    redis_args = list(m.args) if m else []
    m = request.node.get_closest_marker("nginx_extra")
    d = tempfile.mkdtemp(prefix="mc-unreach-", dir=RUN)
    extra = (m.args[0] % {"dir": d}) if m else ""
    rport, nport = free_port(), free_port()
    rdir = os.path.join(d, "redis")
    os.makedirs(rdir)
    redis_cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
                 "--appendonly", "yes", "--dir", rdir, "--daemonize", "no"] + redis_args
    procs = {"redis": subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
    state = {"dir": d, "redis_port": rport, "port": nport, "procs": procs, "redis_cmd": redis_cmd}
    state["write_conf"] = lambda extra: _write_conf(state, extra)
    state["write_conf"](extra)
    subprocess.run(["/usr/sbin/nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
                    os.path.join(d, "error.log")], check=True, timeout=10)
    try:
        yield state
    finally:
        with open(os.path.join(d, "nginx.pid")) as f:
            master = int(f.read())
        os.kill(master, signal.SIGQUIT)
        wait_until(lambda: not os.path.exists(os.path.join(d, "nginx.pid")), 15, what="nginx to quit")
        for p in state["procs"].values():
            p.kill()
            p.wait()
        with open(os.path.join(d, "error.log")) as f:
            log = f.read()
        bad = [l for l in log.splitlines() if "[alert]" in l or "[crit]" in l or "[emerg]" in l]
        shutil.rmtree(d, ignore_errors=True)
        assert not bad, bad


def _write_conf(state, extra):
    d = state["dir"]
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % {"module": MODULE, "dir": d, "redis_port": state["redis_port"],
                              "port": state["port"], "relay_sock": os.path.join(RUN, "relay-a", "relay.sock"),
                              "secret": SECRET_FILE, "connect_timeout": CONNECT_TIMEOUT_MS, "extra": extra})


def log_text(state):
    with open(os.path.join(state["dir"], "error.log")) as f:
        return f.read()


async def ws_connect_when_ready(port, user, timeout=10):
    """Connect once the worker's Redis is ready (the upgrade answers 503 until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await ws_connect(port, user)
        except (websockets.exceptions.InvalidStatusCode, OSError) as e:
            assert getattr(e, "status_code", 503) == 503, e
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def first_send(c, room, timeout=10):
    """The first send of a fresh nginx: its relay link may come up a moment
    after its Redis (the upgrade waits only for Redis)."""
    the_cid = cid()
    deadline = time.monotonic() + timeout
    while True:
        r = await c.send_msg(room, "before", msg_cid=the_cid)
        if r["op"] == "ack" or time.monotonic() > deadline or "relay-worker" not in r.get("message", ""):
            return r
        await asyncio.sleep(0.1)


@run_async
async def test_redis_accepting_nothing_fails_fast_and_recovers(own_stack):
    port, rport = own_stack["port"], own_stack["redis_port"]
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])   # through the stack: MySQL has it; our Redis loads it
    loop = asyncio.get_running_loop()

    c = await ws_connect_when_ready(port, u1)
    try:
        r = await first_send(c, room)
        assert r["op"] == "ack" and r["seq"] == 1, r

        # Redis goes; in its place a port that takes no connection
        own_stack["procs"]["redis"].kill()
        own_stack["procs"]["redis"].wait()
        hole = Blackhole(rport)
        try:
            await asyncio.sleep(1.0)   # the module has lost Redis and is connecting into the hole
            for i in range(5):
                start = loop.time()
                r = await c.send_msg(room, "into the hole %d" % i)
                took = loop.time() - start
                assert r["op"] == "error" and r["code"] == "unavailable", r
                assert took < 0.5, "an unavailable Redis must fail a send at once (%.2fs)" % took
                await asyncio.sleep(CONNECT_TIMEOUT_MS / 1000.0)
        finally:
            hole.close()
        assert "did not accept the connection in time" in log_text(own_stack)

        # Redis is back (with its append-only file): sends succeed again, by themselves
        own_stack["procs"]["redis"] = subprocess.Popen(own_stack["redis_cmd"], stdout=subprocess.DEVNULL,
                                                       stderr=subprocess.DEVNULL)
        the_cid = cid()
        deadline = loop.time() + 10
        while True:
            r = await c.send_msg(room, "after", msg_cid=the_cid)
            if r["op"] == "ack" or loop.time() > deadline:
                break
            assert r["op"] == "error" and r["code"] == "unavailable", r
            await asyncio.sleep(0.1)
        assert r["op"] == "ack" and r["seq"] == 2, r
    finally:
        await c.close()


@pytest.mark.redis_args("--requirepass", "right-password")
@run_async
async def test_redis_auth_wrong_then_right_password(own_stack):
    """AUTH is the first command of every connection; a refused one is logged
    and retried, and a reload with the right password file brings service."""
    d, port = own_stack["dir"], own_stack["port"]
    with open(os.path.join(d, "password"), "w") as f:
        f.write("wrong-password\n")
    # started without a password (Redis answers NOAUTH to its PING); now a wrong one
    own_stack["write_conf"]("minichat_redis_password_file %s/password;" % d)
    subprocess.run(["/usr/sbin/nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
                    os.path.join(d, "error.log"), "-s", "reload"], check=True, timeout=10)
    wait_until(lambda: "refused the connection: WRONGPASS" in log_text(own_stack), 10,
               what="a refused AUTH in the error log")
    assert await ws_status_raw(port, uid()) == 503

    with open(os.path.join(d, "password"), "w") as f:
        f.write("right-password\n")
    subprocess.run(["/usr/sbin/nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
                    os.path.join(d, "error.log"), "-s", "reload"], check=True, timeout=10)
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    c = await ws_connect_when_ready(port, u1)
    try:
        r = await first_send(c, room)
        assert r["op"] == "ack" and r["seq"] == 1, r
    finally:
        await c.close()


async def ws_status_raw(port, user):
    try:
        ws = await ws_open(ws_url(tok=token(user), port=port),
                           subprotocols=[SUBPROTOCOL], open_timeout=5)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    return 101
