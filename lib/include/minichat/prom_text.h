/*
 * Prometheus's text exposition format, version 0.0.4, written into a
 * growable buffer, and a histogram that any thread may observe into.  The
 * services' /metrics pages are built from these (relay-worker/metrics.c,
 * roomlist-consumer/metrics.c); docs/metrics.md lists what they show.
 *
 * Label values are escaped as the format asks (backslash, double quote and
 * newline get a backslash); label and family names are the caller's
 * constants and are not checked.  Values print as integers when they are
 * whole (below 2^53), otherwise with 15 significant digits.
 *
 * A histogram keeps one counter per bucket, not cumulative: an observation
 * is two relaxed atomic adds (its bucket and the sum), without a lock.  The
 * writer snapshots the buckets and makes them cumulative, and _count is the
 * +Inf bucket, so that the two always agree; a scrape that races with
 * observations sees each counter exact and the set as a moment's picture.
 * Values are observed as integers in a unit of the caller's (microseconds,
 * messages) and printed times `scale` (1e-6 prints microseconds as seconds).
 */
#ifndef MINICHAT_PROM_TEXT_H
#define MINICHAT_PROM_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "minichat/buf.h"

#define MC_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct {
    const char *name;
    const char *value;
} mc_prom_label_t;

/* Writes the # HELP and # TYPE lines of a family (type "counter", "gauge"
 * or "histogram").  Returns 0 or -1 when out of memory. */
int mc_prom_family(mc_buf_t *b, const char *name, const char *type, const char *help);

/* Writes one sample line: name{labels} value.  Returns 0 or -1. */
int mc_prom_sample(mc_buf_t *b, const char *name, const mc_prom_label_t *labels, size_t nlabels, double value);

/* A family with a single unlabelled sample: family lines and the sample. */
int mc_prom_single(mc_buf_t *b, const char *name, const char *type, const char *help, double value);

/* A family with one sample per value of one label: family lines, then
 * name{label="values[i]"} counts[i] for i < n.  Returns 0 or -1. */
int mc_prom_by_label(mc_buf_t *b, const char *name, const char *type, const char *help, const char *label,
                     const char *const *values, const uint64_t *counts, size_t n);

/* Such families one after another, from a table.  Returns 0 or -1. */
typedef struct {
    const char *name;
    const char *type;
    const char *help;
    double value;
} mc_prom_single_t;
int mc_prom_singles(mc_buf_t *b, const mc_prom_single_t *f, size_t n);

#define MC_HIST_BUCKETS_MAX 24

typedef struct {
    const uint64_t *bounds;                  /* upper bounds, ascending, in the observed unit */
    size_t n;                                /* bounds; at most MC_HIST_BUCKETS_MAX */
    double scale;                            /* printed = observed * scale */
    uint64_t counts[MC_HIST_BUCKETS_MAX + 1];  /* per bucket; [n] is above the last bound */
    uint64_t sum;
} mc_hist_t;

/* Latency bounds in microseconds (100 us .. 5 s, print with scale 1e-6),
 * and size bounds (1 .. 10,000, scale 1), with their lengths. */
extern const uint64_t mc_hist_latency_us[];
extern const size_t mc_hist_latency_n;
extern const uint64_t mc_hist_sizes[];
extern const size_t mc_hist_sizes_n;

/* Empties h and sets its buckets (n is cut to MC_HIST_BUCKETS_MAX). */
void mc_hist_init(mc_hist_t *h, const uint64_t *bounds, size_t n, double scale);
/* Counts one observation (any thread). */
void mc_hist_observe(mc_hist_t *h, uint64_t v);
/* Writes h's _bucket, _sum and _count lines under name and labels (the
 * family lines are the caller's: a labelled histogram has several).
 * Returns 0 or -1. */
int mc_prom_hist(mc_buf_t *b, const char *name, const mc_prom_label_t *labels, size_t nlabels, const mc_hist_t *h);

#endif
