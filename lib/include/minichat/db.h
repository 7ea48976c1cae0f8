/*
 * The primary/replica router for MySQL (libmariadb, blocking API): writes and
 * reads that must see them go to the primary, other reads to a replica, and
 * to the primary when no replica answers.  Connections are opened lazily and
 * reopened after a lost connection.  One mc_db_t per thread.
 */
#ifndef MINICHAT_DB_H
#define MINICHAT_DB_H

#include <mysql.h>

/* TLS to the servers (mysql_ssl): off; on: encrypted, the certificate's
 * chain checked against ssl_ca when one is given (libmariadb), its name not;
 * verify: encrypted, the chain checked against ssl_ca and the name against
 * the host of mysql_primary / mysql_replica. */
typedef enum { MC_DB_SSL_OFF, MC_DB_SSL_ON, MC_DB_SSL_VERIFY } mc_db_ssl_t;

typedef struct {
    const char *primary;  /* "host:port" */
    const char *replica;  /* "host:port" or NULL/"" for none */
    const char *user;
    const char *password;
    const char *database;
    mc_db_ssl_t ssl;
    const char *ssl_ca;   /* PEM files, NULL or "" for none */
    const char *ssl_cert;
    const char *ssl_key;
} mc_db_config_t;

typedef struct mc_db_s mc_db_t;

typedef enum { MC_DB_PRIMARY, MC_DB_REPLICA } mc_db_role_t;

mc_db_t *mc_db_new(const mc_db_config_t *cfg);
void mc_db_free(mc_db_t *db);

/* Returns a live connection for the role (a replica request falls back to the
 * primary when the replica cannot be reached), or NULL when none can be had. */
MYSQL *mc_db_conn(mc_db_t *db, mc_db_role_t role);

/* Marks the role's connection broken after an error such as CR_SERVER_GONE_ERROR
 * so that the next mc_db_conn() reconnects. */
void mc_db_reset(mc_db_t *db, mc_db_role_t role);

/* The libmariadb error number of the last failed connect (0 after a
 * successful one), for telling a wrong password or certificate from a
 * server that is merely down (mc_db_error_is_config() in db_conf.h). */
unsigned int mc_db_connect_errno(const mc_db_t *db);

#endif
