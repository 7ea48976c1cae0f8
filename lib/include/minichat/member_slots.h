/*
 * Member lists that one end of an ordered stream already sent to the other,
 * so that a message can say "the list of version V you have" instead of
 * carrying a room's member ids again (the worker link between nginx workers
 * and their relay-worker, both ways; docs/ARCHITECTURE.md "Member lists on
 * the worker link").
 *
 * Both ends keep the same table: MC_MSLOTS slots, a room always in slot
 * room % MC_MSLOTS, so a list stored there replaces whatever that slot
 * held.  The sender keeps a mirror (room, version, count) and records a
 * list when the frame carrying it is queued on the stream; the receiver
 * stores the ids of every frame that carries a list with a version.  The
 * stream is ordered and lossless and both apply the same rule to the same
 * frames in the same order, so the sender's mirror says exactly what the
 * receiver holds; a new connection starts both empty.  A list of more than
 * MC_MSLOTS_MAX_IDS ids, or without a version (0), is never kept and always
 * travels: a receiver's table stays under MC_MSLOTS * MC_MSLOTS_MAX_IDS ids.
 *
 * Versions are the rooms' members versions ({r:<room>}:mver, see the
 * members cache), which change whenever the member set does: a list sent
 * under a version is the room's member set under that version, wherever it
 * came from.
 */
#ifndef MINICHAT_MEMBER_SLOTS_H
#define MINICHAT_MEMBER_SLOTS_H

#include <stddef.h>
#include <stdint.h>

#define MC_MSLOTS 64
#define MC_MSLOTS_MAX_IDS 16384

typedef struct {
    uint64_t room;  /* 0: empty */
    uint64_t ver;
    size_t n;
    uint64_t *ids;  /* receiver only: n ids, malloc'ed */
} mc_mslot_t;

typedef struct {
    mc_mslot_t slot[MC_MSLOTS];
} mc_mslots_t;

/* Returns 1 when a list of n ids under version ver may be kept by a table. */
int mc_mslots_keepable(uint64_t ver, size_t n);

/* Sender: returns 1 when the other end holds room's list under ver (the
 * frame may leave it out), else 0. */
int mc_mslots_has(const mc_mslots_t *t, uint64_t room, uint64_t ver);
/* Sender: a frame carrying room's list of n ids under ver was queued.
 * Records it when keepable. */
void mc_mslots_sent(mc_mslots_t *t, uint64_t room, uint64_t ver, size_t n);

/* Receiver: a frame carried room's list under ver; keeps a copy when
 * keepable.  Returns 0, or -1 when out of memory: the slot is then empty,
 * and the next frame that needs it fails to find it (the caller's error). */
int mc_mslots_store(mc_mslots_t *t, uint64_t room, uint64_t ver, const uint64_t *ids, size_t n);
/* Receiver: the ids of room's list under ver, or NULL when not held. */
const uint64_t *mc_mslots_find(const mc_mslots_t *t, uint64_t room, uint64_t ver, size_t *n);

/* Empties the table (a new connection), freeing what it holds. */
void mc_mslots_clear(mc_mslots_t *t);

#endif
