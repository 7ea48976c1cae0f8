/*
 * Unit tests for the permessage-deflate codec (lib/src/ws_deflate.c): round
 * trips, RFC 7692's own examples, context takeover, bounded inflation
 * (deflate bombs) and corrupt input.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "minichat/ws_deflate.h"

/* A compressible text of n bytes. */
static uint8_t *text(size_t n)
{
    static const char words[] = "the quick brown fox jumps over the lazy dog; ";
    uint8_t *p = malloc(n ? n : 1);
    size_t i;

    ck_assert_ptr_nonnull(p);
    for (i = 0; i < n; i++) {
        p[i] = (uint8_t)words[i % (sizeof(words) - 1)];
    }
    return p;
}

START_TEST(test_rfc7692_hello_inflates)
{
    /* RFC 7692 7.2.3.1: "Hello" compressed, without the tail */
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    /* 7.2.3.3: "Hello" in a stored (uncompressed) block */
    static const uint8_t stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00};
    /* 7.2.3.4: the same with BFINAL set */
    static const uint8_t final[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    mc_ws_inflater_t in;
    uint8_t *out;
    size_t n;

    ck_assert_int_eq(mc_ws_inflater_init(&in, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_inflate(&in, hello, sizeof(hello), 100, 1, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_mem_eq(out, "Hello", 5);
    free(out);
    ck_assert_int_eq(mc_ws_inflate(&in, stored, sizeof(stored), 100, 1, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_mem_eq(out, "Hello", 5);
    free(out);
    ck_assert_int_eq(mc_ws_inflate(&in, final, sizeof(final), 100, 0, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_mem_eq(out, "Hello", 5);
    free(out);
    /* a message may end right after its final block */
    ck_assert_int_eq(mc_ws_inflate(&in, final, sizeof(final) - 1, 100, 0, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, 5);
    free(out);
    /* after a final block the next message starts a fresh stream */
    ck_assert_int_eq(mc_ws_inflate(&in, hello, sizeof(hello), 100, 0, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_mem_eq(out, "Hello", 5);
    free(out);
    mc_ws_inflater_free(&in);
}
END_TEST

START_TEST(test_rfc7692_context_takeover)
{
    /* RFC 7692 7.2.3.2: the second "Hello" refers back to the first */
    static const uint8_t first[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t second[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    mc_ws_inflater_t in;
    uint8_t *out;
    size_t n;

    ck_assert_int_eq(mc_ws_inflater_init(&in, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_inflate(&in, first, sizeof(first), 100, 0, &out, &n), MC_WS_DEFLATE_OK);
    free(out);
    ck_assert_int_eq(mc_ws_inflate(&in, second, sizeof(second), 100, 0, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_mem_eq(out, "Hello", 5);
    free(out);
    /* with the context reset, the back reference points nowhere */
    ck_assert_int_eq(mc_ws_inflate(&in, second, sizeof(second), 100, 1, &out, &n), MC_WS_DEFLATE_BAD);
    ck_assert_ptr_null(out);
    mc_ws_inflater_free(&in);
}
END_TEST

START_TEST(test_deflate_matches_rfc_hello)
{
    mc_ws_deflater_t d;
    uint8_t *out;
    size_t n;

    ck_assert_int_eq(mc_ws_deflater_init(&d, 6, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_deflate(&d, (const uint8_t *)"Hello", 5, 10, &out, &n), MC_WS_DEFLATE_OK);
    /* the tail 00 00 ff ff is gone; 7.2.3.1 gives these bytes */
    ck_assert_uint_eq(n, 7);
    ck_assert_mem_eq(out + 10, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7);
    free(out);
    /* no context is kept: the same message compresses to the same bytes */
    ck_assert_int_eq(mc_ws_deflate(&d, (const uint8_t *)"Hello", 5, 0, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, 7);
    ck_assert_mem_eq(out, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7);
    free(out);
    mc_ws_deflater_free(&d);
}
END_TEST

START_TEST(test_round_trips)
{
    static const size_t sizes[] = {0, 1, 5, 125, 126, 1000, 65535, 65536, 300000};
    static const unsigned bits[] = {9, 12, 15};
    mc_ws_deflater_t d;
    mc_ws_inflater_t in;
    uint8_t *msg, *z, *out;
    size_t i, j, zn, n;

    for (j = 0; j < sizeof(bits) / sizeof(bits[0]); j++) {
        ck_assert_int_eq(mc_ws_deflater_init(&d, 1 + (int)j * 4, bits[j]), MC_WS_DEFLATE_OK);
        ck_assert_int_eq(mc_ws_inflater_init(&in, bits[j]), MC_WS_DEFLATE_OK);
        for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            msg = text(sizes[i]);
            ck_assert_int_eq(mc_ws_deflate(&d, msg, sizes[i], 14, &z, &zn), MC_WS_DEFLATE_OK);
            if (sizes[i] >= 1000) {
                ck_assert_uint_lt(zn, sizes[i] / 4);
            }
            ck_assert_int_eq(mc_ws_inflate(&in, z + 14, zn, sizes[i], 1, &out, &n), MC_WS_DEFLATE_OK);
            ck_assert_uint_eq(n, sizes[i]);
            if (n) {
                ck_assert_mem_eq(out, msg, n);
            } else {
                ck_assert_ptr_null(out);
            }
            free(out);
            /* one byte less room than the message: too big */
            if (sizes[i]) {
                ck_assert_int_eq(mc_ws_inflate(&in, z + 14, zn, sizes[i] - 1, 1, &out, &n), MC_WS_DEFLATE_TOO_BIG);
                ck_assert_ptr_null(out);
            }
            free(z);
            free(msg);
        }
        mc_ws_deflater_free(&d);
        mc_ws_inflater_free(&in);
    }
}
END_TEST

START_TEST(test_random_data_round_trip)
{
    mc_ws_deflater_t d;
    mc_ws_inflater_t in;
    uint8_t *msg, *z, *out;
    size_t i, zn, n, len = 100000;
    uint32_t x = 12345;

    msg = malloc(len);
    ck_assert_ptr_nonnull(msg);
    for (i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        msg[i] = (uint8_t)(x >> 16);
    }
    ck_assert_int_eq(mc_ws_deflater_init(&d, 9, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_inflater_init(&in, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_deflate(&d, msg, len, 0, &z, &zn), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_inflate(&in, z, zn, len, 1, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, len);
    ck_assert_mem_eq(out, msg, len);
    free(out);
    free(z);
    free(msg);
    mc_ws_deflater_free(&d);
    mc_ws_inflater_free(&in);
}
END_TEST

START_TEST(test_takeover_stream)
{
    /* a client with context takeover: one stream, sync-flushed per message */
    z_stream c;
    mc_ws_inflater_t in;
    uint8_t buf[4096], *out, *msg;
    size_t n, zn;
    int k;

    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(deflateInit2(&c, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    ck_assert_int_eq(mc_ws_inflater_init(&in, 15), MC_WS_DEFLATE_OK);
    msg = text(2000);
    for (k = 0; k < 3; k++) {
        c.next_in = msg;
        c.avail_in = 2000;
        c.next_out = buf;
        c.avail_out = sizeof(buf);
        ck_assert_int_eq(deflate(&c, Z_SYNC_FLUSH), Z_OK);
        zn = sizeof(buf) - c.avail_out - 4;
        if (k > 0) {
            /* the repeat is nearly free: it refers to the previous message */
            ck_assert_uint_lt(zn, 40);
        }
        ck_assert_int_eq(mc_ws_inflate(&in, buf, zn, 2000, 0, &out, &n), MC_WS_DEFLATE_OK);
        ck_assert_uint_eq(n, 2000);
        ck_assert_mem_eq(out, msg, 2000);
        free(out);
    }
    free(msg);
    deflateEnd(&c);
    mc_ws_inflater_free(&in);
}
END_TEST

START_TEST(test_deflate_bomb_bounded)
{
    /* 64 MiB of zeros compress to about 64 KiB; the inflater stops past 64 KiB */
    mc_ws_deflater_t d;
    mc_ws_inflater_t in;
    uint8_t *zeros, *z, *out;
    size_t len = 64u << 20, zn, n;

    zeros = calloc(1, len);
    ck_assert_ptr_nonnull(zeros);
    ck_assert_int_eq(mc_ws_deflater_init(&d, 9, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_deflate(&d, zeros, len, 0, &z, &zn), MC_WS_DEFLATE_OK);
    free(zeros);
    ck_assert_uint_lt(zn, 128u << 10);
    ck_assert_int_eq(mc_ws_inflater_init(&in, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_inflate(&in, z, zn, 65536, 1, &out, &n), MC_WS_DEFLATE_TOO_BIG);
    ck_assert_ptr_null(out);
    ck_assert_uint_eq(n, 0);
    /* the inflater is usable again after a reset */
    free(z);
    ck_assert_int_eq(mc_ws_deflate(&d, (const uint8_t *)"Hello", 5, 0, &z, &zn), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_inflate(&in, z, zn, 65536, 1, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, 5);
    free(out);
    free(z);
    mc_ws_deflater_free(&d);
    mc_ws_inflater_free(&in);
}
END_TEST

/* Peak resident memory of this process, in KiB. */
static long peak_kib(void)
{
    struct rusage ru;

    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_maxrss;
}

START_TEST(test_deflate_bomb_memory)
{
    /* 512 MiB of zeros, compressed a megabyte at a time (the test never
     * holds them), inflated with a 1 MiB limit: the process's peak memory
     * must not grow by anything near the inflated size */
    z_stream c;
    mc_ws_inflater_t in;
    uint8_t *chunk, *z, *out;
    size_t zcap = 1u << 20, zn = 0, n;
    long before;
    int i;

    chunk = calloc(1, 1u << 20);
    z = malloc(zcap);
    ck_assert_ptr_nonnull(chunk);
    ck_assert_ptr_nonnull(z);
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(deflateInit2(&c, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    for (i = 0; i < 512; i++) {
        c.next_in = chunk;
        c.avail_in = 1u << 20;
        c.next_out = z + zn;
        c.avail_out = (uInt)(zcap - zn);
        ck_assert_int_eq(deflate(&c, i == 511 ? Z_SYNC_FLUSH : Z_NO_FLUSH), Z_OK);
        ck_assert_uint_eq(c.avail_in, 0);
        zn = zcap - c.avail_out;
    }
    deflateEnd(&c);
    free(chunk);
    ck_assert_uint_lt(zn, 1u << 20);

    before = peak_kib();
    ck_assert_int_eq(mc_ws_inflater_init(&in, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_inflate(&in, z, zn - 4, 1u << 20, 1, &out, &n), MC_WS_DEFLATE_TOO_BIG);
    ck_assert_ptr_null(out);
    /* at most about twice the limit, never the 512 MiB */
    ck_assert_int_lt(peak_kib() - before, 64 * 1024);
    mc_ws_inflater_free(&in);
    free(z);
}
END_TEST

START_TEST(test_corrupt_input)
{
    static const uint8_t bad_type[] = {0xff, 0xff, 0xff};      /* block type 3 is reserved */
    static const uint8_t bad_stored[] = {0x00, 0x05, 0x00, 0x00, 0x00}; /* LEN and NLEN disagree */
    static const uint8_t after_final[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x41};
    mc_ws_inflater_t in;
    uint8_t *out;
    size_t n;

    ck_assert_int_eq(mc_ws_inflater_init(&in, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_eq(mc_ws_inflate(&in, bad_type, sizeof(bad_type), 100, 1, &out, &n), MC_WS_DEFLATE_BAD);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(mc_ws_inflate(&in, bad_stored, sizeof(bad_stored), 100, 1, &out, &n), MC_WS_DEFLATE_BAD);
    ck_assert_int_eq(mc_ws_inflate(&in, after_final, sizeof(after_final), 100, 1, &out, &n), MC_WS_DEFLATE_BAD);
    ck_assert_int_eq(mc_ws_inflate(&in, NULL, 0, 100, 1, &out, &n), MC_WS_DEFLATE_OK);
    ck_assert_uint_eq(n, 0);
    mc_ws_inflater_free(&in);
}
END_TEST

START_TEST(test_init_bounds)
{
    mc_ws_deflater_t d;
    mc_ws_inflater_t in;

    ck_assert_int_ne(mc_ws_deflater_init(&d, 0, 15), MC_WS_DEFLATE_OK);
    ck_assert_int_ne(mc_ws_deflater_init(&d, 6, 8), MC_WS_DEFLATE_OK);
    ck_assert_int_ne(mc_ws_deflater_init(&d, 6, 16), MC_WS_DEFLATE_OK);
    mc_ws_deflater_free(&d); /* harmless when init failed */
    ck_assert_int_eq(mc_ws_inflater_init(&in, 8), MC_WS_DEFLATE_OK);
    mc_ws_inflater_free(&in);
    mc_ws_inflater_free(&in); /* twice is harmless */
}
END_TEST

static Suite *deflate_suite(void)
{
    Suite *s = suite_create("ws_deflate");
    TCase *tc = tcase_create("codec");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_rfc7692_hello_inflates);
    tcase_add_test(tc, test_rfc7692_context_takeover);
    tcase_add_test(tc, test_deflate_matches_rfc_hello);
    tcase_add_test(tc, test_round_trips);
    tcase_add_test(tc, test_random_data_round_trip);
    tcase_add_test(tc, test_takeover_stream);
    tcase_add_test(tc, test_deflate_bomb_bounded);
    tcase_add_test(tc, test_deflate_bomb_memory);
    tcase_add_test(tc, test_corrupt_input);
    tcase_add_test(tc, test_init_bounds);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(deflate_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
