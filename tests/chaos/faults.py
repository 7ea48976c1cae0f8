"""The faults of the chaos run (docs/chaos.md), each as inject / hold /
repair against the dev stack of MINICHAT_RUN and MINICHAT_PORT_OFFSET.

Processes are found only through the pid files scripts/stack.sh wrote,
and each pid is checked against its command line before a signal goes to
it.  What a supervisor would do in production (start a killed service
again) is done here by `stack.sh start`, which starts exactly what is not
running; nothing in the dev stack restarts a service by itself.  An nginx
worker is the exception: its master forks a new one.

The relay-workers' link is cut with nftables: a table of our own
(`inet minichat_chaos_<offset>`) drops every TCP packet to or from the two
gRPC ports on loopback, and deleting that table restores the link.  Only
that table is ever touched.  scripts/setup.sh installs nftables.

Every function here blocks; the run calls them from a thread so that the
traffic goes on meanwhile.
"""

import os
import signal
import subprocess
import time

from conftest import MYSQL_PORTS, OFF, RUN, TOP

STACK = os.path.join(TOP, "scripts", "stack.sh")
RELAY_PORTS = (17051 + OFF, 17052 + OFF)
NFT_TABLE = "minichat_chaos_%d" % OFF


def _pid(pidfile, pattern):
    """The pid in RUN/pidfile when it runs a command line holding pattern."""
    try:
        with open(os.path.join(RUN, pidfile)) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if pattern in cmd else None


def _gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            raise RuntimeError("pid %d still runs %ds after the signal" % (pid, timeout))
        time.sleep(0.05)


def _signal(pidfile, pattern, sig, timeout=30):
    pid = _pid(pidfile, pattern)
    if pid is None:
        raise RuntimeError("%s names no live %s" % (pidfile, pattern))
    os.kill(pid, sig)
    _wait_gone(pid, timeout)


def stack_start(**env):
    """What an operator's supervisor does: start what is not running (with
    env added to the environment, e.g. MINICHAT_RELAY_FANOUT)."""
    r = subprocess.run(["bash", STACK, "start"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, **env))
    if r.returncode != 0:
        raise RuntimeError("stack.sh start failed:\n%s%s" % (r.stdout[-2000:], r.stderr[-2000:]))


def _replica_sql(sql):
    subprocess.run(["mariadb", "--no-defaults", "--protocol=TCP", "-h127.0.0.1", "-P%d" % MYSQL_PORTS["replica"],
                    "-uroot", "--connect-timeout=5", "-e", sql], check=True, capture_output=True, timeout=60)


def nft_available():
    return subprocess.run(["sh", "-c", "command -v nft"], capture_output=True).returncode == 0


def _nft(*args, check=True):
    return subprocess.run(["nft"] + list(args), check=check, capture_output=True, text=True, timeout=10)


class Fault:
    """name: the table's first column; hold: seconds the fault lasts
    before repair (traffic goes on meanwhile)."""
    name = "?"
    hold = 0.0

    def inject(self):
        pass

    def repair(self):
        pass

    def cleanup(self):
        """Undo whatever is left when the run stops early."""


class KillRelay(Fault):
    """kill -9 of relay-worker `node`, then a start, as a supervisor would."""
    sig, verb = signal.SIGKILL, "kill -9"

    def __init__(self, node):
        self.node = node
        self.name = "%s relay-worker %s" % (self.verb, node)

    def inject(self):
        d = "relay-%s" % self.node
        _signal(os.path.join(d, "relay.pid"), os.path.join(RUN, d, "relay-worker.conf"), self.sig)

    def repair(self):
        stack_start()


class RestartRelay(KillRelay):
    """An operator's restart of relay-worker `node`: SIGTERM (it drains:
    queued peer batches and Kafka get up to a few seconds), then a start.
    Meanwhile the node's nginx workers answer sends `unavailable`, and
    reconnect once it is back."""
    sig, verb = signal.SIGTERM, "restart"


class KillConsumer(Fault):
    sig, name = signal.SIGKILL, "kill -9 roomlist-consumer"

    def inject(self):
        _signal("consumer/consumer.pid", os.path.join(RUN, "consumer", "roomlist-consumer.conf"), self.sig)

    def repair(self):
        stack_start()


class RestartConsumer(KillConsumer):
    """A rolling restart of the consumer (one instance here): SIGTERM, which
    commits what it stored and leaves the group, then a start."""
    sig, name = signal.SIGTERM, "restart roomlist-consumer"


class ReloadNginx(Fault):
    """`nginx -s reload` on node `node`: new workers start, the old ones close
    their WebSockets with 1001 and exit; clients reconnect and resume on the
    new workers.  Repaired when the old workers are gone."""

    def __init__(self, node="a"):
        self.node = node
        self.name = "nginx -s reload on %s" % node
        self.old = []

    def _workers(self):
        master = _pid("nginx-%s/nginx.pid" % self.node, "nginx")
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    def inject(self):
        prefix = os.path.join(RUN, "nginx-" + self.node)
        self.old = self._workers()
        subprocess.run(["/usr/sbin/nginx", "-p", prefix, "-c", os.path.join(prefix, "nginx.conf"),
                        "-e", os.path.join(prefix, "error.log"), "-s", "reload"], check=True, timeout=10,
                       capture_output=True)

    def repair(self):
        for pid in self.old:
            _wait_gone(pid, 30)
        if not [p for p in self._workers() if p not in self.old]:
            raise RuntimeError("nginx-%s has no new worker after the reload" % self.node)


class KillNginxWorker(Fault):
    """One worker of node `node`'s nginx; its master forks another.  The
    master logs the death at [alert], which scripts/check-logs.sh counts as
    a failure: this fault stays out of `make test`."""

    def __init__(self, node="a"):
        self.node = node
        self.name = "kill -9 nginx-%s worker" % node
        self.victim = None

    def _workers(self):
        master = _pid("nginx-%s/nginx.pid" % self.node, "nginx")
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        workers = []
        for p in out:
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    if b"worker process" in f.read():
                        workers.append(int(p))
            except OSError:
                pass
        return workers

    def inject(self):
        workers = self._workers()
        if not workers:
            raise RuntimeError("nginx-%s has no worker" % self.node)
        self.victim = workers[0]
        os.kill(self.victim, signal.SIGKILL)
        _wait_gone(self.victim, 10)

    def repair(self):
        deadline = time.monotonic() + 30
        while len([w for w in self._workers() if w != self.victim]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("nginx-%s did not fork a new worker" % self.node)
            time.sleep(0.05)


class RestartKafka(Fault):
    name = "restart Kafka"

    def inject(self):
        _signal("kafka/kafka.pid", "kafka.Kafka", signal.SIGTERM, timeout=60)

    def repair(self):
        stack_start()


class ReplicaLag(Fault):
    """STOP SLAVE for `hold` seconds of writes, then START SLAVE."""
    name = "replica stopped, then lagging"

    def __init__(self, hold=5.0):
        self.hold = hold

    def inject(self):
        _replica_sql("STOP SLAVE")

    def repair(self):
        _replica_sql("START SLAVE")

    def cleanup(self):
        try:
            _replica_sql("START SLAVE")
        except (subprocess.SubprocessError, OSError):
            pass


class CutRelayLink(Fault):
    """Every packet between the relay-workers dropped for `hold` seconds."""
    name = "relay-worker link cut"

    def __init__(self, hold=12.0):
        self.hold = hold
        self.name = "relay link cut %gs" % hold

    def inject(self):
        if not nft_available():
            raise RuntimeError("nft not found: run scripts/setup.sh (it installs nftables)")
        ports = "{ %d, %d }" % RELAY_PORTS
        _nft("delete", "table", "inet", NFT_TABLE, check=False)
        _nft("add", "table", "inet", NFT_TABLE)
        _nft("add", "chain", "inet", NFT_TABLE, "out", "{ type filter hook output priority 0 ; }")
        _nft("add", "rule", "inet", NFT_TABLE, "out", "oifname", "lo", "tcp", "dport", ports, "drop")
        _nft("add", "rule", "inet", NFT_TABLE, "out", "oifname", "lo", "tcp", "sport", ports, "drop")

    def repair(self):
        _nft("delete", "table", "inet", NFT_TABLE)

    def cleanup(self):
        _nft("delete", "table", "inet", NFT_TABLE, check=False)


def full_sequence(link_hold=12.0, lag_hold=5.0):
    """Every fault of issue 8, in the order it names them."""
    return [KillRelay("a"), KillRelay("b"), KillConsumer(), KillNginxWorker("a"), RestartKafka(),
            ReplicaLag(lag_hold), CutRelayLink(link_hold)]
