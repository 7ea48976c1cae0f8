"""The module's metrics (docs/metrics.md): `location = /metrics {
minichat_metrics; }` on both nodes of the dev stack (and on an nginx of the
test's own for the send queue, where only its connection counts).

The text is parsed strictly (Prometheus's text format 0.0.4): every sample
belongs to a family declared by a TYPE line before it, no series appears
twice, a histogram's buckets are cumulative and end in +Inf equal to its
_count.  Each family is then shown to move when its event happens.  Other
tests may have run against the same stack (and connections of theirs may
still be closing): every check compares a scrape before the event with one
after it, never an absolute value, and a gauge is checked by the drop our
own connections cause when they close.
"""

import asyncio
import re

import websockets

from conftest import (NGINX_PORTS, SUBPROTOCOL, connect, create_room, http_connection, redis, rest, run_async, token,
                      uid, wait_until, ws_open, ws_url)

from own_nginx import OwnNginx, raw_upgrade
from test_limits import earn_strike
from test_server_close import PING, Sender
from test_ws_protocol import RawWS


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def fetch(node="a", method="GET"):
    """(status, content type, body) of a request to the node's /metrics."""
    conn = http_connection(NGINX_PORTS[node])
    try:
        conn.request(method, "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read().decode()
    finally:
        conn.close()


def parse(text):
    """The samples of a scrape as {(name, ((label, value), ...)): float},
    checking the format on the way; also {family: type}."""
    types, helps, series = {}, set(), {}
    assert text.endswith("\n"), text[-100:]
    for line in text.splitlines():
        assert line, "an empty line"
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, "HELP twice for " + name
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in types, "TYPE twice for " + name
            assert name.startswith("minichat_"), name
            if kind == "counter":
                assert name.endswith("_total"), name
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        family = name
        if name not in types:
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                    family = name[:-len(suffix)]
        assert family in types, "sample %r of no declared TYPE" % line
        assert family in helps, "no HELP for " + family
        pairs = tuple(LABEL.findall(labels))
        assert ",".join('%s="%s"' % p for p in pairs) == labels, line
        key = (name, pairs)
        assert key not in series, "series twice: %r" % line
        series[key] = float(value)
    return series, types


def check_histograms(series, types):
    for family, kind in types.items():
        if kind != "histogram":
            continue
        buckets = [(dict(labels)["le"], v) for (name, labels), v in series.items() if name == family + "_bucket"]
        assert buckets, family
        bounds = [float(le) for le, _ in buckets]
        assert bounds == sorted(bounds) and buckets[-1][0] == "+Inf", buckets
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), "%s buckets not cumulative: %s" % (family, buckets)
        assert counts[-1] == series[(family + "_count", ())], family
        assert series[(family + "_sum", ())] >= 0, family


def scrape(node="a"):
    status, ctype, text = fetch(node)
    assert status == 200, (status, text[:200])
    series, types = parse(text)
    check_histograms(series, types)
    return series


def value(series, name, **labels):
    return series[(name, tuple(sorted(labels.items())))]


def delta(before, after, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def test_text_format_on_both_nodes():
    for node in ("a", "b"):
        status, ctype, text = fetch(node)
        assert status == 200, status
        assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
        series, types = parse(text)
        check_histograms(series, types)
        for family in ("minichat_connections_open", "minichat_connections_opened_total",
                       "minichat_send_queue_bytes", "minichat_slow_clients_closed_total", "minichat_banned_total",
                       "minichat_ws_frames_received_total", "minichat_ws_frames_sent_total",
                       "minichat_ws_received_bytes_total", "minichat_ws_sent_bytes_total",
                       "minichat_sends_admitted_total", "minichat_acks_sent_total", "minichat_deliveries_total",
                       "minichat_ws_errors_total", "minichat_ws_closes_total", "minichat_rate_limited_total",
                       "minichat_redis_round_trip_seconds", "minichat_relay_round_trip_seconds"):
            assert family in types, family
        assert types["minichat_connections_open"] == "gauge"
        assert types["minichat_send_queue_bytes"] == "gauge"
        assert types["minichat_redis_round_trip_seconds"] == "histogram"


def test_parser_rejects_what_it_must():
    """The checks above can fail: a sample without a TYPE, a series twice,
    buckets that shrink, +Inf that is not _count."""
    head = "# HELP minichat_x_total x\n# TYPE minichat_x_total counter\n"
    for bad in ("minichat_y_total 1\n",
                head + "minichat_x_total 1\nminichat_x_total 2\n",
                head + 'minichat_x_total{a="1"} 1\nminichat_x_total{a="1"} 2\n'):
        try:
            parse(bad)
        except AssertionError:
            continue
        raise AssertionError("accepted: %r" % bad)
    hist = ("# HELP minichat_h h\n# TYPE minichat_h histogram\n"
            'minichat_h_bucket{le="1"} 3\nminichat_h_bucket{le="+Inf"} %s\nminichat_h_sum 1\nminichat_h_count %s\n')
    for inf, count in (("2", "2"), ("3", "4")):
        try:
            check_histograms(*parse(hist % (inf, count)))
        except AssertionError:
            continue
        raise AssertionError("accepted buckets +Inf=%s count=%s" % (inf, count))


def test_methods_other_than_get_are_405():
    for method in ("POST", "PUT", "DELETE"):
        status, _, _ = fetch("a", method)
        assert status == 405, (method, status)
    status, _, body = fetch("a", "HEAD")
    assert status == 200 and body == "", (status, body)


@run_async
async def test_connections_open_and_opened():
    before = scrape("a")
    clients = [await connect(uid(), "a") for _ in range(3)]
    try:
        during = scrape("a")
        assert delta(before, during, "minichat_connections_opened_total") >= 3
        assert value(during, "minichat_connections_open") >= 3
        # each got a 101 and its hello frame
        assert delta(before, during, "minichat_ws_frames_sent_total") >= 3
        assert delta(before, during, "minichat_ws_sent_bytes_total") >= 3 * len("HTTP/1.1 101 Switching Protocols\r\n")
    finally:
        for c in clients:
            await c.close()
    # our three closing take the gauge down by three at least (connections
    # of earlier tests may close too; none opens meanwhile)
    wait_until(lambda: value(scrape("a"), "minichat_connections_open")
               <= value(during, "minichat_connections_open") - 3,
               what="minichat_connections_open down by 3")


@run_async
async def test_send_counts_on_both_nodes():
    sender, reader = uid(), uid()
    room = create_room(sender, [sender, reader])
    cs = await connect(sender, "a")
    cr = await connect(reader, "b")
    try:
        a0, b0 = scrape("a"), scrape("b")
        ack = await cs.send_msg(room, "counted")
        assert ack["op"] == "ack", ack
        await cr.expect("msg", room=room, seq=ack["seq"])
        a1 = scrape("a")
        wait_until(lambda: delta(b0, scrape("b"), "minichat_deliveries_total") >= 1, what="a delivery on b")
        b1 = scrape("b")
    finally:
        await cs.close()
        await cr.close()
    assert delta(a0, a1, "minichat_sends_admitted_total") >= 1
    assert delta(a0, a1, "minichat_acks_sent_total") >= 1
    assert delta(a0, a1, "minichat_ws_frames_received_total") >= 1
    assert delta(a0, a1, "minichat_ws_received_bytes_total") >= len('"counted"')
    assert delta(a0, a1, "minichat_ws_frames_sent_total") >= 1
    assert delta(b0, b1, "minichat_ws_frames_sent_total") >= 1
    assert delta(b0, b1, "minichat_ws_sent_bytes_total") >= len('"counted"')
    # the send script went to Redis, the publish to the relay-worker
    assert delta(a0, a1, "minichat_redis_round_trip_seconds_count") >= 1
    assert delta(a0, a1, "minichat_relay_round_trip_seconds_count") >= 1
    assert delta(a0, a1, "minichat_redis_round_trip_seconds_sum") > 0


@run_async
async def test_error_frames_by_code():
    c = await connect(uid(), "a")
    try:
        before = scrape("a")
        await c.send("not json")
        e = await c.expect("error")
        assert e["code"] == "bad_request", e
        r = await c.request({"op": "send", "room": 1, "cid": "x"})   # no body
        assert r["op"] == "error" and r["code"] == "bad_request", r
        after = scrape("a")
    finally:
        await c.close()
    assert delta(before, after, "minichat_ws_errors_total", code="bad_request") >= 2
    assert delta(before, after, "minichat_ws_frames_received_total") >= 2


@run_async
async def test_closes_by_code():
    before = scrape("a")
    # a client's close is answered with its code
    c = await connect(uid(), "a")
    await c.ws.close(code=1000)
    # a binary frame on the chat endpoint is closed with 1003
    ws = await ws_open(ws_url("a", token(uid())), subprotocols=[SUBPROTOCOL], close_timeout=5)
    await ws.send(b"\x00binary")
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.exceptions.ConnectionClosed:
        pass
    assert ws.close_code == 1003, ws.close_code
    after = scrape("a")
    assert delta(before, after, "minichat_ws_closes_total", code="1000") >= 1
    assert delta(before, after, "minichat_ws_closes_total", code="1003") >= 1


def test_rest_refusals_are_counted():
    """minichat_limit_rest (burst 50 in the dev stack): requests until the
    first 429, each refusal counted."""
    tok = token(uid())
    before = scrape("a")
    conn = http_connection(NGINX_PORTS["a"])
    refused = 0
    try:
        for _ in range(120):
            conn.request("GET", "/api/rooms?limit=1", headers={"Authorization": "Bearer " + tok})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 429:
                refused += 1
                break
            assert resp.status == 200, resp.status
    finally:
        conn.close()
    assert refused == 1
    after = scrape("a")
    assert delta(before, after, "minichat_rate_limited_total", limit="rest") >= refused


def own_scrape(node):
    status, _, text = node.get("/metrics")
    assert status == 200, (status, text[:200])
    series, types = parse(text)
    check_histograms(series, types)
    return series


def test_send_queue_bytes_and_slow_clients_closed():
    """On an nginx of our own (one worker, a small sndbuf, a 256k send
    queue; only our connection counts): a client that stops reading and
    keeps sending pings has its pongs queued, so minichat_send_queue_bytes
    rises while it lives; once its queue overflows it is closed (1008, then
    dropped after 2 s as it still does not read), counted once in
    minichat_slow_clients_closed_total, and the gauge is back to 0."""
    node = OwnNginx(["minichat_max_message_size 4k", "minichat_send_queue_size 256k"],
                    listen_params=["sndbuf=8k"]).start()
    try:
        before = own_scrape(node)
        assert value(before, "minichat_send_queue_bytes") == 0, before
        ws = RawWS(uid(), port=node.port, rcvbuf=4096)
        try:
            # 76k of pongs: more than the kernel buffers hold, less than the queue
            burst = Sender(ws, PING, count=600)
            burst.start()
            burst.join(30)
            assert burst.error is None and burst.sent == 600, burst.error
            wait_until(lambda: value(own_scrape(node), "minichat_send_queue_bytes") >= 20000,
                       what="pongs queued for a client that does not read")
            assert delta(before, own_scrape(node), "minichat_slow_clients_closed_total") == 0

            flood = Sender(ws, PING, count=6000)
            flood.start()
            flood.join(30)
            wait_until(lambda: delta(before, own_scrape(node), "minichat_slow_clients_closed_total") == 1,
                       what="the slow client closed")
            # dropped once the close frame has not left for 2 s: nothing queued is left
            wait_until(lambda: value(own_scrape(node), "minichat_send_queue_bytes") == 0,
                       what="the send queue gauge back to 0")
            after = own_scrape(node)
            assert delta(before, after, "minichat_slow_clients_closed_total") == 1
            assert delta(before, after, "minichat_ws_closes_total", code="1008") == 1
        finally:
            ws.close()
    finally:
        bad = node.stop()
        assert not bad, bad


@run_async
async def test_bans_are_counted():
    """A banned user's upgrade and REST request are refused (403) and
    counted as refused; a ban earned by strikes closes the user's
    connections on both nodes (4003), counted as closed on each."""
    user = uid()
    redis("SET", "{u:%d}:ban" % user, "0")      # banned permanently
    try:
        before = scrape("a")
        status, _, body = raw_upgrade(NGINX_PORTS["a"], user)
        assert status == 403 and body["code"] == "banned", (status, body)
        status, body = rest("GET", "/api/rooms", "a", token(user))
        assert status == 403 and body["code"] == "banned", (status, body)
        after = scrape("a")
        assert delta(before, after, "minichat_banned_total", action="refused") >= 2
    finally:
        redis("DEL", "{u:%d}:ban" % user)

    user, other = uid(), uid()
    room = create_room(user, [user, other])
    a0, b0 = scrape("a"), scrape("b")
    _, code = await earn_strike(user, room, "a")
    assert code == 4003
    a1, b1 = scrape("a"), scrape("b")
    assert delta(a0, a1, "minichat_banned_total", action="closed") >= 1    # the flooding connection
    assert delta(b0, b1, "minichat_banned_total", action="closed") >= 1    # the idle one on b
    assert delta(a0, a1, "minichat_banned_total", action="refused") >= 1   # the refusal that made the strike
