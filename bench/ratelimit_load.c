/*
 * ratelimit_load: drives rate-limit decisions through nginx for
 * bench/ratelimit.sh.  Keep-alive HTTP/1.1 connections send
 * `GET /api/rooms?limit=0` requests, each as one of many users (JWTs minted
 * here from the dev secret), so every request runs lua/limit.lua once on a
 * user key and then fails the route's own check at once (400): the limit is
 * the only work that reaches Redis.  Prints responses per second (after a
 * second of warm-up), the responses of the whole run with the CPU they cost
 * the generator (`total`, `cpu_ms`) and the statuses seen.  A measurement
 * tool, not a test: nothing is asserted.
 *
 *   ratelimit_load --port P --secret-file F [--conns 64] [--depth 16]
 *                  [--seconds 5] [--users 20000] [--path /api/rooms?limit=0]
 *
 * --depth is HTTP/1.1 pipelining: that many requests in flight on each
 * connection, written together, their responses read together.  This is
 * the HTTP equivalent of redis-benchmark's -P: the load generator shares the
 * two cores with nginx and Redis, and without it the generator spends a
 * write, a read and an epoll wakeup per request.  nginx answers pipelined
 * requests one at a time per connection, in order (the next is parsed when
 * the previous one is finalized), so the module sees no more concurrency
 * than with one request per connection; what it saves is system calls on
 * both sides (one read takes several requests).  A connection is topped up
 * once half its pipeline has been answered, with one write; each user's
 * request is built once, before the run, so the generator only copies
 * bytes.
 *
 * nginx closes a keep-alive connection after keepalive_requests (1000 by
 * default): the requests pipelined behind that one are lost, and the
 * generator opens a new connection (counted as reconnects).
 *
 * --path /api/none measures the HTTP floor: a 404 answered before the token
 * is read and before any Redis work.
 *
 * --proto h2 speaks cleartext HTTP/2 with prior knowledge instead (nginx's
 * `listen ... http2;`; the framing is bench/h2c.c): --depth is then the
 * number of concurrent streams per connection, each request a HEADERS frame
 * of its own stream.  Unlike HTTP/1.1 pipelining these requests are served
 * concurrently, and nginx queues the frames of the responses that are ready
 * and writes them together, so one read and one write carry many decisions
 * on both sides, as redis-benchmark's pipeline does.  After
 * keepalive_requests streams nginx sends GOAWAY and closes the connection;
 * the streams it did not take are lost as above, and the generator
 * reconnects.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "h2c.h"
#include "minichat/jwt.h"

typedef struct {
    int fd;
    int inflight;
    uint32_t next_stream;   /* h2: the id of the next request's stream */
    int goaway;             /* h2: the server takes no new stream */
    char in[65536];
    size_t in_len;
} conn_t;

static char *reqs;          /* every user's request, back to back */
static size_t *req_off;     /* request i is reqs[req_off[i] .. req_off[i + 1]) */
static int nreqs, next_req;
static const char *path = "/api/rooms?limit=0";
static int h2;              /* --proto h2 */
static long long statuses[600], resets;

static struct sockaddr_in sa;
static int ep;
static long long reconnects;

/* (Re)opens c's connection and fills its pipeline.  Returns 0 or -1. */
static int conn_open(conn_t *c, int depth);

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU time this process has used, user and system, in ms. */
static long long cpu_ms(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000LL + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* Writes all of buf[0 .. len).  Returns 0 or -1. */
static int write_all(conn_t *c, const char *buf, size_t len)
{
    size_t off = 0;
    ssize_t w;

    while (off < len) {
        w = write(c->fd, buf + off, len - off);
        if (w < 0) {
            if (errno == EAGAIN) {
                /* small requests into an empty socket buffer: rare; spin */
                continue;
            }
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

/* Writes n pipelined requests (h2: n new streams), after `pre` bytes of
 * other frames when there are.  Returns 0 or -1. */
static int send_requests(conn_t *c, int n, const char *pre, size_t pre_len)
{
    char buf[1 << 16];
    size_t len = pre_len, rl;
    int i;

    if (pre_len) {
        memcpy(buf, pre, pre_len);
    }
    for (i = 0; i < n; i++) {
        rl = req_off[next_req + 1] - req_off[next_req];
        if (len + rl > sizeof(buf)) {
            fprintf(stderr, "pipeline too deep for the write buffer\n");
            return -1;
        }
        memcpy(buf + len, reqs + req_off[next_req], rl);
        if (h2) {
            h2c_set_stream((uint8_t *)buf + len, c->next_stream);
            c->next_stream += 2;
        }
        len += rl;
        next_req = (next_req + 1) % nreqs;
    }
    if (write_all(c, buf, len) != 0) {
        return -1;
    }
    c->inflight += n;
    return 0;
}

/* h2: consumes complete frames, answers SETTINGS and PING, and returns how
 * many responses ended (a reset stream is no response but is no longer in
 * flight either), or -1 when the connection is broken. */
static int parse_frames(conn_t *c)
{
    h2c_frame_t f;
    char out[256];
    size_t off = 0, out_len = 0;
    int done = 0, reset = 0, rc, st;

    while ((rc = h2c_frame((uint8_t *)c->in + off, c->in_len - off, sizeof(c->in) - H2C_FRAME_HEAD, &f)) == 1) {
        off += H2C_FRAME_HEAD + f.len;
        switch (f.type) {
        case H2C_HEADERS:
            st = h2c_status(&f);
            if (st >= 100 && st < 600) {
                statuses[st]++;
            }
            break;
        case H2C_RST_STREAM:
            resets++;
            reset++;
            continue;
        case H2C_SETTINGS:
            if (!(f.flags & H2C_ACK) && out_len + H2C_FRAME_HEAD <= sizeof(out)) {
                out_len += h2c_settings_ack((uint8_t *)out + out_len);
            }
            continue;
        case H2C_PING:
            if (!(f.flags & H2C_ACK) && f.len == 8 && out_len + H2C_FRAME_HEAD + 8 <= sizeof(out)) {
                memcpy(out + out_len, f.payload - H2C_FRAME_HEAD, H2C_FRAME_HEAD + 8);
                out[out_len + 4] = H2C_ACK;
                out_len += H2C_FRAME_HEAD + 8;
            }
            continue;
        case H2C_GOAWAY:
            c->goaway = 1;
            continue;
        default:
            break;
        }
        if ((f.type == H2C_HEADERS || f.type == H2C_DATA) && (f.flags & H2C_END_STREAM)) {
            done++;
        }
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    c->inflight -= done + reset;
    if (rc < 0 || (out_len && write_all(c, out, out_len) != 0)) {
        return -1;
    }
    return done;
}

/* Consumes complete responses; returns how many. */
static int parse_responses(conn_t *c)
{
    int done = 0;
    char *p, *end, *cl;
    size_t off = 0, head, body, total;
    int status;

    for (;;) {
        p = c->in + off;
        end = memmem(p, c->in_len - off, "\r\n\r\n", 4);
        if (end == NULL) {
            break;
        }
        head = (size_t)(end - p) + 4;
        *end = '\0';
        status = atoi(p + 9);
        cl = strstr(p, "Content-Length: ");
        body = cl ? (size_t)atol(cl + 16) : 0;
        *end = '\r';
        total = head + body;
        if (c->in_len - off < total) {
            break;
        }
        if (status > 0 && status < 600) {
            statuses[status]++;
        }
        off += total;
        c->inflight--;
        done++;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return done;
}

static int conn_open(conn_t *c, int depth)
{
    struct epoll_event ev;
    int one = 1;
    uint8_t pre[64];
    size_t pre_len = 0;

    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("connect");
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->in_len = 0;
    c->inflight = 0;
    c->next_stream = 1;
    c->goaway = 0;
    if (h2) {
        pre_len = h2c_preface(pre, sizeof(pre));
    }
    return send_requests(c, depth, (char *)pre, pre_len);
}

int main(int argc, char **argv)
{
    const char *secret_file = NULL;
    int port = 0, nconns = 64, depth = 16, users = 20000, i, n;
    double seconds = 5, start, warm;
    char secret[1024], tok[MC_JWT_MAX];
    size_t slen;
    FILE *f;
    conn_t *conns;
    struct epoll_event evs[256];
    long long count = 0, all = 0, cpu0;
    int measuring = 0;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0) {
            port = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--secret-file") == 0) {
            secret_file = argv[i + 1];
        } else if (strcmp(argv[i], "--conns") == 0) {
            nconns = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--depth") == 0) {
            depth = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--seconds") == 0) {
            seconds = atof(argv[i + 1]);
        } else if (strcmp(argv[i], "--path") == 0) {
            path = argv[i + 1];
        } else if (strcmp(argv[i], "--users") == 0) {
            users = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--proto") == 0) {
            if (strcmp(argv[i + 1], "h2") != 0 && strcmp(argv[i + 1], "h1") != 0) {
                fprintf(stderr, "--proto is h1 or h2\n");
                return 2;
            }
            h2 = strcmp(argv[i + 1], "h2") == 0;
        }
    }
    if (port <= 0 || secret_file == NULL || nconns <= 0 || depth <= 0 || depth > 64 || users <= 0) {
        fprintf(stderr, "usage: ratelimit_load --port P --secret-file F [--conns N] [--depth 1..64] [--seconds S] "
                        "[--users N] [--path P] [--proto h1|h2]\n");
        return 2;
    }

    f = fopen(secret_file, "r");
    if (f == NULL) {
        perror(secret_file);
        return 1;
    }
    slen = fread(secret, 1, sizeof(secret) - 1, f);
    fclose(f);
    while (slen > 0 && (secret[slen - 1] == '\n' || secret[slen - 1] == ' ')) {
        slen--;
    }

    /* users far from the test suite's ids, one token and one request each */
    reqs = malloc((size_t)users * 512);
    req_off = calloc((size_t)users + 1, sizeof(size_t));
    if (reqs == NULL || req_off == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    srand((unsigned)time(NULL));
    for (i = 0; i < users; i++) {
        if (mc_jwt_sign_hs256(3000000000ULL + (unsigned)rand() % 1000000000ULL, (int64_t)time(NULL) + 86400,
                              (const uint8_t *)secret, slen, tok,
                              sizeof(tok))
            < 0) {
            fprintf(stderr, "cannot sign a token\n");
            return 1;
        }
        if (h2) {
            char auth[MC_JWT_MAX + 16];

            snprintf(auth, sizeof(auth), "Bearer %s", tok);
            n = (int)h2c_get((uint8_t *)reqs + req_off[i], 512, path, "b", auth);
        } else {
            n = snprintf(reqs + req_off[i], 512, "GET %s HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer %s\r\n\r\n",
                         path, tok);
        }
        if (n <= 0 || n >= 512) {
            fprintf(stderr, "--path too long\n");
            return 1;
        }
        req_off[i + 1] = req_off[i] + (size_t)n;
    }
    nreqs = users;

    cpu0 = cpu_ms();   /* from here on: the CPU the decisions cost */
    ep = epoll_create1(0);
    conns = calloc((size_t)nconns, sizeof(conn_t));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    for (i = 0; i < nconns; i++) {
        if (conn_open(&conns[i], depth) != 0) {
            return 1;
        }
    }

    start = now_s();
    warm = start + 1.0;   /* one second of warm-up is not counted */

    for (;;) {
        double t = now_s();

        if (!measuring && t >= warm) {
            measuring = 1;
            count = 0;
            memset(statuses, 0, sizeof(statuses));
            resets = 0;
            start = t;
        }
        if (measuring && t - start >= seconds) {
            break;
        }
        n = epoll_wait(ep, evs, 256, 100);
        for (i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
            int got;

            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) {
                    continue;
                }
                /* keepalive_requests reached (or an error): the
                 * requests in flight are lost, a new connection goes on */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                reconnects++;
                if (conn_open(c, depth) != 0) {
                    return 1;
                }
                continue;
            }
            c->in_len += (size_t)r;
            got = h2 ? parse_frames(c) : parse_responses(c);
            if (got < 0) {
                fprintf(stderr, "a frame too large for the read buffer, or a failed write\n");
                return 1;
            }
            count += got;
            all += got;
            if (!c->goaway && c->inflight <= depth / 2 && send_requests(c, depth - c->inflight, NULL, 0) != 0) {
                perror("write");
                return 1;
            }
        }
    }

    printf("responses/s %.0f reconnects %lld total %lld cpu_ms %lld", count / (now_s() - start), reconnects, all,
           cpu_ms() - cpu0);
    if (resets) {
        printf(" resets %lld", resets);
    }
    for (i = 100; i < 600; i++) {
        if (statuses[i]) {
            printf(" %d:%lld", i, statuses[i]);
        }
    }
    printf("\n");
    return 0;
}
