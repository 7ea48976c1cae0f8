/*
 * The toolkit of the query functions (see queries.h): a per-job arena for
 * the results, one growable SQL buffer per thread, and the statement runners
 * that classify MySQL errors.
 *
 * Error handling in one place: every failed statement is logged here with
 * its MySQL error; a lost connection (server gone, lost, commands out of
 * sync) is reset in the router so that the next statement reconnects.  On
 * the primary, a loss before COMMIT sets `retry`: the transaction died with
 * the connection, so running the job again is safe.  A loss during COMMIT
 * leaves the outcome unknown and is answered as an error.
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
    if (q->sql.cap > 1 << 20) {
        mc_buf_free(&q->sql); /* give a big statement's memory back */
    }
    mc_buf_reset(&q->sql);
}

void dbq_free(dbq_t *q)
{
    dbq_reset(q);
    free(q->blocks);
    mc_buf_free(&q->sql);
    q->blocks = NULL;
    q->cap = 0;
}

/* Makes room for n more bytes (and a NUL).  Returns 0, or -1 with sql_oom set. */
static int sql_reserve(dbq_t *q, size_t n)
{
    if (q->sql_oom || mc_buf_reserve(&q->sql, n) != 0) {
        q->sql_oom = 1;
        return -1;
    }
    return 0;
}

/* Appends printf-style output; after a failure nothing more is appended. */
static void sql_vappend(dbq_t *q, const char *fmt, va_list ap)
{
    if (q->sql_oom || mc_buf_vappendf(&q->sql, fmt, ap) != 0) {
        q->sql_oom = 1;
    }
}

void dbq_sql(dbq_t *q, const char *fmt, ...)
{
    va_list ap;

    mc_buf_reset(&q->sql);
    q->sql_oom = 0;
    va_start(ap, fmt);
    sql_vappend(q, fmt, ap);
    va_end(ap);
}

void dbq_sqlf(dbq_t *q, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sql_vappend(q, fmt, ap);
    va_end(ap);
}

void dbq_sql_hex(dbq_t *q, const char *s, size_t n, int utf8)
{
    static const char hex[] = "0123456789abcdef";
    char *p;
    size_t i;

    if (n == 0) {
        dbq_sqlf(q, "%s", utf8 ? "_utf8mb4 ''" : "''"); /* X'' is a binary string */
        return;
    }
    if (sql_reserve(q, 2 * n + 16) != 0) {
        return;
    }
    p = q->sql.data + q->sql.len;
    if (utf8) {
        memcpy(p, "_utf8mb4 ", 9);
        p += 9;
    }
    *p++ = 'X';
    *p++ = '\'';
    for (i = 0; i < n; i++) {
        *p++ = hex[(unsigned char)s[i] >> 4];
        *p++ = hex[(unsigned char)s[i] & 0xf];
    }
    *p++ = '\'';
    *p = '\0';
    q->sql.len = (size_t)(p - q->sql.data);
}

/* Returns 1 when a MySQL error means the connection is gone. */
static int conn_lost(unsigned err)
{
    return err == CR_SERVER_GONE_ERROR || err == CR_SERVER_LOST || err == CR_CONNECTION_ERROR
           || err == CR_CONN_HOST_ERROR || err == CR_COMMANDS_OUT_OF_SYNC || err == CR_SERVER_LOST_EXTENDED;
}

/* Runs the statement; returns the connection on success, else NULL. */
static MYSQL *run(dbq_t *q, mc_db_role_t role, int committing)
{
    MYSQL *m;
    unsigned err;

    if (q->sql_oom) {
        mc_error("db: out of memory building a statement");
        q->last_errno = CR_OUT_OF_MEMORY;
        return NULL;
    }
    m = mc_db_conn(q->db, role);
    if (m == NULL) {
        q->last_errno = CR_CONNECTION_ERROR;
        q->in_txn = 0;
        return NULL;
    }
    if (mysql_real_query(m, q->sql.data, (unsigned long)q->sql.len) == 0) {
        return m;
    }
    err = mysql_errno(m);
    q->last_errno = err ? err : CR_UNKNOWN_ERROR;
    /* a duplicate key is an answer (an idempotent retry), not a failure */
    mc_log(q->last_errno == ER_DUP_ENTRY ? MC_LOG_INFO : MC_LOG_ERROR, "db: %s: query failed: %u %s",
           role == MC_DB_PRIMARY ? "primary" : "replica", q->last_errno, mysql_error(m));
    mc_debug("db: the query was: %.*s", (int)(q->sql.len > 300 ? 300 : q->sql.len), q->sql.data);
    if (conn_lost(q->last_errno)) {
        mc_db_reset(q->db, role);
        if (role == MC_DB_PRIMARY && !committing) {
            q->retry = 1;
        }
        if (role == MC_DB_PRIMARY) {
            q->in_txn = 0;
        }
    }
    return NULL;
}

int dbq_exec(dbq_t *q, mc_db_role_t role)
{
    return run(q, role, 0) != NULL ? 0 : -1;
}

MYSQL_RES *dbq_select(dbq_t *q, mc_db_role_t role)
{
    MYSQL *m = run(q, role, 0);
    MYSQL_RES *res;

    if (m == NULL) {
        return NULL;
    }
    res = mysql_store_result(m);
    if (res == NULL) {
        q->last_errno = mysql_errno(m) ? mysql_errno(m) : CR_OUT_OF_MEMORY;
        mc_error("db: reading a result: %u %s", q->last_errno, mysql_error(m));
        if (conn_lost(q->last_errno)) {
            mc_db_reset(q->db, role);
            q->retry = role == MC_DB_PRIMARY;
        }
    }
    return res;
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
    return run(q, MC_DB_PRIMARY, 1) != NULL ? 0 : -1;
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

int dbq_ids(dbq_t *q, MYSQL_RES *res, uint64_t **out, size_t *n)
{
    MYSQL_ROW row;
    uint64_t *ids = dbq_alloc(q, (mysql_num_rows(res) + 1) * sizeof(uint64_t));
    size_t k = 0;

    if (ids == NULL) {
        return -1;
    }
    while ((row = mysql_fetch_row(res)) != NULL) {
        ids[k++] = dbq_u64(row[0]);
    }
    *out = ids;
    *n = k;
    return 0;
}
