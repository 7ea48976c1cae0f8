/*
 * What makes a room request valid, in one place for the nginx module (which
 * answers the client) and the relay-worker (which checks again before it
 * writes MySQL): a room's kind, its title, the idempotency key of a create,
 * and a member list.  Pure code: no allocation, no I/O.  Each check returns
 * NULL when the value is acceptable, else a static text saying what is wrong,
 * written for the client (the relay-worker puts "bad_request: " before it).
 */
#ifndef MINICHAT_ROOM_RULES_H
#define MINICHAT_ROOM_RULES_H

#include <stddef.h>
#include <stdint.h>

#define MC_ROOM_TITLE_MAX 191 /* characters: rooms.title is VARCHAR(191) */
#define MC_ROOM_IDEM_MAX 64   /* bytes: room_requests.idem_key is VARBINARY(64) */

/* Checks a kind: "group" or "direct" (NULL, as for a JSON value that is not
 * a string, is refused). */
const char *mc_room_check_kind(const char *kind);

/* Checks a title s[0..len): valid UTF-8, at most MC_ROOM_TITLE_MAX
 * characters, no NUL.  s NULL (not a string) is refused; "" is fine. */
const char *mc_room_check_title(const char *s, size_t len);

/* Checks an idempotency key as a client sends it (an HTTP header or a JSON
 * string): 1 to MC_ROOM_IDEM_MAX bytes, each printable ASCII (0x21..0x7e).
 * s NULL is refused.  The relay-worker stores any bytes up to
 * MC_ROOM_IDEM_MAX (VARBINARY) and bounds only the length. */
const char *mc_room_check_idem_key(const char *s, size_t len);

/* Checks and normalises a member list in place: at most max ids as given,
 * none 0; sorts them and drops duplicates, leaving their count in *n. */
const char *mc_room_members(uint64_t *ids, size_t *n, size_t max);

/* Checks a room's member count for its kind: a direct room has exactly two
 * members (after duplicates are dropped). */
const char *mc_room_check_count(const char *kind, size_t n);

/* Sorts ids[0..n) ascending and drops duplicates.  Returns how many remain. */
size_t mc_room_ids_uniq(uint64_t *ids, size_t n);

#endif
