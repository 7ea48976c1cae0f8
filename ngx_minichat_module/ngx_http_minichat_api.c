/*
 * The REST API (location with `minichat_api`): routing, request bodies, JSON
 * answers and the life of a request while Redis or the relay-worker works
 * on it.
 *
 *   POST /api/rooms                      create a room (Idempotency-Key)
 *   GET  /api/rooms?limit=&cursor=       my rooms by last activity, with unread
 *   GET  /api/rooms/<id>                 details and members
 *   POST /api/rooms/<id>/invite          {"members":[…]}
 *   POST /api/rooms/<id>/leave
 *   GET  /api/rooms/<id>/messages?before=&limit=
 *   POST /api/rooms/<id>/read            {"seq":n}
 *
 * The JWT comes in `Authorization: Bearer` (or ?token=).  Errors are JSON,
 * {"code":"…","message":"…"}, with a matching status.  The operations
 * themselves live in _api_rooms.c; this file gives them a context that
 * outlives the request when nginx closes it early (a client gone, a
 * worker_shutdown_timeout): the pool cleanup only detaches it, and the last
 * pending callback frees it.
 *
 * Every request of a user (not the server API's) first runs the caller's
 * ban check and limit (lua/limit.lua: the ban, and minichat_limit_rest when
 * configured), whatever limits are configured: a refusal is 429
 * with Retry-After (seconds, rounded up) and {"code":"rate_limited",
 * "retry_after_ms":N}, a ban 403 {"code":"banned","until":ms|null}.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/decimal.h"


#define NGX_HTTP_MINICHAT_API_BODY_MAX   65536


typedef struct {
    ngx_uint_t                    method;
    const char                   *path;     /* after /api/rooms; "" or "/<id>…" */
    ngx_http_minichat_api_pt      handler;
    ngx_uint_t                    body;     /* NGX_HTTP_MINICHAT_API_NO_BODY, _BODY */
} ngx_http_minichat_route_t;


static void ngx_http_minichat_api_body(ngx_http_request_t *r);
static void ngx_http_minichat_api_cleanup(void *data);
static ngx_int_t ngx_http_minichat_api_json(ngx_http_request_t *r, ngx_uint_t status, const u_char *body,
    size_t len);
static ngx_int_t ngx_http_minichat_api_error(ngx_http_request_t *r, ngx_uint_t status, const char *code,
    const char *message);
static ngx_int_t ngx_http_minichat_api_run(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);
static void ngx_http_minichat_api_checked(ngx_int_t rc, uint64_t value, void *data);


static ngx_http_minichat_route_t  ngx_http_minichat_routes[] = {
    { NGX_HTTP_POST, "",          ngx_http_minichat_api_create, 1 },
    { NGX_HTTP_GET,  "",          ngx_http_minichat_api_list, 0 },
    { NGX_HTTP_GET,  "/",         ngx_http_minichat_api_details, 0 },
    { NGX_HTTP_POST, "/invite",   ngx_http_minichat_api_invite, 1 },
    { NGX_HTTP_POST, "/leave",    ngx_http_minichat_api_leave, 0 },
    { NGX_HTTP_GET,  "/messages", ngx_http_minichat_api_messages, 0 },
    { NGX_HTTP_POST, "/read",     ngx_http_minichat_api_read, 1 },
    { 0, NULL, NULL, 0 }
};


/* Splits the URI into a route: "/api/rooms" + "" or "/<id>" + suffix.
 * Returns NGX_DECLINED for no such path. */
static ngx_int_t
ngx_http_minichat_api_route(ngx_http_request_t *r, uint64_t *room, ngx_str_t *suffix)
{
    u_char    *p, *q, *end;
    uint64_t   id;

    if (r->uri.len < sizeof("/api/rooms") - 1
        || ngx_strncmp(r->uri.data, "/api/rooms", sizeof("/api/rooms") - 1) != 0)
    {
        return NGX_DECLINED;
    }

    p = r->uri.data + sizeof("/api/rooms") - 1;
    end = r->uri.data + r->uri.len;

    *room = 0;
    suffix->data = p;
    suffix->len = 0;

    if (p == end) {
        return NGX_OK;
    }

    if (*p++ != '/' || p == end) {
        return NGX_DECLINED;
    }

    for (q = p; q < end && *q >= '0' && *q <= '9'; q++) {
        /* the room id's digits */
    }

    if (mc_parse_u64((const char *) p, q - p, &id) != 0 || id == 0) {
        return NGX_DECLINED;
    }

    *room = id;
    suffix->data = q;
    suffix->len = end - q;

    return NGX_OK;
}


ngx_int_t
ngx_http_minichat_api_handler(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_route_t      *rt;
    ngx_str_t                       token, suffix;
    const char                     *err, *path;
    uint64_t                        user, room;
    ngx_uint_t                      path_found = 0;
    ngx_int_t                       auth;
    time_t                          exp;

    if (mcf == NULL || !mcf->enabled) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /* first: a ?token= is hidden from the logs before any answer */
    auth = ngx_http_minichat_authenticate(r, &token, &user, &exp, &err);
    if (auth == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_minichat_api_route(r, &room, &suffix) != NGX_OK) {
        ngx_http_discard_request_body(r);
        return ngx_http_minichat_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", "no such endpoint");
    }

    for (rt = ngx_http_minichat_routes; rt->path; rt++) {
        path = rt->path;
        if (room == 0 ? path[0] != '\0'
                      : !(path[0] == '/' && ((path[1] == '\0' && suffix.len == 0)
                                             || (path[1] && suffix.len == ngx_strlen(path)
                                                 && ngx_strncmp(suffix.data, path, suffix.len) == 0))))
        {
            continue;
        }
        path_found = 1;
        if (rt->method == r->method) {
            break;
        }
    }

    if (rt->path == NULL) {
        ngx_http_discard_request_body(r);
        if (path_found) {
            return ngx_http_minichat_api_error(r, NGX_HTTP_NOT_ALLOWED, "bad_request", "method not allowed here");
        }
        return ngx_http_minichat_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", "no such endpoint");
    }

    if (auth != NGX_OK) {
        ngx_http_discard_request_body(r);
        return ngx_http_minichat_api_error(r, NGX_HTTP_UNAUTHORIZED, "unauthorized", err);
    }

    return ngx_http_minichat_api_begin(r, rt->handler, rt->body, user, room, 0);
}


/* Runs a routed, authenticated request: checks the body's size, gives the
 * request a context that may outlive it, reads the JSON body when the route
 * takes one, and runs handler; server is 0 for the user API (the caller's
 * per-user limit runs first), or the server API's endpoint + 1 (no limit;
 * its answers are counted).  Returns what a content handler returns. */
ngx_int_t
ngx_http_minichat_api_begin(ngx_http_request_t *r, ngx_http_minichat_api_pt handler, ngx_uint_t body,
    uint64_t user, uint64_t room, ngx_uint_t server)
{
    ngx_http_minichat_api_t  *ctx;
    ngx_pool_cleanup_t       *cln;
    ngx_int_t                 rc;

    if (r->headers_in.content_length_n > NGX_HTTP_MINICHAT_API_BODY_MAX) {
        ngx_http_discard_request_body(r);
        if (server) {
            ngx_http_minichat_metrics_server_api(server - 1, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE);
        }
        return ngx_http_minichat_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
                                           "request body over 64 KiB");
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_minichat_api_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the part that may outlive the request */
    ctx->live = ngx_calloc(sizeof(ngx_http_minichat_api_live_t), r->connection->log);
    if (ctx->live == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_minichat_api_cleanup;
    cln->data = ctx->live;

    ctx->live->request = r;
    ctx->live->ctx = ctx;
    ctx->user = user;
    ctx->room = room;
    ctx->handler = handler;
    ctx->server = server;
    ctx->body_optional = (body == NGX_HTTP_MINICHAT_API_BODY_OPTIONAL);
    ngx_http_set_ctx(r, ctx, ngx_http_minichat_module);

    if (body == NGX_HTTP_MINICHAT_API_NO_BODY) {
        ngx_http_discard_request_body(r);
        rc = ngx_http_minichat_api_run(r, ctx, NULL);
        if (rc == NGX_DONE) {
            r->main->count++;
        }
        return rc;
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_minichat_api_body);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* The body is read: parse it as a JSON object and run the route. */
static void
ngx_http_minichat_api_body(ngx_http_request_t *r)
{
    ngx_http_minichat_api_t  *ctx;
    json_t                   *root = NULL;
    ngx_chain_t              *cl;
    u_char                   *body, *p;
    size_t                    len = 0;
    ngx_int_t                 rc;

    ctx = ngx_http_get_module_ctx(r, ngx_http_minichat_module);

    for (cl = r->request_body ? r->request_body->bufs : NULL; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            rc = ngx_http_minichat_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
                                             "request body over 64 KiB");
            goto finalize;
        }
        len += cl->buf->last - cl->buf->pos;
    }

    if (len == 0 && ctx->body_optional) {
        rc = ngx_http_minichat_api_run(r, ctx, NULL);
        if (rc == NGX_DONE) {
            return;
        }
        goto finalize;
    }

    if (len == 0 || len > NGX_HTTP_MINICHAT_API_BODY_MAX) {
        rc = ngx_http_minichat_api_error(r, len ? NGX_HTTP_REQUEST_ENTITY_TOO_LARGE : NGX_HTTP_BAD_REQUEST,
                                         len ? "too_large" : "bad_request",
                                         len ? "request body over 64 KiB" : "a JSON body is required");
        goto finalize;
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto finalize;
    }

    p = body;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    root = json_loadb((const char *) body, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request", "the body must be a JSON object");
        goto finalize;
    }

    rc = ngx_http_minichat_api_run(r, ctx, root);
    json_decref(root);

    if (rc == NGX_DONE) {
        /* a callback finalizes; the body reader's count is ours */
        return;
    }

    ngx_http_finalize_request(r, rc);
    return;

finalize:

    json_decref(root);
    ngx_http_finalize_request(r, rc);
}


/* Runs the route, after the caller's ban check and per-user limit.
 * Returns as a route's handler does. */
static ngx_int_t
ngx_http_minichat_api_run(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body)
{
    ngx_int_t  rc;

    if (ctx->server) {
        return ctx->handler(r, ctx, body);
    }

    rc = ngx_http_minichat_limit_user(ctx->user, NGX_HTTP_MINICHAT_LIMIT_REST, ngx_http_minichat_api_checked,
                                      ctx->live);
    if (rc == NGX_DECLINED) {
        /* Redis is down and the policy is open */
        return ctx->handler(r, ctx, body);
    }
    if (rc != NGX_OK) {
        return ngx_http_minichat_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                           "rate limits unavailable; retry");
    }

    if (body) {
        ctx->body = json_incref(body);
    }
    ngx_http_minichat_api_start(ctx);

    return NGX_DONE;
}


static void
ngx_http_minichat_api_checked(ngx_int_t rc, uint64_t value, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    ngx_connection_t              *c;
    json_t                        *body;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }

    ctx = live->ctx;
    c = r->connection;
    body = ctx->body;
    ctx->body = NULL;

    if (rc == NGX_OK) {
        rc = ctx->handler(r, ctx, body);
    } else if (rc == NGX_ERROR) {
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                         "rate limits unavailable; retry");
    } else {
        rc = ngx_http_minichat_api_limited(r, rc, value);
    }

    if (body) {
        json_decref(body);
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}


ngx_int_t
ngx_http_minichat_api_start(ngx_http_minichat_api_t *ctx)
{
    ctx->live->pending++;
    return NGX_OK;
}


/* Called first by every callback: counts the reply in and returns the
 * request, or NULL when it is gone (the live part is freed once nothing is
 * pending). */
ngx_http_request_t *
ngx_http_minichat_api_resume(ngx_http_minichat_api_live_t *live)
{
    live->pending--;

    if (live->request) {
        return live->request;
    }

    if (live->pending == 0) {
        ngx_free(live);
    }

    return NULL;
}


static void
ngx_http_minichat_api_cleanup(void *data)
{
    ngx_http_minichat_api_live_t  *live = data;

    if (live->ctx && live->ctx->body) {
        json_decref(live->ctx->body);
        live->ctx->body = NULL;
    }

    live->request = NULL;
    live->ctx = NULL;

    if (live->pending == 0) {
        ngx_free(live);
    }
}


/* Finalizes from outside the connection's own event handler: posted
 * requests (such as a termination after a write error) must run now, as
 * no further event may come for this connection. */
void
ngx_http_minichat_api_finish(ngx_http_request_t *r, ngx_uint_t status, const u_char *body, size_t len)
{
    ngx_connection_t  *c = r->connection;

    ngx_http_finalize_request(r, ngx_http_minichat_api_json(r, status, body, len));
    ngx_http_run_posted_requests(c);
}


void
ngx_http_minichat_api_fail(ngx_http_request_t *r, ngx_uint_t status, const char *code, const char *message)
{
    ngx_connection_t  *c = r->connection;

    ngx_http_finalize_request(r, ngx_http_minichat_api_error(r, status, code, message));
    ngx_http_run_posted_requests(c);
}


/* The HTTP status for one of the protocol's error codes. */
ngx_uint_t
ngx_http_minichat_api_status(const char *code)
{
    if (ngx_strcmp(code, "bad_request") == 0) {
        return NGX_HTTP_BAD_REQUEST;
    }
    if (ngx_strcmp(code, "forbidden") == 0) {
        return NGX_HTTP_FORBIDDEN;
    }
    if (ngx_strcmp(code, "not_found") == 0) {
        return NGX_HTTP_NOT_FOUND;
    }
    if (ngx_strcmp(code, "unauthorized") == 0) {
        return NGX_HTTP_UNAUTHORIZED;
    }
    return NGX_HTTP_SERVICE_UNAVAILABLE;
}


/* Fails with an error from the relay-worker: "<code>: <text>". */
void
ngx_http_minichat_api_fail_relay(ngx_http_request_t *r, const char *error)
{
    char        code[32];
    const char *sep;
    size_t      n;

    sep = error ? ngx_strchr(error, ':') : NULL;
    if (sep == NULL || (size_t) (sep - error) >= sizeof(code)) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                   error && error[0] ? error : "no answer from relay-worker; retry");
        return;
    }

    n = sep - error;
    ngx_memcpy(code, error, n);
    code[n] = '\0';

    sep++;
    while (*sep == ' ') {
        sep++;
    }

    if (ngx_strcmp(code, "bad_request") != 0 && ngx_strcmp(code, "forbidden") != 0
        && ngx_strcmp(code, "not_found") != 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "minichat: relay-worker: %s", error);
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", sep);
        return;
    }

    ngx_http_minichat_api_fail(r, ngx_http_minichat_api_status(code), code, sep);
}


/* The first request header called name (case-insensitive), or NULL. */
ngx_table_elt_t *
ngx_http_minichat_api_header(ngx_http_request_t *r, const char *name)
{
    ngx_list_part_t  *part = &r->headers_in.headers.part;
    ngx_table_elt_t  *h = part->elts;
    size_t            len = ngx_strlen(name);
    ngx_uint_t        i;

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


/* Reads a query argument as a positive integer: NGX_OK, NGX_DECLINED when
 * absent, NGX_ERROR when malformed. */
ngx_int_t
ngx_http_minichat_api_arg(ngx_http_request_t *r, const char *name, uint64_t *value)
{
    ngx_str_t  v;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &v) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (v.len > 20 || mc_parse_u64((const char *) v.data, v.len, value) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_minichat_api_json(ngx_http_request_t *r, ngx_uint_t status, const u_char *body, size_t len)
{
    ngx_http_minichat_api_t  *ctx;
    ngx_buf_t                *b;
    ngx_chain_t               out;
    ngx_int_t                 rc;

    ctx = ngx_http_get_module_ctx(r, ngx_http_minichat_module);
    if (ctx && ctx->server) {
        ngx_http_minichat_metrics_server_api(ctx->server - 1, status);
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    ngx_http_minichat_h2batch_hold(r);

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, len ? len : 1);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->last, body, len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_minichat_api_error(ngx_http_request_t *r, ngx_uint_t status, const char *code, const char *message)
{
    u_char  buf[sizeof("{\"code\":\"\",\"message\":\"\"}") + 32 + 6 * 200], *p;

    p = ngx_sprintf(buf, "{\"code\":\"%s\",\"message\":\"", code);
    p = ngx_http_minichat_json_escape(p, (const u_char *) message, ngx_min(ngx_strlen(message), 200));
    p = ngx_cpymem(p, "\"}", 2);

    return ngx_http_minichat_api_json(r, status, buf, p - buf);
}


ngx_int_t
ngx_http_minichat_api_limited(ngx_http_request_t *r, ngx_int_t rc, uint64_t value)
{
    ngx_table_elt_t  *h;
    u_char            buf[160], *p;
    ngx_uint_t        status;

    if (rc == NGX_BUSY) {
        status = NGX_HTTP_TOO_MANY_REQUESTS;
        p = ngx_sprintf(buf, "{\"code\":\"rate_limited\",\"message\":\"too many requests\",\"retry_after_ms\":%uL}",
                        value);

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }
        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (h->value.data == NULL) {
            return NGX_ERROR;
        }
        h->value.len = ngx_sprintf(h->value.data, "%uL", (value + 999) / 1000) - h->value.data;

    } else {
        status = NGX_HTTP_FORBIDDEN;
        if (value) {
            p = ngx_sprintf(buf, "{\"code\":\"banned\",\"message\":\"banned until \\\"until\\\" (ms)\","
                                 "\"until\":%uL}", value);
        } else {
            p = ngx_sprintf(buf, "{\"code\":\"banned\",\"message\":\"banned permanently\",\"until\":null}");
        }
    }

    return ngx_http_minichat_api_json(r, status, buf, p - buf);
}


ngx_int_t
ngx_http_minichat_api_reply(ngx_http_request_t *r, ngx_uint_t status, const u_char *body, size_t len)
{
    return ngx_http_minichat_api_json(r, status, body, len);
}


ngx_int_t
ngx_http_minichat_api_refuse(ngx_http_request_t *r, ngx_uint_t status, const char *code, const char *message)
{
    return ngx_http_minichat_api_error(r, status, code, message);
}
