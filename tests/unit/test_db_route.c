/*
 * Unit tests for the database router's decisions (lib/src/db_route.c,
 * lib/src/db_ryw.c): GTID positions, round robin over replicas, the down
 * pause, the lag verdicts from sampled positions (including a stopped
 * replica and the unknown start), and the read-your-writes window with its
 * overflow to "everyone reads from the primary".
 */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "minichat/db_route.h"
#include "minichat/db_ryw.h"

static mc_gtid_pos_t pos(const char *s)
{
    mc_gtid_pos_t p;

    ck_assert_int_eq(mc_gtid_parse(s, strlen(s), &p), 0);
    return p;
}

START_TEST(test_gtid_parse)
{
    mc_gtid_pos_t p;
    static const char *bad[] = {"x", "0-1", "0-1-", "-1-2", "0-1-2,", "0-1-2;1-1-1", "0-1-99999999999999999999",
                                "4294967296-1-1", "0-1-1,1-1-1,2-1-1,3-1-1,4-1-1,5-1-1,6-1-1,7-1-1,8-1-1"};
    size_t i;

    p = pos("");
    ck_assert_uint_eq(p.n, 0);
    p = pos("0-1-42");
    ck_assert_uint_eq(p.n, 1);
    ck_assert_uint_eq(p.domain[0], 0);
    ck_assert_uint_eq(p.seq[0], 42);
    p = pos("0-1-42,3-2-7\n");
    ck_assert_uint_eq(p.n, 2);
    ck_assert_uint_eq(p.domain[1], 3);
    ck_assert_uint_eq(p.seq[1], 7);
    p = pos("0-1-5,0-2-9"); /* one domain, two servers: the higher seq */
    ck_assert_uint_eq(p.n, 1);
    ck_assert_uint_eq(p.seq[0], 9);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(mc_gtid_parse(bad[i], strlen(bad[i]), &p) == -1, "accepted \"%s\"", bad[i]);
    }
}
END_TEST

START_TEST(test_gtid_covers)
{
    mc_gtid_pos_t a = pos("0-1-10,1-1-5"), b;

    b = pos("0-1-10");
    ck_assert_int_eq(mc_gtid_covers(&a, &b), 1);
    b = pos("0-1-11");
    ck_assert_int_eq(mc_gtid_covers(&a, &b), 0);
    b = pos("2-1-1"); /* a domain the replica never saw */
    ck_assert_int_eq(mc_gtid_covers(&a, &b), 0);
    b = pos("");
    ck_assert_int_eq(mc_gtid_covers(&a, &b), 1);
    ck_assert_int_eq(mc_gtid_covers(&b, &b), 1);
    b = pos("1-9-5,0-2-3"); /* other server ids, other order */
    ck_assert_int_eq(mc_gtid_covers(&a, &b), 1);
}
END_TEST

START_TEST(test_round_robin_and_down)
{
    mc_db_route_t rt;

    mc_db_route_init(&rt, 3, 5000, 2000, 250);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1000), 0);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1000), 1);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1000), 2);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1000), 0);

    mc_db_route_down(&rt, 1, 1000);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1001), 2);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1001), 0);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1001), 2);
    /* the pause ends: back in turn */
    ck_assert_int_eq(mc_db_route_pick(&rt, 6000), 0);
    ck_assert_int_eq(mc_db_route_pick(&rt, 6000), 1);

    mc_db_route_down(&rt, 0, 6000);
    mc_db_route_down(&rt, 1, 6000);
    mc_db_route_down(&rt, 2, 6000);
    ck_assert_int_eq(mc_db_route_pick(&rt, 6001), -1);

    mc_db_route_init(&rt, 0, 5000, 2000, 250);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1), -1);
}
END_TEST

START_TEST(test_lag_due)
{
    mc_db_route_t rt;

    mc_db_route_init(&rt, 1, 5000, 2000, 250);
    ck_assert_int_eq(mc_db_route_lag_due(&rt, 0, 100), 1);
    mc_db_route_lag_unknown(&rt, 0, 100);
    ck_assert_int_eq(mc_db_route_lag_due(&rt, 0, 349), 0);
    ck_assert_int_eq(mc_db_route_lag_due(&rt, 0, 350), 1);
    mc_db_route_init(&rt, 1, 5000, 0, 250); /* max lag 0: never measured */
    ck_assert_int_eq(mc_db_route_lag_due(&rt, 0, 100), 0);
}
END_TEST

/* Measured between reads: a read measures only a verdict 2 periods old. */
START_TEST(test_lag_due_read)
{
    mc_db_route_t rt;

    mc_db_route_init(&rt, 1, 5000, 2000, 250);
    ck_assert_int_eq(mc_db_route_lag_due_read(&rt, 0, 100), 1); /* as before: due */
    rt.between = 1;
    ck_assert_int_eq(mc_db_route_lag_due_read(&rt, 0, 100), 1); /* never measured */
    mc_db_route_lag_unknown(&rt, 0, 100);
    ck_assert_int_eq(mc_db_route_lag_due(&rt, 0, 350), 1);      /* due for the refresh after a read */
    ck_assert_int_eq(mc_db_route_lag_due_read(&rt, 0, 350), 0); /* but not for the read itself */
    ck_assert_int_eq(mc_db_route_lag_due_read(&rt, 0, 599), 0);
    ck_assert_int_eq(mc_db_route_lag_due_read(&rt, 0, 600), 1); /* stale: the read measures */
    mc_db_route_init(&rt, 1, 5000, 0, 250);
    rt.between = 1;
    ck_assert_int_eq(mc_db_route_lag_due_read(&rt, 0, 100), 0);
}
END_TEST

START_TEST(test_lag_verdicts)
{
    mc_db_route_t rt;
    mc_gtid_pos_t p;
    int64_t t;

    mc_db_route_init(&rt, 2, 5000, 1000, 250);
    /* start: the replica has applied what the primary had */
    p = pos("0-1-10");
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 1000, &p, &p, 1), 0);
    /* start, the other one is behind the first sample: unknown = lagging */
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 1, 1000, &p, &(mc_gtid_pos_t){0}, 1), 1);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1000), 0);
    ck_assert_int_eq(mc_db_route_pick(&rt, 1000), 0);

    /* the primary moves on every check; replica 0 stays at 10-ish behind by
     * less than the bound, then falls behind for good */
    for (t = 1250; t <= 3000; t += 250) {
        mc_gtid_pos_t prim = {1, {0}, {(uint64_t)(10 + t / 250)}};
        mc_gtid_pos_t rep = {1, {0}, {(uint64_t)(10 + (t - 500) / 250)}}; /* 500 ms behind */
        ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, t, &prim, &rep, 1), 0);
    }
    for (t = 3250; t <= 4500; t += 250) {
        mc_gtid_pos_t prim = {1, {0}, {(uint64_t)(10 + t / 250)}};
        mc_gtid_pos_t rep = {1, {0}, {22}}; /* applied up to what the primary had at 3000 */
        int lag = mc_db_route_lag_measure(&rt, 0, t, &prim, &rep, 1);
        /* lagging once the sample of 3000 + 250 is 1000 ms old */
        ck_assert_int_eq(lag, t >= 4250);
    }
    ck_assert_int_eq(mc_db_route_pick(&rt, 4500), -1);
    /* it catches up */
    p = pos("0-1-99");
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 4750, &p, &p, 1), 0);
    ck_assert_int_eq(mc_db_route_pick(&rt, 4750), 0);
    /* replication stopped: lagging even with nothing written */
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 5000, &p, &p, 0), 1);
    ck_assert_int_eq(mc_db_route_pick(&rt, 5000), -1);
    /* a failed measurement: lagging until the next one */
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 5250, &p, &p, 1), 0);
    mc_db_route_lag_unknown(&rt, 0, 5500);
    ck_assert_int_eq(mc_db_route_pick(&rt, 5500), -1);
}
END_TEST

START_TEST(test_lag_after_quiet_spell)
{
    mc_db_route_t rt;
    mc_gtid_pos_t old = pos("0-1-10"), now = pos("0-1-20"), mid = pos("0-1-15");

    mc_db_route_init(&rt, 1, 5000, 2000, 250);
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 1000, &old, &old, 1), 0);
    /* no reads for a minute; the replica is behind the primary now: all we
     * know is that it is in step with a sample a minute old */
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 61000, &now, &mid, 1), 1);
    /* one check later it has applied what the primary had then */
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 61250, &now, &now, 1), 0);
    /* within the bound behind the last sample it applied */
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 63000, &(mc_gtid_pos_t){1, {0}, {30}}, &now, 1), 0);
    ck_assert_int_eq(mc_db_route_lag_measure(&rt, 0, 63300, &(mc_gtid_pos_t){1, {0}, {31}}, &now, 1), 1);
}
END_TEST
END_TEST

START_TEST(test_lag_samples_bounded)
{
    mc_db_route_t rt;
    mc_gtid_pos_t p;
    int64_t t;

    /* a bound far longer than the samples cover: memory stays fixed */
    mc_db_route_init(&rt, 1, 5000, 1000000, 1);
    for (t = 1; t < 10000; t++) {
        p = (mc_gtid_pos_t){1, {0}, {(uint64_t)t}};
        (void)mc_db_route_lag_measure(&rt, 0, t, &p, &p, 1);
        ck_assert_uint_le(rt.r[0].nsamples, MC_DB_LAG_SAMPLES);
    }
    ck_assert_int_eq(rt.r[0].lagging, 0);
}
END_TEST

START_TEST(test_ryw_window)
{
    mc_db_ryw_t *t = mc_db_ryw_new(2000, 64);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(mc_db_ryw_recent(t, 42, 1000), 0);
    mc_db_ryw_note(t, 42, 1000);
    ck_assert_int_eq(mc_db_ryw_recent(t, 42, 1000), 1);
    ck_assert_int_eq(mc_db_ryw_recent(t, 42, 2999), 1);
    ck_assert_int_eq(mc_db_ryw_recent(t, 42, 3000), 0);
    ck_assert_int_eq(mc_db_ryw_recent(t, 43, 1000), 0); /* another user reads from replicas */
    mc_db_ryw_note(t, 42, 2500); /* a second write extends the window */
    ck_assert_int_eq(mc_db_ryw_recent(t, 42, 4000), 1);
    mc_db_ryw_note(t, 0, 1000); /* no user: nothing recorded */
    ck_assert_int_eq(mc_db_ryw_recent(t, 0, 1000), 0);
    mc_db_ryw_free(t);

    t = mc_db_ryw_new(0, 64); /* off */
    mc_db_ryw_note(t, 42, 1000);
    ck_assert_int_eq(mc_db_ryw_recent(t, 42, 1000), 0);
    mc_db_ryw_free(t);
}
END_TEST

START_TEST(test_ryw_overflow)
{
    mc_db_ryw_t *t = mc_db_ryw_new(1000, 8); /* one probe run: 8 writers at most */
    uint64_t u;

    for (u = 1; u <= 8; u++) {
        mc_db_ryw_note(t, u, 100);
    }
    ck_assert_int_eq(mc_db_ryw_recent(t, 100, 100), 0);
    mc_db_ryw_note(t, 9, 500); /* no room: everybody to the primary until 1500 */
    for (u = 1; u <= 9; u++) {
        ck_assert_int_eq(mc_db_ryw_recent(t, u, 1000), 1);
    }
    ck_assert_int_eq(mc_db_ryw_recent(t, 100, 1499), 1);
    ck_assert_int_eq(mc_db_ryw_recent(t, 100, 1500), 0);
    /* the first writers' windows are over: their slots are reused */
    mc_db_ryw_note(t, 10, 1600);
    ck_assert_int_eq(mc_db_ryw_recent(t, 10, 1700), 1);
    ck_assert_int_eq(mc_db_ryw_recent(t, 11, 1700), 0);
    mc_db_ryw_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("db_route");
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_gtid_parse);
    tcase_add_test(tc, test_gtid_covers);
    tcase_add_test(tc, test_round_robin_and_down);
    tcase_add_test(tc, test_lag_due);
    tcase_add_test(tc, test_lag_due_read);
    tcase_add_test(tc, test_lag_verdicts);
    tcase_add_test(tc, test_lag_after_quiet_spell);
    tcase_add_test(tc, test_lag_samples_bounded);
    tcase_add_test(tc, test_ryw_window);
    tcase_add_test(tc, test_ryw_overflow);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
