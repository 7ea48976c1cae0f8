/*
 * ratelimit_load: drives rate-limit decisions through nginx for
 * bench/ratelimit.sh.  Keep-alive HTTP/1.1 connections pipeline
 * `GET /api/rooms?limit=0` requests, each as one of many users (JWTs minted
 * here from the dev secret), so every request runs lua/limit.lua once on a
 * user key and then fails the route's own check at once (400): the limit is
 * the only work that reaches Redis.  Prints responses per second and the
 * statuses seen.  A measurement tool, not a test: nothing is asserted.
 *
 *   ratelimit_load --port P --secret-file F [--conns 64] [--depth 16]
 *                  [--seconds 5] [--users 20000] [--path /api/rooms?limit=0]
 *
 * --path /api/none measures the HTTP floor: a 404 answered before the token
 * is read and before any Redis work.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "minichat/jwt.h"

typedef struct {
    int fd;
    int inflight;
    char in[65536];
    size_t in_len;
} conn_t;

static char **tokens;
static int ntokens, next_token;
static const char *path = "/api/rooms?limit=0";
static long long statuses[600];

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

/* Writes n pipelined requests.  Returns 0 or -1. */
static int send_requests(conn_t *c, int n)
{
    char buf[65536];
    size_t len = 0;
    ssize_t w;
    int i;

    for (i = 0; i < n; i++) {
        len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                                "GET %s HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer %s\r\n\r\n", path,
                                tokens[next_token]);
        next_token = (next_token + 1) % ntokens;
    }
    while (len > 0) {
        w = write(c->fd, buf, len);
        if (w < 0) {
            if (errno == EAGAIN) {
                /* small requests into an empty socket buffer: rare; spin */
                continue;
            }
            return -1;
        }
        memmove(buf, buf + w, len - (size_t)w);
        len -= (size_t)w;
    }
    c->inflight += n;
    return 0;
}

/* Consumes complete responses; returns how many. */
static int parse_responses(conn_t *c)
{
    int done = 0;
    char *end, *cl;
    size_t head, body, total;
    int status;

    for (;;) {
        end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (end == NULL) {
            break;
        }
        head = (size_t)(end - c->in) + 4;
        *end = '\0';
        status = atoi(c->in + 9);
        cl = strstr(c->in, "Content-Length: ");
        body = cl ? (size_t)atol(cl + 16) : 0;
        *end = '\r';
        total = head + body;
        if (c->in_len < total) {
            break;
        }
        if (status > 0 && status < 600) {
            statuses[status]++;
        }
        memmove(c->in, c->in + total, c->in_len - total);
        c->in_len -= total;
        c->inflight--;
        done++;
    }
    return done;
}

static int conn_open(conn_t *c, int depth)
{
    struct epoll_event ev;
    int one = 1;

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
    return send_requests(c, depth);
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
    long long count = 0;
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
        }
    }
    if (port <= 0 || secret_file == NULL || nconns <= 0 || depth <= 0 || users <= 0) {
        fprintf(stderr, "usage: ratelimit_load --port P --secret-file F [--conns N] [--depth N] [--seconds S] "
                        "[--users N]\n");
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

    /* users far from the test suite's ids, one token each */
    tokens = calloc((size_t)users, sizeof(char *));
    srand((unsigned)time(NULL));
    for (i = 0; i < users; i++) {
        if (mc_jwt_sign_hs256(3000000000ULL + (unsigned)rand() % 1000000000ULL, 0, (const uint8_t *)secret, slen, tok,
                              sizeof(tok))
            < 0) {
            fprintf(stderr, "cannot sign a token\n");
            return 1;
        }
        tokens[i] = strdup(tok);
    }
    ntokens = users;

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
            got = parse_responses(c);
            count += got;
            if (got && send_requests(c, got) != 0) {
                perror("write");
                return 1;
            }
        }
    }

    printf("responses/s %.0f reconnects %lld", count / (now_s() - start), reconnects);
    for (i = 100; i < 600; i++) {
        if (statuses[i]) {
            printf(" %d:%lld", i, statuses[i]);
        }
    }
    printf("\n");
    return 0;
}
