/*
 * The relay-worker's /metrics page: Prometheus text (lib/src/prom_text.c)
 * built from the counters each part keeps (link_stats, peers_status,
 * kafka_state, order_stats, db_jobs_stats) and four histograms the parts
 * observe into from their own threads (relay_hists).  docs/metrics.md lists
 * every family; names start with minichat_relay_.
 *
 * A scrape runs on the main thread (the HTTP server sits in its epoll
 * loop): the producer's counters are the main thread's, the others are read
 * under their locks.  Per-peer families carry a `peer` label (the node name
 * in `peers`): at most PEERS_MAX series each.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "minichat/clock.h"
#include "minichat/prom_text.h"
#include "relay.h"

#ifndef MC_BUILD
#define MC_BUILD "unknown"
#endif

relay_hists_t relay_hists;
static double metrics_start_time; /* wall clock, seconds */

void relay_metrics_init(void)
{
    mc_hist_init(&relay_hists.peer_batch, mc_hist_sizes, mc_hist_sizes_n, 1);
    mc_hist_init(&relay_hists.peer_call, mc_hist_latency_us, mc_hist_latency_n, 1e-6);
    mc_hist_init(&relay_hists.kafka_produce, mc_hist_latency_us, mc_hist_latency_n, 1e-6);
    mc_hist_init(&relay_hists.db_request, mc_hist_latency_us, mc_hist_latency_n, 1e-6);
    metrics_start_time = (double)mc_wall_ms() / 1000.0;
}

/* One gauge or counter per peer: the value is picked by field offset. */
typedef struct {
    const char *name;
    const char *type;
    const char *help;
    size_t offset;     /* of a uint64_t, size_t or int in peer_status_t */
    char kind;         /* 'u' uint64_t, 'z' size_t, 'i' int */
} metrics_peer_family_t;

#define PEER_FAMILY(name, type, field, kind, help) {name, type, help, offsetof(peer_status_t, field), kind}

static const metrics_peer_family_t metrics_peer_families[] = {
    PEER_FAMILY("minichat_relay_peer_queue_messages", "gauge", queued, 'z', "Messages waiting in the peer's queue"),
    PEER_FAMILY("minichat_relay_peer_queue_bytes", "gauge", queued_bytes, 'z', "Bytes waiting in the peer's queue"),
    PEER_FAMILY("minichat_relay_peer_calls_in_flight", "gauge", inflight, 'i', "Deliver calls to the peer in flight"),
    PEER_FAMILY("minichat_relay_peer_messages_sent_total", "counter", sent, 'u',
                "Messages the peer took (calls that ended OK)"),
    PEER_FAMILY("minichat_relay_peer_messages_dropped_total", "counter", dropped, 'u',
                "Messages for the peer dropped: queue full or older than peer_max_age_ms"),
    PEER_FAMILY("minichat_relay_peer_calls_total", "counter", calls, 'u', "Deliver calls started to the peer"),
    PEER_FAMILY("minichat_relay_peer_calls_failed_total", "counter", failed_calls, 'u',
                "Deliver calls and streams to the peer that did not end OK"),
    PEER_FAMILY("minichat_relay_peer_streaming", "gauge", streaming, 'i',
                "1 when the link to the peer is the stream, 0 when it is unary Deliver calls"),
    PEER_FAMILY("minichat_relay_peer_stream_unacked_batches", "gauge", stream_unacked, 'z',
                "Batches for the peer's stream not acked yet (sent, or to send again)"),
    PEER_FAMILY("minichat_relay_peer_stream_batches_total", "counter", stream_batches, 'u',
                "Batches written to the peer's stream (a batch sent again counts again)"),
    PEER_FAMILY("minichat_relay_peer_stream_restarts_total", "counter", stream_restarts, 'u',
                "Streams to the peer opened after the first (after a failure or an end)"),
    PEER_FAMILY("minichat_relay_peer_stream_fallbacks_total", "counter", stream_fallbacks, 'u',
                "Times the peer did not serve the stream and got unary Deliver calls instead"),
    PEER_FAMILY("minichat_relay_peer_users_known", "gauge", users_known, 'i',
                "1 when the peer said which users it holds (on its stream): it gets only the chat messages for them"),
    PEER_FAMILY("minichat_relay_peer_users_starts_total", "counter", users_starts, 'u',
                "Whole user sets the peer sent (one at the start of each stream it opened)"),
    PEER_FAMILY("minichat_relay_peer_messages_skipped_total", "counter", skipped, 'u',
                "Chat messages not sent to the peer: none of their recipients there"),
};

static double metrics_peer_value(const peer_status_t *p, const metrics_peer_family_t *f)
{
    const char *at = (const char *)p + f->offset;

    switch (f->kind) {
    case 'u':
        return (double)*(const uint64_t *)at;
    case 'z':
        return (double)*(const size_t *)at;
    default:
        return (double)*(const int *)at;
    }
}

static int metrics_peers(mc_buf_t *b, uint64_t now)
{
    peer_status_t *ps = calloc(PEERS_MAX, sizeof(*ps));
    mc_prom_label_t l = {"peer", NULL};
    size_t i, k, n;
    int rc = -1;

    if (ps == NULL) {
        return -1;
    }
    n = peers_status(ps, PEERS_MAX);
    if (mc_prom_family(b, "minichat_relay_peer_up", "gauge",
                       "1 when the last Deliver call or stream ack from the peer was OK, 0 when it failed or none "
                       "has come") != 0) {
        goto done;
    }
    for (i = 0; i < n; i++) {
        l.value = ps[i].node;
        if (mc_prom_sample(b, "minichat_relay_peer_up", &l, 1, ps[i].state == PEER_UP) != 0) {
            goto done;
        }
    }
    if (mc_prom_family(b, "minichat_relay_peer_last_success_age_seconds", "gauge",
                       "Seconds since a Deliver call to the peer last ended OK or it last acked (absent: never)") != 0) {
        goto done;
    }
    for (i = 0; i < n; i++) {
        l.value = ps[i].node;
        if (ps[i].last_ok_ms != 0
            && mc_prom_sample(b, "minichat_relay_peer_last_success_age_seconds", &l, 1,
                              (double)(now - ps[i].last_ok_ms) / 1000.0) != 0) {
            goto done;
        }
    }
    for (k = 0; k < sizeof(metrics_peer_families) / sizeof(metrics_peer_families[0]); k++) {
        const metrics_peer_family_t *f = &metrics_peer_families[k];

        if (mc_prom_family(b, f->name, f->type, f->help) != 0) {
            goto done;
        }
        for (i = 0; i < n; i++) {
            l.value = ps[i].node;
            if (mc_prom_sample(b, f->name, &l, 1, metrics_peer_value(&ps[i], f)) != 0) {
                goto done;
            }
        }
    }
    rc = 0;
done:
    free(ps);
    return rc;
}

/* A histogram family without labels. */
static int metrics_hist(mc_buf_t *b, const char *name, const char *help, const mc_hist_t *h)
{
    return mc_prom_family(b, name, "histogram", help) != 0 || mc_prom_hist(b, name, NULL, 0, h) != 0 ? -1 : 0;
}

static int metrics_db(mc_buf_t *b)
{
    static const char *const results[] = {"ok", "failed", "unavailable", "busy"};
    static const char *const hl_results[] = {"answered", "handed"};
    mc_prom_label_t l;
    db_jobs_stats_t st;
    uint64_t v[4], hl[2];
    char name[32]; /* "replica" and a size_t */
    size_t i;

    db_jobs_stats(&st);
    v[0] = st.ok;
    v[1] = st.failed;
    v[2] = st.unavailable;
    v[3] = st.busy;
    hloop_stats(&hl[0], &hl[1]);
    if (mc_prom_by_label(b, "minichat_relay_db_requests_total", "counter",
                         "Database requests of the nginx workers by result: ok, failed (the request's own error), "
                         "unavailable (a database error), busy (refused: queue full)",
                         "result", results, v, 4) != 0
        || mc_prom_by_label(b, "minichat_relay_db_reruns_total", "counter",
                            "Database requests run again from their start on their DB thread, by the error that "
                            "ended the run: a connection lost before COMMIT, a deadlock, a lock wait timeout",
                            "reason", db_rerun_reason_names, st.reruns, DB_RERUN_REASONS) != 0
        || mc_prom_by_label(b, "minichat_relay_history_loop_pages_total", "counter",
                            "History pages taken by the main loop (history_on_loop): answered there, or handed to "
                            "the DB threads",
                            "result", hl_results, hl, 2) != 0) {
        return -1;
    }
    if (mc_prom_single(b, "minichat_relay_db_queue_requests", "gauge", "Database requests waiting for a DB thread",
                       (double)st.queued) != 0
        || metrics_hist(b, "minichat_relay_db_request_duration_seconds",
                        "A database request's run on its DB thread, retries included (a history page on the main "
                        "loop: taken to answered)",
                        &relay_hists.db_request)
               != 0
        || mc_prom_family(b, "minichat_relay_db_server_up", "gauge",
                          "1 when the last request's router had a connection to the server (absent: none ran yet)")
               != 0) {
        return -1;
    }
    if (!st.health_known) {
        return 0;
    }
    l.name = "server";
    l.value = "primary";
    if (mc_prom_sample(b, "minichat_relay_db_server_up", &l, 1, st.health.primary == MC_DB_UP) != 0) {
        return -1;
    }
    for (i = 0; i < st.health.replicas; i++) {
        snprintf(name, sizeof(name), "replica%zu", i + 1);
        l.value = name;
        if (mc_prom_sample(b, "minichat_relay_db_server_up", &l, 1, st.health.replica[i] == MC_DB_UP) != 0) {
            return -1;
        }
    }
    return 0;
}

#define NSINGLES(t) (sizeof(t) / sizeof((t)[0]))

int relay_metrics_text(mc_buf_t *out)
{
    mc_prom_label_t info[2] = {{"node", relay_conf.node}, {"build", MC_BUILD}};
    uint64_t conns, dropped, refused, skipped, held, late, now = mc_now_ms();
    mc_reorder_stats_t os;
    kafka_state_t ks;

    mc_buf_reset(out);
    link_stats(&conns, &dropped, &refused, &skipped);
    peer_users_stats(&held, &late);
    kafka_state(&ks);
    order_stats(&os);
    {
        const mc_prom_single_t process[] = {
            {"minichat_relay_start_time_seconds", "gauge", "When the process started (Unix time)",
             metrics_start_time},
            {"minichat_relay_worker_connections", "gauge", "nginx worker connections on the unix socket",
             (double)conns},
            {"minichat_relay_worker_dropped_total", "counter",
             "nginx worker connections closed for a full output buffer (local_outbuf_max_mb)", (double)dropped},
            {"minichat_relay_worker_refused_total", "counter",
             "Connections to the unix socket refused by their credentials (allowed_peers)", (double)refused},
            {"minichat_relay_worker_deliver_skipped_total", "counter",
             "Chat messages not written to an nginx worker with no recipient of theirs (the lone sender aside)", (double)skipped},
            {"minichat_relay_users_answers_held_total", "counter",
             "Answers to a worker's users frame that waited for the streaming peers to ack the change", (double)held},
            {"minichat_relay_users_answers_late_total", "counter",
             "Of those, answers sent after waiting the longest (1 s) without every ack", (double)late},
        };
        const mc_prom_single_t kafka[] = {
            {"minichat_relay_kafka_up", "gauge",
             "1 while the producer is usable: no fatal error, and brokers not all down",
             !ks.fatal && !ks.brokers_down},
            {"minichat_relay_kafka_produced_total", "counter", "Messages handed to the producer",
             (double)ks.produced},
            {"minichat_relay_kafka_delivered_total", "counter", "Messages Kafka acknowledged", (double)ks.delivered},
            {"minichat_relay_kafka_failed_total", "counter",
             "Produce errors: refused by the producer or failed delivery reports", (double)ks.failed},
            {"minichat_relay_kafka_pending_messages", "gauge", "Messages produced and not yet acknowledged or failed",
             (double)ks.pending},
        };
        const mc_prom_single_t order[] = {
            {"minichat_relay_order_released_total", "counter",
             "Messages the per-room reorderer released to this node's workers", (double)os.released},
            {"minichat_relay_order_held_messages", "gauge", "Messages held for a lower seq now", (double)os.held},
            {"minichat_relay_order_rooms", "gauge", "Rooms the reorderer remembers now", (double)os.rooms},
            {"minichat_relay_order_skipped_total", "counter",
             "Seqs never seen, skipped after order_gap_ms or order_max_held", (double)os.skipped},
            {"minichat_relay_order_late_total", "counter",
             "Messages dropped as late or duplicate (seq below the room's position)", (double)os.late},
            {"minichat_relay_order_refused_total", "counter",
             "Messages refused: seq more than order_max_ahead past the position", (double)os.refused},
            {"minichat_relay_order_jumps_total", "counter",
             "Room positions moved past seqs a peer left out for this node (after_skip)", (double)os.jumps},
            {"minichat_relay_order_quiet_starts_total", "counter",
             "Rooms with no position started without a hold: the previous seq was admitted order_first_hold_ms "
             "or more before", (double)os.quiet_starts},
        };

        if (mc_prom_family(out, "minichat_relay_build_info", "gauge", "Always 1: the node and build of this process")
                != 0
            || mc_prom_sample(out, "minichat_relay_build_info", info, 2, 1) != 0
            || mc_prom_singles(out, process, NSINGLES(process)) != 0 || metrics_peers(out, now) != 0
            || metrics_hist(out, "minichat_relay_peer_batch_messages", "Messages per Deliver call (every peer)",
                            &relay_hists.peer_batch) != 0
            || metrics_hist(out, "minichat_relay_peer_call_duration_seconds",
                            "A Deliver call from start to status (every peer)", &relay_hists.peer_call) != 0
            || mc_prom_singles(out, kafka, NSINGLES(kafka)) != 0
            || metrics_hist(out, "minichat_relay_kafka_produce_duration_seconds",
                            "From the first produce of a message someone waits for to its successful delivery "
                            "report", &relay_hists.kafka_produce) != 0
            || mc_prom_singles(out, order, NSINGLES(order)) != 0 || metrics_db(out) != 0) {
            mc_buf_reset(out);
            return -1;
        }
    }
    return 0;
}
