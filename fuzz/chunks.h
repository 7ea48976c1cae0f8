/*
 * Cutting a fuzzer's input into pieces, for the targets that check that
 * streaming code gives the same answer however its input arrives.  The
 * first bytes of an input choose the cuts, the rest is the data, so the
 * fuzzer mutates both.  Header-only: each target is one program.
 */
#ifndef MINICHAT_FUZZ_CHUNKS_H
#define MINICHAT_FUZZ_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state;
} fuzz_chunks_t;

/* Takes up to 4 bytes off the front of *data for the seed of the cuts. */
static inline void fuzz_chunks_init(fuzz_chunks_t *c, const uint8_t **data, size_t *size)
{
    size_t i;

    c->state = 0x9e3779b9u;
    for (i = 0; i < 4 && *size > 0; i++) {
        c->state = (c->state << 8) ^ (c->state >> 24) ^ **data;
        (*data)++;
        (*size)--;
    }
    if (c->state == 0) {
        c->state = 1;
    }
}

/* Returns the length of the next piece, 1..left (left > 0): mostly small,
 * sometimes everything that is left. */
static inline size_t fuzz_chunks_next(fuzz_chunks_t *c, size_t left)
{
    uint32_t x = c->state;
    size_t n;

    /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c->state = x;
    if ((x & 7) == 0) {
        return left;
    }
    n = 1 + (x >> 8) % 16;
    return n < left ? n : left;
}

#endif
