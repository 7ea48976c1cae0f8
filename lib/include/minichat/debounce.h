/*
 * Per-room debouncing of a costly write: a room is "due" at most once per
 * interval; a room touched again sooner is remembered as dirty and handed out
 * by mc_debounce_take() once its interval has passed.  The roomlist-consumer
 * uses it for room_members.last_message_at, which costs one row (and one
 * secondary index entry) per member for every update.
 */
#ifndef MINICHAT_DEBOUNCE_H
#define MINICHAT_DEBOUNCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t room;    /* 0: empty slot */
    int64_t last_ms;  /* when the room was last handed out */
    int dirty;        /* touched since then */
} mc_debounce_entry_t;

typedef struct {
    mc_debounce_entry_t *slots;
    size_t cap;       /* a power of two, or 0 */
    size_t used;
    size_t dirty;
    int64_t interval_ms;
} mc_debounce_t;

/* An interval of 0 makes every touch due and keeps no state. */
void mc_debounce_init(mc_debounce_t *d, int64_t interval_ms);
void mc_debounce_free(mc_debounce_t *d);

/* Records a change to room at now.  Returns 1 when the room is due now (it is
 * then recorded as handed out), 0 when it was marked dirty, -1 when out of
 * memory (the caller should then treat the room as due). */
int mc_debounce_touch(mc_debounce_t *d, uint64_t room, int64_t now_ms);

/* Moves up to max dirty rooms whose interval has passed (every dirty room
 * when force) into ids, recording them as handed out at now.  Returns how many. */
size_t mc_debounce_take(mc_debounce_t *d, int64_t now_ms, int force, uint64_t *ids, size_t max);

/* Marks rooms dirty again, and due at once, after writing them failed.
 * Returns 0 or -1 when out of memory. */
int mc_debounce_restore(mc_debounce_t *d, const uint64_t *ids, size_t n);

/* Returns the number of dirty rooms. */
size_t mc_debounce_dirty(const mc_debounce_t *d);

#endif
