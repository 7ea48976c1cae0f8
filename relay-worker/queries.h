/*
 * The MySQL requests of the nginx workers, as run on a DB thread (db_jobs.c),
 * and the small toolkit they share (queries.c).
 *
 * A query function takes its request and fills its result; it returns NULL
 * on success or the error, "<code>: <text>" with code from the client
 * protocol's closed set (bad_request, forbidden, not_found, unavailable).
 * Whatever it allocates for the result comes from the job's arena
 * (dbq_alloc), freed once the answer is sent.
 *
 * A statement's text is built in the job's buffer (dbq_sql*) with a ? for
 * every value, the values are added in order (dbq_arg_*), and it runs as a
 * prepared statement (mc_db_exec, cached per connection) with dbq_exec or
 * dbq_select on the primary or a replica through the mc_db router: no value
 * ever becomes SQL text.  A text whose shape depends on a count (n member
 * rows) is one statement per count, each cached.  Reads for a user (q->user)
 * go to the primary for a moment after that user's own write (dbq_wrote).
 * When the primary's connection is
 * lost before a COMMIT was sent, the helper sets `retry` and the job runs
 * again on a fresh connection (nothing was committed); a lost COMMIT is
 * not retried (the outcome is unknown).  A deadlock or a lock wait timeout
 * on the primary also sets `retry`: InnoDB rolled the transaction (or the
 * statement, and dbq_fail the rest) back, and the other transaction, the
 * roomlist-consumer's batch or another request's, has gone on by the time the
 * job runs again.
 */
#ifndef RELAY_QUERIES_H
#define RELAY_QUERIES_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <mysql.h>

#include "minichat.pb-c.h"
#include "minichat/buf.h"
#include "minichat/db.h"
#include "minichat/kafka_sec.h"

#define DBQ_MAX_MEMBERS 10000

typedef struct consumer_lag_s consumer_lag_t;

typedef struct {
    mc_db_t *db;
    consumer_lag_t *lag;       /* NULL: no wait before a room state */
    long long rebuild_wait_ms;
    /* the job's arena */
    void **blocks;
    size_t nblocks, cap;
    /* the statement being built */
    mc_buf_t sql;
    mc_db_arg_t *args;         /* its values, in ? order */
    size_t nargs, acap;
    int sql_oom;               /* an append failed: the statement is refused when run */
    uint64_t user;             /* the job's user for read-your-writes (0: none) */
    mc_db_status_t st;         /* of the last statement: affected rows, insert id, error */
    /* state of the current run */
    int retry;                 /* run the job again: lost before COMMIT, deadlock, lock wait timeout */
    int in_txn;                /* a transaction is open on the primary */
    unsigned last_errno;       /* of the last failed statement */
} dbq_t;

/* --- queries.c: arena, SQL building and running --- */

/* Returns n zeroed bytes that live until the job is answered, or NULL. */
void *dbq_alloc(dbq_t *q, size_t n);
/* Returns an arena copy of s[0..n) with a NUL, or NULL. */
char *dbq_strndup(dbq_t *q, const char *s, size_t n);
/* Frees the arena and forgets the run's state (between runs and after a job). */
void dbq_reset(dbq_t *q);
void dbq_free(dbq_t *q);

/* Starts a new statement (SQL text only: values are ? and dbq_arg_*). */
void dbq_sql(dbq_t *q, const char *text);
/* Appends SQL text. */
void dbq_sqlf(dbq_t *q, const char *text);
/* Adds the value of the next ?: a number, utf8mb4 text, bytes, or NULL.
 * Text and bytes are not copied: they must live until the statement ran. */
void dbq_arg_u64(dbq_t *q, uint64_t v);
void dbq_arg_text(dbq_t *q, const char *s, size_t n);
void dbq_arg_blob(dbq_t *q, const char *s, size_t n);
void dbq_arg_null(dbq_t *q);

/* Runs the statement on the role's connection.  Returns 0 (q->st.affected,
 * q->st.insert_id), or -1 with a log line and last_errno set (a lost
 * connection is reset, and `retry` set for the primary when no COMMIT was in
 * flight; a deadlock or lock wait timeout on the primary sets `retry` too). */
int dbq_exec(dbq_t *q, mc_db_role_t role);
/* Runs a SELECT and stores its rows.  Returns them (mc_db_rows_free), or NULL
 * as dbq_exec fails. */
mc_db_rows_t *dbq_select(dbq_t *q, mc_db_role_t role);
/* Records, after its COMMIT, that the job wrote for user (read-your-writes). */
void dbq_wrote(dbq_t *q, uint64_t user);
int dbq_begin(dbq_t *q);
int dbq_commit(dbq_t *q);
/* Ends a failed job: rolls an open transaction back (when the connection is
 * still there) and returns the error to answer. */
const char *dbq_fail(dbq_t *q);

/* Returns the unsigned number in a column (0 for NULL). */
uint64_t dbq_u64(const char *s);
/* Returns 1 when id is in the sorted ids. */
int dbq_has(const uint64_t *ids, size_t n, uint64_t id);
/* Reads the first column of every row as ids into an arena array (*out,
 * *n).  Returns 0, or -1 when out of memory. */
int dbq_ids(dbq_t *q, mc_db_rows_t *res, uint64_t **out, size_t *n);

/* --- queries_rooms.c: creating and changing rooms (primary) --- */
const char *q_create_room(dbq_t *q, const Minichat__CreateRoomRequest *req, Minichat__CreateRoomResult *res);
const char *q_invite(dbq_t *q, const Minichat__InviteRequest *req, Minichat__InviteResult *res);
const char *q_leave(dbq_t *q, const Minichat__LeaveRequest *req, Minichat__LeaveResult *res);
const char *q_room_state(dbq_t *q, const Minichat__RoomStateRequest *req, Minichat__RoomStateResult *res);

/* --- queries_lists.c: reading rooms and people --- */
const char *q_rooms(dbq_t *q, const Minichat__RoomsRequest *req, Minichat__RoomsResult *res);
const char *q_room_info(dbq_t *q, const Minichat__RoomInfoRequest *req, Minichat__RoomInfoResult *res);
const char *q_contacts(dbq_t *q, const Minichat__ContactsRequest *req, Minichat__ContactsResult *res);

/* --- queries_users.c: users.status for bans (primary) --- */
const char *q_ban(dbq_t *q, const Minichat__BanRequest *req, Minichat__BanResult *res);

/* --- queries_history.c --- */
const char *q_history(dbq_t *q, const Minichat__HistoryRequest *req, Minichat__HistoryResult *res);
/* A page's statement: ? room, before, limit.  created_at as it is (UTC
 * text: the session's zone is UTC), turned into ms by the relay-worker: the
 * DECIMAL arithmetic of UNIX_TIMESTAMP() * 1000 per row was about an eighth
 * of the replica's CPU for a page (sqltime.h). */
#define Q_HISTORY_SQL                                                                                                  \
    "SELECT seq, sender_id, client_msg_id, body, created_at, kind FROM messages"                                       \
    " WHERE room_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
/* Checks a request and sets *limit (the default, clamped).  Returns NULL or
 * the bad_request error to answer. */
const char *q_history_limit(const Minichat__HistoryRequest *req, uint32_t *limit);
/* Turns a page's rows (Q_HISTORY_SQL's, freed here) into res from q's arena
 * and sets *complete (no hole).  Returns 0, or -1 when out of memory. */
int q_history_rows(dbq_t *q, const Minichat__HistoryRequest *req, uint32_t limit, mc_db_rows_t *r,
                   Minichat__HistoryResult *res, int *complete);

/* --- consumer_lag.c: has the roomlist-consumer caught up? --- */
consumer_lag_t *consumer_lag_new(const char *brokers, const mc_kafka_sec_t *sec, const char *group, const char *topic);
/* Waits until the group's committed offsets reach the topic's high
 * watermarks as they are now, at most wait_ms.  Returns 0, or -1 when it
 * did not (or Kafka could not tell). */
int consumer_lag_wait(consumer_lag_t *l, long long wait_ms);
void consumer_lag_free(consumer_lag_t *l);

#endif
