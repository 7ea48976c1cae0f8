/*
 * Prometheus text format 0.0.4 and lock-free histograms (see
 * minichat/prom_text.h for the rules).  The format, in short: a family is
 * "# HELP name text" and "# TYPE name type" followed by its samples, one per
 * line, "name{label="value",...} number"; a histogram's samples are
 * name_bucket{le="bound"} (cumulative, ending with le="+Inf"), name_sum and
 * name_count.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "minichat/prom_text.h"

const uint64_t mc_hist_latency_us[] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
                                       500000, 1000000, 2500000, 5000000};
const size_t mc_hist_latency_n = sizeof(mc_hist_latency_us) / sizeof(mc_hist_latency_us[0]);
const uint64_t mc_hist_sizes[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};
const size_t mc_hist_sizes_n = sizeof(mc_hist_sizes) / sizeof(mc_hist_sizes[0]);

/* Appends s with the characters in `special` and newlines escaped by a
 * backslash (HELP text: backslash; label values: backslash, quote).
 * Returns 0 or -1. */
static int prom_escape(mc_buf_t *b, const char *s, const char *special)
{
    const char *run = s;

    for (; *s != '\0'; s++) {
        if (*s != '\n' && strchr(special, *s) == NULL) {
            continue;
        }
        if (mc_buf_append(b, run, (size_t)(s - run)) != 0
            || mc_buf_append(b, *s == '\n' ? "\\n" : (char[]){'\\', *s}, 2) != 0) {
            return -1;
        }
        run = s + 1;
    }
    return mc_buf_append(b, run, (size_t)(s - run));
}

/* Appends a number: whole values as integers, others with 15 digits. */
static int prom_number(mc_buf_t *b, double v)
{
    if (isnan(v)) {
        return mc_buf_append_str(b, "NaN");
    }
    if (isinf(v)) {
        return mc_buf_append_str(b, v > 0 ? "+Inf" : "-Inf");
    }
    /* whole and below 2^53 (no libm: the cast truncates) */
    if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(int64_t)v) {
        return mc_buf_appendf(b, "%.0f", v);
    }
    return mc_buf_appendf(b, "%.15g", v);
}

int mc_prom_family(mc_buf_t *b, const char *name, const char *type, const char *help)
{
    if (mc_buf_appendf(b, "# HELP %s ", name) != 0 || prom_escape(b, help, "\\") != 0
        || mc_buf_appendf(b, "\n# TYPE %s %s\n", name, type) != 0) {
        return -1;
    }
    return 0;
}

/* Appends name{labels (and `le` when not NULL)} without the value. */
static int prom_series(mc_buf_t *b, const char *name, const char *suffix, const mc_prom_label_t *labels,
                       size_t nlabels, const char *le)
{
    size_t i;

    if (mc_buf_append_str(b, name) != 0 || mc_buf_append_str(b, suffix) != 0) {
        return -1;
    }
    if (nlabels == 0 && le == NULL) {
        return 0;
    }
    if (mc_buf_append(b, "{", 1) != 0) {
        return -1;
    }
    for (i = 0; i < nlabels; i++) {
        if (mc_buf_appendf(b, "%s%s=\"", i ? "," : "", labels[i].name) != 0
            || prom_escape(b, labels[i].value, "\\\"") != 0 || mc_buf_append(b, "\"", 1) != 0) {
            return -1;
        }
    }
    if (le != NULL && mc_buf_appendf(b, "%sle=\"%s\"", nlabels ? "," : "", le) != 0) {
        return -1;
    }
    return mc_buf_append(b, "}", 1);
}

int mc_prom_sample(mc_buf_t *b, const char *name, const mc_prom_label_t *labels, size_t nlabels, double value)
{
    if (prom_series(b, name, "", labels, nlabels, NULL) != 0 || mc_buf_append(b, " ", 1) != 0
        || prom_number(b, value) != 0 || mc_buf_append(b, "\n", 1) != 0) {
        return -1;
    }
    return 0;
}

int mc_prom_single(mc_buf_t *b, const char *name, const char *type, const char *help, double value)
{
    if (mc_prom_family(b, name, type, help) != 0 || mc_prom_sample(b, name, NULL, 0, value) != 0) {
        return -1;
    }
    return 0;
}

int mc_prom_by_label(mc_buf_t *b, const char *name, const char *type, const char *help, const char *label,
                     const char *const *values, const uint64_t *counts, size_t n)
{
    mc_prom_label_t l;
    size_t i;

    if (mc_prom_family(b, name, type, help) != 0) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        l.name = label;
        l.value = values[i];
        if (mc_prom_sample(b, name, &l, 1, (double)counts[i]) != 0) {
            return -1;
        }
    }
    return 0;
}

int mc_prom_singles(mc_buf_t *b, const mc_prom_single_t *f, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (mc_prom_single(b, f[i].name, f[i].type, f[i].help, f[i].value) != 0) {
            return -1;
        }
    }
    return 0;
}

void mc_hist_init(mc_hist_t *h, const uint64_t *bounds, size_t n, double scale)
{
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
    h->n = n < MC_HIST_BUCKETS_MAX ? n : MC_HIST_BUCKETS_MAX;
    h->scale = scale;
}

void mc_hist_observe(mc_hist_t *h, uint64_t v)
{
    size_t i = 0;

    while (i < h->n && v > h->bounds[i]) {
        i++;
    }
    __atomic_fetch_add(&h->counts[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum, v, __ATOMIC_RELAXED);
}

int mc_prom_hist(mc_buf_t *b, const char *name, const mc_prom_label_t *labels, size_t nlabels, const mc_hist_t *h)
{
    uint64_t counts[MC_HIST_BUCKETS_MAX + 1], total = 0, sum;
    char le[32];
    size_t i;

    for (i = 0; i <= h->n; i++) {
        counts[i] = __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
    }
    sum = __atomic_load_n(&h->sum, __ATOMIC_RELAXED);
    for (i = 0; i <= h->n; i++) {
        total += counts[i];
        if (i < h->n) {
            snprintf(le, sizeof(le), "%.9g", (double)h->bounds[i] * h->scale);
        } else {
            memcpy(le, "+Inf", 5);
        }
        if (prom_series(b, name, "_bucket", labels, nlabels, le) != 0 || mc_buf_appendf(b, " %llu\n",
                                                                                         (unsigned long long)total)
            != 0) {
            return -1;
        }
    }
    if (prom_series(b, name, "_sum", labels, nlabels, NULL) != 0 || mc_buf_append(b, " ", 1) != 0
        || prom_number(b, (double)sum * h->scale) != 0 || mc_buf_append(b, "\n", 1) != 0
        || prom_series(b, name, "_count", labels, nlabels, NULL) != 0
        || mc_buf_appendf(b, " %llu\n", (unsigned long long)total) != 0) {
        return -1;
    }
    return 0;
}
