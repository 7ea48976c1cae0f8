"""The Debian packages (`make deb`, debian/) installed on this machine.

The fixture builds the packages with `make deb` (or takes them from
$MINICHAT_DEB_DIR), purges any left by an earlier run, and installs them
with `apt-get install ./*.deb`.  systemd is not PID 1 here, so the tests
start the installed programs the way their units would: the unit file's
ExecStartPre and ExecStart, as its User, Group and SupplementaryGroups
(setpriv), with its RuntimeDirectory made as systemd makes it.  Only the
config path differs: a copy of the installed /etc/minichat file with the
dev stack's Redis, MariaDB and Kafka in it, a topic and a consumer group of
the test's own (so that the row in MySQL is the packaged consumer's work,
and the stack's consumer is not disturbed).  An nginx is started from the
package's example site with the module loaded through the package's load
file in /etc/nginx/modules-enabled, its workers as www-data, as Debian's
nginx runs them.  A message sent there is acked, delivered and stored.

On the way out everything is stopped and the packages are purged; the
minichat user is removed again when this run (or an interrupted one) made
it, so the machine is left as it was.  Needs root (apt-get, setpriv); runs in the single-Redis pass
only (the Makefile's CLUSTER_PYTEST_ARGS).
"""

import asyncio
import glob
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import (KAFKA_PORT, MYSQL_PORTS, REDIS_MODE, REDIS_PORT, RUN, SECRET_FILE, SUBPROTOCOL, TLS, TOP, Client,
                      create_room, kafka_tool, query, run_async, uid, wait_until, ws_open, ws_url)
from own_nginx import BAD_LINE, NGINX, free_port

PACKAGES = ["libnginx-mod-http-minichat", "minichat-common", "minichat-relay-worker", "minichat-roomlist-consumer"]
UNITS = {"relay": "/lib/systemd/system/minichat-relay-worker.service",
         "consumer": "/lib/systemd/system/minichat-roomlist-consumer.service"}
LOAD_FILE = "/etc/nginx/modules-enabled/50-mod-http-minichat.conf"
EXAMPLE_SITE = "/usr/share/doc/libnginx-mod-http-minichat/examples/minichat-site.conf"
TOPIC = "minichat.pkgtest"
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-q"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installs packages: needs root"),
    pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("setpriv") is None,
                       reason="needs apt-get and setpriv"),
    pytest.mark.skipif(TLS or REDIS_MODE != "single",
                       reason="the packaged services are pointed at the plain single-Redis stack"),
]


def run(args, timeout=600, check=True, **kw):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and r.returncode != 0:
        pytest.fail("%s failed (%d):\n%s\n%s" % (" ".join(args), r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    return r


def installed(pkg):
    r = run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False)
    return r.returncode == 0 and "installed" in r.stdout and "not-installed" not in r.stdout


def purge():
    present = [p for p in PACKAGES if run(["dpkg-query", "-W", p], check=False).returncode == 0]
    if present:
        run(APT + ["purge"] + present)


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def unit_service(path):
    """The [Service] keys of a unit file (a key given twice keeps the last)."""
    keys, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                keys[k] = v
    return keys


def as_unit(svc, argv):
    """argv run as the unit's User, Group and SupplementaryGroups."""
    groups = [svc["Group"]] + svc.get("SupplementaryGroups", "").split()
    return ["setpriv", "--reuid=" + svc["User"], "--regid=" + svc["Group"],
            "--groups=" + ",".join(groups), "--inh-caps=-all", "--no-new-privs"] + argv


def exec_line(svc, key, conf):
    """The unit's command line for key, with the test's config in place of the installed one."""
    argv = svc[key].split()
    i = argv.index("-c")
    assert argv[i + 1].startswith("/etc/minichat/"), argv
    argv[i + 1] = conf
    return argv


def derive_conf(installed_path, out_path, changes, drop=()):
    """The installed config with each key of `changes` set and those of `drop` removed."""
    seen, out = set(), []
    with open(installed_path) as f:
        for line in f:
            m = re.match(r"\s*([a-z_]+)\s*=", line)
            if m and m.group(1) in drop:
                continue
            if m and m.group(1) in changes:
                line = "%s = %s\n" % (m.group(1), changes[m.group(1)])
                seen.add(m.group(1))
            out.append(line)
    out += ["%s = %s\n" % (k, v) for k, v in changes.items() if k not in seen]
    with open(out_path, "w") as f:
        f.writelines(out)
    os.chown(out_path, 0, grp.getgrnam("minichat").gr_gid)
    os.chmod(out_path, 0o640)


def make_topic():
    """The test's topic, with the stack's Kafka tools (as scripts/stack.sh makes its own)."""
    run(kafka_tool("org.apache.kafka.tools.TopicCommand",
                   "--create", "--if-not-exists", "--topic", TOPIC, "--partitions", "1", "--replication-factor", "1"),
        timeout=120)


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@pytest.fixture(scope="module")
def packages():
    """Build (or find), purge leftovers, install; purge again at the end."""
    deb_dir = os.environ.get("MINICHAT_DEB_DIR")
    if not deb_dir:
        run(["make", "-C", TOP, "--no-print-directory", "deb"], timeout=900)
        deb_dir = os.path.join(TOP, "build", "deb")
    debs = sorted(glob.glob(os.path.join(deb_dir, "*.deb")))
    assert sorted(re.sub(r"_.*", "", os.path.basename(d)) for d in debs) == sorted(PACKAGES), debs
    # a minichat user that is there while none of the packages is belongs to
    # someone else and stays; one made by this run or left with the
    # packages of an interrupted run goes with them
    keep_user = user_exists("minichat") and not any(installed(p) for p in PACKAGES)
    purge()
    # installed from their paths: apt resolves their dependencies (nginx's
    # ABI, the libraries) from what the machine has
    run(APT + ["install", "--no-install-recommends"] + debs)
    yield {"debs": debs}
    purge()
    if not keep_user and user_exists("minichat"):
        run(["userdel", "minichat"], check=False)
        run(["groupdel", "minichat"], check=False)


def test_installed_files(packages):
    for p in PACKAGES:
        assert installed(p), p
    # dh_nginx: nginx's exact ABI, and the module enabled through its load file
    depends = run(["dpkg-query", "-W", "-f=${Depends}", "libnginx-mod-http-minichat"]).stdout
    assert re.search(r"\bnginx-abi-[0-9.]+-[0-9]+\b", depends), depends
    assert os.path.realpath(LOAD_FILE) == "/usr/share/nginx/modules-available/mod-http-minichat.conf"
    with open(LOAD_FILE) as f:
        assert f.read().strip() == "load_module modules/ngx_http_minichat_module.so;"
    assert os.path.isfile("/usr/lib/nginx/modules/ngx_http_minichat_module.so")
    # Debian's own nginx.conf loads every enabled module: with this one
    # loaded and no minichat_* directive it must still pass its check
    run([NGINX, "-t", "-q"])
    # and the dev stack's nodes load build/'s module only, never the enabled one
    for n in ("a", "b"):
        with open(os.path.join(RUN, "nginx-" + n, "nginx.conf")) as f:
            conf = f.read()
        assert "modules-enabled" not in conf and "/usr/lib/nginx/modules" not in conf, n
    # the configs are conffiles; the migrations and tools are there
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}\n", "minichat-relay-worker",
                     "minichat-roomlist-consumer"]).stdout
    for c in ("/etc/minichat/relay-worker.conf", "/etc/minichat/roomlist-consumer.conf"):
        assert c in conffiles, conffiles
    migrations = sorted(os.listdir("/usr/share/minichat/migrations"))
    assert migrations == sorted(os.path.basename(p) for p in glob.glob(os.path.join(TOP, "migrations", "*.sql")))
    for tool in ("/usr/bin/minichat-token", "/usr/bin/minichat-ban", "/usr/sbin/minichat-relay-worker",
                 "/usr/sbin/minichat-roomlist-consumer"):
        assert os.access(tool, os.X_OK), tool
    # the unprivileged user of the units, made by systemd-sysusers in postinst
    user = pwd.getpwnam("minichat")
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin", user


def test_units(packages):
    for path in UNITS.values():
        svc = unit_service(path)
        assert svc["User"] == "minichat" and svc["Group"] == "minichat", svc
        for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                          ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("CapabilityBoundingSet", ""),
                          ("Restart", "on-failure"), ("ExecReload", "/bin/kill -HUP $MAINPID")):
            assert svc.get(key) == want, (path, key, svc.get(key))
        # the config is checked (-t) before every start
        binary, args = svc["ExecStart"].split(" ", 1)
        assert svc["ExecStartPre"] == binary + " -t " + args, svc
    relay = unit_service(UNITS["relay"])
    assert relay["RuntimeDirectory"] == "minichat" and "www-data" in relay["SupplementaryGroups"].split(), relay
    if shutil.which("systemd-analyze"):
        r = run(["systemd-analyze", "verify"] + list(UNITS.values()), check=False)
        # without systemd as PID 1 verify still parses every directive: an
        # unknown or misspelt one is reported as such
        bad = [l for l in (r.stdout + r.stderr).splitlines()
               if re.search(r"Unknown (key|section)|Invalid|Failed to parse|bad-setting|not executable", l)]
        assert r.returncode == 0 and not bad, r.stdout + r.stderr
        # systemd's own rating of the sandbox, from the files alone: at most
        # 2.0 of 10 ("OK"; both units are 1.5)
        for path in UNITS.values():
            r = run(["systemd-analyze", "security", "--offline=true", "--threshold=20", path], check=False)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr


def test_logrotate(packages):
    """Each service package installs /etc/logrotate.d/<package> (a conffile)
    for its log file in /var/log/minichat; logrotate accepts it (-d), and a
    forced rotation, as the minichat user in the directory systemd's
    LogsDirectory= makes (0750 minichat:minichat), moves the file and
    creates a new one for the service to reopen on SIGHUP (the postrotate's
    systemctl reload: systemd is not PID 1 here, so that part is not run
    for real).  The rotation runs only when this test made the directory
    (a machine's own logs there are left alone)."""
    assert shutil.which("logrotate"), "logrotate is not installed (make setup installs it)"
    logdir = "/var/log/minichat"
    made_dir = not os.path.exists(logdir)
    user = pwd.getpwnam("minichat")
    state = tempfile.mkdtemp(prefix="minichat-logrotate-")
    try:
        if made_dir:
            os.mkdir(logdir, 0o750)
            os.chown(logdir, user.pw_uid, user.pw_gid)
        for pkg, svc in (("minichat-relay-worker", "relay-worker"),
                         ("minichat-roomlist-consumer", "roomlist-consumer")):
            path = "/etc/logrotate.d/" + pkg
            assert os.path.isfile(path), path
            conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", pkg]).stdout
            assert path in conffiles, conffiles
            with open(path) as f:
                text = f.read()
            assert "%s/%s.log" % (logdir, svc) in text and "systemctl try-reload-or-restart minichat-%s.service" \
                % svc in text, text

            r = run(["logrotate", "-d", "-s", os.path.join(state, "debug"), path], check=False)
            errors = [line for line in (r.stdout + r.stderr).splitlines() if "error" in line.lower()]
            assert r.returncode == 0 and not errors, r.stdout + r.stderr

            if not made_dir:
                continue   # someone's real logs: -d only
            log = os.path.join(logdir, svc + ".log")
            with open(log, "w") as f:
                f.write("a line before the rotation\n")
            os.chown(log, user.pw_uid, user.pw_gid)
            os.chmod(log, 0o640)
            r = run(["logrotate", "-f", "-s", os.path.join(state, svc), path], check=False)
            assert r.returncode == 0, r.stdout + r.stderr
            with open(log + ".1") as f:
                assert f.read() == "a line before the rotation\n"
            st = os.stat(log)
            assert (st.st_size, st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, user.pw_uid, user.pw_gid, 0o640), st
    finally:
        shutil.rmtree(state, ignore_errors=True)
        if made_dir:
            shutil.rmtree(logdir, ignore_errors=True)


def test_default_configs_check(packages):
    """The installed defaults pass -t but for the one thing an operator must
    supply: the MySQL password file."""
    for binary, conf in (("/usr/sbin/minichat-relay-worker", "/etc/minichat/relay-worker.conf"),
                         ("/usr/sbin/minichat-roomlist-consumer", "/etc/minichat/roomlist-consumer.conf")):
        r = run([binary, "-t", "-c", conf], check=False)
        errors = [l for l in r.stderr.splitlines() if "error: config:" in l]
        assert r.returncode == 1 and len(errors) == 1 and "mysql_password_file" in errors[0], r.stderr


@run_async
async def test_message_through_installed_packages(packages):
    make_topic()
    work = tempfile.mkdtemp(prefix="minichat-pkgtest-")
    os.chmod(work, 0o755)
    node = "pkg%d" % (uid() % 100000)
    group = "minichat-pkgtest-%d" % uid()
    procs, logs = {}, {}
    relay = unit_service(UNITS["relay"])
    consumer = unit_service(UNITS["consumer"])
    rundir = "/run/" + relay["RuntimeDirectory"]
    nginx_port = free_port()
    try:
        # RuntimeDirectory= as systemd makes it: owned by the unit's user
        shutil.rmtree(rundir, ignore_errors=True)
        os.mkdir(rundir)
        os.chown(rundir, pwd.getpwnam(relay["User"]).pw_uid, grp.getgrnam(relay["Group"]).gr_gid)
        os.chmod(rundir, int(relay.get("RuntimeDirectoryMode", "0755"), 8))

        db = {"mysql_primary": "127.0.0.1:%d" % MYSQL_PORTS["primary"], "mysql_user": "root",
              "mysql_password": ""}
        kafka = {"kafka_brokers": "127.0.0.1:%d" % KAFKA_PORT, "kafka_topic": TOPIC}
        derive_conf("/etc/minichat/relay-worker.conf", work + "/relay-worker.conf",
                    dict(db, **kafka, node=node, grpc_listen="127.0.0.1:%d" % free_port(),
                         kafka_consumer_group=group), drop=("mysql_password_file",))
        derive_conf("/etc/minichat/roomlist-consumer.conf", work + "/roomlist-consumer.conf",
                    dict(db, **kafka, kafka_group=group, kafka_instance_id=node, batch_ms=20,
                         redis="127.0.0.1:%d" % REDIS_PORT), drop=("mysql_password_file",))

        for name, svc in (("relay", relay), ("consumer", consumer)):
            conf = "%s/%s.conf" % (work, "relay-worker" if name == "relay" else "roomlist-consumer")
            run(as_unit(svc, exec_line(svc, "ExecStartPre", conf)))
            logs[name] = open("%s/%s.log" % (work, name), "w+")
            procs[name] = subprocess.Popen(as_unit(svc, exec_line(svc, "ExecStart", conf)), stdin=subprocess.DEVNULL,
                                           stdout=logs[name], stderr=subprocess.STDOUT)
        wait_until(lambda: os.path.exists(rundir + "/relay.sock"), what="the relay socket")
        st = os.stat(rundir + "/relay.sock")
        assert grp.getgrgid(st.st_gid).gr_name == "www-data" and st.st_mode & 0o777 == 0o660, oct(st.st_mode)

        # nginx from the example site: Debian's way of loading the module
        # (the modules-enabled link) and its www-data workers
        shutil.copy(SECRET_FILE, work + "/jwt-secret")
        os.chmod(work + "/jwt-secret", 0o600)
        with open(EXAMPLE_SITE) as f:
            site = f.read()
        site = (site.replace("minichat_node a;", "minichat_node %s;" % node)
                .replace("127.0.0.1:6379", "127.0.0.1:%d" % REDIS_PORT)
                .replace("/etc/minichat/jwt-secret", work + "/jwt-secret")
                .replace("listen 80;", "listen 127.0.0.1:%d;" % nginx_port))
        with open(work + "/nginx.conf", "w") as f:
            f.write("include %s;\nuser www-data;\nworker_processes 1;\npid %s/nginx.pid;\n"
                    "error_log %s/error.log info;\nevents { worker_connections 256; }\n"
                    "http {\n    access_log %s/access.log;\n" % (LOAD_FILE, work, work, work))
            for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                f.write("    %s_temp_path %s/%s;\n" % (t, work, t))
            f.write(site + "\n}\n")
        # nginx's own prefix (/usr/share/nginx), where the load file's
        # relative modules/ path leads to /usr/lib/nginx/modules
        run([NGINX, "-c", work + "/nginx.conf", "-e", work + "/error.log"])
        wait_until(lambda: port_open(nginx_port), what="the packaged nginx")

        sender, listener = uid(), uid()
        room = create_room(sender, [listener])   # through the dev stack's node a: same Redis and MySQL

        def tok(user):
            return run(["/usr/bin/minichat-token", "--secret-file", SECRET_FILE, str(user)]).stdout.strip()

        clients = []
        for user in (sender, listener):
            ws = await ws_open(ws_url(tok=tok(user), port=nginx_port), subprotocols=[SUBPROTOCOL],
                               open_timeout=5, close_timeout=2)
            c = Client(ws, user, node)
            hello = await c.expect("hello")
            assert hello["node"] == node and hello["user"] == user, hello
            clients.append(c)
        # the relay link comes up after the upgrade: a send refused with
        # unavailable before that is retried with the same cid
        msg_cid = "pkg-%d" % uid()

        deadline = time.monotonic() + 30
        while True:
            ack = await clients[0].send_msg(room, "from the packages", msg_cid=msg_cid)
            if ack.get("op") == "ack":
                break
            assert ack.get("code") == "unavailable", ack
            if time.monotonic() > deadline:
                pytest.fail("sends still unavailable after 30 s (the nginx worker never reached the relay-worker); "
                            "relay-worker's log:\n" + open(logs["relay"].name).read()[-2000:])
            await asyncio.sleep(0.2)
        got = await clients[1].expect("msg", room=room, seq=ack["seq"])
        assert got["body"] == "from the packages" and got["from"] == sender, got

        rows = wait_until(lambda: query("SELECT body, sender_id FROM messages WHERE room_id=%s AND seq=%s",
                                        (room, ack["seq"])), what="the message in MySQL")
        assert rows[0]["body"] == "from the packages" and rows[0]["sender_id"] == sender, rows
        for c in clients:
            await c.close()

        for name, p in procs.items():
            assert p.poll() is None, "%s exited: %s" % (name, open(logs[name].name).read()[-2000:])
    finally:
        pid_file = work + "/nginx.pid"
        if os.path.exists(pid_file):
            with open(pid_file) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda: not os.path.exists(pid_file), what="the packaged nginx to quit")
        codes = {name: stop(p) for name, p in procs.items()}
        shutil.rmtree(rundir, ignore_errors=True)
    bad = []
    if os.path.exists(work + "/error.log"):
        with open(work + "/error.log") as f:
            bad = [l for l in f if BAD_LINE.search(l)]
    assert not bad, bad
    assert codes == {"relay": 0, "consumer": 0}, (codes, {n: open(logs[n].name).read()[-2000:] for n in logs})
    shutil.rmtree(work, ignore_errors=True)
