/*
 * Unit tests for lib/src/resp.c: commands as Redis reads them, and no
 * byte written past the buffer when one does not fit.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/resp.h"

#define E(lit) (lit), (sizeof(lit) - 1)

START_TEST(test_command)
{
    const char *argv[] = {"EVALSHA", "abc", "1", "{u:42}:rl:rest"};
    size_t argvlen[] = {7, 3, 1, 14};
    char out[256];
    long n;

    n = mc_resp_command(out, sizeof(out), 4, argv, argvlen);
    ck_assert_int_eq(n, (long)sizeof("*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$14\r\n{u:42}:rl:rest\r\n") - 1);
    ck_assert_int_eq(memcmp(out, E("*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$14\r\n{u:42}:rl:rest\r\n")), 0);
}
END_TEST

START_TEST(test_binary_and_empty)
{
    /* bytes are copied as they are: NUL, CR and LF included; an empty
     * argument is "$0\r\n\r\n" */
    const char *argv[] = {"SET", "k\r\n", "a\0b", ""};
    size_t argvlen[] = {3, 3, 3, 0};
    char out[64];
    long n;

    n = mc_resp_command(out, sizeof(out), 4, argv, argvlen);
    ck_assert_int_eq(n, 37);
    ck_assert_int_eq(memcmp(out, E("*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$3\r\na\0b\r\n$0\r\n\r\n")), 0);
}
END_TEST

START_TEST(test_long_argument)
{
    /* a length of several digits */
    static char big[12345];
    const char *argv[] = {"EVAL", big};
    size_t argvlen[] = {4, sizeof(big)};
    static char out[13000];
    long n;

    memset(big, 'x', sizeof(big));
    n = mc_resp_command(out, sizeof(out), 2, argv, argvlen);
    ck_assert_int_eq(n, 4 + 4 + 6 + 8 + (long)sizeof(big) + 2);
    ck_assert_int_eq(memcmp(out, E("*2\r\n$4\r\nEVAL\r\n$12345\r\nxxx")), 0);
    ck_assert_int_eq(memcmp(out + n - 3, E("x\r\n")), 0);
}
END_TEST

START_TEST(test_does_not_fit)
{
    const char *argv[] = {"GET", "key"};
    size_t argvlen[] = {3, 3};
    char out[64];
    long full;
    size_t size;

    full = mc_resp_command(out, sizeof(out), 2, argv, argvlen);
    ck_assert_int_eq(full, 22);
    /* every size short of the whole command is refused, and nothing is
     * written past it */
    for (size = 0; size < (size_t)full; size++) {
        memset(out, '#', sizeof(out));
        ck_assert_int_eq(mc_resp_command(out, size, 2, argv, argvlen), -1);
        ck_assert_int_eq(out[size], '#');
    }
    ck_assert_int_eq(mc_resp_command(out, (size_t)full, 2, argv, argvlen), full);
    ck_assert_int_eq(mc_resp_command(out, sizeof(out), 0, argv, argvlen), -1);
}
END_TEST

START_TEST(test_size)
{
    /* the size is what the formatter writes, across digit-count edges */
    static const size_t lens[] = {0, 1, 9, 10, 99, 100, 999, 1000, 12345};
    static char arg[12345];
    static char out[13000];
    const char *argv[11];
    size_t argvlen[11];
    size_t i;
    int argc;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (argc = 1; argc <= 11; argc += 9) {
            int k;

            for (k = 0; k < argc; k++) {
                argv[k] = arg;
                argvlen[k] = k == 0 ? lens[i] : 1;
            }
            ck_assert_int_eq((long)mc_resp_command_size(argc, argvlen),
                             mc_resp_command(out, sizeof(out), argc, argv, argvlen));
        }
    }
}
END_TEST

static Suite *resp_suite(void)
{
    Suite *s = suite_create("resp");
    TCase *tc = tcase_create("command");

    tcase_add_test(tc, test_command);
    tcase_add_test(tc, test_binary_and_empty);
    tcase_add_test(tc, test_long_argument);
    tcase_add_test(tc, test_does_not_fit);
    tcase_add_test(tc, test_size);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(resp_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
