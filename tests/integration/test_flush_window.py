"""minichat_flush_window: a busy worker writes to a client at most once per
window, so that frames queued over several turns leave in one write, but
only while big fan-outs come at a sustained fast rate: the moving average
of their intervals under a fifth of the window.

An nginx of the test's own (one worker) with a 100ms window holds the
member, who reads with a raw socket and notes which recv() each frame came
in; the sender is on the stack's node a, so the test's nginx writes
deliveries only (no acks in its passes).  With busy=1 every message to the
member is a big fan-out.  Sixty messages 5ms apart: the first ones leave
each in its own turn (the average starts at two windows and needs about
twenty short intervals to come under 20ms), the last twenty wait for the
window's end and leave a few writes at most.  Messages 25ms apart (a
quarter of the window: inside the third of a window where a frame may
wait, but slower than a fifth on average) are never held, as 200 messages
a second are not with the shipped 20ms window; nor are messages 48ms
apart, nor one early message among them.  With the default busy=64,
passes that write to one connection leave the worker not busy: nothing
waits.  All arrive, in seq order, either way.
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
async def test_a_sustained_fast_rate_is_held_and_its_start_is_not():
    got = await three_messages("minichat_flush_window 100ms busy=1", 0.005, count=60)
    reads = [r for _, r in got]
    assert reads == sorted(reads), got
    assert reads[0] < reads[1] < reads[2], "the first messages after a quiet spell wait for nothing: %r" % reads
    # the last twenty came within ~100-140ms, once the average was under
    # 20ms: held to the windows' ends, they share a few writes
    assert len(set(reads[-20:])) <= 4, "a sustained fast rate leaves in few writes: %r" % reads


@run_async
async def test_a_rate_slower_than_a_fifth_of_a_window_is_not_held():
    """busy=1, twelve messages 25ms apart: each comes within a third of the
    100ms window after the last write, but their average interval is over a
    fifth of it, so each leaves in its own turn (the rule that looked at the
    last two intervals held them, as it held 200 messages a second at 20ms)."""
    got = await three_messages("minichat_flush_window 100ms busy=1", 0.025, count=12)
    reads = [r for _, r in got]
    assert reads == sorted(set(reads)), "each message in its own write: %r" % got


@run_async
async def test_one_early_message_in_slow_traffic_is_not_held():
    """busy=1, messages 48ms apart but the fourth 4ms after the third: one
    short interval does not bring the average under a fifth of the window,
    so it leaves in its own turn (held to the window's end, as it was
    before the rate had to be sustained, it would wait about 50ms and share
    the fifth's write)."""
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
