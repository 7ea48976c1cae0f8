/*
 * The mysql_* settings shared by the services that use the database router:
 * where the primary and the replicas are, who logs in, and the replica lag
 * and read-your-writes bounds.  `mysql_replica` (one address) is the older
 * spelling of `mysql_replicas` (a list) and still works; giving both is an
 * error, so that nobody wonders which one counts.
 */
#include <stdlib.h>

#include "minichat/db.h"
#include "minichat/log.h"

/* Reads an integer key in [min, max].  Returns 0 or -1 with a log line. */
static int db_conf_int(const mc_conf_t *c, const char *key, long long def, long long min, long long max,
                       int64_t *out)
{
    int ok = 1;
    long long v = mc_conf_get_int(c, key, def, &ok);

    if (!ok || v < min || v > max) {
        mc_error("config: %s must be a number in [%lld, %lld]", key, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int mc_db_config_read(const mc_conf_t *c, const char *primary_default, mc_db_config_t *cfg)
{
    const char *one = mc_conf_get(c, "mysql_replica", "");
    const char *many = mc_conf_get(c, "mysql_replicas", "");

    cfg->primary = mc_conf_get(c, "mysql_primary", primary_default);
    if (one[0] != '\0' && many[0] != '\0') {
        mc_error("config: mysql_replica and mysql_replicas are both set; keep mysql_replicas");
        return -1;
    }
    cfg->replicas = many[0] != '\0' ? many : one;
    cfg->user = mc_conf_get(c, "mysql_user", "root");
    cfg->password = mc_conf_get(c, "mysql_password", "");
    cfg->database = mc_conf_get(c, "mysql_database", "minichat");
    cfg->ryw = NULL;
    if (db_conf_int(c, "mysql_replica_max_lag_ms", 2000, 0, 3600000, &cfg->max_lag_ms) != 0
        || db_conf_int(c, "mysql_replica_check_ms", 250, 10, 60000, &cfg->lag_check_ms) != 0
        || db_conf_int(c, "mysql_read_your_writes_ms", 2000, 0, 3600000, &cfg->ryw_ms) != 0)
    {
        return -1;
    }
    if (cfg->max_lag_ms > 0 && cfg->lag_check_ms * 60 < cfg->max_lag_ms) {
        /* the lag samples cover MC_DB_LAG_SAMPLES checks */
        mc_error("config: mysql_replica_check_ms must be at least mysql_replica_max_lag_ms / 60");
        return -1;
    }
    return 0;
}
