"""Redis memory is bounded without giving up a guarantee.

Every Redis of the stack (the single one, or every node of the cluster) runs
with a `maxmemory` and `maxmemory-policy noeviction` (conf/redis.conf.in,
conf/redis-cluster.conf.in): the keys the guarantees rest on, several of
them with a TTL, can never be evicted (docs/ARCHITECTURE.md, "Redis keys").
A full Redis refuses writes instead: a send answers `unavailable` with no
seq spent, history is still served, and the retry with the same cid once
memory is back is the one message.
"""

from conftest import (CLUSTER_PORTS, REDIS_MODE, REDIS_PORT, _redis_cli, cluster_masters, connect, create_room,
                      run_async, uid)


def redis_ports():
    return CLUSTER_PORTS if REDIS_MODE == "cluster" else [REDIS_PORT]


def config(port, name):
    out = _redis_cli(port, ["CONFIG", "GET", name])
    assert out[0] == name, out
    return out[1]


def test_every_redis_is_bounded_and_evicts_nothing():
    for port in redis_ports():
        assert int(config(port, "maxmemory")) > 0, "redis on %d has no maxmemory" % port
        assert config(port, "maxmemory-policy") == "noeviction", "redis on %d may evict keys" % port


@run_async
async def test_a_full_redis_refuses_sends_and_loses_nothing():
    a = uid()
    room = create_room(a, [a, uid()])
    c = await connect(a, "a")
    ports = cluster_masters() if REDIS_MODE == "cluster" else [REDIS_PORT]
    limits = {port: config(port, "maxmemory") for port in ports}
    try:
        r = await c.send_msg(room, "before")
        assert r["op"] == "ack" and r["seq"] == 1, r

        for port in ports:
            _redis_cli(port, ["CONFIG", "SET", "maxmemory", "1"])
        try:
            refused = await c.send_msg(room, "while full", msg_cid="full-1")
            page = await c.request({"op": "history", "room": room})
        finally:
            for port, limit in limits.items():
                _redis_cli(port, ["CONFIG", "SET", "maxmemory", limit])
        assert refused["op"] == "error" and refused["code"] == "unavailable", refused
        assert [m["body"] for m in page["messages"]] == ["before"], page

        # nothing was spent: the retry is seq 2, and only once
        r = await c.send_msg(room, "while full", msg_cid="full-1")
        assert r["op"] == "ack" and r["seq"] == 2, r
        again = await c.send_msg(room, "while full", msg_cid="full-1")
        assert again["op"] == "ack" and again["seq"] == 2, again
    finally:
        await c.close()
