/*
 * The WebSocket endpoint (location with `minichat_ws`), the upgrade it
 * shares with the echo endpoint (_echo.c), and the reading side of every
 * WebSocket connection.
 *
 * The handler checks the handshake (ngx_http_minichat_ws_handshake: RFC
 * 6455's headers, 426 for another version, minichat_handshake_timeout),
 * authenticates the JWT (Authorization, ?token= or a "bearer." subprotocol
 * entry) and runs the connection limits and the ban check (_limit.c;
 * refused: 429 with Retry-After, or 403 banned), then answers the upgrade
 * itself with one write (no header filters: a 101 has no body and the
 * connection leaves HTTP at once), keeps the request alive (count++ and
 * NGX_DONE) and takes over the connection's read and write events.
 *
 * The hand-off: at the first of those events (the upgrade posts one), once
 * no nginx code of the request's is on the stack, the request is logged
 * (the access log's line for the upgrade: status 101) and freed with its
 * pool, and the connection's header buffers (c->buffer, large header
 * buffers) go too, as ngx_http_set_keepalive() does for an idle keepalive
 * connection.  What stays is the connection (its small pool: address, log,
 * TLS state) and the ngx_http_minichat_ws_t, which c->data points at from
 * then on; closing is ours (ngx_http_minichat_ws_close: what
 * ngx_http_close_connection does, after the chat's own goodbyes).  An
 * idle connection costs about 1 KB of worker memory
 * (docs/ARCHITECTURE.md, "Memory per connection"):
 *
 *   read:  bytes accumulate in `in` (allocated only while a frame is partial,
 *          so an idle connection holds no buffer); complete frames are
 *          unmasked in place; control frames are answered; fragments are
 *          assembled in `msg`, a text message's UTF-8 checked as it grows
 *          (a compressed message, RSV1, is assembled compressed and
 *          inflated whole by _deflate.c, then checked);
 *          complete messages go to the op dispatcher (_ops.c), or on an
 *          echo connection back to the client (_echo.c).
 *   write: the connection layer (_conn.c).
 *
 * The read event's timer is the connection's tick: every ping interval (or a
 * third of the session TTL when pings are off) the session is refreshed in
 * Redis, and a client silent for a whole interval is pinged, and closed when
 * still silent an interval later.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/jwt.h"
#include "minichat/origin.h"
#include "minichat/ws.h"


#define NGX_HTTP_MINICHAT_WS_MAX_HEADER  14


/* An upgrade waiting for its limit checks.  Heap-allocated: a check may
 * answer after the request is gone. */
typedef struct {
    ngx_http_request_t  *request;   /* NULL once the request is gone */
    uint64_t             user;
    time_t               exp;       /* the token's */
    ngx_uint_t           pending;   /* checks not yet answered */
    unsigned             user_next:1;  /* the user's check follows the address's */
    ngx_int_t            rc;        /* NGX_OK, NGX_BUSY, NGX_DECLINED (banned) or NGX_ERROR */
    uint64_t             value;     /* retry_after_ms or the ban's end */
} ngx_http_minichat_ws_upgrade_t;


static ngx_int_t ngx_http_minichat_ws_origin(ngx_http_request_t *r);
static ngx_int_t ngx_http_minichat_ws_check(ngx_http_request_t *r, uint64_t user, time_t exp);
static ngx_int_t ngx_http_minichat_ws_check_user(ngx_http_minichat_ws_upgrade_t *up);
static void ngx_http_minichat_ws_check_cleanup(void *data);
static void ngx_http_minichat_ws_checked(ngx_int_t rc, uint64_t value, void *data);
static ngx_int_t ngx_http_minichat_ws_accept(ngx_http_request_t *r, uint64_t user, time_t exp);
static void ngx_http_minichat_ws_arm(ngx_http_minichat_ws_t *ws);
static void ngx_http_minichat_ws_expire(ngx_http_minichat_ws_t *ws);
static void ngx_http_minichat_ws_cleanup(void *data);
static void ngx_http_minichat_ws_handoff_event(ngx_event_t *ev);
static ngx_int_t ngx_http_minichat_ws_handoff(ngx_http_minichat_ws_t *ws);
static void ngx_http_minichat_ws_free_header_buffers(ngx_connection_t *c, ngx_http_connection_t *hc);
static void ngx_http_minichat_ws_finish(ngx_http_minichat_ws_t *ws);
static void ngx_http_minichat_ws_going_away(ngx_http_minichat_ws_t *ws);
static void ngx_http_minichat_ws_read(ngx_event_t *rev);
static void ngx_http_minichat_ws_read_frames(ngx_http_minichat_ws_t *ws);
static ngx_int_t ngx_http_minichat_ws_process(ngx_http_minichat_ws_t *ws);
static ngx_int_t ngx_http_minichat_ws_frame(ngx_http_minichat_ws_t *ws, mc_ws_frame_t *f, u_char *payload);
static ngx_int_t ngx_http_minichat_ws_fragment(ngx_http_minichat_ws_t *ws, u_char *payload, size_t len,
    ngx_uint_t fin);
static ngx_int_t ngx_http_minichat_ws_message(ngx_http_minichat_ws_t *ws, ngx_uint_t opcode, u_char *data,
    size_t len, ngx_uint_t compressed);
static ngx_int_t ngx_http_minichat_ws_deliver(ngx_http_minichat_ws_t *ws, ngx_uint_t opcode, u_char *data,
    size_t len);
static ngx_table_elt_t *ngx_http_minichat_header(ngx_http_request_t *r, const char *name, size_t len);
static ngx_int_t ngx_http_minichat_ws_header_has(ngx_http_request_t *r, const char *name, const char *token);
static ngx_int_t ngx_http_minichat_ws_next_token(ngx_str_t *list, ngx_str_t *token);
static ngx_int_t ngx_http_minichat_ws_protocol_token(ngx_http_request_t *r, ngx_str_t *token);


static uint64_t     ngx_http_minichat_ws_counter;

ngx_uint_t          ngx_http_minichat_ws_open;


ngx_int_t
ngx_http_minichat_ws_handler(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_str_t                       token;
    const char                     *err;
    uint64_t                        user;
    ngx_int_t                       rc, auth;
    time_t                          exp;

    if (mcf == NULL || !mcf->enabled) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /* first, so that a ?token= is hidden before anything is logged; the
     * answer waits until the handshake has been checked */
    auth = ngx_http_minichat_authenticate(r, &token, &user, &exp, &err);
    if (auth == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_minichat_ws_handshake(r);
    if (rc != NGX_OK) {
        return ngx_http_minichat_ws_refuse(r, rc);
    }

    if (ngx_http_minichat_header(r, "Sec-WebSocket-Protocol", sizeof("Sec-WebSocket-Protocol") - 1)
        && !ngx_http_minichat_ws_header_has(r, "Sec-WebSocket-Protocol", NGX_HTTP_MINICHAT_SUBPROTOCOL))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "minichat: websocket refused: subprotocol \"" NGX_HTTP_MINICHAT_SUBPROTOCOL "\" not offered");
        return NGX_HTTP_BAD_REQUEST;
    }

    if (ngx_http_minichat_ws_origin(r) != NGX_OK) {
        return NGX_HTTP_FORBIDDEN;
    }

    if (auth != NGX_OK
        && (token.len || !ngx_http_minichat_ws_protocol_token(r, &token)
            || ngx_http_minichat_verify_token(&token, &user, &exp, &err) != NGX_OK))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: websocket refused: %s", err);
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (!ngx_http_minichat_redis_ready()) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "minichat: websocket refused: redis not connected");
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /* the connection limits and the ban answer before the 101 */
    return ngx_http_minichat_ws_check(r, user, exp);
}


/* Checks an upgrade request as RFC 6455 4.2.1 asks.  Returns NGX_OK, or the
 * status to refuse it with (426: another protocol version). */
ngx_int_t
ngx_http_minichat_ws_handshake(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_table_elt_t                *key, *version;
    ngx_time_t                     *tp;
    ngx_msec_int_t                  ms;

    if (r->method != NGX_HTTP_GET) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (ngx_exiting) {
        /* idle connections were closed when the shutdown began; a new one
         * would keep this worker alive */
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (r != r->main || r->http_version != NGX_HTTP_VERSION_11
#if (NGX_HTTP_V2)
        || r->stream
#endif
       )
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: websocket needs HTTP/1.1");
        return NGX_HTTP_BAD_REQUEST;
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        return NGX_HTTP_BAD_REQUEST;
    }

    /* a request that trickled in (a slowloris) is refused however long
     * client_header_timeout would have let it run */
    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000 + (tp->msec - r->start_msec));
    if (ms >= (ngx_msec_int_t) mcf->handshake_timeout) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "minichat: upgrade request took %M ms, over minichat_handshake_timeout", ms);
        return NGX_HTTP_REQUEST_TIME_OUT;
    }

    if (!ngx_http_minichat_ws_header_has(r, "Upgrade", "websocket")
        || !ngx_http_minichat_ws_header_has(r, "Connection", "upgrade"))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: not a websocket upgrade request");
        return NGX_HTTP_BAD_REQUEST;
    }

    version = ngx_http_minichat_header(r, "Sec-WebSocket-Version", sizeof("Sec-WebSocket-Version") - 1);
    if (version == NULL || version->value.len != 2 || ngx_strncmp(version->value.data, "13", 2) != 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: unsupported Sec-WebSocket-Version");
        return NGX_HTTP_MINICHAT_UPGRADE_REQUIRED;
    }

    key = ngx_http_minichat_header(r, "Sec-WebSocket-Key", sizeof("Sec-WebSocket-Key") - 1);
    if (key == NULL || key->value.len != 24) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: missing or invalid Sec-WebSocket-Key");
        return NGX_HTTP_BAD_REQUEST;
    }

    return NGX_OK;
}


/* Answers a refused handshake: 426 names the version this server speaks
 * (RFC 6455 4.4); other statuses go to nginx's own error pages. */
ngx_int_t
ngx_http_minichat_ws_refuse(ngx_http_request_t *r, ngx_int_t status)
{
    ngx_table_elt_t  *h;

    if (status != NGX_HTTP_MINICHAT_UPGRADE_REQUIRED) {
        return status;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Version");
    ngx_str_set(&h->value, "13");

    r->headers_out.status = NGX_HTTP_MINICHAT_UPGRADE_REQUIRED;
    ngx_str_set(&r->headers_out.status_line, "426 Upgrade Required");
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


/* Checks the upgrade's Origin against minichat_allowed_origins: NGX_OK when
 * no list is configured, the request has no Origin (not a browser: the
 * header is what a browser cannot leave out or forge, and other clients
 * hold their token themselves) or the Origin matches a pattern. */
static ngx_int_t
ngx_http_minichat_ws_origin(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_table_elt_t                *origin;
    ngx_str_t                      *p;
    ngx_uint_t                      i;

    if (mcf->allowed_origins == NULL) {
        return NGX_OK;
    }

    origin = ngx_http_minichat_header(r, "Origin", sizeof("Origin") - 1);
    if (origin == NULL) {
        return NGX_OK;
    }

    p = mcf->allowed_origins->elts;
    for (i = 0; i < mcf->allowed_origins->nelts; i++) {
        if (mc_origin_match((const char *) p[i].data, p[i].len, (const char *) origin->value.data,
                            origin->value.len))
        {
            return NGX_OK;
        }
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "minichat: websocket refused: origin \"%V\" not in minichat_allowed_origins", &origin->value);

    return NGX_DECLINED;
}


/* Starts the upgrade's checks: when configured the address's (gcra.lua:
 * minichat_limit_connections), then the user's (limit.lua: the ban, and
 * minichat_limit_user_connections), one after the other so that an upgrade
 * the address refuses spends none of the user's. */
static ngx_int_t
ngx_http_minichat_ws_check(ngx_http_request_t *r, uint64_t user, time_t exp)
{
    ngx_http_minichat_main_conf_t    *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_ws_upgrade_t   *up;
    ngx_pool_cleanup_t               *cln;
    ngx_int_t                         rc;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    up = ngx_calloc(sizeof(ngx_http_minichat_ws_upgrade_t), r->connection->log);
    if (up == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    up->request = r;
    up->user = user;
    up->exp = exp;
    up->rc = NGX_OK;
    cln->handler = ngx_http_minichat_ws_check_cleanup;
    cln->data = up;

    if (mcf->limit_connections.interval_us) {
        /* the address first: an upgrade it refuses must not spend one of
         * the user's (the two live in different slots, so one script
         * cannot do both) */
        rc = ngx_http_minichat_limit_addr(&r->connection->addr_text, ngx_http_minichat_ws_checked, up);
        if (rc == NGX_OK) {
            up->pending = 1;
            up->user_next = 1;
            r->main->count++;
            return NGX_DONE;
        }
        if (rc == NGX_ERROR) {
            /* the pool's cleanup frees up */
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }
        /* Redis could not be asked and the policy is open */
    }

    if (ngx_http_minichat_ws_check_user(up) == NGX_OK) {
        r->main->count++;
        return NGX_DONE;
    }

    if (up->pending == 0) {
        /* Redis could not be asked: the policy decided at once */
        return up->rc == NGX_OK ? ngx_http_minichat_ws_accept(r, user, exp) : NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    r->main->count++;

    return NGX_DONE;
}


/* Sends the user's check (limit.lua: the ban, minichat_limit_user_connections):
 * NGX_OK when it is on its way, else up->rc says what the policy decided. */
static ngx_int_t
ngx_http_minichat_ws_check_user(ngx_http_minichat_ws_upgrade_t *up)
{
    ngx_int_t  rc;

    up->pending++;
    rc = ngx_http_minichat_limit_user(up->user, NGX_HTTP_MINICHAT_LIMIT_CONN, ngx_http_minichat_ws_checked, up);
    if (rc == NGX_OK) {
        return NGX_OK;
    }

    up->pending--;
    if (rc == NGX_ERROR) {
        up->rc = NGX_ERROR;
    }

    return NGX_DECLINED;
}


static void
ngx_http_minichat_ws_check_cleanup(void *data)
{
    ngx_http_minichat_ws_upgrade_t  *up = data;

    up->request = NULL;

    if (up->pending == 0) {
        ngx_free(up);
    }
}


/* One check answered; the last one decides: a ban over a rate refusal
 * over unavailable over acceptance. */
static void
ngx_http_minichat_ws_checked(ngx_int_t rc, uint64_t value, void *data)
{
    ngx_http_minichat_ws_upgrade_t  *up = data;
    ngx_http_request_t              *r;
    ngx_connection_t                *c;

    if (rc == NGX_DECLINED) {
        up->rc = NGX_DECLINED;
        up->value = value;
    } else if (rc == NGX_BUSY && up->rc != NGX_DECLINED) {
        up->rc = NGX_BUSY;
        up->value = ngx_max(up->value, value);
    } else if (rc == NGX_ERROR && up->rc == NGX_OK) {
        up->rc = NGX_ERROR;
    }

    if (--up->pending) {
        return;
    }

    r = up->request;
    if (r == NULL) {
        ngx_free(up);
        return;
    }

    if (up->user_next) {
        up->user_next = 0;
        if (up->rc == NGX_OK && ngx_http_minichat_ws_check_user(up) == NGX_OK) {
            return;
        }
    }

    c = r->connection;

    if (up->rc == NGX_OK) {
        rc = ngx_http_minichat_ws_accept(r, up->user, up->exp);
    } else if (up->rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0, "minichat: websocket refused: limits unavailable");
        rc = NGX_HTTP_SERVICE_UNAVAILABLE;
    } else {
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "minichat: websocket of user %uL refused: %s", up->user,
                      up->rc == NGX_BUSY ? "rate limited" : "banned");
        rc = ngx_http_minichat_api_limited(r, up->rc, up->value);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/* The checks passed: answer 101 and take the connection over. */
static ngx_int_t
ngx_http_minichat_ws_accept(ngx_http_request_t *r, uint64_t user, time_t exp)
{
    ngx_http_minichat_ws_t          *ws;
    ngx_http_minichat_ipcap_slot_t  *slot;
    ngx_str_t                        sid;
    ngx_uint_t                       i, valid_sid;

    if (ngx_http_minichat_ipcap_acquire(r, &slot) != NGX_OK) {
        return ngx_http_minichat_ipcap_refuse(r);
    }

    ws = ngx_http_minichat_ws_create(r, slot);
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws->user = user;
    ws->exp = exp;

    /* a client may resume its session id; otherwise a new one is made */
    valid_sid = 0;
    if (ngx_http_arg(r, (u_char *) "sid", 3, &sid) == NGX_OK && sid.len == NGX_HTTP_MINICHAT_SID_LEN) {
        valid_sid = 1;
        for (i = 0; i < sid.len; i++) {
            if (!((sid.data[i] >= '0' && sid.data[i] <= '9') || (sid.data[i] >= 'a' && sid.data[i] <= 'f'))) {
                valid_sid = 0;
            }
        }
    }

    if (valid_sid) {
        ngx_memcpy(ws->sid, sid.data, NGX_HTTP_MINICHAT_SID_LEN);
    } else {
        ngx_sprintf(ws->sid, "%08xD%08xD", (uint32_t) ngx_random(), (uint32_t) ngx_random());
    }

    if (ngx_http_minichat_ws_upgrade(ws, 1) != NGX_OK) {
        return NGX_HTTP_CLOSE;
    }

    /* hello must be the first frame, and it waits for Redis (the session):
     * frames queued meanwhile (deliveries, replies) stay behind it */
    ws->hello_at = ws->out_len;
    ws->hello_pending = 1;

    ngx_http_minichat_registry_add(ws);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: user %uL connected, session %*s", user,
                  (size_t) NGX_HTTP_MINICHAT_SID_LEN, ws->sid);

    /* hello follows once Redis has the session, and (when it asks for
     * users) once the relay-worker counts this user: _users.c */
    if (ngx_http_minichat_users_hold(ws) == NGX_OK && ngx_http_minichat_session_start(ws) != NGX_OK) {
        return NGX_HTTP_CLOSE;
    }

    ngx_http_minichat_ws_run(ws);

    return NGX_DONE;
}


/* Makes the connection struct of an upgrade, owned by the request until
 * the hand-off: its cleanup (the pool's) closes it and gives the address's
 * slot back.  Returns NULL when out of memory (the slot is given back at
 * once). */
ngx_http_minichat_ws_t *
ngx_http_minichat_ws_create(ngx_http_request_t *r, ngx_http_minichat_ipcap_slot_t *slot)
{
    ngx_http_minichat_ws_t  *ws;
    ngx_pool_cleanup_t      *cln;
    ngx_connection_t        *c;

    c = r->connection;

    ws = ngx_calloc(sizeof(ngx_http_minichat_ws_t), c->log);
    if (ws == NULL) {
        ngx_http_minichat_ipcap_release(&slot);
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(ws);
        ngx_http_minichat_ipcap_release(&slot);
        return NULL;
    }

    cln->handler = ngx_http_minichat_ws_cleanup;
    cln->data = ws;

    ws->request = r;
    ws->connection = c;
    ws->lcf = ngx_http_get_module_loc_conf(r, ngx_http_minichat_module);
    ws->ipcap = slot;
    ws->id = ((uint64_t) ngx_pid << 32) | (++ngx_http_minichat_ws_counter & 0xffffffff);
    ws->deferred = 1;   /* nothing may close the request inside its handler */
    ngx_http_set_ctx(r, ws, ngx_http_minichat_module);

    return ws;
}


/* Queues the 101 (naming the subprotocol minichat.v1 when the client
 * offered it and `protocol` is set), keeps the bytes that came behind the
 * request and takes the request's events over.  Nothing is written before
 * ngx_http_minichat_ws_run(). */
ngx_int_t
ngx_http_minichat_ws_upgrade(ngx_http_minichat_ws_t *ws, ngx_uint_t protocol)
{
    ngx_http_request_t  *r = ws->request;
    ngx_connection_t    *c = ws->connection;
    ngx_table_elt_t     *key;
    char                 accept[29];
    u_char               resp[512], *p;
    size_t               n;

#if (NGX_SSL)
    if (c->ssl) {
        /* `out` moves when it grows or compacts; OpenSSL must accept a
         * retried write from the new address */
        SSL_set_mode(c->ssl->connection, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
#endif

    key = ngx_http_minichat_header(r, "Sec-WebSocket-Key", sizeof("Sec-WebSocket-Key") - 1);
    mc_ws_accept((const char *) key->value.data, key->value.len, accept);

    p = ngx_cpymem(resp, "HTTP/1.1 101 Switching Protocols\r\n"
                         "Upgrade: websocket\r\n"
                         "Connection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: ",
                   sizeof("HTTP/1.1 101 Switching Protocols\r\n"
                          "Upgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: ") - 1);
    p = ngx_cpymem(p, accept, 28);
    if (protocol && ngx_http_minichat_ws_header_has(r, "Sec-WebSocket-Protocol", NGX_HTTP_MINICHAT_SUBPROTOCOL)) {
        p = ngx_cpymem(p, "\r\nSec-WebSocket-Protocol: " NGX_HTTP_MINICHAT_SUBPROTOCOL,
                       sizeof("\r\nSec-WebSocket-Protocol: " NGX_HTTP_MINICHAT_SUBPROTOCOL) - 1);
    }
    p = ngx_http_minichat_deflate_negotiate(ws, p);
    p = ngx_cpymem(p, "\r\n\r\n", 4);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->header_sent = 1;
    r->keepalive = 0;
    r->lingering_close = 0;

    if (ngx_http_minichat_conn_queue(ws, resp, p - resp) != NGX_OK) {
        return NGX_ERROR;
    }

    /* frames pipelined behind the upgrade request are already read */
    n = r->header_in->last - r->header_in->pos;
    if (n) {
        ws->in = ngx_alloc(ngx_max(n, 4096), c->log);
        if (ws->in == NULL) {
            return NGX_ERROR;
        }
        ws->in_cap = ngx_max(n, 4096);
        ngx_memcpy(ws->in, r->header_in->pos, n);
        ws->in_len = n;
        r->header_in->pos = r->header_in->last;
    }

    /* the request stays until the hand-off; nginx's own handlers of it
     * have nothing left to do */
    r->main->count++;
    r->read_event_handler = ngx_http_request_empty_handler;
    r->write_event_handler = ngx_http_request_empty_handler;

    /* a graceful shutdown closes it like an idle keepalive connection:
     * nginx calls its read handler with c->close set, and
     * ngx_http_minichat_ws_read says 1001 */
    c->idle = 1;

    /* small frames must not wait for the peer's delayed ACK (Nagle) */
    if (ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "minichat: TCP_NODELAY failed");
    }

    ws->counted = 1;
    ngx_http_minichat_ws_open++;
    ngx_http_minichat_count(conn_opened, 1);
    ngx_http_minichat_count(conn_open, 1);

    return NGX_OK;
}


/* The upgrade is done: the hand-off, the 101 and whatever queued behind
 * it, and any pipelined frames, are handled from the event loop once the
 * location handler has returned (NGX_DONE). */
void
ngx_http_minichat_ws_run(ngx_http_minichat_ws_t *ws)
{
    ngx_connection_t  *c = ws->connection;

    ws->deferred = 0;
    c->read->handler = ngx_http_minichat_ws_handoff_event;
    c->write->handler = ngx_http_minichat_ws_handoff_event;
    ngx_post_event(c->write, &ngx_posted_events);
    ngx_http_minichat_ws_arm(ws);
    if (ws->in_len || c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


/* The request's pool cleanup: the request went before the hand-off (a
 * refusal after the 101 was queued, an abort); nginx closes the socket
 * after it. */
static void
ngx_http_minichat_ws_cleanup(void *data)
{
    ngx_http_minichat_ws_t  *ws = data;

    ngx_http_minichat_ws_finish(ws);
    ws->request = NULL;

    ngx_http_minichat_conn_release(ws);
}


/* The connection's read and write handler from the upgrade until the
 * hand-off: hands off, then runs the event as its new handler would. */
static void
ngx_http_minichat_ws_handoff_event(ngx_event_t *ev)
{
    ngx_connection_t        *c = ev->data;
    ngx_http_request_t      *r = c->data;
    ngx_http_minichat_ws_t  *ws;

    ws = ngx_http_get_module_ctx(r, ngx_http_minichat_module);

    if (ngx_http_minichat_ws_handoff(ws) != NGX_OK) {
        return;
    }

    ev->handler(ev);
}


/* Frees the request and what HTTP needed, keeping the connection: the
 * access log gets the upgrade's line now (status 101; $bytes_sent counts
 * what was written by then, which for the chat is usually nothing: the
 * 101 waits for hello).  From here c->data is ws, and the connection's
 * events go to ngx_http_minichat_ws_read and ngx_http_minichat_conn_write.
 * Returns NGX_ERROR when the connection was closed instead. */
static ngx_int_t
ngx_http_minichat_ws_handoff(ngx_http_minichat_ws_t *ws)
{
    ngx_http_request_t     *r = ws->request;
    ngx_connection_t       *c = ws->connection;
    ngx_http_connection_t  *hc = r->http_connection;
    ngx_pool_cleanup_t     *cln;

    if (r->main->count != 1) {
        /* something of nginx's still holds the request: it cannot be freed */
        ngx_log_error(NGX_LOG_ALERT, c->log, 0, "minichat: websocket request count %d at the hand-off",
                      (int) r->main->count);
        ngx_http_minichat_conn_abort(ws);
        return NGX_ERROR;
    }

    /* ws outlives the request from now on */
    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_minichat_ws_cleanup && cln->data == ws) {
            cln->handler = NULL;
        }
    }

    ws->request = NULL;

    /* runs the request's cleanups and its log phase, destroys its pool and
     * marks the connection destroyed for the request's callers: none is
     * left, and the connection lives on */
    ngx_http_free_request(r, 0);
    c->destroyed = 0;

    ngx_http_minichat_ws_free_header_buffers(c, hc);

#if (NGX_HTTP_SSL)
    if (c->ssl) {
        ngx_ssl_free_buffer(c);
    }
#endif

    c->data = ws;
    c->log->action = "serving websocket";
    c->read->handler = ngx_http_minichat_ws_read;
    c->write->handler = ngx_http_minichat_conn_write;

    return NGX_OK;
}


/* Frees the client header buffers the request was read into (frames that
 * came behind it were copied to `in` by the upgrade), as
 * ngx_http_set_keepalive() does for an idle keepalive connection. */
static void
ngx_http_minichat_ws_free_header_buffers(ngx_connection_t *c, ngx_http_connection_t *hc)
{
    ngx_chain_t  *cl, *ln;

    if (c->buffer && ngx_pfree(c->pool, c->buffer->start) == NGX_OK) {
        c->buffer = NULL;
    }

    for (cl = hc->busy; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    for (cl = hc->free; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    hc->busy = NULL;
    hc->nbusy = 0;
    hc->free = NULL;
}


/* What every close does while the socket is still open: the registry and
 * the session let go of the connection, and the client address's slot is
 * given back.  (A graceful shutdown's 1001 was sent before, on the common
 * close path: ngx_http_minichat_ws_going_away.) */
static void
ngx_http_minichat_ws_finish(ngx_http_minichat_ws_t *ws)
{
    if (!ws->echo) {
        ngx_http_minichat_registry_remove(ws);
        ngx_http_minichat_session_end(ws);
    }

    ngx_http_minichat_ipcap_release(&ws->ipcap);

    if (ws->counted) {
        ws->counted = 0;
        ngx_http_minichat_ws_open--;
        ngx_http_minichat_count(conn_open, -1);
    }

    if (!ws->echo) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0, "minichat: user %uL disconnected", ws->user);
    }

    ws->connection = NULL;
    ws->closed = 1;
}


void
ngx_http_minichat_ws_close(ngx_http_minichat_ws_t *ws)
{
    ngx_connection_t  *c = ws->connection;

    if (ws->closed) {
        return;
    }

#if (NGX_SSL)
    if (c->ssl && (ws->out_pos < ws->out_len || ws->tls_shutdown_wait)) {
        /* OpenSSL holds a record the socket did not take: an alert cannot
         * go behind it ("bad write retry"), so no close_notify */
        c->ssl->no_send_shutdown = 1;
        c->ssl->no_wait_shutdown = 1;
    }
#endif

    ngx_http_minichat_ws_finish(ws);

    /* a TLS shutdown that has to wait keeps c a little longer, without ws */
    c->data = NULL;
    ngx_http_close_connection(c);
}


/* nginx closes idle connections for a graceful shutdown or a reload by
 * calling their read handler with c->close set.  The first such call (the
 * connection is still `idle`) becomes a 1001 close frame after what is
 * queued and a lingering close, bounded like any other close (_conn.c); a
 * connection already closing keeps its own bound.  A later call
 * (worker_shutdown_timeout) closes at once. */
static void
ngx_http_minichat_ws_going_away(ngx_http_minichat_ws_t *ws)
{
    ngx_connection_t  *c = ws->connection;

    if (!c->idle || !ngx_exiting) {
        ngx_http_minichat_conn_abort(ws);
        return;
    }

    c->close = 0;
    c->idle = 0;

    if (ws->closing) {
        return;
    }

    ws->pending++;
    ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_GOING_AWAY, "going away");
    ws->pending--;

    ngx_http_minichat_conn_release(ws);
}


/* The read event: ws is held (pending) for the whole handler, so an op
 * that closes the connection midway never leaves a freed struct behind
 * for the code that called it. */
static void
ngx_http_minichat_ws_read(ngx_event_t *rev)
{
    ngx_connection_t        *c = rev->data;
    ngx_http_minichat_ws_t  *ws = c->data;

    if (c->close) {
        ngx_http_minichat_ws_going_away(ws);
        return;
    }

    ws->pending++;
    ngx_http_minichat_ws_read_frames(ws);
    ws->pending--;

    ngx_http_minichat_conn_release(ws);
}


static void
ngx_http_minichat_ws_read_frames(ngx_http_minichat_ws_t *ws)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_connection_t               *c = ws->connection;
    ssize_t                         n;
    size_t                          want;
    u_char                         *p;

    if (ws->lingering) {
        ngx_http_minichat_conn_linger_read(ws);
        return;
    }

    if (c->read->timedout) {
        /* the ping tick: a client silent for a whole interval is pinged,
         * and one still silent an interval later is gone */
        c->read->timedout = 0;

        if (ws->expiry_armed) {
            ngx_http_minichat_ws_expire(ws);
            return;
        }

        if (ws->ping_sent && mcf->ping_interval) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0, "minichat: user %uL did not answer a ping; closing", ws->user);
            ngx_http_minichat_conn_abort(ws);
            return;
        }

        if (!ws->echo) {
            ngx_http_minichat_session_refresh(ws);
        }

        if (mcf->ping_interval && !ws->got_data && !ws->closing) {
            u_char  ping[2] = { 0x80 | MC_WS_OP_PING, 0 };

            if (ngx_http_minichat_conn_queue_frame(ws, ping, 2) != NGX_OK) {
                return;
            }
            ws->ping_sent = 1;
        }

        ws->got_data = 0;
    }

    for ( ;; ) {
        if (ws->closing) {
            /* after our close frame, input is read and dropped */
            ws->in_len = 0;
        }

        if (ws->in_len) {
            if (ngx_http_minichat_ws_process(ws) != NGX_OK) {
                return;
            }
        }

        want = ngx_max(ws->in_len + 4096, 4096);
        if (ws->in_cap < want) {
            want = ngx_min(ngx_max(want, ws->in_cap * 2),
                          ngx_http_minichat_ws_max_message(ws) + NGX_HTTP_MINICHAT_WS_MAX_HEADER);
            if (want <= ws->in_len) {
                ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_TOO_BIG, "message too big");
                return;
            }
            p = ngx_alloc(want, c->log);
            if (p == NULL) {
                ngx_http_minichat_conn_abort(ws);
                return;
            }
            if (ws->in) {
                ngx_memcpy(p, ws->in, ws->in_len);
                ngx_free(ws->in);
            }
            ws->in = p;
            ws->in_cap = want;
        }

        n = c->recv(c, ws->in + ws->in_len, ws->in_cap - ws->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            /* the peer went away without a close frame */
            ngx_http_minichat_conn_abort(ws);
            return;
        }

        ws->in_len += n;
        ngx_http_minichat_count(bytes_in, n);
        ws->got_data = 1;
        ws->ping_sent = 0;
    }

    if (ws->in_len == 0 && ws->in) {
        /* idle connections hold no input buffer */
        ngx_free(ws->in);
        ws->in = NULL;
        ws->in_cap = 0;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_minichat_conn_abort(ws);
        return;
    }

    if (!c->read->timer_set) {
        ngx_http_minichat_ws_arm(ws);
    }
}


/* Sets the read event's timer, the connection's only one: the next tick,
 * or the token's expiry when that comes first.  No timer is added for
 * expiry: at 100k connections a second timer each would double the
 * rbtree, and a sweep would walk every connection; a token that outlives
 * the next tick is simply looked at again then. */
static void
ngx_http_minichat_ws_arm(ngx_http_minichat_ws_t *ws)
{
    ngx_msec_t  tick;
    uint64_t    now, exp;

    tick = ngx_http_minichat_tick(ngx_http_minichat_conf());
    ws->expiry_armed = 0;

    /* in seconds first: exp may be any positive 64-bit number */
    if (ws->exp && (uint64_t) ws->exp <= (uint64_t) ngx_time() + tick / 1000 + 1) {
        now = ngx_http_minichat_now_ms();
        exp = (uint64_t) ws->exp * 1000;
        if (exp < now + tick) {
            tick = exp > now ? (ngx_msec_t) (exp - now) : 1;
            ws->expiry_armed = 1;
        }
    }

    ngx_add_timer(ws->connection->read, tick);
}


/* The token expired: the client hears why, then the close (4001). */
static void
ngx_http_minichat_ws_expire(ngx_http_minichat_ws_t *ws)
{
    ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0, "minichat: user %uL token expired; closing", ws->user);

    (void) ngx_http_minichat_conn_error(ws, 0, 0, "unauthorized", "token expired");
    ngx_http_minichat_conn_close(ws, NGX_HTTP_MINICHAT_CLOSE_EXPIRED, "token expired");
}


/* Handles every complete frame in `in`.  Returns NGX_OK, or NGX_ERROR when
 * the connection was closed (ws must not be touched then). */
static ngx_int_t
ngx_http_minichat_ws_process(ngx_http_minichat_ws_t *ws)
{
    mc_ws_frame_t                   f;
    size_t                          off = 0, total;
    int                             rc;

    while (off < ws->in_len && !ws->closing) {
        rc = mc_ws_parse_header_rsv(ws->in + off, ws->in_len - off, ngx_http_minichat_ws_max_message(ws),
                                    ws->deflate_bits ? MC_WS_RSV1 : 0, &f);

        if (rc == MC_WS_AGAIN) {
            break;
        }

        if (rc != MC_WS_OK) {
            ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0, "minichat: websocket protocol error %d", rc);
            ngx_http_minichat_conn_close(ws, mc_ws_error_close_code(rc),
                                       rc == MC_WS_ERR_TOO_BIG ? "message too big" : "protocol error");
            return NGX_ERROR;
        }

        total = f.header_len + f.payload_len;
        if (ws->in_len - off < total) {
            break;
        }

        mc_ws_unmask(ws->in + off + f.header_len, f.payload_len, f.mask, 0);
        ngx_http_minichat_count(frames_in, 1);

        if (ngx_http_minichat_ws_frame(ws, &f, ws->in + off + f.header_len) != NGX_OK) {
            return NGX_ERROR;
        }

        off += total;
    }

    if (ws->closed) {
        return NGX_ERROR;
    }

    if (off) {
        ngx_memmove(ws->in, ws->in + off, ws->in_len - off);
        ws->in_len -= off;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_minichat_ws_frame(ngx_http_minichat_ws_t *ws, mc_ws_frame_t *f, u_char *payload)
{
    size_t      len = f->payload_len;
    ngx_uint_t  code;

    switch (f->opcode) {

    case MC_WS_OP_PING:
        return ngx_http_minichat_conn_frame(ws, MC_WS_OP_PONG, payload, len);

    case MC_WS_OP_PONG:
        return NGX_OK;

    case MC_WS_OP_CLOSE:
        code = MC_WS_CLOSE_NORMAL;
        if (len == 1) {
            ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_PROTOCOL, "bad close frame");
            return NGX_ERROR;
        }
        if (len >= 2) {
            code = (payload[0] << 8) | payload[1];
            if (!mc_ws_close_code_valid(code)) {
                ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_PROTOCOL, "bad close code");
                return NGX_ERROR;
            }
            if (!mc_utf8_valid(payload + 2, len - 2)) {
                ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_BAD_DATA, "invalid UTF-8 in the close reason");
                return NGX_ERROR;
            }
        }
        ngx_http_minichat_conn_close(ws, code, "");
        return NGX_ERROR;

    case MC_WS_OP_TEXT:
    case MC_WS_OP_BINARY:
        if (ws->msg_opcode) {
            ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_PROTOCOL, "expected a continuation frame");
            return NGX_ERROR;
        }
        if (f->opcode == MC_WS_OP_BINARY && !ws->echo) {
            ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_UNSUPPORTED, "text frames only");
            return NGX_ERROR;
        }
        if (f->fin) {
            return ngx_http_minichat_ws_message(ws, f->opcode, payload, len, f->rsv1);
        }
        ws->msg_opcode = f->opcode;
        ws->msg_compressed = f->rsv1;
        ws->msg_checked = 0;
        return ngx_http_minichat_ws_fragment(ws, payload, len, 0);

    default: /* MC_WS_OP_CONT */
        if (!ws->msg_opcode) {
            ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_PROTOCOL, "unexpected continuation frame");
            return NGX_ERROR;
        }
        return ngx_http_minichat_ws_fragment(ws, payload, len, f->fin);
    }
}


/* Appends a fragment to the message being assembled; a text message's
 * UTF-8 is checked as it grows, so that an invalid one fails at the
 * fragment that breaks it (a compressed one's once it is inflated whole).
 * The last fragment hands the message on. */
static ngx_int_t
ngx_http_minichat_ws_fragment(ngx_http_minichat_ws_t *ws, u_char *payload, size_t len, ngx_uint_t fin)
{
    size_t      n, max, done;
    u_char     *p;
    ngx_int_t   rc;

    max = ngx_http_minichat_ws_max_message(ws);

    if (ws->msg_len + len > max) {
        ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_TOO_BIG, "message too big");
        return NGX_ERROR;
    }

    if (ws->msg == NULL || ws->msg_len + len > ws->msg_cap) {
        /* the buffer grows with the fragments, never ahead of them */
        n = ngx_min(ngx_max(ngx_max(ws->msg_cap * 2, ws->msg_len + len), 1024), max);
        p = ngx_alloc(n, ws->connection->log);
        if (p == NULL) {
            ngx_http_minichat_conn_abort(ws);
            return NGX_ERROR;
        }
        if (ws->msg) {
            ngx_memcpy(p, ws->msg, ws->msg_len);
            ngx_free(ws->msg);
        }
        ws->msg = p;
        ws->msg_cap = n;
    }

    ngx_memcpy(ws->msg + ws->msg_len, payload, len);
    ws->msg_len += len;

    if (ws->msg_opcode == MC_WS_OP_TEXT && !ws->msg_compressed) {
        if (!mc_utf8_valid_part(ws->msg + ws->msg_checked, ws->msg_len - ws->msg_checked, &done)
            || (fin && ws->msg_checked + done != ws->msg_len))
        {
            ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_BAD_DATA, "invalid UTF-8");
            return NGX_ERROR;
        }
        ws->msg_checked += done;
    }

    if (!fin) {
        return NGX_OK;
    }

    p = ws->msg;
    len = ws->msg_len;
    ws->msg = NULL;
    ws->msg_len = 0;
    ws->msg_cap = 0;
    ws->msg_checked = 0;

    if (ws->msg_compressed) {
        ws->msg_compressed = 0;
        rc = ngx_http_minichat_ws_message(ws, ws->msg_opcode, p, len, 1);
    } else {
        rc = ngx_http_minichat_ws_deliver(ws, ws->msg_opcode, p, len);
    }
    ws->msg_opcode = 0;
    ngx_free(p);

    return rc;
}


/* A complete message not yet checked: a compressed one is inflated
 * (bounded: 1009 past the limit, 1007 for bad data); text must be UTF-8
 * (1007 otherwise). */
static ngx_int_t
ngx_http_minichat_ws_message(ngx_http_minichat_ws_t *ws, ngx_uint_t opcode, u_char *data, size_t len,
    ngx_uint_t compressed)
{
    u_char     *plain;
    size_t      n;
    ngx_int_t   rc;

    if (compressed) {
        if (ngx_http_minichat_deflate_inflate(ws, data, len, &plain, &n) != NGX_OK) {
            return NGX_ERROR;
        }
        /* an empty message inflates to no buffer: hand on a real one */
        rc = ngx_http_minichat_ws_message(ws, opcode, plain ? plain : (u_char *) "", n, 0);
        if (plain) {
            ngx_free(plain);
        }
        return rc;
    }

    if (opcode == MC_WS_OP_TEXT && !mc_utf8_valid(data, len)) {
        ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_BAD_DATA, "invalid UTF-8");
        return NGX_ERROR;
    }

    return ngx_http_minichat_ws_deliver(ws, opcode, data, len);
}


/* Hands a complete, checked message to the echo endpoint or to the chat's
 * op dispatcher. */
static ngx_int_t
ngx_http_minichat_ws_deliver(ngx_http_minichat_ws_t *ws, ngx_uint_t opcode, u_char *data, size_t len)
{
    if (ws->echo) {
        return ngx_http_minichat_echo_message(ws, opcode, data, len);
    }

    return ngx_http_minichat_ops_message(ws, data, len);
}


/* The largest message this connection takes: minichat_max_message_size,
 * or minichat_ws_echo_max_message_size on an echo endpoint. */
size_t
ngx_http_minichat_ws_max_message(ngx_http_minichat_ws_t *ws)
{
    if (ws->echo) {
        return ws->lcf->echo_max_message_size;
    }

    return ngx_http_minichat_conf()->max_message_size;
}


/* The request's next header called `name` (any case) after the place
 * (*part, *i) points at; start with *part = NULL.  NULL when none is left. */
static ngx_table_elt_t *
ngx_http_minichat_header_next(ngx_http_request_t *r, const char *name, size_t len, ngx_list_part_t **part,
    ngx_uint_t *i)
{
    ngx_table_elt_t  *h;

    if (*part == NULL) {
        *part = &r->headers_in.headers.part;
        *i = 0;

    } else {
        (*i)++;
    }

    for ( ;; ) {
        if (*i >= (*part)->nelts) {
            if ((*part)->next == NULL) {
                return NULL;
            }
            *part = (*part)->next;
            *i = 0;
            continue;
        }

        h = (ngx_table_elt_t *) (*part)->elts + *i;
        if (h->key.len == len && ngx_strncasecmp(h->key.data, (u_char *) name, len) == 0) {
            return h;
        }
        (*i)++;
    }
}


static ngx_table_elt_t *
ngx_http_minichat_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_list_part_t  *part = NULL;
    ngx_uint_t        i;

    return ngx_http_minichat_header_next(r, name, len, &part, &i);
}


/* Returns 1 when some header `name` holds `token` (any case) in its
 * comma-separated list. */
static ngx_int_t
ngx_http_minichat_ws_header_has(ngx_http_request_t *r, const char *name, const char *token)
{
    ngx_list_part_t  *part = NULL;
    ngx_table_elt_t  *h;
    ngx_str_t         value, t;
    size_t            tlen = ngx_strlen(token);
    ngx_uint_t        i;

    while ((h = ngx_http_minichat_header_next(r, name, ngx_strlen(name), &part, &i)) != NULL) {
        value = h->value;
        while (ngx_http_minichat_ws_next_token(&value, &t)) {
            if (t.len == tlen && ngx_strncasecmp(t.data, (u_char *) token, tlen) == 0) {
                return 1;
            }
        }
    }

    return 0;
}


/* Takes the next token of a comma-separated list off the front of `list`.
 * Returns 0 when none is left. */
static ngx_int_t
ngx_http_minichat_ws_next_token(ngx_str_t *list, ngx_str_t *token)
{
    u_char  *p = list->data, *end = list->data + list->len;

    while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
        p++;
    }

    token->data = p;
    while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
        p++;
    }
    token->len = p - token->data;

    list->len = end - p;
    list->data = p;

    return token->len != 0;
}


/* Finds a JWT offered as a subprotocol entry "bearer.<JWT>" (browsers can
 * set no other header on an upgrade).  Returns 1 with the JWT in token. */
static ngx_int_t
ngx_http_minichat_ws_protocol_token(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_list_part_t  *part = NULL;
    ngx_table_elt_t  *h;
    ngx_str_t         value, t;
    ngx_uint_t        i;

    while ((h = ngx_http_minichat_header_next(r, "Sec-WebSocket-Protocol", sizeof("Sec-WebSocket-Protocol") - 1,
                                              &part, &i))
           != NULL)
    {
        value = h->value;
        while (ngx_http_minichat_ws_next_token(&value, &t)) {
            if (t.len > sizeof(NGX_HTTP_MINICHAT_PROTOCOL_TOKEN) - 1
                && ngx_strncmp(t.data, NGX_HTTP_MINICHAT_PROTOCOL_TOKEN,
                               sizeof(NGX_HTTP_MINICHAT_PROTOCOL_TOKEN) - 1) == 0)
            {
                token->data = t.data + sizeof(NGX_HTTP_MINICHAT_PROTOCOL_TOKEN) - 1;
                token->len = t.len - (sizeof(NGX_HTTP_MINICHAT_PROTOCOL_TOKEN) - 1);
                return 1;
            }
        }
    }

    return 0;
}
