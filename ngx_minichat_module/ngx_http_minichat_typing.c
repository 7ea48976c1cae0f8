/*
 * The `typing` op: ephemeral, never stored.  lua/typing.lua checks
 * membership and lets one event per user and room through every
 * minichat_typing_interval; the event goes to the room's members on every
 * node (the typing connection excepted).
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"


typedef struct {
    ngx_http_minichat_req_t  rq;
    uint64_t                 room;
    ngx_http_minichat_members_t *members;  /* held: its version went to typing.lua */
} ngx_http_minichat_typing_t;


static void ngx_http_minichat_typing_reply(redisReply *reply, ngx_int_t rc, void *data);


static const char  *ngx_http_minichat_typing_keys[] = { "members", "seq", NULL, "mver" };


ngx_int_t
ngx_http_minichat_op_typing(ngx_http_minichat_req_t *rq, const mc_op_t *op)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_typing_t     *t;
    ngx_http_minichat_script_t      script;
    const char                     *keys[4];
    const char                     *av[3];
    size_t                          al[3];
    ngx_str_t                       ver;
    u_char                          u[NGX_INT64_LEN], ms[NGX_INT64_LEN], tkey[sizeof("typing:") + NGX_INT64_LEN];
    uint64_t                        room;

    room = op->room;

    if (rq->ws->pending >= NGX_HTTP_MINICHAT_MAX_INFLIGHT) {
        return ngx_http_minichat_req_error(rq, "rate_limited", "too many requests awaiting their answer; wait");
    }

    t = ngx_alloc(sizeof(ngx_http_minichat_typing_t), ngx_cycle->log);
    if (t == NULL) {
        return ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
    }
    t->rq = *rq;
    t->room = room;
    t->members = ngx_http_minichat_members_hold(room);

    /* the throttle key names the user: {r:<room>}:typing:<user> */
    keys[0] = ngx_http_minichat_typing_keys[0];
    keys[1] = ngx_http_minichat_typing_keys[1];
    keys[2] = (const char *) tkey;
    keys[3] = ngx_http_minichat_typing_keys[3];
    *ngx_sprintf(tkey, "typing:%uL", rq->ws->user) = '\0';

    script.sha1 = MINICHAT_LUA_TYPING_SHA1;
    script.src = MINICHAT_LUA_TYPING_SRC;
    script.nkeys = 4;
    script.keys = keys;
    script.gen = 0;
    script.issued = NULL;

    av[0] = (const char *) u;
    al[0] = ngx_sprintf(u, "%uL", rq->ws->user) - u;
    av[1] = (const char *) ms;
    al[1] = ngx_sprintf(ms, "%M", mcf->typing_interval) - ms;
    ver = ngx_http_minichat_members_version(t->members);
    av[2] = (const char *) ver.data;
    al[2] = ver.len;

    if (ngx_http_minichat_room_script(room, &script, 3, av, al, ngx_http_minichat_typing_reply, t) != NGX_OK) {
        ngx_http_minichat_members_release(t->members);
        ngx_free(t);
        return ngx_http_minichat_req_error(rq, "unavailable", "storage unavailable; retry");
    }

    rq->ws->pending++;

    return NGX_OK;
}


static void
ngx_http_minichat_typing_reply(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_typing_t     *t = data;
    ngx_http_minichat_ws_t         *ws = t->rq.ws;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    Minichat__ChatMessage           e = MINICHAT__CHAT_MESSAGE__INIT;
    const uint64_t                 *members;
    size_t                          n;
    long long                       status = 0;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1
        && reply->element[0]->type == REDIS_REPLY_INTEGER)
    {
        status = reply->element[0]->integer;
    }

    if (rc == NGX_DECLINED) {
        (void) ngx_http_minichat_req_error(&t->rq, "not_found", "no such room");

    } else if (rc != NGX_OK || (status != 1 && status != 0 && status != -1)) {
        (void) ngx_http_minichat_req_error(&t->rq, "unavailable", "storage unavailable; retry");

    } else if (status == -1) {
        (void) ngx_http_minichat_req_error(&t->rq, "forbidden", "not a member of this room");

    } else {
        if (status == 1 && ngx_http_minichat_members_reply(t->room, &t->members, reply, 1) == NGX_OK) {
            members = ngx_http_minichat_members_ids(t->members, &n);
            if (n > 0) {
                e.kind = "typing";
                e.room = t->room;
                e.sender = ws->user;
                e.recipients = (uint64_t *) members;
                e.n_recipients = n;
                e.origin_node = (char *) mcf->node.data;
                e.origin_conn = ws->id;
                (void) ngx_http_minichat_event_send(&e);
            }
        }

        if (t->rq.has_id && !ws->closed) {
            (void) ngx_http_minichat_req_reply(&t->rq, "ok", (u_char *) "", 0);
        }
    }

    ngx_http_minichat_members_release(t->members);
    ngx_free(t);
    ws->pending--;
    ngx_http_minichat_conn_release(ws);
}
