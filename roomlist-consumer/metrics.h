/*
 * What the roomlist-consumer shows an operator (docs/metrics.md,
 * docs/operations.md "Status and readiness"): the consumer thread publishes
 * a snapshot of its state (partitions and their lag, counters, the
 * primary's health) about every RC_SNAPSHOT_MS, and the HTTP thread builds
 * /metrics (metrics.c), /status and /ready (status.c) from the latest one,
 * so that it never touches the Kafka handle or the database router, which
 * belong to the consumer thread (and a fatal Kafka error replaces the
 * handle).  The two histograms are observed into directly (atomic adds).
 */
#ifndef RC_METRICS_H
#define RC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "minichat/buf.h"
#include "minichat/db.h"
#include "minichat/prom_text.h"
#include "push.h"
#include "readflush.h"

#define RC_SNAPSHOT_MS 500
#define RC_SNAPSHOT_PARTS 256   /* partitions shown at most */

typedef struct {
    int32_t partition;
    int64_t offset;     /* the next to read; -1: not known yet */
    int64_t lag;        /* records behind the high watermark; -1: not known yet */
} rc_part_state_t;

typedef struct {
    int running;        /* a Kafka consumer is running (not starting, not stopping) */
    int assignment_known;
    size_t nparts;
    rc_part_state_t parts[RC_SNAPSHOT_PARTS];
    uint64_t consumed, malformed, commits_failed, retries;
    uint64_t rows_new, rows_dup, batches, store_failures, rooms_moved, members_set;
    int push_on;
    rc_push_stats_t push;
    int64_t last_batch_ms;  /* mc_now_ms() when a batch was last committed; 0: none yet */
    mc_db_health_state_t db_primary;
} rc_snapshot_t;

typedef struct {
    mc_hist_t batch_rows;   /* rows per committed batch */
    mc_hist_t db_write;     /* one batch's transaction (rc_store_write), us */
} rc_hists_t;
extern rc_hists_t rc_hists;

/* Before any thread starts: the names the pages show. */
void rc_metrics_init(const char *group, const char *instance, const char *topic, rc_readflush_t *rf);
/* The consumer thread: replaces the snapshot. */
void rc_metrics_publish(const rc_snapshot_t *s);
/* A copy of the latest snapshot (any thread). */
void rc_metrics_get(rc_snapshot_t *s);
/* The names given to rc_metrics_init, and the flusher (NULL: off). */
const char *rc_metrics_group(void);
const char *rc_metrics_instance(void);
rc_readflush_t *rc_metrics_readflush(void);

/* metrics.c: the /metrics page.  Returns 0 or -1. */
int rc_metrics_text(mc_buf_t *out);
/* status.c: the /status JSON; /ready: 1 ready, else 0 with the reasons as
 * JSON in why (-1: out of memory). */
int rc_status_json(mc_buf_t *out);
int rc_ready(mc_buf_t *why);

#endif
