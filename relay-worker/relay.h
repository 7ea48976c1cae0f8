/*
 * relay-worker: one per node.  It sits between the node's nginx workers (a
 * unix socket, length-prefixed LocalFrames), the other nodes' relay-workers
 * (gRPC: one stream per peer, /minichat.Relay/Stream, or the unary
 * /minichat.Relay/Deliver with a peer that does not take it), Kafka (every published message) and MySQL
 * (rooms, members, history: every request that needs the database).
 *
 * Files, and which way calls run (never back up the list):
 *  - main.c: start-up, the epoll loop, shutdown; wires the others together;
 *  - dispatch.c: what each LocalFrame from a worker asks for, and which
 *    service does it; msg_pack.c: a chat message packed once for the
 *    workers and the peers, its member list last;
 *  - the services: kafka.c (producer), grpc_peer.c (client side, one queue
 *    per peer, unary calls) with grpc_peer_stream.c (its stream; the two
 *    share peer.h), grpc_server.c (receiving side, unary calls, the cq
 *    thread) with grpc_server_stream.c (incoming streams), peer_tls.c (the mesh's
 *    mutual TLS and which callers are peers), order.c (per-room order of
 *    local delivery), db_jobs.c (the DB threads and their queue) running
 *    queries_rooms.c, queries_lists.c, queries_history.c (the SQL, over the
 *    toolkit in queries.c) and consumer_lag.c (has the roomlist-consumer
 *    caught up?), and history_loop.c (a history page's replica read on the
 *    main loop, non-blocking, handing the DB threads what is not simple);
 *  - worker_users.c: which users each worker holds connections of, and
 *    whether a chat message is for one of them (worker_link.c asks it);
 *  - worker_link.c: the unix-socket server for the node's nginx workers
 *    (transport, and who may connect: the socket file's mode and group, the
 *    peer's credentials against allowed_peers); it hands received frames to the handler main.c gave
 *    it (the dispatcher) through a function pointer, and everyone answers
 *    the workers through link_send()/link_broadcast();
 *  - metrics.c and status.c: what the operator endpoints show (/metrics;
 *    /status and /ready), read from the others' stats functions; main.c
 *    serves them on http_listen (lib/src/http_mini.c) from its epoll loop,
 *    and dispatch.c answers LocalFrame status_req with the status JSON.
 *
 * Threads:
 *  - main: the epoll loop (unix socket, signals, peer retry timers, the
 *    operator endpoints) and the Kafka producer's poll;
 *  - cq: grpc_completion_queue_next() on the one completion queue shared by
 *    the server and every peer channel; each tag is a relay_tag_t whose
 *    callback runs on this thread;
 *  - db (db_threads of them): the blocking MySQL work (db_jobs.c); with
 *    history_on_loop, a history page's replica read runs on the main
 *    loop instead (history_loop.c, non-blocking libmariadb).
 * Shared state is small and each piece has one lock: the local connections
 * and their output buffers (worker_link.c), each peer's queue and call (grpc_peer.c),
 * the DB job queue (db_jobs.c).  Only the main thread frees a local connection;
 * other threads refer to it by its 64-bit id.
 */
#ifndef RELAY_H
#define RELAY_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "minichat.pb-c.h"
#include "minichat/buf.h"
#include "minichat/db.h"
#include "minichat/http_mini.h"
#include "minichat/kafka_sec.h"
#include "minichat/member_slots.h"
#include "minichat/prom_text.h"
#include "minichat/reorder.h"
#include "minichat/sock_access.h"
#include "minichat/user_set.h"

#define RELAY_METHOD "/minichat.Relay/Deliver"
#define RELAY_STREAM_METHOD "/minichat.Relay/Stream"

/* A completion-queue tag: the callback runs on the cq thread. */
typedef struct relay_tag_s relay_tag_t;
struct relay_tag_s {
    void (*done)(relay_tag_t *tag, int ok);
};

/* Returns 1 for the kinds of ChatMessage that are ephemeral events (seq 0,
 * never persisted, never reordered): "read", "typing", "presence", "ban",
 * "disconnect". */
static inline int relay_is_event_kind(const char *kind)
{
    return kind != NULL
           && (strcmp(kind, "read") == 0 || strcmp(kind, "typing") == 0 || strcmp(kind, "presence") == 0
               || strcmp(kind, "ban") == 0 || strcmp(kind, "disconnect") == 0);
}

/* the largest RelayBatch either side of a Deliver call accepts */
#define RELAY_GRPC_MESSAGE_MAX (64 * 1024 * 1024)

typedef struct {
    const char *node;
    const char *unix_socket;
    mode_t unix_socket_mode;   /* the socket file's mode (default 0660) */
    int unix_socket_chgrp;     /* 1: chown the socket file to unix_socket_group */
    gid_t unix_socket_group;
    mc_sock_peers_t allowed_peers; /* besides root and our own uid (worker_link.c) */
    const char *grpc_listen;
    const char *peers;
    const char *peer_tls_ca;   /* PEM files of the mesh's mutual TLS; all NULL: insecure */
    const char *peer_tls_cert;
    const char *peer_tls_key;
    const char *peer_tls_names; /* callers allowed by certificate name; NULL: the peers' node names */
    const char *kafka_brokers;
    const char *kafka_topic;
    long long kafka_linger_ms;
    const char *kafka_compression; /* the producer's compression.type: none, lz4, zstd, gzip or snappy */
    long long kafka_timeout_ms;  /* message.timeout.ms: a message not acked by then fails */
    mc_kafka_sec_t kafka_sec;  /* TLS and SASL to the brokers, for every Kafka handle */
    mc_db_config_t db;
    size_t local_outbuf_max;   /* bytes queued for one nginx worker before it is dropped */
    size_t peer_queue_max;     /* messages queued for one peer before the oldest are dropped */
    size_t peer_queue_bytes;   /* bytes likewise */
    size_t peer_batch_bytes;   /* target size of one RelayBatch */
    long long peer_timeout_ms; /* deadline of one Deliver call; on a stream, the longest wait for an ack */
    int peer_stream;           /* peer_stream = on (1, the default): serve and use /minichat.Relay/Stream;
                                * off: unary Deliver only, as a relay-worker from before the stream */
    long long peer_max_age_ms; /* queued longer than this: too old for live delivery, dropped */
    long long publish_max_age_ms; /* a seq assigned longer ago than this is not published (dispatch.c) */
    int fanout_durable;        /* fanout = durable: recipients get a message once Kafka has it;
                                * admitted (0, the default): at once, beside Kafka (dispatch.c) */
    mc_reorder_conf_t order;   /* per-room ordering of local delivery (order.c) */
    int db_threads;            /* threads running database requests */
    int history_on_loop;       /* history_on_loop = on (1): a page's replica read may run on the main loop */
    int history_on_loop_max;   /* at most this many pages on the loop at once; the rest go to the DB threads */
    size_t db_queue_max;       /* database requests waiting before more are refused */
    const char *kafka_consumer_group; /* the roomlist-consumer's group: a room state waits for it */
    long long rebuild_wait_ms; /* how long a room state waits for that group; 0: no wait */
    int http_on;               /* http_listen is set: /metrics, /status, /ready (lib/src/http_mini.c) */
    mc_http_addr_t http_listen;
    int log_level;             /* MC_LOG_*; log_level and log_file change on SIGHUP (main.c) */
    const char *log_file;      /* "" : stderr only */
} relay_conf_t;

extern relay_conf_t relay_conf;
extern volatile sig_atomic_t relay_stop;

/* main.c */
int relay_epoll_fd(void);

/* worker_link.c: the unix-socket server for this node's nginx workers */

/* The worker connection a frame came from (valid during the call only). */
typedef struct {
    uint64_t id;
    const char *node;
    unsigned pid;
    mc_mslots_t *members; /* the member lists it sent on this connection (main thread) */
} link_from_t;

/* A chat message for this node's workers (msg_pack.c's layout): msg[0 ..
 * rcpt_off) is the packed ChatMessage without its list, msg[rcpt_off ..
 * len) the list's field (n_rcpt ids) under members version ver (0: none). */
typedef struct {
    uint64_t room;
    uint64_t ver;
    size_t n_rcpt;
    const uint8_t *msg;
    size_t len;
    size_t rcpt_off;
    /* the worker connection that published it when the sender has no other
     * connection there (ChatMessage.origin_alone), else 0: that worker
     * needs it only for recipients other than alone_user */
    uint64_t alone_link;
    uint64_t alone_user;
    /* ChatMessage.after_ms: the room's previous seq was admitted this many
     * ms before (0: not known); shortens the reorderer's first hold */
    uint64_t after_ms;
    /* ChatMessage.after_skip: the peer that sent it left out the room's
     * earlier messages for this node */
    int after_skip;
} link_msg_t;

/* worker_users.c: the users one worker connection announced (under
 * worker_link.c's lock) */
typedef struct {
    int known;      /* 0: never announced, or given up: the worker gets every message */
    mc_uset_t set;
} link_users_t;
/* Applies a LocalFrame.users.  Returns 0, or -1 when out of memory (the
 * set is then dropped: not known until the next full set). */
int link_users_apply(link_users_t *u, const Minichat__UserSet *us);
/* Returns 1 when the worker on link connection link_id should get m: its
 * set is not known, or holds one of m's recipients (other than the sender
 * when m came from that connection with the sender alone there); else 0. */
int link_users_wants(const link_users_t *u, const link_msg_t *m, uint64_t link_id);
void link_users_free(link_users_t *u);

typedef struct {
    /* Handles one frame other than hello and takes ownership of f.  Returns
     * 0, or -1 to close the connection. */
    int (*frame)(const link_from_t *from, Minichat__LocalFrame *f);
    /* Called after the frames of one read were handled. */
    void (*read_done)(void);
} link_handler_t;

int link_listen(const char *path, const link_handler_t *handler);
void link_stop_accepting(void);
/* 1 while the socket takes new connections (main thread) */
int link_listening(void);
void link_on_event(void *ptr, uint32_t events);
/* Queues frames for one connection; returns 0, or -1 when it is gone. */
int link_send(uint64_t conn_id, const uint8_t *frame, size_t len);
/* Queues frames for every connection that said hello but except_id (0: all). */
void link_broadcast(uint64_t except_id, const uint8_t *frames, size_t len);
/* Sends chat messages to every connection that said hello and holds one
 * of a message's recipients (or never said which users it holds), as
 * LocalFrame.deliver, one write per connection; a connection that holds a
 * message's list under its version gets the message without it. */
void link_deliver(const link_msg_t *msgs, size_t n);
void link_close_all(void);
/* Cork the calling thread's writes to the workers: they queue until
 * link_uncork(), which sends each connection's queue with one send().
 * Corks nest: the outermost link_uncork() sends. */
void link_cork(void);
void link_uncork(void);
/* Calls fn for every connection that said hello, with its id and users,
 * under the link lock (any thread; fn must not take a peer's lock). */
void link_users_each(void (*fn)(void *ctx, uint64_t link, const link_users_t *u), void *ctx);
/* Answers a users frame (an empty one with its req_id); any thread. */
void link_users_answer(uint64_t conn_id, uint64_t req_id);

/* peer_users.c: what this node tells its peers of its users, and what they
 * told it (see there) */
/* A worker link's users changed (after it was applied here; main thread).
 * Returns the change's number. */
uint64_t peer_users_note(uint64_t link, const Minichat__UserSet *us);
/* A worker link closed. */
void peer_users_gone(uint64_t link);
/* Holds the answer to a users frame until every streaming peer acked
 * change: returns 1 when held (peer_users_check answers it), 0 when it
 * may be answered now. */
int peer_users_hold_answer(uint64_t conn, uint64_t req, uint64_t change);
/* Answers the held ones whose peers acked, or that waited too long.
 * Returns the ms until the next may time out, or -1 (any thread, no peer
 * lock held). */
long peer_users_check(uint64_t now);
/* A peer's stream batch: applies its users (node: its from_node). */
void peer_users_apply(const char *node, const void *stream, const Minichat__RelayBatch *b);
/* A peer's stream ended: what it said of its users is forgotten. */
void peer_users_forget(const void *stream);
void peer_users_stats(uint64_t *waited, uint64_t *timeouts);

/* skipped: messages left out for a worker that holds none of their recipients */
void link_stats(uint64_t *conns, uint64_t *dropped, uint64_t *refused, uint64_t *skipped);

/* dispatch.c: the LocalFrame handler (main thread) */
/* Registers the durable handler with the producer (before the first frame). */
int dispatch_init(void);
int dispatch_frame(const link_from_t *from, Minichat__LocalFrame *f);
void dispatch_read_done(void);

/* kafka.c */
/* order.c: every message for local delivery, released per room in seq order */
int order_init(const mc_reorder_conf_t *conf);
/* Takes a copy of msg->msg, to be released in room msg->room's seq order.
 * repair: the message was published again (a retry, the
 * sweeper): dropping it as delivered before is normal, not logged as a
 * loss. */
void order_push(uint64_t seq, const link_msg_t *msg, int repair);

/* msg_pack.c: packs m (its list cleared in the copy, never in m) with the
 * list's field last; *rcpt_off is where that field starts.  Returns a
 * malloc'ed buffer, or NULL when out of memory. */
uint8_t *msg_pack(Minichat__ChatMessage *m, size_t *len, size_t *rcpt_off);
long order_tick(uint64_t now);
void order_stats(mc_reorder_stats_t *st);
void order_close(void);

int kafka_init(const relay_conf_t *conf);
/* Produces m; when req_id is set, the worker on conn_id gets a PublishResult
 * with that req_id once Kafka has it or failed to take it. */
/* What waits for a message to be durable: the packed message (msg_pack())
 * for this node's reorderer and for the peers. */
typedef struct {
    uint8_t *frame;           /* malloc'ed: the message as msg_pack() packs it */
    link_msg_t msg;           /* msg.msg == frame */
    int repair;               /* a message published again (mc_reorder_push_repair) */
} kafka_fanout_t;
typedef void (*kafka_durable_pt)(uint64_t room, uint64_t seq, const kafka_fanout_t *fan);
void kafka_set_durable_handler(kafka_durable_pt fn);
/* Produces m; a delivery report answers (conn_id, req_id) when req_id is
 * not 0, and on success hands fan (taken over, may be NULL) to the durable
 * handler. */
void kafka_produce(Minichat__ChatMessage *m, uint64_t conn_id, uint64_t req_id, kafka_fanout_t *fan);
/* 1 when a delivery error is worth producing the message again. */
int kafka_err_retriable(int err);   /* an rd_kafka_resp_err_t */
/* Sends a PublishResult (error NULL = ok) to the worker on conn_id. */
void kafka_answer(uint64_t conn_id, uint64_t req_id, const char *error);
void kafka_poll(void);
extern int kafka_fatal;            /* set on a fatal producer error: exit non-zero */
int kafka_is_event(void *ptr);
int kafka_pending(void);          /* messages not yet delivered or failed */     /* the epoll tag of the delivery-report eventfd */
void kafka_on_event(void);
void kafka_close(void);
void kafka_stats(uint64_t *produced, uint64_t *delivered, uint64_t *failed);
typedef struct {
    int fatal;                  /* the producer hit a fatal error (the process is stopping) */
    int brokers_down;           /* librdkafka said all brokers are down, and nothing was delivered since */
    uint64_t last_delivered_ms; /* mc_now_ms() of the last successful delivery report; 0: none */
    uint64_t pending;           /* messages produced and not yet delivered or failed */
    uint64_t produced, delivered, failed;
} kafka_state_t;
/* The producer's state (main thread). */
void kafka_state(kafka_state_t *st);

/* grpc_server.c: the server and the completion-queue thread */
int rpc_start(const char *listen_addr);
void rpc_server_shutdown(void);
void rpc_stop(void);
void *rpc_cq(void);
/* The receiving side of one RelayBatch (grpc_server.c, for both methods):
 * hands its messages to the reorderer and its events to the workers.
 * Returns the number of messages, RPC_MALFORMED, or RPC_DENIED when caller
 * (a certificate name, or NULL without TLS) is not its from_node.  On a
 * stream (stream: its handle) the batch's users are applied too, and
 * *users set when it had any. */
#define RPC_MALFORMED (-1)
#define RPC_DENIED (-2)
long rpc_deliver(const uint8_t *p, size_t n, const char *caller, const void *stream, int *users);

/* grpc_server_stream.c: incoming /minichat.Relay/Stream calls (cq thread
 * only, but for rpc_streams_start) */
/* Registers the method on the server (before grpc_server_start); then
 * rpc_streams_listen() posts the first request.  Each returns 0 or -1. */
int rpc_streams_start(void *server);
int rpc_streams_listen(void);
/* Sends the acks that are due; returns the ms until the next one is (-1:
 * none waiting). */
long rpc_streams_ack_due(uint64_t now);
void rpc_streams_shutting_down(void);

/* peer_tls.c: mutual TLS between relay-workers (grpc types stay opaque here) */
struct grpc_server_credentials;
struct grpc_channel_credentials;
struct grpc_call;
/* Reads and checks the PEM files (or warns that peers are unauthenticated).
 * Returns 0 or -1 with a log line. */
int peer_tls_init(const relay_conf_t *conf);
int peer_tls_enabled(void);
/* New credentials for the server and for a channel to a peer (mTLS, or
 * insecure when TLS is off); the caller releases them. */
struct grpc_server_credentials *peer_tls_server_creds(void);
struct grpc_channel_credentials *peer_tls_channel_creds(void);
/* Returns 1 when the caller of a server call is an allowed peer (always with
 * TLS off) and copies its certificate name into name (left alone with TLS
 * off), else 0. */
int peer_tls_caller(struct grpc_call *call, char *name, size_t size);
void peer_tls_free(void);

/* grpc_peer.c: the client side, one queue and one call in flight per peer */
/* Checks a peers list ("node@host:port,...") without opening anything.
 * Returns 0, or -1 with the reason in err. */
int peers_check(const char *spec, const char *self, char *err, size_t err_size);
int peers_init(const char *spec, const char *self);
void peers_push(const uint8_t *msg, size_t len);
/* Queues a chat message for every peer that holds one of its recipients,
 * or whose users this node does not know (peer_users.c); repair: a
 * message published again. */
void peers_push_msg(const link_msg_t *m, int repair);
void peers_kick(void);
long peers_tick(uint64_t now);
int peers_idle(void);
void peers_shutdown(void);
void peers_stats(uint64_t *sent, uint64_t *dropped, uint64_t *failed_calls);

/* One peer as peers_status() saw it. */
typedef enum { PEER_UNKNOWN, PEER_UP, PEER_DOWN } peer_state_t;
typedef struct {
    char node[64];
    char target[256];
    peer_state_t state;   /* UNKNOWN: no call has ended yet; DOWN: the last failed, batches are retried */
    uint64_t last_ok_ms;  /* mc_now_ms() when a call last ended OK; 0: never */
    size_t queued;        /* messages waiting in its queue */
    size_t queued_bytes;
    int inflight;         /* Deliver calls in flight */
    int retrying;         /* batches waiting for a retry */
    int streaming;        /* 1: the peer link is the stream; 0: unary Deliver calls (fallback or peer_stream off) */
    int users_known;      /* 1: the peer said which users it holds (its stream is up): it gets only messages for them */
    uint64_t users_starts; /* whole sets the peer sent (one per stream it opened) */
    uint64_t skipped;     /* chat messages left out for it: none of their recipients there */
    size_t stream_unacked; /* batches sent or waiting on the stream that the peer has not acked */
    uint64_t sent, dropped, calls, failed_calls;
    uint64_t stream_batches, stream_restarts, stream_fallbacks;
} peer_status_t;
/* Copies the state of up to max peers, in the order of the peers key, into
 * out (each under its lock: any thread).  Returns how many. */
size_t peers_status(peer_status_t *out, size_t max);
#define PEERS_MAX 64

/* db_jobs.c: the DB threads and their bounded job queue (the SQL itself is
 * in queries_*.c, see queries.h) */
int db_jobs_start(const relay_conf_t *conf);
/* Connects to the primary once: a wrong password, user, database or TLS
 * setting stops the start (-1); a primary that is merely down is a warning. */
int db_check_start(const relay_conf_t *conf);
/* Returns 1 for a LocalFrame body that is a database request. */
int db_jobs_accepts(int body_case);
/* Queues a database request and takes ownership of req; the result (or an
 * "unavailable: ..." error when the queue is full) goes to conn_id. */
void db_jobs_submit(uint64_t conn_id, Minichat__LocalFrame *req);
void db_jobs_stop(void);
/* Packs a result frame and sends it to the connection that asked (any thread). */
void db_jobs_send(uint64_t conn_id, const Minichat__LocalFrame *f);
/* Counts a database request answered off the DB threads by its error (NULL
 * or "": ok), as the threads count theirs. */
void db_jobs_count(const char *error);
/* Copies the servers' verdicts the DB threads' routers published last into
 * *h.  Returns 1, or 0 when none has published yet (*h untouched). */
int db_jobs_verdicts(mc_db_health_t *h);
/* Queues a lag measurement for a DB thread, which publishes its verdicts
 * after it (at most one waits; nothing without lag checks). */
void db_jobs_refresh(void);
/* Returns 1 while the read-your-writes table sends every read to the
 * primary (it is full: see db_ryw.h), else 0. */
int db_jobs_recent_writes(void);
/* Why a request ran again on its DB thread (minichat_relay_db_reruns_total). */
typedef enum { DB_RERUN_CONNECTION, DB_RERUN_DEADLOCK, DB_RERUN_LOCK_WAIT, DB_RERUN_REASONS } db_rerun_reason_t;
extern const char *const db_rerun_reason_names[DB_RERUN_REASONS];
typedef struct {
    int threads;              /* 0: no database configured */
    uint64_t queued;          /* requests waiting now */
    uint64_t ok, failed, unavailable, busy; /* answered: ok, with the request's own error, with a database
                                             * error, refused at once (queue full) */
    uint64_t reruns[DB_RERUN_REASONS]; /* requests run again, by db_rerun_reason_t */
    int health_known;         /* a DB thread has run a request */
    mc_db_health_t health;    /* the servers as the last request found them */
} db_jobs_stats_t;
/* The queue and what the requests found (any thread). */
void db_jobs_stats(db_jobs_stats_t *st);

/* history_loop.c: history pages read on the main loop (history_on_loop) */
/* Sets the loop's replica connections up (none opened yet).  Returns 0 or -1. */
int hloop_start_loop(const relay_conf_t *conf);
/* Takes a history request (ownership of f) to read it on the loop.
 * Returns 0, or -1 when the DB threads must have it (f untouched). */
int hloop_submit(uint64_t conn_id, Minichat__LocalFrame *f);
/* Returns 1 when an epoll event's data.ptr is one of the loop's connections. */
int hloop_is_event(const void *ptr);
void hloop_on_event(void *ptr, uint32_t events);
/* Closes connections that waited past their deadline (every loop round). */
void hloop_tick(int64_t now_ms);
/* Hands pages in progress to the DB threads and closes the connections
 * (before db_jobs_stop). */
void hloop_stop(void);
/* Pages answered on the loop, and pages it handed to the DB threads. */
void hloop_stats(uint64_t *answered, uint64_t *handed);

/* metrics.c: the /metrics page (docs/metrics.md) and the histograms the
 * other files observe into (any thread) */
typedef struct {
    mc_hist_t peer_batch;     /* messages per Deliver call */
    mc_hist_t peer_call;      /* a Deliver call's duration, us */
    mc_hist_t kafka_produce;  /* produce to successful delivery report, us */
    mc_hist_t db_request;     /* a database request's run on its thread, us (a history page on the
                               * main loop: taken to answered) */
} relay_hists_t;
extern relay_hists_t relay_hists;
void relay_metrics_init(void);
/* Replaces out's contents with the page.  Returns 0 or -1 (main thread). */
int relay_metrics_text(mc_buf_t *out);

/* status.c: the relay-worker's state as one JSON object (docs/operations.md
 * "Status and readiness"), for the HTTP /status page and LocalFrame.status */
/* Records when the process started (main, before the services). */
void relay_status_start(void);
/* Replaces out's contents with the status JSON.  Returns 0, or -1 when out
 * of memory (out is then empty). */
int relay_status_json(mc_buf_t *out);
/* Returns 1 when ready (the Kafka producer usable, the worker socket
 * listening), else 0 with a JSON object naming the reasons in why. */
int relay_ready(mc_buf_t *why);

/* Packs a LocalFrame with its length header into a malloc'ed buffer; returns
 * NULL when out of memory. */
uint8_t *relay_pack_frame(const Minichat__LocalFrame *f, size_t *len);

#endif
