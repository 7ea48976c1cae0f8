/*
 * Per-room reordering of a merged message stream.
 *
 * A node's relay-worker receives each room's messages from several sources
 * (its own nginx workers, every peer node), each source in seq order but
 * interleaved with the others in any order.  mc_reorder_t releases every
 * room's messages strictly by seq: a message waits while a lower seq may
 * still be on its way; a gap that does not fill within gap_ms is skipped
 * (the message is lost for live delivery; clients recover it by resume).
 *
 * A room seen for the first time (or again after idle_ms of silence) has no
 * known position: its first message waits first_hold_ms for lower seqs
 * before the lowest one held becomes the start, except seq 1, which has no
 * predecessor.  Memory is bounded: at most max_held messages wait per room
 * (beyond that the gap is skipped at once) and idle rooms are forgotten.
 *
 * A seq far ahead of the room's position is refused, not held: one message
 * with a huge seq (a forged or corrupt batch) would otherwise become the
 * room's position once its gap is skipped, and every real seq after it would
 * be dropped as late.  With max_ahead set, a message whose seq is more than
 * max_ahead past the next seq to release (or, in a room whose position is
 * not known yet, past the lowest seq waiting there when the first hold
 * ends) is dropped and counted as refused.  A room this reorderer has never
 * seen has no position to measure against: its first message is trusted.
 *
 * A seq skipped as a gap may still come: late (a slow source), or published
 * again (the sender retried, or a sweeper repaired it).  While the room
 * remembers the skip (its last MC_REORDER_SKIPS skipped ranges, including
 * the seqs before the room's first hold), such a message is released at
 * once, out of order, and taken out of the range; a message below the
 * position that was released before is dropped as late.
 *
 * Not thread-safe: one owner thread, or the caller's lock.
 */
#ifndef MINICHAT_REORDER_H
#define MINICHAT_REORDER_H

#include <stddef.h>
#include <stdint.h>

typedef struct mc_reorder_s mc_reorder_t;

/* Called for each released message, in seq order per room. */
typedef void (*mc_reorder_emit_pt)(void *ctx, uint64_t room, uint64_t seq, void *item);
/* Called for a message that will never be released (late or duplicate); it
 * runs with the caller's lock held and must not push. */
typedef void (*mc_reorder_drop_pt)(void *ctx, uint64_t room, uint64_t seq, void *item);

typedef struct {
    uint64_t first_hold_ms;  /* wait for lower seqs in a room not seen before */
    uint64_t gap_ms;         /* wait for a missing seq before skipping it */
    uint64_t idle_ms;        /* forget a room after this long without messages */
    size_t max_held;         /* messages waiting per room */
    size_t max_rooms;        /* rooms remembered (idle ones are forgotten first) */
    uint64_t max_ahead;      /* refuse seqs further ahead of the position; 0: no bound */
} mc_reorder_conf_t;

typedef struct {
    uint64_t released;       /* messages emitted */
    uint64_t late;           /* dropped: seq below the room's position (late or duplicate) */
    uint64_t skipped;        /* seqs never seen, skipped after gap_ms or max_held */
    uint64_t refused;        /* dropped: seq more than max_ahead past the position */
    uint64_t rooms;          /* rooms remembered now */
    uint64_t held;           /* messages waiting now */
    uint64_t recovered;      /* skipped seqs that came late, released out of order */
    uint64_t quiet_starts;   /* rooms with no position started at once: their previous seq was
                                admitted at least first_hold_ms earlier (mc_reorder_push_after) */
    uint64_t jumps;          /* positions moved past seqs a source said it left out for this node */
} mc_reorder_stats_t;

/* Returns a new reorderer or NULL when out of memory. */
mc_reorder_t *mc_reorder_new(const mc_reorder_conf_t *conf, mc_reorder_emit_pt emit, mc_reorder_drop_pt drop,
                             void *ctx);
/* Drops every waiting message (through drop) and frees everything. */
void mc_reorder_free(mc_reorder_t *r);

#define MC_REORDER_AHEAD 1

/* Offers one message; emits what is now in order (and a skipped seq come
 * late, out of order).  Returns 0 (released, held, or dropped as late or
 * duplicate), MC_REORDER_AHEAD when the seq is
 * more than max_ahead past the room's position (dropped through drop), or
 * -1 when out of memory (the item is then dropped through drop). */
int mc_reorder_push(mc_reorder_t *r, uint64_t room, uint64_t seq, void *item, uint64_t now_ms);

/* The same, knowing that the room's previous seq was admitted after_ms
 * before this one (0: not known), and whether the message's source left
 * out the room's earlier messages for this node (skipped_before: another
 * node's relay-worker sent this node none of them, as it held none of
 * their recipients).  It shortens the first hold of a room
 * with no position: the hold stands for "a lower seq arrives at most
 * first_hold_ms after a higher one", and seq - 1 had after_ms more to get
 * here, so the message waits first_hold_ms - after_ms, and a message after
 * a quiet spell of at least first_hold_ms starts the room at once (the
 * seqs below it are remembered as skipped, so a late one is still
 * released).  A room idle past idle_ms, or never seen by this node,
 * usually has such a message first: without it that message would wait
 * the whole first hold.  With skipped_before the room does not wait for
 * the seqs before this one: what waits below it goes now, in order, and
 * its position moves to it (counted in jumps, not in skipped); the seqs
 * passed over are remembered as skipped, so one that still comes from
 * another source is released late. */
int mc_reorder_push_after(mc_reorder_t *r, uint64_t room, uint64_t seq, void *item, uint64_t now_ms,
                          uint64_t after_ms, int skipped_before);

/* How many skipped ranges a room remembers for late arrivals. */
#define MC_REORDER_SKIPS 4

/* Releases rooms whose wait expired and forgets idle rooms. */
void mc_reorder_tick(mc_reorder_t *r, uint64_t now_ms);

/* Returns the milliseconds until the next expiry (0 when due), or -1 when
 * nothing waits. */
int64_t mc_reorder_timeout(const mc_reorder_t *r, uint64_t now_ms);

void mc_reorder_stats(const mc_reorder_t *r, mc_reorder_stats_t *stats);

#endif
