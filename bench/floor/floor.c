/*
 * The floor's event loop (see floor.h for what the floor is).
 *
 * One epoll set, level-triggered.  A turn is: epoll_wait, then every ready
 * connection is read once (up to 64 KiB) and what it sent is handled --
 * HTTP by http.c, WebSocket frames here, whole text messages by chat.c --
 * which only appends to output buffers and puts connections on the dirty
 * list; then each dirty connection gets ONE write of all it has queued;
 * then the connections closed during the turn are freed (an event later in
 * the same epoll batch may still point at one, so freeing waits).
 *
 * A write the kernel takes only in part leaves the rest queued and arms
 * EPOLLOUT; past FLOOR_MAX_OUT queued bytes the connection is dropped.
 *
 *   floor --port P --secret-file F [--host A] [--max-conns N] [--node NAME]
 *
 * prints "floor: listening on A:P" once it accepts, and its counters when
 * SIGTERM or SIGINT ends it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "minichat/clock.h"
#include "minichat/secret.h"
#include "minichat/ws.h"

#include "floor.h"

#define READ_CHUNK 65536
#define EVENTS 512

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: floor --port P --secret-file F [--host 127.0.0.1] [--max-conns 19000] [--node floor]\n");
}

static int poll_out(floor_t *fl, floor_conn_t *c, int on)
{
    struct epoll_event ev;

    if (c->polling_out == on) {
        return 0;
    }
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.ptr = c;
    c->polling_out = (uint8_t)on;
    return epoll_ctl(fl->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

void floor_close(floor_t *fl, floor_conn_t *c)
{
    if (c->state == FC_DEAD) {
        return;
    }
    floor_user_detach(c);
    close(c->fd); /* leaves the epoll set with it */
    c->fd = -1;
    c->state = FC_DEAD;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        fl->all = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    fl->nconns--;
    /* a dirty connection is on the write list: the flush skips it and
     * frees it afterwards; any other goes on the dead list */
    if (!c->dirty) {
        c->next_dirty = fl->dead;
        fl->dead = c;
    }
}

/* Everything is written: shut our side and wait for the peer's EOF. */
static void linger(floor_t *fl, floor_conn_t *c)
{
    floor_user_detach(c);
    if (shutdown(c->fd, SHUT_WR) != 0) {
        floor_close(fl, c);
        return;
    }
    c->state = FC_LINGER;
    c->since_ms = mc_now_ms();
}

void floor_close_after_write(floor_t *fl, floor_conn_t *c)
{
    c->state = FC_CLOSING;
    if (c->out.len == 0 && !c->dirty) {
        linger(fl, c);
    }
}

int floor_queue(floor_t *fl, floor_conn_t *c, const void *p, size_t n)
{
    if (c->state != FC_HTTP && c->state != FC_WS) {
        return 0;
    }
    if (c->out.len + n > FLOOR_MAX_OUT || mc_buf_append(&c->out, p, n) != 0) {
        fl->st.slow_closed++;
        floor_close(fl, c);
        return -1;
    }
    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = fl->dirty;
        fl->dirty = c;
    }
    return 0;
}

int floor_queue_frame(floor_t *fl, floor_conn_t *c, unsigned opcode, const void *p, size_t n)
{
    uint8_t hdr[10];
    size_t hl = mc_ws_header(hdr, opcode, 1, n);

    if (floor_queue(fl, c, hdr, hl) != 0) {
        return -1;
    }
    return floor_queue(fl, c, p, n);
}

/* A close frame with code and reason, then the end of the connection. */
static void ws_fail(floor_t *fl, floor_conn_t *c, unsigned code, const char *reason)
{
    uint8_t pl[125];
    size_t n = strlen(reason);

    if (n > sizeof(pl) - 2) {
        n = sizeof(pl) - 2;
    }
    pl[0] = (uint8_t)(code >> 8);
    pl[1] = (uint8_t)code;
    memcpy(pl + 2, reason, n);
    fl->st.bad_input++;
    if (floor_queue_frame(fl, c, MC_WS_OP_CLOSE, pl, n + 2) == 0) {
        floor_close_after_write(fl, c);
    }
}

/* Handles c's buffered WebSocket frames.  Returns 0, or -1 when c was
 * closed or is closing. */
static int ws_input(floor_t *fl, floor_conn_t *c)
{
    mc_ws_frame_t f;
    size_t off = 0;
    uint8_t *pl;
    int rc;

    while (c->state == FC_WS) {
        rc = mc_ws_parse_header((uint8_t *)c->in.data + off, c->in.len - off, FLOOR_MAX_MESSAGE, &f);
        if (rc == MC_WS_AGAIN || (rc == MC_WS_OK && c->in.len - off < f.header_len + f.payload_len)) {
            break;
        }
        if (rc != MC_WS_OK) {
            ws_fail(fl, c, (unsigned)mc_ws_error_close_code(rc), "bad frame");
            return -1;
        }
        pl = (uint8_t *)c->in.data + off + f.header_len;
        mc_ws_unmask(pl, (size_t)f.payload_len, f.mask, 0);
        off += f.header_len + (size_t)f.payload_len;
        switch (f.opcode) {
        case MC_WS_OP_TEXT:
            if (!f.fin) {
                ws_fail(fl, c, MC_WS_CLOSE_UNSUPPORTED, "the floor takes whole messages only");
                return -1;
            }
            if (!mc_utf8_valid(pl, (size_t)f.payload_len)) {
                ws_fail(fl, c, MC_WS_CLOSE_BAD_DATA, "invalid UTF-8");
                return -1;
            }
            if (floor_chat_text(fl, c, (const char *)pl, (size_t)f.payload_len) != 0) {
                return -1;
            }
            break;
        case MC_WS_OP_PING:
            if (floor_queue_frame(fl, c, MC_WS_OP_PONG, pl, (size_t)f.payload_len) != 0) {
                return -1;
            }
            break;
        case MC_WS_OP_PONG:
            break;
        case MC_WS_OP_CLOSE:
            /* echo the code, as RFC 6455 5.5.1 asks */
            if (floor_queue_frame(fl, c, MC_WS_OP_CLOSE, pl, f.payload_len >= 2 ? 2 : 0) == 0) {
                floor_close_after_write(fl, c);
            }
            return -1;
        default: /* binary, continuation */
            ws_fail(fl, c, MC_WS_CLOSE_UNSUPPORTED, "the floor takes text messages only");
            return -1;
        }
    }
    mc_buf_consume(&c->in, off);
    return 0;
}

static void readable(floor_t *fl, floor_conn_t *c)
{
    ssize_t n;

    if (mc_buf_reserve(&c->in, READ_CHUNK) != 0) {
        floor_close(fl, c);
        return;
    }
    n = read(c->fd, c->in.data + c->in.len, READ_CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        floor_close(fl, c);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = '\0'; /* as mc_buf keeps it: text can be scanned as a string */
    if (c->state == FC_CLOSING || c->state == FC_LINGER) {
        mc_buf_reset(&c->in); /* what comes after a close is not read */
        return;
    }
    if (c->state == FC_HTTP && floor_http(fl, c) != 0) {
        return;
    }
    /* bytes after the upgrade's request are already WebSocket frames */
    if (c->state == FC_WS && ws_input(fl, c) != 0) {
        return;
    }
    if (c->state == FC_WS && c->in.len == 0) {
        mc_buf_free(&c->in); /* an idle connection keeps no buffer */
    }
}

/* One write of what c has queued.  Returns 0, or -1 when c was closed. */
static int flush(floor_t *fl, floor_conn_t *c)
{
    ssize_t w;

    if (c->out.len > 0) {
        w = write(c->fd, c->out.data, c->out.len);
        fl->st.writes++;
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            floor_close(fl, c);
            return -1;
        }
        mc_buf_consume(&c->out, w > 0 ? (size_t)w : 0);
    }
    if (c->out.len > 0) {
        if (poll_out(fl, c, 1) != 0) {
            floor_close(fl, c);
            return -1;
        }
        return 0;
    }
    mc_buf_free(&c->out);
    if (c->state == FC_CLOSING) {
        poll_out(fl, c, 0);
        linger(fl, c);
        return -1;
    }
    if (poll_out(fl, c, 0) != 0) {
        floor_close(fl, c);
        return -1;
    }
    return 0;
}

/* The end of a turn: one write per dirty connection, then the frees. */
static void end_of_turn(floor_t *fl)
{
    floor_conn_t *c, *next;

    for (c = fl->dirty, fl->dirty = NULL; c != NULL; c = next) {
        next = c->next_dirty;
        c->dirty = 0;
        if (c->state == FC_DEAD) {
            /* closed during the turn while on this list */
            c->next_dirty = fl->dead;
            fl->dead = c;
        } else {
            flush(fl, c); /* a close here puts c on the dead list itself */
        }
    }
    for (c = fl->dead, fl->dead = NULL; c != NULL; c = next) {
        next = c->next_dirty;
        mc_buf_free(&c->in);
        mc_buf_free(&c->out);
        free(c);
    }
}

static void accept_all(floor_t *fl)
{
    struct epoll_event ev;
    floor_conn_t *c;
    int fd, one = 1, i;

    for (i = 0; i < 64; i++) {
        fd = accept4(fl->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                fprintf(stderr, "floor: accept: %s\n", strerror(errno));
            }
            return;
        }
        fl->st.accepted++;
        if (fl->nconns >= fl->max_conns || (c = calloc(1, sizeof(*c))) == NULL) {
            fl->st.refused++;
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->fd = fd;
        c->state = FC_HTTP;
        c->since_ms = mc_now_ms();
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(fl->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = fl->all;
        if (fl->all) {
            fl->all->prev = c;
        }
        fl->all = c;
        fl->nconns++;
    }
}

/* Closes the connections whose HTTP request is not whole in time, and
 * those that linger past FLOOR_LINGER_MS. */
static void sweep(floor_t *fl, int64_t now)
{
    floor_conn_t *c, *next;

    for (c = fl->all; c != NULL; c = next) {
        next = c->next;
        if ((c->state == FC_HTTP && now - c->since_ms > FLOOR_HTTP_TIMEOUT_MS)
            || (c->state == FC_LINGER && now - c->since_ms > FLOOR_LINGER_MS)) {
            floor_close(fl, c);
        }
    }
}

static int listen_on(floor_t *fl, const char *host, int port)
{
    struct sockaddr_in sa;
    struct epoll_event ev;
    int one = 1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "floor: --host must be an IPv4 address, got \"%s\"\n", host);
        return -1;
    }
    fl->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fl->lfd < 0) {
        perror("floor: socket");
        return -1;
    }
    setsockopt(fl->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fl->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fl->lfd, 4096) != 0) {
        fprintf(stderr, "floor: listen on %s:%d: %s\n", host, port, strerror(errno));
        return -1;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    return epoll_ctl(fl->ep, EPOLL_CTL_ADD, fl->lfd, &ev);
}

/* Parses an integer option in [min, max]; exits with a message otherwise. */
static long opt_num(const char *name, const char *v, long min, long max)
{
    char *end;
    long x;

    errno = 0;
    x = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x < min || x > max) {
        fprintf(stderr, "floor: %s must be an integer from %ld to %ld, got \"%s\"\n", name, min, max, v);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *secret_file = NULL;
    struct epoll_event evs[EVENTS];
    char err[256], *secret;
    int64_t last_sweep = 0, now;
    int port = 0, i, n;
    floor_t fl;

    memset(&fl, 0, sizeof(fl));
    fl.max_conns = 19000;
    fl.node = "floor";
    for (i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) {
            fprintf(stderr, "floor: %s needs a value\n", argv[i]);
            usage();
            return 2;
        }
        if (strcmp(argv[i], "--port") == 0) {
            port = (int)opt_num("--port", argv[i + 1], 1, 65535);
        } else if (strcmp(argv[i], "--host") == 0) {
            host = argv[i + 1];
        } else if (strcmp(argv[i], "--secret-file") == 0) {
            secret_file = argv[i + 1];
        } else if (strcmp(argv[i], "--max-conns") == 0) {
            fl.max_conns = (int)opt_num("--max-conns", argv[i + 1], 1, 1000000);
        } else if (strcmp(argv[i], "--node") == 0) {
            fl.node = argv[i + 1];
        } else {
            fprintf(stderr, "floor: unknown option \"%s\"\n", argv[i]);
            usage();
            return 2;
        }
    }
    if (port == 0 || secret_file == NULL) {
        usage();
        return 2;
    }
    if (strlen(fl.node) > 64 || strpbrk(fl.node, "\"\\") != NULL) {
        fprintf(stderr, "floor: --node must be at most 64 characters without quotes or backslashes\n");
        return 2;
    }
    secret = mc_secret_read(secret_file, err, sizeof(err));
    if (secret == NULL) {
        fprintf(stderr, "floor: %s\n", err);
        return 2;
    }
    fl.key = mc_jwt_key_new((const uint8_t *)secret, strlen(secret));
    mc_secret_free(secret);
    fl.ep = epoll_create1(EPOLL_CLOEXEC);
    if (fl.key == NULL || fl.ep < 0 || listen_on(&fl, host, port) != 0) {
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("floor: listening on %s:%d\n", host, port);
    fflush(stdout);

    while (!stop) {
        n = epoll_wait(fl.ep, evs, EVENTS, 1000);
        for (i = 0; i < n; i++) {
            floor_conn_t *c = evs[i].data.ptr;

            if (c == NULL) {
                accept_all(&fl);
                continue;
            }
            if (c->state == FC_DEAD) {
                continue;
            }
            if ((evs[i].events & EPOLLOUT) && flush(&fl, c) != 0) {
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                readable(&fl, c);
            }
        }
        end_of_turn(&fl);
        now = mc_now_ms();
        if (now - last_sweep >= 1000) {
            last_sweep = now;
            sweep(&fl, now);
            end_of_turn(&fl);
        }
    }

    printf("floor: result accepted=%" PRIu64 " refused=%" PRIu64 " upgrades=%" PRIu64 " rooms=%" PRIu64
           " sends=%" PRIu64 " deliveries=%" PRIu64 " writes=%" PRIu64 " slow_closed=%" PRIu64 " bad_input=%" PRIu64
           "\n",
           fl.st.accepted, fl.st.refused, fl.st.upgrades, fl.st.rooms, fl.st.sends, fl.st.deliveries, fl.st.writes,
           fl.st.slow_closed, fl.st.bad_input);
    while (fl.all != NULL) {
        floor_close(&fl, fl.all);
    }
    end_of_turn(&fl);
    floor_chat_free(&fl);
    mc_jwt_key_free(fl.key);
    mc_buf_free(&fl.frame);
    close(fl.lfd);
    close(fl.ep);
    return 0;
}
