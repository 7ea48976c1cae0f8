/*
 * The read-pointer flusher: moves write-back read marks from Redis's
 * {dirty}:read into room_members.last_read_seq, on its own thread.
 */
#ifndef RC_READFLUSH_H
#define RC_READFLUSH_H

#include <stdint.h>

#include "minichat/db.h"
#include "minichat/redis_conn.h"

typedef struct rc_readflush_s rc_readflush_t;

typedef struct {
    const char *redis;        /* "host:port" or "/path/to/socket" */
    mc_redis_tls_t tls;       /* TLS to Redis (its strings must outlive the flusher) */
    int interval_ms;          /* between two rounds */
    mc_db_config_t db;        /* the flusher opens its own connection */
} rc_readflush_config_t;

/* Starts the flusher thread.  Returns NULL after logging why (a bad address,
 * out of memory); a Redis or MySQL that is merely down is retried. */
rc_readflush_t *rc_readflush_start(const rc_readflush_config_t *cfg);

typedef struct {
    uint64_t rounds;          /* rounds that wrote something */
    uint64_t moved;           /* room_members rows moved forward */
    uint64_t failures;        /* rolled back transactions */
} rc_readflush_stats_t;
/* The flusher's counters (any thread). */
void rc_readflush_stats(const rc_readflush_t *rf, rc_readflush_stats_t *out);

/* Asks the thread to run one last round and stop, waits for it, and frees
 * everything.  NULL is ignored. */
void rc_readflush_stop(rc_readflush_t *rf);

#endif
