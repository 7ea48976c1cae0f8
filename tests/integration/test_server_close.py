"""Closes the server starts reach the client (lingering close), on an nginx
of the test's own (own_nginx.py).

- `nginx -s quit` (SIGQUIT to the master): every connection gets 1001
  after what was already queued for it, even one whose queue is not empty
  and whose client keeps sending; the worker lingers until the client's
  EOF (or 2 s) and then exits.
- A slow client (a small SO_RCVBUF, not reading, on a listen socket with a
  small sndbuf and a 256k send queue): once its queue would overflow it is
  closed with 1008 "send queue full" after the frames already queued; a
  client that reads again within 2 s gets them and then the close frame,
  one that does not is dropped (no close frame) once the 2 s pass.
- A token that expires: the error `unauthorized` and close 4001 reach a
  client that keeps sending.

The client "keeps sending" unsolicited pongs (RFC 6455 lets it; the server
answers nothing), or pings (each answered by a pong: server-to-client
bytes that queue up when the client does not read).
"""

import itertools
import os
import signal
import socket
import struct
import threading
import time

import pytest

from conftest import TLS, token, uid, wait_until
from own_nginx import OwnNginx, upgrade_when_ready
from test_ws_protocol import RawWS

PING = 0x9
PONG = 0xA
CLOSE = 0x8
# far more than the kernel's buffers on both sides take from a client that
# does not read (they grow a little as the client's receive queue is
# collapsed): the queue, and the close frame behind it, cannot drain
SLOW_QUEUE = "256k"
SLOW_PINGS = 6000       # 762k of pongs: past the queue and the kernel buffers


class Sender(threading.Thread):
    """Sends one frame again and again until stopped or the socket fails."""

    def __init__(self, ws, opcode, count=None):
        super().__init__(daemon=True)
        self.frame = ws.frame(opcode, b"p" * 125)
        self.sock = ws.sock
        self.count = count
        self.sent = 0
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set() and (self.count is None or self.sent < self.count):
                self.sock.sendall(self.frame)
                self.sent += 1
        except OSError as e:
            self.error = e

    def finish(self):
        self.stop.set()
        self.join(10)


def read_until_close(ws):
    """Frames until the close frame: (pongs read, close code, reason); the
    code is None when the connection ended without one."""
    pongs = 0
    while True:
        try:
            op, payload = ws.recv_frame()
        except (EOFError, ConnectionResetError):
            return pongs, None, None
        if op == PONG:
            pongs += 1
        elif op == CLOSE:
            return pongs, struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def started(node):
    try:
        assert upgrade_when_ready(node.port, uid())[0] == 101
    except BaseException:
        node.stop()
        raise
    return node


def test_quit_sends_1001_after_the_queue_to_a_client_still_sending():
    node = started(OwnNginx([], listen_params=["sndbuf=8k"]).start())
    try:
        ws = RawWS(uid(), port=node.port, rcvbuf=4096)
        # pongs pile up behind the client's small window: far more than the
        # kernel buffers hold, far less than the 1m send queue
        burst = Sender(ws, PING, count=1000)
        burst.start()
        burst.join(30)
        assert burst.error is None and burst.sent == 1000, burst.error
        # (a moment for the worker to read them: pongs read after the quit
        # are dropped, and the test then only checks less)
        time.sleep(0.5)

        # from now on the client reads: a window of its full size lets the
        # server's kernel send on without waiting for zero-window probes,
        # whose backoff could outlast the 2 s bound on a loaded machine
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        os.kill(node.master_pid(), signal.SIGQUIT)
        # pongs go on while the worker begins its shutdown, and while the
        # client reads up to the close frame (one thread: see RawWS)
        pong = ws.frame(PONG, b"p" * 125)
        frames, code, reason = ws.read_until_close_sending(itertools.repeat(pong))
        pongs = sum(1 for op, _ in frames if op == PONG)
        assert code == 1001, (pongs, code, reason)
        assert "gracefully shutting down" in node.log()
        # the close came after the pongs queued before it, not instead of them
        assert 0 < pongs <= 1000, pongs
        ws.close()
        wait_until(lambda: not os.path.exists(node.pid_file), 15, what="nginx to exit")
    finally:
        bad = node.stop()
        assert not bad, bad


@pytest.fixture(scope="module")
def slow_node():
    node = started(OwnNginx(["minichat_max_message_size 4k", "minichat_send_queue_size " + SLOW_QUEUE],
                            listen_params=["sndbuf=8k"]).start())
    yield node
    bad = node.stop()
    assert not bad, bad


def overflow(node, user):
    """A client that stops reading and sends pings until its queue
    overflows; returns it once the server has started the close."""
    before = node.log().count("not reading")
    ws = RawWS(user, port=node.port, rcvbuf=4096)
    sender = Sender(ws, PING, count=SLOW_PINGS)
    sender.start()
    sender.join(30)
    assert sender.error is None, sender.error
    wait_until(lambda: node.log().count("not reading") > before, what="the queue to overflow")
    return ws


def test_slow_client_reading_again_gets_its_data_then_1008(slow_node):
    ws = overflow(slow_node, uid())
    try:
        pongs, code, reason = read_until_close(ws)
        assert (code, reason) == (1008, "send queue full"), (pongs, code, reason)
        # what was queued before the close came first, and it was bounded
        assert 0 < pongs < SLOW_PINGS, pongs
    finally:
        ws.close()


def test_slow_client_not_reading_is_dropped_after_the_linger_time(slow_node):
    """The close frame cannot leave while the client does not read: 2 s
    later the connection is gone, without it."""
    user = uid()
    ws = overflow(slow_node, user)
    try:
        gone = "user %d disconnected" % user
        wait_until(lambda: gone in slow_node.log(), what="the connection to be dropped")
        lines = [line for line in slow_node.log().splitlines() if "user %d " % user in line]
        assert any("did not take the close frame" in line for line in lines), lines
        pongs, code, reason = read_until_close(ws)
        assert code is None, (pongs, code, reason, lines)
    finally:
        ws.close()


def test_token_expiry_4001_reaches_a_client_still_sending():
    node = started(OwnNginx([]).start())
    try:
        ws = RawWS(port=node.port, tok=token(uid(), ttl=2))
        pong = ws.frame(PONG, b"p" * 125)
        frames, code, reason = ws.read_until_close_sending(itertools.repeat(pong))
        assert code == 4001, (frames, code, reason)
        assert len(frames) == 1 and b'"code":"unauthorized"' in frames[0][1], frames
        ws.close()
    finally:
        bad = node.stop()
        assert not bad, bad
