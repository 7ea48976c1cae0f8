/*
 * Read marks: parsing the {dirty}:read hash and the SQL that writes it (see
 * readmark.h).
 *
 * Everything in the hash came from Redis, which anyone with access can
 * write, so fields and values are parsed strictly (digits only, no overflow)
 * and reach MySQL only as numeric parameters of the prepared statement
 *
 *   UPDATE room_members m JOIN (SELECT CAST(? AS UNSIGNED) AS room_id, ...
 *       UNION ALL SELECT ?, ?, ? ...) v ON m.room_id = v.room_id AND m.user_id = v.user_id
 *   SET m.last_read_seq = GREATEST(m.last_read_seq, v.seq) WHERE m.last_read_seq < v.seq
 *
 * GREATEST and the WHERE both say "forward only"; the WHERE also keeps rows
 * that would not move out of the write (and out of the binlog).  A
 * multi-table UPDATE changes each row at most once, so two marks for the
 * same member in one derived table would leave the row at whichever matched
 * first: mc_readmark_merge() folds them into the highest beforehand (the
 * padding to a power-of-4 row count, db_arg.h, repeats the last mark with
 * its own seq, which changes nothing).  The
 * CAST in the first row makes the derived table's columns BIGINT UNSIGNED
 * like the key, so the join stays an eq_ref on the primary key.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/decimal.h"
#include "minichat/readmark.h"

static int readmark_cmp(const void *a, const void *b);

int mc_readmark_parse(const char *field, size_t flen, const char *value, size_t vlen, mc_readmark_t *m)
{
    const char *colon;
    mc_readmark_t r;

    colon = memchr(field, ':', flen);
    if (colon == NULL || mc_parse_u64(field, (size_t)(colon - field), &r.room) != 0
        || mc_parse_u64(colon + 1, flen - (size_t)(colon - field) - 1, &r.user) != 0
        || mc_parse_u64(value, vlen, &r.seq) != 0 || r.room == 0 || r.user == 0)
    {
        return -1;
    }
    *m = r;
    return 0;
}

/* Orders marks by room, then user. */
static int readmark_cmp(const void *a, const void *b)
{
    const mc_readmark_t *x = a, *y = b;

    if (x->room != y->room) {
        return x->room < y->room ? -1 : 1;
    }
    if (x->user != y->user) {
        return x->user < y->user ? -1 : 1;
    }
    return 0;
}

size_t mc_readmark_merge(mc_readmark_t *marks, size_t n)
{
    size_t i, k = 0;

    if (n == 0) {
        return 0;
    }
    qsort(marks, n, sizeof(*marks), readmark_cmp);
    for (i = 1; i < n; i++) {
        if (marks[i].room == marks[k].room && marks[i].user == marks[k].user) {
            if (marks[i].seq > marks[k].seq) {
                marks[k].seq = marks[i].seq;
            }
            continue;
        }
        marks[++k] = marks[i];
    }
    return k + 1;
}

int mc_readmark_stmt(const mc_readmark_t *marks, size_t n, size_t *next, mc_buf_t *sql, mc_db_args_t *args)
{
    static const char head[] =
        "UPDATE room_members m JOIN (SELECT CAST(? AS UNSIGNED) AS room_id, CAST(? AS UNSIGNED) AS user_id,"
        " CAST(? AS UNSIGNED) AS seq";
    static const char more[] = " UNION ALL SELECT ?, ?, ?";
    static const char tail[] =
        ") v ON m.room_id = v.room_id AND m.user_id = v.user_id"
        " SET m.last_read_seq = GREATEST(m.last_read_seq, v.seq) WHERE m.last_read_seq < v.seq";
    const mc_readmark_t *r;
    size_t i, k, bucket;

    mc_buf_reset(sql);
    mc_db_args_reset(args);
    if (*next >= n) {
        return 0;
    }
    k = n - *next < MC_DB_ROWS_MAX ? n - *next : MC_DB_ROWS_MAX;
    bucket = mc_db_rows_bucket(k);
    if (mc_buf_append(sql, head, sizeof(head) - 1) != 0) {
        return -1;
    }
    for (i = 0; i < bucket; i++) {
        /* padded with the last mark again: the same member to the same seq */
        r = &marks[*next + (i < k ? i : k - 1)];
        if ((i > 0 && mc_buf_append(sql, more, sizeof(more) - 1) != 0)
            || mc_db_args_add(args, MC_DB_U64(r->room)) != 0 || mc_db_args_add(args, MC_DB_U64(r->user)) != 0
            || mc_db_args_add(args, MC_DB_U64(r->seq)) != 0)
        {
            return -1;
        }
    }
    *next += k;
    return mc_buf_append(sql, tail, sizeof(tail) - 1);
}
