/*
 * This worker's WebSocket connections by user id, and delivery to them.
 *
 * The registry is a fixed array of queues hashed by user id; a user with
 * several devices has several connections in one bucket.  Delivery encodes a
 * frame once per message or event and copies it into the output queue of
 * every connection of every recipient on this worker, skipping the
 * connection that caused it (its sender has an ack, or needs no echo).
 * Recipients that negotiated permessage-deflate get a compressed frame,
 * also made once per message (per window: _deflate.c).
 *
 * A connection that resumed a room filters that room's live messages
 * (ngx_http_minichat_resume_filter): held while the replay is in flight,
 * dropped when the replay already carried them.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/buf.h"
#include "minichat/ws.h"


typedef void (*ngx_http_minichat_visit_pt)(ngx_http_minichat_ws_t *ws, void *data);


static ngx_uint_t ngx_http_minichat_from_here(Minichat__ChatMessage *m);
static void ngx_http_minichat_visit(Minichat__ChatMessage *m, ngx_http_minichat_visit_pt visit, void *data);


static ngx_queue_t  ngx_http_minichat_users[NGX_HTTP_MINICHAT_USER_BUCKETS];


void
ngx_http_minichat_registry_init(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_MINICHAT_USER_BUCKETS; i++) {
        ngx_queue_init(&ngx_http_minichat_users[i]);
    }
}


void
ngx_http_minichat_registry_add(ngx_http_minichat_ws_t *ws)
{
    ngx_queue_insert_tail(&ngx_http_minichat_users[ws->user % NGX_HTTP_MINICHAT_USER_BUCKETS], &ws->by_user);
    ws->registered = 1;
    ngx_http_minichat_users_changed(ws->user);
}


void
ngx_http_minichat_registry_remove(ngx_http_minichat_ws_t *ws)
{
    if (ws->registered) {
        ngx_queue_remove(&ws->by_user);
        ws->registered = 0;
        ngx_http_minichat_users_changed(ws->user);
    }
}


/* Appends the distinct users of this worker's open connections to out (as
 * uint64_t).  Returns NGX_OK, or NGX_ERROR when out of memory. */
ngx_int_t
ngx_http_minichat_registry_users(mc_buf_t *out)
{
    ngx_http_minichat_ws_t  *ws, *prev;
    ngx_queue_t             *bucket, *q, *p;
    ngx_uint_t               i;

    for (i = 0; i < NGX_HTTP_MINICHAT_USER_BUCKETS; i++) {
        bucket = &ngx_http_minichat_users[i];

        for (q = ngx_queue_head(bucket); q != ngx_queue_sentinel(bucket); q = ngx_queue_next(q)) {
            ws = ngx_queue_data(q, ngx_http_minichat_ws_t, by_user);
            if (ws->closed) {
                continue;
            }

            /* a user's connections share a bucket: listed at the first */
            for (p = ngx_queue_head(bucket); p != q; p = ngx_queue_next(p)) {
                prev = ngx_queue_data(p, ngx_http_minichat_ws_t, by_user);
                if (prev->user == ws->user && !prev->closed) {
                    break;
                }
            }

            if (p == q && mc_buf_append(out, &ws->user, sizeof(ws->user)) != 0) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* Returns the number of this worker's open connections of a user. */
ngx_uint_t
ngx_http_minichat_registry_count(uint64_t user)
{
    ngx_queue_t             *bucket, *q;
    ngx_http_minichat_ws_t  *ws;
    ngx_uint_t               n = 0;

    bucket = &ngx_http_minichat_users[user % NGX_HTTP_MINICHAT_USER_BUCKETS];

    for (q = ngx_queue_head(bucket); q != ngx_queue_sentinel(bucket); q = ngx_queue_next(q)) {
        ws = ngx_queue_data(q, ngx_http_minichat_ws_t, by_user);
        if (ws->user == user && !ws->closed) {
            n++;
        }
    }

    return n;
}


ngx_uint_t
ngx_http_minichat_registry_alone(uint64_t user, uint64_t conn)
{
    ngx_queue_t             *bucket, *q;
    ngx_http_minichat_ws_t  *ws;
    ngx_uint_t               found = 0;

    bucket = &ngx_http_minichat_users[user % NGX_HTTP_MINICHAT_USER_BUCKETS];

    for (q = ngx_queue_head(bucket); q != ngx_queue_sentinel(bucket); q = ngx_queue_next(q)) {
        ws = ngx_queue_data(q, ngx_http_minichat_ws_t, by_user);
        if (ws->user != user || ws->closed) {
            continue;
        }
        if (ws->id != conn) {
            return 0;
        }
        found = 1;
    }

    return found;
}


size_t
ngx_http_minichat_msg_json_len(Minichat__ChatMessage *m)
{
    return sizeof("{\"op\":\"msg\",\"room\":,\"seq\":,\"from\":,\"cid\":\"\",\"body\":\"\",\"ts\":,\"kind\":\"system\"}")
           - 1 + 4 * NGX_INT64_LEN
           + ngx_http_minichat_json_escape_len((u_char *) m->cid, ngx_strlen(m->cid))
           + ngx_http_minichat_json_escape_len((u_char *) m->body, ngx_strlen(m->body));
}


u_char *
ngx_http_minichat_msg_json(u_char *p, Minichat__ChatMessage *m)
{
    p = ngx_sprintf(p, "{\"op\":\"msg\",\"room\":%uL,\"seq\":%uL,\"from\":%uL,\"cid\":\"",
                    (uint64_t) m->room, (uint64_t) m->seq, (uint64_t) m->sender);
    p = ngx_http_minichat_json_escape(p, (u_char *) m->cid, ngx_strlen(m->cid));
    p = ngx_cpymem(p, "\",\"body\":\"", sizeof("\",\"body\":\"") - 1);
    p = ngx_http_minichat_json_escape(p, (u_char *) m->body, ngx_strlen(m->body));
    p = ngx_sprintf(p, "\",\"ts\":%uL", (uint64_t) m->ts);
    if (m->kind && ngx_strcmp(m->kind, "system") == 0) {
        p = ngx_cpymem(p, ",\"kind\":\"system\"", sizeof(",\"kind\":\"system\"") - 1);
    }
    *p++ = '}';

    return p;
}


/* A frame built once for all recipients: the WebSocket header goes right
 * before the payload. */
typedef struct {
    Minichat__ChatMessage              *m;
    u_char                             *buf;
    u_char                             *frame;
    size_t                              len;
    size_t                              hlen;    /* the header's bytes: the payload follows */
    ngx_uint_t                          failed;
    ngx_uint_t                          queued;  /* connections it was queued for */
    ngx_http_minichat_deflate_cache_t   deflated; /* compressed once per window, for every recipient */
} ngx_http_minichat_frame_t;


static ngx_int_t
ngx_http_minichat_frame_build(ngx_http_minichat_frame_t *f, u_char *payload_end, u_char *payload)
{
    u_char  hdr[10];
    size_t  plen, hlen;

    plen = payload_end - payload;
    hlen = mc_ws_header(hdr, MC_WS_OP_TEXT, 1, plen);
    f->frame = payload - hlen;
    ngx_memcpy(f->frame, hdr, hlen);
    f->len = hlen + plen;
    f->hlen = hlen;

    return NGX_OK;
}


static void
ngx_http_minichat_visit_msg(ngx_http_minichat_ws_t *ws, void *data)
{
    ngx_http_minichat_frame_t  *f = data;
    const u_char               *frame;
    size_t                      len;
    u_char                     *p;

    if (f->failed) {
        return;
    }

    if (f->buf == NULL) {
        f->buf = ngx_alloc(10 + ngx_http_minichat_msg_json_len(f->m), ngx_cycle->log);
        if (f->buf == NULL) {
            f->failed = 1;
            return;
        }
        p = ngx_http_minichat_msg_json(f->buf + 10, f->m);
        (void) ngx_http_minichat_frame_build(f, p, f->buf + 10);
    }

    frame = f->frame;
    len = f->len;
    (void) ngx_http_minichat_deflate_pick(&f->deflated, ws, MC_WS_OP_TEXT, f->frame + f->hlen, f->len - f->hlen,
                                          &frame, &len);

    if (ws->resume && ngx_http_minichat_resume_filter(ws, f->m->room, f->m->seq, frame, len)) {
        return;
    }

    if (ngx_http_minichat_conn_queue_frame(ws, frame, len) == NGX_OK) {
        ngx_http_minichat_count(deliveries, 1);
        f->queued++;
    }
}


void
ngx_http_minichat_deliver(Minichat__ChatMessage *m)
{
    ngx_http_minichat_frame_t  f;

    ngx_memzero(&f, sizeof(f));
    f.m = m;

    ngx_http_minichat_visit(m, ngx_http_minichat_visit_msg, &f);
    ngx_http_minichat_flush_fanout(f.queued);

    ngx_http_minichat_deflate_cache_free(&f.deflated);
    if (f.buf) {
        ngx_free(f.buf);
    }
}


/* A ban: the user's connection hears why, then closes with 4003. */
static void
ngx_http_minichat_visit_ban(ngx_http_minichat_ws_t *ws, void *data)
{
    Minichat__ChatMessage  *e = data;

    if (!ws->banned && !ws->closing && !ws->closed) {
        ngx_http_minichat_count(banned[NGX_HTTP_MINICHAT_BANNED_CLOSED], 1);
    }
    ws->banned = 1;
    (void) ngx_http_minichat_conn_error_num(ws, 0, 0, "banned",
                                            e->body && e->body[0] ? e->body
                                            : e->ban_until ? "banned until \"until\" (ms)" : "banned permanently",
                                            "until", e->ban_until);
    ngx_http_minichat_conn_close(ws, NGX_HTTP_MINICHAT_CLOSE_BANNED, "banned");
}


/* A disconnect by the server API: the close says why (the reason given, at
 * most NGX_HTTP_MINICHAT_REASON_MAX bytes of UTF-8, fits a close frame). */
static void
ngx_http_minichat_visit_disconnect(ngx_http_minichat_ws_t *ws, void *data)
{
    Minichat__ChatMessage  *e = data;

    ngx_http_minichat_conn_close(ws, NGX_HTTP_MINICHAT_CLOSE_DISCONNECTED,
                                 e->body && e->body[0] ? e->body : "disconnected by the server");
}


static void
ngx_http_minichat_visit_event(ngx_http_minichat_ws_t *ws, void *data)
{
    ngx_http_minichat_frame_t  *f = data;
    const u_char               *frame;
    size_t                      len;

    if (f->frame) {
        frame = f->frame;
        len = f->len;
        (void) ngx_http_minichat_deflate_pick(&f->deflated, ws, MC_WS_OP_TEXT, f->frame + f->hlen,
                                              f->len - f->hlen, &frame, &len);
        (void) ngx_http_minichat_conn_queue_frame(ws, frame, len);
    }
}


void
ngx_http_minichat_deliver_event(Minichat__ChatMessage *e)
{
    ngx_http_minichat_frame_t  f;
    u_char                     buf[10 + 128 + 4 * NGX_INT64_LEN], *p;

    ngx_memzero(&f, sizeof(f));
    f.m = e;
    p = buf + 10;

    if (e->kind == NULL) {
        return;
    }

    if (ngx_strcmp(e->kind, "read") == 0) {
        p = ngx_sprintf(p, "{\"op\":\"read\",\"room\":%uL,\"user\":%uL,\"seq\":%uL}",
                        (uint64_t) e->room, (uint64_t) e->sender, (uint64_t) e->seq_read);

    } else if (ngx_strcmp(e->kind, "typing") == 0) {
        p = ngx_sprintf(p, "{\"op\":\"typing\",\"room\":%uL,\"user\":%uL}", (uint64_t) e->room, (uint64_t) e->sender);

    } else if (ngx_strcmp(e->kind, "ban") == 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0, "minichat: closing the connections of banned user %uL",
                      (uint64_t) e->sender);
        ngx_http_minichat_visit(e, ngx_http_minichat_visit_ban, e);
        return;

    } else if (ngx_strcmp(e->kind, "disconnect") == 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0, "minichat: closing the connections of user %uL: "
                      "disconnected by the server api", (uint64_t) e->sender);
        ngx_http_minichat_visit(e, ngx_http_minichat_visit_disconnect, e);
        return;

    } else if (ngx_strcmp(e->kind, "presence") == 0) {
        if (e->online) {
            p = ngx_sprintf(p, "{\"op\":\"presence\",\"user\":%uL,\"online\":true}", (uint64_t) e->sender);
        } else {
            p = ngx_sprintf(p, "{\"op\":\"presence\",\"user\":%uL,\"online\":false,\"last_seen\":%uL}",
                            (uint64_t) e->sender, (uint64_t) e->last_seen);
        }

    } else {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: unknown event kind \"%s\" ignored", e->kind);
        return;
    }

    (void) ngx_http_minichat_frame_build(&f, p, buf + 10);

    ngx_http_minichat_visit(e, ngx_http_minichat_visit_event, &f);

    ngx_http_minichat_deflate_cache_free(&f.deflated);
}


/* Returns 1 when m was caused by a connection of this node (its origin_node
 * is ours), so that connection is skipped. */
static ngx_uint_t
ngx_http_minichat_from_here(Minichat__ChatMessage *m)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();

    return m->origin_conn && m->origin_node && ngx_strlen(m->origin_node) == mcf->node.len
           && ngx_strncmp(m->origin_node, mcf->node.data, mcf->node.len) == 0;
}


/* Calls visit for every open connection of every recipient, except the
 * origin connection. */
static void
ngx_http_minichat_visit(Minichat__ChatMessage *m, ngx_http_minichat_visit_pt visit, void *data)
{
    ngx_http_minichat_ws_t  *ws;
    ngx_queue_t             *bucket, *q, *next;
    ngx_uint_t               ours;
    uint64_t                 user;
    size_t                   i;

    ours = ngx_http_minichat_from_here(m);

    for (i = 0; i < m->n_recipients; i++) {
        user = m->recipients[i];
        bucket = &ngx_http_minichat_users[user % NGX_HTTP_MINICHAT_USER_BUCKETS];

        for (q = ngx_queue_head(bucket); q != ngx_queue_sentinel(bucket); q = next) {
            next = ngx_queue_next(q);
            ws = ngx_queue_data(q, ngx_http_minichat_ws_t, by_user);

            if (ws->user != user || ws->closing || ws->closed || (ours && ws->id == m->origin_conn)) {
                continue;
            }

            /* a queue overflow closes ws, which unlinks it: `next` was taken first */
            visit(ws, data);
        }
    }
}
