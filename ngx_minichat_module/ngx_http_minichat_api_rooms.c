/*
 * The REST routes on rooms.  MySQL is the truth: a change to a room's
 * members is committed there first (through the relay-worker), then applied
 * to the room's Redis keys, then announced in the room as a system message
 * (kind "system", a JSON body such as {"event":"leave","user":"43"}).
 *
 *  create   CreateRoomRequest (idempotent with a key) -> load.lua -> 201
 *  invite   seq.lua (the inviter is a member; the join seq) ->
 *           InviteRequest (a direct room past two members becomes a new
 *           group room) -> join.lua or load.lua -> "join" message -> 200
 *  leave    "leave" message (while still a member) -> LeaveRequest ->
 *           leave.lua -> 200; a left member gets nothing more and reads
 *           history up to its leave
 *  list, details, messages, read: one request each.
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"
#include "minichat/room_rules.h"


#define NGX_HTTP_MINICHAT_MEMBERS_MAX    1000


static void ngx_http_minichat_api_room_created(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_api_room_loaded(redisReply *reply, void *data);
static void ngx_http_minichat_api_page(ngx_int_t rc, const char *code, const char *text, const u_char *page,
    size_t len, void *data);
static void ngx_http_minichat_api_details_result(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_api_invite_seq(redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_minichat_api_invite_result(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_api_invite_joined(redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_minichat_api_invite_loaded(redisReply *reply, void *data);
static void ngx_http_minichat_api_invite_announce(ngx_http_minichat_api_live_t *live);
static void ngx_http_minichat_api_invite_sent(ngx_int_t rc, const char *code, const char *text, uint64_t seq,
    uint64_t ts, void *data);
static void ngx_http_minichat_api_leave_sent(ngx_int_t rc, const char *code, const char *text, uint64_t seq,
    uint64_t ts, void *data);
static void ngx_http_minichat_api_leave_result(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_api_leave_done(redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_minichat_api_read_done(ngx_int_t rc, const char *code, const char *text, uint64_t seq,
    void *data);
static const char *ngx_http_minichat_api_members(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *jm,
    ngx_uint_t with_caller);


static const char  *ngx_http_minichat_seq_keys[] = { "members", "seq", "gen" };
static const char  *ngx_http_minichat_change_keys[] = { "members", "seq", "left", "read", "mver" };

static const ngx_http_minichat_script_t  ngx_http_minichat_script_seq = {
    MINICHAT_LUA_SEQ_SHA1, MINICHAT_LUA_SEQ_SRC, 3, ngx_http_minichat_seq_keys, 1, NULL
};

static const ngx_http_minichat_script_t  ngx_http_minichat_script_join = {
    MINICHAT_LUA_JOIN_SHA1, MINICHAT_LUA_JOIN_SRC, 5, ngx_http_minichat_change_keys, 0, NULL
};

static const ngx_http_minichat_script_t  ngx_http_minichat_script_leave = {
    MINICHAT_LUA_LEAVE_SHA1, MINICHAT_LUA_LEAVE_SRC, 5, ngx_http_minichat_change_keys, 0, NULL
};


/* --- create ----------------------------------------------------------- */

ngx_int_t
ngx_http_minichat_api_create(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    Minichat__LocalFrame         f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__CreateRoomRequest  cr = MINICHAT__CREATE_ROOM_REQUEST__INIT;
    ngx_table_elt_t             *h;
    json_t                      *v;
    const char                  *kind, *title, *err;
    u_char                       title_buf[MC_ROOM_TITLE_MAX * 4 + 1];
    u_char                       key[MC_ROOM_IDEM_MAX + 1];
    size_t                       n, klen = 0;

    v = json_object_get(root, "kind");
    kind = v ? json_string_value(v) : "group";
    err = mc_room_check_kind(kind);
    if (err) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
    }

    v = json_object_get(root, "title");
    title = v ? json_string_value(v) : "";
    n = v ? json_string_length(v) : 0;
    err = mc_room_check_title(title, n);
    if (err) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
    }
    ngx_cpystrn(title_buf, (u_char *) title, sizeof(title_buf));

    /* the client's key makes a retry return the same room */
    h = ngx_http_minichat_api_header(r, "Idempotency-Key");

    v = json_object_get(root, "idempotency_key");
    if (h || v) {
        const u_char  *k = h ? h->value.data : (const u_char *) json_string_value(v);

        klen = h ? h->value.len : (json_is_string(v) ? json_string_length(v) : 0);
        err = mc_room_check_idem_key((const char *) k, klen);
        if (err) {
            return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
        }
        *ngx_cpymem(key, k, klen) = '\0';
    }

    err = ngx_http_minichat_api_members(r, ctx, json_object_get(root, "members"), 1);
    if (err) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
    }

    err = mc_room_check_count(kind, ctx->n_members);
    if (err) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
    }

    cr.kind = (char *) kind;
    cr.title = (char *) title_buf;
    cr.creator = ctx->user;
    cr.members = ctx->members;
    cr.n_members = ctx->n_members;
    cr.idempotency_key = klen ? (char *) key : "";

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_CREATE_ROOM;
    f.create_room = &cr;

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_api_room_created, ctx->live) != NGX_OK) {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "relay-worker not connected; retry");
    }

    return NGX_DONE;
}


/* Reads "members" (with the caller when with_caller) and applies the room
 * rules: positive ids, duplicates dropped, sorted.  A value that is not an
 * id reads as 0 and is refused with the rest.  Returns NULL, or what is
 * wrong with them. */
static const char *
ngx_http_minichat_api_members(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *jm,
    ngx_uint_t with_caller)
{
    size_t  i, n;

    if (!json_is_array(jm) || json_array_size(jm) > NGX_HTTP_MINICHAT_MEMBERS_MAX) {
        return "\"members\" must be an array of at most 1000 user ids";
    }

    n = json_array_size(jm);
    ctx->members = ngx_palloc(r->pool, (n + 1) * sizeof(uint64_t));
    if (ctx->members == NULL) {
        return "out of memory";
    }

    ctx->n_members = 0;
    if (with_caller) {
        ctx->members[ctx->n_members++] = ctx->user;
    }

    for (i = 0; i < n; i++) {
        ctx->members[ctx->n_members++] = ngx_http_minichat_json_id(json_array_get(jm, i));
    }

    /* the caller may make one more than the array holds */
    return mc_room_members(ctx->members, &ctx->n_members, NGX_HTTP_MINICHAT_MEMBERS_MAX + 1);
}


static void
ngx_http_minichat_api_room_created(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    Minichat__CreateRoomResult    *cr;
    ngx_http_request_t            *r;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    cr = result ? result->create_room_result : NULL;

    if (cr == NULL) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "room store did not answer; retry");
        return;
    }

    if (cr->id == 0) {
        ngx_http_minichat_api_fail_relay(r, cr->error);
        return;
    }

    ctx->room = cr->id;
    ctx->existed = cr->existed;

    if (cr->n_members) {
        /* an idempotent retry: the room's members as first created */
        ctx->members = ngx_palloc(r->pool, cr->n_members * sizeof(uint64_t));
        if (ctx->members == NULL) {
            ngx_http_minichat_api_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR, "unavailable", "out of memory");
            return;
        }
        ngx_memcpy(ctx->members, cr->members, cr->n_members * sizeof(uint64_t));
        ctx->n_members = cr->n_members;
    }

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_room_load_new(ctx->room, ctx->members, ctx->n_members,
                                        ngx_http_minichat_api_room_loaded, live)
        != NGX_OK)
    {
        live->pending--;
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "redis not connected; retry");
    }
}


static void
ngx_http_minichat_api_room_loaded(redisReply *reply, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    u_char                         body[64], *p;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "minichat: room %uL created but not loaded into redis; a retry with the same key repairs it",
                      ctx->room);
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "redis failed; retry");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "minichat: user %uL %s room %uL with %uz members",
                  ctx->user, ctx->existed ? "retried creating" : "created", ctx->room, ctx->n_members);

    p = ngx_sprintf(body, "{\"id\":%uL,\"existed\":%s}", ctx->room, ctx->existed ? "true" : "false");
    ngx_http_minichat_api_finish(r, NGX_HTTP_CREATED, body, p - body);
}


/* --- list, messages (pages shared with the WebSocket ops) -------------- */

ngx_int_t
ngx_http_minichat_api_list(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body)
{
    ngx_str_t   v;
    uint64_t    limit = 0;
    u_char     *cursor = NULL, *dst, *src;
    ngx_int_t   rc;

    rc = ngx_http_minichat_api_arg(r, "limit", &limit);
    if (rc == NGX_ERROR || (rc == NGX_OK && (limit < 1 || limit > 100))) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                            "\"limit\" must be an integer from 1 to 100");
    }

    if (ngx_http_arg(r, (u_char *) "cursor", 6, &v) == NGX_OK && v.len) {
        if (v.len > 256) {
            return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", "\"cursor\" is malformed");
        }
        cursor = ngx_pnalloc(r->pool, v.len + 1);
        if (cursor == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        dst = cursor;
        src = v.data;
        ngx_unescape_uri(&dst, &src, v.len, NGX_UNESCAPE_URI);
        *dst = '\0';
    }

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_rooms_list(ctx->user, (ngx_uint_t) limit, (const char *) cursor,
                                     ngx_http_minichat_api_page, ctx->live)
        != NGX_OK)
    {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "relay-worker not connected; retry");
    }

    return NGX_DONE;
}


ngx_int_t
ngx_http_minichat_api_messages(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body)
{
    uint64_t   before = 0, limit = 0;
    ngx_int_t  rc;

    rc = ngx_http_minichat_api_arg(r, "before", &before);
    if (rc == NGX_ERROR || (rc == NGX_OK && before < 1)) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                            "\"before\" must be a positive integer");
    }

    rc = ngx_http_minichat_api_arg(r, "limit", &limit);
    if (rc == NGX_ERROR || (rc == NGX_OK && (limit < 1 || limit > 200))) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                            "\"limit\" must be an integer from 1 to 200");
    }

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_history_page(ctx->room, ctx->user, before, (ngx_uint_t) limit, ngx_http_minichat_api_page,
                                       ctx->live)
        != NGX_OK)
    {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "storage unavailable; retry");
    }

    return NGX_DONE;
}


static void
ngx_http_minichat_api_page(ngx_int_t rc, const char *code, const char *text, const u_char *page, size_t len,
    void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_request_t            *r;
    u_char                        *body;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_minichat_api_fail(r, ngx_http_minichat_api_status(code), code, text);
        return;
    }

    body = ngx_pnalloc(r->pool, len + 2);
    if (body == NULL) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR, "unavailable", "out of memory");
        return;
    }

    body[0] = '{';
    ngx_memcpy(body + 1, page, len);
    body[len + 1] = '}';

    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, body, len + 2);
}


/* --- details ------------------------------------------------------------ */

ngx_int_t
ngx_http_minichat_api_details(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *body)
{
    Minichat__LocalFrame     f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__RoomInfoRequest ri = MINICHAT__ROOM_INFO_REQUEST__INIT;

    ri.room = ctx->room;
    ri.user = ctx->user;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_ROOM_INFO;
    f.room_info = &ri;

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_api_details_result, ctx->live) != NGX_OK) {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "relay-worker not connected; retry");
    }

    return NGX_DONE;
}


static void
ngx_http_minichat_api_details_result(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    Minichat__RoomInfoResult      *ri;
    Minichat__RoomSummary         *s;
    ngx_http_request_t            *r;
    u_char                        *body, *p;
    size_t                         len, i;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }

    ri = result ? result->room_info_result : NULL;

    if (ri == NULL || (ri->error && ri->error[0]) || ri->room == NULL) {
        ngx_http_minichat_api_fail_relay(r, ri ? ri->error : NULL);
        return;
    }

    s = ri->room;

    len = sizeof("{\"id\":,\"kind\":\"\",\"title\":\"\",\"last_seq\":,\"last_message_at\":,\"last_preview\":\"\","
                 "\"created_by\":,\"created_at\":,\"members\":[]}") + 6 * NGX_INT64_LEN + 16
          + ngx_http_minichat_json_escape_len((u_char *) s->title, ngx_strlen(s->title))
          + ngx_http_minichat_json_escape_len((u_char *) s->last_preview, ngx_strlen(s->last_preview))
          + ri->n_members * (sizeof("{\"user\":,\"last_read_seq\":,\"joined_seq\":},") + 3 * NGX_INT64_LEN);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR, "unavailable", "out of memory");
        return;
    }

    p = ngx_sprintf(body, "{\"id\":%uL,\"kind\":\"", s->id);
    p = ngx_http_minichat_json_escape(p, (u_char *) s->kind, ngx_min(ngx_strlen(s->kind), 16));
    p = ngx_cpymem(p, "\",\"title\":\"", sizeof("\",\"title\":\"") - 1);
    p = ngx_http_minichat_json_escape(p, (u_char *) s->title, ngx_strlen(s->title));
    p = ngx_sprintf(p, "\",\"last_seq\":%uL,\"last_message_at\":%uL,\"last_preview\":\"", s->last_seq,
                    s->last_message_at);
    p = ngx_http_minichat_json_escape(p, (u_char *) s->last_preview, ngx_strlen(s->last_preview));
    p = ngx_sprintf(p, "\",\"created_by\":%uL,\"created_at\":%uL,\"members\":[", ri->created_by, ri->created_at);

    for (i = 0; i < ri->n_members; i++) {
        p = ngx_sprintf(p, "%s{\"user\":%uL,\"last_read_seq\":%uL,\"joined_seq\":%uL}", i ? "," : "",
                        ri->members[i]->user, ri->members[i]->last_read_seq, ri->members[i]->joined_seq);
    }

    p = ngx_cpymem(p, "]}", 2);

    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, body, p - body);
}


/* --- invite ------------------------------------------------------------- */

ngx_int_t
ngx_http_minichat_api_invite(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    const char  *av[1], *err;
    size_t       al[1];
    u_char       u[NGX_INT64_LEN];

    err = ngx_http_minichat_api_members(r, ctx, json_object_get(root, "members"), 0);
    if (err) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", err);
    }

    if (ctx->n_members == 0) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request", "\"members\" is empty");
    }

    av[0] = (const char *) u;
    al[0] = ngx_sprintf(u, "%uL", ctx->user) - u;

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_room_script(ctx->room, &ngx_http_minichat_script_seq, 1, av, al,
                                      ngx_http_minichat_api_invite_seq, ctx->live)
        != NGX_OK)
    {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "redis not connected; retry");
    }

    return NGX_DONE;
}


static void
ngx_http_minichat_api_invite_seq(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    Minichat__LocalFrame           f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__InviteRequest        ir = MINICHAT__INVITE_REQUEST__INIT;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    if (rc == NGX_DECLINED) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_NOT_FOUND, "not_found", "no such room");
        return;
    }

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "storage unavailable; retry");
        return;
    }

    if (reply->element[0]->integer == -1 || reply->elements < 2) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_FORBIDDEN, "forbidden", "not a member of this room");
        return;
    }

    ctx->seq = (uint64_t) reply->element[1]->integer;

    ir.room = ctx->room;
    ir.user = ctx->user;
    ir.members = ctx->members;
    ir.n_members = ctx->n_members;
    ir.joined_seq = ctx->seq;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_INVITE;
    f.invite = &ir;

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_api_invite_result, live) != NGX_OK) {
        live->pending--;
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "relay-worker not connected; retry");
    }
}


static void
ngx_http_minichat_api_invite_result(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    Minichat__InviteResult        *ir;
    const char                   **av;
    size_t                        *al, i, j, k;
    u_char                        *nums, *p;
    ngx_int_t                      rc;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    ir = result ? result->invite_result : NULL;

    if (ir == NULL || (ir->error && ir->error[0]) || ir->room == 0) {
        ngx_http_minichat_api_fail_relay(r, ir ? ir->error : NULL);
        return;
    }

    ctx->target = ir->room;
    ctx->created = ir->created;

    ctx->added = ngx_palloc(r->pool, (ir->n_added + 1) * sizeof(uint64_t));
    if (ctx->added == NULL) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR, "unavailable", "out of memory");
        return;
    }
    ngx_memcpy(ctx->added, ir->added, ir->n_added * sizeof(uint64_t));
    ctx->n_added = ir->n_added;

    /* who joins in Redis: every invitee MySQL now has as a member, not only
     * the newly added, so that a retry repairs a Redis step that failed */
    for (i = 0, j = 0; i < ctx->n_members; i++) {
        for (k = 0; k < ir->n_members; k++) {
            if (ir->members[k] == ctx->members[i]) {
                ctx->members[j++] = ctx->members[i];
                break;
            }
        }
    }
    ctx->n_members = j;

    ngx_http_minichat_api_start(ctx);

    if (ir->created) {
        /* a new group room made from a direct room: loaded like a new room */
        rc = ngx_http_minichat_room_load_new(ir->room, ir->members, ir->n_members,
                                             ngx_http_minichat_api_invite_loaded, live);

    } else if (ctx->n_members == 0) {
        live->pending--;
        ngx_http_minichat_api_invite_announce(live);
        return;

    } else {
        av = ngx_palloc(r->pool, (ctx->n_members + 1) * sizeof(char *));
        al = ngx_palloc(r->pool, (ctx->n_members + 1) * sizeof(size_t));
        nums = ngx_pnalloc(r->pool, (ctx->n_members + 1) * (NGX_INT64_LEN + 1));
        if (av == NULL || al == NULL || nums == NULL) {
            live->pending--;
            ngx_http_minichat_api_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR, "unavailable", "out of memory");
            return;
        }

        p = nums;
        av[0] = (const char *) p;
        p = ngx_sprintf(p, "%uL", ctx->seq);
        al[0] = p - (u_char *) av[0];
        for (i = 0; i < ctx->n_members; i++) {
            av[1 + i] = (const char *) p;
            p = ngx_sprintf(p, "%uL", ctx->members[i]);
            al[1 + i] = p - (u_char *) av[1 + i];
        }

        rc = ngx_http_minichat_room_script(ir->room, &ngx_http_minichat_script_join, ctx->n_members + 1, av, al,
                                           ngx_http_minichat_api_invite_joined, live);
    }

    if (rc != NGX_OK) {
        live->pending--;
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "redis not connected; retry");
    }
}


static void
ngx_http_minichat_api_invite_joined(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_request_t            *r;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }

    /* a room rebuilt from MySQL meanwhile has the new members already */
    if (rc == NGX_ERROR || (reply && reply->type != REDIS_REPLY_INTEGER)) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                   "members stored, redis failed; retry");
        return;
    }

    ngx_http_minichat_api_invite_announce(live);
}


static void
ngx_http_minichat_api_invite_loaded(redisReply *reply, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_request_t            *r;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "room stored, redis failed; retry");
        return;
    }

    ngx_http_minichat_api_invite_announce(live);
}


/* The "join" system message in the room the users joined. */
static void
ngx_http_minichat_api_invite_announce(ngx_http_minichat_api_live_t *live)
{
    ngx_http_minichat_api_t      *ctx = live->ctx;
    ngx_http_request_t           *r = live->request;
    ngx_http_minichat_message_t   m;
    u_char                       *body, *p, cid[48];
    size_t                        i;

    if (ctx->n_added == 0) {
        live->pending++;   /* invite_sent counts one reply in */
        ngx_http_minichat_api_invite_sent(NGX_OK, NULL, NULL, 0, 0, live);
        return;
    }

    body = ngx_pnalloc(r->pool, sizeof("{\"event\":\"join\",\"by\":\"\",\"from_room\":\"\",\"users\":[]}")
                                + 2 * NGX_INT64_LEN + ctx->n_added * (NGX_INT64_LEN + 3));
    if (body == NULL) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR, "unavailable", "out of memory");
        return;
    }

    p = ngx_sprintf(body, "{\"event\":\"join\",\"by\":\"%uL\",", ctx->user);
    if (ctx->created) {
        p = ngx_sprintf(p, "\"from_room\":\"%uL\",", ctx->room);
    }
    p = ngx_cpymem(p, "\"users\":[", sizeof("\"users\":[") - 1);
    for (i = 0; i < ctx->n_added; i++) {
        p = ngx_sprintf(p, "%s\"%uL\"", i ? "," : "", ctx->added[i]);
    }
    p = ngx_cpymem(p, "]}", 2);

    ngx_memzero(&m, sizeof(m));
    m.room = ctx->target;
    m.sender = ctx->user;
    m.kind = "system";
    m.cid.data = cid;
    m.cid.len = ngx_sprintf(cid, "sys:join:%uL:%08xD", ngx_http_minichat_now_ms(), (uint32_t) ngx_random()) - cid;
    m.body.data = body;
    m.body.len = p - body;

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_message_send(&m, ngx_http_minichat_api_invite_sent, live) != NGX_OK) {
        live->pending--;
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                   "members stored; the join message could not be sent");
    }
}


static void
ngx_http_minichat_api_invite_sent(ngx_int_t rc, const char *code, const char *text, uint64_t seq, uint64_t ts,
    void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    u_char                        *body, *p;
    size_t                         i;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    if (rc != NGX_OK) {
        /* the members are in; only the announcement is missing */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "minichat: room %uL: join message not sent: %s",
                      ctx->target, text);
    }

    body = ngx_pnalloc(r->pool, sizeof("{\"room\":,\"created\":false,\"added\":[]}") + NGX_INT64_LEN
                                + ctx->n_added * (NGX_INT64_LEN + 1));
    if (body == NULL) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR, "unavailable", "out of memory");
        return;
    }

    p = ngx_sprintf(body, "{\"room\":%uL,\"created\":%s,\"added\":[", ctx->target, ctx->created ? "true" : "false");
    for (i = 0; i < ctx->n_added; i++) {
        p = ngx_sprintf(p, "%s%uL", i ? "," : "", ctx->added[i]);
    }
    p = ngx_cpymem(p, "]}", 2);

    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, body, p - body);
}


/* --- leave -------------------------------------------------------------- */

ngx_int_t
ngx_http_minichat_api_leave(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    ngx_http_minichat_message_t  m;
    u_char                       body[sizeof("{\"event\":\"leave\",\"user\":\"\"}") + NGX_INT64_LEN], cid[48];
    ngx_int_t                    rc;

    ngx_memzero(&m, sizeof(m));
    m.room = ctx->room;
    m.sender = ctx->user;
    m.kind = "system";
    m.cid.data = cid;
    m.cid.len = ngx_sprintf(cid, "sys:leave:%uL:%08xD", ngx_http_minichat_now_ms(), (uint32_t) ngx_random()) - cid;
    m.body.data = body;
    m.body.len = ngx_sprintf(body, "{\"event\":\"leave\",\"user\":\"%uL\"}", ctx->user) - body;

    ngx_http_minichat_api_start(ctx);

    rc = ngx_http_minichat_message_send(&m, ngx_http_minichat_api_leave_sent, ctx->live);
    if (rc != NGX_OK) {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "storage unavailable; retry");
    }

    return NGX_DONE;
}


static void
ngx_http_minichat_api_leave_sent(ngx_int_t rc, const char *code, const char *text, uint64_t seq, uint64_t ts,
    void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    Minichat__LocalFrame           f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__LeaveRequest         lr = MINICHAT__LEAVE_REQUEST__INIT;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    if (rc != NGX_OK && ngx_strcmp(code, "forbidden") != 0) {
        ngx_http_minichat_api_fail(r, ngx_http_minichat_api_status(code), code, text);
        return;
    }

    /* not a member in Redis: MySQL says whether an earlier leave stands
     * (left_seq 0 asks it to confirm, and this leave finishes it) */
    ctx->seq = (rc == NGX_OK) ? seq : 0;

    lr.room = ctx->room;
    lr.user = ctx->user;
    lr.left_seq = ctx->seq;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_LEAVE;
    f.leave = &lr;

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_api_leave_result, live) != NGX_OK) {
        live->pending--;
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "relay-worker not connected; retry");
    }
}


static void
ngx_http_minichat_api_leave_result(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    Minichat__LeaveResult         *lr;
    const char                    *av[2];
    size_t                         al[2];
    u_char                         u[NGX_INT64_LEN], s[NGX_INT64_LEN];

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    lr = result ? result->leave_result : NULL;

    if (lr == NULL || (lr->error && lr->error[0])) {
        ngx_http_minichat_api_fail_relay(r, lr ? lr->error : NULL);
        return;
    }

    if (lr->left_seq) {
        /* an earlier attempt's leave stands; a second message may be in the room */
        ctx->seq = lr->left_seq;
    }

    av[0] = (const char *) u;
    al[0] = ngx_sprintf(u, "%uL", ctx->user) - u;
    av[1] = (const char *) s;
    al[1] = ngx_sprintf(s, "%uL", ctx->seq) - s;

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_room_script(ctx->room, &ngx_http_minichat_script_leave, 2, av, al,
                                      ngx_http_minichat_api_leave_done, live)
        != NGX_OK)
    {
        live->pending--;
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "redis not connected; retry");
    }
}


static void
ngx_http_minichat_api_leave_done(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_minichat_api_t       *ctx;
    ngx_http_request_t            *r;
    u_char                         body[sizeof("{\"room\":,\"left_seq\":}") + 2 * NGX_INT64_LEN], *p;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }
    ctx = live->ctx;

    /* a room rebuilt from MySQL meanwhile knows of the leave already */
    if (rc == NGX_ERROR || (reply && reply->type != REDIS_REPLY_INTEGER)) {
        ngx_http_minichat_api_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable", "left in mysql, redis failed; retry");
        return;
    }

    p = ngx_sprintf(body, "{\"room\":%uL,\"left_seq\":%uL}", ctx->room, ctx->seq);
    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, body, p - body);
}


/* --- read --------------------------------------------------------------- */

ngx_int_t
ngx_http_minichat_api_read(ngx_http_request_t *r, ngx_http_minichat_api_t *ctx, json_t *root)
{
    json_t  *js = json_object_get(root, "seq");

    if (!json_is_integer(js) || json_integer_value(js) < 0) {
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                            "\"seq\" must be a non-negative integer");
    }

    ngx_http_minichat_api_start(ctx);

    if (ngx_http_minichat_read_move(ctx->room, ctx->user, (uint64_t) json_integer_value(js), 0,
                                    ngx_http_minichat_api_read_done, ctx->live)
        != NGX_OK)
    {
        ctx->live->pending--;
        return ngx_http_minichat_api_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                                            "storage unavailable; retry");
    }

    return NGX_DONE;
}


static void
ngx_http_minichat_api_read_done(ngx_int_t rc, const char *code, const char *text, uint64_t seq, void *data)
{
    ngx_http_minichat_api_live_t  *live = data;
    ngx_http_request_t            *r;
    u_char                         body[sizeof("{\"room\":,\"seq\":}") + 2 * NGX_INT64_LEN], *p;

    r = ngx_http_minichat_api_resume(live);
    if (r == NULL) {
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_minichat_api_fail(r, ngx_http_minichat_api_status(code), code, text);
        return;
    }

    p = ngx_sprintf(body, "{\"room\":%uL,\"seq\":%uL}", live->ctx->room, seq);
    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, body, p - body);
}
