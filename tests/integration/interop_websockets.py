"""The session of node/ws_interop.js, played by Python `websockets`.

play(a, b, deflate) returns the same report as the Node script does, so
test_interop.py holds one set of assertions for both clients.  As there, it
judges nothing beyond "the frame waited for came in time"; a frame that
never comes raises.

websockets hands out messages inflated; the RSV1 bit of each server frame
is taken in the permessage-deflate extension's decode step, which sees
every frame before it is inflated (RecordingDeflateFactory: websockets'
own offer and extension, recording).  Without the extension websockets
refuses any frame with RSV1 (a protocol error fails the session), so there
every message is reported with RSV1 clear.  A ping from the server is seen
in the connection's pong(), which websockets calls to answer it.
"""

import asyncio
import json
import os

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Opcode

from conftest import SUBPROTOCOL, Client, rest, token, ws_url

WAIT = 10.0


class Conn(Client):
    """A conftest Client that also records, per data message, its size on
    the wire once inflated and (with the extension) its frame's RSV1, and
    the server's pings."""

    def __init__(self, ws, user, node):
        super().__init__(ws, user, node)
        self.sizes = []          # (op, seq, bytes) of every message, in order
        self.pings = 0
        receive = ws.recv

        async def recv_and_measure():
            raw = await receive()
            frame = json.loads(raw) if isinstance(raw, str) else {}
            self.sizes.append((frame.get("op"), frame.get("seq"), len(raw.encode() if isinstance(raw, str) else raw)))
            return raw
        ws.recv = recv_and_measure
        pong = ws.pong

        async def answer(data=b""):
            self.pings += 1
            await pong(data)
        ws.pong = answer

    def wire(self):
        rsv1 = self.ws.extensions[0].rsv1 if self.ws.extensions else [False] * len(self.sizes)
        return [{"op": op, "seq": seq, "bytes": n, "rsv1": rsv1[i] if i < len(rsv1) else None}
                for i, (op, seq, n) in enumerate(self.sizes)]

    def summary(self):
        return {"protocol": self.ws.subprotocol,
                "extensions": self.ws.response_headers.get("Sec-WebSocket-Extensions"),
                "negotiated": ",".join(e.name for e in self.ws.extensions),
                "wire": self.wire()}

    async def closed_with(self):
        await asyncio.wait_for(self.ws.wait_closed(), WAIT)
        return {"code": self.ws.close_code, "reason": self.ws.close_reason}

    async def drain_until_closed(self):
        """Reads (and records) until the server's close; its code and reason."""
        try:
            while True:
                await self.recv()
        except websockets.exceptions.ConnectionClosed:
            pass
        return await self.closed_with()


class RecordingDeflateFactory(ClientPerMessageDeflateFactory):
    """websockets' own permessage-deflate offer (its defaults), whose
    extension records the RSV1 of every data frame before inflating it: it
    is made during the handshake, so it sees the first frame too."""

    def __init__(self):
        super().__init__(compress_settings={"memLevel": 5})

    def process_response_params(self, params, accepted_extensions):
        ext = super().process_response_params(params, accepted_extensions)
        ext.rsv1 = []
        decode = ext.decode

        def recording_decode(frame, *, max_size=None):
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                ext.rsv1.append(frame.rsv1)
            return decode(frame, max_size=max_size)
        ext.decode = recording_decode
        return ext


async def open_conn(user, node, deflate, tok=None, extra="", headers=None, protocols=None):
    ws = await websockets.connect(ws_url(node, tok, extra), subprotocols=protocols or [SUBPROTOCOL],
                                  extra_headers=headers or {}, compression="deflate" if deflate else None,
                                  extensions=[RecordingDeflateFactory()] if deflate else None,
                                  open_timeout=WAIT, close_timeout=2, ping_interval=None, max_size=2**20)
    c = Conn(ws, user, node)
    c.hello = await c.expect("hello", timeout=WAIT)
    assert c.hello["user"] == user, c.hello
    return c


async def _play(a, b, deflate, short_token, max_message):
    ta, tb = token(a), token(b)
    report = {"auth": {}, "closes": {}}
    silent = await open_conn(b, "b", deflate, tb)
    expiring = await open_conn(b, "b", deflate, protocols=[SUBPROTOCOL, "bearer." + short_token])

    a_header = await open_conn(a, "a", deflate, headers={"Authorization": "Bearer " + ta})
    a_proto = await open_conn(a, "a", deflate, protocols=[SUBPROTOCOL, "bearer." + ta])
    cb = await open_conn(b, "b", deflate, tb)
    for how, c in (("header", a_header), ("subprotocol", a_proto), ("query", cb)):
        report["auth"][how] = {"user": c.hello["user"], "node": c.hello["node"], "protocol": c.ws.subprotocol,
                               "extensions": c.summary()["extensions"]}

    status, body = rest("POST", "/api/rooms", "a", ta, {"kind": "group", "title": "python websockets",
                                                         "members": [b]})
    report["room"] = {"status": status, "body": body}
    room = body["id"]

    tag = os.urandom(4).hex()
    small, large = "hello from python websockets", "compress me please " * 40
    acks = [await a_header.send_msg(room, body, "py-%s-%d" % (tag, i)) for i, body in enumerate((small, large))]
    report["acks"] = [x.get("seq") for x in acks]
    report["received"] = []
    for x, body in zip(acks, (small, large)):
        mb = await cb.expect("msg", timeout=WAIT, room=room, seq=x["seq"])
        ma = await a_proto.expect("msg", timeout=WAIT, room=room, seq=x["seq"])
        report["received"].append({"seq": x["seq"], "b": mb["body"] == body, "other_device": ma["body"] == body,
                                   "from": mb["from"]})

    sid = cb.hello["sid"]
    report["b_wire"] = cb.summary()
    await cb.ws.close(1000, "bye")
    report["closes"]["normal"] = await cb.closed_with()
    missed = [(await a_header.send_msg(room, "missed %d" % i, "py-%s-missed-%d" % (tag, i)))["seq"] for i in range(2)]
    cb = await open_conn(b, "b", deflate, tb, extra="sid=" + sid)
    resumed = await cb.request({"op": "resume", "rooms": {str(room): acks[1]["seq"]}}, timeout=WAIT)
    replayed = [f["seq"] for f in cb.frames if f["op"] == "msg" and f["room"] == room]
    report["resume"] = {"sid_kept": cb.hello["sid"] == sid, "resumed_session": cb.hello["resumed"],
                        "missed": missed, "replayed": replayed, "recovered": resumed.get("recovered"),
                        "seq": resumed.get("seq")}

    # 64 bytes short of the limit, as compact JSON (what the Node client sends)
    req = {"op": "send", "id": 40, "room": room, "cid": "py-%s-big" % tag, "body": ""}
    shell = len(json.dumps(req, separators=(",", ":")))
    req["body"] = "x" * (max_message - 64 - shell)
    await a_header.send(json.dumps(req, separators=(",", ":")))
    big_ack = await a_header.expect("ack", timeout=WAIT, id=40)
    big_msg = await cb.expect("msg", timeout=WAIT, room=room, seq=big_ack["seq"])
    report["big"] = {"request_bytes": shell + len(req["body"]), "delivered": big_msg["body"] == req["body"],
                     "seq": big_ack["seq"]}
    report["b_resumed_wire"] = cb.summary()

    # websockets checks that the pong carries the ping's payload
    await asyncio.wait_for(await a_header.ws.ping(b"interop-ping"), WAIT)
    report["pong"] = ["interop-ping"]

    too_big = await open_conn(a, "a", deflate, headers={"Authorization": "Bearer " + ta})
    await too_big.send('{"op":"send","body":"' + "y" * max_message + '"}')
    report["closes"]["too_big"] = await too_big.drain_until_closed()
    binary = await open_conn(a, "a", deflate, protocols=[SUBPROTOCOL, "bearer." + ta])
    await binary.send(b'{"op":"typing"}')
    report["closes"]["binary"] = await binary.drain_until_closed()

    expired = await expiring.expect("error", timeout=WAIT, code="unauthorized")
    report["closes"]["expired"] = dict(error=expired["message"], **await expiring.drain_until_closed())
    try:
        c = await websockets.connect(ws_url("a"), subprotocols=[SUBPROTOCOL, "bearer.not-a-jwt"], open_timeout=WAIT)
        await c.close()
        report["closes"]["bad_token_status"] = 101
    except websockets.exceptions.InvalidStatusCode as e:
        report["closes"]["bad_token_status"] = e.status_code

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not silent.pings and loop.time() < deadline:
        await asyncio.sleep(0.1)
    report["server_ping"] = {"pings": silent.pings, "open": silent.ws.open}

    for c in (a_header, a_proto, cb, silent):
        await c.ws.close(1000)
    report["a_wire"] = a_header.summary()
    return report


def play(a, b, deflate, short_token, max_message):
    return asyncio.run(asyncio.wait_for(_play(a, b, deflate, short_token, max_message), 120))
