/*
 * Unit tests for the set of user ids (lib/src/user_set.c): adds, removals
 * that shift probe runs back, growth and shrinking, the zero id, and a
 * random walk checked against a plain array.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/user_set.h"

START_TEST(test_add_has_del)
{
    mc_uset_t s;

    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(mc_uset_has(&s, 42), 0);
    ck_assert_int_eq(mc_uset_del(&s, 42), 0);
    ck_assert_int_eq(mc_uset_add(&s, 42), 1);
    ck_assert_int_eq(mc_uset_add(&s, 42), 0);
    ck_assert_int_eq(mc_uset_has(&s, 42), 1);
    ck_assert_int_eq(mc_uset_has(&s, 43), 0);
    ck_assert_uint_eq(s.n, 1);
    ck_assert_int_eq(mc_uset_del(&s, 42), 1);
    ck_assert_int_eq(mc_uset_has(&s, 42), 0);
    ck_assert_uint_eq(s.n, 0);
    mc_uset_clear(&s);
}
END_TEST

START_TEST(test_zero_id)
{
    mc_uset_t s;

    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(mc_uset_has(&s, 0), 0);
    ck_assert_int_eq(mc_uset_add(&s, 0), 1);
    ck_assert_int_eq(mc_uset_has(&s, 0), 1);
    ck_assert_ptr_null(s.slot); /* the zero id takes no slot */
    ck_assert_int_eq(mc_uset_del(&s, 0), 1);
    ck_assert_int_eq(mc_uset_has(&s, 0), 0);
    mc_uset_clear(&s);
}
END_TEST

START_TEST(test_grow_and_shrink)
{
    mc_uset_t s;
    uint64_t i;

    memset(&s, 0, sizeof(s));
    for (i = 1; i <= 10000; i++) {
        ck_assert_int_eq(mc_uset_add(&s, i * 64), 1); /* ids that share low bits */
    }
    ck_assert_uint_eq(s.n, 10000);
    ck_assert_uint_ge(s.cap, 20000);
    for (i = 1; i <= 10000; i++) {
        ck_assert_int_eq(mc_uset_has(&s, i * 64), 1);
        ck_assert_int_eq(mc_uset_has(&s, i * 64 + 1), 0);
    }
    for (i = 1; i <= 9990; i++) {
        ck_assert_int_eq(mc_uset_del(&s, i * 64), 1);
    }
    ck_assert_uint_le(s.cap, 128); /* memory follows the ids held */
    for (i = 9991; i <= 10000; i++) {
        ck_assert_int_eq(mc_uset_has(&s, i * 64), 1);
    }
    mc_uset_clear(&s);
    ck_assert_ptr_null(s.slot);
    ck_assert_uint_eq(s.n, 0);
}
END_TEST

/* Random adds and removals over a small id range (long probe runs, many
 * shifts) agree with a plain array at every step. */
START_TEST(test_random_walk)
{
    enum { RANGE = 300 };
    mc_uset_t s;
    char in[RANGE];
    uint64_t id;
    size_t n = 0;
    int i, k;

    memset(&s, 0, sizeof(s));
    memset(in, 0, sizeof(in));
    srand(7);
    for (i = 0; i < 200000; i++) {
        id = (uint64_t)(rand() % RANGE);
        if (rand() % 2) {
            ck_assert_int_eq(mc_uset_add(&s, id), !in[id]);
            n += !in[id];
            in[id] = 1;
        } else {
            ck_assert_int_eq(mc_uset_del(&s, id), in[id]);
            n -= in[id];
            in[id] = 0;
        }
        ck_assert_uint_eq(s.n, n);
        if (i % 1000 == 0) {
            for (k = 0; k < RANGE; k++) {
                ck_assert_int_eq(mc_uset_has(&s, (uint64_t)k), in[k]);
            }
        }
    }
    mc_uset_clear(&s);
}
END_TEST

static Suite *user_set_suite(void)
{
    Suite *s = suite_create("user_set");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_add_has_del);
    tcase_add_test(tc, test_zero_id);
    tcase_add_test(tc, test_grow_and_shrink);
    tcase_add_test(tc, test_random_walk);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(user_set_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
