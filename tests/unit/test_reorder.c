/*
 * Unit tests for the per-room reorderer (minichat/reorder.h): release by seq,
 * the first hold of a new room, gap waits and skips, late and duplicate
 * drops, the max_held bound, the max_ahead bound (a forged huge seq must not
 * silence a room), idle forgetting and max_rooms eviction, freeing with held
 * messages, and a randomized property test over bounded shuffles.
 *
 * Every item is a malloc'ed record of its own (room, seq); emit and drop
 * check it, record it and free it, so ASan catches a leak, a double release
 * or an item handed to the wrong callback.  Time is always explicit.
 *
 * The TCase "regressions" holds tests for defects once found in reorder.c
 * (a new gap inheriting an old deadline, an overdue gap postponed by a push
 * without progress, a tick whose clock trails the last push).
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/reorder.h"

typedef struct {
    uint64_t room, seq;
} item_t;

typedef struct {
    uint64_t room, seq;
} ev_t;

typedef struct {
    ev_t *v;
    size_t n, cap;
} evs_t;

static evs_t emitted, dropped;
static size_t live_items;   /* items allocated and not yet handed back */

static void evs_add(evs_t *e, uint64_t room, uint64_t seq)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 64;
        e->v = realloc(e->v, e->cap * sizeof(*e->v));
        ck_assert_ptr_nonnull(e->v);
    }
    e->v[e->n].room = room;
    e->v[e->n].seq = seq;
    e->n++;
}

static void evs_reset(void)
{
    free(emitted.v);
    free(dropped.v);
    memset(&emitted, 0, sizeof(emitted));
    memset(&dropped, 0, sizeof(dropped));
    live_items = 0;
}

static void on_emit(void *ctx, uint64_t room, uint64_t seq, void *item)
{
    item_t *it = item;

    ck_assert_ptr_eq(ctx, &emitted);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(it->room, room);
    ck_assert_uint_eq(it->seq, seq);
    evs_add(&emitted, room, seq);
    free(it);
    live_items--;
}

static void on_drop(void *ctx, uint64_t room, uint64_t seq, void *item)
{
    item_t *it = item;

    ck_assert_ptr_eq(ctx, &emitted);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(it->room, room);
    ck_assert_uint_eq(it->seq, seq);
    evs_add(&dropped, room, seq);
    free(it);
    live_items--;
}

static const mc_reorder_conf_t base_conf = {
    .first_hold_ms = 50,
    .gap_ms = 100,
    .idle_ms = 1000,
    .max_held = 8,
    .max_rooms = 100,
};

static mc_reorder_t *mk(const mc_reorder_conf_t *conf)
{
    mc_reorder_t *r;

    evs_reset();
    r = mc_reorder_new(conf ? conf : &base_conf, on_emit, on_drop, &emitted);
    ck_assert_ptr_nonnull(r);
    return r;
}

static void done(mc_reorder_t *r)
{
    mc_reorder_free(r);
    ck_assert_uint_eq(live_items, 0);
    evs_reset();
}

/* A fresh item, counted live until the reorderer hands it back. */
static item_t *new_item(uint64_t room, uint64_t seq)
{
    item_t *it = malloc(sizeof(*it));

    ck_assert_ptr_nonnull(it);
    it->room = room;
    it->seq = seq;
    live_items++;
    return it;
}

/* Pushes a fresh item; returns what mc_reorder_push returned. */
static int push_rc(mc_reorder_t *r, uint64_t room, uint64_t seq, uint64_t now)
{
    return mc_reorder_push(r, room, seq, new_item(room, seq), now);
}

static void push(mc_reorder_t *r, uint64_t room, uint64_t seq, uint64_t now)
{
    ck_assert_int_eq(push_rc(r, room, seq, now), 0);
}

/* Asserts the emitted events from index `from` on are exactly room/seqs[0..n). */
static void expect_from(const evs_t *e, size_t from, uint64_t room, const uint64_t *seqs, size_t n)
{
    size_t i;

    ck_assert_uint_eq(e->n, from + n);
    for (i = 0; i < n; i++) {
        ck_assert_uint_eq(e->v[from + i].room, room);
        ck_assert_uint_eq(e->v[from + i].seq, seqs[i]);
    }
}

#define SEQS(...) ((const uint64_t[]){__VA_ARGS__}), (sizeof((const uint64_t[]){__VA_ARGS__}) / sizeof(uint64_t))
#define EXPECT_EMIT(from, room, ...) expect_from(&emitted, (from), (room), SEQS(__VA_ARGS__))
#define EXPECT_DROP(from, room, ...) expect_from(&dropped, (from), (room), SEQS(__VA_ARGS__))

static mc_reorder_stats_t stats_of(const mc_reorder_t *r)
{
    mc_reorder_stats_t s;

    memset(&s, 0xa5, sizeof(s));
    mc_reorder_stats(r, &s);
    return s;
}

/* ------------------------------------------------------------------------- */

START_TEST(test_in_order_released_immediately)
{
    mc_reorder_t *r = mk(NULL);
    mc_reorder_stats_t s;
    uint64_t i;

    ck_assert_int_eq(mc_reorder_timeout(r, 0), -1);
    for (i = 1; i <= 10; i++) {
        push(r, 7, i, 1000 + i);
        ck_assert_uint_eq(emitted.n, i);
        ck_assert_uint_eq(emitted.v[i - 1].room, 7);
        ck_assert_uint_eq(emitted.v[i - 1].seq, i);
        ck_assert_int_eq(mc_reorder_timeout(r, 1000 + i), -1);
    }
    s = stats_of(r);
    ck_assert_uint_eq(s.released, 10);
    ck_assert_uint_eq(s.late, 0);
    ck_assert_uint_eq(s.skipped, 0);
    ck_assert_uint_eq(s.rooms, 1);
    ck_assert_uint_eq(s.held, 0);
    ck_assert_uint_eq(dropped.n, 0);
    done(r);
}
END_TEST

START_TEST(test_new_room_seq1_immediate)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 42, 1, 5000);
    EXPECT_EMIT(0, 42, 1);
    ck_assert_int_eq(mc_reorder_timeout(r, 5000), -1);
    push(r, 43, 1, 5000);
    ck_assert_uint_eq(emitted.n, 2);
    ck_assert_uint_eq(emitted.v[1].room, 43);
    ck_assert_uint_eq(emitted.v[1].seq, 1);
    ck_assert_uint_eq(stats_of(r).rooms, 2);
    ck_assert_uint_eq(stats_of(r).held, 0);
    done(r);
}
END_TEST

START_TEST(test_first_hold_then_release)
{
    mc_reorder_t *r = mk(NULL);
    mc_reorder_stats_t s;

    push(r, 1, 5, 1000);
    ck_assert_uint_eq(emitted.n, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 1000), 50);
    push(r, 1, 6, 1010);
    push(r, 1, 8, 1020);
    ck_assert_uint_eq(emitted.n, 0);
    /* later messages do not extend the first hold */
    ck_assert_int_eq(mc_reorder_timeout(r, 1020), 30);
    ck_assert_int_eq(mc_reorder_timeout(r, 1049), 1);
    s = stats_of(r);
    ck_assert_uint_eq(s.held, 3);
    mc_reorder_tick(r, 1049);
    ck_assert_uint_eq(emitted.n, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 1050), 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 2000), 0);
    mc_reorder_tick(r, 1050);
    EXPECT_EMIT(0, 1, 5, 6);
    s = stats_of(r);
    ck_assert_uint_eq(s.held, 1);
    ck_assert_uint_eq(s.skipped, 0);   /* nothing below the start counts as skipped */
    /* 8 now waits a full gap for 7 */
    ck_assert_int_eq(mc_reorder_timeout(r, 1050), 100);
    push(r, 1, 7, 1060);
    EXPECT_EMIT(0, 1, 5, 6, 7, 8);
    ck_assert_int_eq(mc_reorder_timeout(r, 1060), -1);
    /* the room now has a position: 4, before its start, never came here,
     * so it is released late, once; then it is late */
    push(r, 1, 4, 1070);
    EXPECT_EMIT(0, 1, 5, 6, 7, 8, 4);
    push(r, 1, 4, 1071);
    EXPECT_DROP(0, 1, 4);
    s = stats_of(r);
    ck_assert_uint_eq(s.late, 1);
    ck_assert_uint_eq(s.recovered, 1);
    ck_assert_uint_eq(s.released, 5);
    ck_assert_uint_eq(s.skipped, 0);
    ck_assert_uint_eq(s.held, 0);
    done(r);
}
END_TEST

START_TEST(test_first_hold_lower_arrives)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 3, 6, 0);
    push(r, 3, 5, 10);
    ck_assert_uint_eq(emitted.n, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 10), 40);
    mc_reorder_tick(r, 49);
    ck_assert_uint_eq(emitted.n, 0);
    mc_reorder_tick(r, 50);
    EXPECT_EMIT(0, 3, 5, 6);
    ck_assert_int_eq(mc_reorder_timeout(r, 50), -1);
    ck_assert_uint_eq(stats_of(r).skipped, 0);
    ck_assert_uint_eq(stats_of(r).held, 0);
    push(r, 3, 7, 60);
    EXPECT_EMIT(0, 3, 5, 6, 7);
    done(r);
}
END_TEST

START_TEST(test_first_hold_seq1_arrives)
{
    mc_reorder_t *r = mk(NULL);

    /* 3 then 2 then 1 within the first hold: 1 fixes the position at once */
    push(r, 4, 3, 0);
    push(r, 4, 2, 5);
    ck_assert_uint_eq(emitted.n, 0);
    push(r, 4, 1, 10);
    EXPECT_EMIT(0, 4, 1, 2, 3);
    ck_assert_int_eq(mc_reorder_timeout(r, 10), -1);
    ck_assert_uint_eq(stats_of(r).held, 0);
    done(r);
}
END_TEST

/* Pushes a fresh item whose room's previous seq was admitted after_ms earlier. */
static void push_after(mc_reorder_t *r, uint64_t room, uint64_t seq, uint64_t now, uint64_t after_ms)
{
    ck_assert_int_eq(mc_reorder_push_after(r, room, seq, new_item(room, seq), now, after_ms, 0), 0);
}

START_TEST(test_quiet_start)
{
    mc_reorder_t *r = mk(NULL);
    mc_reorder_stats_t s;

    /* the previous seq was admitted 60 ms before (first hold 50): no wait */
    push_after(r, 1, 5, 1000, 60);
    EXPECT_EMIT(0, 1, 5);
    ck_assert_int_eq(mc_reorder_timeout(r, 1000), -1);
    push_after(r, 1, 6, 1001, 1);
    EXPECT_EMIT(0, 1, 5, 6);
    /* what came before the start never reached this node: released late, once */
    push(r, 1, 4, 1002);
    EXPECT_EMIT(0, 1, 5, 6, 4);
    push(r, 1, 4, 1003);
    EXPECT_DROP(0, 1, 4);
    s = stats_of(r);
    ck_assert_uint_eq(s.quiet_starts, 1);
    ck_assert_uint_eq(s.recovered, 1);
    ck_assert_uint_eq(s.skipped, 0);
    ck_assert_uint_eq(s.held, 0);
    /* exactly the first hold is enough */
    push_after(r, 2, 9, 1010, 50);
    EXPECT_EMIT(3, 2, 9);
    done(r);
}
END_TEST

START_TEST(test_quiet_shortens_first_hold)
{
    mc_reorder_t *r = mk(NULL);

    /* 20 ms since the previous seq: the lower one is due within 30 ms */
    push_after(r, 1, 5, 1000, 20);
    ck_assert_uint_eq(emitted.n, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 1000), 30);
    push_after(r, 1, 7, 1005, 1);
    ck_assert_int_eq(mc_reorder_timeout(r, 1005), 25);
    mc_reorder_tick(r, 1029);
    ck_assert_uint_eq(emitted.n, 0);
    mc_reorder_tick(r, 1030);
    EXPECT_EMIT(0, 1, 5);
    /* 7 waits a full gap for 6 */
    ck_assert_int_eq(mc_reorder_timeout(r, 1030), 100);
    push(r, 1, 6, 1040);
    EXPECT_EMIT(0, 1, 5, 6, 7);
    /* a lower seq within the shortened hold still goes first */
    push_after(r, 2, 3, 1100, 10);
    push(r, 2, 2, 1120);
    mc_reorder_tick(r, 1140);
    EXPECT_EMIT(3, 2, 2, 3);
    /* not known (0): the whole first hold, as mc_reorder_push */
    push_after(r, 3, 8, 1200, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 1200), 50);
    mc_reorder_tick(r, 1250);
    EXPECT_EMIT(5, 3, 8);
    ck_assert_uint_eq(stats_of(r).quiet_starts, 0);
    done(r);
}
END_TEST

START_TEST(test_quiet_start_below_held)
{
    mc_reorder_t *r = mk(NULL);
    mc_reorder_conf_t c = base_conf;
    mc_reorder_stats_t s;

    /* 7 came first, not knowing; 5 after a quiet spell starts the room */
    push(r, 1, 7, 1000);
    push_after(r, 1, 5, 1010, 500);
    EXPECT_EMIT(0, 1, 5);
    ck_assert_int_eq(mc_reorder_timeout(r, 1010), 100);
    push(r, 1, 6, 1020);
    EXPECT_EMIT(0, 1, 5, 6, 7);
    /* one above what waits does not start it: it waits with them */
    push(r, 2, 4, 1100);
    push_after(r, 2, 6, 1110, 500);
    ck_assert_uint_eq(emitted.n, 3);
    mc_reorder_tick(r, 1150);
    EXPECT_EMIT(3, 2, 4);
    push(r, 2, 5, 1160);
    EXPECT_EMIT(3, 2, 4, 5, 6);
    ck_assert_uint_eq(stats_of(r).quiet_starts, 1);
    done(r);

    /* a forged seq far past the start is refused, not kept waiting */
    c.max_ahead = 100;
    r = mk(&c);
    push(r, 3, 100000, 1000);
    push_after(r, 3, 10, 1001, 1000);
    EXPECT_EMIT(0, 3, 10);
    EXPECT_DROP(0, 3, 100000);
    s = stats_of(r);
    ck_assert_uint_eq(s.refused, 1);
    ck_assert_uint_eq(s.held, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 1001), -1);
    done(r);
}
END_TEST

START_TEST(test_skipped_before_jumps)
{
    mc_reorder_conf_t c = base_conf;
    mc_reorder_t *r;
    mc_reorder_stats_t s;

    c.max_ahead = 100;
    r = mk(&c);
    push(r, 1, 1, 1000);
    push(r, 1, 2, 1001);
    /* the source left out 3..8 for this node: 9 goes at once */
    ck_assert_int_eq(mc_reorder_push_after(r, 1, 9, new_item(1, 9), 1002, 0, 1), 0);
    EXPECT_EMIT(0, 1, 1, 2, 9);
    ck_assert_int_eq(mc_reorder_timeout(r, 1002), -1);
    push(r, 1, 10, 1003);
    EXPECT_EMIT(0, 1, 1, 2, 9, 10);
    /* one of them from another source: late, released once */
    push(r, 1, 5, 1004);
    EXPECT_EMIT(0, 1, 1, 2, 9, 10, 5);
    s = stats_of(r);
    ck_assert_uint_eq(s.jumps, 1);
    ck_assert_uint_eq(s.skipped, 0);
    ck_assert_uint_eq(s.recovered, 1);

    /* what waits below the jump goes first, in order */
    push(r, 1, 12, 1010);
    push(r, 1, 14, 1011);
    ck_assert_uint_eq(emitted.n, 5);
    ck_assert_int_eq(mc_reorder_push_after(r, 1, 17, new_item(1, 17), 1012, 0, 1), 0);
    EXPECT_EMIT(5, 1, 12, 14, 17);
    ck_assert_int_eq(mc_reorder_timeout(r, 1012), -1);

    /* far past the position: the source said so, not refused */
    ck_assert_int_eq(mc_reorder_push_after(r, 1, 5000, new_item(1, 5000), 1020, 0, 1), 0);
    EXPECT_EMIT(8, 1, 5000);
    ck_assert_uint_eq(stats_of(r).refused, 0);

    /* a room with no position starts there */
    ck_assert_int_eq(mc_reorder_push_after(r, 2, 40, new_item(2, 40), 1030, 0, 1), 0);
    EXPECT_EMIT(9, 2, 40);
    /* not with a lower seq waiting: that one starts the room */
    push(r, 3, 3, 1040);
    ck_assert_int_eq(mc_reorder_push_after(r, 3, 6, new_item(3, 6), 1041, 0, 1), 0);
    ck_assert_uint_eq(emitted.n, 10);
    mc_reorder_tick(r, 1090);
    EXPECT_EMIT(10, 3, 3);
    push(r, 3, 4, 1091);
    push(r, 3, 5, 1092);
    EXPECT_EMIT(10, 3, 3, 4, 5, 6);
    ck_assert_uint_eq(stats_of(r).jumps, 4);

    /* the seq it jumps to waits already (a copy from another source): it
     * goes with the jump, the flagged copy is a repeat */
    push(r, 4, 1, 1100);
    push(r, 4, 5, 1101);
    ck_assert_int_eq(mc_reorder_push_after(r, 4, 5, new_item(4, 5), 1102, 0, 1), 0);
    EXPECT_EMIT(14, 4, 1, 5);
    EXPECT_DROP(0, 4, 5);
    ck_assert_uint_eq(stats_of(r).held, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 1102), -1);
    push(r, 4, 6, 1103);
    EXPECT_EMIT(14, 4, 1, 5, 6);
    /* seq 1 with the flag and no position: starts the room as any seq 1, no jump */
    ck_assert_int_eq(mc_reorder_push_after(r, 5, 1, new_item(5, 1), 1110, 0, 1), 0);
    EXPECT_EMIT(17, 5, 1);
    ck_assert_uint_eq(stats_of(r).jumps, 5);
    done(r);
}
END_TEST

START_TEST(test_gap_filled)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 9, 1, 0);
    push(r, 9, 2, 1);
    push(r, 9, 4, 2);
    EXPECT_EMIT(0, 9, 1, 2);
    ck_assert_int_eq(mc_reorder_timeout(r, 2), 100);
    ck_assert_uint_eq(stats_of(r).held, 1);
    mc_reorder_tick(r, 50);
    EXPECT_EMIT(0, 9, 1, 2);
    push(r, 9, 3, 52);
    EXPECT_EMIT(0, 9, 1, 2, 3, 4);
    ck_assert_int_eq(mc_reorder_timeout(r, 52), -1);
    ck_assert_uint_eq(stats_of(r).held, 0);
    ck_assert_uint_eq(stats_of(r).skipped, 0);
    ck_assert_uint_eq(stats_of(r).released, 4);
    ck_assert_uint_eq(dropped.n, 0);
    done(r);
}
END_TEST

START_TEST(test_gap_skipped)
{
    mc_reorder_t *r = mk(NULL);
    mc_reorder_stats_t s;

    push(r, 9, 1, 0);
    push(r, 9, 2, 0);
    push(r, 9, 4, 0);
    push(r, 9, 5, 20);
    EXPECT_EMIT(0, 9, 1, 2);
    ck_assert_int_eq(mc_reorder_timeout(r, 20), 80);
    mc_reorder_tick(r, 99);
    EXPECT_EMIT(0, 9, 1, 2);
    mc_reorder_tick(r, 100);
    EXPECT_EMIT(0, 9, 1, 2, 4, 5);
    s = stats_of(r);
    ck_assert_uint_eq(s.skipped, 1);
    ck_assert_uint_eq(s.held, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 100), -1);
    /* the skipped seq arriving afterwards is released out of order, once */
    push(r, 9, 3, 110);
    EXPECT_EMIT(0, 9, 1, 2, 4, 5, 3);
    ck_assert_uint_eq(stats_of(r).recovered, 1);
    push(r, 9, 3, 111);
    EXPECT_DROP(0, 9, 3);
    ck_assert_uint_eq(stats_of(r).late, 1);
    push(r, 9, 6, 120);
    EXPECT_EMIT(0, 9, 1, 2, 4, 5, 3, 6);

    /* a wider gap counts every missing seq */
    push(r, 9, 10, 130);
    mc_reorder_tick(r, 230);
    EXPECT_EMIT(0, 9, 1, 2, 4, 5, 3, 6, 10);
    ck_assert_uint_eq(stats_of(r).skipped, 4);
    done(r);
}
END_TEST

START_TEST(test_two_gaps_skipped_in_turn)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 2, 1, 0);
    push(r, 2, 3, 0);
    push(r, 2, 5, 0);
    EXPECT_EMIT(0, 2, 1);
    mc_reorder_tick(r, 100);
    EXPECT_EMIT(0, 2, 1, 3);
    ck_assert_uint_eq(stats_of(r).skipped, 1);
    /* the second gap gets its own wait from the tick that skipped the first */
    ck_assert_int_eq(mc_reorder_timeout(r, 100), 100);
    mc_reorder_tick(r, 199);
    EXPECT_EMIT(0, 2, 1, 3);
    mc_reorder_tick(r, 200);
    EXPECT_EMIT(0, 2, 1, 3, 5);
    ck_assert_uint_eq(stats_of(r).skipped, 2);
    ck_assert_int_eq(mc_reorder_timeout(r, 200), -1);
    done(r);
}
END_TEST

START_TEST(test_late_and_duplicate)
{
    mc_reorder_t *r = mk(NULL);
    mc_reorder_stats_t s;

    push(r, 5, 1, 0);
    push(r, 5, 2, 0);
    push(r, 5, 3, 0);
    push(r, 5, 2, 1);
    push(r, 5, 1, 2);
    push(r, 5, 3, 3);
    EXPECT_EMIT(0, 5, 1, 2, 3);
    EXPECT_DROP(0, 5, 2, 1, 3);
    s = stats_of(r);
    ck_assert_uint_eq(s.late, 3);
    ck_assert_uint_eq(s.released, 3);
    ck_assert_uint_eq(s.held, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 3), -1);
    push(r, 5, 4, 4);
    EXPECT_EMIT(0, 5, 1, 2, 3, 4);
    done(r);
}
END_TEST

START_TEST(test_duplicate_of_held)
{
    mc_reorder_t *r = mk(NULL);
    mc_reorder_stats_t s;

    push(r, 6, 1, 0);
    push(r, 6, 3, 0);
    push(r, 6, 3, 5);
    EXPECT_EMIT(0, 6, 1);
    EXPECT_DROP(0, 6, 3);
    s = stats_of(r);
    ck_assert_uint_eq(s.late, 1);
    ck_assert_uint_eq(s.held, 1);
    push(r, 6, 2, 10);
    EXPECT_EMIT(0, 6, 1, 2, 3);
    ck_assert_uint_eq(stats_of(r).held, 0);

    /* also during the first hold of a new room */
    push(r, 7, 4, 20);
    push(r, 7, 4, 21);
    ck_assert_uint_eq(dropped.n, 2);
    ck_assert_uint_eq(dropped.v[1].room, 7);
    ck_assert_uint_eq(dropped.v[1].seq, 4);
    ck_assert_uint_eq(stats_of(r).late, 2);
    mc_reorder_tick(r, 70);
    ck_assert_uint_eq(emitted.n, 4);
    ck_assert_uint_eq(emitted.v[3].room, 7);
    ck_assert_uint_eq(emitted.v[3].seq, 4);
    done(r);
}
END_TEST

START_TEST(test_max_held_skips_at_once)
{
    mc_reorder_conf_t conf = base_conf;
    mc_reorder_t *r;
    mc_reorder_stats_t s;

    conf.max_held = 3;
    r = mk(&conf);
    push(r, 1, 1, 0);
    push(r, 1, 3, 0);
    push(r, 1, 4, 0);
    push(r, 1, 5, 0);
    EXPECT_EMIT(0, 1, 1);
    ck_assert_uint_eq(stats_of(r).held, 3);
    /* a fourth waiting message: the gap (2) is skipped without waiting */
    push(r, 1, 7, 1);
    EXPECT_EMIT(0, 1, 1, 3, 4, 5);
    s = stats_of(r);
    ck_assert_uint_eq(s.skipped, 1);
    ck_assert_uint_eq(s.held, 1);
    ck_assert_uint_eq(dropped.n, 0);
    push(r, 1, 6, 2);
    EXPECT_EMIT(0, 1, 1, 3, 4, 5, 6, 7);
    ck_assert_uint_eq(stats_of(r).held, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 2), -1);
    push(r, 1, 2, 3);   /* skipped, released late; a second copy is late */
    EXPECT_EMIT(0, 1, 1, 3, 4, 5, 6, 7, 2);
    push(r, 1, 2, 4);
    EXPECT_DROP(0, 1, 2);

    /* during the first hold of a new room the lowest becomes the start */
    push(r, 2, 10, 10);
    push(r, 2, 12, 10);
    push(r, 2, 13, 10);
    ck_assert_uint_eq(emitted.n, 7);
    push(r, 2, 14, 11);
    ck_assert_uint_eq(emitted.n, 8);
    ck_assert_uint_eq(emitted.v[7].room, 2);
    ck_assert_uint_eq(emitted.v[7].seq, 10);
    s = stats_of(r);
    ck_assert_uint_eq(s.held, 3);
    ck_assert_uint_eq(s.skipped, 1);
    push(r, 2, 11, 12);
    ck_assert_uint_eq(emitted.n, 12);
    ck_assert_uint_eq(emitted.v[8].seq, 11);
    ck_assert_uint_eq(emitted.v[9].seq, 12);
    ck_assert_uint_eq(emitted.v[10].seq, 13);
    ck_assert_uint_eq(emitted.v[11].seq, 14);
    ck_assert_uint_eq(stats_of(r).held, 0);
    done(r);
}
END_TEST

START_TEST(test_max_held_never_exceeded)
{
    mc_reorder_conf_t conf = base_conf;
    mc_reorder_t *r;
    uint64_t i, now;

    conf.max_held = 4;
    r = mk(&conf);
    push(r, 1, 1, 0);
    /* only even seqs: every one opens a gap */
    for (i = 2; i <= 40; i += 2) {
        push(r, 1, i + 1, i);
        ck_assert_uint_le(stats_of(r).held, 4);
    }
    /* each expiry skips one gap; the next gap then gets its own wait */
    now = 10000;
    for (i = 0; i < 10 && mc_reorder_timeout(r, now) >= 0; i++) {
        now += (uint64_t)mc_reorder_timeout(r, now);
        mc_reorder_tick(r, now);
        ck_assert_int_eq(mc_reorder_timeout(r, now), stats_of(r).held ? 100 : -1);
    }
    ck_assert_uint_eq(stats_of(r).held, 0);
    ck_assert_uint_eq(emitted.n, 21);
    for (i = 0; i < emitted.n; i++) {
        ck_assert_uint_eq(emitted.v[i].seq, 2 * i + 1);
    }
    ck_assert_uint_eq(stats_of(r).skipped, 20);
    done(r);
}
END_TEST

/* Appends to out the seqs emitted for room, in emission order; returns the count. */
static size_t emitted_for(uint64_t room, uint64_t *out, size_t cap)
{
    size_t i, n = 0;

    for (i = 0; i < emitted.n; i++) {
        if (emitted.v[i].room == room) {
            ck_assert_uint_lt(n, cap);
            out[n++] = emitted.v[i].seq;
        }
    }
    return n;
}

START_TEST(test_interleaved_rooms_independent)
{
    mc_reorder_t *r = mk(NULL);
    uint64_t a[16], b[16];
    size_t na, nb;
    mc_reorder_stats_t s;

    push(r, 100, 1, 0);
    push(r, 100, 2, 0);
    push(r, 200, 5, 0);   /* new room, first hold until 50 */
    push(r, 100, 4, 0);   /* gap in 100, wait until 100 */
    push(r, 200, 6, 1);
    EXPECT_EMIT(0, 100, 1, 2);
    ck_assert_uint_eq(stats_of(r).held, 3);
    ck_assert_int_eq(mc_reorder_timeout(r, 10), 40);
    push(r, 100, 3, 10);
    EXPECT_EMIT(0, 100, 1, 2, 3, 4);
    mc_reorder_tick(r, 49);
    ck_assert_uint_eq(emitted.n, 4);
    mc_reorder_tick(r, 50);
    ck_assert_uint_eq(emitted.n, 6);
    ck_assert_uint_eq(emitted.v[4].room, 200);
    ck_assert_uint_eq(emitted.v[4].seq, 5);
    ck_assert_uint_eq(emitted.v[5].room, 200);
    ck_assert_uint_eq(emitted.v[5].seq, 6);

    /* gaps in both rooms expire independently */
    push(r, 100, 6, 60);   /* waits for 5 until 160 */
    push(r, 200, 8, 70);   /* waits for 7 until 170 */
    ck_assert_int_eq(mc_reorder_timeout(r, 70), 90);
    mc_reorder_tick(r, 160);
    ck_assert_uint_eq(emitted.n, 7);
    ck_assert_uint_eq(emitted.v[6].room, 100);
    ck_assert_uint_eq(emitted.v[6].seq, 6);
    ck_assert_int_eq(mc_reorder_timeout(r, 160), 10);
    push(r, 200, 7, 165);
    ck_assert_int_eq(mc_reorder_timeout(r, 165), -1);
    na = emitted_for(100, a, 16);
    nb = emitted_for(200, b, 16);
    ck_assert_uint_eq(na, 5);
    ck_assert_uint_eq(a[0], 1);
    ck_assert_uint_eq(a[1], 2);
    ck_assert_uint_eq(a[2], 3);
    ck_assert_uint_eq(a[3], 4);
    ck_assert_uint_eq(a[4], 6);
    ck_assert_uint_eq(nb, 4);
    ck_assert_uint_eq(b[0], 5);
    ck_assert_uint_eq(b[1], 6);
    ck_assert_uint_eq(b[2], 7);
    ck_assert_uint_eq(b[3], 8);
    s = stats_of(r);
    ck_assert_uint_eq(s.skipped, 1);
    ck_assert_uint_eq(s.rooms, 2);
    ck_assert_uint_eq(s.released, 9);
    ck_assert_uint_eq(s.held, 0);
    ck_assert_uint_eq(dropped.n, 0);
    done(r);
}
END_TEST

START_TEST(test_idle_rooms_forgotten)
{
    mc_reorder_t *r = mk(NULL);   /* idle_ms 1000 */

    push(r, 1, 1, 0);
    push(r, 2, 1, 500);
    push(r, 2, 2, 500);
    ck_assert_uint_eq(stats_of(r).rooms, 2);
    mc_reorder_tick(r, 999);
    ck_assert_uint_eq(stats_of(r).rooms, 2);
    mc_reorder_tick(r, 1000);
    ck_assert_uint_eq(stats_of(r).rooms, 1);
    mc_reorder_tick(r, 1499);
    ck_assert_uint_eq(stats_of(r).rooms, 1);
    mc_reorder_tick(r, 1500);
    ck_assert_uint_eq(stats_of(r).rooms, 0);
    ck_assert_uint_eq(emitted.n, 3);

    /* a forgotten room starts over: held for first_hold unless seq 1 */
    push(r, 1, 2, 1600);
    ck_assert_uint_eq(emitted.n, 3);
    ck_assert_uint_eq(stats_of(r).rooms, 1);
    ck_assert_int_eq(mc_reorder_timeout(r, 1600), 50);
    mc_reorder_tick(r, 1649);
    ck_assert_uint_eq(emitted.n, 3);
    mc_reorder_tick(r, 1650);
    ck_assert_uint_eq(emitted.n, 4);
    ck_assert_uint_eq(emitted.v[3].room, 1);
    ck_assert_uint_eq(emitted.v[3].seq, 2);
    ck_assert_uint_eq(stats_of(r).skipped, 0);
    push(r, 2, 1, 1700);
    ck_assert_uint_eq(emitted.n, 5);
    ck_assert_uint_eq(emitted.v[4].room, 2);
    ck_assert_uint_eq(emitted.v[4].seq, 1);
    ck_assert_uint_eq(stats_of(r).rooms, 2);
    /* activity keeps a room: room 1 pushed at 2600 survives a tick at 3000 */
    push(r, 1, 3, 2600);
    mc_reorder_tick(r, 3000);
    ck_assert_uint_eq(stats_of(r).rooms, 1);
    push(r, 1, 4, 3000);
    ck_assert_uint_eq(emitted.n, 7);
    ck_assert_uint_eq(emitted.v[6].seq, 4);
    ck_assert_uint_eq(dropped.n, 0);
    done(r);
}
END_TEST

START_TEST(test_idle_keeps_waiting_room)
{
    mc_reorder_conf_t conf = base_conf;
    mc_reorder_t *r;

    conf.gap_ms = 5000;   /* longer than idle_ms: room 1 still waits when idle */
    r = mk(&conf);
    push(r, 2, 1, 0);
    push(r, 1, 1, 0);
    push(r, 1, 3, 0);
    mc_reorder_tick(r, 1000);
    ck_assert_uint_eq(stats_of(r).rooms, 1);   /* room 2 forgotten, room 1 waits */
    ck_assert_uint_eq(stats_of(r).held, 1);
    push(r, 1, 2, 1500);
    ck_assert_uint_eq(emitted.n, 4);
    ck_assert_uint_eq(emitted.v[2].seq, 2);
    ck_assert_uint_eq(emitted.v[3].seq, 3);
    ck_assert_uint_eq(stats_of(r).skipped, 0);
    mc_reorder_tick(r, 2500);
    ck_assert_uint_eq(stats_of(r).rooms, 0);
    done(r);
}
END_TEST

START_TEST(test_max_rooms_evicts_lru)
{
    mc_reorder_conf_t conf = base_conf;
    mc_reorder_t *r;
    mc_reorder_stats_t s;

    conf.max_rooms = 3;
    conf.idle_ms = 1000000;
    r = mk(&conf);
    push(r, 1, 1, 0);
    push(r, 2, 1, 1);
    push(r, 3, 1, 2);
    push(r, 1, 2, 3);   /* room 1 becomes most recent: LRU order 2, 3, 1 */
    ck_assert_uint_eq(stats_of(r).rooms, 3);
    push(r, 4, 1, 4);   /* evicts room 2 */
    ck_assert_uint_eq(stats_of(r).rooms, 3);
    ck_assert_uint_eq(emitted.n, 5);
    push(r, 1, 3, 5);   /* room 1 is still known: released at once */
    ck_assert_uint_eq(emitted.n, 6);
    ck_assert_uint_eq(emitted.v[5].room, 1);
    ck_assert_uint_eq(emitted.v[5].seq, 3);
    push(r, 3, 2, 6);   /* room 3 is still known (evicts nothing); LRU 4, 1, 3 */
    ck_assert_uint_eq(emitted.n, 7);
    ck_assert_uint_eq(stats_of(r).rooms, 3);
    /* room 2 was forgotten: seq 2 is held as for a new room; evicts room 4 */
    push(r, 2, 2, 7);
    ck_assert_uint_eq(emitted.n, 7);
    ck_assert_uint_eq(stats_of(r).rooms, 3);
    ck_assert_int_eq(mc_reorder_timeout(r, 7), 50);
    /* room 4 was evicted: its seq 2 waits as for a new room; evicts room 1 */
    push(r, 4, 2, 8);
    ck_assert_uint_eq(emitted.n, 7);
    ck_assert_uint_eq(stats_of(r).rooms, 3);
    /* room 1 was evicted: its seq 4 waits too; evicts room 3 */
    push(r, 1, 4, 9);
    ck_assert_uint_eq(emitted.n, 7);
    s = stats_of(r);
    ck_assert_uint_eq(s.held, 3);
    ck_assert_uint_eq(s.rooms, 3);
    /* now every room holds a message: none can be evicted without losing it */
    push(r, 5, 3, 10);
    s = stats_of(r);
    ck_assert_uint_eq(s.held, 4);
    ck_assert_uint_le(s.rooms, 4);
    mc_reorder_tick(r, 57);
    ck_assert_uint_eq(emitted.n, 8);
    ck_assert_uint_eq(emitted.v[7].room, 2);
    ck_assert_uint_eq(emitted.v[7].seq, 2);
    mc_reorder_tick(r, 58);
    ck_assert_uint_eq(emitted.n, 9);
    ck_assert_uint_eq(emitted.v[8].room, 4);
    ck_assert_uint_eq(emitted.v[8].seq, 2);
    mc_reorder_tick(r, 59);
    ck_assert_uint_eq(emitted.n, 10);
    ck_assert_uint_eq(emitted.v[9].room, 1);
    ck_assert_uint_eq(emitted.v[9].seq, 4);
    mc_reorder_tick(r, 60);
    ck_assert_uint_eq(emitted.n, 11);
    ck_assert_uint_eq(emitted.v[10].room, 5);
    ck_assert_uint_eq(emitted.v[10].seq, 3);
    ck_assert_uint_eq(dropped.n, 0);
    ck_assert_uint_eq(stats_of(r).held, 0);
    ck_assert_uint_eq(stats_of(r).skipped, 0);
    /* once nothing waits, the bound holds again */
    push(r, 6, 1, 61);
    ck_assert_uint_le(stats_of(r).rooms, 3);
    done(r);
}
END_TEST

static int ev_cmp(const void *a, const void *b)
{
    const ev_t *x = a, *y = b;

    if (x->room != y->room) {
        return x->room < y->room ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

START_TEST(test_free_drops_held)
{
    mc_reorder_t *r = mk(NULL);
    static const ev_t want[] = {{1, 3}, {1, 4}, {2, 5}, {3, 7}, {3, 9}};
    size_t i;

    push(r, 1, 1, 0);
    push(r, 1, 3, 0);
    push(r, 1, 4, 0);
    push(r, 2, 5, 0);
    push(r, 3, 9, 0);
    push(r, 3, 7, 0);
    push(r, 4, 1, 0);
    ck_assert_uint_eq(emitted.n, 2);
    ck_assert_uint_eq(stats_of(r).held, 5);
    ck_assert_uint_eq(live_items, 5);
    mc_reorder_free(r);
    ck_assert_uint_eq(live_items, 0);
    ck_assert_uint_eq(emitted.n, 2);
    ck_assert_uint_eq(dropped.n, 5);
    qsort(dropped.v, dropped.n, sizeof(ev_t), ev_cmp);
    for (i = 0; i < 5; i++) {
        ck_assert_uint_eq(dropped.v[i].room, want[i].room);
        ck_assert_uint_eq(dropped.v[i].seq, want[i].seq);
    }
    evs_reset();
    mc_reorder_free(NULL);
}
END_TEST

/* --- randomized property test -------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

typedef struct {
    uint64_t room, seq;
    uint64_t key;
    size_t idx;
} pmsg_t;

static int pmsg_cmp(const void *a, const void *b)
{
    const pmsg_t *x = a, *y = b;

    if (x->key != y->key) {
        return x->key < y->key ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;   /* stable */
}

/*
 * Interleaves seqs 1..n of `rooms` rooms at random (each room in order), then
 * displaces every message by at most k positions (stable sort on index plus a
 * random 0..k); pushes them with the clock advancing 1 ms every per_ms pushes
 * and a tick after each push.  Every gap fills within k pushes, far below
 * gap_ms, so nothing may be skipped or dropped.
 */
static void run_property(uint64_t seed, size_t rooms, uint64_t n, size_t k, size_t per_ms)
{
    mc_reorder_conf_t conf = base_conf;
    size_t total = rooms * n, i, j;
    pmsg_t *m = calloc(total, sizeof(*m));
    uint64_t *next = calloc(rooms, sizeof(*next));
    uint64_t *got = calloc(rooms, sizeof(*got));
    uint64_t now = 1000000;
    mc_reorder_t *r;
    mc_reorder_stats_t s;

    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(next);
    ck_assert_ptr_nonnull(got);
    rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
    conf.max_held = 64;
    conf.max_rooms = 1000;
    r = mk(&conf);

    for (i = 0; i < total; i++) {
        size_t room;
        do {
            room = rng() % rooms;
        } while (next[room] == n);
        m[i].room = 1000 + room;
        m[i].seq = ++next[room];
        m[i].idx = i;
        m[i].key = i + rng() % (k + 1);
    }
    qsort(m, total, sizeof(*m), pmsg_cmp);
    for (i = 0; i < total; i++) {
        ck_assert_uint_le(m[i].idx > i ? m[i].idx - i : i - m[i].idx, k);
    }

    for (i = 0; i < total; i++) {
        if (i % per_ms == 0) {
            now++;
        }
        push(r, m[i].room, m[i].seq, now);
        mc_reorder_tick(r, now);
    }
    mc_reorder_tick(r, now + 1000);

    for (j = 0; j < emitted.n; j++) {
        size_t room = emitted.v[j].room - 1000;
        ck_assert_uint_lt(room, rooms);
        ck_assert_msg(emitted.v[j].seq == got[room] + 1, "seed %llu k %zu room %zu: got seq %llu after %llu",
                      (unsigned long long)seed, k, room, (unsigned long long)emitted.v[j].seq,
                      (unsigned long long)got[room]);
        got[room] = emitted.v[j].seq;
    }
    for (j = 0; j < rooms; j++) {
        ck_assert_uint_eq(got[j], n);
    }
    ck_assert_uint_eq(emitted.n, total);
    ck_assert_uint_eq(dropped.n, 0);
    s = stats_of(r);
    ck_assert_uint_eq(s.released, total);
    ck_assert_uint_eq(s.skipped, 0);
    ck_assert_uint_eq(s.late, 0);
    ck_assert_uint_eq(s.held, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, now + 1000), -1);
    done(r);
    free(m);
    free(next);
    free(got);
}

START_TEST(test_property_shuffled_windows)
{
    uint64_t seed;

    for (seed = 1; seed <= 8; seed++) {
        run_property(seed, 20, 300, 6, 10);    /* light shuffle, 10 pushes per ms */
        run_property(seed, 20, 300, 30, 10);   /* heavier: a room's seqs cross */
    }
}
END_TEST

/* --- max_ahead: a seq far past the position is refused, not held --------- */

/* The forged message of issue 8: one huge seq in a room that is being
 * delivered.  Without the bound it is held, its gap is skipped after gap_ms
 * and every real seq after that is dropped as late. */
START_TEST(test_ahead_refused)
{
    mc_reorder_conf_t conf = base_conf;
    mc_reorder_t *r;

    conf.max_ahead = 100;
    r = mk(&conf);
    push(r, 1, 1, 0);
    push(r, 1, 2, 0);
    ck_assert_int_eq(push_rc(r, 1, 1000000000, 1), MC_REORDER_AHEAD);
    EXPECT_DROP(0, 1, 1000000000);
    ck_assert_uint_eq(stats_of(r).refused, 1);
    ck_assert_uint_eq(stats_of(r).held, 0);
    ck_assert_int_eq(mc_reorder_timeout(r, 1), -1);
    mc_reorder_tick(r, 1000);
    push(r, 1, 3, 1000);
    push(r, 1, 4, 1000);
    EXPECT_EMIT(0, 1, 1, 2, 3, 4);
    ck_assert_uint_eq(stats_of(r).late, 0);
    ck_assert_uint_eq(stats_of(r).skipped, 0);
    done(r);
}
END_TEST

/* The bound is exclusive and measured from the next seq to release: next + max_ahead is
 * still held (and released when its gap is skipped), one more is refused. */
START_TEST(test_ahead_edge)
{
    mc_reorder_conf_t conf = base_conf;
    mc_reorder_t *r;

    conf.max_ahead = 100;
    r = mk(&conf);
    push(r, 1, 1, 0);                                        /* next is 2 */
    ck_assert_int_eq(push_rc(r, 1, 103, 0), MC_REORDER_AHEAD);
    push(r, 1, 102, 0);
    EXPECT_EMIT(0, 1, 1);
    mc_reorder_tick(r, 100);
    EXPECT_EMIT(0, 1, 1, 102);
    EXPECT_DROP(0, 1, 103);
    ck_assert_uint_eq(stats_of(r).skipped, 100);
    done(r);
}
END_TEST

/* A room whose position is not known yet starts at its lowest waiting seq
 * when the first hold ends; a forged seq waiting beside it is refused then. */
START_TEST(test_ahead_refused_at_first_hold)
{
    mc_reorder_conf_t conf = base_conf;
    mc_reorder_t *r;

    conf.max_ahead = 100;
    r = mk(&conf);
    push(r, 1, 50, 0);
    push(r, 1, 1000000000, 0);
    push(r, 1, 52, 0);
    EXPECT_EMIT(0, 1);
    mc_reorder_tick(r, 50);
    EXPECT_EMIT(0, 1, 50);
    EXPECT_DROP(0, 1, 1000000000);
    ck_assert_uint_eq(stats_of(r).refused, 1);
    push(r, 1, 51, 60);
    push(r, 1, 53, 60);
    EXPECT_EMIT(0, 1, 50, 51, 52, 53);
    ck_assert_uint_eq(stats_of(r).held, 0);
    done(r);
}
END_TEST

/* max_ahead 0 is no bound (the reorderer as it was): a far seq waits. */
START_TEST(test_ahead_unbounded)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 1, 1, 0);
    push(r, 1, 1000000000, 0);
    ck_assert_uint_eq(stats_of(r).held, 1);
    ck_assert_uint_eq(stats_of(r).refused, 0);
    done(r);
}
END_TEST

/* --- regressions: defects once found in reorder.c ------------------------ */

/*
 * A gap that opens when an earlier one fills inherits the earlier gap's
 * deadline (reorder.c, the wait_set condition in mc_reorder_push), so it can
 * be skipped long before gap_ms.  Here 4 has been missing for 40 ms (since 5
 * arrived) and is the room's next seq for only 10 ms when it is skipped.
 */

/* Pushes a fresh item as a repair. */
static void repair(mc_reorder_t *r, uint64_t room, uint64_t seq, uint64_t now)
{
    ck_assert_int_eq(mc_reorder_push(r, room, seq, new_item(room, seq), now), 0);
}

START_TEST(test_repair_of_skipped_released_once)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 9, 1, 0);
    push(r, 9, 4, 0);
    mc_reorder_tick(r, 100);
    EXPECT_EMIT(0, 9, 1, 4);
    /* 2 and 3 were skipped: their repairs are released out of order, once */
    repair(r, 9, 3, 110);
    EXPECT_EMIT(0, 9, 1, 4, 3);
    repair(r, 9, 3, 111);
    EXPECT_DROP(0, 9, 3);
    repair(r, 9, 2, 112);
    EXPECT_EMIT(0, 9, 1, 4, 3, 2);
    /* a repair of a seq that was released is a repeat: dropped */
    repair(r, 9, 1, 113);
    repair(r, 9, 4, 114);
    EXPECT_DROP(0, 9, 3, 1, 4);
    ck_assert_uint_eq(stats_of(r).recovered, 2);
    push(r, 9, 5, 120);
    EXPECT_EMIT(0, 9, 1, 4, 3, 2, 5);
    done(r);
}
END_TEST

START_TEST(test_repair_in_order_is_a_push)
{
    mc_reorder_t *r = mk(NULL);

    /* a room not known here: an ordinary first message */
    repair(r, 9, 1, 0);
    EXPECT_EMIT(0, 9, 1);
    /* at the position: released in order */
    repair(r, 9, 2, 1);
    EXPECT_EMIT(0, 9, 1, 2);
    /* past it: held like any message, and the gap fills */
    repair(r, 9, 4, 2);
    EXPECT_EMIT(0, 9, 1, 2);
    push(r, 9, 3, 3);
    EXPECT_EMIT(0, 9, 1, 2, 3, 4);
    ck_assert_uint_eq(stats_of(r).recovered, 0);
    done(r);
}
END_TEST

START_TEST(test_repair_remembers_newest_skips)
{
    mc_reorder_t *r = mk(NULL);
    uint64_t i, now = 0;

    push(r, 9, 1, now);
    /* MC_REORDER_SKIPS + 1 single-seq gaps: 2, 4, 6, ... */
    for (i = 0; i < MC_REORDER_SKIPS + 1; i++) {
        push(r, 9, 3 + 2 * i, now);
        now += 100;
        mc_reorder_tick(r, now);
    }
    ck_assert_uint_eq(stats_of(r).skipped, MC_REORDER_SKIPS + 1);
    /* the oldest skip is forgotten: its repair is dropped as late */
    repair(r, 9, 2, now);
    EXPECT_DROP(0, 9, 2);
    /* the newest are remembered */
    repair(r, 9, 2 + 2 * MC_REORDER_SKIPS, now);
    ck_assert_uint_eq(emitted.v[emitted.n - 1].seq, 2 + 2 * MC_REORDER_SKIPS);
    ck_assert_uint_eq(stats_of(r).recovered, 1);
    done(r);
}
END_TEST

START_TEST(test_repair_before_the_first_hold)
{
    mc_reorder_t *r = mk(NULL);

    /* the room starts at 3 after its first hold: 1 and 2 never came here */
    push(r, 9, 3, 0);
    mc_reorder_tick(r, 50);
    EXPECT_EMIT(0, 9, 3);
    repair(r, 9, 1, 60);
    repair(r, 9, 2, 61);
    EXPECT_EMIT(0, 9, 3, 1, 2);
    repair(r, 9, 2, 62);
    EXPECT_DROP(0, 9, 2);
    /* a room that starts at 1 has nothing before it */
    push(r, 8, 1, 70);
    repair(r, 8, 1, 71);
    ck_assert_uint_eq(dropped.n, 2);
    ck_assert_uint_eq(dropped.v[1].room, 8);
    ck_assert_uint_eq(dropped.v[1].seq, 1);
    done(r);
}
END_TEST

START_TEST(test_repair_inside_a_range)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 9, 1, 0);
    push(r, 9, 6, 0);
    mc_reorder_tick(r, 100);   /* 2..5 skipped */
    repair(r, 9, 4, 110);
    repair(r, 9, 5, 111);
    repair(r, 9, 2, 112);
    repair(r, 9, 3, 113);
    EXPECT_EMIT(0, 9, 1, 6, 4, 5, 2, 3);
    /* the ends shrank to nothing: repeats of them are dropped */
    repair(r, 9, 5, 114);
    repair(r, 9, 2, 115);
    EXPECT_DROP(0, 9, 5, 2);
    done(r);
}
END_TEST

START_TEST(test_bug_new_gap_inherits_deadline)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 1, 1, 0);
    push(r, 1, 3, 0);    /* waits for 2 until 100 */
    push(r, 1, 5, 60);
    push(r, 1, 2, 90);   /* 2, 3 released; 5 now waits for 4 */
    EXPECT_EMIT(0, 1, 1, 2, 3);
    ck_assert_int_ge(mc_reorder_timeout(r, 90), 70);
    mc_reorder_tick(r, 100);
    EXPECT_EMIT(0, 1, 1, 2, 3);
    ck_assert_uint_eq(stats_of(r).skipped, 0);
    push(r, 1, 4, 120);
    EXPECT_EMIT(0, 1, 1, 2, 3, 4, 5);
    done(r);
}
END_TEST

/*
 * A push that makes no progress postpones an overdue gap by a full gap_ms
 * (same condition): the relay-worker pushes from its epoll loop and its gRPC
 * thread before the next tick, so a steady stream keeps a dead gap alive.
 */
START_TEST(test_bug_overdue_gap_postponed)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 1, 1, 0);
    push(r, 1, 3, 0);     /* waits for 2 until 100 */
    push(r, 1, 5, 150);   /* no tick yet; 2 is overdue */
    ck_assert_int_eq(mc_reorder_timeout(r, 150), 0);
    mc_reorder_tick(r, 150);
    EXPECT_EMIT(0, 1, 1, 3);
    ck_assert_uint_eq(stats_of(r).skipped, 1);
    done(r);
}
END_TEST

/*
 * A tick whose now_ms is slightly behind the last push (the relay-worker
 * reads the clock before taking order_lock while the gRPC thread pushes)
 * forgets the room: now_ms - last_seen wraps around in mc_reorder_tick.
 */
START_TEST(test_bug_tick_behind_last_push_forgets)
{
    mc_reorder_t *r = mk(NULL);

    push(r, 1, 1, 1000);
    mc_reorder_tick(r, 999);
    ck_assert_uint_eq(stats_of(r).rooms, 1);
    push(r, 1, 2, 1001);
    EXPECT_EMIT(0, 1, 1, 2);   /* not held as for a new room */
    done(r);
}
END_TEST

/*
 * The property with the clock at 1 ms per push: every gap still fills within
 * 40 ms (k = 40 pushes), below gap_ms = 100, but a room that keeps some gap
 * open for 100 ms loses a seq to the inherited deadline.
 */
START_TEST(test_bug_property_fast_clock)
{
    uint64_t seed;

    for (seed = 1; seed <= 8; seed++) {
        run_property(seed, 2, 2000, 40, 1);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reorder");
    TCase *tc = tcase_create("core");
    TCase *tp = tcase_create("property");
    TCase *tb;
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_in_order_released_immediately);
    tcase_add_test(tc, test_new_room_seq1_immediate);
    tcase_add_test(tc, test_first_hold_then_release);
    tcase_add_test(tc, test_first_hold_lower_arrives);
    tcase_add_test(tc, test_first_hold_seq1_arrives);
    tcase_add_test(tc, test_quiet_start);
    tcase_add_test(tc, test_quiet_shortens_first_hold);
    tcase_add_test(tc, test_quiet_start_below_held);
    tcase_add_test(tc, test_skipped_before_jumps);
    tcase_add_test(tc, test_gap_filled);
    tcase_add_test(tc, test_gap_skipped);
    tcase_add_test(tc, test_two_gaps_skipped_in_turn);
    tcase_add_test(tc, test_late_and_duplicate);
    tcase_add_test(tc, test_duplicate_of_held);
    tcase_add_test(tc, test_max_held_skips_at_once);
    tcase_add_test(tc, test_max_held_never_exceeded);
    tcase_add_test(tc, test_interleaved_rooms_independent);
    tcase_add_test(tc, test_idle_rooms_forgotten);
    tcase_add_test(tc, test_idle_keeps_waiting_room);
    tcase_add_test(tc, test_max_rooms_evicts_lru);
    tcase_add_test(tc, test_free_drops_held);
    tcase_add_test(tc, test_ahead_refused);
    tcase_add_test(tc, test_ahead_edge);
    tcase_add_test(tc, test_ahead_refused_at_first_hold);
    tcase_add_test(tc, test_ahead_unbounded);
    tcase_add_test(tc, test_repair_of_skipped_released_once);
    tcase_add_test(tc, test_repair_in_order_is_a_push);
    tcase_add_test(tc, test_repair_remembers_newest_skips);
    tcase_add_test(tc, test_repair_inside_a_range);
    tcase_add_test(tc, test_repair_before_the_first_hold);
    suite_add_tcase(s, tc);

    tcase_set_timeout(tp, 60);
    tcase_add_test(tp, test_property_shuffled_windows);
    suite_add_tcase(s, tp);

    tb = tcase_create("regressions");
    tcase_set_timeout(tb, 60);
    tcase_add_test(tb, test_bug_new_gap_inherits_deadline);
    tcase_add_test(tb, test_bug_overdue_gap_postponed);
    tcase_add_test(tb, test_bug_tick_behind_last_push_forgets);
    tcase_add_test(tb, test_bug_property_fast_clock);
    suite_add_tcase(s, tb);

    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
