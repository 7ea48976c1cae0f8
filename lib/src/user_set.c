/*
 * A set of user ids (minichat/user_set.h).  Linear probing from a
 * multiplicative hash; a removal moves later members of the probe run back
 * into the hole, so a lookup stops at the first empty slot and no
 * tombstones pile up.
 */
#include <stdlib.h>

#include "minichat/user_set.h"

#define USET_MIN_CAP 16

static size_t uset_home(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ULL) >> 32) & (cap - 1);
}

/* Puts id (not 0, not present) into a table with room for it. */
static void uset_put(uint64_t *slot, size_t cap, uint64_t id)
{
    size_t i = uset_home(id, cap);

    while (slot[i] != 0) {
        i = (i + 1) & (cap - 1);
    }
    slot[i] = id;
}

/* Moves the ids into a table of cap slots.  Returns 0, or -1 when out of
 * memory (nothing changed). */
static int uset_resize(mc_uset_t *s, size_t cap)
{
    uint64_t *slot = calloc(cap, sizeof(*slot));
    size_t i;

    if (slot == NULL) {
        return -1;
    }
    for (i = 0; i < s->cap; i++) {
        if (s->slot[i] != 0) {
            uset_put(slot, cap, s->slot[i]);
        }
    }
    free(s->slot);
    s->slot = slot;
    s->cap = cap;
    return 0;
}

int mc_uset_has(const mc_uset_t *s, uint64_t id)
{
    size_t i;

    if (id == 0) {
        return s->has_zero;
    }
    if (s->cap == 0) {
        return 0;
    }
    for (i = uset_home(id, s->cap); s->slot[i] != 0; i = (i + 1) & (s->cap - 1)) {
        if (s->slot[i] == id) {
            return 1;
        }
    }
    return 0;
}

int mc_uset_add(mc_uset_t *s, uint64_t id)
{
    size_t in_slots = s->n - (size_t)s->has_zero;

    if (mc_uset_has(s, id)) {
        return 0;
    }
    if (id == 0) {
        s->has_zero = 1;
        s->n++;
        return 1;
    }
    if (2 * (in_slots + 1) > s->cap && uset_resize(s, s->cap ? 2 * s->cap : USET_MIN_CAP) != 0) {
        return -1;
    }
    uset_put(s->slot, s->cap, id);
    s->n++;
    return 1;
}

int mc_uset_del(mc_uset_t *s, uint64_t id)
{
    size_t i, j, home, mask = s->cap - 1;

    if (id == 0) {
        if (!s->has_zero) {
            return 0;
        }
        s->has_zero = 0;
        s->n--;
        return 1;
    }
    if (s->cap == 0) {
        return 0;
    }
    for (i = uset_home(id, s->cap); s->slot[i] != id; i = (i + 1) & mask) {
        if (s->slot[i] == 0) {
            return 0;
        }
    }
    /* shift the rest of the run back: an id may fill the hole at i when its
     * home is not in (i, j] (cyclically) */
    for (j = (i + 1) & mask; s->slot[j] != 0; j = (j + 1) & mask) {
        home = uset_home(s->slot[j], s->cap);
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            s->slot[i] = s->slot[j];
            i = j;
        }
    }
    s->slot[i] = 0;
    s->n--;
    if (s->cap > USET_MIN_CAP && 8 * (s->n - (size_t)s->has_zero) < s->cap) {
        (void)uset_resize(s, s->cap / 2); /* out of memory: keep the larger table */
    }
    return 1;
}

void mc_uset_clear(mc_uset_t *s)
{
    free(s->slot);
    s->slot = NULL;
    s->cap = 0;
    s->n = 0;
    s->has_zero = 0;
}
