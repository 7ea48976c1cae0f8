/*
 * Unit tests for lib/src/sqltime.c: TIMESTAMP text in UTC as milliseconds,
 * as history pages read created_at.  The expected values are Python's
 * datetime(..., tzinfo=timezone.utc).timestamp() * 1000.
 */
#include <check.h>
#include <stdlib.h>

#include "minichat/sqltime.h"

#define S(lit) (lit), (sizeof(lit) - 1)

/* Returns the milliseconds of lit, failing the test when it is refused. */
#define MS(lit)                                                                                                    \
    ({                                                                                                             \
        uint64_t v_ = 7;                                                                                           \
        ck_assert_msg(mc_sqltime_ms(S(lit), &v_) == 0, "refused: %s", lit);                                      \
        v_;                                                                                                        \
    })

START_TEST(test_known_times)
{
    ck_assert_uint_eq(MS("1970-01-01 00:00:00"), 0);
    ck_assert_uint_eq(MS("1970-01-01 00:00:00.000"), 0);
    ck_assert_uint_eq(MS("1970-01-01 00:00:01.001"), 1001);
    ck_assert_uint_eq(MS("2024-11-25 02:00:00.007"), 1732500000007ULL);
    ck_assert_uint_eq(MS("2026-12-04 10:00:00.946"), 1796378400946ULL);
    ck_assert_uint_eq(MS("2038-01-19 03:14:07.999"), 2147483647999ULL);
    ck_assert_uint_eq(MS("2106-02-07 06:28:15"), 4294967295000ULL);
    ck_assert_uint_eq(MS("9999-12-31 23:59:59.999"), 253402300799999ULL);
}
END_TEST

START_TEST(test_calendar)
{
    /* leap days: every 4th year, not every 100th, every 400th */
    ck_assert_uint_eq(MS("2000-02-29 23:59:59.999"), 951868799999ULL);
    ck_assert_uint_eq(MS("2000-03-01 00:00:00"), 951868800000ULL);
    ck_assert_uint_eq(MS("2024-02-29 00:00:00"), 1709164800000ULL);
    ck_assert_uint_eq(MS("2024-12-31 00:00:00"), 1735603200000ULL);
    ck_assert_uint_eq(MS("2025-01-01 00:00:00"), 1735689600000ULL);
    ck_assert_uint_eq(MS("1972-12-31 23:59:59"), 94694399000ULL);

    uint64_t v = 7;
    ck_assert_int_eq(mc_sqltime_ms(S("2100-02-29 00:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2023-02-29 00:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-04-31 00:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-13-01 00:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-00-10 00:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-01-00 00:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-01-01 24:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-01-01 23:60:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-01-01 23:59:60"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("1969-12-31 23:59:59.999"), &v), -1); /* before the epoch */
    ck_assert_uint_eq(v, 7); /* untouched on failure */
}
END_TEST

START_TEST(test_fractions)
{
    ck_assert_uint_eq(MS("2024-11-25 02:00:00.5"), 1732500000500ULL);
    ck_assert_uint_eq(MS("2024-11-25 02:00:00.05"), 1732500000050ULL);
    ck_assert_uint_eq(MS("2024-11-25 02:00:00.007"), 1732500000007ULL);
    /* past three digits: rounded half up on the fourth, as ROUND() did */
    ck_assert_uint_eq(MS("2024-11-25 02:00:00.0074"), 1732500000007ULL);
    ck_assert_uint_eq(MS("2024-11-25 02:00:00.0075"), 1732500000008ULL);
    ck_assert_uint_eq(MS("2024-11-25 02:00:00.007999"), 1732500000008ULL);
    ck_assert_uint_eq(MS("2024-11-25 02:00:59.9995"), 1732500060000ULL); /* carries into the next minute */

    uint64_t v = 7;
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25 02:00:00."), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25 02:00:00.1234567"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25 02:00:00.12a"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25 02:00:00,123"), &v), -1);
    ck_assert_uint_eq(v, 7);
}
END_TEST

START_TEST(test_zero_date_and_shapes)
{
    ck_assert_uint_eq(MS("0000-00-00 00:00:00"), 0);
    ck_assert_uint_eq(MS("0000-00-00 00:00:00.000"), 0);

    uint64_t v = 7;
    ck_assert_int_eq(mc_sqltime_ms(S(""), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25T02:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024/11/25 02:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25 02-00-00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-1-25 02:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S(" 024-11-25 02:00:00"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25 02:00:0x"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("2024-11-25 02:00:00 "), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("1732500000.007"), &v), -1);
    ck_assert_int_eq(mc_sqltime_ms("2024-11-25 02:00:00\0" "000", 23, &v), -1);
    ck_assert_int_eq(mc_sqltime_ms(S("0000-00-01 00:00:00"), &v), -1);
    ck_assert_uint_eq(v, 7);
}
END_TEST

static Suite *sqltime_suite(void)
{
    Suite *s = suite_create("sqltime");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_known_times);
    tcase_add_test(tc, test_calendar);
    tcase_add_test(tc, test_fractions);
    tcase_add_test(tc, test_zero_date_and_shapes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sqltime_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
