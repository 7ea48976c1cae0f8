/*
 * Unit tests for the length-prefixed relay framing (lib/src/frame.c).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/frame.h"

START_TEST(test_put_header_bytes)
{
    uint8_t h[4];

    mc_frame_put_header(h, 0x01020304u);
    ck_assert_uint_eq(h[0], 0x01);
    ck_assert_uint_eq(h[1], 0x02);
    ck_assert_uint_eq(h[2], 0x03);
    ck_assert_uint_eq(h[3], 0x04);

    mc_frame_put_header(h, 0);
    ck_assert_uint_eq(h[0] | h[1] | h[2] | h[3], 0);

    mc_frame_put_header(h, 0xffffffffu);
    ck_assert_uint_eq(h[0] & h[1] & h[2] & h[3], 0xff);
}
END_TEST

START_TEST(test_round_trip)
{
    uint8_t buf[4 + 300];
    size_t plen = 12345;
    size_t i;

    mc_frame_put_header(buf, 300);
    for (i = 0; i < 300; i++) {
        buf[4 + i] = (uint8_t)i;
    }
    ck_assert_int_eq(mc_frame_parse(buf, sizeof(buf), MC_FRAME_MAX, &plen), MC_FRAME_OK);
    ck_assert_uint_eq(plen, 300);
    /* trailing bytes (the next frame) don't change the answer */
    {
        uint8_t big[4 + 300 + 7];

        memcpy(big, buf, sizeof(buf));
        memset(big + sizeof(buf), 0xaa, 7);
        plen = 0;
        ck_assert_int_eq(mc_frame_parse(big, sizeof(big), MC_FRAME_MAX, &plen), MC_FRAME_OK);
        ck_assert_uint_eq(plen, 300);
    }
}
END_TEST

START_TEST(test_again_short_header)
{
    uint8_t buf[4] = {0, 0, 0, 0};
    size_t plen = 777;
    size_t n;

    for (n = 0; n < MC_FRAME_HDR; n++) {
        ck_assert_int_eq(mc_frame_parse(buf, n, MC_FRAME_MAX, &plen), MC_FRAME_AGAIN);
        ck_assert_uint_eq(plen, 777); /* untouched */
    }
}
END_TEST

START_TEST(test_again_partial_payload)
{
    uint8_t buf[4 + 10];
    size_t plen = 777;
    size_t n;

    mc_frame_put_header(buf, 10);
    memset(buf + 4, 'x', 10);
    for (n = 4; n < sizeof(buf); n++) {
        ck_assert_int_eq(mc_frame_parse(buf, n, MC_FRAME_MAX, &plen), MC_FRAME_AGAIN);
        ck_assert_uint_eq(plen, 777);
    }
    ck_assert_int_eq(mc_frame_parse(buf, sizeof(buf), MC_FRAME_MAX, &plen), MC_FRAME_OK);
    ck_assert_uint_eq(plen, 10);
}
END_TEST

START_TEST(test_too_large)
{
    uint8_t buf[4];
    size_t plen = 777;

    mc_frame_put_header(buf, MC_FRAME_MAX + 1);
    /* refused from the header alone, before any payload is buffered */
    ck_assert_int_eq(mc_frame_parse(buf, 4, MC_FRAME_MAX, &plen), MC_FRAME_TOO_LARGE);
    mc_frame_put_header(buf, 0xffffffffu);
    ck_assert_int_eq(mc_frame_parse(buf, 4, MC_FRAME_MAX, &plen), MC_FRAME_TOO_LARGE);
    mc_frame_put_header(buf, 101);
    ck_assert_int_eq(mc_frame_parse(buf, 4, 100, &plen), MC_FRAME_TOO_LARGE);
    ck_assert_uint_eq(plen, 777);
}
END_TEST

START_TEST(test_zero_length)
{
    uint8_t buf[4];
    size_t plen = 777;

    mc_frame_put_header(buf, 0);
    ck_assert_int_eq(mc_frame_parse(buf, 4, MC_FRAME_MAX, &plen), MC_FRAME_OK);
    ck_assert_uint_eq(plen, 0);
    plen = 777;
    ck_assert_int_eq(mc_frame_parse(buf, 4, 0, &plen), MC_FRAME_OK);
    ck_assert_uint_eq(plen, 0);
}
END_TEST

START_TEST(test_max_boundary)
{
    const size_t max = 16;
    uint8_t buf[4 + 17];
    size_t plen = 0;

    memset(buf, 0, sizeof(buf));
    mc_frame_put_header(buf, (uint32_t)max);
    ck_assert_int_eq(mc_frame_parse(buf, 4 + max, max, &plen), MC_FRAME_OK);
    ck_assert_uint_eq(plen, max);

    mc_frame_put_header(buf, (uint32_t)max + 1);
    ck_assert_int_eq(mc_frame_parse(buf, sizeof(buf), max, &plen), MC_FRAME_TOO_LARGE);
}
END_TEST

START_TEST(test_max_boundary_default)
{
    /* len == MC_FRAME_MAX is accepted (only the header is needed to say AGAIN) */
    uint8_t *buf = calloc(1, 4 + (size_t)MC_FRAME_MAX);
    size_t plen = 0;

    ck_assert_ptr_nonnull(buf);
    mc_frame_put_header(buf, MC_FRAME_MAX);
    ck_assert_int_eq(mc_frame_parse(buf, 4, MC_FRAME_MAX, &plen), MC_FRAME_AGAIN);
    ck_assert_int_eq(mc_frame_parse(buf, 4 + (size_t)MC_FRAME_MAX - 1, MC_FRAME_MAX, &plen), MC_FRAME_AGAIN);
    ck_assert_int_eq(mc_frame_parse(buf, 4 + (size_t)MC_FRAME_MAX, MC_FRAME_MAX, &plen), MC_FRAME_OK);
    ck_assert_uint_eq(plen, MC_FRAME_MAX);
    free(buf);
}
END_TEST

START_TEST(test_back_to_back)
{
    static const char *payloads[] = {"hello", "", "x", "a longer payload with spaces", ""};
    const size_t np = sizeof(payloads) / sizeof(payloads[0]);
    uint8_t buf[256];
    size_t off = 0, i, plen;

    for (i = 0; i < np; i++) {
        size_t l = strlen(payloads[i]);

        mc_frame_put_header(buf + off, (uint32_t)l);
        memcpy(buf + off + 4, payloads[i], l);
        off += 4 + l;
    }
    /* a partial sixth frame at the end */
    mc_frame_put_header(buf + off, 50);
    memcpy(buf + off + 4, "part", 4);
    off += 8;

    {
        size_t pos = 0;

        for (i = 0; i < np; i++) {
            plen = 9999;
            ck_assert_int_eq(mc_frame_parse(buf + pos, off - pos, MC_FRAME_MAX, &plen), MC_FRAME_OK);
            ck_assert_uint_eq(plen, strlen(payloads[i]));
            ck_assert_mem_eq(buf + pos + 4, payloads[i], plen);
            pos += 4 + plen;
        }
        ck_assert_int_eq(mc_frame_parse(buf + pos, off - pos, MC_FRAME_MAX, &plen), MC_FRAME_AGAIN);
        ck_assert_uint_eq(off - pos, 8);
    }
}
END_TEST

static Suite *frame_suite(void)
{
    Suite *s = suite_create("frame");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_put_header_bytes);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_again_short_header);
    tcase_add_test(tc, test_again_partial_payload);
    tcase_add_test(tc, test_too_large);
    tcase_add_test(tc, test_zero_length);
    tcase_add_test(tc, test_max_boundary);
    tcase_add_test(tc, test_max_boundary_default);
    tcase_add_test(tc, test_back_to_back);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(frame_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
