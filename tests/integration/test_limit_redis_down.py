"""minichat_limit_redis_down open|closed: what the limit checks do when
Redis cannot answer them (docs/directives.md, docs/protocol.md).

Each test runs an nginx of its own (own_nginx.py) once per policy, so it
runs alike in the single-Redis and the Cluster pass:

- Redis unreachable (a port nobody listens on): the upgrade is 503 under
  either policy (protocol.md: "this worker's Redis connection is down"
  comes before the limits); a REST request goes on under `open` (the room
  list comes from MySQL through the relay-worker) and is 503 `unavailable`
  under `closed`.
- Redis connected but the limit scripts failing (redis_faults.FaultyRedis
  in front of a redis-server of the test's own, failing only limit.lua and
  gcra.lua): `open` lets the upgrade and the REST request go on; `closed`
  refuses them with 503 and `unavailable`.  A send is acked under both: with
  a single Redis its check rides in the send's own call
  (send_limited.lua), which works, so a check that cannot be asked is a send
  that cannot be admitted either, and no policy is needed.  Once the
  scripts work again, everything is served again.
"""

import asyncio
import subprocess

import pytest

from conftest import cid, create_room, run_async, token, uid, wait_until
from own_nginx import OwnNginx, free_port, fresh_address, raw_upgrade, upgrade_when_ready, ws_connect
from redis_faults import FaultyRedis

LIMITS = ["minichat_limit_messages rate=50r/s burst=100",
          "minichat_limit_connections rate=1000r/s burst=2000",
          "minichat_limit_user_connections rate=5r/s burst=20",
          "minichat_limit_rest rate=20r/s burst=50",
          "minichat_limit_strikes off"]


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of the test's own; its port."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path), "--daemonize", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True,
                                          timeout=5).stdout.strip() == "PONG", 10, what="the own redis-server")
        yield port
    finally:
        proc.kill()
        proc.wait()


def start_nginx(policy, redis):
    return OwnNginx(LIMITS + ["minichat_limit_redis_down %s" % policy], redis=redis).start()


def stop_nginx(n):
    bad = n.stop()
    assert not bad, bad


async def send_when_linked(c, room, timeout=10):
    """A send on a fresh nginx: its relay link may come up a moment after its
    Redis (the upgrade waits only for Redis)."""
    the_cid = cid()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await c.send_msg(room, "hello", msg_cid=the_cid)
        if r["op"] == "ack" or asyncio.get_running_loop().time() > deadline or "relay" not in r.get("message", ""):
            return r
        await asyncio.sleep(0.1)


def rooms_of(n, user):
    status, _, body = n.get("/api/rooms?limit=5", token(user))
    return status, body


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_redis_unreachable(policy):
    user, other = uid(), uid()
    room = create_room(user, [user, other])   # through the stack: MySQL has it
    n = start_nginx(policy, "127.0.0.1:%d" % free_port())
    try:
        wait_until(lambda: "minichat: redis connect" in n.log(), 10,
                   what="a failed Redis connect in the error log")
        assert raw_upgrade(n.port, user, fresh_address())[0] == 503

        status, body = rooms_of(n, user)
        if policy == "open":
            assert status == 200 and room in [r["id"] for r in body["rooms"]], (status, body)
        else:
            assert status == 503 and body["code"] == "unavailable", (status, body)
    finally:
        stop_nginx(n)


@pytest.mark.parametrize("policy", ["open", "closed"])
@run_async
async def test_limit_scripts_failing(policy, own_redis):
    user, other = uid(), uid()
    room = create_room(user, [user, other])
    proxy = FaultyRedis(own_redis, ["limit", "gcra"])
    n = start_nginx(policy, "127.0.0.1:%d" % proxy.port)
    c = None
    try:
        assert upgrade_when_ready(n.port, other, fresh_address())[0] == 101
        c = await ws_connect(n.port, user)
        r = await send_when_linked(c, room)
        assert r["op"] == "ack" and r["seq"] == 1, r

        proxy.failing = True
        r = await c.send_msg(room, "while the limits fail")
        upgrade = raw_upgrade(n.port, uid(), fresh_address())
        status, body = await asyncio.to_thread(rooms_of, n, user)
        faults = proxy.faults
        # the send's check is inside send_limited.lua, not limit.lua
        assert r["op"] == "ack" and r["seq"] == 2, r
        if policy == "open":
            assert upgrade[0] == 101, upgrade
            assert status == 200 and room in [x["id"] for x in body["rooms"]], (status, body)
        else:
            assert upgrade[0] == 503, upgrade
            assert status == 503 and body["code"] == "unavailable", (status, body)
        # the upgrade's (the address's, then under `open` the user's too:
        # `closed` refuses at the first) and the REST request's
        assert faults >= (3 if policy == "open" else 2), faults
        assert "limit script failed" in n.log()

        proxy.failing = False
        r = await c.send_msg(room, "limits back")
        assert r["op"] == "ack" and r["seq"] == 3, r
        assert raw_upgrade(n.port, uid(), fresh_address())[0] == 101
        assert (await asyncio.to_thread(rooms_of, n, user))[0] == 200
    finally:
        if c is not None:
            await c.close()
        stop_nginx(n)
        proxy.close()

