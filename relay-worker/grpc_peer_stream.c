/*
 * The sending side of /minichat.Relay/Stream: one long-lived bidirectional
 * call per peer.  Batches are built from the peer's queue (grpc_peer.c) and
 * written one after another, one write in flight at a time: while a write
 * is on its way new messages gather in the queue and leave together as the
 * next batch, so the stream batches by itself under load, as the unary
 * calls did, and a message never waits for an ack.  The receiver
 * (grpc_server_stream.c) acks by count: RelayStreamAck.batches is how many
 * batches of this call it has taken, sent every few batches or a few ms
 * after the first one it has not acked.
 *
 * The ring (peer.h) keeps each batch until it is acked, PEER_STREAM_WINDOW
 * at most: with the window full no batch is built and messages wait in the
 * queue, whose bounds (peer_queue_max, peer_queue_max_mb) then drop the
 * oldest, counted, as before.
 *
 * Failures: when the call ends (the peer went away, a transport error, or
 * no ack for peer_timeout_ms, which cancels it here) every batch of the
 * ring goes again, in order, on a new stream after the peer's backoff (100
 * ms doubling to 2 s); batches older than peer_max_age_ms are dropped and
 * counted first.  A batch the peer had taken before the break but not yet
 * acked reaches it twice: its reorderer drops the seqs it has seen (ephemeral
 * events of that batch are delivered twice, as with a retried unary call).
 * A stream that ends INVALID_ARGUMENT had its first unacked batch refused as
 * malformed: that batch is dropped, not sent again.
 *
 * Probe and fallback: nothing is written on a stream before the peer's
 * initial metadata has come (the receiver sends it as it takes the call).
 * A peer starts on unary Deliver calls (grpc_peer.c) while a stream is
 * opened as a probe; once the peer answers it and the unary calls are idle,
 * the stream carries everything.  A peer that answers UNIMPLEMENTED (a
 * relay-worker with peer_stream = off), or that does not answer within
 * peer_timeout_ms (a relay-worker from before the stream leaves a call to a
 * method it does not know unanswered: measured against one), keeps unary
 * calls, the ring's batches first, and is probed again every
 * PEER_STREAM_PROBE_MS (at once after a unary call failed: the peer may
 * have restarted upgraded), so a rolling upgrade ends with streams and an
 * older peer never waits for a stream.
 *
 * Threads: the main thread (peers_kick, peers_tick) and the cq thread (the
 * completions below) both get here, always under the peer's lock.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "minichat/clock.h"
#include "minichat/log.h"
#include "peer.h"

#define PS_OF(tag, field) ((peer_stream_t *)((char *)(tag) - offsetof(peer_stream_t, field)))

static void ps_md_done(relay_tag_t *tag, int ok);
static void ps_send_done(relay_tag_t *tag, int ok);
static void ps_recv_done(relay_tag_t *tag, int ok);
static void ps_status_done(relay_tag_t *tag, int ok);

void peer_stream_init(peer_t *p)
{
    peer_stream_t *st = &p->st;

    st->peer = p;
    st->md_tag.done = ps_md_done;
    st->send_tag.done = ps_send_done;
    st->recv_tag.done = ps_recv_done;
    st->status_tag.done = ps_status_done;
    grpc_metadata_array_init(&st->md_initial);
    grpc_metadata_array_init(&st->md_trailing);
    st->details = grpc_empty_slice();
}

static peer_batch_t *ps_at(peer_stream_t *st, size_t i)
{
    return &st->ring[(st->head + i) % PEER_STREAM_WINDOW];
}

/* Drops the oldest batch of the ring. */
static void ps_drop_head(peer_stream_t *st)
{
    grpc_slice_unref(st->ring[st->head].batch);
    st->head = (st->head + 1) % PEER_STREAM_WINDOW;
    st->n--;
}

/* Starts one batch of ops on the stream's call.  Returns 0, or -1 after
 * cancelling the call (its other ops then complete and close it). */
static int ps_start(peer_t *p, const grpc_op *ops, size_t n, relay_tag_t *tag)
{
    grpc_call_error e = grpc_call_start_batch(p->st.call, ops, n, tag, NULL);

    if (e != GRPC_CALL_OK) {
        mc_error("peers: stream to \"%s\": start_batch: error %d", p->name, (int)e);
        grpc_call_cancel(p->st.call, NULL);
        return -1;
    }
    p->st.pending++;
    return 0;
}

/* Posts the read of the next ack. */
static void ps_recv(peer_t *p)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &p->st.recv_bb;
    ps_start(p, &op, 1, &p->st.recv_tag);
}

/* Opens a stream.  Returns 0 or -1 (no call could be made). */
static int ps_open(peer_t *p)
{
    peer_stream_t *st = &p->st;
    grpc_op ops[2];
    size_t i;

    st->call = grpc_channel_create_registered_call(p->channel, NULL, GRPC_PROPAGATE_DEFAULTS, rpc_cq(),
                                                   p->stream_method, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (st->call == NULL) {
        return -1;
    }
    st->ended = st->sending = st->got_md = st->timed_out = 0;
    st->nsent = 0;
    peer_users_stream_opened_locked(p); /* its first new batch tells the users over */
    for (i = 0; i < st->n; i++) {
        /* sent again on a stream the peer knows no start of: their users
         * entries are ignored there, so their acks must not count */
        ps_at(st, i)->users_upto = 0;
    }
    st->acked = 0;
    st->status = GRPC_STATUS_OK;
    st->opened_at = mc_now_ms();
    if (st->opened++ > 0) {
        p->stream_restarts++;
    }
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &st->md_initial;
    if (ps_start(p, ops, 2, &st->md_tag) != 0) {
        /* nothing started: nothing will complete */
        grpc_call_unref(st->call);
        st->call = NULL;
        return -1;
    }
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &st->md_trailing;
    ops[0].data.recv_status_on_client.status = &st->status;
    ops[0].data.recv_status_on_client.status_details = &st->details;
    if (ps_start(p, ops, 1, &st->status_tag) != 0) {
        st->ended = 1; /* no status will come: closed once the rest complete */
        return 0;
    }
    ps_recv(p);
    return 0;
}

/* Sends the next batch when none is in flight: the first of the ring not
 * sent on this call, else a new one from the queue while the window has
 * room. */
static void ps_send(peer_t *p, uint64_t now)
{
    peer_stream_t *st = &p->st;
    peer_batch_t *b;
    grpc_op op;
    int r;

    if (st->call == NULL || st->ended || st->sending || st->timed_out || !st->got_md || p->unary) {
        return;
    }
    if (st->nsent == st->n) {
        if (st->n == PEER_STREAM_WINDOW) {
            return;
        }
        r = peer_take_batch_locked(p, ps_at(st, st->n));
        if (r >= 0 && peer_users_pending_locked(p)) {
            r = peer_users_attach_locked(p, ps_at(st, st->n), r, relay_conf.node);
        }
        if (r <= 0) {
            return;
        }
        st->n++;
    }
    b = ps_at(st, st->nsent);
    st->send_bb = grpc_raw_byte_buffer_create(&b->batch, 1);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = st->send_bb;
    if (ps_start(p, &op, 1, &st->send_tag) != 0) {
        grpc_byte_buffer_destroy(st->send_bb);
        st->send_bb = NULL;
        return;
    }
    st->sending = 1;
    st->send_us = mc_now_us();
    if (st->nsent == 0) {
        st->progress_at = now;
    }
    st->nsent++;
    p->stream_batches++;
    mc_hist_observe(&relay_hists.peer_batch, (uint64_t)b->count);
}

/* The call is over and every op has completed: decides what comes next. */
static void ps_closed(peer_t *p, uint64_t now)
{
    peer_stream_t *st = &p->st;
    grpc_status_code status = st->status;
    char *details = grpc_slice_to_c_string(st->details);
    int refused;

    grpc_call_unref(st->call);
    st->call = NULL;
    peer_users_stream_closed_locked(p, now);
    grpc_slice_unref(st->details);
    st->details = grpc_empty_slice();
    grpc_metadata_array_destroy(&st->md_initial);
    grpc_metadata_array_destroy(&st->md_trailing);
    grpc_metadata_array_init(&st->md_initial);
    grpc_metadata_array_init(&st->md_trailing);
    st->nsent = 0;
    st->acked = 0;
    st->sending = 0;
    refused = status == GRPC_STATUS_UNIMPLEMENTED || (st->timed_out && !st->got_md);
    if (p->stopping) {
        /* nothing */
    } else if (refused || p->unary) {
        /* not served, or a probe that failed otherwise (the peer down:
         * probed again soon): unary calls, the stream's unacked batches
         * first */
        if (refused) {
            p->stream_fallbacks++;
        }
        if (refused && !st->warned) {
            st->warned = 1;
            mc_warn("peers: \"%s\" at %s does not serve %s (%s): unary Deliver calls instead, the stream is "
                    "tried again every %d s", p->name, p->target, RELAY_STREAM_METHOD,
                    status == GRPC_STATUS_UNIMPLEMENTED ? "UNIMPLEMENTED" : "no answer", PEER_STREAM_PROBE_MS / 1000);
        }
        p->unary = 1;
        p->probe_at = now + (refused ? PEER_STREAM_PROBE_MS : PEER_BACKOFF_MAX);
    } else if (status == GRPC_STATUS_INVALID_ARGUMENT && st->n > 0) {
        p->failed_calls++;
        mc_error("peers: \"%s\" rejected a batch of %ld messages: %s", p->name, st->ring[st->head].count,
                 details ? details : "");
        ps_drop_head(st);
    } else if (st->n > 0 || p->queue.count > 0) {
        /* an idle stream that ended (the peer restarting) is opened again
         * with the next message; one with messages to send is a failure */
        p->failed_calls++;
        peer_failed_locked(p, now, (int)status, details ? details : "");
    }
    gpr_free(details);
    peer_start_locked(p, now);
}

/* One batch of ops completed (lock held): closes the stream after the last. */
static void ps_op_done(peer_t *p, uint64_t now)
{
    if (--p->st.pending == 0 && p->st.ended) {
        ps_closed(p, now);
    }
}

static void ps_md_done(relay_tag_t *tag, int ok)
{
    peer_stream_t *st = PS_OF(tag, md_tag);
    peer_t *p = st->peer;

    uint64_t now = mc_now_ms();

    pthread_mutex_lock(&p->lock);
    if (ok && !st->ended) {
        /* the peer serves the stream: batches may go (peer_start_locked
         * moves a probing peer to the stream once its unary calls are
         * idle) */
        st->got_md = 1;
        st->warned = 0;
        peer_start_locked(p, now);
    }
    ps_op_done(p, now);
    pthread_mutex_unlock(&p->lock);
}

static void ps_send_done(relay_tag_t *tag, int ok)
{
    peer_stream_t *st = PS_OF(tag, send_tag);
    peer_t *p = st->peer;
    uint64_t now = mc_now_ms();

    pthread_mutex_lock(&p->lock);
    st->sending = 0;
    grpc_byte_buffer_destroy(st->send_bb);
    st->send_bb = NULL;
    if (ok) {
        ps_send(p, now);
    }
    ps_op_done(p, now);
    pthread_mutex_unlock(&p->lock);
}

/* Takes an ack: forgets the batches it covers. */
static void ps_acked(peer_t *p, uint64_t batches, uint64_t now)
{
    peer_stream_t *st = &p->st;

    if (batches <= st->acked || batches - st->acked > st->nsent) {
        mc_error("peers: \"%s\" acked %" PRIu64 " batches, %" PRIu64 " acked and %zu sent before: stream cancelled",
                 p->name, batches, st->acked, st->nsent);
        grpc_call_cancel(st->call, NULL);
        return;
    }
    while (st->acked < batches) {
        p->sent += (uint64_t)st->ring[st->head].count;
        peer_users_acked_locked(p, st->ring[st->head].users_upto);
        ps_drop_head(st);
        st->nsent--;
        st->acked++;
    }
    st->progress_at = now;
    peer_ok_locked(p, now);
}

static void ps_recv_done(relay_tag_t *tag, int ok)
{
    peer_stream_t *st = PS_OF(tag, recv_tag);
    peer_t *p = st->peer;
    uint64_t now = mc_now_ms();
    Minichat__RelayStreamAck *ack = NULL;
    grpc_byte_buffer_reader r;
    grpc_slice s;

    pthread_mutex_lock(&p->lock);
    if (ok && st->recv_bb != NULL) {
        if (grpc_byte_buffer_reader_init(&r, st->recv_bb)) {
            s = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
            ack = minichat__relay_stream_ack__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
            grpc_slice_unref(s);
        }
        grpc_byte_buffer_destroy(st->recv_bb);
        st->recv_bb = NULL;
        if (ack == NULL) {
            mc_error("peers: \"%s\" sent a malformed ack: stream cancelled", p->name);
            grpc_call_cancel(st->call, NULL);
        } else {
            ps_acked(p, ack->batches, now);
            minichat__relay_stream_ack__free_unpacked(ack, NULL);
            if (!st->ended) {
                ps_recv(p);
                ps_send(p, now); /* the window may have room again */
            }
        }
    }
    ps_op_done(p, now);
    pthread_mutex_unlock(&p->lock);
    (void)peer_users_check(now); /* answers that waited for this ack */
}

static void ps_status_done(relay_tag_t *tag, int ok)
{
    peer_stream_t *st = PS_OF(tag, status_tag);
    peer_t *p = st->peer;

    (void)ok;
    pthread_mutex_lock(&p->lock);
    st->ended = 1;
    ps_op_done(p, mc_now_ms());
    pthread_mutex_unlock(&p->lock);
}

void peer_stream_expire_locked(peer_t *p, uint64_t now)
{
    peer_stream_t *st = &p->st;
    long n = 0, batches = 0;

    if (st->call != NULL) {
        return;
    }
    while (st->n > 0 && now >= st->ring[st->head].at + (uint64_t)relay_conf.peer_max_age_ms) {
        n += st->ring[st->head].count;
        batches++;
        ps_drop_head(st);
    }
    if (n) {
        p->queue.dropped += (uint64_t)n;
        mc_warn("peers: \"%s\" unreachable for too long: dropped %ld batches, %ld messages older than %lld ms",
                p->name, batches, n, relay_conf.peer_max_age_ms);
    }
}

void peer_stream_start_locked(peer_t *p, uint64_t now)
{
    peer_stream_t *st = &p->st;

    if (p->stopping) {
        return;
    }
    if (st->call == NULL) {
        if ((st->n == 0 && p->queue.count == 0 && !peer_users_pending_locked(p)) || now < p->retry_at) {
            return;
        }
        peer_stream_expire_locked(p, now);
        if (st->n == 0 && p->queue.count == 0 && !peer_users_pending_locked(p)) {
            return;
        }
        if (ps_open(p) != 0) {
            p->failed_calls++;
            peer_failed_locked(p, now, -1, "cannot start a stream");
            return;
        }
    }
    ps_send(p, now);
}

long peer_stream_tick_locked(peer_t *p, uint64_t now)
{
    peer_stream_t *st = &p->st;
    uint64_t due;

    if (st->call != NULL && !st->got_md && !st->ended && !st->timed_out) {
        /* opened, not answered: an older relay-worker leaves a call to a
         * method it does not know unanswered */
        due = st->opened_at + (uint64_t)relay_conf.peer_timeout_ms;
        if (now < due) {
            return (long)(due - now);
        }
        st->timed_out = 1;
        mc_debug("peers: \"%s\": no answer to the stream for %lld ms: cancelled", p->name,
                 relay_conf.peer_timeout_ms);
        grpc_call_cancel(st->call, NULL);
        return -1;
    }
    if (st->call != NULL) {
        if (st->ended || st->timed_out || st->nsent == 0) {
            return -1;
        }
        due = st->progress_at + (uint64_t)relay_conf.peer_timeout_ms;
        if (now < due) {
            return (long)(due - now);
        }
        st->timed_out = 1;
        mc_error("peers: \"%s\": no ack for %lld ms: stream cancelled", p->name, relay_conf.peer_timeout_ms);
        grpc_call_cancel(st->call, NULL);
        return -1;
    }
    if (st->n > 0 && !p->unary) {
        return p->retry_at > now ? (long)(p->retry_at - now) : 0;
    }
    return -1;
}

int peer_stream_probe_locked(peer_t *p, uint64_t now)
{
    (void)now;
    return ps_open(p);
}

int peer_stream_pop_locked(peer_t *p, peer_batch_t *b)
{
    peer_stream_t *st = &p->st;

    if (st->call != NULL || st->n == 0) {
        return 0;
    }
    *b = st->ring[st->head];
    st->head = (st->head + 1) % PEER_STREAM_WINDOW;
    st->n--;
    return 1;
}

void peer_stream_cancel_locked(peer_t *p)
{
    if (p->st.call != NULL) {
        grpc_call_cancel(p->st.call, NULL);
    }
}

long peer_stream_free_locked(peer_t *p)
{
    peer_stream_t *st = &p->st;
    long n = 0;

    while (st->n > 0) {
        n += st->ring[st->head].count;
        ps_drop_head(st);
    }
    grpc_metadata_array_destroy(&st->md_initial);
    grpc_metadata_array_destroy(&st->md_trailing);
    grpc_slice_unref(st->details);
    return n;
}
