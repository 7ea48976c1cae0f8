/*
 * Unit tests for lib/src/prom_text.c: Prometheus text lines, label
 * escaping, and histograms made cumulative with _count equal to +Inf.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/prom_text.h"

START_TEST(test_family_and_sample)
{
    mc_buf_t b = MC_BUF_INIT;
    mc_prom_label_t l[2] = {{"peer", "b"}, {"state", "up"}};

    ck_assert_int_eq(mc_prom_family(&b, "x_total", "counter", "Things\\done\nhere"), 0);
    ck_assert_int_eq(mc_prom_sample(&b, "x_total", NULL, 0, 42), 0);
    ck_assert_int_eq(mc_prom_sample(&b, "x_total", l, 2, 0.25), 0);
    ck_assert_int_eq(mc_prom_sample(&b, "x_total", l, 1, 18446744073709551615.0), 0);
    ck_assert_str_eq(b.data, "# HELP x_total Things\\\\done\\nhere\n# TYPE x_total counter\n"
                             "x_total 42\nx_total{peer=\"b\",state=\"up\"} 0.25\nx_total{peer=\"b\"} 1.84467440737096e+19\n");
    mc_buf_free(&b);
}
END_TEST

START_TEST(test_label_escaping)
{
    mc_buf_t b = MC_BUF_INIT;
    mc_prom_label_t l = {"node", "a\"b\\c\nd"};

    ck_assert_int_eq(mc_prom_sample(&b, "g", &l, 1, -3), 0);
    ck_assert_str_eq(b.data, "g{node=\"a\\\"b\\\\c\\nd\"} -3\n");
    mc_buf_reset(&b);
    ck_assert_int_eq(mc_prom_single(&b, "u", "gauge", "", 7), 0);
    ck_assert_str_eq(b.data, "# HELP u \n# TYPE u gauge\nu 7\n");
    mc_buf_free(&b);
}
END_TEST

START_TEST(test_singles_table)
{
    const mc_prom_single_t t[] = {{"a_total", "counter", "A", 1}, {"b", "gauge", "B", -1.5}};
    mc_buf_t b = MC_BUF_INIT;

    ck_assert_int_eq(mc_prom_singles(&b, t, 2), 0);
    ck_assert_str_eq(b.data, "# HELP a_total A\n# TYPE a_total counter\na_total 1\n"
                             "# HELP b B\n# TYPE b gauge\nb -1.5\n");
    mc_buf_free(&b);
}
END_TEST

START_TEST(test_by_label)
{
    static const char *const reasons[] = {"deadlock", "lock_wait"};
    const uint64_t n[] = {3, 0};
    mc_buf_t b = MC_BUF_INIT;

    ck_assert_int_eq(mc_prom_by_label(&b, "r_total", "counter", "R", "reason", reasons, n, 2), 0);
    ck_assert_str_eq(b.data, "# HELP r_total R\n# TYPE r_total counter\n"
                             "r_total{reason=\"deadlock\"} 3\nr_total{reason=\"lock_wait\"} 0\n");
    mc_buf_free(&b);
}
END_TEST

START_TEST(test_histogram)
{
    static const uint64_t bounds[] = {1000, 5000};
    mc_buf_t b = MC_BUF_INIT;
    mc_prom_label_t l = {"peer", "b"};
    mc_hist_t h;

    mc_hist_init(&h, bounds, 2, 1e-6);
    mc_hist_observe(&h, 1000);   /* le 0.001: a bound is inclusive */
    mc_hist_observe(&h, 1001);
    mc_hist_observe(&h, 9000000); /* +Inf */
    ck_assert_int_eq(mc_prom_hist(&b, "lat_seconds", &l, 1, &h), 0);
    ck_assert_str_eq(b.data, "lat_seconds_bucket{peer=\"b\",le=\"0.001\"} 1\n"
                             "lat_seconds_bucket{peer=\"b\",le=\"0.005\"} 2\n"
                             "lat_seconds_bucket{peer=\"b\",le=\"+Inf\"} 3\n"
                             "lat_seconds_sum{peer=\"b\"} 9.002001\n"
                             "lat_seconds_count{peer=\"b\"} 3\n");
    mc_buf_reset(&b);
    mc_hist_init(&h, mc_hist_sizes, mc_hist_sizes_n, 1);
    mc_hist_observe(&h, 3);
    ck_assert_int_eq(mc_prom_hist(&b, "batch", NULL, 0, &h), 0);
    ck_assert_ptr_nonnull(strstr(b.data, "batch_bucket{le=\"2\"} 0\nbatch_bucket{le=\"5\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "batch_bucket{le=\"10000\"} 1\nbatch_bucket{le=\"+Inf\"} 1\n"
                                         "batch_sum 3\nbatch_count 1\n"));
    mc_buf_free(&b);
}
END_TEST

START_TEST(test_histogram_bounds_cut)
{
    static uint64_t many[MC_HIST_BUCKETS_MAX + 5];
    mc_hist_t h;
    size_t i;

    for (i = 0; i < MC_HIST_BUCKETS_MAX + 5; i++) {
        many[i] = i + 1;
    }
    mc_hist_init(&h, many, MC_HIST_BUCKETS_MAX + 5, 1);
    ck_assert_uint_eq(h.n, MC_HIST_BUCKETS_MAX);
    mc_hist_observe(&h, 1000);
    ck_assert_uint_eq(h.counts[MC_HIST_BUCKETS_MAX], 1);
}
END_TEST

static Suite *prom_suite(void)
{
    Suite *s = suite_create("prom_text");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_family_and_sample);
    tcase_add_test(tc, test_label_escaping);
    tcase_add_test(tc, test_singles_table);
    tcase_add_test(tc, test_by_label);
    tcase_add_test(tc, test_histogram);
    tcase_add_test(tc, test_histogram_bounds_cut);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(prom_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
