/*
 * Unit tests for permessage-deflate negotiation (lib/src/ws_deflate_params.c).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/ws_deflate_params.h"

static const mc_ws_deflate_policy_t TAKEOVER = {1};
static const mc_ws_deflate_policy_t NO_TAKEOVER = {0};

static int nego(const char *s, const mc_ws_deflate_policy_t *pol, mc_ws_deflate_params_t *p)
{
    memset(p, 0xab, sizeof(*p));
    return mc_ws_deflate_negotiate(s, strlen(s), pol, p);
}

static const char *response(const mc_ws_deflate_params_t *p)
{
    static char out[MC_WS_DEFLATE_RESPONSE_MAX];
    size_t n = mc_ws_deflate_response(p, out);

    ck_assert_uint_eq(n, strlen(out));
    return out;
}

START_TEST(test_plain_offer)
{
    mc_ws_deflate_params_t p;

    ck_assert_int_eq(nego("permessage-deflate", &TAKEOVER, &p), MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.server_bits, 15);
    ck_assert_uint_eq(p.server_bits_named, 0);
    ck_assert_uint_eq(p.client_bits, 15);
    ck_assert_uint_eq(p.client_no_context_takeover, 0);
    ck_assert_str_eq(response(&p), "permessage-deflate; server_no_context_takeover");
}
END_TEST

START_TEST(test_policy_no_client_takeover)
{
    mc_ws_deflate_params_t p;

    ck_assert_int_eq(nego("permessage-deflate", &NO_TAKEOVER, &p), MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.client_no_context_takeover, 1);
    ck_assert_str_eq(response(&p), "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
}
END_TEST

START_TEST(test_all_parameters)
{
    mc_ws_deflate_params_t p;

    ck_assert_int_eq(nego("permessage-deflate; client_no_context_takeover; client_max_window_bits=10; "
                          "server_no_context_takeover; server_max_window_bits=12",
                          &TAKEOVER, &p),
                     MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.server_bits, 12);
    ck_assert_uint_eq(p.server_bits_named, 1);
    ck_assert_uint_eq(p.client_bits, 10);
    ck_assert_uint_eq(p.client_no_context_takeover, 1);
    ck_assert_str_eq(response(&p), "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
                                   "client_no_context_takeover");
}
END_TEST

START_TEST(test_client_max_window_bits_without_value)
{
    mc_ws_deflate_params_t p;

    /* what Python websockets and browsers offer */
    ck_assert_int_eq(nego("permessage-deflate; client_max_window_bits", &TAKEOVER, &p), MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.client_bits, 15);
    ck_assert_uint_eq(p.client_no_context_takeover, 0);
}
END_TEST

START_TEST(test_quoted_and_whitespace)
{
    mc_ws_deflate_params_t p;

    ck_assert_int_eq(nego("  permessage-deflate ;\tserver_max_window_bits = \"10\" ; client_max_window_bits=\"9\"  ",
                          &TAKEOVER, &p),
                     MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.server_bits, 10);
    ck_assert_uint_eq(p.client_bits, 9);
    /* an escaped digit is still the digit */
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=\"1\\1\"", &TAKEOVER, &p), MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.server_bits, 11);
}
END_TEST

START_TEST(test_window_bits_values)
{
    static const char *bad[] = {"0", "7", "16", "08", "+9", "9.0", "015", "255", "99999999999", "\"\"", "a"};
    mc_ws_deflate_params_t p;
    char buf[128];
    size_t i;
    unsigned b;

    for (b = 9; b <= 15; b++) {
        snprintf(buf, sizeof(buf), "permessage-deflate; server_max_window_bits=%u", b);
        ck_assert_int_eq(nego(buf, &TAKEOVER, &p), MC_WS_DEFLATE_ACCEPT);
        ck_assert_uint_eq(p.server_bits, b);
    }
    for (b = 8; b <= 15; b++) {
        snprintf(buf, sizeof(buf), "permessage-deflate; client_max_window_bits=%u", b);
        ck_assert_int_eq(nego(buf, &TAKEOVER, &p), MC_WS_DEFLATE_ACCEPT);
        ck_assert_uint_eq(p.client_bits, b);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(buf, sizeof(buf), "permessage-deflate; server_max_window_bits=%s", bad[i]);
        ck_assert_msg(nego(buf, &TAKEOVER, &p) != MC_WS_DEFLATE_ACCEPT, "accepted %s", buf);
        snprintf(buf, sizeof(buf), "permessage-deflate; client_max_window_bits=%s", bad[i]);
        ck_assert_msg(nego(buf, &TAKEOVER, &p) != MC_WS_DEFLATE_ACCEPT, "accepted %s", buf);
    }
}
END_TEST

START_TEST(test_declined_offers)
{
    static const char *declined[] = {
        "permessage-deflate; server_max_window_bits=8", /* zlib cannot deflate raw with 256 bytes */
        "permessage-deflate; server_max_window_bits",   /* needs a value */
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; mystery",
        "permessage-deflate; Server_No_Context_Takeover",
        "Permessage-Deflate",
        "x-webkit-deflate-frame",
        "permessage-deflatex",
    };
    mc_ws_deflate_params_t p;
    size_t i;

    for (i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
        ck_assert_msg(nego(declined[i], &TAKEOVER, &p) == MC_WS_DEFLATE_NONE, "not declined: %s", declined[i]);
    }
}
END_TEST

START_TEST(test_offers_in_order)
{
    mc_ws_deflate_params_t p;

    /* the first acceptable one wins */
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=8, permessage-deflate; "
                          "server_max_window_bits=11, permessage-deflate",
                          &TAKEOVER, &p),
                     MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.server_bits, 11);
    /* other extensions are skipped, with their parameters */
    ck_assert_int_eq(nego("foo; a=1; b=\"x,y\", , permessage-deflate; client_no_context_takeover", &TAKEOVER, &p),
                     MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.client_no_context_takeover, 1);
    ck_assert_int_eq(nego("permessage-deflate; bogus, permessage-deflate; server_no_context_takeover", &TAKEOVER, &p),
                     MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.server_bits, 15);
    ck_assert_int_eq(nego("", &TAKEOVER, &p), MC_WS_DEFLATE_NONE);
    ck_assert_int_eq(nego(" , ,", &TAKEOVER, &p), MC_WS_DEFLATE_NONE);
}
END_TEST

START_TEST(test_malformed)
{
    static const char *malformed[] = {
        ";permessage-deflate",
        "permessage-deflate;",
        "permessage-deflate; =1",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate; server_max_window_bits=\"1\\",
        "permessage-deflate server_no_context_takeover",
        "permessage-deflate; a b",
        "perm\xc3\xa9ssage-deflate",
        "permessage-deflate; x=\"\x01\"",
        "foo=bar",
    };
    mc_ws_deflate_params_t p;
    size_t i;

    for (i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        ck_assert_msg(nego(malformed[i], &TAKEOVER, &p) == MC_WS_DEFLATE_MALFORMED, "not malformed: %s",
                      malformed[i]);
    }
}
END_TEST

START_TEST(test_length_bounds_honoured)
{
    mc_ws_deflate_params_t p;
    const char *s = "permessage-deflate; server_max_window_bits=10";

    /* only n bytes are read: a cut after "=1" leaves the invalid value "1" */
    ck_assert_int_eq(mc_ws_deflate_negotiate(s, strlen(s) - 1, &TAKEOVER, &p), MC_WS_DEFLATE_NONE);
    ck_assert_int_eq(mc_ws_deflate_negotiate(s, strlen("permessage-deflate"), &TAKEOVER, &p), MC_WS_DEFLATE_ACCEPT);
    ck_assert_uint_eq(p.server_bits_named, 0);
}
END_TEST

START_TEST(test_longest_response_fits)
{
    mc_ws_deflate_params_t p = {15, 1, 15, 1};
    char out[MC_WS_DEFLATE_RESPONSE_MAX];

    ck_assert_uint_lt(mc_ws_deflate_response(&p, out), MC_WS_DEFLATE_RESPONSE_MAX);
}
END_TEST

static Suite *params_suite(void)
{
    Suite *s = suite_create("ws_deflate_params");
    TCase *tc = tcase_create("negotiate");

    tcase_add_test(tc, test_plain_offer);
    tcase_add_test(tc, test_policy_no_client_takeover);
    tcase_add_test(tc, test_all_parameters);
    tcase_add_test(tc, test_client_max_window_bits_without_value);
    tcase_add_test(tc, test_quoted_and_whitespace);
    tcase_add_test(tc, test_window_bits_values);
    tcase_add_test(tc, test_declined_offers);
    tcase_add_test(tc, test_offers_in_order);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_length_bounds_honoured);
    tcase_add_test(tc, test_longest_response_fits);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(params_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
