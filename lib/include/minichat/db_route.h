/*
 * The database router's decisions, free of libmariadb so that they are
 * unit-tested without servers (tests/unit/test_db_route.c): which replica
 * serves the next read (round robin over the ones that are up and not
 * lagging), when a replica's lag is measured again, whether a measured
 * position means "too far behind", and the GTID position arithmetic that
 * measurement rests on.  lib/src/db.c does the talking.
 */
#ifndef MINICHAT_DB_ROUTE_H
#define MINICHAT_DB_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#define MC_DB_REPLICAS_MAX 16
#define MC_DB_GTID_DOMAINS 8   /* replication domains a position may name */
#define MC_DB_LAG_SAMPLES 64   /* primary positions remembered per replica */
#define MC_DB_LAG_STALE 2      /* check_ms periods without a measurement before a read measures it itself */

/* A MariaDB GTID position ("0-1-42,1-2-7"): per domain, the highest seq_no. */
typedef struct {
    size_t n;
    uint32_t domain[MC_DB_GTID_DOMAINS];
    uint64_t seq[MC_DB_GTID_DOMAINS];
} mc_gtid_pos_t;

typedef struct {
    int64_t t_ms;       /* when the primary was at pos */
    mc_gtid_pos_t pos;
} mc_db_lag_sample_t;

typedef struct {
    int64_t down_until_ms;  /* unreachable: not tried before this time */
    int64_t checked_ms;     /* last lag measurement (0: never) */
    int lagging;            /* the last measurement found it too far behind or stopped */
    size_t nsamples;        /* primary positions, oldest first */
    mc_db_lag_sample_t samples[MC_DB_LAG_SAMPLES];
} mc_db_replica_state_t;

typedef struct {
    size_t n;                        /* replicas configured */
    size_t next;                     /* round-robin cursor */
    int64_t retry_ms;                /* a down replica's pause */
    int64_t max_lag_ms;              /* lag past this: skipped (0: lag never checked) */
    int64_t check_ms;                /* at most one lag measurement per replica per check_ms */
    int between;                     /* lags are measured between reads (mc_db_lag_refresh), not by them */
    mc_db_replica_state_t r[MC_DB_REPLICAS_MAX];
} mc_db_route_t;

/* Parses a GTID position ("" is the empty position).  Returns 0, or -1 when
 * it is malformed or names more than MC_DB_GTID_DOMAINS domains. */
int mc_gtid_parse(const char *s, size_t len, mc_gtid_pos_t *out);

/* Returns 1 when pos has reached want in every domain of want, else 0. */
int mc_gtid_covers(const mc_gtid_pos_t *pos, const mc_gtid_pos_t *want);

void mc_db_route_init(mc_db_route_t *rt, size_t n, int64_t retry_ms, int64_t max_lag_ms, int64_t check_ms);

/* Returns the replica to read from next, in turn, skipping down and lagging
 * ones, or -1 when none is usable (the primary answers). */
int mc_db_route_pick(mc_db_route_t *rt, int64_t now_ms);

/* Marks replica i unreachable for retry_ms. */
void mc_db_route_down(mc_db_route_t *rt, int i, int64_t now_ms);

/* Returns 1 when replica i's lag is due to be measured (never, or check_ms ago). */
int mc_db_route_lag_due(const mc_db_route_t *rt, int i, int64_t now_ms);

/* Returns 1 when a read must measure replica i's lag before it picks a
 * replica: when it is due, or, with between set, only when no measurement
 * was taken in MC_DB_LAG_STALE check_ms (the thread that measures between
 * reads was kept busy). */
int mc_db_route_lag_due_read(const mc_db_route_t *rt, int i, int64_t now_ms);

/* Records one measurement of replica i: the primary's position now, the
 * replica's applied position now, and whether its replication runs.  The
 * replica lags when replication stopped, when it has applied none of the
 * primary positions sampled, or when the newest one it applied is older
 * than max_lag_ms (and not the one just taken).  Returns the lagging flag. */
int mc_db_route_lag_measure(mc_db_route_t *rt, int i, int64_t now_ms, const mc_gtid_pos_t *primary,
                            const mc_gtid_pos_t *replica, int running);

/* Marks replica i's measurement as failed (unknown counts as lagging until
 * the next one). */
void mc_db_route_lag_unknown(mc_db_route_t *rt, int i, int64_t now_ms);

#endif
