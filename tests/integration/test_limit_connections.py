"""The upgrade's connection limits: minichat_limit_connections (per client
address) and minichat_limit_user_connections (per user), on an nginx of
the test's own (own_nginx.py) with limits tight enough to cross in a few
upgrades, on the stack's Redis (single or Cluster):

    minichat_limit_connections rate=30r/m burst=2;       one per 2 s, 3 at once
    minichat_limit_user_connections rate=60r/m burst=3;  one per 1 s, 4 at once
    minichat_limit_strikes off;

GCRA is exact: after burst + 1 upgrades at once the next one is refused
with retry_after_ms = the interval minus the time since the first (so
between interval - elapsed and interval), Retry-After is that in whole
seconds rounded up, and an upgrade sent retry_after_ms later is admitted
while the one after it is refused again.

Every upgrade comes from a fresh loopback address (127.x.y.z, never
127.0.0.1): this nginx shares the stack's Redis, and its address keys
({ip:<addr>}:rl:conn) with the stack's nodes, which other tests reach from
127.0.0.1.  Users are fresh too, so nothing is left for later tests (the
keys expire within the interval times the burst).
"""

import math
import time

import pytest

from conftest import token, uid
from own_nginx import OwnNginx, fresh_address, raw_upgrade, upgrade_when_ready

ADDR_INTERVAL_MS = 2000     # minichat_limit_connections rate=30r/m
ADDR_BURST = 2
USER_INTERVAL_MS = 1000     # minichat_limit_user_connections rate=60r/m
USER_BURST = 3


@pytest.fixture(scope="module")
def node():
    n = OwnNginx(["minichat_limit_connections rate=30r/m burst=%d" % ADDR_BURST,
                  "minichat_limit_user_connections rate=60r/m burst=%d" % USER_BURST,
                  "minichat_limit_strikes off"]).start()
    try:
        status = upgrade_when_ready(n.port, uid(), fresh_address())[0]
        assert status == 101, status
        yield n
    finally:
        bad = n.stop()
        assert not bad, bad


def upgrades_until_refused(port, user_for, source_for, most):
    """Upgrades (user_for(i) from source_for(i)) until one is refused or
    `most` were sent.  Returns (statuses, the refusal's headers and body,
    ms from sending the first to receiving the refusal)."""
    statuses = []
    start = time.monotonic()
    for i in range(most):
        status, headers, body = raw_upgrade(port, user_for(i), source_for(i))
        statuses.append(status)
        if status != 101:
            return statuses, headers, body, (time.monotonic() - start) * 1000.0
    return statuses, None, None, (time.monotonic() - start) * 1000.0


def check_refusal(statuses, headers, body, elapsed_ms, interval_ms, burst):
    """The refusal came after burst + 1 admissions (more only if the upgrades
    were slower than the rate), and its numbers follow the rate."""
    assert statuses[-1] == 429, statuses
    admitted = len(statuses) - 1
    assert burst + 1 <= admitted <= burst + 1 + math.ceil(elapsed_ms / interval_ms), (statuses, elapsed_ms)
    assert headers["Content-Type"].startswith("application/json"), headers
    assert body["code"] == "rate_limited", body
    retry = body["retry_after_ms"]
    assert 1 <= retry <= interval_ms, body
    if admitted == burst + 1:
        # the slot frees one interval after the first admission
        assert retry >= interval_ms - elapsed_ms - 1, (retry, elapsed_ms)
    assert headers["Retry-After"] == str(math.ceil(retry / 1000.0)), (headers, body)
    return retry


def test_address_limit_refuses_past_burst_with_retry_after(node):
    """burst + 1 upgrades from one address pass (each a different user), the
    next gets 429 with Retry-After; other addresses connect meanwhile; after
    retry_after_ms one more passes from the address, and only one."""
    addr = fresh_address()
    statuses, headers, body, elapsed = upgrades_until_refused(node.port, lambda i: uid(), lambda i: addr,
                                                              ADDR_BURST + 6)
    retry = check_refusal(statuses, headers, body, elapsed, ADDR_INTERVAL_MS, ADDR_BURST)

    # per address: two other addresses are not affected, the refused one still is
    assert raw_upgrade(node.port, uid(), fresh_address())[0] == 101
    assert raw_upgrade(node.port, uid(), fresh_address())[0] == 101
    status, _, again = raw_upgrade(node.port, uid(), addr)
    assert status == 429 and again["retry_after_ms"] <= retry, (status, again, retry)

    # the refusals changed nothing: retry_after_ms after the first refusal one passes
    # tokens first: the two upgrades must fall within one interval
    toks = [token(uid()), token(uid())]
    time.sleep(retry / 1000.0)
    assert raw_upgrade(node.port, None, addr, tok=toks[0])[0] == 101
    status, headers, body = raw_upgrade(node.port, None, addr, tok=toks[1])
    assert status == 429, status
    assert 1 <= body["retry_after_ms"] <= ADDR_INTERVAL_MS, body
    assert headers["Retry-After"] == str(math.ceil(body["retry_after_ms"] / 1000.0)), (headers, body)


def test_user_limit_refuses_past_burst_with_retry_after(node):
    """minichat_limit_user_connections: burst + 1 upgrades of one user pass
    (each from another address, so the address limit stays out of it), the
    next gets 429; another user connects meanwhile, from the same address;
    after retry_after_ms the user connects once more."""
    user = uid()
    addrs = [fresh_address() for _ in range(USER_BURST + 6)]
    statuses, headers, body, elapsed = upgrades_until_refused(node.port, lambda i: user, lambda i: addrs[i],
                                                              USER_BURST + 6)
    retry = check_refusal(statuses, headers, body, elapsed, USER_INTERVAL_MS, USER_BURST)

    assert raw_upgrade(node.port, uid(), addrs[len(statuses) - 1])[0] == 101

    tok = token(user)
    time.sleep(retry / 1000.0)
    assert raw_upgrade(node.port, user, fresh_address(), tok=tok)[0] == 101
    status, _, body = raw_upgrade(node.port, user, fresh_address(), tok=tok)
    assert status == 429 and 1 <= body["retry_after_ms"] <= USER_INTERVAL_MS, (status, body)


def test_address_refusals_spend_none_of_the_users_budget(node):
    """The address is checked first and the user only if the address admits:
    upgrades an address refuses leave the user's budget whole, so the same
    user then gets burst + 1 upgrades from other addresses."""
    addr = fresh_address()
    user = uid()
    tok = token(user)
    # the address's burst spent by other users, then refusals for `user`
    for _ in range(ADDR_BURST + 1):
        assert raw_upgrade(node.port, uid(), addr)[0] == 101
    start = time.monotonic()
    for _ in range(USER_BURST + 1):
        assert raw_upgrade(node.port, None, addr, tok=tok)[0] == 429
    # had the refusals counted, the user's burst would be spent, and only
    # what refilled since (one per second) would pass
    statuses = [raw_upgrade(node.port, None, fresh_address(), tok=tok)[0] for _ in range(USER_BURST + 1)]
    assert statuses == [101] * (USER_BURST + 1), (statuses, time.monotonic() - start)
