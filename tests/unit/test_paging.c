/*
 * Unit tests for the pagination helpers (lib/src/paging.c): the room-list
 * cursor round trip and its strict decoding, and the history page check at
 * its boundaries (first page, last page, empty room, before past the start).
 */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "minichat/paging.h"

START_TEST(test_cursor_round_trip)
{
    static const uint64_t at[] = {0, 1, 1732500000123ull, UINT64_MAX};
    static const uint64_t room[] = {1, 42, 0x0123456789abcdefull, UINT64_MAX};
    char buf[MC_CURSOR_LEN + 1];
    uint64_t a, r;
    size_t i, j;

    for (i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        for (j = 0; j < sizeof(room) / sizeof(room[0]); j++) {
            mc_cursor_encode(at[i], room[j], buf);
            ck_assert_uint_eq(strlen(buf), MC_CURSOR_LEN);
            ck_assert_int_eq(mc_cursor_decode(buf, &a, &r), 0);
            ck_assert_uint_eq(a, at[i]);
            ck_assert_uint_eq(r, room[j]);
        }
    }
    mc_cursor_encode(0x10, 0x20, buf);
    ck_assert_str_eq(buf, "00000000000000100000000000000020");
}
END_TEST

START_TEST(test_cursor_rejects)
{
    char buf[MC_CURSOR_LEN + 2];
    uint64_t a, r;

    ck_assert_int_eq(mc_cursor_decode(NULL, &a, &r), -1);
    ck_assert_int_eq(mc_cursor_decode("", &a, &r), -1);
    ck_assert_int_eq(mc_cursor_decode("1234", &a, &r), -1);
    mc_cursor_encode(5, 6, buf);
    buf[3] = 'A'; /* upper case is not ours */
    ck_assert_int_eq(mc_cursor_decode(buf, &a, &r), -1);
    mc_cursor_encode(5, 6, buf);
    buf[20] = '\'';
    ck_assert_int_eq(mc_cursor_decode(buf, &a, &r), -1);
    mc_cursor_encode(5, 6, buf);
    strcat(buf, "0"); /* one too long */
    ck_assert_int_eq(mc_cursor_decode(buf, &a, &r), -1);
    mc_cursor_encode(5, 0, buf); /* room 0 never ends a page */
    ck_assert_int_eq(mc_cursor_decode(buf, &a, &r), -1);
}
END_TEST

START_TEST(test_history_want)
{
    ck_assert_uint_eq(mc_history_want(0, 50), 0);
    ck_assert_uint_eq(mc_history_want(1, 50), 0);   /* before past the start */
    ck_assert_uint_eq(mc_history_want(2, 50), 1);
    ck_assert_uint_eq(mc_history_want(51, 50), 50);
    ck_assert_uint_eq(mc_history_want(1000, 50), 50);
    ck_assert_uint_eq(mc_history_want(UINT64_MAX, 200), 200);
    ck_assert_uint_eq(mc_history_want(10, 0), 0);
}
END_TEST

START_TEST(test_history_complete)
{
    uint64_t s[5] = {10, 9, 8, 7, 6};
    uint64_t last[3] = {3, 2, 1};
    uint64_t hole[5] = {10, 9, 7, 6, 5};

    ck_assert_int_eq(mc_history_complete(11, 5, s, 5), 1);
    ck_assert_int_eq(mc_history_complete(11, 5, s, 4), 0);      /* short */
    ck_assert_int_eq(mc_history_complete(12, 5, s, 5), 0);      /* newest missing */
    ck_assert_int_eq(mc_history_complete(11, 5, hole, 5), 0);
    ck_assert_int_eq(mc_history_complete(4, 5, last, 3), 1);    /* the last page stops at 1 */
    ck_assert_int_eq(mc_history_complete(4, 5, last, 2), 0);
    ck_assert_int_eq(mc_history_complete(4, 3, last, 3), 1);
    ck_assert_int_eq(mc_history_complete(1, 5, NULL, 0), 1);    /* nothing below 1 */
    ck_assert_int_eq(mc_history_complete(0, 5, NULL, 0), 1);
    ck_assert_int_eq(mc_history_complete(5, 5, NULL, 0), 0);    /* an empty page where 4 seqs exist */
}
END_TEST

static Suite *paging_suite(void)
{
    Suite *s = suite_create("paging");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_cursor_round_trip);
    tcase_add_test(tc, test_cursor_rejects);
    tcase_add_test(tc, test_history_want);
    tcase_add_test(tc, test_history_complete);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(paging_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
