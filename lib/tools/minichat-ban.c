/*
 * minichat-ban: an operator's view of a user's ban, and the way to lift it.
 *
 *   minichat-ban [options] show USER_ID    the ban and strikes in Redis and MySQL
 *   minichat-ban [options] lift USER_ID    end the ban now (Redis and MySQL)
 *   minichat-ban [options] forgive USER_ID lift, and forget the strikes too
 *
 * It talks to Redis ({u:<user>}:ban and :strikes, see lua/limit.lua, through
 * lua/ban.lua: the same script the module's server API runs) and to
 * the MySQL primary (users.status, banned_until, strikes) directly, with
 * a blocking Redis connection (lib/src/redis_conn.c, plain TCP or TLS) and
 * a connection of the services' MySQL router (lib/src/db.c: the same
 * options, TLS with --mysql-ssl on|verify as the services' mysql_ssl).  A lifted user may connect at once; the connections the ban
 * closed stay closed.  Exit status: 0 done,
 * 1 a store failed (the other may have changed: run it again), 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include <mysql.h>

#include "minichat/ban.h"
#include "minichat/db.h"
#include "minichat/db_conf.h"
#include "minichat/decimal.h"
#include "minichat/log.h"
#include "minichat/redis_sync.h"
#include "minichat/secret.h"

#include "lua_scripts.h"

static void usage(void)
{
    fprintf(stderr, "usage: minichat-ban [--redis HOST:PORT[,HOST:PORT...]] [--mysql HOST:PORT] [--mysql-user USER]\n"
                    "                    [--mysql-password-file FILE] [--database NAME]\n"
                    "                    [--mysql-ssl off|on|verify [--mysql-ssl-ca FILE]\n"
                    "                     [--mysql-ssl-cert FILE --mysql-ssl-key FILE]]\n"
                    "                    [--redis-tls --redis-tls-ca-file FILE [--redis-tls-name NAME]\n"
                    "                     [--redis-tls-certificate FILE --redis-tls-certificate-key FILE]\n"
                    "                     [--redis-tls-no-verify]] show|lift|forgive USER_ID\n"
                    "       defaults: --redis 127.0.0.1:16379 --mysql 127.0.0.1:13306 --mysql-user root\n"
                    "                 --database minichat (the dev stack's); Redis over plain TCP\n");
}

/* Splits "host:port"; returns 0 or -1. */
static int split_addr(const char *s, char *host, size_t hostlen, unsigned *port)
{
    const char *colon = strrchr(s, ':');
    uint64_t p;

    if (colon == NULL || (size_t)(colon - s) >= hostlen || colon == s
        || mc_parse_u64(colon + 1, strlen(colon + 1), &p) != 0 || p == 0 || p > 65535) {
        return -1;
    }
    memcpy(host, s, colon - s);
    host[colon - s] = '\0';
    *port = (unsigned)p;
    return 0;
}

/* Sets *out from "off", "on" or "verify".  Returns 0 or -1. */
static int parse_ssl(const char *s, mc_db_ssl_t *out)
{
    mc_db_ssl_t m;

    for (m = MC_DB_SSL_OFF; m <= MC_DB_SSL_VERIFY; m++) {
        if (strcmp(s, mc_db_ssl_name(m)) == 0) {
            *out = m;
            return 0;
        }
    }
    return -1;
}

/* Runs lua/ban.lua (the module's server API runs the same script) with op
 * on the user's keys: out = {banned, until_ms, strikes}.  Returns 0 or -1. */
static int ban_script(mc_redis_conn_t *rc, const char *op, unsigned long long user, long long out[3])
{
    const char *argv[7];
    size_t argvlen[7];
    char ban[64], strikes[64];
    redisReply *r;
    size_t i;

    snprintf(ban, sizeof(ban), "{u:%llu}:ban", user);
    snprintf(strikes, sizeof(strikes), "{u:%llu}:strikes", user);
    argv[0] = "EVAL";
    argv[1] = MINICHAT_LUA_BAN_SRC;
    argv[2] = "2";
    argv[3] = ban;
    argv[4] = strikes;
    argv[5] = op;
    argv[6] = "0";
    for (i = 0; i < 7; i++) {
        argvlen[i] = strlen(argv[i]);
    }

    r = mc_redis_conn_command(rc, 7, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        fprintf(stderr, "redis: %s\n", r && r->type == REDIS_REPLY_ERROR ? r->str
                                       : r ? "unexpected reply from ban.lua" : mc_redis_conn_error(rc));
        if (r) {
            freeReplyObject(r);
        }
        return -1;
    }
    for (i = 0; i < 3; i++) {
        out[i] = r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer : 0;
    }
    freeReplyObject(r);
    return 0;
}

static int redis_part(mc_redis_conn_t *rc, const char *cmd, unsigned long long user, int forgive)
{
    long long st[3];

    if (strcmp(cmd, "show") == 0) {
        if (ban_script(rc, "get", user, st) != 0) {
            return -1;
        }
        if (st[0]) {
            printf("redis: banned until %lld%s\n", st[1], st[1] == 0 ? " (permanent)" : " (ms)");
        } else {
            printf("redis: not banned\n");
        }
        printf("redis: strikes %lld\n", st[2]);
        return 0;
    }

    /* lift: the ban key, and the `until` limit.lua would report as expired */
    if (ban_script(rc, forgive ? "forgive" : "lift", user, st) != 0) {
        return -1;
    }
    printf("redis: ban lifted%s\n", forgive ? ", strikes forgotten" : "");
    return 0;
}

static int mysql_part(mc_db_t *db, const char *cmd, unsigned long long user, int forgive)
{
    static const char show[] = "SELECT status, COALESCE(banned_until, ''), strikes FROM users WHERE id=?";
    static const char lift[] = MC_BAN_SQL_LIFT;
    static const char lift_forgive[] = MC_BAN_SQL_FORGIVE;
    mc_db_arg_t id = MC_DB_U64(user);
    mc_db_rows_t *rows = NULL;
    mc_db_status_t st;
    char **row;

    if (strcmp(cmd, "show") == 0) {
        if (mc_db_exec(db, MC_DB_PRIMARY, 0, show, sizeof(show) - 1, &id, 1, &rows, &st) != 0) {
            fprintf(stderr, "mysql: %s (%u)\n", st.msg, st.err);
            return -1;
        }
        row = mc_db_rows_next(rows);
        if (row) {
            printf("mysql: status %s, banned_until %s, strikes %s\n", row[0] ? row[0] : "-",
                   row[1] && row[1][0] ? row[1] : "-", row[2] ? row[2] : "-");
        } else {
            printf("mysql: no users row (never banned)\n");
        }
        mc_db_rows_free(rows);
        return 0;
    }

    if (mc_db_exec(db, MC_DB_PRIMARY, 0, forgive ? lift_forgive : lift,
                   forgive ? sizeof(lift_forgive) - 1 : sizeof(lift) - 1, &id, 1, NULL, &st) != 0) {
        fprintf(stderr, "mysql: %s (%u)\n", st.msg, st.err);
        return -1;
    }
    printf("mysql: users.status active\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *redis = "127.0.0.1:16379", *mysql = "127.0.0.1:13306", *muser = "root", *pwfile = NULL;
    const char *database = "minichat", *cmd = NULL, *uarg = NULL;
    char mhost[256], *password = NULL;
    mc_db_config_t dbc = {0};
    mc_db_t *db;
    unsigned mport;
    uint64_t user;
    mc_redis_conn_t *rc;
    char ukey[64], rerr[256];
    mc_redis_tls_t tls = {0, 1, NULL, NULL, NULL, NULL};
    MYSQL *m;
    struct timeval tv = {5, 0};
    int i, rcode = 0, forgive;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--redis") == 0 && i + 1 < argc) {
            redis = argv[++i];
        } else if (strcmp(argv[i], "--mysql") == 0 && i + 1 < argc) {
            mysql = argv[++i];
        } else if (strcmp(argv[i], "--mysql-user") == 0 && i + 1 < argc) {
            muser = argv[++i];
        } else if (strcmp(argv[i], "--mysql-password-file") == 0 && i + 1 < argc) {
            pwfile = argv[++i];
        } else if (strcmp(argv[i], "--database") == 0 && i + 1 < argc) {
            database = argv[++i];
        } else if (strcmp(argv[i], "--mysql-ssl") == 0 && i + 1 < argc) {
            if (parse_ssl(argv[++i], &dbc.ssl) != 0) {
                usage();
                return 2;
            }
        } else if (strcmp(argv[i], "--mysql-ssl-ca") == 0 && i + 1 < argc) {
            dbc.ssl_ca = argv[++i];
        } else if (strcmp(argv[i], "--mysql-ssl-cert") == 0 && i + 1 < argc) {
            dbc.ssl_cert = argv[++i];
        } else if (strcmp(argv[i], "--mysql-ssl-key") == 0 && i + 1 < argc) {
            dbc.ssl_key = argv[++i];
        } else if (strcmp(argv[i], "--redis-tls") == 0) {
            tls.on = 1;
        } else if (strcmp(argv[i], "--redis-tls-no-verify") == 0) {
            tls.verify = 0;
        } else if (strcmp(argv[i], "--redis-tls-ca-file") == 0 && i + 1 < argc) {
            tls.ca_file = argv[++i];
        } else if (strcmp(argv[i], "--redis-tls-name") == 0 && i + 1 < argc) {
            tls.name = argv[++i];
        } else if (strcmp(argv[i], "--redis-tls-certificate") == 0 && i + 1 < argc) {
            tls.cert_file = argv[++i];
        } else if (strcmp(argv[i], "--redis-tls-certificate-key") == 0 && i + 1 < argc) {
            tls.key_file = argv[++i];
        } else if (argv[i][0] != '-' && cmd == NULL) {
            cmd = argv[i];
        } else if (argv[i][0] != '-' && uarg == NULL) {
            uarg = argv[i];
        } else {
            usage();
            return 2;
        }
    }

    if (cmd == NULL || uarg == NULL
        || (strcmp(cmd, "show") != 0 && strcmp(cmd, "lift") != 0 && strcmp(cmd, "forgive") != 0)
        || mc_parse_u64(uarg, strlen(uarg), &user) != 0 || user == 0
        || mc_redis_addrs_check(redis) != 0 || split_addr(mysql, mhost, sizeof(mhost), &mport) != 0) {
        usage();
        return 2;
    }
    if (dbc.ssl == MC_DB_SSL_VERIFY && dbc.ssl_ca == NULL) {
        fprintf(stderr, "minichat-ban: --mysql-ssl verify needs --mysql-ssl-ca\n");
        return 2;
    }
    if (pwfile && (password = mc_secret_read(pwfile, rerr, sizeof(rerr))) == NULL) {
        fprintf(stderr, "minichat-ban: --mysql-password-file: %s\n", rerr);
        return 2;
    }
    if (tls.on && mc_redis_tls_check(&tls, rerr, sizeof(rerr)) != 0) {
        fprintf(stderr, "minichat-ban: %s\n", rerr);
        return 2;
    }
    forgive = strcmp(cmd, "forgive") == 0;

    /* the node serving the user's slot: one Redis, or a cluster's seeds */
    snprintf(ukey, sizeof(ukey), "{u:%llu}:ban", (unsigned long long)user);
    rc = mc_redis_connect_for_key(redis, tls.on ? &tls : NULL, ukey, (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000), rerr, sizeof(rerr));
    if (rc == NULL) {
        fprintf(stderr, "redis %s: %s\n", redis, rerr);
        rcode = 1;
    } else if (redis_part(rc, cmd, (unsigned long long)user, forgive) != 0) {
        rcode = 1;
    }
    mc_redis_conn_close(rc);

    mc_log_init("minichat-ban", MC_LOG_WARN);
    dbc.primary = mysql;
    dbc.user = muser;
    dbc.password = password != NULL ? password : "";
    dbc.database = database;
    db = mc_db_new(&dbc);
    m = db != NULL ? mc_db_conn(db, MC_DB_PRIMARY) : NULL;
    if (m == NULL) {
        fprintf(stderr, "mysql %s: cannot connect (the line above says why)\n", mysql);
        rcode = 1;
    } else if (mysql_part(db, cmd, (unsigned long long)user, forgive) != 0) {
        rcode = 1;
    }
    mc_db_free(db);
    mc_secret_free(password);

    return rcode;
}
