"""The JavaScript client library (web/minichat.js) in headless Chromium.

Each test opens a blank page served by node a (/healthz), imports the
library from the stack's nginx (`import('/minichat.js')`, as an app would)
and drives a MiniChatClient from the page's JavaScript; a Python peer on
node b is the other member of the room.  What the library must show:

- it connects and delivers a message sent by another client, and `send`
  resolves with the ack's seq;
- after a disconnect (the client's socket dropped, or the server closing it
  with 1001 on an nginx reload) it reconnects by itself, resumes the room
  and delivers the messages sent meanwhile once each, in order;
- a send made while disconnected, or whose ack was lost, is sent again with
  the same cid and stored once;
- a close the client must not retry (4001, the token expired, with a fixed
  token) stops it;
- a disconnect by the app's backend (server API, close 4005) stops it with
  the close's code and reason: it stays closed (nothing blocks its
  reconnects, so a retry would show) until the app calls connect(), then it
  resumes with the same session id, delivers what was sent meanwhile once
  each, in order, and sends what was written while it was closed.

Reconnects are held back by a gate in the page (the `token` function waits
for it), so that messages are certainly sent while the page is offline.
Like test_browser.py, this runs in both passes: over ws:// with single
Redis, over wss:// with the Redis Cluster.
"""

import asyncio
import json

from conftest import NGINX_PORTS, create_room, connect, http_url, query, run_async, token, uid, wait_until
from test_browser import chromium
from test_reload import reload_nginx
from test_server_api import srv

WAIT = 20.0

# The page's harness: window.t records what the client reports; t.gate()
# holds the next connects until t.open(); t.lossy drops incoming acks (an
# ack lost on the way) and keeps them in t.lost; t.skipMsgs drops that many
# incoming msgs (a hole in the room, as a slow or failed delivery leaves);
# t.twice hands every msg to the client twice.
SETUP_JS = """
(async () => {
  const { MiniChatClient } = await import('/minichat.js');
  const t = window.t = { msgs: [], states: [], errors: [], resumed: [], hello: null, lossy: false, lost: [],
                         skipMsgs: 0, twice: false, gateP: null, sent: [] };
  t.gate = () => { t.gateP = new Promise((r) => { t.open = () => { t.gateP = null; r(); }; }); };
  // A WebSocket whose incoming acks can be lost, and whose outgoing frames are recorded.
  class LossyWebSocket extends WebSocket {
    send(data) { t.sent.push(JSON.parse(data)); super.send(data); }
    set onmessage(fn) {
      super.onmessage = (ev) => {
        const f = JSON.parse(ev.data);
        if (t.lossy && f.op === 'ack') { t.lost.push(f); return; }
        if (f.op === 'msg' && t.skipMsgs > 0) { t.skipMsgs--; return; }
        fn(ev);
        if (f.op === 'msg' && t.twice) fn(ev);
      };
    }
    get onmessage() { return super.onmessage; }
  }
  const tok = %(token)s;
  const c = window.c = new MiniChatClient({
    url: (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws',
    token: %(token_is_fn)s ? async () => { if (t.gateP) await t.gateP; return tok; } : tok,
    WebSocket: LossyWebSocket,
    backoff: { baseMs: 100, maxMs: 1000 },
  });
  c.on('message', (m) => t.msgs.push(m));
  c.on('state', (s) => t.states.push(s));
  c.on('hello', (h) => { t.hello = h; });
  c.on('resumed', (r) => t.resumed.push(r));
  c.on('error', (e) => t.errors.push({ code: e.code, message: e.message }));
  c.connect();
  return true;
})()
"""


async def open_client(browser, user, token_is_fn=True, tok=None):
    """A page on node a with a connected MiniChatClient for `user`."""
    page = await browser.new_page("client library, user %d" % user)
    await page.goto(http_url(NGINX_PORTS["a"], "/healthz"))
    await page.eval(SETUP_JS % {"token": json.dumps(tok or token(user)),
                                "token_is_fn": "true" if token_is_fn else "false"})
    await page.wait_for("window.t.hello && c.state === 'online'", WAIT, "hello through the library")
    return page


async def seqs_of(page, room):
    return await page.eval("t.msgs.filter((m) => m.room === %d).map((m) => m.seq)" % room)


async def wait_online_again(page, hellos):
    """Wait until the client said hello `hellos` times in all."""
    await page.wait_for("t.states.filter((s) => s.state === 'online').length >= %d && c.state === 'online'"
                        % hellos, WAIT, "reconnect number %d" % (hellos - 1))


def stored(room):
    """The room's messages in MySQL as (seq, cid), in seq order."""
    rows = query("SELECT seq, client_msg_id FROM messages WHERE room_id = %s ORDER BY seq", (room,))
    return [(r["seq"], r["client_msg_id"]) for r in rows]


async def no_page_errors(page):
    assert page.exceptions == [], page.exceptions
    assert await page.eval("t.errors") == []


@run_async
async def test_receive_and_send():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    peer = await connect(b, "b")
    async with chromium() as browser:
        page = await open_client(browser, a)
        try:
            hello = await page.eval("t.hello")
            assert hello["user"] == a and hello["node"] == "a", hello
            assert await page.eval("c.user") == a

            # a message from another client arrives as a `message` event
            ack = await peer.send_msg(room, "from the peer")
            assert ack["op"] == "ack", ack
            m = await page.wait_for("t.msgs.find((m) => m.body === 'from the peer')", WAIT, "the peer's message")
            assert (m["room"], m["seq"], m["from"], m["cid"]) == (room, ack["seq"], b, ack["cid"]), m

            # send resolves with the ack's seq; the peer gets that message
            got = await page.eval("c.send(%d, 'from the library')" % room)
            assert got["room"] == room and got["seq"] == ack["seq"] + 1, got
            assert isinstance(got["cid"], str) and len(got["cid"]) == 32, got
            pm = await peer.expect("msg", room=room, seq=got["seq"])
            assert pm["body"] == "from the library" and pm["cid"] == got["cid"] and pm["from"] == a, pm
            # the sender's own message is the ack, not a `message` event
            assert await seqs_of(page, room) == [ack["seq"]]

            # read and typing go through
            assert await page.eval("c.read(%d, %d)" % (room, got["seq"])) == got["seq"]
            assert await page.eval("c.typing(%d)" % room) is True
            assert await page.eval("c.typing(%d)" % room) is False       # throttled: 2 s per room
            t = await peer.expect("typing", room=room)
            assert t["user"] == a, t
            await no_page_errors(page)
        finally:
            await page.close()
            await peer.close()


async def check_resume_after(page, peer, room, disconnect, reconnect=None):
    """Messages sent while the page is offline arrive once each, in order,
    after the library reconnects; `disconnect` takes the page offline,
    `reconnect` (default: open the gate) brings it back."""
    first = await peer.send_msg(room, "before")
    await page.wait_for("t.msgs.some((m) => m.seq === %d)" % first["seq"], WAIT, "the live message")

    await page.eval("t.gate()")
    await disconnect()
    await page.wait_for("c.state !== 'online'", WAIT, "the disconnect")
    missed = [await peer.send_msg(room, "missed %d" % i) for i in range(5)]
    assert [x["seq"] for x in missed] == list(range(first["seq"] + 1, first["seq"] + 6)), missed
    assert await page.eval("c.state") != "online"

    if reconnect is None:
        await page.eval("t.open()")
    else:
        await reconnect()
    await wait_online_again(page, 2)
    # the resume after the hello brings them, before any new live message
    await page.wait_for("t.msgs.some((m) => m.seq === %d)" % missed[-1]["seq"], WAIT, "the missed messages")
    # and one more live after the reconnect
    last = await peer.send_msg(room, "after")
    await page.wait_for("t.msgs.some((m) => m.seq === %d)" % last["seq"], WAIT, "the message after the reconnect")

    assert await seqs_of(page, room) == list(range(first["seq"], last["seq"] + 1))
    bodies = await page.eval("t.msgs.filter((m) => m.room === %d).map((m) => m.body)" % room)
    assert bodies == ["before"] + ["missed %d" % i for i in range(5)] + ["after"], bodies
    resumed = await page.eval("t.resumed")
    assert {"room": room, "recovered": True} in [{"room": r["room"], "recovered": r["recovered"]} for r in resumed], \
        resumed
    # the reconnect used the session id of the first hello
    hellos = [s for s in await page.eval("t.states") if s["state"] == "online"]
    assert hellos[1]["sid"] == hellos[0]["sid"], hellos
    await no_page_errors(page)


@run_async
async def test_dropped_connection_resumes_exactly_once_in_order():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    peer = await connect(b, "b")
    async with chromium() as browser:
        page = await open_client(browser, a)
        try:
            async def drop():
                await page.eval("c.drop()")
            await check_resume_after(page, peer, room, drop)
        finally:
            await page.close()
            await peer.close()


@run_async
async def test_server_close_1001_on_reload_resumes():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    peer = await connect(b, "b")
    async with chromium() as browser:
        page = await open_client(browser, a)
        try:
            async def reload():
                reload_nginx("a")
            await check_resume_after(page, peer, room, reload)
            closes = [s for s in await page.eval("t.states") if s["state"] == "offline"]
            assert closes and closes[0]["code"] == 1001, closes
        finally:
            await page.close()
            await peer.close()


@run_async
async def test_hole_filled_by_resume_and_duplicates_dropped():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    peer = await connect(b, "b")
    async with chromium() as browser:
        page = await open_client(browser, a)
        try:
            first = await peer.send_msg(room, "m0")
            await page.wait_for("t.msgs.length === 1", WAIT, "the first message")
            # m1 never reaches the client, every later msg comes twice: the
            # client sees m2 above a hole, holds it, resumes from m0 and
            # hands out m1, m2, m3 once each, in order
            await page.eval("t.skipMsgs = 1; t.twice = true")
            for i in (1, 2, 3):
                await peer.send_msg(room, "m%d" % i)
            await page.wait_for("t.msgs.length >= 4", WAIT, "the messages after the hole")
            resume = [f for f in await page.eval("t.sent") if f["op"] == "resume"]
            assert [f["rooms"] for f in resume] == [{str(room): first["seq"]}], resume
            last = await peer.send_msg(room, "m4")
            await page.wait_for("t.msgs.some((m) => m.seq === %d)" % last["seq"], WAIT, "m4")
            assert await seqs_of(page, room) == list(range(first["seq"], last["seq"] + 1))
            assert [m["body"] for m in await page.eval("t.msgs")] == ["m0", "m1", "m2", "m3", "m4"]
            await no_page_errors(page)
        finally:
            await page.close()
            await peer.close()


@run_async
async def test_send_while_offline_and_lost_ack_stored_once():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    peer = await connect(b, "b")
    async with chromium() as browser:
        page = await open_client(browser, a)
        try:
            # 1. sent while disconnected: queued, sent after the reconnect
            await page.eval("t.gate(); c.drop()")
            await page.wait_for("c.state !== 'online'", WAIT, "the disconnect")
            await page.eval("window.p1 = c.send(%d, 'written offline'); true" % room)
            assert await page.eval("c.unacked().length") == 1
            assert not [f for f in await page.eval("t.sent") if f["op"] == "send"]
            await page.eval("t.open()")
            one = await page.eval("p1")
            pm = await peer.expect("msg", room=room, seq=one["seq"])
            assert pm["body"] == "written offline" and pm["cid"] == one["cid"], pm

            # 2. the ack is lost: the server stored the message, the client
            # never heard; after the reconnect it sends the same cid again
            # and gets the first ack back
            await page.eval("t.lossy = true; window.p2 = c.send(%d, 'ack lost'); true" % room)
            lost = await page.wait_for("t.lost[0]", WAIT, "the ack that gets lost")
            pm = await peer.expect("msg", room=room, seq=lost["seq"])
            assert pm["body"] == "ack lost", pm
            await page.eval("t.lossy = false; c.drop()")
            two = await page.eval("p2")
            assert (two["seq"], two["cid"]) == (lost["seq"], lost["cid"]), (two, lost)
            sends = [f for f in await page.eval("t.sent") if f["op"] == "send" and f["cid"] == lost["cid"]]
            assert len(sends) == 2 and sends[0]["body"] == sends[1]["body"] == "ack lost", sends
            assert await page.eval("c.unacked()") == []

            # stored and delivered once: the peer got no second copy, and the
            # room's history holds each message once
            nxt = await peer.send_msg(room, "next")
            assert nxt["seq"] == lost["seq"] + 1, nxt

            # the client's own messages were answers to its sends, not events
            await page.wait_for("t.msgs.some((m) => m.seq === %d)" % nxt["seq"], WAIT, "the peer's next message")
            assert [m["body"] for m in await page.eval("t.msgs")] == ["next"]
            assert [f for f in peer.frames if f.get("op") == "msg" and f.get("cid") == lost["cid"]] == [pm]
            page_ = await peer.request({"op": "history", "room": room, "limit": 50})
            cids = [m["cid"] for m in page_["messages"]]
            assert cids.count(one["cid"]) == 1 and cids.count(lost["cid"]) == 1, cids
            want = [(one["seq"], one["cid"]), (lost["seq"], lost["cid"]), (nxt["seq"], nxt["cid"])]
            wait_until(lambda: stored(room) == want, what="the three messages in MySQL, once each")
            await no_page_errors(page)
        finally:
            await page.close()
            await peer.close()


@run_async
async def test_token_expired_stops_without_a_new_token():
    a = uid()
    async with chromium() as browser:
        # a fixed token that expires in 3 s: close 4001, and no reconnect
        page = await open_client(browser, a, token_is_fn=False, tok=token(a, ttl=3))
        try:
            closed = await page.wait_for("t.states.find((s) => s.state === 'closed') || null", WAIT, "close 4001")
            assert closed["code"] == 4001, closed
            errors = await page.eval("t.errors")
            assert [e["code"] for e in errors] == ["unauthorized"], errors
            states = [s["state"] for s in await page.eval("t.states")]
            assert states == ["connecting", "online", "closed"], states
            assert page.exceptions == [], page.exceptions
        finally:
            await page.close()


@run_async
async def test_disconnect_by_the_backend_4005_stops_until_connect():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    other = create_room(a, [a, b])      # the send while closed goes here, not between the resumed seqs
    peer = await connect(b, "b")
    why = "moved to another device"
    async with chromium() as browser:
        page = await open_client(browser, a)
        try:
            async def disconnect():
                status, body = srv("POST", "/users/%d/disconnect" % a, "b", {"reason": why})
                assert status == 202 and body == {"user": a}, (status, body)
                closed = await page.wait_for("t.states.find((s) => s.state === 'closed') || null", WAIT,
                                             "close 4005")
                assert (closed["code"], closed["reason"]) == (4005, why), closed
                # written while closed: kept, sent after connect()
                await page.eval("window.p1 = c.send(%d, 'written while closed'); true" % other)

            async def reconnect():
                # the gate open, a reconnect would go through at once (backoff
                # 100 ms .. 1 s): give it several chances, then it must still
                # be closed, with nothing tried since the close
                await page.eval("t.open()")
                await asyncio.sleep(2.5)
                states = [s["state"] for s in await page.eval("t.states")]
                assert states == ["connecting", "online", "closed"], states
                assert await page.eval("c.state") == "closed"
                assert await page.eval("c.unacked().length") == 1
                await page.eval("c.connect()")

            await check_resume_after(page, peer, room, disconnect, reconnect)
            states = [s["state"] for s in await page.eval("t.states")]
            assert states == ["connecting", "online", "closed", "connecting", "online"], states
            one = await page.eval("p1")
            assert one["room"] == other, one
            pm = await peer.expect("msg", room=other, seq=one["seq"])
            assert pm["body"] == "written while closed" and pm["cid"] == one["cid"], pm
            assert await page.eval("c.unacked()") == []
        finally:
            await page.close()
            await peer.close()
