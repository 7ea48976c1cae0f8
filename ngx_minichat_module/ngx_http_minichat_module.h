/*
 * MiniChat nginx module: shared types and the functions the module's files
 * call in one another.
 *
 * One worker holds: one connection per Redis node (the Redis, or each
 * master of a Redis Cluster; on the nginx event loop, plain TCP or TLS), one unix-socket connection to the node's relay-worker, and a
 * registry of its WebSocket connections by user id.  Nothing here blocks.
 *
 * Calls run one way: the WebSocket reader (_ws.c) hands complete messages
 * to the op dispatcher (_ops.c), which calls one op (_send.c, _read.c,
 * _history.c, _resume.c, _rooms.c); ops and the REST handlers (_api.c) use
 * the room layer (_room.c: scripts with a rebuild from MySQL when Redis lost
 * the room), Redis (_redis.c) and the relay-worker client (_relay.c); all of
 * them write to clients through the connection layer (_conn.c) and reach
 * other connections through the registry (_registry.c).  The upgrade, the
 * REST API and the send op check rate limits and bans through _limit.c.
 */
#ifndef NGX_HTTP_MINICHAT_MODULE_H
#define NGX_HTTP_MINICHAT_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>

#include <jansson.h>

#include "minichat.pb-c.h"
#include "minichat/buf.h"
#include "minichat/op.h"

#define NGX_HTTP_MINICHAT_CID_MAX MC_OP_CID_MAX
#define NGX_HTTP_MINICHAT_USER_BUCKETS 4096
#define NGX_HTTP_MINICHAT_MAX_INFLIGHT 64   /* sends awaiting Redis per connection */
#define NGX_HTTP_MINICHAT_CLOSE_EXPIRED 4001 /* WebSocket close code: the token expired */
#define NGX_HTTP_MINICHAT_CLOSE_BANNED 4003 /* WebSocket close code: the user was banned */
#define NGX_HTTP_MINICHAT_CLOSE_DISCONNECTED 4005 /* WebSocket close code: the server API disconnected the user */
#define NGX_HTTP_MINICHAT_LINGER_TIME 2000  /* ms to wait for the client's EOF after our close frame */
#define NGX_HTTP_MINICHAT_FLUSH_BUSY  64    /* minichat_flush_window: a pass this big makes a worker busy */
#define NGX_HTTP_MINICHAT_FLUSH_RATE  250   /* minichat_flush_window: big fan-outs a second above which frames wait */
#define NGX_HTTP_MINICHAT_UPGRADE_REQUIRED 426 /* a WebSocket version other than 13 */
#define NGX_HTTP_MINICHAT_SUBPROTOCOL "minichat.v1"
/* a Sec-WebSocket-Protocol entry "bearer.<JWT>" carries the token */
#define NGX_HTTP_MINICHAT_PROTOCOL_TOKEN "bearer."

/* One rate limit: interval_us 0 is off (NGX_CONF_UNSET_UINT until set). */
typedef struct {
    uint64_t interval_us;  /* 1000000 / rate per second */
    ngx_uint_t burst;      /* requests beyond the rate that may come at once */
} ngx_http_minichat_rate_t;

#define NGX_HTTP_MINICHAT_LIMIT_OPEN    0
#define NGX_HTTP_MINICHAT_LIMIT_CLOSED  1

typedef struct {
    ngx_str_t host;     /* numeric, NUL-terminated */
    ngx_int_t port;
} ngx_http_minichat_redis_addr_t;

typedef struct ngx_http_minichat_limit_args_s ngx_http_minichat_limit_args_t;

typedef struct {
    ngx_str_t node;
    ngx_str_t redis_host;
    ngx_int_t redis_port;
    ngx_str_t relay_path;
    ngx_str_t jwt_secret;
    ngx_str_t jwt_issuer;        /* "iss" a token must carry; empty: not checked (NUL-terminated) */
    ngx_str_t jwt_audience;      /* a value "aud" must hold; empty: not checked (NUL-terminated) */
    ngx_array_t *allowed_origins; /* of ngx_str_t: Origin patterns of upgrades; NULL: any origin */
    size_t max_message_size;
    size_t send_queue_size;
    ngx_uint_t log_max;          /* entries in a room's recent log */
    ngx_uint_t members_cache;    /* rooms whose members a worker keeps (0: none) */
    ngx_flag_t history_read_ahead; /* MySQL pages asked for beside the history script */
    size_t log_bytes;            /* bytes of entries in a room's recent log */
    time_t idem_ttl;
    ngx_msec_t reconnect;
    ngx_msec_t relay_timeout;
    ngx_msec_t repair_after;     /* a message not known durable this long is published again; 0: off */
    ngx_msec_t ping_interval;
    ngx_msec_t handshake_timeout; /* an upgrade request must be complete this soon after its first byte */
    ngx_msec_t redis_timeout;
    ngx_msec_t session_ttl;      /* sessions and presence devices expire this long after their last refresh */
    ngx_msec_t typing_interval;  /* at most one typing event per user and room this often */
    ngx_msec_t flush_window;     /* writes to clients at most this often per worker when busy; 0: every turn */
    ngx_uint_t flush_busy;       /* busy: the last write pass wrote to at least this many connections */
    ngx_uint_t flush_rate;       /* frames wait only while big fan-outs come faster than this many a second */
    ngx_flag_t enabled; /* set by ngx_pcalloc(); 1 once minichat_redis is given */
    ngx_array_t *redis_seeds;         /* of ngx_http_minichat_redis_addr_t; NULL: one Redis */
    ngx_str_t redis_user;             /* AUTH user (Redis 6 ACL); empty: AUTH password */
    ngx_str_t redis_password;         /* empty: no AUTH */
    ngx_msec_t redis_connect_timeout; /* TCP connect and the AUTH/PING answer */
    ngx_flag_t redis_tls;             /* minichat_redis_tls */
    ngx_flag_t redis_tls_verify;
    ngx_str_t redis_tls_ca_file;
    ngx_str_t redis_tls_certificate;  /* a client certificate; empty: none */
    ngx_str_t redis_tls_certificate_key;
    ngx_str_t redis_tls_name;         /* SNI and the name checked; empty: neither */
    ngx_ssl_t *redis_ssl;             /* NULL: plain TCP */

    ngx_http_minichat_rate_t limit_messages;       /* per user */
    ngx_http_minichat_rate_t limit_room_messages;  /* per room, inside send.lua */
    ngx_http_minichat_rate_t limit_connections;    /* upgrades per client address */
    ngx_http_minichat_rate_t limit_user_connections;
    ngx_http_minichat_rate_t limit_rest;           /* REST requests per user */
    ngx_uint_t strike_refusals;  /* refusals within strike_window that make a strike; 0: no strikes */
    ngx_msec_t strike_window;
    ngx_array_t *bans;           /* of ngx_msec_t: the ban of strike n (the last repeats); 0 permanent */
    ngx_uint_t limit_redis_down; /* NGX_HTTP_MINICHAT_LIMIT_OPEN or _CLOSED */
    ngx_http_minichat_limit_args_t *limit_args; /* limit.lua's values, formatted once (_limit.c) */
    ngx_uint_t ipcap_max;        /* minichat_max_connections_per_ip; 0: off */
    size_t ipcap_zone_size;      /* minichat_max_connections_per_ip_zone */
    ngx_shm_zone_t *ipcap_zone;  /* NULL while the cap is off (_ipcap.c) */
    ngx_shm_zone_t *metrics_zone; /* the counters (_metrics.c) */
} ngx_http_minichat_main_conf_t;

/* A location's settings. */
typedef struct {
    size_t echo_max_message_size;  /* minichat_ws_echo_max_message_size */
    ngx_flag_t deflate;            /* minichat_ws_deflate: negotiate permessage-deflate */
    size_t deflate_threshold;      /* messages shorter than this go out uncompressed */
    ngx_uint_t deflate_level;      /* zlib level 1..9 */
    ngx_flag_t deflate_client_takeover; /* off: the response asks client_no_context_takeover */
    ngx_uint_t server_api;         /* minichat_server_api is here (set by ngx_pcalloc() otherwise) */
    ngx_array_t *server_api_keys;  /* SHA-256 digests of the keys (u_char[32] each) */
} ngx_http_minichat_loc_conf_t;

typedef struct ngx_http_minichat_inflater_s ngx_http_minichat_inflater_t;
typedef struct ngx_http_minichat_ipcap_slot_s ngx_http_minichat_ipcap_slot_t;

typedef struct ngx_http_minichat_ws_s ngx_http_minichat_ws_t;
typedef struct ngx_http_minichat_resume_state_s ngx_http_minichat_resume_state_t;

/* One WebSocket connection.  Heap-allocated.  Until the upgrade is
 * handed off (the first event after the 101 is queued) it belongs to its
 * request (`request`, a cleanup on the request's pool); from then on the
 * request is freed and the struct owns the connection: c->data points here
 * and _ws.c's event handlers run it.  It outlives the connection while a
 * Redis reply for it is pending (`pending`), then frees itself.  Its size
 * is most of an idle connection's cost (docs/ARCHITECTURE.md's budget): keep
 * fields that only matter while bytes wait out of it. */
#define NGX_HTTP_MINICHAT_SID_LEN 16
struct ngx_http_minichat_ws_s {
    ngx_http_request_t *request; /* until the hand-off; NULL afterwards */
    ngx_connection_t *connection; /* NULL once the connection closed */
    ngx_http_minichat_loc_conf_t *lcf; /* the location's settings (deflate, echo size) */
    uint64_t user;
    uint64_t id;         /* pid << 32 | counter: names the sender in relayed messages */
    time_t exp;          /* the token's expiry (s since the epoch): closed with 4001 then; 0 on echo */
    ngx_queue_t by_user; /* registry bucket link */

    u_char *in;          /* bytes read, not yet consumed; lazily allocated */
    size_t in_len, in_cap;
    u_char *msg;         /* fragmented message being assembled */
    size_t msg_len, msg_cap;
    size_t msg_checked;  /* bytes of msg known to be whole UTF-8 characters (text) */
    ngx_http_minichat_inflater_t *inflater; /* this connection's, created at its first compressed message */

    u_char *out;         /* bytes queued for the client */
    size_t out_pos, out_len, out_cap;
    size_t hello_at;     /* where in `out` hello goes: right after the 101 */

    ngx_http_minichat_resume_state_t *resume; /* per-room state of rooms resumed on this connection */
    ngx_http_minichat_ipcap_slot_t *ipcap;    /* the client address's count this connection holds, or NULL */
    uint32_t pending;    /* Redis replies (and handlers) still holding the struct */

    u_char sid[NGX_HTTP_MINICHAT_SID_LEN]; /* the session id: 16 lower-case hex digits */

    unsigned msg_opcode:4;
    unsigned msg_compressed:1; /* the message being assembled had RSV1: inflate it whole */
    /* permessage-deflate, once negotiated (deflate_bits 0: not) */
    unsigned deflate_bits:4;        /* the window we compress with, 9..15 */
    unsigned deflate_client_bits:4; /* the largest window the client may use */
    unsigned deflate_takeover:1;    /* the client keeps its context: inflater above */

    unsigned got_data:1; /* bytes arrived since the last ping tick */
    unsigned ping_sent:1;
    unsigned deferred:1; /* queue without writing (inside the handler) */
    unsigned closing:1;  /* close frame queued; close once out drains */
    unsigned closed:1;
    unsigned registered:1;
    unsigned resumed_sid:1; /* ?sid= named a live session */
    unsigned hello_pending:1; /* nothing is written before hello goes in at hello_at */
    unsigned banned:1;        /* a ban event came: every op answers banned until the close */
    unsigned lingering:1;     /* close frame written, writing shut down: input is drained until EOF */
    unsigned tls_shutdown_wait:1; /* close frame written, TLS close_notify waits for the socket */
    unsigned echo:1;          /* an echo endpoint's connection: no user, session or ops */
    unsigned expiry_armed:1;  /* the read timer was set for exp, not for the tick */
    unsigned flush_queued:1;  /* on the worker's flush list (_flush.c): not freed until it passed */
    unsigned counted:1;       /* in minichat_connections_open: taken out once, when it closes */
    unsigned slow:1;          /* closed for not reading: counted in minichat_slow_clients_closed_total */
};

extern ngx_module_t ngx_http_minichat_module;

/* A request on a WebSocket connection: where its reply goes. */
typedef struct {
    ngx_http_minichat_ws_t *ws;
    int64_t id;
    ngx_uint_t has_id;
} ngx_http_minichat_req_t;

/* ngx_http_minichat_bounds.c: directive range checks, as ngx_conf_post_t
 * handlers of the stock slots; range is the message's text ("between 10ms
 * and 1m") */
#define NGX_HTTP_MINICHAT_TEXT_MAX 255
typedef struct {
    ngx_conf_post_handler_pt post_handler;
    uint64_t low;
    uint64_t high;
    ngx_uint_t zero_ok;  /* 0 is also accepted ("off") */
    const char *range;
} ngx_http_minichat_bounds_t;
char *ngx_http_minichat_bounds_msec(ngx_conf_t *cf, void *post, void *data);
char *ngx_http_minichat_bounds_sec(ngx_conf_t *cf, void *post, void *data);
char *ngx_http_minichat_bounds_size(ngx_conf_t *cf, void *post, void *data);
/* ngx_conf_post_t for ngx_conf_set_str_slot: 1..255 bytes of printable ASCII */
char *ngx_http_minichat_bounds_text(ngx_conf_t *cf, void *post, void *data);

/* ngx_http_minichat_ipcap.c: concurrent connections per client address,
 * counted in shared memory across the node's workers */
#define NGX_HTTP_MINICHAT_IPCAP_MAX 1000000
char *ngx_http_minichat_ipcap_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_minichat_ipcap_merge(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf);
/* NGX_OK (*slot: what the connection gives back, or NULL) or NGX_DECLINED
 * (the address is at its cap: answer with _refuse) */
ngx_int_t ngx_http_minichat_ipcap_acquire(ngx_http_request_t *r, ngx_http_minichat_ipcap_slot_t **slot);
ngx_int_t ngx_http_minichat_ipcap_refuse(ngx_http_request_t *r);
/* Gives a slot back once (*slot is cleared); NULL is nothing to give. */
void ngx_http_minichat_ipcap_release(ngx_http_minichat_ipcap_slot_t **slot);

/* ngx_http_minichat_metrics.c: counters in shared memory, added to by
 * every worker with one atomic add per event, served by minichat_metrics
 * (docs/metrics.md) */
#define NGX_HTTP_MINICHAT_ERRORS   9   /* error codes, "other" last */
#define NGX_HTTP_MINICHAT_CLOSES   13  /* close codes, "other" last */
#define NGX_HTTP_MINICHAT_BUCKETS  15  /* histogram bounds; +Inf is one more */
#define NGX_HTTP_MINICHAT_LIMITED_MESSAGES         0
#define NGX_HTTP_MINICHAT_LIMITED_REST             1
#define NGX_HTTP_MINICHAT_LIMITED_USER_CONNECTIONS 2
#define NGX_HTTP_MINICHAT_LIMITED_CONNECTIONS      3
#define NGX_HTTP_MINICHAT_LIMITED_ROOM_MESSAGES    4
#define NGX_HTTP_MINICHAT_LIMITED_PER_IP           5
#define NGX_HTTP_MINICHAT_LIMITS                   6
/* the server API's endpoints, as counted */
#define NGX_HTTP_MINICHAT_SERVER_API_PUBLISH     0
#define NGX_HTTP_MINICHAT_SERVER_API_DISCONNECT  1
#define NGX_HTTP_MINICHAT_SERVER_API_BAN         2
#define NGX_HTTP_MINICHAT_SERVER_API_UNBAN       3
#define NGX_HTTP_MINICHAT_SERVER_API_BAN_STATE   4
#define NGX_HTTP_MINICHAT_SERVER_API_OTHER       5   /* no such endpoint, a method not taken */
#define NGX_HTTP_MINICHAT_SERVER_API_ENDPOINTS   6
#define NGX_HTTP_MINICHAT_SERVER_API_OUTCOMES    3   /* 2xx, 4xx, 5xx */
#define NGX_HTTP_MINICHAT_BANNED_REFUSED           0   /* a request or upgrade refused: banned */
#define NGX_HTTP_MINICHAT_BANNED_CLOSED            1   /* a connection closed by a ban (4003) */
#define NGX_HTTP_MINICHAT_BANNED                   2

typedef struct {
    ngx_atomic_t buckets[NGX_HTTP_MINICHAT_BUCKETS + 1]; /* each its own range, not cumulative */
    ngx_atomic_t sum_us;
} ngx_http_minichat_histogram_t;

typedef struct {
    ngx_atomic_t layout;      /* NGX_HTTP_MINICHAT_METRICS_LAYOUT of the build that made it */
    ngx_atomic_t conn_open;   /* a gauge: added to and taken from */
    ngx_atomic_t conn_opened;
    ngx_atomic_t frames_in;
    ngx_atomic_t frames_out;
    ngx_atomic_t bytes_in;
    ngx_atomic_t bytes_out;
    ngx_atomic_t sends;
    ngx_atomic_t acks;
    ngx_atomic_t deliveries;
    ngx_atomic_t errors[NGX_HTTP_MINICHAT_ERRORS];
    ngx_atomic_t closes[NGX_HTTP_MINICHAT_CLOSES];
    ngx_atomic_t limited[NGX_HTTP_MINICHAT_LIMITS];
    ngx_atomic_t server_api[NGX_HTTP_MINICHAT_SERVER_API_ENDPOINTS][NGX_HTTP_MINICHAT_SERVER_API_OUTCOMES];
    ngx_atomic_t banned[NGX_HTTP_MINICHAT_BANNED];
    ngx_atomic_t queued_bytes; /* a gauge: bytes in connections' send queues (_conn.c) */
    ngx_atomic_t slow_closed;  /* connections closed because they did not read */
    ngx_atomic_t flush_writes; /* connections written by end-of-turn flush passes (_flush.c) */
    ngx_atomic_t flush_held;   /* flush passes whose frames waited for the write window */
    ngx_http_minichat_histogram_t redis;
    ngx_http_minichat_histogram_t relay;
} ngx_http_minichat_metrics_t;

extern ngx_http_minichat_metrics_t *ngx_http_minichat_metrics;

/* Adds n to a counter of the set (nothing outside a worker). */
#define ngx_http_minichat_count(field, n)                                                      \
    do {                                                                                       \
        if (ngx_http_minichat_metrics) {                                                       \
            (void) ngx_atomic_fetch_add(&ngx_http_minichat_metrics->field, (ngx_atomic_int_t) (n)); \
        }                                                                                      \
    } while (0)

/* Observes a round trip begun at start_us (mc_now_us()) in a histogram. */
#define ngx_http_minichat_observe(hist, start_us)                                              \
    do {                                                                                       \
        if (ngx_http_minichat_metrics) {                                                       \
            ngx_http_minichat_metrics_observe(&ngx_http_minichat_metrics->hist, start_us);     \
        }                                                                                      \
    } while (0)

char *ngx_http_minichat_metrics_merge(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf);
ngx_int_t ngx_http_minichat_metrics_handler(ngx_http_request_t *r);
void ngx_http_minichat_metrics_init(ngx_http_minichat_main_conf_t *mcf);
void ngx_http_minichat_metrics_error(const char *code);
void ngx_http_minichat_metrics_close(ngx_uint_t code);
/* One answer of the server API: endpoint NGX_HTTP_MINICHAT_SERVER_API_*, an HTTP status. */
void ngx_http_minichat_metrics_server_api(ngx_uint_t endpoint, ngx_uint_t status);
void ngx_http_minichat_metrics_observe(ngx_http_minichat_histogram_t *h, int64_t start_us);

/* ngx_http_minichat_status.c: the status page and the readiness answer
 * (minichat_status, minichat_ready; docs/operations.md) */
ngx_int_t ngx_http_minichat_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_minichat_ready_handler(ngx_http_request_t *r);

/* ngx_http_minichat_module.c */
ngx_http_minichat_main_conf_t *ngx_http_minichat_conf(void);
uint64_t ngx_http_minichat_now_ms(void);

/* ngx_http_minichat_redis_tls.c */
char *ngx_http_minichat_redis_tls_merge(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf);

/* ngx_http_minichat_redis.c */
typedef void (*ngx_http_minichat_redis_pt)(redisReply *reply, void *data);
ngx_int_t ngx_http_minichat_redis_init(ngx_cycle_t *cycle);
void ngx_http_minichat_redis_exit(void);
ngx_int_t ngx_http_minichat_redis_ready(void);
/* What this worker sees of Redis, for the status page (_status.c). */
typedef struct {
    const char *host;     /* numeric */
    ngx_int_t port;
    ngx_uint_t slots;     /* cluster: slots the map gives it */
    unsigned connected:1; /* a connection exists (it may be connecting) */
    unsigned ready:1;     /* AUTH/PING answered: takes commands */
    unsigned master:1;    /* answered INFO as a master */
} ngx_http_minichat_redis_node_status_t;
typedef struct {
    ngx_uint_t cluster;
    ngx_uint_t mapped;       /* cluster: a slot map was read */
    ngx_uint_t slots_ready;  /* cluster: slots whose master is ready */
    ngx_uint_t nnodes;       /* all the worker knows, even beyond max */
} ngx_http_minichat_redis_status_t;
/* Fills st and up to max nodes; returns how many nodes it filled. */
ngx_uint_t ngx_http_minichat_redis_status(ngx_http_minichat_redis_status_t *st,
    ngx_http_minichat_redis_node_status_t *nodes, ngx_uint_t max);
/* Sends a command; handler is called once with the reply, or NULL when the
 * connection fails first.  Returns NGX_ERROR when Redis is not connected. */
ngx_int_t ngx_http_minichat_redis_argv(int argc, const char **argv, const size_t *argvlen,
    ngx_http_minichat_redis_pt handler, void *data);
/* Commands issued until the next call count their deadline from `start`
 * (0: from their own issue); returns the value replaced. */
ngx_msec_t ngx_http_minichat_redis_op_start(ngx_msec_t start);
/* EVALSHA with a transparent EVAL on NOSCRIPT. */
ngx_int_t ngx_http_minichat_redis_script(const char *sha1, const char *src, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data);
/* The same, with the replication id of the node it runs on appended as its
 * last argument (held until that id is known); for scripts that compare it
 * with a room's generation. */
ngx_int_t ngx_http_minichat_redis_script_gen(const char *sha1, const char *src, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data);
char *ngx_http_minichat_redis_cluster_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* ngx_http_minichat_relay.c: the client of the node's relay-worker */
typedef void (*ngx_http_minichat_relay_pt)(Minichat__LocalFrame *result, void *data);
ngx_int_t ngx_http_minichat_relay_init(ngx_cycle_t *cycle);
void ngx_http_minichat_relay_exit(void);
ngx_int_t ngx_http_minichat_relay_ready(void);
/* 1 when the link is up, 0 when down; since: the wall-clock ms of the
 * last change (or of the worker's start). */
ngx_uint_t ngx_http_minichat_relay_state(uint64_t *since);
/* Closes the link (logged with why) and connects again after
 * minichat_reconnect_interval; requests in flight fail. */
void ngx_http_minichat_relay_restart(const char *why);
ngx_int_t ngx_http_minichat_relay_send(Minichat__LocalFrame *frame);
/* Sends a request frame; handler gets the result frame, or NULL on timeout
 * or a lost connection.  Returns NGX_ERROR when the relay is not connected. */
ngx_int_t ngx_http_minichat_relay_request(Minichat__LocalFrame *frame, ngx_http_minichat_relay_pt handler,
    void *data);

/* ngx_http_minichat_durable.c: messages admitted but not known durable */
#define NGX_HTTP_MINICHAT_DURABLE_KEY_LEN (sizeof("{}:pend") + 8)
/* Writes the key of the room's pending index ("{<tag>}:pend"); returns the end. */
u_char *ngx_http_minichat_durable_key(u_char *p, uint64_t room);
/* The relay-worker said Kafka has the message: takes its note out. */
void ngx_http_minichat_durable_done(uint64_t room, uint64_t seq);
void ngx_http_minichat_durable_init(ngx_cycle_t *cycle);
void ngx_http_minichat_durable_exit(void);

/* ngx_http_minichat_auth.c */
ngx_int_t ngx_http_minichat_auth_init(ngx_cycle_t *cycle);
void ngx_http_minichat_auth_exit(void);
/* Finds the JWT (Authorization: Bearer, else ?token=) and verifies it;
 * token->len is 0 when the request carries none.  A ?token= is hidden from
 * the logs (the request line, URI and arguments) first.  NGX_OK,
 * NGX_DECLINED (err says why) or NGX_ERROR. */
ngx_int_t ngx_http_minichat_authenticate(ngx_http_request_t *r, ngx_str_t *token, uint64_t *user, time_t *exp,
    const char **err);
/* A copy of ?token= (len 0: none), hidden from the logs; NGX_ERROR: no memory. */
ngx_int_t ngx_http_minichat_auth_arg_token(ngx_http_request_t *r, ngx_str_t *token);
ngx_int_t ngx_http_minichat_verify_token(ngx_str_t *token, uint64_t *user, time_t *exp, const char **err);

/* ngx_http_minichat_ws.c: the WebSocket endpoint, the upgrade and the
 * reading side of every WebSocket connection */
ngx_int_t ngx_http_minichat_ws_handler(ngx_http_request_t *r);
/* this worker's WebSocket connections open now (those in minichat_connections_open) */
extern ngx_uint_t ngx_http_minichat_ws_open;
/* NGX_OK, or the status that refuses the upgrade (pass it to _refuse). */
ngx_int_t ngx_http_minichat_ws_handshake(ngx_http_request_t *r);
ngx_int_t ngx_http_minichat_ws_refuse(ngx_http_request_t *r, ngx_int_t status);
/* The connection struct of an upgrade; it holds `slot` (from
 * ngx_http_minichat_ipcap_acquire) and gives it back when it closes, or at
 * once when it cannot be made (NULL: out of memory). */
ngx_http_minichat_ws_t *ngx_http_minichat_ws_create(ngx_http_request_t *r, ngx_http_minichat_ipcap_slot_t *slot);
ngx_int_t ngx_http_minichat_ws_upgrade(ngx_http_minichat_ws_t *ws, ngx_uint_t protocol);
void ngx_http_minichat_ws_run(ngx_http_minichat_ws_t *ws);
size_t ngx_http_minichat_ws_max_message(ngx_http_minichat_ws_t *ws);
/* Closes a handed-off connection now: unregisters it, says 1001 when the
 * worker is exiting, closes the socket (TLS shutdown included) and frees
 * the connection's pool.  ws is freed by ngx_http_minichat_conn_release(). */
void ngx_http_minichat_ws_close(ngx_http_minichat_ws_t *ws);

/* ngx_http_minichat_echo.c: the echo endpoint (minichat_ws_echo) */
ngx_int_t ngx_http_minichat_echo_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_minichat_echo_message(ngx_http_minichat_ws_t *ws, ngx_uint_t opcode, u_char *data, size_t len);

/* ngx_http_minichat_deflate.c: permessage-deflate (RFC 7692) on a connection */
/* The compressed copies of one outgoing message, one per (window, level),
 * made the first time a recipient needs one. */
#define NGX_HTTP_MINICHAT_DEFLATE_COPIES 4
typedef struct {
    struct {
        u_char *buf;         /* malloc'd: the frame starts inside it */
        u_char *frame;
        size_t len;
        u_char bits;
        u_char level;
    } copy[NGX_HTTP_MINICHAT_DEFLATE_COPIES];
    ngx_uint_t n;
} ngx_http_minichat_deflate_cache_t;
/* Reads the client's offers; on acceptance sets the connection's deflate
 * fields and writes "\r\nSec-WebSocket-Extensions: ..." at p.  Returns the
 * end of what it wrote (p when nothing). */
u_char *ngx_http_minichat_deflate_negotiate(ngx_http_minichat_ws_t *ws, u_char *p);
/* The frame for ws of a data message payload[0..plen): NGX_OK with a
 * compressed copy's frame (made once per cache and window) when ws
 * negotiated compression, the message reaches the threshold and
 * compression shrinks it; NGX_DECLINED: send the uncompressed frame. */
ngx_int_t ngx_http_minichat_deflate_pick(ngx_http_minichat_deflate_cache_t *cache, ngx_http_minichat_ws_t *ws,
    ngx_uint_t opcode, const u_char *payload, size_t plen, const u_char **frame, size_t *len);
void ngx_http_minichat_deflate_cache_free(ngx_http_minichat_deflate_cache_t *cache);
/* Inflates a complete compressed message into *out (ngx_free it).
 * NGX_OK, NGX_DECLINED (too big: the connection was closed with 1009) or
 * NGX_ERROR (the connection was closed). */
ngx_int_t ngx_http_minichat_deflate_inflate(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len,
    u_char **out, size_t *out_len);
void ngx_http_minichat_deflate_free(ngx_http_minichat_ws_t *ws);
void ngx_http_minichat_deflate_exit(void);

/* ngx_http_minichat_conn.c: a client connection's output and lifetime */
ngx_int_t ngx_http_minichat_conn_queue(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len);
/* The same for bytes that are one whole frame, counted as one sent. */
ngx_int_t ngx_http_minichat_conn_queue_frame(ngx_http_minichat_ws_t *ws, const u_char *frame, size_t len);
/* Queues one frame (data or pong); refused (NGX_ERROR) once the connection is closing. */
ngx_int_t ngx_http_minichat_conn_frame(ngx_http_minichat_ws_t *ws, ngx_uint_t opcode, const u_char *data,
    size_t len);
/* Queues one text frame; refused (NGX_ERROR) once the connection is closing. */
ngx_int_t ngx_http_minichat_conn_text(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len);
ngx_int_t ngx_http_minichat_conn_error(ngx_http_minichat_ws_t *ws, int64_t id, ngx_uint_t has_id,
    const char *code, const char *message);
/* The same with one more number field (name "until" with value 0: null). */
ngx_int_t ngx_http_minichat_conn_error_num(ngx_http_minichat_ws_t *ws, int64_t id, ngx_uint_t has_id,
    const char *code, const char *message, const char *name, uint64_t value);
ngx_int_t ngx_http_minichat_conn_flush(ngx_http_minichat_ws_t *ws);
/* Puts hello (payload NULL: none, the connection is closing) in its place
 * and lets the queue flow. */
ngx_int_t ngx_http_minichat_conn_hello(ngx_http_minichat_ws_t *ws, const u_char *payload, size_t len);
/* The write event of a connection handed off by _ws.c (c->data is ws). */
void ngx_http_minichat_conn_write(ngx_event_t *wev);
void ngx_http_minichat_conn_close(ngx_http_minichat_ws_t *ws, ngx_uint_t code, const char *reason);
void ngx_http_minichat_conn_abort(ngx_http_minichat_ws_t *ws);
/* Reads and drops input of a lingering connection until EOF or its timer. */
void ngx_http_minichat_conn_linger_read(ngx_http_minichat_ws_t *ws);
/* Frees the connection's memory once it is closed and nothing refers to it. */
void ngx_http_minichat_conn_release(ngx_http_minichat_ws_t *ws);
void ngx_http_minichat_conn_exit(void);
/* Brings minichat_send_queue_bytes up to this worker's own exact count
 * (one atomic add, when it changed); _flush.c calls it once per pass. */
void ngx_http_minichat_conn_queued_show(void);
/* The writes of _flush.c's pass, which shows the count once at its end. */
ngx_int_t ngx_http_minichat_conn_flush_listed(ngx_http_minichat_ws_t *ws);

/* ngx_http_minichat_flush.c: one write per connection per event-loop turn */
ngx_int_t ngx_http_minichat_flush_later(ngx_http_minichat_ws_t *ws);
void ngx_http_minichat_flush_fanout(ngx_uint_t n);
char *ngx_http_minichat_flush_window(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_http_minichat_flush_exit(void);
/* The reply to a request: an error, or a JSON object whose first field is "op". */
ngx_int_t ngx_http_minichat_req_error(ngx_http_minichat_req_t *rq, const char *code, const char *message);
/* Answers a limit's refusal: rc NGX_BUSY is rate_limited with
 * retry_after_ms = value, NGX_DECLINED is banned until value. */
ngx_int_t ngx_http_minichat_req_limited(ngx_http_minichat_req_t *rq, ngx_int_t rc, uint64_t value);
/* Replies {"op":"<op>","id":N<fields>}: fields is "" or starts with ','. */
ngx_int_t ngx_http_minichat_req_reply(ngx_http_minichat_req_t *rq, const char *op, const u_char *fields, size_t len);
/* Ends an op that holds a heap copy of its request and a pending count on
 * the connection, answering with a page of fields (or the error). */
void ngx_http_minichat_req_page(ngx_http_minichat_req_t *rq, const char *op, ngx_int_t rc, const char *code,
    const char *text, const u_char *page, size_t len);

/* ngx_http_minichat_room.c: room scripts, rebuilt from MySQL when Redis lost the room */
typedef struct {
    const char *sha1;
    const char *src;
    ngx_uint_t nkeys;
    const char **keys;     /* names: key i is {r:<room>}:<keys[i]>, or keys[i] itself when it starts with '{' */
    ngx_uint_t gen;        /* checks the room's generation: gets the replid, may answer -4 */
    uint64_t *issued;      /* NULL, or set to the wall-clock ms of the script's last run's issue */
} ngx_http_minichat_script_t;

typedef struct ngx_http_minichat_room_call_s ngx_http_minichat_room_call_t;
/* A script answering -2 (not loaded) or -4 (generation differs) has the room
 * loaded or revalidated from MySQL and runs once more.
 * rc: NGX_OK with the script's reply; NGX_DECLINED: no such room;
 * NGX_ERROR: unavailable (reply NULL). */
typedef void (*ngx_http_minichat_room_pt)(redisReply *reply, ngx_int_t rc, void *data);
ngx_int_t ngx_http_minichat_room_script(uint64_t room, const ngx_http_minichat_script_t *script, ngx_uint_t nargs,
    const char **args, const size_t *arglens, ngx_http_minichat_room_pt handler, void *data);
/* A user id from a reply element (a decimal string or an integer); 0 when not one. */
uint64_t ngx_http_minichat_reply_id(redisReply *r);
ngx_int_t ngx_http_minichat_reply_ids(redisReply *reply, size_t from, uint64_t **out);

/* write-behind commands (ngx_http_minichat_defer.c) */
void ngx_http_minichat_defer(const char *cmd, const u_char *key, size_t key_len, const ngx_str_t *args,
    ngx_uint_t n);
void ngx_http_minichat_defer_flush(void);

/* the members cache (ngx_http_minichat_members.c) */
typedef struct ngx_http_minichat_members_s ngx_http_minichat_members_t;
ngx_http_minichat_members_t *ngx_http_minichat_members_hold(uint64_t room);
ngx_str_t ngx_http_minichat_members_version(ngx_http_minichat_members_t *m);
ngx_int_t ngx_http_minichat_members_reply(uint64_t room, ngx_http_minichat_members_t **held, redisReply *reply,
    size_t from);
const uint64_t *ngx_http_minichat_members_ids(ngx_http_minichat_members_t *m, size_t *n);
uint64_t ngx_http_minichat_members_ver(ngx_http_minichat_members_t *m);
void ngx_http_minichat_members_release(ngx_http_minichat_members_t *m);
void ngx_http_minichat_members_exit(void);
/* Loads a room into Redis from what MySQL holds (load.lua: a no-op when it
 * is loaded already; a new epoch); a new room is seq 0 and its members. */
ngx_int_t ngx_http_minichat_room_load(uint64_t room, Minichat__RoomStateResult *st,
    ngx_http_minichat_redis_pt handler, void *data);
ngx_int_t ngx_http_minichat_room_load_new(uint64_t room, uint64_t *members, size_t n,
    ngx_http_minichat_redis_pt handler, void *data);
/* Writes "idem:<n>", the name of the cid bucket of ts (back = 1: the one
 * before); returns its end. */
u_char *ngx_http_minichat_room_idem_key(u_char *p, uint64_t ts, ngx_uint_t back);

/* ngx_http_minichat_limit.c: rate limits, strikes and bans */
#define NGX_HTTP_MINICHAT_LIMIT_MESSAGES  0
#define NGX_HTTP_MINICHAT_LIMIT_REST      1
#define NGX_HTTP_MINICHAT_LIMIT_CONN      2
/* rc: NGX_OK allowed; NGX_BUSY refused (value: retry_after_ms); NGX_DECLINED
 * banned (value: the ban's end in ms, 0 permanent); NGX_ERROR Redis failed
 * and minichat_limit_redis_down is closed. */
typedef void (*ngx_http_minichat_limit_pt)(ngx_int_t rc, uint64_t value, void *data);
char *ngx_http_minichat_limit_rate_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_minichat_limit_strikes_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_minichat_limit_bans_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_minichat_limit_merge(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf);
/* Start a check of the user's ban and, when configured, the kind's limit
 * (every send, REST request and upgrade runs one, whatever is configured):
 * NGX_OK (handler will be called), NGX_DECLINED (Redis is down and the
 * policy is open: go on now), NGX_ERROR (refuse: unavailable). */
ngx_int_t ngx_http_minichat_limit_user(uint64_t user, ngx_uint_t kind, ngx_http_minichat_limit_pt handler,
    void *data);
ngx_int_t ngx_http_minichat_limit_addr(ngx_str_t *addr, ngx_http_minichat_limit_pt handler, void *data);
/* limit.lua's three keys for user (written into keys) and its values for
 * kind, in av/al (room for NGX_HTTP_MINICHAT_LIMIT_ARGS_MAX): for a script
 * that runs the check inside (send_limited.lua).  Returns the count of
 * values. */
#define NGX_HTTP_MINICHAT_LIMIT_KEY_LEN   (sizeof("{u:}:strikes") + NGX_INT64_LEN)
#define NGX_HTTP_MINICHAT_LIMIT_ARGS_MAX  12
ngx_uint_t ngx_http_minichat_limit_user_args(uint64_t user, ngx_uint_t kind,
    u_char keys[3][NGX_HTTP_MINICHAT_LIMIT_KEY_LEN], const char **kv, size_t *kl, const char **av, size_t *al);
/* What limit.lua answered about user's kind (its reply's elements from
 * `from` on: status, a, b), counted and acted on (a strike's ban announced
 * and recorded, a ban that ran out recorded): NGX_OK, NGX_BUSY or
 * NGX_DECLINED with value as ngx_http_minichat_limit_pt's, NGX_ABORT for a
 * status limit.lua never answers. */
ngx_int_t ngx_http_minichat_limit_verdict(uint64_t user, ngx_uint_t kind, redisReply *reply, size_t from,
    uint64_t *value);
/* The room limit's two send.lua arguments (interval_us, burst). */
void ngx_http_minichat_limit_room_args(u_char *interval, size_t *ilen, u_char *burst, size_t *blen);

/* ngx_http_minichat_ban.c: bans (Redis, every node, MySQL) and disconnects */
#define NGX_HTTP_MINICHAT_REASON_MAX 100   /* bytes of a ban's or disconnect's reason */
typedef struct {
    ngx_uint_t banned;
    uint64_t until;        /* the ban's end in ms; 0: permanent (or not banned) */
    ngx_uint_t strikes;
} ngx_http_minichat_ban_state_t;
/* rc NGX_OK with the state after the op, or NGX_ERROR (st NULL): Redis failed. */
typedef void (*ngx_http_minichat_ban_pt)(ngx_int_t rc, ngx_http_minichat_ban_state_t *st, void *data);
typedef void (*ngx_http_minichat_recorded_pt)(ngx_int_t rc, void *data);
/* Runs lua/ban.lua: op "ban" (dur_ms; 0 permanent), "lift", "forgive" or
 * "get".  NGX_OK (handler will be called) or NGX_ERROR (Redis is down). */
ngx_int_t ngx_http_minichat_ban_script(uint64_t user, const char *op, uint64_t dur_ms,
    ngx_http_minichat_ban_pt handler, void *data);
/* Tells every node: kind "ban" (close with 4003; until as the error's) or
 * "disconnect" (close with 4005); reason NULL or empty: the default text. */
ngx_int_t ngx_http_minichat_ban_announce(uint64_t user, const char *kind, uint64_t until, const ngx_str_t *reason);
/* Records a ban (banned), an expired ban (neither) or a lift by hand (lift)
 * in MySQL; handler (or NULL) hears NGX_OK or NGX_ERROR, which is logged. */
ngx_int_t ngx_http_minichat_ban_record(uint64_t user, ngx_uint_t banned, ngx_uint_t lift, uint64_t until,
    ngx_uint_t strikes, ngx_http_minichat_recorded_pt handler, void *data);

/* ngx_http_minichat_send.c: admitting a message (WebSocket send, system messages) */
typedef struct {
    uint64_t room;
    uint64_t sender;
    uint64_t origin_conn;     /* the sending connection (gets no msg), or 0 */
    const char *kind;         /* "text" or "system" */
    ngx_str_t cid;
    ngx_str_t body;
    ngx_uint_t limit;         /* 1: check the sender's ban and message limit in the same call
                               * (send_limited.lua: a single Redis only) */
} ngx_http_minichat_message_t;

/* Once the message is durable (rc NGX_OK, seq and ts set) or refused: code
 * is the protocol's error code and text says why (rc NGX_BUSY: the room's
 * rate limit, and seq holds retry_after_ms).  With limit set, code NULL
 * means the sender's limit or ban refused it: rc and seq as
 * ngx_http_minichat_limit_pt's rc and value. */
typedef void (*ngx_http_minichat_sent_pt)(ngx_int_t rc, const char *code, const char *text, uint64_t seq,
    uint64_t ts, void *data);
ngx_int_t ngx_http_minichat_message_send(ngx_http_minichat_message_t *m, ngx_http_minichat_sent_pt handler,
    void *data);

/* ngx_http_minichat_read.c: read pointers */
typedef void (*ngx_http_minichat_read_pt)(ngx_int_t rc, const char *code, const char *text, uint64_t seq,
    void *data);
ngx_int_t ngx_http_minichat_read_move(uint64_t room, uint64_t user, uint64_t seq, uint64_t origin_conn,
    ngx_http_minichat_read_pt handler, void *data);
void ngx_http_minichat_read_mark(uint64_t room, uint64_t user, uint64_t seq);

/* ngx_http_minichat_history.c: history pages; page holds the reply's fields
 * ("room":…,"messages":[…],"more":…,"last_seq":…,"epoch":"…") without braces */
typedef void (*ngx_http_minichat_history_pt)(ngx_int_t rc, const char *code, const char *text,
    const u_char *page, size_t len, void *data);
ngx_int_t ngx_http_minichat_history_page(uint64_t room, uint64_t user, uint64_t before, ngx_uint_t limit,
    ngx_http_minichat_history_pt handler, void *data);

/* ngx_http_minichat_rooms.c: the caller's rooms; page holds the reply's
 * fields ("rooms":[…],"cursor":…) without braces */
typedef ngx_http_minichat_history_pt ngx_http_minichat_rooms_pt;
ngx_int_t ngx_http_minichat_rooms_list(uint64_t user, ngx_uint_t limit, const char *cursor,
    ngx_http_minichat_rooms_pt handler, void *data);

/* ngx_http_minichat_session.c: sessions and presence */
ngx_msec_t ngx_http_minichat_tick(ngx_http_minichat_main_conf_t *mcf);
ngx_int_t ngx_http_minichat_session_start(ngx_http_minichat_ws_t *ws);
void ngx_http_minichat_session_refresh(ngx_http_minichat_ws_t *ws);
void ngx_http_minichat_session_end(ngx_http_minichat_ws_t *ws);
void ngx_http_minichat_presence_init(ngx_cycle_t *cycle);
void ngx_http_minichat_presence_exit(void);
/* Sends an ephemeral event to the recipients on every node. */
ngx_int_t ngx_http_minichat_event_send(Minichat__ChatMessage *e);

/* ngx_http_minichat_resume.c */
/* Returns 1 when a live message of a resumed room was held or dropped for ws. */
ngx_uint_t ngx_http_minichat_resume_filter(ngx_http_minichat_ws_t *ws, uint64_t room, uint64_t seq,
    const u_char *frame, size_t len);
void ngx_http_minichat_resume_free(ngx_http_minichat_ws_t *ws);

/* ngx_http_minichat_registry.c: this worker's connections by user */
void ngx_http_minichat_registry_init(void);
void ngx_http_minichat_registry_add(ngx_http_minichat_ws_t *ws);
void ngx_http_minichat_registry_remove(ngx_http_minichat_ws_t *ws);
ngx_uint_t ngx_http_minichat_registry_count(uint64_t user);
/* 1 when conn is user's only open connection on this worker */
ngx_uint_t ngx_http_minichat_registry_alone(uint64_t user, uint64_t conn);
ngx_int_t ngx_http_minichat_registry_users(mc_buf_t *out);

/* ngx_http_minichat_users.c: the users this worker tells its relay-worker
 * it holds, so that only messages for them come */
void ngx_http_minichat_users_init(ngx_cycle_t *cycle);
void ngx_http_minichat_users_exit(void);
/* The link to the relay-worker is up: the whole set goes first. */
void ngx_http_minichat_users_link_up(void);
/* user gained or lost a connection here: told at the end of the turn. */
void ngx_http_minichat_users_changed(uint64_t user);
/* NGX_OK: start ws's session (hello) now; NGX_AGAIN: ws is held and its
 * session starts once the relay-worker counts its user. */
ngx_int_t ngx_http_minichat_users_hold(ngx_http_minichat_ws_t *ws);
/* Delivers a message to this worker's connections of its recipients, except
 * the connection that sent it. */
void ngx_http_minichat_deliver(Minichat__ChatMessage *m);
/* Delivers an ephemeral event (read, typing, presence) likewise; a "ban"
 * closes the banned user's connections with 4003. */
void ngx_http_minichat_deliver_event(Minichat__ChatMessage *e);
/* Builds a msg payload (no WebSocket header) into buf (sized by
 * ngx_http_minichat_msg_json_len); returns its end. */
size_t ngx_http_minichat_msg_json_len(Minichat__ChatMessage *m);
u_char *ngx_http_minichat_msg_json(u_char *buf, Minichat__ChatMessage *m);

/* ngx_http_minichat_ops.c: one protocol request (a complete text message) */
ngx_int_t ngx_http_minichat_ops_message(ngx_http_minichat_ws_t *ws, u_char *data, size_t len);

/* ops, each in its own file: they take a request mc_op_decode() has
 * checked, answer through rq and return NGX_OK, or NGX_ERROR when the
 * connection was closed */
ngx_int_t ngx_http_minichat_op_send(ngx_http_minichat_req_t *rq, const mc_op_t *op);
ngx_int_t ngx_http_minichat_op_read(ngx_http_minichat_req_t *rq, const mc_op_t *op);
ngx_int_t ngx_http_minichat_op_typing(ngx_http_minichat_req_t *rq, const mc_op_t *op);
ngx_int_t ngx_http_minichat_op_history(ngx_http_minichat_req_t *rq, const mc_op_t *op);
ngx_int_t ngx_http_minichat_op_resume(ngx_http_minichat_req_t *rq, const mc_op_t *op);
ngx_int_t ngx_http_minichat_op_rooms(ngx_http_minichat_req_t *rq, const mc_op_t *op);

/* ngx_http_minichat_api.c: REST routing, bodies and answers */
typedef struct ngx_http_minichat_api_s ngx_http_minichat_api_t;

/* What outlives the request while callbacks are pending. */
typedef struct {
    ngx_http_request_t *request;     /* NULL once the request is gone */
    ngx_http_minichat_api_t *ctx;    /* in the request's pool */
    ngx_uint_t pending;
} ngx_http_minichat_api_live_t;

/* A route's handler: body is the parsed JSON object (routes with a body) or
 * NULL.  Returns NGX_DONE when a callback will answer, else a status or the
 * result of answering at once. */
typedef ngx_int_t (*ngx_http_minichat_api_pt)(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);

struct ngx_http_minichat_api_s {
    ngx_http_minichat_api_live_t *live;
    ngx_http_minichat_api_pt handler;
    uint64_t user;
    uint64_t room;
    uint64_t seq;                /* a leave's or invite's seq */
    uint64_t target;             /* an invite's resulting room */
    size_t n_members;
    uint64_t *members;
    size_t n_added;              /* an invite's users who were not members */
    uint64_t *added;
    ngx_uint_t created;
    ngx_uint_t existed;
    json_t *body;                /* held while the per-user limit is checked */
    ngx_uint_t server;           /* 0: the user API; the server API's endpoint + 1 */
    ngx_uint_t banned;           /* the server API: the state a ban or unban left */
    ngx_uint_t body_optional;    /* an empty body runs the handler with NULL */
    ngx_str_t text;              /* the server API: a publish's body, a reason */
    uint64_t until;              /* the server API: a ban's end in ms (0: permanent) */
};

ngx_int_t ngx_http_minichat_api_handler(ngx_http_request_t *r);
/* A route's body: none (discarded), a JSON object, or an optional one. */
#define NGX_HTTP_MINICHAT_API_NO_BODY        0
#define NGX_HTTP_MINICHAT_API_BODY           1
#define NGX_HTTP_MINICHAT_API_BODY_OPTIONAL  2
ngx_int_t ngx_http_minichat_api_begin(ngx_http_request_t *r, ngx_http_minichat_api_pt handler, ngx_uint_t body,
    uint64_t user, uint64_t room, ngx_uint_t server);
ngx_table_elt_t *ngx_http_minichat_api_header(ngx_http_request_t *r, const char *name);
ngx_int_t ngx_http_minichat_api_start(ngx_http_minichat_api_t *ctx);
ngx_http_request_t *ngx_http_minichat_api_resume(ngx_http_minichat_api_live_t *live);
void ngx_http_minichat_api_finish(ngx_http_request_t *r, ngx_uint_t status, const u_char *body, size_t len);
void ngx_http_minichat_api_fail(ngx_http_request_t *r, ngx_uint_t status, const char *code, const char *message);
void ngx_http_minichat_api_fail_relay(ngx_http_request_t *r, const char *error);
/* Answers a limit's refusal (rc and value as ngx_http_minichat_limit_pt
 * gives them): 429 with Retry-After, or 403 banned; returns the output's rc. */
ngx_int_t ngx_http_minichat_api_limited(ngx_http_request_t *r, ngx_int_t rc, uint64_t value);
ngx_uint_t ngx_http_minichat_api_status(const char *code);
ngx_int_t ngx_http_minichat_api_arg(ngx_http_request_t *r, const char *name, uint64_t *value);
ngx_int_t ngx_http_minichat_api_reply(ngx_http_request_t *r, ngx_uint_t status, const u_char *body, size_t len);
ngx_int_t ngx_http_minichat_api_refuse(ngx_http_request_t *r, ngx_uint_t status, const char *code,
    const char *message);

/* ngx_http_minichat_h2batch.c: an HTTP/2 connection's REST answers of one
 * batch of Redis replies leave in one write */
void ngx_http_minichat_h2batch_begin(void);
void ngx_http_minichat_h2batch_hold(ngx_http_request_t *r);
void ngx_http_minichat_h2batch_end(void);

/* ngx_http_minichat_api_rooms.c: the routes */
ngx_int_t ngx_http_minichat_api_create(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);
ngx_int_t ngx_http_minichat_api_list(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);
ngx_int_t ngx_http_minichat_api_details(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);
ngx_int_t ngx_http_minichat_api_invite(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);
ngx_int_t ngx_http_minichat_api_leave(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);
ngx_int_t ngx_http_minichat_api_messages(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);
ngx_int_t ngx_http_minichat_api_read(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);

/* ngx_http_minichat_server_api.c: the server API (docs/protocol.md "Server API") */
char *ngx_http_minichat_server_api_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_minichat_server_api_keys_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_minichat_server_api_merge(ngx_conf_t *cf, ngx_http_minichat_loc_conf_t *prev,
    ngx_http_minichat_loc_conf_t *conf);
ngx_int_t ngx_http_minichat_server_api_handler(ngx_http_request_t *r);



/* ngx_http_minichat_json.c: appends JSON string contents with escapes */
size_t ngx_http_minichat_json_escape_len(const u_char *s, size_t n);
u_char *ngx_http_minichat_json_escape(u_char *dst, const u_char *s, size_t n);
/* Reads a JSON value that must be a positive integer id.  Returns 0 when it
 * is not one. */
uint64_t ngx_http_minichat_json_id(json_t *v);

#endif
