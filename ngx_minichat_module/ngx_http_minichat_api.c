/*
 * REST endpoints (location with `minichat_api`) and JWT authentication.
 *
 *   POST /api/rooms  {"kind":"group","title":"…","members":[ids]}  -> 201 {"id":N}
 *
 * Room creation goes to the relay-worker, which owns the MySQL connections
 * (the primary through the router); once the rows are committed the module
 * adds the members to the room's Redis set, and only then answers 201, so a
 * client that sends right after the 201 is accepted.  Errors are JSON:
 * {"code":"bad_request","message":"…"} with a matching status.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/jwt.h"

#include <jansson.h>


#define NGX_HTTP_MINICHAT_API_BODY_MAX   65536
#define NGX_HTTP_MINICHAT_MEMBERS_MAX    1000
#define NGX_HTTP_MINICHAT_TITLE_MAX      191


/* Heap-allocated: a relay timer or a Redis reply may outlive the request
 * (a worker_shutdown_timeout closes it), so the pool cleanup only detaches
 * it and the last pending callback frees it. */
typedef struct {
    ngx_http_request_t  *request;   /* NULL once the request is gone */
    ngx_uint_t           pending;
    uint64_t             user;
    uint64_t             room;
    size_t               n_members;
    uint64_t            *members;
} ngx_http_minichat_create_t;


static void ngx_http_minichat_api_create_room(ngx_http_request_t *r);
static void ngx_http_minichat_api_cleanup(void *data);
static ngx_int_t ngx_http_minichat_api_detached(ngx_http_minichat_create_t *ctx);
static void ngx_http_minichat_api_finalize(ngx_http_request_t *r, ngx_int_t rc);
static void ngx_http_minichat_api_room_created(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_api_members_added(redisReply *reply, void *data);
static ngx_int_t ngx_http_minichat_api_json(ngx_http_request_t *r, ngx_uint_t status, u_char *body, size_t len);
static ngx_int_t ngx_http_minichat_api_error(ngx_http_request_t *r, ngx_uint_t status, const char *code,
    const char *message);


/* Finds the JWT (Authorization: Bearer, else ?token=) and verifies it. */
ngx_int_t
ngx_http_minichat_authenticate(ngx_http_request_t *r, ngx_str_t *token, uint64_t *user, const char **err)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    mc_jwt_claims_t                 claims;
    ngx_table_elt_t                *h;

    token->len = 0;

    h = r->headers_in.authorization;
    if (h && h->value.len > 7 && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0) {
        token->data = h->value.data + 7;
        token->len = h->value.len - 7;

    } else if (ngx_http_arg(r, (u_char *) "token", 5, token) != NGX_OK) {
        token->len = 0;
    }

    if (token->len == 0) {
        *err = "missing token";
        return NGX_DECLINED;
    }

    if (mc_jwt_verify_hs256((const char *) token->data, token->len, mcf->jwt_secret.data, mcf->jwt_secret.len,
                            (int64_t) ngx_time(), &claims, err) != 0)
    {
        return NGX_DECLINED;
    }

    *user = claims.sub;

    return NGX_OK;
}


ngx_int_t
ngx_http_minichat_api_handler(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_create_t     *ctx;
    ngx_pool_cleanup_t             *cln;
    ngx_str_t                       token;
    const char                     *err;
    uint64_t                        user;
    ngx_int_t                       rc;

    if (mcf == NULL || !mcf->enabled) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (!(r->uri.len == sizeof("/api/rooms") - 1
          && ngx_strncmp(r->uri.data, "/api/rooms", sizeof("/api/rooms") - 1) == 0))
    {
        ngx_http_discard_request_body(r);
        return ngx_http_minichat_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", "no such endpoint");
    }

    if (r->method != NGX_HTTP_POST) {
        ngx_http_discard_request_body(r);
        return ngx_http_minichat_api_error(r, NGX_HTTP_NOT_ALLOWED, "bad_request", "use POST");
    }

    if (ngx_http_minichat_authenticate(r, &token, &user, &err) != NGX_OK) {
        ngx_http_discard_request_body(r);
        return ngx_http_minichat_api_error(r, NGX_HTTP_UNAUTHORIZED, "unauthorized", err);
    }

    if (r->headers_in.content_length_n > NGX_HTTP_MINICHAT_API_BODY_MAX) {
        ngx_http_discard_request_body(r);
        return ngx_http_minichat_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
                                           "request body over 64 KiB");
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_calloc(sizeof(ngx_http_minichat_create_t), r->connection->log);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_minichat_api_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->user = user;
    ngx_http_set_ctx(r, ctx, ngx_http_minichat_module);

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_minichat_api_create_room);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_minichat_api_create_room(ngx_http_request_t *r)
{
    ngx_http_minichat_create_t  *ctx;
    Minichat__LocalFrame         f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__CreateRoomRequest  cr = MINICHAT__CREATE_ROOM_REQUEST__INIT;
    json_t                      *root = NULL, *jm, *v;
    const char                  *kind, *title;
    ngx_chain_t                 *cl;
    u_char                      *body, *p, title_buf[NGX_HTTP_MINICHAT_TITLE_MAX * 4 + 1];
    size_t                       len, i, j, n;
    uint64_t                     id;
    ngx_int_t                    rc;

    ctx = ngx_http_get_module_ctx(r, ngx_http_minichat_module);

    len = 0;
    for (cl = r->request_body ? r->request_body->bufs : NULL; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            rc = ngx_http_minichat_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
                                             "request body over 64 KiB");
            goto finalize;
        }
        len += cl->buf->last - cl->buf->pos;
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

    v = json_object_get(root, "kind");
    kind = v ? json_string_value(v) : "group";
    if (kind == NULL || (ngx_strcmp(kind, "group") != 0 && ngx_strcmp(kind, "direct") != 0)) {
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                         "\"kind\" must be \"group\" or \"direct\"");
        goto finalize;
    }

    v = json_object_get(root, "title");
    title = v ? json_string_value(v) : "";
    n = v ? json_string_length(v) : 0;
    for (i = 0, j = 0; title && i < n; i++) {
        /* characters, not bytes: count the bytes that start one */
        j += ((u_char) title[i] & 0xc0) != 0x80;
    }
    if (title == NULL || j > NGX_HTTP_MINICHAT_TITLE_MAX) {
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                         "\"title\" must be a string of at most 191 characters");
        goto finalize;
    }
    if (memchr(title, '\0', n)) {
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request", "\"title\" must not contain NUL");
        goto finalize;
    }
    ngx_cpystrn(title_buf, (u_char *) title, sizeof(title_buf));

    jm = json_object_get(root, "members");
    if (!json_is_array(jm) || json_array_size(jm) > NGX_HTTP_MINICHAT_MEMBERS_MAX) {
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                         "\"members\" must be an array of at most 1000 user ids");
        goto finalize;
    }

    n = json_array_size(jm);
    ctx->members = ngx_palloc(r->pool, (n + 1) * sizeof(uint64_t));
    if (ctx->members == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto finalize;
    }

    /* the caller first, then the others without duplicates */
    ctx->members[0] = ctx->user;
    ctx->n_members = 1;

    for (i = 0; i < n; i++) {
        v = json_array_get(jm, i);
        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            rc = ngx_http_minichat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                             "\"members\" must hold positive integer user ids");
            goto finalize;
        }
        id = (uint64_t) json_integer_value(v);
        for (j = 0; j < ctx->n_members; j++) {
            if (ctx->members[j] == id) {
                break;
            }
        }
        if (j == ctx->n_members) {
            ctx->members[ctx->n_members++] = id;
        }
    }

    if (ngx_strcmp(kind, "direct") == 0 && ctx->n_members != 2) {
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                         "a direct room has exactly two members");
        goto finalize;
    }

    cr.kind = (char *) kind;
    cr.title = (char *) title_buf;
    cr.creator = ctx->user;
    cr.members = ctx->members;
    cr.n_members = ctx->n_members;

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_CREATE_ROOM;
    f.create_room = &cr;

    ctx->pending++;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_api_room_created, ctx) != NGX_OK) {
        ctx->pending--;
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                         "relay-worker not connected; retry");
        goto finalize;
    }

    json_decref(root);
    return;

finalize:

    json_decref(root);
    ngx_http_finalize_request(r, rc);
}


static void
ngx_http_minichat_api_room_created(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_create_t  *ctx = data;
    ngx_http_request_t          *r;
    const char                 **argv;
    size_t                      *argvlen, i;
    u_char                      *p, key[48];
    ngx_int_t                    rc;

    if (ngx_http_minichat_api_detached(ctx)) {
        return;
    }

    r = ctx->request;

    if (result == NULL || result->create_room_result == NULL) {
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                         "room store did not answer; retry");
        ngx_http_minichat_api_finalize(r, rc);
        return;
    }

    if (result->create_room_result->id == 0
        && ngx_strncmp(result->create_room_result->error, "bad_request:", 12) == 0)
    {
        /* the relay-worker's own validation refused it: the client's fault */
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                         result->create_room_result->error + 12
                                         + (result->create_room_result->error[12] == ' '));
        ngx_http_minichat_api_finalize(r, rc);
        return;
    }

    if (result->create_room_result->id == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "minichat: room creation failed: %s",
                      result->create_room_result->error);
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                         "room store failed; retry");
        ngx_http_minichat_api_finalize(r, rc);
        return;
    }

    ctx->room = result->create_room_result->id;

    argv = ngx_palloc(r->pool, (ctx->n_members + 2) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (ctx->n_members + 2) * sizeof(size_t));
    p = ngx_pnalloc(r->pool, ctx->n_members * (NGX_INT64_LEN + 1));
    if (argv == NULL || argvlen == NULL || p == NULL) {
        ngx_http_minichat_api_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    argv[0] = "SADD";
    argvlen[0] = 4;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "{r:%uL}:members", ctx->room) - key;

    for (i = 0; i < ctx->n_members; i++) {
        argv[2 + i] = (const char *) p;
        argvlen[2 + i] = ngx_sprintf(p, "%uL", ctx->members[i]) - p;
        p += argvlen[2 + i];
    }

    ctx->pending++;

    if (ngx_http_minichat_redis_argv((int) ctx->n_members + 2, argv, argvlen,
                                     ngx_http_minichat_api_members_added, ctx)
        != NGX_OK)
    {
        ctx->pending--;
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                         "redis not connected; retry");
        ngx_http_minichat_api_finalize(r, rc);
    }
}


static void
ngx_http_minichat_api_members_added(redisReply *reply, void *data)
{
    ngx_http_minichat_create_t  *ctx = data;
    ngx_http_request_t          *r;
    u_char                       body[64], *p;
    ngx_int_t                    rc;

    if (ngx_http_minichat_api_detached(ctx)) {
        return;
    }

    r = ctx->request;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "minichat: room %uL created but its members could not be stored in redis", ctx->room);
        rc = ngx_http_minichat_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                         "redis failed; retry");
        ngx_http_minichat_api_finalize(r, rc);
        return;
    }

    p = ngx_sprintf(body, "{\"id\":%uL}", ctx->room);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: user %uL created room %uL with %uz members",
                  ctx->user, ctx->room, ctx->n_members);

    rc = ngx_http_minichat_api_json(r, NGX_HTTP_CREATED, body, p - body);
    ngx_http_minichat_api_finalize(r, rc);
}


/* Called first by every callback: counts the reply in, and returns 1 when
 * the request is gone (the context is then freed once nothing is pending). */
static ngx_int_t
ngx_http_minichat_api_detached(ngx_http_minichat_create_t *ctx)
{
    ctx->pending--;

    if (ctx->request) {
        return 0;
    }

    if (ctx->pending == 0) {
        ngx_free(ctx);
    }

    return 1;
}


static void
ngx_http_minichat_api_cleanup(void *data)
{
    ngx_http_minichat_create_t  *ctx = data;

    ctx->request = NULL;

    if (ctx->pending == 0) {
        ngx_free(ctx);
    }
}


/* Finalizes from outside the connection's own event handler: posted
 * requests (such as a termination after a write error) must run now, as
 * no further event may come for this connection. */
static void
ngx_http_minichat_api_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_minichat_api_json(ngx_http_request_t *r, ngx_uint_t status, u_char *body, size_t len)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;
    ngx_int_t     rc;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, len);
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
