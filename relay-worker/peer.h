/*
 * The state of one peer, shared by the two files of the sending side:
 * grpc_peer.c (the peers, their queues, unary Deliver calls) and
 * grpc_peer_stream.c (the peer's /minichat.Relay/Stream).  Every field is
 * under the peer's lock.
 */
#ifndef RELAY_PEER_H
#define RELAY_PEER_H

#include <pthread.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "minichat/relay_queue.h"
#include "relay.h"

#define PEER_BACKOFF_MIN 100
#define PEER_BACKOFF_MAX 2000
#define PEER_BATCH_ITEMS 10000
#define PEER_INFLIGHT 4          /* Deliver calls in flight per peer (unary) */
#define PEER_STREAM_WINDOW 64    /* batches sent on the stream and not acked yet, at most */
#define PEER_STREAM_PROBE_MS 10000 /* unary this long after a probe failed: probe the stream again */

typedef struct peer_s peer_t;

/* One built RelayBatch. */
typedef struct {
    grpc_slice batch;
    long count;
    uint64_t at;         /* when its oldest message was queued (ms) */
    uint64_t users_upto; /* the last users change it carries (peer_users.c; 0: none) */
} peer_batch_t;

/* peer_users.c: one worker link of a peer node and the users it holds */
typedef struct {
    uint64_t link;
    link_users_t u;
} peer_link_users_t;

typedef struct {
    /* what this node tells the peer, on the stream */
    mc_buf_t out;           /* PeerUsers entries (RelayBatch field 3, framed) not in a batch yet */
    uint64_t out_upto;      /* the last change in out */
    int need_start;         /* the next batch built starts over: users_start and every link's whole set */
    uint64_t acked;         /* the last change the peer acked */
    uint64_t live_until;    /* ms: a stream that ended may still count as filtering until then */
    /* what the peer told this node, on its stream to us */
    int known;              /* 0: it gets every message */
    const void *stream;     /* the peer's stream that said it */
    peer_link_users_t *links;
    size_t nlinks, caplinks;
    uint64_t starts;        /* users_start batches taken from it */
    /* rooms whose messages were left out for the peer since one last went */
    mc_uset_t skipped;
    uint64_t skipped_msgs;  /* messages left out for it */
} peer_users_t;

/* One unary call slot: its batch (being sent, or waiting for a retry) and
 * its call. */
typedef struct {
    relay_tag_t tag;
    peer_t *peer;
    grpc_slice batch;
    long batch_count;
    int has_batch;
    uint64_t batch_at;   /* when the batch's oldest message was queued */
    int64_t call_us;     /* when its call started (mc_now_us) */
    int busy;            /* the call is in flight */
    grpc_call *call;
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_status_code status;
    grpc_slice details;
} peer_slot_t;

/* The peer's stream: the call and the batches it has not had acked.  The
 * ring holds, oldest first, the batches sent on this call and not acked
 * (the first nsent) and those to send (after a failure, or while a send is
 * in flight none waits here: new batches come from the queue). */
typedef struct {
    relay_tag_t md_tag, send_tag, recv_tag, status_tag;
    peer_t *peer;
    grpc_call *call;      /* NULL: no stream open */
    int pending;          /* batches of ops started and not completed */
    int ended;            /* its status came */
    int sending;          /* a SEND_MESSAGE is in flight */
    int got_md;           /* the peer sent its initial metadata: it serves the stream */
    int timed_out;        /* cancelled here: no ack within peer_timeout_ms */
    int64_t send_us;      /* when the send in flight started */
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_metadata_array md_initial, md_trailing;
    grpc_status_code status;
    grpc_slice details;
    peer_batch_t ring[PEER_STREAM_WINDOW];
    size_t head, n, nsent;
    uint64_t acked;       /* the count the peer last acked on this call */
    uint64_t progress_at; /* ms: the last ack, or the first send after the ring was all acked */
    uint64_t opened;      /* streams opened so far */
    uint64_t opened_at;   /* ms: when this call was opened */
    int warned;           /* the peer's not serving the stream was logged (until it serves it) */
} peer_stream_t;

struct peer_s {
    char name[64];
    char target[256];
    grpc_channel *channel;
    void *method;         /* Deliver */
    void *stream_method;  /* Stream */
    pthread_mutex_t lock;
    mc_relay_queue_t queue;
    peer_slot_t slots[PEER_INFLIGHT];
    int busy;            /* unary calls in flight */
    int failed;          /* slots holding a batch to retry */
    int unary;           /* 1: unary Deliver calls (peer_stream off, the stream not proven served yet, or the
                          * peer does not serve it) */
    uint64_t probe_at;   /* unary: when to probe the stream next (ms) */
    int unary_failed;    /* a unary call failed since the last probe: the peer may have been upgraded */
    peer_stream_t st;
    peer_users_t users;  /* under lock */
    /* retry */
    uint64_t retry_at;
    unsigned backoff;
    int down;
    int stopping;
    uint64_t last_ok;    /* mc_now_ms() of the last call that ended OK or ack (0: none yet) */
    /* counters */
    uint64_t sent, calls, failed_calls, drop_logged_at;
    uint64_t stream_batches, stream_restarts, stream_fallbacks;
};

/* grpc_peer.c, for grpc_peer_stream.c (lock held) */
/* Builds the next batch from the queue into b.  Returns 1, 0 (queue empty)
 * or -1 (out of memory, logged). */
int peer_take_batch_locked(peer_t *p, peer_batch_t *b);
size_t peers_count(void);
peer_t *peers_at(size_t i);
/* The peer named node, or NULL. */
peer_t *peers_find(const char *node);

/* peer_users.c (see there) */
int peer_users_pending_locked(const peer_t *p);
void peer_users_stream_opened_locked(peer_t *p);
/* Adds what this node has to tell p about its users to batch b (have: b
 * holds messages; else b is made of users alone).  Returns 1 when b is a
 * batch to send, 0 when there is none, -1 when out of memory. */
int peer_users_attach_locked(peer_t *p, peer_batch_t *b, int have, const char *self);
void peer_users_acked_locked(peer_t *p, uint64_t upto);
void peer_users_stream_closed_locked(peer_t *p, uint64_t now);
/* Before the peers are freed: the cq thread leaves them alone from now on. */
void peer_users_shutdown(void);
/* 1 when m should not go to p (none of its recipients there); the room is
 * remembered.  0: it goes. */
int peer_users_skip_locked(peer_t *p, const link_msg_t *m);
/* 1 when room's messages were left out for p since one last went (and
 * forgets that): the message going now carries after_skip. */
int peer_users_after_skip_locked(peer_t *p, uint64_t room);
void peer_users_free_locked(peer_t *p);
/* Marks the peer reachable again after a success. */
void peer_ok_locked(peer_t *p, uint64_t now);
/* Marks the peer down after a failure and sets its retry time. */
void peer_failed_locked(peer_t *p, uint64_t now, int status, const char *details);
/* Starts what may start (new batches, retries), on the stream or unary. */
void peer_start_locked(peer_t *p, uint64_t now);

/* grpc_peer_stream.c (lock held, but for init) */
void peer_stream_init(peer_t *p);
/* Opens the stream when there is something to send and no backoff, and
 * sends the next batch when none is in flight, the peer has answered the
 * stream and the window has room. */
void peer_stream_start_locked(peer_t *p, uint64_t now);
/* Opens a stream that sends nothing until the peer answers it (while the
 * unary calls go on).  Returns 0 or -1. */
int peer_stream_probe_locked(peer_t *p, uint64_t now);
/* Cancels a stream whose oldest unacked batch waited too long for its ack;
 * returns the ms until the next check is due (-1: none). */
long peer_stream_tick_locked(peer_t *p, uint64_t now);
/* Takes the oldest batch of the ring (for unary calls after a fallback).
 * Returns 1, or 0 when none is left or the stream still has a call. */
int peer_stream_pop_locked(peer_t *p, peer_batch_t *b);
/* Drops ring batches older than peer_max_age_ms that are not on the wire. */
void peer_stream_expire_locked(peer_t *p, uint64_t now);
/* Cancels the call (shutdown). */
void peer_stream_cancel_locked(peer_t *p);
/* Frees the ring; returns the messages in it. */
long peer_stream_free_locked(peer_t *p);

#endif
