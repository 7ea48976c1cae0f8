"""minichat_flush_window: a busy worker lets frames wait, at most a window,
so that frames queued over several turns leave in one write, but only while
big fan-outs come at a sustained fast rate (the moving average of their
intervals under 1/rate) and the stream has not paused (the last big fan-out
less than a window ago); and a window ends early, at a message, when the
next one is due after its end.

An nginx of the test's own (one worker) with a 100ms window holds the
member, who reads with a raw socket and notes which recv() each frame came
in (and when); the sender is on the stack's node a, so the test's nginx
writes deliveries only (no acks in its passes).  With busy=1 every message
to the member is a big fan-out.  Sixty messages 5ms apart at rate=50: the
first ones leave each in its own turn (the average starts at two windows
and needs about twenty short intervals to come under 20ms, a few more when
the box is slow), the last twenty wait and leave in a few writes at most.  Messages 25ms apart at rate=100
(slower than the rate on average) are never held, as 200 messages a second
are not with the shipped window and rate; nor is one early message among
slow ones.  A message after a pause longer than the window leaves at once.
Messages 70ms apart at rate=10 leave in pairs, each pair when its second
message comes, not at the window's end 30ms later.  With the default
busy=64, passes that write to one connection leave the worker not busy:
nothing waits.  All arrive, in seq order, either way.
"""

import asyncio
import json
import statistics
import time

from conftest import NGINX_PORTS, cid, create_room, run_async, uid
from own_nginx import OwnNginx, upgrade_when_ready, ws_connect
from test_metrics import delta, own_scrape
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
            self.read_times.append(time.monotonic())
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


async def three_messages(directive, gap, count=3, timed=None, scrapes=None):
    """The messages of the docstring (three, or count), sent `gap` seconds
    apart (or gap[i] after message i), to a member on an nginx with
    `directive`: [(frame, read number)] as the member got them.  With a
    list as `timed`, it gets the monotonic time of each send, and of each
    read (by read number, from 1), as (sends, reads); with a list as
    `scrapes`, the nginx's metrics before the first send and after the
    last read."""
    gaps = gap if isinstance(gap, (list, tuple)) else [gap] * count
    n = OwnNginx([directive]).start()
    try:
        a, b = uid(), uid()
        room = create_room(a, [a, b])
        assert upgrade_when_ready(n.port, uid())[0] == 101
        member = CountingWS(b, port=n.port)
        member.read_times = [None]   # read numbers start at 1
        sent = []
        sender = await ws_connect(NGINX_PORTS["a"], a)
        await asyncio.sleep(0.3)   # windows with nothing written
        # the member reads in a thread of its own from before the first send
        reading = asyncio.get_running_loop().run_in_executor(None, msgs_with_reads, member, count)
        if scrapes is not None:
            scrapes.append(own_scrape(n))
        for i in range(count):
            await sender.send({"op": "send", "id": 10 + i, "room": room, "cid": cid(), "body": "m%d" % i})
            sent.append(time.monotonic())
            await asyncio.sleep(gaps[i])
        got = await reading
        if scrapes is not None:
            scrapes.append(own_scrape(n))
        assert [f["body"] for f, _ in got] == ["m%d" % i for i in range(count)], got
        seqs = [f["seq"] for f, _ in got]
        assert seqs == sorted(seqs), got
        for i in range(count):
            ack = await sender.expect("ack", id=10 + i)
            assert ack["seq"] == seqs[i], ack
        await sender.close()
        member.close()
        if timed is not None:
            timed.extend([sent, member.read_times])
    finally:
        bad = n.stop()
    assert not bad, bad
    return got


@run_async
async def test_a_sustained_fast_rate_is_held_and_its_start_is_not():
    scrapes = []
    got = await three_messages("minichat_flush_window 100ms busy=1 rate=50", 0.005, count=60, scrapes=scrapes)
    reads = [r for _, r in got]
    assert reads == sorted(reads), got
    assert reads[0] < reads[1] < reads[2], "the first messages after a quiet spell wait for nothing: %r" % reads
    # the last twenty came within ~100-140ms, once the average was under
    # 20ms: held, they share a few writes
    assert len(set(reads[-20:])) <= 4, "a sustained fast rate leaves in few writes: %r" % reads
    # the metrics say so: flushes that waited, and fewer writes than frames
    before, after = scrapes
    assert delta(before, after, "minichat_flush_held_total") >= 1, after
    frames, writes = delta(before, after, "minichat_ws_frames_sent_total"), delta(before, after, "minichat_flush_writes_total")
    assert frames >= 60 and 1 <= writes <= frames - 16, (frames, writes)


@run_async
async def test_a_rate_slower_than_the_bound_is_not_held():
    """busy=1 rate=100, twelve messages 25ms apart: each comes well within
    the 100ms window, but their average interval is over 10ms, so each
    leaves in its own turn (a rule that looked at the last two intervals
    held them, as it held 200 messages a second at 20ms)."""
    scrapes = []
    got = await three_messages("minichat_flush_window 100ms busy=1 rate=100", 0.025, count=12, scrapes=scrapes)
    reads = [r for _, r in got]
    assert reads == sorted(set(reads)), "each message in its own write: %r" % got
    before, after = scrapes
    assert delta(before, after, "minichat_flush_held_total") == 0, after
    assert delta(before, after, "minichat_flush_writes_total") >= 12, after


@run_async
async def test_one_early_message_in_slow_traffic_is_not_held():
    """busy=1 rate=100, messages 48ms apart but the fourth 4ms after the
    third: one short interval does not bring the average under 10ms, so it
    leaves in its own turn (held, it would wait for the fifth and share its
    write)."""
    got = await three_messages("minichat_flush_window 100ms busy=1 rate=100", [0.048, 0.048, 0.004, 0.048, 0.048],
                               count=5)
    reads = [r for _, r in got]
    assert reads == sorted(reads), got
    assert reads[3] < reads[4], "the early message does not wait for the next one: %r" % got


@run_async
async def test_a_message_after_a_pause_is_not_held():
    """busy=1 rate=20 (50ms): thirty messages 5ms apart bring the average
    well under the bound; then 150ms of nothing (more than the 100ms
    window) and four messages 30ms apart.  The average is still under the
    bound after the pause, but the first of the four comes more than a
    window after the last big fan-out: it leaves at once, alone.  The other
    three come at the sustained rate again and wait together (held too, as
    it was before the pause counted, the first would share their write)."""
    got = await three_messages("minichat_flush_window 100ms busy=1 rate=20", [0.005] * 29 + [0.15, 0.03, 0.03, 0.03, 0.03],
                               count=34)
    reads = [r for _, r in got]
    assert reads == sorted(reads), got
    assert len(set(reads[:30])) < 30, "the fast messages before the pause are held: %r" % reads
    assert reads[29] < reads[30] < reads[31], "the message after the pause leaves alone: %r" % reads
    assert reads[31] == reads[33], "the three after it wait together: %r" % reads


@run_async
async def test_the_window_ends_at_the_message_that_would_be_its_last():
    """busy=1 rate=10 (100ms), messages 70ms apart: once the average is
    under the bound (about a dozen messages) a message waits, and the next
    one, 70ms later, finds the one after it due past the window's end: the
    two leave together when the second comes, not at the window's end 30ms
    later.  The second of each pair is read within a few ms of its send."""
    timed = []
    got = await three_messages("minichat_flush_window 100ms busy=1 rate=10", 0.07, count=24, timed=timed)
    sent, read_at = timed
    reads = [r for _, r in got]
    assert reads == sorted(reads), got
    # the pairs: the later message of each read that carried two
    closers = [i for i in range(1, len(reads)) if reads[i] == reads[i - 1]]
    assert len(closers) >= 3, "a sustained stream at the bound is held in pairs: %r" % reads
    assert all(reads.count(r) == 2 for r in set(reads[i] for i in closers)), "pairs, not more: %r" % reads
    late_ms = [(read_at[reads[i]] - sent[i]) * 1000 for i in closers]
    # waiting for the timer would read them ~30ms after their send
    assert statistics.median(late_ms) < 15, "the pair leaves with its second message: %r ms" % late_ms


@run_async
async def test_a_worker_writing_to_few_connections_is_not_held():
    got = await three_messages("minichat_flush_window 100ms", 0.04)
    first, second, third = [r for _, r in got]
    assert first < second < third, "small passes do not make the worker busy: %r" % got
