/*
 * The Kafka producer: every published message goes to the messages topic,
 * key = room id in decimal (so a room's messages share a partition and keep
 * their order), value = the packed ChatMessage with `recipients` cleared.
 *
 * The producer is idempotent with acks=all: librdkafka retries on its own
 * without duplicating or reordering within a partition.  Everything runs on
 * the main thread: produce() from the publish path, poll() once per epoll
 * round (delivery reports and logs come back there), flush() on shutdown.
 * The producer waits kafka_linger_ms (5) to put several messages in one
 * ProduceRequest (fewer requests, wakeups and syscalls per message in both
 * the relay-worker and the broker, for at most that much more on the
 * sender's ack), and the acks one poll answers leave corked: one write per
 * nginx worker (worker_link.c).  Batches go uncompressed unless
 * kafka_compression says otherwise: a batch of a few short chat messages
 * gains little, and compressing it here and decompressing it in the broker
 * (which validates every batch) cost CPU per message on both sides.
 * With `fanout = durable` a message's fan-out (the peers and this node's
 * reorderer) waits for its delivery report, in its waiter: recipients see
 * only what Kafka has (dispatch.c fans out at once otherwise, and repairs
 * always wait here).  A retriable failure (a timeout, a leader moving) is produced
 * again while the message may still be published (publish_max_age_ms after
 * its seq was assigned); later, the module's sweeper publishes it again
 * from Redis.  A fatal producer error stops the relay-worker.
 * Delivery failures are counted and logged at error level, at most once a
 * second, with the running count.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "minichat/clock.h"
#include "minichat/log.h"
#include "relay.h"

#define KAFKA_TRIES_MAX 5   /* produce calls per message, the first included */
#define KAFKA_STATS_MS "1000" /* statistics.interval.ms: how soon a broker back up clears brokers_down */

static rd_kafka_t *kafka_rk;
static int kafka_evfd = -1;
int kafka_fatal;
static rd_kafka_topic_t *kafka_rkt;
static uint64_t kafka_produced, kafka_delivered, kafka_failed;
static uint64_t kafka_last_fail_log;
static int kafka_brokers_down;          /* all brokers were down, no delivery since */
static uint64_t kafka_last_delivered;   /* mc_now_ms() of the last successful delivery report */

/* Logs a failure, at most once a second (main thread). */
static void kafka_fail(const char *what, const char *reason)
{
    uint64_t now = mc_now_ms();

    kafka_failed++;
    if (now - kafka_last_fail_log >= 1000) {
        kafka_last_fail_log = now;
        mc_error("kafka: %s: %s (%" PRIu64 " failed so far)", what, reason, kafka_failed);
    }
}

/* Who waits for a message's delivery report: the nginx worker connection
 * and its request id (0: nobody), and the fan-out that waits for the
 * message to be durable.  The worker acks its client only on success. */
typedef struct {
    uint64_t conn_id;
    uint64_t req_id;
    uint64_t room, seq;
    uint64_t admitted_at;   /* the message's stamp (wall ms), 0: none */
    int64_t produced_us;    /* when it was first produced (mc_now_us), for the latency histogram */
    unsigned tries;         /* produce calls so far */
    kafka_fanout_t fan;     /* fan.frame NULL: nothing to fan out */
} kafka_waiter_t;

static kafka_durable_pt kafka_on_durable;
static uint64_t kafka_reproduced;

void kafka_set_durable_handler(kafka_durable_pt fn)
{
    kafka_on_durable = fn;
}

/* Frees a waiter and its fan-out (main thread). */
static void kafka_waiter_free(kafka_waiter_t *w)
{
    if (w) {
        free(w->fan.frame);
        free(w);
    }
}

int kafka_err_retriable(int err)
{
    switch ((rd_kafka_resp_err_t)err) {
    /* librdkafka's own: the broker or the network did not answer in time */
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    /* the broker's: leadership moving, replicas catching up */
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
        return 1;
    default:
        /* too large, not authorised, purged at shutdown, fatal: producing
         * the same bytes again cannot succeed */
        return 0;
    }
}

/* Produces the same bytes again for a retriable failure while the message
 * may still be published (publish_max_age_ms after its seq was assigned).
 * Returns 1 when it is on its way again, 0 when the failure stands. */
static int kafka_reproduce(const rd_kafka_message_t *m, kafka_waiter_t *w)
{
    if (w == NULL || !kafka_err_retriable(m->err) || w->tries >= KAFKA_TRIES_MAX
        || (w->admitted_at && mc_wall_ms() - (int64_t)w->admitted_at > relay_conf.publish_max_age_ms)) {
        return 0;
    }
    if (rd_kafka_produce(kafka_rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, m->payload, m->len, m->key,
                         m->key_len, w) != 0) {
        return 0;
    }
    w->tries++;
    kafka_reproduced++;
    mc_warn("kafka: room %" PRIu64 " seq %" PRIu64 ": %s, produced again", w->room, w->seq,
            rd_kafka_err2str(m->err));
    return 1;
}

/* Tells the waiting worker whether Kafka has the message (main thread). */
void kafka_answer(uint64_t conn_id, uint64_t req_id, const char *error)
{
    Minichat__LocalFrame f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__PublishResult r = MINICHAT__PUBLISH_RESULT__INIT;
    uint8_t *frame;
    size_t len;

    r.ok = error == NULL;
    r.error = (char *)(error ? error : "");
    f.req_id = req_id;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_PUBLISH_RESULT;
    f.publish_result = &r;
    frame = relay_pack_frame(&f, &len);
    if (frame == NULL) {
        mc_error("kafka: out of memory answering request %llu", (unsigned long long)req_id);
        return;
    }
    (void)link_send(conn_id, frame, len);   /* the worker may have gone: nothing to do then */
    free(frame);
}

/* Delivery report: one per produced message, from rd_kafka_poll(). */
static void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    kafka_waiter_t *w = m->_private;

    (void)rk;
    (void)opaque;
    if (m->err && kafka_reproduce(m, w)) {
        return;
    }
    if (m->err) {
        kafka_fail("delivery failed", rd_kafka_err2str(m->err));
    } else {
        kafka_delivered++;
        kafka_brokers_down = 0;
        kafka_last_delivered = mc_now_ms();
        if (w != NULL) {
            mc_hist_observe(&relay_hists.kafka_produce, (uint64_t)(mc_now_us() - w->produced_us));
        }
        /* dispatch.c refused it if it came this late; Kafka took this long
         * on its own: a Redis failover meanwhile could reissue its seq */
        if (w && w->admitted_at && mc_wall_ms() - (int64_t)w->admitted_at > relay_conf.publish_max_age_ms) {
            mc_warn("kafka: room %" PRIu64 " seq %" PRIu64 " reached Kafka %lld ms after its seq was assigned "
                    "(publish_max_age_ms %lld)", w->room, w->seq,
                    (long long)(mc_wall_ms() - (int64_t)w->admitted_at), relay_conf.publish_max_age_ms);
        }
    }
    if (w == NULL) {
        return;
    }
    /* durable: now the recipients may see it (they never see a message
     * that Kafka refused), then the sender gets its ack */
    if (!m->err && w->fan.frame && kafka_on_durable) {
        kafka_on_durable(w->room, w->seq, &w->fan);
    }
    if (w->req_id) {
        kafka_answer(w->conn_id, w->req_id, m->err ? rd_kafka_err2str(m->err) : NULL);
    }
    kafka_waiter_free(w);
}

/* Routes librdkafka's own log lines through mc_log. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    mc_log(level <= LOG_ERR ? MC_LOG_ERROR : level == LOG_WARNING ? MC_LOG_WARN
           : level <= LOG_INFO ? MC_LOG_INFO : MC_LOG_DEBUG, "kafka: %s: %s", fac, buf);
}

/* librdkafka's statistics (every KAFKA_STATS_MS), read for one thing: is a
 * broker connection up again?  librdkafka reports "all brokers down"
 * (kafka_error_cb) but never that one came back, and an idle producer
 * delivers nothing that would say so: without this, /ready stayed 503
 * after Kafka returned until the next message, which an unready node may
 * never get. */
static int kafka_stats_cb(rd_kafka_t *rk, char *text, size_t len, void *opaque)
{
    json_t *root = json_loadb(text, len, 0, NULL), *b;
    const char *name, *state;

    (void)rk;
    (void)opaque;
    json_object_foreach(json_object_get(root, "brokers"), name, b) {
        state = json_string_value(json_object_get(b, "state"));
        if (strstr(name, "/internal") == NULL && state != NULL && strcmp(state, "UP") == 0) {
            kafka_brokers_down = 0;
            break;
        }
    }
    json_decref(root);
    return 0; /* librdkafka frees text */
}

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[512];

        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        mc_error("kafka: fatal error: %s; exiting so that a supervisor restarts a working producer", fatal);
        /* an idempotent producer cannot recover from a fatal error: every
         * later produce fails, so staying up would refuse every send */
        kafka_fatal = 1;
        relay_stop = 1;
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        kafka_brokers_down = 1;
        mc_warn("kafka: %s", reason);
        return;
    }
    mc_debug("kafka: %s", reason); /* the log callback has reported it already */
}

/* Sets one property.  Returns 0, or -1 with a log line. */
static int kafka_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        mc_error("kafka: %s=%s: %s", key, value, errstr);
        return -1;
    }
    return 0;
}

int kafka_init(const relay_conf_t *rc)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512], linger[32], timeout[32], client_id[128];

    if (conf == NULL) {
        return -1;
    }
    snprintf(linger, sizeof(linger), "%lld", rc->kafka_linger_ms);
    snprintf(timeout, sizeof(timeout), "%lld", rc->kafka_timeout_ms);
    snprintf(client_id, sizeof(client_id), "minichat-relay-%s", rc->node);
    if (kafka_set(conf, "bootstrap.servers", rc->kafka_brokers) != 0 || kafka_set(conf, "client.id", client_id) != 0
        || kafka_set(conf, "enable.idempotence", "true") != 0 || kafka_set(conf, "acks", "all") != 0
        || kafka_set(conf, "linger.ms", linger) != 0 || kafka_set(conf, "message.timeout.ms", timeout) != 0
        || kafka_set(conf, "compression.type", rc->kafka_compression) != 0
        || kafka_set(conf, "queue.buffering.max.messages", "1000000") != 0
        || kafka_set(conf, "queue.buffering.max.kbytes", "262144") != 0
        || kafka_set(conf, "statistics.interval.ms", KAFKA_STATS_MS) != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    if (mc_kafka_sec_apply(&rc->kafka_sec, conf, errstr, sizeof(errstr)) != 0) {
        mc_error("kafka: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, kafka_dr_cb);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    rd_kafka_conf_set_stats_cb(conf, kafka_stats_cb);

    kafka_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (kafka_rk == NULL) {
        mc_error("kafka: %s", errstr); /* conf is freed by rd_kafka_new() only on success */
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    kafka_rkt = rd_kafka_topic_new(kafka_rk, rc->kafka_topic, NULL);
    if (kafka_rkt == NULL) {
        mc_error("kafka: topic \"%s\": %s", rc->kafka_topic, rd_kafka_err2str(rd_kafka_last_error()));
        rd_kafka_destroy(kafka_rk);
        kafka_rk = NULL;
        return -1;
    }
    mc_info("kafka: producing to \"%s\" on %s over %s (linger.ms=%lld, compression.type=%s, message.timeout.ms=%lld)",
            rc->kafka_topic, rc->kafka_brokers, mc_kafka_protocol_name(rc->kafka_sec.protocol), rc->kafka_linger_ms,
            rc->kafka_compression, rc->kafka_timeout_ms);
    /* delivery reports wake the epoll loop at once: the ack of every send
     * waits for its report, so a poll every tick would add up to a tick */
    kafka_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (kafka_evfd < 0) {
        mc_error("kafka: eventfd: %s", strerror(errno));
        return -1;
    }
    {
        static const uint64_t one = 1;
        rd_kafka_queue_t *q = rd_kafka_queue_get_main(kafka_rk);
        struct epoll_event ev;

        rd_kafka_queue_io_event_enable(q, kafka_evfd, &one, sizeof(one));
        rd_kafka_queue_destroy(q);
        ev.events = EPOLLIN;
        ev.data.ptr = &kafka_evfd;
        if (epoll_ctl(relay_epoll_fd(), EPOLL_CTL_ADD, kafka_evfd, &ev) != 0) {
            mc_error("kafka: epoll_ctl: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

void kafka_produce(Minichat__ChatMessage *m, uint64_t conn_id, uint64_t req_id, kafka_fanout_t *fan)
{
    size_t n_rcpt = m->n_recipients, n;
    uint64_t *rcpt = m->recipients;
    kafka_waiter_t *w = NULL;
    char key[24];
    uint8_t *buf;
    int klen, tries;

    if (req_id || (fan && fan->frame)) {
        w = calloc(1, sizeof(*w));
        if (w == NULL) {
            kafka_fail("produce", "out of memory");
            if (req_id) {
                kafka_answer(conn_id, req_id, "out of memory");
            }
            if (fan) {
                free(fan->frame);
            }
            return;
        }
        w->conn_id = conn_id;
        w->req_id = req_id;
        w->room = m->room;
        w->seq = m->seq;
        w->admitted_at = m->admitted_at;
        w->produced_us = mc_now_us();
        w->tries = 1;
        if (fan) {
            w->fan = *fan;   /* the waiter owns the frame now */
        }
    } else if (fan) {
        free(fan->frame);
    }

    m->n_recipients = 0;
    m->recipients = NULL;
    n = minichat__chat_message__get_packed_size(m);
    buf = malloc(n ? n : 1);
    if (buf != NULL) {
        minichat__chat_message__pack(m, buf);
    }
    m->n_recipients = n_rcpt;
    m->recipients = rcpt;
    if (buf == NULL) {
        kafka_fail("produce", "out of memory");
        if (w && req_id) {
            kafka_answer(conn_id, req_id, "out of memory");
        }
        kafka_waiter_free(w);
        return;
    }
    klen = snprintf(key, sizeof(key), "%" PRIu64, m->room);

    for (tries = 0; tries < 2; tries++) {
        if (rd_kafka_produce(kafka_rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_FREE, buf, n, key, (size_t)klen, w)
            == 0) {
            kafka_produced++;
            return;
        }
        if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            break;
        }
        rd_kafka_poll(kafka_rk, 0); /* serve delivery reports; never wait: local delivery must not stall */
    }
    kafka_fail("produce", rd_kafka_err2str(rd_kafka_last_error()));
    if (w && req_id) {
        kafka_answer(conn_id, req_id, rd_kafka_err2str(rd_kafka_last_error()));
    }
    kafka_waiter_free(w);
    free(buf);
}

void kafka_poll(void)
{
    if (kafka_rk != NULL) {
        /* a poll serves a batch of delivery reports, one ack each: they
         * leave together, one write per worker */
        link_cork();
        rd_kafka_poll(kafka_rk, 0);
        link_uncork();
    }
}

void kafka_close(void)
{
    rd_kafka_resp_err_t err;
    int left;

    if (kafka_rk == NULL) {
        return;
    }
    err = rd_kafka_flush(kafka_rk, 5000);
    left = rd_kafka_outq_len(kafka_rk);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || left > 0) {
        mc_error("kafka: flush: %s, %d messages not delivered", rd_kafka_err2str(err), left);
        /* fail what is left so its delivery reports run: the waiting workers
         * answer their clients "unavailable" and no waiter leaks */
        rd_kafka_purge(kafka_rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(kafka_rk, 0);
    }
    mc_info("kafka: produced %" PRIu64 ", delivered %" PRIu64 ", failed %" PRIu64 ", produced again %" PRIu64,
            kafka_produced, kafka_delivered, kafka_failed, kafka_reproduced);
    rd_kafka_topic_destroy(kafka_rkt);
    rd_kafka_destroy(kafka_rk);
    kafka_rkt = NULL;
    kafka_rk = NULL;
    if (kafka_evfd >= 0) {
        close(kafka_evfd);   /* only now: librdkafka writes to it until destroyed */
        kafka_evfd = -1;
    }
}

void kafka_stats(uint64_t *produced, uint64_t *delivered, uint64_t *failed)
{
    *produced = kafka_produced;
    *delivered = kafka_delivered;
    *failed = kafka_failed;
}


int kafka_pending(void)
{
    return kafka_rk ? rd_kafka_outq_len(kafka_rk) : 0;
}

int kafka_is_event(void *ptr)
{
    return ptr == &kafka_evfd;
}

void kafka_on_event(void)
{
    uint64_t v;

    while (read(kafka_evfd, &v, sizeof(v)) > 0) {
    }
    kafka_poll();
}

void kafka_state(kafka_state_t *st)
{
    st->fatal = kafka_fatal;
    st->brokers_down = kafka_brokers_down;
    st->last_delivered_ms = kafka_last_delivered;
    st->pending = (uint64_t)kafka_pending();
    st->produced = kafka_produced;
    st->delivered = kafka_delivered;
    st->failed = kafka_failed;
}
