"""SIGHUP to relay-worker and roomlist-consumer: the config is read again.

log_level and log_file change at once (the log file is reopened, so that
logrotate can move it away); a file with errors changes nothing and its errors
are logged with their lines; any other key that changed is named as waiting for
a restart.  The services keep running through all of it.

The tests work on the dev stack's own relay-worker a and consumer: they edit
the running config file, signal, and put the file back (and signal again) in
any case.
"""
import contextlib
import os
import signal
import sys

import pytest

from conftest import RUN, connect, create_room, run_async, uid, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import faults  # noqa: E402

SERVICES = {
    # name: (config, pid file, command pattern, the stack's stderr log)
    "relay-worker": ("relay-a/relay-worker.conf", "relay-a/relay.pid", "relay-worker", "relay-a/relay.log"),
    "roomlist-consumer": ("consumer/roomlist-consumer.conf", "consumer/consumer.pid", "roomlist-consumer",
                          "consumer/consumer.log"),
}


def read(path, since=0):
    try:
        with open(path, errors="replace") as f:
            f.seek(since)
            return f.read()
    except FileNotFoundError:
        return ""


class Service:
    def __init__(self, name):
        conf, self.pidfile, self.pattern, log = SERVICES[name]
        self.conf = os.path.join(RUN, conf)
        self.stderr = os.path.join(RUN, log)
        with open(self.conf) as f:
            self.original = f.read()
        self.pid = faults._pid(self.pidfile, self.pattern)
        assert self.pid, "%s is not running" % name

    def write(self, extra="", drop=()):
        lines = [ln for ln in self.original.splitlines() if ln.split("=")[0].strip() not in drop]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n" + extra)

    def hup(self, expect):
        """Sends SIGHUP; waits until the stack's log shows `expect` after it."""
        since = os.path.getsize(self.stderr)
        os.kill(self.pid, signal.SIGHUP)
        wait_until(lambda: expect in read(self.stderr, since), timeout=20,
                   what="%r in %s after SIGHUP" % (expect, self.stderr))
        return read(self.stderr, since)

    def alive(self):
        return faults._pid(self.pidfile, self.pattern) == self.pid


@run_async
async def send_from_b():
    """A message from node b: relay-worker a logs its arrival from the peer,
    the consumer its batch (both at debug)."""
    u = uid()
    room = create_room(u, [u], node="b")
    c = await connect(u, node="b")
    try:
        ack = await c.send_msg(room, "sighup")
        assert ack["seq"] == 1, ack
    finally:
        await c.close()


@contextlib.contextmanager
def service(name):
    s = Service(name)
    try:
        yield s
    finally:
        with open(s.conf, "w") as f:
            f.write(s.original)
        if s.alive():
            s.hup("reload: done")


@pytest.fixture(params=sorted(SERVICES))
def svc(request):
    with service(request.param) as s:
        yield s


def test_log_file_and_level_change_and_the_file_is_reopened(svc, tmp_path):
    log = str(tmp_path / "svc.log")
    svc.write("log_file = %s\nlog_level = debug\n" % log, drop=("log_level",))
    out = svc.hup("reload: done")
    assert 'log_file "%s"' % log in out, out
    assert " info: reload: done" in read(log), read(log)
    # (no check that the file has no debug line yet: the consumer's
    # read-pointer flusher logs at debug whenever earlier tests left marks)
    send_from_b()
    wait_until(lambda: " debug: " in read(log), timeout=30, what="debug lines in the new log file")

    # logrotate: the file is moved away, SIGHUP makes a new one of that name
    os.rename(log, log + ".1")
    svc.hup("reload: done")
    wait_until(lambda: "reload: done" in read(log), timeout=20, what="the reopened log file")
    assert "reload: done" not in read(log + ".1").split("got SIGHUP")[-1], "the moved file got the new lines"

    # back to info without a file: the file gets no more lines
    svc.write()
    svc.hup("reload: done")
    size = os.path.getsize(log)
    svc.hup("reload: done")
    assert os.path.getsize(log) == size, "lines still go to the dropped log file"
    assert svc.alive()


def test_a_broken_file_changes_nothing(svc, tmp_path):
    n = len(svc.original.splitlines())
    svc.write("log_level = loud\nthis is not a setting\n", drop=("log_level",))
    out = svc.hup("the running config stays")
    conf = svc.conf
    dropped = sum(1 for ln in svc.original.splitlines() if ln.split("=")[0].strip() == "log_level")
    first = n - dropped + 1
    assert '%s:%d: log_level "loud" is not debug, info, warn or error' % (conf, first) in out, out
    assert '%s:%d: expected "key = value"' % (conf, first + 1) in out, out
    assert "reload: done" not in out
    assert svc.alive()
    # still on the old settings: a good file is taken again
    svc.write()
    svc.hup("reload: done")


def test_other_keys_wait_for_a_restart(svc):
    key = "kafka_topic"
    svc.write("%s = renamed.topic\n" % key, drop=(key,))
    out = svc.hup("reload: done")
    assert "reload: %s changed in %s; it takes effect at the next restart" % (key, svc.conf) in out, out
    assert "renamed.topic" not in out
    assert svc.alive()
