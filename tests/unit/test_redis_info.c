/*
 * Unit tests for lib/src/redis_info.c: a node's role and replication id
 * from INFO replication, as Redis 7 writes it.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/redis_info.h"

#define ID1 "8e0c6a8f1d3b2a4c5e6f708192a3b4c5d6e7f809"
#define ID2 "0000000000000000000000000000000000000000"

static mc_redis_role_t parse(const char *info, char *out)
{
    return mc_redis_info_replid(info, strlen(info), out);
}

START_TEST(test_master)
{
    char id[MC_REDIS_REPLID_LEN + 1] = "";

    ck_assert_int_eq(parse("# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
                           "slave0:ip=127.0.0.1,port=17004,state=online,offset=42,lag=0\r\n"
                           "master_failover_state:no-failover\r\nmaster_replid:" ID1 "\r\n"
                           "master_replid2:" ID2 "\r\nmaster_repl_offset:42\r\n", id),
                     MC_REDIS_ROLE_MASTER);
    ck_assert_str_eq(id, ID1);

    /* replid2 first: the field is matched whole; LF alone ends a line too */
    ck_assert_int_eq(parse("master_replid2:" ID1 "\nrole:master\nmaster_replid:" ID2, id), MC_REDIS_ROLE_MASTER);
    ck_assert_str_eq(id, ID2);
}
END_TEST

START_TEST(test_replica)
{
    char id[MC_REDIS_REPLID_LEN + 1] = "untouched";

    /* a replica reports its master's id: never taken */
    ck_assert_int_eq(parse("# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_replid:" ID1 "\r\n", id),
                     MC_REDIS_ROLE_REPLICA);
    ck_assert_str_eq(id, "untouched");
}
END_TEST

START_TEST(test_malformed)
{
    char id[MC_REDIS_REPLID_LEN + 1] = "untouched";

    ck_assert_int_eq(parse("", id), MC_REDIS_ROLE_BAD);
    ck_assert_int_eq(mc_redis_info_replid(NULL, 0, id), MC_REDIS_ROLE_BAD);
    ck_assert_int_eq(parse("master_replid:" ID1 "\r\n", id), MC_REDIS_ROLE_BAD);           /* no role */
    ck_assert_int_eq(parse("role:master\r\n", id), MC_REDIS_ROLE_BAD);                     /* no id */
    ck_assert_int_eq(parse("role:master\r\nmaster_replid:abc\r\n", id), MC_REDIS_ROLE_BAD); /* short */
    ck_assert_int_eq(parse("role:master\r\nmaster_replid:" ID1 "0\r\n", id), MC_REDIS_ROLE_BAD);
    ck_assert_int_eq(parse("role:master\r\nmaster_replid:8E0C6A8F1D3B2A4C5E6F708192A3B4C5D6E7F809\r\n", id),
                     MC_REDIS_ROLE_BAD);                                                 /* not Redis's hex */
    ck_assert_int_eq(parse("role:sentinel\r\nmaster_replid:" ID1 "\r\n", id), MC_REDIS_ROLE_BAD);
    ck_assert_int_eq(parse("xrole:master\r\nmaster_replid:" ID1 "\r\n", id), MC_REDIS_ROLE_BAD);
    /* a length that cuts the reply short hides what follows */
    ck_assert_int_eq(mc_redis_info_replid("role:master\r\nmaster_replid:" ID1, 30, id), MC_REDIS_ROLE_BAD);
    ck_assert_str_eq(id, "untouched");
}
END_TEST

static Suite *redis_info_suite(void)
{
    Suite *s = suite_create("redis_info");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_master);
    tcase_add_test(tc, test_replica);
    tcase_add_test(tc, test_malformed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(redis_info_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
