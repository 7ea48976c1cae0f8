/*
 * relay-worker: start-up, the main loop and shutdown (see relay.h for the
 * threads and what each file does).
 *
 * Start-up reads the config, blocks SIGTERM/SIGINT/SIGHUP in every thread
 * (the threads that grpc, librdkafka and we create inherit the mask) and
 * takes them through a signalfd in the epoll loop, so that stopping, and
 * reading the config again on SIGHUP, are just other events.  The loop waits at most 100 ms, so that Kafka's delivery reports
 * are polled and due peer retries start on time; it logs a stats line every
 * minute when something moved.
 *
 * Shutdown, in order: stop accepting local connections; give queued peer
 * batches up to a second to leave; flush Kafka (5 s); shut the grpc server
 * down and cancel its calls; cancel peer calls and close the channels; shut
 * the completion queue down and join its thread; stop the DB threads; close
 * the local connections.  Exit 0.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "minichat/clock.h"
#include "minichat/conf.h"
#include "minichat/db_conf.h"
#include "minichat/kafka_sec.h"
#include "minichat/log.h"
#include "relay.h"

#define MAIN_EVENTS 64
#define MAIN_TICK_MS 100
#define MAIN_STATS_MS 60000

relay_conf_t relay_conf;
volatile sig_atomic_t relay_stop;

static int main_epfd = -1;
static int main_sigfd = -1;
static int main_sig_ev; /* its address marks the signalfd in epoll */
static mc_http_t *main_http; /* the operator endpoints (http_listen), or NULL */
static int main_http_ev; /* its address marks main_http's epoll set in ours */
static mc_db_conf_t main_db_conf; /* owns the password read from mysql_password_file */
static const char *main_conf_path;
static mc_conf_t *main_conf;      /* the file relay_conf points into */
/* what a SIGHUP applies; every other key waits for a restart */
static const char *const main_live_keys[] = {"log_level", "log_file", NULL};

/* how long the start-up probe waits for a Kafka broker over TLS/SASL */
#define MAIN_KAFKA_PROBE_MS 5000

static const char *const main_keys[] = {
    "node", "unix_socket", "unix_socket_mode", "unix_socket_group", "allowed_peers", "grpc_listen", "peers",
    "peer_tls_ca", "peer_tls_cert", "peer_tls_key", "peer_tls_names",
    "kafka_brokers", "kafka_topic", "kafka_linger_ms", "kafka_compression", "kafka_message_timeout_ms", MC_KAFKA_SEC_CONF_KEYS,
    MC_DB_CONF_KEYS, "log_level", "log_file",
    "local_outbuf_max_mb", "peer_queue_max", "peer_queue_max_mb", "peer_batch_kb", "peer_timeout_ms", "peer_stream",
    "peer_max_age_ms", "order_first_hold_ms", "order_gap_ms", "order_idle_ms", "order_max_held", "order_max_rooms", "order_max_ahead",
    "db_threads", "db_queue_max", "history_on_loop", "history_on_loop_max", "kafka_consumer_group", "rebuild_wait_ms", "publish_max_age_ms", "fanout",
    "http_listen", NULL};

int relay_epoll_fd(void)
{
    return main_epfd;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: relay-worker [-t] -c FILE\n"
            "\n"
            "Relays MiniChat messages between this node's nginx workers (unix socket),\n"
            "the other nodes (gRPC) and Kafka, and answers their MySQL requests.\n"
            "\n"
            "  -c, --config FILE   config file (key = value), see conf/relay-worker.conf.in\n"
            "  -t, --test          check the config file and exit: every error with its file\n"
            "                      and line, exit status 1 when there is one (nothing is connected)\n"
            "\n"
            "SIGHUP reads the file again: log_level and log_file change (the log file is\n"
            "reopened, for logrotate); other keys wait for a restart and are named.\n"
            "  -h, --help          this text\n"
            "\n"
            "keys: node, unix_socket, grpc_listen, peers (node@host:port,...),\n"
            "      peer_tls_ca, peer_tls_cert, peer_tls_key (PEM files: mutual TLS between\n"
            "      relay-workers; unset: in the clear), peer_tls_names (names,...; default: the\n"
            "      peers' node names), kafka_brokers,\n"
            "      kafka_topic, kafka_linger_ms (5), kafka_compression (none), kafka_message_timeout_ms (30000),\n"
            "      kafka_security_protocol (plaintext|ssl|sasl_plaintext|sasl_ssl), kafka_ssl_ca,\n"
            "      kafka_ssl_cert, kafka_ssl_key, kafka_sasl_mechanism (PLAIN), kafka_sasl_username,\n"
            "      kafka_sasl_password_file (docs/operations-security.md),\n"
            "      mysql_primary, mysql_replicas (host:port,...; mysql_replica: one), mysql_user,\n"
            "      mysql_password or mysql_password_file, mysql_database, mysql_replica_max_lag_ms (2000),\n"
            "      mysql_replica_check_ms (250), mysql_read_your_writes_ms (2000),\n"
            "      mysql_ssl (off|on|verify), mysql_ssl_ca, mysql_ssl_cert, mysql_ssl_key,\n"
            "      log_level (debug|info|warn|error), log_file (besides stderr; none),\n"
            "      local_outbuf_max_mb (64), peer_queue_max (100000), peer_queue_max_mb (256),\n"
            "      peer_batch_kb (1024), peer_timeout_ms (5000), peer_max_age_ms (10000),\n"
            "      peer_stream (on|off; on), publish_max_age_ms (1000), fanout (admitted|durable; admitted),\n"
            "      order_first_hold_ms (500), order_gap_ms (2000), order_idle_ms (600000),\n"
            "      order_max_held (10000), order_max_rooms (1000000), order_max_ahead (10000),\n"
            "      db_threads (2), db_queue_max (10000), history_on_loop (on|off; on),\n"
            "      history_on_loop_max (4), kafka_consumer_group (minichat-roomlist),\n"
            "      rebuild_wait_ms (5000), http_listen (ADDRESS:PORT of /metrics, /status and\n"
            "      /ready; off)\n");
}

/* Fills the unix socket's access settings of rc: the file's mode
 * and group, and the peers allowed besides root and our own user. */
static void conf_socket_access(mc_conf_t *c, relay_conf_t *rc)
{
    const char *mode = mc_conf_get(c, "unix_socket_mode", "0660");
    const char *group = mc_conf_get(c, "unix_socket_group", "");
    const char *peers = mc_conf_get(c, "allowed_peers", "");
    char err[256];

    if (mc_sock_mode_parse(mode, &rc->unix_socket_mode, err, sizeof(err)) != 0) {
        mc_conf_error(c, "unix_socket_mode", "unix_socket_mode: %s", err);
    } else if (rc->unix_socket_mode & 0002) {
        mc_warn("config: unix_socket_mode %04o lets every local user connect; only allowed_peers keeps them out",
                (unsigned)rc->unix_socket_mode);
    }
    rc->unix_socket_chgrp = group[0] != '\0';
    if (rc->unix_socket_chgrp
        && mc_sock_group_parse(group, &rc->unix_socket_group, err, sizeof(err)) != 0) {
        mc_conf_error(c, "unix_socket_group", "unix_socket_group: %s", err);
    }
    if (mc_sock_peers_parse(peers, &rc->allowed_peers, err, sizeof(err)) != 0) {
        mc_conf_error(c, "allowed_peers", "allowed_peers: %s", err);
    }
}

/* The peers list and the peer TLS keys: what can be checked without a
 * network (peer_tls_init reads and checks the PEM files themselves). */
static void conf_peers(mc_conf_t *c, relay_conf_t *rc)
{
    int set = (rc->peer_tls_ca != NULL) + (rc->peer_tls_cert != NULL) + (rc->peer_tls_key != NULL);
    char err[256];

    if (rc->node != NULL && peers_check(rc->peers, rc->node, err, sizeof(err)) != 0) {
        mc_conf_error(c, "peers", "%s", err);
    }
    if (set == 0 && rc->peer_tls_names != NULL) {
        mc_conf_error(c, "peer_tls_names", "peer_tls_names needs peer_tls_ca, peer_tls_cert and peer_tls_key");
    }
    if (set != 0 && set != 3) {
        mc_conf_error(c, rc->peer_tls_ca ? "peer_tls_ca" : rc->peer_tls_cert ? "peer_tls_cert"
                                                                                          : "peer_tls_key",
                      "peer_tls_ca, peer_tls_cert and peer_tls_key go together (set all three or none)");
    }
    mc_conf_file(c, "peer_tls_ca");
    mc_conf_file(c, "peer_tls_cert");
    mc_conf_file(c, "peer_tls_key");
}

/* Fills rc and dc (the mysql_* keys) from the file, recording every error
 * in c (the caller logs them).  Returns 0 or -1; rc->kafka_sec and dc need
 * freeing either way. */
static int conf_read(mc_conf_t *c, relay_conf_t *rc, mc_db_conf_t *dc)
{
    const char *lvl = mc_conf_get(c, "log_level", "info");
    long long outbuf, qmax, qmb, batch_kb, first_hold, gap, idle, held, rooms, ahead, db_threads, db_queue, hloop_max;
    const char *fanout, *stream;

    memset(rc, 0, sizeof(*rc));
    rc->log_level = mc_log_level_named(lvl);
    if (rc->log_level < 0) {
        mc_conf_error(c, "log_level", "log_level \"%s\" is not debug, info, warn or error", lvl);
        rc->log_level = MC_LOG_INFO;
    }
    rc->log_file = mc_conf_get(c, "log_file", "");

    rc->node = mc_conf_get(c, "node", NULL);
    rc->unix_socket = mc_conf_get(c, "unix_socket", NULL);
    rc->grpc_listen = mc_conf_get(c, "grpc_listen", NULL);
    rc->peers = mc_conf_get(c, "peers", "");
    rc->peer_tls_ca = mc_conf_get(c, "peer_tls_ca", NULL);
    rc->peer_tls_cert = mc_conf_get(c, "peer_tls_cert", NULL);
    rc->peer_tls_key = mc_conf_get(c, "peer_tls_key", NULL);
    rc->peer_tls_names = mc_conf_get(c, "peer_tls_names", NULL);
    rc->kafka_brokers = mc_conf_get(c, "kafka_brokers", NULL);
    rc->kafka_topic = mc_conf_get(c, "kafka_topic", "minichat.messages");
    rc->kafka_consumer_group = mc_conf_get(c, "kafka_consumer_group", "minichat-roomlist");
    mc_db_conf_read(c, dc);
    mc_kafka_sec_read(c, &rc->kafka_sec);
    rc->db = dc->db;
    if (rc->node == NULL || rc->node[0] == '\0' || strlen(rc->node) > 63) {
        mc_conf_error(c, "node", "node is required (at most 63 characters)");
        rc->node = NULL;
    }
    if (rc->unix_socket == NULL) {
        mc_conf_error(c, NULL, "unix_socket is required");
    }
    if (rc->grpc_listen == NULL) {
        mc_conf_error(c, NULL, "grpc_listen is required");
    }
    if (rc->kafka_brokers == NULL) {
        mc_conf_error(c, NULL, "kafka_brokers is required");
    }
    conf_socket_access(c, rc);
    conf_peers(c, rc);
    rc->http_on = mc_http_conf_listen(c, "http_listen", &rc->http_listen) == 1;
    mc_conf_int(c, "kafka_linger_ms", 5, 0, 10000, &rc->kafka_linger_ms);
    rc->kafka_compression = mc_conf_get(c, "kafka_compression", "none");
    if (strcmp(rc->kafka_compression, "none") != 0 && strcmp(rc->kafka_compression, "lz4") != 0
        && strcmp(rc->kafka_compression, "zstd") != 0 && strcmp(rc->kafka_compression, "gzip") != 0
        && strcmp(rc->kafka_compression, "snappy") != 0)
    {
        mc_conf_error(c, "kafka_compression", "kafka_compression must be none, lz4, zstd, gzip or snappy, not \"%s\"",
                      rc->kafka_compression);
    }
    mc_conf_int(c, "kafka_message_timeout_ms", 30000, 1000, 900000, &rc->kafka_timeout_ms);
    mc_conf_int(c, "local_outbuf_max_mb", 64, 1, 4096, &outbuf);
    mc_conf_int(c, "peer_queue_max", 100000, 1, 100000000, &qmax);
    mc_conf_int(c, "peer_queue_max_mb", 256, 8, 65536, &qmb);
    mc_conf_int(c, "peer_batch_kb", 1024, 1, 32768, &batch_kb);
    mc_conf_int(c, "peer_timeout_ms", 5000, 10, 600000, &rc->peer_timeout_ms);
    mc_conf_int(c, "peer_max_age_ms", 10000, 100, 3600000, &rc->peer_max_age_ms);
    stream = mc_conf_get(c, "peer_stream", "on");
    if (strcmp(stream, "on") == 0) {
        rc->peer_stream = 1;
    } else if (strcmp(stream, "off") == 0) {
        rc->peer_stream = 0;
    } else {
        mc_conf_error(c, "peer_stream", "peer_stream must be \"on\" or \"off\", not \"%s\"", stream);
    }
    mc_conf_int(c, "publish_max_age_ms", 1000, 100, 600000, &rc->publish_max_age_ms);
    mc_conf_int(c, "order_first_hold_ms", 500, 0, 10000, &first_hold);
    mc_conf_int(c, "order_gap_ms", 2000, 1, 60000, &gap);
    mc_conf_int(c, "order_idle_ms", 600000, 1000, 86400000, &idle);
    mc_conf_int(c, "order_max_held", 10000, 1, 10000000, &held);
    mc_conf_int(c, "order_max_rooms", 1000000, 1000, 100000000, &rooms);
    mc_conf_int(c, "order_max_ahead", 10000, 100, 1000000000, &ahead);
    mc_conf_int(c, "db_threads", 2, 1, 16, &db_threads);
    mc_conf_int(c, "db_queue_max", 10000, 1, 10000000, &db_queue);
    mc_conf_int(c, "history_on_loop_max", 4, 1, 64, &hloop_max);
    mc_conf_flag(c, "history_on_loop", 1, &rc->history_on_loop);
    mc_conf_int(c, "rebuild_wait_ms", 5000, 0, 600000, &rc->rebuild_wait_ms);
    fanout = mc_conf_get(c, "fanout", "admitted");
    if (strcmp(fanout, "durable") == 0) {
        rc->fanout_durable = 1;
    } else if (strcmp(fanout, "admitted") != 0) {
        mc_conf_error(c, "fanout", "fanout must be \"admitted\" or \"durable\", not \"%s\"", fanout);
    }
    rc->order.first_hold_ms = (uint64_t)first_hold;
    rc->order.gap_ms = (uint64_t)gap;
    rc->order.idle_ms = (uint64_t)idle;
    rc->order.max_held = (size_t)held;
    rc->order.max_rooms = (size_t)rooms;
    rc->order.max_ahead = (uint64_t)ahead;
    rc->db_threads = (int)db_threads;
    rc->db_queue_max = (size_t)db_queue;
    rc->history_on_loop_max = (int)hloop_max;
    rc->local_outbuf_max = (size_t)outbuf << 20;
    rc->peer_queue_max = (size_t)qmax;
    rc->peer_queue_bytes = (size_t)qmb << 20;
    rc->peer_batch_bytes = (size_t)batch_kb << 10;
    return mc_conf_nerrors(c) ? -1 : 0;
}

/* With TLS or SASL to Kafka, connects once now: a wrong CA, certificate or
 * password stops the start with the broker's reason; brokers that are not
 * up yet only get a warning (librdkafka keeps trying).  Returns 0 or -1. */
static int kafka_check_start(void)
{
    char err[512];
    int rc;

    if (relay_conf.kafka_sec.protocol == MC_KAFKA_PLAINTEXT) {
        return 0;
    }
    rc = mc_kafka_sec_probe(&relay_conf.kafka_sec, relay_conf.kafka_brokers, MAIN_KAFKA_PROBE_MS, err, sizeof(err));
    if (rc < 0) {
        mc_error("kafka: cannot connect over %s: %s (check kafka_ssl_ca, kafka_ssl_cert/key and the kafka_sasl_* "
                 "keys)", mc_kafka_protocol_name(relay_conf.kafka_sec.protocol), err);
        return -1;
    }
    if (rc > 0) {
        mc_warn("kafka: %s; carrying on, producing once a broker answers", err);
    } else {
        mc_info("kafka: brokers answer over %s", mc_kafka_protocol_name(relay_conf.kafka_sec.protocol));
    }
    return 0;
}

/* Blocks the stop signals in this and future threads and opens a signalfd
 * for them in epoll.  Returns 0 or -1. */
static int signals_init(void)
{
    struct epoll_event ev;
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        return -1;
    }
    main_sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (main_sigfd < 0) {
        mc_error("signalfd: %s", strerror(errno));
        return -1;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = &main_sig_ev;
    if (epoll_ctl(main_epfd, EPOLL_CTL_ADD, main_sigfd, &ev) != 0) {
        mc_error("epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Opens the log file the config names (reopens it when it is the same:
 * logrotate's way) and sets the level.  Returns 0 or -1 with a log line. */
static int log_apply(const relay_conf_t *rc)
{
    char err[512];

    if (mc_log_file(rc->log_file, err, sizeof(err)) != 0) {
        mc_error("config: log_file: %s", err);
        return -1;
    }
    mc_log_set_level(rc->log_level);
    return 0;
}

/* SIGHUP: reads the file again.  A file with errors changes nothing (they
 * are logged); a good one reopens the log file and sets the level, and each
 * other key that changed is named as waiting for a restart. */
static void reload(void)
{
    relay_conf_t next;
    mc_db_conf_t next_db;
    mc_conf_t *c;
    char err[512];

    mc_info("got SIGHUP: reading %s again", main_conf_path);
    c = mc_conf_load(main_conf_path, main_keys, err, sizeof(err));
    if (c == NULL) {
        mc_error("reload: config: %s; the running config stays", err);
        return;
    }
    if (conf_read(c, &next, &next_db) != 0) {
        mc_conf_log_errors(c);
        mc_error("reload: %s has errors; the running config stays", main_conf_path);
    } else if (log_apply(&next) == 0) {
        mc_conf_warn_restart_keys(main_conf, c, main_keys, main_live_keys);
        mc_info("reload: done (log_level %s, log_file \"%s\")", mc_conf_get(c, "log_level", "info"), next.log_file);
    }
    mc_kafka_sec_free(&next.kafka_sec);
    mc_db_conf_free(&next_db);
    mc_conf_free(c);
}

static void on_signal(void)
{
    struct signalfd_siginfo si;

    while (read(main_sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            reload();
            continue;
        }
        mc_info("got signal %u, stopping", si.ssi_signo);
        relay_stop = 1;
    }
}

/* Logs the counters when any moved since the last call. */
static void log_stats(void)
{
    static uint64_t last[14];
    uint64_t v[14];
    mc_reorder_stats_t os;

    link_stats(&v[0], &v[1], &v[11], &v[13]);
    kafka_stats(&v[2], &v[3], &v[4]);
    peers_stats(&v[5], &v[6], &v[7]);
    order_stats(&os);
    v[8] = os.released;
    v[9] = os.late;
    v[10] = os.skipped;
    v[12] = os.refused;
    if (memcmp(v, last, sizeof(v)) == 0) {
        return;
    }
    memcpy(last, v, sizeof(v));
    mc_info("stats: workers %llu (dropped %llu, refused %llu, deliver skipped %llu); kafka produced %llu, delivered %llu, failed %llu; "
            "peers sent %llu, dropped %llu, failed calls %llu; order released %llu, late %llu, skipped %llu, "
            "refused %llu, rooms %llu, held %llu",
            (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)v[11], (unsigned long long)v[13],
            (unsigned long long)v[2],
            (unsigned long long)v[3], (unsigned long long)v[4], (unsigned long long)v[5], (unsigned long long)v[6],
            (unsigned long long)v[7], (unsigned long long)v[8], (unsigned long long)v[9], (unsigned long long)v[10],
            (unsigned long long)v[12], (unsigned long long)os.rooms, (unsigned long long)os.held);
}

/* Handles n ready events: signals, Kafka's queue, worker connections.  The
 * round's writes to the workers leave corked (one write per worker for
 * everything the round released or answered), and the peers are kicked
 * once, so that what the round queued for them leaves in one call. */
static void dispatch(const struct epoll_event *evs, int n)
{
    int i;

    link_cork();
    for (i = 0; i < n; i++) {
        if (evs[i].data.ptr == &main_sig_ev) {
            on_signal();
        } else if (evs[i].data.ptr == &main_http_ev) {
            mc_http_run(main_http, 0);
        } else if (kafka_is_event(evs[i].data.ptr)) {
            kafka_on_event();
        } else if (hloop_is_event(evs[i].data.ptr)) {
            hloop_on_event(evs[i].data.ptr, evs[i].events);
        } else {
            link_on_event(evs[i].data.ptr, evs[i].events);
        }
    }
    kafka_poll();
    link_uncork();
    peers_kick();
}

/* Starts the operator endpoints when http_listen is set, in our epoll set.
 * Returns 0 or -1 (a port taken: the start fails, as for grpc_listen). */
static int http_start(void)
{
    static const mc_http_handler_t handler = {relay_metrics_text, relay_status_json, relay_ready};
    struct epoll_event ev;
    char err[256];

    if (!relay_conf.http_on) {
        return 0;
    }
    main_http = mc_http_start(&relay_conf.http_listen, &handler, err, sizeof(err));
    if (main_http == NULL) {
        mc_error("http: %s", err);
        return -1;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = &main_http_ev;
    if (epoll_ctl(main_epfd, EPOLL_CTL_ADD, mc_http_fd(main_http), &ev) != 0) {
        mc_error("http: epoll_ctl: %s", strerror(errno));
        return -1;
    }
    mc_info("http: /metrics, /status and /ready on %s", relay_conf.http_listen.text);
    return 0;
}

/* The epoll loop: runs until a stop signal. */
static void main_loop(void)
{
    struct epoll_event evs[MAIN_EVENTS];
    uint64_t now, next_stats = mc_now_ms() + MAIN_STATS_MS, next_http = 0;
    long wait, order_wait;
    int n;

    while (!relay_stop) {
        wait = peers_tick(mc_now_ms());
        if (wait < 0 || wait > MAIN_TICK_MS) {
            wait = MAIN_TICK_MS;
        }
        order_wait = order_tick(mc_now_ms());
        if (order_wait >= 0 && order_wait < wait) {
            wait = order_wait;
        }
        n = epoll_wait(main_epfd, evs, MAIN_EVENTS, (int)wait);
        if (n < 0 && errno != EINTR) {
            mc_error("epoll_wait: %s", strerror(errno));
            break;
        }
        dispatch(evs, n);
        now = mc_now_ms();
        hloop_tick((int64_t)now);
        if (main_http != NULL && now >= next_http) {
            next_http = now + 1000;
            mc_http_run(main_http, 0); /* closes idle clients */
        }
        if (now >= next_stats) {
            next_stats = now + MAIN_STATS_MS;
            log_stats();
        }
    }
}

/* Before stopping, gives peers and Kafka up to ms milliseconds to take what
 * is queued, while the event loop keeps serving the workers' connections:
 * the publish results that Kafka's delivery reports produce must reach the
 * workers, or their clients wait for a timeout instead of an ack. */
static void drain(int ms)
{
    struct epoll_event evs[MAIN_EVENTS];
    uint64_t until = mc_now_ms() + (uint64_t)ms, quiet_until = 0, now;
    int n;

    while ((now = mc_now_ms()) < until) {
        if (peers_idle() && kafka_pending() == 0) {
            /* one more short round so that the last answers leave */
            if (quiet_until == 0) {
                quiet_until = now + 50;
            } else if (now >= quiet_until) {
                break;
            }
        } else {
            quiet_until = 0;
        }
        peers_tick(now);
        order_tick(now);
        n = epoll_wait(main_epfd, evs, MAIN_EVENTS, 10);
        dispatch(evs, n);
        hloop_tick((int64_t)mc_now_ms());
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    static const link_handler_t handler = {dispatch_frame, dispatch_read_done};
    const char *path = NULL;
    mc_conf_t *conf;
    char err[512];
    int opt, rc = 1, test = 0;

    mc_log_init("relay-worker", MC_LOG_INFO);
    while ((opt = getopt_long(argc, argv, "c:th", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    conf = mc_conf_load(path, main_keys, err, sizeof(err));
    if (conf == NULL) {
        mc_error("config: %s", err);
        if (test) {
            fprintf(stderr, "relay-worker: configuration file %s test failed\n", path);
        }
        return 1;
    }
    conf_read(conf, &relay_conf, &main_db_conf);
    /* -t also opens the log file and reads the peer TLS files, as a start would */
    rc = mc_conf_log_errors(conf) != 0 || log_apply(&relay_conf) != 0 || (test && peer_tls_init(&relay_conf) != 0);
    if (rc != 0 || test) {
        if (test) {
            fprintf(stderr, "relay-worker: configuration file %s test %s\n", path, rc ? "failed" : "is successful");
        }
        peer_tls_free();
        mc_kafka_sec_free(&relay_conf.kafka_sec);
        mc_db_conf_free(&main_db_conf);
        mc_conf_free(conf);
        return rc;
    }
    rc = 1;
    main_conf_path = path;
    main_conf = conf;

    relay_status_start();
    relay_metrics_init();
    main_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (main_epfd < 0) {
        mc_error("epoll_create1: %s", strerror(errno));
        goto out;
    }
    if (signals_init() != 0 || peer_tls_init(&relay_conf) != 0 || kafka_check_start() != 0
        || db_check_start(&relay_conf) != 0 || order_init(&relay_conf.order) != 0 || kafka_init(&relay_conf) != 0
        || dispatch_init() != 0 || rpc_start(relay_conf.grpc_listen) != 0
        || peers_init(relay_conf.peers, relay_conf.node) != 0
        || db_jobs_start(&relay_conf) != 0 || hloop_start_loop(&relay_conf) != 0 || link_listen(relay_conf.unix_socket, &handler) != 0
        || http_start() != 0) {
        goto stop;
    }
    mc_info("ready: node \"%s\", unix socket %s, grpc %s, peers \"%s\"", relay_conf.node, relay_conf.unix_socket,
            relay_conf.grpc_listen, relay_conf.peers);

    main_loop();
    rc = (relay_stop && !kafka_fatal) ? 0 : 1;
    link_stop_accepting();
    drain(kafka_fatal ? 0 : 3000);
    log_stats();
stop:
    kafka_close();
    rpc_server_shutdown();
    peers_shutdown();
    rpc_stop();
    hloop_stop();
    db_jobs_stop();
    link_close_all();
    order_close();
    peer_tls_free();
    mc_http_stop(main_http);
    main_http = NULL;
    mc_info("stopped");
out:
    if (main_sigfd >= 0) {
        close(main_sigfd);
    }
    if (main_epfd >= 0) {
        close(main_epfd);
    }
    mc_kafka_sec_free(&relay_conf.kafka_sec);
    mc_db_conf_free(&main_db_conf);
    mc_conf_free(conf);
    return rc;
}
