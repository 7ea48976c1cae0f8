/*
 * Unit tests for lib/src/origin.c: the patterns minichat_allowed_origins
 * takes, and which Origin header values they let through.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/origin.h"

static int match(const char *pattern, const char *origin)
{
    ck_assert_ptr_null(mc_origin_check_pattern(pattern, strlen(pattern)));
    return mc_origin_match(pattern, strlen(pattern), origin, strlen(origin));
}

static const char *check(const char *pattern)
{
    return mc_origin_check_pattern(pattern, strlen(pattern));
}

START_TEST(test_valid_patterns)
{
    ck_assert_ptr_null(check("https://a.example"));
    ck_assert_ptr_null(check("http://a.example:8080"));
    ck_assert_ptr_null(check("HTTPS://A.Example"));
    ck_assert_ptr_null(check("https://*.b.example"));
    ck_assert_ptr_null(check("http://127.0.0.1:8080"));
    ck_assert_ptr_null(check("http://[::1]:8080"));
    ck_assert_ptr_null(check("http://localhost"));
}
END_TEST

START_TEST(test_invalid_patterns)
{
    ck_assert_str_eq(check("a.example"), "must start with a scheme and \"://\"");
    ck_assert_str_eq(check("://a.example"), "must start with a scheme and \"://\"");
    ck_assert_str_eq(check("ftp://a.example"), "must use the scheme http or https");
    ck_assert_str_eq(check("https://"), "has no host");
    ck_assert_str_eq(check("https://a.example/"), "has a character a host cannot hold (a path, a \"*\" other than a "
                                                  "leading \"*.\", ...)");
    ck_assert_ptr_nonnull(check("https://a.example/path"));
    ck_assert_ptr_nonnull(check("https://a.*.example"));
    ck_assert_ptr_nonnull(check("https://*example"));
    ck_assert_ptr_nonnull(check("*"));
    ck_assert_str_eq(check("https://*."), "needs a domain after \"*.\"");
    ck_assert_str_eq(check("https://*..example"), "needs a domain after \"*.\"");
    ck_assert_str_eq(check("https://a..example"), "has an empty label");
    ck_assert_str_eq(check("https://a.example."), "has an empty label");
    ck_assert_str_eq(check("https://a.example:"), "has an invalid port");
    ck_assert_str_eq(check("https://a.example:0"), "has an invalid port");
    ck_assert_str_eq(check("https://a.example:65536"), "has an invalid port");
    ck_assert_str_eq(check("https://a.example:80x"), "has an invalid port");
    ck_assert_str_eq(check("https://[::1"), "has an unclosed \"[\"");
    ck_assert_str_eq(check(""), "is empty");
    ck_assert_str_eq(mc_origin_check_pattern(NULL, 0), "is empty");
    /* only the n bytes given count */
    ck_assert_ptr_null(mc_origin_check_pattern("https://a.example/x", 17));
}
END_TEST

START_TEST(test_exact)
{
    ck_assert_int_eq(match("https://a.example", "https://a.example"), 1);
    ck_assert_int_eq(match("https://a.example", "HTTPS://A.EXAMPLE"), 1);
    ck_assert_int_eq(match("https://A.example", "https://a.EXAMPLE"), 1);
    ck_assert_int_eq(match("https://a.example", "http://a.example"), 0);
    ck_assert_int_eq(match("https://a.example", "https://a.example:443"), 0);
    ck_assert_int_eq(match("https://a.example", "https://a.example.evil"), 0);
    ck_assert_int_eq(match("https://a.example", "https://xa.example"), 0);
    ck_assert_int_eq(match("https://a.example", "https://x.a.example"), 0);
    ck_assert_int_eq(match("https://a.example", "https://a.exampl"), 0);
    ck_assert_int_eq(match("https://a.example", "https://a.example/"), 0);
    ck_assert_int_eq(match("https://a.example", "null"), 0);
    ck_assert_int_eq(match("https://a.example", ""), 0);
    ck_assert_int_eq(match("http://a.example:8080", "http://a.example:8080"), 1);
    ck_assert_int_eq(match("http://a.example:8080", "http://a.example:8081"), 0);
    ck_assert_int_eq(match("http://a.example:8080", "http://a.example"), 0);
    ck_assert_int_eq(match("http://a.example:8080", "http://a.example:08080"), 0);
    ck_assert_int_eq(match("http://[::1]:8080", "http://[::1]:8080"), 1);
}
END_TEST

START_TEST(test_wildcard)
{
    ck_assert_int_eq(match("https://*.b.example", "https://x.b.example"), 1);
    ck_assert_int_eq(match("https://*.b.example", "https://x.y.b.example"), 1);
    ck_assert_int_eq(match("https://*.b.example", "https://X.B.Example"), 1);
    ck_assert_int_eq(match("https://*.b.example", "https://b.example"), 0);
    ck_assert_int_eq(match("https://*.b.example", "https://.b.example"), 0);
    ck_assert_int_eq(match("https://*.b.example", "https://xb.example"), 0);
    ck_assert_int_eq(match("https://*.b.example", "https://x.b.example.evil"), 0);
    ck_assert_int_eq(match("https://*.b.example", "http://x.b.example"), 0);
    ck_assert_int_eq(match("https://*.b.example", "https://x.b.example:8443"), 0);
    ck_assert_int_eq(match("https://*.b.example:8443", "https://x.b.example:8443"), 1);
}
END_TEST

static Suite *origin_suite(void)
{
    Suite *s = suite_create("origin");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_valid_patterns);
    tcase_add_test(tc, test_invalid_patterns);
    tcase_add_test(tc, test_exact);
    tcase_add_test(tc, test_wildcard);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(origin_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
