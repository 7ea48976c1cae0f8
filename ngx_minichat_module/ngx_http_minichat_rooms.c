/*
 * The caller's rooms by last activity: the `rooms` op and GET /api/rooms.
 *
 * The page comes from MySQL through the relay-worker (keyset pagination on
 * the my_rooms index; the cursor is opaque to clients).  Each room's unread
 * count is last_seq - last_read_seq, taken from Redis where the room is
 * loaded (lua/roomstat.lua: fresher than MySQL, whose read pointers are
 * written back once a second), else from MySQL's columns.
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"


#define NGX_HTTP_MINICHAT_ROOMS_DEFAULT  20
#define NGX_HTTP_MINICHAT_ROOMS_MAX      MC_OP_ROOMS_MAX


typedef struct {
    ngx_http_minichat_rooms_pt   handler;
    void                        *data;
    uint64_t                     user;
    Minichat__LocalFrame        *result;     /* unpacked copy of the relay's answer */
    uint64_t                    *last;       /* per room, from Redis or MySQL */
    uint64_t                    *read;
    ngx_uint_t                   waiting;    /* roomstat replies outstanding */
} ngx_http_minichat_rooms_t;


typedef struct {
    ngx_http_minichat_rooms_t  *list;
    size_t                      i;
} ngx_http_minichat_roomstat_t;


static void ngx_http_minichat_rooms_result(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_rooms_stat(redisReply *reply, void *data);
static void ngx_http_minichat_rooms_finish(ngx_http_minichat_rooms_t *l);
static void ngx_http_minichat_rooms_free(ngx_http_minichat_rooms_t *l);


ngx_int_t
ngx_http_minichat_rooms_list(uint64_t user, ngx_uint_t limit, const char *cursor,
    ngx_http_minichat_rooms_pt handler, void *data)
{
    ngx_http_minichat_rooms_t  *l;
    Minichat__LocalFrame        f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__RoomsRequest      rr = MINICHAT__ROOMS_REQUEST__INIT;

    l = ngx_calloc(sizeof(ngx_http_minichat_rooms_t), ngx_cycle->log);
    if (l == NULL) {
        return NGX_ERROR;
    }

    l->handler = handler;
    l->data = data;
    l->user = user;

    rr.user = user;
    rr.limit = (uint32_t) (limit ? ngx_min(limit, NGX_HTTP_MINICHAT_ROOMS_MAX) : NGX_HTTP_MINICHAT_ROOMS_DEFAULT);
    rr.cursor = (char *) (cursor ? cursor : "");
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_ROOMS;
    f.rooms = &rr;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_rooms_result, l) != NGX_OK) {
        ngx_free(l);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_rooms_result(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_rooms_t     *l = data;
    ngx_http_minichat_roomstat_t  *rs;
    Minichat__RoomsResult         *rr;
    Minichat__RoomSummary         *s;
    const char                    *av[3];
    size_t                         al[3], i, n, len;
    u_char                        *buf, k1[48], k2[48], u[NGX_INT64_LEN];

    rr = result ? result->rooms_result : NULL;

    if (rr && rr->error && ngx_strncmp(rr->error, "bad_request:", 12) == 0) {
        /* a cursor that is not one of ours */
        l->handler(NGX_DECLINED, "bad_request", "\"cursor\" is not one from a rooms reply", NULL, 0, l->data);
        ngx_http_minichat_rooms_free(l);
        return;
    }

    if (rr == NULL || (rr->error && rr->error[0])) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: room list of user %uL failed: %s", l->user,
                      rr ? rr->error : "no answer from relay-worker");
        l->handler(NGX_ERROR, "unavailable", "room list unavailable; retry", NULL, 0, l->data);
        ngx_http_minichat_rooms_free(l);
        return;
    }

    /* the frame belongs to the relay client: keep a copy while Redis answers */
    len = minichat__local_frame__get_packed_size(result);
    buf = ngx_alloc(len ? len : 1, ngx_cycle->log);
    if (buf == NULL) {
        l->handler(NGX_ERROR, "unavailable", "out of memory", NULL, 0, l->data);
        ngx_http_minichat_rooms_free(l);
        return;
    }
    minichat__local_frame__pack(result, buf);
    l->result = minichat__local_frame__unpack(NULL, len, buf);
    ngx_free(buf);

    if (l->result == NULL) {
        l->handler(NGX_ERROR, "unavailable", "out of memory", NULL, 0, l->data);
        ngx_http_minichat_rooms_free(l);
        return;
    }

    rr = l->result->rooms_result;
    n = rr->n_rooms;

    if (n) {
        l->last = ngx_alloc(2 * n * sizeof(uint64_t), ngx_cycle->log);
        if (l->last == NULL) {
            l->handler(NGX_ERROR, "unavailable", "out of memory", NULL, 0, l->data);
            ngx_http_minichat_rooms_free(l);
            return;
        }
        l->read = l->last + n;
    }

    for (i = 0; i < n; i++) {
        s = rr->rooms[i];
        l->last[i] = s->last_seq;
        l->read[i] = s->last_read_seq;
    }

    av[2] = (const char *) u;
    al[2] = ngx_sprintf(u, "%uL", l->user) - u;

    for (i = 0; i < n; i++) {
        rs = ngx_alloc(sizeof(ngx_http_minichat_roomstat_t), ngx_cycle->log);
        if (rs == NULL) {
            break;
        }
        rs->list = l;
        rs->i = i;

        av[0] = (const char *) k1;
        al[0] = ngx_sprintf(k1, "{r:%uL}:seq", rr->rooms[i]->id) - k1;
        av[1] = (const char *) k2;
        al[1] = ngx_sprintf(k2, "{r:%uL}:read", rr->rooms[i]->id) - k2;

        if (ngx_http_minichat_redis_script(MINICHAT_LUA_ROOMSTAT_SHA1, MINICHAT_LUA_ROOMSTAT_SRC, 2, 3, av, al,
                                           ngx_http_minichat_rooms_stat, rs)
            != NGX_OK)
        {
            ngx_free(rs);
            break;
        }

        l->waiting++;
    }

    if (l->waiting == 0) {
        ngx_http_minichat_rooms_finish(l);
    }
}


static void
ngx_http_minichat_rooms_stat(redisReply *reply, void *data)
{
    ngx_http_minichat_roomstat_t  *rs = data;
    ngx_http_minichat_rooms_t     *l = rs->list;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[0]->integer >= 0
        && reply->element[1]->type == REDIS_REPLY_INTEGER)
    {
        /* Redis is ahead of MySQL, or MySQL's own values stand */
        l->last[rs->i] = ngx_max(l->last[rs->i], (uint64_t) reply->element[0]->integer);
        l->read[rs->i] = ngx_max(l->read[rs->i], (uint64_t) reply->element[1]->integer);
    }

    ngx_free(rs);

    if (--l->waiting == 0) {
        ngx_http_minichat_rooms_finish(l);
    }
}


static void
ngx_http_minichat_rooms_finish(ngx_http_minichat_rooms_t *l)
{
    Minichat__RoomsResult  *rr = l->result->rooms_result;
    Minichat__RoomSummary  *s;
    u_char                 *page, *p;
    size_t                  len, i;

    len = sizeof("\"rooms\":[],\"cursor\":null") + 2 + 6 * ngx_strlen(rr->next_cursor);
    for (i = 0; i < rr->n_rooms; i++) {
        s = rr->rooms[i];
        len += sizeof("{\"id\":,\"kind\":\"\",\"title\":\"\",\"last_seq\":,\"unread\":,\"last_message_at\":,"
                      "\"last_preview\":\"\",\"members\":},") + 5 * NGX_INT64_LEN + 16
               + ngx_http_minichat_json_escape_len((u_char *) s->title, ngx_strlen(s->title))
               + ngx_http_minichat_json_escape_len((u_char *) s->last_preview, ngx_strlen(s->last_preview));
    }

    page = ngx_alloc(len, ngx_cycle->log);
    if (page == NULL) {
        l->handler(NGX_ERROR, "unavailable", "out of memory", NULL, 0, l->data);
        ngx_http_minichat_rooms_free(l);
        return;
    }

    p = ngx_cpymem(page, "\"rooms\":[", sizeof("\"rooms\":[") - 1);

    for (i = 0; i < rr->n_rooms; i++) {
        s = rr->rooms[i];
        if (i) {
            *p++ = ',';
        }
        p = ngx_sprintf(p, "{\"id\":%uL,\"kind\":\"", s->id);
        p = ngx_http_minichat_json_escape(p, (u_char *) s->kind, ngx_min(ngx_strlen(s->kind), 16));
        p = ngx_cpymem(p, "\",\"title\":\"", sizeof("\",\"title\":\"") - 1);
        p = ngx_http_minichat_json_escape(p, (u_char *) s->title, ngx_strlen(s->title));
        p = ngx_sprintf(p, "\",\"last_seq\":%uL,\"unread\":%uL,\"last_message_at\":%uL,\"last_preview\":\"",
                        l->last[i], l->last[i] > l->read[i] ? l->last[i] - l->read[i] : 0,
                        (uint64_t) s->last_message_at);
        p = ngx_http_minichat_json_escape(p, (u_char *) s->last_preview, ngx_strlen(s->last_preview));
        p = ngx_sprintf(p, "\",\"members\":%uD}", s->members);
    }

    p = ngx_cpymem(p, "],\"cursor\":", sizeof("],\"cursor\":") - 1);
    if (rr->next_cursor && rr->next_cursor[0]) {
        *p++ = '"';
        p = ngx_http_minichat_json_escape(p, (u_char *) rr->next_cursor, ngx_strlen(rr->next_cursor));
        *p++ = '"';
    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    l->handler(NGX_OK, NULL, NULL, page, p - page, l->data);

    ngx_free(page);
    ngx_http_minichat_rooms_free(l);
}


static void
ngx_http_minichat_rooms_free(ngx_http_minichat_rooms_t *l)
{
    if (l->result) {
        minichat__local_frame__free_unpacked(l->result, NULL);
    }
    if (l->last) {
        ngx_free(l->last);
    }
    ngx_free(l);
}


static void
ngx_http_minichat_rooms_done(ngx_int_t rc, const char *code, const char *text, const u_char *page, size_t len, void *data)
{
    ngx_http_minichat_req_page(data, "rooms", rc, code, text, page, len);
}


ngx_int_t
ngx_http_minichat_op_rooms(ngx_http_minichat_req_t *rq, const mc_op_t *op)
{
    ngx_http_minichat_req_t  *copy;
    ngx_uint_t                limit = op->limit;
    const char               *cursor = op->cursor;

    if (rq->ws->pending >= NGX_HTTP_MINICHAT_MAX_INFLIGHT) {
        return ngx_http_minichat_req_error(rq, "rate_limited", "too many requests awaiting their answer; wait");
    }

    copy = ngx_alloc(sizeof(ngx_http_minichat_req_t), ngx_cycle->log);
    if (copy == NULL) {
        return ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
    }
    *copy = *rq;

    if (ngx_http_minichat_rooms_list(rq->ws->user, limit, cursor, ngx_http_minichat_rooms_done, copy) != NGX_OK) {
        ngx_free(copy);
        return ngx_http_minichat_req_error(rq, "unavailable", "relay-worker unavailable; retry");
    }

    rq->ws->pending++;

    return NGX_OK;
}
