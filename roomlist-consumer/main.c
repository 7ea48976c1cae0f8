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
 * With http_listen set, a thread of its own serves /metrics, /status and
 * /ready (lib/src/http_mini.c) from the snapshot the consumer thread
 * publishes (metrics.h).
 *
 * This file reads the configuration, sets up logging, signals and the
 * database router, starts the flusher and the HTTP thread, and runs the
 * loop until SIGTERM or SIGINT; then the flusher runs a last round and
 * stops.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer.h"
#include "metrics.h"
#include "readflush.h"
#include "minichat/conf.h"
#include "minichat/db.h"
#include "minichat/db_conf.h"
#include "minichat/http_mini.h"
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
    MC_KAFKA_SEC_CONF_KEYS, MC_DB_CONF_KEYS, "batch_size", "batch_ms",      "members_interval_ms", "bulk_insert", "stats_interval",
    "log_level",      "redis",          "read_flush_ms", "redis_tls", "redis_tls_verify", "redis_tls_ca_file",
    "redis_tls_certificate", "redis_tls_certificate_key", "redis_tls_name", "push_topic", "push_max_recipients",
    "push_timeout_ms", "push_max_age_ms", "log_file", "http_listen", NULL,
};

/* Everything the file says, read and checked before anything starts. */
typedef struct {
    int level;
    const char *log_file;
    long long batch_size, batch_ms, members_ms, stats_s, session_ms, flush_ms, push_max, push_timeout, push_age;
    mc_db_conf_t dconf;
    mc_kafka_sec_t ksec;
    const char *brokers, *topic, *group, *instance, *push_topic;
    rc_readflush_config_t rfc;
    int http_on;              /* http_listen set: /metrics, /status, /ready */
    int bulk;                 /* bulk_insert */
    mc_http_addr_t http_listen;
} rc_settings_t;

static void usage(FILE *f);
static void on_signal(int sig);
static int conf_read(mc_conf_t *conf, rc_settings_t *st);
static int log_apply(const rc_settings_t *st);
static void *hup_thread(void *arg);
static int hup_stop;   /* set before main wakes hup_thread for the last time */

/* what a SIGHUP applies; every other key waits for a restart */
static const char *const live_keys[] = {"log_level", "log_file", NULL};
static const char *conf_path;
static mc_conf_t *running_conf;

static void usage(FILE *f)
{
    fprintf(f, "usage: roomlist-consumer [-t] -c FILE\n"
               "\n"
               "Consumes chat messages from Kafka and writes them and the room lists to MySQL.\n"
               "\n"
               "  -c, --config FILE   the config file\n"
               "  -t, --test          check the config file and exit: every error with its file\n"
               "                      and line, exit status 1 when there is one (nothing is connected)\n"
               "  -h, --help          this text\n"
               "\n"
               "SIGHUP reads the file again: log_level and log_file change (the log file is\n"
               "reopened, for logrotate); other keys wait for a restart and are named.\n"
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
               "  bulk_insert     on: a batch's rows go in one bulk execution of a\n"
               "                  one-row INSERT (MariaDB; a server without it gets\n"
               "                  multi-row INSERTs); off: multi-row INSERTs  (on)\n"
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
               "  log_level       debug, info, warn or error                 (info)\n"
               "  log_file        a file to log to besides stderr            ()\n"
               "  http_listen     ADDRESS:PORT of /metrics, /status and /ready (off)\n");
}

static void on_signal(int sig)
{
    (void)sig;
    run = 0;
}

/* Fills st from the file, recording every error in conf (the caller logs
 * them); files the keys name must be readable.  Returns 0 or -1. */
static int conf_read(mc_conf_t *conf, rc_settings_t *st)
{
    const char *level_name = mc_conf_get(conf, "log_level", "info");
    rc_readflush_config_t *rfc = &st->rfc;

    memset(st, 0, sizeof(*st));
    st->level = mc_log_level_named(level_name);
    st->log_file = mc_conf_get(conf, "log_file", "");
    if (st->level < 0) {
        mc_conf_error(conf, "log_level", "log_level \"%s\" is not debug, info, warn or error", level_name);
        st->level = MC_LOG_INFO;
    }
    mc_conf_int(conf, "batch_size", 2000, 1, 100000, &st->batch_size);
    mc_conf_int(conf, "batch_ms", RC_BATCH_MS, 0, 60000, &st->batch_ms);
    mc_conf_int(conf, "members_interval_ms", 1000, 0, 3600000, &st->members_ms);
    mc_conf_flag(conf, "bulk_insert", 1, &st->bulk);
    mc_conf_int(conf, "stats_interval", 10, 0, 86400, &st->stats_s);
    mc_conf_int(conf, "read_flush_ms", 1000, 10, 3600000, &st->flush_ms);
    mc_conf_int(conf, "push_max_recipients", 1000, 1, 10000, &st->push_max);
    mc_conf_int(conf, "push_timeout_ms", 10000, 1000, 300000, &st->push_timeout);
    mc_conf_int(conf, "push_max_age_ms", 600000, 0, 604800000, &st->push_age);
    mc_conf_int(conf, "kafka_session_timeout_ms", 10000, 6000, 300000, &st->session_ms);
    mc_db_conf_read(conf, &st->dconf);
    mc_kafka_sec_read(conf, &st->ksec);

    st->brokers = mc_conf_get(conf, "kafka_brokers", "127.0.0.1:9092");
    st->topic = mc_conf_get(conf, "kafka_topic", "minichat.messages");
    st->group = mc_conf_get(conf, "kafka_group", "minichat-roomlist");
    st->instance = mc_conf_get(conf, "kafka_instance_id", "");
    st->push_topic = mc_conf_get(conf, "push_topic", "minichat.push");
    if (st->brokers[0] == '\0') {
        mc_conf_error(conf, "kafka_brokers", "kafka_brokers must not be empty");
    }
    if (st->topic[0] == '\0') {
        mc_conf_error(conf, "kafka_topic", "kafka_topic must not be empty");
    }
    if (st->group[0] == '\0') {
        mc_conf_error(conf, "kafka_group", "kafka_group must not be empty");
    }

    /* read pointers: the Redis of {dirty}:read, on its own thread */
    rfc->redis = mc_conf_get(conf, "redis", "127.0.0.1:6379");
    mc_conf_flag(conf, "redis_tls", 0, &rfc->tls.on);
    mc_conf_flag(conf, "redis_tls_verify", 1, &rfc->tls.verify);
    rfc->tls.ca_file = mc_conf_get(conf, "redis_tls_ca_file", "");
    rfc->tls.cert_file = mc_conf_get(conf, "redis_tls_certificate", "");
    rfc->tls.key_file = mc_conf_get(conf, "redis_tls_certificate_key", "");
    rfc->tls.name = mc_conf_get(conf, "redis_tls_name", "");
    mc_conf_file(conf, "redis_tls_ca_file");
    mc_conf_file(conf, "redis_tls_certificate");
    mc_conf_file(conf, "redis_tls_certificate_key");
    rfc->interval_ms = (int)st->flush_ms;
    st->http_on = mc_http_conf_listen(conf, "http_listen", &st->http_listen) == 1;
    return mc_conf_nerrors(conf) ? -1 : 0;
}

/* Opens (or reopens) the log file and sets the level.  Returns 0 or -1
 * with a log line. */
static int log_apply(const rc_settings_t *st)
{
    char err[512];

    if (mc_log_file(st->log_file, err, sizeof(err)) != 0) {
        mc_error("config: log_file: %s", err);
        return -1;
    }
    mc_log_set_level(st->level);
    return 0;
}

/* SIGHUP, taken by this thread alone (every other thread blocks it): reads
 * the file again; a file with errors changes nothing, a good one reopens
 * the log file and sets the level, and each other key that changed is
 * named as waiting for a restart. */
static void *hup_thread(void *arg)
{
    sigset_t set;
    rc_settings_t next;
    mc_conf_t *c;
    char err[512];
    int sig;

    (void)arg;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    for (;;) {
        if (sigwait(&set, &sig) != 0) {
            continue;
        }
        if (__atomic_load_n(&hup_stop, __ATOMIC_ACQUIRE)) {
            break;
        }
        mc_info("got SIGHUP: reading %s again", conf_path);
        c = mc_conf_load(conf_path, known_keys, err, sizeof(err));
        if (c == NULL) {
            mc_error("reload: config: %s; the running config stays", err);
            continue;
        }
        if (conf_read(c, &next) != 0) {
            mc_conf_log_errors(c);
            mc_error("reload: %s has errors; the running config stays", conf_path);
        } else if (log_apply(&next) == 0) {
            mc_conf_warn_restart_keys(running_conf, c, known_keys, live_keys);
            mc_info("reload: done (log_level %s, log_file \"%s\")", mc_conf_get(c, "log_level", "info"),
                    next.log_file);
        }
        mc_kafka_sec_free(&next.ksec);
        mc_db_conf_free(&next.dconf);
        mc_conf_free(c);
    }
    return NULL;
}

static volatile int http_run = 1;

/* The operator endpoints' thread: serves until http_run is cleared. */
static void *http_thread(void *arg)
{
    mc_http_t *h = arg;

    while (__atomic_load_n(&http_run, __ATOMIC_RELAXED)) {
        mc_http_run(h, 200);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    char err[512];
    mc_conf_t *conf = NULL;
    mc_db_t *db = NULL;
    rc_settings_t st;
    mc_db_config_t dbc;
    rc_consumer_config_t cc;
    rc_consumer_t consumer = {0};
    rc_store_t store;
    rc_readflush_t *rf = NULL;
    rc_push_config_t pc;
    rc_push_t *push = NULL;
    struct sigaction sa;
    static char session_buf[24];
    sigset_t hup;
    pthread_t hup_tid, http_tid;
    static const mc_http_handler_t http_handler = {rc_metrics_text, rc_status_json, rc_ready};
    mc_http_t *http = NULL;
    int i, rc = 1, test = 0, hup_started = 0, http_started = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--test") == 0) {
            test = 1;
            continue;
        }
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
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
    memset(&st, 0, sizeof(st));
    /* SIGHUP goes to hup_thread only: blocked here, before any thread exists */
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hup, NULL);

    conf = mc_conf_load(path, known_keys, err, sizeof(err));
    if (conf == NULL) {
        mc_error("config: %s", err);
    } else if (conf_read(conf, &st) == 0 && mc_conf_log_errors(conf) == 0) {
        rc = log_apply(&st) == 0 ? 0 : 1;
    } else {
        mc_conf_log_errors(conf);
    }
    if (test) {
        fprintf(stderr, "roomlist-consumer: configuration file %s test %s\n", path,
                rc == 0 ? "is successful" : "failed");
        goto done;
    }
    if (rc != 0) {
        goto done;
    }
    rc = 1;
    conf_path = path;
    running_conf = conf;
    if (pthread_create(&hup_tid, NULL, hup_thread, NULL) != 0) {
        mc_error("cannot start the SIGHUP thread");
        goto done;
    }
    hup_started = 1;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    dbc = st.dconf.db;
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

    cc.brokers = st.brokers;
    cc.sec = &st.ksec;
    if (st.ksec.protocol != MC_KAFKA_PLAINTEXT) {
        /* a wrong CA, certificate or password stops the start here; brokers
         * not up yet are waited for by librdkafka */
        i = mc_kafka_sec_probe(&st.ksec, cc.brokers, RC_KAFKA_PROBE_MS, err, sizeof(err));
        if (i < 0) {
            mc_error("kafka: cannot connect over %s: %s (check kafka_ssl_ca, kafka_ssl_cert/key and the "
                     "kafka_sasl_* keys)", mc_kafka_protocol_name(st.ksec.protocol), err);
            goto done;
        }
        if (i > 0) {
            mc_warn("kafka: %s; carrying on", err);
        }
    }
    rc_store_init(&store, db, RC_MAX_STMT_BYTES, st.members_ms, st.bulk);

    cc.topic = st.topic;
    cc.group = st.group;
    cc.instance = st.instance;
    snprintf(session_buf, sizeof(session_buf), "%lld", st.session_ms);
    cc.session_timeout_ms = session_buf;
    cc.batch_size = (size_t)st.batch_size;
    cc.batch_ms = (int)st.batch_ms;
    cc.stats_s = (int)st.stats_s;

    /* read pointers: on their own thread, with their own connections */
    st.rfc.db = dbc;
    if (st.rfc.redis[0] == '\0') {
        mc_warn("redis is empty: read pointers are not written back to MySQL");
    } else {
        rf = rc_readflush_start(&st.rfc);
        if (rf == NULL) {
            rc_store_free(&store);
            goto done;
        }
    }

    /* offline push: its own producer, and the same Redis for presence */
    pc.brokers = cc.brokers;
    pc.sec = &st.ksec;
    pc.topic = st.push_topic;
    pc.redis = st.rfc.redis;
    pc.tls = st.rfc.tls;
    pc.max_recipients = (size_t)st.push_max;
    pc.timeout_ms = (int)st.push_timeout;
    pc.max_age_ms = st.push_age;
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

    rc_metrics_init(cc.group, cc.instance, cc.topic, rf);
    if (st.http_on) {
        /* SIGTERM and SIGINT stay with the main thread: its poll loop sees run */
        sigset_t stop;

        http = mc_http_start(&st.http_listen, &http_handler, err, sizeof(err));
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        pthread_sigmask(SIG_BLOCK, &stop, NULL);
        http_started = http != NULL && pthread_create(&http_tid, NULL, http_thread, http) == 0;
        pthread_sigmask(SIG_UNBLOCK, &stop, NULL);
        if (!http_started) {
            mc_error("http: %s", http == NULL ? err : "cannot start its thread");
            mc_http_stop(http);
            rc_push_free(push);
            rc_readflush_stop(rf);
            rc_store_free(&store);
            goto done;
        }
        mc_info("http: /metrics, /status and /ready on %s", st.http_listen.text);
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
    if (http_started) {
        __atomic_store_n(&http_run, 0, __ATOMIC_RELAXED);
        pthread_join(http_tid, NULL);
        mc_http_stop(http);
    }
    if (hup_started) {
        /* woken by a SIGHUP of its own, it sees hup_stop and returns: not
         * cancelled, since a thread cancelled in sigwait() leaves its frames
         * unwound by nobody (AddressSanitizer then reports the poisoned stack
         * as a stack-buffer-overflow when the thread ends) */
        __atomic_store_n(&hup_stop, 1, __ATOMIC_RELEASE);
        pthread_kill(hup_tid, SIGHUP);
        pthread_join(hup_tid, NULL);
    }
    mc_db_free(db);
    mc_kafka_sec_free(&st.ksec);
    mc_db_conf_free(&st.dconf);
    mc_conf_free(conf);
    return rc;
}
