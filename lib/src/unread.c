/* placeholder until the consumer branch's unread.c lands (merge takes theirs) */
#include <stdlib.h>
#include "minichat/unread.h"

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

void mc_unread_prepare(uint64_t *pointers, size_t n)
{
    if (n > 1) {
        qsort(pointers, n, sizeof(uint64_t), cmp_desc);
    }
}

void mc_unread_counts(const uint64_t *pointers, size_t n, const uint64_t *seqs, size_t count, uint32_t *out)
{
    size_t i, read = 0;

    for (i = 0; i < count; i++) {
        while (read < n && pointers[read] >= seqs[i]) {
            read++;
        }
        out[i] = (uint32_t)(n - read);
    }
}
