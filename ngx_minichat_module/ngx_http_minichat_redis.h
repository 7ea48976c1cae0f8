/*
 * Private to the module's Redis client: ngx_http_minichat_redis.c (commands,
 * routing, the cluster's slot map and redirections) uses the connections of
 * ngx_http_minichat_redis_node.c (one per Redis node: the adapter, connect,
 * handshake, reconnect, watchdog).  Calls run one way; a node reports back
 * only through its on_ready/on_lost hooks.
 */
#ifndef NGX_HTTP_MINICHAT_REDIS_H
#define NGX_HTTP_MINICHAT_REDIS_H

#include "minichat/redis_cluster.h"
#include "minichat/redis_info.h"


typedef struct ngx_http_minichat_redis_node_s  ngx_http_minichat_redis_node_t;

/* A command waiting for its reply: in its node's `outstanding` queue, in
 * send order, for the watchdog. */
typedef struct {
    ngx_queue_t   queue;
    ngx_msec_t    sent;
} ngx_http_minichat_redis_pending_t;

struct ngx_http_minichat_redis_node_s {
    redisAsyncContext   *ac;
    ngx_connection_t    *conn;
    ngx_event_t          reconnect;
    ngx_event_t          connect_timer;
    ngx_event_t          watchdog;
    ngx_queue_t          outstanding;   /* of pending_t, in send order */
    ngx_log_t           *log;
    char                 host[MC_REDIS_HOST_MAX];
    int                  port;
    void               (*on_ready)(ngx_http_minichat_redis_node_t *node);
    void               (*on_lost)(ngx_http_minichat_redis_node_t *node);
    void               (*on_replid)(ngx_http_minichat_redis_node_t *node);
    char                 replid[MC_REDIS_REPLID_LEN + 1];
    ngx_uint_t           info_pending;  /* INFO questions not answered yet */
    unsigned             ready:1;       /* AUTH/PING answered */
    unsigned             replid_known:1;  /* a master, whose replid answered the latest INFO */
    unsigned             tcp_up:1;      /* seen connected by the connect timer */
    unsigned             writing:1;
    unsigned             closed:1;      /* the worker is exiting: no reconnect */
};


/* Sets up a node at host:port (not connected yet). */
void ngx_http_minichat_redis_node_init(ngx_http_minichat_redis_node_t *node, const char *host, int port,
    ngx_log_t *log);
/* Starts connecting; failures schedule a reconnect. */
void ngx_http_minichat_redis_node_connect(ngx_http_minichat_redis_node_t *node);
/* Stops timers and frees the connection (waiting callbacks get NULL). */
void ngx_http_minichat_redis_node_close(ngx_http_minichat_redis_node_t *node);
/* Asks the node for its role and replication id (INFO replication); only
 * the answer to the latest question counts.  forget: the id known so far may
 * be stale (the node may have changed role) and is not used until then. */
void ngx_http_minichat_redis_node_learn(ngx_http_minichat_redis_node_t *node, ngx_uint_t forget);
/* Returns 1 when commands can be queued on the node (it may still be
 * connecting: hiredis holds them behind the handshake), 0 otherwise. */
ngx_int_t ngx_http_minichat_redis_node_usable(ngx_http_minichat_redis_node_t *node);
/* Queues a command; fn gets p as privdata.  p (NULL: a reply nobody waits
 * for) goes into the watchdog's queue; fn must take it out.  Returns NGX_OK
 * or NGX_ERROR. */
ngx_int_t ngx_http_minichat_redis_node_command(ngx_http_minichat_redis_node_t *node, redisCallbackFn *fn,
    ngx_http_minichat_redis_pending_t *p, int argc, const char **argv, const size_t *argvlen);

#endif
