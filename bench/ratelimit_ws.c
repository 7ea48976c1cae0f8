/*
 * ratelimit_ws: drives rate-limit decisions through nginx over WebSocket,
 * for bench/ratelimit.sh.  Each connection is a user of its own (a JWT
 * minted here from the dev secret) and keeps `depth` `send` requests in
 * flight.  bench/ratelimit.sh runs it against a bench nginx whose
 * minichat_limit_messages admits one message a minute and makes no strikes,
 * so every send after a user's first is refused by lua/limit.lua alone:
 * one frame in, one Redis script, one `rate_limited` frame out.  Prints
 * answers per second (after a second of warm-up) and the answers of the
 * whole run with the CPU they cost the generator (`total`, `cpu_ms`).  A
 * measurement tool: nothing is asserted.
 *
 *   ratelimit_ws --port P --secret-file F [--conns 64] [--depth 32] [--seconds 5]
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

#include "minichat/jwt.h"

#define REQ "{\"op\":\"send\",\"room\":1,\"cid\":\"bench\",\"body\":\"x\"}"

typedef struct {
    int fd;
    int upgraded;
    char in[1 << 16];
    size_t in_len;
} conn_t;

static unsigned char frame[256];
static size_t frame_len;

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

/* One masked text frame with REQ (mask 0: the payload stays readable). */
static void build_frame(void)
{
    size_t n = sizeof(REQ) - 1;

    frame[0] = 0x81;
    frame[1] = 0x80 | (unsigned char)n;
    memset(frame + 2, 0, 4);
    memcpy(frame + 6, REQ, n);
    frame_len = 6 + n;
}

static int send_frames(conn_t *c, int n)
{
    unsigned char buf[1 << 14];
    size_t len = 0, off = 0;
    ssize_t w;
    int i;

    for (i = 0; i < n; i++) {
        memcpy(buf + len, frame, frame_len);
        len += frame_len;
    }
    while (off < len) {
        w = write(c->fd, buf + off, len - off);
        if (w < 0) {
            if (errno == EAGAIN) {
                continue;
            }
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

/* Consumes complete frames; returns the answers (error or ack) among them. */
static int parse_frames(conn_t *c)
{
    size_t off = 0, hl, pl;
    unsigned char *p;
    int answers = 0;

    if (!c->upgraded) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);

        if (end == NULL) {
            return 0;
        }
        if (strncmp(c->in, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "upgrade refused: %.40s\n", c->in);
            exit(1);
        }
        off = (size_t)(end - c->in) + 4;
        c->upgraded = 1;
    }
    for (;;) {
        p = (unsigned char *)c->in + off;
        if (c->in_len - off < 2) {
            break;
        }
        pl = p[1] & 0x7f;
        hl = 2;
        if (pl == 126) {
            if (c->in_len - off < 4) {
                break;
            }
            pl = ((size_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (pl == 127) {
            fprintf(stderr, "unexpectedly large frame\n");
            exit(1);
        }
        if (c->in_len - off < hl + pl) {
            break;
        }
        if ((p[0] & 0x0f) == 1 && pl > 12
            && (memcmp(p + hl, "{\"op\":\"error\"", 13) == 0 || memcmp(p + hl, "{\"op\":\"ack\"", 11) == 0)) {
            answers++;
        }
        off += hl + pl;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return answers;
}

int main(int argc, char **argv)
{
    const char *secret_file = NULL;
    int port = 0, nconns = 64, depth = 32, i, n, ep, one = 1, measuring = 0;
    double seconds = 5, start, warm;
    char secret[1024], tok[MC_JWT_MAX], req[2048];
    size_t slen;
    FILE *f;
    conn_t *conns;
    struct sockaddr_in sa;
    struct epoll_event ev, evs[256];
    long long count = 0, all = 0, cpu0;

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
        }
    }
    if (port <= 0 || secret_file == NULL || nconns <= 0 || depth <= 0 || depth > 48) {
        fprintf(stderr, "usage: ratelimit_ws --port P --secret-file F [--conns N] [--depth 1..48] [--seconds S]\n");
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

    build_frame();
    srand((unsigned)time(NULL));
    cpu0 = cpu_ms();   /* from here on: the CPU the decisions cost */
    ep = epoll_create1(0);
    conns = calloc((size_t)nconns, sizeof(conn_t));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    for (i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];

        if (mc_jwt_sign_hs256(3000000000ULL + (unsigned)rand() % 1000000000ULL, (int64_t)time(NULL) + 86400,
                              (const uint8_t *)secret, slen, tok,
                              sizeof(tok))
            < 0) {
            fprintf(stderr, "cannot sign a token\n");
            return 1;
        }
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            perror("connect");
            return 1;
        }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        n = snprintf(req, sizeof(req),
                     "GET /ws?token=%s HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     tok);
        if (write(c->fd, req, (size_t)n) != n) {
            perror("write");
            return 1;
        }
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        /* frames may follow the upgrade request at once */
        if (send_frames(c, depth) != 0) {
            perror("write");
            return 1;
        }
    }

    start = now_s();
    warm = start + 1.0;

    for (;;) {
        double t = now_s();

        if (!measuring && t >= warm) {
            measuring = 1;
            count = 0;
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
                fprintf(stderr, "connection closed by the server\n");
                return 1;
            }
            c->in_len += (size_t)r;
            got = parse_frames(c);
            count += got;
            all += got;
            if (got && send_frames(c, got) != 0) {
                perror("write");
                return 1;
            }
        }
    }

    printf("answers/s %.0f total %lld cpu_ms %lld\n", count / (now_s() - start), all, cpu_ms() - cpu0);
    return 0;
}
