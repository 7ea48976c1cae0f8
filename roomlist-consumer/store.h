/*
 * Persisting one batch of messages in one transaction on the MySQL primary.
 */
#ifndef RC_STORE_H
#define RC_STORE_H

#include <stdint.h>

#include "minichat/buf.h"
#include "minichat/db.h"
#include "minichat/debounce.h"
#include "minichat/msgbatch.h"

typedef struct {
    mc_db_t *db;
    mc_buf_t sql;           /* the statement being run, reused between batches */
    mc_db_args_t args;      /* its values */
    mc_db_status_t status;  /* of the last statement */
    size_t max_stmt_bytes;  /* an INSERT is split before it grows past this */
    int bulk;               /* rows go in one bulk execution (off: multi-row INSERTs) */
    int bulk_seen;          /* a bulk execution succeeded (logged once) */
    mc_debounce_t debounce; /* rooms whose members' last_message_at is behind */
    uint64_t *due;          /* rooms whose members are updated in this transaction */
    size_t ndue;
    size_t due_cap;

    uint64_t rows_new;      /* rows inserted */
    uint64_t rows_dup;      /* rows already present (redelivered records) */
    uint64_t rooms_moved;   /* rooms whose last_seq moved forward */
    uint64_t members_set;   /* room_members rows whose last_message_at moved */
    uint64_t batches;       /* committed transactions */
    uint64_t failures;      /* rolled back transactions */
} rc_store_t;

/* members_interval_ms: the least time between two updates of one room's
 * room_members rows (0: in every batch that moves the room).  bulk: insert
 * with MariaDB's bulk execution (turned off by the first batch when the
 * server has none). */
void rc_store_init(rc_store_t *st, mc_db_t *db, size_t max_stmt_bytes, int64_t members_interval_ms, int bulk);
void rc_store_free(rc_store_t *st);

/* Writes the batch (sorting it) in one transaction, with the room_members
 * updates that are due.  Returns 0 once committed, or -1 after rolling back
 * and logging why; the batch is unchanged either way except for its order, so
 * the caller can retry it. */
int rc_store_write(rc_store_t *st, mc_msgbatch_t *b);

/* Writes the deferred room_members updates whose interval has passed (all of
 * them when force).  Returns 0, or -1 after logging why (they stay pending). */
int rc_store_flush_members(rc_store_t *st, int force);

/* Returns the number of rooms with deferred room_members updates. */
size_t rc_store_pending(const rc_store_t *st);

#endif
