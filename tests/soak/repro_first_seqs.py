#!/usr/bin/python3
"""Repro: the first messages of a fresh room are lost in live delivery under a burst.

ROOMS fresh rooms, each with SENDERS members on node a and SENDERS on node b
plus one silent listener per node.  All senders of all rooms send MSGS
messages at once (pipelined).  Every send is acked with dense seqs and MySQL
gets every row, but listeners sometimes miss seqs 1..k of a room — on one
node or both.  Prints, per round, the rooms with missing seqs.

    /usr/bin/python3 tests/soak/repro_first_seqs.py [rounds]
"""

import asyncio
import json
import random
import sys
import time

import websockets

sys.path.insert(0, __import__("os").path.dirname(__file__))
from soak import NGINX_PORTS, SUBPROTOCOL, create_room, make_token, secret  # noqa: E402

ROOMS, SENDERS, MSGS = 20, 2, 15
KEY = secret()


async def conn(user, node):
    ws = await websockets.connect("ws://127.0.0.1:%d/ws?token=%s" % (NGINX_PORTS[node], make_token(user, KEY)),
                                  subprotocols=[SUBPROTOCOL], max_queue=None, ping_interval=None)
    assert json.loads(await ws.recv())["op"] == "hello"
    return ws


async def one_round():
    base = random.randint(10**9, 2 * 10**9)
    rooms = []
    for r in range(ROOMS):
        users = [base + r * 10 + i for i in range(2 * SENDERS + 2)]
        rid = create_room(users[0], users[1:], "ab"[r % 2], KEY)
        rooms.append((rid, users))
    listeners, senders = {}, []
    for rid, users in rooms:
        listeners[(rid, "a")] = await conn(users[-2], "a")
        listeners[(rid, "b")] = await conn(users[-1], "b")
        for i in range(2 * SENDERS):
            senders.append((rid, await conn(users[i], "ab"[i % 2])))

    async def blast(rid, ws):
        for i in range(MSGS):
            await ws.send(json.dumps({"op": "send", "id": i, "room": rid, "cid": "%x" % random.getrandbits(60),
                                      "body": "b%d" % i}))
        acks = 0
        while acks < MSGS:
            f = json.loads(await ws.recv())
            if f["op"] == "ack":
                acks += 1
            elif f["op"] == "error":
                raise AssertionError(f)

    await asyncio.gather(*(blast(rid, ws) for rid, ws in senders))
    n = 2 * SENDERS * MSGS
    lost = []
    deadline = time.monotonic() + 3
    for (rid, node), ws in listeners.items():
        seqs = []
        while len(seqs) < n:
            try:
                f = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                break
            seqs.append(f["seq"])
        if seqs != list(range(1, n + 1)):
            lost.append("room %d node %s: missing %s" % (rid, node, sorted(set(range(1, n + 1)) - set(seqs))))
    for ws in list(listeners.values()) + [w for _, w in senders]:
        await ws.close()
    return lost


async def main(rounds):
    bad = 0
    for i in range(rounds):
        lost = await one_round()
        bad += bool(lost)
        print("round %d: %s" % (i + 1, "; ".join(lost) if lost else "ok"), flush=True)
    print("%d of %d rounds lost messages" % (bad, rounds))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)))
