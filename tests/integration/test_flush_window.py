"""minichat_flush_window: a busy worker writes to a client at most once per
window, so that frames queued over several turns leave in one write.

An nginx of the test's own (one worker) with a 100ms window holds the
member, who reads with a raw socket and notes which recv() each frame came
in; the sender is on the stack's node a, so the test's nginx writes
deliveries only (no acks in its passes).  With busy=1 (every write pass
makes the worker busy) the first message after a quiet period leaves at
once (its own read), and so does the second, 5ms later: one short gap is
not yet a sustained rate; the third and fourth, once two passes came
within a third of a window, wait for the window's end and leave together
(one read holds both).  With the default busy=64, passes that write to one
connection leave the worker not busy: nothing waits, and messages sent
40ms apart (two of them inside one window) each have their own read; with
busy=1, messages 48ms apart (more than a third of a window after the last
write) are not held either, nor is one early message among them.  All
arrive, in seq order, either way.
"""

import asyncio
import json

from conftest import NGINX_PORTS, cid, create_room, run_async, uid
from own_nginx import OwnNginx, upgrade_when_ready, ws_connect
from test_ws_protocol import RawWS


class CountingWS(RawWS):
    """RawWS that numbers its recv() calls; frame() answers the number of the
    read that completed the last frame taken."""

    reads = 0

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.reads += 1
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def msgs_with_reads(ws, count):
    """The next `count` msg frames, each as (frame, number of its read)."""
    out = []
    while len(out) < count:
        opcode, payload = ws.recv_frame()
        if opcode != 0x1:
            continue
        f = json.loads(payload)
        if f.get("op") == "msg":
            out.append((f, ws.reads))
    return out


async def three_messages(directive, gap, count=3):
    """The messages of the docstring (three, or count), sent `gap` seconds
    apart (or gap[i] after message i), to a member on an nginx with
    `directive`: [(frame, read number)] as the member got them."""
    gaps = gap if isinstance(gap, (list, tuple)) else [gap] * count
    n = OwnNginx([directive]).start()
    try:
        a, b = uid(), uid()
        room = create_room(a, [a, b])
        assert upgrade_when_ready(n.port, uid())[0] == 101
        member = CountingWS(b, port=n.port)
        sender = await ws_connect(NGINX_PORTS["a"], a)
        await asyncio.sleep(0.3)   # windows with nothing written
        # the member reads in a thread of its own from before the first send
        reading = asyncio.get_running_loop().run_in_executor(None, msgs_with_reads, member, count)
        for i in range(count):
            await sender.send({"op": "send", "id": 10 + i, "room": room, "cid": cid(), "body": "m%d" % i})
            await asyncio.sleep(gaps[i])
        got = await reading
        assert [f["body"] for f, _ in got] == ["m%d" % i for i in range(count)], got
        seqs = [f["seq"] for f, _ in got]
        assert seqs == sorted(seqs), got
        for i in range(count):
            ack = await sender.expect("ack", id=10 + i)
            assert ack["seq"] == seqs[i], ack
        await sender.close()
        member.close()
    finally:
        bad = n.stop()
    assert not bad, bad
    return got


@run_async
async def test_frames_inside_the_window_leave_in_one_write():
    got = await three_messages("minichat_flush_window 100ms busy=1", 0.005, count=4)
    first, _, third, fourth = [r for _, r in got]
    assert first < third, "the first message after a quiet window waits for nothing: %r" % got
    assert third == fourth, "two messages inside one window of a sustained rate leave in one write: %r" % got


@run_async
async def test_one_early_message_in_slow_traffic_is_not_held():
    """busy=1, messages 48ms apart but the fourth 4ms after the third: its
    gap is short, the one before it was not, so it leaves in its own turn
    (held to the window's end, as it was before the rate had to be
    sustained, it would wait about 50ms and share the fifth's write)."""
    got = await three_messages("minichat_flush_window 100ms busy=1", [0.048, 0.048, 0.004, 0.048, 0.048], count=5)
    reads = [r for _, r in got]
    assert reads == sorted(reads), got
    assert reads[3] < reads[4], "the early message does not wait for the next one: %r" % got


@run_async
async def test_frames_slower_than_a_third_of_a_window_are_not_held():
    """busy=1 again, five messages 48ms apart: each comes more than a third
    of the 100ms window after the last write, so each leaves in its own turn
    (held to the window's end, as they were while the bound was half a
    window, the second would share the third's write)."""
    got = await three_messages("minichat_flush_window 100ms busy=1", 0.048, count=5)
    reads = [r for _, r in got]
    assert reads == sorted(set(reads)), "each message in its own write: %r" % got


@run_async
async def test_a_worker_writing_to_few_connections_is_not_held():
    got = await three_messages("minichat_flush_window 100ms", 0.04)
    first, second, third = [r for _, r in got]
    assert first < second < third, "small passes do not make the worker busy: %r" % got
