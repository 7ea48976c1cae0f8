"""The Origin allowlist (minichat_allowed_origins) on an nginx of its own:
a browser's upgrade from an origin the list does not match is refused with
403 before its token is looked at; an upgrade without Origin (not a
browser) and the stack's nodes (no list) take any origin.
"""

import pytest

from conftest import run_async, uid, wait_until, ws_status
from own_nginx import OwnNginx, raw_upgrade


@pytest.fixture(scope="module")
def origin_nginx():
    n = OwnNginx(["minichat_allowed_origins https://a.example https://*.b.example http://127.0.0.1:8080"]).start()
    yield n
    assert n.stop() == []


def _status(port, origin, tok=None):
    headers = {"Origin": origin} if origin is not None else {}

    def answer():
        got = raw_upgrade(port, uid(), headers=headers, tok=tok)
        return got if got[0] != 503 else None   # the worker's Redis connects a moment after start

    return wait_until(answer, 15, what="an answer other than 503")[0]


@pytest.mark.parametrize("origin,status", [
    ("https://a.example", 101),
    ("HTTPS://A.EXAMPLE", 101),
    ("https://x.b.example", 101),
    ("https://x.y.b.example", 101),
    ("http://127.0.0.1:8080", 101),
    (None, 101),
    ("https://b.example", 403),
    ("http://a.example", 403),
    ("https://a.example:8443", 403),
    ("https://a.example.evil", 403),
    ("https://evil.example", 403),
    ("http://127.0.0.1:8081", 403),
    ("null", 403),
    ("", 403),
])
def test_allowlist(origin_nginx, origin, status):
    assert _status(origin_nginx.port, origin) == status


def test_origin_checked_before_token(origin_nginx):
    # a refused origin is told 403 whatever its token; the token's 401
    # is for allowed origins
    assert _status(origin_nginx.port, "https://evil.example", tok="not-a-token") == 403
    assert _status(origin_nginx.port, "https://a.example", tok="not-a-token") == 401


def test_refusal_logged(origin_nginx):
    _status(origin_nginx.port, "https://logged.example")
    wait_until(lambda: 'origin "https://logged.example" not in minichat_allowed_origins' in origin_nginx.log(),
               what="the refusal in the error log")


@run_async
async def test_no_list_allows_any_origin():
    # the stack's nodes have no minichat_allowed_origins
    assert await ws_status("a", None, headers={"Origin": "https://anything.example"}) == 401
    from conftest import token
    assert await ws_status("a", token(uid()), headers={"Origin": "https://anything.example"}) == 101
