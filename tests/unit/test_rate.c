/*
 * Unit tests for lib/src/rate.c: the rate values of the minichat_limit_*
 * directives and GCRA's decisions (the algorithm lua/limit.lua runs).
 */
#include <check.h>
#include <stdlib.h>

#include "minichat/rate.h"

#define S(lit) (lit), (sizeof(lit) - 1)

START_TEST(test_rate_parse)
{
    uint64_t v = 7;

    ck_assert_int_eq(mc_rate_parse(S("10r/s"), &v), 0);
    ck_assert_uint_eq(v, 100000);
    ck_assert_int_eq(mc_rate_parse(S("1r/s"), &v), 0);
    ck_assert_uint_eq(v, 1000000);
    ck_assert_int_eq(mc_rate_parse(S("30r/m"), &v), 0);
    ck_assert_uint_eq(v, 2000000);
    ck_assert_int_eq(mc_rate_parse(S("1000000r/s"), &v), 0);
    ck_assert_uint_eq(v, 1);
    ck_assert_int_eq(mc_rate_parse(S("3r/s"), &v), 0);
    ck_assert_uint_eq(v, 333333);

    v = 7;
    ck_assert_int_eq(mc_rate_parse(S("0r/s"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S("1000001r/s"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S("10r/h"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S("10/s"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S("r/s"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S("-1r/s"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S("1.5r/s"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S(" 1r/s"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S("10r/ss"), &v), -1);
    ck_assert_int_eq(mc_rate_parse(S(""), &v), -1);
    ck_assert_int_eq(mc_rate_parse(NULL, 0, &v), -1);
    ck_assert_uint_eq(v, 7);
}
END_TEST

START_TEST(test_gcra_burst_then_rate)
{
    uint64_t tat = 0, retry = 0, now = 5000000, t = 100000; /* 10r/s */
    int i, allowed = 0;

    /* burst=2: three at once, the fourth waits one interval */
    for (i = 0; i < 4; i++) {
        allowed += mc_gcra(&tat, now, t, 2, &retry);
    }
    ck_assert_int_eq(allowed, 3);
    ck_assert_uint_eq(retry, t);

    /* a refusal changed nothing: just before retry, still refused */
    ck_assert_int_eq(mc_gcra(&tat, now + t - 1, t, 2, &retry), 0);
    ck_assert_uint_eq(retry, 1);
    ck_assert_int_eq(mc_gcra(&tat, now + t, t, 2, &retry), 1);

    /* steady: one per interval over 10 s, with requests every 10 ms */
    allowed = 0;
    for (now = 6000000; now < 16000000; now += 10000) {
        allowed += mc_gcra(&tat, now, t, 2, &retry);
    }
    ck_assert_int_ge(allowed, 100);
    ck_assert_int_le(allowed, 103);
}
END_TEST

START_TEST(test_gcra_idle_refills)
{
    uint64_t tat = 0, retry = 0, t = 1000000; /* 1r/s, burst 0 */

    ck_assert_int_eq(mc_gcra(&tat, 1000000, t, 0, &retry), 1);
    ck_assert_int_eq(mc_gcra(&tat, 1000000, t, 0, &retry), 0);
    ck_assert_uint_eq(retry, t);
    /* long idle: no credit beyond the burst accumulates */
    ck_assert_int_eq(mc_gcra(&tat, 100000000, t, 0, &retry), 1);
    ck_assert_int_eq(mc_gcra(&tat, 100000000, t, 0, &retry), 0);
}
END_TEST

static Suite *rate_suite(void)
{
    Suite *s = suite_create("rate");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_rate_parse);
    tcase_add_test(tc, test_gcra_burst_then_rate);
    tcase_add_test(tc, test_gcra_idle_refills);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rate_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
