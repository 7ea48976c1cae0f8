/*
 * The mysql_* keys of the services' config files (see minichat/db_conf.h).
 * Everything that can be checked without a server is checked here, at
 * start-up: the TLS mode, that verify has a CA, that a certificate comes
 * with its key, that every named file can be read, that the password comes
 * from one place only.  Every error is recorded in the mc_conf_t with the
 * line of the key it is about (mc_conf_error), so one run reports them all.
 */
#include <stdio.h>
#include <string.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "minichat/db_conf.h"
#include "minichat/secret.h"

static const char *const mc_db_ssl_names[] = {"off", "on", "verify"};

const char *mc_db_ssl_name(mc_db_ssl_t ssl)
{
    return (unsigned)ssl < 3 ? mc_db_ssl_names[ssl] : "?";
}

/* Returns the value of key, or NULL when absent or empty. */
static const char *mc_db_conf_path(const mc_conf_t *c, const char *key)
{
    const char *v = mc_conf_get(c, key, NULL);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

int mc_db_conf_read(mc_conf_t *c, mc_db_conf_t *dc)
{
    const char *mode = mc_conf_get(c, "mysql_ssl", "off");
    const char *pw_file = mc_db_conf_path(c, "mysql_password_file");
    const char *one = mc_conf_get(c, "mysql_replica", "");
    const char *many = mc_conf_get(c, "mysql_replicas", "");
    size_t errors = mc_conf_nerrors(c);
    long long lag, check, ryw, lockw;
    char why[300];
    int i, bad;

    memset(dc, 0, sizeof(*dc));
    dc->db.primary = mc_conf_get(c, "mysql_primary", NULL);
    if (one[0] != '\0' && many[0] != '\0') {
        mc_conf_error(c, "mysql_replica", "mysql_replica and mysql_replicas are both set; keep mysql_replicas");
    }
    dc->db.replicas = many[0] != '\0' ? many : one;
    dc->db.ryw = NULL;
    /* both are read (and each error reported) before they are compared */
    bad = mc_conf_int(c, "mysql_replica_max_lag_ms", 2000, 0, 3600000, &lag) != 0;
    bad |= mc_conf_int(c, "mysql_replica_check_ms", 250, 10, 60000, &check) != 0;
    if (!bad && lag > 0 && check * 60 < lag) {
        /* the lag samples cover MC_DB_LAG_SAMPLES checks */
        mc_conf_error(c, "mysql_replica_check_ms",
                      "mysql_replica_check_ms must be at least mysql_replica_max_lag_ms / 60");
    }
    mc_conf_int(c, "mysql_read_your_writes_ms", 2000, 0, 3600000, &ryw);
    mc_conf_int(c, "mysql_lock_wait_s", 0, 0, 3600, &lockw);
    dc->db.max_lag_ms = lag;
    dc->db.lag_check_ms = check;
    dc->db.ryw_ms = ryw;
    dc->db.lock_wait_s = lockw;
    dc->db.user = mc_conf_get(c, "mysql_user", "root");
    dc->db.database = mc_conf_get(c, "mysql_database", "minichat");
    dc->db.password = mc_conf_get(c, "mysql_password", "");
    dc->db.ssl_ca = mc_db_conf_path(c, "mysql_ssl_ca");
    dc->db.ssl_cert = mc_db_conf_path(c, "mysql_ssl_cert");
    dc->db.ssl_key = mc_db_conf_path(c, "mysql_ssl_key");

    for (i = 0; i < 3 && strcmp(mode, mc_db_ssl_names[i]) != 0; i++) {
    }
    if (i == 3) {
        mc_conf_error(c, "mysql_ssl", "mysql_ssl \"%s\" is not off, on or verify", mode);
        i = 0;
    }
    dc->db.ssl = (mc_db_ssl_t)i;

    if (dc->db.ssl == MC_DB_SSL_OFF && (dc->db.ssl_ca || dc->db.ssl_cert || dc->db.ssl_key)) {
        mc_conf_error(c, dc->db.ssl_ca ? "mysql_ssl_ca" : dc->db.ssl_cert ? "mysql_ssl_cert" : "mysql_ssl_key",
                      "mysql_ssl_ca, mysql_ssl_cert and mysql_ssl_key need mysql_ssl on or verify");
    }
    if (dc->db.ssl == MC_DB_SSL_VERIFY && dc->db.ssl_ca == NULL) {
        mc_conf_error(c, "mysql_ssl",
                      "mysql_ssl verify needs mysql_ssl_ca (the CA that signed the servers' certificates)");
    }
    if ((dc->db.ssl_cert == NULL) != (dc->db.ssl_key == NULL)) {
        mc_conf_error(c, dc->db.ssl_cert ? "mysql_ssl_cert" : "mysql_ssl_key",
                      "mysql_ssl_cert and mysql_ssl_key go together: set both or neither");
    }
    mc_conf_file(c, "mysql_ssl_ca");
    mc_conf_file(c, "mysql_ssl_cert");
    mc_conf_file(c, "mysql_ssl_key");

    if (pw_file != NULL) {
        if (dc->db.password[0] != '\0') {
            mc_conf_error(c, "mysql_password_file", "set mysql_password or mysql_password_file, not both");
        } else {
            dc->password = mc_secret_read(pw_file, why, sizeof(why));
            if (dc->password == NULL) {
                mc_conf_error(c, "mysql_password_file", "mysql_password_file: %s", why);
            } else {
                dc->db.password = dc->password;
            }
        }
    }
    return mc_conf_nerrors(c) > errors ? -1 : 0;
}

void mc_db_conf_free(mc_db_conf_t *dc)
{
    mc_secret_free(dc->password);
    dc->password = NULL;
    dc->db.password = NULL;
}

int mc_db_error_is_config(unsigned int err)
{
    switch (err) {
    case ER_DBACCESS_DENIED_ERROR:   /* 1044: no rights on the database */
    case ER_ACCESS_DENIED_ERROR:     /* 1045: wrong user or password, or a REQUIRE SSL user without TLS */
    case ER_BAD_DB_ERROR:            /* 1049: unknown database */
    case CR_SSL_CONNECTION_ERROR:    /* 2026: TLS refused, or the certificate or its name not trusted */
    case CR_AUTH_PLUGIN_CANNOT_LOAD: /* 2059 */
        return 1;
    default:
        return 0;
    }
}
