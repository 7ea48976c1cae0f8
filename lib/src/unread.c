/*
 * Per-message unread counts over the members' read pointers (see unread.h).
 *
 * The seed project walked its page oldest-first with the same cumulative
 * index and so handed the newest message the oldest message's count, and it
 * looked only at pointers that fell inside the page.  Here the pointers are
 * sorted highest first and the page is walked newest first: for the newest
 * message only the pointers at or above its seq have read it; each older
 * message adds the pointers between its seq and the previous one.  The index
 * j counts the pointers at or above the current seq, so it only grows, and
 * every pointer is looked at once however far above or below the page it
 * lies.
 */
#include <stdlib.h>

#include "minichat/unread.h"

static int unread_cmp_desc(const void *a, const void *b);

/* Orders uint64 values highest first (no subtraction: values reach 2^64 - 1). */
static int unread_cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x > y ? -1 : x < y;
}

void mc_unread_sort(uint64_t *reads, size_t m)
{
    if (m > 1) {
        qsort(reads, m, sizeof(*reads), unread_cmp_desc);
    }
}

int mc_unread_walk(const uint64_t *sorted_reads, size_t m, const uint64_t *page, size_t n, size_t *out)
{
    size_t i, j = 0;

    for (i = 0; i < n; i++) {
        if (i > 0 && page[i] > page[i - 1]) {
            return -1;
        }
        while (j < m && sorted_reads[j] >= page[i]) {
            j++;
        }
        out[i] = m - j;
    }
    return 0;
}

int mc_unread_counts(uint64_t *reads, size_t m, const uint64_t *page, size_t n, size_t *out)
{
    mc_unread_sort(reads, m);
    return mc_unread_walk(reads, m, page, n, out);
}
