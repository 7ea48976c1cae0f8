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
 * With push_topic set, every batch also produces offline-push events for
 * the members of its rooms who are connected nowhere (push.c).
 *
 * This file reads the configuration, sets up logging, signals and the
 * database router, starts the flusher, and runs the loop until SIGTERM or
 * SIGINT; then the flusher runs a last round and stops.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer.h"
#include "readflush.h"
#include "minichat/conf.h"
#include "minichat/db.h"
#include "minichat/db_conf.h"
#include "minichat/kafka_sec.h"
#include "minichat/log.h"
#include "store.h"

#define RC_MAX_STMT_BYTES (4 * 1024 * 1024)

/* The default batch wait.  At 400 messages a second the primary spent 145
 * CPU-us per stored row with 20 ms, 86 with 50 and 50 with 100 (each batch
 * is a transaction with its fixed costs; a room without members); the rows
 * reach MySQL up to this much later, which readers of recent messages do
 * not see (they read Redis's log).  docs/performance.md, "Consumer: ...". */
#define RC_BATCH_MS 50

static volatile sig_atomic_t run = 1;

/* how long the start-up probe waits for a Kafka broker over TLS/SASL */
#define RC_KAFKA_PROBE_MS 5000
#define RC_RESTART_MS 1000   /* pause before a new Kafka consumer after a fatal error */

static const char *const known_keys[] = {
    "kafka_brokers", "kafka_topic",    "kafka_group", "kafka_instance_id", "kafka_session_timeout_ms",
    MC_KAFKA_SEC_CONF_KEYS, MC_DB_CONF_KEYS, "batch_size", "batch_ms",      "members_interval_ms", "stats_interval",
    "log_level",      "redis",          "read_flush_ms", "redis_tls", "redis_tls_verify", "redis_tls_ca_file",
    "redis_tls_certificate", "redis_tls_certificate_key", "redis_tls_name", "push_topic", "push_max_recipients",
    "push_timeout_ms", "push_max_age_ms", NULL,
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
               "  mysql_password_file  the password from a file instead (newline stripped)\n"
               "  mysql_ssl       off, on (encrypted) or verify (and the certificate checked\n"
               "                  against mysql_ssl_ca and the host name)          (off)\n"
               "  mysql_ssl_ca, mysql_ssl_cert, mysql_ssl_key   PEM files\n"
               "  kafka_security_protocol  plaintext, ssl, sasl_plaintext or sasl_ssl (plaintext)\n"
               "  kafka_ssl_ca, kafka_ssl_cert, kafka_ssl_key   PEM files\n"
               "  kafka_sasl_mechanism (PLAIN), kafka_sasl_username, kafka_sasl_password_file\n"
               "                  (docs/operations-security.md)\n"
               "  batch_size      records per transaction at most            (2000)\n"
               "  batch_ms        longest wait for a batch to fill, in ms: at a light\n"
               "                  load a batch closes this long after its first record (50)\n"
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
               "  push_topic      topic of offline-push events (docs/push.md); empty\n"
               "                  turns pushes off                           (minichat.push)\n"
               "  push_max_recipients  a room with more members gets no push events (1000)\n"
               "  push_timeout_ms longest wait for a batch's push events to be\n"
               "                  delivered before the batch is retried      (10000)\n"
               "  push_max_age_ms no push events for messages older than this,\n"
               "                  0 for any age                              (600000)\n"
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
    mc_db_conf_t dconf;
    mc_kafka_sec_t ksec;
    mc_db_config_t dbc;
    rc_consumer_config_t cc;
    rc_consumer_t consumer;
    rc_store_t store;
    rc_readflush_config_t rfc;
    rc_readflush_t *rf = NULL;
    rc_push_config_t pc;
    rc_push_t *push = NULL;
    struct sigaction sa;
    long long batch_size, batch_ms, members_ms, stats_s, session_ms, flush_ms, push_max, push_timeout, push_age;
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
    memset(&dconf, 0, sizeof(dconf));
    memset(&ksec, 0, sizeof(ksec));

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
        || get_int(conf, "batch_ms", RC_BATCH_MS, 0, 60000, &batch_ms) != 0
        || get_int(conf, "members_interval_ms", 1000, 0, 3600000, &members_ms) != 0
        || get_int(conf, "stats_interval", 10, 0, 86400, &stats_s) != 0
        || get_int(conf, "read_flush_ms", 1000, 10, 3600000, &flush_ms) != 0
        || get_int(conf, "push_max_recipients", 1000, 1, 10000, &push_max) != 0
        || get_int(conf, "push_timeout_ms", 10000, 1000, 300000, &push_timeout) != 0
        || get_int(conf, "push_max_age_ms", 600000, 0, 604800000, &push_age) != 0)
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

    if (mc_db_conf_read(conf, &dconf, err, sizeof(err)) != 0 || mc_kafka_sec_read(conf, &ksec, err, sizeof(err)) != 0) {
        mc_error("config: %s", err);
        goto done;
    }
    dbc = dconf.db;
    if (dbc.primary == NULL) {
        dbc.primary = "127.0.0.1:3306";
    }
    db = mc_db_new(&dbc);
    if (db == NULL) {
        goto done;
    }

    /* connect now so that a wrong password, database or TLS setting shows at
     * start-up and stops it; a database that is merely down is retried batch
     * by batch */
    if (mc_db_conn(db, MC_DB_PRIMARY) == NULL) {
        if (mc_db_error_is_config(mc_db_connect_errno(db))) {
            mc_error("the primary refuses these settings (error %u above): check mysql_user, mysql_password or "
                     "mysql_password_file, mysql_database and mysql_ssl*", mc_db_connect_errno(db));
            goto done;
        }
        mc_warn("primary not reachable yet; batches will wait for it");
    }

    cc.brokers = mc_conf_get(conf, "kafka_brokers", "127.0.0.1:9092");
    cc.sec = &ksec;
    if (ksec.protocol != MC_KAFKA_PLAINTEXT) {
        /* a wrong CA, certificate or password stops the start here; brokers
         * not up yet are waited for by librdkafka */
        i = mc_kafka_sec_probe(&ksec, cc.brokers, RC_KAFKA_PROBE_MS, err, sizeof(err));
        if (i < 0) {
            mc_error("kafka: cannot connect over %s: %s (check kafka_ssl_ca, kafka_ssl_cert/key and the "
                     "kafka_sasl_* keys)", mc_kafka_protocol_name(ksec.protocol), err);
            goto done;
        }
        if (i > 0) {
            mc_warn("kafka: %s; carrying on", err);
        }
    }
    rc_store_init(&store, db, RC_MAX_STMT_BYTES, members_ms);

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

    /* offline push: its own producer, and the same Redis for presence */
    pc.brokers = cc.brokers;
    pc.sec = &ksec;
    pc.topic = mc_conf_get(conf, "push_topic", "minichat.push");
    pc.redis = rfc.redis;
    pc.tls = rfc.tls;
    pc.max_recipients = (size_t)push_max;
    pc.timeout_ms = (int)push_timeout;
    pc.max_age_ms = push_age;
    if (pc.topic[0] == '\0') {
        mc_info("push_topic is empty: no offline-push events");
    } else {
        push = rc_push_new(&pc);
        if (push == NULL) {
            rc_readflush_stop(rf);
            rc_store_free(&store);
            goto done;
        }
    }

    for (;;) {
        if (rc_consumer_init(&consumer, &cc, &store, push, &run) != 0) {
            rc_push_free(push);
            rc_readflush_stop(rf);
            rc_store_free(&store);
            goto done;
        }
        rc = rc_consumer_run(&consumer) == 0 ? 0 : 1;
        if (!consumer.fatal || !run) {
            break;
        }
        /* a fatal error ends a handle, not the service: a Kafka restart
         * once fenced this static member ("Static consumer fenced by other
         * consumer with same group.instance.id") and nothing restarted the
         * process.  Offsets are committed only after MySQL, so a new handle
         * reads again what was not written. */
        mc_warn("kafka: making a new consumer in %d ms after the fatal error", RC_RESTART_MS);
        usleep(RC_RESTART_MS * 1000);
    }
    rc_push_free(push);
    /* one last round of read marks after SIGTERM */
    rc_readflush_stop(rf);
    rc_store_free(&store);
    mc_info("exiting with status %d", rc);

done:
    mc_db_free(db);
    mc_kafka_sec_free(&ksec);
    mc_db_conf_free(&dconf);
    mc_conf_free(conf);
    return rc;
}
