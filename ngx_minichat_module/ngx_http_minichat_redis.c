/*
 * Redis on the nginx event loop, through hiredis's async API: one Redis
 * (minichat_redis) or a Redis Cluster (minichat_redis_cluster).
 *
 * The worker keeps one connection per Redis node ("node" below: the single
 * Redis, or each cluster master it has learnt of).  Its fd is wrapped in an
 * ngx_connection_t registered edge-triggered for both directions
 * (ngx_add_conn); hiredis's addWrite hook posts the write event rather than
 * writing at once, so a command issued inside a reply callback never
 * re-enters hiredis.  hiredis reads at most 16 KB per call, so a read event
 * drains the socket, asking FIONREAD whether more is waiting.
 *
 * hiredis may free its context inside any call (a read error, EOF); its
 * cleanup hook then releases our ngx_connection_t, and the code checks
 * `node->ac` after every call into hiredis.  Pending callbacks are called
 * with a NULL reply when the context goes; a cancelable timer reconnects
 * after minichat_reconnect_interval.
 *
 * Connecting.  A connect is not done when TCP says so: the first command on
 * every connection is AUTH (minichat_redis_user, minichat_redis_password_file)
 * or PING, and a node is "ready" only once that answered.  One timer covers
 * both steps: after minichat_redis_connect_timeout the connection must be
 * up (a peer that drops SYNs, a listener whose backlog is full), and the
 * answer must come within minichat_redis_timeout, as for any command (a
 * listener that never accepts may still complete TCP in its kernel and then
 * never read; a paused Redis answers the moment it wakes, and a shorter wait
 * would only make it reconnect then).  hiredis 0.14 cannot be asked whether
 * the connect is done: it takes a write event on a socket still connecting
 * (SO_ERROR 0) for "connected", so the timer asks getpeername().  On expiry
 * the context is freed and the connect retried after the reconnect interval.
 * Until a node is ready, commands for it fail at once (the caller answers
 * `unavailable`); nothing waits on a Redis that may never come.  A refused
 * AUTH is logged and retried the same way (a password file fixed and
 * reloaded takes effect).
 *
 * hiredis 0.14 has no command timeouts.  Outstanding commands are kept per
 * node in send order (Redis answers in that order), and a watchdog drops the
 * connection when the oldest has waited longer than minichat_redis_timeout:
 * every waiting caller then gets its NULL reply (an error for the client)
 * instead of waiting forever on a Redis that stopped answering.
 *
 * Cluster mode.  The seed nodes are connected first; the first ready one is
 * asked CLUSTER SLOTS, and the slot map (lib/src/redis_cluster.c) says which
 * master owns each slot; each master gets its connection.  A command goes to
 * the owner of the slot of its first key (argv[1] of a command, the first
 * key of a script; the module's commands without keys go to any ready
 * node).  Replies are looked at before the caller sees them:
 *   MOVED   the slot has moved for good: the map takes the new owner at once,
 *           a full CLUSTER SLOTS refresh follows, and the command is sent
 *           again to the new owner;
 *   ASK     the slot is migrating: ASKING then the command, to that node,
 *           once; the map does not change;
 *   TRYAGAIN, CLUSTERDOWN, LOADING
 *           sent again after a short backoff (10 ms doubling to 200 ms),
 *           routed anew each time, until minichat_redis_timeout has passed
 *           since the command was first issued; then the caller gets the
 *           error.  CLUSTERDOWN also refreshes the map;
 *   NOSCRIPT
 *           the EVAL fallback, per node: a promoted replica has its own
 *           script cache.
 * A lost connection (NULL reply) is not retried: the command may have run,
 * and not every command may run twice; the caller answers `unavailable` and
 * the client retries (a send with the same cid is safe).  It does refresh
 * the map, from another node, every 500 ms while a slot's master is not
 * ready, so a failover is noticed once the cluster has promoted a replica.
 * At most NGX_HTTP_MINICHAT_REDIS_REDIRECTS redirections per command, so two
 * nodes that disagree cannot bounce a command forever.
 *
 * Traps: a command re-sent from a reply callback must not go back through a
 * context that is being freed (REDIS_DISCONNECTING / REDIS_FREEING); MOVED
 * and CLUSTER SLOTS may name a node with an empty host ("the node you
 * asked"); a node learnt from a MOVED is connected on demand and the command
 * is queued in its hiredis buffer behind the AUTH/PING, which hiredis writes
 * once the TCP connect completes.
 */
#include <sys/ioctl.h>

#include "ngx_http_minichat_module.h"

#include "minichat/redis_cluster.h"


#define NGX_HTTP_MINICHAT_REDIS_NODES      64
#define NGX_HTTP_MINICHAT_REDIS_REDIRECTS  5
#define NGX_HTTP_MINICHAT_REDIS_REFRESH    500


typedef struct {
    redisAsyncContext   *ac;
    ngx_connection_t    *conn;
    ngx_event_t          reconnect;
    ngx_event_t          connect_timer;
    ngx_event_t          watchdog;
    ngx_queue_t          outstanding;   /* commands in send order */
    char                 host[MC_REDIS_HOST_MAX];
    int                  port;
    unsigned             ready:1;       /* AUTH/PING answered */
    unsigned             tcp_up:1;      /* seen connected by the connect timer */
    unsigned             writing:1;
} ngx_http_minichat_redis_node_t;


typedef struct {
    ngx_http_minichat_redis_node_t  nodes[NGX_HTTP_MINICHAT_REDIS_NODES];
    ngx_uint_t                      nnodes;
    int16_t                         slots[MC_REDIS_SLOTS];  /* node index */
    ngx_event_t                     refresh;
    ngx_msec_t                      refresh_sent;
    ngx_queue_t                     retrying;   /* commands in backoff */
    ngx_log_t                      *log;
    unsigned                        cluster:1;
    unsigned                        mapped:1;   /* a slot map was read */
    unsigned                        refreshing:1;
    unsigned                        exiting:1;
} ngx_http_minichat_redis_t;


typedef struct {
    ngx_queue_t                 queue;      /* in a node's `outstanding` while
                                               sent, in `retrying` in backoff */
    ngx_msec_t                  sent;
    ngx_msec_t                  start;      /* first issued */
    ngx_event_t                 retry;
    ngx_http_minichat_redis_pt  handler;
    void                       *data;
    const char                 *sha1;       /* NULL: a plain command */
    ngx_int_t                   node;       /* where it was sent */
    ngx_int_t                   slot;       /* -1: no key */
    ngx_msec_t                  backoff;
    ngx_uint_t                  redirects;
    unsigned                    eval:1;     /* NOSCRIPT seen: send EVAL */
    unsigned                    asking:1;   /* precede with ASKING */
    /* a plain command: its argv; a script: source, nkeys, arguments */
    int                         argc;
    char                      **argv;
    size_t                     *argvlen;
} ngx_http_minichat_redis_cmd_t;


static ngx_int_t ngx_http_minichat_redis_add_node(const char *host, int port);
static void ngx_http_minichat_redis_connect(ngx_http_minichat_redis_node_t *node);
static void ngx_http_minichat_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_minichat_redis_hello(redisAsyncContext *ac, void *r, void *privdata);
static void ngx_http_minichat_redis_read_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_write_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_add_read(void *privdata);
static void ngx_http_minichat_redis_del_read(void *privdata);
static void ngx_http_minichat_redis_add_write(void *privdata);
static void ngx_http_minichat_redis_del_write(void *privdata);
static void ngx_http_minichat_redis_cleanup(void *privdata);
static void ngx_http_minichat_redis_on_connect(const redisAsyncContext *ac, int status);
static void ngx_http_minichat_redis_on_disconnect(const redisAsyncContext *ac, int status);
static ngx_int_t ngx_http_minichat_redis_usable(ngx_http_minichat_redis_node_t *node);
static ngx_int_t ngx_http_minichat_redis_route(ngx_http_minichat_redis_cmd_t *cmd);
static ngx_int_t ngx_http_minichat_redis_send(ngx_http_minichat_redis_cmd_t *cmd, ngx_int_t n);
static void ngx_http_minichat_redis_reply(redisAsyncContext *ac, void *r, void *privdata);
static ngx_int_t ngx_http_minichat_redis_cluster_error(ngx_http_minichat_redis_cmd_t *cmd,
    redisReply *reply);
static void ngx_http_minichat_redis_retry_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_finish(ngx_http_minichat_redis_cmd_t *cmd, redisReply *reply);
static void ngx_http_minichat_redis_watchdog(ngx_event_t *ev);
static void ngx_http_minichat_redis_refresh(ngx_event_t *ev);
static void ngx_http_minichat_redis_slots(redisAsyncContext *ac, void *r, void *privdata);
static void ngx_http_minichat_redis_schedule_refresh(ngx_msec_t delay);


static ngx_http_minichat_redis_t  ngx_http_minichat_redis;


ngx_int_t
ngx_http_minichat_redis_init(ngx_cycle_t *cycle)
{
    ngx_http_minichat_redis_t      *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_redis_addr_t *seed;
    ngx_uint_t                      i;

    ngx_memzero(rd, sizeof(ngx_http_minichat_redis_t));
    ngx_memset(rd->slots, 0xff, sizeof(rd->slots));

    rd->log = cycle->log;
    rd->refresh.handler = ngx_http_minichat_redis_refresh;
    rd->refresh.log = cycle->log;
    rd->refresh.data = rd;
    rd->refresh.cancelable = 1;
    ngx_queue_init(&rd->retrying);

    if (mcf->redis_seeds == NULL) {
        if (ngx_http_minichat_redis_add_node((char *) mcf->redis_host.data, (int) mcf->redis_port) == -1) {
            return NGX_ERROR;
        }

    } else {
        rd->cluster = 1;
        seed = mcf->redis_seeds->elts;
        for (i = 0; i < mcf->redis_seeds->nelts; i++) {
            if (ngx_http_minichat_redis_add_node((char *) seed[i].host.data, (int) seed[i].port) == -1) {
                return NGX_ERROR;
            }
        }
    }

    for (i = 0; i < rd->nnodes; i++) {
        ngx_http_minichat_redis_connect(&rd->nodes[i]);
    }

    return NGX_OK;
}


void
ngx_http_minichat_redis_exit(void)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *node;
    ngx_http_minichat_redis_cmd_t   *cmd;
    ngx_queue_t                     *q;
    ngx_uint_t                       i;

    rd->exiting = 1;

    if (rd->refresh.timer_set) {
        ngx_del_timer(&rd->refresh);
    }

    while (!ngx_queue_empty(&rd->retrying)) {
        q = ngx_queue_head(&rd->retrying);
        cmd = ngx_queue_data(q, ngx_http_minichat_redis_cmd_t, queue);
        ngx_queue_remove(q);
        if (cmd->retry.timer_set) {
            ngx_del_timer(&cmd->retry);
        }
        ngx_http_minichat_redis_finish(cmd, NULL);
    }

    for (i = 0; i < rd->nnodes; i++) {
        node = &rd->nodes[i];

        if (node->reconnect.timer_set) {
            ngx_del_timer(&node->reconnect);
        }
        if (node->connect_timer.timer_set) {
            ngx_del_timer(&node->connect_timer);
        }
        if (node->watchdog.timer_set) {
            ngx_del_timer(&node->watchdog);
        }

        if (node->ac) {
            /* runs pending callbacks with NULL, then our cleanup hook */
            redisAsyncFree(node->ac);
            node->ac = NULL;
        }
    }
}


ngx_int_t
ngx_http_minichat_redis_ready(void)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;
    ngx_uint_t                  i;

    if (!rd->cluster) {
        return ngx_http_minichat_redis_usable(&rd->nodes[0]) && rd->nodes[0].ready;
    }

    if (!rd->mapped) {
        return 0;
    }

    for (i = 0; i < rd->nnodes; i++) {
        if (rd->nodes[i].ready) {
            return 1;
        }
    }

    return 0;
}


/* Returns the index of a new node, or -1 when the table is full. */
static ngx_int_t
ngx_http_minichat_redis_add_node(const char *host, int port)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *node;

    if (rd->nnodes == NGX_HTTP_MINICHAT_REDIS_NODES || ngx_strlen(host) >= MC_REDIS_HOST_MAX) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: too many redis nodes, \"%s:%d\" ignored", host, port);
        return -1;
    }

    node = &rd->nodes[rd->nnodes];
    ngx_memzero(node, sizeof(ngx_http_minichat_redis_node_t));

    ngx_cpystrn((u_char *) node->host, (u_char *) host, MC_REDIS_HOST_MAX);
    node->port = port;

    node->reconnect.handler = ngx_http_minichat_redis_reconnect_handler;
    node->reconnect.log = rd->log;
    node->reconnect.data = node;
    node->reconnect.cancelable = 1;

    node->connect_timer.handler = ngx_http_minichat_redis_connect_timeout;
    node->connect_timer.log = rd->log;
    node->connect_timer.data = node;
    node->connect_timer.cancelable = 1;

    node->watchdog.handler = ngx_http_minichat_redis_watchdog;
    node->watchdog.log = rd->log;
    node->watchdog.data = node;
    /* not cancelable: a graceful quit waits (up to minichat_redis_timeout)
     * for the replies still outstanding, so requests that were waiting on
     * Redis finish instead of failing with the reload */
    node->watchdog.cancelable = 0;
    ngx_queue_init(&node->outstanding);

    return (ngx_int_t) rd->nnodes++;
}


/* Returns the index of the node at host:port, connecting a new one. */
static ngx_int_t
ngx_http_minichat_redis_node_at(const char *host, int port)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;
    ngx_uint_t                  i;
    ngx_int_t                   n;

    for (i = 0; i < rd->nnodes; i++) {
        if (rd->nodes[i].port == port && ngx_strcmp(rd->nodes[i].host, host) == 0) {
            return (ngx_int_t) i;
        }
    }

    n = ngx_http_minichat_redis_add_node(host, port);
    if (n != -1) {
        ngx_http_minichat_redis_connect(&rd->nodes[n]);
    }

    return n;
}


static void
ngx_http_minichat_redis_schedule(ngx_http_minichat_redis_node_t *node)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    if (!rd->exiting && !ngx_exiting && !node->reconnect.timer_set) {
        ngx_add_timer(&node->reconnect, ngx_http_minichat_conf()->reconnect);
    }
}


static void
ngx_http_minichat_redis_connect(ngx_http_minichat_redis_node_t *node)
{
    ngx_http_minichat_redis_t      *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    redisAsyncContext              *ac;
    ngx_connection_t               *c;
    const char                     *av[3];
    size_t                          al[3];
    int                             ac_n;

    ac = redisAsyncConnect(node->host, node->port);
    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis context allocation failed");
        ngx_http_minichat_redis_schedule(node);
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis connect to %s:%d failed: %s",
                      node->host, node->port, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_minichat_redis_schedule(node);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_minichat_redis_schedule(node);
        return;
    }

    c->data = node;
    c->read->handler = ngx_http_minichat_redis_read_handler;
    c->write->handler = ngx_http_minichat_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    if (ngx_add_conn(c) != NGX_OK) {
        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
        redisAsyncFree(ac);
        ngx_http_minichat_redis_schedule(node);
        return;
    }

    node->ac = ac;
    node->conn = c;
    node->ready = 0;
    node->tcp_up = 0;

    ac->ev.data = node;
    ac->ev.addRead = ngx_http_minichat_redis_add_read;
    ac->ev.delRead = ngx_http_minichat_redis_del_read;
    ac->ev.addWrite = ngx_http_minichat_redis_add_write;
    ac->ev.delWrite = ngx_http_minichat_redis_del_write;
    ac->ev.cleanup = ngx_http_minichat_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_minichat_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_minichat_redis_on_disconnect);

    /* ngx_add_conn registered EPOLLOUT edge-triggered: the completed
     * connect arrives as a write event, which hiredis takes as "connected";
     * the handshake waits in hiredis's buffer until then */

    if (mcf->redis_password.len) {
        ac_n = 0;
        av[ac_n] = "AUTH";
        al[ac_n++] = 4;
        if (mcf->redis_user.len) {
            av[ac_n] = (const char *) mcf->redis_user.data;
            al[ac_n++] = mcf->redis_user.len;
        }
        av[ac_n] = (const char *) mcf->redis_password.data;
        al[ac_n++] = mcf->redis_password.len;

    } else {
        av[0] = "PING";
        al[0] = 4;
        ac_n = 1;
    }

    if (redisAsyncCommandArgv(ac, ngx_http_minichat_redis_hello, node, ac_n, av, al) != REDIS_OK) {
        redisAsyncFree(ac);   /* the cleanup hook schedules the reconnect */
        return;
    }

    ngx_add_timer(&node->connect_timer, mcf->redis_connect_timeout);
}


static void
ngx_http_minichat_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_minichat_redis_node_t  *node = ev->data;

    if (node->ac == NULL && !ngx_exiting && !ngx_http_minichat_redis.exiting) {
        ngx_http_minichat_redis_connect(node);
    }
}


static void
ngx_http_minichat_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_minichat_redis_node_t  *node = ev->data;
    ngx_http_minichat_main_conf_t   *mcf = ngx_http_minichat_conf();
    struct sockaddr_storage          sa;
    socklen_t                        len = sizeof(sa);

    if (node->ac == NULL || node->ready) {
        return;
    }

    /* TCP is up (hiredis cannot tell: it takes a connect still in progress
     * for done, SO_ERROR being 0 then): the AUTH/PING answer gets the rest
     * of minichat_redis_timeout, as any command would */
    if (!node->tcp_up && mcf->redis_timeout > mcf->redis_connect_timeout
        && getpeername(node->ac->c.fd, (struct sockaddr *) &sa, &len) == 0)
    {
        node->tcp_up = 1;
        ngx_add_timer(&node->connect_timer, mcf->redis_timeout - mcf->redis_connect_timeout);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_redis.log, 0,
                  "minichat: redis %s:%d did not %s in time; retrying", node->host, node->port,
                  node->tcp_up ? "answer its first command" : "accept the connection");

    /* the handshake's callback runs with NULL; the cleanup hook reconnects */
    redisAsyncFree(node->ac);
}


/* The AUTH or PING that opens every connection. */
static void
ngx_http_minichat_redis_hello(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *node = privdata;
    redisReply                      *reply = r;

    if (reply == NULL || node->ac != ac) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis %s:%d refused the connection: %s",
                      node->host, node->port, reply->str);
        /* freed after this callback returns; then the reconnect interval */
        redisAsyncFree(ac);
        return;
    }

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    node->ready = 1;
    ngx_log_error(NGX_LOG_INFO, rd->log, 0, "minichat: redis %s:%d connected", node->host, node->port);

    if (rd->cluster && (!rd->mapped || !rd->refresh.timer_set)) {
        ngx_http_minichat_redis_schedule_refresh(0);
    }
}


static void
ngx_http_minichat_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t                *c = ev->data;
    ngx_http_minichat_redis_node_t  *node = c->data;
    int                              n;

    while (node->ac) {
        redisAsyncHandleRead(node->ac);

        if (node->ac == NULL) {
            break;
        }

        /* hiredis reads 16 KB a call; an EOF behind the data must be read
         * too or the edge is lost */
        if (ioctl(node->ac->c.fd, FIONREAD, &n) == -1 || (n <= 0 && !ev->pending_eof)) {
            break;
        }
    }
}


static void
ngx_http_minichat_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t                *c = ev->data;
    ngx_http_minichat_redis_node_t  *node = c->data;

    if (node->ac) {
        node->writing = 1;
        redisAsyncHandleWrite(node->ac);
        node->writing = 0;
    }
}


static void
ngx_http_minichat_redis_add_read(void *privdata)
{
    /* the fd is registered for reading once, edge-triggered */
}


static void
ngx_http_minichat_redis_del_read(void *privdata)
{
}


static void
ngx_http_minichat_redis_add_write(void *privdata)
{
    ngx_http_minichat_redis_node_t  *node = privdata;

    /* called from inside redisAsyncHandleWrite when the socket took only
     * part of the buffer: wait for the next EPOLLOUT edge instead of
     * posting the event again, which would spin the worker */
    if (node->writing || node->conn == NULL) {
        return;
    }

    if (!node->conn->write->posted) {
        ngx_post_event(node->conn->write, &ngx_posted_events);
    }
}


static void
ngx_http_minichat_redis_del_write(void *privdata)
{
}


/* Called by hiredis just before it closes the fd and frees the context. */
static void
ngx_http_minichat_redis_cleanup(void *privdata)
{
    ngx_http_minichat_redis_node_t  *node = privdata;
    ngx_connection_t                *c = node->conn;

    if (c == NULL) {
        return;
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }
    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }
    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* hiredis closes the fd right after, which removes it from epoll */
    ngx_del_conn(c, NGX_CLOSE_EVENT);

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    node->conn = NULL;
    node->ac = NULL;
    node->ready = 0;

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    ngx_http_minichat_redis_schedule(node);

    if (ngx_http_minichat_redis.cluster) {
        ngx_http_minichat_redis_schedule_refresh(0);
    }
}


static void
ngx_http_minichat_redis_on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_redis.log, 0, "minichat: redis connect failed: %s",
                      ac->errstr);
        /* hiredis frees the context after this callback */
    }
}


static void
ngx_http_minichat_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK && !ngx_http_minichat_redis.exiting) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_redis.log, 0, "minichat: redis connection lost: %s",
                      ac->errstr);
    }
}


/* Returns 1 when commands can be queued on the node's context (it may still
 * be connecting), 0 when it has none or it is going away. */
static ngx_int_t
ngx_http_minichat_redis_usable(ngx_http_minichat_redis_node_t *node)
{
    return node->ac != NULL && !(node->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}


/* Allocates a command holding a copy of its vector (argv, or for a script:
 * source, nkeys, arguments). */
static ngx_http_minichat_redis_cmd_t *
ngx_http_minichat_redis_cmd(const char *sha1, const char *src, int nkeys, int argc, const char **argv,
    const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data)
{
    ngx_http_minichat_redis_cmd_t  *cmd;
    u_char                         *p, nk[NGX_INT_T_LEN];
    size_t                          total, nklen;
    int                             i, n, k;

    n = sha1 ? argc + 2 : argc;
    nklen = ngx_sprintf(nk, "%d", nkeys) - nk;

    total = sizeof(ngx_http_minichat_redis_cmd_t) + n * (sizeof(char *) + sizeof(size_t)) + nklen;
    for (i = 0; i < argc; i++) {
        total += argvlen[i];
    }

    cmd = ngx_calloc(total, ngx_http_minichat_redis.log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->sha1 = sha1;
    cmd->argc = n;
    cmd->argv = (char **) (cmd + 1);
    cmd->argvlen = (size_t *) (cmd->argv + n);
    cmd->start = ngx_current_msec;
    cmd->node = -1;
    cmd->retry.handler = ngx_http_minichat_redis_retry_handler;
    cmd->retry.data = cmd;
    cmd->retry.log = ngx_http_minichat_redis.log;
    p = (u_char *) (cmd->argvlen + n);

    k = 0;
    if (sha1) {
        cmd->argv[0] = (char *) src;   /* EVAL source, used on NOSCRIPT */
        cmd->argvlen[0] = ngx_strlen(src);
        cmd->argv[1] = (char *) p;
        cmd->argvlen[1] = nklen;
        p = ngx_cpymem(p, nk, nklen);
        k = 2;
    }

    for (i = 0; i < argc; i++) {
        cmd->argv[k + i] = (char *) p;
        cmd->argvlen[k + i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    /* the first key: argv[1] of a command, the first argument of a script */
    if (!ngx_http_minichat_redis.cluster) {
        cmd->slot = -1;

    } else if (sha1) {
        cmd->slot = (nkeys > 0 && argc > 0) ? (ngx_int_t) mc_redis_slot(argv[0], argvlen[0]) : -1;

    } else {
        cmd->slot = argc > 1 ? (ngx_int_t) mc_redis_slot(argv[1], argvlen[1]) : -1;
    }

    return cmd;
}


ngx_int_t
ngx_http_minichat_redis_argv(int argc, const char **argv, const size_t *argvlen,
    ngx_http_minichat_redis_pt handler, void *data)
{
    ngx_http_minichat_redis_cmd_t  *cmd;
    ngx_int_t                       n;

    if (!ngx_http_minichat_redis_ready()) {
        return NGX_ERROR;
    }

    cmd = ngx_http_minichat_redis_cmd(NULL, NULL, 0, argc, argv, argvlen, handler, data);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_minichat_redis_route(cmd);

    if (n == -1 || !ngx_http_minichat_redis.nodes[n].ready
        || ngx_http_minichat_redis_send(cmd, n) != NGX_OK)
    {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_minichat_redis_script(const char *sha1, const char *src, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data)
{
    ngx_http_minichat_redis_cmd_t  *cmd;
    ngx_int_t                       n;

    if (!ngx_http_minichat_redis_ready()) {
        return NGX_ERROR;
    }

    cmd = ngx_http_minichat_redis_cmd(sha1, src, nkeys, argc, argv, argvlen, handler, data);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_minichat_redis_route(cmd);

    if (n == -1 || !ngx_http_minichat_redis.nodes[n].ready
        || ngx_http_minichat_redis_send(cmd, n) != NGX_OK)
    {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* Returns the node a command goes to, or -1 when no node serves its slot
 * now (a map refresh is then on its way). */
static ngx_int_t
ngx_http_minichat_redis_route(ngx_http_minichat_redis_cmd_t *cmd)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;
    ngx_uint_t                  i;
    ngx_int_t                   n;

    if (!rd->cluster) {
        return 0;
    }

    if (cmd->slot == -1) {
        for (i = 0; i < rd->nnodes; i++) {
            if (rd->nodes[i].ready) {
                return (ngx_int_t) i;
            }
        }
        return -1;
    }

    n = rd->slots[cmd->slot];

    if (n == -1 || !rd->nodes[n].ready) {
        ngx_http_minichat_redis_schedule_refresh(0);
    }

    return n;
}


/* Sends cmd to node n (EVALSHA, EVAL or the command; ASKING first when
 * asked to).  Returns NGX_OK, or NGX_ERROR with cmd untouched. */
static ngx_int_t
ngx_http_minichat_redis_send(ngx_http_minichat_redis_cmd_t *cmd, ngx_int_t n)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *node = &rd->nodes[n];
    const char                     **av;
    size_t                          *al;
    int                              i, k;
    static const char               *asking = "ASKING";
    static const size_t              asking_len = 6;

    if (!ngx_http_minichat_redis_usable(node)) {
        return NGX_ERROR;
    }

    if (cmd->sha1 == NULL) {
        av = (const char **) cmd->argv;
        al = cmd->argvlen;
        k = cmd->argc;

    } else {
        av = ngx_alloc((cmd->argc + 1) * sizeof(char *), rd->log);
        al = ngx_alloc((cmd->argc + 1) * sizeof(size_t), rd->log);
        if (av == NULL || al == NULL) {
            goto failed;
        }

        /* EVALSHA sha1 nkeys args... or EVAL src nkeys args... */
        if (cmd->eval) {
            av[0] = "EVAL";
            al[0] = 4;
            av[1] = cmd->argv[0];
            al[1] = cmd->argvlen[0];

        } else {
            av[0] = "EVALSHA";
            al[0] = 7;
            av[1] = cmd->sha1;
            al[1] = ngx_strlen(cmd->sha1);
        }

        for (i = 1; i < cmd->argc; i++) {
            av[i + 1] = cmd->argv[i];
            al[i + 1] = cmd->argvlen[i];
        }
        k = cmd->argc + 1;
    }

    if (cmd->asking) {
        cmd->asking = 0;
        if (redisAsyncCommandArgv(node->ac, NULL, NULL, 1, &asking, &asking_len) != REDIS_OK) {
            goto failed;
        }
    }

    if (redisAsyncCommandArgv(node->ac, ngx_http_minichat_redis_reply, cmd, k, av, al) != REDIS_OK) {
        goto failed;
    }

    if (cmd->sha1) {
        ngx_free(av);
        ngx_free(al);
    }

    /* recorded as sent, for the watchdog */
    cmd->node = n;
    cmd->sent = ngx_current_msec;
    ngx_queue_insert_tail(&node->outstanding, &cmd->queue);

    if (!node->watchdog.timer_set) {
        ngx_add_timer(&node->watchdog, 1000);
    }

    return NGX_OK;

failed:

    if (cmd->sha1) {
        if (av) {
            ngx_free(av);
        }
        if (al) {
            ngx_free(al);
        }
    }

    return NGX_ERROR;
}


static void
ngx_http_minichat_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_cmd_t   *cmd = privdata;
    ngx_http_minichat_redis_node_t  *node = &rd->nodes[cmd->node];
    redisReply                      *reply = r;

    ngx_queue_remove(&cmd->queue);

    if (reply && reply->type == REDIS_REPLY_ERROR && !rd->exiting) {

        if (cmd->sha1 && !cmd->eval && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
            && node->ac == ac && ngx_http_minichat_redis_usable(node))
        {
            /* the script cache was flushed, Redis restarted, or a replica
             * was promoted: send the source, at most once */
            cmd->eval = 1;
            if (ngx_http_minichat_redis_send(cmd, cmd->node) == NGX_OK) {
                return;
            }
        }

        if (rd->cluster && ngx_http_minichat_redis_cluster_error(cmd, reply) == NGX_OK) {
            return;
        }
    }

    ngx_http_minichat_redis_finish(cmd, reply);
}


/* Follows a cluster error reply: MOVED, ASK, TRYAGAIN/CLUSTERDOWN/LOADING.
 * Returns NGX_OK when cmd was sent again or waits for a retry, NGX_DECLINED
 * when the caller gets the reply as it is. */
static ngx_int_t
ngx_http_minichat_redis_cluster_error(ngx_http_minichat_redis_cmd_t *cmd, redisReply *reply)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *from = &rd->nodes[cmd->node];
    mc_redis_redirect_t              rr;
    mc_redis_err_t                   kind;
    ngx_msec_t                       timeout = ngx_http_minichat_conf()->redis_timeout;
    ngx_int_t                        n;

    kind = mc_redis_error_class(reply->str, reply->len);

    switch (kind) {

    case MC_REDIS_ERR_MOVED:
    case MC_REDIS_ERR_ASK:
        if (cmd->redirects++ >= NGX_HTTP_MINICHAT_REDIS_REDIRECTS
            || mc_redis_redirect_parse(reply->str, reply->len, &rr) != 0)
        {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis redirect not followed: %s", reply->str);
            return NGX_DECLINED;
        }

        if (rr.addr.host[0] == '\0') {
            ngx_cpystrn((u_char *) rr.addr.host, (u_char *) from->host, MC_REDIS_HOST_MAX);
        }

        n = ngx_http_minichat_redis_node_at(rr.addr.host, rr.addr.port);
        if (n == -1) {
            return NGX_DECLINED;
        }

        if (kind == MC_REDIS_ERR_MOVED) {
            rd->slots[rr.slot] = (int16_t) n;
            ngx_http_minichat_redis_schedule_refresh(0);

        } else {
            cmd->asking = 1;
        }

            ngx_log_debug4(NGX_LOG_DEBUG_HTTP, rd->log, 0, "minichat: redis %s slot %ui to %s:%d",
                       kind == MC_REDIS_ERR_ASK ? "ASK" : "MOVED", (ngx_uint_t) rr.slot, rr.addr.host, rr.addr.port);

        /* the new node may still be connecting: hiredis holds the command
         * behind its handshake */
        return ngx_http_minichat_redis_send(cmd, n) == NGX_OK ? NGX_OK : NGX_DECLINED;

    case MC_REDIS_ERR_CLUSTERDOWN:
        ngx_http_minichat_redis_schedule_refresh(0);
        /* fall through */

    case MC_REDIS_ERR_TRYAGAIN:
    case MC_REDIS_ERR_LOADING:
        cmd->backoff = cmd->backoff ? ngx_min(cmd->backoff * 2, 200) : 10;

        if (ngx_current_msec + cmd->backoff - cmd->start >= timeout) {
            return NGX_DECLINED;
        }

        ngx_queue_insert_tail(&rd->retrying, &cmd->queue);
        ngx_add_timer(&cmd->retry, cmd->backoff);
        return NGX_OK;

    default:
        return NGX_DECLINED;
    }
}


static void
ngx_http_minichat_redis_retry_handler(ngx_event_t *ev)
{
    ngx_http_minichat_redis_cmd_t  *cmd = ev->data;
    ngx_int_t                       n;

    ngx_queue_remove(&cmd->queue);

    n = ngx_http_minichat_redis_route(cmd);

    if (n == -1 || ngx_http_minichat_redis_send(cmd, n) != NGX_OK) {
        ngx_http_minichat_redis_finish(cmd, NULL);
    }
}


/* Gives the caller its reply (NULL: failed) and frees cmd. */
static void
ngx_http_minichat_redis_finish(ngx_http_minichat_redis_cmd_t *cmd, redisReply *reply)
{
    if (cmd->handler) {
        cmd->handler(reply, cmd->data);

    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_redis.log, 0, "minichat: redis error: %s", reply->str);
    }

    ngx_free(cmd);
}


static void
ngx_http_minichat_redis_watchdog(ngx_event_t *ev)
{
    ngx_http_minichat_redis_node_t  *node = ev->data;
    ngx_http_minichat_redis_cmd_t   *cmd;
    ngx_msec_t                       timeout = ngx_http_minichat_conf()->redis_timeout;

    if (ngx_queue_empty(&node->outstanding)) {
        return;
    }

    cmd = ngx_queue_data(ngx_queue_head(&node->outstanding), ngx_http_minichat_redis_cmd_t, queue);

    if (node->ac && ngx_current_msec - cmd->sent >= timeout) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_redis.log, 0,
                      "minichat: redis %s:%d has not answered for %M ms; dropping the connection",
                      node->host, node->port, timeout);
        /* every waiting callback runs with NULL; the cleanup hook reconnects */
        redisAsyncFree(node->ac);
        return;
    }

    ngx_add_timer(&node->watchdog, 1000);
}


/* --- the slot map ---------------------------------------------------------- */

static void
ngx_http_minichat_redis_schedule_refresh(ngx_msec_t delay)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    if (!rd->cluster || rd->exiting || ngx_exiting) {
        return;
    }

    if (rd->refresh.timer_set) {
        if (delay > 0) {
            return;
        }
        ngx_del_timer(&rd->refresh);
    }

    if (delay == 0) {
        if (!rd->refresh.posted) {
            ngx_post_event(&rd->refresh, &ngx_posted_events);
        }
        return;
    }

    ngx_add_timer(&rd->refresh, delay);
}


/* Asks a ready node for CLUSTER SLOTS: one not serving a slot whose master
 * is down when there is one.  At most one question is in flight. */
static void
ngx_http_minichat_redis_refresh(ngx_event_t *ev)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *node;
    ngx_uint_t                       i, k, start;
    static ngx_uint_t                next;

    if (rd->exiting || ngx_exiting) {
        return;
    }

    if (rd->refreshing) {
        if (ngx_current_msec - rd->refresh_sent < ngx_http_minichat_conf()->redis_timeout) {
            return;
        }
        rd->refreshing = 0;   /* that node never answered */
    }

    /* failing commands ask for a refresh each: one every 100 ms is enough */
    if (rd->mapped && ngx_current_msec - rd->refresh_sent < 100) {
        if (!rd->refresh.timer_set) {
            ngx_add_timer(&rd->refresh, 100 - (ngx_current_msec - rd->refresh_sent));
        }
        return;
    }

    /* round robin, so a node with a stale view is not asked every time */
    start = next++;

    for (k = 0; k < rd->nnodes; k++) {
        i = (start + k) % rd->nnodes;
        node = &rd->nodes[i];

        if (!node->ready || !ngx_http_minichat_redis_usable(node)) {
            continue;
        }

        if (redisAsyncCommand(node->ac, ngx_http_minichat_redis_slots, node, "CLUSTER SLOTS") == REDIS_OK) {
            rd->refreshing = 1;
            rd->refresh_sent = ngx_current_msec;
            return;
        }
    }

    /* no node is ready: try again once one may be */
    ngx_http_minichat_redis_schedule_refresh(NGX_HTTP_MINICHAT_REDIS_REFRESH);
}


static void
ngx_http_minichat_redis_slots(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *from = privdata;
    mc_redis_slotmap_t              *map;
    redisReply                      *reply = r;
    ngx_int_t                        n, idx[NGX_HTTP_MINICHAT_REDIS_NODES];
    ngx_uint_t                       i, down;

    rd->refreshing = 0;

    if (reply == NULL || rd->exiting) {
        ngx_http_minichat_redis_schedule_refresh(NGX_HTTP_MINICHAT_REDIS_REFRESH);
        return;
    }

    map = ngx_alloc(sizeof(mc_redis_slotmap_t), rd->log);
    if (map == NULL) {
        ngx_http_minichat_redis_schedule_refresh(NGX_HTTP_MINICHAT_REDIS_REFRESH);
        return;
    }

    if (mc_redis_slotmap_parse(map, reply, from->host) != 0 || map->nnodes > NGX_HTTP_MINICHAT_REDIS_NODES) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis %s:%d gave no usable CLUSTER SLOTS reply%s%s",
                      from->host, from->port, reply->type == REDIS_REPLY_ERROR ? ": " : "",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        mc_redis_slotmap_free(map);
        ngx_free(map);
        ngx_http_minichat_redis_schedule_refresh(NGX_HTTP_MINICHAT_REDIS_REFRESH);
        return;
    }

    for (i = 0; i < map->nnodes; i++) {
        idx[i] = ngx_http_minichat_redis_node_at(map->nodes[i].host, map->nodes[i].port);
    }

    down = 0;
    for (i = 0; i < MC_REDIS_SLOTS; i++) {
        n = map->owner[i] == -1 ? -1 : idx[map->owner[i]];
        rd->slots[i] = (int16_t) n;
        if (n == -1 || !rd->nodes[n].ready) {
            down++;
        }
    }

    if (!rd->mapped) {
        ngx_log_error(NGX_LOG_INFO, rd->log, 0, "minichat: redis cluster map read from %s:%d: %uz masters",
                      from->host, from->port, map->nnodes);
    }
    rd->mapped = 1;

    mc_redis_slotmap_free(map);
    ngx_free(map);

    /* a master is down or not connected yet: look again soon, the cluster
     * promotes a replica within cluster-node-timeout and a little more */
    if (down) {
        ngx_http_minichat_redis_schedule_refresh(NGX_HTTP_MINICHAT_REDIS_REFRESH);
    }
}


/* --- configuration ----------------------------------------------------------- */

/* minichat_redis_cluster host:port ...: seed nodes; the masters are learnt
 * from CLUSTER SLOTS */
char *
ngx_http_minichat_redis_cluster_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t   *mcf = conf;
    ngx_http_minichat_redis_addr_t  *seed;
    ngx_str_t                       *value;
    ngx_url_t                        u;
    ngx_uint_t                       i;

    if (mcf->enabled) {
        return "is duplicate, or given with \"minichat_redis\"";
    }

    mcf->redis_seeds = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(ngx_http_minichat_redis_addr_t));
    if (mcf->redis_seeds == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        ngx_memzero(&u, sizeof(ngx_url_t));
        u.url = value[i];

        /* resolved here, once: hiredis would block in getaddrinfo() */
        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.no_port || u.family == AF_UNIX || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid redis address \"%V\", expected host:port%s%s",
                               &value[i], u.err ? ": " : "", u.err ? u.err : "");
            return NGX_CONF_ERROR;
        }

        seed = ngx_array_push(mcf->redis_seeds);
        if (seed == NULL) {
            return NGX_CONF_ERROR;
        }

        seed->host.data = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
        if (seed->host.data == NULL) {
            return NGX_CONF_ERROR;
        }
        seed->host.len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, seed->host.data,
                                       NGX_SOCKADDR_STRLEN, 0);
        seed->host.data[seed->host.len] = '\0';
        seed->port = u.port;
    }

    if (mcf->redis_seeds->nelts > NGX_HTTP_MINICHAT_REDIS_NODES) {
        return "has too many seed nodes";
    }

    mcf->enabled = 1;

    return NGX_CONF_OK;
}


/* minichat_redis_password_file path: the password is the file's first line
 * (a trailing newline is not part of it), sent with AUTH on every connect */
char *
ngx_http_minichat_redis_password_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    ngx_str_t   *value, name;
    ngx_file_t   file;
    ssize_t      n;
    u_char      *buf, *nl;

    if (mcf->redis_password.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = name;
    file.log = cf->log;

    file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, ngx_open_file_n " \"%V\" failed", &name);
        return NGX_CONF_ERROR;
    }

    buf = ngx_pnalloc(cf->pool, 1025);
    if (buf == NULL) {
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_file(&file, buf, 1025, 0);
    ngx_close_file(file.fd);

    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    nl = ngx_strlchr(buf, buf + n, '\n');
    if (nl) {
        n = nl - buf;
    }
    if (n > 0 && buf[n - 1] == '\r') {
        n--;
    }

    if (n == 0 || n > 1023) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "redis password file \"%V\" must hold 1..1023 bytes", &name);
        return NGX_CONF_ERROR;
    }

    buf[n] = '\0';
    mcf->redis_password.data = buf;
    mcf->redis_password.len = n;

    return NGX_CONF_OK;
}
