/*
 * The client side of the relay: one gRPC channel per peer node, a bounded
 * queue of messages for it, and the link that takes them: one long-lived
 * /minichat.Relay/Stream call (grpc_peer_stream.c, the default), or, with a
 * peer that does not serve the stream or with peer_stream = off, up to
 * PEER_INFLIGHT unary Deliver calls in flight (this file).  What follows
 * describes the unary calls; the stream keeps the same order, bounds and
 * retries in its own way (see its file).
 *
 * Order: a peer's messages leave in the order they were published here.  The
 * main thread pushes messages (peers_push) and then kicks the peers
 * (peers_kick) once per read and once per round of its epoll loop (after
 * the delivery reports), so one call carries everything that arrived
 * together.  A call is started while fewer than PEER_INFLIGHT are in flight;
 * when all are, new messages wait in the queue and the next completion (on
 * the cq thread) sends all of them as the next batch.  Under load this
 * batches by itself; when idle a message leaves at once, and a message never
 * waits for the previous call's answer to come back (one call in flight made
 * every message behind it wait a whole round trip through the peer: most of
 * the cross-node latency at 1,000 messages a second on a busy box).  Calls
 * ride one HTTP/2 connection and the peer takes them in arrival order; when
 * two do cross, the peer's per-room reorderer holds the later seqs until the
 * earlier arrive.
 *
 * Security: with peer_tls_* set the channels use mutual TLS (peer_tls.c) and
 * expect each peer's certificate to name its node.
 *
 * Failures: a call that does not end with status OK keeps its batch and is
 * retried after a backoff (100 ms doubling to 2 s) by peers_tick() on the
 * main thread; no new batch is started meanwhile (calls already in flight
 * finish; their seqs wait in the peer's reorderer for the retried ones).  The
 * queue is bounded (messages and bytes): past the bound the oldest queued
 * messages are dropped with an error line and counted, since cross-node
 * delivery is best-effort (clients resume; persistence goes through Kafka).
 * A peer that rejects a batch as malformed (INVALID_ARGUMENT) gets it
 * dropped, not retried.  A retried batch may reach the peer twice when the
 * first call timed out after the peer had delivered it: receivers drop seqs
 * they have seen.
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
#include "peer.h"

#define PEER_MAX PEERS_MAX

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
    int i;

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
    p->stream_method = grpc_channel_register_call(p->channel, RELAY_STREAM_METHOD, NULL, NULL);
    if (p->method == NULL || p->stream_method == NULL) {
        return -1;
    }
    /* unary until the peer answers the stream (probed at once) */
    p->unary = 1;
    peer_stream_init(p);
    if (pthread_mutex_init(&p->lock, NULL) != 0
        || mc_rq_init(&p->queue, relay_conf.peer_queue_max, relay_conf.peer_queue_bytes) != 0) {
        return -1;
    }
    for (i = 0; i < PEER_INFLIGHT; i++) {
        p->slots[i].tag.done = peer_call_done;
        p->slots[i].peer = p;
        grpc_metadata_array_init(&p->slots[i].md_initial);
        grpc_metadata_array_init(&p->slots[i].md_trailing);
    }
    return 0;
}

int peers_check(const char *spec, const char *self, char *err, size_t err_size)
{
    const char *rest = spec, *s;
    size_t n = 0, len;
    peer_t p;

    while ((s = mc_conf_list_next(&rest, &len)) != NULL) {
        if (n++ == PEER_MAX) {
            snprintf(err, err_size, "peers: more than %d peers", PEER_MAX);
            return -1;
        }
        if (peer_parse(&p, s, len) != 0) {
            snprintf(err, err_size, "peers: bad peer \"%.*s\" (want node@host:port)", (int)len, s);
            return -1;
        }
        if (self != NULL && strcmp(p.name, self) == 0) {
            snprintf(err, err_size, "peers: \"%s\" is this node", p.name);
            return -1;
        }
    }
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

/* Drops a slot's batch (lock held). */
static void peer_drop_batch_locked(peer_slot_t *sl)
{
    grpc_slice_unref(sl->batch);
    sl->has_batch = 0;
    sl->batch_count = 0;
}

/* Starts a Deliver call on a slot for the batch it holds (lock held).
 * Returns 0, or -1 when the call could not start (the batch stays). */
static int peer_call_locked(peer_t *p, peer_slot_t *sl)
{
    grpc_op ops[6], *op = ops;
    gpr_timespec deadline;
    grpc_call_error e;

    deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                            gpr_time_from_millis(relay_conf.peer_timeout_ms, GPR_TIMESPAN));
    sl->call = grpc_channel_create_registered_call(p->channel, NULL, GRPC_PROPAGATE_DEFAULTS, rpc_cq(), p->method,
                                                   deadline, NULL);
    if (sl->call == NULL) {
        return -1;
    }
    sl->send_bb = grpc_raw_byte_buffer_create(&sl->batch, 1);
    sl->recv_bb = NULL;
    memset(ops, 0, sizeof(ops));
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op++;
    op->op = GRPC_OP_SEND_MESSAGE;
    op->data.send_message.send_message = sl->send_bb;
    op++;
    op->op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    op++;
    op->op = GRPC_OP_RECV_INITIAL_METADATA;
    op->data.recv_initial_metadata.recv_initial_metadata = &sl->md_initial;
    op++;
    op->op = GRPC_OP_RECV_MESSAGE;
    op->data.recv_message.recv_message = &sl->recv_bb;
    op++;
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &sl->md_trailing;
    op->data.recv_status_on_client.status = &sl->status;
    op->data.recv_status_on_client.status_details = &sl->details;
    op++;
    e = grpc_call_start_batch(sl->call, ops, (size_t)(op - ops), &sl->tag, NULL);
    if (e != GRPC_CALL_OK) {
        mc_error("peers: start_batch for \"%s\": error %d", p->name, (int)e);
        grpc_byte_buffer_destroy(sl->send_bb);
        sl->send_bb = NULL;
        grpc_call_unref(sl->call);
        sl->call = NULL;
        return -1;
    }
    sl->busy = 1;
    sl->call_us = mc_now_us();
    p->busy++;
    p->calls++;
    mc_hist_observe(&relay_hists.peer_batch, (uint64_t)sl->batch_count);
    return 0;
}

void peer_ok_locked(peer_t *p, uint64_t now)
{
    p->last_ok = now;
    if (!p->failed) {
        p->backoff = 0;
        p->retry_at = 0;
    }
    if (p->down && !p->failed) {
        p->down = 0;
        mc_info("peers: \"%s\" at %s is reachable again", p->name, p->target);
    }
}

void peer_failed_locked(peer_t *p, uint64_t now, int status, const char *details)
{
    p->backoff = mc_backoff_next(p->backoff, PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
    p->retry_at = now + p->backoff;
    if (!p->down && !p->stopping) {
        p->down = 1;
        mc_error("peers: \"%s\" at %s: status %d \"%s\"; retrying every %u..%u ms", p->name, p->target, status,
                 details, PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
    }
}

int peer_take_batch_locked(peer_t *p, peer_batch_t *b)
{
    uint8_t *buf;
    size_t len;
    long n;

    if (p->queue.count == 0) {
        return 0;
    }
    b->at = mc_rq_oldest(&p->queue);
    n = mc_rq_take_batch(&p->queue, peer_self, relay_conf.peer_batch_bytes, PEER_BATCH_ITEMS, &buf, &len);
    if (n <= 0) {
        if (n < 0) {
            mc_error("peers: out of memory building a batch for \"%s\"", p->name);
        }
        return n < 0 ? -1 : 0;
    }
    b->batch = grpc_slice_new(buf, len, free);
    b->count = n;
    b->users_upto = 0;
    return 1;
}

/* A slot's batch could not go now: it is retried after a backoff (lock
 * held). */
static void peer_retry_later_locked(peer_t *p, peer_slot_t *sl, uint64_t now)
{
    if (sl->has_batch) {
        p->failed++;
    }
    p->backoff = mc_backoff_next(p->backoff, PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
    p->retry_at = now + p->backoff;
}

/* Starts what may start on unary calls (lock held): batches to retry once
 * their backoff is over, and while none waits, new batches into free slots:
 * first those a stream left unacked, then from the queue. */
static void peer_start_unary_locked(peer_t *p, uint64_t now)
{
    peer_slot_t *sl;
    peer_batch_t b;
    int i, r;

    /* live delivery of a message older than peer_max_age_ms would show a
     * reconnected client stale messages as new: such messages are dropped
     * (the peer's clients recover them by resuming, Kafka has them anyway) */
    for (i = 0; i < PEER_INFLIGHT; i++) {
        sl = &p->slots[i];
        if (!sl->busy && sl->has_batch && now >= sl->batch_at + (uint64_t)relay_conf.peer_max_age_ms) {
            p->queue.dropped += (uint64_t)sl->batch_count;
            mc_warn("peers: \"%s\" unreachable for too long: dropped a batch of %ld messages older than %lld ms",
                    p->name, sl->batch_count, relay_conf.peer_max_age_ms);
            peer_drop_batch_locked(sl);
            p->failed--;
        }
    }
    if (p->failed) {
        if (now < p->retry_at) {
            return;
        }
        /* the oldest first: they were taken from the queue in slot order
         * only by chance, so by their age */
        for (;;) {
            peer_slot_t *oldest = NULL;

            for (i = 0; i < PEER_INFLIGHT; i++) {
                sl = &p->slots[i];
                if (!sl->busy && sl->has_batch && (oldest == NULL || sl->batch_at < oldest->batch_at)) {
                    oldest = sl;
                }
            }
            if (oldest == NULL) {
                break;
            }
            p->failed--;
            if (peer_call_locked(p, oldest) != 0) {
                peer_retry_later_locked(p, oldest, now);
                return;
            }
        }
    }

    for (i = 0; i < PEER_INFLIGHT && (p->queue.count > 0 || p->st.n > 0); i++) {
        sl = &p->slots[i];
        if (sl->busy || sl->has_batch) {
            continue;
        }
        r = peer_stream_pop_locked(p, &b);
        if (r == 0 && p->st.n == 0) {
            r = peer_take_batch_locked(p, &b);
        }
        if (r <= 0) {
            return;
        }
        sl->batch = b.batch;
        sl->batch_count = b.count;
        sl->batch_at = b.at;
        sl->has_batch = 1;
        if (peer_call_locked(p, sl) != 0) {
            peer_retry_later_locked(p, sl, now);
            return;
        }
    }
}


void peer_start_locked(peer_t *p, uint64_t now)
{
    if (p->stopping) {
        return;
    }
    /* live delivery of a message older than peer_max_age_ms would show a
     * reconnected client stale messages as new: such messages are dropped
     * (the peer's clients recover them by resuming, Kafka has them anyway) */
    if (now > (uint64_t)relay_conf.peer_max_age_ms) {
        mc_rq_expire(&p->queue, now - (uint64_t)relay_conf.peer_max_age_ms);
    }
    peer_stream_expire_locked(p, now);
    /* unary calls until the peer answers a probe of the stream (a stream
     * opened without sending): at start, PEER_STREAM_PROBE_MS after a
     * probe failed, or at once when a unary call failed (the peer
     * restarting: perhaps upgraded); once it answers and the unary calls
     * are idle, the stream carries everything */
    if (p->unary && relay_conf.peer_stream) {
        if (p->st.call == NULL && p->st.n == 0 && (p->unary_failed || now >= p->probe_at)) {
            p->unary_failed = 0;
            p->probe_at = now + PEER_STREAM_PROBE_MS;
            if (peer_stream_probe_locked(p, now) != 0) {
                mc_error("peers: cannot open a stream to \"%s\"", p->name);
            }
        } else if (p->st.call != NULL && p->st.got_md && !p->st.ended && !p->busy && !p->failed && p->st.n == 0) {
            p->unary = 0;
            mc_info("peers: \"%s\" serves %s: the stream carries its messages", p->name, RELAY_STREAM_METHOD);
        }
    }
    if (p->unary) {
        peer_start_unary_locked(p, now);
    } else {
        peer_stream_start_locked(p, now);
    }
}

/* A Deliver call finished (cq thread). */
static void peer_call_done(relay_tag_t *tag, int ok)
{
    peer_slot_t *sl = (peer_slot_t *)tag;
    peer_t *p = sl->peer;
    uint64_t now = mc_now_ms();
    char *details;

    pthread_mutex_lock(&p->lock);
    sl->busy = 0;
    p->busy--;
    mc_hist_observe(&relay_hists.peer_call, (uint64_t)(mc_now_us() - sl->call_us));
    if (ok && sl->status == GRPC_STATUS_OK) {
        p->sent += (uint64_t)sl->batch_count;
        peer_drop_batch_locked(sl);
        peer_ok_locked(p, now);
    } else {
        details = grpc_slice_to_c_string(sl->details);
        p->failed_calls++;
        if (sl->status == GRPC_STATUS_INVALID_ARGUMENT) {
            mc_error("peers: \"%s\" rejected a batch of %ld messages: %s", p->name, sl->batch_count, details);
            peer_drop_batch_locked(sl);
        } else {
            if (sl->has_batch) {
                p->failed++;
            }
            p->unary_failed = 1;
            peer_failed_locked(p, now, (int)sl->status, details ? details : "");
        }
        gpr_free(details);
    }
    grpc_slice_unref(sl->details);
    sl->details = grpc_empty_slice();
    grpc_metadata_array_destroy(&sl->md_initial);
    grpc_metadata_array_destroy(&sl->md_trailing);
    grpc_metadata_array_init(&sl->md_initial);
    grpc_metadata_array_init(&sl->md_trailing);
    if (sl->recv_bb) {
        grpc_byte_buffer_destroy(sl->recv_bb);
        sl->recv_bb = NULL;
    }
    grpc_byte_buffer_destroy(sl->send_bb);
    sl->send_bb = NULL;
    grpc_call_unref(sl->call);
    sl->call = NULL;
    peer_start_locked(p, now);
    pthread_mutex_unlock(&p->lock);
}

/* Queues one message for p (lock held); a full queue drops its oldest. */
static void peer_push_locked(peer_t *p, const uint8_t *msg, size_t len, uint64_t now)
{
    long dropped = mc_rq_push(&p->queue, msg, len, now);

    if (dropped < 0) {
        p->queue.dropped++;
    }
    if (dropped != 0 && now - p->drop_logged_at >= 1000) {
        p->drop_logged_at = now;
        mc_error("peers: queue for \"%s\" is full (%zu messages, %zu bytes), dropping the oldest: %" PRIu64
                 " dropped so far", p->name, p->queue.count, p->queue.bytes, p->queue.dropped);
    }
}

void peers_push(const uint8_t *msg, size_t len)
{
    uint64_t now = mc_now_ms();
    size_t i;

    for (i = 0; i < npeers; i++) {
        pthread_mutex_lock(&peers[i].lock);
        peer_push_locked(&peers[i], msg, len, now);
        pthread_mutex_unlock(&peers[i].lock);
    }
}

size_t peers_count(void)
{
    return npeers;
}

peer_t *peers_at(size_t i)
{
    return &peers[i];
}

peer_t *peers_find(const char *node)
{
    size_t i;

    for (i = 0; i < npeers; i++) {
        if (strcmp(peers[i].name, node) == 0) {
            return &peers[i];
        }
    }
    return NULL;
}

void peers_push_msg(const link_msg_t *m, int repair)
{
    static const uint8_t flag[3] = {0xa8, 0x01, 0x01}; /* ChatMessage.after_skip (21) = true */
    uint64_t now = mc_now_ms();
    uint8_t *copy = NULL;
    size_t i;
    peer_t *p;

    for (i = 0; i < npeers; i++) {
        p = &peers[i];
        pthread_mutex_lock(&p->lock);
        if (peer_users_skip_locked(p, m)) {
            pthread_mutex_unlock(&p->lock);
            continue;
        }
        /* a repair is an old seq, below where the peer's room stands: the
         * flag would be lost on it, so it waits for the next live one */
        if (!repair && peer_users_after_skip_locked(p, m->room)) {
            /* fields may come in any order: the flag rides at the end */
            if (copy == NULL && (copy = malloc(m->len + sizeof(flag))) != NULL) {
                memcpy(copy, m->msg, m->len);
                memcpy(copy + m->len, flag, sizeof(flag));
            }
            if (copy != NULL) {
                peer_push_locked(p, copy, m->len + sizeof(flag), now);
            } else {
                peer_push_locked(p, m->msg, m->len, now); /* out of memory: the peer waits for the gap */
            }
        } else {
            peer_push_locked(p, m->msg, m->len, now);
        }
        pthread_mutex_unlock(&p->lock);
    }
    free(copy);
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
        w = -1;
        if (p->failed) {
            w = p->retry_at > now ? (long)(p->retry_at - now) : 0;
        }
        if (w < 0) {
            w = peer_stream_tick_locked(p, now);
        }
        if (w >= 0 && (wait < 0 || w < wait)) {
            wait = w;
        }
        pthread_mutex_unlock(&p->lock);
    }
    w = peer_users_check(now);
    if (w >= 0 && (wait < 0 || w < wait)) {
        wait = w;
    }
    return wait;
}

int peers_idle(void)
{
    size_t i;
    int idle = 1;

    for (i = 0; i < npeers && idle; i++) {
        pthread_mutex_lock(&peers[i].lock);
        idle = !peers[i].busy && !peers[i].failed && peers[i].queue.count == 0 && peers[i].st.n == 0;
        pthread_mutex_unlock(&peers[i].lock);
    }
    return idle;
}

void peers_shutdown(void)
{
    size_t i;
    int busy, waited, leak = 0, k;
    long unsent;
    peer_t *p;

    peer_users_shutdown(); /* the cq thread leaves the peers alone from now on */

    for (i = 0; i < npeers; i++) {
        p = &peers[i];
        pthread_mutex_lock(&p->lock);
        p->stopping = 1;
        for (k = 0; k < PEER_INFLIGHT; k++) {
            if (p->slots[k].busy) {
                grpc_call_cancel(p->slots[k].call, NULL);
            }
        }
        peer_stream_cancel_locked(p);
        pthread_mutex_unlock(&p->lock);
    }
    for (waited = 0; waited < 5000; waited += 5) {
        busy = 0;
        for (i = 0; i < npeers; i++) {
            pthread_mutex_lock(&peers[i].lock);
            busy |= peers[i].busy || peers[i].st.call != NULL;
            pthread_mutex_unlock(&peers[i].lock);
        }
        if (!busy) {
            break;
        }
        usleep(5000);
    }
    for (i = 0; i < npeers; i++) {
        p = &peers[i];
        if (p->busy || p->st.call != NULL) {
            mc_error("peers: call to \"%s\" did not finish", p->name);
            leak = 1;
            continue; /* leak rather than free what the cq thread may still touch */
        }
        unsent = (long)p->queue.count + peer_stream_free_locked(p);
        for (k = 0; k < PEER_INFLIGHT; k++) {
            if (p->slots[k].has_batch) {
                unsent += p->slots[k].batch_count;
                peer_drop_batch_locked(&p->slots[k]);
            }
            grpc_metadata_array_destroy(&p->slots[k].md_initial);
            grpc_metadata_array_destroy(&p->slots[k].md_trailing);
        }
        if (unsent) {
            mc_warn("peers: %ld messages for \"%s\" not sent", unsent, p->name);
        }
        mc_info("peers: \"%s\": sent %" PRIu64 ", dropped %" PRIu64 ", failed calls %" PRIu64 ", stream batches %" PRIu64
                ", stream restarts %" PRIu64, p->name, p->sent, p->queue.dropped, p->failed_calls, p->stream_batches,
                p->stream_restarts);
        mc_rq_free(&p->queue);
        peer_users_free_locked(p);
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

size_t peers_status(peer_status_t *out, size_t max)
{
    size_t i;
    peer_t *p;

    for (i = 0; i < npeers && i < max; i++) {
        p = &peers[i];
        pthread_mutex_lock(&p->lock);
        snprintf(out[i].node, sizeof(out[i].node), "%s", p->name);
        snprintf(out[i].target, sizeof(out[i].target), "%s", p->target);
        out[i].state = p->down ? PEER_DOWN : p->last_ok ? PEER_UP : PEER_UNKNOWN;
        out[i].last_ok_ms = p->last_ok;
        out[i].queued = p->queue.count;
        out[i].queued_bytes = p->queue.bytes;
        out[i].inflight = p->busy;
        out[i].retrying = p->failed;
        out[i].sent = p->sent;
        out[i].calls = p->calls;
        out[i].dropped = p->queue.dropped;
        out[i].failed_calls = p->failed_calls;
        out[i].streaming = !p->unary;
        out[i].stream_unacked = p->st.n;
        out[i].users_known = p->users.known;
        out[i].users_starts = p->users.starts;
        out[i].skipped = p->users.skipped_msgs;
        out[i].stream_batches = p->stream_batches;
        out[i].stream_restarts = p->stream_restarts;
        out[i].stream_fallbacks = p->stream_fallbacks;
        pthread_mutex_unlock(&p->lock);
    }
    return i;
}
