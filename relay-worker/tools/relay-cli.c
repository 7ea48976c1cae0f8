/*
 * relay-cli: a test client that speaks the relay-worker's unix socket protocol
 * as an nginx worker would (hello first, then length-prefixed LocalFrames).
 *
 *   relay-cli listen SOCK [COUNT]             print deliver frames (until COUNT)
 *   relay-cli create SOCK KIND TITLE CREATOR [MEMBER...]
 *   relay-cli bench PUB_SOCK SUB_SOCK... -n N [-r RATE] [-R ROOMS] [-b BYTES]
 *       publishes N messages on PUB_SOCK (rate per second, 0 = as fast as
 *       possible) and receives them on every SUB_SOCK (another worker of the
 *       same node, or another node's relay): checks per-room order, no gaps,
 *       no duplicates, and prints latency percentiles (publish -> deliver).
 *
 * Built by hand (not part of the relay-worker binary), see relay-worker/tools/README.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "minichat.pb-c.h"
#include "minichat/frame.h"

#define MAX_SUBS 8
#define MAX_ROOMS 1024

typedef struct {
    int fd;
    uint8_t *buf;
    size_t len, cap;
} peer_conn_t;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "relay-cli: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
    ssize_t w;

    while (n) {
        w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                struct pollfd pfd = {fd, POLLOUT, 0};

                poll(&pfd, 1, 100);
                continue;
            }
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static void send_frame(int fd, const Minichat__LocalFrame *f)
{
    size_t n = minichat__local_frame__get_packed_size(f);
    uint8_t *buf = malloc(MC_FRAME_HDR + n);

    if (buf == NULL) {
        die("malloc");
    }
    mc_frame_put_header(buf, (uint32_t)n);
    minichat__local_frame__pack(f, buf + MC_FRAME_HDR);
    send_all(fd, buf, MC_FRAME_HDR + n);
    free(buf);
}

static int connect_sock(const char *path)
{
    struct sockaddr_un sa;
    Minichat__LocalFrame f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__Hello h = MINICHAT__HELLO__INIT;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        die(path);
    }
    h.node = "cli";
    h.pid = (uint32_t)getpid();
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_HELLO;
    f.hello = &h;
    send_frame(fd, &f);
    return fd;
}

/* Reads what is available and returns the next whole frame, or NULL (caller frees). */
static Minichat__LocalFrame *next_frame(peer_conn_t *c, int block)
{
    size_t plen;
    ssize_t n;
    Minichat__LocalFrame *f;

    for (;;) {
        if (mc_frame_parse(c->buf, c->len, MC_FRAME_MAX, &plen) == MC_FRAME_OK) {
            f = minichat__local_frame__unpack(NULL, plen, c->buf + MC_FRAME_HDR);
            if (f == NULL) {
                fprintf(stderr, "relay-cli: malformed frame\n");
                exit(1);
            }
            memmove(c->buf, c->buf + MC_FRAME_HDR + plen, c->len - MC_FRAME_HDR - plen);
            c->len -= MC_FRAME_HDR + plen;
            return f;
        }
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 1 << 20;
            c->buf = realloc(c->buf, c->cap);
            if (c->buf == NULL) {
                die("realloc");
            }
        }
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, block ? 0 : MSG_DONTWAIT);
        if (n == 0) {
            fprintf(stderr, "relay-cli: connection closed\n");
            exit(1);
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return NULL;
            }
            die("recv");
        }
        c->len += (size_t)n;
    }
}

static int cmd_listen(int argc, char **argv)
{
    peer_conn_t c = {connect_sock(argv[0]), NULL, 0, 0};
    long count = argc > 1 ? atol(argv[1]) : -1, got = 0;
    Minichat__LocalFrame *f;
    Minichat__ChatMessage *m;

    while (count < 0 || got < count) {
        f = next_frame(&c, 1);
        if (f == NULL) {
            continue;
        }
        if (f->body_case == MINICHAT__LOCAL_FRAME__BODY_DELIVER) {
            m = f->deliver;
            printf("deliver room=%" PRIu64 " seq=%" PRIu64 " sender=%" PRIu64 " cid=%s origin=%s recipients=%zu "
                   "body=%s\n", m->room, m->seq, m->sender, m->cid, m->origin_node, m->n_recipients, m->body);
            fflush(stdout);
            got++;
        } else {
            printf("frame case %d\n", (int)f->body_case);
        }
        minichat__local_frame__free_unpacked(f, NULL);
    }
    return 0;
}

static int cmd_create(int argc, char **argv)
{
    peer_conn_t c;
    Minichat__LocalFrame f = MINICHAT__LOCAL_FRAME__INIT, *r;
    Minichat__CreateRoomRequest q = MINICHAT__CREATE_ROOM_REQUEST__INIT;
    uint64_t members[64];
    int i;

    if (argc < 4 || argc - 4 > 64) {
        fprintf(stderr, "usage: relay-cli create SOCK KIND TITLE CREATOR [MEMBER...]\n");
        return 2;
    }
    c = (peer_conn_t){connect_sock(argv[0]), NULL, 0, 0};
    q.kind = argv[1];
    q.title = argv[2];
    q.creator = strtoull(argv[3], NULL, 10);
    for (i = 4; i < argc; i++) {
        members[i - 4] = strtoull(argv[i], NULL, 10);
    }
    q.members = members;
    q.n_members = (size_t)(argc - 4);
    f.req_id = 77;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_CREATE_ROOM;
    f.create_room = &q;
    send_frame(c.fd, &f);
    while ((r = next_frame(&c, 1)) == NULL || r->body_case != MINICHAT__LOCAL_FRAME__BODY_CREATE_ROOM_RESULT) {
    }
    printf("req_id=%" PRIu64 " id=%" PRIu64 " error=\"%s\"\n", r->req_id, r->create_room_result->id,
           r->create_room_result->error);
    minichat__local_frame__free_unpacked(r, NULL);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int cmd_bench(int argc, char **argv)
{
    peer_conn_t subs[MAX_SUBS];
    uint64_t *lat, next_seq[MAX_SUBS][MAX_ROOMS], t0, t, gap_ns, sent_seq[MAX_ROOMS];
    long n = 1000, rate = 0, rooms = 1, bytes = 16, sent = 0, got = 0, errors = 0, total, i, s;
    int nsubs = 0, pub, opt_i;
    char body[65536], cid[32];
    Minichat__LocalFrame f = MINICHAT__LOCAL_FRAME__INIT, *r;
    Minichat__ChatMessage m = MINICHAT__CHAT_MESSAGE__INIT;
    uint64_t rcpt[3] = {1, 2, 3};

    for (opt_i = 1; opt_i < argc; opt_i++) {
        if (strcmp(argv[opt_i], "-n") == 0 && opt_i + 1 < argc) {
            n = atol(argv[++opt_i]);
        } else if (strcmp(argv[opt_i], "-r") == 0 && opt_i + 1 < argc) {
            rate = atol(argv[++opt_i]);
        } else if (strcmp(argv[opt_i], "-R") == 0 && opt_i + 1 < argc) {
            rooms = atol(argv[++opt_i]);
        } else if (strcmp(argv[opt_i], "-b") == 0 && opt_i + 1 < argc) {
            bytes = atol(argv[++opt_i]);
        } else if (nsubs < MAX_SUBS) {
            subs[nsubs++] = (peer_conn_t){connect_sock(argv[opt_i]), NULL, 0, 0};
        }
    }
    if (nsubs == 0 || rooms < 1 || rooms > MAX_ROOMS || bytes < 16 || bytes >= (long)sizeof(body)) {
        fprintf(stderr, "usage: relay-cli bench PUB_SOCK SUB_SOCK... -n N [-r RATE] [-R ROOMS] [-b BYTES]\n");
        return 2;
    }
    pub = connect_sock(argv[0]);
    usleep(100000); /* let the hellos land */
    memset(next_seq, 0, sizeof(next_seq));
    memset(sent_seq, 0, sizeof(sent_seq));
    lat = calloc((size_t)n * (size_t)nsubs, sizeof(uint64_t));
    if (lat == NULL) {
        die("calloc");
    }
    memset(body, 'x', (size_t)bytes);
    body[bytes] = '\0';
    gap_ns = rate > 0 ? 1000000000ull / (uint64_t)rate : 0;
    total = n * nsubs;
    t0 = now_ns();
    while (got < total) {
        t = now_ns();
        while (sent < n && (gap_ns == 0 || t >= t0 + (uint64_t)sent * gap_ns)) {
            s = sent % rooms;
            m.room = 1000 + (uint64_t)s;
            m.seq = ++sent_seq[s];
            m.sender = 1;
            snprintf(cid, sizeof(cid), "%" PRIu64, now_ns());
            m.cid = cid;
            m.body = body;
            m.ts = (uint64_t)time(NULL) * 1000;
            m.recipients = rcpt;
            m.n_recipients = 3;
            m.origin_node = "";
            f.body_case = MINICHAT__LOCAL_FRAME__BODY_PUBLISH;
            f.publish = &m;
            send_frame(pub, &f);
            sent++;
            if (gap_ns == 0 && sent % 64 != 0) {
                continue;
            }
            break;
        }
        for (i = 0; i < nsubs; i++) {
            while ((r = next_frame(&subs[i], 0)) != NULL) {
                if (r->body_case == MINICHAT__LOCAL_FRAME__BODY_DELIVER) {
                    s = (long)(r->deliver->room - 1000);
                    if (s < 0 || s >= rooms || r->deliver->seq != next_seq[i][s] + 1) {
                        if (errors++ < 10) {
                            fprintf(stderr, "sub %ld: room %" PRIu64 " seq %" PRIu64 " after %" PRIu64 "\n", i,
                                    r->deliver->room, r->deliver->seq, s >= 0 && s < rooms ? next_seq[i][s] : 0);
                        }
                    } else {
                        next_seq[i][s]++;
                    }
                    lat[got++] = now_ns() - strtoull(r->deliver->cid, NULL, 10);
                }
                minichat__local_frame__free_unpacked(r, NULL);
            }
        }
        if ((sent == n || gap_ns) && got < total) {
            struct pollfd pfds[MAX_SUBS];
            int ms = 5000;

            for (i = 0; i < nsubs; i++) {
                pfds[i] = (struct pollfd){subs[i].fd, POLLIN, 0};
            }
            if (sent < n) {
                t = now_ns();
                ms = t0 + (uint64_t)sent * gap_ns > t ? (int)((t0 + (uint64_t)sent * gap_ns - t) / 1000000) : 0;
            }
            if (poll(pfds, (nfds_t)nsubs, ms) == 0 && sent == n) {
                fprintf(stderr, "relay-cli: timed out with %ld of %ld deliveries\n", got, total);
                break;
            }
        }
    }
    t = now_ns() - t0;
    qsort(lat, (size_t)got, sizeof(uint64_t), cmp_u64);
    printf("sent %ld, delivered %ld of %ld, order errors %ld, %.3f s, %.0f deliveries/s\n", sent, got, total, errors,
           (double)t / 1e9, (double)got / ((double)t / 1e9));
    if (got) {
        printf("latency us: p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f\n", (double)lat[got / 2] / 1e3,
               (double)lat[got * 9 / 10] / 1e3, (double)lat[got * 99 / 100] / 1e3,
               (double)lat[got * 999 / 1000] / 1e3, (double)lat[got - 1] / 1e3);
    }
    free(lat);
    return errors || got < total;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "listen") == 0) {
        return cmd_listen(argc - 2, argv + 2);
    }
    if (argc >= 3 && strcmp(argv[1], "create") == 0) {
        return cmd_create(argc - 2, argv + 2);
    }
    if (argc >= 4 && strcmp(argv[1], "bench") == 0) {
        return cmd_bench(argc - 2, argv + 2);
    }
    fprintf(stderr, "usage: relay-cli listen SOCK [COUNT] | create SOCK KIND TITLE CREATOR [MEMBER...] |\n"
                    "       bench PUB_SOCK SUB_SOCK... -n N [-r RATE] [-R ROOMS] [-b BYTES]\n");
    return 2;
}
