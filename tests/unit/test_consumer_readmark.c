/*
 * Unit tests for lib/src/readmark.c: parsing the {dirty}:read hash's
 * "room:user" fields and seq values, merging duplicates, and the
 * forward-only room_members UPDATE the roomlist-consumer's flusher sends.
 * tests/integration/test_read_flush.py runs the statements against MariaDB.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/readmark.h"

#define S(lit) (lit), (sizeof(lit) - 1)

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

START_TEST(test_parse_mark)
{
    mc_readmark_t m;

    ck_assert_int_eq(mc_readmark_parse(S("12:42"), S("101"), &m), 0);
    ck_assert_uint_eq(m.room, 12);
    ck_assert_uint_eq(m.user, 42);
    ck_assert_uint_eq(m.seq, 101);
    ck_assert_int_eq(mc_readmark_parse(S("18446744073709551615:18446744073709551615"), S("0"), &m), 0);
    ck_assert_uint_eq(m.room, UINT64_MAX);
    ck_assert_uint_eq(m.user, UINT64_MAX);
    ck_assert_uint_eq(m.seq, 0);

    m.room = 1;
    ck_assert_int_eq(mc_readmark_parse(S("12"), S("1"), &m), -1);         /* no colon */
    ck_assert_int_eq(mc_readmark_parse(S("12:"), S("1"), &m), -1);
    ck_assert_int_eq(mc_readmark_parse(S(":42"), S("1"), &m), -1);
    ck_assert_int_eq(mc_readmark_parse(S("12:42:1"), S("1"), &m), -1);    /* a second colon */
    ck_assert_int_eq(mc_readmark_parse(S("0:42"), S("1"), &m), -1);       /* room 0 */
    ck_assert_int_eq(mc_readmark_parse(S("12:0"), S("1"), &m), -1);       /* user 0 */
    ck_assert_int_eq(mc_readmark_parse(S("12:42"), S(""), &m), -1);
    ck_assert_int_eq(mc_readmark_parse(S("12:42"), S("-5"), &m), -1);
    ck_assert_int_eq(mc_readmark_parse(S("12:42"), S("5;DROP TABLE x"), &m), -1);
    ck_assert_int_eq(mc_readmark_parse(S("r12:42"), S("5"), &m), -1);
    ck_assert_int_eq(mc_readmark_parse(S("{r:12}:42"), S("5"), &m), -1);
    ck_assert_int_eq(mc_readmark_parse(S("12:42"), S("18446744073709551616"), &m), -1);
    ck_assert_int_eq(mc_readmark_parse(S(""), S(""), &m), -1);
    ck_assert_uint_eq(m.room, 1); /* untouched on failure */
}
END_TEST

START_TEST(test_merge)
{
    mc_readmark_t m[] = {{5, 2, 10}, {3, 9, 1}, {5, 2, 12}, {5, 1, 7}, {5, 2, 11}, {3, 9, 0}};
    size_t n;

    n = mc_readmark_merge(m, 6);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(m[0].room, 3);
    ck_assert_uint_eq(m[0].user, 9);
    ck_assert_uint_eq(m[0].seq, 1);
    ck_assert_uint_eq(m[1].room, 5);
    ck_assert_uint_eq(m[1].user, 1);
    ck_assert_uint_eq(m[1].seq, 7);
    ck_assert_uint_eq(m[2].room, 5);
    ck_assert_uint_eq(m[2].user, 2);
    ck_assert_uint_eq(m[2].seq, 12);
    ck_assert_uint_eq(mc_readmark_merge(m, 0), 0);
    ck_assert_uint_eq(mc_readmark_merge(m, 1), 1);
}
END_TEST

START_TEST(test_sql)
{
    mc_readmark_t m[] = {{3, 9, 1}, {5, 1, 7}, {18446744073709551615ULL, 2, 12}};
    mc_buf_t s = MC_BUF_INIT;
    mc_db_args_t a = {0};
    size_t next = 0;
    static const uint64_t want[] = {3, 9, 1, 5, 1, 7, 18446744073709551615ULL, 2, 12,
                                    18446744073709551615ULL, 2, 12};
    size_t i;

    ck_assert_int_eq(mc_readmark_stmt(m, 3, &next, &s, &a), 0);
    ck_assert_uint_eq(next, 3);
    /* three marks padded to four rows with the last one again */
    ck_assert_str_eq(s.data, "UPDATE room_members m JOIN (SELECT CAST(? AS UNSIGNED) AS room_id, "
                             "CAST(? AS UNSIGNED) AS user_id, CAST(? AS UNSIGNED) AS seq "
                             "UNION ALL SELECT ?, ?, ? UNION ALL SELECT ?, ?, ? UNION ALL SELECT ?, ?, ?) v "
                             "ON m.room_id = v.room_id AND m.user_id = v.user_id "
                             "SET m.last_read_seq = GREATEST(m.last_read_seq, v.seq) "
                             "WHERE m.last_read_seq < v.seq");
    ck_assert_uint_eq(a.n, 12);
    for (i = 0; i < 12; i++) {
        ck_assert_int_eq(a.v[i].type, MC_DB_ARG_U64);
        ck_assert_uint_eq(a.v[i].u64, want[i]);
    }
    /* nothing left: an empty statement */
    ck_assert_int_eq(mc_readmark_stmt(m, 3, &next, &s, &a), 0);
    ck_assert_uint_eq(s.len, 0);
    mc_buf_free(&s);
    mc_db_args_free(&a);
}
END_TEST

START_TEST(test_sql_chunks)
{
    mc_readmark_t *m;
    mc_buf_t s = MC_BUF_INIT;
    mc_db_args_t a = {0};
    size_t next = 0, stmts = 0, i;

    m = malloc(2500 * sizeof(*m));
    ck_assert_ptr_nonnull(m);
    for (i = 0; i < 2500; i++) {
        m[i].room = 1 + i / 10;
        m[i].user = 1 + i % 10;
        m[i].seq = i;
    }
    /* 1024, 1024, then 452 padded to 1024 */
    while (next < 2500) {
        ck_assert_int_eq(mc_readmark_stmt(m, 2500, &next, &s, &a), 0);
        ck_assert_int_eq(count(s.data, "UPDATE room_members"), 1);
        ck_assert_int_eq(count(s.data, "SELECT"), 1024);
        ck_assert_uint_eq(a.n, 3 * 1024);
        stmts++;
        ck_assert_uint_eq(next, stmts < 3 ? 1024 * stmts : 2500);
    }
    ck_assert_uint_eq(stmts, 3);
    ck_assert_uint_eq(a.v[3 * 1023 + 2].u64, 2499);
    free(m);
    mc_buf_free(&s);
    mc_db_args_free(&a);
}
END_TEST

static Suite *readmark_suite(void)
{
    Suite *s = suite_create("readmark");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_parse_mark);
    tcase_add_test(tc, test_merge);
    tcase_add_test(tc, test_sql);
    tcase_add_test(tc, test_sql_chunks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(readmark_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
