/*
 * Unit tests for the RFC 6455 codec (lib/src/ws.c).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/ws.h"

#define NOMAX UINT64_MAX

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Parses hdr[0..n) and asserts that every strict prefix asks for more bytes. */
static int parse_all_prefixes(const uint8_t *hdr, size_t n, uint64_t max, mc_ws_frame_t *f)
{
    size_t k;

    for (k = 0; k < n; k++) {
        mc_ws_frame_t tmp;

        memset(&tmp, 0, sizeof(tmp));
        ck_assert_msg(mc_ws_parse_header(hdr, k, max, &tmp) == MC_WS_AGAIN, "prefix of %zu/%zu bytes is not AGAIN",
                      k, n);
    }
    memset(f, 0, sizeof(*f));
    return mc_ws_parse_header(hdr, n, max, f);
}


START_TEST(test_parse_rsv1_when_allowed)
{
    /* RSV1 marks a compressed message (RFC 7692): allowed only when asked,
     * and only on the first frame of a text or binary message */
    uint8_t text[6] = {0xc1, 0x80, 1, 2, 3, 4}, bin_first[6] = {0x42, 0x80, 1, 2, 3, 4};
    uint8_t cont[6] = {0xc0, 0x80, 1, 2, 3, 4}, ping[6] = {0xc9, 0x80, 1, 2, 3, 4};
    uint8_t rsv2[6] = {0xa1, 0x80, 1, 2, 3, 4}, plain[6] = {0x81, 0x80, 1, 2, 3, 4};
    mc_ws_frame_t f;

    ck_assert_int_eq(mc_ws_parse_header(text, 6, NOMAX, &f), MC_WS_ERR_RSV);
    ck_assert_int_eq(mc_ws_parse_header_rsv(text, 6, NOMAX, 0, &f), MC_WS_ERR_RSV);
    ck_assert_int_eq(mc_ws_parse_header_rsv(text, 6, NOMAX, MC_WS_RSV1, &f), MC_WS_OK);
    ck_assert_uint_eq(f.rsv1, 1);
    ck_assert_uint_eq(f.opcode, MC_WS_OP_TEXT);
    ck_assert_int_eq(mc_ws_parse_header_rsv(bin_first, 6, NOMAX, MC_WS_RSV1, &f), MC_WS_OK);
    ck_assert_uint_eq(f.rsv1, 1);
    ck_assert_uint_eq(f.fin, 0);
    ck_assert_int_eq(mc_ws_parse_header_rsv(cont, 6, NOMAX, MC_WS_RSV1, &f), MC_WS_ERR_RSV);
    ck_assert_int_eq(mc_ws_parse_header_rsv(ping, 6, NOMAX, MC_WS_RSV1, &f), MC_WS_ERR_RSV);
    ck_assert_int_eq(mc_ws_parse_header_rsv(rsv2, 6, NOMAX, MC_WS_RSV1, &f), MC_WS_ERR_RSV);
    ck_assert_int_eq(mc_ws_parse_header_rsv(plain, 6, NOMAX, MC_WS_RSV1, &f), MC_WS_OK);
    ck_assert_uint_eq(f.rsv1, 0);
}
END_TEST

/* ---- the client side (bench/loadgen) ------------------------------------- */

START_TEST(test_server_header_unmasked)
{
    /* RFC 6455 5.7: an unmasked text frame "Hello" from a server; every
     * strict prefix asks for more */
    uint8_t hello[7] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    uint8_t masked[6] = {0x81, 0x85, 1, 2, 3, 4}, ping[2] = {0x89, 0x00};
    uint8_t rsv1[2] = {0xc1, 0x00}, big[4] = {0x82, 0x7e, 0x01, 0x00};
    mc_ws_frame_t f;
    size_t k;

    for (k = 0; k < 2; k++) {
        ck_assert_int_eq(mc_ws_parse_server_header(hello, k, NOMAX, &f), MC_WS_AGAIN);
    }
    ck_assert_int_eq(mc_ws_parse_server_header(hello, 7, NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.header_len, 2);
    ck_assert_uint_eq(f.payload_len, 5);
    ck_assert_uint_eq(f.masked, 0);
    ck_assert_int_eq(mc_ws_parse_server_header(masked, 6, NOMAX, &f), MC_WS_ERR_MASKED);
    ck_assert_int_eq(mc_ws_parse_server_header(ping, 2, NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.opcode, MC_WS_OP_PING);
    ck_assert_int_eq(mc_ws_parse_server_header(rsv1, 2, NOMAX, &f), MC_WS_ERR_RSV);
    ck_assert_int_eq(mc_ws_parse_server_header(big, 3, NOMAX, &f), MC_WS_AGAIN);
    ck_assert_int_eq(mc_ws_parse_server_header(big, 4, NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.header_len, 4);
    ck_assert_uint_eq(f.payload_len, 256);
    ck_assert_int_eq(mc_ws_parse_server_header(big, 4, 255, &f), MC_WS_ERR_TOO_BIG);
    /* a client frame is refused by the server-side parser and vice versa */
    ck_assert_int_eq(mc_ws_parse_header(hello, 7, NOMAX, &f), MC_WS_ERR_UNMASKED);
}
END_TEST

START_TEST(test_client_header_round_trip)
{
    /* what the client writes, the server parser reads back: the three
     * length forms, the mask key after the length */
    static const uint64_t lens[] = {0, 125, 126, 65535, 65536};
    uint8_t hdr[14];
    mc_ws_frame_t f;
    size_t i, n;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        n = mc_ws_client_header(hdr, MC_WS_OP_TEXT, 1, lens[i], MASK);
        ck_assert_uint_eq(n, lens[i] < 126 ? 6 : lens[i] <= 0xffff ? 8 : 14);
        ck_assert_int_eq(parse_all_prefixes(hdr, n, NOMAX, &f), MC_WS_OK);
        ck_assert_uint_eq(f.header_len, n);
        ck_assert_uint_eq(f.payload_len, lens[i]);
        ck_assert_uint_eq(f.fin, 1);
        ck_assert_uint_eq(f.masked, 1);
        ck_assert_mem_eq(f.mask, MASK, 4);
    }
}
END_TEST

/* ---- valid headers ------------------------------------------------------- */

START_TEST(test_parse_rfc_hello)
{
    /* RFC 6455 5.7: a single-frame masked text message "Hello" */
    uint8_t fr[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    mc_ws_frame_t f;

    ck_assert_int_eq(parse_all_prefixes(fr, 6, NOMAX, &f), MC_WS_OK);
    ck_assert_int_eq(mc_ws_parse_header(fr, sizeof(fr), NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.fin, 1);
    ck_assert_uint_eq(f.opcode, MC_WS_OP_TEXT);
    ck_assert_uint_eq(f.masked, 1);
    ck_assert_uint_eq(f.header_len, 6);
    ck_assert_uint_eq(f.payload_len, 5);
    ck_assert_mem_eq(f.mask, MASK, 4);
    mc_ws_unmask(fr + f.header_len, (size_t)f.payload_len, f.mask, 0);
    ck_assert_mem_eq(fr + 6, "Hello", 5);
}
END_TEST

START_TEST(test_parse_7bit_lengths)
{
    uint8_t h[6] = {0x82, 0x80, 1, 2, 3, 4};
    mc_ws_frame_t f;
    unsigned len;

    for (len = 0; len <= 125; len++) {
        h[1] = (uint8_t)(0x80 | len);
        ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_OK);
        ck_assert_uint_eq(f.payload_len, len);
        ck_assert_uint_eq(f.header_len, 6);
        ck_assert_uint_eq(f.opcode, MC_WS_OP_BINARY);
        ck_assert_uint_eq(f.mask[0], 1);
        ck_assert_uint_eq(f.mask[3], 4);
    }
}
END_TEST

START_TEST(test_parse_16bit)
{
    uint8_t h[8] = {0x82, 0xfe, 0x01, 0x00, 0xa1, 0xb2, 0xc3, 0xd4};
    const uint8_t m[4] = {0xa1, 0xb2, 0xc3, 0xd4};
    mc_ws_frame_t f;

    ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.fin, 1);
    ck_assert_uint_eq(f.opcode, MC_WS_OP_BINARY);
    ck_assert_uint_eq(f.header_len, 8);
    ck_assert_uint_eq(f.payload_len, 256);
    ck_assert_mem_eq(f.mask, m, 4);

    /* the smallest and the largest 16-bit lengths */
    h[2] = 0x00;
    h[3] = 0x7e;
    ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.payload_len, 126);
    h[2] = 0xff;
    h[3] = 0xff;
    ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.payload_len, 65535);
    ck_assert_uint_eq(f.header_len, 8);
}
END_TEST

START_TEST(test_parse_64bit)
{
    uint8_t h[14] = {0x01, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 9, 8, 7, 6};
    const uint8_t m[4] = {9, 8, 7, 6};
    mc_ws_frame_t f;

    ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.fin, 0);
    ck_assert_uint_eq(f.opcode, MC_WS_OP_TEXT);
    ck_assert_uint_eq(f.header_len, 14);
    ck_assert_uint_eq(f.payload_len, 65536);
    ck_assert_mem_eq(f.mask, m, 4);

    /* byte order: 0x0102030405060708 */
    {
        uint8_t g[14] = {0x82, 0xff, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0, 0, 0, 0};

        ck_assert_int_eq(parse_all_prefixes(g, sizeof(g), NOMAX, &f), MC_WS_OK);
        ck_assert_uint_eq(f.payload_len, 0x0102030405060708ull);
    }
    /* the largest length allowed (top bit clear) */
    {
        uint8_t g[14] = {0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};

        ck_assert_int_eq(parse_all_prefixes(g, sizeof(g), NOMAX, &f), MC_WS_OK);
        ck_assert_uint_eq(f.payload_len, 0x7fffffffffffffffull);
    }
}
END_TEST

START_TEST(test_parse_fin_opcodes)
{
    static const struct {
        uint8_t b0;
        unsigned fin, opcode;
    } cases[] = {
        {0x80, 1, MC_WS_OP_CONT},  {0x00, 0, MC_WS_OP_CONT},  {0x81, 1, MC_WS_OP_TEXT},
        {0x01, 0, MC_WS_OP_TEXT},  {0x82, 1, MC_WS_OP_BINARY}, {0x02, 0, MC_WS_OP_BINARY},
        {0x88, 1, MC_WS_OP_CLOSE}, {0x89, 1, MC_WS_OP_PING},  {0x8a, 1, MC_WS_OP_PONG},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t h[6] = {cases[i].b0, 0x80 | 3, 0xde, 0xad, 0xbe, 0xef};
        mc_ws_frame_t f;

        ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_OK);
        ck_assert_uint_eq(f.fin, cases[i].fin);
        ck_assert_uint_eq(f.opcode, cases[i].opcode);
        ck_assert_uint_eq(f.masked, 1);
        ck_assert_uint_eq(f.payload_len, 3);
        ck_assert_uint_eq(f.header_len, 6);
    }
}
END_TEST

START_TEST(test_parse_control_125)
{
    uint8_t h[6] = {0x89, 0x80 | 125, 1, 2, 3, 4};
    mc_ws_frame_t f;

    ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.payload_len, 125);
    h[0] = 0x88;
    h[1] = 0x80;
    ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.payload_len, 0);
}
END_TEST

START_TEST(test_parse_max_payload_boundary)
{
    uint8_t h7[6] = {0x81, 0x80 | 100, 0, 0, 0, 0};
    uint8_t h16[8] = {0x82, 0xfe, 0x03, 0xe8, 0, 0, 0, 0};                 /* 1000 */
    uint8_t h64[14] = {0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0}; /* 1 MiB */
    mc_ws_frame_t f;

    ck_assert_int_eq(parse_all_prefixes(h7, sizeof(h7), 100, &f), MC_WS_OK);
    ck_assert_uint_eq(f.payload_len, 100);
    ck_assert_int_eq(parse_all_prefixes(h7, sizeof(h7), 99, &f), MC_WS_ERR_TOO_BIG);
    ck_assert_int_eq(parse_all_prefixes(h7, sizeof(h7), 0, &f), MC_WS_ERR_TOO_BIG);

    ck_assert_int_eq(parse_all_prefixes(h16, sizeof(h16), 1000, &f), MC_WS_OK);
    ck_assert_uint_eq(f.payload_len, 1000);
    ck_assert_int_eq(parse_all_prefixes(h16, sizeof(h16), 999, &f), MC_WS_ERR_TOO_BIG);

    ck_assert_int_eq(parse_all_prefixes(h64, sizeof(h64), 1u << 20, &f), MC_WS_OK);
    ck_assert_uint_eq(f.payload_len, 1u << 20);
    ck_assert_int_eq(parse_all_prefixes(h64, sizeof(h64), (1u << 20) - 1, &f), MC_WS_ERR_TOO_BIG);

    /* an empty frame is fine with max 0 */
    h7[1] = 0x80;
    ck_assert_int_eq(parse_all_prefixes(h7, sizeof(h7), 0, &f), MC_WS_OK);
    ck_assert_uint_eq(f.payload_len, 0);
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

START_TEST(test_err_rsv)
{
    static const uint8_t b0[] = {0xc1, 0xa1, 0x91, 0xf1, 0x41, 0xc0, 0x92};
    size_t i;

    for (i = 0; i < sizeof(b0); i++) {
        uint8_t h[6] = {b0[i], 0x85, 1, 2, 3, 4};
        mc_ws_frame_t f;

        ck_assert_int_eq(mc_ws_parse_header(h, 0, NOMAX, &f), MC_WS_AGAIN);
        ck_assert_int_eq(mc_ws_parse_header(h, 1, NOMAX, &f), MC_WS_AGAIN);
        /* detected from the first two bytes */
        ck_assert_int_eq(mc_ws_parse_header(h, 2, NOMAX, &f), MC_WS_ERR_RSV);
        ck_assert_int_eq(mc_ws_parse_header(h, sizeof(h), NOMAX, &f), MC_WS_ERR_RSV);
    }
}
END_TEST

START_TEST(test_err_opcode)
{
    static const uint8_t ops[] = {0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf};
    size_t i;

    for (i = 0; i < sizeof(ops); i++) {
        uint8_t h[6] = {(uint8_t)(0x80 | ops[i]), 0x80, 1, 2, 3, 4};
        mc_ws_frame_t f;

        ck_assert_int_eq(mc_ws_parse_header(h, 2, NOMAX, &f), MC_WS_ERR_OPCODE);
        ck_assert_int_eq(mc_ws_parse_header(h, sizeof(h), NOMAX, &f), MC_WS_ERR_OPCODE);
    }
}
END_TEST

START_TEST(test_err_unmasked)
{
    uint8_t h1[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    uint8_t h2[] = {0x82, 0x7e, 0x01, 0x00};
    uint8_t h3[] = {0x89, 0x00};
    mc_ws_frame_t f;

    ck_assert_int_eq(mc_ws_parse_header(h1, sizeof(h1), NOMAX, &f), MC_WS_ERR_UNMASKED);
    ck_assert_int_eq(mc_ws_parse_header(h1, 2, NOMAX, &f), MC_WS_ERR_UNMASKED);
    ck_assert_int_eq(mc_ws_parse_header(h2, sizeof(h2), NOMAX, &f), MC_WS_ERR_UNMASKED);
    ck_assert_int_eq(mc_ws_parse_header(h3, sizeof(h3), NOMAX, &f), MC_WS_ERR_UNMASKED);
}
END_TEST

START_TEST(test_err_fragmented_control)
{
    static const uint8_t b0[] = {0x08, 0x09, 0x0a};
    size_t i;

    for (i = 0; i < sizeof(b0); i++) {
        uint8_t h[6] = {b0[i], 0x80, 1, 2, 3, 4};
        mc_ws_frame_t f;

        ck_assert_int_eq(mc_ws_parse_header(h, 2, NOMAX, &f), MC_WS_ERR_CONTROL);
        ck_assert_int_eq(mc_ws_parse_header(h, sizeof(h), NOMAX, &f), MC_WS_ERR_CONTROL);
    }
}
END_TEST

START_TEST(test_err_control_too_long)
{
    static const uint8_t b0[] = {0x88, 0x89, 0x8a};
    size_t i;

    for (i = 0; i < sizeof(b0); i++) {
        uint8_t h126[8] = {b0[i], 0xfe, 0x00, 0x7e, 1, 2, 3, 4};
        uint8_t h127[14] = {b0[i], 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4};
        mc_ws_frame_t f;

        ck_assert_int_eq(mc_ws_parse_header(h126, 2, NOMAX, &f), MC_WS_ERR_CONTROL);
        ck_assert_int_eq(mc_ws_parse_header(h126, sizeof(h126), NOMAX, &f), MC_WS_ERR_CONTROL);
        ck_assert_int_eq(mc_ws_parse_header(h127, sizeof(h127), NOMAX, &f), MC_WS_ERR_CONTROL);
    }
}
END_TEST

START_TEST(test_err_nonminimal_16)
{
    static const uint8_t lens[][2] = {{0x00, 0x00}, {0x00, 0x01}, {0x00, 0x7d}};
    size_t i;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        uint8_t h[8] = {0x82, 0xfe, lens[i][0], lens[i][1], 1, 2, 3, 4};
        mc_ws_frame_t f;

        /* the length is only known once the whole header is here */
        ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_ERR_LENGTH);
    }
}
END_TEST

START_TEST(test_err_nonminimal_64)
{
    static const uint64_t lens[] = {0, 5, 125, 126, 0xffff};
    size_t i;
    int k;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        uint8_t h[14] = {0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
        mc_ws_frame_t f;

        for (k = 0; k < 8; k++) {
            h[2 + k] = (uint8_t)(lens[i] >> (56 - 8 * k));
        }
        ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_ERR_LENGTH);
    }
}
END_TEST

START_TEST(test_err_64bit_top_bit)
{
    uint8_t h[14] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    uint8_t g[14] = {0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4};
    mc_ws_frame_t f;

    ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), NOMAX, &f), MC_WS_ERR_LENGTH);
    ck_assert_int_eq(parse_all_prefixes(g, sizeof(g), NOMAX, &f), MC_WS_ERR_LENGTH);
}
END_TEST

START_TEST(test_err_too_big)
{
    uint8_t h[14] = {0x82, 0xff, 0, 0, 0, 0x01, 0, 0, 0, 0, 1, 2, 3, 4}; /* 4 GiB */
    uint8_t s[6] = {0x81, 0x80 | 17, 1, 2, 3, 4};
    mc_ws_frame_t f;

    ck_assert_int_eq(parse_all_prefixes(h, sizeof(h), 1u << 20, &f), MC_WS_ERR_TOO_BIG);
    ck_assert_int_eq(parse_all_prefixes(s, sizeof(s), 16, &f), MC_WS_ERR_TOO_BIG);
    ck_assert_int_eq(mc_ws_error_close_code(MC_WS_ERR_TOO_BIG), MC_WS_CLOSE_TOO_BIG);
}
END_TEST

START_TEST(test_truncated_every_boundary)
{
    /* a whole client frame (header + payload) cut at every byte: the header
     * parser says AGAIN until the header is complete, then OK */
    uint8_t fr[14 + 8];
    size_t k;
    mc_ws_frame_t f;

    memset(fr, 0, sizeof(fr));
    fr[0] = 0x82;
    fr[1] = 0xff;
    fr[7] = 0x01; /* 65536 */
    memcpy(fr + 10, MASK, 4);
    for (k = 0; k < sizeof(fr); k++) {
        int rc = mc_ws_parse_header(fr, k, NOMAX, &f);

        if (k < 14) {
            ck_assert_msg(rc == MC_WS_AGAIN, "k=%zu rc=%d", k, rc);
        } else {
            ck_assert_msg(rc == MC_WS_OK, "k=%zu rc=%d", k, rc);
            ck_assert_uint_eq(f.header_len, 14);
            ck_assert_uint_eq(f.payload_len, 65536);
        }
    }
}
END_TEST

START_TEST(test_error_close_codes)
{
    ck_assert_int_eq(mc_ws_error_close_code(MC_WS_ERR_RSV), 1002);
    ck_assert_int_eq(mc_ws_error_close_code(MC_WS_ERR_OPCODE), 1002);
    ck_assert_int_eq(mc_ws_error_close_code(MC_WS_ERR_UNMASKED), 1002);
    ck_assert_int_eq(mc_ws_error_close_code(MC_WS_ERR_CONTROL), 1002);
    ck_assert_int_eq(mc_ws_error_close_code(MC_WS_ERR_LENGTH), 1002);
    ck_assert_int_eq(mc_ws_error_close_code(MC_WS_ERR_TOO_BIG), 1009);
    ck_assert_int_eq(MC_WS_CLOSE_PROTOCOL, 1002);
    ck_assert_int_eq(MC_WS_CLOSE_TOO_BIG, 1009);
}
END_TEST

START_TEST(test_close_code_valid)
{
    static const unsigned ok[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                                  3000, 3999, 4000, 4999};
    static const unsigned bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    size_t i;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ck_assert_msg(mc_ws_close_code_valid(ok[i]), "%u should be valid", ok[i]);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(!mc_ws_close_code_valid(bad[i]), "%u should be invalid", bad[i]);
    }
}
END_TEST

/* ---- unmask -------------------------------------------------------------- */

START_TEST(test_unmask_basic)
{
    uint8_t d[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const uint8_t m[4] = {0x11, 0x22, 0x33, 0x44};
    const uint8_t want0[8] = {0x11, 0x22, 0x33, 0x44, 0x11, 0x22, 0x33, 0x44};
    const uint8_t want1[8] = {0x22, 0x33, 0x44, 0x11, 0x22, 0x33, 0x44, 0x11};

    mc_ws_unmask(d, sizeof(d), m, 0);
    ck_assert_mem_eq(d, want0, 8);
    memset(d, 0, sizeof(d));
    mc_ws_unmask(d, sizeof(d), m, 1);
    ck_assert_mem_eq(d, want1, 8);
    memset(d, 0, sizeof(d));
    mc_ws_unmask(d, sizeof(d), m, 5); /* offset 5 == offset 1 (mod 4) */
    ck_assert_mem_eq(d, want1, 8);
    memset(d, 0, sizeof(d));
    mc_ws_unmask(d, sizeof(d), m, 0x100000004ull); /* large offsets, mod 4 == 0 */
    ck_assert_mem_eq(d, want0, 8);
    mc_ws_unmask(d, 0, m, 0); /* no-op */
    ck_assert_mem_eq(d, want0, 8);
}
END_TEST

START_TEST(test_unmask_pieces)
{
    uint8_t orig[103], whole[103], pieces[103];
    size_t i, split, split2;

    for (i = 0; i < sizeof(orig); i++) {
        orig[i] = (uint8_t)(i * 7 + 3);
    }
    memcpy(whole, orig, sizeof(orig));
    mc_ws_unmask(whole, sizeof(whole), MASK, 0);
    ck_assert_uint_eq(whole[0], (uint8_t)(orig[0] ^ MASK[0]));
    ck_assert_uint_eq(whole[5], (uint8_t)(orig[5] ^ MASK[1]));

    for (split = 0; split <= sizeof(orig); split++) {
        memcpy(pieces, orig, sizeof(orig));
        mc_ws_unmask(pieces, split, MASK, 0);
        mc_ws_unmask(pieces + split, sizeof(orig) - split, MASK, split);
        ck_assert_msg(memcmp(pieces, whole, sizeof(whole)) == 0, "split at %zu differs", split);
    }
    /* three pieces */
    for (split = 0; split <= sizeof(orig); split += 5) {
        for (split2 = split; split2 <= sizeof(orig); split2 += 3) {
            memcpy(pieces, orig, sizeof(orig));
            mc_ws_unmask(pieces, split, MASK, 0);
            mc_ws_unmask(pieces + split, split2 - split, MASK, split);
            mc_ws_unmask(pieces + split2, sizeof(orig) - split2, MASK, split2);
            ck_assert_mem_eq(pieces, whole, sizeof(whole));
        }
    }
    /* masking is an involution */
    mc_ws_unmask(whole, sizeof(whole), MASK, 0);
    ck_assert_mem_eq(whole, orig, sizeof(orig));
}
END_TEST

/* ---- server header ------------------------------------------------------- */

START_TEST(test_header_bytes)
{
    uint8_t out[10];
    const uint8_t h0[] = {0x81, 0x00};
    const uint8_t h125[] = {0x82, 125};
    const uint8_t h126[] = {0x81, 126, 0x00, 0x7e};
    const uint8_t h65535[] = {0x81, 126, 0xff, 0xff};
    const uint8_t h65536[] = {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0};
    const uint8_t hbig[] = {0x02, 127, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    const uint8_t hclose[] = {0x88, 2};

    ck_assert_uint_eq(mc_ws_header(out, MC_WS_OP_TEXT, 1, 0), 2);
    ck_assert_mem_eq(out, h0, 2);
    ck_assert_uint_eq(mc_ws_header(out, MC_WS_OP_BINARY, 1, 125), 2);
    ck_assert_mem_eq(out, h125, 2);
    ck_assert_uint_eq(mc_ws_header(out, MC_WS_OP_TEXT, 1, 126), 4);
    ck_assert_mem_eq(out, h126, 4);
    ck_assert_uint_eq(mc_ws_header(out, MC_WS_OP_TEXT, 1, 65535), 4);
    ck_assert_mem_eq(out, h65535, 4);
    ck_assert_uint_eq(mc_ws_header(out, MC_WS_OP_TEXT, 1, 65536), 10);
    ck_assert_mem_eq(out, h65536, 10);
    ck_assert_uint_eq(mc_ws_header(out, MC_WS_OP_BINARY, 0, 0x0102030405060708ull), 10);
    ck_assert_mem_eq(out, hbig, 10);
    ck_assert_uint_eq(mc_ws_header(out, MC_WS_OP_CLOSE, 1, 2), 2);
    ck_assert_mem_eq(out, hclose, 2);
}
END_TEST

/* Builds a masked client frame the way a browser would, starting from the
 * server header; returns the frame length.  *out is malloc'ed. */
static size_t client_frame(unsigned opcode, unsigned fin, const uint8_t *payload, size_t len, uint8_t **out)
{
    uint8_t hdr[10];
    size_t hl = mc_ws_header(hdr, opcode, fin, len), i;
    uint8_t *p = malloc(hl + 4 + len);

    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(hdr[1] & 0x80, 0); /* server frames are never masked */
    memcpy(p, hdr, hl);
    p[1] |= 0x80;
    memcpy(p + hl, MASK, 4);
    for (i = 0; i < len; i++) {
        p[hl + 4 + i] = payload[i] ^ MASK[i & 3];
    }
    *out = p;
    return hl + 4 + len;
}

START_TEST(test_header_round_trip)
{
    static const uint64_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
    static const size_t hlens[] = {6, 6, 6, 8, 8, 8, 14, 14};
    size_t i, j;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t len = (size_t)lens[i], n;
        uint8_t *payload = malloc(len + 1), *fr = NULL;
        mc_ws_frame_t f;

        ck_assert_ptr_nonnull(payload);
        for (j = 0; j < len; j++) {
            payload[j] = (uint8_t)(j * 31 + i);
        }
        n = client_frame(MC_WS_OP_BINARY, 1, payload, len, &fr);
        ck_assert_uint_eq(n, hlens[i] + len);

        memset(&f, 0, sizeof(f));
        ck_assert_int_eq(mc_ws_parse_header(fr, n, NOMAX, &f), MC_WS_OK);
        ck_assert_uint_eq(f.fin, 1);
        ck_assert_uint_eq(f.opcode, MC_WS_OP_BINARY);
        ck_assert_uint_eq(f.masked, 1);
        ck_assert_uint_eq(f.header_len, hlens[i]);
        ck_assert_uint_eq(f.payload_len, lens[i]);
        ck_assert_mem_eq(f.mask, MASK, 4);
        /* unmask in two pieces, as a reader with partial input would */
        mc_ws_unmask(fr + f.header_len, len / 3, f.mask, 0);
        mc_ws_unmask(fr + f.header_len + len / 3, len - len / 3, f.mask, len / 3);
        ck_assert_int_eq(memcmp(fr + f.header_len, payload, len), 0);

        /* max == len accepted, max == len - 1 refused */
        ck_assert_int_eq(mc_ws_parse_header(fr, n, lens[i], &f), MC_WS_OK);
        if (lens[i] > 0) {
            ck_assert_int_eq(mc_ws_parse_header(fr, n, lens[i] - 1, &f), MC_WS_ERR_TOO_BIG);
        }
        free(fr);
        free(payload);
    }
}
END_TEST

START_TEST(test_header_round_trip_fin_text)
{
    uint8_t *fr = NULL;
    mc_ws_frame_t f;
    size_t n = client_frame(MC_WS_OP_TEXT, 0, (const uint8_t *)"abc", 3, &fr);

    ck_assert_int_eq(mc_ws_parse_header(fr, n, NOMAX, &f), MC_WS_OK);
    ck_assert_uint_eq(f.fin, 0);
    ck_assert_uint_eq(f.opcode, MC_WS_OP_TEXT);
    free(fr);
}
END_TEST

/* ---- UTF-8 --------------------------------------------------------------- */

#define U8(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

START_TEST(test_utf8_valid)
{
    ck_assert_int_eq(mc_utf8_valid(U8("")), 1);
    ck_assert_int_eq(mc_utf8_valid(NULL, 0), 1);
    ck_assert_int_eq(mc_utf8_valid(U8("hello, world! ~\x7f\x01")), 1);
    ck_assert_int_eq(mc_utf8_valid(U8("\xc2\x80")), 1);         /* U+0080 */
    ck_assert_int_eq(mc_utf8_valid(U8("caf\xc3\xa9")), 1);      /* é */
    ck_assert_int_eq(mc_utf8_valid(U8("\xdf\xbf")), 1);         /* U+07FF */
    ck_assert_int_eq(mc_utf8_valid(U8("\xe0\xa0\x80")), 1);     /* U+0800 */
    ck_assert_int_eq(mc_utf8_valid(U8("\xe2\x82\xac")), 1);     /* € */
    ck_assert_int_eq(mc_utf8_valid(U8("\xed\x9f\xbf")), 1);     /* U+D7FF */
    ck_assert_int_eq(mc_utf8_valid(U8("\xee\x80\x80")), 1);     /* U+E000 */
    ck_assert_int_eq(mc_utf8_valid(U8("\xef\xbf\xbf")), 1);     /* U+FFFF */
    ck_assert_int_eq(mc_utf8_valid(U8("\xf0\x90\x80\x80")), 1); /* U+10000 */
    ck_assert_int_eq(mc_utf8_valid(U8("\xf0\x9f\x98\x80")), 1); /* 😀 */
    ck_assert_int_eq(mc_utf8_valid(U8("\xf4\x8f\xbf\xbf")), 1); /* U+10FFFF */
    ck_assert_int_eq(mc_utf8_valid(U8("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z")), 1);
}
END_TEST

START_TEST(test_utf8_invalid)
{
    ck_assert_int_eq(mc_utf8_valid(U8("\xc0\x80")), 0);         /* overlong NUL */
    ck_assert_int_eq(mc_utf8_valid(U8("\xc1\xbf")), 0);         /* overlong */
    ck_assert_int_eq(mc_utf8_valid(U8("\xe0\x80\x80")), 0);     /* overlong 3-byte */
    ck_assert_int_eq(mc_utf8_valid(U8("\xe0\x9f\xbf")), 0);     /* overlong U+07FF */
    ck_assert_int_eq(mc_utf8_valid(U8("\xf0\x80\x80\x80")), 0); /* overlong 4-byte */
    ck_assert_int_eq(mc_utf8_valid(U8("\xf0\x8f\xbf\xbf")), 0); /* overlong U+FFFF */
    ck_assert_int_eq(mc_utf8_valid(U8("\xed\xa0\x80")), 0);     /* U+D800 */
    ck_assert_int_eq(mc_utf8_valid(U8("\xed\xbf\xbf")), 0);     /* U+DFFF */
    ck_assert_int_eq(mc_utf8_valid(U8("\xf4\x90\x80\x80")), 0); /* U+110000 */
    ck_assert_int_eq(mc_utf8_valid(U8("\xf5\x80\x80\x80")), 0);
    ck_assert_int_eq(mc_utf8_valid(U8("\xf7\xbf\xbf\xbf")), 0);
    ck_assert_int_eq(mc_utf8_valid(U8("\xff")), 0);
    ck_assert_int_eq(mc_utf8_valid(U8("\xfe")), 0);
    ck_assert_int_eq(mc_utf8_valid(U8("abc\xff")), 0);
    ck_assert_int_eq(mc_utf8_valid(U8("\x80")), 0);             /* lone continuation */
    ck_assert_int_eq(mc_utf8_valid(U8("a\xbf" "b")), 0);
    ck_assert_int_eq(mc_utf8_valid(U8("\xc3\xa9\xa9")), 0);     /* extra continuation */
    ck_assert_int_eq(mc_utf8_valid(U8("\xc3\x28")), 0);         /* bad continuation */
    ck_assert_int_eq(mc_utf8_valid(U8("\xe2\x28\xac")), 0);
    ck_assert_int_eq(mc_utf8_valid(U8("\xf0\x9f\x28\x80")), 0);
}
END_TEST

START_TEST(test_utf8_truncated)
{
    static const char *seqs[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
    uint8_t buf[16];
    size_t i, k;

    for (i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        size_t n = strlen(seqs[i]);

        /* "ab" followed by every strict prefix of the sequence */
        for (k = 1; k < n; k++) {
            memcpy(buf, "ab", 2);
            memcpy(buf + 2, seqs[i], k);
            ck_assert_msg(mc_utf8_valid(buf, 2 + k) == 0, "seq %zu cut at %zu accepted", i, k);
            /* a truncated sequence followed by ASCII is no better */
            buf[2 + k] = 'z';
            ck_assert_msg(mc_utf8_valid(buf, 3 + k) == 0, "seq %zu cut at %zu + 'z' accepted", i, k);
        }
        /* the full sequence is fine; the length bound is honoured (no reading
         * past n even when the buffer continues) */
        memcpy(buf, seqs[i], n);
        ck_assert_int_eq(mc_utf8_valid(buf, n), 1);
        ck_assert_int_eq(mc_utf8_valid(buf, n - 1), 0);
    }
}
END_TEST

/* ---- handshake ----------------------------------------------------------- */

START_TEST(test_accept_rfc)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    char out[29];

    memset(out, 'X', sizeof(out));
    mc_ws_accept(key, strlen(key), out);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ck_assert_uint_eq(strlen(out), 28);
}
END_TEST

START_TEST(test_accept_key_len_honoured)
{
    /* only key_len bytes count: trailing bytes after the key change nothing */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==garbage";
    char a[29], b[29];

    mc_ws_accept(key, 24, a);
    ck_assert_str_eq(a, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    mc_ws_accept(key, strlen(key), b);
    ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(test_accept_long_key)
{
    /* keys over 128 bytes are cut at 128, never overrun the stack buffer */
    char key[300], a[29], b[29];

    memset(key, 'k', sizeof(key));
    mc_ws_accept(key, sizeof(key), a);
    mc_ws_accept(key, 128, b);
    ck_assert_str_eq(a, b);
    ck_assert_uint_eq(strlen(a), 28);
}
END_TEST

static Suite *ws_suite(void)
{
    Suite *s = suite_create("ws");
    TCase *tc;

    tc = tcase_create("parse_valid");
    tcase_add_test(tc, test_parse_rfc_hello);
    tcase_add_test(tc, test_parse_rsv1_when_allowed);
    tcase_add_test(tc, test_parse_7bit_lengths);
    tcase_add_test(tc, test_parse_16bit);
    tcase_add_test(tc, test_parse_64bit);
    tcase_add_test(tc, test_parse_fin_opcodes);
    tcase_add_test(tc, test_parse_control_125);
    tcase_add_test(tc, test_parse_max_payload_boundary);
    tcase_add_test(tc, test_truncated_every_boundary);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse_errors");
    tcase_add_test(tc, test_err_rsv);
    tcase_add_test(tc, test_err_opcode);
    tcase_add_test(tc, test_err_unmasked);
    tcase_add_test(tc, test_err_fragmented_control);
    tcase_add_test(tc, test_err_control_too_long);
    tcase_add_test(tc, test_err_nonminimal_16);
    tcase_add_test(tc, test_err_nonminimal_64);
    tcase_add_test(tc, test_err_64bit_top_bit);
    tcase_add_test(tc, test_err_too_big);
    tcase_add_test(tc, test_error_close_codes);
    tcase_add_test(tc, test_close_code_valid);
    suite_add_tcase(s, tc);

    tc = tcase_create("unmask");
    tcase_add_test(tc, test_unmask_basic);
    tcase_add_test(tc, test_unmask_pieces);
    suite_add_tcase(s, tc);

    tc = tcase_create("server_header");
    tcase_add_test(tc, test_header_bytes);
    tcase_add_test(tc, test_header_round_trip);
    tcase_add_test(tc, test_header_round_trip_fin_text);
    suite_add_tcase(s, tc);

    tc = tcase_create("utf8");
    tcase_add_test(tc, test_utf8_valid);
    tcase_add_test(tc, test_utf8_invalid);
    tcase_add_test(tc, test_utf8_truncated);
    suite_add_tcase(s, tc);

    tc = tcase_create("accept");
    tcase_add_test(tc, test_accept_rfc);
    tcase_add_test(tc, test_accept_key_len_honoured);
    tcase_add_test(tc, test_accept_long_key);
    tcase_add_test(tc, test_server_header_unmasked);
    tcase_add_test(tc, test_client_header_round_trip);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ws_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
