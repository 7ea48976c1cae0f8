/*
 * History beyond the Redis log (see queries.h for the conventions): the
 * messages of a room with seq < before, newest first, at most limit.
 *
 * The page is read from the replica (the primary keeps its work for writes)
 * with a keyset on the primary key (room_id, seq): the cost is the page,
 * whatever the depth.  Seqs are dense, so the page is complete exactly when
 * it holds every seq from before - 1 down to max(1, before - limit)
 * (mc_history_complete); a hole means the replica lags (or is down), and the
 * primary answers instead.  A hole the primary has too may be a message that
 * is acked (Kafka has it) but not yet persisted: the Redis log's byte cap
 * can push a message out of the log within milliseconds when large ones
 * follow.  So the primary is read once more after the roomlist-consumer
 * caught up with Kafka (consumer_lag.c, at most rebuild_wait_ms; quick when
 * it has).  A hole still there (a message that never reached MySQL) is
 * answered as it is.
 *
 * The first replica read of a page may also run on the main loop
 * (history_loop.c, history_on_loop): it takes the statement (Q_HISTORY_SQL)
 * and the row mapping (q_history_rows) from here, and hands every page that
 * is not complete from the replica to a DB thread, which runs q_history
 * from the start.
 *
 * The answer travels in one LocalFrame, which nginx takes up to MC_FRAME_MAX:
 * a page of very long bodies is cut short (still newest first, still
 * contiguous); the caller pages on from its oldest seq.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>

#include "minichat/frame.h"
#include "minichat/log.h"
#include "minichat/paging.h"
#include "minichat/sqltime.h"
#include "queries.h"

#define HISTORY_LIMIT_DEFAULT 50
#define HISTORY_LIMIT_MAX 200
#define HISTORY_BYTES_MAX (MC_FRAME_MAX - 64 * 1024)

/* Reads one page from a role into res.  Returns 0 with *complete set, or -1. */
static int history_page(dbq_t *q, mc_db_role_t role, const Minichat__HistoryRequest *req, uint32_t limit,
                        Minichat__HistoryResult *res, int *complete)
{
    mc_db_rows_t *r;

    dbq_sql(q, Q_HISTORY_SQL);
    dbq_arg_u64(q, req->room);
    dbq_arg_u64(q, req->before);
    dbq_arg_u64(q, limit);
    if ((r = dbq_select(q, role)) == NULL) {
        return -1;
    }
    return q_history_rows(q, req, limit, r, res, complete);
}

int q_history_rows(dbq_t *q, const Minichat__HistoryRequest *req, uint32_t limit, mc_db_rows_t *r,
                   Minichat__HistoryResult *res, int *complete)
{
    Minichat__ChatMessage *m;
    char **row;
    const unsigned long *len;
    uint64_t *seqs;
    size_t n, i, bytes = 0;

    n = mc_db_rows_count(r);
    seqs = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    res->messages = dbq_alloc(q, (n + 1) * sizeof(Minichat__ChatMessage *));
    m = dbq_alloc(q, (n + 1) * sizeof(Minichat__ChatMessage));
    if (seqs == NULL || res->messages == NULL || m == NULL) {
        goto oom;
    }
    res->n_messages = 0;
    for (i = 0; (row = mc_db_rows_next(r)) != NULL; i++) {
        len = mc_db_rows_lengths(r);
        seqs[i] = dbq_u64(row[0]);
        bytes += len[2] + len[3] + 64;
        if (bytes > HISTORY_BYTES_MAX && i > 0) {
            continue; /* cut short: still counted for completeness */
        }
        minichat__chat_message__init(&m[i]);
        m[i].room = req->room;
        m[i].seq = seqs[i];
        m[i].sender = dbq_u64(row[1]);
        m[i].cid = dbq_strndup(q, row[2] ? row[2] : "", len[2]);
        m[i].body = dbq_strndup(q, row[3] ? row[3] : "", len[3]);
        if (row[4] == NULL || mc_sqltime_ms(row[4], len[4], &m[i].ts) != 0) {
            m[i].ts = 0; /* not a time MySQL gives for a TIMESTAMP NOT NULL; shown as unknown */
        }
        m[i].kind = row[5] && strcmp(row[5], "system") == 0 ? "system" : "text";
        if (m[i].cid == NULL || m[i].body == NULL) {
            goto oom;
        }
        res->messages[res->n_messages++] = &m[i];
    }
    mc_db_rows_free(r);
    *complete = mc_history_complete(req->before, limit, seqs, n);
    return 0;
oom:
    mc_db_rows_free(r);
    q->last_errno = CR_OUT_OF_MEMORY;
    return -1;
}

const char *q_history_limit(const Minichat__HistoryRequest *req, uint32_t *limit)
{
    *limit = req->limit ? req->limit : HISTORY_LIMIT_DEFAULT;
    if (req->room == 0 || req->before == 0) {
        return "bad_request: history needs a room and before > 0";
    }
    if (*limit > HISTORY_LIMIT_MAX) {
        *limit = HISTORY_LIMIT_MAX;
    }
    return NULL;
}

const char *q_history(dbq_t *q, const Minichat__HistoryRequest *req, Minichat__HistoryResult *res)
{
    uint32_t limit;
    int complete = 0;
    const char *e;

    if ((e = q_history_limit(req, &limit)) != NULL) {
        return e;
    }
    if (mc_history_want(req->before, limit) == 0) {
        return NULL; /* nothing below seq 1 */
    }
    if (history_page(q, MC_DB_REPLICA, req, limit, res, &complete) == 0 && complete) {
        return NULL;
    }
    mc_debug("db: history of room %" PRIu64 " before %" PRIu64 ": the replica's page is incomplete, reading the primary",
             req->room, req->before);
    if (history_page(q, MC_DB_PRIMARY, req, limit, res, &complete) != 0) {
        return dbq_fail(q);
    }
    if (complete || q->lag == NULL || consumer_lag_wait(q->lag, q->rebuild_wait_ms) != 0) {
        return NULL;
    }
    mc_debug("db: history of room %" PRIu64 " before %" PRIu64 ": the primary's page has a hole, reading it again"
             " now that the consumer caught up", req->room, req->before);
    if (history_page(q, MC_DB_PRIMARY, req, limit, res, &complete) != 0) {
        return dbq_fail(q);
    }
    return NULL;
}
