/*
 * The recent writers of read-your-writes (see db_ryw.h): an open-addressing
 * table of (user, until_ms) with a fixed number of slots and a short probe
 * run, under one mutex (a DB thread holds it for a few dozen instructions
 * per query, next to a network round trip).
 *
 * A user has at most one entry, somewhere in the RYW_PROBE slots from its
 * home slot; an entry whose until_ms has passed is free for reuse.  A note
 * looks through the whole run for the user's own entry before it takes a
 * free slot, so no user is ever entered twice.  When a new writer
 * finds no empty, expired or own slot in its run, `all_until` (every user's
 * reads to the primary) is raised to its window's end: correctness first,
 * replica reads return once the burst of writers has passed.
 */
#include <pthread.h>
#include <stdlib.h>

#include "minichat/db_ryw.h"

#define RYW_PROBE 8

typedef struct {
    uint64_t user;     /* 0: never used */
    int64_t until_ms;
} ryw_slot_t;

struct mc_db_ryw_s {
    pthread_mutex_t lock;
    int64_t window_ms;
    int64_t all_until_ms;   /* the table overflowed: everybody's reads to the primary until then */
    size_t mask;
    ryw_slot_t *slots;
};

/* Returns the first slot of user's probe run. */
static size_t ryw_home(const mc_db_ryw_t *t, uint64_t user)
{
    user ^= user >> 33;
    user *= 0xff51afd7ed558ccdULL;
    user ^= user >> 33;
    return (size_t)user & t->mask;
}

mc_db_ryw_t *mc_db_ryw_new(int64_t window_ms, size_t slots)
{
    mc_db_ryw_t *t;
    size_t n = RYW_PROBE;

    while (n < slots) {
        n <<= 1;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    t->slots = calloc(n, sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->window_ms = window_ms;
    t->mask = n - 1;
    return t;
}

void mc_db_ryw_free(mc_db_ryw_t *t)
{
    if (t == NULL) {
        return;
    }
    pthread_mutex_destroy(&t->lock);
    free(t->slots);
    free(t);
}

void mc_db_ryw_note(mc_db_ryw_t *t, uint64_t user, int64_t now_ms)
{
    ryw_slot_t *s, *free_slot = NULL;
    size_t i, home;
    int64_t until;

    if (t == NULL || t->window_ms <= 0 || user == 0) {
        return;
    }
    until = now_ms + t->window_ms;
    home = ryw_home(t, user);
    pthread_mutex_lock(&t->lock);
    for (i = 0; i < RYW_PROBE; i++) {
        s = &t->slots[(home + i) & t->mask];
        if (s->user == user) {
            s->until_ms = until;
            pthread_mutex_unlock(&t->lock);
            return;
        }
        if (free_slot == NULL && (s->user == 0 || s->until_ms <= now_ms)) {
            free_slot = s;
        }
    }
    if (free_slot != NULL) {
        free_slot->user = user;
        free_slot->until_ms = until;
    } else if (until > t->all_until_ms) {
        t->all_until_ms = until;
    }
    pthread_mutex_unlock(&t->lock);
}

int mc_db_ryw_recent(mc_db_ryw_t *t, uint64_t user, int64_t now_ms)
{
    ryw_slot_t *s;
    size_t i, home;
    int recent = 0;

    if (t == NULL || t->window_ms <= 0 || user == 0) {
        return 0;
    }
    home = ryw_home(t, user);
    pthread_mutex_lock(&t->lock);
    if (now_ms < t->all_until_ms) {
        recent = 1;
    }
    for (i = 0; !recent && i < RYW_PROBE; i++) {
        s = &t->slots[(home + i) & t->mask];
        if (s->user == user) {
            recent = now_ms < s->until_ms;
            break;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return recent;
}
