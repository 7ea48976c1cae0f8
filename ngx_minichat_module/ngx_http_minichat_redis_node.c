/*
 * One Redis connection on the nginx event loop: the transport, the connect
 * with its handshake and timer, the reconnect and the watchdog.
 * ngx_http_minichat_redis.c keeps one of these per Redis node (the single
 * Redis, or each cluster master) and decides what goes where; this file
 * knows nothing of commands beyond their send order.
 *
 * The transport is nginx's own: a non-blocking socket in an
 * ngx_connection_t registered edge-triggered for both directions
 * (ngx_add_conn), read and written through c->recv and c->send, which are
 * nginx's SSL functions once minichat_redis_tls has made the connection TLS
 * (ngx_http_minichat_redis_tls.c).  hiredis is used only for what needs no
 * socket: its reply parser (redisReader), which builds the redisReply
 * objects the module reads.  Commands are formatted with lib/src/resp.c
 * straight into the node's output buffer; a command never goes out from
 * inside the call that queues it (the write event is posted), so a command
 * issued inside a reply callback never re-enters the read loop.  Reads go on
 * until c->recv says NGX_AGAIN: with edge-triggered events, and with TLS
 * records that OpenSSL has read ahead, stopping earlier would lose data.
 *
 * Every command has a record in `outstanding`, in send order (Redis answers
 * in that order): the caller's (a pending_t inside its command) or one the
 * node allocates.  A reply is matched to the head record, which is taken out
 * of the queue before its handler runs.  A handler may drop the connection
 * (a refused AUTH); the read loop checks after every handler that the
 * connection it reads is still the node's.  When the connection goes, for
 * whatever reason, one function (drop) closes it and calls every waiting
 * handler with a NULL reply, then a cancelable timer reconnects after
 * minichat_reconnect_interval.
 *
 * Connecting.  A connect is not done when TCP says so: the first command on
 * every connection is AUTH (minichat_redis_user, minichat_redis_password_file)
 * or PING, and a node is "ready" only once that answered.  One timer covers
 * the steps: after minichat_redis_connect_timeout the TCP connection must be
 * up (a peer that drops SYNs, a listener whose backlog is full), and the TLS
 * handshake and the answer must come within minichat_redis_timeout of the
 * start, as for any command (a listener that never accepts may still
 * complete TCP in its kernel and then never read; a paused Redis answers the
 * moment it wakes, and a shorter wait would only make it reconnect then).
 * On expiry the connection is dropped and retried after the reconnect
 * interval.  Until a node is ready its user sends nothing to it (the caller
 * answers `unavailable` at once), except what the cluster code queues behind
 * the handshake for a node it has just learnt of; a refused AUTH, a failed
 * TLS handshake or a refused certificate is logged and retried the same way.
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
 * The scripts.  Behind the handshake, and whenever the node may have
 * changed role, every script of lua/ is loaded (SCRIPT LOAD), before any
 * command of the user can reach the node: the user's EVALSHA then finds its
 * script.  The EVAL fallback on NOSCRIPT (ngx_http_minichat_redis.c) sends
 * a command again after the commands behind it, which may already have run:
 * a client's later send, issued between the NOSCRIPT of its earlier one and
 * that one's EVAL, took the lower seq (two bench runs right after a stack
 * restart showed it, when every first EVALSHA met an empty script cache).
 * The fallback stays for a cache flushed under a live connection.
 *
 * Redis has no command timeouts.  A watchdog drops the connection when the
 * oldest outstanding command of a ready node has waited longer than
 * minichat_redis_timeout: every waiting caller then gets its NULL reply (an
 * error for the client) instead of waiting forever on a Redis that stopped
 * answering.  The watchdog is not cancelable: a graceful quit waits (up to
 * minichat_redis_timeout) for the replies still outstanding.
 */
#include "ngx_http_minichat_module.h"
#include "ngx_http_minichat_redis.h"
#include "minichat/resp.h"
#include "lua_scripts.h"


/* bytes read per c->recv call (a loop reads until NGX_AGAIN) */
#define NGX_HTTP_MINICHAT_REDIS_NODE_READ   16384
/* an output buffer this large is given back once written out */
#define NGX_HTTP_MINICHAT_REDIS_NODE_KEEP   65536


static void ngx_http_minichat_redis_node_schedule(ngx_http_minichat_redis_node_t *node);
static void ngx_http_minichat_redis_node_drop(ngx_http_minichat_redis_node_t *node);
static void ngx_http_minichat_redis_node_close_connection(ngx_connection_t *c);
static void ngx_http_minichat_redis_node_reconnect_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_node_connect_timeout(ngx_event_t *ev);
static void ngx_http_minichat_redis_node_connected(ngx_http_minichat_redis_node_t *node);
static void ngx_http_minichat_redis_node_tls_done(ngx_connection_t *c);
static void ngx_http_minichat_redis_node_load_scripts(ngx_http_minichat_redis_node_t *node);
static void ngx_http_minichat_redis_node_loaded(ngx_http_minichat_redis_node_t *node, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p);
static void ngx_http_minichat_redis_node_hello(ngx_http_minichat_redis_node_t *node, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p);
static void ngx_http_minichat_redis_node_info(ngx_http_minichat_redis_node_t *node, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p);
static void ngx_http_minichat_redis_node_read_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_node_answer(ngx_http_minichat_redis_node_t *node, void *r);
static void ngx_http_minichat_redis_node_receive(ngx_http_minichat_redis_node_t *node, ngx_connection_t *c);
static ngx_int_t ngx_http_minichat_redis_node_deliver(ngx_http_minichat_redis_node_t *node,
    ngx_connection_t *c);
static void ngx_http_minichat_redis_node_write_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_node_watchdog(ngx_event_t *ev);


void
ngx_http_minichat_redis_node_init(ngx_http_minichat_redis_node_t *node, const char *host, int port,
    ngx_log_t *log)
{
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif
    size_t                len;
    in_addr_t             inaddr;

    ngx_memzero(node, sizeof(ngx_http_minichat_redis_node_t));

    ngx_cpystrn((u_char *) node->host, (u_char *) host, MC_REDIS_HOST_MAX);
    node->port = port;
    node->log = log;

    /* numeric only: resolving would block the worker (the configured
     * addresses were resolved at start; a cluster announces IPs) */
    len = ngx_strlen(node->host);
    inaddr = ngx_inet_addr((u_char *) node->host, len);

    if (inaddr != INADDR_NONE) {
        sin = &node->sockaddr.sockaddr_in;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((in_port_t) port);
        sin->sin_addr.s_addr = inaddr;
        node->socklen = sizeof(struct sockaddr_in);
    }

#if (NGX_HAVE_INET6)
    sin6 = &node->sockaddr.sockaddr_in6;
    if (node->socklen == 0 && ngx_inet6_addr((u_char *) node->host, len, sin6->sin6_addr.s6_addr) == NGX_OK) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((in_port_t) port);
        node->socklen = sizeof(struct sockaddr_in6);
    }
#endif

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
    if (node->watchdog.timer_set) {
        ngx_del_timer(&node->watchdog);
    }

    /* waiting callbacks run with NULL */
    ngx_http_minichat_redis_node_drop(node);
}


ngx_int_t
ngx_http_minichat_redis_node_command(ngx_http_minichat_redis_node_t *node,
    ngx_http_minichat_redis_node_pt fn, ngx_http_minichat_redis_pending_t *p, int argc, const char **argv,
    const size_t *argvlen)
{
    size_t  size;
    long    n;

    if (!ngx_http_minichat_redis_node_usable(node) || argc < 1) {
        return NGX_ERROR;
    }

    size = mc_resp_command_size(argc, argvlen);

    if (mc_buf_reserve(&node->out, size) != 0) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d: no memory for a command of %uz bytes",
                      node->host, node->port, size);
        return NGX_ERROR;
    }

    if (p == NULL) {
        p = ngx_alloc(sizeof(ngx_http_minichat_redis_pending_t), node->log);
        if (p == NULL) {
            return NGX_ERROR;
        }
        p->own = 1;

    } else {
        p->own = 0;
    }

    n = mc_resp_command(node->out.data + node->out.len, node->out.cap - node->out.len, argc, argv, argvlen);
    if (n < 0) {
        /* cannot happen: the room was made for exactly this */
        ngx_log_error(NGX_LOG_ALERT, node->log, 0, "minichat: redis command does not fit its own size");
        if (p->own) {
            ngx_free(p);
        }
        return NGX_ERROR;
    }

    node->out.len += (size_t) n;

    p->handler = fn;
    p->sent = ngx_current_msec;
    ngx_queue_insert_tail(&node->outstanding, &p->queue);

    if (node->ready && !node->watchdog.timer_set) {
        ngx_add_timer(&node->watchdog, 1000);
    }

    if (node->established && !node->conn->write->posted) {
        ngx_post_event(node->conn->write, &ngx_posted_events);
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
    ngx_connection_t               *c;
    ngx_socket_t                    s;
    ngx_err_t                       err;
    const char                     *av[3];
    size_t                          al[3];
    int                             n, on;

    if (node->conn) {
        return;
    }

    if (node->socklen == 0) {
        /* not retried: a name stays a name */
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis node \"%s:%d\" is not a numeric address",
                      node->host, node->port);
        return;
    }

    s = ngx_socket(node->sockaddr.sockaddr.sa_family, SOCK_STREAM, 0);
    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ERR, node->log, ngx_socket_errno, "minichat: redis socket() failed");
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    c = ngx_get_connection(s, node->log);
    if (c == NULL) {
        ngx_close_socket(s);
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    on = 1;
    if (ngx_nonblocking(s) == -1
        || setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const void *) &on, sizeof(int)) == -1)
    {
        ngx_log_error(NGX_LOG_ERR, node->log, ngx_socket_errno, "minichat: redis socket setup failed");
        ngx_close_connection(c);
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    c->type = SOCK_STREAM;
    c->recv = ngx_recv;
    c->send = ngx_send;
    c->recv_chain = ngx_recv_chain;
    c->send_chain = ngx_send_chain;
    c->log_error = NGX_ERROR_ERR;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->data = node;
    c->read->handler = ngx_http_minichat_redis_node_read_handler;
    c->write->handler = ngx_http_minichat_redis_node_write_handler;
    c->read->log = node->log;
    c->write->log = node->log;

    /* TLS allocates its connection state from c->pool */
    c->pool = ngx_create_pool(1024, node->log);
    if (c->pool == NULL || ngx_add_conn(c) != NGX_OK) {
        ngx_http_minichat_redis_node_close_connection(c);
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    if (connect(s, &node->sockaddr.sockaddr, node->socklen) == -1) {
        err = ngx_socket_errno;
        if (err != NGX_EINPROGRESS) {
            ngx_log_error(NGX_LOG_ERR, node->log, err, "minichat: redis connect to %s:%d failed",
                          node->host, node->port);
            ngx_http_minichat_redis_node_close_connection(c);
            ngx_http_minichat_redis_node_schedule(node);
            return;
        }
    }

    /* done or not, the completed connect arrives as a write event (EPOLLOUT,
     * edge-triggered); the handshake waits in the buffer until then */

    node->reader = redisReaderCreate();
    if (node->reader == NULL) {
        ngx_http_minichat_redis_node_close_connection(c);
        ngx_http_minichat_redis_node_schedule(node);
        return;
    }

    node->conn = c;
    node->ready = 0;
    node->tcp_up = 0;
    node->established = 0;
    node->replid_known = 0;
    node->info_pending = 0;
    node->connect_start = ngx_current_msec;

    if (mcf->redis_password.len) {
        n = 0;
        av[n] = "AUTH";
        al[n++] = 4;
        if (mcf->redis_user.len) {
            av[n] = (const char *) mcf->redis_user.data;
            al[n++] = mcf->redis_user.len;
        }
        av[n] = (const char *) mcf->redis_password.data;
        al[n++] = mcf->redis_password.len;

    } else {
        av[0] = "PING";
        al[0] = 4;
        n = 1;
    }

    if (ngx_http_minichat_redis_node_command(node, ngx_http_minichat_redis_node_hello, NULL, n, av, al)
        != NGX_OK)
    {
        ngx_http_minichat_redis_node_drop(node);
        return;
    }

    /* right behind the handshake: the replication id */
    ngx_http_minichat_redis_node_learn(node, 1);

    ngx_add_timer(&node->connect_timer, mcf->redis_connect_timeout);
}


/* Closes the connection, if any: every waiting handler gets NULL, then a
 * reconnect is scheduled and the user told. */
static void
ngx_http_minichat_redis_node_drop(ngx_http_minichat_redis_node_t *node)
{
    ngx_connection_t  *c = node->conn;

    if (c == NULL) {
        return;
    }

    node->conn = NULL;
    node->ready = 0;
    node->tcp_up = 0;
    node->established = 0;
    node->replid_known = 0;
    node->info_pending = 0;

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    redisReaderFree(node->reader);
    node->reader = NULL;
    mc_buf_free(&node->out);

    if (c->ssl) {
        /* a close_notify on a clean close only; never wait for the peer's */
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = !node->closed;
        (void) ngx_ssl_shutdown(c);
    }

    ngx_http_minichat_redis_node_close_connection(c);

    /* a handler may issue commands: the node is not usable now, so they
     * fail (or go to another node) and add nothing to this queue */
    while (!ngx_queue_empty(&node->outstanding)) {
        ngx_http_minichat_redis_node_answer(node, NULL);
    }

    ngx_http_minichat_redis_node_schedule(node);

    if (node->on_lost && !node->closed) {
        node->on_lost(node);
    }
}


/* Timers, posted events, epoll, the fd, then the connection's pool. */
static void
ngx_http_minichat_redis_node_close_connection(ngx_connection_t *c)
{
    ngx_pool_t  *pool = c->pool;

    ngx_close_connection(c);

    if (pool) {
        ngx_destroy_pool(pool);
    }
}


static void
ngx_http_minichat_redis_node_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_minichat_redis_node_t  *node = ev->data;

    if (node->conn == NULL && !ngx_exiting && !node->closed) {
        ngx_http_minichat_redis_node_connect(node);
    }
}


static void
ngx_http_minichat_redis_node_connect_timeout(ngx_event_t *ev)
{
    ngx_http_minichat_redis_node_t  *node = ev->data;

    if (node->conn == NULL || node->ready) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, node->log, 0,
                  "minichat: redis %s:%d did not %s in time; retrying", node->host, node->port,
                  !node->tcp_up ? "accept the connection"
                  : !node->established ? "complete the TLS handshake" : "answer its first command");

    ngx_http_minichat_redis_node_drop(node);
}


/* The connect has completed, or failed: a write (or error) event on a
 * socket still connecting. */
static void
ngx_http_minichat_redis_node_connected(ngx_http_minichat_redis_node_t *node)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_connection_t               *c = node->conn;
    ngx_msec_t                      limit, spent;
    ngx_sockaddr_t                  sa;
    ngx_int_t                       rc;
    socklen_t                       len;
    int                             err;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, node->log, err, "minichat: redis connect to %s:%d failed",
                      node->host, node->port);
        ngx_http_minichat_redis_node_drop(node);
        return;
    }

    len = sizeof(ngx_sockaddr_t);
    if (getpeername(c->fd, &sa.sockaddr, &len) == -1) {
        /* still connecting: an event from before the connect started */
        return;
    }

    node->tcp_up = 1;

    /* the rest of minichat_redis_timeout, counted from the start, for the
     * TLS handshake and the first answer */
    limit = ngx_max(mcf->redis_timeout, mcf->redis_connect_timeout);
    spent = ngx_current_msec - node->connect_start;
    if (spent < limit) {
        ngx_add_timer(&node->connect_timer, limit - spent);
    }

    if (mcf->redis_ssl == NULL) {
        node->established = 1;
        ngx_http_minichat_redis_node_write_handler(c->write);
        return;
    }

    if (ngx_http_minichat_redis_tls_connection(c) != NGX_OK) {
        ngx_http_minichat_redis_node_drop(node);
        return;
    }

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        /* nginx's handshake handlers have the events until it is done */
        c->ssl->handler = ngx_http_minichat_redis_node_tls_done;
        return;
    }

    ngx_http_minichat_redis_node_tls_done(c);
}


static void
ngx_http_minichat_redis_node_tls_done(ngx_connection_t *c)
{
    ngx_http_minichat_redis_node_t  *node = c->data;

    if (!c->ssl->handshaked) {
        /* nginx logged the reason (at INFO for what a peer may cause) */
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d: TLS handshake failed; retrying",
                      node->host, node->port);
        ngx_http_minichat_redis_node_drop(node);
        return;
    }

    if (ngx_http_minichat_redis_tls_check(c, node->host, node->port) != NGX_OK) {
        ngx_http_minichat_redis_node_drop(node);
        return;
    }

    c->read->handler = ngx_http_minichat_redis_node_read_handler;
    c->write->handler = ngx_http_minichat_redis_node_write_handler;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, node->log, 0, "minichat: redis %s:%d TLS handshake done",
                   node->host, node->port);

    node->established = 1;
    ngx_http_minichat_redis_node_write_handler(c->write);
}


/* The AUTH or PING that opens every connection. */
static void
ngx_http_minichat_redis_node_hello(ngx_http_minichat_redis_node_t *node, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p)
{
    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d refused the connection: %s",
                      node->host, node->port, reply->str);
        /* the reconnect interval, then again */
        ngx_http_minichat_redis_node_drop(node);
        return;
    }

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    node->ready = 1;

    /* what was queued behind the handshake is the watchdog's from now */
    if (!ngx_queue_empty(&node->outstanding) && !node->watchdog.timer_set) {
        ngx_add_timer(&node->watchdog, 1000);
    }

    ngx_log_error(NGX_LOG_INFO, node->log, 0, "minichat: redis %s:%d connected%s", node->host, node->port,
                  node->conn->ssl ? " (TLS)" : "");

    if (node->on_ready) {
        node->on_ready(node);
    }
}


void
ngx_http_minichat_redis_node_learn(ngx_http_minichat_redis_node_t *node, ngx_uint_t forget)
{
    static const char   *av[2] = { "INFO", "replication" };
    static const size_t  al[2] = { 4, 11 };

    if (forget) {
        node->replid_known = 0;
    }

    if (!ngx_http_minichat_redis_node_usable(node)) {
        /* the next connection asks behind its handshake */
        return;
    }

    if (forget) {
        /* a new connection, or a promoted replica with a cache of its own */
        ngx_http_minichat_redis_node_load_scripts(node);
    }

    if (ngx_http_minichat_redis_node_command(node, ngx_http_minichat_redis_node_info, NULL, 2, av, al)
        != NGX_OK)
    {
        node->replid_known = 0;
        return;
    }

    node->info_pending++;
}


/* SCRIPT LOAD of every script, queued behind what is queued already (the
 * handshake on a new connection), so before the user's next command. */
static void
ngx_http_minichat_redis_node_load_scripts(ngx_http_minichat_redis_node_t *node)
{
    static const char  *scripts[] = MINICHAT_LUA_ALL_SRC;
    const char         *av[3];
    size_t              al[3];
    ngx_uint_t          i;

    av[0] = "SCRIPT";
    al[0] = 6;
    av[1] = "LOAD";
    al[1] = 4;

    for (i = 0; scripts[i]; i++) {
        av[2] = scripts[i];
        al[2] = ngx_strlen(scripts[i]);

        if (ngx_http_minichat_redis_node_command(node, ngx_http_minichat_redis_node_loaded, NULL, 3, av, al)
            != NGX_OK)
        {
            /* the EVAL fallback covers it */
            return;
        }
    }
}


static void
ngx_http_minichat_redis_node_loaded(ngx_http_minichat_redis_node_t *node, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p)
{
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d: SCRIPT LOAD failed: %s", node->host,
                      node->port, reply->str);
    }
}


static void
ngx_http_minichat_redis_node_info(ngx_http_minichat_redis_node_t *node, redisReply *reply,
    ngx_http_minichat_redis_pending_t *p)
{
    mc_redis_role_t  role;
    char             id[MC_REDIS_REPLID_LEN + 1];

    if (reply == NULL) {
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

    if (!node->tcp_up) {
        /* a failed connect shows as an error on both events */
        ngx_http_minichat_redis_node_connected(node);
        return;
    }

    if (!node->established) {
        return;
    }

    /* the REST answers of these replies: one write per HTTP/2 connection */
    ngx_http_minichat_h2batch_begin();
    ngx_http_minichat_redis_node_receive(node, c);
    ngx_http_minichat_h2batch_end();
}


/* Reads what the socket holds and hands out the replies, until the socket
 * is drained or the connection is gone. */
static void
ngx_http_minichat_redis_node_receive(ngx_http_minichat_redis_node_t *node, ngx_connection_t *c)
{
    ssize_t        n;
    static u_char  buf[NGX_HTTP_MINICHAT_REDIS_NODE_READ];

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            return;
        }

        if (n == 0 || n == NGX_ERROR) {
            if (!node->closed) {
                ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d: connection lost: %s",
                              node->host, node->port,
                              n == 0 ? "the server closed the connection" : "read error");
            }
            ngx_http_minichat_redis_node_drop(node);
            return;
        }

        if (redisReaderFeed(node->reader, (const char *) buf, (size_t) n) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d: reply parser failed: %s",
                          node->host, node->port, node->reader->errstr);
            ngx_http_minichat_redis_node_drop(node);
            return;
        }

        if (ngx_http_minichat_redis_node_deliver(node, c) != NGX_OK) {
            return;
        }
    }
}


/* Takes the oldest outstanding command off the queue and gives its handler
 * reply r (NULL: the connection is lost). */
static void
ngx_http_minichat_redis_node_answer(ngx_http_minichat_redis_node_t *node, void *r)
{
    ngx_http_minichat_redis_pending_t  *p;
    ngx_http_minichat_redis_node_pt     handler;
    ngx_queue_t                        *q;
    ngx_uint_t                          own;

    q = ngx_queue_head(&node->outstanding);
    p = ngx_queue_data(q, ngx_http_minichat_redis_pending_t, queue);
    ngx_queue_remove(q);

    /* the handler may free p (the caller's) */
    own = p->own;
    handler = p->handler;

    if (handler) {
        handler(node, r, own ? NULL : p);
    }
    if (own) {
        ngx_free(p);
    }
}


/* Hands every complete reply to the handler at the head of the queue.
 * Returns NGX_OK, or NGX_ERROR when the connection is gone (dropped here
 * or inside a handler). */
static ngx_int_t
ngx_http_minichat_redis_node_deliver(ngx_http_minichat_redis_node_t *node, ngx_connection_t *c)
{
    void  *r;

    for ( ;; ) {
        if (redisReaderGetReply(node->reader, &r) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d sent a bad reply: %s",
                          node->host, node->port, node->reader->errstr);
            ngx_http_minichat_redis_node_drop(node);
            return NGX_ERROR;
        }

        if (r == NULL) {
            return NGX_OK;
        }

        if (ngx_queue_empty(&node->outstanding)) {
            ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d sent a reply nobody asked for",
                          node->host, node->port);
            freeReplyObject(r);
            ngx_http_minichat_redis_node_drop(node);
            return NGX_ERROR;
        }

        ngx_http_minichat_redis_node_answer(node, r);
        freeReplyObject(r);

        if (node->conn != c) {
            return NGX_ERROR;
        }
    }
}


static void
ngx_http_minichat_redis_node_write_handler(ngx_event_t *ev)
{
    ngx_connection_t                *c = ev->data;
    ngx_http_minichat_redis_node_t  *node = c->data;
    ssize_t                          n;

    if (!node->tcp_up) {
        ngx_http_minichat_redis_node_connected(node);
        return;
    }

    if (!node->established) {
        return;
    }

    while (node->out.len) {
        n = c->send(c, (u_char *) node->out.data, node->out.len);

        if (n == NGX_AGAIN) {
            /* the next EPOLLOUT edge calls again */
            return;
        }

        if (n == NGX_ERROR || n == 0) {
            if (!node->closed) {
                ngx_log_error(NGX_LOG_ERR, node->log, 0, "minichat: redis %s:%d: connection lost: write error",
                              node->host, node->port);
            }
            ngx_http_minichat_redis_node_drop(node);
            return;
        }

        mc_buf_consume(&node->out, (size_t) n);
    }

    if (node->out.cap > NGX_HTTP_MINICHAT_REDIS_NODE_KEEP) {
        mc_buf_free(&node->out);
    }
}


ngx_int_t
ngx_http_minichat_redis_node_usable(ngx_http_minichat_redis_node_t *node)
{
    return node->conn != NULL;
}


static void
ngx_http_minichat_redis_node_watchdog(ngx_event_t *ev)
{
    ngx_http_minichat_redis_node_t     *node = ev->data;
    ngx_http_minichat_redis_pending_t  *p;
    ngx_msec_t                          timeout = ngx_http_minichat_conf()->redis_timeout;

    /* until the node is ready its connect timer watches it (the handshake
     * re-arms the watchdog) */
    if (ngx_queue_empty(&node->outstanding) || node->conn == NULL || !node->ready) {
        return;
    }

    p = ngx_queue_data(ngx_queue_head(&node->outstanding), ngx_http_minichat_redis_pending_t, queue);

    if (ngx_current_msec - p->sent >= timeout) {
        ngx_log_error(NGX_LOG_ERR, node->log, 0,
                      "minichat: redis %s:%d has not answered for %M ms; dropping the connection",
                      node->host, node->port, timeout);
        /* every waiting callback runs with NULL; a reconnect follows */
        ngx_http_minichat_redis_node_drop(node);
        return;
    }

    ngx_add_timer(&node->watchdog, 1000);
}
