/*
 * roomlist-consumer: persists chat messages from Kafka into MySQL.
 *
 *   roomlist-consumer -c roomlist-consumer.conf
 *
 * The nginx module assigns each message its per-room seq and acks the sender
 * once the message is in Kafka (through the relay-worker); this service is the
 * only writer of `messages` and of the room-list columns (rooms.last_seq,
 * last_message_at, last_preview and room_members.last_message_at).  It is a
 * member of one consumer group, so more instances share the topic's
 * partitions; see consumer.c for the loop and store.c for the transaction.
 *
 * It also writes read pointers back: the module keeps them in Redis and
 * marks them in {dirty}:read, and readflush.c moves them into
 * room_members.last_read_seq every read_flush_ms, on its own thread.
 *
 * This file reads the configuration, sets up logging, signals and the
 * database router, starts the flusher, and runs the loop until SIGTERM or
 * SIGINT; then the flusher runs a last round and stops.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "readflush.h"
#include "minichat/conf.h"
#include "minichat/db.h"
#include "minichat/log.h"
#include "store.h"

#define RC_MAX_STMT_BYTES (4 * 1024 * 1024)

static volatile sig_atomic_t run = 1;

static const char *const known_keys[] = {
    "kafka_brokers", "kafka_topic",    "kafka_group", "kafka_instance_id", "kafka_session_timeout_ms", MC_DB_CONF_KEYS,
    "batch_size", "batch_ms",      "members_interval_ms", "stats_interval",
    "log_level",      "redis",          "read_flush_ms", "redis_tls", "redis_tls_verify", "redis_tls_ca_file",
    "redis_tls_certificate", "redis_tls_certificate_key", "redis_tls_name", NULL,
};

static void usage(FILE *f);
static void on_signal(int sig);
static int parse_level(const char *s);
static int get_flag(const mc_conf_t *conf, const char *key, int def, int *out);
static int get_int(const mc_conf_t *conf, const char *key, long long def, long long min, long long max,
                   long long *out);

static void usage(FILE *f)
{
    fprintf(f, "usage: roomlist-consumer -c FILE\n"
               "\n"
               "Consumes chat messages from Kafka and writes them and the room lists to MySQL.\n"
               "\n"
               "FILE holds `key = value` lines:\n"
               "  kafka_brokers   bootstrap brokers, host:port[,host:port]   (127.0.0.1:9092)\n"
               "  kafka_topic     topic of packed ChatMessages               (minichat.messages)\n"
               "  kafka_group     consumer group                             (minichat-roomlist)\n"
               "  kafka_instance_id  group.instance.id: a fixed name per instance makes\n"
               "                  a restart take its partitions back at once ()\n"
               "  kafka_session_timeout_ms  how long the group waits for a silent\n"
               "                  member before giving its partitions away      (10000)\n"
               "  mysql_primary   host:port of the primary                   (127.0.0.1:3306)\n"
               "  mysql_replicas  host:port,... of replicas (unused: every statement here writes) ()\n"
               "  mysql_user, mysql_password, mysql_database                 (root, \"\", minichat)\n"
               "  batch_size      records per transaction at most            (2000)\n"
               "  batch_ms        longest wait for a batch to fill, in ms    (20)\n"
               "  members_interval_ms  least time between two updates of one room's\n"
               "                  room_members.last_message_at, 0 for every batch (1000)\n"
               "  stats_interval  seconds between stats lines, 0 for none    (10)\n"
               "  redis           host:port, /socket, or cluster nodes host:port,host:port,... of the\n"
               "                  Redis holding ({dirty}:read); empty turns the flusher off (127.0.0.1:6379)\n"
               "  read_flush_ms   how often read marks are written to MySQL  (1000)\n"
               "  redis_tls       on: reach Redis over TLS                   (off)\n"
               "  redis_tls_verify  check Redis's certificate against the CA  (on)\n"
               "  redis_tls_ca_file, redis_tls_certificate, redis_tls_certificate_key, redis_tls_name\n"
               "                  the CA (PEM), a client certificate and key, the name to check\n"
               "  log_level       debug, info, warn or error                 (info)\n");
}

static void on_signal(int sig)
{
    (void)sig;
    run = 0;
}

/* Returns the MC_LOG_* level named s, or -1. */
static int parse_level(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    int i;

    for (i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* Reads an integer key within [min, max].  Returns 0, or -1 after logging why. */
/* An on/off setting.  Returns 0, or -1 after logging a bad value. */
static int get_flag(const mc_conf_t *conf, const char *key, int def, int *out)
{
    const char *v = mc_conf_get(conf, key, def ? "on" : "off");

    if (strcmp(v, "on") == 0) {
        *out = 1;
    } else if (strcmp(v, "off") == 0) {
        *out = 0;
    } else {
        mc_error("invalid %s \"%s\" (want on or off)", key, v);
        return -1;
    }
    return 0;
}

static int get_int(const mc_conf_t *conf, const char *key, long long def, long long min, long long max,
                   long long *out)
{
    int ok = 1;

    *out = mc_conf_get_int(conf, key, def, &ok);
    if (!ok || *out < min || *out > max) {
        mc_error("invalid %s \"%s\" (want %lld..%lld)", key, mc_conf_get(conf, key, ""), min, max);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *level_name;
    char err[512];
    mc_conf_t *conf = NULL;
    mc_db_t *db = NULL;
    mc_db_config_t dbc;
    rc_consumer_config_t cc;
    rc_consumer_t consumer;
    rc_store_t store;
    rc_readflush_config_t rfc;
    rc_readflush_t *rf = NULL;
    struct sigaction sa;
    long long batch_size, batch_ms, members_ms, stats_s, session_ms, flush_ms;
    static char session_buf[24];
    int i, level, rc = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
            continue;
        }
        usage(stderr);
        return 2;
    }
    if (path == NULL) {
        usage(stderr);
        return 2;
    }

    mc_log_init("roomlist-consumer", MC_LOG_INFO);

    conf = mc_conf_load(path, known_keys, err, sizeof(err));
    if (conf == NULL) {
        mc_error("%s", err);
        return 1;
    }

    level_name = mc_conf_get(conf, "log_level", "info");
    level = parse_level(level_name);
    if (level < 0) {
        mc_error("invalid log_level \"%s\"", level_name);
        goto done;
    }
    mc_log_init("roomlist-consumer", level);

    if (get_int(conf, "batch_size", 2000, 1, 100000, &batch_size) != 0
        || get_int(conf, "batch_ms", 20, 0, 60000, &batch_ms) != 0
        || get_int(conf, "members_interval_ms", 1000, 0, 3600000, &members_ms) != 0
        || get_int(conf, "stats_interval", 10, 0, 86400, &stats_s) != 0
        || get_int(conf, "read_flush_ms", 1000, 10, 3600000, &flush_ms) != 0)
    {
        goto done;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    if (mc_db_config_read(conf, "127.0.0.1:3306", &dbc) != 0) {
        goto done;
    }
    db = mc_db_new(&dbc);
    if (db == NULL) {
        goto done;
    }
    rc_store_init(&store, db, RC_MAX_STMT_BYTES, members_ms);

    /* connect now so that a wrong address or password shows at start-up; a
     * database that is merely down is retried batch by batch */
    if (mc_db_conn(db, MC_DB_PRIMARY) == NULL) {
        mc_warn("primary not reachable yet; batches will wait for it");
    }

    cc.brokers = mc_conf_get(conf, "kafka_brokers", "127.0.0.1:9092");
    cc.topic = mc_conf_get(conf, "kafka_topic", "minichat.messages");
    cc.group = mc_conf_get(conf, "kafka_group", "minichat-roomlist");
    cc.instance = mc_conf_get(conf, "kafka_instance_id", "");
    if (get_int(conf, "kafka_session_timeout_ms", 10000, 6000, 300000, &session_ms) != 0) {
        rc_store_free(&store);
        goto done;
    }
    snprintf(session_buf, sizeof(session_buf), "%lld", session_ms);
    cc.session_timeout_ms = session_buf;
    if (cc.brokers[0] == '\0' || cc.topic[0] == '\0' || cc.group[0] == '\0') {
        mc_error("kafka_brokers, kafka_topic and kafka_group must not be empty");
        rc_store_free(&store);
        goto done;
    }
    cc.batch_size = (size_t)batch_size;
    cc.batch_ms = (int)batch_ms;
    cc.stats_s = (int)stats_s;

    /* read pointers: on their own thread, with their own connections */
    rfc.redis = mc_conf_get(conf, "redis", "127.0.0.1:6379");
    if (get_flag(conf, "redis_tls", 0, &rfc.tls.on) != 0 || get_flag(conf, "redis_tls_verify", 1, &rfc.tls.verify) != 0) {
        rc_store_free(&store);
        goto done;
    }
    rfc.tls.ca_file = mc_conf_get(conf, "redis_tls_ca_file", "");
    rfc.tls.cert_file = mc_conf_get(conf, "redis_tls_certificate", "");
    rfc.tls.key_file = mc_conf_get(conf, "redis_tls_certificate_key", "");
    rfc.tls.name = mc_conf_get(conf, "redis_tls_name", "");
    rfc.interval_ms = (int)flush_ms;
    rfc.db = dbc;
    if (rfc.redis[0] == '\0') {
        mc_warn("redis is empty: read pointers are not written back to MySQL");
    } else {
        rf = rc_readflush_start(&rfc);
        if (rf == NULL) {
            rc_store_free(&store);
            goto done;
        }
    }

    if (rc_consumer_init(&consumer, &cc, &store, &run) != 0) {
        rc_readflush_stop(rf);
        rc_store_free(&store);
        goto done;
    }
    rc = rc_consumer_run(&consumer) == 0 ? 0 : 1;
    /* one last round of read marks after SIGTERM */
    rc_readflush_stop(rf);
    rc_store_free(&store);
    mc_info("exiting with status %d", rc);

done:
    mc_db_free(db);
    mc_conf_free(conf);
    return rc;
}
