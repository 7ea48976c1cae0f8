"""Tokens: `exp` is required, `iss` and `aud` are checked when configured,
a connection is closed with 4001 when its token expires, and a `?token=`
never reaches nginx's access or error log.

The issuer and audience tests run on an nginx of their own (own_nginx.py)
with minichat_jwt_issuer and minichat_jwt_audience; the others use the
stack's node a.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time

import pytest
import websockets

from conftest import SECRET_FILE, connect, rest, run_async, token, uid, wait_until, ws_status
from own_nginx import RUN, OwnNginx, raw_upgrade


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_token(claims):
    """An HS256 JWT of the stack's secret with exactly these claims (made
    here, not by minichat-token, which always sets exp)."""
    with open(SECRET_FILE, "rb") as f:
        secret = f.read().rstrip()
    signing = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode())
    mac = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64(mac)


# --- exp ---------------------------------------------------------------------

def test_token_without_exp_is_refused_by_rest():
    user = uid()
    status, body = rest("GET", "/api/rooms", tok=hand_token({"sub": str(user)}))
    assert status == 401, (status, body)
    assert body["code"] == "unauthorized" and body["message"] == "missing exp", body
    # the same claims with an exp pass: only exp made the difference
    status, body = rest("GET", "/api/rooms", tok=hand_token({"sub": str(user), "exp": int(time.time()) + 60}))
    assert status == 200, (status, body)


@run_async
async def test_token_without_exp_is_refused_by_upgrade():
    assert await ws_status("a", hand_token({"sub": str(uid())})) == 401


def test_minichat_token_always_sets_exp():
    tok = token(uid())
    payload = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))
    assert isinstance(payload.get("exp"), int) and payload["exp"] > time.time(), payload


@run_async
async def test_connection_closed_with_4001_when_token_expires():
    user = uid()
    c = await connect(user, tok=token(user, ttl=3))
    err = await c.expect("error", timeout=15)
    assert err["code"] == "unauthorized" and err["message"] == "token expired", err
    assert "id" not in err, err
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(c.ws.recv(), 10)
    assert closed.value.code == 4001, closed.value
    assert closed.value.reason == "token expired", closed.value


@run_async
async def test_connection_with_a_long_token_stays():
    # a token valid for a day is not touched by the ticks that pass
    user = uid()
    c = await connect(user, tok=token(user, ttl=86400))
    reply = await c.request({"op": "rooms", "limit": 1})
    assert reply["op"] == "rooms", reply
    await c.close()


# --- iss and aud -------------------------------------------------------------

ISS = "https://auth.example"
AUD = "minichat"


@pytest.fixture(scope="module")
def claims_nginx():
    n = OwnNginx(["minichat_jwt_issuer %s" % ISS, "minichat_jwt_audience %s" % AUD]).start()
    yield n
    assert n.stop() == []


def _upgrade_when_ready(port, tok):
    return wait_until(lambda: (lambda got: got if got[0] != 503 else None)(raw_upgrade(port, 0, tok=tok)), 15,
                      what="an answer other than 503")


@pytest.mark.parametrize("claims,status,message", [
    ({"iss": ISS, "aud": AUD}, 200, None),
    ({"iss": ISS, "aud": ["other", AUD]}, 200, None),
    ({"aud": AUD}, 401, "missing iss"),
    ({"iss": ISS + "/", "aud": AUD}, 401, "wrong iss"),
    ({"iss": ISS}, 401, "missing aud"),
    ({"iss": ISS, "aud": "other"}, 401, "wrong aud"),
    ({"iss": ISS, "aud": ["other"]}, 401, "wrong aud"),
    ({"iss": ISS, "aud": [AUD, 7]}, 401, "invalid aud"),
])
def test_issuer_and_audience(claims_nginx, claims, status, message):
    claims = dict(claims, sub=str(uid()), exp=int(time.time()) + 600)
    got, _, body = claims_nginx.get("/api/rooms", tok=hand_token(claims))
    assert got == status, (got, body)
    if message:
        assert body["message"] == message, body
    # the upgrade decides the same way
    st, _, _ = _upgrade_when_ready(claims_nginx.port, hand_token(claims))
    assert st == (101 if status == 200 else 401), st


def test_minichat_token_sets_iss_and_aud(claims_nginx):
    got, _, body = claims_nginx.get("/api/rooms", tok=token(uid(), iss=ISS, aud=AUD))
    assert got == 200, (got, body)
    # the stack's nodes expect neither and take the same token
    assert rest("GET", "/api/rooms", tok=token(uid(), iss=ISS, aud=AUD))[0] == 200


# --- the token stays out of the logs -------------------------------------------

def _logs():
    text = ""
    for name in ("access.log", "error.log"):
        with open(os.path.join(RUN, "nginx-a", name), errors="replace") as f:
            text += f.read()
    return text


@run_async
async def test_query_token_never_logged():
    user = uid()
    good = token(user)
    # a WebSocket with ?token= (its access log line is written at the hand-off after the 101)
    c = await connect(user, tok=good)
    await c.request({"op": "rooms", "limit": 1})
    await c.close()
    # a refused upgrade and a REST call, each with a token in the URL
    bad = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    assert await ws_status("a", bad) == 401
    marker = "m%d" % uid()
    status, _ = rest("GET", "/api/rooms?token=%s&marker=%s" % (good, marker))
    assert status == 200
    wait_until(lambda: marker in _logs(), what="the REST call's access log line")
    wait_until(lambda: "GET /ws?token=" + "*" * len(good) in _logs(), what="the WebSocket's access log line")
    logs = _logs()
    for secret in (good, bad, good.split(".")[2], bad.split(".")[2]):
        assert secret not in logs, "a token is in node a's logs"
    # what is logged instead: the request line with the token's bytes hidden
    assert "/api/rooms?token=%s&marker=%s" % ("*" * len(good), marker) in logs
    # the error log's lines about the connection name the request too
    assert "token=" + "*" * len(good) in open(os.path.join(RUN, "nginx-a", "error.log"), errors="replace").read()
