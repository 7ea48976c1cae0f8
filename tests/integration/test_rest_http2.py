"""The REST API over cleartext HTTP/2 (nginx's `listen ... http2;`).

Many streams of one connection wait on Redis at once, and their answers
come from one Redis read: the module then holds the connection's writes
until the read is dispatched and sends the frames together
(ngx_http_minichat_h2batch.c).  These tests check that every stream is
answered, with the same answers as over HTTP/1.1, and that the per-user
limit counts streams as it counts requests.  The client is h2client.py:
all of a test's requests in flight on one connection, sent in one write.
"""

import json

import pytest

from conftest import create_room, token, uid, wait_until
from h2client import get_many
from own_nginx import OwnNginx


@pytest.fixture
def h2_nginx():
    own = OwnNginx(["minichat_limit_rest rate=1r/m burst=3", "minichat_limit_strikes off"], http2=True).start()
    try:
        # the worker's Redis connects a moment after nginx starts
        wait_until(lambda: get_many(own.h2_port, [("/api/rooms?limit=0", token(uid()))])[0][0] != 503, 10,
                   what="the own nginx's Redis")
        yield own
    finally:
        assert own.stop() == []


def test_streams_of_one_user_share_the_limit(h2_nginx):
    # burst=3: four requests pass the limit (each then a 400 for limit=0),
    # the other eight are refused
    tok = token(uid())
    got = get_many(h2_nginx.h2_port, [("/api/rooms?limit=0", tok)] * 12)
    assert sorted(status for status, _ in got) == [400] * 4 + [429] * 8
    for status, body in got:
        code = json.loads(body)["code"]
        assert code == ("bad_request" if status == 400 else "rate_limited")
        if status == 429:
            assert json.loads(body)["retry_after_ms"] > 0


def test_every_stream_answered(h2_nginx):
    # many users, one stream each, mixed with answers that need no Redis
    toks = [token(uid()) for _ in range(60)]
    reqs = [("/api/rooms?limit=0", t) for t in toks]
    reqs += [("/api/none", toks[0])] * 10 + [("/api/rooms?limit=0", "not-a-token")] * 10
    got = get_many(h2_nginx.h2_port, reqs)
    assert [status for status, _ in got] == [400] * 60 + [404] * 10 + [401] * 10
    assert all(json.loads(body)["code"] == "bad_request" for _, body in got[:60])


def test_same_answer_as_http1(h2_nginx):
    user = uid()
    room = create_room(user, [uid()])
    tok = token(user)
    h1 = h2_nginx.get("/api/rooms/%d" % room, tok)
    ((status, body),) = get_many(h2_nginx.h2_port, [("/api/rooms/%d" % room, tok)])
    assert h1[0] == status == 200
    assert json.loads(body) == h1[2]
