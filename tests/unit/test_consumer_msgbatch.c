/*
 * Unit tests for lib/src/msgbatch.c: the row mapping from packed ChatMessages
 * and the prepared statements the roomlist-consumer runs for a batch: their
 * texts, values and row-count buckets are checked here; integration tests
 * run them against MariaDB.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat.pb-c.h"
#include "minichat/clock.h"
#include "minichat/msgbatch.h"

static size_t pack_kind(uint8_t *buf, uint64_t room, uint64_t seq, const char *kind, const char *body);

/* Returns the number of non-overlapping occurrences of needle in hay. */
static int count(const char *hay, const char *needle)
{
    int n = 0;

    while ((hay = strstr(hay, needle)) != NULL) {
        n++;
        hay += strlen(needle);
    }
    return n;
}

START_TEST(test_add_rejects_missing_keys)
{
    mc_msgbatch_t b;

    mc_msgbatch_init(&b);
    ck_assert_int_eq(mc_msgbatch_add(&b, 0, 1, 1, 1, "c", 1, "x", 1), MC_MSGBATCH_MALFORMED);
    ck_assert_int_eq(mc_msgbatch_add(&b, 1, 0, 1, 1, "c", 1, "x", 1), MC_MSGBATCH_MALFORMED);
    ck_assert_int_eq(mc_msgbatch_add(&b, 1, 1, 1, 1, NULL, 0, NULL, 0), MC_MSGBATCH_OK);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_uint_eq(b.rows[0].cid_len, 0);
    ck_assert_str_eq(b.rows[0].body, "");
    mc_msgbatch_free(&b);
}
END_TEST

START_TEST(test_add_packed)
{
    Minichat__ChatMessage m = MINICHAT__CHAT_MESSAGE__INIT;
    uint8_t buf[256];
    size_t len;
    mc_msgbatch_t b;

    m.room = 12;
    m.seq = 101;
    m.sender = 42;
    m.cid = "client-unique";
    m.body = "hi";
    m.ts = 1732500000123ULL;
    len = minichat__chat_message__pack(&m, buf);

    mc_msgbatch_init(&b);
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_uint_eq(b.rows[0].room, 12);
    ck_assert_uint_eq(b.rows[0].seq, 101);
    ck_assert_uint_eq(b.rows[0].sender, 42);
    ck_assert_uint_eq(b.rows[0].ts, 1732500000123ULL);
    ck_assert_str_eq(b.rows[0].cid, "client-unique");
    ck_assert_str_eq(b.rows[0].body, "hi");

    /* truncated, garbage, empty (no room), and a record without a seq */
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len - 1), MC_MSGBATCH_MALFORMED);
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, "\xff\xff\xff\xff\xff\xff", 6), MC_MSGBATCH_MALFORMED);
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, "", 0), MC_MSGBATCH_MALFORMED);
    m.seq = 0;
    len = minichat__chat_message__pack(&m, buf);
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_MALFORMED);
    ck_assert_uint_eq(b.n, 1);
    mc_msgbatch_free(&b);
}
END_TEST

/* Checks that args[i] is the number v. */
static void arg_u64(const mc_db_args_t *a, size_t i, uint64_t v)
{
    ck_assert_uint_lt(i, a->n);
    ck_assert_int_eq(a->v[i].type, MC_DB_ARG_U64);
    ck_assert_uint_eq(a->v[i].u64, v);
}

/* Checks that args[i] is the text t. */
static void arg_text(const mc_db_args_t *a, size_t i, const char *t)
{
    ck_assert_uint_lt(i, a->n);
    ck_assert_int_eq(a->v[i].type, MC_DB_ARG_TEXT);
    ck_assert_uint_eq(a->v[i].len, strlen(t));
    ck_assert_int_eq(memcmp(a->v[i].s, t, strlen(t)), 0);
}

START_TEST(test_insert_stmt)
{
    mc_msgbatch_t b;
    mc_buf_t s = {0};
    mc_db_args_t a = {0};
    long long secs;
    size_t next = 0;

    mc_msgbatch_init(&b);
    ck_assert_int_eq(mc_msgbatch_add(&b, 7, 2, 42, 1732500000007ULL, "c'2", 3, "it's", 4), 0);
    ck_assert_int_eq(mc_msgbatch_add(&b, 7, 1, 42, 0, "c1", 2, "\\", 1), 0);
    mc_msgbatch_sort(&b);
    ck_assert_uint_eq(b.rows[0].seq, 1);

    /* a byte bound of one row: one statement per row */
    ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 10, &s, &a), 0);
    ck_assert_uint_eq(next, 1);
    ck_assert_str_eq(s.data, "INSERT IGNORE INTO messages (room_id, seq, sender_id, kind, body, client_msg_id, "
                             "created_at) VALUES (?,?,?,?,?,?,FROM_UNIXTIME(?))");
    ck_assert_uint_eq(a.n, 7);
    arg_u64(&a, 0, 7);
    arg_u64(&a, 1, 1);
    arg_u64(&a, 2, 42);
    arg_text(&a, 3, "text");
    arg_text(&a, 4, "\\");
    arg_text(&a, 5, "c1");
    /* time 0: now, as decimal seconds with milliseconds */
    ck_assert_int_eq(a.v[6].type, MC_DB_ARG_TEXT);
    ck_assert_uint_eq(a.v[6].len, 14);
    ck_assert_int_eq(a.v[6].s[10], '.');
    secs = strtoll(a.v[6].s, NULL, 10);
    ck_assert_int_le(secs, mc_wall_ms() / 1000);
    ck_assert_int_ge(secs, mc_wall_ms() / 1000 - 60);
    ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 10, &s, &a), 0);
    ck_assert_uint_eq(next, 2);
    arg_u64(&a, 1, 2);
    arg_text(&a, 4, "it's"); /* quotes are values, not SQL */
    arg_text(&a, 5, "c'2");
    arg_text(&a, 6, "1732500000.007"); /* the milliseconds exact, as FROM_UNIXTIME() reads them */
    ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 10, &s, &a), 0);
    ck_assert_uint_eq(s.len, 0);
    /* room enough: both rows in one statement */
    next = 0;
    ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 1 << 20, &s, &a), 0);
    ck_assert_uint_eq(next, 2);
    ck_assert_int_eq(count(s.data, "(?,?,?,?,?,?,"), 2);
    ck_assert_uint_eq(a.n, 14);
    mc_buf_free(&s);
    mc_db_args_free(&a);
    mc_msgbatch_free(&b);
}
END_TEST

/* The rows of a bulk execution: the one-row statement's values, row after
 * row, in the multi-row insert's order, as many as the bytes allow (one at
 * least) and with no row cap. */
START_TEST(test_insert_rows)
{
    mc_msgbatch_t b;
    mc_buf_t s = {0};
    mc_db_args_t a = {0}, m = {0};
    size_t next = 0, i, before;
    char body[100];

    memset(body, 'x', sizeof(body));
    mc_msgbatch_init(&b);
    ck_assert_int_eq(mc_msgbatch_add(&b, 7, 2, 42, 1732500000007ULL, "c'2", 3, "it's", 4), 0);
    ck_assert_int_eq(mc_msgbatch_add(&b, 7, 1, 43, 1732500000001ULL, "c1", 2, "\\", 1), 0);
    mc_msgbatch_sort(&b);

    ck_assert_int_eq(mc_msgbatch_insert_rows(&b, &next, 1 << 20, &a), 0);
    ck_assert_uint_eq(next, 2);
    ck_assert_uint_eq(a.n, 2 * MC_MSGBATCH_INSERT_COLS);
    arg_u64(&a, 0, 7);
    arg_u64(&a, 1, 1);
    arg_u64(&a, 2, 43);
    arg_text(&a, 3, "text");
    arg_text(&a, 4, "\\");
    arg_text(&a, 5, "c1");
    arg_text(&a, 6, "1732500000.001");
    arg_u64(&a, 7, 7);
    arg_u64(&a, 8, 2);
    arg_u64(&a, 9, 42);
    arg_text(&a, 11, "it's");
    arg_text(&a, 12, "c'2");
    arg_text(&a, 13, "1732500000.007");
    /* the same values as the multi-row statement's */
    next = 0;
    ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 1 << 20, &s, &m), 0);
    ck_assert_uint_eq(m.n, a.n);
    for (i = 0; i < a.n; i++) {
        ck_assert_int_eq(a.v[i].type, m.v[i].type);
        ck_assert_uint_eq(a.v[i].u64, m.v[i].u64);
        ck_assert_uint_eq(a.v[i].len, m.v[i].len);
    }
    /* nothing left: empty */
    ck_assert_int_eq(mc_msgbatch_insert_rows(&b, &next, 1 << 20, &a), 0);
    ck_assert_uint_eq(a.n, 0);
    /* a bound under one row still takes a row */
    next = 0;
    ck_assert_int_eq(mc_msgbatch_insert_rows(&b, &next, 10, &a), 0);
    ck_assert_uint_eq(next, 1);
    ck_assert_uint_eq(a.n, MC_MSGBATCH_INSERT_COLS);
    mc_msgbatch_free(&b);

    /* more rows than one multi-row INSERT carries, and a byte bound */
    mc_msgbatch_init(&b);
    for (i = 1; i <= 10000; i++) {
        ck_assert_int_eq(mc_msgbatch_add(&b, 1 + i % 7, i, 1, 1732500000000ULL + i, "c", 1, body, sizeof(body)), 0);
    }
    mc_msgbatch_sort(&b);
    next = 0;
    ck_assert_int_eq(mc_msgbatch_insert_rows(&b, &next, 1 << 22, &a), 0);
    ck_assert_uint_eq(next, 10000);
    ck_assert_uint_eq(a.n, 10000 * MC_MSGBATCH_INSERT_COLS);
    next = 0;
    while (next < b.n) {
        before = next;
        ck_assert_int_eq(mc_msgbatch_insert_rows(&b, &next, 100000, &a), 0);
        ck_assert_uint_gt(next, before);
        ck_assert_uint_le((next - before) * (sizeof(body) + 1 + 64), 100000 + sizeof(body) + 1 + 64);
        ck_assert_uint_eq(a.n, (next - before) * MC_MSGBATCH_INSERT_COLS);
    }
    mc_buf_free(&s);
    mc_db_args_free(&a);
    mc_db_args_free(&m);
    mc_msgbatch_free(&b);
}
END_TEST

START_TEST(test_insert_stmt_split)
{
    mc_msgbatch_t b;
    mc_buf_t s = {0};
    mc_db_args_t a = {0};
    size_t next = 0, rows = 0, stmts = 0, before, k;
    char body[100];
    uint64_t i;

    memset(body, 'x', sizeof(body));
    mc_msgbatch_init(&b);
    for (i = 1; i <= 10000; i++) {
        ck_assert_int_eq(mc_msgbatch_add(&b, 1 + i % 7, i, 1, 1732500000000ULL + i, "c", 1, body, sizeof(body)), 0);
    }
    mc_msgbatch_sort(&b);

    /* within the bytes: MC_MSGBATCH_INSERT_ROWS at most */
    while (next < b.n) {
        before = next;
        ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 1 << 22, &s, &a), 0);
        k = next - before;
        ck_assert_uint_eq(k, stmts < 2 ? MC_MSGBATCH_INSERT_ROWS : 10000 - 2 * MC_MSGBATCH_INSERT_ROWS);
        ck_assert_int_eq(count(s.data, "INSERT IGNORE"), 1);
        ck_assert_int_eq(count(s.data, "(?,?,?,?,?,?,"), (int)k);
        ck_assert_uint_eq(a.n, 7 * k);
        rows += k;
        stmts++;
    }
    ck_assert_uint_eq(rows, 10000);
    ck_assert_uint_eq(stmts, 3);

    /* a byte bound: 165 bytes a row (100 + 1 + 64), 16 KiB hold 99 */
    next = 0;
    ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 16 * 1024, &s, &a), 0);
    ck_assert_uint_eq(next, 16 * 1024 / 165);
    /* a row larger than the bound still goes, alone */
    next = 0;
    ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 10, &s, &a), 0);
    ck_assert_uint_eq(next, 1);
    mc_buf_free(&s);
    mc_db_args_free(&a);
    mc_msgbatch_free(&b);
}
END_TEST

START_TEST(test_rooms_stmt)
{
    mc_msgbatch_t b;
    mc_buf_t r = {0};
    mc_db_args_t a = {0};
    size_t next = 0;

    mc_msgbatch_init(&b);
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    ck_assert_uint_eq(r.len, 0);

    ck_assert_int_eq(mc_msgbatch_add(&b, 5, 10, 1, 1000, "a", 1, "ten", 3), 0);
    ck_assert_int_eq(mc_msgbatch_add(&b, 3, 4, 1, 2000, "b", 1, "four", 4), 0);
    ck_assert_int_eq(mc_msgbatch_add(&b, 5, 12, 1, 3000, "c", 1, "twelve", 6), 0);
    ck_assert_int_eq(mc_msgbatch_add(&b, 5, 11, 1, 4000, "d", 1, "eleven", 6), 0);
    mc_msgbatch_sort(&b);
    ck_assert_uint_eq(mc_msgbatch_rooms(&b), 2);

    /* one row per room: its highest seq, with that message's time and
     * preview; two rooms padded to four rows with the last one again */
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    ck_assert_uint_eq(next, 4);
    ck_assert_str_eq(r.data, "UPDATE rooms r JOIN (SELECT CAST(? AS UNSIGNED) AS id, CAST(? AS UNSIGNED) AS seq, "
                             "COALESCE(FROM_UNIXTIME(? / 1000), NOW(3)) AS at, ? AS preview"
                             " UNION ALL SELECT ?, ?, COALESCE(FROM_UNIXTIME(? / 1000), NOW(3)), ?"
                             " UNION ALL SELECT ?, ?, COALESCE(FROM_UNIXTIME(? / 1000), NOW(3)), ?"
                             " UNION ALL SELECT ?, ?, COALESCE(FROM_UNIXTIME(? / 1000), NOW(3)), ?"
                             ") v ON r.id = v.id SET r.last_seq = v.seq, "
                             "r.last_message_at = v.at, r.last_preview = COALESCE(LEFT(v.preview, 191), r.last_preview) "
                             "WHERE r.last_seq < v.seq");
    ck_assert_uint_eq(a.n, 16);
    arg_u64(&a, 0, 3);
    arg_u64(&a, 1, 4);
    arg_u64(&a, 2, 2000);
    arg_text(&a, 3, "four");
    arg_u64(&a, 4, 5);
    arg_u64(&a, 5, 12);
    arg_u64(&a, 6, 3000);
    arg_text(&a, 7, "twelve");
    arg_u64(&a, 12, 5);
    arg_text(&a, 15, "twelve");
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    ck_assert_uint_eq(r.len, 0);
    mc_buf_free(&r);
    mc_db_args_free(&a);
    mc_msgbatch_free(&b);
}
END_TEST

START_TEST(test_rooms_stmt_one_room)
{
    uint8_t buf[256];
    size_t len, next = 0;
    mc_msgbatch_t b;
    mc_buf_t r = MC_BUF_INIT;
    mc_db_args_t a = {0};

    mc_msgbatch_init(&b);
    ck_assert_int_eq(mc_msgbatch_add(&b, 5, 11, 1, 4000, "d", 1, "eleven", 6), 0);
    ck_assert_int_eq(mc_msgbatch_add(&b, 5, 12, 1, 3000, "c", 1, "twelve", 6), 0);
    len = pack_kind(buf, 5, 13, "system", "{}");
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    mc_msgbatch_sort(&b);

    /* one room: a single-table UPDATE by id, forward only; the room moves
     * to the system message's seq and time, the preview is the last text */
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    ck_assert_uint_eq(next, 3);
    ck_assert_str_eq(r.data, "UPDATE rooms SET last_seq = ?, last_message_at = COALESCE(FROM_UNIXTIME(? / 1000), "
                             "NOW(3)), last_preview = COALESCE(LEFT(?, 191), last_preview) "
                             "WHERE id = ? AND last_seq < ?");
    ck_assert_uint_eq(a.n, 5);
    arg_u64(&a, 0, 13);
    arg_u64(&a, 1, 1732500000000ULL);
    arg_text(&a, 2, "twelve");
    arg_u64(&a, 3, 5);
    arg_u64(&a, 4, 13);
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    ck_assert_uint_eq(r.len, 0);

    /* only system messages, and a time TIMESTAMP cannot hold: no preview, now */
    mc_msgbatch_clear(&b);
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    b.rows[0].ts = 0;
    next = 0;
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    ck_assert_int_eq(a.v[1].type, MC_DB_ARG_NULL);
    ck_assert_int_eq(a.v[2].type, MC_DB_ARG_NULL);
    arg_u64(&a, 3, 5);
    mc_db_args_free(&a);
    mc_buf_free(&r);
    mc_msgbatch_free(&b);
}
END_TEST

START_TEST(test_rooms_stmt_chunks)
{
    mc_msgbatch_t b;
    mc_buf_t r = {0};
    mc_db_args_t a = {0};
    size_t next = 0, stmts = 0;
    uint64_t i;

    mc_msgbatch_init(&b);
    for (i = 1; i <= 1500; i++) {
        ck_assert_int_eq(mc_msgbatch_add(&b, i, 1, 1, 1000, "c", 1, "x", 1), 0);
        ck_assert_int_eq(mc_msgbatch_add(&b, i, 2, 1, 2000, "c", 1, "y", 1), 0);
    }
    mc_msgbatch_sort(&b);
    while (next < b.n) {
        ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
        /* 1024 rooms, then 476 padded to 1024 */
        ck_assert_uint_eq(a.n, 4 * 1024);
        ck_assert_uint_eq(next, stmts == 0 ? 2048 : 3000);
        arg_u64(&a, 0, stmts == 0 ? 1 : 1025);
        arg_u64(&a, 1, 2);
        stmts++;
    }
    ck_assert_uint_eq(stmts, 2);
    arg_u64(&a, 4 * 1023, 1500); /* the padding repeats the last room */
    mc_buf_free(&r);
    mc_db_args_free(&a);
    mc_msgbatch_free(&b);
}
END_TEST

START_TEST(test_members_stmt)
{
    uint64_t rooms[] = {3, 18446744073709551615ULL};
    mc_buf_t m = {0};
    mc_db_args_t a = {0};
    size_t next = 0;

    ck_assert_int_eq(mc_members_stmt(rooms, 0, &next, &m, &a), 0);
    ck_assert_uint_eq(m.len, 0);
    ck_assert_int_eq(mc_members_stmt(rooms, 2, &next, &m, &a), 0);
    ck_assert_uint_eq(next, 2);
    ck_assert_str_eq(m.data, "UPDATE room_members m JOIN rooms r ON r.id = m.room_id "
                             "SET m.last_message_at = r.last_message_at "
                             "WHERE m.room_id IN (?,?,?,?) AND m.left_at IS NULL "
                             "AND r.last_message_at IS NOT NULL "
                             "AND (m.last_message_at IS NULL OR m.last_message_at < r.last_message_at)");
    arg_u64(&a, 0, 3);
    arg_u64(&a, 1, 18446744073709551615ULL);
    arg_u64(&a, 2, 18446744073709551615ULL);
    arg_u64(&a, 3, 18446744073709551615ULL);
    mc_buf_free(&m);
    mc_db_args_free(&a);
}
END_TEST

START_TEST(test_buckets)
{
    ck_assert_uint_eq(mc_db_rows_bucket(1), 1);
    ck_assert_uint_eq(mc_db_rows_bucket(2), 4);
    ck_assert_uint_eq(mc_db_rows_bucket(4), 4);
    ck_assert_uint_eq(mc_db_rows_bucket(5), 16);
    ck_assert_uint_eq(mc_db_rows_bucket(1000), 1024);
    ck_assert_uint_eq(mc_db_rows_bucket(5000), 1024);
}
END_TEST

START_TEST(test_preview_truncated_by_characters)
{
    mc_msgbatch_t b;
    mc_buf_t r = {0};
    mc_db_args_t a = {0};
    char body[600];
    size_t next = 0;
    int i;

    for (i = 0; i < 300; i++) {
        memcpy(body + 2 * i, "\xc3\xa9", 2); /* U+00E9, two bytes */
    }
    mc_msgbatch_init(&b);
    ck_assert_int_eq(mc_msgbatch_add(&b, 1, 1, 1, 1, "c", 1, body, sizeof(body)), 0);
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    ck_assert_int_eq(a.v[2].type, MC_DB_ARG_TEXT); /* one room: seq, time, preview, id, seq */
    ck_assert_uint_eq(a.v[2].len, 191 * 2);
    /* two rooms: the derived table's preview */
    ck_assert_int_eq(mc_msgbatch_add(&b, 2, 1, 1, 1, "c", 1, body, sizeof(body)), 0);
    next = 0;
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    ck_assert_int_eq(a.v[3].type, MC_DB_ARG_TEXT);
    ck_assert_uint_eq(a.v[3].len, 191 * 2);
    mc_buf_free(&r);
    mc_db_args_free(&a);
    mc_msgbatch_free(&b);
}
END_TEST

START_TEST(test_clear_and_reuse)
{
    mc_msgbatch_t b;
    int round;
    uint64_t i;

    mc_msgbatch_init(&b);
    for (round = 0; round < 3; round++) {
        for (i = 1; i <= 600; i++) {
            ck_assert_int_eq(mc_msgbatch_add(&b, 1, i, 1, 1, "c", 1, "body", 4), 0);
        }
        ck_assert_uint_eq(b.n, 600);
        mc_msgbatch_clear(&b);
        ck_assert_uint_eq(b.n, 0);
    }
    mc_msgbatch_free(&b);
    ck_assert_ptr_null(b.rows);
}
END_TEST

/* Packs a ChatMessage of the given kind into buf; returns its length. */
static size_t pack_kind(uint8_t *buf, uint64_t room, uint64_t seq, const char *kind, const char *body)
{
    Minichat__ChatMessage m = MINICHAT__CHAT_MESSAGE__INIT;

    m.room = room;
    m.seq = seq;
    m.sender = 42;
    m.cid = "c";
    m.body = (char *)body;
    m.ts = 1732500000000ULL;
    m.kind = (char *)kind;
    return minichat__chat_message__pack(&m, buf);
}

START_TEST(test_kind_parse)
{
    ck_assert_int_eq(mc_msgkind_parse(NULL), MC_MSG_TEXT);
    ck_assert_int_eq(mc_msgkind_parse(""), MC_MSG_TEXT);
    ck_assert_int_eq(mc_msgkind_parse("text"), MC_MSG_TEXT);
    ck_assert_int_eq(mc_msgkind_parse("system"), MC_MSG_SYSTEM);
    ck_assert_int_eq(mc_msgkind_parse("read"), -1);
    ck_assert_int_eq(mc_msgkind_parse("typing"), -1);
    ck_assert_int_eq(mc_msgkind_parse("presence"), -1);
    ck_assert_int_eq(mc_msgkind_parse("System"), -1);
    ck_assert_int_eq(mc_msgkind_parse("image"), -1);
}
END_TEST

START_TEST(test_kind_persisted)
{
    uint8_t buf[256];
    size_t len, next = 0;
    mc_msgbatch_t b;
    mc_buf_t s = MC_BUF_INIT;
    mc_db_args_t a = {0};

    mc_msgbatch_init(&b);
    len = pack_kind(buf, 9, 1, "", "hi");
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    len = pack_kind(buf, 9, 2, "system", "{\"event\":\"leave\",\"user\":\"43\"}");
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    len = pack_kind(buf, 9, 3, "text", "yo");
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    /* an ephemeral event that somehow carries a seq is not stored as a message */
    len = pack_kind(buf, 9, 4, "typing", "");
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_MALFORMED);
    ck_assert_uint_eq(b.n, 3);
    ck_assert_int_eq(b.rows[0].kind, MC_MSG_TEXT);
    ck_assert_int_eq(b.rows[1].kind, MC_MSG_SYSTEM);
    ck_assert_int_eq(b.rows[2].kind, MC_MSG_TEXT);

    ck_assert_int_eq(mc_msgbatch_insert_stmt(&b, &next, 1 << 20, &s, &a), 0);
    ck_assert_uint_eq(a.n, 21);
    arg_u64(&a, 1, 1);
    arg_text(&a, 3, "text");
    arg_u64(&a, 8, 2);
    arg_text(&a, 10, "system");
    arg_u64(&a, 15, 3);
    arg_text(&a, 17, "text");

    /* a plain add is text */
    ck_assert_int_eq(mc_msgbatch_add(&b, 1, 1, 1, 1, "c", 1, "x", 1), MC_MSGBATCH_OK);
    ck_assert_int_eq(b.rows[3].kind, MC_MSG_TEXT);
    mc_db_args_free(&a);
    mc_buf_free(&s);
    mc_msgbatch_free(&b);
}
END_TEST

START_TEST(test_system_keeps_preview)
{
    uint8_t buf[256];
    size_t len, next = 0;
    mc_msgbatch_t b;
    mc_buf_t r = MC_BUF_INIT;
    mc_db_args_t a = {0};

    mc_msgbatch_init(&b);
    /* room 4: text then a later system message: the room moves to seq 6,
     * the preview is the text's; room 5: only a system message: no preview */
    len = pack_kind(buf, 4, 5, "", "four");
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    len = pack_kind(buf, 4, 6, "system", "{}");
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    len = pack_kind(buf, 5, 1, "system", "{}");
    ck_assert_int_eq(mc_msgbatch_add_packed(&b, buf, len), MC_MSGBATCH_OK);
    mc_msgbatch_sort(&b);
    ck_assert_int_eq(mc_msgbatch_rooms_stmt(&b, &next, &r, &a), 0);
    arg_u64(&a, 0, 4);
    arg_u64(&a, 1, 6);
    arg_u64(&a, 2, 1732500000000ULL);
    arg_text(&a, 3, "four");
    arg_u64(&a, 4, 5);
    arg_u64(&a, 5, 1);
    ck_assert_int_eq(a.v[7].type, MC_DB_ARG_NULL);
    mc_db_args_free(&a);
    mc_buf_free(&r);
    mc_msgbatch_free(&b);
}
END_TEST

static Suite *msgbatch_suite(void)
{
    Suite *s = suite_create("msgbatch");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_add_rejects_missing_keys);
    tcase_add_test(tc, test_add_packed);
    tcase_add_test(tc, test_insert_stmt);
    tcase_add_test(tc, test_insert_stmt_split);
    tcase_add_test(tc, test_insert_rows);
    tcase_add_test(tc, test_rooms_stmt);
    tcase_add_test(tc, test_rooms_stmt_one_room);
    tcase_add_test(tc, test_rooms_stmt_chunks);
    tcase_add_test(tc, test_members_stmt);
    tcase_add_test(tc, test_buckets);
    tcase_add_test(tc, test_preview_truncated_by_characters);
    tcase_add_test(tc, test_clear_and_reuse);
    tcase_add_test(tc, test_kind_parse);
    tcase_add_test(tc, test_kind_persisted);
    tcase_add_test(tc, test_system_keeps_preview);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(msgbatch_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
