"""A message goes back to its sender's nginx worker only when someone there
needs it (docs/ARCHITECTURE.md, "Delivering only to workers with
recipients"): when the sending connection is the sender's only one on its
worker, the publish says so (ChatMessage.origin_alone) and relay-worker a
does not write the message to that worker for the sender, who gets an ack,
not a msg.  The sender's other devices, wherever they are, still get it."""

from conftest import cid, connect, create_room, run_async, uid
from test_service_metrics import d, scrape

SKIPPED = "minichat_relay_worker_deliver_skipped_total"


@run_async
async def test_the_senders_own_worker_is_skipped_when_it_needs_nothing():
    """Sender alone on node a, the other member on node b: node a has two
    workers, and neither needs the messages (one holds nobody of the room,
    the other only the sender's sending connection), so relay-worker a
    skips both for every message; before origin_alone it wrote each message
    to the sender's worker."""
    sender, other = uid(), uid()
    room = create_room(sender, [sender, other])
    s = await connect(sender, "a")
    r = await connect(other, "b")
    n = 5
    try:
        before, _ = scrape("relay-a")
        for i in range(n):
            ack = await s.send_msg(room, "m%d" % i, cid())
            assert ack["op"] == "ack" and ack["seq"] == i + 1, ack
            await r.expect("msg", room=room, seq=i + 1)
        after, _ = scrape("relay-a")
        assert d(after, before, SKIPPED) >= 2 * n, (d(after, before, SKIPPED), n)
    finally:
        await s.close()
        await r.close()


@run_async
async def test_the_senders_other_devices_still_get_it():
    """Six connections of the sender on node a (two workers, holding no one
    else of the room: some devices share the sending connection's worker, or
    none does and it is skipped) and one on node b, the other member on
    node b: every connection but the sending one gets every message."""
    sender, other = uid(), uid()
    room = create_room(sender, [sender, other])
    devices = [await connect(sender, "a") for _ in range(6)] + [await connect(sender, "b")]
    r = await connect(other, "b")
    try:
        for i, s in enumerate(devices[:3]):
            ack = await s.send_msg(room, "from device %d" % i, cid())
            assert ack["op"] == "ack" and ack["seq"] == i + 1, ack
            for c in devices + [r]:
                if c is not s:
                    await c.expect("msg", room=room, seq=i + 1)
    finally:
        for c in devices + [r]:
            await c.close()
