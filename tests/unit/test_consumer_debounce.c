/*
 * Unit tests for lib/src/debounce.c: the per-room debouncer that spaces out the
 * roomlist-consumer's room_members updates.
 */
#include <check.h>
#include <stdlib.h>

#include "minichat/debounce.h"

START_TEST(test_zero_interval_is_always_due)
{
    mc_debounce_t d;

    mc_debounce_init(&d, 0);
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 1000), 1);
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 1000), 1);
    ck_assert_uint_eq(mc_debounce_dirty(&d), 0);
    ck_assert_ptr_null(d.slots);
    mc_debounce_free(&d);
}
END_TEST

START_TEST(test_touch_and_take)
{
    mc_debounce_t d;
    uint64_t ids[8];

    mc_debounce_init(&d, 1000);
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 10000), 1); /* first touch: due */
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 10100), 0); /* within the interval: dirty */
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 10200), 0);
    ck_assert_int_eq(mc_debounce_touch(&d, 8, 10200), 1);
    ck_assert_uint_eq(mc_debounce_dirty(&d), 1);

    ck_assert_uint_eq(mc_debounce_take(&d, 10999, 0, ids, 8), 0); /* not yet */
    ck_assert_uint_eq(mc_debounce_take(&d, 11000, 0, ids, 8), 1);
    ck_assert_uint_eq(ids[0], 7);
    ck_assert_uint_eq(mc_debounce_dirty(&d), 0);

    /* taken at 11000: the next touch within the interval is dirty again */
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 11500), 0);
    /* a dirty room stays dirty, even after its interval, until taken */
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 13000), 0);
    ck_assert_uint_eq(mc_debounce_take(&d, 11500, 1, ids, 8), 1); /* force */
    ck_assert_uint_eq(mc_debounce_dirty(&d), 0);
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 12600), 1);
    mc_debounce_free(&d);
}
END_TEST

START_TEST(test_restore_after_failure)
{
    mc_debounce_t d;
    uint64_t ids[4] = {7, 9};

    mc_debounce_init(&d, 1000);
    ck_assert_int_eq(mc_debounce_touch(&d, 7, 5000), 1);
    /* writing 7 (and 9, never seen) failed: both are dirty and due at once */
    ck_assert_int_eq(mc_debounce_restore(&d, ids, 2), 0);
    ck_assert_uint_eq(mc_debounce_dirty(&d), 2);
    ck_assert_uint_eq(mc_debounce_take(&d, 5001, 0, ids, 4), 2);
    ck_assert_uint_eq(ids[0] + ids[1], 16);
    ck_assert_uint_eq(mc_debounce_dirty(&d), 0);
    mc_debounce_free(&d);
}
END_TEST

START_TEST(test_many_rooms_and_sweep)
{
    mc_debounce_t d;
    uint64_t *ids, room;
    size_t n, bad;

    ids = malloc(100000 * sizeof(*ids));
    ck_assert_ptr_nonnull(ids);
    mc_debounce_init(&d, 1000);
    /* check records every assertion it passes (a write each), so the loops
     * count mismatches and assert once: 300,000 assertions took seconds under
     * ASan on a busy box and hit the test timeout */
    bad = 0;
    for (room = 1; room <= 50000; room++) {
        bad += mc_debounce_touch(&d, room, 0) != 1;
        bad += mc_debounce_touch(&d, room, 10) != 0;
    }
    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_eq(mc_debounce_dirty(&d), 50000);
    n = mc_debounce_take(&d, 999, 0, ids, 100000);
    ck_assert_uint_eq(n, 0);
    n = mc_debounce_take(&d, 1000, 0, ids, 100);   /* bounded by max */
    ck_assert_uint_eq(n, 100);
    n = mc_debounce_take(&d, 1000, 0, ids, 100000);
    ck_assert_uint_eq(n, 49900);

    /* later, other rooms, one per ms: clean entries older than the interval are
     * swept at each rebuild, so the table holds about one interval's rooms */
    for (room = 100001; room <= 300000; room++) {
        bad += mc_debounce_touch(&d, room, 100000 + (int64_t)room) != 1;
    }
    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_le(d.used, 10000);
    ck_assert_uint_le(d.cap, 16384);
    ck_assert_int_eq(mc_debounce_touch(&d, 1, 200000), 1);
    mc_debounce_free(&d);
    free(ids);
}
END_TEST

static Suite *debounce_suite(void)
{
    Suite *s = suite_create("debounce");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_zero_interval_is_always_due);
    tcase_add_test(tc, test_touch_and_take);
    tcase_add_test(tc, test_restore_after_failure);
    tcase_add_test(tc, test_many_rooms_and_sweep);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(debounce_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
