/*
 * The relay-worker's status: one JSON object saying what this process is
 * and how its links are, for an operator (the HTTP /status page) and for
 * the node's nginx (LocalFrame status_req, answered by dispatch.c).  The
 * fields are listed in docs/operations.md "Status and readiness".
 *
 * Built on the main thread (the producer's counters are the main thread's);
 * the peers are read under their locks.  Ages are in milliseconds of the
 * monotonic clock, null for "never".  The object is made with jansson, so
 * that a node or peer name reaches the page escaped.
 */
#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>

#include "minichat/clock.h"
#include "relay.h"

#ifndef MC_BUILD
#define MC_BUILD "unknown"
#endif

static uint64_t status_started_ms;

void relay_status_start(void)
{
    status_started_ms = mc_now_ms();
}

/* An age in ms since t (mc_now_ms()), or null when t is 0 (never). */
static json_t *status_age(uint64_t now, uint64_t t)
{
    return t == 0 ? json_null() : json_integer((json_int_t)(now >= t ? now - t : 0));
}

static const char *status_peer_state(peer_state_t s)
{
    return s == PEER_UP ? "up" : s == PEER_DOWN ? "down" : "unknown";
}

/* The peers, in the order of the peers key.  Returns the array or NULL. */
static json_t *status_peers(uint64_t now)
{
    peer_status_t *ps;
    json_t *a, *o;
    size_t i, n;

    ps = calloc(PEERS_MAX, sizeof(*ps));
    a = json_array();
    if (ps == NULL || a == NULL) {
        free(ps);
        json_decref(a);
        return NULL;
    }
    n = peers_status(ps, PEERS_MAX);
    for (i = 0; i < n; i++) {
        o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "node",
                      ps[i].node, "link", ps[i].streaming ? "stream" : "unary",
                      "target", ps[i].target, "state", status_peer_state(ps[i].state),
                      "last_ok_age_ms", status_age(now, ps[i].last_ok_ms), "queued", (json_int_t)ps[i].queued,
                      "queued_bytes", (json_int_t)ps[i].queued_bytes, "inflight", ps[i].inflight,
                      "retrying", ps[i].retrying, "sent", (json_int_t)ps[i].sent,
                      "dropped", (json_int_t)ps[i].dropped, "failed_calls", (json_int_t)ps[i].failed_calls,
                      "stream_unacked", (json_int_t)ps[i].stream_unacked, "stream_batches",
                      (json_int_t)ps[i].stream_batches, "stream_restarts", (json_int_t)ps[i].stream_restarts,
                      "stream_fallbacks", (json_int_t)ps[i].stream_fallbacks);
        if (o == NULL || json_array_append_new(a, o) != 0) {
            json_decref(a);
            a = NULL;
            break;
        }
    }
    free(ps);
    return a;
}

static json_t *status_kafka(uint64_t now)
{
    kafka_state_t ks;

    kafka_state(&ks);
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:o}", "state",
                     ks.fatal ? "fatal" : ks.brokers_down ? "brokers_down" : "ok", "pending",
                     (json_int_t)ks.pending, "produced", (json_int_t)ks.produced, "delivered",
                     (json_int_t)ks.delivered, "failed", (json_int_t)ks.failed, "last_delivered_age_ms",
                     status_age(now, ks.last_delivered_ms));
}

static json_t *status_workers(void)
{
    uint64_t conns, dropped, refused, skipped;

    link_stats(&conns, &dropped, &refused, &skipped);
    return json_pack("{s:I, s:I, s:I, s:I}", "connections", (json_int_t)conns, "dropped", (json_int_t)dropped,
                     "refused", (json_int_t)refused, "deliver_skipped", (json_int_t)skipped);
}

static json_t *status_db(void)
{
    db_jobs_stats_t st;
    json_t *reps, *o;
    size_t i;

    db_jobs_stats(&st);
    reps = json_array();
    for (i = 0; reps != NULL && st.health_known && i < st.health.replicas; i++) {
        if (json_array_append_new(reps, json_string(mc_db_health_name(st.health.replica[i]))) != 0) {
            json_decref(reps);
            reps = NULL;
        }
    }
    o = json_pack("{s:b, s:s, s:o, s:i, s:I, s:I, s:I}", "configured", st.threads > 0, "primary",
                  st.health_known ? mc_db_health_name(st.health.primary) : "unknown", "replicas", reps, "threads",
                  st.threads, "queued", (json_int_t)st.queued, "unavailable", (json_int_t)st.unavailable, "busy",
                  (json_int_t)st.busy);
    return o;
}

static json_t *status_order(void)
{
    mc_reorder_stats_t os;

    order_stats(&os);
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "rooms", (json_int_t)os.rooms, "held", (json_int_t)os.held,
                     "released", (json_int_t)os.released, "skipped", (json_int_t)os.skipped, "late",
                     (json_int_t)os.late);
}

/* Appends the reasons the process is not ready to a (none: ready). */
static void status_unready(json_t *a)
{
    kafka_state_t ks;

    kafka_state(&ks);
    if (ks.fatal) {
        json_array_append_new(a, json_string("kafka: the producer hit a fatal error"));
    } else if (ks.brokers_down) {
        json_array_append_new(a, json_string("kafka: all brokers are down"));
    }
    if (!link_listening()) {
        json_array_append_new(a, json_string("worker socket: not listening (starting or stopping)"));
    }
}

int relay_ready(mc_buf_t *why)
{
    json_t *a = json_array(), *o;
    char *s;
    int rc;

    if (a == NULL) {
        return -1;
    }
    status_unready(a);
    if (json_array_size(a) == 0) {
        json_decref(a);
        return 1;
    }
    o = json_pack("{s:b, s:o}", "ready", 0, "reasons", a);
    s = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    rc = s != NULL && mc_buf_append_str(why, s) == 0 ? 0 : -1;
    free(s);
    return rc;
}

int relay_status_json(mc_buf_t *out)
{
    uint64_t now = mc_now_ms();
    json_t *o, *unready = json_array();
    char *s = NULL;
    int rc = -1;

    mc_buf_reset(out);
    if (unready != NULL) {
        status_unready(unready);
    }
    /* "o" steals each part, NULL included (then the pack fails) */
    o = json_pack("{s:s, s:s, s:s, s:i, s:I, s:b, s:o, s:o, s:o, s:o, s:o, s:o}", "service", "relay-worker", "node",
                  relay_conf.node, "build", MC_BUILD, "pid", (int)getpid(), "uptime_s",
                  (json_int_t)((now - status_started_ms) / 1000), "ready", unready != NULL
                  && json_array_size(unready) == 0, "unready", unready, "peers", status_peers(now), "kafka",
                  status_kafka(now), "db", status_db(), "workers", status_workers(), "order", status_order());
    if (o != NULL) {
        s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    if (s != NULL) {
        rc = mc_buf_append_str(out, s);
    }
    free(s);
    json_decref(o);
    if (rc != 0) {
        mc_buf_reset(out);
    }
    return rc;
}
