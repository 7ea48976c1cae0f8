/*
 * Redis for the module, on the nginx event loop: one Redis (minichat_redis)
 * or a Redis Cluster (minichat_redis_cluster).
 *
 * The worker keeps one connection per Redis node ("node" below: the single
 * Redis, or each cluster master it has learnt of), each the adapter of
 * ngx_http_minichat_redis_node.c: connect with a timeout and AUTH/PING,
 * reconnect, watchdog.  A node that is not ready takes no new command: the
 * caller answers `unavailable` at once.  This file turns the module's calls
 * into commands (EVALSHA with the EVAL fallback on NOSCRIPT) and sends each
 * to its node.
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
 * Scripts that carry the node's replication id (ngx_http_minichat_redis_
 * script_gen: the room scripts that rest on a room's seq, see lua/send.lua)
 * get it appended as their last argument each time they are sent, to
 * whichever node they go.  A node's id is asked behind its handshake, again
 * on every slot map read, and forgotten (asked anew, scripts held meanwhile)
 * when a MOVED names the node or a map shows it owning slots it did not own
 * before: a replica promoted while connected.  Such a script is never sent
 * to a node whose id is not known: it is held (the `held` queue) until the
 * id comes, routed anew then, or failed after minichat_redis_timeout.
 *
 * Traps: a command re-sent from a reply callback must not go back to a
 * node whose connection is gone (the callbacks of a lost connection run
 * with NULL while it is not usable); MOVED and CLUSTER SLOTS may name a
 * node with an empty host ("the node you asked"); a node learnt from a MOVED
 * is connected on demand and the command is queued in its output buffer
 * behind the AUTH/PING, which goes out once the connection (TCP, and TLS
 * with minichat_redis_tls) is up.
 */
#include "ngx_http_minichat_module.h"
#include "ngx_http_minichat_redis.h"
#include "minichat/clock.h"


#define NGX_HTTP_MINICHAT_REDIS_NODES      64
#define NGX_HTTP_MINICHAT_REDIS_REDIRECTS  5
#define NGX_HTTP_MINICHAT_REDIS_REFRESH    500
#define NGX_HTTP_MINICHAT_REDIS_ARGS       32    /* a script call's vector on the stack */


typedef struct {
    ngx_http_minichat_redis_node_t  nodes[NGX_HTTP_MINICHAT_REDIS_NODES];
    ngx_uint_t                      nnodes;
    int16_t                         slots[MC_REDIS_SLOTS];  /* node index */
    ngx_event_t                     refresh;
    ngx_msec_t                      refresh_sent;
    ngx_queue_t                     retrying;   /* commands in backoff */
    ngx_queue_t                     held;       /* scripts waiting for a node's replication id */
    ngx_msec_t                      op_start;   /* see redis_op_start(); 0: none */
    ngx_log_t                      *log;
    unsigned                        cluster:1;
    unsigned                        mapped:1;   /* a slot map was read */
    unsigned                        refreshing:1;
    unsigned                        exiting:1;
} ngx_http_minichat_redis_t;


typedef struct {
    ngx_http_minichat_redis_pending_t  pending;    /* first: the reply's privdata;
                                                      its queue is also `retrying`'s */
    ngx_msec_t                  start;      /* first issued */
    int64_t                     issued_us;  /* first issued, mc_now_us(): the round trip's start */
    ngx_event_t                 retry;
    ngx_http_minichat_redis_pt  handler;
    void                       *data;
    const char                 *sha1;       /* NULL: a plain command */
    ngx_int_t                   node;       /* where it was sent */
    ngx_int_t                   slot;       /* -1: no key */
    ngx_msec_t                  backoff;
    ngx_uint_t                  redirects;
    unsigned                    eval:1;     /* NOSCRIPT seen: send EVAL */
    unsigned                    gen:1;      /* append the node's replication id */
    unsigned                    held:1;     /* in `held`, its retry timer the deadline */
    unsigned                    asking:1;   /* precede with ASKING */
    /* a plain command: its argv; a script: source, nkeys, arguments */
    int                         argc;
    char                      **argv;
    size_t                     *argvlen;
} ngx_http_minichat_redis_cmd_t;


static ngx_int_t ngx_http_minichat_redis_add_node(const char *host, int port);
static ngx_int_t ngx_http_minichat_redis_node_at(const char *host, int port);
static void ngx_http_minichat_redis_on_ready(ngx_http_minichat_redis_node_t *node);
static void ngx_http_minichat_redis_on_lost(ngx_http_minichat_redis_node_t *node);
static ngx_http_minichat_redis_cmd_t *ngx_http_minichat_redis_cmd(const char *sha1, const char *src, int nkeys,
    int argc, const char **argv, const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data);
static ngx_int_t ngx_http_minichat_redis_route(ngx_http_minichat_redis_cmd_t *cmd);
static ngx_int_t ngx_http_minichat_redis_script_cmd(const char *sha1, const char *src, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_uint_t gen, ngx_http_minichat_redis_pt handler, void *data);
static ngx_int_t ngx_http_minichat_redis_dispatch(ngx_http_minichat_redis_cmd_t *cmd, ngx_int_t n);
static void ngx_http_minichat_redis_redrive(void);
static void ngx_http_minichat_redis_on_replid(ngx_http_minichat_redis_node_t *node);
static ngx_int_t ngx_http_minichat_redis_send(ngx_http_minichat_redis_cmd_t *cmd, ngx_int_t n);
static void ngx_http_minichat_redis_reply(ngx_http_minichat_redis_node_t *from, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p);
static ngx_int_t ngx_http_minichat_redis_cluster_error(ngx_http_minichat_redis_cmd_t *cmd,
    redisReply *reply);
static void ngx_http_minichat_redis_retry_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_finish(ngx_http_minichat_redis_cmd_t *cmd, redisReply *reply);
static void ngx_http_minichat_redis_refresh(ngx_event_t *ev);
static void ngx_http_minichat_redis_slots(ngx_http_minichat_redis_node_t *from, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p);
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
    ngx_queue_init(&rd->held);

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
        ngx_http_minichat_redis_node_connect(&rd->nodes[i]);
    }

    return NGX_OK;
}


void
ngx_http_minichat_redis_exit(void)
{
    ngx_http_minichat_redis_t      *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_cmd_t  *cmd;
    ngx_queue_t                    *q;
    ngx_uint_t                      i;

    rd->exiting = 1;

    if (rd->refresh.timer_set) {
        ngx_del_timer(&rd->refresh);
    }

    while (!ngx_queue_empty(&rd->retrying)) {
        q = ngx_queue_head(&rd->retrying);
        cmd = (ngx_http_minichat_redis_cmd_t *) ngx_queue_data(q, ngx_http_minichat_redis_pending_t, queue);
        ngx_queue_remove(q);
        if (cmd->retry.timer_set) {
            ngx_del_timer(&cmd->retry);
        }
        ngx_http_minichat_redis_finish(cmd, NULL);
    }

    while (!ngx_queue_empty(&rd->held)) {
        q = ngx_queue_head(&rd->held);
        cmd = (ngx_http_minichat_redis_cmd_t *) ngx_queue_data(q, ngx_http_minichat_redis_pending_t, queue);
        ngx_queue_remove(q);
        if (cmd->retry.timer_set) {
            ngx_del_timer(&cmd->retry);
        }
        ngx_http_minichat_redis_finish(cmd, NULL);
    }

    for (i = 0; i < rd->nnodes; i++) {
        ngx_http_minichat_redis_node_close(&rd->nodes[i]);
    }
}


ngx_int_t
ngx_http_minichat_redis_ready(void)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;
    ngx_uint_t                  i;

    if (!rd->cluster) {
        return ngx_http_minichat_redis_node_usable(&rd->nodes[0]) && rd->nodes[0].ready;
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


ngx_uint_t
ngx_http_minichat_redis_status(ngx_http_minichat_redis_status_t *st, ngx_http_minichat_redis_node_status_t *nodes,
    ngx_uint_t max)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *node;
    ngx_uint_t                       i, n;
    int16_t                          owner;

    st->cluster = rd->cluster;
    st->mapped = rd->mapped;
    st->slots_ready = 0;
    st->nnodes = rd->nnodes;

    n = ngx_min(max, rd->nnodes);

    for (i = 0; i < n; i++) {
        node = &rd->nodes[i];
        nodes[i].host = node->host;
        nodes[i].port = node->port;
        nodes[i].slots = 0;
        nodes[i].connected = node->conn != NULL;
        nodes[i].ready = node->ready;
        nodes[i].master = node->replid_known;
    }

    if (!rd->cluster) {
        return n;
    }

    for (i = 0; i < MC_REDIS_SLOTS; i++) {
        owner = rd->slots[i];
        if (owner < 0 || (ngx_uint_t) owner >= rd->nnodes) {
            continue;
        }
        if ((ngx_uint_t) owner < n) {
            nodes[owner].slots++;
        }
        if (rd->nodes[owner].ready) {
            st->slots_ready++;
        }
    }

    return n;
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
    ngx_http_minichat_redis_node_init(node, host, port, rd->log);
    node->on_replid = ngx_http_minichat_redis_on_replid;

    if (rd->cluster) {
        node->on_ready = ngx_http_minichat_redis_on_ready;
        node->on_lost = ngx_http_minichat_redis_on_lost;
    }

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
        ngx_http_minichat_redis_node_connect(&rd->nodes[n]);
    }

    return n;
}


/* Commands issued until the next call belong to an operation that started
 * at `start` (ngx_current_msec; 0: none); returns the value it replaces,
 * for the caller to put back.  Their deadline,
 * minichat_redis_timeout, counts from there, so an operation of several
 * Redis steps (a limit check, then the send script on another cluster node)
 * answers within one deadline, not one per step.  A step issued after the
 * deadline fails at once, as a command that got no answer. */
ngx_msec_t
ngx_http_minichat_redis_op_start(ngx_msec_t start)
{
    ngx_msec_t  outer = ngx_http_minichat_redis.op_start;

    ngx_http_minichat_redis.op_start = start;
    return outer;
}


/* Allocates a command holding a copy of its vector (argv, or for a script:
 * source, nkeys, arguments); NULL when out of memory or when the operation's
 * deadline has passed. */
static ngx_http_minichat_redis_cmd_t *
ngx_http_minichat_redis_cmd(const char *sha1, const char *src, int nkeys, int argc, const char **argv,
    const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data)
{
    ngx_http_minichat_redis_cmd_t  *cmd;
    u_char                         *p, nk[NGX_INT_T_LEN];
    size_t                          total, nklen;
    int                             i, n, k;

    if (ngx_http_minichat_redis.op_start
        && ngx_current_msec - ngx_http_minichat_redis.op_start >= ngx_http_minichat_conf()->redis_timeout)
    {
        /* an earlier step of the operation took its whole deadline */
        return NULL;
    }

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
    cmd->start = ngx_http_minichat_redis.op_start ? ngx_http_minichat_redis.op_start : ngx_current_msec;
    cmd->node = -1;
    cmd->issued_us = mc_now_us();
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
    return ngx_http_minichat_redis_script_cmd(sha1, src, nkeys, argc, argv, argvlen, 0, handler, data);
}


ngx_int_t
ngx_http_minichat_redis_script_gen(const char *sha1, const char *src, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data)
{
    return ngx_http_minichat_redis_script_cmd(sha1, src, nkeys, argc, argv, argvlen, 1, handler, data);
}


static ngx_int_t
ngx_http_minichat_redis_script_cmd(const char *sha1, const char *src, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_uint_t gen, ngx_http_minichat_redis_pt handler, void *data)
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

    cmd->gen = gen;

    n = ngx_http_minichat_redis_route(cmd);

    if (n == -1 || !ngx_http_minichat_redis.nodes[n].ready
        || ngx_http_minichat_redis_dispatch(cmd, n) != NGX_OK)
    {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* Sends cmd to node n, or holds it while it needs the node's replication id
 * and that is not known (the id is on its way: the handshake or a MOVED
 * asked for it).  Returns NGX_OK, or NGX_ERROR with cmd untouched. */
static ngx_int_t
ngx_http_minichat_redis_dispatch(ngx_http_minichat_redis_cmd_t *cmd, ngx_int_t n)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_node_t  *node = &rd->nodes[n];
    ngx_msec_t                       timeout = ngx_http_minichat_conf()->redis_timeout;
    ngx_msec_t                       spent = ngx_current_msec - cmd->start;

    if (!cmd->gen || node->replid_known) {
        return ngx_http_minichat_redis_send(cmd, n);
    }

    if (!ngx_http_minichat_redis_node_usable(node) || spent >= timeout) {
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rd->log, 0, "minichat: redis %s:%d: script held for the replication id",
                   node->host, node->port);

    cmd->node = n;
    cmd->held = 1;
    ngx_queue_insert_tail(&rd->held, &cmd->pending.queue);
    if (!cmd->retry.timer_set) {
        ngx_add_timer(&cmd->retry, timeout - spent);
    }

    return NGX_OK;
}


/* Sends the held scripts whose node's id is known now (routed anew: the map
 * may have changed meanwhile); the others wait on. */
static void
ngx_http_minichat_redis_redrive(void)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_cmd_t   *cmd;
    ngx_queue_t                      q, *x;
    ngx_int_t                        n;

    if (ngx_queue_empty(&rd->held)) {
        return;
    }

    /* take the queue: a script sent here may come back to it */
    q = rd->held;
    q.next->prev = &q;
    q.prev->next = &q;
    ngx_queue_init(&rd->held);

    while (!ngx_queue_empty(&q)) {
        x = ngx_queue_head(&q);
        ngx_queue_remove(x);
        cmd = (ngx_http_minichat_redis_cmd_t *) ngx_queue_data(x, ngx_http_minichat_redis_pending_t, queue);

        /* an ASK holds for its node; anything else goes where the map says */
        n = cmd->asking ? cmd->node : ngx_http_minichat_redis_route(cmd);

        if (n == -1 || !rd->nodes[n].replid_known) {
            ngx_queue_insert_tail(&rd->held, x);
            continue;
        }

        cmd->held = 0;
        if (cmd->retry.timer_set) {
            ngx_del_timer(&cmd->retry);
        }

        if (ngx_http_minichat_redis_send(cmd, n) != NGX_OK) {
            ngx_http_minichat_redis_finish(cmd, NULL);
        }
    }
}


/* A node learnt its replication id. */
static void
ngx_http_minichat_redis_on_replid(ngx_http_minichat_redis_node_t *node)
{
    ngx_http_minichat_redis_redrive();
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
    const char                     **av, *avs[NGX_HTTP_MINICHAT_REDIS_ARGS];
    size_t                          *al, als[NGX_HTTP_MINICHAT_REDIS_ARGS];
    int                              i, k;
    static const char               *asking = "ASKING";
    static const size_t              asking_len = 6;

    if (!ngx_http_minichat_redis_node_usable(node)) {
        return NGX_ERROR;
    }

    if (cmd->sha1 && cmd->gen && !node->replid_known) {
        return NGX_ERROR;
    }

    /* a script: EVALSHA (or EVAL) before the command's own vector, and the
     * node's replication id after it when the script takes one */
    k = cmd->sha1 ? cmd->argc + 1 + (cmd->gen ? 1 : 0) : cmd->argc;

    if (cmd->sha1 == NULL) {
        av = (const char **) cmd->argv;
        al = cmd->argvlen;

    } else if (k <= NGX_HTTP_MINICHAT_REDIS_ARGS) {
        av = avs;
        al = als;

    } else {
        av = ngx_alloc(k * sizeof(char *), rd->log);
        al = ngx_alloc(k * sizeof(size_t), rd->log);
        if (av == NULL || al == NULL) {
            goto failed;
        }
    }

    if (cmd->sha1) {
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

        if (cmd->gen) {
            av[k - 1] = node->replid;
            al[k - 1] = MC_REDIS_REPLID_LEN;
        }
    }

    if (cmd->asking) {
        cmd->asking = 0;
        if (ngx_http_minichat_redis_node_command(node, NULL, NULL, 1, &asking, &asking_len) != NGX_OK) {
            goto failed;
        }
    }

    if (ngx_http_minichat_redis_node_command(node, ngx_http_minichat_redis_reply, &cmd->pending, k, av, al)
        != NGX_OK)
    {
        goto failed;
    }

    if (av != avs && av != (const char **) cmd->argv) {
        ngx_free(av);
        ngx_free(al);
    }

    cmd->node = n;

    return NGX_OK;

failed:

    if (av != avs && av != (const char **) cmd->argv) {
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
ngx_http_minichat_redis_reply(ngx_http_minichat_redis_node_t *from, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_cmd_t   *cmd = (ngx_http_minichat_redis_cmd_t *) p;
    ngx_http_minichat_redis_node_t  *node = &rd->nodes[cmd->node];

    if (reply && reply->type == REDIS_REPLY_ERROR && !rd->exiting) {

        if (cmd->sha1 && !cmd->eval && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
            && ngx_http_minichat_redis_node_usable(node))
        {
            /* the script cache was flushed, Redis restarted, or a replica
             * was promoted: send the source, at most once */
            cmd->eval = 1;
            if (ngx_http_minichat_redis_dispatch(cmd, cmd->node) == NGX_OK) {
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
            /* the new owner may be a replica promoted while connected:
             * whatever id it had may not be its own now */
            ngx_http_minichat_redis_node_learn(&rd->nodes[n], 1);

        } else {
            cmd->asking = 1;
        }

            ngx_log_debug4(NGX_LOG_DEBUG_HTTP, rd->log, 0, "minichat: redis %s slot %ui to %s:%d",
                       kind == MC_REDIS_ERR_ASK ? "ASK" : "MOVED", (ngx_uint_t) rr.slot, rr.addr.host, rr.addr.port);

        /* the new node may still be connecting: its buffer holds the command
         * behind its handshake (a script carrying the id waits for it) */
        return ngx_http_minichat_redis_dispatch(cmd, n) == NGX_OK ? NGX_OK : NGX_DECLINED;

    case MC_REDIS_ERR_CLUSTERDOWN:
        ngx_http_minichat_redis_schedule_refresh(0);
        /* fall through */

    case MC_REDIS_ERR_TRYAGAIN:
    case MC_REDIS_ERR_LOADING:
        cmd->backoff = cmd->backoff ? ngx_min(cmd->backoff * 2, 200) : 10;

        if (ngx_current_msec + cmd->backoff - cmd->start >= timeout) {
            return NGX_DECLINED;
        }

        ngx_queue_insert_tail(&rd->retrying, &cmd->pending.queue);
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

    ngx_queue_remove(&cmd->pending.queue);

    if (cmd->held) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_redis.log, 0,
                      "minichat: redis %s:%d: no replication id known in time; a script failed",
                      ngx_http_minichat_redis.nodes[cmd->node].host, ngx_http_minichat_redis.nodes[cmd->node].port);
        ngx_http_minichat_redis_finish(cmd, NULL);
        return;
    }

    n = ngx_http_minichat_redis_route(cmd);

    if (n == -1 || ngx_http_minichat_redis_dispatch(cmd, n) != NGX_OK) {
        ngx_http_minichat_redis_finish(cmd, NULL);
    }
}


/* Gives the caller its reply (NULL: failed) and frees cmd. */
static void
ngx_http_minichat_redis_finish(ngx_http_minichat_redis_cmd_t *cmd, redisReply *reply)
{
    if (reply) {
        ngx_http_minichat_observe(redis, cmd->issued_us);
    }

    if (cmd->handler) {
        cmd->handler(reply, cmd->data);

    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_redis.log, 0, "minichat: redis error: %s", reply->str);
    }

    ngx_free(cmd);
}


/* --- the slot map ---------------------------------------------------------- */

/* A node answered its handshake: a map is wanted, or may have changed. */
static void
ngx_http_minichat_redis_on_ready(ngx_http_minichat_redis_node_t *node)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    if (!rd->mapped || !rd->refresh.timer_set) {
        ngx_http_minichat_redis_schedule_refresh(0);
    }
}


/* A node's connection is gone: a failover may be on its way. */
static void
ngx_http_minichat_redis_on_lost(ngx_http_minichat_redis_node_t *node)
{
    ngx_http_minichat_redis_schedule_refresh(0);
}


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
    static const char               *slots_av[2] = { "CLUSTER", "SLOTS" };
    static const size_t              slots_al[2] = { 7, 5 };

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

        if (!node->ready || !ngx_http_minichat_redis_node_usable(node)) {
            continue;
        }

        if (ngx_http_minichat_redis_node_command(node, ngx_http_minichat_redis_slots, NULL, 2, slots_av, slots_al)
            == NGX_OK)
        {
            rd->refreshing = 1;
            rd->refresh_sent = ngx_current_msec;
            return;
        }
    }

    /* no node is ready: try again once one may be */
    ngx_http_minichat_redis_schedule_refresh(NGX_HTTP_MINICHAT_REDIS_REFRESH);
}


static void
ngx_http_minichat_redis_slots(ngx_http_minichat_redis_node_t *from, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p)
{
    ngx_http_minichat_redis_t       *rd = &ngx_http_minichat_redis;
    mc_redis_slotmap_t              *map;
    ngx_int_t                        n, idx[NGX_HTTP_MINICHAT_REDIS_NODES];
    ngx_uint_t                       i, down;
    u_char                           owned[NGX_HTTP_MINICHAT_REDIS_NODES];

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

    ngx_memzero(owned, sizeof(owned));
    for (i = 0; i < MC_REDIS_SLOTS; i++) {
        if (rd->slots[i] != -1) {
            owned[rd->slots[i]] = 1;
        }
    }

    /* every master's id again; one that owns slots now and did not before
     * (a replica promoted) is not trusted until it answers */
    for (i = 0; i < map->nnodes; i++) {
        if (idx[i] != -1) {
            ngx_http_minichat_redis_node_learn(&rd->nodes[idx[i]], !owned[idx[i]]);
        }
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

    ngx_http_minichat_redis_redrive();

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

        /* resolved here, once: a name would block the worker in getaddrinfo() */
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
