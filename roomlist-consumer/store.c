/*
 * The roomlist-consumer's database side: one transaction per batch on the
 * primary, built from the prepared statements of msgbatch.c:
 *
 *   START TRANSACTION
 *   INSERT IGNORE INTO messages ... VALUES (?,...)   one row's statement run
 *                                       for the batch's rows in one bulk execution
 *                                       (or a multi-row INSERT where the server has
 *                                       none, or with bulk_insert = off), within
 *                                       max_stmt_bytes
 *   UPDATE rooms ... forward-only       (one per 1024 rooms)
 *   UPDATE room_members ... forward-only, for the rooms that are due
 *   COMMIT
 *
 * Any failure rolls the transaction back and returns -1, leaving the batch to
 * the caller, who retries it later and does not commit its Kafka offsets in
 * the meantime.  A client-side error (lost connection, timeout: codes 2000 and
 * up) also resets the primary connection so that the retry reconnects; a
 * server-side error (deadlock, lock wait timeout) keeps it.  Because rows are
 * keyed by (room_id, seq) and inserted with IGNORE, and both updates only move
 * forward, writing a batch twice has the same effect as writing it once.
 *
 * room_members.last_message_at is the expensive part: one row, and one entry
 * of the (user_id, left_at, last_message_at, room_id) index, per member of
 * every room the batch touches, where the messages themselves cost one row
 * each.  Measured on the 2-core box, updating it in every batch halved the
 * throughput.  So a room's members are updated at most once per
 * members_interval_ms: the first batch that touches a room updates them at
 * once, later batches within the interval only mark the room dirty, and a
 * dirty room is updated with whatever batch comes after its interval (or by
 * rc_store_flush_members() when the topic is idle, and on shutdown and
 * revocation).  The update copies rooms.last_message_at, so a deferred update
 * writes the latest value, never a stale one.  The cost: a member's room list
 * may order a busy room up to one interval late, and a crash (SIGKILL) within
 * an interval of a room's last message leaves that room's members behind
 * until its next message.
 */
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>

#include "minichat/clock.h"
#include "minichat/log.h"
#include "store.h"

static int store_query(rc_store_t *st, const char *what, const char *sql);
static int store_due_reserve(rc_store_t *st, size_t n);
static int store_members(rc_store_t *st, uint64_t *members);
static void store_fail(rc_store_t *st);

void rc_store_init(rc_store_t *st, mc_db_t *db, size_t max_stmt_bytes, int64_t members_interval_ms, int bulk)
{
    memset(st, 0, sizeof(*st));
    st->db = db;
    st->max_stmt_bytes = max_stmt_bytes;
    st->bulk = bulk;
    if (!bulk) {
        mc_info("store: bulk_insert off: batches go to MySQL as multi-row inserts");
    }
    mc_debounce_init(&st->debounce, members_interval_ms);
}

void rc_store_free(rc_store_t *st)
{
    mc_buf_free(&st->sql);
    mc_db_args_free(&st->args);
    mc_debounce_free(&st->debounce);
    free(st->due);
    st->due = NULL;
}

size_t rc_store_pending(const rc_store_t *st)
{
    return mc_debounce_dirty(&st->debounce);
}

/* Runs a statement without values (sql) or the one built in st->sql with
 * st->args (sql NULL).  Returns 0, or -1 after logging the error. */
static int store_query(rc_store_t *st, const char *what, const char *sql)
{
    if (sql != NULL) {
        return mc_db_write(st->db, what, sql, strlen(sql), NULL, &st->status);
    }
    return mc_db_write(st->db, what, st->sql.data, st->sql.len, &st->args, &st->status);
}

/* Inserts the rows from *next on, as many as max_stmt_bytes allow, with
 * one bulk statement (mc_db_write_bulk).  Returns 0 (*next advanced,
 * *inserted counted), 1 when the server has no bulk execution (st->bulk
 * is then off for good, *next unchanged, nothing sent), or -1. */
static int store_insert_bulk(rc_store_t *st, const mc_msgbatch_t *b, size_t *next, uint64_t *inserted)
{
    size_t from = *next;

    if (mc_msgbatch_insert_rows(b, next, st->max_stmt_bytes, &st->args) != 0) {
        mc_error("store: out of memory building insert");
        return -1;
    }
    if (mc_db_write_bulk(st->db, "insert", MC_MSGBATCH_INSERT_ONE, sizeof(MC_MSGBATCH_INSERT_ONE) - 1, &st->args,
                         MC_MSGBATCH_INSERT_COLS, &st->status) != 0) {
        if (st->status.err == CR_NOT_IMPLEMENTED) {
            mc_info("store: the MySQL server has no bulk execution: batches go as multi-row inserts");
            st->bulk = 0;
            *next = from;
            return 1;
        }
        return -1;
    }
    if (!st->bulk_seen) {
        st->bulk_seen = 1;
        mc_info("store: batches go to MySQL as bulk executions");
    }
    *inserted += st->status.affected;
    return 0;
}

/* Runs the room_members updates for the due rooms.  Returns 0 (*members:
 * rows changed) or -1. */
static int store_members(rc_store_t *st, uint64_t *members)
{
    size_t next = 0;

    while (next < st->ndue) {
        if (mc_members_stmt(st->due, st->ndue, &next, &st->sql, &st->args) != 0) {
            mc_error("store: out of memory building the room_members update");
            return -1;
        }
        if (store_query(st, "room_members update", NULL) != 0) {
            return -1;
        }
        *members += st->status.affected;
    }
    return 0;
}

/* Makes room for n more due rooms.  Returns 0 or -1 when out of memory. */
static int store_due_reserve(rc_store_t *st, size_t n)
{
    uint64_t *p;
    size_t cap;

    if (st->ndue + n <= st->due_cap) {
        return 0;
    }
    cap = st->due_cap != 0 ? st->due_cap : 1024;
    while (cap < st->ndue + n) {
        cap *= 2;
    }
    p = realloc(st->due, cap * sizeof(*p));
    if (p == NULL) {
        return -1;
    }
    st->due = p;
    st->due_cap = cap;
    return 0;
}

/* Rolls back after a failed statement, resetting a broken connection, and
 * puts the due rooms back into the debouncer. */
static void store_fail(rc_store_t *st)
{
    st->failures++;
    if (st->status.err >= 2000 || store_query(st, "rollback", "ROLLBACK") != 0) {
        /* the connection is gone or unusable: the server rolls back on its own */
        mc_db_reset(st->db, MC_DB_PRIMARY);
    }
    if (mc_debounce_restore(&st->debounce, st->due, st->ndue) != 0) {
        mc_error("store: out of memory; %zu rooms' members may stay behind until their next message", st->ndue);
    }
    st->ndue = 0;
}

int rc_store_write(rc_store_t *st, mc_msgbatch_t *b)
{
    size_t i, next = 0;
    uint64_t inserted = 0, moved = 0, members;
    int64_t now;
    int rc;

    if (b->n == 0) {
        return 0;
    }
    if (mc_db_conn(st->db, MC_DB_PRIMARY) == NULL) {
        st->failures++;
        return -1;
    }

    mc_msgbatch_sort(b);
    st->ndue = 0;

    if (store_query(st, "start transaction", "START TRANSACTION") != 0) {
        goto err;
    }

    while (next < b->n) {
        if (st->bulk) {
            rc = store_insert_bulk(st, b, &next, &inserted);
            if (rc < 0) {
                goto err;
            }
            if (rc == 0) {
                continue;
            }
        }
        if (mc_msgbatch_insert_stmt(b, &next, st->max_stmt_bytes, &st->sql, &st->args) != 0) {
            mc_error("store: out of memory building insert");
            goto err;
        }
        if (store_query(st, "insert", NULL) != 0) {
            goto err;
        }
        inserted += st->status.affected;
    }

    for (next = 0; next < b->n;) {
        if (mc_msgbatch_rooms_stmt(b, &next, &st->sql, &st->args) != 0) {
            mc_error("store: out of memory building the rooms update");
            goto err;
        }
        if (store_query(st, "rooms update", NULL) != 0) {
            goto err;
        }
        moved += st->status.affected;
    }

    /* the batch's rooms that are due, then older dirty rooms whose time has come */
    now = mc_now_ms();
    if (store_due_reserve(st, mc_msgbatch_rooms(b) + mc_debounce_dirty(&st->debounce)) != 0) {
        mc_error("store: out of memory listing rooms");
        goto err;
    }
    for (i = 0; i < b->n; i++) {
        if ((i + 1 == b->n || b->rows[i + 1].room != b->rows[i].room)
            && mc_debounce_touch(&st->debounce, b->rows[i].room, now) != 0)
        {
            st->due[st->ndue++] = b->rows[i].room;
        }
    }
    st->ndue += mc_debounce_take(&st->debounce, now, 0, st->due + st->ndue, st->due_cap - st->ndue);

    members = 0;
    if (store_members(st, &members) != 0) {
        goto err;
    }

    if (store_query(st, "commit", "COMMIT") != 0) {
        goto err;
    }

    st->rows_new += inserted;
    st->rows_dup += b->n - inserted;
    st->rooms_moved += moved;
    st->members_set += members;
    st->batches++;
    mc_debug("store: batch of %zu rows committed (%llu new, %llu rooms moved, %zu rooms' members updated)", b->n,
             (unsigned long long)inserted, (unsigned long long)moved, st->ndue);
    st->ndue = 0;
    return 0;

err:
    store_fail(st);
    return -1;
}

int rc_store_flush_members(rc_store_t *st, int force)
{
    uint64_t members = 0;

    if (mc_debounce_dirty(&st->debounce) == 0) {
        return 0;
    }
    if (mc_db_conn(st->db, MC_DB_PRIMARY) == NULL) {
        return -1;
    }

    st->ndue = 0;
    if (store_due_reserve(st, mc_debounce_dirty(&st->debounce)) != 0) {
        mc_error("store: out of memory listing rooms");
        return -1;
    }
    st->ndue = mc_debounce_take(&st->debounce, mc_now_ms(), force, st->due, st->due_cap);
    if (st->ndue == 0) {
        return 0;
    }

    /* autocommit: each statement is its own transaction (forward-only, so a
     * failure halfway leaves nothing wrong, only rooms to do again) */
    if (store_members(st, &members) != 0) {
        goto err;
    }
    st->members_set += members;
    mc_debug("store: deferred room_members update for %zu rooms", st->ndue);
    st->ndue = 0;
    return 0;

err:
    store_fail(st);
    return -1;
}
