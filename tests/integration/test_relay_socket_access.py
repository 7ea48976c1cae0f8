"""Who may speak on a relay-worker's unix socket (issue 8): the socket file
is not world-writable, a local user the file's mode keeps out cannot
connect, and a process the mode lets in but allowed_peers does not list is
disconnected by the relay-worker's SO_PEERCRED check, which logs it.

The other users are made with util-linux's `setpriv` (--reuid/--regid and
--clear-groups or --groups), which needs root, as `make test` runs; the
unprivileged process is `nobody` (uid 65534).  It runs a short Python
script that connects, says hello as an nginx worker would, sends one
request and reports what happened as JSON.

The stack's relay-workers carry the dev configuration (mode 0660, the
relay-worker's own group, no allowed_peers: only root, which the dev nginx
workers run as, gets in); their sockets' modes are checked in place.  The
tests that connect as another user run a relay-worker of their own (the
stack's config with a private socket in a directory anyone may search, a
gRPC port and access keys appended: the last occurrence of a key wins),
since the checkout's directories may not be searchable by others."""

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import RUN, TOP, wait_until
from relaylink import CONTACTS, encode, sock_path

NOBODY = 65534
NOGROUP = 65534
WWW_DATA = 33
RELAY_BIN = os.path.join(TOP, "build", "bin", "relay-worker")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="setpriv needs root to become another user")

# Runs as the other user: argv = socket path, hello frame (hex), request
# frame (hex).  Prints {"pid", "connect": "ok" or an errno name,
# "reply": bytes received, "closed": the relay-worker hung up}.
CHILD = r"""
import errno, json, os, socket, sys, time
out = {"pid": os.getpid(), "connect": "ok", "reply": 0, "closed": False}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    out["connect"] = errno.errorcode.get(e.errno, str(e.errno))
    print(json.dumps(out)); sys.exit(0)
try:
    s.sendall(bytes.fromhex(sys.argv[2]) + bytes.fromhex(sys.argv[3]))
    s.settimeout(15)
    while True:
        b = s.recv(65536)
        if not b:
            out["closed"] = True
            break
        out["reply"] += len(b)
        break
except (BrokenPipeError, ConnectionResetError):
    out["closed"] = True
except socket.timeout:
    pass
print(json.dumps(out))
"""


def _frame(payload):
    return (len(payload).to_bytes(4, "big") + payload).hex()


def as_user(path, uid, gid, groups=None):
    """Runs CHILD as uid/gid with only the given supplementary groups."""
    hello = _frame(encode([(2, encode([(1, "intruder"), (2, os.getpid())]))]))
    request = _frame(encode([(1, 7001), (CONTACTS, encode([(1, 0), (2, 0)]))]))
    cmd = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid]
    cmd += ["--groups=" + ",".join(str(g) for g in groups)] if groups else ["--clear-groups"]
    cmd += ["/usr/bin/python3", "-I", "-c", CHILD, path, hello, request]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def log_size(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def log_since(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def refusal_line(pid, uid, gid):
    return "link: refused a connection from pid %d uid %d gid %d: not in allowed_peers" % (pid, uid, gid)


@pytest.mark.parametrize("node", ["a", "b"])
def test_stack_socket_is_not_world_writable(node):
    st = os.stat(sock_path(node))
    assert stat.S_ISSOCK(st.st_mode)
    assert st.st_mode & (stat.S_IWOTH | stat.S_IROTH) == 0, oct(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    # the relay-worker's own user and group (the stack runs as root)
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


# --- a relay-worker of the test's own -------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def own_conf(d, extra):
    with open(os.path.join(RUN, "relay-a", "relay-worker.conf")) as f:
        base = f.read()
    conf = os.path.join(d, "relay-worker.conf")
    with open(conf, "w") as f:
        f.write(base + "\n# test_relay_socket_access.py\nnode = access\nunix_socket = %s\n"
                "grpc_listen = 127.0.0.1:%d\npeers =\nhttp_listen = 127.0.0.1:%d\n%s\n"
                % (os.path.join(d, "relay.sock"), free_port(), free_port(), extra))
    return conf


@pytest.fixture
def own_dir():
    d = tempfile.mkdtemp(prefix="mc-access-")
    os.chmod(d, 0o755)  # nobody must reach the socket: its mode decides
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


@contextlib.contextmanager
def run_relay(own_dir, extra):
    """A relay-worker of the test's own, its socket in own_dir: (socket, log)."""
    conf = own_conf(own_dir, extra)
    log = os.path.join(own_dir, "relay.log")
    with open(log, "ab") as out:
        p = subprocess.Popen([RELAY_BIN, "-c", conf], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_until(lambda: p.poll() is not None or "ready:" in log_since(log, 0), timeout=60,
                   what="relay-worker ready")
        assert p.poll() is None, log_since(log, 0)
        yield os.path.join(own_dir, "relay.sock"), log
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        sys.stdout.write(log_since(log, 0)[-4000:])
    assert p.returncode == 0, log_since(log, 0)


@pytest.fixture
def own_relay(own_dir):
    """A relay-worker with the socket's group nogroup and www-data allowed."""
    with run_relay(own_dir, "unix_socket_mode = 0660\nunix_socket_group = nogroup\n"
                            "allowed_peers = group:www-data\n") as r:
        yield r


@pytest.fixture
def dev_relay(own_dir):
    """A relay-worker with the stack's access settings (none added: mode
    0660, its own group, no allowed_peers), its socket where nobody can
    reach it: the checkout's own directories may not be searchable by
    others (a clone under `mktemp -d` is 0700), and then they, not the
    socket's mode, would keep nobody out."""
    with run_relay(own_dir, "") as r:
        yield r


def test_unprivileged_user_cannot_connect(dev_relay):
    """nobody, in none of the socket's groups: the file's mode refuses it."""
    path, _ = dev_relay
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    r = as_user(path, NOBODY, NOGROUP)
    assert r["connect"] == "EACCES", r


def refused(sock):
    """minichat_relay_worker_refused_total of the relay-worker whose socket is sock."""
    from test_service_metrics import scrape_beside
    return scrape_beside(sock)[("minichat_relay_worker_refused_total", ())]


def test_peer_not_allowed_is_disconnected_and_logged(dev_relay):
    """nobody with the socket's group as a supplementary group passes the
    mode; the relay-worker closes it on accept (no reply to its request)
    and logs its pid, uid and gid."""
    path, log = dev_relay
    off = log_size(log)
    before = refused(path)
    r = as_user(path, NOBODY, NOGROUP, groups=[os.stat(path).st_gid])
    assert r["connect"] == "ok", r
    assert r["closed"] and r["reply"] == 0, r
    line = refusal_line(r["pid"], NOBODY, NOGROUP)
    wait_until(lambda: line in log_since(log, off), what="the refusal in %s" % log)
    assert log_since(log, off).count(line) == 1
    assert refused(path) == before + 1


def test_own_relay_group_and_supplementary_groups(own_relay):
    path, log = own_relay
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, NOGROUP)

    # nobody's primary group is nogroup: the mode lets it in, allowed_peers does not
    r = as_user(path, NOBODY, NOGROUP)
    assert r["connect"] == "ok" and r["closed"] and r["reply"] == 0, r
    wait_until(lambda: refusal_line(r["pid"], NOBODY, NOGROUP) in log_since(log, 0), what="the refusal")

    # the same with www-data as a supplementary group: accepted, and answered
    r = as_user(path, NOBODY, NOGROUP, groups=[WWW_DATA])
    assert r["connect"] == "ok" and r["reply"] > 0 and not r["closed"], r
    assert "pid %d " % r["pid"] not in log_since(log, 0)

    # a user in neither the socket's group nor www-data: the mode refuses it
    r = as_user(path, NOBODY, NOBODY - 1)
    assert r["connect"] == "EACCES", r


@pytest.mark.parametrize("extra, message", [
    ("unix_socket_mode = 0668", "unix_socket_mode: file mode \"0668\" is not octal in [0, 0777]"),
    ("unix_socket_group = no-such-group-mc", "unix_socket_group: no group \"no-such-group-mc\""),
    ("allowed_peers = user:nobody, www-data",
     "allowed_peers: \"www-data\" is not user:NAME, uid:N, group:NAME or gid:N"),
    ("allowed_peers = uid:65534,,gid:33", "allowed_peers: empty item in \"uid:65534,,gid:33\""),
])
def test_bad_access_config_is_refused_at_start(own_dir, extra, message):
    conf = own_conf(own_dir, extra)
    p = subprocess.run([RELAY_BIN, "-c", conf], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    with open(conf) as f:
        line = len(f.read().splitlines())     # extra is the last line
    assert "config: %s:%d: %s" % (conf, line, message) in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(own_dir, "relay.sock"))
