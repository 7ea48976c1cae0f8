/*
 * History pages: the `history` op and GET /api/rooms/<id>/messages.
 *
 * Newest first, keyset-paginated by seq: a page is the seqs below `before`
 * (the newest when absent), at most `limit` of them, and `more` says whether
 * older ones exist.  lua/history.lua checks membership (a former member
 * reads up to its leave), returns the page from the room's recent log when
 * the log holds all of it, and the members' read pointers.  Otherwise the
 * page comes from MySQL through the relay-worker (a replica, the primary
 * when the replica is down or lags).  Every message carries `unread`: how
 * many current members have not read it (lib/src/unread.c).
 *
 * Reading ahead.  A page from MySQL used to wait for the script's answer
 * before the relay-worker was asked: two round trips one after the other.
 * When this worker saw the same user's page of the same room below the log
 * before (the hints below: the user is a member, or was one, and pages at
 * or below that `before` are older than the log, whose oldest seq only
 * rises), the relay request leaves together with the script, for the page
 * the script would ask for.  The script still decides: its rows are used
 * only when the script answered 1, not covered, with the same `before`
 * (so the same [lo, before), inside what the user may read); otherwise
 * they are dropped when they come (a forbidden user gets its error, a page
 * the log holds comes from the log, a clamped `before` is asked again).
 * Rows that come before the script's answer wait for it.  A page thus
 * lives until both answers came back (`waiting`); its caller's handler is
 * called once, as soon as the page is known.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/unread.h"
#include "lua_scripts.h"


#define NGX_HTTP_MINICHAT_HISTORY_DEFAULT  50
#define NGX_HTTP_MINICHAT_HISTORY_MAX      MC_OP_HISTORY_MAX
#define NGX_HTTP_MINICHAT_HISTORY_HINTS    1024    /* a power of two */


typedef struct {
    ngx_http_minichat_history_pt   handler;
    void                          *data;
    uint64_t                       room;
    uint64_t                       user;
    uint64_t                       ahead;        /* the `before` read ahead, 0 when none */
    Minichat__HistoryResult       *early;        /* rows read ahead that came before the script */
    ngx_uint_t                     waiting;      /* answers still to come: the script's, the relay's */
    unsigned                       scripted:1;   /* the script answered */
    unsigned                       use_ahead:1;  /* the script wants the rows read ahead */
    unsigned                       early_set:1;  /* the read ahead answered (early, NULL on failure) */
    unsigned                       answered:1;   /* the handler was called */
    uint64_t                       last_seq;
    uint64_t                       before;
    uint64_t                       lo;
    uint64_t                       limit;
    u_char                         epoch[16];
    size_t                         epoch_len;
    size_t                         n_pointers;
    uint64_t                      *pointers;     /* sorted highest first (mc_unread_sort) */
} ngx_http_minichat_history_t;


/* The page's JSON while it is built: one buffer sized before the first
 * byte is written (the fields around the messages, then each message's
 * exact upper bound), so a page is rendered in one pass and never copied
 * or grown on the way. */
typedef struct {
    u_char  *buf;
    u_char  *last;
    u_char  *msgs;       /* where the messages start */
} ngx_http_minichat_out_t;


/* What a message adds besides its own JSON: the comma before it and its
 * unread count ("}" becomes ",\"unread\":N}"). */
#define NGX_HTTP_MINICHAT_HISTORY_MSG_EXTRA  (sizeof(",,\"unread\":") + NGX_SIZE_T_LEN)


/* A user's page of a room that was older than the recent log: pages at or
 * below `below` are older than the log too (until a room reload puts older
 * messages back in the log, when a read ahead is wasted, never wrong). */
typedef struct {
    uint64_t  room;
    uint64_t  user;
    uint64_t  below;
} ngx_http_minichat_history_hint_t;


static ngx_http_minichat_history_hint_t *ngx_http_minichat_history_hint(uint64_t room, uint64_t user);
static void ngx_http_minichat_history_read_ahead(ngx_http_minichat_history_t *h, uint64_t before);
static size_t ngx_http_minichat_history_budget(void);
static void ngx_http_minichat_history_reply(redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_minichat_history_parse(ngx_http_minichat_history_t *h, redisReply *reply, ngx_int_t rc);
static void ngx_http_minichat_history_ahead_rows(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_history_rows(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_history_render(ngx_http_minichat_history_t *h, Minichat__HistoryResult *hr);
static ngx_int_t ngx_http_minichat_history_open(ngx_http_minichat_history_t *h, ngx_http_minichat_out_t *o,
    size_t msgs);
static void ngx_http_minichat_history_unread(ngx_http_minichat_out_t *o, size_t unread);
static void ngx_http_minichat_history_finish(ngx_http_minichat_history_t *h, ngx_http_minichat_out_t *o);
static void ngx_http_minichat_history_fail(ngx_http_minichat_history_t *h, ngx_int_t rc, const char *code,
    const char *text);
static void ngx_http_minichat_history_release(ngx_http_minichat_history_t *h);


static const char  *ngx_http_minichat_history_keys[] = { "members", "seq", "left", "log", "read", "epoch" };

static const ngx_http_minichat_script_t  ngx_http_minichat_script_history = {
    MINICHAT_LUA_HISTORY_SHA1, MINICHAT_LUA_HISTORY_SRC, 6, ngx_http_minichat_history_keys, 0, NULL
};


/* direct-mapped by (room, user): a collision forgets a hint, nothing more */
static ngx_http_minichat_history_hint_t  ngx_http_minichat_history_hints[NGX_HTTP_MINICHAT_HISTORY_HINTS];


ngx_int_t
ngx_http_minichat_history_page(uint64_t room, uint64_t user, uint64_t before, ngx_uint_t limit,
    ngx_http_minichat_history_pt handler, void *data)
{
    ngx_http_minichat_history_t  *h;
    const char                   *av[3];
    size_t                        al[3];
    u_char                        u[NGX_INT64_LEN], b[NGX_INT64_LEN], l[NGX_INT64_LEN];

    if (limit == 0) {
        limit = NGX_HTTP_MINICHAT_HISTORY_DEFAULT;
    }
    limit = ngx_min(limit, NGX_HTTP_MINICHAT_HISTORY_MAX);

    h = ngx_calloc(sizeof(ngx_http_minichat_history_t), ngx_cycle->log);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->handler = handler;
    h->data = data;
    h->room = room;
    h->user = user;
    h->limit = limit;

    av[0] = (const char *) u;
    al[0] = ngx_sprintf(u, "%uL", user) - u;
    av[1] = (const char *) b;
    al[1] = ngx_sprintf(b, "%uL", before) - b;
    av[2] = (const char *) l;
    al[2] = ngx_sprintf(l, "%ui", limit) - l;

    /* the script's answer, and this function's own hold until it returns
     * (whatever a script call may answer at once) */
    h->waiting = 2;

    if (ngx_http_minichat_room_script(room, &ngx_http_minichat_script_history, 3, av, al,
                                      ngx_http_minichat_history_reply, h)
        != NGX_OK)
    {
        ngx_free(h);
        return NGX_ERROR;
    }

    if (!h->scripted) {
        ngx_http_minichat_history_read_ahead(h, before);
    }

    ngx_http_minichat_history_release(h);

    return NGX_OK;
}


static ngx_http_minichat_history_hint_t *
ngx_http_minichat_history_hint(uint64_t room, uint64_t user)
{
    uint64_t  k;

    k = (room * 0x9e3779b97f4a7c15ULL) ^ (user * 0xc2b2ae3d27d4eb4fULL);

    return &ngx_http_minichat_history_hints[(k >> 32) & (NGX_HTTP_MINICHAT_HISTORY_HINTS - 1)];
}


/* Asks the relay-worker for the page [lo, before) now, when this user's
 * earlier page of the room says it is older than the log; the script's
 * answer decides later whether the rows are used. */
static void
ngx_http_minichat_history_read_ahead(ngx_http_minichat_history_t *h, uint64_t before)
{
    ngx_http_minichat_history_hint_t  *hint;
    Minichat__LocalFrame               f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__HistoryRequest           hr = MINICHAT__HISTORY_REQUEST__INIT;

    if (!ngx_http_minichat_conf()->history_read_ahead) {
        return;
    }

    hint = ngx_http_minichat_history_hint(h->room, h->user);

    if (before < 2 || hint->room != h->room || hint->user != h->user || before > hint->below) {
        return;
    }

    hr.room = h->room;
    hr.before = before;
    hr.limit = (uint32_t) (before - (before > h->limit ? before - h->limit : 1));
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_HISTORY;
    f.history = &hr;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_history_ahead_rows, h) != NGX_OK) {
        return;    /* the page goes the usual way */
    }

    h->ahead = before;
    h->waiting++;
}


/* The most page bytes sent at once: half the client's output queue, so a
 * page of large messages never closes its connection as "not reading". */
static size_t
ngx_http_minichat_history_budget(void)
{
    return ngx_http_minichat_conf()->send_queue_size / 2;
}


static void
ngx_http_minichat_history_reply(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_history_t  *h = data;

    h->scripted = 1;
    ngx_http_minichat_history_parse(h, reply, rc);
    ngx_http_minichat_history_release(h);
}


/* Reads the script's answer: an error, the page from the log, or a page
 * from MySQL (read ahead already, or asked now). */
static void
ngx_http_minichat_history_parse(ngx_http_minichat_history_t *h, redisReply *reply, ngx_int_t rc)
{
    ngx_http_minichat_history_hint_t  *hint;
    ngx_http_minichat_out_t       o;
    Minichat__LocalFrame          f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__HistoryRequest      hr = MINICHAT__HISTORY_REQUEST__INIT;
    redisReply                   *e;
    uint64_t                     *seqs = NULL;
    size_t                       *unread = NULL;
    size_t                        i, first, count, bytes;
    ngx_uint_t                    covered;

    if (rc == NGX_DECLINED) {
        ngx_http_minichat_history_fail(h, NGX_DECLINED, "not_found", "no such room");
        return;
    }

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "storage unavailable; retry");
        return;
    }

    if (reply->element[0]->integer == -1) {
        ngx_http_minichat_history_fail(h, NGX_DECLINED, "forbidden", "not a member of this room");
        return;
    }

    if (reply->elements < 6 || reply->element[1]->type != REDIS_REPLY_INTEGER
        || reply->element[2]->type != REDIS_REPLY_STRING || reply->element[3]->type != REDIS_REPLY_INTEGER
        || reply->element[4]->type != REDIS_REPLY_INTEGER || reply->element[5]->type != REDIS_REPLY_INTEGER
        || reply->element[5]->integer < 0 || (size_t) reply->element[5]->integer > reply->elements - 6)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: unexpected reply from history script");
        ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "storage error; retry");
        return;
    }

    h->last_seq = (uint64_t) reply->element[1]->integer;
    h->epoch_len = ngx_min(reply->element[2]->len, sizeof(h->epoch));
    ngx_memcpy(h->epoch, reply->element[2]->str, h->epoch_len);
    h->before = (uint64_t) reply->element[3]->integer;
    covered = reply->element[4]->integer == 1;
    h->n_pointers = (size_t) reply->element[5]->integer;
    first = 6 + h->n_pointers;

    if (h->n_pointers) {
        h->pointers = ngx_alloc(h->n_pointers * sizeof(uint64_t), ngx_cycle->log);
        if (h->pointers == NULL) {
            ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "out of memory");
            return;
        }
        for (i = 0; i < h->n_pointers; i++) {
            h->pointers[i] = (uint64_t) reply->element[6 + i]->integer;
        }
    }
    mc_unread_sort(h->pointers, h->n_pointers);

    hint = ngx_http_minichat_history_hint(h->room, h->user);

    if (!covered) {
        /* older than the recent log: MySQL through the relay-worker */
        if (hint->room != h->room || hint->user != h->user || hint->below < h->before) {
            hint->room = h->room;
            hint->user = h->user;
            hint->below = h->before;
        }

        h->lo = h->before > h->limit ? h->before - h->limit : 1;

        if (h->ahead == h->before) {
            /* the page read ahead is this one */
            h->use_ahead = 1;
            if (h->early_set) {
                ngx_http_minichat_history_render(h, h->early);
            }
            return;
        }

        hr.room = h->room;
        hr.before = h->before;
        f.body_case = MINICHAT__LOCAL_FRAME__BODY_HISTORY;
        f.history = &hr;

        /* the same page as the script's: [lo, before) */
        hr.limit = (uint32_t) (h->before - h->lo);

        if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_history_rows, h) != NGX_OK) {
            ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "relay-worker unavailable; retry");
            return;
        }
        h->waiting++;
        return;
    }

    if (hint->room == h->room && hint->user == h->user && hint->below >= h->before) {
        hint->room = 0;    /* the log holds this page again (a reload): no more reading ahead */
    }

    count = reply->elements - first;
    h->lo = h->before - count;

    bytes = 0;
    for (i = 0; i < count; i++) {
        bytes += reply->element[first + i]->len + NGX_HTTP_MINICHAT_HISTORY_MSG_EXTRA;
    }

    if (count) {
        seqs = ngx_alloc(count * (sizeof(uint64_t) + sizeof(size_t)), ngx_cycle->log);
        if (seqs == NULL) {
            ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "out of memory");
            return;
        }
        unread = (size_t *) (seqs + count);
        for (i = 0; i < count; i++) {
            seqs[i] = h->before - 1 - i;
        }
        (void) mc_unread_walk(h->pointers, h->n_pointers, seqs, count, unread);
    }

    if (ngx_http_minichat_history_open(h, &o, bytes) != NGX_OK) {
        if (seqs) {
            ngx_free(seqs);
        }
        ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "out of memory");
        return;
    }

    for (i = 0; i < count; i++) {
        e = reply->element[first + i];
        if (e->type != REDIS_REPLY_STRING || e->len < 2 || e->str[e->len - 1] != '}') {
            continue;
        }
        if (o.last > o.msgs && (size_t) (o.last - o.msgs) + e->len > ngx_http_minichat_history_budget()) {
            /* the rest is the next page: the client's queue must hold this one */
            h->lo = seqs[i - 1];
            break;
        }
        if (o.last > o.msgs) {
            *o.last++ = ',';
        }
        o.last = ngx_cpymem(o.last, e->str, e->len);
        ngx_http_minichat_history_unread(&o, unread[i]);
    }

    if (seqs) {
        ngx_free(seqs);
    }

    ngx_http_minichat_history_finish(h, &o);
}


/* The rows read ahead: kept until the script answered, used when it asks
 * for this page, dropped otherwise. */
static void
ngx_http_minichat_history_ahead_rows(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_history_t  *h = data;
    Minichat__HistoryResult      *hr;

    hr = result && result->body_case == MINICHAT__LOCAL_FRAME__BODY_HISTORY_RESULT ? result->history_result : NULL;

    if (!h->scripted) {
        if (hr) {
            result->history_result = NULL;    /* ours now: freed with the page */
        }
        h->early = hr;
        h->early_set = 1;

    } else if (h->use_ahead && !h->answered) {
        ngx_http_minichat_history_render(h, hr);
    }

    ngx_http_minichat_history_release(h);
}


/* The rows asked for after the script's answer. */
static void
ngx_http_minichat_history_rows(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_history_t  *h = data;

    ngx_http_minichat_history_render(h, result && result->body_case == MINICHAT__LOCAL_FRAME__BODY_HISTORY_RESULT
                                        ? result->history_result : NULL);
    ngx_http_minichat_history_release(h);
}


/* Answers the page from MySQL's rows (NULL: no answer). */
static void
ngx_http_minichat_history_render(ngx_http_minichat_history_t *h, Minichat__HistoryResult *hr)
{
    ngx_http_minichat_out_t       o;
    Minichat__ChatMessage        *m;
    uint64_t                     *seqs = NULL;
    size_t                       *unread = NULL, *jlen = NULL;
    size_t                        i, n, bytes, budget;
    uint64_t                      last_seq = h->before;

    if (hr == NULL || (hr->error && hr->error[0])) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: room %uL: history from mysql failed: %s",
                      h->room, hr ? hr->error : "no answer from relay-worker");
        ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "history unavailable; retry");
        return;
    }

    n = hr->n_messages;
    bytes = 0;

    if (n) {
        seqs = ngx_alloc(n * (sizeof(uint64_t) + 2 * sizeof(size_t)), ngx_cycle->log);
        if (seqs == NULL) {
            ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "out of memory");
            return;
        }
        unread = (size_t *) (seqs + n);
        jlen = unread + n;
        for (i = 0; i < n; i++) {
            seqs[i] = hr->messages[i]->seq;
        }
        if (mc_unread_walk(h->pointers, h->n_pointers, seqs, n, unread) != 0) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: room %uL: history rows not newest first",
                          h->room);
            ngx_memzero(unread, n * sizeof(size_t));
        }

        /* each message's JSON length, once: it sizes the buffer and the budget */
        for (i = 0; i < n; i++) {
            m = hr->messages[i];
            if (m->seq >= h->before || m->seq < h->lo || m->cid == NULL || m->body == NULL) {
                jlen[i] = 0;
                continue;
            }
            m->room = h->room;
            jlen[i] = ngx_http_minichat_msg_json_len(m);
            bytes += jlen[i] + NGX_HTTP_MINICHAT_HISTORY_MSG_EXTRA;
        }
    }

    if (ngx_http_minichat_history_open(h, &o, bytes) != NGX_OK) {
        if (seqs) {
            ngx_free(seqs);
        }
        ngx_http_minichat_history_fail(h, NGX_ERROR, "unavailable", "out of memory");
        return;
    }

    budget = ngx_http_minichat_history_budget();

    for (i = 0; i < n; i++) {
        if (jlen[i] == 0) {
            continue;
        }
        m = hr->messages[i];
        if (o.last > o.msgs && (size_t) (o.last - o.msgs) + jlen[i] > budget) {
            /* the rest is the next page: the client's queue must hold this one */
            h->lo = last_seq;
            break;
        }
        last_seq = m->seq;

        if (o.last > o.msgs) {
            *o.last++ = ',';
        }
        o.last = ngx_http_minichat_msg_json(o.last, m);
        ngx_http_minichat_history_unread(&o, unread[i]);
    }

    if (seqs) {
        ngx_free(seqs);
    }

    ngx_http_minichat_history_finish(h, &o);
}


/* Allocates the page for msgs bytes of messages at most and writes the
 * fields before them. */
static ngx_int_t
ngx_http_minichat_history_open(ngx_http_minichat_history_t *h, ngx_http_minichat_out_t *o, size_t msgs)
{
    size_t  len;

    len = sizeof("\"room\":,\"messages\":[],\"more\":false,\"last_seq\":,\"epoch\":\"\"") + 2 * NGX_INT64_LEN
          + 6 * sizeof(h->epoch) + msgs;

    o->buf = ngx_alloc(len, ngx_cycle->log);
    if (o->buf == NULL) {
        return NGX_ERROR;
    }

    o->last = ngx_sprintf(o->buf, "\"room\":%uL,\"messages\":[", h->room);
    o->msgs = o->last;

    return NGX_OK;
}


/* Turns the closing brace of the message just written into its unread
 * count and the brace. */
static void
ngx_http_minichat_history_unread(ngx_http_minichat_out_t *o, size_t unread)
{
    o->last = ngx_sprintf(o->last - 1, ",\"unread\":%uz}", unread);
}


/* Writes the fields after the messages and hands the page over. */
static void
ngx_http_minichat_history_finish(ngx_http_minichat_history_t *h, ngx_http_minichat_out_t *o)
{
    u_char  *p;

    p = ngx_sprintf(o->last, "],\"more\":%s,\"last_seq\":%uL,\"epoch\":\"", h->lo > 1 ? "true" : "false",
                    h->last_seq);
    p = ngx_http_minichat_json_escape(p, h->epoch, h->epoch_len);
    *p++ = '"';

    h->answered = 1;
    h->handler(NGX_OK, NULL, NULL, o->buf, p - o->buf, h->data);

    ngx_free(o->buf);
}


static void
ngx_http_minichat_history_fail(ngx_http_minichat_history_t *h, ngx_int_t rc, const char *code, const char *text)
{
    h->answered = 1;
    h->handler(rc, code, text, NULL, 0, h->data);
}


/* One answer (the script's or the relay-worker's) is in: the page goes
 * when none is still to come. */
static void
ngx_http_minichat_history_release(ngx_http_minichat_history_t *h)
{
    if (--h->waiting) {
        return;
    }

    if (!h->answered) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: room %uL: history page left unanswered",
                      h->room);
        h->answered = 1;
        h->handler(NGX_ERROR, "unavailable", "history unavailable; retry", NULL, 0, h->data);
    }

    if (h->early) {
        minichat__history_result__free_unpacked(h->early, NULL);
    }
    if (h->pointers) {
        ngx_free(h->pointers);
    }
    ngx_free(h);
}


static void
ngx_http_minichat_history_done(ngx_int_t rc, const char *code, const char *text, const u_char *page, size_t len, void *data)
{
    ngx_http_minichat_req_page(data, "history", rc, code, text, page, len);
}


ngx_int_t
ngx_http_minichat_op_history(ngx_http_minichat_req_t *rq, const mc_op_t *op)
{
    ngx_http_minichat_req_t  *copy;
    uint64_t                  room = op->room, before = op->before;
    ngx_uint_t                limit = op->limit;

    if (rq->ws->pending >= NGX_HTTP_MINICHAT_MAX_INFLIGHT) {
        return ngx_http_minichat_req_error(rq, "rate_limited", "too many requests awaiting their answer; wait");
    }

    copy = ngx_alloc(sizeof(ngx_http_minichat_req_t), ngx_cycle->log);
    if (copy == NULL) {
        return ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
    }
    *copy = *rq;

    if (ngx_http_minichat_history_page(room, rq->ws->user, before, limit, ngx_http_minichat_history_done, copy)
        != NGX_OK)
    {
        ngx_free(copy);
        return ngx_http_minichat_req_error(rq, "unavailable", "storage unavailable; retry");
    }

    rq->ws->pending++;

    return NGX_OK;
}
