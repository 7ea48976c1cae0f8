/*
 * One prepared statement run for many rows at once: MariaDB's bulk
 * execution (COM_STMT_BULK_EXECUTE, MariaDB 10.2 and later, through
 * Connector/C's STMT_ATTR_ARRAY_SIZE).  See db.h, mc_db_write_bulk.
 *
 * Why.  The roomlist-consumer's multi-row INSERT of a 2,000-row batch is
 * one statement of 14,000 placeholders: the server parses and checks every
 * placeholder's value as an item of the statement (setup_fields,
 * set_parameters).  A one-row INSERT run with an array of 2,000 rows sends
 * the same values in one packet, column types once, and the server runs
 * its insert loop over them: measured on the dev primary, 3.0-3.5 instead
 * of 4.3-5.3 CPU-us per row, and less client CPU (docs/performance.md,
 * "Persistence: bulk execution").
 *
 * The values come row after row in an mc_db_args_t (ncols per row), as
 * the builders make them; they are laid out here column-wise, as
 * Connector/C reads arrays: per column one array of numbers, or of text
 * pointers and lengths.  A column's values must all be of one type, and
 * not NULL (no caller needs one: that would take indicator arrays).
 *
 * Not every server has it: MySQL does not.  Then nothing is sent and the
 * call fails with CR_NOT_IMPLEMENTED, and the caller writes the rows its
 * other way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>

#include "minichat/db.h"
#include "minichat/db_stmt.h"
#include "minichat/log.h"

/* Returns whether the server of m runs bulk executions: a MariaDB server
 * (not announcing CLIENT_MYSQL) with MARIADB_CLIENT_STMT_BULK_OPERATIONS
 * among its extended capabilities (Connector/C's own test,
 * MARIADB_STMT_BULK_SUPPORTED, reads structures it does not publish). */
static int bulk_supported(MYSQL *m)
{
    unsigned long caps = 0, ext = 0;

    if (mariadb_get_infov(m, MARIADB_CONNECTION_SERVER_CAPABILITIES, &caps) != 0
        || mariadb_get_infov(m, MARIADB_CONNECTION_EXTENDED_SERVER_CAPABILITIES, &ext) != 0)
    {
        return 0;
    }
    return !(caps & CLIENT_MYSQL) && (ext & (unsigned long)(MARIADB_CLIENT_STMT_BULK_OPERATIONS >> 32)) != 0;
}

/* The column-wise arrays of one execution. */
typedef struct {
    MYSQL_BIND *bind;       /* ncols */
    uint64_t *num;          /* ncols * nrows, for number columns */
    const char **text;      /* ncols * nrows, for text and byte columns */
    unsigned long *len;     /* ncols * nrows */
} bulk_cols_t;

static void bulk_cols_free(bulk_cols_t *c)
{
    free(c->bind);
    free(c->num);
    free(c->text);
    free(c->len);
}

/* Lays out args (nrows rows of ncols values) column-wise into c and points
 * c->bind at it.  Returns 0, or -1 with st set (out of memory, a NULL, or
 * a column of mixed types). */
static int bulk_cols(bulk_cols_t *c, const mc_db_arg_t *args, size_t ncols, size_t nrows, mc_db_status_t *st)
{
    const mc_db_arg_t *a;
    size_t col, row, i;

    memset(c, 0, sizeof(*c));
    c->bind = calloc(ncols, sizeof(*c->bind));
    c->num = malloc(ncols * nrows * sizeof(*c->num));
    c->text = malloc(ncols * nrows * sizeof(*c->text));
    c->len = malloc(ncols * nrows * sizeof(*c->len));
    if (c->bind == NULL || c->num == NULL || c->text == NULL || c->len == NULL) {
        st->err = CR_OUT_OF_MEMORY;
        snprintf(st->msg, sizeof(st->msg), "out of memory");
        return -1;
    }
    for (col = 0; col < ncols; col++) {
        for (row = 0; row < nrows; row++) {
            a = &args[row * ncols + col];
            i = col * nrows + row;
            if (a->type == MC_DB_ARG_NULL || a->type != args[col].type) {
                st->err = CR_INVALID_PARAMETER_NO;
                snprintf(st->msg, sizeof(st->msg), "bulk: row %zu, column %zu: %s", row + 1, col + 1,
                         a->type == MC_DB_ARG_NULL ? "NULL is not supported" : "not of the first row's type");
                return -1;
            }
            c->num[i] = a->u64;
            c->text[i] = a->s != NULL ? a->s : "";
            c->len[i] = a->s != NULL ? a->len : 0;
        }
        if (args[col].type == MC_DB_ARG_U64) {
            c->bind[col].buffer_type = MYSQL_TYPE_LONGLONG;
            c->bind[col].buffer = &c->num[col * nrows];
            c->bind[col].is_unsigned = 1;
        } else {
            c->bind[col].buffer_type = args[col].type == MC_DB_ARG_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
            c->bind[col].buffer = (void *)&c->text[col * nrows];
            c->bind[col].length = &c->len[col * nrows];
        }
    }
    return 0;
}

int mc_db_write_bulk(mc_db_t *db, const char *what, const char *sql, size_t len, const mc_db_args_t *args,
                     size_t ncols, mc_db_status_t *st)
{
    MYSQL_STMT *stmt;
    MYSQL *m;
    bulk_cols_t c;
    unsigned int nrows, zero = 0;
    int rc = -1;

    st->err = 0;
    st->msg[0] = '\0';
    st->affected = 0;
    st->insert_id = 0;
    if (ncols == 0 || args == NULL || args->n == 0 || args->n % ncols != 0 || args->n / ncols > 0xffffffffu) {
        st->err = CR_INVALID_PARAMETER_NO;
        snprintf(st->msg, sizeof(st->msg), "bulk: %zu values are not whole rows of %zu", args ? args->n : 0, ncols);
        mc_error("db: %s failed: %s", what, st->msg);
        return -1;
    }
    nrows = (unsigned int)(args->n / ncols);
    m = mc_db_conn(db, MC_DB_PRIMARY);
    if (m == NULL) {
        st->err = CR_CONNECTION_ERROR;
        snprintf(st->msg, sizeof(st->msg), "database unreachable");
        mc_error("db: %s failed: %s (%u)", what, st->msg, st->err);
        return -1;
    }
    if (!bulk_supported(m)) {
        st->err = CR_NOT_IMPLEMENTED;
        snprintf(st->msg, sizeof(st->msg), "the server has no bulk execution");
        return -1; /* not logged: the caller falls back */
    }
    stmt = mc_db_stmts_get(mc_db_stmts(db, MC_DB_PRIMARY), m, sql, len, &st->err, st->msg, sizeof(st->msg));
    if (stmt == NULL) {
        mc_error("db: %s failed: %s (%u)", what, st->msg, st->err);
        return -1;
    }
    if (mysql_stmt_param_count(stmt) != ncols) {
        st->err = CR_PARAMS_NOT_BOUND;
        snprintf(st->msg, sizeof(st->msg), "the statement takes %lu parameters, %zu given",
                 mysql_stmt_param_count(stmt), ncols);
        mc_error("db: %s failed: %s", what, st->msg);
        return -1;
    }
    if (bulk_cols(&c, args->v, ncols, nrows, st) != 0) {
        bulk_cols_free(&c);
        mc_error("db: %s failed: %s", what, st->msg);
        return -1;
    }
    if (mysql_stmt_attr_set(stmt, STMT_ATTR_ARRAY_SIZE, &nrows) != 0 || mysql_stmt_bind_param(stmt, c.bind) != 0
        || mysql_stmt_execute(stmt) != 0)
    {
        mc_db_stmt_error(st, stmt);
    } else {
        st->affected = mysql_stmt_affected_rows(stmt);
        rc = 0;
    }
    /* the cached statement may be run for one row later */
    (void)mysql_stmt_attr_set(stmt, STMT_ATTR_ARRAY_SIZE, &zero);
    bulk_cols_free(&c);
    if (rc != 0) {
        if (st->err >= CR_MIN_ERROR && !mc_db_conn_lost(st->err)) {
            mc_db_stmts_drop(mc_db_stmts(db, MC_DB_PRIMARY), stmt);
        }
        mc_error("db: %s failed: %s (%u)", what, st->msg, st->err);
    }
    return rc;
}
