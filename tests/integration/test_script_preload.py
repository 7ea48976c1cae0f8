"""Every Lua script is loaded behind each Redis handshake, before the first
command a worker sends on the connection.

Without it the first EVALSHA of each script met an empty cache after Redis
restarted (or a connection was remade), and the EVAL fallback sent such a
command again behind commands issued meanwhile: a client's later send could
take a lower seq than its earlier one (seen twice in `make bench` right after a
stack restart).  Here the cache is flushed and the workers' connections are
cut; once the workers have reconnected every script is in the cache, and a
burst of sends from one connection gets its seqs in the order it was sent.
"""
import asyncio
import glob
import hashlib
import os

from conftest import TOP, cid, connect, create_room, redis, run_async, uid, wait_until


def script_shas():
    shas = []
    for path in sorted(glob.glob(os.path.join(TOP, "lua", "*.lua"))):
        with open(path, "rb") as f:
            shas.append(hashlib.sha1(f.read()).hexdigest())
    return shas


def all_cached(shas):
    out = redis("SCRIPT", "EXISTS", *shas)     # one line per script per master
    return out and all(x.strip() == "1" for x in out)


@run_async
async def test_scripts_are_in_the_cache_after_a_reconnect_and_sends_keep_their_order():
    shas = script_shas()
    assert len(shas) >= 10, shas
    redis("SCRIPT", "FLUSH")
    assert not all_cached(shas)
    redis("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    # the workers reconnect after minichat_reconnect_interval and load the
    # scripts behind their handshake, whether or not a client asks anything
    wait_until(lambda: all_cached(shas), timeout=20, what="every script in the cache after the reconnect")

    u = uid()
    room = None
    for _ in range(100):      # the room: once the workers are back
        try:
            room = create_room(u, [u])
            break
        except AssertionError:
            await asyncio.sleep(0.1)
    assert room, "no room after the reconnect"
    c = await connect(u)
    try:
        cids = [cid() for _ in range(20)]
        for i, x in enumerate(cids):
            await c.send({"op": "send", "room": room, "cid": x, "body": "burst %d" % i})
        acks = {}
        while len(acks) < len(cids):
            f = await c.expect("ack")
            acks[f["cid"]] = f["seq"]
        assert [acks[x] for x in cids] == list(range(1, len(cids) + 1)), acks
    finally:
        await c.close()
