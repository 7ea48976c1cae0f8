"""The mesh between relay-workers: mutual TLS and configured peers only,
on the unary Deliver calls and on the stream alike
(relay-worker/peer_tls.c), and no forged seq that silences a room
(order_max_ahead, relay-worker/order.c).

A caller that is not a relay-worker of the cluster calls relay-worker a's
gRPC port with build/bin/relay-forge (tests/tools/relay-forge.c): plain,
TLS without a client certificate, a certificate of another CA that names
node b, a certificate of the mesh CA that names no peer, and node b's own
certificate sending as node a.  Each call must fail, and the proof that
nothing was delivered is ordered, not timed: the forged message carries the
room's next seq, so had relay-worker a taken it before the call returned,
the member on node a would get it at that seq and the real message sent
afterwards (same seq) would be dropped as a repeat.  The member must get
the real one, and the room's seq in Redis must be the real count.

Node b's own certificate, sending as b, is the control: the same tool does
deliver with it, so the refusals above are the mesh's doing.  With it, a
message whose seq is far past the room's is accepted by the call but
refused by the reorderer, and the room keeps delivering.
"""

import asyncio
import os
import subprocess

import pytest

from conftest import OFF, RUN, TOP, connect, create_room, redis, run_async, uid, wait_until

FORGE = os.path.join(TOP, "build", "bin", "relay-forge")
RELAY_BIN = os.path.join(TOP, "build", "bin", "relay-worker")
MESH = os.path.join(RUN, "mesh")
RELAY_A = "127.0.0.1:%d" % (17051 + OFF)

GRPC_OK, GRPC_UNAVAILABLE, GRPC_PERMISSION_DENIED = 0, 14, 7


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_cert(d, name, cn, ca_dir):
    """A client certificate d/name.{crt,key} for cn, signed by ca_dir's CA."""
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:%s\n" % cn)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=" + cn, "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", os.path.join(ca_dir, "ca.crt"),
            "-CAkey", os.path.join(ca_dir, "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", ext, "-out", name + ".crt", cwd=d)
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Client certificates a forger could have: another CA's naming node b,
    and the mesh CA's naming no peer (as if a node's CA key had signed for
    some other service)."""
    assert os.path.exists(FORGE), "build/bin/relay-forge missing: run make all"
    assert os.path.exists(os.path.join(MESH, "ca.crt")), "the stack runs without %s" % MESH
    d = str(tmp_path_factory.mktemp("forger"))
    other = os.path.join(d, "other-ca")
    os.mkdir(other)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", "/CN=not the mesh CA", "-keyout", "ca.key", "-out", "ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            cwd=other)
    return {
        "other_ca_b": make_cert(d, "other-b", "b", other),
        "mesh_intruder": make_cert(d, "intruder", "intruder", MESH),
        "mesh_b": (os.path.join(MESH, "relay-b.crt"), os.path.join(MESH, "relay-b.key")),
    }


def forge(room, seq, recipient, sender, body, from_node="b", ca=None, cert=None, stream=False):
    """One Deliver call to relay-worker a (with stream, one stream carrying
    one batch); returns (exit code, gRPC status)."""
    args = [FORGE, "--target", RELAY_A, "--from", from_node, "--room", str(room), "--seq", str(seq),
            "--recipient", str(recipient), "--sender", str(sender), "--body", body] + (["--stream"] if stream else [])
    if ca:
        args += ["--ca", ca, "--name", "a"]
    if cert:
        args += ["--cert", cert[0], "--key", cert[1]]
    p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert p.returncode in (0, 1), (p.returncode, p.stdout, p.stderr)
    first = p.stdout.split("\n", 1)[0].split(" ")
    assert first[0] == "status", p.stdout
    return p.returncode, int(first[1])


def relay_log(node):
    with open(os.path.join(RUN, "relay-" + node, "relay.log"), errors="replace") as f:
        return f.read()


def room_seq(room):
    return int(redis("GET", "{r:%d}:seq" % room)[0])


CALLERS = [
    # (case, ca, cert key in certs, from_node, expected status)
    ("plain", False, None, "b", GRPC_UNAVAILABLE),
    ("tls_without_client_cert", True, None, "b", GRPC_UNAVAILABLE),
    ("cert_of_another_ca", True, "other_ca_b", "b", GRPC_UNAVAILABLE),
    ("mesh_cert_naming_no_peer", True, "mesh_intruder", "intruder", GRPC_PERMISSION_DENIED),
    ("peer_cert_sending_as_another_node", True, "mesh_b", "a", GRPC_PERMISSION_DENIED),
]


@pytest.mark.parametrize("stream", [False, True], ids=["deliver", "stream"])
@pytest.mark.parametrize("case,use_ca,cert,from_node,status", CALLERS, ids=[c[0] for c in CALLERS])
@run_async
async def test_a_caller_without_the_clusters_certificate_delivers_nothing(certs, case, use_ca, cert, from_node,
                                                                         status, stream):
    sender, member = uid(), uid()
    room = create_room(sender, [sender, member])
    cs = await connect(sender, "b")
    cm = await connect(member, "a")
    try:
        ack = await cs.send_msg(room, "real 1")
        assert ack["op"] == "ack" and ack["seq"] == 1, ack
        await cm.expect("msg", room=room, seq=1, body="real 1")    # relay a knows the room now

        rc, got = forge(room, 2, member, sender, "forged " + case, from_node,
                        ca=os.path.join(MESH, "ca.crt") if use_ca else None, cert=certs[cert] if cert else None,
                        stream=stream)
        assert (rc, got) == (1, status)

        ack = await cs.send_msg(room, "real 2")
        assert ack["op"] == "ack" and ack["seq"] == 2, ack
        m = await cm.expect("msg", room=room, seq=2)
        assert m["body"] == "real 2", m
        assert not [f for f in cm.frames if str(f.get("body", "")).startswith("forged")], cm.frames
        assert room_seq(room) == 2
    finally:
        await cs.close()
        await cm.close()


@run_async
async def test_a_peer_can_deliver_but_a_huge_seq_does_not_silence_the_room(certs):
    sender, member = uid(), uid()
    room = create_room(sender, [sender, member])
    cs = await connect(sender, "b")
    cm = await connect(member, "a")
    try:
        ack = await cs.send_msg(room, "real 1")
        assert ack["seq"] == 1, ack
        await cm.expect("msg", room=room, seq=1, body="real 1")

        # far past order_max_ahead (10000): the call is taken, the message refused
        rc, got = forge(room, 10 ** 12, member, sender, "forged far ahead", ca=os.path.join(MESH, "ca.crt"),
                        cert=certs["mesh_b"])
        assert (rc, got) == (0, GRPC_OK)
        wait_until(lambda: "room %d seq %d is more than order_max_ahead" % (room, 10 ** 12) in relay_log("a"),
                   what="relay-worker a logs the refusal")
        # held, the forged seq would be skipped to after order_gap_ms (2 s)
        # and every real seq after it dropped as late: give that time to
        # happen (this wait only lets the test see the bug, it cannot fail it)
        await asyncio.sleep(3)
        for n in (2, 3):
            ack = await cs.send_msg(room, "real %d" % n)
            assert ack["seq"] == n, ack
            m = await cm.expect("msg", room=room, seq=n)
            assert m["body"] == "real %d" % n, m
        assert not [f for f in cm.frames if f.get("body") == "forged far ahead"], cm.frames

        # the control: with node b's certificate the tool does deliver,
        # by a Deliver call and on a stream
        rc, got = forge(room, 4, member, sender, "from b's key", ca=os.path.join(MESH, "ca.crt"),
                        cert=certs["mesh_b"])
        assert (rc, got) == (0, GRPC_OK)
        m = await cm.expect("msg", room=room, seq=4)
        assert m["body"] == "from b's key", m
        rc, got = forge(room, 5, member, sender, "from b's key, streamed", ca=os.path.join(MESH, "ca.crt"),
                        cert=certs["mesh_b"], stream=True)
        assert (rc, got) == (0, GRPC_OK)
        m = await cm.expect("msg", room=room, seq=5)
        assert m["body"] == "from b's key, streamed", m
        assert room_seq(room) == 3     # the tool went around Redis, as a forger would
    finally:
        await cs.close()
        await cm.close()


# --- the keys in the config ---------------------------------------------------

def relay_conf(tmp_path, extra):
    path = tmp_path / "relay-worker.conf"
    path.write_text("node = z\nunix_socket = %s\ngrpc_listen = 127.0.0.1:1\npeers = y@127.0.0.1:2\n"
                    "kafka_brokers = 127.0.0.1:1\nmysql_primary = 127.0.0.1:1\n%s"
                    % (tmp_path / "relay.sock", extra))
    return str(path)


BAD_CONFIGS = [
    ("peer_tls_ca = {mesh}/ca.crt\n", "peer_tls_ca, peer_tls_cert and peer_tls_key go together"),
    ("peer_tls_ca = {mesh}/missing.crt\npeer_tls_cert = {mesh}/relay-a.crt\npeer_tls_key = {mesh}/relay-a.key\n",
     'peer_tls_ca: cannot open "{mesh}/missing.crt": No such file or directory'),
    ("peer_tls_ca = {mesh}/ca.crt\npeer_tls_cert = {mesh}/relay-a.crt\npeer_tls_key = {mesh}/relay-b.key\n",
     "peer_tls_key does not match peer_tls_cert"),
    ("peer_tls_ca = {mesh}/ca.crt\npeer_tls_cert = {mesh}/ca.crt\npeer_tls_key = {mesh}/relay-a.crt\n",
     "peer_tls_key holds no unencrypted private key"),
    ("peer_tls_ca = {conf}\npeer_tls_cert = {mesh}/relay-a.crt\npeer_tls_key = {mesh}/relay-a.key\n",
     "is not a PEM file"),
    ("peer_tls_names = b\n", "peer_tls_names needs peer_tls_ca, peer_tls_cert and peer_tls_key"),
    ("order_max_ahead = 5\n", 'order_max_ahead "5" must be a number in [100, 1000000000]'),
]


@pytest.mark.parametrize("extra,message", BAD_CONFIGS)
def test_bad_peer_tls_config_is_a_clear_start_up_error(tmp_path, extra, message):
    conf = str(tmp_path / "relay-worker.conf")
    fill = {"mesh": MESH, "conf": conf}
    relay_conf(tmp_path, extra.format(**fill))
    p = subprocess.run([RELAY_BIN, "-c", conf], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert message.format(**fill) in p.stderr, p.stderr


def test_a_foreign_ca_certificate_is_refused_at_start(certs, tmp_path):
    cert, key = certs["other_ca_b"]
    conf = relay_conf(tmp_path, "peer_tls_ca = %s/ca.crt\npeer_tls_cert = %s\npeer_tls_key = %s\n"
                      % (MESH, cert, key))
    p = subprocess.run([RELAY_BIN, "-c", conf], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "does not verify against peer_tls_ca" in p.stderr, p.stderr


def test_without_peer_tls_a_warning_says_peers_are_unauthenticated(tmp_path):
    # an address grpc cannot listen on stops the start right after the check
    conf = relay_conf(tmp_path, "")
    text = open(conf).read().replace("grpc_listen = 127.0.0.1:1", "grpc_listen = 127.0.0.1:notaport")
    open(conf, "w").write(text)
    p = subprocess.run([RELAY_BIN, "-c", conf], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "warn: peers are not authenticated" in p.stderr, p.stderr
    assert 'cannot listen on "127.0.0.1:notaport"' in p.stderr, p.stderr
