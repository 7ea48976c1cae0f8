/*
 * The services' tiny HTTP/1.1 server (the rules are in minichat/http_mini.h).
 *
 * One request per connection: the client's bytes go into a fixed buffer of
 * MC_HTTP_HEAD_MAX bytes until the head is whole (a blank line), the answer
 * is built at once by the handler into a growable buffer, written as the
 * socket takes it, and the connection is closed.  GET has no body, so a
 * request that announces one (Content-Length other than 0,
 * Transfer-Encoding) is refused rather than read.  Level-triggered epoll;
 * each client is in the set for reading until its head is whole, then for
 * writing only.  Once the answer has left, our side is shut down and what
 * the client sent beyond its head is read and dropped until it closes (at
 * most HTTP_LINGER_MS and HTTP_LINGER_BYTES): closing with unread bytes
 * would make the kernel send a reset, and a client may lose the answer to
 * it (an oversize head, a body we refused).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "minichat/clock.h"
#include "minichat/http_mini.h"
#include "minichat/prom_text.h"

#define HTTP_ACCEPTS_PER_RUN 64
#define HTTP_LINGER_MS 1000            /* reading what a client sent past its answer, at most */
#define HTTP_LINGER_BYTES (64 * 1024)

typedef struct {
    int fd;                 /* -1: the slot is free */
    int writing;            /* the answer is built and leaving */
    int draining;           /* the answer left: reading what else came until EOF (lingering close) */
    size_t drained;
    int64_t deadline;       /* mc_now_ms() past which it is closed */
    size_t in_len;
    size_t out_off;
    mc_buf_t out;
    char in[MC_HTTP_HEAD_MAX];
} http_client_t;

struct mc_http_s {
    int epfd;
    int lfd;
    int full;               /* every slot taken: the listener is out of the epoll set */
    mc_http_handler_t h;
    http_client_t c[MC_HTTP_CLIENTS];
};

int mc_http_addr_parse(const char *s, mc_http_addr_t *out, char *err, size_t err_size)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->ss;
    char host[64];
    const char *colon, *h = s, *p;
    size_t hlen;
    long port = 0;

    memset(out, 0, sizeof(*out));
    colon = strrchr(s, ':');
    if (colon == NULL || colon == s || strlen(s) >= sizeof(out->text)) {
        snprintf(err, err_size, "\"%s\" is not ADDRESS:PORT (a numeric IPv4 address or [IPv6])", s);
        return -1;
    }
    hlen = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hlen < 3 || s[hlen - 1] != ']') {
            snprintf(err, err_size, "\"%s\": an IPv6 address goes in brackets, [::1]:PORT", s);
            return -1;
        }
        h = s + 1;
        hlen -= 2;
    }
    for (p = colon + 1; *p >= '0' && *p <= '9' && port <= 65535; p++) {
        port = port * 10 + (*p - '0');
    }
    if (p == colon + 1 || *p != '\0' || port < 1 || port > 65535) {
        snprintf(err, err_size, "\"%s\": the port must be 1..65535", s);
        return -1;
    }
    if (hlen >= sizeof(host)) {
        snprintf(err, err_size, "\"%s\": address too long", s);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (h != s && inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*v6);
    } else if (h == s && inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*v4);
    } else {
        snprintf(err, err_size, "\"%s\": \"%s\" is not a numeric IP address", s, host);
        return -1;
    }
    snprintf(out->text, sizeof(out->text), "%s", s);
    return 0;
}

int mc_http_conf_listen(mc_conf_t *c, const char *key, mc_http_addr_t *out)
{
    const char *v = mc_conf_get(c, key, NULL);
    char err[256];

    if (v == NULL || strcmp(v, "off") == 0) {
        return 0;
    }
    if (mc_http_addr_parse(v, out, err, sizeof(err)) != 0) {
        mc_conf_error(c, key, "%s: %s", key, err);
        return -1;
    }
    return 1;
}

/* Returns 1 for a character of an HTTP token (method, header name). */
static int http_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
           || (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Checks one header line buf[0..len) (no line end).  Returns 0 or the
 * status to answer. */
static int http_header(const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len), *v;
    size_t nlen, vlen;

    if (colon == NULL || colon == line) {
        return 400;
    }
    nlen = (size_t)(colon - line);
    for (v = line; v < colon; v++) {
        if (!http_tchar(*v)) {
            return 400; /* a space before the colon, or obs-fold */
        }
    }
    for (v = colon + 1; v < line + len && (*v == ' ' || *v == '\t'); v++) {
    }
    vlen = (size_t)(line + len - v);
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) {
        vlen--;
    }
    if (nlen == 17 && strncasecmp(line, "transfer-encoding", nlen) == 0) {
        return 413;
    }
    if (nlen == 14 && strncasecmp(line, "content-length", nlen) == 0 && !(vlen == 1 && v[0] == '0')) {
        return 413;
    }
    return 0;
}

/* Parses the request line buf[0..len) (no line end).  Returns 0 or a status. */
static int http_request_line(const char *line, size_t len, mc_http_req_t *req)
{
    const char *sp1, *sp2, *end = line + len, *q;

    sp1 = memchr(line, ' ', len);
    if (sp1 == NULL || sp1 == line) {
        return 400;
    }
    for (q = line; q < sp1; q++) {
        if (!http_tchar(*q)) {
            return 400;
        }
    }
    sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1 || sp1[1] != '/') {
        return 400;
    }
    for (q = sp1 + 1; q < sp2; q++) {
        if ((unsigned char)*q <= 0x20 || *q == 0x7f) {
            return 400;
        }
    }
    if ((size_t)(end - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        return (size_t)(end - sp2 - 1) >= 5 && memcmp(sp2 + 1, "HTTP/", 5) == 0 ? 505 : 400;
    }
    if (sp2[8] != '0' && sp2[8] != '1') {
        return 505;
    }
    req->get = (size_t)(sp1 - line) == 3 && memcmp(line, "GET", 3) == 0;
    req->path = sp1 + 1;
    q = memchr(req->path, '?', (size_t)(sp2 - req->path));
    req->path_len = (size_t)((q != NULL ? q : sp2) - req->path);
    return 0;
}

int mc_http_parse(const char *buf, size_t len, mc_http_req_t *req)
{
    const char *line = buf, *nl, *head_end = NULL;
    size_t i, llen;
    int st, first = 1;

    /* the head ends at a blank line (CRLF CRLF, or bare LFs) */
    for (i = 0; i < len; i++) {
        if (buf[i] == '\0') {
            return 400;
        }
        if (buf[i] == '\n' && ((i + 1 < len && buf[i + 1] == '\n')
                               || (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n'))) {
            head_end = buf + i + 1;
            break;
        }
    }
    if (head_end == NULL) {
        return len >= MC_HTTP_HEAD_MAX ? 431 : 1;
    }
    memset(req, 0, sizeof(*req));
    while (line < head_end) {
        nl = memchr(line, '\n', (size_t)(head_end - line));
        llen = (size_t)(nl - line);
        if (llen > 0 && line[llen - 1] == '\r') {
            llen--;
        }
        st = first ? http_request_line(line, llen, req) : http_header(line, llen);
        if (st != 0) {
            return st;
        }
        first = 0;
        line = nl + 1;
    }
    return 0;
}

static const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

/* Returns 1 when the request's path is p. */
static int http_path_is(const mc_http_req_t *req, const char *p)
{
    return req->path_len == strlen(p) && memcmp(req->path, p, req->path_len) == 0;
}

int mc_http_respond(const mc_http_handler_t *h, const mc_http_req_t *req, int status, mc_buf_t *out)
{
    mc_buf_t body = MC_BUF_INIT;
    const char *type = "text/plain; charset=utf-8";
    int rc;

    mc_buf_reset(out);
    if (status == 0 && !req->get) {
        status = 405;
    } else if (status == 0 && http_path_is(req, "/metrics") && h->metrics != NULL) {
        status = h->metrics(&body) == 0 ? 200 : 500;
        type = MC_PROM_CONTENT_TYPE;
    } else if (status == 0 && http_path_is(req, "/status") && h->status != NULL) {
        status = h->status(&body) == 0 ? 200 : 500;
        type = "application/json";
    } else if (status == 0 && http_path_is(req, "/ready") && h->ready != NULL) {
        rc = h->ready(&body);
        status = rc == 1 ? 200 : rc == 0 ? 503 : 500;
        if (rc == 1) {
            mc_buf_reset(&body);
            mc_buf_append_str(&body, "ready\n");
        } else if (rc == 0) {
            type = "application/json";
        }
    } else if (status == 0) {
        status = 404;
    }
    if (status != 200 && body.len == 0) {
        mc_buf_appendf(&body, "%s\n", http_reason(status));
        type = "text/plain; charset=utf-8";
    }
    if (mc_buf_appendf(out,
                       "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sCache-Control: no-store\r\n"
                       "Connection: close\r\n\r\n",
                       status, http_reason(status), type, body.len, status == 405 ? "Allow: GET\r\n" : "")
            != 0
        || mc_buf_append(out, body.data, body.len) != 0) {
        mc_buf_reset(out);
        mc_buf_append_str(out, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        status = 500;
    }
    mc_buf_free(&body);
    return status;
}

mc_http_t *mc_http_start(const mc_http_addr_t *addr, const mc_http_handler_t *h, char *err, size_t err_size)
{
    struct epoll_event ev;
    mc_http_t *s;
    int one = 1, i;

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    s->h = *h;
    s->epfd = -1;
    for (i = 0; i < MC_HTTP_CLIENTS; i++) {
        s->c[i].fd = -1;
    }
    s->lfd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->lfd < 0 || setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0
        || bind(s->lfd, (const struct sockaddr *)&addr->ss, addr->len) != 0 || listen(s->lfd, 64) != 0) {
        snprintf(err, err_size, "listen on %s: %s", addr->text, strerror(errno));
        goto err;
    }
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    ev.events = EPOLLIN;
    ev.data.ptr = s;
    if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev) != 0) {
        snprintf(err, err_size, "epoll: %s", strerror(errno));
        goto err;
    }
    return s;

err:
    mc_http_stop(s);
    return NULL;
}

int mc_http_fd(const mc_http_t *s)
{
    return s->epfd;
}

/* Stops or starts watching the listener (every slot taken, or one free). */
static void http_listen_pause(mc_http_t *s, int full)
{
    struct epoll_event ev;

    ev.events = full ? 0 : EPOLLIN;
    ev.data.ptr = s;
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->lfd, &ev) == 0) {
        s->full = full;
    }
}

static void http_close(mc_http_t *s, http_client_t *c)
{
    close(c->fd); /* leaves the epoll set with it */
    c->fd = -1;
    mc_buf_free(&c->out);
    if (s->full) {
        http_listen_pause(s, 0);
    }
}

/* Writes what the socket takes of the answer; closes the client when all
 * of it has left or the socket failed. */
static void http_write(mc_http_t *s, http_client_t *c)
{
    ssize_t n;

    while (c->out_off < c->out.len) {
        n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out.len && shutdown(c->fd, SHUT_WR) == 0) {
        struct epoll_event ev;

        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
            c->draining = 1;
            c->drained = 0;
            c->deadline = mc_now_ms() + HTTP_LINGER_MS;
            return;
        }
    }
    http_close(s, c);
}

/* Reads and drops what the client still sends; closes it at its EOF, on an
 * error, or past HTTP_LINGER_BYTES. */
static void http_drain(mc_http_t *s, http_client_t *c)
{
    ssize_t n;

    for (;;) {
        n = recv(c->fd, c->in, sizeof(c->in), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || (c->drained += (size_t)n) > HTTP_LINGER_BYTES) {
            http_close(s, c);
            return;
        }
    }
}

/* Reads what the client sent; once its head is whole (or bad), builds the
 * answer and starts writing it. */
static void http_read(mc_http_t *s, http_client_t *c)
{
    struct epoll_event ev;
    mc_http_req_t req;
    ssize_t n;
    int st;

    n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        http_close(s, c); /* gone before asking anything whole */
        return;
    }
    c->in_len += (size_t)n;
    st = mc_http_parse(c->in, c->in_len, &req);
    if (st == 1) {
        return;
    }
    st = mc_http_respond(&s->h, &req, st, &c->out);
    c->writing = 1;
    ev.events = EPOLLOUT;
    ev.data.ptr = c;
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        http_close(s, c);
        return;
    }
    http_write(s, c);
}

/* Takes the waiting connections into free slots.  With every slot taken
 * the listener leaves the epoll set: the next connections wait in the
 * kernel's backlog until a client is done or closed as idle. */
static void http_accept(mc_http_t *s)
{
    struct epoll_event ev;
    http_client_t *c;
    int fd, i, k;

    for (k = 0; k < HTTP_ACCEPTS_PER_RUN; k++) {
        c = NULL;
        for (i = 0; i < MC_HTTP_CLIENTS && c == NULL; i++) {
            if (s->c[i].fd < 0) {
                c = &s->c[i];
            }
        }
        if (c == NULL) {
            http_listen_pause(s, 1);
            return;
        }
        fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return; /* EAGAIN, or a connection that went away meanwhile */
        }
        c->fd = fd;
        c->writing = 0;
        c->draining = 0;
        c->in_len = 0;
        c->out_off = 0;
        mc_buf_init(&c->out);
        c->deadline = mc_now_ms() + MC_HTTP_IDLE_MS;
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            http_close(s, c);
        }
    }
}

void mc_http_run(mc_http_t *s, int timeout_ms)
{
    struct epoll_event evs[MC_HTTP_CLIENTS + 1];
    http_client_t *c;
    int64_t now;
    int n, i;

    n = epoll_wait(s->epfd, evs, MC_HTTP_CLIENTS + 1, timeout_ms);
    for (i = 0; i < n; i++) {
        if (evs[i].data.ptr == s) {
            http_accept(s);
            continue;
        }
        c = evs[i].data.ptr;
        if (c->fd < 0) {
            continue;
        }
        if (c->draining) {
            http_drain(s, c);
        } else if (c->writing) {
            http_write(s, c);
        } else {
            http_read(s, c);
        }
    }
    now = mc_now_ms();
    for (i = 0; i < MC_HTTP_CLIENTS; i++) {
        if (s->c[i].fd >= 0 && now > s->c[i].deadline) {
            http_close(s, &s->c[i]);
        }
    }
}

void mc_http_stop(mc_http_t *s)
{
    int i;

    if (s == NULL) {
        return;
    }
    for (i = 0; i < MC_HTTP_CLIENTS; i++) {
        if (s->c[i].fd >= 0) {
            http_close(s, &s->c[i]);
        }
    }
    if (s->lfd >= 0) {
        close(s->lfd);
    }
    if (s->epfd >= 0) {
        close(s->epfd);
    }
    free(s);
}
