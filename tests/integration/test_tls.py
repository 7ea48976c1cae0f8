"""The stack's nodes over TLS (MINICHAT_TLS=1: make test's cluster pass,
`make run TLS=1`): checks that TLS is really on, so that the rest of that
pass, which reaches the nodes through conftest's wss:// and https://
helpers, is known to have run over it.

Without TLS these tests are skipped; the plain pass needs no check of its
own, since every other test there speaks ws:// and http:// to the same
ports.
"""

import asyncio
import json
import socket
import ssl

import pytest

from conftest import (CA_FILE, NGINX_PORTS, TLS, connect, create_room, open_socket, run_async, tls_context, token,
                      uid)
from h2client import get_many

pytestmark = pytest.mark.skipif(not TLS, reason="the stack runs without TLS (MINICHAT_TLS=1 runs these)")

TIMEOUT = 5.0


def plain_get(port, path):
    """(status, body) of an HTTP/1.1 GET in cleartext, whatever the port speaks."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, body


@pytest.mark.parametrize("node", ["a", "b"])
def test_plain_http_to_the_port_is_refused(node):
    """nginx answers a cleartext request on an `ssl` port with its 400 page,
    never with the resource."""
    status, body = plain_get(NGINX_PORTS[node], "/healthz")
    assert status == 400, (status, body[:200])
    assert b"The plain HTTP request was sent to HTTPS port" in body, body[:300]
    assert body != b"ok\n"


@pytest.mark.parametrize("node", ["a", "b"])
def test_certificate_is_the_dev_cas_for_127_0_0_1(node):
    with open_socket(NGINX_PORTS[node], TIMEOUT) as sock:
        cert = sock.getpeercert()
        version = sock.version()
    assert version in ("TLSv1.2", "TLSv1.3"), version
    issuer = dict(kv for rdn in cert["issuer"] for kv in rdn)
    assert issuer["commonName"] == "MiniChat dev CA", cert
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"], cert
    assert ("DNS", "localhost") in cert["subjectAltName"], cert


def test_certificate_is_not_trusted_without_the_dev_ca():
    """The system's authorities do not vouch for it: the clients of this
    pass verify against the dev CA, not with verification off."""
    ctx = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", NGINX_PORTS["a"]), timeout=TIMEOUT) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    # and a name the certificate does not carry fails against the dev CA too
    ctx = ssl.create_default_context(cafile=CA_FILE)
    with socket.create_connection(("127.0.0.1", NGINX_PORTS["a"]), timeout=TIMEOUT) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="chat.example.com")


@pytest.mark.parametrize("offer,chosen", [(("h2", "http/1.1"), "h2"), (("http/1.1",), "http/1.1")])
def test_alpn(offer, chosen):
    with open_socket(NGINX_PORTS["a"], TIMEOUT, alpn=offer) as sock:
        assert sock.selected_alpn_protocol() == chosen


def test_rest_over_http2_by_alpn():
    user = uid()
    room = create_room(user, [user, uid()])
    tok = token(user)
    got = get_many(NGINX_PORTS["b"], [("/healthz", None), ("/api/rooms/%d" % room, tok), ("/api/rooms/%d" % room, None)])
    assert got[0] == (200, b"ok\n"), got[0]
    assert got[1][0] == 200 and json.loads(got[1][1])["id"] == room, got[1]
    assert got[2][0] == 401, got[2]


@run_async
async def test_wss_chat_across_nodes():
    a, b = uid(), uid()
    room = create_room(a, [a, b])
    ca = await connect(a, "a")
    cb = await connect(b, "b")
    try:
        for c in (ca, cb):
            tls = c.ws.transport.get_extra_info("ssl_object")
            assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3"), tls
        ack = await ca.send_msg(room, "over tls")
        assert ack["op"] == "ack", ack
        msg = await cb.expect("msg", room=room, seq=ack["seq"])
        assert msg["body"] == "over tls", msg
    finally:
        await asyncio.gather(ca.close(), cb.close())


def test_session_resumption():
    """ssl_session_cache / tickets: a second connection resumes the first's
    session (a reconnecting client skips the full handshake)."""
    ctx = tls_context()
    with open_socket(NGINX_PORTS["a"], TIMEOUT) as first:
        first.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while first.recv(4096):
            pass
        session = first.session
    assert session is not None
    with socket.create_connection(("127.0.0.1", NGINX_PORTS["a"]), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as second:
            assert second.session_reused
