"""The web client (web/) end to end, in two headless Chromium sessions.

Alice's page is served by node a, Bob's by node b; each page talks to its own
node over WebSocket, so every message crosses the relay.  The pages are
driven like a person would: keyboard input in the fields, mouse clicks on
the buttons.  Demo users come from /demo/tokens.json (dev stack only).

Chromium is Debian's (/usr/bin/chromium, installed by scripts/setup.sh),
driven over the DevTools protocol by tests/integration/cdp.py.  Every page's
WebSocket is checked in the DevTools Network domain: the token goes as a
`bearer.<JWT>` subprotocol entry, never in the URL.
"""

import base64
import contextlib
import asyncio
import hashlib
import json
import os
import random
import subprocess

import pytest

from cdp import Browser
from conftest import NGINX_PORTS, RUN, TLS, http_url, run_async, urlopen

ALICE, BOB = 1, 2
WAIT = 20.0


def page_url(node):
    return http_url(NGINX_PORTS[node], "/")


def demo_users(node="a"):
    with urlopen(page_url(node) + "demo/tokens.json", 5) as r:
        return {u["id"]: u for u in json.load(r)["users"]}


def server_spki():
    """On a TLS stack: what Chromium pins to accept the dev certificate
    (base64 SHA-256 of its public key, DER); None otherwise."""
    if not TLS:
        return None
    der = subprocess.run(["openssl", "x509", "-in", os.path.join(RUN, "tls", "server.crt"), "-noout", "-pubkey"],
                         check=True, capture_output=True, timeout=10).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=der,
                         check=True, capture_output=True, timeout=10).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextlib.asynccontextmanager
async def chromium():
    browser = Browser(NGINX_PORTS.values(), trust_spki=server_spki())
    try:
        await browser.start()
        yield browser
    finally:
        await browser.close()


async def open_as(browser, node, user):
    """A fresh browser session on `node`'s page, signed in as demo user `user`."""
    page = await browser.new_page("user %d on node %s" % (user, node))
    await page.goto(page_url(node))
    await page.wait_for("document.body.dataset.ready === '1'", WAIT, "the demo user list")
    await page.eval("document.querySelector('[data-testid=user-select]').value = '%d'" % user)
    await page.click("[data-testid=login]")
    await wait_online(page, node, user)
    check_token_stays_out_of_the_url(page)
    return page


def header(headers, name):
    """A header's value from DevTools' name -> value dict, whatever the case."""
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def check_token_stays_out_of_the_url(page):
    """The page's WebSocket carried its token as a `bearer.` subprotocol
    entry, not in the URL; the 101 names minichat.v1 alone."""
    created = page.websocket_events("Network.webSocketCreated", "/ws")
    assert created and all("token" not in p["url"] for p in created), created
    sent = page.websocket_events("Network.webSocketWillSendHandshakeRequest", "/ws")[-1]
    offered = [v.strip() for v in header(sent["request"]["headers"], "Sec-WebSocket-Protocol").split(",")]
    assert offered[0] == "minichat.v1" and len(offered) == 2 and offered[1].startswith("bearer."), offered
    answer = page.websocket_events("Network.webSocketHandshakeResponseReceived", "/ws")[-1]["response"]
    assert answer["status"] == 101 and header(answer["headers"], "Sec-WebSocket-Protocol") == "minichat.v1", answer


async def wait_online(page, node, user):
    await page.wait_for("document.querySelector('[data-testid=conn-status]').dataset.state === 'online'"
                        " && document.querySelector('[data-testid=node]').dataset.node === '%s'"
                        " && document.querySelector('[data-testid=me]').dataset.user === '%d'" % (node, user),
                        WAIT, "hello from node %s" % node)


async def create_room_in_page(page, title, members):
    """Create a room through the page's form; returns its id once it is open."""
    for m in members:
        box = "[data-testid=new-room-member-%d]" % m
        # a click can land on a moving layout (the room list renders as the
        # page connects): click until the box is checked
        for _ in range(20):
            await page.click(box)
            if await page.eval("document.querySelector(%s).checked" % json.dumps(box)):
                break
            await asyncio.sleep(0.1)
    await page.type_into("[data-testid=new-room-title]", title)
    await page.click("[data-testid=create-room]")
    room = await page.wait_for(
        "(() => { const t = document.querySelector('[data-testid=room-title]');"
        " return t.textContent === %s && t.dataset.room ? Number(t.dataset.room) : 0; })()" % json.dumps(title),
        WAIT, "room %r open" % title)
    return room


async def send_in_page(page, body):
    """Type a message in the open room and press Enter; returns its seq once acked."""
    await page.type_into("[data-testid=composer]", body)
    await page.press_enter()
    return await message_seq(page, body)


def message_expr(body, sender=None):
    """JS: the seq of the (acked or delivered) message with this body in the open room, else 0."""
    cond = "e.querySelector('[data-testid=message-body]').textContent === %s" % json.dumps(body)
    if sender is not None:
        cond += " && e.dataset.from === '%d'" % sender
    return ("(() => { const e = [...document.querySelectorAll("
            "'[data-testid=messages] [data-testid=message][data-seq]')].find(e => %s);"
            " return e ? Number(e.dataset.seq) : 0; })()" % cond)


async def message_seq(page, body, sender=None):
    return await page.wait_for(message_expr(body, sender), WAIT, "message %r" % body)


def badge_expr(room):
    """JS: the unread badge's count of a room in the list (null while the room is not listed)."""
    return ("(() => { const b = document.querySelector("
            "'[data-testid=room-item][data-room=\"%d\"] [data-testid=unread-badge]');"
            " return b ? b.dataset.count : null; })()" % room)


async def wait_badge(page, room, count, timeout=WAIT):
    try:
        await page.wait_for("%s === '%d'" % (badge_expr(room), count), timeout,
                            "room %d listed with unread badge %d" % (room, count))
    except AssertionError as e:
        raise AssertionError("%s; the badge shows %r (null: room not listed)"
                             % (e, await page.eval(badge_expr(room)))) from None


async def no_errors(*pages):
    for p in pages:
        assert p.exceptions == [], (p.name, p.exceptions)
        shown = await p.shown_errors()
        assert not [s for s in shown if s.startswith("error")], (p.name, shown)


def tag():
    return "%08x" % random.getrandbits(32)


@run_async
async def test_message_typed_in_one_appears_in_other():
    users = demo_users()
    assert users[ALICE]["name"] and users[BOB]["name"], users
    async with chromium() as browser:
        a = await open_as(browser, "a", ALICE)
        b = await open_as(browser, "b", BOB)
        try:
            title = "browser " + tag()
            room = await create_room_in_page(a, title, [BOB])

            body = "hello Bob " + tag()
            seq = await send_in_page(a, body)
            assert seq >= 1

            # Bob has no room open: the room shows up in his list with one unread.
            await wait_badge(b, room, 1)
            await b.click("[data-testid=room-item][data-room=\"%d\"]" % room)
            assert await message_seq(b, body, sender=ALICE) == seq

            # And back, from node b to node a, into the room Alice has open.
            reply = "hi Alice " + tag()
            rseq = await send_in_page(b, reply)
            assert rseq == seq + 1
            assert await message_seq(a, reply, sender=BOB) == rseq
            await no_errors(a, b)
        finally:
            await a.close()
            await b.close()


@run_async
async def test_unread_badge_drops_when_read():
    async with chromium() as browser:
        a = await open_as(browser, "a", ALICE)
        b = None
        try:
            title = "unread " + tag()
            room = await create_room_in_page(a, title, [BOB])
            body = "unread by Bob " + tag()
            seq = await send_in_page(a, body)
            unread_of_seq = ("(() => { const e = document.querySelector("
                             "'[data-testid=messages] [data-testid=message][data-seq=\"%d\"]');"
                             " if (!e) return null; const u = e.querySelector('[data-testid=message-unread]');"
                             " return u ? u.textContent : '0'; })()" % seq)
            # KakaoTalk-style: one member (Bob) has not read it.
            await a.wait_for("%s === '1'" % unread_of_seq, WAIT, "unread count 1 next to Alice's message")

            # Bob's page opens after the message was sent: only the server's
            # room list (`rooms`) can tell it about the room and its unread.
            b = await open_as(browser, "b", BOB)
            await wait_badge(b, room, 1)

            # Bob opens the room: the message shows (history), the page sends
            # `read`, the badge drops to 0, and Alice sees the receipt.
            await b.click("[data-testid=room-item][data-room=\"%d\"]" % room)
            assert await message_seq(b, body, sender=ALICE) == seq
            await wait_badge(b, room, 0)
            await a.wait_for("%s === '0'" % unread_of_seq, WAIT, "Alice's message read by Bob")

            # The read pointer is the server's: a new session of Bob's still shows 0.
            await b.close()
            b = await open_as(browser, "b", BOB)
            await wait_badge(b, room, 0)
            await no_errors(a, b)
        finally:
            await a.close()
            if b is not None:
                await b.close()
