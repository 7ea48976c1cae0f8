/* A pool of equal-sized memory blocks: see minichat/blockpool.h. */
#include <stdlib.h>

#include "minichat/blockpool.h"

/* a free block holds the link to the next one */
typedef struct block_s {
    struct block_s *next;
} block_t;

struct mc_blockpool_s {
    size_t size;
    size_t keep;
    block_t *free;
    mc_blockpool_stats_t st;
};

mc_blockpool_t *mc_blockpool_new(size_t size, size_t keep)
{
    mc_blockpool_t *p;

    if (size == 0) {
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    /* a free block must hold its link */
    p->size = size < sizeof(block_t) ? sizeof(block_t) : size;
    p->keep = keep;
    return p;
}

void mc_blockpool_trim(mc_blockpool_t *p)
{
    block_t *b;

    while ((b = p->free) != NULL) {
        p->free = b->next;
        free(b);
        p->st.released++;
    }
    p->st.kept = 0;
}

void mc_blockpool_free(mc_blockpool_t *p)
{
    if (p != NULL) {
        mc_blockpool_trim(p);
        free(p);
    }
}

size_t mc_blockpool_size(const mc_blockpool_t *p)
{
    return p->size;
}

void *mc_blockpool_get(mc_blockpool_t *p)
{
    block_t *b = p->free;

    if (b != NULL) {
        p->free = b->next;
        p->st.kept--;
        p->st.reused++;
        return b;
    }
    b = malloc(p->size);
    if (b != NULL) {
        p->st.allocated++;
    }
    return b;
}

void mc_blockpool_put(mc_blockpool_t *p, void *block)
{
    block_t *b = block;

    if (b == NULL) {
        return;
    }
    if (p->st.kept >= p->keep) {
        free(b);
        p->st.released++;
        return;
    }
    b->next = p->free;
    p->free = b;
    p->st.kept++;
}

void mc_blockpool_stats(const mc_blockpool_t *p, mc_blockpool_stats_t *st)
{
    *st = p->st;
}
