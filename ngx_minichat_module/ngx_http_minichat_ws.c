/*
 * The WebSocket endpoint (location with `minichat_ws`).
 *
 * The handler authenticates the JWT, answers the upgrade itself with one
 * write (no header filters: a 101 has no body and the connection leaves HTTP
 * at once), keeps the request alive (count++ and NGX_DONE) and takes over
 * the request's read and write handlers.  From then on the connection belongs
 * to an ngx_http_minichat_ws_t:
 *
 *   read:  bytes accumulate in `in` (allocated only while a frame is partial,
 *          so an idle connection holds no buffer); complete frames are
 *          unmasked in place; control frames are answered; text messages are
 *          checked for UTF-8 and handed to the protocol (JSON, jansson).
 *   write: every outgoing frame is appended to `out` and written at once;
 *          what the socket does not take waits for the write event, and when
 *          frames queue up they leave in one write.  `out` is bounded by
 *          minichat_send_queue_size; a client that lets it fill is closed.
 *
 * The send path: `send` runs lua/send.lua on the room's keys in Redis, which
 * checks membership, deduplicates by cid and assigns the next seq; the sender
 * gets its ack, the message frame is encoded once and copied to this
 * worker's connections of the room's members, and the message goes to the
 * relay-worker for the other workers, the other nodes and Kafka.
 *
 * The struct is heap-allocated and outlives its request while Redis replies
 * for it are pending; a pool cleanup on the request marks it closed.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/jwt.h"
#include "minichat/ws.h"
#include "lua_scripts.h"

#include <jansson.h>


#define NGX_HTTP_MINICHAT_WS_MAX_HEADER  14


typedef struct {
    ngx_http_minichat_ws_t  *ws;
    int64_t                  id;
    unsigned                 has_id:1;
    uint64_t                 room;
    uint64_t                 ts;
    int64_t                  seq;            /* once Redis assigned it */
    size_t                   cid_len;
    size_t                   body_len;
    u_char                  *cid;
    u_char                  *body;
} ngx_http_minichat_send_t;


static void ngx_http_minichat_ws_read(ngx_http_request_t *r);
static void ngx_http_minichat_ws_write(ngx_http_request_t *r);
static void ngx_http_minichat_ws_cleanup(void *data);
static ngx_int_t ngx_http_minichat_ws_process(ngx_http_minichat_ws_t *ws);
static ngx_int_t ngx_http_minichat_ws_frame(ngx_http_minichat_ws_t *ws, mc_ws_frame_t *f, u_char *payload);
static ngx_int_t ngx_http_minichat_ws_message(ngx_http_minichat_ws_t *ws, u_char *data, size_t len);
static ngx_int_t ngx_http_minichat_ws_send(ngx_http_minichat_ws_t *ws, json_t *req, int64_t id,
    ngx_uint_t has_id);
static void ngx_http_minichat_ws_send_reply(redisReply *reply, void *data);
static void ngx_http_minichat_ws_published(Minichat__LocalFrame *result, void *data);
static ngx_int_t ngx_http_minichat_ws_queue(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len);
static ngx_int_t ngx_http_minichat_ws_text(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len);
static ngx_int_t ngx_http_minichat_ws_error(ngx_http_minichat_ws_t *ws, int64_t id, ngx_uint_t has_id,
    const char *code, const char *message);
static void ngx_http_minichat_ws_close(ngx_http_minichat_ws_t *ws, ngx_uint_t code, const char *reason);
static void ngx_http_minichat_ws_abort(ngx_http_minichat_ws_t *ws);
static ngx_int_t ngx_http_minichat_ws_flush(ngx_http_minichat_ws_t *ws);
static void ngx_http_minichat_ws_release(ngx_http_minichat_ws_t *ws);
static ngx_table_elt_t *ngx_http_minichat_header(ngx_http_request_t *r, const char *name, size_t len);
static ngx_int_t ngx_http_minichat_has_token(ngx_str_t *value, const char *token, size_t len);


static ngx_queue_t  ngx_http_minichat_users[NGX_HTTP_MINICHAT_USER_BUCKETS];

static uint64_t     ngx_http_minichat_ws_counter;

static const char  *ngx_http_minichat_room_keys[4] = { "members", "seq", "idem", "log" };


void
ngx_http_minichat_ws_init_registry(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_MINICHAT_USER_BUCKETS; i++) {
        ngx_queue_init(&ngx_http_minichat_users[i]);
    }
}


ngx_int_t
ngx_http_minichat_ws_handler(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_ws_t         *ws;
    ngx_table_elt_t                *key, *version, *proto, *upgrade, *connection;
    ngx_pool_cleanup_t             *cln;
    ngx_connection_t               *c;
    ngx_str_t                       token, sid;
    const char                     *err;
    uint64_t                        user;
    char                            accept[29];
    u_char                          resp[256], *p;
    u_char                          hello[sizeof("{\"op\":\"hello\",\"sid\":\"\",\"user\":,\"node\":\"\"}")
                                          + 16 + NGX_INT64_LEN + 64];
    size_t                          n;
    ngx_uint_t                      i, valid_sid;

    if (mcf == NULL || !mcf->enabled) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

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

    if (ngx_http_minichat_authenticate(r, &token, &user, &err) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: websocket refused: %s", err);
        return NGX_HTTP_UNAUTHORIZED;
    }

    key = ngx_http_minichat_header(r, "Sec-WebSocket-Key", sizeof("Sec-WebSocket-Key") - 1);
    version = ngx_http_minichat_header(r, "Sec-WebSocket-Version", sizeof("Sec-WebSocket-Version") - 1);
    proto = ngx_http_minichat_header(r, "Sec-WebSocket-Protocol", sizeof("Sec-WebSocket-Protocol") - 1);

    upgrade = ngx_http_minichat_header(r, "Upgrade", sizeof("Upgrade") - 1);
    connection = ngx_http_minichat_header(r, "Connection", sizeof("Connection") - 1);

    if (upgrade == NULL || !ngx_http_minichat_has_token(&upgrade->value, "websocket", 9)
        || connection == NULL || !ngx_http_minichat_has_token(&connection->value, "upgrade", 7))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: not a websocket upgrade request");
        return NGX_HTTP_BAD_REQUEST;
    }

    if (key == NULL || key->value.len != 24
        || version == NULL || version->value.len != 2 || ngx_strncmp(version->value.data, "13", 2) != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "minichat: missing or invalid Sec-WebSocket-Key or Sec-WebSocket-Version");
        return NGX_HTTP_BAD_REQUEST;
    }

    if (proto && !ngx_http_minichat_has_token(&proto->value, "minichat.v1", 11)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "minichat: unsupported subprotocol \"%V\"", &proto->value);
        return NGX_HTTP_BAD_REQUEST;
    }

    if (!ngx_http_minichat_redis_ready()) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "minichat: websocket refused: redis not connected");
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    c = r->connection;

#if (NGX_SSL)
    if (c->ssl) {
        /* `out` moves when it grows or compacts; OpenSSL must accept a
         * retried write from the new address */
        SSL_set_mode(c->ssl->connection, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
#endif

    ws = ngx_calloc(sizeof(ngx_http_minichat_ws_t), c->log);
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(ws);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_minichat_ws_cleanup;
    cln->data = ws;

    ws->request = r;
    ws->connection = c;
    ws->user = user;
    ws->id = ((uint64_t) ngx_pid << 32) | (++ngx_http_minichat_ws_counter & 0xffffffff);
    ws->deferred = 1;   /* nothing may close the request inside its handler */
    ngx_http_set_ctx(r, ws, ngx_http_minichat_module);

    /* a client may resume its session id; otherwise a new one is made */
    valid_sid = 0;
    if (ngx_http_arg(r, (u_char *) "sid", 3, &sid) == NGX_OK && sid.len == 16) {
        valid_sid = 1;
        for (i = 0; i < sid.len; i++) {
            if (!((sid.data[i] >= '0' && sid.data[i] <= '9') || (sid.data[i] >= 'a' && sid.data[i] <= 'f'))) {
                valid_sid = 0;
            }
        }
    }

    if (valid_sid) {
        ngx_memcpy(ws->sid_data, sid.data, 16);
    } else {
        ngx_sprintf(ws->sid_data, "%08xD%08xD", (uint32_t) ngx_random(), (uint32_t) ngx_random());
    }
    ws->sid.data = ws->sid_data;
    ws->sid.len = 16;

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
    if (proto) {
        p = ngx_cpymem(p, "\r\nSec-WebSocket-Protocol: minichat.v1",
                       sizeof("\r\nSec-WebSocket-Protocol: minichat.v1") - 1);
    }
    p = ngx_cpymem(p, "\r\n\r\n", 4);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->header_sent = 1;
    r->keepalive = 0;
    r->lingering_close = 0;

    if (ngx_http_minichat_ws_queue(ws, resp, p - resp) != NGX_OK) {
        return NGX_HTTP_CLOSE;
    }

    p = ngx_sprintf(hello, "{\"op\":\"hello\",\"sid\":\"%V\",\"user\":%uL,\"node\":\"", &ws->sid, user);
    n = ngx_min(mcf->node.len, 64);
    p = ngx_http_minichat_json_escape(p, mcf->node.data, n);
    p = ngx_cpymem(p, "\"}", 2);

    if (ngx_http_minichat_ws_text(ws, hello, p - hello) != NGX_OK) {
        return NGX_HTTP_CLOSE;
    }

    /* frames pipelined behind the upgrade request are already read */
    n = r->header_in->last - r->header_in->pos;
    if (n) {
        ws->in = ngx_alloc(ngx_max(n, 4096), c->log);
        if (ws->in == NULL) {
            return NGX_HTTP_CLOSE;
        }
        ws->in_cap = ngx_max(n, 4096);
        ngx_memcpy(ws->in, r->header_in->pos, n);
        ws->in_len = n;
        r->header_in->pos = r->header_in->last;
    }

    ngx_queue_insert_tail(&ngx_http_minichat_users[user % NGX_HTTP_MINICHAT_USER_BUCKETS], &ws->by_user);
    ws->registered = 1;

    r->main->count++;
    r->read_event_handler = ngx_http_minichat_ws_read;
    r->write_event_handler = ngx_http_minichat_ws_write;

    /* let a graceful shutdown close it like an idle keepalive connection */
    c->idle = 1;

    /* small frames must not wait for the peer's delayed ACK (Nagle) */
    if (ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "minichat: TCP_NODELAY failed");
    }

    ngx_log_error(NGX_LOG_INFO, c->log, 0, "minichat: user %uL connected, session %V", user, &ws->sid);

    /* the session: which node holds it, for presence and routing later */
    {
        const char  *argv[5];
        size_t       argvlen[5];
        u_char       skey[96];

        argv[0] = "SET";
        argv[1] = (const char *) skey;
        argvlen[1] = ngx_sprintf(skey, "{u:%uL}:sess:%V", user, &ws->sid) - skey;
        argv[2] = (const char *) mcf->node.data;
        argvlen[2] = mcf->node.len;
        argv[3] = "EX";
        argv[4] = "3600";
        argvlen[0] = 3;
        argvlen[3] = 2;
        argvlen[4] = 4;

        (void) ngx_http_minichat_redis_argv(5, argv, argvlen, NULL, NULL);
    }

    /* the 101, the hello and any pipelined frames are handled from the
     * event loop, once this handler has returned */
    ws->deferred = 0;
    ngx_post_event(c->write, &ngx_posted_events);
    if (mcf->ping_interval) {
        ngx_add_timer(c->read, mcf->ping_interval);
    }
    if (ws->in_len || c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    return NGX_DONE;
}


static void
ngx_http_minichat_ws_cleanup(void *data)
{
    ngx_http_minichat_ws_t  *ws = data;

    if (ws->registered) {
        ngx_queue_remove(&ws->by_user);
        ws->registered = 0;
    }

    if (ngx_exiting && !ws->closing && ws->out_pos == ws->out_len && ws->connection->fd != (ngx_socket_t) -1) {
        /* nginx closes us for a graceful shutdown or reload: say so with
         * 1001 "going away" (best effort, the socket is about to close) */
        static u_char  going_away[] = { 0x80 | MC_WS_OP_CLOSE, 2, 1001 >> 8, 1001 & 0xff };

        (void) ws->connection->send(ws->connection, going_away, sizeof(going_away));
    }

    ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0, "minichat: user %uL disconnected", ws->user);

    ws->request = NULL;
    ws->connection = NULL;
    ws->closed = 1;

    ngx_http_minichat_ws_release(ws);
}


/* Frees the connection's memory once it is closed and nothing refers to it. */
static void
ngx_http_minichat_ws_release(ngx_http_minichat_ws_t *ws)
{
    if (!ws->closed || ws->pending) {
        return;
    }

    if (ws->in) {
        ngx_free(ws->in);
    }
    if (ws->msg) {
        ngx_free(ws->msg);
    }
    if (ws->out) {
        ngx_free(ws->out);
    }

    ngx_free(ws);
}


static void
ngx_http_minichat_ws_read(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_ws_t         *ws;
    ngx_connection_t               *c;
    ssize_t                         n;
    size_t                          want;
    u_char                         *p;

    ws = ngx_http_get_module_ctx(r, ngx_http_minichat_module);
    c = r->connection;

    if (c->read->timedout) {
        /* the ping tick: a client silent for a whole interval is pinged,
         * and one still silent an interval later is gone */
        c->read->timedout = 0;

        if (ws->ping_sent) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0, "minichat: user %uL did not answer a ping; closing", ws->user);
            ngx_http_minichat_ws_abort(ws);
            return;
        }

        if (!ws->got_data) {
            u_char  ping[2] = { 0x80 | MC_WS_OP_PING, 0 };

            if (ngx_http_minichat_ws_queue(ws, ping, 2) != NGX_OK) {
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
            want = ngx_min(ngx_max(want, ws->in_cap * 2), mcf->max_message_size + NGX_HTTP_MINICHAT_WS_MAX_HEADER);
            if (want <= ws->in_len) {
                ngx_http_minichat_ws_close(ws, MC_WS_CLOSE_TOO_BIG, "message too big");
                return;
            }
            p = ngx_alloc(want, c->log);
            if (p == NULL) {
                ngx_http_minichat_ws_abort(ws);
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
            ngx_http_minichat_ws_abort(ws);
            return;
        }

        ws->in_len += n;
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
        ngx_http_minichat_ws_abort(ws);
        return;
    }

    if (mcf->ping_interval && !c->read->timer_set) {
        ngx_add_timer(c->read, mcf->ping_interval);
    }
}


/* Handles every complete frame in `in`.  Returns NGX_OK, or NGX_ERROR when
 * the connection was closed (ws must not be touched then). */
static ngx_int_t
ngx_http_minichat_ws_process(ngx_http_minichat_ws_t *ws)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    mc_ws_frame_t                   f;
    size_t                          off = 0, total;
    int                             rc;

    while (off < ws->in_len && !ws->closing) {
        rc = mc_ws_parse_header(ws->in + off, ws->in_len - off, mcf->max_message_size, &f);

        if (rc == MC_WS_AGAIN) {
            break;
        }

        if (rc != MC_WS_OK) {
            ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0, "minichat: websocket protocol error %d", rc);
            ngx_http_minichat_ws_close(ws, mc_ws_error_close_code(rc),
                                       rc == MC_WS_ERR_TOO_BIG ? "message too big" : "protocol error");
            return NGX_ERROR;
        }

        total = f.header_len + f.payload_len;
        if (ws->in_len - off < total) {
            break;
        }

        mc_ws_unmask(ws->in + off + f.header_len, f.payload_len, f.mask, 0);

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
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    u_char                          hdr[10], *p;
    size_t                          n, len = f->payload_len;
    ngx_uint_t                      code;

    switch (f->opcode) {

    case MC_WS_OP_PING:
        n = mc_ws_header(hdr, MC_WS_OP_PONG, 1, len);
        if (ngx_http_minichat_ws_queue(ws, hdr, n) != NGX_OK
            || ngx_http_minichat_ws_queue(ws, payload, len) != NGX_OK)
        {
            return NGX_ERROR;
        }
        return NGX_OK;

    case MC_WS_OP_PONG:
        return NGX_OK;

    case MC_WS_OP_CLOSE:
        code = MC_WS_CLOSE_NORMAL;
        if (len == 1) {
            ngx_http_minichat_ws_close(ws, MC_WS_CLOSE_PROTOCOL, "bad close frame");
            return NGX_ERROR;
        }
        if (len >= 2) {
            code = (payload[0] << 8) | payload[1];
            if (code < 1000 || code == 1004 || code == 1005 || code == 1006 || (code > 1014 && code < 3000)
                || code >= 5000 || !mc_utf8_valid(payload + 2, len - 2))
            {
                ngx_http_minichat_ws_close(ws, MC_WS_CLOSE_PROTOCOL, "bad close frame");
                return NGX_ERROR;
            }
        }
        ngx_http_minichat_ws_close(ws, len >= 2 ? code : MC_WS_CLOSE_NORMAL, "");
        return NGX_ERROR;

    case MC_WS_OP_BINARY:
        ngx_http_minichat_ws_close(ws, MC_WS_CLOSE_UNSUPPORTED, "text frames only");
        return NGX_ERROR;

    case MC_WS_OP_TEXT:
        if (ws->msg_opcode) {
            ngx_http_minichat_ws_close(ws, MC_WS_CLOSE_PROTOCOL, "expected a continuation frame");
            return NGX_ERROR;
        }
        if (f->fin) {
            return ngx_http_minichat_ws_message(ws, payload, len);
        }
        /* the buffer grows with the fragments, never ahead of them */
        ws->msg = ngx_alloc(ngx_max(len, 1024), ws->connection->log);
        if (ws->msg == NULL) {
            ngx_http_minichat_ws_abort(ws);
            return NGX_ERROR;
        }
        ngx_memcpy(ws->msg, payload, len);
        ws->msg_len = len;
        ws->msg_cap = ngx_max(len, 1024);
        ws->msg_opcode = MC_WS_OP_TEXT;
        return NGX_OK;

    default: /* MC_WS_OP_CONT */
        if (!ws->msg_opcode) {
            ngx_http_minichat_ws_close(ws, MC_WS_CLOSE_PROTOCOL, "unexpected continuation frame");
            return NGX_ERROR;
        }
        if (ws->msg_len + len > mcf->max_message_size) {
            ngx_http_minichat_ws_close(ws, MC_WS_CLOSE_TOO_BIG, "message too big");
            return NGX_ERROR;
        }
        if (ws->msg_len + len > ws->msg_cap) {
            n = ngx_min(ngx_max(ws->msg_cap * 2, ws->msg_len + len), mcf->max_message_size);
            p = ngx_alloc(n, ws->connection->log);
            if (p == NULL) {
                ngx_http_minichat_ws_abort(ws);
                return NGX_ERROR;
            }
            ngx_memcpy(p, ws->msg, ws->msg_len);
            ngx_free(ws->msg);
            ws->msg = p;
            ws->msg_cap = n;
        }
        ngx_memcpy(ws->msg + ws->msg_len, payload, len);
        ws->msg_len += len;
        if (!f->fin) {
            return NGX_OK;
        }
        p = ws->msg;
        len = ws->msg_len;
        ws->msg = NULL;
        ws->msg_len = 0;
        ws->msg_cap = 0;
        ws->msg_opcode = 0;
        if (ngx_http_minichat_ws_message(ws, p, len) != NGX_OK) {
            ngx_free(p);
            return NGX_ERROR;
        }
        ngx_free(p);
        return NGX_OK;
    }
}


/* One complete text message: a JSON request of protocol v1. */
static ngx_int_t
ngx_http_minichat_ws_message(ngx_http_minichat_ws_t *ws, u_char *data, size_t len)
{
    json_t      *req, *v;
    const char  *op;
    int64_t      id = 0;
    ngx_uint_t   has_id = 0;
    ngx_int_t    rc;

    if (!mc_utf8_valid(data, len)) {
        ngx_http_minichat_ws_close(ws, MC_WS_CLOSE_BAD_DATA, "invalid UTF-8");
        return NGX_ERROR;
    }

    req = json_loadb((const char *) data, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        return ngx_http_minichat_ws_error(ws, 0, 0, "bad_request", "a request is a JSON object");
    }

    v = json_object_get(req, "id");
    if (v) {
        if (!json_is_integer(v)) {
            json_decref(req);
            return ngx_http_minichat_ws_error(ws, 0, 0, "bad_request", "\"id\" must be an integer");
        }
        id = json_integer_value(v);
        has_id = 1;
    }

    op = json_string_value(json_object_get(req, "op"));
    if (op == NULL) {
        rc = ngx_http_minichat_ws_error(ws, id, has_id, "bad_request", "\"op\" must be a string");

    } else if (ngx_strcmp(op, "send") == 0) {
        rc = ngx_http_minichat_ws_send(ws, req, id, has_id);

    } else {
        rc = ngx_http_minichat_ws_error(ws, id, has_id, "bad_request", "unknown op");
    }

    json_decref(req);
    return rc;
}


static ngx_int_t
ngx_http_minichat_ws_send(ngx_http_minichat_ws_t *ws, json_t *req, int64_t id, ngx_uint_t has_id)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_send_t       *s;
    json_t                         *jroom, *jcid, *jbody;
    const char                     *argv[6];
    size_t                          argvlen[6], cid_len, body_len;
    u_char                          keys[4][48], args[4][NGX_INT64_LEN + 1];
    json_int_t                      room;
    ngx_uint_t                      i;

    jroom = json_object_get(req, "room");
    jcid = json_object_get(req, "cid");
    jbody = json_object_get(req, "body");

    if (!json_is_integer(jroom) || json_integer_value(jroom) <= 0) {
        return ngx_http_minichat_ws_error(ws, id, has_id, "bad_request", "\"room\" must be a positive integer");
    }
    if (!json_is_string(jcid) || json_string_length(jcid) == 0
        || json_string_length(jcid) > NGX_HTTP_MINICHAT_CID_MAX)
    {
        return ngx_http_minichat_ws_error(ws, id, has_id, "bad_request",
                                          "\"cid\" must be a string of 1 to 64 bytes");
    }
    if (!json_is_string(jbody) || json_string_length(jbody) == 0) {
        return ngx_http_minichat_ws_error(ws, id, has_id, "bad_request", "\"body\" must be a non-empty string");
    }
    if (memchr(json_string_value(jcid), '\0', json_string_length(jcid))) {
        return ngx_http_minichat_ws_error(ws, id, has_id, "bad_request", "\"cid\" must not contain NUL");
    }

    if (ws->pending >= NGX_HTTP_MINICHAT_MAX_INFLIGHT) {
        return ngx_http_minichat_ws_error(ws, id, has_id, "rate_limited",
                                          "too many sends awaiting their ack; wait for acks");
    }

    if (!ngx_http_minichat_relay_ready()) {
        /* without the relay the message could not be persisted: refuse it
         * before a seq is spent */
        return ngx_http_minichat_ws_error(ws, id, has_id, "unavailable", "relay-worker not connected; retry");
    }

    room = json_integer_value(jroom);
    cid_len = json_string_length(jcid);
    body_len = json_string_length(jbody);

    s = ngx_alloc(sizeof(ngx_http_minichat_send_t) + cid_len + body_len, ws->connection->log);
    if (s == NULL) {
        return ngx_http_minichat_ws_error(ws, id, has_id, "unavailable", "out of memory");
    }

    s->ws = ws;
    s->id = id;
    s->has_id = has_id;
    s->room = (uint64_t) room;
    s->ts = ngx_http_minichat_now_ms();
    s->cid = (u_char *) (s + 1);
    s->cid_len = cid_len;
    s->body = s->cid + cid_len;
    s->body_len = body_len;
    ngx_memcpy(s->cid, json_string_value(jcid), cid_len);
    ngx_memcpy(s->body, json_string_value(jbody), body_len);

    for (i = 0; i < 4; i++) {
        argv[i] = (const char *) keys[i];
        argvlen[i] = ngx_sprintf(keys[i], "{r:%uL}:%s", s->room, ngx_http_minichat_room_keys[i]) - keys[i];
    }

    /* the keys, then: sender, cid, body, ts, log_max, idem_ttl */
    {
        const char  *av[10];
        size_t       al[10];

        for (i = 0; i < 4; i++) {
            av[i] = argv[i];
            al[i] = argvlen[i];
        }

        av[4] = (const char *) args[0];
        al[4] = ngx_sprintf(args[0], "%uL", ws->user) - args[0];
        av[5] = (const char *) s->cid;
        al[5] = s->cid_len;
        av[6] = (const char *) s->body;
        al[6] = s->body_len;
        av[7] = (const char *) args[1];
        al[7] = ngx_sprintf(args[1], "%uL", s->ts) - args[1];
        av[8] = (const char *) args[2];
        al[8] = ngx_sprintf(args[2], "%ui", mcf->log_max) - args[2];
        av[9] = (const char *) args[3];
        al[9] = ngx_sprintf(args[3], "%T", mcf->idem_ttl) - args[3];

        if (ngx_http_minichat_redis_script(MINICHAT_LUA_SEND_SHA1, MINICHAT_LUA_SEND_SRC, 4, 10, av, al,
                                           ngx_http_minichat_ws_send_reply, s)
            != NGX_OK)
        {
            ngx_free(s);
            return ngx_http_minichat_ws_error(ws, id, has_id, "unavailable", "storage unavailable; retry");
        }
    }

    ws->pending++;

    return NGX_OK;
}


/* Builds the `msg` frame for m into a new buffer *buf; the frame starts at
 * *frame.  Returns the frame's length, or 0 when out of memory. */
static size_t
ngx_http_minichat_msg_frame(Minichat__ChatMessage *m, u_char **buf, u_char **frame, ngx_log_t *log)
{
    size_t   cid_len, body_len, plen, hlen;
    u_char  *b, *p, hdr[10];

    cid_len = ngx_strlen(m->cid);
    body_len = ngx_strlen(m->body);

    plen = sizeof("{\"op\":\"msg\",\"room\":,\"seq\":,\"from\":,\"cid\":\"\",\"body\":\"\",\"ts\":}") - 1
           + 4 * NGX_INT64_LEN
           + ngx_http_minichat_json_escape_len((u_char *) m->cid, cid_len)
           + ngx_http_minichat_json_escape_len((u_char *) m->body, body_len);

    b = ngx_alloc(plen + 10, log);
    if (b == NULL) {
        return 0;
    }

    p = b + 10;
    p = ngx_sprintf(p, "{\"op\":\"msg\",\"room\":%uL,\"seq\":%uL,\"from\":%uL,\"cid\":\"",
                    (uint64_t) m->room, (uint64_t) m->seq, (uint64_t) m->sender);
    p = ngx_http_minichat_json_escape(p, (u_char *) m->cid, cid_len);
    p = ngx_cpymem(p, "\",\"body\":\"", sizeof("\",\"body\":\"") - 1);
    p = ngx_http_minichat_json_escape(p, (u_char *) m->body, body_len);
    p = ngx_sprintf(p, "\",\"ts\":%uL}", (uint64_t) m->ts);

    plen = p - (b + 10);
    hlen = mc_ws_header(hdr, MC_WS_OP_TEXT, 1, plen);

    /* the header goes right before the payload: one contiguous frame */
    ngx_memcpy(b + 10 - hlen, hdr, hlen);

    *buf = b;
    *frame = b + 10 - hlen;

    return hlen + plen;
}


void
ngx_http_minichat_deliver(Minichat__ChatMessage *m)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_ws_t  *ws;
    ngx_uint_t               ours;
    ngx_queue_t             *bucket, *q, *next;
    u_char                  *buf = NULL, *frame = NULL;
    size_t                   len = 0, i;
    uint64_t                 user;

    /* the sending connection got an ack; it is skipped when it lives here */
    ours = m->origin_conn && m->origin_node && ngx_strlen(m->origin_node) == mcf->node.len
           && ngx_strncmp(m->origin_node, mcf->node.data, mcf->node.len) == 0;

    for (i = 0; i < m->n_recipients; i++) {
        user = m->recipients[i];
        bucket = &ngx_http_minichat_users[user % NGX_HTTP_MINICHAT_USER_BUCKETS];

        for (q = ngx_queue_head(bucket); q != ngx_queue_sentinel(bucket); q = next) {
            next = ngx_queue_next(q);
            ws = ngx_queue_data(q, ngx_http_minichat_ws_t, by_user);

            if (ws->user != user || ws->closing || ws->closed || (ours && ws->id == m->origin_conn)) {
                continue;
            }

            if (buf == NULL) {
                len = ngx_http_minichat_msg_frame(m, &buf, &frame, ngx_cycle->log);
                if (len == 0) {
                    return;
                }
            }

            /* a queue overflow closes ws, which unlinks it: `next` was taken first */
            (void) ngx_http_minichat_ws_queue(ws, frame, len);
        }
    }

    if (buf) {
        ngx_free(buf);
    }
}


static void
ngx_http_minichat_ws_send_reply(redisReply *reply, void *data)
{
    ngx_http_minichat_send_t       *s = data;
    ngx_http_minichat_ws_t         *ws = s->ws;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    Minichat__LocalFrame            f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__ChatMessage           m = MINICHAT__CHAT_MESSAGE__INIT;
    uint64_t                       *recipients = NULL;
    u_char                         *cid, *body;
    long long                       status, seq, ts;
    size_t                          i, n;
    ngx_uint_t                      published;

    /* ws->pending still counts this reply, so ws stays valid even when an
     * error or the ack below closes the connection */

    if (ws->closed) {
        /* the client left; a new message was still admitted and must travel
         * on to persistence below, but there is nobody to ack */
        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
            || reply->element[0]->integer != 1)
        {
            goto done;
        }
    }

    if (reply == NULL) {
        (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "unavailable", "storage unavailable; retry");
        goto done;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: send script failed: %s", reply->str);
        (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "unavailable", "storage error; retry");
        goto done;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: unexpected reply from send script");
        (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "unavailable", "storage error; retry");
        goto done;
    }

    status = reply->element[0]->integer;

    if (status == -1) {
        (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "forbidden", "not a member of this room");
        goto done;
    }

    if ((status != 1 && status != 2) || reply->elements < 3
        || reply->element[1]->type != REDIS_REPLY_INTEGER || reply->element[2]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: unexpected status %L from send script", status);
        (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "unavailable", "storage error; retry");
        goto done;
    }

    seq = reply->element[1]->integer;
    ts = reply->element[2]->integer;

    /*
     * A new message goes to the relay-worker: other workers and nodes (in
     * room order, the sender's own worker included), and Kafka.  A repeated
     * cid goes again for persistence only: its first hand-off may be what
     * failed, and the consumer's INSERT IGNORE absorbs a repeat.  Only once
     * the relay link took the frame is the send acked.
     */
    n = status == 1 ? reply->elements - 3 : 0;
    if (n) {
        recipients = ngx_alloc(n * sizeof(uint64_t), ngx_cycle->log);
        if (recipients == NULL) {
            (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "unavailable", "out of memory; retry");
            goto done;
        }
    }
    for (i = 0; i < n; i++) {
        recipients[i] = (uint64_t) reply->element[3 + i]->integer;
    }

    cid = ngx_alloc(s->cid_len + 1 + s->body_len + 1, ngx_cycle->log);
    if (cid == NULL) {
        (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "unavailable", "out of memory; retry");
        goto done;
    }
    body = cid + s->cid_len + 1;
    *ngx_cpymem(cid, s->cid, s->cid_len) = '\0';
    *ngx_cpymem(body, s->body, s->body_len) = '\0';

    m.room = s->room;
    m.seq = (uint64_t) seq;
    m.sender = ws->user;
    m.cid = (char *) cid;
    m.body = (char *) body;
    m.ts = (uint64_t) ts;
    m.recipients = recipients;
    m.n_recipients = n;
    m.origin_node = (char *) mcf->node.data;
    m.origin_conn = ws->id;
    m.persist_only = (status == 2);

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_PUBLISH;
    f.publish = &m;

    s->seq = seq;
    s->ts = (uint64_t) ts;

    /* the ack waits for the relay-worker's word that Kafka has the message */
    published = (ngx_http_minichat_relay_request(&f, ngx_http_minichat_ws_published, s) == NGX_OK);

    ngx_free(cid);

    if (!published) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "minichat: room %uL seq %L admitted but not handed to the relay-worker; "
                      "a retry with the same cid repairs it", s->room, seq);
        (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "unavailable",
                                          "relay-worker unavailable; retry with the same cid");
        goto done;
    }

    if (recipients) {
        ngx_free(recipients);
    }

    /* s and ws->pending now belong to ngx_http_minichat_ws_published() */
    return;

done:

    if (recipients) {
        ngx_free(recipients);
    }
    ngx_free(s);
    ws->pending--;
    ngx_http_minichat_ws_release(ws);
}


/* The relay-worker's answer to a publish: the message is durable in Kafka
 * (ack), or not (error; the client retries with the same cid). */
static void
ngx_http_minichat_ws_published(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_send_t  *s = data;
    ngx_http_minichat_ws_t    *ws = s->ws;
    u_char                     ack[sizeof("{\"op\":\"ack\",\"id\":,\"room\":,\"cid\":\"\",\"seq\":,\"ts\":}")
                                   + 4 * NGX_INT64_LEN + 6 * NGX_HTTP_MINICHAT_CID_MAX];
    u_char                    *p;

    if (result == NULL || result->publish_result == NULL || !result->publish_result->ok) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "minichat: room %uL seq %L not confirmed durable: %s", s->room, s->seq,
                      result && result->publish_result ? result->publish_result->error : "no answer from relay-worker");
        (void) ngx_http_minichat_ws_error(ws, s->id, s->has_id, "unavailable",
                                          "message not stored; retry with the same cid");
        goto done;
    }

    if (ws->closed) {
        goto done;
    }

    p = ngx_sprintf(ack, "{\"op\":\"ack\",");
    if (s->has_id) {
        p = ngx_sprintf(p, "\"id\":%L,", s->id);
    }
    p = ngx_sprintf(p, "\"room\":%uL,\"cid\":\"", s->room);
    p = ngx_http_minichat_json_escape(p, s->cid, s->cid_len);
    p = ngx_sprintf(p, "\",\"seq\":%L,\"ts\":%uL}", s->seq, s->ts);

    (void) ngx_http_minichat_ws_text(ws, ack, p - ack);

done:

    ngx_free(s);
    ws->pending--;
    ngx_http_minichat_ws_release(ws);
}


static ngx_int_t
ngx_http_minichat_ws_error(ngx_http_minichat_ws_t *ws, int64_t id, ngx_uint_t has_id, const char *code,
    const char *message)
{
    u_char  buf[sizeof("{\"op\":\"error\",\"id\":,\"code\":\"\",\"message\":\"\"}") + NGX_INT64_LEN + 32
                + 6 * 200], *p;

    if (ws->closed) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(buf, "{\"op\":\"error\",");
    if (has_id) {
        p = ngx_sprintf(p, "\"id\":%L,", id);
    }
    p = ngx_sprintf(p, "\"code\":\"%s\",\"message\":\"", code);
    p = ngx_http_minichat_json_escape(p, (const u_char *) message, ngx_min(ngx_strlen(message), 200));
    p = ngx_cpymem(p, "\"}", 2);

    return ngx_http_minichat_ws_text(ws, buf, p - buf);
}


/* Queues one unfragmented text frame. */
static ngx_int_t
ngx_http_minichat_ws_text(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len)
{
    u_char  hdr[10];
    size_t  n;

    n = mc_ws_header(hdr, MC_WS_OP_TEXT, 1, len);

    if (ngx_http_minichat_ws_queue(ws, hdr, n) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_minichat_ws_queue(ws, data, len);
}


/* Appends bytes for the client and writes what the socket takes.  Returns
 * NGX_ERROR when the connection was closed (queue overflow, write error). */
static ngx_int_t
ngx_http_minichat_ws_queue(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    size_t                          used, cap;
    u_char                         *p;

    if (ws->closed) {
        return NGX_ERROR;
    }

    used = ws->out_len - ws->out_pos;

    if (used + len > mcf->send_queue_size) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "minichat: user %uL is not reading, %uz bytes queued; closing", ws->user, used);
        ngx_http_minichat_ws_abort(ws);
        return NGX_ERROR;
    }

    if (ws->out_len + len > ws->out_cap) {
        if (ws->out_pos) {
            ngx_memmove(ws->out, ws->out + ws->out_pos, used);
            ws->out_pos = 0;
            ws->out_len = used;
        }

        if (used + len > ws->out_cap) {
            cap = ngx_max(ws->out_cap * 2, ngx_max(used + len, 1024));
            p = ngx_alloc(cap, ws->connection->log);
            if (p == NULL) {
                ngx_http_minichat_ws_abort(ws);
                return NGX_ERROR;
            }
            if (ws->out) {
                ngx_memcpy(p, ws->out, used);
                ngx_free(ws->out);
            }
            ws->out = p;
            ws->out_cap = cap;
        }
    }

    ngx_memcpy(ws->out + ws->out_len, data, len);
    ws->out_len += len;

    if (ws->deferred || !ws->connection->write->ready) {
        /* the write event will take it */
        return NGX_OK;
    }

    return ngx_http_minichat_ws_flush(ws);
}


/* Writes queued bytes.  Returns NGX_OK (all written or waiting for the
 * socket) or NGX_ERROR when the connection was closed. */
static ngx_int_t
ngx_http_minichat_ws_flush(ngx_http_minichat_ws_t *ws)
{
    ngx_connection_t  *c = ws->connection;
    ssize_t            n;

    while (ws->out_pos < ws->out_len) {
        n = c->send(c, ws->out + ws->out_pos, ws->out_len - ws->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_http_minichat_ws_abort(ws);
                return NGX_ERROR;
            }
            return NGX_OK;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_minichat_ws_abort(ws);
            return NGX_ERROR;
        }

        ws->out_pos += n;
    }

    /* drained: an idle connection holds no output buffer */
    ws->out_pos = 0;
    ws->out_len = 0;
    if (ws->out) {
        ngx_free(ws->out);
        ws->out = NULL;
        ws->out_cap = 0;
    }

    if (ws->closing) {
        ngx_http_minichat_ws_abort(ws);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_ws_write(ngx_http_request_t *r)
{
    ngx_http_minichat_ws_t  *ws;

    ws = ngx_http_get_module_ctx(r, ngx_http_minichat_module);

    (void) ngx_http_minichat_ws_flush(ws);
}


/* Queues a close frame; the connection closes once it is written. */
static void
ngx_http_minichat_ws_close(ngx_http_minichat_ws_t *ws, ngx_uint_t code, const char *reason)
{
    u_char  frame[2 + 2 + 123];
    size_t  n;

    if (ws->closing || ws->closed) {
        return;
    }

    n = ngx_min(ngx_strlen(reason), 123);
    frame[0] = 0x80 | MC_WS_OP_CLOSE;
    frame[1] = (u_char) (2 + n);
    frame[2] = (u_char) (code >> 8);
    frame[3] = (u_char) code;
    ngx_memcpy(frame + 4, reason, n);

    ws->closing = 1;

    if (ngx_http_minichat_ws_queue(ws, frame, 4 + n) != NGX_OK) {
        return;
    }

    if (ws->out_len == 0 && !ws->closed) {
        ngx_http_minichat_ws_abort(ws);
    }
}


/* Closes the connection now; the pool cleanup unregisters it. */
static void
ngx_http_minichat_ws_abort(ngx_http_minichat_ws_t *ws)
{
    ngx_http_request_t  *r = ws->request;

    if (r == NULL || ws->closed) {
        return;
    }

    /* keep ws alive across the cleanup that finalizing runs; without a
     * write_event_handler nginx closes the request at once instead of
     * posting the termination to the connection's next event */
    ws->pending++;
    r->write_event_handler = NULL;
    ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
    ws->pending--;

    ngx_http_minichat_ws_release(ws);
}


static ngx_table_elt_t *
ngx_http_minichat_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;
    ngx_uint_t        i;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0) {
            return &h[i];
        }
    }
}


/* Returns 1 when a comma-separated header value holds the token (any case). */
static ngx_int_t
ngx_http_minichat_has_token(ngx_str_t *value, const char *token, size_t len)
{
    u_char  *p = value->data, *end = value->data + value->len, *s;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }
        s = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }
        if ((size_t) (p - s) == len && ngx_strncasecmp(s, (u_char *) token, len) == 0) {
            return 1;
        }
    }

    return 0;
}
