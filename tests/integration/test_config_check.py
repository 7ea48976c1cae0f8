"""`relay-worker -t -c FILE` and `roomlist-consumer -t -c FILE`: the services'
config checks, like `nginx -t`.

-t reads the file and checks every key without connecting to anything: every
error is printed with the file and line it is about (the file alone for a key
that is missing), in file order, and the exit status is 1 when there is one;
a start without -t refuses the same file with the same list.  The configs the
dev stack runs with pass.
"""
import os
import re
import subprocess
import time

import pytest

from conftest import RUN, TOP

RELAY_BIN = os.path.join(TOP, "build", "bin", "relay-worker")
CONSUMER_BIN = os.path.join(TOP, "build", "bin", "roomlist-consumer")

# Lines of a relay-worker config, the bad ones marked with what the check says.
RELAY_LINES = [
    ("node = z", None),
    ("unix_socket = {dir}/relay.sock", None),
    ("# a comment, then a line without '='", None),
    ("grpc_listen 127.0.0.1:1", 'expected "key = value"'),
    ("kafka_brokers = 127.0.0.1:1", None),
    ("peers = y@127.0.0.1:2, z@127.0.0.1:3", 'peers: "z" is this node'),
    ("colour = blue", 'unknown key "colour"'),
    ("peer_batch_kb = 99999999", 'peer_batch_kb "99999999" must be a number in [1, 32768]'),
    ("fanout = sometimes", 'fanout must be "admitted" or "durable", not "sometimes"'),
    ("kafka_compression = brotli", 'kafka_compression must be none, lz4, zstd, gzip or snappy, not "brotli"'),
    ("mysql_ssl = yes", 'mysql_ssl "yes" is not off, on or verify'),
    ("kafka_security_protocol = ssl", None),
    ("kafka_ssl_ca = {dir}/missing-ca.pem", 'kafka_ssl_ca: cannot open "{dir}/missing-ca.pem": No such file or directory'),
    ("log_level = loud", 'log_level "loud" is not debug, info, warn or error'),
    ("order_gap_ms = 2000", None),
    ("history_on_loop = sometimes", 'history_on_loop "sometimes" must be on or off'),
    ("history_on_loop_max = 0", 'history_on_loop_max "0" must be a number in [1, 64]'),
    ("http_listen = 127.0.0.1:99999", 'http_listen: "127.0.0.1:99999": the port must be 1..65535'),
]

CONSUMER_LINES = [
    ("kafka_brokers = 127.0.0.1:1", None),
    ("batch_size = 0", 'batch_size "0" must be a number in [1, 100000]'),
    ("batch_ms = soon", 'batch_ms "soon" must be a number in [0, 60000]'),
    ("", None),
    ("redis_tls = maybe", 'redis_tls "maybe" must be on or off'),
    ("redis_tls_ca_file = {dir}/nope.pem", 'redis_tls_ca_file: cannot open "{dir}/nope.pem": No such file or directory'),
    ("mysql_primary = 127.0.0.1:1", None),
    ("kafka_topic =", "kafka_topic must not be empty"),
    ("what is this", 'expected "key = value"'),
    ("mysql_password = x", None),
    ("mysql_password_file = {dir}/pw", "set mysql_password or mysql_password_file, not both"),
    ("http_listen = localhost:9100", 'http_listen: "localhost:9100": "localhost" is not a numeric IP address'),
]


def write_conf(tmp_path, lines, missing=()):
    """Writes the lines; returns the path and the expected "path:line: message"s in
    order, then "path: message" for each of `missing` (errors about absent keys)."""
    path = str(tmp_path / "svc.conf")
    (tmp_path / "pw").write_text("secret\n")
    want = []
    with open(path, "w") as f:
        for i, (text, message) in enumerate(lines, start=1):
            f.write(text.format(dir=tmp_path) + "\n")
            if message:
                want.append("%s:%d: %s" % (path, i, message.format(dir=tmp_path)))
    want += ["%s: %s" % (path, m) for m in missing]
    return path, want


def run(binary, *args):
    started = time.monotonic()
    p = subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=30)
    return p.returncode, p.stderr, time.monotonic() - started


def config_errors(stderr):
    """The "config: ..." error lines, without the log prefix."""
    return [m.group(1) for m in re.finditer(r" error: config: (.*)", stderr)]


@pytest.mark.parametrize("binary,name,lines,missing", [
    # grpc_listen's line is not "key = value", so the key is missing too
    (RELAY_BIN, "relay-worker", RELAY_LINES, ["grpc_listen is required"]),
    (CONSUMER_BIN, "roomlist-consumer", CONSUMER_LINES, []),
])
def test_every_error_is_listed_with_its_line(tmp_path, binary, name, lines, missing):
    path, want = write_conf(tmp_path, lines, missing)
    rc, err, _ = run(binary, "-t", "-c", path)
    assert rc == 1, err
    assert config_errors(err) == want, err
    assert "%s: configuration file %s test failed" % (name, path) in err, err

    # a start refuses the file with the same list, before connecting anything
    rc, err, _ = run(binary, "-c", path)
    assert rc == 1, err
    assert config_errors(err) == want, err
    assert "test failed" not in err


def test_a_missing_key_is_named_with_the_file(tmp_path):
    path = tmp_path / "relay.conf"
    path.write_text("node = z\nunix_socket = %s/s\nkafka_brokers = 127.0.0.1:1\n" % tmp_path)
    rc, err, _ = run(RELAY_BIN, "-t", "-c", str(path))
    assert rc == 1, err
    assert config_errors(err) == ["%s: grpc_listen is required" % path], err


@pytest.mark.parametrize("binary,name", [(RELAY_BIN, "relay-worker"), (CONSUMER_BIN, "roomlist-consumer")])
def test_a_missing_file_fails_the_test(tmp_path, binary, name):
    path = str(tmp_path / "absent.conf")
    rc, err, _ = run(binary, "-t", "-c", path)
    assert rc == 1, err
    assert 'cannot open "%s": No such file or directory' % path in err, err
    assert "%s: configuration file %s test failed" % (name, path) in err, err


@pytest.mark.parametrize("binary,name,conf", [
    (RELAY_BIN, "relay-worker", "relay-a/relay-worker.conf"),
    (RELAY_BIN, "relay-worker", "relay-b/relay-worker.conf"),
    (CONSUMER_BIN, "roomlist-consumer", "consumer/roomlist-consumer.conf"),
])
def test_the_dev_stack_configs_pass(binary, name, conf):
    path = os.path.join(RUN, conf)
    rc, err, _ = run(binary, "-t", "-c", path)
    assert rc == 0, err
    assert config_errors(err) == [], err
    assert "%s: configuration file %s test is successful" % (name, path) in err, err


def test_the_test_connects_nothing(tmp_path):
    """Backends that do not answer make no difference to -t: nothing is dialled."""
    relay = tmp_path / "relay.conf"
    relay.write_text("node = z\nunix_socket = %s/s\ngrpc_listen = 127.0.0.1:1\nkafka_brokers = 127.0.0.1:1\n"
                     "mysql_primary = 127.0.0.1:1\npeers = y@127.0.0.1:2\n" % tmp_path)
    consumer = tmp_path / "consumer.conf"
    consumer.write_text("kafka_brokers = 127.0.0.1:1\nmysql_primary = 127.0.0.1:1\nredis = 127.0.0.1:1\n")
    for binary, path in ((RELAY_BIN, relay), (CONSUMER_BIN, consumer)):
        rc, err, _ = run(binary, "-t", "-c", str(path))
        assert rc == 0, err
        assert "test is successful" in err, err
        assert not re.search(r"\] (info|warn|error): (db|kafka|redis|readflush|push)", err), err
    assert not os.path.exists(str(tmp_path / "s")), "-t created the unix socket"


@pytest.mark.parametrize("binary", [RELAY_BIN, CONSUMER_BIN])
def test_an_unknown_option_is_a_usage_error(binary):
    rc, err, _ = run(binary, "-x")
    assert rc == 2, err
    assert "usage:" in err and "-t" in err, err
