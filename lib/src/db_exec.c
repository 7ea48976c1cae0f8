/*
 * Prepared statements with typed parameters, and their rows as strings (see
 * db.h).  No value ever becomes SQL text: numbers travel as 64-bit integers,
 * text as utf8mb4 strings, bytes as blobs, in the binary protocol; the SQL
 * of a statement is a fixed text with ? placeholders, prepared once per
 * connection (db_stmt.c) and executed as often as needed.
 *
 * Rows are stored on the client (mysql_stmt_store_result) and copied into
 * one block per result, every column converted to a NUL-terminated string
 * by libmariadb.  The store computes each column's longest value in this
 * result (STMT_ATTR_UPDATE_MAX_LENGTH), so each column's slot is sized to
 * the result's own data (at least 64 bytes, the longest number or time as
 * a string; at most DB_EXEC_SLOT_MAX) and one mysql_stmt_fetch per row
 * fills them all; the block and the cell table are allocated once, sized
 * from the row count.  A value that still does not fit (longer than
 * DB_EXEC_SLOT_MAX) is fetched again at its full length with
 * mysql_stmt_fetch_column.  A TIMESTAMP or DATETIME column is fetched as a
 * MYSQL_TIME and written as "YYYY-MM-DD HH:MM:SS[.fff...]" here (the text
 * libmariadb makes, with the column's fraction digits), without the
 * printf-style formatting libmariadb spends on it: history pages select
 * created_at as it is (sqltime.h).  So a caller walks rows as it walked MYSQL_ROWs,
 * and a result costs its own bytes, whatever the column types declare
 * (MEDIUMTEXT would ask for 16 MiB buffers).  A page of 50 messages with
 * 100-byte bodies used to refetch every body (64-byte slots): 50 more
 * libmariadb calls and a doubling block (docs/performance.md, "History
 * pages: CPU per page ...").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>

#include "minichat/buf.h"
#include "minichat/db.h"
#include "minichat/log.h"

#define DB_EXEC_SLOT 64
#define DB_EXEC_SLOT_MAX (64 * 1024)
#define DB_EXEC_RESERVE_MAX (1024 * 1024)
#define EXEC_TIME_TEXT 27 /* "YYYY-MM-DD HH:MM:SS.ffffff" and its NUL */

static const unsigned long exec_pow10[7] = {1, 10, 100, 1000, 10000, 100000, 1000000};
#define DB_EXEC_NULL ((size_t)-1)

typedef struct {
    size_t off;            /* in data, or DB_EXEC_NULL */
    unsigned long len;
} exec_cell_t;

struct mc_db_rows_s {
    size_t n;              /* rows */
    size_t ncols;
    size_t cur;            /* rows handed out by mc_db_rows_next */
    char **cell;           /* n * ncols, NULL for SQL NULL */
    unsigned long *len;    /* n * ncols */
    mc_buf_t data;
};

void mc_db_stmt_error(mc_db_status_t *st, MYSQL_STMT *stmt)
{
    st->err = mysql_stmt_errno(stmt) ? mysql_stmt_errno(stmt) : CR_UNKNOWN_ERROR;
    snprintf(st->msg, sizeof(st->msg), "%s", mysql_stmt_error(stmt));
}

/* Records "out of memory" in st. */
static void exec_oom(mc_db_status_t *st)
{
    st->err = CR_OUT_OF_MEMORY;
    snprintf(st->msg, sizeof(st->msg), "out of memory");
}

int mc_db_stmt_bind(MYSQL_STMT *stmt, const mc_db_arg_t *args, size_t nargs, MYSQL_BIND *b, unsigned long *lens,
                    mc_db_status_t *st)
{
    size_t i;

    if (mysql_stmt_param_count(stmt) != nargs) {
        st->err = CR_PARAMS_NOT_BOUND;
        snprintf(st->msg, sizeof(st->msg), "the statement takes %lu parameters, %zu given",
                 mysql_stmt_param_count(stmt), nargs);
        return -1;
    }
    if (nargs == 0) {
        return 0;
    }
    memset(b, 0, nargs * sizeof(*b));
    for (i = 0; i < nargs; i++) {
        lens[i] = 0;
        switch (args[i].type) {
        case MC_DB_ARG_U64:
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = (void *)&args[i].u64;
            b[i].is_unsigned = 1;
            break;
        case MC_DB_ARG_TEXT:
        case MC_DB_ARG_BLOB:
            b[i].buffer_type = args[i].type == MC_DB_ARG_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
            b[i].buffer = (void *)(args[i].s != NULL ? args[i].s : "");
            lens[i] = args[i].s != NULL ? args[i].len : 0;
            b[i].buffer_length = lens[i];
            b[i].length = &lens[i];
            break;
        default:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        }
    }
    if (mysql_stmt_bind_param(stmt, b) != 0) {
        mc_db_stmt_error(st, stmt);
        return -1;
    }
    return 0;
}

/* Binds the arguments and executes the statement.  Returns 0, or -1 with st set. */
static int exec_run(MYSQL_STMT *stmt, const mc_db_arg_t *args, size_t nargs, mc_db_status_t *st)
{
    MYSQL_BIND *b;
    unsigned long *lens;
    int rc;

    b = calloc(nargs + 1, sizeof(*b));
    lens = calloc(nargs + 1, sizeof(*lens));
    if (b == NULL || lens == NULL) {
        free(b);
        free(lens);
        exec_oom(st);
        return -1;
    }
    /* libmariadb copies what it needs when the statement is executed */
    rc = mc_db_stmt_bind(stmt, args, nargs, b, lens, st);
    if (rc == 0 && mysql_stmt_execute(stmt) != 0) {
        mc_db_stmt_error(st, stmt);
        rc = -1;
    }
    free(b);
    free(lens);
    return rc;
}

/* Writes n digits of v, zero-padded, at p.  Returns p + n. */
static char *exec_digits(char *p, unsigned long v, int n)
{
    int i;

    for (i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + n;
}

/* Writes t as "YYYY-MM-DD HH:MM:SS" and, for decimals > 0, '.' and that
 * many digits of its microseconds, at p (EXEC_TIME_TEXT bytes).  Returns the
 * length. */
static size_t exec_time_text(const MYSQL_TIME *t, unsigned decimals, char *p)
{
    char *q = p;

    q = exec_digits(q, t->year, 4);
    *q++ = '-';
    q = exec_digits(q, t->month, 2);
    *q++ = '-';
    q = exec_digits(q, t->day, 2);
    *q++ = ' ';
    q = exec_digits(q, t->hour, 2);
    *q++ = ':';
    q = exec_digits(q, t->minute, 2);
    *q++ = ':';
    q = exec_digits(q, t->second, 2);
    if (decimals > 0) {
        if (decimals > 6) {
            decimals = 6;
        }
        *q++ = '.';
        q = exec_digits(q, t->second_part / exec_pow10[6 - decimals], (int)decimals);
    }
    return (size_t)(q - p);
}

/* Appends one fetched row to r (cells has room for it).  slot[c] is where
 * column c was fetched, size[c] its size; times[c] where a time column was
 * (its decimals in size[c]).  Returns 0, or -1 with st set. */
static int exec_row(mc_db_rows_t *r, MYSQL_STMT *stmt, MYSQL_BIND *rb, char **slot, const unsigned long *size,
                    const MYSQL_TIME *times, const unsigned long *lens, const my_bool *nulls, exec_cell_t *cells,
                    mc_db_status_t *st)
{
    MYSQL_BIND one;
    unsigned long got;
    my_bool isnull, err;
    size_t c, k;

    for (c = 0; c < r->ncols; c++) {
        k = r->n * r->ncols + c;
        if (nulls[c]) {
            cells[k].off = DB_EXEC_NULL;
            continue;
        }
        if (rb[c].buffer_type == MYSQL_TYPE_DATETIME) {
            if (mc_buf_reserve(&r->data, EXEC_TIME_TEXT) != 0) {
                exec_oom(st);
                return -1;
            }
            cells[k].off = r->data.len;
            cells[k].len = exec_time_text(&times[c], (unsigned)size[c], r->data.data + r->data.len);
            r->data.len += cells[k].len;
            r->data.data[r->data.len++] = '\0';
            continue;
        }
        if (mc_buf_reserve(&r->data, lens[c] + 1) != 0) {
            exec_oom(st);
            return -1;
        }
        cells[k].off = r->data.len;
        cells[k].len = lens[c];
        if (lens[c] < size[c]) {
            memcpy(r->data.data + r->data.len, slot[c], lens[c]);
        } else {
            one = rb[c];
            one.buffer = r->data.data + r->data.len;
            one.buffer_length = lens[c] + 1;
            one.length = &got;
            one.is_null = &isnull;
            one.error = &err;
            if (mysql_stmt_fetch_column(stmt, &one, (unsigned)c, 0) != 0) {
                mc_db_stmt_error(st, stmt);
                return -1;
            }
        }
        r->data.len += lens[c];
        r->data.data[r->data.len++] = '\0';
    }
    r->n++;
    return 0;
}

/* The slot size of a column whose longest value in the result is max bytes. */
static unsigned long exec_slot_size(unsigned long max)
{
    if (max < DB_EXEC_SLOT) {
        return DB_EXEC_SLOT;
    }
    return max < DB_EXEC_SLOT_MAX ? max + 1 : DB_EXEC_SLOT_MAX;
}

/* Stores the statement's result set in a new *out.  Returns 0, or -1 with st set. */
static int exec_fetch(MYSQL_STMT *stmt, mc_db_rows_t **out, mc_db_status_t *st)
{
    my_bool on = 1;

    *out = NULL;
    /* the longest value of each column, computed by the store (libmariadb's
     * own fields: mysql_stmt_result_metadata would copy them every time) */
    if (mysql_stmt_attr_set(stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &on) != 0 || mysql_stmt_store_result(stmt) != 0) {
        mc_db_stmt_error(st, stmt);
        mysql_stmt_free_result(stmt);
        return -1;
    }
    return mc_db_stmt_rows(stmt, out, st);
}

int mc_db_stmt_rows(MYSQL_STMT *stmt, mc_db_rows_t **out, mc_db_status_t *st)
{
    mc_db_rows_t *r;
    MYSQL_BIND *rb = NULL;
    char *slots = NULL, **slot = NULL;
    unsigned long *lens = NULL, *size = NULL;
    my_bool *nulls = NULL, *errs = NULL;
    MYSQL_TIME *times = NULL;
    exec_cell_t *cells = NULL;
    size_t total = 0, rowbytes = 0, nrows, c, k;
    int rc = -1, f;

    *out = NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        mysql_stmt_free_result(stmt);
        exec_oom(st);
        return -1;
    }
    r->ncols = mysql_stmt_field_count(stmt);
    nrows = (size_t)mysql_stmt_num_rows(stmt);
    if (r->ncols > 0) {
        rb = calloc(r->ncols, sizeof(*rb));
        slot = calloc(r->ncols, sizeof(*slot));
        size = calloc(r->ncols, sizeof(*size));
        lens = calloc(r->ncols, sizeof(*lens));
        nulls = calloc(r->ncols, sizeof(*nulls));
        errs = calloc(r->ncols, sizeof(*errs));
        times = calloc(r->ncols, sizeof(*times));
        cells = malloc((nrows * r->ncols + 1) * sizeof(*cells));
        if (rb == NULL || slot == NULL || size == NULL || lens == NULL || nulls == NULL || errs == NULL
            || times == NULL || cells == NULL) {
            exec_oom(st);
            goto done;
        }
        for (c = 0; c < r->ncols; c++) {
            size[c] = exec_slot_size(stmt->fields != NULL ? stmt->fields[c].max_length : 0);
            total += size[c];
            rowbytes += size[c] < DB_EXEC_SLOT_MAX ? size[c] : DB_EXEC_SLOT;
        }
        slots = malloc(total);
        /* room for every row at its columns' longest, up to a bound (past it,
         * and for a refetched value, the block grows by doubling) */
        total = nrows * rowbytes < DB_EXEC_RESERVE_MAX ? nrows * rowbytes : DB_EXEC_RESERVE_MAX;
        if (slots == NULL || (total > 0 && mc_buf_reserve(&r->data, total) != 0)) {
            exec_oom(st);
            goto done;
        }
        for (c = 0, k = 0; c < r->ncols; c++) {
            slot[c] = slots + k;
            k += size[c];
            rb[c].length = &lens[c];
            rb[c].is_null = &nulls[c];
            rb[c].error = &errs[c];
            if (stmt->fields != NULL
                && (stmt->fields[c].type == MYSQL_TYPE_TIMESTAMP || stmt->fields[c].type == MYSQL_TYPE_DATETIME)) {
                rb[c].buffer_type = MYSQL_TYPE_DATETIME;
                rb[c].buffer = &times[c];
                rb[c].buffer_length = sizeof(times[c]);
                size[c] = stmt->fields[c].decimals; /* its slot goes unused */
                continue;
            }
            rb[c].buffer_type = MYSQL_TYPE_STRING;
            rb[c].buffer = slot[c];
            rb[c].buffer_length = size[c];
        }
        if (mysql_stmt_bind_result(stmt, rb) != 0) {
            mc_db_stmt_error(st, stmt);
            goto done;
        }
        while ((f = mysql_stmt_fetch(stmt)) == 0 || f == MYSQL_DATA_TRUNCATED) {
            if (r->n >= nrows) { /* more rows than stored: cannot happen */
                st->err = CR_UNKNOWN_ERROR;
                snprintf(st->msg, sizeof(st->msg), "more rows fetched than stored");
                goto done;
            }
            if (exec_row(r, stmt, rb, slot, size, times, lens, nulls, cells, st) != 0) {
                goto done;
            }
        }
        if (f != MYSQL_NO_DATA) {
            mc_db_stmt_error(st, stmt);
            goto done;
        }
    }
    r->cell = calloc(r->n * r->ncols + 1, sizeof(*r->cell));
    r->len = calloc(r->n * r->ncols + 1, sizeof(*r->len));
    if (r->cell == NULL || r->len == NULL) {
        exec_oom(st);
        goto done;
    }
    for (k = 0; k < r->n * r->ncols; k++) {
        if (cells[k].off != DB_EXEC_NULL) {
            r->cell[k] = r->data.data + cells[k].off;
            r->len[k] = cells[k].len;
        }
    }
    rc = 0;
done:
    mysql_stmt_free_result(stmt);
    free(rb);
    free(slots);
    free(slot);
    free(size);
    free(lens);
    free(nulls);
    free(errs);
    free(times);
    free(cells);
    if (rc != 0) {
        mc_db_rows_free(r);
        r = NULL;
    }
    *out = r;
    return rc;
}

int mc_db_exec(mc_db_t *db, mc_db_role_t role, uint64_t user, const char *sql, size_t len, const mc_db_arg_t *args,
               size_t nargs, mc_db_rows_t **rows, mc_db_status_t *st)
{
    MYSQL_STMT *stmt;
    MYSQL *m;

    st->err = 0;
    st->msg[0] = '\0';
    st->affected = 0;
    st->insert_id = 0;
    if (rows != NULL) {
        *rows = NULL;
    }
    m = mc_db_conn_for(db, role, user);
    if (m == NULL) {
        st->err = CR_CONNECTION_ERROR;
        snprintf(st->msg, sizeof(st->msg), "database unreachable");
        return -1;
    }
    stmt = mc_db_stmts_get(mc_db_stmts(db, role), m, sql, len, &st->err, st->msg, sizeof(st->msg));
    if (stmt == NULL) {
        return -1;
    }
    if (exec_run(stmt, args, nargs, st) != 0) {
        if (st->err >= CR_MIN_ERROR && !mc_db_conn_lost(st->err)) {
            mc_db_stmts_drop(mc_db_stmts(db, role), stmt); /* prepared afresh next time */
        }
        return -1;
    }
    st->affected = mysql_stmt_affected_rows(stmt);
    st->insert_id = mysql_stmt_insert_id(stmt);
    if (mysql_stmt_field_count(stmt) == 0) {
        return 0;
    }
    if (rows != NULL) {
        return exec_fetch(stmt, rows, st);
    }
    if (mysql_stmt_store_result(stmt) != 0) {
        mc_db_stmt_error(st, stmt);
        mysql_stmt_free_result(stmt);
        return -1;
    }
    mysql_stmt_free_result(stmt);
    return 0;
}

int mc_db_write(mc_db_t *db, const char *what, const char *sql, size_t len, const mc_db_args_t *args,
                mc_db_status_t *st)
{
    if (mc_db_exec(db, MC_DB_PRIMARY, 0, sql, len, args != NULL ? args->v : NULL, args != NULL ? args->n : 0, NULL,
                   st) != 0) {
        mc_error("db: %s failed: %s (%u)", what, st->msg, st->err);
        return -1;
    }
    return 0;
}

size_t mc_db_rows_count(const mc_db_rows_t *r)
{
    return r != NULL ? r->n : 0;
}

char **mc_db_rows_next(mc_db_rows_t *r)
{
    if (r == NULL || r->cur >= r->n || r->ncols == 0) {
        return NULL;
    }
    return &r->cell[r->cur++ * r->ncols];
}

const unsigned long *mc_db_rows_lengths(const mc_db_rows_t *r)
{
    return r->cur > 0 ? &r->len[(r->cur - 1) * r->ncols] : r->len;
}

void mc_db_rows_free(mc_db_rows_t *r)
{
    if (r == NULL) {
        return;
    }
    free(r->cell);
    free(r->len);
    mc_buf_free(&r->data);
    free(r);
}
