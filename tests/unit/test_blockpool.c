/*
 * Unit tests for lib/src/blockpool.c (the pool of equal-sized blocks behind
 * the module's per-connection output buffers).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/blockpool.h"

START_TEST(test_reuse_up_to_keep)
{
    mc_blockpool_t *p = mc_blockpool_new(1024, 2);
    mc_blockpool_stats_t st;
    void *a, *b, *c, *d;

    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(mc_blockpool_size(p), 1024);
    a = mc_blockpool_get(p);
    b = mc_blockpool_get(p);
    c = mc_blockpool_get(p);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    /* every byte is the holder's */
    memset(a, 0xa1, 1024);
    memset(b, 0xb2, 1024);
    memset(c, 0xc3, 1024);
    mc_blockpool_put(p, a);
    mc_blockpool_put(p, b);
    mc_blockpool_put(p, c); /* the list holds 2: freed */
    mc_blockpool_put(p, NULL);
    mc_blockpool_stats(p, &st);
    ck_assert_uint_eq(st.allocated, 3);
    ck_assert_uint_eq(st.kept, 2);
    ck_assert_uint_eq(st.released, 1);

    /* the kept ones come back first, the last given back first */
    d = mc_blockpool_get(p);
    ck_assert_ptr_eq(d, b);
    d = mc_blockpool_get(p);
    ck_assert_ptr_eq(d, a);
    mc_blockpool_stats(p, &st);
    ck_assert_uint_eq(st.reused, 2);
    ck_assert_uint_eq(st.kept, 0);
    d = mc_blockpool_get(p); /* the list is empty: malloc */
    mc_blockpool_stats(p, &st);
    ck_assert_uint_eq(st.allocated, 4);
    mc_blockpool_put(p, a);
    mc_blockpool_put(p, b);
    mc_blockpool_put(p, d);
    mc_blockpool_free(p); /* frees the kept; ASan sees any leak */
}
END_TEST

START_TEST(test_trim_and_keep_zero)
{
    mc_blockpool_t *p = mc_blockpool_new(64, 8);
    mc_blockpool_t *none = mc_blockpool_new(64, 0);
    mc_blockpool_stats_t st;
    void *blocks[8];
    int i;

    for (i = 0; i < 8; i++) {
        blocks[i] = mc_blockpool_get(p);
        ck_assert_ptr_nonnull(blocks[i]);
    }
    for (i = 0; i < 8; i++) {
        mc_blockpool_put(p, blocks[i]);
    }
    mc_blockpool_stats(p, &st);
    ck_assert_uint_eq(st.kept, 8);
    mc_blockpool_trim(p);
    mc_blockpool_stats(p, &st);
    ck_assert_uint_eq(st.kept, 0);
    ck_assert_uint_eq(st.released, 8);
    mc_blockpool_free(p);

    /* keep 0: a plain malloc/free */
    blocks[0] = mc_blockpool_get(none);
    mc_blockpool_put(none, blocks[0]);
    mc_blockpool_stats(none, &st);
    ck_assert_uint_eq(st.kept, 0);
    ck_assert_uint_eq(st.released, 1);
    mc_blockpool_free(none);
    mc_blockpool_free(NULL);
}
END_TEST

START_TEST(test_bad_and_tiny_sizes)
{
    mc_blockpool_t *p;

    ck_assert_ptr_null(mc_blockpool_new(0, 4));
    /* a block smaller than the free list's link is made large enough */
    p = mc_blockpool_new(1, 4);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(mc_blockpool_size(p), sizeof(void *));
    mc_blockpool_put(p, mc_blockpool_get(p));
    mc_blockpool_free(p);
}
END_TEST

static Suite *blockpool_suite(void)
{
    Suite *s = suite_create("blockpool");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_reuse_up_to_keep);
    tcase_add_test(tc, test_trim_and_keep_zero);
    tcase_add_test(tc, test_bad_and_tiny_sizes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(blockpool_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
