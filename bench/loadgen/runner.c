/*
 * One runner process of the load generator (see loadgen.h): its slice of
 * the connections, one epoll loop, level-triggered.
 *
 * A connection goes NEW -> CONNECTING (non-blocking connect from its
 * source address) -> UPGRADING (request written, waiting for the 101) ->
 * OPENING (upgraded, waiting for the protocol's ready events: MiniChat's
 * hello; Centrifugo's connect and subscribe replies) -> OPEN.  A refusal
 * that asks to come back (429, 503), a refused or reset connect and a
 * handshake that outlives its timeout go to WAIT_RETRY for a while, up to
 * cfg->retries times, then FAILED.  An OPEN connection that the server
 * closes is CLOSED and stays closed: a load generator that quietly
 * reconnected would hide what is being measured.
 *
 * Memory per connection is a small struct; input and output buffers exist
 * only while a partial frame or an unsent write waits (bytes read go to
 * one scratch buffer per process first).
 *
 * Senders connect to cfg->sender_dst:sender_port, members to cfg->dst:port
 * (the same server unless a run puts them on two nodes).  Sends are paced
 * to the microsecond (epoll_pwait2 until the next one is due) and stamped
 * with CLOCK_MONOTONIC just before they are written.
 *
 * Connects are paced (cfg->connect_rate, shared out among the runners)
 * and capped in flight (cfg->inflight), so that the server's listen
 * backlog and its upgrade path see a steady stream rather than a wall of
 * SYNs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "minichat/clock.h"
#include "minichat/ws.h"

#include "loadgen.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define MAX_FRAME (1 << 20)         /* larger server frames end the connection */
#define MAX_HANDSHAKE 8192          /* bytes of a 101 answer's headers */
#define SEND_WINDOW 32              /* a sender's sends awaiting their ack */
#define REPORT_LIMIT 5              /* lines per kind of problem per runner */

enum { CS_NEW, CS_WAIT_RETRY, CS_CONNECTING, CS_UPGRADING, CS_OPENING, CS_OPEN, CS_CLOSED, CS_FAILED };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t sender;
    uint8_t polling_out;
    uint8_t ready_left; /* OPENING: ready events still to come */
    uint16_t tries;
    uint16_t pings;
    uint32_t g;         /* member index, or room index for a sender */
    uint32_t room;      /* index in the runner's rooms (deliver mode) */
    uint32_t next_k;    /* member: the next message expected; sender: the next to send */
    uint32_t acked;     /* sender: acks received */
    int64_t deadline;   /* ms: the retry (WAIT_RETRY) or the end of the handshake */
    uint64_t last_seq;
    mc_buf_t in;
    mc_buf_t out;
} conn_t;

typedef struct {
    uint64_t id;
    conn_t *sender;
    int64_t sent_at[SEND_WINDOW]; /* send k's time at k % SEND_WINDOW, for its ack's latency */
} room_t;

typedef struct {
    const lg_config_t *cfg;
    lg_shared_t *sh;
    lg_stats_t *st;
    int idx;
    int ep;
    conn_t *conns;
    size_t nconns;
    room_t *rooms;
    int room0, nrooms;
    int member0, nmembers;
    size_t next_new;
    int inflight;
    uint64_t started;       /* connects started, for pacing */
    int64_t t0_ms;
    int64_t send_start_us;
    int64_t send_deadline_ms;
    uint64_t rng;
    char accept[29];
    int reports[4];
    mc_buf_t frame;         /* an outgoing frame being built */
    mc_buf_t payload;       /* an outgoing message being encoded */
    uint8_t scratch[1 << 16];
} runner_t;

enum { REP_FAIL, REP_CLOSE, REP_ERROR, REP_ORDER };

static void report(runner_t *r, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void retry_later(runner_t *r, conn_t *c, int64_t delay_ms, const char *why);
static void lost(runner_t *r, conn_t *c, const char *why);

/* Prints one line about a problem, at most REPORT_LIMIT of each kind. */
static void report(runner_t *r, int kind, const char *fmt, ...)
{
    va_list ap;

    if (r->reports[kind]++ >= REPORT_LIMIT) {
        return;
    }
    fprintf(stderr, "loadgen[%d]: ", r->idx);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static uint64_t conn_user(runner_t *r, conn_t *c)
{
    return c->sender ? lg_owner_user(r->cfg, (int)c->g) : lg_member_user(r->cfg, (int)c->g);
}

/* The connection's number over the whole run, which picks its source address. */
static uint64_t conn_number(runner_t *r, conn_t *c)
{
    return c->sender ? (uint64_t)r->cfg->conns + c->g : c->g;
}

static uint32_t rnd(runner_t *r)
{
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return (uint32_t)r->rng;
}

/* Closes the socket and frees the buffers; the state is the caller's. */
static void conn_drop(runner_t *r, conn_t *c)
{
    if (c->state >= CS_CONNECTING && c->state <= CS_OPENING) {
        r->inflight--;
    }
    if (c->fd >= 0) {
        close(c->fd); /* leaves the epoll set with it */
        c->fd = -1;
    }
    mc_buf_free(&c->in);
    mc_buf_free(&c->out);
    c->polling_out = 0;
}

static int poll_out(runner_t *r, conn_t *c, int on)
{
    struct epoll_event ev;

    if (c->polling_out == on) {
        return 0;
    }
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.ptr = c;
    c->polling_out = (uint8_t)on;
    return epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what it can now and keeps the rest for EPOLLOUT.  Returns 0 or -1
 * (the connection is broken). */
static int conn_write(runner_t *r, conn_t *c, const void *p, size_t n)
{
    ssize_t w = 0;

    if (c->out.len == 0) {
        w = write(c->fd, p, n);
        if (w < 0) {
            if (errno != EAGAIN) {
                return -1;
            }
            w = 0;
        }
        if ((size_t)w == n) {
            return 0;
        }
    }
    if (mc_buf_append(&c->out, (const char *)p + w, n - (size_t)w) != 0) {
        return -1;
    }
    return poll_out(r, c, 1);
}

static int conn_flush(runner_t *r, conn_t *c)
{
    ssize_t w;

    if (c->out.len > 0) {
        w = write(c->fd, c->out.data, c->out.len);
        if (w < 0) {
            return errno == EAGAIN ? 0 : -1;
        }
        mc_buf_consume(&c->out, (size_t)w);
    }
    if (c->out.len == 0) {
        mc_buf_free(&c->out);
        return poll_out(r, c, 0);
    }
    return 0;
}

/* Sends one masked frame.  Returns 0 or -1. */
static int send_frame(runner_t *r, conn_t *c, unsigned opcode, const void *payload, size_t n)
{
    uint8_t mask[4];
    uint32_t m = rnd(r);
    size_t hl;

    memcpy(mask, &m, 4);
    mc_buf_reset(&r->frame);
    if (mc_buf_reserve(&r->frame, n + 14) != 0) {
        return -1;
    }
    hl = mc_ws_client_header((uint8_t *)r->frame.data, opcode, 1, n, mask);
    memcpy(r->frame.data + hl, payload, n);
    mc_ws_unmask((uint8_t *)r->frame.data + hl, n, mask, 0);
    return conn_write(r, c, r->frame.data, hl + n);
}

static void conn_start(runner_t *r, conn_t *c)
{
    uint64_t num = conn_number(r, c);
    struct sockaddr_in src, dst;
    struct epoll_event ev;
    int one = 1;

    r->started++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        retry_later(r, c, 1000, strerror(errno));
        return;
    }
    c->state = CS_CONNECTING;
    r->inflight++;
    c->deadline = mc_now_ms() + (int64_t)(r->cfg->handshake_timeout * 1000);
    /* the port is picked at connect(), per destination: ~28k per source address */
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(&src, 0, sizeof(src));
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(num % (uint64_t)r->cfg->src_addrs));
    memset(&dst, 0, sizeof(dst));
    dst.sin_family = AF_INET;
    dst.sin_port = htons(c->sender ? r->cfg->sender_port : r->cfg->port);
    dst.sin_addr = c->sender ? r->cfg->sender_dst : r->cfg->dst;
    if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
        retry_later(r, c, 1000, strerror(errno));
        return;
    }
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        retry_later(r, c, 1000, strerror(errno));
        return;
    }
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = c;
    c->polling_out = 1;
    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        retry_later(r, c, 1000, strerror(errno));
    }
}

static void retry_later(runner_t *r, conn_t *c, int64_t delay_ms, const char *why)
{
    conn_drop(r, c);
    r->st->retries++;
    if (++c->tries > r->cfg->retries) {
        c->state = CS_FAILED;
        r->st->failed++;
        report(r, REP_FAIL, "user %" PRIu64 ": gave up after %u attempts: %s", conn_user(r, c), c->tries, why);
        return;
    }
    c->state = CS_WAIT_RETRY;
    /* spread the returns over the next half second as well */
    c->deadline = mc_now_ms() + delay_ms + rnd(r) % 500;
}

static void lost(runner_t *r, conn_t *c, const char *why)
{
    if (c->state == CS_OPEN) {
        conn_drop(r, c);
        r->st->open--;
        r->st->closed++;
        report(r, REP_CLOSE, "user %" PRIu64 ": connection lost: %s", conn_user(r, c), why);
        c->state = CS_CLOSED;
        return;
    }
    retry_later(r, c, 1000, why);
}

/* The connection is writable for the first time: the connect finished. */
static void connected(runner_t *r, conn_t *c)
{
    const lg_config_t *cfg = r->cfg;
    mc_buf_t req = MC_BUF_INIT;
    socklen_t len = sizeof(int);
    int err = 0;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        retry_later(r, c, 1000, strerror(err ? err : errno));
        return;
    }
    c->state = CS_UPGRADING;
    if (mc_buf_appendf(&req,
                       "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n",
                       cfg->path, inet_ntoa(c->sender ? cfg->sender_dst : cfg->dst),
                       c->sender ? cfg->sender_port : cfg->port)
            != 0
        || (cfg->proto->subprotocol
            && mc_buf_appendf(&req, "Sec-WebSocket-Protocol: %s\r\n", cfg->proto->subprotocol) != 0)
        || (cfg->proto->auth_headers && cfg->proto->auth_headers(cfg, conn_user(r, c), &req) != 0)
        || mc_buf_append_str(&req, "\r\n") != 0) {
        mc_buf_free(&req);
        retry_later(r, c, 1000, "out of memory");
        return;
    }
    if (conn_write(r, c, req.data, req.len) != 0 || conn_flush(r, c) != 0) {
        retry_later(r, c, 1000, strerror(errno));
    }
    mc_buf_free(&req);
}

/* Reads the status and headers of the upgrade's answer at p[0..n).
 * Returns the bytes they took, 0 when incomplete, -1 when the connection
 * went elsewhere (retry or failure). */
static ssize_t upgrade_answer(runner_t *r, conn_t *c, const char *p, size_t n)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4), *h;
    mc_buf_t first = MC_BUF_INIT;
    int status = 0, ready;
    long retry_s;

    if (end == NULL) {
        if (n > MAX_HANDSHAKE) {
            retry_later(r, c, 1000, "an upgrade answer without an end of headers");
            return -1;
        }
        return 0;
    }
    if (sscanf(p, "HTTP/1.1 %d", &status) != 1) {
        retry_later(r, c, 1000, "not an HTTP answer");
        return -1;
    }
    if (status == 101) {
        h = memmem(p, (size_t)(end - p), "\r\nSec-WebSocket-Accept: ", 24);
        if (h == NULL || memcmp(h + 24, r->accept, 28) != 0) {
            retry_later(r, c, 1000, "101 without the right Sec-WebSocket-Accept");
            return -1;
        }
        c->state = CS_OPENING;
        c->ready_left = 1;
        if (r->cfg->proto->on_open) {
            ready = r->cfg->proto->on_open(r->cfg, conn_user(r, c), r->nrooms > 0 ? r->rooms[c->room].id : 0, &first);
            if (ready < 1 || ready > UINT8_MAX || send_frame(r, c, MC_WS_OP_TEXT, first.data, first.len) != 0) {
                mc_buf_free(&first);
                retry_later(r, c, 1000, "cannot send the first message");
                return -1;
            }
            c->ready_left = (uint8_t)ready;
            mc_buf_free(&first);
        }
        return end + 4 - p;
    }
    if (status == 429 || status == 503) {
        h = memmem(p, (size_t)(end - p), "\r\nRetry-After: ", 15);
        retry_s = h ? strtol(h + 15, NULL, 10) : 1;
        retry_later(r, c, (retry_s > 0 && retry_s < 60 ? retry_s : 1) * 1000, status == 429 ? "429" : "503");
        return -1;
    }
    conn_drop(r, c);
    c->state = CS_FAILED;
    r->st->failed++;
    report(r, REP_FAIL, "user %" PRIu64 ": upgrade refused: %.*s", conn_user(r, c), (int)strcspn(p, "\r\n"), p);
    return -1;
}

static void on_msg(runner_t *r, conn_t *c, const lg_event_t *ev)
{
    room_t *room;
    int64_t now;

    if (c->sender || !ev->ours || r->nrooms == 0) {
        return;
    }
    room = &r->rooms[c->room];
    if (ev->room != room->id) {
        return;
    }
    if (ev->seq <= c->last_seq || ev->k != c->next_k) {
        r->st->out_of_order++;
        report(r, REP_ORDER, "user %" PRIu64 " room %" PRIu64 ": got message %" PRIu64 " (seq %" PRIu64
                             ") after seq %" PRIu64 ", expected message %u",
               conn_user(r, c), ev->room, ev->k, ev->seq, c->last_seq, c->next_k);
    } else {
        r->st->received++;
        now = mc_now_us();
        r->st->last_rx_us = now;
        lg_hist_add(&r->st->latency, now > ev->sent_us ? (uint64_t)(now - ev->sent_us) : 0);
    }
    if (ev->seq > c->last_seq) {
        c->last_seq = ev->seq;
    }
    if (ev->k >= c->next_k) {
        c->next_k = (uint32_t)ev->k + 1;
    }
}

/* A ping to answer: a WebSocket one, or the protocol's own. */
static void count_ping(runner_t *r, conn_t *c)
{
    if (c->pings < UINT16_MAX) {
        c->pings++;
    }
    r->st->pings++;
}

/* One message from the server.  Returns 0 or -1 (connection gone). */
static int on_message(runner_t *r, conn_t *c, const char *p, size_t n)
{
    lg_event_t ev;

    if (r->cfg->proto->parse(p, n, &ev) != 0) {
        r->st->errors++;
        report(r, REP_ERROR, "user %" PRIu64 ": unexpected message: %.*s", conn_user(r, c), (int)(n > 200 ? 200 : n),
               p);
        return 0;
    }
    switch (ev.type) {
    case LG_EV_READY:
        if (c->state == CS_OPENING && --c->ready_left == 0) {
            r->inflight--;
            c->state = CS_OPEN;
            r->st->open++;
            r->st->opened++;
        }
        break;
    case LG_EV_MSG:
        on_msg(r, c, &ev);
        break;
    case LG_EV_ACK:
        if (c->sender) {
            /* a sender's acks come in the order of its sends (one room,
             * one sequence): this ack answers send number c->acked */
            int64_t at = r->rooms[c->room].sent_at[c->acked % SEND_WINDOW], now = mc_now_us();

            if (c->acked < c->next_k) {
                lg_hist_add(&r->st->ack_latency, now > at ? (uint64_t)(now - at) : 0);
            }
            c->acked++;
            r->st->acked++;
        }
        break;
    case LG_EV_ERROR:
        r->st->errors++;
        report(r, REP_ERROR, "user %" PRIu64 ": %.*s", conn_user(r, c), (int)(n > 200 ? 200 : n), p);
        break;
    case LG_EV_PING:
        count_ping(r, c);
        if (r->cfg->proto->pong
            && send_frame(r, c, MC_WS_OP_TEXT, r->cfg->proto->pong, strlen(r->cfg->proto->pong)) != 0) {
            lost(r, c, "cannot answer a ping");
            return -1;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* One text frame from the server: one message, or one per line when the
 * protocol batches.  Returns 0 or -1 (connection gone). */
static int on_text(runner_t *r, conn_t *c, const char *p, size_t n)
{
    const char *nl;
    size_t len;

    if (!r->cfg->proto->lines) {
        return on_message(r, c, p, n);
    }
    while (n > 0) {
        nl = memchr(p, '\n', n);
        len = nl ? (size_t)(nl - p) : n;
        if (len > 0 && on_message(r, c, p, len) != 0) {
            return -1;
        }
        len += nl ? 1 : 0;
        p += len;
        n -= len;
    }
    return 0;
}

/* Handles the complete frames in p[0..n).  Returns the bytes used, or -1
 * when the connection went away. */
static ssize_t frames(runner_t *r, conn_t *c, const char *p, size_t n)
{
    mc_ws_frame_t f;
    size_t off = 0;
    const char *pl;
    unsigned code;
    char why[64];
    int rc;

    for (;;) {
        rc = mc_ws_parse_server_header((const uint8_t *)p + off, n - off, MAX_FRAME, &f);
        if (rc == MC_WS_AGAIN) {
            return (ssize_t)off;
        }
        if (rc != MC_WS_OK) {
            lost(r, c, "a malformed frame from the server");
            return -1;
        }
        if (n - off < f.header_len + f.payload_len) {
            return (ssize_t)off;
        }
        pl = p + off + f.header_len;
        switch (f.opcode) {
        case MC_WS_OP_TEXT:
            if (!f.fin) {
                lost(r, c, "a fragmented message (the load generator reads whole frames only)");
                return -1;
            }
            if (on_text(r, c, pl, (size_t)f.payload_len) != 0) {
                return -1;
            }
            break;
        case MC_WS_OP_PING:
            count_ping(r, c);
            if (send_frame(r, c, MC_WS_OP_PONG, pl, (size_t)f.payload_len) != 0) {
                lost(r, c, "cannot answer a ping");
                return -1;
            }
            break;
        case MC_WS_OP_CLOSE:
            code = f.payload_len >= 2 ? ((unsigned)(uint8_t)pl[0] << 8) | (uint8_t)pl[1] : 1005;
            snprintf(why, sizeof(why), "close %u %.*s", code, (int)(f.payload_len >= 2 ? f.payload_len - 2 : 0),
                     pl + 2);
            lost(r, c, why);
            return -1;
        case MC_WS_OP_CONT:
            lost(r, c, "a continuation frame (the load generator reads whole frames only)");
            return -1;
        default: /* pong, binary: nothing to do */
            break;
        }
        off += f.header_len + (size_t)f.payload_len;
    }
}

/* Handles the bytes p[0..n) just read or kept.  Returns the bytes used or -1. */
static ssize_t input(runner_t *r, conn_t *c, const char *p, size_t n)
{
    ssize_t used = 0, more;

    if (c->state == CS_UPGRADING) {
        used = upgrade_answer(r, c, p, n);
        if (used <= 0) {
            return used;
        }
    }
    more = frames(r, c, p + used, n - (size_t)used);
    return more < 0 ? -1 : used + more;
}

static void readable(runner_t *r, conn_t *c)
{
    ssize_t n, used;

    n = read(c->fd, r->scratch, sizeof(r->scratch));
    if (n < 0 && errno == EAGAIN) {
        return;
    }
    if (n <= 0) {
        lost(r, c, n == 0 ? "closed by the server" : strerror(errno));
        return;
    }
    if (c->in.len == 0) {
        used = input(r, c, (const char *)r->scratch, (size_t)n);
        if (used >= 0 && used < n && mc_buf_append(&c->in, r->scratch + used, (size_t)(n - used)) != 0) {
            lost(r, c, "out of memory");
        }
        return;
    }
    if (c->in.len + (size_t)n > MAX_FRAME + 16 || mc_buf_append(&c->in, r->scratch, (size_t)n) != 0) {
        lost(r, c, "a frame over the load generator's 1 MiB");
        return;
    }
    used = input(r, c, c->in.data, c->in.len);
    if (used > 0) {
        mc_buf_consume(&c->in, (size_t)used);
    }
    if (used >= 0 && c->in.len == 0) {
        mc_buf_free(&c->in);
    }
}

static void event(runner_t *r, conn_t *c, uint32_t events)
{
    if (c->fd < 0) {
        return;
    }
    if (c->state == CS_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            connected(r, c);
        }
        return;
    }
    if ((events & EPOLLOUT) && conn_flush(r, c) != 0) {
        lost(r, c, strerror(errno));
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        readable(r, c);
    }
}

/* Starts connections as pacing and the in-flight cap allow; retires
 * handshakes past their deadline.  Every 100 ms. */
static void tick(runner_t *r)
{
    const lg_config_t *cfg = r->cfg;
    int64_t now = mc_now_ms();
    double rate = cfg->connect_rate / cfg->procs;
    uint64_t allowed = rate > 0 ? (uint64_t)((double)(now - r->t0_ms) / 1000.0 * rate) + 1 : UINT64_MAX;
    size_t i;

    for (i = 0; i < r->nconns; i++) {
        conn_t *c = &r->conns[i];

        if (c->state >= CS_CONNECTING && c->state <= CS_OPENING && now >= c->deadline) {
            retry_later(r, c, 0, "no answer within the handshake timeout");
        } else if (c->state == CS_WAIT_RETRY && now >= c->deadline && r->inflight < cfg->inflight
                   && r->started < allowed) {
            conn_start(r, c);
        }
    }
    while (r->next_new < r->nconns && r->inflight < cfg->inflight && r->started < allowed) {
        conn_start(r, &r->conns[r->next_new++]);
    }
}

/* 1 when every connection is open or settled for good. */
static int all_settled(runner_t *r)
{
    size_t i;

    if (r->next_new < r->nconns) {
        return 0;
    }
    for (i = 0; i < r->nconns; i++) {
        if (r->conns[i].state < CS_OPEN) {
            return 0;
        }
    }
    return 1;
}

static uint64_t self_pss_kb(void)
{
    char line[256];
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/self/smaps_rollup", "r");

    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "Pss: %llu kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb;
}

/* Senders send what is due by now.  Each room's schedule is shifted by its
 * share of one period (room g of R starts g/R periods late), so R rooms at
 * a rate each offer an even R x rate sends a second, not R sends at once
 * every period: message k of room g is due (k + g/R) periods after the
 * start.  Sets *next_us to when the next send of a sender that may send
 * falls due (INT64_MAX: none; one waiting for acks is woken by them).
 * Returns 1 when every message of this runner was acked and delivered. */
static int send_due(runner_t *r, int64_t *next_us)
{
    const lg_config_t *cfg = r->cfg;
    int64_t now = mc_now_us(), at;
    double periods = (double)(now - r->send_start_us) / 1e6 * cfg->msg_rate;
    int rooms = lg_rooms(cfg);
    int i, all_acked = 1;

    *next_us = INT64_MAX;
    for (i = 0; i < r->nrooms; i++) {
        conn_t *s = r->rooms[i].sender;
        double shift = (double)(r->room0 + i) / rooms, shifted = periods - shift;
        uint64_t due = shifted < 0 ? 0 : (uint64_t)shifted + 1;

        if (due > (uint64_t)cfg->messages) {
            due = (uint64_t)cfg->messages;
        }

        while (s->state == CS_OPEN && s->next_k < due && s->next_k - s->acked < SEND_WINDOW) {
            at = mc_now_us();
            /* behind its schedule by over a millisecond: the window of
             * unacked sends (or the loop) held it back */
            if (at - r->send_start_us - (int64_t)(((double)s->next_k + shift) / cfg->msg_rate * 1e6) > 1000) {
                r->st->late++;
            }
            mc_buf_reset(&r->payload);
            if (cfg->proto->encode_send(r->rooms[i].id, conn_user(r, s), s->next_k, s->next_k + 1, at, &r->payload)
                    != 0
                || send_frame(r, s, MC_WS_OP_TEXT, r->payload.data, r->payload.len) != 0) {
                lost(r, s, "cannot send");
                break;
            }
            if (r->st->first_send_us == 0) {
                r->st->first_send_us = now;
            }
            r->rooms[i].sent_at[s->next_k % SEND_WINDOW] = at;
            s->next_k++;
            r->st->sent++;
        }
        if (s->state == CS_OPEN && s->next_k < (uint32_t)cfg->messages && s->next_k - s->acked < SEND_WINDOW) {
            at = r->send_start_us + (int64_t)(((double)s->next_k + shift) / cfg->msg_rate * 1e6);
            if (at < *next_us) {
                *next_us = at;
            }
        }
        if (s->acked < (uint32_t)cfg->messages) {
            all_acked = 0;
        }
    }
    return all_acked && r->st->received + r->st->out_of_order >= r->st->expected;
}

/* Makes this runner's rooms through the protocol (blocking).  Returns 0 or -1. */
static int make_rooms(runner_t *r)
{
    const lg_config_t *cfg = r->cfg;
    uint64_t members[LG_MAX_ROOM_SIZE];
    char err[512];
    int i, g, n;

    for (i = 0; i < r->nrooms; i++) {
        int room = r->room0 + i;

        n = 0;
        for (g = room * cfg->room_size; g < (room + 1) * cfg->room_size && g < cfg->conns; g++) {
            members[n++] = lg_member_user(cfg, g);
        }
        if (cfg->proto->make_room(cfg, lg_owner_user(cfg, room), members, (size_t)n, &r->rooms[i].id, err,
                                  sizeof(err))
            != 0) {
            fprintf(stderr, "loadgen[%d]: room %d: %s\n", r->idx, room, err);
            return -1;
        }
        r->st->rooms++;
    }
    return 0;
}

/* Lays out this runner's slice: members first, then one sender per room. */
static int plan(runner_t *r)
{
    const lg_config_t *cfg = r->cfg;
    int rooms = lg_rooms(cfg), room1, i;
    conn_t *c;

    if (rooms > 0) {
        r->room0 = (int)((int64_t)rooms * r->idx / cfg->procs);
        room1 = (int)((int64_t)rooms * (r->idx + 1) / cfg->procs);
        r->nrooms = room1 - r->room0;
        r->member0 = r->room0 * cfg->room_size;
        r->nmembers = (room1 * cfg->room_size < cfg->conns ? room1 * cfg->room_size : cfg->conns) - r->member0;
        if (r->nmembers < 0) {
            r->nmembers = 0;
        }
    } else {
        r->member0 = (int)((int64_t)cfg->conns * r->idx / cfg->procs);
        r->nmembers = (int)((int64_t)cfg->conns * (r->idx + 1) / cfg->procs) - r->member0;
    }
    r->nconns = (size_t)(r->nmembers + r->nrooms);
    r->conns = calloc(r->nconns ? r->nconns : 1, sizeof(conn_t));
    r->rooms = calloc(r->nrooms ? (size_t)r->nrooms : 1, sizeof(room_t));
    if (r->conns == NULL || r->rooms == NULL) {
        return -1;
    }
    for (i = 0; i < (int)r->nconns; i++) {
        c = &r->conns[i];
        c->fd = -1;
        if (i < r->nmembers) {
            c->g = (uint32_t)(r->member0 + i);
            c->room = rooms > 0 ? (uint32_t)((r->member0 + i) / cfg->room_size - r->room0) : 0;
        } else {
            c->sender = 1;
            c->room = (uint32_t)(i - r->nmembers);
            c->g = (uint32_t)r->room0 + c->room;
            r->rooms[c->room].sender = c;
        }
    }
    r->st->target = r->nconns;
    r->st->expected = (uint64_t)r->nmembers * (rooms > 0 ? (uint64_t)cfg->messages : 0);
    return 0;
}

/* At the end: the fewest pings any open connection answered. */
static void finish(runner_t *r)
{
    uint64_t min = UINT64_MAX;
    size_t i;

    for (i = 0; i < r->nconns; i++) {
        conn_t *c = &r->conns[i];

        if (c->state == CS_OPEN && c->pings < min) {
            min = c->pings;
        }
        if (c->fd >= 0) {
            conn_drop(r, c);
        }
    }
    r->st->min_pings = min == UINT64_MAX ? 0 : min;
    if (r->st->pss_kb == 0) {
        r->st->pss_kb = self_pss_kb(); /* the connect phase never ended */
    }
}

int lg_runner_run(const lg_config_t *cfg, lg_shared_t *sh, int idx)
{
    struct epoll_event evs[512];
    struct timespec wait;
    runner_t *r = calloc(1, sizeof(runner_t));
    int64_t last_tick = 0, now, next_send_us = INT64_MAX, wait_us;
    int n, i;

    if (r == NULL) {
        fprintf(stderr, "loadgen[%d]: out of memory\n", idx);
        return 1;
    }
    r->cfg = cfg;
    r->sh = sh;
    r->idx = idx;
    r->st = &sh->st[idx];
    r->rng = (uint64_t)mc_now_us() * 2654435761u + (uint64_t)idx + 1;
    mc_ws_accept(WS_KEY, strlen(WS_KEY), r->accept);
    r->st->phase = LG_PH_SETUP;
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    if (r->ep < 0 || plan(r) != 0 || make_rooms(r) != 0) {
        r->st->phase = LG_PH_FAILED;
        return 1;
    }
    r->st->phase = LG_PH_CONNECTING;
    r->t0_ms = mc_now_ms();

    while (!__atomic_load_n(&sh->stop, __ATOMIC_RELAXED)) {
        /* while sending, wake (to the microsecond) when the next send is
         * due: a millisecond timeout would send 1,000 messages a second
         * in bursts */
        wait_us = 50000;
        if (r->st->phase == LG_PH_SENDING) {
            wait_us = next_send_us == INT64_MAX ? 5000 : next_send_us - mc_now_us();
            wait_us = wait_us < 0 ? 0 : wait_us > 5000 ? 5000 : wait_us;
        }
        wait.tv_sec = 0;
        wait.tv_nsec = (long)wait_us * 1000;
        n = epoll_pwait2(r->ep, evs, 512, &wait, NULL);
        for (i = 0; i < n; i++) {
            event(r, evs[i].data.ptr, evs[i].events);
        }
        now = mc_now_ms();
        if (now - last_tick >= 100) {
            last_tick = now;
            if (r->st->phase == LG_PH_CONNECTING) {
                tick(r);
                if (all_settled(r)) {
                    r->st->pss_kb = self_pss_kb();
                    r->st->phase = LG_PH_CONNECTED;
                }
            }
        }
        if (r->st->phase == LG_PH_CONNECTED && r->nrooms > 0 && __atomic_load_n(&sh->go_send, __ATOMIC_RELAXED)) {
            r->st->phase = LG_PH_SENDING;
            r->send_start_us = mc_now_us();
            r->send_deadline_ms = now + (int64_t)(((double)cfg->messages / cfg->msg_rate + cfg->wait) * 1000);
        }
        if (r->st->phase == LG_PH_SENDING && (send_due(r, &next_send_us) || now >= r->send_deadline_ms)) {
            r->st->phase = LG_PH_DONE;
        }
    }
    finish(r);
    return 0;
}
