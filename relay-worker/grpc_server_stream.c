/*
 * The receiving side of /minichat.Relay/Stream: one long-lived call per
 * sending peer that carries RelayBatch messages one after another, answered
 * by RelayStreamAck messages that count the batches taken (cumulative).
 *
 * Why a stream: with the unary Deliver every batch is a call of its own,
 * and at 1,000 messages a second that is a call arrival (a new HTTP/2
 * stream, its headers) and a reply (headers, message, trailers) for each
 * message on this side, and as many wake-ups of this thread.  On a stream a
 * batch is one message read, and acks go out by count: after
 * STREAM_ACK_EVERY batches, or STREAM_ACK_DELAY_MS after the first batch
 * not yet acked (rpc_loop in grpc_server.c waits with that deadline), so a
 * quiet link is acked within a few ms and a busy one once per
 * STREAM_ACK_EVERY batches.  Delivery does not wait for the ack: each batch
 * goes to the reorderer as it is read, in order.
 *
 * The ack only tells the sender what it may forget: a batch it sent but
 * that was not acked when the stream broke is sent again on the next stream
 * (grpc_peer_stream.c).  Messages seen twice are dropped by the reorderer
 * (a seq below the room's position: order.c); ephemeral events (seq 0) of a
 * resent batch are delivered twice, as with a retried unary call.
 *
 * Callers: as for Deliver (grpc_server.c), a caller whose certificate names
 * no configured peer is answered PERMISSION_DENIED before anything is read,
 * and a batch whose from_node is not that name ends the stream with
 * PERMISSION_DENIED; a batch that does not parse ends it with
 * INVALID_ARGUMENT (the sender drops that batch and opens a new stream).
 *
 * Every function here runs on the cq thread (rpc_streams_start before it
 * starts), so the list of open streams needs no lock.  A stream is freed
 * once every batch of ops started on its call has completed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "minichat/clock.h"
#include "minichat/log.h"
#include "relay.h"

#define STREAM_ACK_EVERY 16    /* batches taken before an ack goes at once */
#define STREAM_ACK_DELAY_MS 10 /* the longest a taken batch waits for its ack */

typedef struct srv_stream_s srv_stream_t;
struct srv_stream_s {
    relay_tag_t arrived_tag, recv_tag, ack_tag, close_tag, status_tag;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;  /* the batch being received */
    grpc_byte_buffer *ack_bb;   /* the ack being sent */
    int pending;                /* batches of ops started and not completed */
    int acking;                 /* an ack is being sent */
    int done;                   /* no more reads or acks: the status is sent or the call is over */
    int cancelled;
    int tls;
    char caller[64];
    uint64_t received, acked;   /* batches taken on this stream; the count last acked */
    uint64_t unacked_since;     /* ms: when the first batch not acked yet was taken (0: none) */
    srv_stream_t *prev, *next;
};

static grpc_server *ss_server;
static void *ss_method;
static srv_stream_t *ss_list;     /* streams with an outstanding request or a live call */
static srv_stream_t *ss_waiting;  /* the outstanding request */
static int ss_stopping;

static int ss_request(void);
static void ss_arrived(relay_tag_t *tag, int ok);
static void ss_recv_done(relay_tag_t *tag, int ok);
static void ss_ack_done(relay_tag_t *tag, int ok);
static void ss_close_done(relay_tag_t *tag, int ok);
static void ss_status_done(relay_tag_t *tag, int ok);

/* Frees a stream whose ops have all completed. */
static void ss_free(srv_stream_t *s)
{
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        ss_list = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    }
    if (s->payload) {
        grpc_byte_buffer_destroy(s->payload);
    }
    if (s->ack_bb) {
        grpc_byte_buffer_destroy(s->ack_bb);
    }
    if (s->call) {
        grpc_call_unref(s->call);
    }
    grpc_metadata_array_destroy(&s->md);
    peer_users_forget(s); /* what the peer said on it: no stream, no filter */
    free(s);
}

/* One batch of ops on the stream's call finished: frees it after the last. */
static void ss_op_done(srv_stream_t *s)
{
    if (--s->pending == 0) {
        ss_free(s);
    }
}

/* Starts ops on the stream's call; returns 0 or -1 (logged). */
static int ss_start(srv_stream_t *s, const grpc_op *ops, size_t n, relay_tag_t *tag)
{
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, tag, NULL);

    if (e != GRPC_CALL_OK) {
        mc_error("grpc: stream from \"%s\": start_batch: error %d", s->caller, (int)e);
        return -1;
    }
    s->pending++;
    return 0;
}

/* Ends the stream with a status (not OK: the sender opens a new one). */
static void ss_finish(srv_stream_t *s, grpc_status_code status, const char *text)
{
    grpc_op op;
    grpc_slice details = grpc_slice_from_static_string(text);

    if (s->done) {
        return;
    }
    s->done = 1;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = status;
    op.data.send_status_from_server.status_details = &details;
    if (ss_start(s, &op, 1, &s->status_tag) != 0) {
        grpc_call_cancel(s->call, NULL);
    }
}

/* Sends an ack for every batch taken so far. */
static void ss_ack(srv_stream_t *s)
{
    Minichat__RelayStreamAck ack = MINICHAT__RELAY_STREAM_ACK__INIT;
    uint8_t buf[16];
    grpc_slice sl;
    grpc_op op;

    if (s->acking || s->done || s->received == s->acked) {
        return;
    }
    ack.batches = s->received;
    sl = grpc_slice_from_copied_buffer((const char *)buf, minichat__relay_stream_ack__pack(&ack, buf));
    s->ack_bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->ack_bb;
    if (ss_start(s, &op, 1, &s->ack_tag) != 0) {
        grpc_byte_buffer_destroy(s->ack_bb);
        s->ack_bb = NULL;
        grpc_call_cancel(s->call, NULL);
        return;
    }
    s->acking = 1;
    s->acked = s->received;
    s->unacked_since = 0;
}

/* Posts the read of the next batch. */
static void ss_recv(srv_stream_t *s)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->payload;
    if (ss_start(s, &op, 1, &s->recv_tag) != 0) {
        grpc_call_cancel(s->call, NULL);
    }
}

/* Posts the request for the next incoming stream.  Returns 0 or -1. */
static int ss_request(void)
{
    srv_stream_t *s = calloc(1, sizeof(*s));
    grpc_call_error e;

    if (s == NULL) {
        mc_error("grpc: out of memory, not accepting streams");
        return -1;
    }
    s->arrived_tag.done = ss_arrived;
    s->recv_tag.done = ss_recv_done;
    s->ack_tag.done = ss_ack_done;
    s->close_tag.done = ss_close_done;
    s->status_tag.done = ss_status_done;
    snprintf(s->caller, sizeof(s->caller), "?");
    grpc_metadata_array_init(&s->md);
    e = grpc_server_request_registered_call(ss_server, ss_method, &s->call, &s->deadline, &s->md, NULL, rpc_cq(),
                                            rpc_cq(), &s->arrived_tag);
    if (e != GRPC_CALL_OK) {
        mc_error("grpc: request_registered_call (stream): error %d", (int)e);
        grpc_metadata_array_destroy(&s->md);
        free(s);
        return -1;
    }
    s->pending = 1;
    s->next = ss_list;
    if (ss_list) {
        ss_list->prev = s;
    }
    ss_list = s;
    ss_waiting = s;
    return 0;
}

/* A stream arrived (or, !ok, the server is shutting down). */
static void ss_arrived(relay_tag_t *tag, int ok)
{
    srv_stream_t *s = (srv_stream_t *)((char *)tag - offsetof(srv_stream_t, arrived_tag));
    grpc_op ops[2];
    int allowed;

    ss_waiting = NULL;
    if (!ok) {
        s->done = 1;
        ss_op_done(s);
        return;
    }
    if (!ss_stopping) {
        ss_request();
    }
    s->tls = peer_tls_enabled();
    allowed = peer_tls_caller(s->call, s->caller, sizeof(s->caller));
    if (!s->tls) {
        snprintf(s->caller, sizeof(s->caller), "?");
    }
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[1].data.recv_close_on_server.cancelled = &s->cancelled;
    if (ss_start(s, ops, 2, &s->close_tag) != 0) {
        grpc_call_cancel(s->call, NULL);
        ss_op_done(s);
        return;
    }
    if (!allowed) {
        mc_error("grpc: refused a stream from a certificate that names no configured peer (peer_tls_names)");
        ss_finish(s, GRPC_STATUS_PERMISSION_DENIED, "not a configured peer");
    } else {
        ss_recv(s);
    }
    ss_op_done(s); /* the request's own op */
}

/* A batch was read, or the sender closed (payload NULL), or the call is
 * over (!ok). */
static void ss_recv_done(relay_tag_t *tag, int ok)
{
    srv_stream_t *s = (srv_stream_t *)((char *)tag - offsetof(srv_stream_t, recv_tag));
    grpc_byte_buffer_reader r;
    grpc_slice sl;
    long accepted = RPC_MALFORMED;
    int users = 0;

    if (!ok || s->payload == NULL) {
        /* the sender half-closed (it is stopping): ack what came, then OK */
        if (ok) {
            ss_ack(s);
            ss_finish(s, GRPC_STATUS_OK, "");
        }
        ss_op_done(s);
        return;
    }
    if (grpc_byte_buffer_reader_init(&r, s->payload)) {
        sl = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        accepted = rpc_deliver(GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl), s->tls ? s->caller : NULL, s,
                               &users);
        grpc_slice_unref(sl);
    }
    grpc_byte_buffer_destroy(s->payload);
    s->payload = NULL;
    if (accepted == RPC_MALFORMED) {
        mc_error("grpc: malformed RelayBatch on the stream from \"%s\", stream ended", s->caller);
        ss_ack(s); /* the batches before it were taken */
        ss_finish(s, GRPC_STATUS_INVALID_ARGUMENT, "malformed RelayBatch");
    } else if (accepted == RPC_DENIED) {
        ss_finish(s, GRPC_STATUS_PERMISSION_DENIED, "from_node is not the caller");
    } else if (!s->done) {
        s->received++;
        if (s->unacked_since == 0) {
            s->unacked_since = mc_now_ms();
        }
        if (s->received - s->acked >= STREAM_ACK_EVERY || users) {
            /* a users change is acked at once: a worker's hello may wait for it */
            ss_ack(s);
        }
        ss_recv(s);
    }
    ss_op_done(s);
}

static void ss_ack_done(relay_tag_t *tag, int ok)
{
    srv_stream_t *s = (srv_stream_t *)((char *)tag - offsetof(srv_stream_t, ack_tag));

    (void)ok;
    s->acking = 0;
    grpc_byte_buffer_destroy(s->ack_bb);
    s->ack_bb = NULL;
    if (ok && s->received - s->acked >= STREAM_ACK_EVERY) {
        ss_ack(s);
    }
    ss_op_done(s);
}

/* The call is over (the sender went away, cancelled, or we sent a status). */
static void ss_close_done(relay_tag_t *tag, int ok)
{
    srv_stream_t *s = (srv_stream_t *)((char *)tag - offsetof(srv_stream_t, close_tag));

    (void)ok;
    s->done = 1;
    peer_users_forget(s); /* the peer's next stream tells its users over */
    ss_op_done(s);
}

static void ss_status_done(relay_tag_t *tag, int ok)
{
    srv_stream_t *s = (srv_stream_t *)((char *)tag - offsetof(srv_stream_t, status_tag));

    (void)ok;
    ss_op_done(s);
}

int rpc_streams_start(void *server)
{
    ss_server = server;
    ss_method = grpc_server_register_method(ss_server, RELAY_STREAM_METHOD, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    if (ss_method == NULL) {
        mc_error("grpc: cannot register %s", RELAY_STREAM_METHOD);
        return -1;
    }
    return 0;
}

/* Posts the first request (after grpc_server_start). */
int rpc_streams_listen(void)
{
    return ss_method ? ss_request() : 0;
}

long rpc_streams_ack_due(uint64_t now)
{
    srv_stream_t *s, *next;
    long wait = -1, w;

    for (s = ss_list; s != NULL; s = next) {
        next = s->next; /* ss_ack cannot free s, but be safe about the order */
        if (s->unacked_since == 0 || s->done) {
            continue;
        }
        if (now >= s->unacked_since + STREAM_ACK_DELAY_MS && !s->acking) {
            ss_ack(s);
            continue;
        }
        w = s->acking ? 1 : (long)(s->unacked_since + STREAM_ACK_DELAY_MS - now);
        if (wait < 0 || w < wait) {
            wait = w;
        }
    }
    return wait;
}

void rpc_streams_shutting_down(void)
{
    ss_stopping = 1;
}
