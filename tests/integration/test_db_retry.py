"""A request the database rolls back to let another transaction on runs again.

InnoDB ends a deadlock by rolling one transaction back (error 1213).  The
relay-worker's requests on the primary meet the roomlist-consumer's batches
and each other on room_members (its my_rooms index is written by a leave and by
the batch's last_message_at update alike), so a leave can be that victim.  The
relay-worker runs such a job again from its start instead of answering
"database error".  Here the test's own transaction closes the cycle on purpose:
it holds the index gap where the leave's new entry goes, lets the leave wait
there, then asks for the member row the leave holds.  Having changed more rows,
the test's transaction is the heavier one, and InnoDB rolls the leave back.

A statement that waits on a row lock past `mysql_lock_wait_s` is given up by
InnoDB (error 1205) and the request runs again the same way: a relay-worker
of the test's own with `mysql_lock_wait_s = 1` answers a leave whose row the
test holds for a while, where the server's 50 s would have kept its DB thread
waiting the whole time.
"""
import concurrent.futures

from conftest import RUN, create_room, db, query, rest, token, uid, wait_until
from relaylink import Link
from test_relay_socket_access import log_since, own_dir, run_relay  # noqa: F401 (a fixture)
from test_service_metrics import scrape, val


def leaves_waiting():
    """How many leaves wait for a lock on the primary.  (InnoDB answers from a
    copy of its transaction list that it renews only when the last read is
    over 0.1 s old: poll it more slowly than that.)"""
    return query("SELECT COUNT(*) AS n FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
                 " AND trx_query LIKE %s", ("UPDATE room_members SET left_at%",))[0]["n"]


def relay_log():
    with open(RUN + "/relay-a/relay.log", errors="replace") as f:
        return f.read()


def test_a_leave_rolled_back_by_a_deadlock_runs_again():
    a, c = uid(), uid()
    room = create_room(a, [a, c])
    heavy = create_room(a, [a] + [uid() for _ in range(40)])
    seen = relay_log().count("1213 Deadlock")
    reruns = val(scrape("relay-a")[0], "minichat_relay_db_reruns_total", reason="deadlock")
    conn = db()
    conn.autocommit(False)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with conn.cursor() as cur:
            # weight: 41 changed rows make this transaction the one InnoDB keeps
            cur.execute("UPDATE room_members SET last_read_seq = last_read_seq + 1 WHERE room_id = %s", (heavy,))
            assert cur.rowcount == 41
            # the gap of the my_rooms index where c's entry goes once c has left
            cur.execute("SELECT room_id FROM room_members FORCE INDEX (my_rooms)"
                        " WHERE user_id = %s AND left_at > '2000-01-01' FOR UPDATE", (c,))
            leave = pool.submit(rest, "POST", "/api/rooms/%d/leave" % room, "a", token(c))
            wait_until(lambda: leaves_waiting() == 1, interval=0.25, what="the leave waiting on the index gap")
            # the member row the waiting leave holds: the cycle, and the leave is rolled back
            cur.execute("SELECT user_id FROM room_members WHERE room_id = %s AND user_id = %s FOR UPDATE",
                        (room, c))
            assert list(cur.fetchall()) == [{"user_id": c}]
        conn.rollback()
        st, r = leave.result(timeout=30)
    finally:
        pool.shutdown(wait=False)
        conn.close()
    # the leave was a victim (its run again may meet the consumer's batch and be one more time)
    assert relay_log().count("1213 Deadlock") > seen
    assert val(scrape("relay-a")[0], "minichat_relay_db_reruns_total", reason="deadlock") > reruns
    assert st == 200 and r["left_seq"] > 0, (st, r)
    assert query("SELECT left_seq FROM room_members WHERE room_id = %s AND user_id = %s",
                 (room, c))[0]["left_seq"] == r["left_seq"]


def test_a_leave_past_the_lock_wait_timeout_runs_again(own_dir):
    a, c = uid(), uid()
    room = create_room(a, [a, c])
    with run_relay(own_dir, "mysql_lock_wait_s = 1\n") as (sock, log):
        link = Link(path=sock, name="lockwait")
        conn = db()
        conn.autocommit(False)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT user_id FROM room_members WHERE room_id = %s AND user_id = %s FOR UPDATE",
                            (room, c))
                leave = pool.submit(link.leave, room, c, 7)
                # the first run gave up after a second (with the server's 50 s nothing is logged here)
                wait_until(lambda: "1205 Lock wait timeout" in log_since(log, 0), timeout=10,
                           what="the relay-worker's statement given up")
            conn.rollback()
            r = leave.result(timeout=30)
        finally:
            pool.shutdown(wait=False)
            conn.close()
            link.close()
        assert "the job runs again" in log_since(log, 0)
    assert r.get("error", "") == "" and r["left_seq"] == 7, r
    assert query("SELECT left_seq FROM room_members WHERE room_id = %s AND user_id = %s",
                 (room, c))[0]["left_seq"] == 7
