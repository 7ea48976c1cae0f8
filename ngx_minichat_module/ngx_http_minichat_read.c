/*
 * Read pointers: the `read` op and POST /api/rooms/<id>/read.
 *
 * lua/read.lua moves the member's pointer forward (never back, never past
 * the room's last seq).  When it moved, the pointer is marked dirty in
 * {dirty}:read for the roomlist-consumer's flusher, which writes it to
 * room_members.last_read_seq, and the room's members are told with a `read`
 * event on every node (the reading connection excepted).
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"


typedef struct {
    ngx_http_minichat_read_pt   handler;
    void                       *data;
    uint64_t                    room;
    uint64_t                    user;
    uint64_t                    origin_conn;
    ngx_http_minichat_members_t *members;  /* held: its version went to read.lua */
} ngx_http_minichat_read_t;


static void ngx_http_minichat_read_reply(redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_minichat_read_done(ngx_int_t rc, const char *code, const char *text, uint64_t seq,
    void *data);


static const char  *ngx_http_minichat_read_keys[] = { "members", "seq", "read", "mver" };

static const ngx_http_minichat_script_t  ngx_http_minichat_script_read = {
    MINICHAT_LUA_READ_SHA1, MINICHAT_LUA_READ_SRC, 4, ngx_http_minichat_read_keys, 0, NULL
};


ngx_int_t
ngx_http_minichat_read_move(uint64_t room, uint64_t user, uint64_t seq, uint64_t origin_conn,
    ngx_http_minichat_read_pt handler, void *data)
{
    ngx_http_minichat_read_t  *rd;
    const char                *av[3];
    size_t                     al[3];
    u_char                     u[NGX_INT64_LEN], s[NGX_INT64_LEN];
    ngx_str_t                  ver;

    rd = ngx_alloc(sizeof(ngx_http_minichat_read_t), ngx_cycle->log);
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->handler = handler;
    rd->data = data;
    rd->room = room;
    rd->user = user;
    rd->origin_conn = origin_conn;
    rd->members = ngx_http_minichat_members_hold(room);

    av[0] = (const char *) u;
    al[0] = ngx_sprintf(u, "%uL", user) - u;
    av[1] = (const char *) s;
    al[1] = ngx_sprintf(s, "%uL", seq) - s;
    ver = ngx_http_minichat_members_version(rd->members);
    av[2] = (const char *) ver.data;
    al[2] = ver.len;

    if (ngx_http_minichat_room_script(room, &ngx_http_minichat_script_read, 3, av, al,
                                      ngx_http_minichat_read_reply, rd)
        != NGX_OK)
    {
        ngx_http_minichat_members_release(rd->members);
        ngx_free(rd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_read_reply(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_read_t       *rd = data;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    Minichat__ChatMessage           e = MINICHAT__CHAT_MESSAGE__INIT;
    const uint64_t                 *members;
    uint64_t                        pointer;
    size_t                          n;

    if (rc == NGX_DECLINED) {
        rd->handler(NGX_DECLINED, "not_found", "no such room", 0, rd->data);
        goto done;
    }

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        rd->handler(NGX_ERROR, "unavailable", "storage unavailable; retry", 0, rd->data);
        goto done;
    }

    if (reply->element[0]->integer == -1) {
        rd->handler(NGX_DECLINED, "forbidden", "not a member of this room", 0, rd->data);
        goto done;
    }

    if (reply->elements < 3) {
        rd->handler(NGX_ERROR, "unavailable", "storage error; retry", 0, rd->data);
        goto done;
    }

    pointer = (uint64_t) reply->element[1]->integer;

    if (reply->element[2]->integer == 1) {
        ngx_http_minichat_read_mark(rd->room, rd->user, pointer);

        /* the event is best effort: a reply without members tells nobody */
        if (ngx_http_minichat_members_reply(rd->room, &rd->members, reply, 3) == NGX_OK) {
            members = ngx_http_minichat_members_ids(rd->members, &n);
            if (n > 0) {
                e.kind = "read";
                e.room = rd->room;
                e.sender = rd->user;
                e.seq_read = pointer;
                e.recipients = (uint64_t *) members;
                e.n_recipients = n;
                e.origin_node = (char *) mcf->node.data;
                e.origin_conn = rd->origin_conn;
                (void) ngx_http_minichat_event_send(&e);
            }
        }
    }

    rd->handler(NGX_OK, NULL, NULL, pointer, rd->data);

done:

    ngx_http_minichat_members_release(rd->members);
    ngx_free(rd);
}


/* Marks a moved read pointer for the flusher, which writes it to MySQL and
 * then unmarks it. */
void
ngx_http_minichat_read_mark(uint64_t room, uint64_t user, uint64_t seq)
{
    ngx_str_t  fv[2];
    u_char     field[2 * NGX_INT64_LEN + 2], val[NGX_INT64_LEN];

    fv[0].data = field;
    fv[0].len = ngx_sprintf(field, "%uL:%uL", room, user) - field;
    fv[1].data = val;
    fv[1].len = ngx_sprintf(val, "%uL", seq) - val;

    /* write-behind: the flusher takes it seconds later anyway */
    ngx_http_minichat_defer("HSET", (u_char *) "{dirty}:read", sizeof("{dirty}:read") - 1, fv, 2);
}


ngx_int_t
ngx_http_minichat_op_read(ngx_http_minichat_req_t *rq, const mc_op_t *op)
{
    ngx_http_minichat_req_t  *copy;
    uint64_t                  room = op->room, seq = op->seq;

    if (rq->ws->pending >= NGX_HTTP_MINICHAT_MAX_INFLIGHT) {
        return ngx_http_minichat_req_error(rq, "rate_limited", "too many requests awaiting their answer; wait");
    }

    copy = ngx_alloc(sizeof(ngx_http_minichat_req_t), ngx_cycle->log);
    if (copy == NULL) {
        return ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
    }
    *copy = *rq;

    if (ngx_http_minichat_read_move(room, rq->ws->user, seq, rq->ws->id, ngx_http_minichat_read_done, copy)
        != NGX_OK)
    {
        ngx_free(copy);
        return ngx_http_minichat_req_error(rq, "unavailable", "storage unavailable; retry");
    }

    rq->ws->pending++;

    return NGX_OK;
}


static void
ngx_http_minichat_read_done(ngx_int_t rc, const char *code, const char *text, uint64_t seq, void *data)
{
    ngx_http_minichat_req_t  *rq = data;
    ngx_http_minichat_ws_t   *ws = rq->ws;
    u_char                    buf[sizeof(",\"seq\":") + NGX_INT64_LEN], *p;

    if (!ws->closed) {
        if (rc != NGX_OK) {
            (void) ngx_http_minichat_req_error(rq, code, text);

        } else if (rq->has_id) {
            p = ngx_sprintf(buf, ",\"seq\":%uL", seq);
            (void) ngx_http_minichat_req_reply(rq, "ok", buf, p - buf);
        }
    }

    ngx_free(rq);
    ws->pending--;
    ngx_http_minichat_conn_release(ws);
}
