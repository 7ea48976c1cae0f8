/*
 * A pool of equal-sized memory blocks, for buffers that a hot path takes and
 * gives back many times a second (a WebSocket connection's output buffer,
 * taken for each delivery and given back once written).  Given-back blocks
 * are kept on a free list, at most `keep` of them, and handed out again
 * before new ones are allocated; the rest go back to malloc.  Not
 * thread-safe: one pool per thread (an nginx worker has one).
 *
 * Why not malloc alone: a fan-out gives a thousand connections a block each
 * and takes them back in the same turn.  glibc's per-thread cache holds 7
 * blocks of a size, so the rest take malloc's slow path (a request of 1 KiB
 * or more first consolidates the fast bins), and the heap's top is trimmed
 * and faulted in again between bursts.
 */
#ifndef MINICHAT_BLOCKPOOL_H
#define MINICHAT_BLOCKPOOL_H

#include <stddef.h>

typedef struct mc_blockpool_s mc_blockpool_t;

typedef struct {
    size_t kept;       /* blocks on the free list now */
    size_t allocated;  /* blocks taken from malloc, ever */
    size_t reused;     /* blocks handed out from the free list, ever */
    size_t released;   /* blocks given back to malloc (the list was full), ever */
} mc_blockpool_stats_t;

/* A pool of blocks of `size` bytes (> 0) that keeps at most `keep` free
 * blocks.  NULL when out of memory. */
mc_blockpool_t *mc_blockpool_new(size_t size, size_t keep);
/* Frees the pool and its free blocks (blocks still out are the holders'). */
void mc_blockpool_free(mc_blockpool_t *p);

/* The block size. */
size_t mc_blockpool_size(const mc_blockpool_t *p);
/* A block of the pool's size: from the free list, else malloc.  NULL when
 * out of memory. */
void *mc_blockpool_get(mc_blockpool_t *p);
/* Gives a block of this pool back (NULL: nothing).  Kept for reuse while
 * the free list holds fewer than `keep`, else freed. */
void mc_blockpool_put(mc_blockpool_t *p, void *block);
/* Frees every kept block (after a burst, to hand the memory back). */
void mc_blockpool_trim(mc_blockpool_t *p);

void mc_blockpool_stats(const mc_blockpool_t *p, mc_blockpool_stats_t *st);

#endif
