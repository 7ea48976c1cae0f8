/*
 * The roomlist-consumer's snapshot store and its /metrics page (see
 * metrics.h for who writes and who reads; docs/metrics.md lists every
 * family, named minichat_consumer_...).  The snapshot sits under one
 * mutex: the consumer thread copies a new one in, a scrape copies it out
 * and builds the text without the lock.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "minichat/clock.h"

rc_hists_t rc_hists;

static pthread_mutex_t rc_snap_lock = PTHREAD_MUTEX_INITIALIZER;
static rc_snapshot_t rc_snap;
static const char *rc_group = "", *rc_instance = "", *rc_topic = "";
static rc_readflush_t *rc_rf;

void rc_metrics_init(const char *group, const char *instance, const char *topic, rc_readflush_t *rf)
{
    rc_group = group;
    rc_instance = instance;
    rc_topic = topic;
    rc_rf = rf;
    mc_hist_init(&rc_hists.batch_rows, mc_hist_sizes, mc_hist_sizes_n, 1);
    mc_hist_init(&rc_hists.db_write, mc_hist_latency_us, mc_hist_latency_n, 1e-6);
}

void rc_metrics_publish(const rc_snapshot_t *s)
{
    pthread_mutex_lock(&rc_snap_lock);
    rc_snap = *s;
    pthread_mutex_unlock(&rc_snap_lock);
}

void rc_metrics_get(rc_snapshot_t *s)
{
    pthread_mutex_lock(&rc_snap_lock);
    *s = rc_snap;
    pthread_mutex_unlock(&rc_snap_lock);
}

const char *rc_metrics_group(void)
{
    return rc_group;
}

const char *rc_metrics_instance(void)
{
    return rc_instance;
}

rc_readflush_t *rc_metrics_readflush(void)
{
    return rc_rf;
}

/* The per-partition lag gauge (partitions whose lag is known). */
static int metrics_lag(mc_buf_t *b, const rc_snapshot_t *s)
{
    mc_prom_label_t l[2] = {{"topic", rc_topic}, {"partition", NULL}};
    char part[16];
    size_t i;

    if (mc_prom_family(b, "minichat_consumer_lag_records", "gauge",
                       "Records behind the partition's high watermark, per assigned partition") != 0) {
        return -1;
    }
    for (i = 0; i < s->nparts; i++) {
        if (s->parts[i].lag < 0) {
            continue;
        }
        snprintf(part, sizeof(part), "%d", (int)s->parts[i].partition);
        l[1].value = part;
        if (mc_prom_sample(b, "minichat_consumer_lag_records", l, 2, (double)s->parts[i].lag) != 0) {
            return -1;
        }
    }
    return 0;
}

/* A counter per push outcome. */
static int metrics_push(mc_buf_t *b, const rc_snapshot_t *s)
{
    static const char *const what[] = {"pushed", "online", "large_room", "stale", "presence_error", "failed"};
    mc_prom_label_t l = {"result", NULL};
    uint64_t v[6];
    size_t i;

    v[0] = s->push.pushed;
    v[1] = s->push.online;
    v[2] = s->push.large;
    v[3] = s->push.stale;
    v[4] = s->push.presence_errors;
    v[5] = s->push.failed;
    if (mc_prom_family(b, "minichat_consumer_push_events_total", "counter",
                       "Offline-push outcomes: events delivered (pushed), recipients skipped as online, messages "
                       "skipped (large_room, stale), batches without events (presence_error), batches held "
                       "(failed)") != 0) {
        return -1;
    }
    for (i = 0; s->push_on && i < 6; i++) {
        l.value = what[i];
        if (mc_prom_sample(b, "minichat_consumer_push_events_total", &l, 1, (double)v[i]) != 0) {
            return -1;
        }
    }
    return 0;
}

/* The families of one sample each, from snapshot s and the flusher's rf. */
static int metrics_singles(mc_buf_t *b, const rc_snapshot_t *s, const rc_readflush_stats_t *rf)
{
    const mc_prom_single_t kafka[] = {
        {"minichat_consumer_assigned_partitions", "gauge", "Partitions assigned to this member of the group",
         (double)s->nparts},
    };
    const mc_prom_single_t counts[] = {
        {"minichat_consumer_records_total", "counter", "Records consumed from Kafka", (double)s->consumed},
        {"minichat_consumer_malformed_total", "counter", "Records skipped: not a ChatMessage", (double)s->malformed},
        {"minichat_consumer_batches_total", "counter", "Batches committed to MySQL", (double)s->batches},
        {"minichat_consumer_batch_retries_total", "counter",
         "Batch writes retried after a failed transaction or push", (double)s->retries},
        {"minichat_consumer_store_failures_total", "counter", "Batch transactions rolled back",
         (double)s->store_failures},
        {"minichat_consumer_commit_failures_total", "counter", "Offset commits Kafka refused",
         (double)s->commits_failed},
    };
    const mc_prom_single_t state[] = {
        {"minichat_consumer_db_up", "gauge", "1 when the consumer's last connect to the primary succeeded",
         s->db_primary == MC_DB_UP},
        {"minichat_consumer_last_batch_age_seconds", "gauge",
         "Seconds since a batch was last committed (-1: none yet)",
         s->last_batch_ms ? (double)(mc_now_ms() - s->last_batch_ms) / 1000.0 : -1},
        {"minichat_consumer_read_flush_rounds_total", "counter", "Read-pointer flushes that wrote something",
         (double)rf->rounds},
        {"minichat_consumer_read_flush_rows_total", "counter",
         "room_members rows whose last_read_seq the flusher moved", (double)rf->moved},
        {"minichat_consumer_read_flush_failures_total", "counter", "Read-pointer transactions rolled back",
         (double)rf->failures},
    };
    mc_prom_label_t rows[2] = {{"result", "new"}, {"result", "duplicate"}};

    if (mc_prom_singles(b, kafka, sizeof(kafka) / sizeof(kafka[0])) != 0 || metrics_lag(b, s) != 0
        || mc_prom_singles(b, counts, sizeof(counts) / sizeof(counts[0])) != 0
        || mc_prom_family(b, "minichat_consumer_rows_total", "counter",
                          "Message rows written: new, or already present (a record read again)") != 0
        || mc_prom_sample(b, "minichat_consumer_rows_total", &rows[0], 1, (double)s->rows_new) != 0
        || mc_prom_sample(b, "minichat_consumer_rows_total", &rows[1], 1, (double)s->rows_dup) != 0
        || mc_prom_family(b, "minichat_consumer_batch_rows", "histogram", "Rows per committed batch") != 0
        || mc_prom_hist(b, "minichat_consumer_batch_rows", NULL, 0, &rc_hists.batch_rows) != 0
        || mc_prom_family(b, "minichat_consumer_db_write_duration_seconds", "histogram",
                          "One batch's transaction on the primary, failed ones included") != 0
        || mc_prom_hist(b, "minichat_consumer_db_write_duration_seconds", NULL, 0, &rc_hists.db_write) != 0
        || mc_prom_singles(b, state, sizeof(state) / sizeof(state[0])) != 0) {
        return -1;
    }
    return 0;
}

int rc_metrics_text(mc_buf_t *out)
{
    rc_readflush_stats_t rf = {0, 0, 0};
    rc_snapshot_t *s = malloc(sizeof(*s));
    int rc = -1;

    mc_buf_reset(out);
    if (s == NULL) {
        return -1;
    }
    rc_metrics_get(s);
    if (rc_rf != NULL) {
        rc_readflush_stats(rc_rf, &rf);
    }
    if (metrics_singles(out, s, &rf) == 0 && metrics_push(out, s) == 0) {
        rc = 0;
    } else {
        mc_buf_reset(out);
    }
    free(s);
    return rc;
}
