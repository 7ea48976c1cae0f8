/*
 * Unit tests for lib/src/http_mini.c: the request-head parser (whole,
 * partial, malformed, oversize, with a body), the answers it routes to, and
 * the listen-address parser.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/http_mini.h"

static int t_ready_flag;

static int t_metrics(mc_buf_t *out)
{
    return mc_buf_append_str(out, "m 1\n");
}

static int t_status(mc_buf_t *out)
{
    return mc_buf_append_str(out, "{\"ok\":true}");
}

static int t_ready(mc_buf_t *out)
{
    if (t_ready_flag < 0) {
        return -1;
    }
    if (!t_ready_flag) {
        mc_buf_append_str(out, "{\"reason\":\"no\"}");
    }
    return t_ready_flag;
}

static const mc_http_handler_t t_handler = {t_metrics, t_status, t_ready};

/* Parses and answers req; returns the status, the answer in out. */
static int t_answer(const char *raw, mc_buf_t *out)
{
    mc_http_req_t req;
    int st = mc_http_parse(raw, strlen(raw), &req);

    ck_assert_int_ne(st, 1);
    return mc_http_respond(&t_handler, &req, st, out);
}

START_TEST(test_parse_whole_and_partial)
{
    const char *r = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
    mc_http_req_t req;
    size_t i;

    for (i = 0; i < strlen(r); i++) {
        ck_assert_int_eq(mc_http_parse(r, i, &req), 1);
    }
    ck_assert_int_eq(mc_http_parse(r, strlen(r), &req), 0);
    ck_assert_int_eq(req.get, 1);
    ck_assert_uint_eq(req.path_len, 8);
    ck_assert_int_eq(memcmp(req.path, "/metrics", 8), 0);
    ck_assert_int_eq(mc_http_parse("GET /ready HTTP/1.0\n\n", 21, &req), 0);
    ck_assert_int_eq(mc_http_parse("POST /ready HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 44, &req), 0);
    ck_assert_int_eq(req.get, 0);
}
END_TEST

START_TEST(test_parse_bad)
{
    mc_http_req_t req;
    char big[MC_HTTP_HEAD_MAX + 10];

#define BAD(s, st) ck_assert_int_eq(mc_http_parse(s, sizeof(s) - 1, &req), st)
    BAD("GET\r\n\r\n", 400);
    BAD("GET  / HTTP/1.1\r\n\r\n", 400);
    BAD("GET metrics HTTP/1.1\r\n\r\n", 400);
    BAD("GET / HTTP/2.0\r\n\r\n", 505);
    BAD("GET / HTTP/1.2\r\n\r\n", 505);
    BAD("GET / FTP/1.1\r\n\r\n", 400);
    BAD("G(T / HTTP/1.1\r\n\r\n", 400);
    BAD("GET /\x01 HTTP/1.1\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 413);
    BAD("GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n", 413);
    BAD("GET /\0 HTTP/1.1\r\n\r\n", 400);
#undef BAD
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    ck_assert_int_eq(mc_http_parse(big, MC_HTTP_HEAD_MAX - 1, &req), 1);
    ck_assert_int_eq(mc_http_parse(big, MC_HTTP_HEAD_MAX, &req), 431);
}
END_TEST

START_TEST(test_respond)
{
    mc_buf_t out = MC_BUF_INIT;

    ck_assert_int_eq(t_answer("GET /metrics HTTP/1.1\r\n\r\n", &out), 200);
    ck_assert_ptr_nonnull(strstr(out.data, "Content-Type: text/plain; version=0.0.4"));
    ck_assert_ptr_nonnull(strstr(out.data, "Content-Length: 4\r\n"));
    ck_assert_ptr_nonnull(strstr(out.data, "Connection: close\r\n\r\nm 1\n"));
    ck_assert_int_eq(t_answer("GET /status HTTP/1.1\r\n\r\n", &out), 200);
    ck_assert_ptr_nonnull(strstr(out.data, "application/json"));
    t_ready_flag = 1;
    ck_assert_int_eq(t_answer("GET /ready HTTP/1.1\r\n\r\n", &out), 200);
    ck_assert_ptr_nonnull(strstr(out.data, "\r\n\r\nready\n"));
    t_ready_flag = 0;
    ck_assert_int_eq(t_answer("GET /ready HTTP/1.1\r\n\r\n", &out), 503);
    ck_assert_ptr_nonnull(strstr(out.data, "\r\n\r\n{\"reason\":\"no\"}"));
    t_ready_flag = -1;
    ck_assert_int_eq(t_answer("GET /ready HTTP/1.1\r\n\r\n", &out), 500);
    ck_assert_int_eq(t_answer("GET /metricsx HTTP/1.1\r\n\r\n", &out), 404);
    ck_assert_int_eq(t_answer("GET / HTTP/1.1\r\n\r\n", &out), 404);
    ck_assert_int_eq(t_answer("DELETE /metrics HTTP/1.1\r\n\r\n", &out), 405);
    ck_assert_ptr_nonnull(strstr(out.data, "Allow: GET\r\n"));
    ck_assert_int_eq(t_answer("GET / HTTP/1.1\r\nContent-Length: 9\r\n\r\n", &out), 413);
    ck_assert_ptr_nonnull(strstr(out.data, "HTTP/1.1 413 "));
    mc_buf_free(&out);
}
END_TEST

START_TEST(test_addr)
{
    mc_http_addr_t a;
    char err[256];

    ck_assert_int_eq(mc_http_addr_parse("127.0.0.1:9100", &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.text, "127.0.0.1:9100");
    ck_assert_int_eq(mc_http_addr_parse("[::1]:65535", &a, err, sizeof(err)), 0);
    ck_assert_int_eq(mc_http_addr_parse("0.0.0.0:1", &a, err, sizeof(err)), 0);
    ck_assert_int_eq(mc_http_addr_parse("127.0.0.1:0", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(mc_http_addr_parse("127.0.0.1:65536", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(mc_http_addr_parse("127.0.0.1:99999999999999999999", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(mc_http_addr_parse("127.0.0.1:", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(mc_http_addr_parse("localhost:80", &a, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "numeric"));
    ck_assert_int_eq(mc_http_addr_parse("::1:80", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(mc_http_addr_parse("[127.0.0.1]:80", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(mc_http_addr_parse("9100", &a, err, sizeof(err)), -1);
    ck_assert_int_eq(mc_http_addr_parse(":9100", &a, err, sizeof(err)), -1);
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http_mini");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_parse_whole_and_partial);
    tcase_add_test(tc, test_parse_bad);
    tcase_add_test(tc, test_respond);
    tcase_add_test(tc, test_addr);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
