/*
 * The roomlist-consumer's Kafka loop.
 *
 * A high-level consumer in group `minichat-roomlist` with auto-commit off
 * reads topic `minichat.messages`, whose records are keyed by room and hold one
 * packed ChatMessage each.  Records are unpacked into an mc_msgbatch_t until
 * the batch holds batch_size records, or batch_ms have passed since its first
 * record was produced and no fetched record is ready (so a backlog makes
 * full batches); then the store writes the batch in one transaction on the primary,
 * and only after COMMIT are the batch's offsets committed to Kafka, for the
 * partitions we still own.  That order gives at-least-once delivery into
 * MySQL, and the store's INSERT IGNORE on (room_id, seq) with forward-only
 * updates turns it into exactly-once rows.
 *
 * In steady state the offset commit is asynchronous: the loop goes on to the
 * next batch instead of waiting a round trip to the group coordinator (one
 * of the seven round trips a batch used to wait for).  A commit that fails
 * or is lost only makes the records be read again, which the rows'
 * idempotence makes harmless; failures are counted from the commit callback.
 * Before partitions are revoked and at shutdown the offsets are committed
 * synchronously, all of them sent since the last synchronous commit (the
 * `sent` list): requests to the coordinator are answered in order, so when
 * that commit returns the earlier asynchronous ones are settled too, and the
 * next owner starts where we stopped.
 *
 * At a light load each record used to wake the consumer on its own (a
 * fetch answered as soon as one record was there: about 100 CPU-us per
 * record at 400 a second).  So the broker is asked to hold a fetch until
 * it has RC_FETCH_MIN_BYTES or batch_ms have passed (at most a second;
 * librdkafka's defaults when batch_ms is 0), and the batch's wait
 * counts from its first record's produce time (its Kafka timestamp, at
 * most batch_ms back), not from its arrival: a record held in the fetch
 * has already waited, and the two waits do not add up.
 *
 * A record that does not unpack is logged with its partition and offset and
 * skipped: its offset is committed with the batch, so it is not read again.
 *
 * When the store fails, the batch is kept and retried with a backoff from
 * 100 ms to 5 s.  Meanwhile the assignment is paused and the consumer keeps
 * polling, so it stays in the group (max.poll.interval.ms) and serves
 * rebalances; records that were already fetched join the batch.
 *
 * Rebalances use our own callback: before partitions are revoked the batch is
 * flushed once, so the next owner starts where we stopped.  If that flush
 * fails the batch is kept and written later; the next owner re-reads those
 * records from the last committed offsets, which is harmless.  Offsets are
 * only ever committed for rows already in MySQL, so no interleaving of owners
 * can lose a record.  Both the eager and the cooperative protocols are served.
 *
 * With push_topic set, a batch also pushes events for its offline
 * recipients (push.c) between the store's COMMIT and the offset commit; a
 * push that must be retried retries the whole batch (the store's writes
 * are idempotent).
 *
 * On SIGTERM/SIGINT the loop ends, the batch is flushed (a few attempts only,
 * so a dead database cannot block shutdown; what is left is re-read at the
 * next start), and the consumer leaves the group and is destroyed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "metrics.h"
#include "kafka_log.h"
#include "minichat/clock.h"
#include "minichat/log.h"

#define RC_POLL_MS 100
#define RC_BACKOFF_MIN_MS 100
#define RC_BACKOFF_MAX_MS 5000
#define RC_SHUTDOWN_ATTEMPTS 3
#define RC_DESTROY_WAIT_S 10   /* how long rd_kafka_destroy may take before the handle is left behind */
#define RC_FETCH_MIN_BYTES "65536"  /* a fetch is answered at this much data, or after batch_ms ... */
#define RC_FETCH_WAIT_MAX_MS 1000    /* ... or this, if shorter (below socket.timeout.ms, and the batch's
                                        wait counts from the produce time anyway) */

static void consumer_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                                  void *opaque);
static int consumer_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value);
static int consumer_handle(rc_consumer_t *c, rd_kafka_message_t *rkm);
static int64_t consumer_batch_start(rc_consumer_t *c, const rd_kafka_message_t *rkm);
static int consumer_track(rc_consumer_t *c, const char *topic, int32_t partition, int64_t offset);
static int consumer_flush(rc_consumer_t *c, int max_attempts);
static void consumer_commit(rc_consumer_t *c, int sync);
static void consumer_settle(rc_consumer_t *c);
static int consumer_send(rc_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets, int sync);
static int consumer_merge(rd_kafka_topic_partition_list_t *into, const rd_kafka_topic_partition_list_t *from);
static void consumer_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                               void *opaque);
static void consumer_reset_batch(rc_consumer_t *c);
static void consumer_pause(rc_consumer_t *c, int pause);
static int64_t consumer_lag(rc_consumer_t *c);
static void consumer_stats(rc_consumer_t *c);
static void consumer_publish(rc_consumer_t *c, int running);

/* Sets one librdkafka property.  Returns 0, or -1 after logging why. */
static int consumer_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        mc_error("kafka: cannot set %s=\"%s\": %s", name, value, errstr);
        return -1;
    }
    return 0;
}

int rc_consumer_init(rc_consumer_t *c, const rc_consumer_config_t *cfg, rc_store_t *store, rc_push_t *push,
                     volatile sig_atomic_t *run)
{
    rd_kafka_conf_t *conf;
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t err;
    char errstr[512], fetch_wait[16];
    uint64_t malformed, consumed, commits_failed, retries;
    int64_t last_batch_ms;

    /* the counters outlive a handle: after a fatal error main.c makes a new
     * one in the same struct, and a Prometheus counter must not go back */
    malformed = c->malformed;
    consumed = c->consumed;
    commits_failed = c->commits_failed;
    retries = c->retries;
    last_batch_ms = c->last_batch_ms;
    memset(c, 0, sizeof(*c));
    c->malformed = malformed;
    c->consumed = consumed;
    c->commits_failed = commits_failed;
    c->retries = retries;
    c->last_batch_ms = last_batch_ms;
    snprintf(fetch_wait, sizeof(fetch_wait), "%d",
             cfg->batch_ms < RC_FETCH_WAIT_MAX_MS ? cfg->batch_ms : RC_FETCH_WAIT_MAX_MS);
    c->cfg = *cfg;
    c->store = store;
    c->push = push;
    c->run = run;
    mc_msgbatch_init(&c->batch);
    c->offsets = rd_kafka_topic_partition_list_new(16);
    c->sent = rd_kafka_topic_partition_list_new(16);
    if (c->offsets == NULL || c->sent == NULL) {
        goto err;
    }

    conf = rd_kafka_conf_new();
    if (conf == NULL) {
        goto err;
    }
    if (consumer_conf_set(conf, "bootstrap.servers", cfg->brokers) != 0
        || consumer_conf_set(conf, "group.id", cfg->group) != 0
        || consumer_conf_set(conf, "client.id", "roomlist-consumer") != 0
        || consumer_conf_set(conf, "enable.auto.commit", "false") != 0
        || consumer_conf_set(conf, "enable.auto.offset.store", "false") != 0
        || consumer_conf_set(conf, "auto.offset.reset", "earliest") != 0
        || consumer_conf_set(conf, "session.timeout.ms", cfg->session_timeout_ms) != 0
        /* batch_ms 0 asks for no wait: librdkafka's fetch defaults then */
        || (cfg->batch_ms > 0 && consumer_conf_set(conf, "fetch.min.bytes", RC_FETCH_MIN_BYTES) != 0)
        || (cfg->batch_ms > 0 && consumer_conf_set(conf, "fetch.wait.max.ms", fetch_wait) != 0)
        /* static membership: a restarted instance takes its partitions
         * back at once instead of after the session timeout */
        || (cfg->instance[0] && consumer_conf_set(conf, "group.instance.id", cfg->instance) != 0))
    {
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    if (mc_kafka_sec_apply(cfg->sec, conf, errstr, sizeof(errstr)) != 0) {
        mc_error("kafka: %s", errstr);
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    rd_kafka_conf_set_log_cb(conf, rc_kafka_log_cb);
    rd_kafka_conf_set_rebalance_cb(conf, consumer_rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, consumer_commit_cb);
    rd_kafka_conf_set_opaque(conf, c);

    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        mc_error("kafka: cannot create consumer: %s", errstr);
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    /* conf is owned by rk from here on */

    rd_kafka_poll_set_consumer(c->rk);

    topics = rd_kafka_topic_partition_list_new(1);
    if (topics == NULL) {
        goto err;
    }
    rd_kafka_topic_partition_list_add(topics, cfg->topic, RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mc_error("kafka: cannot subscribe to \"%s\": %s", cfg->topic, rd_kafka_err2str(err));
        goto err;
    }

    mc_info("ready: consuming \"%s\" from %s as group \"%s\" (batch %zu records / %d ms)", cfg->topic, cfg->brokers,
            cfg->group, cfg->batch_size, cfg->batch_ms);
    return 0;

err:
    if (c->rk != NULL) {
        rd_kafka_destroy(c->rk);
        c->rk = NULL;
    }
    if (c->offsets != NULL) {
        rd_kafka_topic_partition_list_destroy(c->offsets);
    }
    if (c->sent != NULL) {
        rd_kafka_topic_partition_list_destroy(c->sent);
    }
    c->offsets = NULL;
    c->sent = NULL;
    return -1;
}

/* Serves an assignment change: flushes before giving partitions up. */
static void consumer_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                                  void *opaque)
{
    rc_consumer_t *c = opaque;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t ret = RD_KAFKA_RESP_ERR_NO_ERROR;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    int i;

    for (i = 0; i < parts->cnt; i++) {
        mc_info("kafka: %s %s [%" PRId32 "]", err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assigned" : "revoked",
                parts->elems[i].topic, parts->elems[i].partition);
    }

    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        if (coop) {
            error = rd_kafka_incremental_assign(rk, parts);
        } else {
            ret = rd_kafka_assign(rk, parts);
        }
        break;

    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        if (!c->flushing && c->records > 0) {
            if (rd_kafka_assignment_lost(rk)) {
                mc_warn("kafka: assignment lost; the batch is written but its offsets may not commit");
            }
            if (consumer_flush(c, 1) != 0) {
                mc_warn("kafka: could not flush %zu records before revocation; keeping them", c->records);
            }
        }
        if (!c->flushing) {
            rc_store_flush_members(c->store, 1);
            /* settle the asynchronous commits of earlier batches */
            consumer_settle(c);
        }
        if (coop) {
            error = rd_kafka_incremental_unassign(rk, parts);
        } else {
            ret = rd_kafka_assign(rk, NULL);
        }
        break;

    default:
        mc_error("kafka: rebalance failed: %s", rd_kafka_err2str(err));
        if (coop) {
            error = rd_kafka_incremental_unassign(rk, parts);
        } else {
            ret = rd_kafka_assign(rk, NULL);
        }
        break;
    }

    if (error != NULL) {
        mc_error("kafka: incremental (un)assign failed: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (ret != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mc_error("kafka: assign failed: %s", rd_kafka_err2str(ret));
    }
}

/* Remembers that the batch covers the partition up to offset.  Returns 0 or -1 when out of memory. */
static int consumer_track(rc_consumer_t *c, const char *topic, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_t *p;

    p = rd_kafka_topic_partition_list_find(c->offsets, topic, partition);
    if (p == NULL) {
        p = rd_kafka_topic_partition_list_add(c->offsets, topic, partition);
        if (p == NULL) {
            return -1;
        }
        p->offset = offset + 1;
    } else if (offset + 1 > p->offset) {
        p->offset = offset + 1;
    }
    return 0;
}

/* Returns when a batch whose first record is rkm began, on mc_now_ms()'s
 * clock: the record's produce time (its Kafka timestamp) when that is older
 * than its arrival, since the fetch may have held it up to batch_ms
 * already; never more than batch_ms before now, so a producer's clock ahead
 * of ours or behind it can only make the wait shorter, never longer. */
static int64_t consumer_batch_start(rc_consumer_t *c, const rd_kafka_message_t *rkm)
{
    int64_t now = mc_now_ms(), ts, age;

    ts = rd_kafka_message_timestamp(rkm, NULL);
    if (ts <= 0) {
        return now;
    }
    age = mc_wall_ms() - ts;
    if (age <= 0) {
        return now;
    }
    return now - (age < c->cfg.batch_ms ? age : c->cfg.batch_ms);
}

/* Adds one consumed record (or logs a consume error).  Returns 0, or -1 on a
 * fatal error (the record is then not part of the batch). */
static int consumer_handle(rc_consumer_t *c, rd_kafka_message_t *rkm)
{
    const char *topic;
    char errstr[512];
    int rc;

    if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            return 0;
        }
        if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
            rd_kafka_fatal_error(c->rk, errstr, sizeof(errstr));
            mc_error("kafka: fatal error: %s", errstr);
            c->fatal = 1;
            return -1;
        }
        mc_warn("kafka: consume error: %s", rd_kafka_message_errstr(rkm));
        return 0;
    }

    topic = rd_kafka_topic_name(rkm->rkt);
    rc = mc_msgbatch_add_packed(&c->batch, rkm->payload != NULL ? rkm->payload : "", rkm->len);
    if (rc == MC_MSGBATCH_NOMEM) {
        mc_error("kafka: out of memory adding a record");
        return -1;
    }
    if (rc == MC_MSGBATCH_MALFORMED) {
        c->malformed++;
        mc_warn("kafka: skipping malformed record at %s [%" PRId32 "] offset %" PRId64 " (%zu bytes)", topic,
                rkm->partition, rkm->offset, rkm->len);
    }
    if (consumer_track(c, topic, rkm->partition, rkm->offset) != 0) {
        mc_error("kafka: out of memory tracking offsets");
        return -1;
    }
    if (c->records == 0) {
        c->first_ms = consumer_batch_start(c, rkm);
    }
    c->records++;
    c->consumed++;
    return 0;
}

/* Empties the batch and its offsets after they were written and committed. */
static void consumer_reset_batch(rc_consumer_t *c)
{
    mc_msgbatch_clear(&c->batch);
    c->records = 0;
    /* the list keeps its topic strings; emptying it in place is cheaper than a new one */
    while (c->offsets->cnt > 0) {
        rd_kafka_topic_partition_list_del_by_idx(c->offsets, c->offsets->cnt - 1);
    }
}

/* Raises into's offsets to from's, adding its partitions.  Returns 0 or -1 when out of memory. */
static int consumer_merge(rd_kafka_topic_partition_list_t *into, const rd_kafka_topic_partition_list_t *from)
{
    rd_kafka_topic_partition_t *p, *q;
    int i;

    for (i = 0; i < from->cnt; i++) {
        p = &from->elems[i];
        q = rd_kafka_topic_partition_list_find(into, p->topic, p->partition);
        if (q == NULL) {
            q = rd_kafka_topic_partition_list_add(into, p->topic, p->partition);
            if (q == NULL) {
                return -1;
            }
            q->offset = p->offset;
        } else if (p->offset > q->offset) {
            q->offset = p->offset;
        }
    }
    return 0;
}

/* Commits offsets for the partitions we still own: synchronously (waiting
 * for the coordinator's answer) or not.  Returns 0, or -1 when nothing could
 * be sent (a failure reported later is counted by consumer_commit_cb). */
static int consumer_send(rc_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets, int sync)
{
    rd_kafka_topic_partition_list_t *owned = NULL, *commit = NULL;
    rd_kafka_topic_partition_t *p, *q;
    rd_kafka_resp_err_t err;
    int i, rc = -1;

    if (offsets->cnt == 0) {
        return 0;
    }
    err = rd_kafka_assignment(c->rk, &owned);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mc_warn("kafka: cannot read the assignment: %s", rd_kafka_err2str(err));
        goto done;
    }
    commit = rd_kafka_topic_partition_list_new(offsets->cnt);
    if (commit == NULL) {
        goto done;
    }
    for (i = 0; i < offsets->cnt; i++) {
        p = &offsets->elems[i];
        if (rd_kafka_topic_partition_list_find(owned, p->topic, p->partition) != NULL) {
            q = rd_kafka_topic_partition_list_add(commit, p->topic, p->partition);
            q->offset = p->offset;
        }
    }
    rc = 0;
    if (commit->cnt == 0) {
        mc_info("kafka: batch partitions no longer assigned; offsets left to the new owner");
        goto done;
    }
    err = rd_kafka_commit(c->rk, commit, sync ? 0 : 1);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* a synchronous failure is also reported to consumer_commit_cb, which counts it */
        mc_warn("kafka: offset commit failed: %s (the rows are written; records will be re-read)",
                rd_kafka_err2str(err));
        rc = -1;
    }

done:
    if (owned != NULL) {
        rd_kafka_topic_partition_list_destroy(owned);
    }
    if (commit != NULL) {
        rd_kafka_topic_partition_list_destroy(commit);
    }
    return rc;
}

/* Commits the offsets of the batch just written: asynchronously in steady
 * state (remembered in c->sent for consumer_settle), or synchronously
 * together with every asynchronous commit since the last synchronous one. */
static void consumer_commit(rc_consumer_t *c, int sync)
{
    if (consumer_merge(c->sent, c->offsets) != 0) {
        /* without the record, settle cannot repeat this commit: wait for it now */
        mc_warn("kafka: out of memory remembering offsets; committing synchronously");
        consumer_send(c, c->offsets, 1);
        return;
    }
    if (sync) {
        consumer_settle(c);
    } else {
        consumer_send(c, c->offsets, 0);
    }
}

/* Commits synchronously every offset committed asynchronously since the
 * last synchronous commit: when it returns, the coordinator has answered
 * them all (it answers one member's requests in order). */
static void consumer_settle(rc_consumer_t *c)
{
    consumer_send(c, c->sent, 1);
    while (c->sent->cnt > 0) {
        rd_kafka_topic_partition_list_del_by_idx(c->sent, c->sent->cnt - 1);
    }
}

/* Counts failed offset commits, asynchronous or not (served by rd_kafka_consumer_poll). */
static void consumer_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                               void *opaque)
{
    rc_consumer_t *c = opaque;
    int i;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
        return;
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && offsets != NULL) {
        for (i = 0; i < offsets->cnt; i++) {
            if (offsets->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                err = offsets->elems[i].err;
                break;
            }
        }
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        c->commits_failed++;
        mc_warn("kafka: offset commit failed: %s (the rows are written; records will be re-read)",
                rd_kafka_err2str(err));
    }
}

/* Pauses or resumes the whole current assignment. */
static void consumer_pause(rc_consumer_t *c, int pause)
{
    rd_kafka_topic_partition_list_t *owned = NULL;

    if (rd_kafka_assignment(c->rk, &owned) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return;
    }
    if (owned->cnt > 0) {
        if (pause) {
            rd_kafka_pause_partitions(c->rk, owned);
        } else {
            rd_kafka_resume_partitions(c->rk, owned);
        }
    }
    rd_kafka_topic_partition_list_destroy(owned);
    c->paused = pause;
}

/* Writes the batch and commits its offsets, retrying a failing store with
 * backoff at most max_attempts times (0: until *run is cleared).  Returns 0
 * when the batch is done (it is then empty), -1 when it is kept. */
static int consumer_flush(rc_consumer_t *c, int max_attempts)
{
    rd_kafka_message_t *rkm;
    int attempts = 0, backoff = RC_BACKOFF_MIN_MS, rc = -1, stored;
    int64_t until, t0;

    if (c->records == 0) {
        return 0;
    }
    c->flushing = 1;

    for (;;) {
        /* the offsets are committed once the rows are in MySQL and the
         * batch's push events are delivered (push.c) */
        t0 = mc_now_us();
        stored = rc_store_write(c->store, &c->batch) == 0;
        mc_hist_observe(&rc_hists.db_write, (uint64_t)(mc_now_us() - t0));
        if (stored && (c->push == NULL || rc_push_batch(c->push, c->store->db, &c->batch) == 0))
        {
            mc_hist_observe(&rc_hists.batch_rows, (uint64_t)c->batch.n);
            c->last_batch_ms = mc_now_ms();
            /* asynchronous in the loop (max_attempts 0), synchronous at revocation and shutdown */
            consumer_commit(c, max_attempts != 0);
            consumer_reset_batch(c);
            rc = 0;
            break;
        }
        attempts++;
        if ((max_attempts > 0 && attempts >= max_attempts) || (max_attempts == 0 && !*c->run)) {
            break;
        }
        mc_warn("batch of %zu rows failed (attempt %d); retrying in %d ms", c->batch.n, attempts, backoff);
        c->retries++;
        consumer_publish(c, 1);

        /* keep serving the group while we wait; paused partitions deliver only what was already fetched */
        consumer_pause(c, 1);
        until = mc_now_ms() + backoff;
        while (mc_now_ms() < until && (max_attempts > 0 || (*c->run && !c->fatal))) {
            rkm = rd_kafka_consumer_poll(c->rk, RC_POLL_MS);
            if (rkm != NULL) {
                if (consumer_handle(c, rkm) != 0 && !c->fatal) {
                    *c->run = 0;
                }
                rd_kafka_message_destroy(rkm);
            }
        }
        backoff = backoff * 2 > RC_BACKOFF_MAX_MS ? RC_BACKOFF_MAX_MS : backoff * 2;
    }

    if (c->paused) {
        consumer_pause(c, 0);
    }
    c->flushing = 0;
    return rc;
}

static void *consumer_destroy_thread(void *arg)
{
    rd_kafka_destroy(arg);
    return NULL;
}

/* Destroys the handle, waiting at most RC_DESTROY_WAIT_S.  Everything that
 * matters (the batch, the offsets, leaving the group) is done before; but
 * Debian's librdkafka 2.0 can wait forever in rd_kafka_destroy for its
 * broker thread once the subscribed topic was deleted (seen here; upstream
 * librdkafka issue 4362 is alike), which would hang a stop or the new handle
 * after a fatal error.  A handle that does not finish is left to its
 * threads, with an error line. */
static void consumer_destroy(rd_kafka_t *rk)
{
    struct timespec until;
    pthread_t tid;
    int err;

    if (pthread_create(&tid, NULL, consumer_destroy_thread, rk) != 0) {
        rd_kafka_destroy(rk);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += RC_DESTROY_WAIT_S;
    err = pthread_timedjoin_np(tid, NULL, &until);
    if (err == ETIMEDOUT) {
        mc_error("kafka: the consumer handle did not finish within %d s (librdkafka waits for its broker thread, "
                 "as after the topic was deleted); leaving it behind",
                 RC_DESTROY_WAIT_S);
        pthread_detach(tid);
    }
}

/* Fills s with our partitions, their positions and lag (from the high
 * watermarks of the last fetch: no request to the brokers).  Returns the
 * total lag, or -1 when the assignment is unknown. */
static int64_t consumer_partitions(rc_consumer_t *c, rc_snapshot_t *s)
{
    rd_kafka_topic_partition_list_t *owned = NULL;
    rd_kafka_topic_partition_t *p;
    rc_part_state_t *ps;
    int64_t lag = 0, lo, hi;
    int i;

    s->nparts = 0;
    s->assignment_known = 0;
    if (rd_kafka_assignment(c->rk, &owned) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return -1;
    }
    s->assignment_known = 1;
    rd_kafka_position(c->rk, owned);
    for (i = 0; i < owned->cnt; i++) {
        p = &owned->elems[i];
        ps = s->nparts < RC_SNAPSHOT_PARTS ? &s->parts[s->nparts++] : NULL;
        if (ps != NULL) {
            ps->partition = p->partition;
            ps->offset = p->offset >= 0 ? p->offset : -1;
            ps->lag = -1;
        }
        if (rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            continue;
        }
        if (p->offset >= 0) {
            /* an unknown position (not fetched yet) counts as none */
            lag += hi > p->offset ? hi - p->offset : 0;
            if (ps != NULL) {
                ps->lag = hi > p->offset ? hi - p->offset : 0;
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(owned);
    return lag;
}

/* Returns the records behind the high watermarks of our partitions, or -1 when unknown. */
static int64_t consumer_lag(rc_consumer_t *c)
{
    rc_snapshot_t *s = malloc(sizeof(*s));
    int64_t lag;

    if (s == NULL) {
        return -1;
    }
    lag = consumer_partitions(c, s);
    free(s);
    return lag;
}

/* Publishes the state for the HTTP thread (metrics.h); running 0 says the
 * consumer is stopping. */
static void consumer_publish(rc_consumer_t *c, int running)
{
    rc_snapshot_t *s = calloc(1, sizeof(*s));
    mc_db_health_t h;

    if (s == NULL) {
        return;
    }
    s->running = running;
    if (running) {
        consumer_partitions(c, s);
    }
    s->consumed = c->consumed;
    s->malformed = c->malformed;
    s->commits_failed = c->commits_failed;
    s->retries = c->retries;
    s->rows_new = c->store->rows_new;
    s->rows_dup = c->store->rows_dup;
    s->batches = c->store->batches;
    s->store_failures = c->store->failures;
    s->rooms_moved = c->store->rooms_moved;
    s->members_set = c->store->members_set;
    s->push_on = c->push != NULL;
    if (c->push != NULL) {
        s->push = *rc_push_stats(c->push);
    }
    s->last_batch_ms = c->last_batch_ms;
    mc_db_health(c->store->db, &h);
    s->db_primary = h.primary;
    rc_metrics_publish(s);
    free(s);
}

/* Logs the counters. */
static void consumer_stats(rc_consumer_t *c)
{
    rc_store_t *st = c->store;
    rc_push_stats_t none = {0, 0, 0, 0, 0, 0};
    const rc_push_stats_t *ps = c->push != NULL ? rc_push_stats(c->push) : &none;

    mc_info("stats: consumed %" PRIu64 ", rows new %" PRIu64 " dup %" PRIu64 ", batches %" PRIu64
            ", rooms moved %" PRIu64 ", members set %" PRIu64 " (%zu rooms pending), store failures %" PRIu64
            ", malformed %" PRIu64 ", commit failures %" PRIu64 ", lag %" PRId64 ", pushed %" PRIu64
            " (online skipped %" PRIu64 ", large-room messages %" PRIu64 ", stale messages %" PRIu64
            ", presence errors %" PRIu64
            ", push failures %" PRIu64 ")",
            c->consumed, st->rows_new, st->rows_dup, st->batches, st->rooms_moved, st->members_set,
            rc_store_pending(st), st->failures, c->malformed, c->commits_failed, consumer_lag(c), ps->pushed,
            ps->online, ps->large, ps->stale, ps->presence_errors, ps->failed);
}

int rc_consumer_run(rc_consumer_t *c)
{
    rd_kafka_message_t *rkm;
    rd_kafka_resp_err_t err;
    int64_t now, next_stats, next_members, next_publish = 0, timeout;
    int rc = 0, got;

    next_stats = mc_now_ms() + (int64_t)c->cfg.stats_s * 1000;
    next_members = mc_now_ms();

    while (*c->run && !c->fatal) {
        timeout = RC_POLL_MS;
        if (c->records > 0) {
            timeout = c->first_ms + c->cfg.batch_ms - mc_now_ms();
            timeout = timeout < 0 ? 0 : timeout > RC_POLL_MS ? RC_POLL_MS : timeout;
        }

        rkm = rd_kafka_consumer_poll(c->rk, (int)timeout);
        got = rkm != NULL;
        if (rkm != NULL) {
            if (consumer_handle(c, rkm) != 0) {
                rc = -1;
                if (!c->fatal) {
                    *c->run = 0;
                }
            }
            rd_kafka_message_destroy(rkm);
        }

        /* a batch closes when full, or once its wait has passed and no
         * fetched record is ready (a backlog fills batches to batch_size) */
        now = mc_now_ms();
        if (c->records > 0 && (c->records >= c->cfg.batch_size || (now - c->first_ms >= c->cfg.batch_ms && !got))) {
            consumer_flush(c, 0);
        }
        if (c->records == 0 && now >= next_members) {
            /* deferred room_members updates while the topic is quiet */
            rc_store_flush_members(c->store, 0);
            next_members = now + RC_POLL_MS;
        }
        if (c->cfg.stats_s > 0 && now >= next_stats) {
            consumer_stats(c);
            next_stats = now + (int64_t)c->cfg.stats_s * 1000;
        }
        if (now >= next_publish) {
            consumer_publish(c, 1);
            next_publish = now + RC_SNAPSHOT_MS;
        }
    }

    mc_info("shutting down");
    consumer_publish(c, 0);
    if (consumer_flush(c, RC_SHUTDOWN_ATTEMPTS) != 0) {
        mc_warn("%zu records not written; they will be read again at the next start", c->records);
    }
    consumer_settle(c);
    if (rc_store_flush_members(c->store, 1) != 0) {
        mc_warn("the members of %zu rooms keep an older last_message_at until their next message",
                rc_store_pending(c->store));
    }
    if (c->cfg.stats_s > 0) {
        consumer_stats(c);
    }

    consumer_publish(c, 0);
    err = rd_kafka_consumer_close(c->rk);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mc_warn("kafka: consumer close: %s", rd_kafka_err2str(err));
    }
    /* the lists first: an entry that went through librdkafka may hold a
     * reference to its partition, and rd_kafka_destroy waits for every
     * reference to go (it hung forever once the topic had been deleted) */
    rd_kafka_topic_partition_list_destroy(c->offsets);
    rd_kafka_topic_partition_list_destroy(c->sent);
    c->offsets = NULL;
    c->sent = NULL;
    consumer_destroy(c->rk);
    c->rk = NULL;
    mc_msgbatch_free(&c->batch);
    return rc;
}
