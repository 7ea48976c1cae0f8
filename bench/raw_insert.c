/*
 * raw_insert: the reference that scenario 5 of make bench compares the
 * roomlist-consumer with: ROWS message rows for ROOMS rooms written into
 * TABLE (a copy of `messages`, CREATE TABLE ... LIKE messages) as plain
 * `INSERT IGNORE` statements of BATCH rows each (1,000 by default),
 * autocommit, over one connection, as fast as the server takes them.
 *
 * The rows are the ones bench/kafka_fill.c produces for the consumer (room
 * base + i % ROOMS, dense seqs per room, sender 1, cid "raw-<i>", a body of
 * BODY_BYTES 'x'), and each batch goes in key order, as the consumer sorts
 * its batches.  Values travel as SQL literals in one text statement per
 * batch: no prepared statement, no transaction around it, no other table
 * touched, which is the least a writer of these rows can ask of MariaDB.
 * Prints `raw_insert: rows=N ms=T rows_per_s=R cpu_ms=C` (C: its own CPU
 * time, getrusage).  A measurement tool: it
 * asserts nothing.
 *
 *   raw_insert HOST PORT TABLE ROOM_BASE ROOMS ROWS BODY_BYTES [BATCH]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <mysql.h>

#include "minichat/buf.h"
#include "minichat/clock.h"

typedef struct {
    uint64_t room;
    uint64_t seq;
    uint64_t i;
} raw_row_t;

/* Orders rows by (room, seq), the table's primary key. */
static int raw_row_cmp(const void *a, const void *b)
{
    const raw_row_t *x = a, *y = b;

    if (x->room != y->room) {
        return x->room < y->room ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Returns 1 when s is a plain identifier (letters, digits, _), else 0. */
static int raw_ident(const char *s)
{
    if (*s == '\0' || strlen(s) > 64) {
        return 0;
    }
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_')) {
            return 0;
        }
    }
    return 1;
}

/* Parses a positive decimal number no larger than max into *v.  Returns 0 or -1. */
static int raw_num(const char *s, unsigned long long max, unsigned long long *v)
{
    char *end;

    *v = strtoull(s, &end, 10);
    return (*s < '0' || *s > '9' || *end != '\0' || *v == 0 || *v > max) ? -1 : 0;
}

int main(int argc, char **argv)
{
    unsigned long long port, base, rooms, rows, blen, batch = 1000, done, i, k, n;
    mc_buf_t sql = {0};
    struct rusage ru;
    raw_row_t *set;
    int64_t t0, t1;
    char *body;
    MYSQL *my;

    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: raw_insert HOST PORT TABLE ROOM_BASE ROOMS ROWS BODY_BYTES [BATCH]\n");
        return 2;
    }
    if (raw_num(argv[2], 65535, &port) != 0 || !raw_ident(argv[3]) || raw_num(argv[4], 1ULL << 62, &base) != 0
        || raw_num(argv[5], 1000000, &rooms) != 0 || raw_num(argv[6], 1ULL << 40, &rows) != 0
        || (strcmp(argv[7], "0") != 0 && raw_num(argv[7], 65536, &blen) != 0)
        || (argc == 9 && raw_num(argv[8], 100000, &batch) != 0))
    {
        fprintf(stderr, "raw_insert: PORT 1..65535, TABLE an identifier, ROOM_BASE, ROOMS (<= 1e6), ROWS > 0,"
                        " BODY_BYTES 0..65536, BATCH 1..100000\n");
        return 2;
    }
    if (strcmp(argv[7], "0") == 0) {
        blen = 0;
    }
    body = malloc(blen + 1);
    set = malloc(batch * sizeof(raw_row_t));
    if (body == NULL || set == NULL) {
        fprintf(stderr, "raw_insert: out of memory\n");
        return 1;
    }
    memset(body, 'x', blen);
    body[blen] = '\0';

    my = mysql_init(NULL);
    if (my == NULL
        || mysql_real_connect(my, argv[1], "root", "", "minichat", (unsigned)port, NULL, 0) == NULL)
    {
        fprintf(stderr, "raw_insert: cannot connect to %s:%llu: %s\n", argv[1], port, my ? mysql_error(my) : "");
        return 1;
    }

    t0 = mc_now_us();
    for (done = 0; done < rows; done += n) {
        n = rows - done < batch ? rows - done : batch;
        for (k = 0; k < n; k++) {
            i = done + k;
            set[k].room = base + i % rooms;
            set[k].seq = i / rooms + 1;
            set[k].i = i;
        }
        qsort(set, n, sizeof(raw_row_t), raw_row_cmp);
        mc_buf_reset(&sql);
        if (mc_buf_appendf(&sql, "INSERT IGNORE INTO %s (room_id, seq, sender_id, kind, body, client_msg_id,"
                                 " created_at) VALUES ", argv[3]) != 0)
        {
            goto oom;
        }
        for (k = 0; k < n; k++) {
            if (mc_buf_appendf(&sql, "%s(%" PRIu64 ",%" PRIu64 ",1,'text','%s','raw-%" PRIu64 "',NOW(3))",
                               k ? "," : "", set[k].room, set[k].seq, body, set[k].i) != 0)
            {
                goto oom;
            }
        }
        if (mysql_real_query(my, sql.data, sql.len) != 0) {
            fprintf(stderr, "raw_insert: insert failed after %llu rows: %s\n", done, mysql_error(my));
            return 1;
        }
    }
    t1 = mc_now_us();
    if (getrusage(RUSAGE_SELF, &ru) != 0) {
        memset(&ru, 0, sizeof(ru));
    }
    printf("raw_insert: rows=%llu ms=%" PRId64 " rows_per_s=%.0f cpu_ms=%ld\n", rows, (t1 - t0) / 1000,
           t1 > t0 ? rows * 1e6 / (double)(t1 - t0) : 0.0,
           (long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 + (long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000);
    mysql_close(my);
    mc_buf_free(&sql);
    free(set);
    free(body);
    return 0;
oom:
    fprintf(stderr, "raw_insert: out of memory\n");
    return 1;
}
