"""minichat_max_connections_per_ip: concurrent WebSocket connections per
client address, counted in shared memory across the node's workers.

An nginx of the test's own (own_nginx.py) with two workers and `reuseport`
on its listen line (the kernel spreads connections over the workers by
their ports) and a cap of CAP:

- CAP connections from one address are admitted, the next upgrade is
  refused with 429 and the JSON body `rate_limited` (no retry time), while
  another address is admitted;
- the count is the node's, not a worker's: CAP connections that landed on
  both workers (the error log names the worker that took each user) still
  make the next upgrade a refusal, whichever worker takes it;
- every way a connection ends gives its slot back exactly once: after each
  close a new connection is admitted, and the one after it refused again
  (a slot given back twice would admit two);
- the echo endpoint's connections count against the same cap.

Every test uses fresh loopback addresses (127.x.y.z), so nothing is left
from another.
"""

import re
import socket
import struct

import pytest

from conftest import open_socket, uid, wait_until
from own_nginx import OwnNginx, fresh_address, raw_upgrade, upgrade_when_ready
from test_ws_protocol import RawWS, read_head, upgrade_request

CAP = 4
CONNECTED = re.compile(r"\[info\] (\d+)#\d+: \*\d+ minichat: user (\d+) connected")


@pytest.fixture(scope="module")
def node():
    n = OwnNginx(["minichat_max_connections_per_ip %d" % CAP], workers=2, listen_params=["reuseport"]).start()
    try:
        assert upgrade_when_ready(n.port, uid(), fresh_address())[0] == 101
        # both workers' Redis links must be up before counting on a 101
        for _ in range(8):
            assert upgrade_when_ready(n.port, uid(), fresh_address())[0] == 101
        yield n
    finally:
        bad = n.stop()
        assert not bad, bad


def hold(node, source, path=None):
    """An open connection from `source` (a chat one, once its hello came,
    or an echo one with path "/echo")."""
    return RawWS(uid(), port=node.port, source=source, path=path)


def assert_refused(node, source):
    status, headers, body = raw_upgrade(node.port, uid(), source)
    assert status == 429, (status, body)
    assert headers["Content-Type"].startswith("application/json"), headers
    assert body["code"] == "rate_limited" and "retry_after_ms" not in body, body
    assert "Retry-After" not in headers, headers


def hold_when_freed(node, source, path=None):
    """A new connection from `source`, once a closed one's slot is back
    (the server sees the close a moment after the client)."""
    got = []

    def attempt():
        try:
            got.append(hold(node, source, path))
            return True
        except AssertionError:
            return False

    wait_until(attempt, what="a slot of %s to be given back" % source)
    return got[0]


def close_all(conns):
    for c in conns:
        c.close()


def test_cap_per_address(node):
    a, b = fresh_address(), fresh_address()
    conns = [hold(node, a) for _ in range(CAP)]
    try:
        assert_refused(node, a)
        # another address is its own count
        other = hold(node, b)
        conns.append(other)
        # one closed: one more is admitted, and no more
        conns.pop(0).close()
        conns.append(hold_when_freed(node, a))
        assert_refused(node, a)
    finally:
        close_all(conns)


def test_count_is_shared_by_the_workers(node):
    """Connections of one address on both workers count together."""
    for attempt in range(20):
        a = fresh_address()
        users = [uid() for _ in range(CAP)]
        conns = [RawWS(u, port=node.port, source=a) for u in users]
        try:
            pids = {}
            for pid, user in CONNECTED.findall(node.log()):
                pids[int(user)] = pid
            workers = {pids.get(u) for u in users}
            assert None not in workers, "a connection missing from the error log"
            if len(workers) < 2:
                continue   # the kernel put them all on one worker: again, from another address
            # either worker takes the next one: per-worker counts would admit it
            for _ in range(4):
                assert_refused(node, a)
            return
        finally:
            close_all(conns)
    pytest.fail("20 tries never spread %d connections over both workers" % CAP)


def client_close(ws):
    ws.send(0x8, struct.pack("!H", 1000))
    ws.expect_close(1000)
    ws.close()


def server_close(ws):
    ws.send(0x1, b"unmasked", mask=False)
    ws.expect_close(1002)
    ws.close()


def reset(ws):
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.close()


@pytest.mark.parametrize("end", [client_close, server_close, reset], ids=lambda f: f.__name__)
def test_every_close_gives_its_slot_back_once(node, end):
    a = fresh_address()
    conns = [hold(node, a) for _ in range(CAP)]
    try:
        for _ in range(2):
            end(conns.pop(0))
            conns.append(hold_when_freed(node, a))
            assert_refused(node, a)
    finally:
        close_all(conns)


def test_echo_connections_count_too(node):
    a = fresh_address()
    conns = [hold(node, a, "/echo") for _ in range(CAP)]
    try:
        with open_socket(node.port, 10, a) as sock:
            sock.sendall(upgrade_request("/echo"))
            status, head, _ = read_head(sock)
            assert status == 429, head
        assert_refused(node, a)
        # an echo connection's close frees a slot for a chat one
        client_close(conns.pop(0))
        conns.append(hold_when_freed(node, a))
        assert_refused(node, a)
    finally:
        close_all(conns)
