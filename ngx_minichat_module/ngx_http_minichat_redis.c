/*
 * Redis on the nginx event loop, through hiredis's async API.
 *
 * The worker keeps one connection.  Its fd is wrapped in an ngx_connection_t
 * registered edge-triggered for both directions (ngx_add_conn); hiredis's
 * addWrite hook posts the write event rather than writing at once, so a
 * command issued inside a reply callback never re-enters hiredis.  hiredis
 * reads at most 16 KB per call, so a read event drains the socket, asking
 * FIONREAD whether more is waiting.
 *
 * hiredis may free its context inside any call (a read error, EOF); its
 * cleanup hook then releases our ngx_connection_t, and the code checks
 * `ngx_http_minichat_redis.ac` after every call into hiredis.  Pending
 * callbacks are called with a NULL reply when the context goes; a cancelable
 * timer reconnects after minichat_reconnect_interval.
 *
 * hiredis 0.14 has no command timeouts.  Outstanding commands are kept in
 * send order (Redis answers in that order), and a watchdog drops the
 * connection when the oldest has waited longer than minichat_redis_timeout:
 * every waiting caller then gets its NULL reply (an error for the client)
 * instead of waiting forever on a Redis that stopped answering.
 */
#include <sys/ioctl.h>

#include "ngx_http_minichat_module.h"


typedef struct {
    redisAsyncContext   *ac;
    ngx_connection_t    *conn;
    ngx_event_t          reconnect;
    ngx_event_t          watchdog;
    ngx_queue_t          outstanding;   /* commands in send order */
    ngx_log_t           *log;
    unsigned             connected:1;
    unsigned             exiting:1;
    unsigned             writing:1;
} ngx_http_minichat_redis_t;


typedef struct {
    ngx_queue_t                 queue;      /* in `outstanding` while sent */
    ngx_msec_t                  sent;
    ngx_http_minichat_redis_pt  handler;
    void                       *data;
    /* for the EVAL fallback on NOSCRIPT */
    int                         argc;
    char                      **argv;
    size_t                     *argvlen;
} ngx_http_minichat_redis_cmd_t;


static void ngx_http_minichat_redis_connect(void);
static void ngx_http_minichat_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_read_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_write_handler(ngx_event_t *ev);
static void ngx_http_minichat_redis_add_read(void *privdata);
static void ngx_http_minichat_redis_del_read(void *privdata);
static void ngx_http_minichat_redis_add_write(void *privdata);
static void ngx_http_minichat_redis_del_write(void *privdata);
static void ngx_http_minichat_redis_cleanup(void *privdata);
static void ngx_http_minichat_redis_on_connect(const redisAsyncContext *ac, int status);
static void ngx_http_minichat_redis_on_disconnect(const redisAsyncContext *ac, int status);
static void ngx_http_minichat_redis_reply(redisAsyncContext *ac, void *r, void *privdata);
static void ngx_http_minichat_redis_free_cmd(ngx_http_minichat_redis_cmd_t *cmd);
static void ngx_http_minichat_redis_sent(ngx_http_minichat_redis_cmd_t *cmd);
static void ngx_http_minichat_redis_watchdog(ngx_event_t *ev);


static ngx_http_minichat_redis_t  ngx_http_minichat_redis;


ngx_int_t
ngx_http_minichat_redis_init(ngx_cycle_t *cycle)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    ngx_memzero(rd, sizeof(ngx_http_minichat_redis_t));

    rd->log = cycle->log;
    rd->reconnect.handler = ngx_http_minichat_redis_reconnect_handler;
    rd->reconnect.log = cycle->log;
    rd->reconnect.data = rd;
    rd->reconnect.cancelable = 1;

    rd->watchdog.handler = ngx_http_minichat_redis_watchdog;
    rd->watchdog.log = cycle->log;
    rd->watchdog.data = rd;
    /* not cancelable: a graceful quit waits (up to minichat_redis_timeout)
     * for the replies still outstanding, so requests that were waiting on
     * Redis finish instead of failing with the reload */
    rd->watchdog.cancelable = 0;
    ngx_queue_init(&rd->outstanding);

    ngx_http_minichat_redis_connect();

    return NGX_OK;
}


void
ngx_http_minichat_redis_exit(void)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    rd->exiting = 1;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    if (rd->watchdog.timer_set) {
        ngx_del_timer(&rd->watchdog);
    }

    if (rd->ac) {
        /* runs pending callbacks with NULL, then our cleanup hook */
        redisAsyncFree(rd->ac);
        rd->ac = NULL;
    }
}


ngx_int_t
ngx_http_minichat_redis_ready(void)
{
    return ngx_http_minichat_redis.ac && ngx_http_minichat_redis.connected;
}


static void
ngx_http_minichat_redis_schedule(void)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    if (!rd->exiting && !ngx_exiting && !rd->reconnect.timer_set) {
        ngx_add_timer(&rd->reconnect, ngx_http_minichat_conf()->reconnect);
    }
}


static void
ngx_http_minichat_redis_connect(void)
{
    ngx_http_minichat_redis_t      *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    redisAsyncContext              *ac;
    ngx_connection_t               *c;

    ac = redisAsyncConnect((char *) mcf->redis_host.data, (int) mcf->redis_port);
    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis context allocation failed");
        ngx_http_minichat_redis_schedule();
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis connect to %V:%i failed: %s",
                      &mcf->redis_host, mcf->redis_port, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_minichat_redis_schedule();
        return;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_minichat_redis_schedule();
        return;
    }

    c->data = rd;
    c->read->handler = ngx_http_minichat_redis_read_handler;
    c->write->handler = ngx_http_minichat_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    if (ngx_add_conn(c) != NGX_OK) {
        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
        redisAsyncFree(ac);
        ngx_http_minichat_redis_schedule();
        return;
    }

    rd->ac = ac;
    rd->conn = c;
    rd->connected = 0;

    ac->ev.data = rd;
    ac->ev.addRead = ngx_http_minichat_redis_add_read;
    ac->ev.delRead = ngx_http_minichat_redis_del_read;
    ac->ev.addWrite = ngx_http_minichat_redis_add_write;
    ac->ev.delWrite = ngx_http_minichat_redis_del_write;
    ac->ev.cleanup = ngx_http_minichat_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_minichat_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_minichat_redis_on_disconnect);

    /* ngx_add_conn registered EPOLLOUT edge-triggered: the completed
     * connect arrives as a write event, which hiredis takes as "connected" */
}


static void
ngx_http_minichat_redis_reconnect_handler(ngx_event_t *ev)
{
    if (ngx_http_minichat_redis.ac == NULL && !ngx_exiting) {
        ngx_http_minichat_redis_connect();
    }
}


static void
ngx_http_minichat_redis_read_handler(ngx_event_t *ev)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;
    int                         n;

    while (rd->ac) {
        redisAsyncHandleRead(rd->ac);

        if (rd->ac == NULL) {
            break;
        }

        /* hiredis reads 16 KB a call; an EOF behind the data must be read
         * too or the edge is lost */
        if (ioctl(rd->ac->c.fd, FIONREAD, &n) == -1 || (n <= 0 && !ev->pending_eof)) {
            break;
        }
    }
}


static void
ngx_http_minichat_redis_write_handler(ngx_event_t *ev)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    if (rd->ac) {
        rd->writing = 1;
        redisAsyncHandleWrite(rd->ac);
        rd->writing = 0;
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
    ngx_http_minichat_redis_t  *rd = privdata;

    /* called from inside redisAsyncHandleWrite when the socket took only
     * part of the buffer: wait for the next EPOLLOUT edge instead of
     * posting the event again, which would spin the worker */
    if (rd->writing || rd->conn == NULL) {
        return;
    }

    if (!rd->conn->write->posted) {
        ngx_post_event(rd->conn->write, &ngx_posted_events);
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
    ngx_http_minichat_redis_t  *rd = privdata;
    ngx_connection_t           *c = rd->conn;

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

    rd->conn = NULL;
    rd->ac = NULL;
    rd->connected = 0;

    ngx_http_minichat_redis_schedule();
}


static void
ngx_http_minichat_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis connect failed: %s", ac->errstr);
        /* hiredis frees the context after this callback */
        return;
    }

    rd->connected = 1;
    ngx_log_error(NGX_LOG_INFO, rd->log, 0, "minichat: redis connected");
}


static void
ngx_http_minichat_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    if (status != REDIS_OK && !rd->exiting) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "minichat: redis connection lost: %s", ac->errstr);
    }
}


ngx_int_t
ngx_http_minichat_redis_argv(int argc, const char **argv, const size_t *argvlen,
    ngx_http_minichat_redis_pt handler, void *data)
{
    ngx_http_minichat_redis_t      *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_cmd_t  *cmd;

    if (rd->ac == NULL || !rd->connected) {
        return NGX_ERROR;
    }

    cmd = ngx_calloc(sizeof(ngx_http_minichat_redis_cmd_t), rd->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->handler = handler;
    cmd->data = data;

    if (redisAsyncCommandArgv(rd->ac, ngx_http_minichat_redis_reply, cmd, argc, argv, argvlen) != REDIS_OK) {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    ngx_http_minichat_redis_sent(cmd);

    return NGX_OK;
}


ngx_int_t
ngx_http_minichat_redis_script(const char *sha1, const char *src, int nkeys, int argc,
    const char **argv, const size_t *argvlen, ngx_http_minichat_redis_pt handler, void *data)
{
    ngx_http_minichat_redis_t      *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_cmd_t  *cmd;
    const char                    **av;
    size_t                         *al;
    u_char                         *p, nk[NGX_INT_T_LEN];
    size_t                          total;
    int                             i, n;

    if (rd->ac == NULL || !rd->connected) {
        return NGX_ERROR;
    }

    /* EVALSHA sha1 nkeys args...; the same vector serves EVAL src nkeys args... */
    n = argc + 3;
    total = sizeof(ngx_http_minichat_redis_cmd_t) + n * (sizeof(char *) + sizeof(size_t));
    for (i = 0; i < argc; i++) {
        total += argvlen[i];
    }
    total += NGX_INT_T_LEN;

    cmd = ngx_calloc(total, rd->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->argc = argc + 2;   /* stored: source, nkeys, arguments */
    cmd->argv = (char **) (cmd + 1);
    cmd->argvlen = (size_t *) (cmd->argv + n);
    p = (u_char *) (cmd->argvlen + n);

    cmd->argv[0] = (char *) src;   /* EVAL source, used on NOSCRIPT */
    cmd->argvlen[0] = ngx_strlen(src);

    cmd->argvlen[1] = ngx_sprintf(nk, "%d", nkeys) - nk;
    cmd->argv[1] = (char *) p;
    p = ngx_cpymem(p, nk, cmd->argvlen[1]);

    for (i = 0; i < argc; i++) {
        cmd->argv[2 + i] = (char *) p;
        cmd->argvlen[2 + i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    av = ngx_alloc((n + 1) * sizeof(char *), rd->log);
    al = ngx_alloc((n + 1) * sizeof(size_t), rd->log);
    if (av == NULL || al == NULL) {
        goto failed;
    }

    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = sha1;
    al[1] = ngx_strlen(sha1);
    for (i = 1; i < n - 1; i++) {
        av[i + 1] = cmd->argv[i];
        al[i + 1] = cmd->argvlen[i];
    }

    if (redisAsyncCommandArgv(rd->ac, ngx_http_minichat_redis_reply, cmd, n, av, al) != REDIS_OK) {
        goto failed;
    }

    ngx_http_minichat_redis_sent(cmd);

    ngx_free(av);
    ngx_free(al);
    return NGX_OK;

failed:

    if (av) {
        ngx_free(av);
    }
    if (al) {
        ngx_free(al);
    }
    ngx_free(cmd);
    return NGX_ERROR;
}


static void
ngx_http_minichat_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_minichat_redis_cmd_t  *cmd = privdata;
    redisReply                     *reply = r;
    const char                    **av;
    size_t                         *al;
    int                             i;

    ngx_queue_remove(&cmd->queue);

    if (reply && reply->type == REDIS_REPLY_ERROR && cmd->argc
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && ngx_http_minichat_redis.ac && !(ac->c.flags & REDIS_DISCONNECTING))
    {
        /* the script cache was flushed or Redis restarted: send the source */
        av = ngx_alloc((cmd->argc + 1) * sizeof(char *), ngx_http_minichat_redis.log);
        al = ngx_alloc((cmd->argc + 1) * sizeof(size_t), ngx_http_minichat_redis.log);

        if (av && al) {
            av[0] = "EVAL";
            al[0] = 4;
            for (i = 0; i < cmd->argc; i++) {
                av[i + 1] = cmd->argv[i];
                al[i + 1] = cmd->argvlen[i];
            }

            cmd->argc = 0;   /* at most one fallback */

            if (redisAsyncCommandArgv(ac, ngx_http_minichat_redis_reply, cmd, (int) (i + 1), av, al)
                == REDIS_OK)
            {
                ngx_free(av);
                ngx_free(al);
                ngx_http_minichat_redis_sent(cmd);
                return;
            }
        }

        if (av) {
            ngx_free(av);
        }
        if (al) {
            ngx_free(al);
        }
    }

    if (cmd->handler) {
        cmd->handler(reply, cmd->data);

    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_redis.log, 0, "minichat: redis error: %s", reply->str);
    }

    ngx_http_minichat_redis_free_cmd(cmd);
}


static void
ngx_http_minichat_redis_free_cmd(ngx_http_minichat_redis_cmd_t *cmd)
{
    ngx_free(cmd);
}


/* Records a command as sent, for the watchdog. */
static void
ngx_http_minichat_redis_sent(ngx_http_minichat_redis_cmd_t *cmd)
{
    ngx_http_minichat_redis_t  *rd = &ngx_http_minichat_redis;

    cmd->sent = ngx_current_msec;
    ngx_queue_insert_tail(&rd->outstanding, &cmd->queue);

    if (!rd->watchdog.timer_set) {
        ngx_add_timer(&rd->watchdog, 1000);
    }
}


static void
ngx_http_minichat_redis_watchdog(ngx_event_t *ev)
{
    ngx_http_minichat_redis_t      *rd = &ngx_http_minichat_redis;
    ngx_http_minichat_redis_cmd_t  *cmd;
    ngx_msec_t                      timeout = ngx_http_minichat_conf()->redis_timeout;

    if (ngx_queue_empty(&rd->outstanding)) {
        return;
    }

    cmd = ngx_queue_data(ngx_queue_head(&rd->outstanding), ngx_http_minichat_redis_cmd_t, queue);

    if (rd->ac && ngx_current_msec - cmd->sent >= timeout) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "minichat: redis has not answered for %M ms; dropping the connection", timeout);
        /* every waiting callback runs with NULL; the cleanup hook reconnects */
        redisAsyncFree(rd->ac);
        return;
    }

    ngx_add_timer(&rd->watchdog, 1000);
}
