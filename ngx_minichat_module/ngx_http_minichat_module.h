/*
 * MiniChat nginx module: shared types and the functions the module's files
 * call in one another.
 *
 * One worker holds: one hiredis connection to Redis (on the nginx event
 * loop), one unix-socket connection to the node's relay-worker, and a
 * registry of its WebSocket connections by user id.  Nothing here blocks.
 */
#ifndef NGX_HTTP_MINICHAT_MODULE_H
#define NGX_HTTP_MINICHAT_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "minichat.pb-c.h"

#define NGX_HTTP_MINICHAT_CID_MAX 64
#define NGX_HTTP_MINICHAT_USER_BUCKETS 4096
#define NGX_HTTP_MINICHAT_MAX_INFLIGHT 64   /* sends awaiting Redis per connection */

typedef struct {
    ngx_str_t node;
    ngx_str_t redis_host;
    ngx_int_t redis_port;
    ngx_str_t relay_path;
    ngx_str_t jwt_secret;
    size_t max_message_size;
    size_t send_queue_size;
    ngx_uint_t log_max;
    time_t idem_ttl;
    ngx_msec_t reconnect;
    ngx_msec_t relay_timeout;
    ngx_msec_t ping_interval;
    ngx_msec_t redis_timeout;
    ngx_flag_t enabled; /* set by ngx_pcalloc(); 1 once minichat_redis is given */
} ngx_http_minichat_main_conf_t;

typedef struct ngx_http_minichat_ws_s ngx_http_minichat_ws_t;

/* One WebSocket connection.  Heap-allocated: it outlives its request while a
 * Redis reply for it is pending (`pending`), then frees itself. */
struct ngx_http_minichat_ws_s {
    ngx_http_request_t *request; /* NULL once the connection closed */
    ngx_connection_t *connection;
    uint64_t user;
    uint64_t id;         /* pid << 32 | counter: names the sender in relayed messages */
    ngx_str_t sid;
    u_char sid_data[24];
    ngx_queue_t by_user; /* registry bucket link */

    u_char *in;          /* bytes read, not yet consumed; lazily allocated */
    size_t in_len, in_cap;
    u_char *msg;         /* fragmented message being assembled */
    size_t msg_len, msg_cap;
    unsigned msg_opcode;

    u_char *out;         /* bytes queued for the client */
    size_t out_pos, out_len, out_cap;

    ngx_uint_t pending;  /* Redis replies still expected */
    unsigned got_data:1; /* bytes arrived since the last ping tick */
    unsigned ping_sent:1;
    unsigned deferred:1; /* queue without writing (inside the handler) */
    unsigned closing:1;  /* close frame queued; close once out drains */
    unsigned closed:1;
    unsigned registered:1;
};

extern ngx_module_t ngx_http_minichat_module;

/* ngx_http_minichat_module.c */
ngx_http_minichat_main_conf_t *ngx_http_minichat_conf(void);
uint64_t ngx_http_minichat_now_ms(void);

/* ngx_http_minichat_redis.c */
typedef void (*ngx_http_minichat_redis_pt)(redisReply *reply, void *data);
ngx_int_t ngx_http_minichat_redis_init(ngx_cycle_t *cycle);
void ngx_http_minichat_redis_exit(void);
ngx_int_t ngx_http_minichat_redis_ready(void);
/* Sends a command; handler is called once with the reply, or NULL when the
 * connection fails first.  Returns NGX_ERROR when Redis is not connected. */
ngx_int_t ngx_http_minichat_redis_argv(int argc, const char **argv, const size_t *argvlen,
    ngx_http_minichat_redis_pt handler, void *data);
/* EVALSHA with a transparent EVAL on NOSCRIPT. */
ngx_int_t ngx_http_minichat_redis_script(const char *sha1, const char *src, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data);

/* ngx_http_minichat_relay.c */
typedef void (*ngx_http_minichat_relay_pt)(Minichat__LocalFrame *result, void *data);
ngx_int_t ngx_http_minichat_relay_init(ngx_cycle_t *cycle);
void ngx_http_minichat_relay_exit(void);
ngx_int_t ngx_http_minichat_relay_ready(void);
ngx_int_t ngx_http_minichat_relay_send(Minichat__LocalFrame *frame);
/* Sends a request frame; handler gets the result frame, or NULL on timeout
 * or a lost connection.  Returns NGX_ERROR when the relay is not connected. */
ngx_int_t ngx_http_minichat_relay_request(Minichat__LocalFrame *frame, ngx_http_minichat_relay_pt handler,
    void *data);

/* ngx_http_minichat_ws.c */
ngx_int_t ngx_http_minichat_ws_handler(ngx_http_request_t *r);
void ngx_http_minichat_ws_init_registry(void);
/* Delivers a message to this worker's connections of its recipients, except
 * the connection that sent it. */
void ngx_http_minichat_deliver(Minichat__ChatMessage *m);

/* ngx_http_minichat_api.c */
ngx_int_t ngx_http_minichat_api_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_minichat_authenticate(ngx_http_request_t *r, ngx_str_t *token, uint64_t *user,
    const char **err);

/* ngx_http_minichat_json.c: appends JSON string contents with escapes */
size_t ngx_http_minichat_json_escape_len(const u_char *s, size_t n);
u_char *ngx_http_minichat_json_escape(u_char *dst, const u_char *s, size_t n);

#endif
