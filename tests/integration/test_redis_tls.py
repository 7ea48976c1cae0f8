"""TLS to Redis (minichat_redis_tls and friends, docs/directives.md).

Each test runs a redis-server of its own that listens for TLS only
(`port 0`, `tls-port`), with a CA and certificates made by `openssl` in the
test's temporary directory, and an nginx of its own (own_nginx.py: node a's
configuration, the stack's relay-worker a socket) pointed at it with the
TLS directives.  They run alike in the single-Redis and the Cluster pass:
the own nginx talks to the own Redis only.

- a WebSocket send is acked through the TLS connection, the server
  certificate checked against the CA and the name;
- a Redis that asks for client certificates gets the configured one;
- a Redis Cluster of three TLS-only masters (`tls-cluster yes`): the
  module learns the masters' TLS ports from CLUSTER SLOTS and sends to
  rooms on every master are acked;
- a Redis whose certificate another CA signed: the connection is refused
  after the handshake with the reason in the error log (ERR, no
  [alert]/[crit]), the upgrade is 503 and a connected client's send is
  `unavailable`; once Redis shows the right certificate again, sends are
  acked by themselves.
"""

import asyncio
import os
import re
import socket
import subprocess

import pytest

from conftest import MYSQL_PORTS, TOP, cid, create_room, run_async, uid, wait_until
from own_nginx import OwnNginx, free_port, raw_upgrade, upgrade_when_ready, ws_connect

NAME = "redis.minichat.test"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d, name):
    """A self-signed CA in d: name.crt, name.key."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".crt", "-days", "2", "-subj", "/CN=" + name, cwd=d)


def make_cert(d, name, ca, san):
    """A certificate name.crt/name.key signed by the CA `ca`, for `san`."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\n" % san)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key", "-CAcreateserial",
            "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs; a server certificate from each; a client certificate."""
    d = str(tmp_path_factory.mktemp("redis-tls"))
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "server", "ca", "DNS:%s,IP:127.0.0.1" % NAME)
    make_cert(d, "server-other", "other-ca", "DNS:%s,IP:127.0.0.1" % NAME)
    make_cert(d, "client", "ca", "DNS:client.minichat.test")
    return d


class TlsRedis:
    """A redis-server listening for TLS only on `port`."""

    def __init__(self, pki, tmp, auth_clients=False):
        self.pki = pki
        self.dir = tmp
        self.port = free_port()
        self.auth_clients = auth_clients
        self.proc = None

    def start(self, cert="server"):
        p = lambda f: os.path.join(self.pki, f)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(self.port),
             "--tls-cert-file", p(cert + ".crt"), "--tls-key-file", p(cert + ".key"),
             "--tls-ca-cert-file", p("ca.crt"), "--tls-auth-clients", "yes" if self.auth_clients else "no",
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        args = ["redis-cli", "--tls", "--cacert", p("ca.crt"), "-p", str(self.port)]
        if self.auth_clients:
            args += ["--cert", p("client.crt"), "--key", p("client.key")]
        if cert == "server":
            wait_until(lambda: subprocess.run(args + ["PING"], capture_output=True, text=True,
                                              timeout=5).stdout.strip() == "PONG", 10, what="the TLS redis-server")
        else:
            # redis-cli trusts only ca.crt: wait for the port instead
            wait_until(lambda: subprocess.run(["ss", "-Hltn", "sport = :%d" % self.port], capture_output=True,
                                              text=True, timeout=5).stdout.strip() != "", 10,
                       what="the TLS redis-server to listen")
        return self

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def tls_redis(pki, tmp_path):
    servers = []

    def make(auth_clients=False):
        r = TlsRedis(pki, str(tmp_path), auth_clients)
        servers.append(r)
        return r

    yield make
    for r in servers:
        r.stop()


def cluster_port():
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class TlsCluster:
    """Three TLS-only cluster masters (no replicas) on free ports."""

    def __init__(self, pki, tmp):
        self.pki = pki
        self.ports = [cluster_port() for _ in range(3)]
        self.procs = []
        p = lambda f: os.path.join(pki, f)
        for port in self.ports:
            d = os.path.join(tmp, "cluster-%d" % port)
            os.makedirs(d)
            self.procs.append(subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
                 "--tls-cert-file", p("server.crt"), "--tls-key-file", p("server.key"),
                 "--tls-ca-cert-file", p("ca.crt"), "--tls-auth-clients", "no", "--tls-cluster", "yes",
                 "--tls-replication", "yes", "--cluster-enabled", "yes", "--save", "", "--appendonly", "no",
                 "--dir", d, "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.cli = ["redis-cli", "--tls", "--cacert", p("ca.crt")]
        for port in self.ports:
            wait_until(lambda: subprocess.run(self.cli + ["-p", str(port), "PING"], capture_output=True, text=True,
                                              timeout=5).stdout.strip() == "PONG", 10, what="a TLS cluster node")
        subprocess.run(self.cli + ["--cluster", "create"] + ["127.0.0.1:%d" % q for q in self.ports]
                       + ["--cluster-yes"], check=True, capture_output=True, timeout=60)
        wait_until(lambda: "cluster_state:ok" in subprocess.run(
            self.cli + ["-p", str(self.ports[0]), "CLUSTER", "INFO"], capture_output=True, text=True,
            timeout=5).stdout, 20, what="the TLS cluster to be ok")

    def dbsize(self, port):
        return int(subprocess.run(self.cli + ["-p", str(port), "DBSIZE"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or 0)

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


class ClusterNginx(OwnNginx):
    """An own nginx whose Redis directive names the TLS cluster's seed."""

    def __init__(self, seed, extra):
        super().__init__([], extra=extra)
        self.seed = seed

    def _derive(self):
        text, n = re.subn(r"(?m)^(\s*)minichat_redis(_cluster)? .*;$",
                          r"\1minichat_redis_cluster %s;" % self.seed, super()._derive())
        assert n == 1, "node a's nginx.conf has no single Redis directive"
        return text


def tls_directives(pki, ca="ca", client=False):
    d = ["minichat_redis_tls on",
         "minichat_redis_tls_ca_file %s" % os.path.join(pki, ca + ".crt"),
         "minichat_redis_tls_name %s" % NAME]
    if client:
        d += ["minichat_redis_tls_certificate %s" % os.path.join(pki, "client.crt"),
              "minichat_redis_tls_certificate_key %s" % os.path.join(pki, "client.key")]
    return d


def stop_clean(n):
    bad = n.stop()
    assert not bad, bad


async def send_until_acked(c, room, body, timeout=10):
    """A send, repeated with the same cid while the answer is `unavailable`
    (Redis reconnecting) or a relay-worker error (a fresh nginx links to it
    a moment after its Redis is ready); returns the last answer."""
    the_cid = cid()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await c.send_msg(room, body, msg_cid=the_cid)
        if r["op"] == "ack" or asyncio.get_running_loop().time() > deadline:
            return r
        assert r["op"] == "error" and (r["code"] == "unavailable" or "relay" in r.get("message", "")), r
        await asyncio.sleep(0.1)


@run_async
async def test_send_acked_over_tls(pki, tls_redis):
    r = tls_redis().start()
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])   # through the stack: MySQL has it; our Redis loads it
    n = OwnNginx([], redis="127.0.0.1:%d" % r.port, extra=tls_directives(pki)).start()
    try:
        assert upgrade_when_ready(n.port, u1)[0] == 101
        c = await ws_connect(n.port, u1)
        try:
            a = await send_until_acked(c, room, "over TLS")
            assert a["op"] == "ack" and a["seq"] == 1, a
        finally:
            await c.close()
        assert "connected (TLS)" in n.log()
        # the message is in our Redis: it went over the TLS connection
        out = subprocess.run(["redis-cli", "--tls", "--cacert", os.path.join(pki, "ca.crt"), "-p", str(r.port),
                              "--scan", "--pattern", "*%d*" % room], capture_output=True, text=True, timeout=10)
        assert out.stdout.strip(), "no key of room %d in the TLS redis" % room
    finally:
        stop_clean(n)


@run_async
async def test_client_certificate(pki, tls_redis):
    r = tls_redis(auth_clients=True).start()
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    n = OwnNginx([], redis="127.0.0.1:%d" % r.port, extra=tls_directives(pki, client=True)).start()
    try:
        assert upgrade_when_ready(n.port, u1)[0] == 101
        c = await ws_connect(n.port, u1)
        try:
            a = await send_until_acked(c, room, "with a client certificate")
            assert a["op"] == "ack", a
        finally:
            await c.close()
    finally:
        stop_clean(n)


@run_async
async def test_cluster_over_tls(pki, tmp_path):
    cl = TlsCluster(pki, str(tmp_path))
    try:
        # the masters' TLS ports come from CLUSTER SLOTS, asked over TLS
        slots = subprocess.run(cl.cli + ["-p", str(cl.ports[0]), "CLUSTER", "SLOTS"], capture_output=True,
                               text=True, timeout=10).stdout.split()
        assert all(str(q) in slots for q in cl.ports), slots
        u1, u2 = uid(), uid()
        n = ClusterNginx("127.0.0.1:%d" % cl.ports[0], tls_directives(pki)).start()
        try:
            # every master connected, over TLS, at the port CLUSTER SLOTS
            # gave (an upgrade while a master's handshake is still going
            # would find its slots down)
            for q in cl.ports:
                wait_until(lambda: "minichat: redis 127.0.0.1:%d connected (TLS)" % q in n.log(), 10,
                           what="master %d connected over TLS" % q)
            assert upgrade_when_ready(n.port, u1)[0] == 101
            c = await ws_connect(n.port, u1)
            try:
                # rooms until every master holds one (a room's slot follows
                # its id; 30 miss a master about once in 70000 runs)
                for _ in range(30):
                    room = create_room(u1, [u1, u2])
                    a = await send_until_acked(c, room, "cluster over TLS")
                    assert a["op"] == "ack" and a["seq"] == 1, a
                    if all(cl.dbsize(q) > 0 for q in cl.ports):
                        break
                assert all(cl.dbsize(q) > 0 for q in cl.ports), [cl.dbsize(q) for q in cl.ports]
            finally:
                await c.close()
        finally:
            stop_clean(n)
    finally:
        cl.stop()


def test_wrong_ca_from_the_start(pki, tls_redis):
    r = tls_redis().start(cert="server-other")
    n = OwnNginx([], redis="127.0.0.1:%d" % r.port, extra=tls_directives(pki)).start()
    try:
        wait_until(lambda: "TLS certificate verify error" in n.log(), 10,
                   what="a refused certificate in the error log")
        status, _, body = raw_upgrade(n.port, uid())
        assert status == 503, (status, body)
        assert "connected (TLS)" not in n.log()
    finally:
        stop_clean(n)


@run_async
async def test_wrong_ca_fails_sends_until_the_right_certificate_returns(pki, tls_redis):
    r = tls_redis().start()
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    n = OwnNginx([], redis="127.0.0.1:%d" % r.port, extra=tls_directives(pki)).start()
    try:
        assert upgrade_when_ready(n.port, u1)[0] == 101
        c = await ws_connect(n.port, u1)
        try:
            a = await send_until_acked(c, room, "before")
            assert a["op"] == "ack" and a["seq"] == 1, a

            # the same port, a certificate our CA did not sign
            r.stop()
            r.start(cert="server-other")
            wait_until(lambda: "TLS certificate verify error" in n.log(), 10,
                       what="a refused certificate in the error log")
            for i in range(3):
                e = await c.send_msg(room, "refused %d" % i)
                assert e["op"] == "error" and e["code"] == "unavailable", e

            # the right certificate again: sends go through by themselves
            # (a fresh Redis: the room is rebuilt from MySQL)
            r.stop()
            r.start()
            a = await send_until_acked(c, room, "after")
            assert a["op"] == "ack", a
        finally:
            await c.close()
        log = n.log()
        # OpenSSL names the reason: the chain does not reach our CA
        assert "unable to verify the first certificate" in log, log[-2000:]
    finally:
        stop_clean(n)


def test_name_mismatch(pki, tls_redis):
    r = tls_redis().start()
    extra = [d for d in tls_directives(pki) if "tls_name" not in d] + ["minichat_redis_tls_name other.test"]
    n = OwnNginx([], redis="127.0.0.1:%d" % r.port, extra=extra).start()
    try:
        wait_until(lambda: 'TLS certificate does not match "other.test"' in n.log(), 10,
                   what="a name mismatch in the error log")
        assert raw_upgrade(n.port, uid())[0] == 503
    finally:
        stop_clean(n)


def test_ban_tool_over_tls(pki, tls_redis):
    """minichat-ban reaches a TLS-only Redis with --redis-tls: it shows a
    ban set there and lifts it; without TLS, or with the wrong CA, it
    fails with the reason and exit status 1."""
    r = tls_redis().start()
    user = uid()
    cli = ["redis-cli", "--tls", "--cacert", os.path.join(pki, "ca.crt"), "-p", str(r.port)]
    subprocess.run(cli + ["SET", "{u:%d}:ban" % user, "0"], check=True, capture_output=True, timeout=10)
    tool = [os.path.join(TOP, "build", "bin", "minichat-ban"), "--redis", "127.0.0.1:%d" % r.port,
            "--mysql", "127.0.0.1:%d" % MYSQL_PORTS["primary"]]
    tls = ["--redis-tls", "--redis-tls-ca-file", os.path.join(pki, "ca.crt"), "--redis-tls-name", NAME]

    shown = subprocess.run(tool + tls + ["show", str(user)], capture_output=True, text=True, timeout=20)
    assert shown.returncode == 0 and "permanent" in shown.stdout, (shown.stdout, shown.stderr)
    lifted = subprocess.run(tool + tls + ["lift", str(user)], capture_output=True, text=True, timeout=20)
    assert lifted.returncode == 0, (lifted.stdout, lifted.stderr)
    gone = subprocess.run(cli + ["EXISTS", "{u:%d}:ban" % user], capture_output=True, text=True, timeout=10)
    assert gone.stdout.strip() == "0", gone.stdout

    plain = subprocess.run(tool + ["show", str(user)], capture_output=True, text=True, timeout=20)
    assert plain.returncode == 1 and "redis" in plain.stderr, (plain.stdout, plain.stderr)
    wrong = ["--redis-tls", "--redis-tls-ca-file", os.path.join(pki, "other-ca.crt"), "--redis-tls-name", NAME]
    refused = subprocess.run(tool + wrong + ["show", str(user)], capture_output=True, text=True, timeout=20)
    assert refused.returncode == 1 and "verify" in refused.stderr.lower(), (refused.stdout, refused.stderr)
    usage = subprocess.run(tool + ["--redis-tls", "show", str(user)], capture_output=True, text=True, timeout=20)
    assert usage.returncode == 2 and "ca" in usage.stderr.lower(), (usage.stdout, usage.stderr)
