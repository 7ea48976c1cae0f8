/*
 * The gRPC server of the relay-worker and the completion-queue thread.
 *
 * One completion queue serves the server and every peer channel.  Its thread
 * loops on grpc_completion_queue_next() and calls the tag's callback; tags
 * are relay_tag_t, so this file does not need to know what the client side
 * does.
 *
 * The server has one registered method, /minichat.Relay/Deliver (unary,
 * RelayBatch -> RelayAck), and keeps exactly one request outstanding: when a
 * call arrives, the next request is posted first, then the batch's messages
 * go to the per-room reorderer (packed with their member list last,
 * msg_pack.c), which releases them to every local nginx worker in seq order
 * as `deliver` frames; ephemeral events in the batch (kind
 * read, typing, presence: seq 0) skip the reorderer and go to every local
 * worker at once as `event` frames (one buffer, one write per worker, in the
 * batch's order); then the ack is sent.  Senders keep up to four calls
 * in flight per peer (grpc_peer.c); they arrive in order but for a rare
 * crossing, which the reorderer puts right (it holds a later seq until the
 * earlier one comes, order_gap_ms at most).
 *
 * The same server serves /minichat.Relay/Stream, the long-lived stream
 * that peers use instead of Deliver (grpc_server_stream.c; not with
 * peer_stream = off), and answers a call to any other method UNIMPLEMENTED,
 * which is what tells a sender to fall back to Deliver.  The cq thread's
 * wait ends when a stream's delayed ack is due.
 *
 * Callers: with mutual TLS on (peer_tls.c) the handshake already refused
 * anyone without a certificate of the mesh's CA; a call from a certificate
 * that names no configured peer is answered PERMISSION_DENIED before its
 * payload is read, and so is a batch whose from_node is not the name its
 * caller's certificate carries.
 *
 * Shutdown: grpc_server_shutdown_and_notify() + cancel_all_calls(), wait for
 * the notification, destroy the server; later rpc_stop() shuts the queue
 * down and joins the thread once the peers have finished their calls.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "minichat/clock.h"
#include "minichat/frame.h"
#include "minichat/log.h"
#include "minichat/relay_queue.h"
#include "relay.h"

/* One incoming call, from request to reply. */
typedef struct {
    relay_tag_t tag;
    int replying;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *reply;
    int cancelled;
} rpc_call_t;

static grpc_completion_queue *rpc_cq_;
static grpc_server *rpc_server;
static void *rpc_method;
static pthread_t rpc_thread;
static int rpc_thread_running;
static int rpc_shutting_down; /* cq thread only, after the shutdown tag is posted */

static pthread_mutex_t rpc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rpc_cond = PTHREAD_COND_INITIALIZER;
static int rpc_server_done;
static relay_tag_t rpc_shutdown_tag;

static uint64_t rpc_batches, rpc_messages;

/* A call to a method this server does not serve, answered UNIMPLEMENTED
 * (what a sender of the stream falls back on). */
typedef struct {
    relay_tag_t tag;
    int replying;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    int cancelled;
} rpc_other_t;

static void rpc_call_done(relay_tag_t *tag, int ok);

void *rpc_cq(void)
{
    return rpc_cq_;
}

static void rpc_other_done(relay_tag_t *tag, int ok);

/* Posts the request for the next call to an unknown method.  Returns 0 or
 * -1. */
static int rpc_request_other(void)
{
    rpc_other_t *o = calloc(1, sizeof(*o));
    grpc_call_error e;

    if (o == NULL) {
        return -1;
    }
    o->tag.done = rpc_other_done;
    grpc_call_details_init(&o->details);
    grpc_metadata_array_init(&o->md);
    e = grpc_server_request_call(rpc_server, &o->call, &o->details, &o->md, rpc_cq_, rpc_cq_, &o->tag);
    if (e != GRPC_CALL_OK) {
        mc_error("grpc: request_call: error %d", (int)e);
        grpc_call_details_destroy(&o->details);
        grpc_metadata_array_destroy(&o->md);
        free(o);
        return -1;
    }
    return 0;
}

/* A call to an unknown method arrived (replying == 0; answered
 * UNIMPLEMENTED) or its answer finished (1). */
static void rpc_other_done(relay_tag_t *tag, int ok)
{
    rpc_other_t *o = (rpc_other_t *)tag;
    grpc_op ops[2];
    grpc_slice text = grpc_slice_from_static_string("method not served by this relay-worker");
    char *method;

    if (ok && !o->replying) {
        if (!rpc_shutting_down) {
            rpc_request_other();
        }
        method = grpc_slice_to_c_string(o->details.method);
        mc_info("grpc: call to %s, which this relay-worker does not serve: UNIMPLEMENTED", method ? method : "?");
        gpr_free(method);
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[0].data.recv_close_on_server.cancelled = &o->cancelled;
        ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
        ops[1].data.send_status_from_server.status_details = &text;
        o->replying = 1;
        if (grpc_call_start_batch(o->call, ops, 2, &o->tag, NULL) == GRPC_CALL_OK) {
            return;
        }
    }
    if (o->call) {
        grpc_call_unref(o->call);
    }
    grpc_call_details_destroy(&o->details);
    grpc_metadata_array_destroy(&o->md);
    free(o);
}

/* Posts the next request for a Deliver call.  Returns 0 or -1. */
static int rpc_request(void)
{
    rpc_call_t *rc = calloc(1, sizeof(*rc));
    grpc_call_error e;

    if (rc == NULL) {
        mc_error("grpc: out of memory, not accepting calls");
        return -1;
    }
    rc->tag.done = rpc_call_done;
    grpc_metadata_array_init(&rc->md);
    e = grpc_server_request_registered_call(rpc_server, rpc_method, &rc->call, &rc->deadline, &rc->md, &rc->payload,
                                            rpc_cq_, rpc_cq_, &rc->tag);
    if (e != GRPC_CALL_OK) {
        mc_error("grpc: request_registered_call: error %d", (int)e);
        grpc_metadata_array_destroy(&rc->md);
        free(rc);
        return -1;
    }
    return 0;
}

static void rpc_call_free(rpc_call_t *rc)
{
    if (rc->payload) {
        grpc_byte_buffer_destroy(rc->payload);
    }
    if (rc->reply) {
        grpc_byte_buffer_destroy(rc->reply);
    }
    if (rc->call) {
        grpc_call_unref(rc->call);
    }
    grpc_metadata_array_destroy(&rc->md);
    free(rc);
}

/* Turns a RelayBatch into deliver frames for the reorderer and event frames
 * for the local workers.  Returns the number of messages accepted,
 * RPC_MALFORMED when the batch does not parse, or RPC_DENIED when caller (a
 * certificate name, or NULL without TLS) is not its from_node. */
long rpc_deliver(const uint8_t *p, size_t n, const char *caller, const void *stream, int *users)
{
    Minichat__RelayBatch *b = minichat__relay_batch__unpack(NULL, n, p);
    Minichat__ChatMessage *msg;
    uint8_t *frames, hdr[MC_PB_LD_HDR_MAX];
    size_t i, cap = 0, ev_off, ev_len = 0, m, h;
    link_msg_t lm;
    int event;

    if (b == NULL) {
        return RPC_MALFORMED;
    }
    if (caller != NULL && strcmp(caller, b->from_node) != 0) {
        mc_error("grpc: peer \"%s\" sent a batch as \"%s\"; refused", caller, b->from_node);
        minichat__relay_batch__free_unpacked(b, NULL);
        return RPC_DENIED;
    }
    if (stream != NULL && (b->users_start || b->n_users > 0)) {
        /* on a stream only: unary calls may cross, and an old change
         * applied after a newer one would lose a user */
        peer_users_apply(b->from_node, stream, b);
        *users = 1;
    }
    for (i = 0; i < b->n_messages; i++) {
        cap += MC_FRAME_HDR + MC_PB_LD_HDR_MAX + minichat__chat_message__get_packed_size(b->messages[i]);
    }
    /* messages are packed one by one for the reorderer; event frames
     * gather here and leave in one write */
    frames = malloc(cap ? cap : 1);
    if (frames == NULL) {
        mc_error("grpc: out of memory, %zu messages from \"%s\" lost", b->n_messages, b->from_node);
        minichat__relay_batch__free_unpacked(b, NULL);
        return 0;
    }
    ev_off = 0;
    for (i = 0; i < b->n_messages; i++) {
        msg = b->messages[i];
        event = relay_is_event_kind(msg->kind);
        /* LocalFrame{deliver = message}: field 4; {event = message}: 22 */
        m = minichat__chat_message__get_packed_size(msg);
        h = mc_pb_ld_header(hdr, event ? 22 : 4, m);
        if ((event ? msg->seq != 0 : msg->room == 0 || msg->seq == 0) || MC_FRAME_HDR + h + m > MC_FRAME_MAX) {
            /* nginx would refuse such a frame and drop its whole link */
            mc_warn("grpc: invalid %s from \"%s\" (room %llu, seq %llu, %zu bytes), dropped",
                    event ? "event" : "message", b->from_node, (unsigned long long)msg->room,
                    (unsigned long long)msg->seq, m);
            continue;
        }
        if (event) {
            mc_frame_put_header(frames + ev_off + ev_len, (uint32_t)(h + m));
            memcpy(frames + ev_off + ev_len + MC_FRAME_HDR, hdr, h);
            minichat__chat_message__pack(msg, frames + ev_off + ev_len + MC_FRAME_HDR + h);
            ev_len += MC_FRAME_HDR + h + m;
            continue;
        }
        /* the list last, so that a worker that holds it gets the message without it */
        msg->recipients_cached = 0; /* a peer's message always carries its list */
        lm.msg = msg_pack(msg, &lm.len, &lm.rcpt_off);
        if (lm.msg == NULL) {
            mc_error("grpc: out of memory, room %llu seq %llu from \"%s\" not delivered here",
                     (unsigned long long)msg->room, (unsigned long long)msg->seq, b->from_node);
            continue;
        }
        lm.room = msg->room;
        lm.ver = msg->members_ver;
        lm.n_rcpt = msg->n_recipients;
        lm.alone_link = 0; /* origin_alone speaks of a worker of the peer's node */
        lm.alone_user = 0;
        lm.after_ms = msg->after_ms;
        lm.after_skip = msg->after_skip;
        order_push(msg->seq, &lm, msg->persist_only);
        free((void *)lm.msg);
    }
    link_broadcast(0, frames + ev_off, ev_len);
    free(frames);
    m = b->n_messages;
    mc_debug("grpc: %zu messages from \"%s\"", m, b->from_node);
    minichat__relay_batch__free_unpacked(b, NULL);
    rpc_batches++;
    rpc_messages += m;
    return (long)m;
}

/* Sends the ack (or an error status) for an incoming call. */
static void rpc_reply(rpc_call_t *rc, long accepted)
{
    Minichat__RelayAck ack = MINICHAT__RELAY_ACK__INIT;
    uint8_t buf[16];
    grpc_slice s;
    grpc_op ops[4], *op = ops;
    grpc_call_error e;

    memset(ops, 0, sizeof(ops));
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op++;
    op->op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op->data.recv_close_on_server.cancelled = &rc->cancelled;
    op++;
    if (accepted >= 0) {
        ack.accepted = (uint32_t)accepted;
        s = grpc_slice_from_copied_buffer((const char *)buf, minichat__relay_ack__pack(&ack, buf));
        rc->reply = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        op->op = GRPC_OP_SEND_MESSAGE;
        op->data.send_message.send_message = rc->reply;
        op++;
    }
    op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op->data.send_status_from_server.status = accepted >= 0                ? GRPC_STATUS_OK
                                              : accepted == RPC_DENIED ? GRPC_STATUS_PERMISSION_DENIED
                                                                       : GRPC_STATUS_INVALID_ARGUMENT;
    op->data.send_status_from_server.trailing_metadata_count = 0;
    op++;
    rc->replying = 1;
    e = grpc_call_start_batch(rc->call, ops, (size_t)(op - ops), &rc->tag, NULL);
    if (e != GRPC_CALL_OK) {
        mc_error("grpc: reply: error %d", (int)e);
        rpc_call_free(rc);
    }
}

/* Logs a caller that is not a configured peer, at most once a second. */
static void rpc_refuse(rpc_call_t *rc)
{
    static uint64_t logged_at, refused;
    uint64_t now = mc_now_ms();
    char *peer;

    refused++;
    if (now - logged_at < 1000) {
        return;
    }
    logged_at = now;
    peer = grpc_call_get_peer(rc->call);
    mc_error("grpc: refused a call from %s: its certificate names no configured peer (peer_tls_names); "
             "%llu refused so far", peer ? peer : "?", (unsigned long long)refused);
    gpr_free(peer);
}

/* A requested call arrived (replying == 0) or its reply finished (1). */
static void rpc_call_done(relay_tag_t *tag, int ok)
{
    rpc_call_t *rc = (rpc_call_t *)tag;
    grpc_byte_buffer_reader r;
    grpc_slice s;
    long accepted = RPC_MALFORMED;
    char caller[64];

    if (rc->replying) {
        rpc_call_free(rc);
        return;
    }
    if (!ok) {
        /* the server is shutting down */
        rpc_call_free(rc);
        return;
    }
    if (!rpc_shutting_down) {
        rpc_request();
    }
    if (!peer_tls_caller(rc->call, caller, sizeof(caller))) {
        rpc_refuse(rc);
        rpc_reply(rc, RPC_DENIED);
        return;
    }
    if (rc->payload == NULL) {
        mc_warn("grpc: Deliver call without a payload");
    } else if (grpc_byte_buffer_reader_init(&r, rc->payload)) {
        s = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        accepted = rpc_deliver(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), peer_tls_enabled() ? caller : NULL,
                               NULL, NULL);
        grpc_slice_unref(s);
        if (accepted == RPC_MALFORMED) {
            mc_error("grpc: malformed RelayBatch (%zu bytes), rejected", (size_t)grpc_byte_buffer_length(rc->payload));
        }
    }
    rpc_reply(rc, accepted);
}

static void rpc_shutdown_done(relay_tag_t *tag, int ok)
{
    (void)tag;
    (void)ok;
    pthread_mutex_lock(&rpc_lock);
    rpc_server_done = 1;
    pthread_cond_broadcast(&rpc_cond);
    pthread_mutex_unlock(&rpc_lock);
}

/* Runs one completion's callback. */
static void rpc_complete(grpc_event ev)
{
    relay_tag_t *tag = ev.tag;

    if (tag == &rpc_shutdown_tag) {
        rpc_shutting_down = 1;
        rpc_streams_shutting_down();
    }
    tag->done(tag, ev.success);
}

/* The completion-queue thread.  After each wake-up it also runs the
 * completions that are already waiting (up to RPC_RUN_MAX, without
 * waiting), with the writes to the workers corked: calls that one read of
 * the transport completed together reach each worker in one write, and
 * wake it once, instead of once per call. */
#define RPC_RUN_MAX 64
static void *rpc_loop(void *arg)
{
    grpc_event ev;
    gpr_timespec until;
    long wait;
    int n, shutdown = 0;

    (void)arg;
    while (!shutdown) {
        /* the streams' delayed acks set how long to wait */
        wait = rpc_shutting_down ? -1 : rpc_streams_ack_due(mc_now_ms());
        until = wait < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                         : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(wait, GPR_TIMESPAN));
        ev = grpc_completion_queue_next(rpc_cq_, until, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (ev.type != GRPC_OP_COMPLETE) {
            continue;
        }
        link_cork();
        rpc_complete(ev);
        for (n = 1; n < RPC_RUN_MAX; n++) {
            ev = grpc_completion_queue_next(rpc_cq_, gpr_inf_past(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN) {
                shutdown = 1;
                break;
            }
            if (ev.type != GRPC_OP_COMPLETE) {
                break; /* GRPC_QUEUE_TIMEOUT: nothing more is ready */
            }
            rpc_complete(ev);
        }
        link_uncork();
    }
    return NULL;
}

/* Routes grpc's own log lines through mc_log, tagged with their source. */
static void rpc_log(gpr_log_func_args *a)
{
    const char *f = strrchr(a->file, '/');

    mc_log(a->severity == GPR_LOG_SEVERITY_ERROR ? MC_LOG_ERROR
           : a->severity == GPR_LOG_SEVERITY_INFO ? MC_LOG_INFO : MC_LOG_DEBUG,
           "grpc: %s (%s:%d)", a->message, f ? f + 1 : a->file, a->line);
}

int rpc_start(const char *listen_addr)
{
    grpc_server_credentials *creds;
    grpc_arg arg[2];
    grpc_channel_args args;
    int port;

    gpr_set_log_function(rpc_log);
    grpc_init();
    rpc_cq_ = grpc_completion_queue_create_for_next(NULL);
    if (rpc_cq_ == NULL) {
        mc_error("grpc: cannot create a completion queue");
        return -1;
    }
    /* no SO_REUSEPORT: a second relay on the same port must fail, not share it */
    arg[0].type = GRPC_ARG_INTEGER;
    arg[0].key = GRPC_ARG_ALLOW_REUSEPORT;
    arg[0].value.integer = 0;
    arg[1].type = GRPC_ARG_INTEGER;
    arg[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    arg[1].value.integer = RELAY_GRPC_MESSAGE_MAX;
    args.num_args = 2;
    args.args = arg;
    rpc_server = grpc_server_create(&args, NULL);
    if (rpc_server == NULL) {
        mc_error("grpc: cannot create the server");
        return -1;
    }
    grpc_server_register_completion_queue(rpc_server, rpc_cq_, NULL);
    rpc_method = grpc_server_register_method(rpc_server, RELAY_METHOD, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                             0);
    if (rpc_method == NULL) {
        mc_error("grpc: cannot register %s", RELAY_METHOD);
        return -1;
    }
    /* peer_stream = off: the stream is answered UNIMPLEMENTED, as by a
     * relay-worker from before it */
    if (relay_conf.peer_stream && rpc_streams_start(rpc_server) != 0) {
        return -1;
    }
    creds = peer_tls_server_creds();
    if (creds == NULL) {
        mc_error("grpc: cannot make the server's credentials");
        return -1;
    }
    port = grpc_server_add_http2_port(rpc_server, listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        mc_error("grpc: cannot listen on \"%s\"", listen_addr);
        return -1;
    }
    grpc_server_start(rpc_server);
    if (rpc_request() != 0 || rpc_streams_listen() != 0 || rpc_request_other() != 0) {
        return -1;
    }
    errno = pthread_create(&rpc_thread, NULL, rpc_loop, NULL);
    if (errno != 0) {
        mc_error("grpc: pthread_create: %s", strerror(errno));
        return -1;
    }
    rpc_thread_running = 1;
    mc_info("grpc: listening on %s (%s)", listen_addr, peer_tls_enabled() ? "mutual TLS" : "insecure");
    return 0;
}

void rpc_server_shutdown(void)
{
    gpr_timespec until;
    int done;

    if (rpc_server == NULL) {
        return;
    }
    if (rpc_thread_running) {
        rpc_shutdown_tag.done = rpc_shutdown_done;
        grpc_server_shutdown_and_notify(rpc_server, rpc_cq_, &rpc_shutdown_tag);
        grpc_server_cancel_all_calls(rpc_server);
        until = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(5, GPR_TIMESPAN));
        pthread_mutex_lock(&rpc_lock);
        while (!rpc_server_done) {
            struct timespec ts = {until.tv_sec, until.tv_nsec};

            if (pthread_cond_timedwait(&rpc_cond, &rpc_lock, &ts) == ETIMEDOUT) {
                mc_error("grpc: server shutdown timed out");
                break;
            }
        }
        done = rpc_server_done;
        pthread_mutex_unlock(&rpc_lock);
        if (!done) {
            /* grpc asserts on destroying a server whose listeners are still
             * up: leak it, the process is exiting */
            rpc_server = NULL;
            return;
        }
    }
    grpc_server_destroy(rpc_server);
    rpc_server = NULL;
    mc_info("grpc: received %llu batches, %llu messages", (unsigned long long)rpc_batches,
            (unsigned long long)rpc_messages);
}

void rpc_stop(void)
{
    if (rpc_cq_ == NULL) {
        return;
    }
    grpc_completion_queue_shutdown(rpc_cq_);
    if (rpc_thread_running) {
        pthread_join(rpc_thread, NULL);
        rpc_thread_running = 0;
    } else {
        while (grpc_completion_queue_next(rpc_cq_, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type
               != GRPC_QUEUE_SHUTDOWN) {
        }
    }
    grpc_completion_queue_destroy(rpc_cq_);
    rpc_cq_ = NULL;
    grpc_shutdown();
}
