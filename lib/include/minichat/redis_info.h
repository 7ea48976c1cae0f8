/*
 * What a Redis node says of itself in `INFO replication`: its role and, for
 * a master, its replication id.  The module keys a room's generation to the
 * replication id of the master that holds it: a replica promoted after a
 * failover, or a Redis restarted from a file, starts a new id, and a room
 * whose generation differs is revalidated against MySQL before its seq moves
 * (see docs/ARCHITECTURE.md, "A room's generation").
 *
 * The reply is text of "field:value" lines ending in CRLF (or LF); lines
 * starting with '#' are section headers.  A replica reports its master's
 * id as its own master_replid, so an id is only taken from a reply that
 * says role:master.
 */
#ifndef MINICHAT_REDIS_INFO_H
#define MINICHAT_REDIS_INFO_H

#include <stddef.h>

#define MC_REDIS_REPLID_LEN 40          /* hex digits */

typedef enum {
    MC_REDIS_ROLE_BAD = -1,             /* no role line, or a malformed id */
    MC_REDIS_ROLE_MASTER = 0,           /* replid filled in */
    MC_REDIS_ROLE_REPLICA = 1           /* replid untouched */
} mc_redis_role_t;

/* Parses an INFO reply of len bytes.  For a master, copies its
 * master_replid (exactly 40 hex digits) into replid with a NUL. */
mc_redis_role_t mc_redis_info_replid(const char *info, size_t len, char replid[MC_REDIS_REPLID_LEN + 1]);

#endif
