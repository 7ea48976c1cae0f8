/*
 * Per-room reordering (see minichat/reorder.h for the contract).
 *
 * Rooms live in a chained hash table and, at the same time, on an LRU list
 * (most recently active at the tail) so that idle rooms are forgotten from
 * the head in O(1) each.  A room with waiting messages is also on the
 * `waiting` list with its deadline; ticks walk only that list.  Waiting
 * messages of a room are a singly linked list sorted by seq: the common case
 * is one or two messages waiting a few hundred microseconds for a peer.
 */
#include <stdlib.h>

#include "minichat/reorder.h"

typedef struct held_s {
    struct held_s *next;
    uint64_t seq;
    void *item;
} held_t;

typedef struct room_s {
    struct room_s *hnext;                 /* hash chain */
    struct room_s *lru_prev, *lru_next;
    struct room_s *wait_prev, *wait_next;
    uint64_t room;
    uint64_t next;                        /* next seq to release; 0 = position unknown */
    uint64_t deadline;
    uint64_t last_seen;
    held_t *held;
    size_t n_held;
    int waiting;
    /* seqs skipped as gaps, [lo, hi) each, the newest MC_REORDER_SKIPS
     * ranges: one of them arriving late is still released (out of order) */
    uint64_t skip_lo[MC_REORDER_SKIPS], skip_hi[MC_REORDER_SKIPS];
    unsigned skip_next;                   /* ring index of the next range */
} room_t;

struct mc_reorder_s {
    mc_reorder_conf_t conf;
    mc_reorder_emit_pt emit;
    mc_reorder_drop_pt drop;
    void *ctx;
    room_t **buckets;
    size_t nbuckets;
    room_t *lru_head, *lru_tail;
    room_t *wait_head;
    mc_reorder_stats_t stats;
};

static size_t bucket_of(const mc_reorder_t *r, uint64_t room)
{
    room ^= room >> 33;
    room *= 0xff51afd7ed558ccdULL;
    room ^= room >> 33;
    return (size_t)(room & (r->nbuckets - 1));
}

mc_reorder_t *mc_reorder_new(const mc_reorder_conf_t *conf, mc_reorder_emit_pt emit, mc_reorder_drop_pt drop,
                             void *ctx)
{
    mc_reorder_t *r;
    size_t n = 1024;

    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return NULL;
    }
    while (n < conf->max_rooms / 2 && n < ((size_t)1 << 24)) {
        n <<= 1;
    }
    r->buckets = calloc(n, sizeof(room_t *));
    if (r->buckets == NULL) {
        free(r);
        return NULL;
    }
    r->nbuckets = n;
    r->conf = *conf;
    if (r->conf.max_held == 0) {
        r->conf.max_held = 1;
    }
    r->emit = emit;
    r->drop = drop;
    r->ctx = ctx;
    return r;
}

static void lru_unlink(mc_reorder_t *r, room_t *st)
{
    if (st->lru_prev) {
        st->lru_prev->lru_next = st->lru_next;
    } else {
        r->lru_head = st->lru_next;
    }
    if (st->lru_next) {
        st->lru_next->lru_prev = st->lru_prev;
    } else {
        r->lru_tail = st->lru_prev;
    }
    st->lru_prev = st->lru_next = NULL;
}

static void lru_append(mc_reorder_t *r, room_t *st)
{
    st->lru_prev = r->lru_tail;
    st->lru_next = NULL;
    if (r->lru_tail) {
        r->lru_tail->lru_next = st;
    } else {
        r->lru_head = st;
    }
    r->lru_tail = st;
}

static void wait_set(mc_reorder_t *r, room_t *st, uint64_t deadline)
{
    st->deadline = deadline;
    if (st->waiting) {
        return;
    }
    st->waiting = 1;
    st->wait_prev = NULL;
    st->wait_next = r->wait_head;
    if (r->wait_head) {
        r->wait_head->wait_prev = st;
    }
    r->wait_head = st;
}

static void wait_clear(mc_reorder_t *r, room_t *st)
{
    if (!st->waiting) {
        return;
    }
    if (st->wait_prev) {
        st->wait_prev->wait_next = st->wait_next;
    } else {
        r->wait_head = st->wait_next;
    }
    if (st->wait_next) {
        st->wait_next->wait_prev = st->wait_prev;
    }
    st->wait_prev = st->wait_next = NULL;
    st->waiting = 0;
}

/* Removes a room that holds nothing from every structure and frees it. */
static void room_forget(mc_reorder_t *r, room_t *st)
{
    room_t **pp = &r->buckets[bucket_of(r, st->room)];

    while (*pp != st) {
        pp = &(*pp)->hnext;
    }
    *pp = st->hnext;
    lru_unlink(r, st);
    wait_clear(r, st);
    r->stats.rooms--;
    free(st);
}

/* Returns the room's state, creating it; NULL when out of memory. */
static room_t *room_get(mc_reorder_t *r, uint64_t room)
{
    size_t b = bucket_of(r, room);
    room_t *st;

    for (st = r->buckets[b]; st; st = st->hnext) {
        if (st->room == room) {
            return st;
        }
    }

    /* make room for one more by forgetting the least recent idle rooms */
    while (r->stats.rooms >= r->conf.max_rooms && r->lru_head && r->lru_head->n_held == 0) {
        room_forget(r, r->lru_head);
    }

    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return NULL;
    }
    st->room = room;
    st->hnext = r->buckets[b];
    r->buckets[b] = st;
    lru_append(r, st);
    r->stats.rooms++;
    return st;
}

/* Emits held messages from the room's position on, while they are consecutive. */
static void release(mc_reorder_t *r, room_t *st)
{
    held_t *h;

    while ((h = st->held) != NULL && h->seq == st->next) {
        st->held = h->next;
        st->n_held--;
        r->stats.held--;
        st->next++;
        r->stats.released++;
        r->emit(r->ctx, st->room, h->seq, h->item);
        free(h);
    }
}

/* Returns 1 when seq is more than max_ahead past base. */
static int too_far(const mc_reorder_t *r, uint64_t base, uint64_t seq)
{
    return r->conf.max_ahead && seq > base && seq - base > r->conf.max_ahead;
}

/* Drops the waiting messages more than max_ahead past base: a room whose
 * position is unknown starts at its lowest waiting seq (base), or at a
 * message after a quiet spell (mc_reorder_push_after), and must not start
 * there with a forged seq far past it still waiting. */
static void refuse_far_held(mc_reorder_t *r, room_t *st, uint64_t base)
{
    held_t **pp = &st->held, *h;

    while ((h = *pp) != NULL) {
        if (!too_far(r, base, h->seq)) {
            pp = &h->next;
            continue;
        }
        *pp = h->next;
        st->n_held--;
        r->stats.held--;
        r->stats.refused++;
        r->drop(r->ctx, st->room, h->seq, h->item);
        free(h);
    }
}

/* Remembers that [lo, hi) was skipped, forgetting the oldest range. */
static void skip_note(room_t *st, uint64_t lo, uint64_t hi)
{
    if (lo >= hi) {
        return;
    }
    st->skip_lo[st->skip_next] = lo;
    st->skip_hi[st->skip_next] = hi;
    st->skip_next = (st->skip_next + 1) % MC_REORDER_SKIPS;
}

/* Moves the room's position to its lowest waiting seq, counting what is skipped. */
static void skip_gap(mc_reorder_t *r, room_t *st)
{
    if (st->held == NULL) {
        return;
    }
    if (st->next) {
        r->stats.skipped += st->held->seq - st->next;
        skip_note(st, st->next, st->held->seq);
    } else {
        refuse_far_held(r, st, st->held->seq);
        /* the room starts past 1: what came before it never reached this
         * node (or did before the room was forgotten), so a repair of it
         * may still be released */
        skip_note(st, 1, st->held->seq);
    }
    st->next = st->held->seq;
    release(r, st);
}

/* Inserts into the sorted waiting list; returns 0, 1 for a duplicate, -1 on ENOMEM. */
static int hold(mc_reorder_t *r, room_t *st, uint64_t seq, void *item)
{
    held_t **pp = &st->held, *h;

    while (*pp && (*pp)->seq < seq) {
        pp = &(*pp)->next;
    }
    if (*pp && (*pp)->seq == seq) {
        return 1;
    }
    h = malloc(sizeof(*h));
    if (h == NULL) {
        return -1;
    }
    h->seq = seq;
    h->item = item;
    h->next = *pp;
    *pp = h;
    st->n_held++;
    r->stats.held++;
    return 0;
}

/* Takes seq out of the room's skipped ranges; returns 1 when it was there. */
static int unskip(room_t *st, uint64_t seq)
{
    unsigned i;

    for (i = 0; i < MC_REORDER_SKIPS; i++) {
        if (seq < st->skip_lo[i] || seq >= st->skip_hi[i]) {
            continue;
        }
        if (seq == st->skip_lo[i]) {
            st->skip_lo[i]++;
        } else if (seq == st->skip_hi[i] - 1) {
            st->skip_hi[i]--;
        }
        /* a seq inside a range stays in it: a second copy of it would be
         * released again, which a client that keeps seqs ignores */
        return 1;
    }
    return 0;
}

int mc_reorder_push(mc_reorder_t *r, uint64_t room, uint64_t seq, void *item, uint64_t now_ms)
{
    return mc_reorder_push_after(r, room, seq, item, now_ms, 0, 0);
}

/* The room's source left out the seqs before seq for this node: what waits
 * below seq goes now, in order, and the position moves to seq. */
static void jump_to(mc_reorder_t *r, room_t *st, uint64_t seq)
{
    if (st->next == 0) {
        if (seq == 1 || (st->held != NULL && st->held->seq < seq)) {
            return; /* seq 1 starts a room anyway; lower seqs waiting start it, seq waits its turn */
        }
        refuse_far_held(r, st, seq);
        skip_note(st, 1, seq);
        st->next = seq;
        r->stats.jumps++;
        return;
    }
    while (st->held != NULL && st->held->seq < seq) {
        skip_note(st, st->next, st->held->seq);
        st->next = st->held->seq;
        release(r, st);
    }
    if (seq > st->next) {
        skip_note(st, st->next, seq);
        st->next = seq;
        r->stats.jumps++;
        release(r, st); /* a copy of seq may wait already */
    }
}

int mc_reorder_push_after(mc_reorder_t *r, uint64_t room, uint64_t seq, void *item, uint64_t now_ms,
                          uint64_t after_ms, int skipped_before)
{
    room_t *st;
    uint64_t before, first_hold;
    int rc;

    st = room_get(r, room);
    if (st == NULL) {
        r->drop(r->ctx, room, seq, item);
        return -1;
    }
    st->last_seen = now_ms;
    lru_unlink(r, st);
    lru_append(r, st);

    if (st->next && seq < st->next && unskip(st, seq)) {
        /* skipped here: nobody on this node has it, better late than never */
        r->stats.recovered++;
        r->stats.released++;
        r->emit(r->ctx, room, seq, item);
        return 0;
    }
    if (st->next && seq < st->next) {
        r->stats.late++;
        r->drop(r->ctx, room, seq, item);
        return 0;
    }
    if (st->next && !skipped_before && too_far(r, st->next, seq)) {
        r->stats.refused++;
        r->drop(r->ctx, room, seq, item);
        return MC_REORDER_AHEAD;
    }

    before = st->next;

    if (skipped_before) {
        jump_to(r, st, seq);
        if (st->next > seq) {
            /* a copy of seq was waiting and went with the jump: a repeat */
            r->stats.late++;
            r->drop(r->ctx, room, seq, item);
            if (st->held == NULL) {
                wait_clear(r, st);
            } else {
                wait_set(r, st, now_ms + r->conf.gap_ms);
            }
            return 0;
        }
    }

    if (st->next == 0 && seq == 1) {
        st->next = 1;   /* nothing precedes the first message of a room */
    }

    /* a room with no position: its previous seq was admitted after_ms
     * before this one, so it comes at most first_hold_ms - after_ms after
     * this one (the bound the first hold stands for); a quiet room's next
     * message starts the room at once */
    first_hold = r->conf.first_hold_ms;
    if (st->next == 0 && after_ms > 0) {
        if (after_ms >= first_hold) {
            if (st->held == NULL || seq < st->held->seq) {
                refuse_far_held(r, st, seq);
                skip_note(st, 1, seq);
                st->next = seq;
                r->stats.quiet_starts++;
            }
        } else if (st->held == NULL) {
            first_hold -= after_ms;
        }
    }

    if (st->next && seq == st->next && (st->held == NULL || st->held->seq > seq)) {
        st->next++;
        r->stats.released++;
        r->emit(r->ctx, room, seq, item);
    } else {
        rc = hold(r, st, seq, item);
        if (rc != 0) {
            if (rc == 1) {
                r->stats.late++;
            }
            r->drop(r->ctx, room, seq, item);
            return rc == 1 ? 0 : -1;
        }
        if (!st->waiting) {
            wait_set(r, st, now_ms + (st->next ? r->conf.gap_ms : first_hold));
        }
    }

    if (st->next) {
        release(r, st);
    }
    if (st->n_held > r->conf.max_held) {
        skip_gap(r, st);
    }
    if (st->held == NULL) {
        wait_clear(r, st);
    } else if (st->next != before) {
        /* progress was made; the next gap gets its own full wait (a push
         * without progress leaves an overdue deadline as it is) */
        wait_set(r, st, now_ms + r->conf.gap_ms);
    }
    return 0;
}

void mc_reorder_tick(mc_reorder_t *r, uint64_t now_ms)
{
    room_t *st, *next;

    for (st = r->wait_head; st; st = next) {
        next = st->wait_next;
        if (st->deadline > now_ms) {
            continue;
        }
        skip_gap(r, st);
        if (st->held) {
            st->deadline = now_ms + r->conf.gap_ms;
        } else {
            wait_clear(r, st);
        }
    }

    /* now_ms may trail a push made by another thread after the caller read
     * its clock: never treat that as a wrapped, huge idle time */
    while (r->lru_head && r->lru_head->n_held == 0 && now_ms >= r->lru_head->last_seen
           && now_ms - r->lru_head->last_seen >= r->conf.idle_ms) {
        room_forget(r, r->lru_head);
    }
}

int64_t mc_reorder_timeout(const mc_reorder_t *r, uint64_t now_ms)
{
    const room_t *st;
    int64_t best = -1;

    for (st = r->wait_head; st; st = st->wait_next) {
        int64_t t = st->deadline > now_ms ? (int64_t)(st->deadline - now_ms) : 0;
        if (best < 0 || t < best) {
            best = t;
        }
    }
    return best;
}

void mc_reorder_stats(const mc_reorder_t *r, mc_reorder_stats_t *stats)
{
    *stats = r->stats;
}

void mc_reorder_free(mc_reorder_t *r)
{
    room_t *st, *next;
    held_t *h;

    if (r == NULL) {
        return;
    }
    for (st = r->lru_head; st; st = next) {
        next = st->lru_next;
        while ((h = st->held) != NULL) {
            st->held = h->next;
            r->drop(r->ctx, st->room, h->seq, h->item);
            free(h);
        }
        free(st);
    }
    free(r->buckets);
    free(r);
}
