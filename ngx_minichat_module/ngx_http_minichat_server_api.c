/*
 * The server API (location with `minichat_server_api`): what an app's
 * backend asks of the chat, with an API key instead of a user's JWT.
 *
 *   POST   /server/rooms/<id>/messages      {"body":<any JSON>} a system message
 *                                           (Idempotency-Key: a retry gets the same seq)
 *   POST   /server/users/<id>/disconnect    [{"reason":"…"}] close the user's
 *                                           connections on every node (4005)
 *   POST   /server/users/<id>/ban           {"duration":seconds|"permanent","reason":"…"}
 *   DELETE /server/users/<id>/ban           lift the ban
 *   GET    /server/users/<id>/ban           the ban's state
 *
 * Keys come from minichat_server_api_key_file (one per line, read at
 * configuration time; several at once for a rotation).  Only their SHA-256
 * digests stay in memory; a request's `Authorization: Bearer <key>` is
 * hashed and compared with every digest in constant time (CRYPTO_memcmp,
 * no early exit), so neither the time taken nor a log line tells anything
 * of a key.
 *
 * The requests run on the REST API's machinery (_api.c: context, bodies,
 * JSON errors, the same order of checks) without the per-user limit.  A
 * publish is a system message from sender 0 on the send path (_send.c:
 * sequenced, delivered to the members on every node, persisted through
 * Kafka); bans and disconnects go through _ban.c, the mechanism strikes use.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/decimal.h"
#include "minichat/room_rules.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>


#define NGX_HTTP_MINICHAT_SERVER_KEYS_MAX      16
#define NGX_HTTP_MINICHAT_SERVER_KEY_MIN       16      /* bytes of a key */
#define NGX_HTTP_MINICHAT_SERVER_KEY_MAX       256
#define NGX_HTTP_MINICHAT_SERVER_KEY_FILE_MAX  16384
#define NGX_HTTP_MINICHAT_SERVER_DATA_MAX      16384   /* bytes of a publish's "body", as JSON */
#define NGX_HTTP_MINICHAT_SERVER_IDEM_MAX      60      /* "srv:" + the key fits messages.client_msg_id */
#define NGX_HTTP_MINICHAT_SERVER_BAN_MAX       (365 * 86400)   /* seconds */


typedef struct {
    ngx_uint_t                    method;
    const char                   *collection;   /* "rooms" or "users" */
    const char                   *suffix;       /* after /<id> */
    ngx_http_minichat_api_pt      handler;
    ngx_uint_t                    body;         /* NGX_HTTP_MINICHAT_API_* */
    ngx_uint_t                    endpoint;     /* NGX_HTTP_MINICHAT_SERVER_API_* */
} ngx_http_minichat_server_route_t;


static ngx_int_t ngx_http_minichat_server_auth(ngx_http_request_t *r, ngx_http_minichat_loc_conf_t *lcf,
    const char **err);
static ngx_int_t ngx_http_minichat_server_publish(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx,
    json_t *body);
static void ngx_http_minichat_server_published(ngx_int_t rc, const char *code, const char *text, uint64_t seq,
    uint64_t ts, void *data);
static ngx_int_t ngx_http_minichat_server_disconnect(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx,
    json_t *body);
static ngx_int_t ngx_http_minichat_server_ban(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body);
static ngx_int_t ngx_http_minichat_server_unban(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx,
    json_t *body);
static ngx_int_t ngx_http_minichat_server_ban_state(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx,
    json_t *body);
static ngx_int_t ngx_http_minichat_server_script(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx,
    const char *op, uint64_t dur_ms, ngx_http_minichat_ban_pt handler);
static void ngx_http_minichat_server_banned(ngx_int_t rc, ngx_http_minichat_ban_state_t *st, void *data);
static void ngx_http_minichat_server_recorded(ngx_int_t rc, void *data);
static void ngx_http_minichat_server_state(ngx_int_t rc, ngx_http_minichat_ban_state_t *st, void *data);


static ngx_http_minichat_server_route_t  ngx_http_minichat_server_routes[] = {
    { NGX_HTTP_POST,   "rooms", "/messages",   ngx_http_minichat_server_publish, NGX_HTTP_MINICHAT_API_BODY,
      NGX_HTTP_MINICHAT_SERVER_API_PUBLISH },
    { NGX_HTTP_POST,   "users", "/disconnect", ngx_http_minichat_server_disconnect,
      NGX_HTTP_MINICHAT_API_BODY_OPTIONAL, NGX_HTTP_MINICHAT_SERVER_API_DISCONNECT },
    { NGX_HTTP_POST,   "users", "/ban",        ngx_http_minichat_server_ban, NGX_HTTP_MINICHAT_API_BODY,
      NGX_HTTP_MINICHAT_SERVER_API_BAN },
    { NGX_HTTP_DELETE, "users", "/ban",        ngx_http_minichat_server_unban, NGX_HTTP_MINICHAT_API_NO_BODY,
      NGX_HTTP_MINICHAT_SERVER_API_UNBAN },
    { NGX_HTTP_GET,    "users", "/ban",        ngx_http_minichat_server_ban_state, NGX_HTTP_MINICHAT_API_NO_BODY,
      NGX_HTTP_MINICHAT_SERVER_API_BAN_STATE },
    { 0, NULL, NULL, NULL, 0, 0 }
};


/* --- configuration ------------------------------------------------------ */

/* Checks one line of a key file; returns NULL or why it is refused (never
 * quoting the key). */
static const char *
ngx_http_minichat_server_key_check(const u_char *k, size_t len)
{
    size_t  i;

    if (len < NGX_HTTP_MINICHAT_SERVER_KEY_MIN || len > NGX_HTTP_MINICHAT_SERVER_KEY_MAX) {
        return "a key must be 16 to 256 bytes long";
    }

    for (i = 0; i < len; i++) {
        if (k[i] < 0x21 || k[i] > 0x7e) {
            return "a key must be printable ASCII without spaces";
        }
    }

    return NULL;
}


/* Reads the keys of a file: one per line, blank lines and lines starting
 * with '#' skipped.  The file must be a regular file that not every user
 * may read.  Keeps the keys' digests in *keys. */
static char *
ngx_http_minichat_server_keys_read(ngx_conf_t *cf, ngx_str_t *name, ngx_array_t **keys)
{
    ngx_file_info_t   fi;
    ngx_file_t        file;
    ngx_array_t      *a;
    u_char            buf[NGX_HTTP_MINICHAT_SERVER_KEY_FILE_MAX + 1], *p, *end, *eol, *k;
    const char       *why;
    ngx_uint_t        line = 0;
    ssize_t           n;
    size_t            len;

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = *name;
    file.log = cf->log;

    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, ngx_open_file_n " \"%V\" failed", name);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, ngx_fd_info_n " \"%V\" failed", name);
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    if (!ngx_is_file(&fi) || (fi.st_mode & (S_IROTH | S_IWOTH))) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "server api key file \"%V\" must be a regular file that other users "
                           "cannot read or write (chmod 600 or 640)", name);
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_file(&file, buf, sizeof(buf), 0);
    ngx_close_file(file.fd);

    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    if (n > NGX_HTTP_MINICHAT_SERVER_KEY_FILE_MAX) {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "server api key file \"%V\" is over 16 KiB", name);
        return NGX_CONF_ERROR;
    }

    a = ngx_array_create(cf->pool, 2, SHA256_DIGEST_LENGTH);
    if (a == NULL) {
        ngx_explicit_memzero(buf, sizeof(buf));
        return NGX_CONF_ERROR;
    }

    end = buf + n;

    for (p = buf; p < end; p = eol + 1) {
        line++;
        eol = ngx_strlchr(p, end, '\n');
        if (eol == NULL) {
            eol = end;
        }

        len = eol - p;
        while (len && (p[len - 1] == '\r' || p[len - 1] == ' ' || p[len - 1] == '\t')) {
            len--;
        }
        while (len && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }

        if (len == 0 || *p == '#') {
            continue;
        }

        why = ngx_http_minichat_server_key_check(p, len);
        if (why == NULL && a->nelts == NGX_HTTP_MINICHAT_SERVER_KEYS_MAX) {
            why = "at most 16 keys";
        }
        if (why) {
            ngx_explicit_memzero(buf, sizeof(buf));
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "server api key file \"%V\", line %ui: %s", name, line, why);
            return NGX_CONF_ERROR;
        }

        k = ngx_array_push(a);
        if (k == NULL) {
            ngx_explicit_memzero(buf, sizeof(buf));
            return NGX_CONF_ERROR;
        }
        SHA256(p, len, k);
    }

    ngx_explicit_memzero(buf, sizeof(buf));

    if (a->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "server api key file \"%V\" holds no key", name);
        return NGX_CONF_ERROR;
    }

    *keys = a;

    return NGX_CONF_OK;
}


/* minichat_server_api_key_file path */
char *
ngx_http_minichat_server_api_keys_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_loc_conf_t  *lcf = conf;
    ngx_str_t                     *value, name;

    if (lcf->server_api_keys != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_minichat_server_keys_read(cf, &name, &lcf->server_api_keys);
}


/* minichat_server_api */
char *
ngx_http_minichat_server_api_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_loc_conf_t  *lcf = conf;
    ngx_http_core_loc_conf_t      *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_minichat_server_api_handler;
    lcf->server_api = 1;

    return NGX_CONF_OK;
}


/* From the location merge: a server API location needs its keys. */
char *
ngx_http_minichat_server_api_merge(ngx_conf_t *cf, ngx_http_minichat_loc_conf_t *prev,
    ngx_http_minichat_loc_conf_t *conf)
{
    ngx_conf_merge_ptr_value(conf->server_api_keys, prev->server_api_keys, NULL);

    if (conf->server_api && conf->server_api_keys == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"minichat_server_api\" needs \"minichat_server_api_key_file\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* --- routing and the key ------------------------------------------------ */

ngx_int_t
ngx_http_minichat_server_api_handler(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t     *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_loc_conf_t      *lcf;
    ngx_http_minichat_server_route_t  *rt;
    u_char                            *p, *end, *coll, *id;
    size_t                             coll_len, id_len, suffix_len;
    const char                        *err;
    uint64_t                           target;
    ngx_uint_t                         path_found = 0;
    ngx_int_t                          rc;

    if (mcf == NULL || !mcf->enabled) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_minichat_module);

    /* /server/<collection>/<id><suffix> */
    p = r->uri.data;
    end = p + r->uri.len;

    if (r->uri.len < sizeof("/server/") - 1 || ngx_strncmp(p, "/server/", sizeof("/server/") - 1) != 0) {
        goto no_such;
    }
    coll = p + sizeof("/server/") - 1;
    for (p = coll; p < end && *p != '/'; p++) { /* the collection */ }
    coll_len = p - coll;
    if (p == end) {
        goto no_such;
    }
    id = ++p;
    for ( /* void */ ; p < end && *p != '/'; p++) { /* the id */ }
    id_len = p - id;
    suffix_len = end - p;

    for (rt = ngx_http_minichat_server_routes; rt->collection; rt++) {
        if (coll_len != ngx_strlen(rt->collection) || ngx_strncmp(coll, rt->collection, coll_len) != 0
            || suffix_len != ngx_strlen(rt->suffix) || ngx_strncmp(p, rt->suffix, suffix_len) != 0)
        {
            continue;
        }
        path_found = 1;
        if (rt->method == r->method) {
            break;
        }
    }

    if (rt->collection == NULL) {
        ngx_http_discard_request_body(r);
        if (path_found) {
            ngx_http_minichat_metrics_server_api(NGX_HTTP_MINICHAT_SERVER_API_OTHER, NGX_HTTP_NOT_ALLOWED);
            return ngx_http_minichat_api_refuse(r, NGX_HTTP_NOT_ALLOWED, "bad_request", "method not allowed here");
        }
        goto no_such;
    }

    rc = ngx_http_minichat_server_auth(r, lcf, &err);
    if (rc != NGX_OK) {
        ngx_http_discard_request_body(r);
        ngx_http_minichat_metrics_server_api(rt->endpoint, NGX_HTTP_UNAUTHORIZED);
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_UNAUTHORIZED, "unauthorized", err);
    }

    if (id_len == 0 || id_len > 20 || mc_parse_u64((const char *) id, id_len, &target) != 0 || target == 0) {
        ngx_http_discard_request_body(r);
        ngx_http_minichat_metrics_server_api(rt->endpoint, NGX_HTTP_BAD_REQUEST);
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                            rt->collection[0] == 'r' ? "the room id must be a positive integer"
                                                                     : "the user id must be a positive integer");
    }

    return ngx_http_minichat_api_begin(r, rt->handler, rt->body, rt->collection[0] == 'u' ? target : 0,
                                       rt->collection[0] == 'r' ? target : 0, rt->endpoint + 1);

no_such:

    ngx_http_discard_request_body(r);
    ngx_http_minichat_metrics_server_api(NGX_HTTP_MINICHAT_SERVER_API_OTHER, NGX_HTTP_NOT_FOUND);
    return ngx_http_minichat_api_refuse(r, NGX_HTTP_NOT_FOUND, "not_found", "no such endpoint");
}


/* NGX_OK when the request carries one of the location's keys; else
 * NGX_DECLINED with why in err. */
static ngx_int_t
ngx_http_minichat_server_auth(ngx_http_request_t *r, ngx_http_minichat_loc_conf_t *lcf, const char **err)
{
    ngx_table_elt_t  *h = r->headers_in.authorization;
    u_char            digest[SHA256_DIGEST_LENGTH], *k;
    ngx_str_t         v;
    ngx_uint_t        i, match = 0;

    if (h == NULL || h->value.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", sizeof("Bearer ") - 1) != 0)
    {
        *err = "an API key is required: Authorization: Bearer <key>";
        return NGX_DECLINED;
    }

    v.data = h->value.data + sizeof("Bearer ") - 1;
    v.len = h->value.len - (sizeof("Bearer ") - 1);

    if (v.len == 0 || v.len > NGX_HTTP_MINICHAT_SERVER_KEY_MAX) {
        *err = "wrong API key";
        return NGX_DECLINED;
    }

    SHA256(v.data, v.len, digest);

    /* every key is compared, whichever matches */
    k = lcf->server_api_keys->elts;
    for (i = 0; i < lcf->server_api_keys->nelts; i++) {
        match |= (CRYPTO_memcmp(digest, k + i * SHA256_DIGEST_LENGTH, SHA256_DIGEST_LENGTH) == 0);
    }

    ngx_explicit_memzero(digest, sizeof(digest));

    if (!match) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: server api: wrong API key");
        *err = "wrong API key";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* Reads an optional "reason" (a string of at most
 * NGX_HTTP_MINICHAT_REASON_MAX bytes) into ctx->text; returns NULL or why
 * it is refused. */
static const char *
ngx_http_minichat_server_reason(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body)
{
    json_t  *v = body ? json_object_get(body, "reason") : NULL;

    if (v == NULL || json_is_null(v)) {
        return NULL;
    }

    if (!json_is_string(v) || json_string_length(v) > NGX_HTTP_MINICHAT_REASON_MAX) {
        return "\"reason\" must be a string of at most 100 bytes";
    }

    ctx->text.len = json_string_length(v);
    ctx->text.data = ngx_pnalloc(r->pool, ctx->text.len + 1);
    if (ctx->text.data == NULL) {
        return "out of memory";
    }
    *ngx_cpymem(ctx->text.data, json_string_value(v), ctx->text.len) = '\0';

    return NULL;
}


/* --- publish ------------------------------------------------------------ */

static ngx_int_t
ngx_http_minichat_server_publish(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    ngx_http_minichat_message_t   m;
    ngx_table_elt_t              *h;
    json_t                       *v;
    const char                   *err;
    char                         *data;
    u_char                       *body, *p, cid[NGX_HTTP_MINICHAT_CID_MAX + 1];
    size_t                        len;
    ngx_int_t                     rc;

    v = json_object_get(root, "body");
    if (v == NULL) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                            "\"body\" is required (any JSON value)");
    }

    ngx_memzero(&m, sizeof(m));

    /* the key makes a retry return the same seq */
    h = ngx_http_minichat_api_header(r, "Idempotency-Key");
    if (h) {
        err = mc_room_check_idem_key((const char *) h->value.data, h->value.len);
        if (err == NULL && h->value.len > NGX_HTTP_MINICHAT_SERVER_IDEM_MAX) {
            err = "the Idempotency-Key must be at most 60 bytes";
        }
        if (err) {
            return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
        }
        m.cid.len = ngx_sprintf(cid, "srv:%V", &h->value) - cid;
    } else {
        m.cid.len = ngx_sprintf(cid, "srv:%uL:%08xD", ngx_http_minichat_now_ms(), (uint32_t) ngx_random()) - cid;
    }
    m.cid.data = cid;

    data = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    len = ngx_strlen(data);

    if (len > NGX_HTTP_MINICHAT_SERVER_DATA_MAX) {
        free(data);
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
                                            "\"body\" over 16 KiB (as JSON)");
    }

    /* a system message's body: a JSON object as a string, "event" first */
    body = ngx_pnalloc(r->pool, sizeof("{\"event\":\"server\",\"data\":}") + len);
    if (body == NULL) {
        free(data);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    p = ngx_cpymem(body, "{\"event\":\"server\",\"data\":", sizeof("{\"event\":\"server\",\"data\":") - 1);
    p = ngx_cpymem(p, data, len);
    *p++ = '}';
    free(data);

    m.room = ctx->room;
    m.sender = 0;
    m.kind = "system";
    m.body.data = body;
    m.body.len = p - body;

    ngx_http_minichat_api_start(ctx);

    rc = ngx_http_minichat_message_send(&m, ngx_http_minichat_server_published, ctx->live);
    if (rc != NGX_OK) {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            rc == NGX_DECLINED ? "relay-worker unavailable; retry"
                                                               : "storage unavailable; retry");
    }

    return NGX_DONE;
}


static void
ngx_http_minichat_server_published(ngx_int_t rc, const char *code, const char *text, uint64_t seq, uint64_t ts,
    void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_request_t            *r;
    u_char                         buf[sizeof("{\"room\":,\"seq\":,\"ts\":}") + 3 * NGX_INT64_LEN], *p;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_minichat_api_fail(r, ngx_http_minichat_api_status(code), code, text);
        return;
    }

    p = ngx_sprintf(buf, "{\"room\":%uL,\"seq\":%uL,\"ts\":%uL}", live->ctx->room, seq, ts);
    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, buf, p - buf);
}


/* --- disconnect --------------------------------------------------------- */

static ngx_int_t
ngx_http_minichat_server_disconnect(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    const char  *err;
    u_char       buf[sizeof("{\"user\":}") + NGX_INT64_LEN], *p;

    err = ngx_http_minichat_server_reason(r, ctx, root);
    if (err) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: server api: disconnect user %uL", ctx->user);

    if (ngx_http_minichat_ban_announce(ctx->user, "disconnect", 0, &ctx->text) != NGX_OK) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "relay-worker unavailable; retry");
    }

    /* the nodes close the connections as the event reaches them */
    p = ngx_sprintf(buf, "{\"user\":%uL}", ctx->user);
    return ngx_http_minichat_api_reply(r, NGX_HTTP_ACCEPTED, buf, p - buf);
}


/* --- ban, unban, state -------------------------------------------------- */

/* Runs lua/ban.lua with op for the request's user; handler answers. */
static ngx_int_t
ngx_http_minichat_server_script(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, const char *op,
    uint64_t dur_ms, ngx_http_minichat_ban_pt handler)
{
    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_ban_script(ctx->user, op, dur_ms, handler, ctx->live) != NGX_OK) {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "redis unavailable; retry");
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_minichat_server_ban(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    json_t      *v;
    const char  *err;
    json_int_t   secs = 0;

    v = json_object_get(root, "duration");
    if (json_is_integer(v)) {
        secs = json_integer_value(v);
    }
    if (!(json_is_string(v) && ngx_strcmp(json_string_value(v), "permanent") == 0)
        && (secs < 1 || secs > NGX_HTTP_MINICHAT_SERVER_BAN_MAX))
    {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                            "\"duration\" must be seconds (1 to 31536000) or \"permanent\"");
    }

    err = ngx_http_minichat_server_reason(r, ctx, root);
    if (err) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
    }

    if (secs) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0, "minichat: server api: ban user %uL for %L s", ctx->user,
                      (int64_t) secs);
    } else {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0, "minichat: server api: ban user %uL for good", ctx->user);
    }

    return ngx_http_minichat_server_script(r, ctx, "ban", (uint64_t) secs * 1000, ngx_http_minichat_server_banned);
}


/* Redis holds the ban (or the lift): every node hears of a ban, then MySQL
 * records either. */
static void
ngx_http_minichat_server_banned(ngx_int_t rc, ngx_http_minichat_ban_state_t *st, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    if (rc != NGX_OK) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "redis unavailable; retry");
        return;
    }

    ctx->until = st->banned ? st->until : 0;
    ctx->banned = st->banned;

    if (st->banned && ngx_http_minichat_ban_announce(ctx->user, "ban", st->until, &ctx->text) != NGX_OK) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                   "banned, but the connections were not closed: relay-worker unavailable; retry");
        return;
    }

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_ban_record(ctx->user, st->banned, !st->banned, st->until, st->strikes,
                                     ngx_http_minichat_server_recorded, live)
        != NGX_OK)
    {
        live->pending--;
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                   "not recorded in mysql: relay-worker unavailable; retry");
    }
}


static void
ngx_http_minichat_server_recorded(ngx_int_t rc, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    u_char                         buf[sizeof("{\"user\":,\"banned\":false,\"until\":}") + 2 * NGX_INT64_LEN], *p;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    if (rc != NGX_OK) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                   "redis changed, mysql not: retry");
        return;
    }

    p = ngx_sprintf(buf, "{\"user\":%uL,\"banned\":%s,\"until\":", ctx->user, ctx->banned ? "true" : "false");
    p = ctx->banned && ctx->until ? ngx_sprintf(p, "%uL}", ctx->until) : ngx_cpymem(p, "null}", 5);

    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, buf, p - buf);
}


static ngx_int_t
ngx_http_minichat_server_unban(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0, "minichat: server api: unban user %uL", ctx->user);

    return ngx_http_minichat_server_script(r, ctx, "lift", 0, ngx_http_minichat_server_banned);
}


static ngx_int_t
ngx_http_minichat_server_ban_state(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    return ngx_http_minichat_server_script(r, ctx, "get", 0, ngx_http_minichat_server_state);
}


static void
ngx_http_minichat_server_state(ngx_int_t rc, ngx_http_minichat_ban_state_t *st, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_request_t            *r;
    u_char                         buf[sizeof("{\"user\":,\"banned\":false,\"until\":,\"strikes\":}")
                                       + 3 * NGX_INT64_LEN], *p;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "redis unavailable; retry");
        return;
    }

    p = ngx_sprintf(buf, "{\"user\":%uL,\"banned\":%s,\"until\":", live->ctx->user, st->banned ? "true" : "false");
    p = st->banned && st->until ? ngx_sprintf(p, "%uL", st->until) : ngx_cpymem(p, "null", 4);
    p = ngx_sprintf(p, ",\"strikes\":%ui}", st->strikes);

    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, buf, p - buf);
}
