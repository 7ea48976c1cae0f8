/*
 * Unit tests for lib/src/sock_access.c: the relay-worker's unix_socket_mode,
 * unix_socket_group and allowed_peers values, and which credentials the
 * parsed list lets through.  Names are looked up through NSS, so only
 * `root` (uid and gid 0 on every Linux system) is assumed to exist.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/sock_access.h"

static char err[256];

START_TEST(test_mode)
{
    mode_t m = 1;

    ck_assert_int_eq(mc_sock_mode_parse("0660", &m, err, sizeof(err)), 0);
    ck_assert_uint_eq(m, 0660);
    ck_assert_int_eq(mc_sock_mode_parse("600", &m, err, sizeof(err)), 0);
    ck_assert_uint_eq(m, 0600);
    ck_assert_int_eq(mc_sock_mode_parse("0777", &m, err, sizeof(err)), 0);
    ck_assert_uint_eq(m, 0777);
    ck_assert_int_eq(mc_sock_mode_parse("0", &m, err, sizeof(err)), 0);
    ck_assert_uint_eq(m, 0);
}
END_TEST

START_TEST(test_mode_errors)
{
    static const char *const bad[] = {"", "0668", "1777", "04660", "rw-rw----", "0x1b0", " 0660", "-660",
                                      "077777777777777777777777"};
    mode_t m = 0123;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ck_assert_msg(mc_sock_mode_parse(bad[i], &m, err, sizeof(err)) == -1, "accepted \"%s\"", bad[i]);
        ck_assert_msg(err[0] != '\0', "no message for \"%s\"", bad[i]);
        ck_assert_uint_eq(m, 0123);
    }
    mc_sock_mode_parse("0668", &m, err, sizeof(err));
    ck_assert_str_eq(err, "file mode \"0668\" is not octal in [0, 0777]");
}
END_TEST

START_TEST(test_group)
{
    gid_t g = 7;

    ck_assert_int_eq(mc_sock_group_parse("root", &g, err, sizeof(err)), 0);
    ck_assert_uint_eq(g, 0);
    ck_assert_int_eq(mc_sock_group_parse("33", &g, err, sizeof(err)), 0);
    ck_assert_uint_eq(g, 33);
    ck_assert_int_eq(mc_sock_group_parse("4294967294", &g, err, sizeof(err)), 0);
    ck_assert_uint_eq(g, 4294967294U);
}
END_TEST

START_TEST(test_group_errors)
{
    gid_t g = 7;

    ck_assert_int_eq(mc_sock_group_parse("", &g, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "empty group");
    ck_assert_int_eq(mc_sock_group_parse("no-such-group-mc", &g, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "no group \"no-such-group-mc\"");
    ck_assert_int_eq(mc_sock_group_parse("4294967295", &g, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "gid \"4294967295\" is not a number in [0, 4294967294]");
    ck_assert_int_eq(mc_sock_group_parse("12ab", &g, err, sizeof(err)), -1);
    ck_assert_uint_eq(g, 7);
}
END_TEST

START_TEST(test_peers_parse)
{
    mc_sock_peers_t p;

    ck_assert_int_eq(mc_sock_peers_parse("user:root, uid:65534,group:root ,  gid:33", &p, err, sizeof(err)), 0);
    ck_assert_uint_eq(p.nuids, 2);
    ck_assert_uint_eq(p.uids[0], 0);
    ck_assert_uint_eq(p.uids[1], 65534);
    ck_assert_uint_eq(p.ngids, 2);
    ck_assert_uint_eq(p.gids[0], 0);
    ck_assert_uint_eq(p.gids[1], 33);

    /* the empty list (the key absent or blank): nobody beyond root and ourselves */
    ck_assert_int_eq(mc_sock_peers_parse("", &p, err, sizeof(err)), 0);
    ck_assert_uint_eq(p.nuids + p.ngids, 0);
    ck_assert_int_eq(mc_sock_peers_parse("   ", &p, err, sizeof(err)), 0);
    ck_assert_uint_eq(p.nuids + p.ngids, 0);
}
END_TEST

START_TEST(test_peers_errors)
{
    static const struct {
        const char *spec, *msg;
    } cases[] = {
        {"root", "\"root\" is not user:NAME, uid:N, group:NAME or gid:N"},
        {"user:", "\"user:\" is not user:NAME, uid:N, group:NAME or gid:N"},
        {"users:root", "\"users:root\" is not user:NAME, uid:N, group:NAME or gid:N"},
        {"USER:root", "\"USER:root\" is not user:NAME, uid:N, group:NAME or gid:N"},
        {"user:no-such-user-mc", "no user \"no-such-user-mc\""},
        {"group:no-such-group-mc", "no group \"no-such-group-mc\""},
        {"uid:-1", "\"uid:-1\": the id is not a number in [0, 4294967294]"},
        {"gid:4294967295", "\"gid:4294967295\": the id is not a number in [0, 4294967294]"},
        {"uid:12 ", NULL}, /* fine: trailing space is trimmed */
        {"uid:1 2", "\"uid:1 2\": the id is not a number in [0, 4294967294]"},
        {"uid:1,,uid:2", "empty item in \"uid:1,,uid:2\""},
        {"uid:1,", "empty item in \"uid:1,\""},
        {",uid:1", "empty item in \",uid:1\""},
    };
    mc_sock_peers_t p;
    size_t i;
    int rc;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        rc = mc_sock_peers_parse(cases[i].spec, &p, err, sizeof(err));
        if (cases[i].msg == NULL) {
            ck_assert_msg(rc == 0, "refused \"%s\": %s", cases[i].spec, err);
        } else {
            ck_assert_msg(rc == -1, "accepted \"%s\"", cases[i].spec);
            ck_assert_str_eq(err, cases[i].msg);
        }
    }
}
END_TEST

START_TEST(test_peers_bounds)
{
    char spec[4096], item[32];
    mc_sock_peers_t p;
    int i;

    /* MC_SOCK_ACCESS_MAX users and as many groups fit; one more does not */
    spec[0] = '\0';
    for (i = 0; i < MC_SOCK_ACCESS_MAX; i++) {
        snprintf(item, sizeof(item), "%suid:%d,gid:%d", i ? "," : "", 1000 + i, 2000 + i);
        strcat(spec, item);
    }
    ck_assert_int_eq(mc_sock_peers_parse(spec, &p, err, sizeof(err)), 0);
    ck_assert_uint_eq(p.nuids, MC_SOCK_ACCESS_MAX);
    ck_assert_uint_eq(p.ngids, MC_SOCK_ACCESS_MAX);
    strcat(spec, ",uid:5");
    ck_assert_int_eq(mc_sock_peers_parse(spec, &p, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "more than 64 users");

    /* an item longer than the item buffer is refused, not cut */
    strcpy(spec, "user:");
    memset(spec + 5, 'x', 300);
    spec[305] = '\0';
    ck_assert_int_eq(mc_sock_peers_parse(spec, &p, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "longer than 255 characters"));
}
END_TEST

START_TEST(test_allow)
{
    static const gid_t sup[] = {10, 33, 100};
    mc_sock_peers_t p;

    ck_assert_int_eq(mc_sock_peers_parse("uid:1000, gid:33", &p, err, sizeof(err)), 0);
    ck_assert_int_eq(mc_sock_peers_allow(&p, 1000, 1000, NULL, 0), 1);   /* by uid */
    ck_assert_int_eq(mc_sock_peers_allow(&p, 1001, 33, NULL, 0), 1);     /* by primary group */
    ck_assert_int_eq(mc_sock_peers_allow(&p, 1001, 1001, sup, 3), 1);    /* by a supplementary group */
    ck_assert_int_eq(mc_sock_peers_allow(&p, 1001, 1001, sup, 1), 0);    /* only group 10 */
    ck_assert_int_eq(mc_sock_peers_allow(&p, 1001, 1001, NULL, 0), 0);
    ck_assert_int_eq(mc_sock_peers_allow(&p, 33, 1001, NULL, 0), 0);     /* gid:33 is not uid 33 */

    /* the empty list lets no one in: root and our own user are the caller's rule */
    ck_assert_int_eq(mc_sock_peers_parse("", &p, err, sizeof(err)), 0);
    ck_assert_int_eq(mc_sock_peers_allow(&p, 0, 0, sup, 3), 0);
}
END_TEST

static Suite *sock_access_suite(void)
{
    Suite *s = suite_create("sock_access");
    TCase *tc = tcase_create("parse");

    tcase_add_test(tc, test_mode);
    tcase_add_test(tc, test_mode_errors);
    tcase_add_test(tc, test_group);
    tcase_add_test(tc, test_group_errors);
    tcase_add_test(tc, test_peers_parse);
    tcase_add_test(tc, test_peers_errors);
    tcase_add_test(tc, test_peers_bounds);
    suite_add_tcase(s, tc);

    tc = tcase_create("allow");
    tcase_add_test(tc, test_allow);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sock_access_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
