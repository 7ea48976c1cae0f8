/*
 * Latency histogram (see loadgen.h): a fixed array of counters that runners
 * fill in the shared mapping and the parent adds up, so that no sample is
 * kept.  Values below 64 us have a bucket each; above, a power of two is
 * split into 64 buckets, so a quantile is off by less than 1/64 of itself.
 */
#include "loadgen.h"

/* Returns the bucket of us. */
static size_t bucket(uint64_t us)
{
    unsigned e;

    if (us < LG_HIST_SUB) {
        return (size_t)us;
    }
    e = 63u - (unsigned)__builtin_clzll(us); /* 2^e <= us, e >= 6 */
    if (e >= 40) {
        return LG_HIST_BUCKETS - 1;
    }
    return (size_t)(e - 5) * LG_HIST_SUB + (size_t)((us >> (e - 6)) & (LG_HIST_SUB - 1));
}

/* Returns the largest value of bucket i. */
static uint64_t bucket_top(size_t i)
{
    unsigned e;

    if (i < LG_HIST_SUB) {
        return i;
    }
    e = (unsigned)(i / LG_HIST_SUB) + 5;
    return ((uint64_t)(LG_HIST_SUB + i % LG_HIST_SUB + 1) << (e - 6)) - 1;
}

void lg_hist_add(lg_hist_t *h, uint64_t us)
{
    h->count[bucket(us)]++;
    h->n++;
    if (us > h->max) {
        h->max = us;
    }
}

void lg_hist_merge(lg_hist_t *into, const lg_hist_t *from)
{
    size_t i;

    for (i = 0; i < LG_HIST_BUCKETS; i++) {
        into->count[i] += from->count[i];
    }
    into->n += from->n;
    if (from->max > into->max) {
        into->max = from->max;
    }
}

uint64_t lg_hist_quantile(const lg_hist_t *h, double q)
{
    uint64_t want, seen = 0, top;
    size_t i;

    if (h->n == 0) {
        return 0;
    }
    want = (uint64_t)(q * (double)h->n);
    if (want >= h->n) {
        want = h->n - 1;
    }
    for (i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen > want) {
            top = bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}
