"""The services' connections to MySQL and Kafka over TLS, with credentials
from files (lib/src/db_conf.c, lib/src/kafka_sec.c, lib/src/kafka_client.c;
docs/operations-security.md).

The dev stack's MariaDB servers and Kafka broker always serve TLS with
certificates of the backend dev CA in $MINICHAT_RUN/backend/, and the stack
always makes the MySQL user minichat_svc (REQUIRE SSL, its password in
backend/mysql-svc.password) and the Kafka SASL user (PLAIN over TLS on its
own listener).  With MINICHAT_TLS=1 (the cluster pass of `make test`) the
running relay-workers and consumer use them, so that whole pass runs over
them; the tests here that need the running services to do so skip in the
plain pass.  The others run a service binary of their own with a config
that points at the stack and check what it says and how it exits: good
settings get through the start-up checks, a wrong password file, a CA that
did not sign the server's certificate or a missing client certificate stop
the start with a clear error and a non-zero exit, and no password is ever
printed.  minichat-ban, the operator's tool, reaches MySQL the same way.

A relay-worker started here is given grpc_listen = 127.0.0.1:notaport, an
address it cannot listen on: its Kafka and MySQL checks run before it
listens, so it stops right after them, and a good run is told by its log
lines, not by a process left to kill.
"""

import os
import subprocess

import pymysql
import pytest

from conftest import CLUSTER_PORTS, OFF, REDIS_MODE, REDIS_PORT, RUN, TLS, TOP, create_room, uid

RELAY_BIN = os.path.join(TOP, "build", "bin", "relay-worker")
CONSUMER_BIN = os.path.join(TOP, "build", "bin", "roomlist-consumer")
BACKEND = os.path.join(RUN, "backend")
CA = os.path.join(BACKEND, "ca.crt")
MYSQL_PRIMARY = "127.0.0.1:%d" % (13306 + OFF)
KAFKA_PLAIN = "127.0.0.1:%d" % (19092 + OFF)
KAFKA_SSL = "127.0.0.1:%d" % (19094 + OFF)
KAFKA_SASL = "127.0.0.1:%d" % (19095 + OFF)
SVC_USER = "minichat_svc"


def secret(name):
    with open(os.path.join(BACKEND, name)) as f:
        return f.read().strip()


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=str(cwd), check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory):
    """A CA that signed none of the stack's certificates."""
    assert os.path.exists(CA), "the stack runs without %s" % BACKEND
    d = tmp_path_factory.mktemp("foreign-ca")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", "/CN=not the backend CA", "-keyout", "ca.key", "-out", "ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    return str(d / "ca.crt")


def mysql_tls_keys(password_file=None, ca=CA, mode="verify"):
    return ("mysql_user = %s\nmysql_password_file = %s\nmysql_ssl = %s\nmysql_ssl_ca = %s\n"
            % (SVC_USER, password_file or os.path.join(BACKEND, "mysql-svc.password"), mode, ca))


def kafka_ssl_keys(ca=CA, client_cert=True):
    keys = "kafka_security_protocol = ssl\nkafka_ssl_ca = %s\n" % ca
    if client_cert:
        keys += "kafka_ssl_cert = %s/service.crt\nkafka_ssl_key = %s/service.key\n" % (BACKEND, BACKEND)
    return keys


def run_relay(tmp_path, brokers, extra):
    """Runs a relay-worker that stops after its start-up checks; returns
    (exit code, stderr)."""
    conf = tmp_path / "relay-worker.conf"
    conf.write_text("node = z\nunix_socket = %s\ngrpc_listen = 127.0.0.1:notaport\npeers =\n"
                    "kafka_brokers = %s\nmysql_primary = %s\nrebuild_wait_ms = 0\n%s"
                    % (tmp_path / "relay.sock", brokers, MYSQL_PRIMARY, extra))
    p = subprocess.run([RELAY_BIN, "-c", str(conf)], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def run_consumer(tmp_path, brokers, extra):
    """Runs a roomlist-consumer expected to stop at start; returns (exit code, stderr)."""
    conf = tmp_path / "roomlist-consumer.conf"
    conf.write_text("kafka_brokers = %s\nkafka_group = test-backend-tls-%d\nmysql_primary = %s\nredis =\n%s"
                    % (brokers, uid(), MYSQL_PRIMARY, extra))
    p = subprocess.run([CONSUMER_BIN, "-c", str(conf)], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def assert_no_secret(text):
    for name in ("mysql-svc.password", "kafka-sasl.password"):
        assert secret(name) not in text, "the password in %s was printed" % name


# --- the stack's MySQL user -----------------------------------------------------

def svc_connect(**kwargs):
    return pymysql.connect(host="127.0.0.1", port=13306 + OFF, user=SVC_USER, password=secret("mysql-svc.password"),
                           database="minichat", connect_timeout=5, **kwargs)


def test_the_service_user_cannot_log_in_without_tls():
    with pytest.raises(pymysql.err.OperationalError) as e:
        svc_connect()
    assert e.value.args[0] == 1045, e.value.args


def test_the_service_user_logs_in_over_verified_tls():
    conn = svc_connect(ssl={"ca": CA, "check_hostname": True})
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
            assert cur.fetchone()[1] != ""
    finally:
        conn.close()


# --- the running services (the TLS pass) ---------------------------------------

@pytest.mark.skipif(not TLS, reason="the services use TLS to MySQL and Kafka with MINICHAT_TLS=1 only")
def test_the_running_services_reach_mysql_and_kafka_over_tls():
    for conf in ("relay-a/relay-worker.conf", "relay-b/relay-worker.conf", "consumer/roomlist-consumer.conf"):
        with open(os.path.join(RUN, conf)) as f:
            text = " ".join(f.read().split())
        assert "mysql_user = %s" % SVC_USER in text and "mysql_ssl = verify" in text, conf
        assert "kafka_security_protocol = ssl" in text and "kafka_brokers = %s" % KAFKA_SSL in text, conf
    # a database request makes relay-worker a open its connections
    create_room(uid(), [uid()])
    for log in ("relay-a/relay.log", "consumer/consumer.log"):
        with open(os.path.join(RUN, log)) as f:
            text = f.read()
        assert 'as "%s"' % SVC_USER in text and "tls TLS_" in text, log
        assert "tls off" not in text, log
        assert_no_secret(text)
    with open(os.path.join(RUN, "relay-a/relay.log")) as f:
        assert "producing to \"minichat.messages\" on %s over ssl" % KAFKA_SSL in f.read()
    # the server's side: the services are logged in as the user that cannot
    # log in without TLS
    conn = pymysql.connect(host="127.0.0.1", port=13306 + OFF, user="root", password="", connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (SVC_USER,))
            assert cur.fetchone()[0] >= 2
    finally:
        conn.close()


# --- start-up checks: good settings ---------------------------------------------

def test_good_tls_settings_pass_the_start_up_checks(tmp_path):
    rc, err = run_relay(tmp_path, KAFKA_SSL, kafka_ssl_keys() + mysql_tls_keys())
    assert "kafka: brokers answer over ssl" in err, err
    assert 'db: connected to primary %s as "%s"' % (MYSQL_PRIMARY, SVC_USER) in err, err
    assert "tls TLS_" in err, err
    # then it stops at the address it cannot listen on, and only there
    assert rc != 0 and "notaport" in err, err
    assert_no_secret(err)


def test_sasl_over_tls_with_a_password_file(tmp_path):
    rc, err = run_relay(tmp_path, KAFKA_SASL, "kafka_security_protocol = sasl_ssl\nkafka_ssl_ca = %s\n"
                        "kafka_sasl_mechanism = PLAIN\nkafka_sasl_username = minichat\n"
                        "kafka_sasl_password_file = %s/kafka-sasl.password\n" % (CA, BACKEND))
    assert "kafka: brokers answer over sasl_ssl" in err, err
    assert rc != 0 and "notaport" in err, err
    assert_no_secret(err)


def test_mysql_ssl_on_without_a_ca_encrypts_without_checking(tmp_path):
    rc, err = run_relay(tmp_path, KAFKA_PLAIN, "mysql_user = %s\nmysql_password_file = %s/mysql-svc.password\n"
                        "mysql_ssl = on\n" % (SVC_USER, BACKEND))
    assert 'as "%s"' % SVC_USER in err and "tls TLS_" in err, err


# --- start-up checks: bad settings stop the start --------------------------------

@pytest.fixture(params=["relay-worker", "roomlist-consumer"])
def service(request):
    return run_relay if request.param == "relay-worker" else run_consumer


def test_a_wrong_mysql_password_file_stops_the_start(service, tmp_path):
    pw = tmp_path / "wrong.password"
    pw.write_text("not-the-password\n")
    rc, err = service(tmp_path, KAFKA_PLAIN, mysql_tls_keys(password_file=str(pw)))
    assert rc == 1, err
    assert "Access denied for user '%s'" % SVC_USER in err, err
    assert "refuses these settings" in err and "mysql_password_file" in err, err
    assert "not-the-password" not in err
    assert_no_secret(err)


@pytest.mark.parametrize("mode", ["verify", "on"])
def test_a_foreign_mysql_ca_stops_the_start(service, tmp_path, foreign_ca, mode):
    # with a CA, on checks the chain too (only verify checks the name)
    rc, err = service(tmp_path, KAFKA_PLAIN, mysql_tls_keys(ca=foreign_ca, mode=mode))
    assert rc == 1, err
    assert "(2026)" in err and "refuses these settings" in err, err


def test_without_tls_the_service_user_is_refused_at_start(service, tmp_path):
    rc, err = service(tmp_path, KAFKA_PLAIN, "mysql_user = %s\nmysql_password_file = %s/mysql-svc.password\n"
                      % (SVC_USER, BACKEND))
    assert rc == 1, err
    assert "mysql_ssl off" in err and "Access denied" in err, err


def test_a_foreign_kafka_ca_stops_the_start(service, tmp_path, foreign_ca):
    rc, err = service(tmp_path, KAFKA_SSL, kafka_ssl_keys(ca=foreign_ca))
    assert rc == 1, err
    assert "kafka: cannot connect over ssl" in err and "certificate verify failed" in err, err


def test_kafka_without_the_client_certificate_stops_the_start(service, tmp_path):
    # the TLS listener requires a client certificate of the backend CA
    rc, err = service(tmp_path, KAFKA_SSL, kafka_ssl_keys(client_cert=False))
    assert rc == 1, err
    assert "kafka: cannot connect over ssl" in err, err


def test_a_wrong_kafka_sasl_password_stops_the_start(service, tmp_path):
    pw = tmp_path / "kafka.password"
    pw.write_text("not-the-password\n")
    rc, err = service(tmp_path, KAFKA_SASL, "kafka_security_protocol = sasl_ssl\nkafka_ssl_ca = %s\n"
                      "kafka_sasl_username = minichat\nkafka_sasl_password_file = %s\n" % (CA, pw))
    assert rc == 1, err
    assert "kafka: cannot connect over sasl_ssl" in err and "Authentication failed" in err, err
    assert "not-the-password" not in err


@pytest.mark.parametrize("extra, message", [
    ("mysql_ssl = verify\n", "mysql_ssl verify needs mysql_ssl_ca"),
    ("mysql_ssl = maybe\n", 'mysql_ssl "maybe" is not off, on or verify'),
    ("mysql_password_file = /nonexistent/pw\n", 'mysql_password_file: cannot open "/nonexistent/pw"'),
    ("kafka_security_protocol = ssl\nkafka_ssl_ca = /nonexistent/ca.crt\n",
     'kafka_ssl_ca: cannot open "/nonexistent/ca.crt"'),
    ("kafka_security_protocol = SSL\n", 'kafka_security_protocol "SSL" is not plaintext'),
    ("kafka_security_protocol = sasl_ssl\n", "needs kafka_sasl_username and kafka_sasl_password_file"),
])
def test_bad_keys_are_clear_start_up_errors(service, tmp_path, extra, message):
    rc, err = service(tmp_path, KAFKA_PLAIN, extra)
    assert rc == 1, err
    assert message in err, err


# --- minichat-ban, the operator's tool ----------------------------------------

def ban_tool(*args):
    ports = CLUSTER_PORTS if REDIS_MODE == "cluster" else [REDIS_PORT]
    return subprocess.run([os.path.join(TOP, "build", "bin", "minichat-ban"),
                           "--redis", ",".join("127.0.0.1:%d" % p for p in ports), "--mysql", MYSQL_PRIMARY,
                           "--mysql-user", SVC_USER, "--mysql-password-file",
                           os.path.join(BACKEND, "mysql-svc.password")] + list(args) + ["show", str(uid())],
                          capture_output=True, text=True, timeout=30)


def test_minichat_ban_reaches_mysql_over_verified_tls():
    p = ban_tool("--mysql-ssl", "verify", "--mysql-ssl-ca", CA)
    assert p.returncode == 0, p.stderr
    p = ban_tool()
    assert p.returncode == 1 and "Access denied" in p.stderr, p.stderr
    assert_no_secret(p.stdout + p.stderr)
    p = ban_tool("--mysql-ssl", "verify")
    assert p.returncode == 2 and "--mysql-ssl verify needs --mysql-ssl-ca" in p.stderr, p.stderr
