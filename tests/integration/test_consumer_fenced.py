"""A fatal Kafka error ends the roomlist-consumer's Kafka handle, not the
service: it makes a new consumer and goes on writing (make chaos saw a Kafka
restart fence the static member, "Static consumer fenced by other consumer
with same group.instance.id", and the process exit with nothing to restart
it).  Reproduced here by a second member that joins the group with the same
group.instance.id (Kafka's console consumer, auto-commit off so that it
takes nothing away), which fences the consumer."""

import os
import subprocess

from conftest import RUN, connect, create_room, kafka_tool, query, run_async, uid, wait_until


def consumer_pid():
    with open(os.path.join(RUN, "consumer", "consumer.pid")) as f:
        return int(f.read().strip())


def consumer_log():
    with open(os.path.join(RUN, "consumer", "consumer.log"), errors="replace") as f:
        return f.read()


def stored(room):
    return [r["seq"] for r in query("SELECT seq FROM messages WHERE room_id=%s ORDER BY seq", (room,))]


def rogue_member():
    """A console consumer in the consumer's group under its instance id."""
    args = kafka_tool("org.apache.kafka.tools.consumer.ConsoleConsumer", "--topic", "minichat.messages",
                      "--group", "minichat-roomlist",
                      "--consumer-property", "group.instance.id=roomlist-1",
                      "--consumer-property", "enable.auto.commit=false")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@run_async
async def test_a_fenced_consumer_makes_a_new_handle_and_keeps_writing():
    u = uid()
    room = create_room(u, [u])
    c = await connect(u, "a")
    pid = consumer_pid()
    before = consumer_log().count("making a new consumer")
    rogue = rogue_member()
    try:
        ack = await c.send_msg(room, "before")
        assert ack["op"] == "ack", ack
        wait_until(lambda: consumer_log().count("making a new consumer") > before, timeout=90,
                   what="the consumer fenced and making a new handle")
    finally:
        rogue.terminate()
        try:
            rogue.wait(10)
        except subprocess.TimeoutExpired:
            rogue.kill()
            rogue.wait()
    try:
        ack = await c.send_msg(room, "after")
        assert ack["op"] == "ack", ack
        wait_until(lambda: stored(room) == [1, 2], timeout=90, what="both messages stored")
        assert consumer_pid() == pid
        os.kill(pid, 0)   # still the same process
    finally:
        await c.close()
