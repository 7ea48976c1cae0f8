/*
 * The primary/replica router over libmariadb's blocking API.
 *
 * An mc_db_t holds at most two connections, one per role, each opened lazily
 * on the first mc_db_conn() for its role.  Every connection is opened the same
 * way: connect, read and write timeouts so that a dead server costs seconds,
 * not minutes; MYSQL_OPT_RECONNECT off, because a silent reconnect in the
 * middle of a transaction would lose the transaction's first half without
 * telling anyone; utf8mb4 as the connection character set; and the session
 * time zone pinned to UTC so that FROM_UNIXTIME() and TIMESTAMP columns round
 * trip exactly, whatever the server's zone and its daylight saving rules.
 *
 * Errors are the caller's to notice: after a failed query it calls
 * mc_db_reset() for the role, the connection is closed, and the next
 * mc_db_conn() opens a new one.  A connection that sat idle longer than
 * MC_DB_IDLE_PING seconds is pinged before it is handed out, so that a server
 * restart or a wait_timeout is noticed here rather than by the first query.
 *
 * With mysql_ssl on or verify every connection is made over TLS
 * (MYSQL_OPT_SSL_ENFORCE: no fallback to plain text).  libmariadb checks the
 * server's certificate chain whenever a CA is given; verify
 * (MYSQL_OPT_SSL_VERIFY_SERVER_CERT) also checks its name against the host
 * the router connects to.  The cipher is logged with each connect.  The password
 * is never logged.
 *
 * A replica request is served by the primary when no replica is configured or
 * the replica cannot be reached; after a failed replica connect the replica
 * is not tried again for MC_DB_REPLICA_RETRY seconds, so that a dead replica
 * does not add a connect timeout to every read.  The router remembers which
 * connection it handed out for the replica role, so mc_db_reset(REPLICA)
 * after a fallback resets the primary connection that actually failed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <errmsg.h>
#include <mysql.h>

#include "minichat/db.h"
#include "minichat/db_conf.h"
#include "minichat/log.h"

#define MC_DB_CONNECT_TIMEOUT 3   /* seconds */
#define MC_DB_RW_TIMEOUT 30       /* seconds, per read or write on the socket */
#define MC_DB_IDLE_PING 30        /* seconds of idleness before a ping */
#define MC_DB_REPLICA_RETRY 5     /* seconds between replica connect attempts */

typedef struct {
    char *host;          /* host name or address, or NULL for a unix socket */
    char *socket;        /* unix socket path, or NULL */
    unsigned int port;
    MYSQL *conn;         /* NULL until connected and after a reset */
    time_t last_used;
    time_t retry_after;  /* no connect attempt before this time */
    const char *name;    /* "primary" or "replica", for the log */
} mc_db_server_t;

struct mc_db_s {
    mc_db_server_t servers[2];  /* indexed by mc_db_role_t */
    int has_replica;
    int replica_fell_back;      /* the last REPLICA request got the primary */
    char *user;
    char *password;
    char *database;
    mc_db_ssl_t ssl;
    char *ssl_ca;               /* NULL for none, as the three below */
    char *ssl_cert;
    char *ssl_key;
    unsigned int connect_errno; /* of the last failed connect, 0 after a good one */
};

static pthread_once_t mc_db_once = PTHREAD_ONCE_INIT;

static void mc_db_library_init(void);
static int mc_db_parse_addr(mc_db_server_t *s, const char *addr);
static MYSQL *mc_db_open(mc_db_t *db, mc_db_server_t *s);
static MYSQL *mc_db_server_conn(mc_db_t *db, mc_db_server_t *s);
static void mc_db_close(mc_db_server_t *s);
static char *mc_db_strdup(const char *s);
static int mc_db_opt_strdup(char **out, const char *s);
static int mc_db_set_tls(mc_db_t *db, MYSQL *m);

/* Initializes libmariadb once per process, before any thread opens a connection. */
static void mc_db_library_init(void)
{
    if (mysql_library_init(0, NULL, NULL) != 0) {
        mc_error("db: mysql_library_init() failed");
    }
}

/* Returns a copy of s ("" for NULL), or NULL when out of memory. */
static char *mc_db_strdup(const char *s)
{
    return strdup(s != NULL ? s : "");
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

/* Fills host/port or socket from "host:port", "host" or "/path/to/socket".
 * Returns 0 or -1 for a malformed address or out of memory. */
static int mc_db_parse_addr(mc_db_server_t *s, const char *addr)
{
    const char *colon;
    char *end;
    unsigned long port = 3306;
    size_t hlen;

    if (addr[0] == '/') {
        s->socket = strdup(addr);
        return s->socket != NULL ? 0 : -1;
    }

    colon = strrchr(addr, ':');
    hlen = colon != NULL ? (size_t)(colon - addr) : strlen(addr);
    if (colon != NULL) {
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || *end != '\0' || port == 0 || port > 65535) {
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
    db->servers[MC_DB_PRIMARY].name = "primary";
    db->servers[MC_DB_REPLICA].name = "replica";

    if (mc_db_parse_addr(&db->servers[MC_DB_PRIMARY], cfg->primary) != 0) {
        mc_error("db: invalid primary address \"%s\"", cfg->primary);
        goto err;
    }
    if (cfg->replica != NULL && cfg->replica[0] != '\0' && strcmp(cfg->replica, cfg->primary) != 0) {
        if (mc_db_parse_addr(&db->servers[MC_DB_REPLICA], cfg->replica) != 0) {
            mc_error("db: invalid replica address \"%s\"", cfg->replica);
            goto err;
        }
        db->has_replica = 1;
    }

    db->user = mc_db_strdup(cfg->user);
    db->password = mc_db_strdup(cfg->password);
    db->database = mc_db_strdup(cfg->database);
    if (db->user == NULL || db->password == NULL || db->database == NULL) {
        goto err;
    }
    db->ssl = cfg->ssl;
    if (mc_db_opt_strdup(&db->ssl_ca, cfg->ssl_ca) != 0 || mc_db_opt_strdup(&db->ssl_cert, cfg->ssl_cert) != 0
        || mc_db_opt_strdup(&db->ssl_key, cfg->ssl_key) != 0) {
        goto err;
    }
    return db;

err:
    mc_db_free(db);
    return NULL;
}

void mc_db_free(mc_db_t *db)
{
    int i;

    if (db == NULL) {
        return;
    }
    for (i = 0; i < 2; i++) {
        mc_db_close(&db->servers[i]);
        free(db->servers[i].host);
        free(db->servers[i].socket);
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

/* Closes the server's connection, if any. */
static void mc_db_close(mc_db_server_t *s)
{
    if (s->conn != NULL) {
        mysql_close(s->conn);
        s->conn = NULL;
    }
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

/* Returns a new connection to the server with the router's options, or NULL
 * after logging why. */
static MYSQL *mc_db_open(mc_db_t *db, mc_db_server_t *s)
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
        || mc_db_set_tls(db, m) != 0)
    {
        mc_error("db: mysql_options() failed for %s", s->name);
        mysql_close(m);
        return NULL;
    }

    if (mysql_real_connect(m, s->host, db->user, db->password, db->database, s->port, s->socket, 0) == NULL) {
        db->connect_errno = mysql_errno(m);
        mc_error("db: cannot connect to %s %s:%u as \"%s\" (mysql_ssl %s): %s (%u)", s->name,
                 s->host != NULL ? s->host : s->socket, s->port, db->user, mc_db_ssl_name(db->ssl), mysql_error(m),
                 mysql_errno(m));
        mysql_close(m);
        return NULL;
    }
    db->connect_errno = 0;

    mc_info("db: connected to %s %s:%u as \"%s\" (server %s, tls %s)", s->name,
            s->host != NULL ? s->host : s->socket, s->port, db->user, mysql_get_server_info(m),
            mysql_get_ssl_cipher(m) != NULL ? mysql_get_ssl_cipher(m) : "off");
    return m;
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
        if (now < s->retry_after) {
            return NULL;
        }
        s->conn = mc_db_open(db, s);
        if (s->conn == NULL) {
            return NULL;
        }
    }

    s->last_used = now;
    return s->conn;
}

MYSQL *mc_db_conn(mc_db_t *db, mc_db_role_t role)
{
    mc_db_server_t *replica = &db->servers[MC_DB_REPLICA];
    MYSQL *m;

    if (role == MC_DB_REPLICA && db->has_replica) {
        m = mc_db_server_conn(db, replica);
        if (m != NULL) {
            db->replica_fell_back = 0;
            return m;
        }
        if (replica->retry_after <= time(NULL)) {
            replica->retry_after = time(NULL) + MC_DB_REPLICA_RETRY;
            mc_warn("db: replica unreachable, reading from the primary for %d s", MC_DB_REPLICA_RETRY);
        }
    }

    if (role == MC_DB_REPLICA) {
        db->replica_fell_back = 1;
    }
    return mc_db_server_conn(db, &db->servers[MC_DB_PRIMARY]);
}

void mc_db_reset(mc_db_t *db, mc_db_role_t role)
{
    if (role == MC_DB_REPLICA && db->has_replica && !db->replica_fell_back) {
        mc_db_close(&db->servers[MC_DB_REPLICA]);
        return;
    }
    mc_db_close(&db->servers[MC_DB_PRIMARY]);
}

unsigned int mc_db_connect_errno(const mc_db_t *db)
{
    return db->connect_errno;
}
