/*
 * The primary/replica router for MySQL (libmariadb, blocking API).
 *
 * Writes, transactions and reads that must see them go to the primary;
 * other reads go to the replicas in turn, skipping one that is down or lags
 * past max_lag_ms, and to the primary when none is usable.  A read for a
 * user who wrote through the process's routers within the read-your-writes
 * window goes to the primary too.  Connections are opened lazily, kept and
 * reused, and reopened after a lost connection.  One mc_db_t per thread: a
 * router and its connections are never shared (the read-your-writes table
 * is, see db_ryw.h).
 *
 * Every statement that carries data is a prepared statement (mc_db_exec in
 * db_exec.c), cached per connection (db_stmt.h).
 */
#ifndef MINICHAT_DB_H
#define MINICHAT_DB_H

#include <stddef.h>
#include <stdint.h>

#include <mysql.h>

#include "minichat/conf.h"
#include "minichat/db_arg.h"
#include "minichat/db_route.h"
#include "minichat/db_ryw.h"
#include "minichat/db_stmt.h"

/* TLS to the servers (mysql_ssl): off; on: encrypted, the certificate's
 * chain checked against ssl_ca when one is given (libmariadb), its name not;
 * verify: encrypted, the chain checked against ssl_ca and the name against
 * the host of mysql_primary / mysql_replicas. */
typedef enum { MC_DB_SSL_OFF, MC_DB_SSL_ON, MC_DB_SSL_VERIFY } mc_db_ssl_t;

typedef struct {
    const char *primary;    /* "host:port", "host" or "/unix/socket" */
    const char *replicas;   /* a list of those, or NULL/"" for none */
    const char *user;
    const char *password;
    const char *database;
    mc_db_ssl_t ssl;
    const char *ssl_ca;     /* PEM files, NULL or "" for none */
    const char *ssl_cert;
    const char *ssl_key;
    int64_t max_lag_ms;     /* a replica further behind is skipped; 0: lag not measured */
    int64_t lag_check_ms;   /* at most one lag measurement per replica per this */
    int64_t ryw_ms;         /* read-your-writes window (for the caller's mc_db_ryw_new) */
    int64_t lock_wait_s;    /* innodb_lock_wait_timeout of every connection; 0: the server's */
    mc_db_ryw_t *ryw;       /* the process's recent writers, or NULL: read-your-writes off */
    int lag_between;        /* the caller measures lag between reads (mc_db_lag_refresh); a read then
                               measures only a verdict MC_DB_LAG_STALE checks old */
} mc_db_config_t;

typedef struct mc_db_s mc_db_t;

typedef enum { MC_DB_PRIMARY, MC_DB_REPLICA } mc_db_role_t;

mc_db_t *mc_db_new(const mc_db_config_t *cfg);
void mc_db_free(mc_db_t *db);

/* Measures the lag of every reachable replica whose measurement is due
 * (at most one per replica per lag_check_ms): for a caller with
 * lag_between, after a request or while idle. */
void mc_db_lag_refresh(mc_db_t *db);

/* Returns a live connection for the role, or NULL when none can be had.  A
 * replica request for user (0: nobody in particular) is served by the
 * primary when the user wrote within the read-your-writes window, or when
 * no replica is usable. */
MYSQL *mc_db_conn_for(mc_db_t *db, mc_db_role_t role, uint64_t user);
#define mc_db_conn(db, role) mc_db_conn_for((db), (role), 0)

/* The statement cache of the connection the last mc_db_conn_for() of the
 * role handed out. */
mc_db_stmts_t *mc_db_stmts(mc_db_t *db, mc_db_role_t role);

/* Returns 1 when the last REPLICA request was served by a replica, 0 when
 * by the primary. */
int mc_db_served_by_replica(const mc_db_t *db);

/* Records that user wrote (after the COMMIT): the user's reads go to the
 * primary for the read-your-writes window. */
void mc_db_wrote(mc_db_t *db, uint64_t user);

/* Marks the connection last handed out for the role broken (after an error
 * such as CR_SERVER_GONE_ERROR) so that the next request reconnects; a
 * replica is also paused as down. */
void mc_db_reset(mc_db_t *db, mc_db_role_t role);

/* Returns 1 when a MySQL error code means the connection is gone. */
int mc_db_conn_lost(unsigned err);

/* The libmariadb error number of the last failed connect (0 after a
 * successful one), for telling a wrong password or certificate from a
 * server that is merely down (mc_db_error_is_config() in db_conf.h). */
unsigned int mc_db_connect_errno(const mc_db_t *db);

/* How the router last found its servers: UNKNOWN before the first
 * connect; UP connected; DOWN the last connect failed or the connection was
 * reset; LAGGING (replicas) too far behind to read from. */
typedef enum { MC_DB_UNKNOWN, MC_DB_UP, MC_DB_DOWN, MC_DB_LAGGING } mc_db_health_state_t;
typedef struct {
    mc_db_health_state_t primary;
    size_t replicas;
    mc_db_health_state_t replica[MC_DB_REPLICAS_MAX];
    int64_t checked_ms[MC_DB_REPLICAS_MAX]; /* its last lag measurement (mc_now_ms; 0: never) */
} mc_db_health_t;
/* A picture of the router's servers (on the router's own thread: copy it
 * out for others). */
void mc_db_health(const mc_db_t *db, mc_db_health_t *out);
const char *mc_db_health_name(mc_db_health_state_t s);

/* The replicas, for a caller that runs reads on its own non-blocking
 * connections (the relay-worker's main loop) and takes the router's
 * verdicts from mc_db_health(). */
size_t mc_db_replica_count(const mc_db_t *db);
/* "replica N", for the log. */
const char *mc_db_replica_name(const mc_db_t *db, int i);
/* Starts a non-blocking connect (MYSQL_OPT_NONBLOCK) to replica i with the
 * router's options, setting *out to the handle.  Returns what
 * mysql_real_connect_start returned (0: connected, else the MYSQL_WAIT_*
 * flags to wait for before mysql_real_connect_cont), or -1 after a log
 * line (*out NULL). */
int mc_db_replica_connect_start(mc_db_t *db, int i, MYSQL **out);

/* --- db_exec.c: prepared statements with typed parameters --- */

/* The rows of a result, every column as a NUL-terminated string (NULL for
 * SQL NULL), read one after another with mc_db_rows_next. */
typedef struct mc_db_rows_s mc_db_rows_t;

typedef struct {
    unsigned err;             /* of the last failed statement (0: none) */
    char msg[256];
    uint64_t affected;        /* rows of the last statement */
    uint64_t insert_id;
} mc_db_status_t;

/* Runs sql[0..len) with its ? parameters as a prepared statement on the
 * role's connection (for user, see mc_db_conn_for).  With rows non-NULL the
 * result is stored in a new *rows (mc_db_rows_free).  Returns 0, or -1 with
 * st->err set; a lost connection is NOT reset here (the caller decides, see
 * mc_db_conn_lost). */
int mc_db_exec(mc_db_t *db, mc_db_role_t role, uint64_t user, const char *sql, size_t len, const mc_db_arg_t *args,
               size_t nargs, mc_db_rows_t **rows, mc_db_status_t *st);

/* mc_db_exec on the primary without rows, for a writer's statement (the
 * text in sql, the values in args, either may be NULL/empty); a failure is
 * logged as "<what> failed".  Returns 0 (st->affected) or -1. */
int mc_db_write(mc_db_t *db, const char *what, const char *sql, size_t len, const mc_db_args_t *args,
                mc_db_status_t *st);

/* --- db_bulk.c: one statement for many rows --- */

/* Runs sql, whose ? placeholders are one row's ncols values, once for each
 * row of args (args->n / ncols rows, values row after row; a column's
 * values all of one type, none NULL) on the primary, in one round trip with
 * MariaDB's bulk execution; a failure is logged as "<what> failed", except
 * a server without bulk execution (MySQL): then nothing was sent, st->err
 * is CR_NOT_IMPLEMENTED and the caller writes the rows another way.
 * Returns 0 (st->affected: rows changed, all rows together) or -1. */
int mc_db_write_bulk(mc_db_t *db, const char *what, const char *sql, size_t len, const mc_db_args_t *args,
                     size_t ncols, mc_db_status_t *st);

/* Records stmt's last error (its code and message) in st. */
void mc_db_stmt_error(mc_db_status_t *st, MYSQL_STMT *stmt);

/* For a caller that runs a statement itself (non-blocking): binds args to
 * stmt through the caller's b and lens (nargs each; they must live until the
 * statement was executed).  Returns 0, or -1 with st set. */
int mc_db_stmt_bind(MYSQL_STMT *stmt, const mc_db_arg_t *args, size_t nargs, MYSQL_BIND *b, unsigned long *lens,
                    mc_db_status_t *st);
/* Turns a result the caller stored (mysql_stmt_store_result, with
 * STMT_ATTR_UPDATE_MAX_LENGTH set before it) into a new *out, as mc_db_exec
 * does, and frees the statement's result.  Returns 0, or -1 with st set. */
int mc_db_stmt_rows(MYSQL_STMT *stmt, mc_db_rows_t **out, mc_db_status_t *st);

size_t mc_db_rows_count(const mc_db_rows_t *r);
/* Returns the next row (columns as strings, NULL for SQL NULL) or NULL at the end. */
char **mc_db_rows_next(mc_db_rows_t *r);
/* Returns the byte lengths of the row mc_db_rows_next returned last. */
const unsigned long *mc_db_rows_lengths(const mc_db_rows_t *r);
void mc_db_rows_free(mc_db_rows_t *r);

#endif
