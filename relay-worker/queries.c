/*
 * The toolkit of the query functions (see queries.h): a per-job arena for
 * the results, one growable statement text and value list per thread, and
 * the statement runners (prepared statements through mc_db_exec) that
 * classify MySQL errors.
 *
 * Error handling in one place: every failed statement is logged here with
 * its MySQL error; a lost connection (server gone, lost, commands out of
 * sync) is reset in the router so that the next statement reconnects.  On
 * the primary, a loss before COMMIT sets `retry`: the transaction died with
 * the connection, so running the job again is safe.  A loss during COMMIT
 * leaves the outcome unknown and is answered as an error.  A deadlock or a
 * lock wait timeout on the primary sets `retry` as well: the server rolled
 * the work back (dbq_fail rolls back what a timeout left open).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "minichat/log.h"
#include "queries.h"

void *dbq_alloc(dbq_t *q, size_t n)
{
    void **nb, *p;
    size_t ncap;

    if (q->nblocks == q->cap) {
        ncap = q->cap ? 2 * q->cap : 16;
        nb = realloc(q->blocks, ncap * sizeof(void *));
        if (nb == NULL) {
            return NULL;
        }
        q->blocks = nb;
        q->cap = ncap;
    }
    p = calloc(1, n ? n : 1);
    if (p != NULL) {
        q->blocks[q->nblocks++] = p;
    }
    return p;
}

char *dbq_strndup(dbq_t *q, const char *s, size_t n)
{
    char *p = dbq_alloc(q, n + 1);

    if (p != NULL) {
        memcpy(p, s, n);
    }
    return p;
}

void dbq_reset(dbq_t *q)
{
    size_t i;

    for (i = 0; i < q->nblocks; i++) {
        free(q->blocks[i]);
    }
    q->nblocks = 0;
    q->retry = 0;
    q->in_txn = 0;
    q->last_errno = 0;
    q->user = 0;
    q->nargs = 0;
    if (q->sql.cap > 1 << 20) {
        mc_buf_free(&q->sql); /* give a big statement's memory back */
    }
    mc_buf_reset(&q->sql);
}

void dbq_free(dbq_t *q)
{
    dbq_reset(q);
    free(q->blocks);
    free(q->args);
    q->args = NULL;
    q->acap = 0;
    mc_buf_free(&q->sql);
    q->blocks = NULL;
    q->cap = 0;
}

/* Appends SQL text; after a failure nothing more is appended. */
static void sql_append(dbq_t *q, const char *text)
{
    if (q->sql_oom || mc_buf_append_str(&q->sql, text) != 0) {
        q->sql_oom = 1;
    }
}

void dbq_sql(dbq_t *q, const char *text)
{
    mc_buf_reset(&q->sql);
    q->nargs = 0;
    q->sql_oom = 0;
    sql_append(q, text);
}

void dbq_sqlf(dbq_t *q, const char *text)
{
    sql_append(q, text);
}

/* Adds one value.  After a failure the statement is refused when run. */
static void arg_add(dbq_t *q, mc_db_arg_t a)
{
    mc_db_arg_t *na;
    size_t ncap;

    if (q->sql_oom) {
        return;
    }
    if (q->nargs == q->acap) {
        ncap = q->acap ? 2 * q->acap : 64;
        na = realloc(q->args, ncap * sizeof(*na));
        if (na == NULL) {
            q->sql_oom = 1;
            return;
        }
        q->args = na;
        q->acap = ncap;
    }
    q->args[q->nargs++] = a;
}

void dbq_arg_u64(dbq_t *q, uint64_t v)
{
    arg_add(q, MC_DB_U64(v));
}

void dbq_arg_text(dbq_t *q, const char *s, size_t n)
{
    arg_add(q, MC_DB_TEXT(s, n));
}

void dbq_arg_blob(dbq_t *q, const char *s, size_t n)
{
    arg_add(q, MC_DB_BLOB(s, n));
}

void dbq_arg_null(dbq_t *q)
{
    arg_add(q, MC_DB_NULL);
}

/* Runs the statement, storing rows when rows is non-NULL.  Returns 0 or -1. */
static int run(dbq_t *q, mc_db_role_t role, int committing, mc_db_rows_t **rows)
{
    if (q->sql_oom) {
        mc_error("db: out of memory building a statement");
        q->last_errno = CR_OUT_OF_MEMORY;
        return -1;
    }
    if (mc_db_exec(q->db, role, role == MC_DB_REPLICA ? q->user : 0, q->sql.data, q->sql.len, q->args, q->nargs,
                   rows, &q->st) == 0) {
        return 0;
    }
    q->last_errno = q->st.err;
    if (q->last_errno == CR_CONNECTION_ERROR) {
        q->in_txn = 0;
        return -1;
    }
    /* InnoDB gave up on the job's transaction to let another one on (a
     * deadlock rolls the transaction back, a lock wait timeout the statement
     * and dbq_fail the rest): the job runs again from its start */
    if (role == MC_DB_PRIMARY && (q->last_errno == ER_LOCK_DEADLOCK || q->last_errno == ER_LOCK_WAIT_TIMEOUT)) {
        q->retry = 1;
        mc_warn("db: primary: statement failed: %u %s; the job runs again", q->last_errno, q->st.msg);
        return -1;
    }
    /* a duplicate key is an answer (an idempotent retry), not a failure */
    mc_log(q->last_errno == ER_DUP_ENTRY ? MC_LOG_INFO : MC_LOG_ERROR, "db: %s: statement failed: %u %s",
           role == MC_DB_PRIMARY ? "primary" : "replica", q->last_errno, q->st.msg);
    mc_debug("db: the statement was: %.*s", (int)(q->sql.len > 300 ? 300 : q->sql.len), q->sql.data);
    if (mc_db_conn_lost(q->last_errno)) {
        mc_db_reset(q->db, role);
        if (role == MC_DB_PRIMARY && !committing) {
            q->retry = 1;
        }
        if (role == MC_DB_PRIMARY) {
            q->in_txn = 0;
        }
    }
    return -1;
}

int dbq_exec(dbq_t *q, mc_db_role_t role)
{
    return run(q, role, 0, NULL);
}

mc_db_rows_t *dbq_select(dbq_t *q, mc_db_role_t role)
{
    mc_db_rows_t *rows = NULL;

    return run(q, role, 0, &rows) == 0 ? rows : NULL;
}

void dbq_wrote(dbq_t *q, uint64_t user)
{
    mc_db_wrote(q->db, user);
}

int dbq_begin(dbq_t *q)
{
    dbq_sql(q, "START TRANSACTION");
    if (dbq_exec(q, MC_DB_PRIMARY) != 0) {
        return -1;
    }
    q->in_txn = 1;
    return 0;
}

int dbq_commit(dbq_t *q)
{
    dbq_sql(q, "COMMIT");
    q->in_txn = 0;
    return run(q, MC_DB_PRIMARY, 1, NULL);
}

const char *dbq_fail(dbq_t *q)
{
    if (q->in_txn) {
        q->in_txn = 0;
        dbq_sql(q, "ROLLBACK");
        if (dbq_exec(q, MC_DB_PRIMARY) != 0) {
            mc_db_reset(q->db, MC_DB_PRIMARY); /* a connection that cannot roll back is not reused */
        }
    }
    if (q->last_errno == CR_OUT_OF_MEMORY) {
        return "unavailable: out of memory";
    }
    if (q->last_errno == CR_CONNECTION_ERROR) {
        return "unavailable: database unreachable";
    }
    return "unavailable: database error";
}

uint64_t dbq_u64(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int dbq_has(const uint64_t *ids, size_t n, uint64_t id)
{
    return n > 0 && bsearch(&id, ids, n, sizeof(uint64_t), cmp_u64) != NULL;
}

int dbq_ids(dbq_t *q, mc_db_rows_t *res, uint64_t **out, size_t *n)
{
    char **row;
    uint64_t *ids = dbq_alloc(q, (mc_db_rows_count(res) + 1) * sizeof(uint64_t));
    size_t k = 0;

    if (ids == NULL) {
        return -1;
    }
    while ((row = mc_db_rows_next(res)) != NULL) {
        ids[k++] = dbq_u64(row[0]);
    }
    *out = ids;
    *n = k;
    return 0;
}
