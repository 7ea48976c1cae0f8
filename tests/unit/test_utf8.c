/*
 * Unit tests for lib/src/utf8.c: validation, character counts, prefixes of
 * whole characters and repair.  tests/unit/test_ws.c checks mc_utf8_valid()
 * once more through ws.h, as the WebSocket code sees it.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/utf8.h"

#define valid(...) valid2(__VA_ARGS__)
#define valid2(s, n) mc_utf8_valid((const uint8_t *)(s), (n))
#define S(lit) (lit), (sizeof(lit) - 1)

START_TEST(test_valid)
{
    ck_assert_int_eq(valid("", 0), 1);
    ck_assert_int_eq(mc_utf8_valid(NULL, 0), 1);
    ck_assert_int_eq(valid(S("abc")), 1);
    ck_assert_int_eq(valid(S("\xe4\xb8\xad\xf0\x9f\x98\x80\xc3\xa9")), 1);
    ck_assert_int_eq(valid("a\0b", 3), 1);
    ck_assert_int_eq(valid(S("\xf4\x8f\xbf\xbf")), 1);      /* U+10FFFF */
    ck_assert_int_eq(valid(S("\xed\x9f\xbf")), 1);          /* U+D7FF */
    ck_assert_int_eq(valid(S("\xff")), 0);
    ck_assert_int_eq(valid(S("\xc0\xaf")), 0);              /* overlong '/' */
    ck_assert_int_eq(valid(S("\xe0\x80\xaf")), 0);          /* overlong */
    ck_assert_int_eq(valid(S("\xf0\x8f\xbf\xbf")), 0);      /* overlong U+FFFF */
    ck_assert_int_eq(valid(S("\xed\xa0\x80")), 0);          /* surrogate */
    ck_assert_int_eq(valid(S("\xf4\x90\x80\x80")), 0);      /* above U+10FFFF */
    ck_assert_int_eq(valid(S("\xe4\xb8")), 0);              /* truncated */
    ck_assert_int_eq(valid(S("\x80")), 0);                  /* lone continuation */
}
END_TEST

START_TEST(test_valid_ascii_words)
{
    char buf[64];
    size_t i;

    /* the 8-byte ASCII path: a bad byte at every position of a long run is found */
    memset(buf, 'a', sizeof(buf));
    ck_assert_int_eq(valid(buf, sizeof(buf)), 1);
    for (i = 0; i < sizeof(buf); i++) {
        buf[i] = (char)0x80;
        ck_assert_msg(valid(buf, sizeof(buf)) == 0, "bad byte at %zu accepted", i);
        ck_assert_msg(valid(buf, i) == 1, "prefix of %zu rejected", i);
        buf[i] = 'a';
    }
    /* a valid sequence straddling a word boundary */
    memcpy(buf + 6, "\xf0\x9f\x98\x80", 4);
    ck_assert_int_eq(valid(buf, sizeof(buf)), 1);
    ck_assert_int_eq(valid(buf, 9), 0);
}
END_TEST

#define part(...) part2(__VA_ARGS__)
#define part2(s, n, d) mc_utf8_valid_part((const uint8_t *)(s), (n), (d))

START_TEST(test_valid_part)
{
    size_t done = 99;

    ck_assert_int_eq(part(S("abc"), &done), 1);
    ck_assert_uint_eq(done, 3);
    /* a character cut at the end waits for its next bytes */
    ck_assert_int_eq(part(S("a\xe2\x82"), &done), 1);
    ck_assert_uint_eq(done, 1);
    ck_assert_int_eq(part(S("\xf0\x9f\x98"), &done), 1);
    ck_assert_uint_eq(done, 0);
    ck_assert_int_eq(part(S("\xe2\x82\xac"), &done), 1);
    ck_assert_uint_eq(done, 3);
    /* a beginning that nothing can complete fails at once, at its byte */
    ck_assert_int_eq(part(S("ab\xed\xa0"), &done), 0);            /* surrogate */
    ck_assert_uint_eq(done, 2);
    ck_assert_int_eq(part(S("\xf4\x90"), &done), 0);              /* above U+10FFFF */
    ck_assert_int_eq(part(S("\xe0\x80"), &done), 0);              /* overlong */
    ck_assert_int_eq(part(S("\xf0\x80"), &done), 0);              /* overlong */
    ck_assert_int_eq(part(S("\xc0"), &done), 0);
    ck_assert_int_eq(part(S("\xf5"), &done), 0);
    ck_assert_int_eq(part(S("\xe2\x28"), &done), 0);              /* not a continuation */
    ck_assert_int_eq(part(S("\x80"), &done), 0);
    ck_assert_int_eq(part(S("\xe2\x82\xac\xff"), &done), 0);
    ck_assert_uint_eq(done, 3);
    /* pieces validated one after another give the whole text's answer */
    {
        const char *t = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
        size_t n = strlen(t), cut, at;

        for (cut = 0; cut <= n; cut++) {
            ck_assert_int_eq(part(t, cut, &at), 1);
            ck_assert_int_eq(part(t + at, n - at, &done), 1);
            ck_assert_uint_eq(at + done, n);
        }
    }
}
END_TEST

START_TEST(test_chars)
{
    ck_assert_uint_eq(mc_utf8_chars("", 0), 0);
    ck_assert_uint_eq(mc_utf8_chars(S("hello")), 5);
    ck_assert_uint_eq(mc_utf8_chars(S("\xea\xb0\x80\xea\xb0\x80")), 2);   /* two hangul syllables */
    ck_assert_uint_eq(mc_utf8_chars(S("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z")), 5);
    ck_assert_uint_eq(mc_utf8_chars("a\0b", 3), 3);
    /* invalid bytes count one each, as their U+FFFD replacements would */
    ck_assert_uint_eq(mc_utf8_chars(S("\xff\xfe")), 2);
    ck_assert_uint_eq(mc_utf8_chars(S("\xe4\xb8")), 2);
    ck_assert_uint_eq(mc_utf8_chars(S("ok\xed\xa0\x80!")), 6);
}
END_TEST

START_TEST(test_chars_matches_sanitized)
{
    static const char *const cases[] = {"abc", "\xc3\xa9\xff", "\xe4\xb8", "\xf0\x9f\x98\x80\x80", "\xed\xbf\xbf",
                                        "plain ascii over eight bytes \xc3\xa9"};
    size_t i, len;
    char *s;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        s = mc_utf8_sanitize(cases[i], strlen(cases[i]), &len);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq(mc_utf8_chars(cases[i], strlen(cases[i])), mc_utf8_chars(s, len));
        free(s);
    }
}
END_TEST

START_TEST(test_prefix)
{
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";

    ck_assert_uint_eq(mc_utf8_prefix(s, strlen(s), 0), 0);
    ck_assert_uint_eq(mc_utf8_prefix(s, strlen(s), 1), 1);
    ck_assert_uint_eq(mc_utf8_prefix(s, strlen(s), 2), 3);
    ck_assert_uint_eq(mc_utf8_prefix(s, strlen(s), 3), 6);
    ck_assert_uint_eq(mc_utf8_prefix(s, strlen(s), 4), 10);
    ck_assert_uint_eq(mc_utf8_prefix(s, strlen(s), 5), 11);
    ck_assert_uint_eq(mc_utf8_prefix(s, strlen(s), 99), 11);
    ck_assert_uint_eq(mc_utf8_prefix(S("\xff\xff\xff"), 2), 2);
}
END_TEST

START_TEST(test_sanitize)
{
    size_t len;
    char *s;

    s = mc_utf8_sanitize("ok\xff!\xe4\xb8", 6, &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(len, 2 + 3 + 1 + 6);
    ck_assert_mem_eq(s, "ok\xef\xbf\xbd!\xef\xbf\xbd\xef\xbf\xbd", len);
    ck_assert_int_eq(valid(s, len), 1);
    free(s);

    s = mc_utf8_sanitize("\xe4\xb8\xad", 3, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_str_eq(s, "\xe4\xb8\xad");
    free(s);

    s = mc_utf8_sanitize("", 0, &len);
    ck_assert_uint_eq(len, 0);
    ck_assert_str_eq(s, "");
    free(s);
}
END_TEST

static Suite *utf8_suite(void)
{
    Suite *s = suite_create("utf8");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_valid);
    tcase_add_test(tc, test_valid_ascii_words);
    tcase_add_test(tc, test_valid_part);
    tcase_add_test(tc, test_chars);
    tcase_add_test(tc, test_chars_matches_sanitized);
    tcase_add_test(tc, test_prefix);
    tcase_add_test(tc, test_sanitize);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(utf8_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
