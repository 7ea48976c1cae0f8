/*
 * Private to the module's Redis client: ngx_http_minichat_redis.c (commands,
 * routing, the cluster's slot map and redirections) uses the connections of
 * ngx_http_minichat_redis_node.c (one per Redis node: the transport, connect,
 * handshake, reconnect, watchdog), which takes TLS from
 * ngx_http_minichat_redis_tls.c.  Calls run one way; a node reports back
 * only through its on_ready/on_lost hooks.
 */
#ifndef NGX_HTTP_MINICHAT_REDIS_H
#define NGX_HTTP_MINICHAT_REDIS_H

#include "minichat/buf.h"
#include "minichat/redis_cluster.h"
#include "minichat/redis_info.h"


typedef struct ngx_http_minichat_redis_node_s  ngx_http_minichat_redis_node_t;
typedef struct ngx_http_minichat_redis_pending_s  ngx_http_minichat_redis_pending_t;

/* A reply's handler: reply is NULL when the connection went before it came
 * (it is freed after the handler returns); p is the record the command was
 * queued with, NULL for one the node allocated itself. */
typedef void (*ngx_http_minichat_redis_node_pt)(ngx_http_minichat_redis_node_t *node, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p);

/* A command waiting for its reply: in its node's `outstanding` queue, in
 * send order (Redis answers in that order), for the reply and the watchdog.
 * The node takes it out of the queue before calling its handler. */
struct ngx_http_minichat_redis_pending_s {
    ngx_queue_t                      queue;
    ngx_msec_t                       sent;
    ngx_http_minichat_redis_node_pt  handler;  /* NULL: nobody waits for the reply */
    unsigned                         own:1;    /* allocated by the node, freed after the reply */
};

struct ngx_http_minichat_redis_node_s {
    ngx_connection_t    *conn;          /* NULL: not connected */
    redisReader         *reader;        /* the connection's reply parser */
    mc_buf_t             out;           /* commands not written yet */
    ngx_event_t          reconnect;
    ngx_event_t          connect_timer;
    ngx_event_t          watchdog;
    ngx_queue_t          outstanding;   /* of pending_t, in send order */
    ngx_msec_t           connect_start;
    ngx_log_t           *log;
    ngx_sockaddr_t       sockaddr;
    socklen_t            socklen;       /* 0: host is not a numeric address */
    char                 host[MC_REDIS_HOST_MAX];
    int                  port;
    void               (*on_ready)(ngx_http_minichat_redis_node_t *node);
    void               (*on_lost)(ngx_http_minichat_redis_node_t *node);
    void               (*on_replid)(ngx_http_minichat_redis_node_t *node);
    char                 replid[MC_REDIS_REPLID_LEN + 1];
    ngx_uint_t           info_pending;  /* INFO questions not answered yet */
    unsigned             ready:1;       /* AUTH/PING answered */
    unsigned             replid_known:1;  /* a master, whose replid answered the latest INFO */
    unsigned             tcp_up:1;      /* the TCP connect completed */
    unsigned             established:1; /* TCP up and, with TLS, the handshake done: writes go out */
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
 * connecting: they wait in its buffer behind the handshake), 0 otherwise. */
ngx_int_t ngx_http_minichat_redis_node_usable(ngx_http_minichat_redis_node_t *node);
/* Queues a command whose reply goes to fn (NULL: nobody waits for it) with
 * p, the caller's record (NULL: the node allocates one, and fn gets NULL).
 * Returns NGX_OK or NGX_ERROR (the node is not usable, out of memory). */
ngx_int_t ngx_http_minichat_redis_node_command(ngx_http_minichat_redis_node_t *node,
    ngx_http_minichat_redis_node_pt fn, ngx_http_minichat_redis_pending_t *p, int argc, const char **argv,
    const size_t *argvlen);

/* ngx_http_minichat_redis_tls.c */
/* Makes a new connection TLS (SNI from minichat_redis_tls_name).  Returns
 * NGX_OK or NGX_ERROR. */
ngx_int_t ngx_http_minichat_redis_tls_connection(ngx_connection_t *c);
/* After the handshake: checks the certificate as minichat_redis_tls_verify
 * says, logging why one is refused.  Returns NGX_OK or NGX_ERROR. */
ngx_int_t ngx_http_minichat_redis_tls_check(ngx_connection_t *c, const char *host, int port);

#endif
