"""The database router against the dev stack's primary and replica
(lib/src/db.c, docs/ARCHITECTURE.md "Database requests"):

- replication stopped on the replica (STOP SLAVE): a room written on the
  primary afterwards is in its member's room list at once, because the
  router no longer reads a replica that does not replicate;
- the replica delayed past mysql_replica_max_lag_ms (MASTER_DELAY = 6 s,
  bound 2 s): once the lag shows in the GTID positions, reads skip it;
- the replica delayed within the bound (MASTER_DELAY = 1 s): a user who
  creates a room sees it in the room list at once (read-your-writes), while
  a room written for somebody else, who did not write, is not there yet
  (the same read from the replica: what the test would see without the
  read-your-writes window).

Each test puts replication back as it was and waits until the replica has
caught up, so later tests meet a replica in step.
"""

import time

from conftest import create_room, query, rest, token, uid, wait_until, db

CHECK_S = 0.25          # mysql_replica_check_ms of conf/relay-worker.conf.in
MAX_LAG_S = 2.0         # mysql_replica_max_lag_ms


def replica_sql(sql):
    conn = db("replica")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def caught_up():
    want = query("SELECT @@gtid_binlog_pos AS p")[0]["p"]
    have = query("SELECT @@gtid_slave_pos AS p", role="replica")[0]["p"]
    pos = {d: int(s) for d, _, s in (g.split("-") for g in have.split(",") if g)}
    return all(pos.get(d, 0) >= int(s) for d, _, s in (g.split("-") for g in want.split(",") if g))


def restore_replication():
    replica_sql("STOP SLAVE")
    replica_sql("CHANGE MASTER TO MASTER_DELAY = 0")
    replica_sql("START SLAVE")
    wait_until(caught_up, 30, what="the replica to catch up")


def room_for(user):
    """A room with `user` as its only member, written on the primary behind
    the router's back (so no read-your-writes for anybody)."""
    conn = db("primary")
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO rooms (kind, title, created_by) VALUES ('group', 'behind', %s)", (user,))
            room = cur.lastrowid
            cur.execute("INSERT INTO room_members (room_id, user_id, last_read_seq, joined_seq, last_message_at)"
                        " VALUES (%s, %s, 0, 0, NOW(3))", (room, user))
    finally:
        conn.close()
    return room


def listed(user):
    st, body = rest("GET", "/api/rooms?limit=20", "a", token(user))
    assert st == 200, body
    return [r["id"] for r in body["rooms"]]


def test_stopped_replication_reads_the_primary():
    user = uid()
    try:
        replica_sql("STOP SLAVE")
        room = room_for(user)
        # every DB thread's next read measures again; and where SHOW SLAVE
        # STATUS is not granted (the TLS pass's minichat_svc) the stop shows
        # only as lag: a sample taken just before the write was applied, so
        # the replica counts as lagging once the write is MAX_LAG_S old
        time.sleep(MAX_LAG_S + 4 * CHECK_S)
        assert not query("SELECT id FROM rooms WHERE id=%s", (room,), "replica")  # the replica lacks it
        # several reads: the DB threads take turns, each must have seen it
        for _ in range(6):
            assert room in listed(user)
    finally:
        restore_replication()
    # replicating again: the room list is served (from either) and complete
    assert room in listed(user)


def test_lag_past_the_bound_reads_the_primary():
    user = uid()
    try:
        replica_sql("STOP SLAVE")
        replica_sql("CHANGE MASTER TO MASTER_DELAY = 6")
        replica_sql("START SLAVE")
        room = room_for(user)
        # the lag is seen once a primary position MAX_LAG_S old is not
        # applied, at the next check after that
        time.sleep(MAX_LAG_S + 4 * CHECK_S)
        assert not query("SELECT id FROM rooms WHERE id=%s", (room,), "replica")  # still behind
        for _ in range(6):
            assert room in listed(user)
    finally:
        restore_replication()


def test_own_write_reads_back_at_once():
    me, other = uid(), uid()
    try:
        replica_sql("STOP SLAVE")
        replica_sql("CHANGE MASTER TO MASTER_DELAY = 1")
        replica_sql("START SLAVE")
        time.sleep(4 * CHECK_S)
        # the control: a room written for `other`, who wrote nothing, is read
        # from the replica, which is a second behind, within the bound
        behind = room_for(other)
        assert behind not in listed(other)
        # my own write: my next read goes to the primary
        mine = create_room(me, [uid()])
        assert mine in listed(me)
        assert not query("SELECT id FROM rooms WHERE id=%s", (mine,), "replica")  # the replica has not got it
    finally:
        restore_replication()
    assert behind in listed(other)


def test_a_retried_create_rolls_back_its_room():
    """A create with a key that exists already runs in a transaction that is
    rolled back: one room row, however often it is retried (statements
    without values, START TRANSACTION and ROLLBACK, must really run)."""
    a, b = uid(), uid()
    key = "rb-%d" % uid()
    first = None
    for _ in range(3):
        st, body = rest("POST", "/api/rooms", "a", token(a), {"title": "t", "members": [b]},
                        headers={"Idempotency-Key": key})
        assert st == 201, body
        first = first or body["id"]
        assert body["id"] == first
    assert [r["id"] for r in query("SELECT id FROM rooms WHERE created_by=%s", (a,))] == [first]
