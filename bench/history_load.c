/*
 * history_load: times history pages through the real path for scenario 5 of
 * make bench.  One keep-alive HTTP/1.1 connection asks
 * `GET /api/rooms/ROOM/messages?before=B&limit=L` with a token of USER
 * (minted here from the dev secret), one request at a time, and records
 * each request's time from the write to the last byte of the answer
 * (CLOCK_MONOTONIC, bench/loadgen/hist.c's histogram).
 *
 * For each depth D of --befores, it pages back as a reader scrolling from
 * D would: before = D, D - L, D - 2L, ... for --pages pages (the whole run
 * is one pass over fresh rows, not the same page again and again).  Every
 * answer must be a 200 holding exactly the page's messages
 * (min(L, before - 1) of them, the first with seq before - 1): anything
 * else is counted as an error and printed once.  The connection is opened
 * again before nginx's keepalive_requests (1000) would close it, outside
 * the timed requests; --warmup requests of the first depth's first page go
 * untimed before it.
 *
 * Prints one line per depth and one for all:
 *   history_load: depth=D pages=N errors=E p50_us= p99_us= p999_us= max_us=
 * With --replica-port P it also reads the replica's (root at 127.0.0.1:P,
 * the dev stack's) Innodb_buffer_pool_reads before and after each depth,
 * outside the timed requests, and adds disk_reads=N to the lines: the pages
 * of 16 KB that InnoDB had to read from disk for them (0 when the replica's
 * pool held every page), so that a report says whether a depth was paged
 * from memory or from disk.
 * A measurement tool: it asserts nothing; errors are printed, not hidden.
 *
 *   history_load --port P --secret-file F --user U --room R --befores D1,D2,..
 *                [--pages 1000] [--limit 50] [--warmup 50] [--replica-port P]
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <mysql.h>

#include "loadgen/loadgen.h"
#include "minichat/clock.h"
#include "minichat/jwt.h"
#include "minichat/secret.h"

#define HL_MAX_DEPTHS 16
#define HL_RESP_MAX (4 * 1024 * 1024)
#define HL_REQS_PER_CONN 900

typedef struct {
    int fd;
    int port;
    unsigned reqs;
    char *buf;
    size_t len;
} hl_conn_t;

/* Opens (again) the connection.  Returns 0 or -1. */
static int hl_connect(hl_conn_t *c)
{
    struct sockaddr_in a;
    struct timeval tv = {10, 0};
    int one = 1;

    if (c->fd >= 0) {
        close(c->fd);
    }
    c->reqs = 0;
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) {
        return -1;
    }
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)c->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return connect(c->fd, (struct sockaddr *)&a, sizeof(a));
}

/* Sends req and reads one answer into c->buf.  Returns the HTTP status with
 * *body at the body, or -1 with *why set. */
static int hl_exchange(hl_conn_t *c, const char *req, size_t rlen, char **body, const char **why)
{
    size_t off = 0, head = 0, clen = 0;
    ssize_t n;
    char *p, *e;
    int status;

    while (off < rlen) {
        n = write(c->fd, req + off, rlen - off);
        if (n <= 0) {
            *why = "write failed";
            return -1;
        }
        off += (size_t)n;
    }
    c->len = 0;
    for (;;) {
        if (c->len == HL_RESP_MAX) {
            *why = "answer larger than 4 MiB";
            return -1;
        }
        n = read(c->fd, c->buf + c->len, HL_RESP_MAX - c->len);
        if (n <= 0) {
            *why = n == 0 ? "connection closed" : (errno == EAGAIN ? "no answer within 10 s" : "read failed");
            return -1;
        }
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        if (head == 0 && (e = strstr(c->buf, "\r\n\r\n")) != NULL) {
            head = (size_t)(e - c->buf) + 4;
            p = strcasestr(c->buf, "\r\ncontent-length:");
            if (p == NULL || p > e) {
                *why = "answer without Content-Length";
                return -1;
            }
            clen = strtoul(p + 17, NULL, 10);
            if (clen > HL_RESP_MAX - head) {
                *why = "answer larger than 4 MiB";
                return -1;
            }
        }
        if (head && c->len >= head + clen) {
            break;
        }
    }
    c->reqs++;
    if (sscanf(c->buf, "HTTP/1.1 %d", &status) != 1) {
        *why = "not an HTTP/1.1 answer";
        return -1;
    }
    c->buf[head + clen] = '\0';
    *body = c->buf + head;
    return status;
}

/* Returns NULL when body is the page [max(1, before - limit), before), newest
 * first, or why not. */
static const char *hl_check(const char *body, uint64_t before, uint64_t limit)
{
    uint64_t want = before - 1 < limit ? before - 1 : limit, n = 0;
    const char *p;

    p = strstr(body, "\"messages\":[");
    if (p == NULL) {
        return "no messages array";
    }
    if (want && strtoull(strstr(p, "\"seq\":") ? strstr(p, "\"seq\":") + 6 : "0", NULL, 10) != before - 1) {
        return "the page does not start at before - 1";
    }
    for (; (p = strstr(p, "\"op\":\"msg\"")) != NULL; p += 10) {
        n++;
    }
    return n == want ? NULL : "the page does not hold limit messages";
}

/* The replica's Innodb_buffer_pool_reads so far.  Returns 0 or -1. */
static int hl_disk_reads(MYSQL *my, uint64_t *reads)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    int rc = -1;

    if (mysql_query(my, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_reads'") != 0
        || (res = mysql_store_result(my)) == NULL)
    {
        return -1;
    }
    if ((row = mysql_fetch_row(res)) != NULL && row[1] != NULL) {
        *reads = strtoull(row[1], NULL, 10);
        rc = 0;
    }
    mysql_free_result(res);
    return rc;
}

/* reads: the depth's disk reads, or -1 when not asked (--replica-port). */
static void hl_print(const char *depth, uint64_t pages, uint64_t errors, const lg_hist_t *h, int64_t reads)
{
    printf("history_load: depth=%s pages=%" PRIu64 " errors=%" PRIu64 " p50_us=%" PRIu64 " p99_us=%" PRIu64
           " p999_us=%" PRIu64 " max_us=%" PRIu64,
           depth, pages, errors, lg_hist_quantile(h, 0.5), lg_hist_quantile(h, 0.99), lg_hist_quantile(h, 0.999),
           h->max);
    if (reads >= 0) {
        printf(" disk_reads=%" PRId64, reads);
    }
    printf("\n");
}

static int hl_usage(void)
{
    fprintf(stderr, "usage: history_load --port P --secret-file F --user U --room R --befores D1,D2,...\n"
                    "                    [--pages 1000] [--limit 50] [--warmup 50] [--replica-port P]\n");
    return 2;
}

int main(int argc, char **argv)
{
    unsigned long long user = 0, room = 0, pages = 1000, limit = 50, warmup = 50, d, k, errors, all_errors = 0;
    uint64_t depths[HL_MAX_DEPTHS], before;
    static lg_hist_t h, all;
    const char *secret_file = NULL, *befores = NULL, *why;
    char tok[MC_JWT_MAX], req[MC_JWT_MAX + 256], label[24], *body, *end;
    size_t nd = 0, slen, rlen;
    hl_conn_t c = {-1, 0, 0, NULL, 0};
    int64_t t0;
    char *secret, err[256];
    int i, status, replica_port = 0;
    MYSQL *my = NULL;
    uint64_t r0 = 0, r1 = 0;
    int64_t reads = -1, all_reads = 0;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0) {
            c.port = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--secret-file") == 0) {
            secret_file = argv[i + 1];
        } else if (strcmp(argv[i], "--user") == 0) {
            user = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--room") == 0) {
            room = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--befores") == 0) {
            befores = argv[i + 1];
        } else if (strcmp(argv[i], "--pages") == 0) {
            pages = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--limit") == 0) {
            limit = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--warmup") == 0) {
            warmup = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--replica-port") == 0) {
            replica_port = atoi(argv[i + 1]);
        } else {
            return hl_usage();
        }
    }
    if (i != argc || c.port <= 0 || c.port > 65535 || secret_file == NULL || befores == NULL || user == 0
        || room == 0 || pages == 0 || pages > 1000000 || limit == 0 || limit > 200 || warmup > 100000
        || replica_port < 0 || replica_port > 65535)
    {
        return hl_usage();
    }
    for (const char *p = befores; *p; p = *end == ',' ? end + 1 : end) {
        if (nd == HL_MAX_DEPTHS || *p < '0' || *p > '9') {
            fprintf(stderr, "history_load: --befores takes 1 to %d numbers >= 2, comma-separated\n", HL_MAX_DEPTHS);
            return 2;
        }
        depths[nd] = strtoull(p, &end, 10);
        if (depths[nd] < 2 || (*end != ',' && *end != '\0')) {
            fprintf(stderr, "history_load: --befores takes numbers >= 2, comma-separated\n");
            return 2;
        }
        nd++;
    }
    if ((secret = mc_secret_read(secret_file, err, sizeof(err))) == NULL) {
        fprintf(stderr, "history_load: %s\n", err);
        return 1;
    }
    slen = strlen(secret);
    if (mc_jwt_sign_hs256(user, (int64_t)time(NULL) + 86400, (const uint8_t *)secret, slen, tok, sizeof(tok)) < 0) {
        fprintf(stderr, "history_load: cannot sign a token\n");
        return 1;
    }
    c.buf = malloc(HL_RESP_MAX + 1);
    if (c.buf == NULL || nd == 0) {
        return nd == 0 ? hl_usage() : 1;
    }
    if (hl_connect(&c) != 0) {
        fprintf(stderr, "history_load: cannot connect to 127.0.0.1:%d: %s\n", c.port, strerror(errno));
        return 1;
    }
    if (replica_port > 0) {
        if ((my = mysql_init(NULL)) == NULL
            || mysql_real_connect(my, "127.0.0.1", "root", NULL, NULL, (unsigned)replica_port, NULL, 0) == NULL)
        {
            fprintf(stderr, "history_load: cannot connect to the replica at 127.0.0.1:%d: %s\n", replica_port,
                    my ? mysql_error(my) : "out of memory");
            return 1;
        }
    }

    for (d = 0; d < nd; d++) {
        memset(&h, 0, sizeof(h));
        errors = 0;
        if (my != NULL && hl_disk_reads(my, &r0) != 0) {
            fprintf(stderr, "history_load: cannot read the replica's status: %s\n", mysql_error(my));
            return 1;
        }
        for (k = 0; k < (d == 0 ? warmup : 0) + pages; k++) {
            int timed = !(d == 0 && k < warmup);
            uint64_t step = timed ? k - (d == 0 ? warmup : 0) : 0; /* warm-up: the first page, again */

            before = depths[d] > step * limit + 1 ? depths[d] - step * limit : 2;
            rlen = (size_t)snprintf(req, sizeof(req),
                                    "GET /api/rooms/%llu/messages?before=%" PRIu64 "&limit=%llu HTTP/1.1\r\n"
                                    "Host: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n",
                                    room, before, limit, tok);
            if (c.reqs >= HL_REQS_PER_CONN && hl_connect(&c) != 0) {
                fprintf(stderr, "history_load: cannot connect again: %s\n", strerror(errno));
                return 1;
            }
            why = NULL;
            t0 = mc_now_us();
            status = hl_exchange(&c, req, rlen, &body, &why);
            if (timed) {
                lg_hist_add(&h, (uint64_t)(mc_now_us() - t0));
            }
            if (status == 200) {
                why = hl_check(body, before, limit);
            } else if (status > 0) {
                why = "not a 200";
            }
            if (why != NULL) {
                if (errors == 0) {
                    fprintf(stderr, "history_load: before=%" PRIu64 ": %s (status %d)\n", before, why, status);
                }
                errors++;
                if (status < 0 && hl_connect(&c) != 0) {
                    fprintf(stderr, "history_load: cannot connect again: %s\n", strerror(errno));
                    return 1;
                }
            }
        }
        if (my != NULL) {
            if (hl_disk_reads(my, &r1) != 0) {
                fprintf(stderr, "history_load: cannot read the replica's status: %s\n", mysql_error(my));
                return 1;
            }
            reads = (int64_t)(r1 - r0);
            all_reads += reads;
        }
        snprintf(label, sizeof(label), "%" PRIu64, depths[d]);
        hl_print(label, pages, errors, &h, reads);
        lg_hist_merge(&all, &h);
        all_errors += errors;
    }
    hl_print("all", pages * nd, all_errors, &all, my != NULL ? all_reads : -1);
    if (my != NULL) {
        mysql_close(my);
    }
    close(c.fd);
    free(c.buf);
    mc_secret_free(secret);
    return 0;
}
