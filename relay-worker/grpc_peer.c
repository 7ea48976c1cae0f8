/*
 * The client side of the relay: one gRPC channel per peer node, a bounded
 * queue of messages for it, and at most one Deliver call in flight.
 *
 * Order: a peer's messages leave in the order they were published here.  The
 * main thread pushes messages (peers_push) and then kicks idle peers
 * (peers_kick) once per read, so one call carries everything that arrived
 * together; while a call is in flight, new messages wait in the queue and the
 * completion (on the cq thread) sends all of them as the next batch.  Under
 * load this batches by itself; when idle a message leaves at once.
 *
 * Security: with peer_tls_* set the channels use mutual TLS (peer_tls.c) and
 * expect each peer's certificate to name its node.
 *
 * Failures: a call that does not end with status OK keeps its batch and is
 * retried after a backoff (100 ms doubling to 2 s) by peers_tick() on the
 * main thread; nothing behind it is sent meanwhile.  The queue is bounded
 * (messages and bytes): past the bound the oldest queued messages are dropped
 * with an error line and counted, since cross-node delivery is best-effort
 * (clients resume; persistence goes through Kafka).  A peer that rejects a
 * batch as malformed (INVALID_ARGUMENT) gets it dropped, not retried.
 * A retried batch may reach the peer twice when the first call timed out
 * after the peer had delivered it: receivers drop seqs they have seen.
 *
 * Each peer's state sits under its own mutex: the main and cq threads both
 * start calls (grpc_call_start_batch is thread-safe across calls).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "minichat/clock.h"
#include "minichat/conf.h"
#include "minichat/log.h"
#include "minichat/relay_queue.h"
#include "relay.h"

#define PEER_MAX 64
#define PEER_BACKOFF_MIN 100
#define PEER_BACKOFF_MAX 2000
#define PEER_BATCH_ITEMS 10000

typedef struct {
    relay_tag_t tag;
    char name[64];
    char target[256];
    grpc_channel *channel;
    void *method;
    pthread_mutex_t lock;
    mc_relay_queue_t queue;
    /* the batch being sent or waiting for a retry */
    grpc_slice batch;
    long batch_count;
    int has_batch;
    /* the call in flight */
    int busy;
    grpc_call *call;
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_status_code status;
    grpc_slice details;
    uint64_t batch_at;   /* when the batch's oldest message was queued */
    /* retry */
    uint64_t retry_at;
    unsigned backoff;
    int down;
    int stopping;
    /* counters */
    uint64_t sent, failed_calls, drop_logged_at;
} peer_t;

static peer_t *peers;
static size_t npeers;
static const char *peer_self;

static void peer_call_done(relay_tag_t *tag, int ok);

/* Parses "node@host:port" into p; returns 0 or -1. */
static int peer_parse(peer_t *p, const char *s, size_t len)
{
    const char *at = memchr(s, '@', len);

    if (at == NULL || at == s || at == s + len - 1 || (size_t)(at - s) >= sizeof(p->name)
        || (size_t)(s + len - at - 1) >= sizeof(p->target) || memchr(at + 1, ':', s + len - at - 1) == NULL) {
        return -1;
    }
    memcpy(p->name, s, (size_t)(at - s));
    p->name[at - s] = '\0';
    memcpy(p->target, at + 1, (size_t)(s + len - at - 1));
    p->target[s + len - at - 1] = '\0';
    return 0;
}

/* Opens the channel of a parsed peer; returns 0 or -1. */
static int peer_open(peer_t *p)
{
    grpc_channel_credentials *creds;
    grpc_arg args[6];
    grpc_channel_args cargs;

    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[0].value.integer = PEER_BACKOFF_MIN;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[1].value.integer = PEER_BACKOFF_MIN;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[2].value.integer = PEER_BACKOFF_MAX;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_ENABLE_RETRIES;
    args[3].value.integer = 0;
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[4].value.integer = RELAY_GRPC_MESSAGE_MAX;
    cargs.num_args = 5;
    cargs.args = args;
    if (peer_tls_enabled()) {
        /* the peer's certificate must name the peer's node, not its address */
        args[5].type = GRPC_ARG_STRING;
        args[5].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[5].value.string = p->name;
        cargs.num_args = 6;
    }

    creds = peer_tls_channel_creds();
    if (creds == NULL) {
        return -1;
    }
    p->channel = grpc_channel_create(p->target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    if (p->channel == NULL) {
        return -1;
    }
    p->method = grpc_channel_register_call(p->channel, RELAY_METHOD, NULL, NULL);
    if (p->method == NULL) {
        return -1;
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0
        || mc_rq_init(&p->queue, relay_conf.peer_queue_max, relay_conf.peer_queue_bytes) != 0) {
        return -1;
    }
    p->tag.done = peer_call_done;
    grpc_metadata_array_init(&p->md_initial);
    grpc_metadata_array_init(&p->md_trailing);
    return 0;
}

int peers_init(const char *spec, const char *self)
{
    const char *rest = spec, *s, *e;
    size_t n = 0, len;

    peer_self = self;
    peers = calloc(PEER_MAX, sizeof(*peers));
    if (peers == NULL) {
        return -1;
    }
    while ((s = mc_conf_list_next(&rest, &len)) != NULL) {
        e = s + len;
        if (n == PEER_MAX) {
            mc_error("peers: more than %d peers", PEER_MAX);
            return -1;
        }
        if (peer_parse(&peers[n], s, (size_t)(e - s)) != 0) {
            mc_error("peers: bad peer \"%.*s\" (want node@host:port)", (int)(e - s), s);
            return -1;
        }
        if (strcmp(peers[n].name, self) == 0) {
            mc_error("peers: \"%s\" is this node", peers[n].name);
            return -1;
        }
        if (peer_open(&peers[n]) != 0) {
            mc_error("peers: cannot set up peer \"%s\" at %s", peers[n].name, peers[n].target);
            return -1;
        }
        mc_info("peers: %s at %s", peers[n].name, peers[n].target);
        npeers = ++n;
    }
    return 0;
}

/* Drops the current batch (lock held). */
static void peer_drop_batch_locked(peer_t *p)
{
    grpc_slice_unref(p->batch);
    p->has_batch = 0;
    p->batch_count = 0;
}

/* Starts a Deliver call carrying the current batch, taking a new batch from
 * the queue when there is none (lock held).  Does nothing while a call is in
 * flight or a retry is pending. */
static void peer_start_locked(peer_t *p, uint64_t now)
{
    grpc_op ops[6], *op = ops;
    uint8_t *buf;
    size_t len;
    long n;
    gpr_timespec deadline;
    grpc_call_error e;

    if (p->busy || p->stopping) {
        return;
    }
    /* live delivery of a message older than peer_max_age_ms would show a
     * reconnected client stale messages as new: such messages are dropped
     * (the peer's clients recover them by resuming, Kafka has them anyway) */
    if (p->has_batch && now >= p->batch_at + (uint64_t)relay_conf.peer_max_age_ms) {
        p->queue.dropped += (uint64_t)p->batch_count;
        mc_warn("peers: \"%s\" unreachable for too long: dropped a batch of %ld messages older than %lld ms",
                p->name, p->batch_count, relay_conf.peer_max_age_ms);
        peer_drop_batch_locked(p);
    }
    if (now > (uint64_t)relay_conf.peer_max_age_ms) {
        mc_rq_expire(&p->queue, now - (uint64_t)relay_conf.peer_max_age_ms);
    }

    if (p->has_batch) {
        if (now < p->retry_at) {
            return;
        }
    } else {
        p->batch_at = mc_rq_oldest(&p->queue);
        n = mc_rq_take_batch(&p->queue, peer_self, relay_conf.peer_batch_bytes, PEER_BATCH_ITEMS, &buf, &len);
        if (n <= 0) {
            if (n < 0) {
                mc_error("peers: out of memory building a batch for \"%s\"", p->name);
            }
            return;
        }
        p->batch = grpc_slice_new(buf, len, free);
        p->batch_count = n;
        p->has_batch = 1;
    }

    deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                            gpr_time_from_millis(relay_conf.peer_timeout_ms, GPR_TIMESPAN));
    p->call = grpc_channel_create_registered_call(p->channel, NULL, GRPC_PROPAGATE_DEFAULTS, rpc_cq(), p->method,
                                                  deadline, NULL);
    if (p->call == NULL) {
        goto retry;
    }
    p->send_bb = grpc_raw_byte_buffer_create(&p->batch, 1);
    p->recv_bb = NULL;
    memset(ops, 0, sizeof(ops));
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op++;
    op->op = GRPC_OP_SEND_MESSAGE;
    op->data.send_message.send_message = p->send_bb;
    op++;
    op->op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    op++;
    op->op = GRPC_OP_RECV_INITIAL_METADATA;
    op->data.recv_initial_metadata.recv_initial_metadata = &p->md_initial;
    op++;
    op->op = GRPC_OP_RECV_MESSAGE;
    op->data.recv_message.recv_message = &p->recv_bb;
    op++;
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &p->md_trailing;
    op->data.recv_status_on_client.status = &p->status;
    op->data.recv_status_on_client.status_details = &p->details;
    op++;
    e = grpc_call_start_batch(p->call, ops, (size_t)(op - ops), &p->tag, NULL);
    if (e != GRPC_CALL_OK) {
        mc_error("peers: start_batch for \"%s\": error %d", p->name, (int)e);
        grpc_byte_buffer_destroy(p->send_bb);
        p->send_bb = NULL;
        grpc_call_unref(p->call);
        p->call = NULL;
        goto retry;
    }
    p->busy = 1;
    return;
retry:
    p->backoff = mc_backoff_next(p->backoff, PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
    p->retry_at = now + p->backoff;
}


/* A Deliver call finished (cq thread). */
static void peer_call_done(relay_tag_t *tag, int ok)
{
    peer_t *p = (peer_t *)tag;
    uint64_t now = mc_now_ms();
    char *details;

    pthread_mutex_lock(&p->lock);
    p->busy = 0;
    if (ok && p->status == GRPC_STATUS_OK) {
        p->sent += (uint64_t)p->batch_count;
        peer_drop_batch_locked(p);
        p->backoff = 0;
        p->retry_at = 0;
        if (p->down) {
            p->down = 0;
            mc_info("peers: \"%s\" at %s is reachable again", p->name, p->target);
        }
    } else {
        details = grpc_slice_to_c_string(p->details);
        p->failed_calls++;
        if (p->status == GRPC_STATUS_INVALID_ARGUMENT) {
            mc_error("peers: \"%s\" rejected a batch of %ld messages: %s", p->name, p->batch_count, details);
            peer_drop_batch_locked(p);
        } else {
            p->backoff = mc_backoff_next(p->backoff, PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
            p->retry_at = now + p->backoff;
            if (!p->down && !p->stopping) {
                p->down = 1;
                mc_error("peers: \"%s\" at %s: status %d \"%s\"; retrying every %u..%u ms", p->name, p->target,
                         (int)p->status, details ? details : "", PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
            }
        }
        gpr_free(details);
    }
    grpc_slice_unref(p->details);
    p->details = grpc_empty_slice();
    grpc_metadata_array_destroy(&p->md_initial);
    grpc_metadata_array_destroy(&p->md_trailing);
    grpc_metadata_array_init(&p->md_initial);
    grpc_metadata_array_init(&p->md_trailing);
    if (p->recv_bb) {
        grpc_byte_buffer_destroy(p->recv_bb);
        p->recv_bb = NULL;
    }
    grpc_byte_buffer_destroy(p->send_bb);
    p->send_bb = NULL;
    grpc_call_unref(p->call);
    p->call = NULL;
    peer_start_locked(p, now);
    pthread_mutex_unlock(&p->lock);
}

void peers_push(const uint8_t *msg, size_t len)
{
    uint64_t now = mc_now_ms();
    size_t i;
    long dropped;
    peer_t *p;

    for (i = 0; i < npeers; i++) {
        p = &peers[i];
        pthread_mutex_lock(&p->lock);
        dropped = mc_rq_push(&p->queue, msg, len, now);
        if (dropped < 0) {
            p->queue.dropped++;
        }
        if (dropped != 0 && now - p->drop_logged_at >= 1000) {
            p->drop_logged_at = now;
            mc_error("peers: queue for \"%s\" is full (%zu messages, %zu bytes), dropping the oldest: %" PRIu64
                     " dropped so far", p->name, p->queue.count, p->queue.bytes, p->queue.dropped);
        }
        pthread_mutex_unlock(&p->lock);
    }
}

void peers_kick(void)
{
    uint64_t now = mc_now_ms();
    size_t i;

    for (i = 0; i < npeers; i++) {
        pthread_mutex_lock(&peers[i].lock);
        peer_start_locked(&peers[i], now);
        pthread_mutex_unlock(&peers[i].lock);
    }
}

long peers_tick(uint64_t now)
{
    long wait = -1, w;
    size_t i;
    peer_t *p;

    for (i = 0; i < npeers; i++) {
        p = &peers[i];
        pthread_mutex_lock(&p->lock);
        peer_start_locked(p, now);
        if (!p->busy && p->has_batch) {
            w = p->retry_at > now ? (long)(p->retry_at - now) : 0;
            if (wait < 0 || w < wait) {
                wait = w;
            }
        }
        pthread_mutex_unlock(&p->lock);
    }
    return wait;
}

int peers_idle(void)
{
    size_t i;
    int idle = 1;

    for (i = 0; i < npeers && idle; i++) {
        pthread_mutex_lock(&peers[i].lock);
        idle = !peers[i].busy && !peers[i].has_batch && peers[i].queue.count == 0;
        pthread_mutex_unlock(&peers[i].lock);
    }
    return idle;
}

void peers_shutdown(void)
{
    size_t i;
    int busy, waited, leak = 0;
    peer_t *p;

    for (i = 0; i < npeers; i++) {
        p = &peers[i];
        pthread_mutex_lock(&p->lock);
        p->stopping = 1;
        if (p->busy) {
            grpc_call_cancel(p->call, NULL);
        }
        pthread_mutex_unlock(&p->lock);
    }
    for (waited = 0; waited < 5000; waited += 5) {
        busy = 0;
        for (i = 0; i < npeers; i++) {
            pthread_mutex_lock(&peers[i].lock);
            busy |= peers[i].busy;
            pthread_mutex_unlock(&peers[i].lock);
        }
        if (!busy) {
            break;
        }
        usleep(5000);
    }
    for (i = 0; i < npeers; i++) {
        p = &peers[i];
        if (p->busy) {
            mc_error("peers: call to \"%s\" did not finish", p->name);
            leak = 1;
            continue; /* leak rather than free what the cq thread may still touch */
        }
        if (p->has_batch || p->queue.count) {
            mc_warn("peers: %zu messages for \"%s\" not sent", (size_t)(p->batch_count + (long)p->queue.count),
                    p->name);
        }
        mc_info("peers: \"%s\": sent %" PRIu64 ", dropped %" PRIu64 ", failed calls %" PRIu64, p->name, p->sent,
                p->queue.dropped, p->failed_calls);
        if (p->has_batch) {
            peer_drop_batch_locked(p);
        }
        mc_rq_free(&p->queue);
        grpc_metadata_array_destroy(&p->md_initial);
        grpc_metadata_array_destroy(&p->md_trailing);
        grpc_channel_destroy(p->channel);
        pthread_mutex_destroy(&p->lock);
    }
    if (!leak) {
        free(peers);
    }
    peers = NULL;
    npeers = 0;
}

void peers_stats(uint64_t *sent, uint64_t *dropped, uint64_t *failed_calls)
{
    size_t i;

    *sent = *dropped = *failed_calls = 0;
    for (i = 0; i < npeers; i++) {
        pthread_mutex_lock(&peers[i].lock);
        *sent += peers[i].sent;
        *dropped += peers[i].queue.dropped;
        *failed_calls += peers[i].failed_calls;
        pthread_mutex_unlock(&peers[i].lock);
    }
}
