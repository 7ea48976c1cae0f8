/*
 * Unit tests for lib/src/buf.c (the growable byte buffer) and lib/src/clock.c
 * (the monotonic millisecond clock).
 */
#include <check.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "minichat/buf.h"
#include "minichat/clock.h"

START_TEST(test_append_and_nul)
{
    mc_buf_t b = MC_BUF_INIT;

    ck_assert_int_eq(mc_buf_append(&b, "", 0), 0);
    ck_assert_ptr_nonnull(b.data);
    ck_assert_str_eq(b.data, "");
    ck_assert_int_eq(mc_buf_append(&b, "ab", 2), 0);
    ck_assert_int_eq(mc_buf_append_str(&b, "cd"), 0);
    ck_assert_int_eq(mc_buf_append(&b, "e\0f", 3), 0);
    ck_assert_uint_eq(b.len, 7);
    ck_assert_mem_eq(b.data, "abcde\0f", 8); /* the NUL after the data too */
    mc_buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    mc_buf_free(&b); /* twice is harmless */
}
END_TEST

START_TEST(test_growth)
{
    mc_buf_t b;
    char chunk[1000];
    size_t i;

    mc_buf_init(&b);
    for (i = 0; i < sizeof(chunk); i++) {
        chunk[i] = (char)('a' + i % 26);
    }
    for (i = 0; i < 300; i++) {
        ck_assert_int_eq(mc_buf_append(&b, chunk, sizeof(chunk)), 0);
    }
    ck_assert_uint_eq(b.len, 300 * sizeof(chunk));
    ck_assert_uint_gt(b.cap, b.len);
    for (i = 0; i < 300; i++) {
        ck_assert_mem_eq(b.data + i * sizeof(chunk), chunk, sizeof(chunk));
    }
    ck_assert_int_eq(b.data[b.len], '\0');
    ck_assert_int_eq(mc_buf_reserve(&b, SIZE_MAX - 10), -1);
    ck_assert_uint_eq(b.len, 300 * sizeof(chunk));
    mc_buf_free(&b);
}
END_TEST

START_TEST(test_appendf)
{
    mc_buf_t b = MC_BUF_INIT;
    char big[10000];

    ck_assert_int_eq(mc_buf_appendf(&b, "%d:%s", 42, "x"), 0);
    ck_assert_str_eq(b.data, "42:x");
    ck_assert_int_eq(mc_buf_appendf(&b, ",%llu", 18446744073709551615ULL), 0);
    ck_assert_str_eq(b.data, "42:x,18446744073709551615");

    /* longer than whatever room is left: formatted again after growing */
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ck_assert_int_eq(mc_buf_appendf(&b, "[%s]", big), 0);
    ck_assert_uint_eq(b.len, 25 + sizeof(big) + 1);
    ck_assert_uint_eq(strlen(b.data), b.len);
    ck_assert_int_eq(b.data[b.len - 1], ']');
    mc_buf_free(&b);
}
END_TEST

/* A printf-style wrapper, as the relay-worker's SQL builder is one. */
static int wrapped(mc_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int wrapped(mc_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = mc_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

START_TEST(test_vappendf)
{
    mc_buf_t b = MC_BUF_INIT;
    char big[5000];

    ck_assert_int_eq(wrapped(&b, "SELECT %d", 1), 0);
    ck_assert_str_eq(b.data, "SELECT 1");
    /* the va_list is used twice when the first try does not fit */
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ck_assert_int_eq(wrapped(&b, " '%s' %u", big, 7u), 0);
    ck_assert_uint_eq(b.len, 8 + 2 + (sizeof(big) - 1) + 2 + 1);
    ck_assert_str_eq(b.data + b.len - 3, "' 7");
    ck_assert_uint_eq(strlen(b.data), b.len);
    mc_buf_free(&b);
}
END_TEST

START_TEST(test_reset_and_consume)
{
    mc_buf_t b = MC_BUF_INIT;
    size_t cap;

    mc_buf_reset(&b); /* on an empty buffer */
    ck_assert_int_eq(mc_buf_append_str(&b, "hello world"), 0);
    cap = b.cap;
    mc_buf_consume(&b, 6);
    ck_assert_uint_eq(b.len, 5);
    ck_assert_str_eq(b.data, "world");
    mc_buf_consume(&b, 0);
    ck_assert_str_eq(b.data, "world");
    mc_buf_consume(&b, 99);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_str_eq(b.data, "");
    ck_assert_int_eq(mc_buf_append_str(&b, "again"), 0);
    mc_buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_str_eq(b.data, "");
    ck_assert_uint_eq(b.cap, cap); /* memory kept */
    mc_buf_free(&b);
}
END_TEST

START_TEST(test_clock)
{
    struct timespec ts;
    int64_t a, b, ref;
    int i;

    a = mc_now_ms();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ref = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    ck_assert_int_le(a, ref);
    ck_assert_int_ge(a, ref - 1000);
    for (i = 0; i < 1000; i++) {
        b = mc_now_ms();
        ck_assert_int_ge(b, a);
        a = b;
    }
    ts.tv_sec = 0;
    ts.tv_nsec = 20 * 1000000;
    a = mc_now_ms();
    nanosleep(&ts, NULL);
    ck_assert_int_ge(mc_now_ms() - a, 19);
}
END_TEST

static Suite *buf_suite(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_append_and_nul);
    tcase_add_test(tc, test_growth);
    tcase_add_test(tc, test_appendf);
    tcase_add_test(tc, test_vappendf);
    tcase_add_test(tc, test_reset_and_consume);
    tcase_add_test(tc, test_clock);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(buf_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
