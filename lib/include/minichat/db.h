/*
 * The primary/replica router for MySQL (libmariadb, blocking API): writes and
 * reads that must see them go to the primary, other reads to a replica, and
 * to the primary when no replica answers.  Connections are opened lazily and
 * reopened after a lost connection.  One mc_db_t per thread.
 */
#ifndef MINICHAT_DB_H
#define MINICHAT_DB_H

#include <mysql.h>

typedef struct {
    const char *primary;  /* "host:port" */
    const char *replica;  /* "host:port" or NULL/"" for none */
    const char *user;
    const char *password;
    const char *database;
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

#endif
