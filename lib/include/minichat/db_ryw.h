/*
 * Read-your-writes: the users who wrote through the database router within
 * the last window_ms, so that their own reads go to the primary until a
 * replica has surely caught up.  One table per process, shared by the DB
 * threads under a mutex; memory is fixed at creation (slots entries).
 *
 * When every slot of a user's probe run holds a writer still inside the
 * window, the table does not forget anybody: it raises a process-wide
 * "everyone reads from the primary" deadline instead, to the new writer's
 * window end.  A full table therefore costs replica reads, never a stale
 * read of one's own write.
 */
#ifndef MINICHAT_DB_RYW_H
#define MINICHAT_DB_RYW_H

#include <stddef.h>
#include <stdint.h>

typedef struct mc_db_ryw_s mc_db_ryw_t;

/* Returns a table for window_ms (0: read-your-writes off) with room for
 * slots writers (rounded up to a power of two), or NULL when out of memory. */
mc_db_ryw_t *mc_db_ryw_new(int64_t window_ms, size_t slots);
void mc_db_ryw_free(mc_db_ryw_t *t);

/* Records that user (not 0) wrote at now_ms. */
void mc_db_ryw_note(mc_db_ryw_t *t, uint64_t user, int64_t now_ms);

/* Returns 1 when user's reads must go to the primary at now_ms, else 0. */
int mc_db_ryw_recent(mc_db_ryw_t *t, uint64_t user, int64_t now_ms);

#endif
