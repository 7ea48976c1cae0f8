/*
 * The mysql_* keys of the services' config files, read in one place for
 * relay-worker and roomlist-consumer:
 *
 *   mysql_primary                  host:port (or /socket)
 *   mysql_replicas                 a list of those, read in turn; mysql_replica:
 *                                  the older spelling for one (not both)
 *   mysql_replica_max_lag_ms       a replica further behind is skipped (2000; 0: not measured)
 *   mysql_replica_check_ms         at most one lag measurement per replica per this (250)
 *   mysql_read_your_writes_ms      a user's reads go to the primary this long after its write (2000)
 *   mysql_user, mysql_database     (root, minichat)
 *   mysql_password                 the password itself (dev; default "")
 *   mysql_password_file            a file holding the password (trailing
 *                                  newline stripped); not with mysql_password
 *   mysql_ssl                      off | on | verify                 (off):
 *                                  on encrypts (and checks the chain when
 *                                  mysql_ssl_ca is set), verify also checks
 *                                  the server's name
 *   mysql_ssl_ca                   CA certificate(s), PEM; needed by verify
 *   mysql_ssl_cert, mysql_ssl_key  a client certificate and its key, PEM
 */
#ifndef MINICHAT_DB_CONF_H
#define MINICHAT_DB_CONF_H

#include <stddef.h>

#include "minichat/conf.h"
#include "minichat/db.h"

/* The keys above, for a service's list of known keys. */
#define MC_DB_CONF_KEYS                                                                                            \
    "mysql_primary", "mysql_replica", "mysql_replicas", "mysql_user", "mysql_password", "mysql_password_file",    \
        "mysql_database", "mysql_ssl", "mysql_ssl_ca", "mysql_ssl_cert", "mysql_ssl_key", "mysql_replica_max_lag_ms", \
        "mysql_replica_check_ms", "mysql_read_your_writes_ms", "mysql_lock_wait_s"

typedef struct {
    mc_db_config_t db;   /* strings point into the mc_conf_t and into password */
    char *password;      /* read from mysql_password_file, or NULL */
} mc_db_conf_t;

/* Fills dc from the config (mysql_primary stays NULL when absent: the caller
 * decides its default).  Files named by the keys must be readable now.
 * Returns 0, or -1 after recording every error in c (mc_conf_error; the
 * messages never hold the password); dc needs mc_db_conf_free() either way. */
int mc_db_conf_read(mc_conf_t *c, mc_db_conf_t *dc);
/* Wipes and frees the password read from a file. */
void mc_db_conf_free(mc_db_conf_t *dc);
/* Returns "off", "on" or "verify". */
const char *mc_db_ssl_name(mc_db_ssl_t ssl);
/* Returns 1 when a connect error means the settings are wrong (access
 * denied, unknown database, TLS refused or the certificate not trusted),
 * 0 when the server may just be down or busy. */
int mc_db_error_is_config(unsigned int err);

#endif
