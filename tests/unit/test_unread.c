/*
 * Unit tests for lib/src/unread.c: per-message unread counts from the
 * members' read pointers, including the two mistakes of the seed project (a
 * page walked oldest first, pointers outside the page ignored) and a
 * brute-force comparison on random inputs.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/unread.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* The O(n*m) definition: pointers below each seq. */
static void reference(const uint64_t *reads, size_t m, const uint64_t *page, size_t n, size_t *out)
{
    size_t i, j;

    for (i = 0; i < n; i++) {
        out[i] = 0;
        for (j = 0; j < m; j++) {
            out[i] += reads[j] < page[i];
        }
    }
}

/* The seed's walk: pointers sorted lowest first, the page walked oldest
 * first with a cumulative count of the pointers below each seq (right so
 * far), but the counts stored in walk order, so the newest message gets the
 * oldest one's count: inverted. */
static void oldest_first_walk(uint64_t *reads, size_t m, const uint64_t *page, size_t n, size_t *out)
{
    size_t i, j = 0, k, t;
    uint64_t x;

    for (i = 0; i < m; i++) {
        for (k = i + 1; k < m; k++) {
            if (reads[k] < reads[i]) {
                x = reads[i], reads[i] = reads[k], reads[k] = x;
            }
        }
    }
    for (t = 0; t < n; t++) {
        i = n - 1 - t;
        while (j < m && reads[j] < page[i]) {
            j++;
        }
        out[t] = j;
    }
}

/* Returns a random 64-bit value (rand() gives 31 bits). */
static uint64_t rand64(void)
{
    return ((uint64_t)rand() << 62) ^ ((uint64_t)rand() << 31) ^ (uint64_t)rand();
}

START_TEST(test_newest_first_not_inverted)
{
    /* members read up to 5, 3 and nothing; the page is seqs 6..1, newest first */
    uint64_t reads[] = {3, 0, 5}, copy[3];
    uint64_t page[] = {6, 5, 4, 3, 2, 1};
    size_t want[] = {3, 2, 2, 1, 1, 1}, out[6], bad[6];

    ck_assert_int_eq(mc_unread_counts(reads, NELEMS(reads), page, NELEMS(page), out), 0);
    ck_assert_mem_eq(out, want, sizeof(want));
    /* the newest message is the least read: counts never grow towards older messages */
    ck_assert_uint_gt(out[0], out[5]);

    /* the case tells the two walks apart: an oldest-first walk fails it */
    memcpy(copy, reads, sizeof(copy));
    oldest_first_walk(copy, NELEMS(copy), page, NELEMS(page), bad);
    ck_assert_int_ne(memcmp(bad, want, sizeof(want)), 0);
    ck_assert_uint_lt(bad[0], bad[5]);
}
END_TEST

START_TEST(test_pointers_outside_the_page_count)
{
    /* page 20..18; one pointer above it (read everything), one far below
     * (read nothing here), one inside */
    uint64_t reads[] = {100, 2, 19};
    uint64_t page[] = {20, 19, 18};
    size_t want[] = {2, 1, 1}, out[3];

    ck_assert_int_eq(mc_unread_counts(reads, NELEMS(reads), page, NELEMS(page), out), 0);
    ck_assert_mem_eq(out, want, sizeof(want));
}
END_TEST

START_TEST(test_all_outside_the_page)
{
    uint64_t reads[] = {1, 1000, 0, 50000};
    uint64_t page[] = {40, 39, 10};
    size_t want[] = {2, 2, 2}, out[3];

    ck_assert_int_eq(mc_unread_counts(reads, NELEMS(reads), page, NELEMS(page), out), 0);
    ck_assert_mem_eq(out, want, sizeof(want));
}
END_TEST

START_TEST(test_empty_page_and_no_members)
{
    uint64_t reads[] = {4, 2};
    uint64_t page[] = {3, 2, 1};
    size_t out[3] = {9, 9, 9};

    ck_assert_int_eq(mc_unread_counts(reads, 2, page, 0, out), 0);
    ck_assert_uint_eq(out[0], 9); /* nothing written */
    ck_assert_int_eq(mc_unread_counts(NULL, 0, page, 3, out), 0);
    ck_assert_uint_eq(out[0], 0);
    ck_assert_uint_eq(out[1], 0);
    ck_assert_uint_eq(out[2], 0);
    ck_assert_int_eq(mc_unread_counts(NULL, 0, NULL, 0, NULL), 0);
}
END_TEST

START_TEST(test_duplicates)
{
    /* equal pointers, and a page with a repeated seq (tolerated: non-increasing) */
    uint64_t reads[] = {7, 7, 7, 3, 3};
    uint64_t page[] = {8, 7, 7, 4, 3};
    size_t want[] = {5, 2, 2, 2, 0}, out[5];

    ck_assert_int_eq(mc_unread_counts(reads, NELEMS(reads), page, NELEMS(page), out), 0);
    ck_assert_mem_eq(out, want, sizeof(want));
}
END_TEST

START_TEST(test_all_read)
{
    uint64_t reads[] = {10, 12, 11};
    uint64_t page[] = {10, 9, 1};
    size_t out[3];

    ck_assert_int_eq(mc_unread_counts(reads, NELEMS(reads), page, NELEMS(page), out), 0);
    ck_assert_uint_eq(out[0] + out[1] + out[2], 0);
}
END_TEST

START_TEST(test_huge_values)
{
    uint64_t top = UINT64_MAX, big = 1ULL << 63;
    uint64_t reads[] = {big, top, big - 1, 0};
    uint64_t page[] = {top, big + 1, big, big - 1, 1};
    size_t want[] = {3, 3, 2, 1, 1}, out[5];

    ck_assert_int_eq(mc_unread_counts(reads, NELEMS(reads), page, NELEMS(page), out), 0);
    ck_assert_mem_eq(out, want, sizeof(want));
    ck_assert_uint_eq(reads[0], top); /* sorted in place, highest first */
    ck_assert_uint_eq(reads[3], 0);
}
END_TEST

START_TEST(test_page_not_newest_first)
{
    uint64_t reads[] = {1};
    uint64_t page[] = {3, 4};
    size_t out[2];

    ck_assert_int_eq(mc_unread_counts(reads, 1, page, 2, out), -1);
}
END_TEST

START_TEST(test_random_against_reference)
{
    uint64_t reads[64], copy[64], page[80], span;
    size_t out[80], want[80], m, n, i;
    int round;

    srand(12345);
    for (round = 0; round < 5000; round++) {
        m = (size_t)rand() % 65;
        n = (size_t)rand() % 81;
        /* small spans give many ties; the occasional huge one tests the full range */
        span = round % 10 == 0 ? UINT64_MAX : (uint64_t)(rand() % 200) + 1;
        for (i = 0; i < m; i++) {
            reads[i] = span == UINT64_MAX ? rand64() : rand64() % span;
        }
        page[0] = span == UINT64_MAX ? rand64() : rand64() % (span + 20);
        for (i = 1; i < n; i++) {
            uint64_t step = (uint64_t)(rand() % 4);
            page[i] = page[i - 1] >= step ? page[i - 1] - step : 0;
        }
        memcpy(copy, reads, m * sizeof(*reads));
        reference(reads, m, page, n, want);
        /* check records every assertion it passes (a write each): call it
         * only on a mismatch, or 200,000 passing checks take seconds under ASan */
        if (mc_unread_counts(copy, m, page, n, out) != 0) {
            ck_abort_msg("round %d: mc_unread_counts failed", round);
        }
        for (i = 0; i < n; i++) {
            if (out[i] != want[i]) {
                ck_abort_msg("round %d: page[%zu]=%llu got %zu want %zu", round, i,
                             (unsigned long long)page[i], out[i], want[i]);
            }
        }
    }
}
END_TEST

static Suite *unread_suite(void)
{
    Suite *s = suite_create("unread");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_newest_first_not_inverted);
    tcase_add_test(tc, test_pointers_outside_the_page_count);
    tcase_add_test(tc, test_all_outside_the_page);
    tcase_add_test(tc, test_empty_page_and_no_members);
    tcase_add_test(tc, test_duplicates);
    tcase_add_test(tc, test_all_read);
    tcase_add_test(tc, test_huge_values);
    tcase_add_test(tc, test_page_not_newest_first);
    tcase_add_test(tc, test_random_against_reference);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(unread_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
