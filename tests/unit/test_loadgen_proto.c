/*
 * Unit tests for the load generator's protocol tables (bench/loadgen/):
 * what Centrifugo's JSON frames mean to the runner (proto_centrifugo.c),
 * the commands it writes, MiniChat's send and msg after the body moved to
 * scan.c, and scan.c's number reader on bad input.
 *
 * The protocol files and scan.c are compiled into this test; plan.c gives
 * the tokens, and the one blocking REST call MiniChat's rooms need is
 * stubbed (no test here makes a room over the network).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../../bench/loadgen/plan.c"
#include "../../bench/loadgen/proto_centrifugo.c"
#include "../../bench/loadgen/proto_minichat.c"
#include "../../bench/loadgen/scan.c"

int lg_http_request(const lg_config_t *cfg, const char *method, const char *target, const char *headers,
                    const char *body, size_t body_len, mc_buf_t *resp_body, char *err, size_t err_size)
{
    (void)cfg;
    (void)method;
    (void)target;
    (void)headers;
    (void)body;
    (void)body_len;
    (void)resp_body;
    snprintf(err, err_size, "no network in unit tests");
    return -1;
}

static int parse_str(const lg_proto_t *p, const char *s, lg_event_t *ev)
{
    return p->parse(s, strlen(s), ev);
}

START_TEST(test_cf_replies)
{
    lg_event_t ev;

    ck_assert_int_eq(parse_str(&lg_proto_centrifugo, "{}", &ev), 0);
    ck_assert_int_eq(ev.type, LG_EV_PING);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo,
                               "{\"id\":1,\"connect\":{\"client\":\"c1\",\"version\":\"6.9.1\",\"ping\":25,\"pong\":true}}",
                               &ev),
                     0);
    ck_assert_int_eq(ev.type, LG_EV_READY);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo,
                               "{\"id\":2,\"subscribe\":{\"recoverable\":true,\"epoch\":\"ab\",\"offset\":0}}", &ev),
                     0);
    ck_assert_int_eq(ev.type, LG_EV_READY);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo, "{\"id\":7,\"publish\":{}}", &ev), 0);
    ck_assert_int_eq(ev.type, LG_EV_ACK);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo, "{\"id\":1,\"error\":{\"code\":103,\"message\":\"permission denied\"}}",
                               &ev),
                     0);
    ck_assert_int_eq(ev.type, LG_EV_ERROR);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo, "{\"id\":9,\"presence\":{}}", &ev), 0);
    ck_assert_int_eq(ev.type, LG_EV_OTHER);
}
END_TEST

START_TEST(test_cf_pushes)
{
    lg_event_t ev;

    ck_assert_int_eq(parse_str(&lg_proto_centrifugo,
                               "{\"push\":{\"channel\":\"room:3000000042\",\"pub\":{\"data\":{\"body\":\"lg 4 "
                               "123456789\"},\"info\":{\"user\":\"3000000042\",\"client\":\"c\"},\"offset\":5}}}",
                               &ev),
                     0);
    ck_assert_int_eq(ev.type, LG_EV_MSG);
    ck_assert_uint_eq(ev.room, 3000000042ULL);
    ck_assert_uint_eq(ev.seq, 5);
    ck_assert_uint_eq(ev.k, 4);
    ck_assert_int_eq(ev.sent_us, 123456789);
    ck_assert_int_eq(ev.ours, 1);

    /* no history: the message index is the order */
    ck_assert_int_eq(
        parse_str(&lg_proto_centrifugo, "{\"push\":{\"channel\":\"room:7\",\"pub\":{\"data\":{\"body\":\"lg 2 9\"}}}}", &ev),
        0);
    ck_assert_int_eq(ev.type, LG_EV_MSG);
    ck_assert_uint_eq(ev.seq, 3);

    /* someone else's data */
    ck_assert_int_eq(
        parse_str(&lg_proto_centrifugo, "{\"push\":{\"channel\":\"room:7\",\"pub\":{\"data\":{\"x\":1},\"offset\":2}}}", &ev),
        0);
    ck_assert_int_eq(ev.type, LG_EV_MSG);
    ck_assert_int_eq(ev.ours, 0);
    ck_assert_uint_eq(ev.seq, 2);

    ck_assert_int_eq(parse_str(&lg_proto_centrifugo,
                               "{\"push\":{\"channel\":\"room:7\",\"join\":{\"info\":{\"user\":\"1\"}}}}", &ev),
                     0);
    ck_assert_int_eq(ev.type, LG_EV_OTHER);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo,
                               "{\"push\":{\"disconnect\":{\"code\":3001,\"reason\":\"shutdown\"}}}", &ev),
                     0);
    ck_assert_int_eq(ev.type, LG_EV_ERROR);
}
END_TEST

START_TEST(test_cf_refuses_what_it_cannot_read)
{
    lg_event_t ev;

    ck_assert_int_eq(parse_str(&lg_proto_centrifugo, "", &ev), -1);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo, "{", &ev), -1);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo, "pong", &ev), -1);
    ck_assert_int_eq(parse_str(&lg_proto_centrifugo, "{\"id\":1", &ev), -1);
    /* a publication of a channel outside the bench namespace */
    ck_assert_int_eq(
        parse_str(&lg_proto_centrifugo, "{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{},\"offset\":1}}}", &ev), -1);
    ck_assert_int_eq(
        parse_str(&lg_proto_centrifugo, "{\"push\":{\"channel\":\"room:x\",\"pub\":{\"data\":{},\"offset\":1}}}", &ev),
        -1);
}
END_TEST

START_TEST(test_cf_commands)
{
    static const char secret[] = "unit secret";
    lg_config_t cfg;
    mc_buf_t out = MC_BUF_INIT;
    const char *nl;
    lg_event_t ev;

    memset(&cfg, 0, sizeof(cfg));
    memcpy(cfg.secret, secret, sizeof(secret) - 1);
    cfg.secret_len = sizeof(secret) - 1;

    /* idle: the connect alone, one reply to wait for */
    ck_assert_int_eq(lg_proto_centrifugo.on_open(&cfg, 42, 0, &out), 1);
    ck_assert_ptr_null(memchr(out.data, '\n', out.len));
    ck_assert_int_eq(strncmp(out.data, "{\"id\":1,\"connect\":{\"token\":\"ey", 30), 0);
    mc_buf_reset(&out);

    /* deliver: connect and subscribe, one per line, two replies */
    ck_assert_int_eq(lg_proto_centrifugo.on_open(&cfg, 42, 77, &out), 2);
    nl = memchr(out.data, '\n', out.len);
    ck_assert_ptr_nonnull(nl);
    ck_assert_str_eq(nl + 1, "{\"id\":2,\"subscribe\":{\"channel\":\"room:77\"}}");
    mc_buf_reset(&out);

    /* publish ids follow the connect's and the subscribe's */
    ck_assert_int_eq(lg_proto_centrifugo.encode_send(77, 42, 3, 4, 1000001, &out), 0);
    ck_assert_str_eq(out.data, "{\"id\":6,\"publish\":{\"channel\":\"room:77\",\"data\":{\"body\":\"lg 3 1000001\"}}}");
    memset(&ev, 0, sizeof(ev));
    lg_body_read(out.data, out.len, &ev);
    ck_assert_int_eq(ev.ours, 1);
    ck_assert_uint_eq(ev.k, 3);
    ck_assert_int_eq(ev.sent_us, 1000001);
    mc_buf_free(&out);

    ck_assert_int_eq(lg_proto_centrifugo.make_room(&cfg, 99, NULL, 0, &ev.room, NULL, 0), 0);
    ck_assert_uint_eq(ev.room, 99);
}
END_TEST

START_TEST(test_minichat_send_and_msg)
{
    mc_buf_t out = MC_BUF_INIT;
    lg_event_t ev;

    ck_assert_int_eq(lg_proto_minichat.encode_send(5, 42, 3, 4, 1000001, &out), 0);
    ck_assert_str_eq(out.data, "{\"op\":\"send\",\"id\":4,\"room\":5,\"cid\":\"lg-42-3\",\"body\":\"lg 3 1000001\"}");
    mc_buf_free(&out);

    ck_assert_int_eq(parse_str(&lg_proto_minichat,
                               "{\"op\":\"msg\",\"room\":5,\"seq\":8,\"from\":42,\"body\":\"lg 3 1000001\"}", &ev),
                     0);
    ck_assert_int_eq(ev.type, LG_EV_MSG);
    ck_assert_uint_eq(ev.room, 5);
    ck_assert_uint_eq(ev.seq, 8);
    ck_assert_uint_eq(ev.k, 3);
    ck_assert_int_eq(ev.sent_us, 1000001);
    ck_assert_int_eq(ev.ours, 1);
    ck_assert_int_eq(parse_str(&lg_proto_minichat, "{\"op\":\"msg\",\"room\":5,\"seq\":9,\"body\":\"joined\"}", &ev), 0);
    ck_assert_int_eq(ev.ours, 0);
}
END_TEST

START_TEST(test_scan_numbers)
{
    static const char big[] = "99999999999999999999999";
    static const char ok[] = "18446744073709551";
    uint64_t v = 7;

    ck_assert_int_eq(lg_number(big, strlen(big), big, &v), -1);
    ck_assert_uint_eq(v, 7);
    ck_assert_int_eq(lg_number(ok, strlen(ok), ok, &v), 0);
    ck_assert_uint_eq(v, 18446744073709551ULL);
    ck_assert_int_eq(lg_number(ok, strlen(ok), NULL, &v), -1);
    ck_assert_int_eq(lg_number(ok, 0, ok, &v), -1);
    ck_assert_ptr_null(lg_field(ok, strlen(ok), "\"id\":"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loadgen_proto");
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_cf_replies);
    tcase_add_test(tc, test_cf_pushes);
    tcase_add_test(tc, test_cf_refuses_what_it_cannot_read);
    tcase_add_test(tc, test_cf_commands);
    tcase_add_test(tc, test_minichat_send_and_msg);
    tcase_add_test(tc, test_scan_numbers);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
