/*
 * A client connection's output and lifetime.
 *
 * Every outgoing frame is appended to `out`, and the connection is written
 * once at the end of the event loop's turn (_flush.c), so frames queued in
 * one turn leave in one write; what the socket does not take waits for the
 * write event, and frames that queue up meanwhile leave with it.  `out` is
 * bounded by minichat_send_queue_size: a client that lets it fill is
 * closed.  `out` exists only while bytes wait,
 * so an idle connection holds no buffer; its first size (1 KiB, enough for
 * most turns) comes from a per-worker pool of blocks (lib blockpool.c):
 * a fan-out takes one per recipient and gives them all back in the same
 * turn, which malloc alone does slowly (about a tenth of a worker's CPU in
 * a profile of a 1,000-member room at 400 messages/s).  (An echo endpoint's connection
 * may queue two of its own, larger, messages.)  A frame that would take
 * `out` past the bound is not queued: the connection is closed with 1008
 * "send queue full" instead, the close frame going after the bytes already
 * queued (a frame half written must be finished, and what is queued is in
 * order), so a client that reads again gets its data and then the reason.
 *
 * Every close the server starts is bounded: the close frame and what is
 * queued before it must leave within NGX_HTTP_MINICHAT_LINGER_TIME (the
 * write event's timer), or the connection is dropped.  A graceful shutdown
 * (nginx -s quit, a reload) closes each connection with 1001 through the
 * same path (_ws.c's read handler, on nginx's c->close) instead of letting
 * nginx close the socket under it.
 *
 * Once our close frame is queued (`closing`), no data frame follows it
 * (RFC 6455 §5.5.1): acks, errors and deliveries are refused from then on.
 * Once it is written, the connection lingers: writing is shut down and
 * input dropped until the client's EOF (or a 2 s timer), so requests still
 * in flight from the client never turn the close into a reset.
 *
 * The connection struct is heap-allocated and outlives its connection
 * while replies for it are pending (`pending`); release frees it once it
 * is closed and nothing refers to it.
 *
 * minichat_send_queue_bytes (docs/metrics.md) is kept exact without an
 * atomic add per frame: the worker counts the bytes in its `out`s in a
 * plain variable (added where bytes are appended, taken where they are
 * written or dropped with the connection) and adds the difference to the
 * shared gauge once it may be looked at: once per flush pass (a fan-out's
 * thousand appends and writes cost one atomic add), and at once on the
 * paths that leave bytes waiting outside that pass (a client that does not
 * read, a write event, a release).  Between two of those points the gauge
 * lags the worker by the bytes of one turn at most.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/blockpool.h"
#include "minichat/ws.h"


/* `out`'s first size, and how many free blocks of it a worker keeps: a
 * fan-out to a room of 1,000 takes up to 1,000 in one turn */
#define NGX_HTTP_MINICHAT_OUT_BLOCK  1024
#define NGX_HTTP_MINICHAT_OUT_KEEP   2048


static ngx_int_t ngx_http_minichat_conn_send(ngx_http_minichat_ws_t *ws, ngx_uint_t waiting);
static ngx_int_t ngx_http_minichat_conn_append(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len);
static ngx_int_t ngx_http_minichat_conn_linger(ngx_http_minichat_ws_t *ws);
#if (NGX_SSL)
static ngx_int_t ngx_http_minichat_conn_tls_shutdown(ngx_connection_t *c);
#endif
static ngx_uint_t ngx_http_minichat_conn_full(ngx_http_minichat_ws_t *ws, size_t len);
static void ngx_http_minichat_conn_slow(ngx_http_minichat_ws_t *ws);
static u_char *ngx_http_minichat_out_alloc(size_t cap, ngx_log_t *log);
static void ngx_http_minichat_out_free(ngx_http_minichat_ws_t *ws);


static ngx_int_t ngx_http_minichat_conn_write_out(ngx_http_minichat_ws_t *ws);


static mc_blockpool_t  *ngx_http_minichat_out_pool;
static ngx_uint_t       ngx_http_minichat_out_pool_gone;   /* the worker exits */

/* bytes in this worker's `out`s, and how many of them the shared gauge has */
static ngx_atomic_int_t  ngx_http_minichat_queued;
static ngx_atomic_int_t  ngx_http_minichat_queued_shown;


/* A buffer of cap bytes for `out`: a pooled block when cap is the block
 * size.  NULL (logged) when out of memory. */
static u_char *
ngx_http_minichat_out_alloc(size_t cap, ngx_log_t *log)
{
    u_char  *p;

    if (cap != NGX_HTTP_MINICHAT_OUT_BLOCK || ngx_http_minichat_out_pool_gone) {
        return ngx_alloc(cap, log);
    }

    if (ngx_http_minichat_out_pool == NULL) {
        ngx_http_minichat_out_pool = mc_blockpool_new(NGX_HTTP_MINICHAT_OUT_BLOCK, NGX_HTTP_MINICHAT_OUT_KEEP);
        if (ngx_http_minichat_out_pool == NULL) {
            return ngx_alloc(cap, log);
        }
    }

    p = mc_blockpool_get(ngx_http_minichat_out_pool);
    if (p == NULL) {
        ngx_log_error(NGX_LOG_EMERG, log, ngx_errno, "malloc(%uz) failed", cap);
    }

    return p;
}


/* Gives `out` back (to the pool when it is a block of it; a pooled block
 * is a malloc'ed one, so plain free() is right once the pool is gone). */
static void
ngx_http_minichat_out_free(ngx_http_minichat_ws_t *ws)
{
    if (ws->out == NULL) {
        return;
    }

    if (ws->out_cap == NGX_HTTP_MINICHAT_OUT_BLOCK && ngx_http_minichat_out_pool) {
        mc_blockpool_put(ngx_http_minichat_out_pool, ws->out);
    } else {
        ngx_free(ws->out);
    }

    ws->out = NULL;
    ws->out_cap = 0;
}


/* The worker exits: the pool's free blocks go back; buffers still held are
 * freed by their connections' release. */
void
ngx_http_minichat_conn_exit(void)
{
    mc_blockpool_free(ngx_http_minichat_out_pool);
    ngx_http_minichat_out_pool = NULL;
    ngx_http_minichat_out_pool_gone = 1;
}




void
ngx_http_minichat_conn_queued_show(void)
{
    ngx_atomic_int_t  delta;

    delta = ngx_http_minichat_queued - ngx_http_minichat_queued_shown;
    if (delta == 0) {
        return;
    }

    ngx_http_minichat_queued_shown = ngx_http_minichat_queued;
    ngx_http_minichat_count(queued_bytes, delta);
}


void
ngx_http_minichat_conn_release(ngx_http_minichat_ws_t *ws)
{
    if (!ws->closed || ws->pending || ws->flush_queued) {
        return;
    }

    if (ws->out_len > ws->out_pos) {
        /* never written: the connection went with them */
        ngx_http_minichat_queued -= (ngx_atomic_int_t) (ws->out_len - ws->out_pos);
        ngx_http_minichat_conn_queued_show();
    }

    if (ws->in) {
        ngx_free(ws->in);
    }
    if (ws->msg) {
        ngx_free(ws->msg);
    }
    ngx_http_minichat_out_free(ws);
    if (ws->resume) {
        ngx_http_minichat_resume_free(ws);
    }
    ngx_http_minichat_deflate_free(ws);

    ngx_free(ws);
}


ngx_int_t
ngx_http_minichat_req_error(ngx_http_minichat_req_t *rq, const char *code, const char *message)
{
    return ngx_http_minichat_conn_error(rq->ws, rq->id, rq->has_id, code, message);
}


ngx_int_t
ngx_http_minichat_req_reply(ngx_http_minichat_req_t *rq, const char *op, const u_char *fields, size_t len)
{
    u_char     head[sizeof("{\"op\":\"\",\"id\":") + 32 + NGX_INT64_LEN], *p, *buf;
    size_t     hlen;
    ngx_int_t  rc;

    p = ngx_sprintf(head, "{\"op\":\"%s\"", op);
    if (rq->has_id) {
        p = ngx_sprintf(p, ",\"id\":%L", rq->id);
    }
    hlen = p - head;

    buf = ngx_alloc(hlen + len + 1, ngx_cycle->log);
    if (buf == NULL) {
        return ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
    }

    p = ngx_cpymem(buf, head, hlen);
    p = ngx_cpymem(p, fields, len);
    *p++ = '}';

    rc = ngx_http_minichat_conn_text(rq->ws, buf, p - buf);
    ngx_free(buf);

    return rc;
}


ngx_int_t
ngx_http_minichat_conn_error(ngx_http_minichat_ws_t *ws, int64_t id, ngx_uint_t has_id, const char *code,
    const char *message)
{
    return ngx_http_minichat_conn_error_num(ws, id, has_id, code, message, NULL, 0);
}


ngx_int_t
ngx_http_minichat_conn_error_num(ngx_http_minichat_ws_t *ws, int64_t id, ngx_uint_t has_id, const char *code,
    const char *message, const char *name, uint64_t value)
{
    u_char  buf[sizeof("{\"op\":\"error\",\"id\":,\"code\":\"\",\"message\":\"\",\"\":}") + 2 * NGX_INT64_LEN
                + 64 + 6 * 200], *p;

    if (ws->closed || ws->closing) {
        return NGX_ERROR;
    }

    ngx_http_minichat_metrics_error(code);

    p = ngx_sprintf(buf, "{\"op\":\"error\",");
    if (has_id) {
        p = ngx_sprintf(p, "\"id\":%L,", id);
    }
    p = ngx_sprintf(p, "\"code\":\"%s\",\"message\":\"", code);
    p = ngx_http_minichat_json_escape(p, (const u_char *) message, ngx_min(ngx_strlen(message), 200));
    *p++ = '"';
    if (name && ngx_strcmp(name, "until") == 0 && value == 0) {
        p = ngx_cpymem(p, ",\"until\":null", sizeof(",\"until\":null") - 1);
    } else if (name) {
        p = ngx_sprintf(p, ",\"%s\":%uL", name, value);
    }
    *p++ = '}';

    return ngx_http_minichat_conn_text(ws, buf, p - buf);
}


ngx_int_t
ngx_http_minichat_req_limited(ngx_http_minichat_req_t *rq, ngx_int_t rc, uint64_t value)
{
    if (rc == NGX_BUSY) {
        return ngx_http_minichat_conn_error_num(rq->ws, rq->id, rq->has_id, "rate_limited",
                                                "too many requests; retry after retry_after_ms", "retry_after_ms",
                                                value);
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_minichat_conn_error_num(rq->ws, rq->id, rq->has_id, "banned",
                                                value ? "banned until \"until\" (ms)" : "banned permanently",
                                                "until", value);
    }

    return ngx_http_minichat_conn_error(rq->ws, rq->id, rq->has_id, "unavailable", "storage unavailable; retry");
}


/* Queues one unfragmented text frame; refused once the connection closes. */
ngx_int_t
ngx_http_minichat_conn_text(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len)
{
    return ngx_http_minichat_conn_frame(ws, MC_WS_OP_TEXT, data, len);
}


/* Appends bytes for the client and writes what the socket takes.  Returns
 * NGX_ERROR when the connection was closed (write error), is closing (the
 * queue overflowed, or our close frame is queued: only hello may still go
 * in ahead of it). */
ngx_int_t
ngx_http_minichat_conn_queue(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len)
{
    ngx_uint_t  waiting;

    if (ws->closing && !ws->hello_pending) {
        return NGX_ERROR;
    }

    waiting = ws->out_pos < ws->out_len;

    if (ngx_http_minichat_conn_append(ws, data, len) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_minichat_conn_send(ws, waiting);
}


ngx_int_t
ngx_http_minichat_conn_queue_frame(ngx_http_minichat_ws_t *ws, const u_char *frame, size_t len)
{
    if (ngx_http_minichat_conn_queue(ws, frame, len) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_minichat_count(frames_out, 1);

    return NGX_OK;
}


/* Queues one unfragmented frame (a data frame or a pong) and writes what
 * the socket takes, header and payload in one write.  A data frame is
 * compressed when the connection negotiated permessage-deflate and the
 * message reaches the threshold (_deflate.c). */
ngx_int_t
ngx_http_minichat_conn_frame(ngx_http_minichat_ws_t *ws, ngx_uint_t opcode, const u_char *data, size_t len)
{
    ngx_http_minichat_deflate_cache_t   cache;
    const u_char                       *frame;
    u_char                              hdr[10];
    size_t                              n;
    ngx_uint_t                          waiting;
    ngx_int_t                           rc;

    if (ws->closing || ws->closed) {
        /* nothing after our close frame (RFC 6455 5.5.1) */
        return NGX_ERROR;
    }

    if (ws->deflate_bits && (opcode == MC_WS_OP_TEXT || opcode == MC_WS_OP_BINARY)) {
        cache.n = 0;
        if (ngx_http_minichat_deflate_pick(&cache, ws, opcode, data, len, &frame, &n) == NGX_OK) {
            rc = ngx_http_minichat_conn_queue_frame(ws, frame, n);
            ngx_http_minichat_deflate_cache_free(&cache);
            return rc;
        }
        ngx_http_minichat_deflate_cache_free(&cache);
    }

    waiting = ws->out_pos < ws->out_len;
    n = mc_ws_header(hdr, opcode, 1, len);

    /* header and payload are queued together or not at all */
    if (ngx_http_minichat_conn_full(ws, n + len)) {
        return NGX_ERROR;
    }

    if (ngx_http_minichat_conn_append(ws, hdr, n) != NGX_OK
        || ngx_http_minichat_conn_append(ws, data, len) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_minichat_count(frames_out, 1);

    return ngx_http_minichat_conn_send(ws, waiting);
}


/* Has what was appended written at the end of this turn, unless bytes
 * queued before it were already waiting (for the write event or for that
 * flush, which then take these too) or nothing may be written yet.  The
 * socket's `ready` flag is no guide here: nginx leaves it clear after a
 * short write even when the next write took the rest, and an
 * edge-triggered write event would then never come. */
static ngx_int_t
ngx_http_minichat_conn_send(ngx_http_minichat_ws_t *ws, ngx_uint_t waiting)
{
    if (ws->deferred || ws->hello_pending || waiting) {
        /* the bytes wait for a write event or the handler's end */
        ngx_http_minichat_conn_queued_show();
        return NGX_OK;
    }

    if (ngx_http_minichat_flush_later(ws) == NGX_OK) {
        /* shown at the end of the flush pass */
        return NGX_OK;
    }

    return ngx_http_minichat_conn_flush(ws);
}


/* Appends bytes to `out` without writing.  Returns NGX_ERROR when the
 * connection was closed (queue overflow, out of memory). */
static ngx_int_t
ngx_http_minichat_conn_append(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len)
{
    size_t   used, cap;
    u_char  *p;

    if (ws->closed || ngx_http_minichat_conn_full(ws, len)) {
        return NGX_ERROR;
    }

    used = ws->out_len - ws->out_pos;

    if (ws->out_len + len > ws->out_cap) {
        if (ws->out_pos) {
            ngx_memmove(ws->out, ws->out + ws->out_pos, used);
            ws->out_pos = 0;
            ws->out_len = used;
        }

        if (used + len > ws->out_cap) {
            cap = ngx_max(ws->out_cap * 2, ngx_max(used + len, NGX_HTTP_MINICHAT_OUT_BLOCK));
            p = ngx_http_minichat_out_alloc(cap, ws->connection->log);
            if (p == NULL) {
                ngx_http_minichat_conn_abort(ws);
                return NGX_ERROR;
            }
            if (ws->out) {
                ngx_memcpy(p, ws->out, used);
                ngx_http_minichat_out_free(ws);
            }
            ws->out = p;
            ws->out_cap = cap;
        }
    }

    ngx_memcpy(ws->out + ws->out_len, data, len);
    ws->out_len += len;
    ngx_http_minichat_queued += (ngx_atomic_int_t) len;

    return NGX_OK;
}


/* Returns 1 when len more bytes would take `out` past its bound; the
 * connection is then closed with 1008 after what is already queued (our
 * close frame itself always fits: it is never refused). */
static ngx_uint_t
ngx_http_minichat_conn_full(ngx_http_minichat_ws_t *ws, size_t len)
{
    size_t  used, limit;

    if (ws->closing) {
        return 0;
    }

    used = ws->out_len - ws->out_pos;

    limit = ngx_http_minichat_conf()->send_queue_size;
    if (ws->echo) {
        /* an echo queues whole messages of its own, larger, limit */
        limit = ngx_max(limit, 2 * (ngx_http_minichat_ws_max_message(ws) + 14));
    }

    if (used + len <= limit) {
        return 0;
    }

    ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                  "minichat: user %uL is not reading, %uz bytes queued; closing with 1008", ws->user, used);
    ngx_http_minichat_conn_slow(ws);
    ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_POLICY, "send queue full");

    return 1;
}


/* The connection is closed because it does not read: its send queue
 * overflowed, or the close frame did not leave in time.  Counted once. */
static void
ngx_http_minichat_conn_slow(ngx_http_minichat_ws_t *ws)
{
    if (ws->slow) {
        return;
    }

    ws->slow = 1;
    ngx_http_minichat_count(slow_closed, 1);
}


/* Writes queued bytes.  Returns NGX_OK (all written or waiting for the
 * socket) or NGX_ERROR when the connection was closed. */
ngx_int_t
ngx_http_minichat_conn_flush(ngx_http_minichat_ws_t *ws)
{
    ngx_int_t  rc;

    rc = ngx_http_minichat_conn_write_out(ws);
    ngx_http_minichat_conn_queued_show();

    return rc;
}


ngx_int_t
ngx_http_minichat_conn_flush_listed(ngx_http_minichat_ws_t *ws)
{
    return ngx_http_minichat_conn_write_out(ws);
}


static ngx_int_t
ngx_http_minichat_conn_write_out(ngx_http_minichat_ws_t *ws)
{
    ngx_connection_t  *c = ws->connection;
    ssize_t            n;

    if (ws->hello_pending) {
        return NGX_OK;
    }

    while (ws->out_pos < ws->out_len) {
        n = c->send(c, ws->out + ws->out_pos, ws->out_len - ws->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_http_minichat_conn_abort(ws);
                return NGX_ERROR;
            }
            return NGX_OK;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_minichat_conn_abort(ws);
            return NGX_ERROR;
        }

        ws->out_pos += n;
        ngx_http_minichat_queued -= (ngx_atomic_int_t) n;
        ngx_http_minichat_count(bytes_out, n);
    }

    /* drained: an idle connection holds no output buffer */
    ws->out_pos = 0;
    ws->out_len = 0;
    ngx_http_minichat_out_free(ws);

    if (ws->closing) {
        return ngx_http_minichat_conn_linger(ws);
    }

    return NGX_OK;
}


/* Our close frame is written.  Closing TCP now would answer requests the
 * client still has in flight with a reset, which can destroy the close
 * frame in the client's receive buffer; so writing is shut down (the
 * client sees EOF after the frame) and input is read and dropped until the
 * client closes too, or for NGX_HTTP_MINICHAT_LINGER_TIME at most. */
static ngx_int_t
ngx_http_minichat_conn_linger(ngx_http_minichat_ws_t *ws)
{
    ngx_connection_t  *c = ws->connection;

    if (ws->lingering) {
        return NGX_OK;
    }

    /* (a worker that is exiting lingers too: it waits at most this long) */
#if (NGX_SSL)
    if (c->ssl) {
        switch (ngx_http_minichat_conn_tls_shutdown(c)) {

        case NGX_OK:
            ws->tls_shutdown_wait = 0;
            break;

        case NGX_AGAIN:
            /* the socket took the close frame but not the close_notify
             * after it: tried again when writable, under the close's
             * write timer */
            ws->tls_shutdown_wait = 1;
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_http_minichat_conn_abort(ws);
                return NGX_ERROR;
            }
            return NGX_OK;

        default:
            ngx_http_minichat_conn_abort(ws);
            return NGX_ERROR;
        }

    } else
#endif
    if (shutdown(c->fd, SHUT_WR) == -1) {
        ngx_http_minichat_conn_abort(ws);
        return NGX_ERROR;
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    ws->lingering = 1;
    ngx_add_timer(c->read, NGX_HTTP_MINICHAT_LINGER_TIME);
    ngx_post_event(c->read, &ngx_posted_events);

    return NGX_OK;
}


#if (NGX_SSL)

/* TLS's SHUT_WR: our close_notify goes after the close frame, so the
 * client's TLS reads end there, while its records are still read (and
 * dropped) until its own EOF.  The final close then neither sends a second
 * close_notify nor waits for the client's.  NGX_AGAIN: the socket is full
 * (OpenSSL holds the close_notify; call again once it is writable). */
static ngx_int_t
ngx_http_minichat_conn_tls_shutdown(ngx_connection_t *c)
{
    int  n, err;

    ERR_clear_error();

    n = SSL_shutdown(c->ssl->connection);
    if (n < 0) {
        err = SSL_get_error(c->ssl->connection, n);
        ERR_clear_error();

        if (err == SSL_ERROR_WANT_WRITE) {
            c->write->ready = 0;
            return NGX_AGAIN;
        }

        return NGX_ERROR;
    }

    c->ssl->no_wait_shutdown = 1;
    c->ssl->no_send_shutdown = 1;

    return NGX_OK;
}

#endif


void
ngx_http_minichat_conn_linger_read(ngx_http_minichat_ws_t *ws)
{
    ngx_connection_t  *c = ws->connection;
    u_char             buf[4096];
    ssize_t            n;

    if (c->read->timedout) {
        ngx_http_minichat_conn_abort(ws);
        return;
    }

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_minichat_conn_abort(ws);
            return;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_minichat_conn_abort(ws);
    }
}


void
ngx_http_minichat_conn_write(ngx_event_t *wev)
{
    ngx_connection_t        *c = wev->data;
    ngx_http_minichat_ws_t  *ws = c->data;

    if (wev->timedout) {
        /* our close frame did not leave in time */
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "minichat: user %uL did not take the close frame within %M ms; dropped", ws->user,
                      (ngx_msec_t) NGX_HTTP_MINICHAT_LINGER_TIME);
        ngx_http_minichat_conn_slow(ws);
        ngx_http_minichat_conn_abort(ws);
        return;
    }

    (void) ngx_http_minichat_conn_flush(ws);
}


/* Queues a close frame after whatever is queued; the connection lingers
 * once it is written, and is dropped if it is not written within
 * NGX_HTTP_MINICHAT_LINGER_TIME. */
void
ngx_http_minichat_conn_close(ngx_http_minichat_ws_t *ws, ngx_uint_t code, const char *reason)
{
    u_char      frame[2 + 2 + 123];
    size_t      n;
    ngx_uint_t  waiting;

    if (ws->closing || ws->closed) {
        return;
    }

    n = ngx_min(ngx_strlen(reason), 123);
    frame[0] = 0x80 | MC_WS_OP_CLOSE;
    frame[1] = (u_char) (2 + n);
    frame[2] = (u_char) (code >> 8);
    frame[3] = (u_char) code;
    ngx_memcpy(frame + 4, reason, n);

    waiting = ws->out_pos < ws->out_len;
    ws->closing = 1;

    ngx_http_minichat_count(frames_out, 1);
    ngx_http_minichat_metrics_close(code);

    /* (closing: the frame is never refused for the queue's bound) */
    if (ngx_http_minichat_conn_append(ws, frame, 4 + n) != NGX_OK
        || ngx_http_minichat_conn_send(ws, waiting) != NGX_OK)
    {
        return;
    }

    if (ws->closed || ws->lingering) {
        return;
    }

    if (ws->out_len == 0 && !ws->tls_shutdown_wait) {
        ngx_http_minichat_conn_abort(ws);
        return;
    }

    /* a client that does not read (or a hello still waiting for Redis)
     * holds the close back: bound it */
    ngx_add_timer(ws->connection->write, NGX_HTTP_MINICHAT_LINGER_TIME);
}


/* Closes the connection now: after the hand-off ourselves, before it by
 * finalizing the request (its pool cleanup unregisters the connection). */
void
ngx_http_minichat_conn_abort(ngx_http_minichat_ws_t *ws)
{
    ngx_http_request_t  *r = ws->request;

    if (ws->closed) {
        return;
    }

    if (r == NULL) {
        ngx_http_minichat_ws_close(ws);
        ngx_http_minichat_conn_release(ws);
        return;
    }

    /* keep ws alive across the cleanup that finalizing runs; without a
     * write_event_handler nginx closes the request at once instead of
     * posting the termination to the connection's next event */
    ws->pending++;
    r->write_event_handler = NULL;
    ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
    ws->pending--;

    ngx_http_minichat_conn_release(ws);
}


/* The end of an op answered with a page (history, rooms): replies (or
 * errors), frees the request's copy and lets the connection go. */
void
ngx_http_minichat_req_page(ngx_http_minichat_req_t *rq, const char *op, ngx_int_t rc, const char *code,
    const char *text, const u_char *page, size_t len)
{
    ngx_http_minichat_ws_t  *ws = rq->ws;
    u_char                  *buf;

    if (!ws->closed) {
        if (rc != NGX_OK) {
            (void) ngx_http_minichat_req_error(rq, code, text);

        } else {
            buf = ngx_alloc(len + 1, ngx_cycle->log);
            if (buf == NULL) {
                (void) ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
            } else {
                buf[0] = ',';
                ngx_memcpy(buf + 1, page, len);
                (void) ngx_http_minichat_req_reply(rq, op, buf, len + 1);
                ngx_free(buf);
            }
        }
    }

    ngx_free(rq);
    ws->pending--;
    ngx_http_minichat_conn_release(ws);
}


/* Puts the hello frame in its place, right after the 101, ahead of whatever
 * queued while the session was stored, and lets the queue flow. */
ngx_int_t
ngx_http_minichat_conn_hello(ngx_http_minichat_ws_t *ws, const u_char *payload, size_t len)
{
    u_char  hdr[10], *p;
    size_t  hlen, tail;

    if (ws->closed) {
        ws->hello_pending = 0;
        return NGX_ERROR;
    }

    /* hello_pending stays set while the frame goes in: nothing is written */
    if (payload) {
        hlen = mc_ws_header(hdr, MC_WS_OP_TEXT, 1, len);
        tail = ws->out_len - ws->hello_at;

        if (ngx_http_minichat_conn_full(ws, hlen + len)) {
            /* the close frame is queued behind what waits; no hello */
            ws->hello_pending = 0;
            if (!ws->closed) {
                (void) ngx_http_minichat_conn_flush(ws);
            }
            return NGX_ERROR;
        }

        /* append to grow the buffer, then rotate the new bytes into place */
        if (ngx_http_minichat_conn_queue(ws, hdr, hlen) != NGX_OK
            || ngx_http_minichat_conn_queue(ws, payload, len) != NGX_OK)
        {
            ws->hello_pending = 0;
            return NGX_ERROR;
        }

        ngx_http_minichat_count(frames_out, 1);

        if (tail) {
            p = ngx_alloc(tail, ngx_cycle->log);
            if (p == NULL) {
                ws->hello_pending = 0;
                ngx_http_minichat_conn_abort(ws);
                return NGX_ERROR;
            }
            ngx_memcpy(p, ws->out + ws->hello_at, tail);
            ngx_memmove(ws->out + ws->hello_at, ws->out + ws->hello_at + tail, hlen + len);
            ngx_memcpy(ws->out + ws->hello_at + hlen + len, p, tail);
            ngx_free(p);
        }
    }

    ws->hello_pending = 0;

    if (ws->deferred) {
        return NGX_OK;
    }

    return ngx_http_minichat_conn_flush(ws);
}
