/*
 * The `resume` op: a reconnecting client names, per room, the last seq it
 * has (and the epoch it knew); lua/resume.lua returns the missed messages
 * from the room's recent log when it still holds all of them.  They are
 * replayed in order, then `resumed` says recovered true or false (false: the
 * client pages history instead).
 *
 * Ordering against live delivery: from the moment the op arrives until the
 * script answers, this connection holds the room's live messages; then it
 * sends the replay, then the held messages above the replay's last seq, and
 * from then on drops any live message of that room at or below the last seq
 * it sent.  So the client sees the room in seq order without a duplicate.
 *
 * Live delivery is not always in order: a seq skipped as a gap (its source
 * was slow, or it was lost and published again) comes later, out of order.
 * So "sent" is not "at or below the highest seq sent": the state keeps the
 * highest seq below which everything was sent (contig) and which of the 64
 * seqs above it were.  A replay sends what was not, so a resume over a gap
 * fills it; a seq beyond that window may be sent twice, which the client
 * drops (protocol.md: dedupe by seq).
 *
 * The per-room state exists only on connections that resumed.
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"


#define NGX_HTTP_MINICHAT_RESUME_MAX     "1000"
#define NGX_HTTP_MINICHAT_RESUME_STATES  1000   /* rooms resumed on one connection */


typedef struct {
    uint64_t     room;
    uint64_t     last;       /* highest seq sent to the client */
    uint64_t     contig;     /* every seq up to this one was sent (or the client said it had it) */
    uint64_t     above;      /* bit i: seq contig + 1 + i was sent */
    ngx_uint_t   holding;    /* the replay is in flight */
    u_char      *held;       /* [seq:8][len:4][frame] ... */
    size_t       held_len;
    size_t       held_cap;
} ngx_http_minichat_resume_room_t;


struct ngx_http_minichat_resume_state_s {
    ngx_uint_t                        n;
    ngx_uint_t                        cap;
    ngx_http_minichat_resume_room_t  *rooms;
};


typedef struct {
    ngx_http_minichat_req_t  rq;
    uint64_t                 room;
    uint64_t                 from;
} ngx_http_minichat_resume_t;


static ngx_http_minichat_resume_room_t *ngx_http_minichat_resume_find(ngx_http_minichat_ws_t *ws, uint64_t room);
static ngx_http_minichat_resume_room_t *ngx_http_minichat_resume_add(ngx_http_minichat_ws_t *ws, uint64_t room);
static void ngx_http_minichat_resume_reply(redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_minichat_resume_release(ngx_http_minichat_ws_t *ws, ngx_http_minichat_resume_room_t *st);
static void ngx_http_minichat_resume_forget(ngx_http_minichat_ws_t *ws, uint64_t room);


/* Returns 1 when seq went out on this connection (or the client had it). */
static ngx_uint_t
ngx_http_minichat_resume_was_sent(const ngx_http_minichat_resume_room_t *st, uint64_t seq)
{
    if (seq <= st->contig) {
        return 1;
    }

    return seq - st->contig <= 64 && (st->above >> (seq - st->contig - 1) & 1);
}


/* Moves contig past the seqs of the window that went out. */
static void
ngx_http_minichat_resume_advance(ngx_http_minichat_resume_room_t *st)
{
    while (st->above & 1) {
        st->contig++;
        st->above >>= 1;
    }
}


/* Notes that seq went out. */
static void
ngx_http_minichat_resume_mark(ngx_http_minichat_resume_room_t *st, uint64_t seq)
{
    if (seq > st->last) {
        st->last = seq;
    }

    if (seq <= st->contig || seq - st->contig > 64) {
        return;   /* beyond the window: it may go out twice, never not at all */
    }

    st->above |= (uint64_t) 1 << (seq - st->contig - 1);
    ngx_http_minichat_resume_advance(st);
}


/* Every seq up to `upto` went out or the client has it. */
static void
ngx_http_minichat_resume_mark_upto(ngx_http_minichat_resume_room_t *st, uint64_t upto)
{
    if (upto <= st->contig) {
        return;
    }

    st->above = upto - st->contig >= 64 ? 0 : st->above >> (upto - st->contig);
    st->contig = upto;
    ngx_http_minichat_resume_advance(st);

    if (upto > st->last) {
        st->last = upto;
    }
}


static const char  *ngx_http_minichat_resume_keys[] = { "members", "seq", "log", "epoch" };

static const ngx_http_minichat_script_t  ngx_http_minichat_script_resume = {
    MINICHAT_LUA_RESUME_SHA1, MINICHAT_LUA_RESUME_SRC, 4, ngx_http_minichat_resume_keys, 0, NULL
};


ngx_int_t
ngx_http_minichat_op_resume(ngx_http_minichat_req_t *rq, const mc_op_t *op)
{
    ngx_http_minichat_ws_t           *ws = rq->ws;
    ngx_http_minichat_resume_t       *r;
    ngx_http_minichat_resume_room_t  *st;
    const char                       *epoch, *av[5];
    size_t                            al[5], i;
    u_char                            u[NGX_INT64_LEN], s[NGX_INT64_LEN], budget[NGX_INT64_LEN];
    uint64_t                          room, from;

    /* one resume (up to 100 rooms) may run beside the usual in-flight cap */
    if (ws->pending > NGX_HTTP_MINICHAT_MAX_INFLIGHT) {
        return ngx_http_minichat_req_error(rq, "rate_limited", "too many requests awaiting their answer; wait");
    }

    /* mc_op_decode() checked every room before anything starts */
    for (i = 0; i < op->nrooms; i++) {
        room = op->rooms[i].room;
        from = op->rooms[i].seq;
        epoch = op->rooms[i].epoch;

        st = ngx_http_minichat_resume_find(ws, room);
        if (st == NULL) {
            if (ws->resume && ws->resume->n >= NGX_HTTP_MINICHAT_RESUME_STATES) {
                return ngx_http_minichat_req_error(rq, "bad_request",
                                                   "too many rooms resumed on one connection; reconnect");
            }
            st = ngx_http_minichat_resume_add(ws, room);
            if (st == NULL) {
                return ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
            }
        }
        st->holding++;

        r = ngx_alloc(sizeof(ngx_http_minichat_resume_t), ngx_cycle->log);
        if (r == NULL) {
            st->holding--;
            return ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
        }
        r->rq = *rq;
        r->room = room;
        r->from = from;

        av[0] = (const char *) u;
        al[0] = ngx_sprintf(u, "%uL", ws->user) - u;
        av[1] = (const char *) s;
        al[1] = ngx_sprintf(s, "%uL", from) - s;
        av[2] = epoch;
        al[2] = ngx_strlen(epoch);
        av[3] = NGX_HTTP_MINICHAT_RESUME_MAX;
        al[3] = sizeof(NGX_HTTP_MINICHAT_RESUME_MAX) - 1;
        av[4] = (const char *) budget;
        al[4] = ngx_sprintf(budget, "%uz", ngx_http_minichat_conf()->send_queue_size / 2) - budget;

        if (ngx_http_minichat_room_script(room, &ngx_http_minichat_script_resume, 5, av, al,
                                          ngx_http_minichat_resume_reply, r)
            != NGX_OK)
        {
            ngx_free(r);
            ngx_http_minichat_resume_release(ws, st);
            return ngx_http_minichat_req_error(rq, "unavailable", "storage unavailable; retry");
        }

        ws->pending++;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_resume_reply(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_resume_t       *r = data;
    ngx_http_minichat_ws_t           *ws = r->rq.ws;
    ngx_http_minichat_resume_room_t  *st;
    ngx_uint_t                        recovered;
    uint64_t                          last;
    redisReply                       *e;
    u_char                            buf[sizeof(",\"room\":,\"recovered\":false,\"seq\":,\"epoch\":\"\"")
                                          + 2 * NGX_INT64_LEN + 6 * 16], *p;
    size_t                            i;

    st = ws->closed ? NULL : ngx_http_minichat_resume_find(ws, r->room);

    if (st == NULL) {
        goto done;
    }

    if (rc == NGX_DECLINED) {
        (void) ngx_http_minichat_req_error(&r->rq, "not_found", "no such room");
        ngx_http_minichat_resume_release(ws, st);
        ngx_http_minichat_resume_forget(ws, r->room);
        goto done;
    }

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        (void) ngx_http_minichat_req_error(&r->rq, "unavailable", "storage unavailable; resume again");
        ngx_http_minichat_resume_release(ws, st);
        goto done;
    }

    if (reply->element[0]->integer == -1) {
        (void) ngx_http_minichat_req_error(&r->rq, "forbidden", "not a member of this room");
        ngx_http_minichat_resume_release(ws, st);
        ngx_http_minichat_resume_forget(ws, r->room);
        goto done;
    }

    if (reply->elements < 4 || reply->element[1]->type != REDIS_REPLY_INTEGER
        || reply->element[2]->type != REDIS_REPLY_STRING || reply->element[3]->type != REDIS_REPLY_INTEGER)
    {
        (void) ngx_http_minichat_req_error(&r->rq, "unavailable", "storage error; resume again");
        ngx_http_minichat_resume_release(ws, st);
        goto done;
    }

    last = (uint64_t) reply->element[1]->integer;
    recovered = reply->element[3]->integer == 1;

    if (recovered) {
        /* the replay: seqs from+1 .. last, skipping what went out live already */
        for (i = 4; i < reply->elements; i++) {
            e = reply->element[i];
            if (e->type != REDIS_REPLY_STRING) {
                continue;
            }
            if (ngx_http_minichat_resume_was_sent(st, r->from + 1 + (i - 4))) {
                continue;
            }
            if (ngx_http_minichat_conn_text(ws, (u_char *) e->str, e->len) != NGX_OK) {
                goto done;
            }
        }
    }

    /* the client has every seq up to `last` now (or pages history for them) */
    ngx_http_minichat_resume_mark_upto(st, last);

    p = ngx_sprintf(buf, ",\"room\":%uL,\"recovered\":%s,\"seq\":%uL,\"epoch\":\"", r->room,
                    recovered ? "true" : "false", last);
    p = ngx_http_minichat_json_escape(p, (u_char *) reply->element[2]->str, ngx_min(reply->element[2]->len, 16));
    *p++ = '"';

    if (ngx_http_minichat_req_reply(&r->rq, "resumed", buf, p - buf) != NGX_OK) {
        goto done;
    }

    ngx_http_minichat_resume_release(ws, st);

done:

    ngx_free(r);
    ws->pending--;
    ngx_http_minichat_conn_release(ws);
}


/* One replay of the room is over: when none is left in flight, the held
 * live messages above the last seq sent go out, in order. */
static void
ngx_http_minichat_resume_release(ngx_http_minichat_ws_t *ws, ngx_http_minichat_resume_room_t *st)
{
    u_char    *p, *end, *held;
    uint64_t   seq;
    uint32_t   len;

    if (st->holding) {
        st->holding--;
    }

    if (st->holding || st->held == NULL) {
        return;
    }

    if (ws->closing || ws->closed) {
        /* no data frame after our close frame */
        ngx_free(st->held);
        st->held = NULL;
        st->held_len = 0;
        st->held_cap = 0;
        return;
    }

    held = st->held;
    end = held + st->held_len;
    st->held = NULL;
    st->held_len = 0;
    st->held_cap = 0;

    for (p = held; p + 12 <= end; p += 12 + len) {
        ngx_memcpy(&seq, p, 8);
        ngx_memcpy(&len, p + 8, 4);
        if (ngx_http_minichat_resume_was_sent(st, seq)) {
            continue;
        }
        ngx_http_minichat_resume_mark(st, seq);
        if (ngx_http_minichat_conn_queue_frame(ws, p + 12, len) != NGX_OK) {
            break;
        }
        ngx_http_minichat_count(deliveries, 1);
    }

    ngx_free(held);
}


ngx_uint_t
ngx_http_minichat_resume_filter(ngx_http_minichat_ws_t *ws, uint64_t room, uint64_t seq, const u_char *frame,
    size_t len)
{
    ngx_http_minichat_main_conf_t    *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_resume_room_t  *st;
    uint32_t                          l32;
    size_t                            cap;
    u_char                           *p;

    st = ngx_http_minichat_resume_find(ws, room);
    if (st == NULL) {
        return 0;
    }

    if (!st->holding) {
        if (ngx_http_minichat_resume_was_sent(st, seq)) {
            return 1;
        }
        ngx_http_minichat_resume_mark(st, seq);
        return 0;
    }

    /* held, bounded like the output queue */
    if (st->held_len + 12 + len > mcf->send_queue_size) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "minichat: user %uL: too much held during a resume; closing", ws->user);
        ngx_http_minichat_conn_abort(ws);
        return 1;
    }

    if (st->held_len + 12 + len > st->held_cap) {
        cap = ngx_max(st->held_cap * 2, ngx_max(st->held_len + 12 + len, 1024));
        p = ngx_alloc(cap, ngx_cycle->log);
        if (p == NULL) {
            ngx_http_minichat_conn_abort(ws);
            return 1;
        }
        if (st->held) {
            ngx_memcpy(p, st->held, st->held_len);
            ngx_free(st->held);
        }
        st->held = p;
        st->held_cap = cap;
    }

    l32 = (uint32_t) len;
    p = st->held + st->held_len;
    ngx_memcpy(p, &seq, 8);
    ngx_memcpy(p + 8, &l32, 4);
    ngx_memcpy(p + 12, frame, len);
    st->held_len += 12 + len;

    return 1;
}


static ngx_http_minichat_resume_room_t *
ngx_http_minichat_resume_find(ngx_http_minichat_ws_t *ws, uint64_t room)
{
    ngx_uint_t  i;

    if (ws->resume == NULL) {
        return NULL;
    }

    for (i = 0; i < ws->resume->n; i++) {
        if (ws->resume->rooms[i].room == room) {
            return &ws->resume->rooms[i];
        }
    }

    return NULL;
}


static ngx_http_minichat_resume_room_t *
ngx_http_minichat_resume_add(ngx_http_minichat_ws_t *ws, uint64_t room)
{
    ngx_http_minichat_resume_state_t  *rs;
    ngx_http_minichat_resume_room_t   *rooms;
    ngx_uint_t                         cap;

    if (ws->resume == NULL) {
        ws->resume = ngx_calloc(sizeof(ngx_http_minichat_resume_state_t), ngx_cycle->log);
        if (ws->resume == NULL) {
            return NULL;
        }
    }

    rs = ws->resume;

    if (rs->n == rs->cap) {
        cap = ngx_max(rs->cap * 2, 4);
        rooms = ngx_alloc(cap * sizeof(ngx_http_minichat_resume_room_t), ngx_cycle->log);
        if (rooms == NULL) {
            return NULL;
        }
        if (rs->rooms) {
            ngx_memcpy(rooms, rs->rooms, rs->n * sizeof(ngx_http_minichat_resume_room_t));
            ngx_free(rs->rooms);
        }
        rs->rooms = rooms;
        rs->cap = cap;
    }

    ngx_memzero(&rs->rooms[rs->n], sizeof(ngx_http_minichat_resume_room_t));
    rs->rooms[rs->n].room = room;

    return &rs->rooms[rs->n++];
}


/* Drops a room's state when it holds nothing worth keeping (a refused
 * resume), so refused rooms do not pile up on a connection. */
static void
ngx_http_minichat_resume_forget(ngx_http_minichat_ws_t *ws, uint64_t room)
{
    ngx_http_minichat_resume_room_t  *st;

    st = ngx_http_minichat_resume_find(ws, room);
    if (st == NULL || st->holding || st->held || st->last) {
        return;
    }

    *st = ws->resume->rooms[--ws->resume->n];
}


void
ngx_http_minichat_resume_free(ngx_http_minichat_ws_t *ws)
{
    ngx_uint_t  i;

    for (i = 0; i < ws->resume->n; i++) {
        if (ws->resume->rooms[i].held) {
            ngx_free(ws->resume->rooms[i].held);
        }
    }

    if (ws->resume->rooms) {
        ngx_free(ws->resume->rooms);
    }

    ngx_free(ws->resume);
    ws->resume = NULL;
}
