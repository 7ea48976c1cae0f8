"""Interoperability with Node's `ws` (npm) and Python's `websockets`, each
with and without permessage-deflate.

One session, played by each client: tests/integration/node/ws_interop.js
with `ws` (installed by scripts/setup.sh into .cache/node/ws, pinned) and
interop_websockets.py with `websockets` (Debian's).  The token carried three
ways (Authorization header, ?token=, a `bearer.<JWT>` subprotocol entry
beside minichat.v1), hello, a room made over REST, sends received on the
other node and on the sender's other device, a close with 1000 and a resume
with ?sid=, a message 64 bytes short of minichat_max_message_size, a ping
and its pong, a ping from the server to a silent connection, and the close
codes 1009 (too big), 1003 (binary), 4001 (the token expired) and a 401 for
a bad token.  Each player reports what it saw, including the RSV1 bit of
every server frame; the assertions are here, one set for both.

The other clients of the interoperability matrix (docs/ARCHITECTURE.md,
"Testing: WebSocket interoperability"): headless Chromium in
test_browser_interop.py, Autobahn|Testsuite in test_conformance.py; Python
`websockets` also in test_deflate.py.
"""
import json
import os
import subprocess

import pytest

import interop_websockets
from conftest import NGINX_PORTS, TLS, TOP, token, uid

# interop is about the WebSocket layer: make test's plain pass runs it (the
# TLS pass's wss:// clients are Python's, test_tls.py and the rest)
pytestmark = pytest.mark.skipif(TLS, reason="interop sessions run over ws:// in the plain pass")

WS_MODULE = os.path.join(TOP, ".cache", "node", "ws", "node_modules", "ws")
SCRIPT = os.path.join(os.path.dirname(__file__), "node", "ws_interop.js")
MAX_MESSAGE = 64 * 1024          # the dev stack's minichat_max_message_size
THRESHOLD = 256                  # the dev stack's minichat_ws_deflate_threshold
PMD_ANSWER = "permessage-deflate; server_no_context_takeover"


def run_node(deflate):
    if not os.path.isdir(WS_MODULE):
        pytest.fail("%s missing: run scripts/setup.sh (it installs Node ws into .cache/node)" % WS_MODULE)
    a, b = uid(), uid()
    cfg = {
        "ws": WS_MODULE,
        "nodes": {n: "127.0.0.1:%d" % p for n, p in NGINX_PORTS.items()},
        "deflate": deflate,
        "users": {"a": {"id": a, "token": token(a)}, "b": {"id": b, "token": token(b)}},
        # exp is in whole seconds: this one ends 2 to 3 s from now
        "short_token": token(b, ttl=3),
        "max_message": MAX_MESSAGE,
    }
    out = subprocess.run(["node", SCRIPT, json.dumps(cfg)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, "ws_interop.js failed:\n" + out.stderr[-4000:]
    return cfg, json.loads(out.stdout)


@pytest.mark.parametrize("deflate", [True, False], ids=["deflate", "plain"])
def test_node_ws_session(deflate):
    cfg, r = run_node(deflate)
    check_report(r, deflate, cfg["users"]["a"]["id"], cfg["users"]["b"]["id"])


@pytest.mark.parametrize("deflate", [True, False], ids=["deflate", "plain"])
def test_python_websockets_session(deflate):
    """The same session, played by Python `websockets` (compression="deflate" or None)."""
    a, b = uid(), uid()
    check_report(interop_websockets.play(a, b, deflate, token(b, ttl=3), MAX_MESSAGE), deflate, a, b)


def check_report(r, deflate, a, b):
    """What a session must have seen, whichever client played it."""
    want_ext = PMD_ANSWER if deflate else None

    # each way of carrying the token gets its user's hello and minichat.v1
    # (the bearer entry is never named back)
    for how, user, node in (("header", a, "a"), ("subprotocol", a, "a"), ("query", b, "b")):
        got = r["auth"][how]
        assert (got["user"], got["node"], got["protocol"], got["extensions"]) == (user, node, "minichat.v1",
                                                                                 want_ext), (how, got)
    assert r["a_wire"]["negotiated"] == ("permessage-deflate" if deflate else ""), r["a_wire"]

    assert r["room"]["status"] == 201, r["room"]
    assert len(r["acks"]) == 2 and r["acks"][1] == r["acks"][0] + 1, r["acks"]
    for got in r["received"]:
        assert got["b"] and got["other_device"] and got["from"] == a, got

    # every server frame B got before leaving: RSV1 exactly on the messages
    # of at least the threshold, and only when the extension was negotiated
    # (its one large message is the second msg)
    wire = r["b_wire"]["wire"]
    assert wire and all(w["rsv1"] is not None for w in wire), wire
    for w in wire:
        assert w["rsv1"] == (deflate and w["bytes"] >= THRESHOLD), (deflate, w)
    assert any(w["op"] == "msg" and w["bytes"] >= THRESHOLD for w in wire), wire

    assert r["closes"]["normal"] == {"code": 1000, "reason": ""}, r["closes"]
    res = r["resume"]
    assert res["sid_kept"] and res["resumed_session"] is True, res
    assert res["recovered"] is True and res["seq"] == res["missed"][-1], res
    assert res["replayed"] == res["missed"], res

    big = r["big"]
    assert MAX_MESSAGE - 100 < big["request_bytes"] <= MAX_MESSAGE - 64 and big["delivered"], big
    big_frames = [w for w in r["b_resumed_wire"]["wire"] if w["seq"] == big["seq"] and w["op"] == "msg"]
    assert len(big_frames) == 1 and big_frames[0]["rsv1"] == deflate, big_frames

    assert r["pong"] == ["interop-ping"], r["pong"]
    assert r["server_ping"]["pings"] >= 1 and r["server_ping"]["open"], r["server_ping"]

    closes = r["closes"]
    assert closes["too_big"] == {"code": 1009, "reason": "message too big"}, closes
    assert closes["binary"] == {"code": 1003, "reason": "text frames only"}, closes
    assert closes["expired"] == {"error": "token expired", "code": 4001, "reason": "token expired"}, closes
    assert closes["bad_token_status"] == 401, closes
