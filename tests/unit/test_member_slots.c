/*
 * Unit tests for the member lists already sent on a stream
 * (lib/src/member_slots.c): a sender's mirror and a receiver's table fed
 * the same frames agree on what the receiver holds.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/member_slots.h"

static const uint64_t ids_a[] = {42, 43, 44};
static const uint64_t ids_b[] = {42, 44};

START_TEST(test_send_then_has)
{
    mc_mslots_t sent, recv;
    const uint64_t *got;
    size_t n = 0;

    memset(&sent, 0, sizeof(sent));
    memset(&recv, 0, sizeof(recv));
    ck_assert_int_eq(mc_mslots_has(&sent, 12, 7), 0);
    ck_assert_ptr_null(mc_mslots_find(&recv, 12, 7, &n));

    mc_mslots_sent(&sent, 12, 7, 3);
    ck_assert_int_eq(mc_mslots_store(&recv, 12, 7, ids_a, 3), 0);
    ck_assert_int_eq(mc_mslots_has(&sent, 12, 7), 1);
    got = mc_mslots_find(&recv, 12, 7, &n);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(memcmp(got, ids_a, sizeof(ids_a)), 0);
    ck_assert_ptr_ne(got, ids_a); /* a copy */

    /* another version of the room (someone left) is not held */
    ck_assert_int_eq(mc_mslots_has(&sent, 12, 8), 0);
    ck_assert_ptr_null(mc_mslots_find(&recv, 12, 8, &n));
    mc_mslots_sent(&sent, 12, 8, 2);
    ck_assert_int_eq(mc_mslots_store(&recv, 12, 8, ids_b, 2), 0);
    got = mc_mslots_find(&recv, 12, 8, &n);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(memcmp(got, ids_b, sizeof(ids_b)), 0);
    /* and the older version is gone on both ends */
    ck_assert_int_eq(mc_mslots_has(&sent, 12, 7), 0);
    ck_assert_ptr_null(mc_mslots_find(&recv, 12, 7, &n));

    mc_mslots_clear(&recv);
    mc_mslots_clear(&sent);
    ck_assert_int_eq(mc_mslots_has(&sent, 12, 8), 0);
    ck_assert_ptr_null(mc_mslots_find(&recv, 12, 8, &n));
}
END_TEST

START_TEST(test_same_slot_replaces)
{
    mc_mslots_t sent, recv;
    size_t n = 0;
    uint64_t other = 12 + MC_MSLOTS; /* the same slot as room 12 */

    memset(&sent, 0, sizeof(sent));
    memset(&recv, 0, sizeof(recv));
    mc_mslots_sent(&sent, 12, 7, 3);
    ck_assert_int_eq(mc_mslots_store(&recv, 12, 7, ids_a, 3), 0);
    mc_mslots_sent(&sent, other, 7, 2);
    ck_assert_int_eq(mc_mslots_store(&recv, other, 7, ids_b, 2), 0);
    ck_assert_int_eq(mc_mslots_has(&sent, 12, 7), 0);
    ck_assert_ptr_null(mc_mslots_find(&recv, 12, 7, &n));
    ck_assert_int_eq(mc_mslots_has(&sent, other, 7), 1);
    ck_assert_ptr_nonnull(mc_mslots_find(&recv, other, 7, &n));
    ck_assert_uint_eq(n, 2);
    /* a room in another slot stays */
    mc_mslots_sent(&sent, 13, 1, 3);
    ck_assert_int_eq(mc_mslots_store(&recv, 13, 1, ids_a, 3), 0);
    ck_assert_int_eq(mc_mslots_has(&sent, other, 7), 1);
    ck_assert_ptr_nonnull(mc_mslots_find(&recv, other, 7, &n));
    mc_mslots_clear(&recv);
}
END_TEST

START_TEST(test_not_keepable)
{
    mc_mslots_t sent, recv;
    uint64_t *big;
    size_t n = 0;

    memset(&sent, 0, sizeof(sent));
    memset(&recv, 0, sizeof(recv));
    /* no version: never kept, so never left out */
    mc_mslots_sent(&sent, 12, 0, 3);
    ck_assert_int_eq(mc_mslots_store(&recv, 12, 0, ids_a, 3), 0);
    ck_assert_int_eq(mc_mslots_has(&sent, 12, 0), 0);
    ck_assert_ptr_null(mc_mslots_find(&recv, 12, 0, &n));
    /* room 0 neither */
    mc_mslots_sent(&sent, 0, 5, 3);
    ck_assert_int_eq(mc_mslots_has(&sent, 0, 5), 0);

    /* too long a list: both ends drop it the same way, and a list kept
     * before in that slot is gone on both */
    mc_mslots_sent(&sent, 12, 7, 3);
    ck_assert_int_eq(mc_mslots_store(&recv, 12, 7, ids_a, 3), 0);
    big = calloc(MC_MSLOTS_MAX_IDS + 1, sizeof(*big));
    ck_assert_ptr_nonnull(big);
    ck_assert_int_eq(mc_mslots_keepable(9, MC_MSLOTS_MAX_IDS), 1);
    ck_assert_int_eq(mc_mslots_keepable(9, MC_MSLOTS_MAX_IDS + 1), 0);
    mc_mslots_sent(&sent, 12, 9, MC_MSLOTS_MAX_IDS + 1);
    ck_assert_int_eq(mc_mslots_store(&recv, 12, 9, big, MC_MSLOTS_MAX_IDS + 1), 0);
    ck_assert_int_eq(mc_mslots_has(&sent, 12, 9), 0);
    ck_assert_ptr_null(mc_mslots_find(&recv, 12, 9, &n));
    free(big);
    mc_mslots_clear(&recv);
}
END_TEST

START_TEST(test_empty_list)
{
    mc_mslots_t recv;
    const uint64_t *got;
    size_t n = 99;

    memset(&recv, 0, sizeof(recv));
    ck_assert_int_eq(mc_mslots_store(&recv, 5, 3, NULL, 0), 0);
    got = mc_mslots_find(&recv, 5, 3, &n);
    ck_assert_ptr_nonnull(got); /* held, and empty */
    ck_assert_uint_eq(n, 0);
    mc_mslots_clear(&recv);
}
END_TEST

/* A random stream of frames: whatever the sender's mirror says is held, the
 * receiver holds, with the ids that were sent under that version. */
START_TEST(test_mirror_agrees)
{
    mc_mslots_t sent, recv;
    uint64_t ids[4], room, ver;
    const uint64_t *got;
    size_t n, i, k;
    unsigned seed = 12345;

    memset(&sent, 0, sizeof(sent));
    memset(&recv, 0, sizeof(recv));
    for (i = 0; i < 20000; i++) {
        room = 1 + rand_r(&seed) % 300;
        ver = 1 + rand_r(&seed) % 4;
        n = rand_r(&seed) % 4;
        for (k = 0; k < n; k++) {
            ids[k] = room * 100 + ver * 10 + k; /* a version's list is always the same */
        }
        if (mc_mslots_has(&sent, room, ver)) {
            got = mc_mslots_find(&recv, room, ver, &n);
            ck_assert_ptr_nonnull(got);
            for (k = 0; k < n; k++) {
                ck_assert_uint_eq(got[k], room * 100 + ver * 10 + k);
            }
        } else {
            mc_mslots_sent(&sent, room, ver, n);
            ck_assert_int_eq(mc_mslots_store(&recv, room, ver, ids, n), 0);
        }
    }
    mc_mslots_clear(&recv);
}
END_TEST

static Suite *member_slots_suite(void)
{
    Suite *s = suite_create("member_slots");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_send_then_has);
    tcase_add_test(tc, test_same_slot_replaces);
    tcase_add_test(tc, test_not_keepable);
    tcase_add_test(tc, test_empty_list);
    tcase_add_test(tc, test_mirror_agrees);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(member_slots_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
