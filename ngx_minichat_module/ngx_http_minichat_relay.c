/*
 * The worker's link to its node's relay-worker: a unix stream socket carrying
 * length-prefixed protobuf frames (minichat.LocalFrame, see proto/).
 *
 * Outgoing frames go into one buffer written as far as the socket takes; the
 * buffer is bounded (a relay-worker that stops reading makes publishes fail
 * loudly rather than grow the worker).  Incoming frames are either messages
 * to deliver to this worker's connections or results of requests such as
 * room creation, matched by req_id; each request has a timer.  A lost link
 * fails its pending requests and reconnects after minichat_reconnect_interval.
 */
#include <sys/un.h>

#include "ngx_http_minichat_module.h"
#include "minichat/clock.h"
#include "minichat/frame.h"
#include "minichat/member_slots.h"


#define NGX_HTTP_MINICHAT_RELAY_OUT_MAX  (64 * 1024 * 1024)


typedef struct {
    ngx_queue_t                  queue;
    uint64_t                     req_id;
    ngx_http_minichat_relay_pt   handler;
    void                        *data;
    ngx_event_t                  timer;
    int64_t                      sent_us;  /* mc_now_us() when sent: the round trip's start */
} ngx_http_minichat_relay_req_t;


typedef struct {
    struct sockaddr_un           sun;
    ngx_str_t                    name;
    ngx_connection_t            *conn;
    ngx_event_t                  reconnect;
    ngx_log_t                   *log;

    u_char                      *in;
    size_t                       in_len, in_cap;
    u_char                      *out;
    size_t                       out_pos, out_len, out_cap;

    ngx_queue_t                  pending;
    uint64_t                     next_req_id;

    mc_mslots_t                  sent;      /* member lists the relay-worker holds from us */
    mc_mslots_t                  recv;      /* member lists it sent us */
    uint64_t                     since;     /* wall-clock ms of the last up or down */
    unsigned                     connected:1;
    unsigned                     down_logged:1;
} ngx_http_minichat_relay_t;


static void ngx_http_minichat_relay_connect(void);
static void ngx_http_minichat_relay_close(const char *why);
static void ngx_http_minichat_relay_reconnect_handler(ngx_event_t *ev);
static void ngx_http_minichat_relay_read_handler(ngx_event_t *ev);
static void ngx_http_minichat_relay_write_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_minichat_relay_queue(Minichat__LocalFrame *frame);
static ngx_int_t ngx_http_minichat_relay_flush(void);
static void ngx_http_minichat_relay_deliver(Minichat__ChatMessage *m);
static void ngx_http_minichat_relay_dispatch(Minichat__LocalFrame *f);
static void ngx_http_minichat_relay_timeout(ngx_event_t *ev);
static void ngx_http_minichat_relay_finish(ngx_http_minichat_relay_req_t *req, Minichat__LocalFrame *f);


static ngx_http_minichat_relay_t  ngx_http_minichat_relay;


ngx_int_t
ngx_http_minichat_relay_init(ngx_cycle_t *cycle)
{
    ngx_http_minichat_relay_t      *rl = &ngx_http_minichat_relay;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();

    ngx_memzero(rl, sizeof(ngx_http_minichat_relay_t));

    rl->log = cycle->log;
    rl->since = ngx_http_minichat_now_ms();
    ngx_queue_init(&rl->pending);
    rl->next_req_id = 1;

    rl->sun.sun_family = AF_UNIX;
    ngx_memcpy(rl->sun.sun_path, mcf->relay_path.data, mcf->relay_path.len);
    rl->name = mcf->relay_path;

    rl->reconnect.handler = ngx_http_minichat_relay_reconnect_handler;
    rl->reconnect.log = cycle->log;
    rl->reconnect.data = rl;
    rl->reconnect.cancelable = 1;

    ngx_http_minichat_relay_connect();

    return NGX_OK;
}


void
ngx_http_minichat_relay_exit(void)
{
    ngx_http_minichat_relay_t  *rl = &ngx_http_minichat_relay;

    if (rl->reconnect.timer_set) {
        ngx_del_timer(&rl->reconnect);
    }

    if (rl->conn) {
        ngx_http_minichat_relay_close(NULL);
    }

    if (rl->reconnect.timer_set) {
        ngx_del_timer(&rl->reconnect);
    }

    if (rl->in) {
        ngx_free(rl->in);
        rl->in = NULL;
    }
    if (rl->out) {
        ngx_free(rl->out);
        rl->out = NULL;
    }

    mc_mslots_clear(&rl->sent);
    mc_mslots_clear(&rl->recv);
}


ngx_int_t
ngx_http_minichat_relay_ready(void)
{
    return ngx_http_minichat_relay.connected;
}


ngx_uint_t
ngx_http_minichat_relay_state(uint64_t *since)
{
    *since = ngx_http_minichat_relay.since;

    return ngx_http_minichat_relay.connected;
}


/* Opens a non-blocking unix socket connection (not ngx_event_connect_peer:
 * it logs a missing socket file at "crit", and a relay-worker that is not
 * up yet is an ordinary condition logged once per outage). */
static void
ngx_http_minichat_relay_connect(void)
{
    ngx_http_minichat_relay_t  *rl = &ngx_http_minichat_relay;
    Minichat__LocalFrame        f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__Hello             hello = MINICHAT__HELLO__INIT;
    ngx_connection_t           *c;
    ngx_socket_t                s;
    ngx_err_t                   err;
    int                         rc;

    s = ngx_socket(AF_UNIX, SOCK_STREAM, 0);
    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ERR, rl->log, ngx_socket_errno, "minichat: relay socket() failed");
        goto retry;
    }

    if (ngx_nonblocking(s) == -1) {
        ngx_log_error(NGX_LOG_ERR, rl->log, ngx_socket_errno, "minichat: relay nonblocking failed");
        ngx_close_socket(s);
        goto retry;
    }

    rc = connect(s, (struct sockaddr *) &rl->sun, sizeof(struct sockaddr_un));
    err = (rc == -1) ? ngx_socket_errno : 0;

    if (rc == -1 && err != NGX_EINPROGRESS) {
        if (!rl->down_logged) {
            ngx_log_error(NGX_LOG_ERR, rl->log, err,
                          "minichat: cannot connect to relay-worker at \"%V\"; retrying", &rl->name);
            rl->down_logged = 1;
        }
        ngx_close_socket(s);
        goto retry;
    }

    c = ngx_get_connection(s, rl->log);
    if (c == NULL) {
        ngx_close_socket(s);
        goto retry;
    }

    c->data = rl;
    c->recv = ngx_recv;
    c->send = ngx_send;
    c->recv_chain = ngx_recv_chain;
    c->send_chain = ngx_send_chain;
    c->read->handler = ngx_http_minichat_relay_read_handler;
    c->write->handler = ngx_http_minichat_relay_write_handler;
    c->read->log = rl->log;
    c->write->log = rl->log;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    if (ngx_add_conn(c) == NGX_ERROR) {
        ngx_close_connection(c);
        goto retry;
    }

    if (rc == 0) {
        c->write->ready = 1;
    }

    rl->conn = c;
    rl->in_len = 0;
    rl->out_pos = 0;
    rl->out_len = 0;
    rl->connected = 1;
    rl->since = ngx_http_minichat_now_ms();

    /* a new connection: the relay-worker's tables for it start empty too */
    mc_mslots_clear(&rl->sent);
    mc_mslots_clear(&rl->recv);
    rl->down_logged = 0;

    /* the hello is queued first; it leaves as soon as the connect completes */
    hello.node = (char *) ngx_http_minichat_conf()->node.data;
    hello.pid = (uint32_t) ngx_pid;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_HELLO;
    f.hello = &hello;

    if (ngx_http_minichat_relay_send(&f) != NGX_OK) {
        ngx_http_minichat_relay_close("cannot send hello");
        return;
    }

    /* which users this worker holds, before any other frame */
    ngx_http_minichat_users_link_up();

    ngx_log_error(NGX_LOG_INFO, rl->log, 0, "minichat: connected to relay-worker at \"%V\"", &rl->name);
    return;

retry:

    if (!ngx_exiting && !rl->reconnect.timer_set) {
        ngx_add_timer(&rl->reconnect, ngx_http_minichat_conf()->reconnect);
    }
}


static void
ngx_http_minichat_relay_close(const char *why)
{
    ngx_http_minichat_relay_t      *rl = &ngx_http_minichat_relay;
    ngx_http_minichat_relay_req_t  *req;
    ngx_queue_t                    *q;

    if (why) {
        ngx_log_error(NGX_LOG_ERR, rl->log, 0, "minichat: relay-worker link \"%V\" closed: %s",
                      &rl->name, why);
    }

    if (rl->conn) {
        ngx_close_connection(rl->conn);
        rl->conn = NULL;
    }

    if (rl->connected) {
        rl->since = ngx_http_minichat_now_ms();
    }
    rl->connected = 0;
    rl->in_len = 0;
    rl->out_pos = 0;
    rl->out_len = 0;

    while (!ngx_queue_empty(&rl->pending)) {
        q = ngx_queue_head(&rl->pending);
        req = ngx_queue_data(q, ngx_http_minichat_relay_req_t, queue);
        ngx_http_minichat_relay_finish(req, NULL);
    }

    if (!ngx_exiting && why && !rl->reconnect.timer_set) {
        ngx_add_timer(&rl->reconnect, ngx_http_minichat_conf()->reconnect);
    }
}


void
ngx_http_minichat_relay_restart(const char *why)
{
    if (ngx_http_minichat_relay.conn) {
        ngx_http_minichat_relay_close(why);
    }
}


static void
ngx_http_minichat_relay_reconnect_handler(ngx_event_t *ev)
{
    if (ngx_http_minichat_relay.conn == NULL && !ngx_exiting) {
        ngx_http_minichat_relay_connect();
    }
}


/*
 * Queues a frame.  A publish whose member list the relay-worker holds under
 * the message's members version (it came on this connection before) leaves
 * without it, recipients_cached set; one that carries its list makes the
 * relay-worker hold it from now on (minichat/member_slots.h).
 */
ngx_int_t
ngx_http_minichat_relay_send(Minichat__LocalFrame *frame)
{
    ngx_http_minichat_relay_t  *rl = &ngx_http_minichat_relay;
    Minichat__ChatMessage      *m;
    uint64_t                   *ids;
    ngx_int_t                   rc;
    size_t                      n;

    if (frame->body_case != MINICHAT__LOCAL_FRAME__BODY_PUBLISH || frame->publish->members_ver == 0) {
        return ngx_http_minichat_relay_queue(frame);
    }

    m = frame->publish;

    if (!mc_mslots_has(&rl->sent, m->room, m->members_ver)) {
        rc = ngx_http_minichat_relay_queue(frame);
        if (rc == NGX_OK) {
            mc_mslots_sent(&rl->sent, m->room, m->members_ver, m->n_recipients);
        }
        return rc;
    }

    ids = m->recipients;
    n = m->n_recipients;
    m->recipients = NULL;
    m->n_recipients = 0;
    m->recipients_cached = 1;

    rc = ngx_http_minichat_relay_queue(frame);

    m->recipients = ids;
    m->n_recipients = n;
    m->recipients_cached = 0;

    return rc;
}


static ngx_int_t
ngx_http_minichat_relay_queue(Minichat__LocalFrame *frame)
{
    ngx_http_minichat_relay_t  *rl = &ngx_http_minichat_relay;
    size_t                      len, need, cap;
    u_char                     *p;

    if (!rl->connected) {
        return NGX_ERROR;
    }

    len = minichat__local_frame__get_packed_size(frame);
    if (len > MC_FRAME_MAX) {
        ngx_log_error(NGX_LOG_ERR, rl->log, 0, "minichat: relay frame of %uz bytes is too large", len);
        return NGX_ERROR;
    }

    if (rl->out_pos == rl->out_len) {
        rl->out_pos = 0;
        rl->out_len = 0;
    }

    need = rl->out_len + MC_FRAME_HDR + len;

    if (need - rl->out_pos > NGX_HTTP_MINICHAT_RELAY_OUT_MAX) {
        ngx_log_error(NGX_LOG_ERR, rl->log, 0,
                      "minichat: relay-worker is not reading, %uz bytes queued; frame refused",
                      rl->out_len - rl->out_pos);
        return NGX_ERROR;
    }

    if (need > rl->out_cap) {
        if (rl->out_pos) {
            ngx_memmove(rl->out, rl->out + rl->out_pos, rl->out_len - rl->out_pos);
            rl->out_len -= rl->out_pos;
            rl->out_pos = 0;
            need = rl->out_len + MC_FRAME_HDR + len;
        }

        if (need > rl->out_cap) {
            cap = ngx_max(rl->out_cap * 2, ngx_max(need, 16384));
            p = ngx_alloc(cap, rl->log);
            if (p == NULL) {
                return NGX_ERROR;
            }
            if (rl->out) {
                ngx_memcpy(p, rl->out, rl->out_len);
                ngx_free(rl->out);
            }
            rl->out = p;
            rl->out_cap = cap;
        }
    }

    mc_frame_put_header(rl->out + rl->out_len, (uint32_t) len);
    minichat__local_frame__pack(frame, rl->out + rl->out_len + MC_FRAME_HDR);
    rl->out_len += MC_FRAME_HDR + len;

    if (rl->conn->write->ready) {
        if (ngx_http_minichat_relay_flush() == NGX_ERROR) {
            ngx_http_minichat_relay_close("write failed");
            /* the frame was queued; the caller's connection is gone now */
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_minichat_relay_request(Minichat__LocalFrame *frame, ngx_http_minichat_relay_pt handler, void *data)
{
    ngx_http_minichat_relay_t      *rl = &ngx_http_minichat_relay;
    ngx_http_minichat_relay_req_t  *req;

    if (!rl->connected) {
        return NGX_ERROR;
    }

    req = ngx_calloc(sizeof(ngx_http_minichat_relay_req_t), rl->log);
    if (req == NULL) {
        return NGX_ERROR;
    }

    req->req_id = rl->next_req_id++;
    req->handler = handler;
    req->data = data;
    req->timer.handler = ngx_http_minichat_relay_timeout;
    req->timer.data = req;
    req->timer.log = rl->log;
    req->sent_us = mc_now_us();

    frame->req_id = req->req_id;

    if (ngx_http_minichat_relay_send(frame) != NGX_OK) {
        ngx_free(req);
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&rl->pending, &req->queue);
    ngx_add_timer(&req->timer, ngx_http_minichat_conf()->relay_timeout);

    return NGX_OK;
}


static void
ngx_http_minichat_relay_timeout(ngx_event_t *ev)
{
    ngx_http_minichat_relay_req_t  *req = ev->data;

    ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_relay.log, 0,
                  "minichat: relay-worker request %uL timed out", req->req_id);

    ngx_http_minichat_relay_finish(req, NULL);
}


static void
ngx_http_minichat_relay_finish(ngx_http_minichat_relay_req_t *req, Minichat__LocalFrame *f)
{
    ngx_queue_remove(&req->queue);

    if (req->timer.timer_set) {
        ngx_del_timer(&req->timer);
    }

    if (f) {
        ngx_http_minichat_observe(relay, req->sent_us);
    }

    req->handler(f, req->data);
    ngx_free(req);
}


/* Writes queued bytes; returns NGX_OK, NGX_AGAIN or NGX_ERROR. */
static ngx_int_t
ngx_http_minichat_relay_flush(void)
{
    ngx_http_minichat_relay_t  *rl = &ngx_http_minichat_relay;
    ngx_connection_t           *c = rl->conn;
    ssize_t                     n;

    while (rl->out_pos < rl->out_len) {
        n = c->send(c, rl->out + rl->out_pos, rl->out_len - rl->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                return NGX_ERROR;
            }
            return NGX_AGAIN;
        }

        if (n == NGX_ERROR || n == 0) {
            return NGX_ERROR;
        }

        rl->out_pos += n;
    }

    rl->out_pos = 0;
    rl->out_len = 0;

    return NGX_OK;
}


static void
ngx_http_minichat_relay_write_handler(ngx_event_t *ev)
{
    if (ngx_http_minichat_relay.conn == NULL) {
        return;
    }

    if (ngx_http_minichat_relay_flush() == NGX_ERROR) {
        ngx_http_minichat_relay_close("write failed");
    }
}


static void
ngx_http_minichat_relay_read_handler(ngx_event_t *ev)
{
    ngx_http_minichat_relay_t  *rl = &ngx_http_minichat_relay;
    Minichat__LocalFrame       *f;
    ngx_connection_t           *c;
    size_t                      len, off, cap;
    ssize_t                     n;
    u_char                     *p;
    int                         rc;

    c = rl->conn;
    if (c == NULL) {
        return;
    }

    for ( ;; ) {
        if (rl->in_cap - rl->in_len < 4096) {
            cap = ngx_max(rl->in_cap * 2, 65536);
            if (cap > MC_FRAME_MAX + MC_FRAME_HDR + 65536) {
                cap = MC_FRAME_MAX + MC_FRAME_HDR + 65536;
            }
            if (cap <= rl->in_cap) {
                ngx_http_minichat_relay_close("input buffer full");
                return;
            }
            p = ngx_alloc(cap, rl->log);
            if (p == NULL) {
                ngx_http_minichat_relay_close("out of memory");
                return;
            }
            if (rl->in) {
                ngx_memcpy(p, rl->in, rl->in_len);
                ngx_free(rl->in);
            }
            rl->in = p;
            rl->in_cap = cap;
        }

        n = c->recv(c, rl->in + rl->in_len, rl->in_cap - rl->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_minichat_relay_close(n == 0 ? "relay-worker closed the connection" : "read failed");
            return;
        }

        rl->in_len += n;

        off = 0;
        for ( ;; ) {
            rc = mc_frame_parse(rl->in + off, rl->in_len - off, MC_FRAME_MAX, &len);
            if (rc == MC_FRAME_AGAIN) {
                break;
            }
            if (rc == MC_FRAME_TOO_LARGE) {
                ngx_http_minichat_relay_close("frame too large");
                return;
            }

            f = minichat__local_frame__unpack(NULL, len, rl->in + off + MC_FRAME_HDR);
            off += MC_FRAME_HDR + len;

            if (f == NULL) {
                ngx_log_error(NGX_LOG_ERR, rl->log, 0, "minichat: malformed frame from relay-worker, skipped");
                continue;
            }

            ngx_http_minichat_relay_dispatch(f);
            minichat__local_frame__free_unpacked(f, NULL);

            if (rl->conn == NULL) {
                return;
            }
        }

        if (off) {
            ngx_memmove(rl->in, rl->in + off, rl->in_len - off);
            rl->in_len -= off;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_minichat_relay_close("cannot arm read event");
    }
}


static void
ngx_http_minichat_relay_dispatch(Minichat__LocalFrame *f)
{
    ngx_http_minichat_relay_t      *rl = &ngx_http_minichat_relay;
    ngx_http_minichat_relay_req_t  *req;
    ngx_queue_t                    *q;

    switch (f->body_case) {

    case MINICHAT__LOCAL_FRAME__BODY_DELIVER:
        ngx_http_minichat_relay_deliver(f->deliver);
        return;

    case MINICHAT__LOCAL_FRAME__BODY_EVENT:
        ngx_http_minichat_deliver_event(f->event);
        return;

    case MINICHAT__LOCAL_FRAME__BODY_CREATE_ROOM_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_PUBLISH_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_ROOM_STATE_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_HISTORY_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_ROOMS_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_ROOM_INFO_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_INVITE_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_LEAVE_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_CONTACTS_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_BAN_RESULT:
    case MINICHAT__LOCAL_FRAME__BODY_STATUS:
    case MINICHAT__LOCAL_FRAME__BODY_USERS:
        /* results mostly come back in request order: the match is near the head */
        for (q = ngx_queue_head(&rl->pending); q != ngx_queue_sentinel(&rl->pending); q = ngx_queue_next(q)) {
            req = ngx_queue_data(q, ngx_http_minichat_relay_req_t, queue);
            if (req->req_id == f->req_id) {
                ngx_http_minichat_relay_finish(req, f);
                return;
            }
        }
        ngx_log_error(NGX_LOG_INFO, rl->log, 0, "minichat: late relay result for request %uL", f->req_id);
        return;

    default:
        ngx_log_error(NGX_LOG_ERR, rl->log, 0, "minichat: unexpected frame %d from relay-worker",
                      (int) f->body_case);
        return;
    }
}


/* Delivers a chat message with its member list: the one it carries (kept
 * when it has a version), or, with recipients_cached, the one the
 * relay-worker sent before under its version.  A list left out that this
 * worker does not hold means the two ends' tables disagree: the link starts
 * again (both empty), and the message reaches no one here; its recipients
 * resume over the gap. */
static void
ngx_http_minichat_relay_deliver(Minichat__ChatMessage *m)
{
    ngx_http_minichat_relay_t  *rl = &ngx_http_minichat_relay;
    const uint64_t             *ids;
    size_t                      n;

    if (!m->recipients_cached) {
        if (mc_mslots_store(&rl->recv, m->room, m->members_ver, m->recipients, m->n_recipients) != 0) {
            ngx_log_error(NGX_LOG_ERR, rl->log, 0, "minichat: out of memory keeping room %uL's member list",
                          (uint64_t) m->room);
        }
        ngx_http_minichat_deliver(m);
        return;
    }

    ids = mc_mslots_find(&rl->recv, m->room, m->members_ver, &n);
    if (ids == NULL) {
        ngx_log_error(NGX_LOG_ERR, rl->log, 0, "minichat: relay-worker left out room %uL's members (version %uL), "
                      "which this worker does not hold; seq %uL not delivered here", (uint64_t) m->room,
                      (uint64_t) m->members_ver, (uint64_t) m->seq);
        ngx_http_minichat_relay_close("member lists out of step");
        return;
    }

    m->recipients = (uint64_t *) ids;
    m->n_recipients = n;

    ngx_http_minichat_deliver(m);

    /* the list is the table's: the unpacked message must not free it */
    m->recipients = NULL;
    m->n_recipients = 0;
}
