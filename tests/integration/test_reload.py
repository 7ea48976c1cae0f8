"""nginx reload (HUP) with clients connected.

On a reload nginx starts new workers and the old ones close their
connections; WebSocket clients get 1001 "going away", reconnect, and the
message path works through the new workers (which open their own Redis and
relay links).  The error-log check after the run catches any alert the old
workers' exit might log, such as a socket left open.
"""

import asyncio
import json
import os
import subprocess

import websockets

from conftest import TOP, cid, connect, create_room, run_async, uid, wait_until

RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))


def reload_nginx(node):
    prefix = os.path.join(RUN, "nginx-" + node)
    subprocess.run(["/usr/sbin/nginx", "-p", prefix, "-c", os.path.join(prefix, "nginx.conf"),
                    "-e", os.path.join(prefix, "error.log"), "-s", "reload"], check=True, timeout=10)


@run_async
async def test_reload_closes_with_1001_and_service_continues():
    u1, u2 = uid(), uid()
    room = create_room(u1, [u1, u2])
    old = await connect(u1, "a")
    peer = await connect(u2, "b")
    try:
        reload_nginx("a")
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(old.ws.recv(), 15))
                # presence events of the peer may come first; nothing else may
                assert frame.get("op") == "presence", \
                    "expected the old worker to close the connection, got %r" % frame
        except websockets.exceptions.ConnectionClosed as e:
            assert e.code == 1001, e

        # the new workers take over; their relay link comes up within a moment
        async def send_once():
            c = await connect(u1, "a")
            try:
                return await c.request({"op": "send", "id": 1, "room": room, "cid": cid(), "body": "after reload"})
            finally:
                await c.close()

        deadline = asyncio.get_running_loop().time() + 20
        while True:
            r = await send_once()
            if r["op"] == "ack" or asyncio.get_running_loop().time() > deadline:
                break
            assert r["op"] == "error" and r["code"] == "unavailable", r
            await asyncio.sleep(0.1)
        assert r["op"] == "ack", r

        m = await peer.expect("msg")
        assert m["body"] == "after reload" and m["seq"] == r["seq"], m
    finally:
        await peer.close()
