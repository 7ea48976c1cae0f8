/*
 * The primary/replica router over libmariadb's blocking API (see db.h; the
 * decisions themselves are in db_route.c and db_ryw.c, without libmariadb).
 *
 * An mc_db_t holds one connection per server, the primary and each replica,
 * each opened lazily on its first use and then kept: the pool of a process
 * is (its routers, one per DB thread) x (1 + replicas) connections, each
 * with its own prepared-statement cache.  A router is owned by one thread
 * and runs one statement at a time, so the connections need no lock and a
 * thread never waits for a free one; a shared pool would only pay off with
 * more threads than connections, which blocking threads never want.
 *
 * Every connection is opened the same way, from mc_db_handle(), the one
 * place that sets connection options (also for the non-blocking replica
 * connections a caller owns itself, mc_db_replica_connect_start): connect, read and write timeouts so that a
 * dead server costs seconds, not minutes; MYSQL_OPT_RECONNECT off, because
 * a silent reconnect in the middle of a transaction would lose the
 * transaction's first half without telling anyone (and its prepared
 * statements); utf8mb4 as the connection character set; and the session
 * time zone pinned to UTC so that FROM_UNIXTIME() and TIMESTAMP columns
 * round trip exactly, whatever the server's zone.
 *
 * Errors are the caller's to notice: after a failed statement it calls
 * mc_db_reset() for the role; the connection (and its statements) is
 * closed, and the next request opens a new one.  A connection idle longer
 * than MC_DB_IDLE_PING seconds is pinged before it is handed out, so that a
 * server restart or a wait_timeout is noticed here rather than by a query.
 *
 * With mysql_ssl on or verify every connection is made over TLS
 * (MYSQL_OPT_SSL_ENFORCE: no fallback to plain text).  libmariadb checks the
 * server's certificate chain whenever a CA is given; verify
 * (MYSQL_OPT_SSL_VERIFY_SERVER_CERT) also checks its name against the host
 * the router connects to.  The cipher is logged with each connect.  The
 * password is never logged.
 *
 * A replica request: when the user wrote within the read-your-writes window
 * it goes to the primary.  Otherwise the replicas whose lag measurement is
 * due are measured (db_route.c explains the GTID method; the statements are
 * fixed texts without input; with lag_between the caller measures them with
 * mc_db_lag_refresh between requests, and a request measures only a verdict
 * gone stale), then the next usable replica in turn is
 * connected; one that cannot be reached is paused for MC_DB_REPLICA_RETRY_MS
 * and the next one tried; with none left the primary answers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <errmsg.h>
#include <mysqld_error.h>
#include <pthread.h>

#include "minichat/clock.h"
#include "minichat/conf.h"
#include "minichat/db.h"
#include "minichat/db_conf.h"
#include "minichat/db_route.h"
#include "minichat/log.h"

#define MC_DB_CONNECT_TIMEOUT 3       /* seconds */
#define MC_DB_RW_TIMEOUT 30           /* seconds, per read or write on the socket */
#define MC_DB_IDLE_PING 30            /* seconds of idleness before a ping */
#define MC_DB_REPLICA_RETRY_MS 5000   /* between connect attempts to a down replica */
/* the stack of a non-blocking connection's calls (libmariadb runs them on a
 * stack of their own; its default is too small for the TLS handshake and
 * the authentication plugins) */
#define MC_DB_NONBLOCK_STACK (256 * 1024)

typedef struct {
    char *host;          /* host name or address, or NULL for a unix socket */
    char *socket;        /* unix socket path, or NULL */
    unsigned int port;
    char name[24];       /* "primary" or "replica N", for the log */
    MYSQL *conn;         /* NULL until connected and after a reset */
    mc_db_stmts_t stmts; /* the connection's prepared statements */
    time_t last_used;
    int no_status;       /* SHOW SLAVE STATUS is not allowed: running assumed */
    mc_db_health_state_t health; /* of the last connect, or DOWN after a reset (mc_db_health) */
} mc_db_server_t;

struct mc_db_s {
    mc_db_server_t primary;
    mc_db_server_t replica[MC_DB_REPLICAS_MAX];
    mc_db_route_t route;
    mc_db_server_t *handed[2];  /* the server that served each role last */
    mc_db_ryw_t *ryw;
    char *user;
    char *password;
    char *database;
    mc_db_ssl_t ssl;
    char *ssl_ca;               /* NULL for none, as the three below */
    char *ssl_cert;
    char *ssl_key;
    char lock_wait[64];         /* the init command that sets innodb_lock_wait_timeout, "" for none */
    unsigned int connect_errno; /* of the last failed connect, 0 after a good one */
};

static pthread_once_t mc_db_once = PTHREAD_ONCE_INIT;

static void mc_db_library_init(void);
static int mc_db_parse_addr(mc_db_server_t *s, const char *addr, size_t len);
static MYSQL *mc_db_open(mc_db_t *db, mc_db_server_t *s);
static MYSQL *mc_db_server_conn(mc_db_t *db, mc_db_server_t *s);
static void mc_db_close(mc_db_server_t *s);
static MYSQL *mc_db_replica_conn(mc_db_t *db, int64_t now);
static void mc_db_measure(mc_db_t *db, int i, int64_t now);
static int mc_db_fetch_pos(MYSQL *m, const char *sql, mc_gtid_pos_t *pos);
static int mc_db_slave_running(mc_db_server_t *s);
static int mc_db_opt_strdup(char **out, const char *s);
static int mc_db_set_tls(mc_db_t *db, MYSQL *m);

/* Initializes libmariadb once per process, before any thread opens a connection. */
static void mc_db_library_init(void)
{
    if (mysql_library_init(0, NULL, NULL) != 0) {
        mc_error("db: mysql_library_init() failed");
    }
}

/* Fills host/port or socket from "host:port", "host" or "/path/to/socket"
 * (addr[0..len)).  Returns 0 or -1 for a malformed address or out of memory. */
static int mc_db_parse_addr(mc_db_server_t *s, const char *addr, size_t len)
{
    const char *colon = NULL;
    unsigned long port = 3306;
    size_t i, hlen;

    if (len > 0 && addr[0] == '/') {
        s->socket = strndup(addr, len);
        return s->socket != NULL ? 0 : -1;
    }
    for (i = 0; i < len; i++) {
        if (addr[i] == ':') {
            colon = addr + i;
        }
    }
    hlen = colon != NULL ? (size_t)(colon - addr) : len;
    if (colon != NULL) {
        port = 0;
        for (i = hlen + 1; i < len; i++) {
            if (addr[i] < '0' || addr[i] > '9' || port > 65535) {
                return -1;
            }
            port = port * 10 + (unsigned long)(addr[i] - '0');
        }
        if (hlen + 1 == len || port == 0 || port > 65535) {
            return -1;
        }
    }
    if (hlen == 0) {
        return -1;
    }
    s->host = strndup(addr, hlen);
    if (s->host == NULL) {
        return -1;
    }
    s->port = (unsigned int)port;
    return 0;
}

mc_db_t *mc_db_new(const mc_db_config_t *cfg)
{
    const char *list, *item;
    size_t len, n = 0;
    mc_db_t *db;

    pthread_once(&mc_db_once, mc_db_library_init);

    if (cfg->primary == NULL || cfg->primary[0] == '\0') {
        mc_error("db: no primary address");
        return NULL;
    }
    db = calloc(1, sizeof(*db));
    if (db == NULL) {
        return NULL;
    }
    snprintf(db->primary.name, sizeof(db->primary.name), "primary");
    if (mc_db_parse_addr(&db->primary, cfg->primary, strlen(cfg->primary)) != 0) {
        mc_error("db: invalid primary address \"%s\"", cfg->primary);
        goto err;
    }
    list = cfg->replicas;
    while ((item = mc_conf_list_next(&list, &len)) != NULL) {
        if (len == strlen(cfg->primary) && memcmp(item, cfg->primary, len) == 0) {
            continue; /* the primary is no replica of itself */
        }
        if (n == MC_DB_REPLICAS_MAX) {
            mc_error("db: more than %d replicas", MC_DB_REPLICAS_MAX);
            goto err;
        }
        snprintf(db->replica[n].name, sizeof(db->replica[n].name), "replica %zu", n + 1);
        if (mc_db_parse_addr(&db->replica[n], item, len) != 0) {
            mc_error("db: invalid replica address \"%.*s\"", (int)len, item);
            goto err;
        }
        n++;
    }
    mc_db_route_init(&db->route, n, MC_DB_REPLICA_RETRY_MS, cfg->max_lag_ms, cfg->lag_check_ms);
    db->route.between = cfg->lag_between;
    db->ryw = cfg->ryw;

    db->user = strdup(cfg->user != NULL ? cfg->user : "");
    db->password = strdup(cfg->password != NULL ? cfg->password : "");
    db->database = strdup(cfg->database != NULL ? cfg->database : "");
    if (db->user == NULL || db->password == NULL || db->database == NULL) {
        goto err;
    }
    db->ssl = cfg->ssl;
    if (cfg->lock_wait_s > 0) {
        snprintf(db->lock_wait, sizeof(db->lock_wait), "SET SESSION innodb_lock_wait_timeout = %lld",
                 (long long)cfg->lock_wait_s);
    }
    if (mc_db_opt_strdup(&db->ssl_ca, cfg->ssl_ca) != 0 || mc_db_opt_strdup(&db->ssl_cert, cfg->ssl_cert) != 0
        || mc_db_opt_strdup(&db->ssl_key, cfg->ssl_key) != 0) {
        goto err;
    }
    return db;

err:
    mc_db_free(db);
    return NULL;
}

/* Closes a server's connection and frees its address. */
static void mc_db_server_free(mc_db_server_t *s)
{
    mc_db_close(s);
    free(s->host);
    free(s->socket);
}

void mc_db_free(mc_db_t *db)
{
    size_t i;

    if (db == NULL) {
        return;
    }
    mc_db_server_free(&db->primary);
    for (i = 0; i < MC_DB_REPLICAS_MAX; i++) {
        mc_db_server_free(&db->replica[i]);
    }
    free(db->user);
    if (db->password != NULL) {
        explicit_bzero(db->password, strlen(db->password));
    }
    free(db->password);
    free(db->database);
    free(db->ssl_ca);
    free(db->ssl_cert);
    free(db->ssl_key);
    free(db);
}

/* Sets *out to a copy of s, or to NULL when s is NULL or "".  Returns 0,
 * or -1 when out of memory. */
static int mc_db_opt_strdup(char **out, const char *s)
{
    *out = NULL;
    if (s == NULL || s[0] == '\0') {
        return 0;
    }
    *out = strdup(s);
    return *out != NULL ? 0 : -1;
}

/* Sets the TLS options of mysql_ssl on a new handle.  Returns 0 or -1. */
static int mc_db_set_tls(mc_db_t *db, MYSQL *m)
{
    my_bool on = 1, verify = db->ssl == MC_DB_SSL_VERIFY;

    if (db->ssl == MC_DB_SSL_OFF) {
        return 0;
    }
    if (mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &on) != 0
        || mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify) != 0
        || (db->ssl_ca != NULL && mysql_options(m, MYSQL_OPT_SSL_CA, db->ssl_ca) != 0)
        || (db->ssl_cert != NULL && mysql_options(m, MYSQL_OPT_SSL_CERT, db->ssl_cert) != 0)
        || (db->ssl_key != NULL && mysql_options(m, MYSQL_OPT_SSL_KEY, db->ssl_key) != 0)) {
        return -1;
    }
    return 0;
}

unsigned int mc_db_connect_errno(const mc_db_t *db)
{
    return db->connect_errno;
}

/* Closes the server's statements and connection, if any. */
static void mc_db_close(mc_db_server_t *s)
{
    mc_db_stmts_clear(&s->stmts);
    if (s->conn != NULL) {
        mysql_close(s->conn);
        s->conn = NULL;
    }
}

/* Returns a new handle for server s with the router's options, not yet
 * connected, or NULL after logging why.  The one place that sets connection
 * options (for mc_db_open and mc_db_replica_connect_start). */
static MYSQL *mc_db_handle(mc_db_t *db, mc_db_server_t *s)
{
    MYSQL *m;
    unsigned int connect_timeout = MC_DB_CONNECT_TIMEOUT;
    unsigned int rw_timeout = MC_DB_RW_TIMEOUT;
    my_bool reconnect = 0;

    m = mysql_init(NULL);
    if (m == NULL) {
        mc_error("db: mysql_init() failed: out of memory");
        return NULL;
    }

    if (mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout) != 0
        || mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rw_timeout) != 0
        || mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &rw_timeout) != 0
        || mysql_options(m, MYSQL_OPT_RECONNECT, &reconnect) != 0
        || mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4") != 0
        || mysql_options(m, MYSQL_INIT_COMMAND, "SET time_zone = '+00:00'") != 0
        || (db->lock_wait[0] != '\0' && mysql_options(m, MYSQL_INIT_COMMAND, db->lock_wait) != 0)
        || mc_db_set_tls(db, m) != 0)
    {
        mc_error("db: mysql_options() failed for %s", s->name);
        mysql_close(m);
        return NULL;
    }
    return m;
}

/* Returns a new connection to the server with the router's options, or NULL
 * after logging why. */
static MYSQL *mc_db_open(mc_db_t *db, mc_db_server_t *s)
{
    MYSQL *m;

    m = mc_db_handle(db, s);
    if (m == NULL) {
        return NULL;
    }
    if (mysql_real_connect(m, s->host, db->user, db->password, db->database, s->port, s->socket, 0) == NULL) {
        db->connect_errno = mysql_errno(m);
        s->health = MC_DB_DOWN;
        mc_error("db: cannot connect to %s %s:%u as \"%s\" (mysql_ssl %s): %s (%u)", s->name,
                 s->host != NULL ? s->host : s->socket, s->port, db->user, mc_db_ssl_name(db->ssl), mysql_error(m),
                 mysql_errno(m));
        mysql_close(m);
        return NULL;
    }
    db->connect_errno = 0;
    s->health = MC_DB_UP;

    mc_info("db: connected to %s %s:%u as \"%s\" (server %s, tls %s)", s->name,
            s->host != NULL ? s->host : s->socket, s->port, db->user, mysql_get_server_info(m),
            mysql_get_ssl_cipher(m) != NULL ? mysql_get_ssl_cipher(m) : "off");
    return m;
}

size_t mc_db_replica_count(const mc_db_t *db)
{
    return db->route.n;
}

const char *mc_db_replica_name(const mc_db_t *db, int i)
{
    return db->replica[i].name;
}

int mc_db_replica_connect_start(mc_db_t *db, int i, MYSQL **out)
{
    mc_db_server_t *s = &db->replica[i];
    size_t stack = MC_DB_NONBLOCK_STACK;
    MYSQL *m, *ret = NULL;
    int status;

    *out = NULL;
    m = mc_db_handle(db, s);
    if (m == NULL) {
        return -1;
    }
    if (mysql_options(m, MYSQL_OPT_NONBLOCK, &stack) != 0) {
        mc_error("db: MYSQL_OPT_NONBLOCK refused for %s", s->name);
        mysql_close(m);
        return -1;
    }
    status = mysql_real_connect_start(&ret, m, s->host, db->user, db->password, db->database, s->port, s->socket, 0);
    if (status == 0 && ret == NULL) {
        mc_error("db: cannot connect to %s (non-blocking): %s (%u)", s->name, mysql_error(m), mysql_errno(m));
        mysql_close(m);
        return -1;
    }
    *out = m;
    return status;
}

/* Returns the server's live connection, connecting or pinging as needed, or
 * NULL when the server cannot be reached. */
static MYSQL *mc_db_server_conn(mc_db_t *db, mc_db_server_t *s)
{
    time_t now = time(NULL);

    if (s->conn != NULL && now - s->last_used >= MC_DB_IDLE_PING) {
        if (mysql_ping(s->conn) != 0) {
            mc_warn("db: %s connection lost while idle: %s", s->name, mysql_error(s->conn));
            mc_db_close(s);
        }
    }
    if (s->conn == NULL) {
        s->conn = mc_db_open(db, s);
        if (s->conn == NULL) {
            return NULL;
        }
    }
    s->last_used = now;
    return s->conn;
}

/* Reads one GTID position with a fixed statement.  Returns 0 or -1. */
static int mc_db_fetch_pos(MYSQL *m, const char *sql, mc_gtid_pos_t *pos)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    int rc = -1;

    if (mysql_query(m, sql) != 0 || (res = mysql_store_result(m)) == NULL) {
        return -1;
    }
    row = mysql_fetch_row(res);
    if (row != NULL && mysql_num_fields(res) == 1) {
        rc = mc_gtid_parse(row[0] != NULL ? row[0] : "", row[0] != NULL ? strlen(row[0]) : 0, pos);
    }
    mysql_free_result(res);
    return rc;
}

/* Returns 1 when both replication threads of the server run, 0 when either
 * stopped (or it replicates from nobody), -1 when it cannot tell. */
static int mc_db_slave_running(mc_db_server_t *s)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    MYSQL_FIELD *f;
    unsigned i, n;
    int io = 0, sql = 0;

    if (s->no_status) {
        return 1;
    }
    if (mysql_query(s->conn, "SHOW SLAVE STATUS") != 0) {
        if (mysql_errno(s->conn) == ER_SPECIFIC_ACCESS_DENIED_ERROR || mysql_errno(s->conn) == ER_ACCESS_DENIED_ERROR) {
            mc_warn("db: %s: SHOW SLAVE STATUS is not allowed (%s): a stopped replication is seen only as lag;"
                    " grant SLAVE MONITOR (REPLICATION CLIENT) to the user", s->name, mysql_error(s->conn));
            s->no_status = 1;
            return 1;
        }
        return -1;
    }
    res = mysql_store_result(s->conn);
    if (res == NULL) {
        return -1;
    }
    row = mysql_fetch_row(res);
    n = mysql_num_fields(res);
    f = mysql_fetch_fields(res);
    for (i = 0; row != NULL && i < n; i++) {
        if (strcmp(f[i].name, "Slave_IO_Running") == 0) {
            io = row[i] != NULL && strcmp(row[i], "Yes") == 0;
        } else if (strcmp(f[i].name, "Slave_SQL_Running") == 0) {
            sql = row[i] != NULL && strcmp(row[i], "Yes") == 0;
        }
    }
    mysql_free_result(res);
    return io && sql;
}

/* Measures replica i's lag: the primary's position, then the replica's. */
static void mc_db_measure(mc_db_t *db, int i, int64_t now)
{
    mc_db_server_t *s = &db->replica[i];
    mc_gtid_pos_t prim, rep;
    int was = db->route.r[i].lagging, running;

    if (mc_db_server_conn(db, &db->primary) == NULL
        || mc_db_fetch_pos(db->primary.conn, "SELECT @@gtid_binlog_pos", &prim) != 0)
    {
        /* no verdict without the primary; reads will find out about it */
        db->route.r[i].checked_ms = now;
        return;
    }
    if (mc_db_server_conn(db, s) == NULL) {
        mc_db_route_down(&db->route, i, now);
        mc_warn("db: %s unreachable, not read from for %d ms", s->name, MC_DB_REPLICA_RETRY_MS);
        return;
    }
    running = mc_db_slave_running(s);
    if (running < 0 || mc_db_fetch_pos(s->conn, "SELECT @@gtid_slave_pos", &rep) != 0) {
        mc_warn("db: %s: cannot read its replication position: %s", s->name, mysql_error(s->conn));
        if (mc_db_conn_lost(mysql_errno(s->conn))) {
            mc_db_close(s);
        }
        mc_db_route_lag_unknown(&db->route, i, now);
    } else if (mc_db_route_lag_measure(&db->route, i, now, &prim, &rep, running) && !was) {
        mc_warn("db: %s %s, reads skip it until it catches up", s->name,
                running ? "lags behind the primary" : "does not replicate (stopped)");
    }
    if (was && !db->route.r[i].lagging) {
        mc_info("db: %s caught up, reading from it again", s->name);
    }
}

/* Returns a usable replica's connection, or NULL when none is (the
 * primary's turn).  Sets handed[REPLICA]. */
static MYSQL *mc_db_replica_conn(mc_db_t *db, int64_t now)
{
    MYSQL *m;
    size_t i, tries;
    int k;

    for (i = 0; i < db->route.n; i++) {
        if (now >= db->route.r[i].down_until_ms && mc_db_route_lag_due_read(&db->route, (int)i, now)) {
            mc_db_measure(db, (int)i, now);
        }
    }
    for (tries = 0; tries < db->route.n; tries++) {
        k = mc_db_route_pick(&db->route, now);
        if (k < 0) {
            return NULL;
        }
        m = mc_db_server_conn(db, &db->replica[k]);
        if (m != NULL) {
            db->handed[MC_DB_REPLICA] = &db->replica[k];
            return m;
        }
        mc_db_route_down(&db->route, k, now);
        mc_warn("db: %s unreachable, not read from for %d ms", db->replica[k].name, MC_DB_REPLICA_RETRY_MS);
    }
    return NULL;
}

void mc_db_lag_refresh(mc_db_t *db)
{
    int64_t now = mc_now_ms();
    size_t i;

    for (i = 0; i < db->route.n; i++) {
        if (now >= db->route.r[i].down_until_ms && mc_db_route_lag_due(&db->route, (int)i, now)) {
            mc_db_measure(db, (int)i, now);
        }
    }
}

MYSQL *mc_db_conn_for(mc_db_t *db, mc_db_role_t role, uint64_t user)
{
    int64_t now;
    MYSQL *m;

    if (role == MC_DB_REPLICA && db->route.n > 0) {
        now = mc_now_ms();
        if (!mc_db_ryw_recent(db->ryw, user, now) && (m = mc_db_replica_conn(db, now)) != NULL) {
            return m;
        }
    }
    db->handed[role] = &db->primary;
    return mc_db_server_conn(db, &db->primary);
}

mc_db_stmts_t *mc_db_stmts(mc_db_t *db, mc_db_role_t role)
{
    return db->handed[role] != NULL ? &db->handed[role]->stmts : &db->primary.stmts;
}

int mc_db_served_by_replica(const mc_db_t *db)
{
    return db->handed[MC_DB_REPLICA] != NULL && db->handed[MC_DB_REPLICA] != &db->primary;
}

void mc_db_wrote(mc_db_t *db, uint64_t user)
{
    mc_db_ryw_note(db->ryw, user, mc_now_ms());
}

void mc_db_reset(mc_db_t *db, mc_db_role_t role)
{
    mc_db_server_t *s = db->handed[role] != NULL ? db->handed[role] : &db->primary;

    mc_db_close(s);
    s->health = MC_DB_DOWN;
    if (s != &db->primary) {
        mc_db_route_down(&db->route, (int)(s - db->replica), mc_now_ms());
    }
}

void mc_db_health(const mc_db_t *db, mc_db_health_t *out)
{
    int64_t now = mc_now_ms();
    size_t i;

    memset(out, 0, sizeof(*out));
    out->primary = db->primary.health;
    out->replicas = db->route.n;
    for (i = 0; i < db->route.n; i++) {
        out->checked_ms[i] = db->route.r[i].checked_ms;
        out->replica[i] = db->route.r[i].down_until_ms > now ? MC_DB_DOWN
                          : db->route.r[i].lagging          ? MC_DB_LAGGING
                                                            : db->replica[i].health;
    }
}

const char *mc_db_health_name(mc_db_health_state_t s)
{
    switch (s) {
    case MC_DB_UP:
        return "up";
    case MC_DB_DOWN:
        return "down";
    case MC_DB_LAGGING:
        return "lagging";
    default:
        return "unknown";
    }
}

int mc_db_conn_lost(unsigned err)
{
    return err == CR_SERVER_GONE_ERROR || err == CR_SERVER_LOST || err == CR_CONNECTION_ERROR
           || err == CR_CONN_HOST_ERROR || err == CR_COMMANDS_OUT_OF_SYNC || err == CR_SERVER_LOST_EXTENDED;
}
