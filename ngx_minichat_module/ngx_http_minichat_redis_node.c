/*
 * One Redis connection on the nginx event loop, through hiredis's async API:
 * the adapter, the connect with its handshake and timer, the reconnect and
 * the watchdog.  ngx_http_minichat_redis.c keeps one of these per Redis
 * node (the single Redis, or each cluster master) and decides what goes
 * where; this file knows nothing of commands beyond their send order.
 *
 * The fd is wrapped in an ngx_connection_t registered edge-triggered for
 * both directions (ngx_add_conn); hiredis's addWrite hook posts the write
 * event rather than writing at once, so a command issued inside a reply
 * callback never re-enters hiredis.  hiredis reads at most 16 KB per call,
 * so a read event drains the socket, asking FIONREAD whether more is
 * waiting.
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
 * Until a node is ready its user sends nothing to it (the caller answers
 * `unavailable` at once); a refused AUTH is logged and retried the same way.
 *
 * The node's replication id.  Behind the handshake every connection asks
 * INFO replication, and the user asks again whenever the node may have
 * changed role (ngx_http_minichat_redis_node_learn).  The id is known only
 * while the answer to the latest question said role:master (a replica
 * reports its master's id, which is not its own once it is promoted); a
 * new connection starts with no id, so one learnt before a restart is never
 * used after it.  Room scripts that rest on the room's seq carry the id,
 * and are held by the user until it is known (see lua/send.lua).
 *
 * hiredis 0.14 has no command timeouts.  Outstanding commands are kept in
 * send order (Redis answers in that order), and a watchdog drops the
 * connection when the oldest has waited longer than minichat_redis_timeout:
 * every waiting caller then gets its NULL reply (an error for the client)
 * instead of waiting forever on a Redis that stopped answering.  The
 * watchdog is not cancelable: a graceful quit waits (up to
 * minichat_redis_timeout) for the replies still outstanding.
 */
#include <sys/ioctl.h>

#include "ngx_http_minichat_module.h"
#include "ngx_http_minichat_redis.h"
#include "minichat/resp.h"


/* A command this long or shorter is formatted on the stack (lib/src/resp.c)
 * and given to hiredis whole; a longer one (a script's source) goes through
 * hiredis's own formatting. */
#define NGX_HTTP_MINICHAT_REDIS_NODE_INLINE  1024


static void ngx_http_minichat_redis_node_schedule(ngx_http_minichat_redis_node_t *node);
static void ngx_http_minichat_redis_node_reconnect_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_node_connect_timeout(ngx_event_t *ev);
static void ngx_http_minichat_redis_node_hello(redisAsyncContext *ac, void *r, void *privdata);
static void ngx_http_minichat_redis_node_info(redisAsyncContext *ac, void *r, void *privdata);
static void ngx_http_minichat_redis_node_read_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_node_write_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_node_add_read(void *privdata);
static void ngx_http_minichat_redis_node_del_read(void *privdata);
static void ngx_http_minichat_redis_node_add_write(void *privdata);
static void ngx_http_minichat_redis_node_del_write(void *privdata);
static void ngx_http_minichat_redis_node_cleanup(void *privdata);
static void ngx_http_minichat_redis_node_on_connect(const redisAsyncContext *ac, int status);
static void ngx_http_minichat_redis_node_on_disconnect(const redisAsyncContext *ac, int status);
static void ngx_http_minichat_redis_node_watchdog(ngx_event_t *ev);


void
ngx_http_minichat_redis_node_init(ngx_http_minichat_redis_node_t *node, const char *host, int port,
    ngx_log_t *log)
{
    ngx_memzero(node, sizeof(ngx_http_minichat_redis_node_t));

    ngx_cpystrn((u_char *) node->host, (u_char *) host, MC_REDIS_HOST_MAX);
    node->port = port;
    node->log = log;

    node->reconnect.handler = ngx_http_minichat_redis_node_reconnect_handler;
    node->reconnect.log = log;
    node->reconnect.data = node;
    node->reconnect.cancelable = 1;

    node->connect_timer.handler = ngx_http_minichat_redis_node_connect_timeout;
    node->connect_timer.log = log;
    node->connect_timer.data = node;
    node->connect_timer.cancelable = 1;

    node->watchdog.handler = ngx_http_minichat_redis_node_watchdog;
    node->watchdog.log = log;
    node->watchdog.data = node;
    node->watchdog.cancelable = 0;

    ngx_queue_init(&node->outstanding);
}


void
ngx_http_minichat_redis_node_close(ngx_http_minichat_redis_node_t *node)
{
    node->closed = 1;

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


ngx_int_t
ngx_http_minichat_redis_node_command(ngx_http_minichat_redis_node_t *node, redisCallbackFn *fn,
    ngx_http_minichat_redis_pending_t *p, int argc, const char **argv, const size_t *argvlen)
{
    char  buf[NGX_HTTP_MINICHAT_REDIS_NODE_INLINE];
    long  n;
    int   rc;

    if (!ngx_http_minichat_redis_node_usable(node)) {
        return NGX_ERROR;
    }

    n = mc_resp_command(buf, sizeof(buf), argc, argv, argvlen);
    if (n > 0) {
        rc = redisAsyncFormattedCommand(node->ac, fn, p, buf, (size_t) n);
    } else {
        rc = redisAsyncCommandArgv(node->ac, fn, p, argc, argv, argvlen);
    }

    if (rc != REDIS_OK) {
        return NGX_ERROR;
    }

    if (p == NULL) {
        return NGX_OK;
    }

    p->sent = ngx_current_msec;
    ngx_queue_insert_tail(&node->outstanding, &p->queue);

    if (!node->watchdog.timer_set) {
        ngx_add_timer(&node->watchdog, 1000);
    }

    return NGX_OK;
}


static void
ngx_http_minichat_redis_node_schedule(ngx_http_minichat_redis_node_t *node)
{
    
    if (!node->closed && !ngx_exiting && !node->reconnect.timer_set) {
        ngx_add_timer(&node->reconnect, ngx_http_minichat_conf()->reconnect);
    }
}


void
ngx_http_minichat_redis_node_connect(ngx_http_minichat_redis_node_t *node)
{
        ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    redisAsyncContext              *ac;
    ngx_connection_t               *c;
    const char                     *av[3];
    size_t                          al[3];
    int                             ac_n;

    ac = redisAsyncConnect(node->host, node->port);
    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis context allocation failed");
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis connect to %s:%d failed: %s",
                      node->host, node->port, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    c = ngx_get_connection(ac->c.fd, node->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    c->data = node;
    c->read->handler = ngx_http_minichat_redis_node_read_handler;
    c->write->handler = ngx_http_minichat_redis_node_write_handler;
    c->read->log = node->log;
    c->write->log = node->log;

    if (ngx_add_conn(c) != NGX_OK) {
        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
        redisAsyncFree(ac);
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    node->ac = ac;
    node->conn = c;
    node->ready = 0;
    node->tcp_up = 0;
    node->replid_known = 0;
    node->info_pending = 0;

    ac->ev.data = node;
    ac->ev.addRead = ngx_http_minichat_redis_node_add_read;
    ac->ev.delRead = ngx_http_minichat_redis_node_del_read;
    ac->ev.addWrite = ngx_http_minichat_redis_node_add_write;
    ac->ev.delWrite = ngx_http_minichat_redis_node_del_write;
    ac->ev.cleanup = ngx_http_minichat_redis_node_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_minichat_redis_node_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_minichat_redis_node_on_disconnect);

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

    if (redisAsyncCommandArgv(ac, ngx_http_minichat_redis_node_hello, node, ac_n, av, al) != REDIS_OK) {
        redisAsyncFree(ac);   /* the cleanup hook schedules the reconnect */
        return;
    }

    /* right behind the handshake: the replication id */
    ngx_http_minichat_redis_node_learn(node, 1);
    if (node->ac == NULL) {
        return;
    }

    ngx_add_timer(&node->connect_timer, mcf->redis_connect_timeout);
}


static void
ngx_http_minichat_redis_node_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_minichat_redis_node_t  *node = ev->data;

    if (node->ac == NULL && !ngx_exiting && !node->closed) {
        ngx_http_minichat_redis_node_connect(node);
    }
}


static void
ngx_http_minichat_redis_node_connect_timeout(ngx_event_t *ev)
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

    ngx_log_error(NGX_LOG_ERR, node->log, 0,
                  "minichat: redis %s:%d did not %s in time; retrying", node->host, node->port,
                  node->tcp_up ? "answer its first command" : "accept the connection");

    /* the handshake's callback runs with NULL; the cleanup hook reconnects */
    redisAsyncFree(node->ac);
}


/* The AUTH or PING that opens every connection. */
static void
ngx_http_minichat_redis_node_hello(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_minichat_redis_node_t  *node = privdata;
    redisReply                      *reply = r;

    if (reply == NULL || node->ac != ac) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d refused the connection: %s",
                      node->host, node->port, reply->str);
        /* freed after this callback returns; then the reconnect interval */
        redisAsyncFree(ac);
        return;
    }

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    node->ready = 1;
    ngx_log_error(NGX_LOG_INFO, node->log, 0, "minichat: redis %s:%d connected", node->host, node->port);

    if (node->on_ready) {
        node->on_ready(node);
    }
}


void
ngx_http_minichat_redis_node_learn(ngx_http_minichat_redis_node_t *node, ngx_uint_t forget)
{
    if (forget) {
        node->replid_known = 0;
    }

    if (!ngx_http_minichat_redis_node_usable(node)) {
        /* the next connection asks behind its handshake */
        return;
    }

    if (redisAsyncCommand(node->ac, ngx_http_minichat_redis_node_info, node, "INFO replication") != REDIS_OK) {
        node->replid_known = 0;
        return;
    }

    node->info_pending++;
}


static void
ngx_http_minichat_redis_node_info(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_minichat_redis_node_t  *node = privdata;
    redisReply                      *reply = r;
    mc_redis_role_t                  role;
    char                             id[MC_REDIS_REPLID_LEN + 1];

    if (reply == NULL || node->ac != ac) {
        return;
    }

    /* answers come in order: a later question's answer is the one to take */
    if (node->info_pending == 0 || --node->info_pending > 0) {
        return;
    }

    role = reply->type == REDIS_REPLY_STRING ? mc_redis_info_replid(reply->str, reply->len, id)
                                             : MC_REDIS_ROLE_BAD;

    if (role != MC_REDIS_ROLE_MASTER) {
        if (role == MC_REDIS_ROLE_BAD) {
            ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d gave no usable INFO replication%s%s",
                          node->host, node->port, reply->type == REDIS_REPLY_ERROR ? ": " : "",
                          reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        }
        node->replid_known = 0;
        return;
    }

    /* node->replid keeps the last id even while it is not trusted */
    if (ngx_strcmp(node->replid, id) != 0) {
        ngx_log_error(NGX_LOG_INFO, node->log, 0, "minichat: redis %s:%d is a master with replication id %s",
                      node->host, node->port, id);
        ngx_memcpy(node->replid, id, sizeof(id));
    }

    node->replid_known = 1;

    if (node->on_replid) {
        node->on_replid(node);
    }
}


static void
ngx_http_minichat_redis_node_read_handler(ngx_event_t *ev)
{
    ngx_connection_t                *c = ev->data;
    ngx_http_minichat_redis_node_t  *node = c->data;
    int                              n;

    /* the REST answers of these replies: one write per HTTP/2 connection */
    ngx_http_minichat_h2batch_begin();

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

    ngx_http_minichat_h2batch_end();
}


static void
ngx_http_minichat_redis_node_write_handler(ngx_event_t *ev)
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
ngx_http_minichat_redis_node_add_read(void *privdata)
{
    /* the fd is registered for reading once, edge-triggered */
}


static void
ngx_http_minichat_redis_node_del_read(void *privdata)
{
}


static void
ngx_http_minichat_redis_node_add_write(void *privdata)
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
ngx_http_minichat_redis_node_del_write(void *privdata)
{
}


/* Called by hiredis just before it closes the fd and frees the context. */
static void
ngx_http_minichat_redis_node_cleanup(void *privdata)
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
    node->replid_known = 0;
    node->info_pending = 0;

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    ngx_http_minichat_redis_node_schedule(node);

    if (node->on_lost && !node->closed) {
        node->on_lost(node);
    }
}


static void
ngx_http_minichat_redis_node_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_minichat_redis_node_t  *node = ac->ev.data;

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis connect failed: %s",
                      ac->errstr);
        /* hiredis frees the context after this callback */
    }
}


static void
ngx_http_minichat_redis_node_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_minichat_redis_node_t  *node = ac->ev.data;

    if (status != REDIS_OK && !node->closed) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis connection lost: %s",
                      ac->errstr);
    }
}


ngx_int_t
ngx_http_minichat_redis_node_usable(ngx_http_minichat_redis_node_t *node)
{
    return node->ac != NULL && !(node->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}


static void
ngx_http_minichat_redis_node_watchdog(ngx_event_t *ev)
{
    ngx_http_minichat_redis_node_t     *node = ev->data;
    ngx_http_minichat_redis_pending_t  *p;
    ngx_msec_t                          timeout = ngx_http_minichat_conf()->redis_timeout;

    if (ngx_queue_empty(&node->outstanding)) {
        return;
    }

    p = ngx_queue_data(ngx_queue_head(&node->outstanding), ngx_http_minichat_redis_pending_t, queue);

    if (node->ac && ngx_current_msec - p->sent >= timeout) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0,
                      "minichat: redis %s:%d has not answered for %M ms; dropping the connection",
                      node->host, node->port, timeout);
        /* every waiting callback runs with NULL; the cleanup hook reconnects */
        redisAsyncFree(node->ac);
        return;
    }

    ngx_add_timer(&node->watchdog, 1000);
}
