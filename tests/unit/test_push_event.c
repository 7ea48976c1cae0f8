/*
 * Unit tests for lib/src/push_event.c: the offline-push event's JSON, its
 * escaping and its preview cut between whole UTF-8 characters.  Every event
 * is parsed back with jansson, so a test fails on JSON that does not parse.
 */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/push_event.h"
#include "minichat/utf8.h"

/* A row over a body (not owned: the event only reads it). */
static mc_msgrow_t row_of(const char *body, size_t len)
{
    mc_msgrow_t r;

    memset(&r, 0, sizeof(r));
    r.room = 12;
    r.seq = 101;
    r.sender = 42;
    r.ts = 1732500000123ULL;
    r.body = (char *)body;
    r.body_len = len;
    return r;
}

/* Encodes and parses back; the caller frees the object. */
static json_t *event_of(uint64_t user, const char *body, size_t len)
{
    mc_buf_t out = MC_BUF_INIT;
    mc_msgrow_t r = row_of(body, len);
    json_error_t jerr;
    json_t *o;

    ck_assert_int_eq(mc_push_event_json(user, &r, &out), 0);
    o = json_loadb(out.data, out.len, 0, &jerr);
    ck_assert_msg(o != NULL, "not JSON: %s (%s)", out.data, jerr.text);
    mc_buf_free(&out);
    return o;
}

START_TEST(test_fields)
{
    mc_buf_t out = MC_BUF_INIT;
    mc_msgrow_t r = row_of("hi", 2);

    ck_assert_int_eq(mc_push_event_json(43, &r, &out), 0);
    ck_assert_str_eq(out.data, "{\"v\":1,\"type\":\"message\",\"user\":\"43\",\"room\":\"12\",\"seq\":101,"
                               "\"sender\":\"42\",\"ts\":1732500000123,\"preview\":\"hi\",\"truncated\":false}");
    mc_buf_free(&out);
}
END_TEST

START_TEST(test_ids_past_2_53_are_exact)
{
    json_t *o;
    mc_buf_t out = MC_BUF_INIT;
    mc_msgrow_t r = row_of("", 0);

    r.room = 18446744073709551615ULL;
    ck_assert_int_eq(mc_push_event_json(9007199254740993ULL, &r, &out), 0);
    o = json_loadb(out.data, out.len, 0, NULL);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(json_string_value(json_object_get(o, "user")), "9007199254740993");
    ck_assert_str_eq(json_string_value(json_object_get(o, "room")), "18446744073709551615");
    ck_assert_str_eq(json_string_value(json_object_get(o, "preview")), "");
    json_decref(o);
    mc_buf_free(&out);
}
END_TEST

START_TEST(test_preview_escaped)
{
    static const char body[] = "say \"hi\"\\ \n\t\x01 </script> \xc3\xa9";
    json_t *o = event_of(43, body, sizeof(body) - 1);

    /* what the reader gets back is the body, byte for byte */
    ck_assert_str_eq(json_string_value(json_object_get(o, "preview")), body);
    ck_assert(json_is_false(json_object_get(o, "truncated")));
    json_decref(o);
}
END_TEST

START_TEST(test_preview_cut_between_characters)
{
    char body[400];
    const char *p;
    size_t i, n = 0;
    json_t *o;

    /* 99 ASCII characters, then three-byte characters: the cut must fall after
     * the first of them, never inside it */
    for (i = 0; i < 99; i++) {
        body[n++] = 'a';
    }
    for (i = 0; i < 10; i++) {
        memcpy(body + n, "\xe2\x82\xac", 3); /* U+20AC */
        n += 3;
    }
    o = event_of(43, body, n);
    p = json_string_value(json_object_get(o, "preview"));
    ck_assert_uint_eq(strlen(p), 99 + 3);
    ck_assert_uint_eq(mc_utf8_chars(p, strlen(p)), MC_PUSH_PREVIEW_CHARS);
    ck_assert(mc_utf8_valid((const uint8_t *)p, strlen(p)));
    ck_assert(json_is_true(json_object_get(o, "truncated")));
    json_decref(o);
}
END_TEST

START_TEST(test_preview_exactly_the_limit)
{
    char body[MC_PUSH_PREVIEW_CHARS * 4];
    size_t i, n = 0;
    json_t *o;

    for (i = 0; i < MC_PUSH_PREVIEW_CHARS; i++) {
        memcpy(body + n, "\xf0\x9f\x98\x80", 4); /* U+1F600, four bytes */
        n += 4;
    }
    o = event_of(43, body, n);
    ck_assert_uint_eq(strlen(json_string_value(json_object_get(o, "preview"))), n);
    ck_assert(json_is_false(json_object_get(o, "truncated")));
    json_decref(o);
}
END_TEST

START_TEST(test_invalid_utf8_refused)
{
    mc_buf_t out = MC_BUF_INIT;
    mc_msgrow_t r = row_of("a\xff", 2);

    ck_assert_int_eq(mc_push_event_json(43, &r, &out), -1);
    ck_assert_uint_eq(out.len, 0);
    mc_buf_free(&out);
}
END_TEST

START_TEST(test_buffer_reused)
{
    mc_buf_t out = MC_BUF_INIT;
    mc_msgrow_t r = row_of("first message, longer", 21);

    ck_assert_int_eq(mc_push_event_json(43, &r, &out), 0);
    r = row_of("x", 1);
    ck_assert_int_eq(mc_push_event_json(44, &r, &out), 0);
    ck_assert_ptr_nonnull(strstr(out.data, "\"user\":\"44\""));
    ck_assert_ptr_null(strstr(out.data, "first"));
    ck_assert_uint_eq(strlen(out.data), out.len);
    mc_buf_free(&out);
}
END_TEST

static Suite *push_event_suite(void)
{
    Suite *s = suite_create("push_event");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_fields);
    tcase_add_test(tc, test_ids_past_2_53_are_exact);
    tcase_add_test(tc, test_preview_escaped);
    tcase_add_test(tc, test_preview_cut_between_characters);
    tcase_add_test(tc, test_preview_exactly_the_limit);
    tcase_add_test(tc, test_invalid_utf8_refused);
    tcase_add_test(tc, test_buffer_reused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(push_event_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
