/*
 * The database router's decisions (see db_route.h): round robin over the
 * usable replicas, the down pause, and replica lag from GTID positions.
 *
 * Why GTID positions and not Seconds_Behind_Master: that field has a
 * resolution of one second, is computed from the event's timestamp (so a
 * replica that is idle and behind can read 0), and is NULL when replication
 * stopped.  A MariaDB primary's @@gtid_binlog_pos names, per replication
 * domain, the seq_no of the last transaction it wrote; a replica's
 * @@gtid_slave_pos the last one it applied.  At most every check_ms (just
 * before a read, or, with between set, after a read, and before one only
 * after a quiet spell: the relay-worker's DB threads, so that pages do not
 * wait for the extra round trips) the router reads both and remembers the primary's position
 * with the time it read it.  If the replica has applied the newest sample,
 * it is in step.  Otherwise the newest sample it has applied was taken at
 * t, and what it misses was written after t: its lag is at most now - t,
 * and it counts as lagging when that bound passes max_lag_ms.  Positions
 * only grow, so samples older than that one never decide again and are
 * dropped.  The bound errs on the safe side: after a quiet spell (no reads,
 * so no samples) a replica that is a moment behind counts as lagging until
 * the next check, one check_ms later, finds it past a recent sample.  The
 * cost is two one-row SELECTs per replica per check_ms per router (and
 * SHOW SLAVE STATUS, db.c); no heartbeat writer is needed, and an
 * idle primary means no lag whatever the clocks say.
 *
 * A replica that has applied none of the samples (just after start, or
 * after MC_DB_LAG_SAMPLES checks without catching up) counts as lagging:
 * unknown is treated as behind.  A replica whose replication stopped
 * (either thread) lags, and so does one whose measurement failed, until
 * the next measurement.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/db_route.h"

/* Parses an unsigned decimal number of s[*i..len) up to a stop byte.
 * Returns 0, or -1 when there is no digit or it overflows. */
static int gtid_num(const char *s, size_t len, size_t *i, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    size_t start = *i;

    while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        if (v > (max - (uint64_t)(s[*i] - '0')) / 10) {
            return -1;
        }
        v = v * 10 + (uint64_t)(s[*i] - '0');
        (*i)++;
    }
    if (*i == start) {
        return -1;
    }
    *out = v;
    return 0;
}

int mc_gtid_parse(const char *s, size_t len, mc_gtid_pos_t *out)
{
    uint64_t domain, server, seq;
    size_t i = 0, k;

    out->n = 0;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\n')) {
        len--;
    }
    if (len == 0) {
        return 0;
    }
    for (;;) {
        while (i < len && (s[i] == ' ' || s[i] == '\n')) {
            i++;
        }
        if (gtid_num(s, len, &i, UINT32_MAX, &domain) != 0 || i >= len || s[i++] != '-'
            || gtid_num(s, len, &i, UINT32_MAX, &server) != 0 || i >= len || s[i++] != '-'
            || gtid_num(s, len, &i, UINT64_MAX, &seq) != 0)
        {
            return -1;
        }
        for (k = 0; k < out->n && out->domain[k] != domain; k++) {
        }
        if (k == out->n) {
            if (out->n == MC_DB_GTID_DOMAINS) {
                return -1;
            }
            out->domain[k] = (uint32_t)domain;
            out->seq[k] = 0;
            out->n++;
        }
        if (seq > out->seq[k]) {
            out->seq[k] = seq;
        }
        if (i == len) {
            return 0;
        }
        if (s[i++] != ',') {
            return -1;
        }
    }
}

int mc_gtid_covers(const mc_gtid_pos_t *pos, const mc_gtid_pos_t *want)
{
    size_t i, k;

    for (i = 0; i < want->n; i++) {
        for (k = 0; k < pos->n && pos->domain[k] != want->domain[i]; k++) {
        }
        if (k == pos->n ? want->seq[i] > 0 : pos->seq[k] < want->seq[i]) {
            return 0;
        }
    }
    return 1;
}

void mc_db_route_init(mc_db_route_t *rt, size_t n, int64_t retry_ms, int64_t max_lag_ms, int64_t check_ms)
{
    memset(rt, 0, sizeof(*rt));
    rt->n = n > MC_DB_REPLICAS_MAX ? MC_DB_REPLICAS_MAX : n;
    rt->retry_ms = retry_ms;
    rt->max_lag_ms = max_lag_ms;
    rt->check_ms = check_ms;
}

int mc_db_route_pick(mc_db_route_t *rt, int64_t now_ms)
{
    size_t k, i;

    for (k = 0; k < rt->n; k++) {
        i = (rt->next + k) % rt->n;
        if (now_ms < rt->r[i].down_until_ms || rt->r[i].lagging) {
            continue;
        }
        rt->next = (i + 1) % rt->n;
        return (int)i;
    }
    return -1;
}

void mc_db_route_down(mc_db_route_t *rt, int i, int64_t now_ms)
{
    rt->r[i].down_until_ms = now_ms + rt->retry_ms;
}

int mc_db_route_lag_due(const mc_db_route_t *rt, int i, int64_t now_ms)
{
    return rt->max_lag_ms > 0 && (rt->r[i].checked_ms == 0 || now_ms - rt->r[i].checked_ms >= rt->check_ms);
}

int mc_db_route_lag_due_read(const mc_db_route_t *rt, int i, int64_t now_ms)
{
    if (!rt->between) {
        return mc_db_route_lag_due(rt, i, now_ms);
    }
    return rt->max_lag_ms > 0
           && (rt->r[i].checked_ms == 0 || now_ms - rt->r[i].checked_ms >= MC_DB_LAG_STALE * rt->check_ms);
}

int mc_db_route_lag_measure(mc_db_route_t *rt, int i, int64_t now_ms, const mc_gtid_pos_t *primary,
                            const mc_gtid_pos_t *replica, int running)
{
    mc_db_replica_state_t *r = &rt->r[i];
    size_t k, n;
    int covered = -1;

    if (r->nsamples == MC_DB_LAG_SAMPLES) {
        memmove(&r->samples[0], &r->samples[1], (MC_DB_LAG_SAMPLES - 1) * sizeof(r->samples[0]));
        r->nsamples--;
    }
    r->samples[r->nsamples].t_ms = now_ms;
    r->samples[r->nsamples].pos = *primary;
    r->nsamples++;
    r->checked_ms = now_ms;

    /* the newest sample the replica has applied */
    for (k = r->nsamples; k > 0; k--) {
        if (mc_gtid_covers(replica, &r->samples[k - 1].pos)) {
            covered = (int)(k - 1);
            break;
        }
    }
    if (!running || covered < 0) {
        r->lagging = 1; /* stopped, or behind everything we saw */
    } else {
        r->lagging = covered + 1 < (int)r->nsamples && now_ms - r->samples[covered].t_ms > rt->max_lag_ms;
        /* the older samples are applied too and will never decide again */
        n = r->nsamples - (size_t)covered;
        memmove(&r->samples[0], &r->samples[covered], n * sizeof(r->samples[0]));
        r->nsamples = n;
    }
    return r->lagging;
}

void mc_db_route_lag_unknown(mc_db_route_t *rt, int i, int64_t now_ms)
{
    rt->r[i].checked_ms = now_ms;
    rt->r[i].lagging = 1;
}
