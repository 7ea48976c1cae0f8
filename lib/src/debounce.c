/*
 * Per-room debouncing (see debounce.h).
 *
 * An open-addressing hash table keyed by room id (0 marks an empty slot) with
 * linear probing, kept at most half full.  Nothing is ever deleted in place:
 * when the table fills up it is rebuilt, and the rebuild drops every entry
 * that is clean and older than the interval, because such an entry behaves
 * exactly like an absent one (the next touch is due).  So the table holds
 * about the rooms active within one interval, not every room ever seen.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/debounce.h"

#define MC_DEBOUNCE_MIN_CAP 64
#define MC_DEBOUNCE_LONG_AGO (INT64_MIN / 2)

static size_t debounce_slot(const mc_debounce_t *d, uint64_t room);
static int debounce_rebuild(mc_debounce_t *d, int64_t now_ms, int drop_stale);
static mc_debounce_entry_t *debounce_get(mc_debounce_t *d, uint64_t room, int64_t now_ms, int drop_stale);

void mc_debounce_init(mc_debounce_t *d, int64_t interval_ms)
{
    memset(d, 0, sizeof(*d));
    d->interval_ms = interval_ms;
}

void mc_debounce_free(mc_debounce_t *d)
{
    free(d->slots);
    mc_debounce_init(d, d->interval_ms);
}

/* Returns the slot holding room, or the empty slot where it belongs. */
static size_t debounce_slot(const mc_debounce_t *d, uint64_t room)
{
    uint64_t h = room * 0x9e3779b97f4a7c15ULL;
    size_t i = (size_t)(h ^ (h >> 29)) & (d->cap - 1);

    while (d->slots[i].room != 0 && d->slots[i].room != room) {
        i = (i + 1) & (d->cap - 1);
    }
    return i;
}

/* Rehashes into a table sized for the live entries, dropping clean entries
 * older than the interval when drop_stale.  Returns 0 or -1 when out of memory. */
static int debounce_rebuild(mc_debounce_t *d, int64_t now_ms, int drop_stale)
{
    mc_debounce_t nd;
    mc_debounce_entry_t *e;
    size_t i, live = 0;

    for (i = 0; i < d->cap; i++) {
        e = &d->slots[i];
        if (e->room != 0 && !(drop_stale && !e->dirty && now_ms - e->last_ms >= d->interval_ms)) {
            live++;
        }
    }

    nd = *d;
    nd.cap = MC_DEBOUNCE_MIN_CAP;
    while (nd.cap < 4 * (live + 1)) {
        nd.cap *= 2;
    }
    nd.slots = calloc(nd.cap, sizeof(*nd.slots));
    if (nd.slots == NULL) {
        return -1;
    }
    nd.used = 0;

    for (i = 0; i < d->cap; i++) {
        e = &d->slots[i];
        if (e->room != 0 && !(drop_stale && !e->dirty && now_ms - e->last_ms >= d->interval_ms)) {
            nd.slots[debounce_slot(&nd, e->room)] = *e;
            nd.used++;
        }
    }

    free(d->slots);
    *d = nd;
    return 0;
}

/* Returns room's entry, adding a clean, long-ago one if absent; NULL when out of memory. */
static mc_debounce_entry_t *debounce_get(mc_debounce_t *d, uint64_t room, int64_t now_ms, int drop_stale)
{
    mc_debounce_entry_t *e;

    if (d->cap == 0 || (d->used + 1) * 2 > d->cap) {
        if (debounce_rebuild(d, now_ms, drop_stale) != 0) {
            return NULL;
        }
    }
    e = &d->slots[debounce_slot(d, room)];
    if (e->room == 0) {
        e->room = room;
        e->last_ms = MC_DEBOUNCE_LONG_AGO;
        e->dirty = 0;
        d->used++;
    }
    return e;
}

int mc_debounce_touch(mc_debounce_t *d, uint64_t room, int64_t now_ms)
{
    mc_debounce_entry_t *e;

    if (d->interval_ms <= 0) {
        return 1;
    }
    e = debounce_get(d, room, now_ms, 1);
    if (e == NULL) {
        return -1;
    }
    if (!e->dirty && now_ms - e->last_ms >= d->interval_ms) {
        e->last_ms = now_ms;
        return 1;
    }
    if (!e->dirty) {
        e->dirty = 1;
        d->dirty++;
    }
    return 0;
}

size_t mc_debounce_take(mc_debounce_t *d, int64_t now_ms, int force, uint64_t *ids, size_t max)
{
    mc_debounce_entry_t *e;
    size_t i, n = 0;

    for (i = 0; i < d->cap && n < max && d->dirty > 0; i++) {
        e = &d->slots[i];
        if (e->room != 0 && e->dirty && (force || now_ms - e->last_ms >= d->interval_ms)) {
            ids[n++] = e->room;
            e->dirty = 0;
            e->last_ms = now_ms;
            d->dirty--;
        }
    }
    return n;
}

int mc_debounce_restore(mc_debounce_t *d, const uint64_t *ids, size_t n)
{
    mc_debounce_entry_t *e;
    size_t i;

    if (d->interval_ms <= 0) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        e = debounce_get(d, ids[i], 0, 0);
        if (e == NULL) {
            return -1;
        }
        if (!e->dirty) {
            e->dirty = 1;
            d->dirty++;
        }
        e->last_ms = MC_DEBOUNCE_LONG_AGO;
    }
    return 0;
}

size_t mc_debounce_dirty(const mc_debounce_t *d)
{
    return d->dirty;
}
