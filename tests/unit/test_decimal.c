/*
 * Unit tests for lib/src/decimal.c: strict unsigned decimals, as Redis
 * replies, read marks, query arguments and JSON keys are read.
 */
#include <check.h>
#include <stdlib.h>

#include "minichat/decimal.h"

#define S(lit) (lit), (sizeof(lit) - 1)

START_TEST(test_parse_u64)
{
    uint64_t v = 7;

    ck_assert_int_eq(mc_parse_u64(S("0"), &v), 0);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(mc_parse_u64(S("0042"), &v), 0);
    ck_assert_uint_eq(v, 42);
    ck_assert_int_eq(mc_parse_u64(S("18446744073709551615"), &v), 0);
    ck_assert_uint_eq(v, UINT64_MAX);
    ck_assert_int_eq(mc_parse_u64(S("9223372036854775808"), &v), 0);
    ck_assert_uint_eq(v, 1ULL << 63);
    ck_assert_int_eq(mc_parse_u64(S("000000000000000000000000001"), &v), 0); /* no length limit of its own */
    ck_assert_uint_eq(v, 1);

    v = 7;
    ck_assert_int_eq(mc_parse_u64(S("18446744073709551616"), &v), -1); /* 2^64 */
    ck_assert_int_eq(mc_parse_u64(S("99999999999999999999"), &v), -1);
    ck_assert_int_eq(mc_parse_u64(S(""), &v), -1);
    ck_assert_int_eq(mc_parse_u64(S("-1"), &v), -1);
    ck_assert_int_eq(mc_parse_u64(S("+1"), &v), -1);
    ck_assert_int_eq(mc_parse_u64(S(" 1"), &v), -1);
    ck_assert_int_eq(mc_parse_u64(S("1 "), &v), -1);
    ck_assert_int_eq(mc_parse_u64(S("0x10"), &v), -1);
    ck_assert_int_eq(mc_parse_u64(S("1e3"), &v), -1);
    ck_assert_int_eq(mc_parse_u64(S("12.0"), &v), -1);
    ck_assert_int_eq(mc_parse_u64("1\0" "2", 3, &v), -1);
    ck_assert_int_eq(mc_parse_u64(NULL, 0, &v), -1);
    ck_assert_uint_eq(v, 7); /* untouched on failure */
}
END_TEST

static Suite *decimal_suite(void)
{
    Suite *s = suite_create("decimal");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_parse_u64);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(decimal_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
