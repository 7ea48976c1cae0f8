"""Read pointers written back from Redis to MySQL by the roomlist-consumer's
flusher (roomlist-consumer/readflush.c, docs/ARCHITECTURE.md, "Read pointers (write-back)").

The tests play the module's part: they write `{r:R}:read` and the mark in
`{dirty}:read` directly with redis-cli, then watch room_members.last_read_seq
on the primary and the mark in Redis.  Two tests hold a row lock on the
member's room_members row from a MySQL session of their own, so that the
flusher's transaction is caught, visibly, between reading the marks and
committing: that is where a newer read must survive and where a database
failure must leave the marks in place.
"""

import re

import pytest

from conftest import connect, create_room, db, query, redis, run_async, uid, wait_until

DIRTY = "{dirty}:read"


def mark(room, user, seq):
    """What the module does after read.lua: the pointer, then the mark."""
    redis("HSET", "{r:%d}:read" % room, str(user), str(seq))
    redis("HSET", DIRTY, "%d:%d" % (room, user), str(seq))


def mark_value(room, user):
    """The mark's value in {dirty}:read, or None when it is gone."""
    out = redis("HGET", DIRTY, "%d:%d" % (room, user))
    return out[0] if out else None


def last_read(room, user):
    rows = query("SELECT last_read_seq FROM room_members WHERE room_id=%s AND user_id=%s", (room, user))
    return rows[0]["last_read_seq"] if rows else None


def room_of(n=3):
    users = [uid() for _ in range(n)]
    room = create_room(users[0], users)
    assert all(last_read(room, u) == 0 for u in users)
    return room, users


def flusher_update(room, user, seq):
    """The processlist row of the flusher's UPDATE carrying (room, user, seq), or None."""
    rows = query("SELECT ID, STATE, INFO FROM information_schema.PROCESSLIST "
                 "WHERE INFO LIKE 'UPDATE room_members m JOIN%%'")
    pat = re.compile(r"SELECT (CAST\()?%d( AS UNSIGNED\) AS room_id)?, (CAST\()?%d( AS UNSIGNED\) AS user_id)?, "
                     r"(CAST\()?%d\b" % (room, user, seq))
    for r in rows:
        if pat.search(r["INFO"] or ""):
            return r
    return None


class RowLock:
    """Holds room_members(room, user) FOR UPDATE in a transaction of our own."""

    def __init__(self, room, user):
        self.conn = db()
        self.conn.autocommit(False)
        with self.conn.cursor() as cur:
            cur.execute("SELECT last_read_seq FROM room_members WHERE room_id=%s AND user_id=%s FOR UPDATE",
                        (room, user))
            assert cur.fetchall()

    def release(self):
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()
            self.conn = None


@pytest.fixture
def locks():
    held = []
    yield held
    for lock in held:
        lock.release()


def test_marks_reach_mysql_then_leave_redis():
    room, (u1, u2, u3) = room_of()
    mark(room, u1, 5)
    mark(room, u2, 3)
    wait_until(lambda: last_read(room, u1) == 5 and last_read(room, u2) == 3, what="pointers in MySQL")
    wait_until(lambda: mark_value(room, u1) is None and mark_value(room, u2) is None, what="marks deleted")
    assert last_read(room, u3) == 0
    # the pointer itself stays in Redis: only the mark goes
    assert redis("HGET", "{r:%d}:read" % room, str(u1)) == ["5"]


def test_pointer_never_moves_back():
    room, (u1, _, _) = room_of()
    mark(room, u1, 9)
    wait_until(lambda: last_read(room, u1) == 9 and mark_value(room, u1) is None, what="9 written")
    redis("HSET", DIRTY, "%d:%d" % (room, u1), "4")    # a stale mark (a reordered HSET)
    wait_until(lambda: mark_value(room, u1) is None, what="the stale mark consumed")
    assert last_read(room, u1) == 9
    mark(room, u1, 10)
    wait_until(lambda: last_read(room, u1) == 10, what="10 written")


def test_huge_seq():
    room, (u1, _, _) = room_of()
    big = 2**64 - 1
    redis("HSET", DIRTY, "%d:%d" % (room, u1), str(big))
    wait_until(lambda: last_read(room, u1) == big and mark_value(room, u1) is None, what="2^64-1 written")


def test_malformed_and_foreign_marks_are_deleted():
    room, (u1, _, _) = room_of()
    stranger = uid()
    bad = {"%d:abc" % room: "5", "%d:%d" % (room, u1): "-3", "x%d:%d" % (room, u1): "4",
           "%d:%d" % (room, stranger): "6"}
    for f, v in bad.items():
        redis("HSET", DIRTY, f, v)
    wait_until(lambda: not any(redis("HEXISTS", DIRTY, f) == ["1"] for f in bad), what="bad marks deleted")
    assert last_read(room, u1) == 0
    # a mark for someone who is not a member creates no membership
    assert query("SELECT user_id FROM room_members WHERE room_id=%s AND user_id=%s", (room, stranger)) == []


def test_newer_read_during_flush_keeps_its_mark(locks):
    room, (u1, _, _) = room_of()
    lock = RowLock(room, u1)
    locks.append(lock)
    mark(room, u1, 7)
    # the flusher has read 7 and waits for our row lock inside its transaction
    wait_until(lambda: flusher_update(room, u1, 7), what="the flusher's UPDATE with 7 waiting on the lock")
    mark(room, u1, 9)                                   # a newer read arrives meanwhile
    lock.release()
    # it commits 7 and must not delete the mark, which now says 9: the next
    # round writes 9.  With an unconditional delete MySQL would stay at 7.
    wait_until(lambda: last_read(room, u1) == 9 and mark_value(room, u1) is None,
               what="9 written by the next round")


def test_database_failure_leaves_marks(locks):
    from test_service_metrics import d, scrape
    before, _ = scrape("consumer")
    room, (u1, u2, _) = room_of()
    lock = RowLock(room, u1)
    locks.append(lock)
    mark(room, u1, 11)
    mark(room, u2, 12)
    first = wait_until(lambda: flusher_update(room, u1, 11), what="the flusher's UPDATE waiting")
    query("KILL %d" % first["ID"])                      # its connection dies mid-transaction
    # the next round (a new connection) is caught by the same lock: meanwhile
    # both marks must still be in Redis and nothing in MySQL
    second = wait_until(lambda: (lambda r: r if r and r["ID"] != first["ID"] else None)(
        flusher_update(room, u1, 11)), what="the retry waiting")
    assert second["ID"] != first["ID"]
    assert mark_value(room, u1) == "11" and mark_value(room, u2) == "12"
    assert last_read(room, u2) == 0                     # the rolled back transaction wrote nothing
    # counted in the consumer's metrics (docs/metrics.md)
    assert d(scrape("consumer")[0], before, "minichat_consumer_read_flush_failures_total") >= 1
    lock.release()
    wait_until(lambda: last_read(room, u1) == 11 and last_read(room, u2) == 12, what="both written after the retry")
    wait_until(lambda: mark_value(room, u1) is None and mark_value(room, u2) is None, what="marks deleted")


def test_flusher_does_not_hold_up_messages(locks):
    """While the flusher is stuck on a lock, messages still reach MySQL: the
    flusher has its own thread and connection.  (The lock is in another
    room: the message's own batch updates its room's member rows.)"""
    room, (u1, _, _) = room_of()
    other, (v1, _, _) = room_of()
    lock = RowLock(other, v1)
    locks.append(lock)
    mark(other, v1, 1)
    wait_until(lambda: flusher_update(other, v1, 1), what="the flusher's UPDATE waiting")

    @run_async
    async def send():
        c = await connect(u1)
        ack = await c.send_msg(room, "while the flusher waits")
        await c.close()
        return ack

    ack = send()
    assert ack["op"] == "ack", ack
    wait_until(lambda: query("SELECT seq FROM messages WHERE room_id=%s", (room,)), what="message in MySQL",
               timeout=10)
    assert flusher_update(other, v1, 1) is not None     # still waiting: the two do not share a thread
    lock.release()
    wait_until(lambda: last_read(other, v1) == 1 and mark_value(other, v1) is None, what="mark written")
