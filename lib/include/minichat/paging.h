/*
 * Pagination helpers for the relay-worker's MySQL queries, pure code:
 *  - the room-list cursor: an opaque string that encodes the keyset position
 *    (room_members.last_message_at in ms, room id) of a page's last row;
 *  - the history page check: per-room seqs are dense (1, 2, 3, ...), so a
 *    page of seqs below `before` is complete exactly when it holds every seq
 *    from before - 1 down to max(1, before - limit); a replica that lags
 *    shows a hole and the caller reads the primary instead.
 */
#ifndef MINICHAT_PAGING_H
#define MINICHAT_PAGING_H

#include <stddef.h>
#include <stdint.h>

/* characters of an encoded cursor, without the NUL */
#define MC_CURSOR_LEN 32

/* Writes the cursor for (at_ms, room) into out (MC_CURSOR_LEN + 1 bytes). */
void mc_cursor_encode(uint64_t at_ms, uint64_t room, char *out);

/* Reads a cursor.  Returns 0, or -1 when s is not one mc_cursor_encode() wrote
 * (wrong length, a character that is not a lower-case hex digit, room 0). */
int mc_cursor_decode(const char *s, uint64_t *at_ms, uint64_t *room);

/* Returns how many seqs a complete history page below `before` holds:
 * min(limit, before - 1). */
uint64_t mc_history_want(uint64_t before, uint64_t limit);

/* Returns 1 when seqs[0..n) (newest first) is the complete page below
 * `before` of at most `limit` seqs, else 0. */
int mc_history_complete(uint64_t before, uint64_t limit, const uint64_t *seqs, size_t n);

#endif
