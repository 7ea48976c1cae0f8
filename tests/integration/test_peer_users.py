"""Chat messages go only to the nodes that hold one of their recipients
(relay-worker/peer_users.c, docs/ARCHITECTURE.md "Sending only to nodes
with recipients").

- A room whose members are all on node a (or offline): relay-worker a sends
  node b none of its messages, and counts them as skipped for b.
- A member who connects on node b while the room's messages were being
  skipped for b gets the next message live, at once: the hello waited until
  relay-worker a had b's new user (the answer to the worker's users frame
  was held for the peer's ack), and the message after the skipped ones
  carries after_skip, so b's reorderer does not hold it for the gap.
- relay-worker b restarted: a sends b everything while it does not know
  b's users, and filters again once b's new stream has told them.
"""

import asyncio
import os
import signal
import sys
import time

from conftest import RUN, connect, create_room, run_async, uid, wait_until
from test_service_metrics import d, scrape, val

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import faults  # noqa: E402

RELAY_B_CONF = os.path.join(RUN, "relay-b", "relay-worker.conf")


def b_known_by_a():
    s, _ = scrape("relay-a")
    return val(s, "minichat_relay_peer_users_known", 0, peer="b") == 1


def b_workers_linked():
    """Both of nginx b's workers are connected to relay-worker b again."""
    try:
        s, _ = scrape("relay-b")
    except (OSError, AssertionError):
        return False
    return val(s, "minichat_relay_worker_connections", 0) >= 2


async def send(cs, room, seq):
    ack = await cs.send_msg(room, "m%d" % seq)
    assert ack["op"] == "ack" and ack["seq"] == seq, ack


@run_async
async def test_a_room_with_no_member_on_b_is_not_sent_to_b():
    wait_until(b_known_by_a, what="relay-worker a knows node b's users")
    s, m1, m2, off = uid(), uid(), uid(), uid()
    room = create_room(s, [s, m1, m2, off])
    cs, c1, c2 = await connect(s, "a"), await connect(m1, "a"), await connect(m2, "a")
    try:
        before, _ = scrape("relay-a")
        before_b, _ = scrape("relay-b")
        for seq in range(1, 6):
            await send(cs, room, seq)
        for seq in range(1, 6):
            await c1.expect("msg", room=room, seq=seq)
            await c2.expect("msg", room=room, seq=seq)
        after, _ = scrape("relay-a")
        after_b, _ = scrape("relay-b")
        assert d(after, before, "minichat_relay_peer_messages_skipped_total", peer="b") == 5
        # b's reorderer saw none of them (nothing else sends chat messages meanwhile)
        assert d(after_b, before_b, "minichat_relay_order_released_total") == 0
    finally:
        for c in (cs, c1, c2):
            await c.close()


@run_async
async def test_a_member_connecting_on_b_gets_the_next_message_live_at_once():
    wait_until(b_known_by_a, what="relay-worker a knows node b's users")
    s = uid()
    cs = await connect(s, "a")
    try:
        for round_ in range(8):
            m = uid()
            room = create_room(s, [s, m])
            # m is offline: b holds no recipient, a skips these for b
            for seq in (1, 2, 3):
                await send(cs, room, seq)
            before_a, _ = scrape("relay-a")
            before_b, _ = scrape("relay-b")
            cm = await connect(m, "b")
            try:
                # at once after the hello: a must already know m is on b
                t0 = time.monotonic()
                await send(cs, room, 4)
                await cm.expect("msg", room=room, seq=4, timeout=5)
                took = time.monotonic() - t0
                after_a, _ = scrape("relay-a")
                after_b, _ = scrape("relay-b")
                assert d(after_a, before_a, "minichat_relay_peer_messages_skipped_total", peer="b") == 0
                # b never held seqs 1..3 and did not wait for them (order_gap_ms is 2 s)
                assert took < 1.0, (round_, took)
                assert d(after_b, before_b, "minichat_relay_order_jumps_total") == 1
                assert d(after_b, before_b, "minichat_relay_order_skipped_total") == 0
                assert d(after_b, before_b, "minichat_relay_users_answers_held_total") >= 1
                live = [f["seq"] for f in cm.frames if f.get("op") == "msg" and f.get("room") == room]
                assert live == [4], live
                # what was sent before the hello comes by resume
                await cm.send({"op": "resume", "rooms": {str(room): 0}})
                await cm.expect("resumed", room=room, timeout=10)
                got = {f["seq"] for f in cm.frames if f.get("op") == "msg" and f.get("room") == room}
                assert got == {1, 2, 3, 4}, got
            finally:
                await cm.close()
    finally:
        await cs.close()


@run_async
async def test_a_restarted_relay_b_gets_everything_until_it_tells_its_users_again():
    wait_until(b_known_by_a, what="relay-worker a knows node b's users")
    s, m, only_a = uid(), uid(), uid()
    across = create_room(s, [s, m])
    local = create_room(s, [s, only_a])
    cs, cm, ca = await connect(s, "a"), await connect(m, "b"), await connect(only_a, "a")
    try:
        before, _ = scrape("relay-a")
        faults._signal("relay-b/relay.pid", RELAY_B_CONF, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, faults.stack_start)
        # b's stream may tell a its users before nginx b's workers are back
        # on relay-worker b (a user there gets nothing live while its
        # worker's link is down, as before any of this): wait for both
        await loop.run_in_executor(None, lambda: wait_until(b_workers_linked, timeout=30,
                                                            what="nginx b's workers on relay-worker b"))
        await loop.run_in_executor(None, lambda: wait_until(b_known_by_a, timeout=30,
                                                            what="node b's users known again"))
        await asyncio.sleep(1.0)   # nginx b's user sets reach relay-worker b, and from it a
        after, _ = scrape("relay-a")
        assert d(after, before, "minichat_relay_peer_users_starts_total", peer="b") >= 1
        # filtering again: the room on a alone is skipped for b, the other goes
        before, _ = scrape("relay-a")
        await send(cs, local, 1)
        await ca.expect("msg", room=local, seq=1)
        await send(cs, across, 1)
        await cm.expect("msg", room=across, seq=1, timeout=10)
        after, _ = scrape("relay-a")
        assert d(after, before, "minichat_relay_peer_messages_skipped_total", peer="b") == 1
    finally:
        for c in (cs, cm, ca):
            await c.close()
        wait_until(b_known_by_a, timeout=30, what="relay-worker b running")
