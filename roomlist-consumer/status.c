/*
 * The roomlist-consumer's /status and /ready (docs/operations.md "Status
 * and readiness"), from the snapshot the consumer thread publishes
 * (metrics.h).  Ready means: a Kafka consumer runs, it has partitions
 * assigned, and its last connect to the primary succeeded.  A member of a
 * group with more members than partitions is rightly unready: it has
 * nothing to do until another leaves.
 */
#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>

#include "metrics.h"
#include "minichat/clock.h"

#ifndef MC_BUILD
#define MC_BUILD "unknown"
#endif

static json_t *status_partitions(const rc_snapshot_t *s)
{
    json_t *a = json_array(), *o;
    size_t i;

    for (i = 0; a != NULL && i < s->nparts; i++) {
        o = json_pack("{s:i, s:o, s:o}", "partition", (int)s->parts[i].partition, "offset",
                      s->parts[i].offset >= 0 ? json_integer(s->parts[i].offset) : json_null(), "lag",
                      s->parts[i].lag >= 0 ? json_integer(s->parts[i].lag) : json_null());
        if (o == NULL || json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* The reasons s is not ready, as a JSON array (empty: ready). */
static json_t *status_unready(const rc_snapshot_t *s)
{
    json_t *a = json_array();

    if (a == NULL) {
        return NULL;
    }
    if (!s->running) {
        json_array_append_new(a, json_string("kafka: the consumer is starting or stopping"));
    } else if (s->nparts == 0) {
        json_array_append_new(a, json_string("kafka: no partitions assigned"));
    }
    if (s->db_primary != MC_DB_UP) {
        json_array_append_new(a, json_string("mysql: the primary is not reachable"));
    }
    return a;
}

/* Dumps o (taken over) into out.  Returns 0 or -1. */
static int status_dump(json_t *o, mc_buf_t *out)
{
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    int rc = text != NULL && mc_buf_append_str(out, text) == 0 ? 0 : -1;

    free(text);
    json_decref(o);
    return rc;
}

int rc_status_json(mc_buf_t *out)
{
    rc_snapshot_t *s = malloc(sizeof(*s));
    json_t *unready, *o;
    int64_t now = mc_now_ms();

    mc_buf_reset(out);
    if (s == NULL) {
        return -1;
    }
    rc_metrics_get(s);
    unready = status_unready(s);
    o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:b, s:o, s:o, s:{s:s}, s:o, s:I, s:I, s:I}", "service",
                  "roomlist-consumer", "group", rc_metrics_group(), "instance", rc_metrics_instance(), "build",
                  MC_BUILD, "pid", (int)getpid(), "ready", unready != NULL && json_array_size(unready) == 0,
                  "unready", unready, "partitions", status_partitions(s), "db", "primary",
                  mc_db_health_name(s->db_primary), "last_batch_age_ms",
                  s->last_batch_ms ? json_integer(now - s->last_batch_ms) : json_null(), "records",
                  (json_int_t)s->consumed, "rows_new", (json_int_t)s->rows_new, "batches", (json_int_t)s->batches);
    free(s);
    return status_dump(o, out);
}

int rc_ready(mc_buf_t *why)
{
    rc_snapshot_t *s = malloc(sizeof(*s));
    json_t *unready;

    if (s == NULL) {
        return -1;
    }
    rc_metrics_get(s);
    unready = status_unready(s);
    free(s);
    if (unready == NULL) {
        return -1;
    }
    if (json_array_size(unready) == 0) {
        json_decref(unready);
        return 1;
    }
    return status_dump(json_pack("{s:b, s:o}", "ready", 0, "reasons", unready), why) == 0 ? 0 : -1;
}
