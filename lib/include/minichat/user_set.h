/*
 * A set of user ids: open addressing with linear probing in a power-of-two
 * table kept at most half full, deletion by shifting the probe run back (no
 * tombstones), so its memory follows the number of ids it holds: it grows
 * when it passes half full and shrinks when it falls under an eighth.  The
 * relay-worker keeps one per nginx worker connection: the users that
 * worker holds connections of (relay-worker/worker_link.c).
 *
 * Pure code, no locking; an all-zero struct is an empty set.
 */
#ifndef MINICHAT_USER_SET_H
#define MINICHAT_USER_SET_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *slot;  /* cap slots; 0 is an empty slot */
    size_t cap;      /* 0 or a power of two */
    size_t n;        /* ids held, the zero id included */
    int has_zero;    /* the id 0 lives here, not in a slot */
} mc_uset_t;

/* Adds id.  Returns 1 when added, 0 when it was there, -1 when out of
 * memory (the set is unchanged). */
int mc_uset_add(mc_uset_t *s, uint64_t id);
/* Removes id.  Returns 1 when removed, 0 when it was not there. */
int mc_uset_del(mc_uset_t *s, uint64_t id);
/* Returns 1 when the set holds id, else 0. */
int mc_uset_has(const mc_uset_t *s, uint64_t id);
/* Empties the set and frees its table. */
void mc_uset_clear(mc_uset_t *s);

#endif
