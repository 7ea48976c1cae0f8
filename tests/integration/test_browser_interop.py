"""Interoperability with a browser's own WebSocket (headless Chromium), with
and without permessage-deflate.

Chromium always offers permessage-deflate (`permessage-deflate;
client_max_window_bits`).  With compression the page talks to the dev
stack's node a, whose locations have `minichat_ws_deflate on`; without, to
an nginx of the test's own derived from node a with `minichat_ws_deflate
off` (own_nginx.py).  The page's JavaScript opens `new WebSocket(url,
["minichat.v1", "bearer." + jwt])`, sends and receives chat messages with a
Python peer on node b, and closes; what was negotiated is read from the
101 as DevTools' Network domain saw it (webSocketHandshakeResponseReceived)
and from the page's own `ws.extensions`.

It runs in both passes: over ws:// on the single-Redis stack, over wss://
(the dev certificate pinned in Chromium) on the cluster stack.
"""

import contextlib
import json

from cdp import Browser
from conftest import NGINX_PORTS, cid, connect, create_room, http_url, run_async, token, uid
from own_nginx import OwnNginx, upgrade_when_ready
from test_browser import header, server_spki

WAIT = 20.0
PMD_ANSWER = "permessage-deflate; server_no_context_takeover"

# The page's side: one WebSocket kept in window.mc, every frame it receives
# parsed into mc.frames.
OPEN_JS = """
new Promise((resolve, reject) => {
  const mc = window.mc = { frames: [], closed: null };
  mc.ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws', ['minichat.v1', 'bearer.' + %s]);
  mc.ws.onmessage = (e) => mc.frames.push(JSON.parse(e.data));
  mc.ws.onclose = (e) => { mc.closed = { code: e.code, reason: e.reason }; reject(new Error('closed ' + e.code)); };
  mc.ws.onopen = () => resolve({ protocol: mc.ws.protocol, extensions: mc.ws.extensions });
})
"""


def frame_js(op, **fields):
    """JS: the first frame the page received with this op and fields, else null."""
    cond = " && ".join(["f.op === %s" % json.dumps(op)] + ["f[%s] === %s" % (json.dumps(k), json.dumps(v))
                                                            for k, v in fields.items()])
    return "window.mc.frames.find((f) => %s) || null" % cond


async def page_session(port, deflate_expected):
    """The whole exchange on a page served by 127.0.0.1:port."""
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    peer = await connect(b, "b")
    async with chromium(port) as browser:
        page = await browser.new_page("user %d" % a)
        try:
            await page.goto(http_url(port, "/healthz"))
            opened = await page.eval(OPEN_JS % json.dumps(token(a)))
            hello = await page.wait_for(frame_js("hello"), WAIT, "hello")
            assert hello["user"] == a, hello
            want = PMD_ANSWER if deflate_expected else ""
            assert opened == {"protocol": "minichat.v1", "extensions": want}, opened

            # the handshake as the browser's network stack saw it
            sent = page.websocket_events("Network.webSocketWillSendHandshakeRequest", "/ws")
            assert len(sent) == 1, sent
            offer = header(sent[0]["request"]["headers"], "Sec-WebSocket-Extensions") or ""
            assert offer.startswith("permessage-deflate"), offer
            got = page.websocket_events("Network.webSocketHandshakeResponseReceived", "/ws")
            assert len(got) == 1 and got[0]["response"]["status"] == 101, got
            assert header(got[0]["response"]["headers"], "Sec-WebSocket-Extensions") == (want or None), got

            # page -> peer and peer -> page, a message above the deflate
            # threshold and one below it each way
            bodies = ["browser says " + "hello again " * 100, "tiny from the browser"]
            for i, body in enumerate(bodies):
                await page.eval("window.mc.ws.send(%s)" % json.dumps(json.dumps(
                    {"op": "send", "id": 100 + i, "room": room, "cid": cid(), "body": body})))
                ack = await page.wait_for(frame_js("ack", id=100 + i), WAIT, "ack %d" % i)
                m = await peer.expect("msg", room=room, seq=ack["seq"])
                assert m["body"] == body and m["from"] == a, m
            for body in ["peer says " + "welcome back " * 100, "tiny from the peer"]:
                ack = await peer.send_msg(room, body)
                assert ack["op"] == "ack", ack
                m = await page.wait_for(frame_js("msg", room=room, seq=ack["seq"]), WAIT, "msg %d" % ack["seq"])
                assert m["body"] == body and m["from"] == b, m

            # DevTools saw the same messages (inflated) in its frame events
            received = [json.loads(p["response"]["payloadData"])
                        for p in page.websocket_events("Network.webSocketFrameReceived", "/ws")]
            assert [f["body"] for f in received if f.get("op") == "msg"][-2:] == [
                "peer says " + "welcome back " * 100, "tiny from the peer"], received[-4:]

            await page.eval("window.mc.ws.close(1000)")
            closed = await page.wait_for("window.mc.closed", WAIT, "the close")
            assert closed["code"] == 1000, closed
            assert page.exceptions == [], page.exceptions
        finally:
            await page.close()
            await peer.close()


@contextlib.asynccontextmanager
async def chromium(port):
    browser = Browser(list(NGINX_PORTS.values()) + [port], trust_spki=server_spki())
    try:
        await browser.start()
        yield browser
    finally:
        await browser.close()


@run_async
async def test_browser_websocket_with_compression():
    await page_session(NGINX_PORTS["a"], deflate_expected=True)


@run_async
async def test_browser_websocket_without_compression():
    n = OwnNginx(["minichat_ws_deflate off"]).start()
    try:
        # a fresh worker takes upgrades once its Redis connection is up
        assert upgrade_when_ready(n.port, uid())[0] == 101
        await page_session(n.port, deflate_expected=False)
    finally:
        bad = n.stop()
    assert not bad, bad
