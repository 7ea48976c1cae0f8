/*
 * The module's metrics: counters in one shared-memory zone, added to by
 * every worker, and a location (minichat_metrics) that renders them in
 * Prometheus's text format, version 0.0.4.  docs/metrics.md lists them.
 *
 * Counting is the hot path (a few per frame, per delivery): each event is
 * one ngx_atomic_fetch_add on a word of the zone, without a lock and
 * without allocating.  A family with a label holds one word per value of a
 * closed set (error codes, close codes, limits), plus "other" for a value
 * outside it, so the number of series is fixed.  A histogram holds its
 * buckets one word each, not cumulative (an observation adds to exactly one
 * bucket and to the sum: two atomic adds); the handler snapshots them and
 * makes them cumulative, and _count is the +Inf bucket, so the two always
 * agree.  A scrape reads words another worker may be adding to: each value
 * is exact, the set of them is a moment's picture, not one instant.
 *
 * The zone ("minichat_metrics", NGX_HTTP_MINICHAT_METRICS_ZONE bytes) is
 * made at configuration time whether or not a location serves it, so a
 * location added by a later reload finds the counts of the whole life of
 * the master.  A reload keeps the zone and its counts (same name, size and
 * module); old workers that finish their connections go on counting into
 * it, so the open-connections gauge stays right across a reload.  Should
 * a new build of the module carry another layout (NGX_HTTP_MINICHAT_
 * METRICS_LAYOUT), a fresh set of counters is taken from the same zone and
 * the counts start again from zero; the old workers keep the old set.
 *
 * Each worker takes the set's address from its own cycle in init_process
 * (ngx_http_minichat_metrics_init), never from a configuration that may
 * have failed to load.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/clock.h"
#include "minichat/ws.h"


#define NGX_HTTP_MINICHAT_METRICS_ZONE    (64 * 1024)
#define NGX_HTTP_MINICHAT_METRICS_LAYOUT  (0x6d630000 + sizeof(ngx_http_minichat_metrics_t))
/* the longest text a scrape can make: every line is far below 256 bytes */
#define NGX_HTTP_MINICHAT_METRICS_TEXT    (256 * (64 + NGX_HTTP_MINICHAT_ERRORS + NGX_HTTP_MINICHAT_CLOSES \
                                                  + NGX_HTTP_MINICHAT_LIMITS + NGX_HTTP_MINICHAT_BANNED \
                                                  + NGX_HTTP_MINICHAT_SERVER_API_ENDPOINTS \
                                                    * NGX_HTTP_MINICHAT_SERVER_API_OUTCOMES \
                                                  + 2 * (NGX_HTTP_MINICHAT_BUCKETS + 4)))


typedef struct {
    ngx_http_minichat_metrics_t  *sh;
    ngx_slab_pool_t              *shpool;
} ngx_http_minichat_metrics_ctx_t;


static ngx_int_t ngx_http_minichat_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data);
static u_char *ngx_http_minichat_metrics_family(u_char *p, u_char *last, const char *name, const char *type,
    const char *help);
static u_char *ngx_http_minichat_metrics_labelled(u_char *p, u_char *last, const char *name, const char *label,
    const char **values, ngx_atomic_t *counts, ngx_uint_t n);
static u_char *ngx_http_minichat_metrics_histogram(u_char *p, u_char *last, const char *name,
    ngx_http_minichat_histogram_t *h);


/* the set this worker counts into; NULL: none (not a worker, or no zone) */
ngx_http_minichat_metrics_t  *ngx_http_minichat_metrics;


/* The families of one sample each, in the order they are printed. */
typedef struct {
    const char  *name;
    const char  *help;
    size_t       offset;      /* of its ngx_atomic_t in ngx_http_minichat_metrics_t */
    unsigned     gauge:1;
} ngx_http_minichat_metric_plain_t;

#define NGX_HTTP_MINICHAT_METRIC(name, field, gauge, help)                                                      \
    { name, help, offsetof(ngx_http_minichat_metrics_t, field), gauge }

static const ngx_http_minichat_metric_plain_t  ngx_http_minichat_metrics_plain[] = {
    NGX_HTTP_MINICHAT_METRIC("minichat_connections_open", conn_open, 1,
                             "WebSocket connections open now, on every worker"),
    NGX_HTTP_MINICHAT_METRIC("minichat_connections_opened_total", conn_opened, 0,
                             "WebSocket connections upgraded (101 sent)"),
    NGX_HTTP_MINICHAT_METRIC("minichat_ws_frames_received_total", frames_in, 0,
                             "WebSocket frames received from clients"),
    NGX_HTTP_MINICHAT_METRIC("minichat_ws_frames_sent_total", frames_out, 0,
                             "WebSocket frames queued for clients"),
    NGX_HTTP_MINICHAT_METRIC("minichat_ws_received_bytes_total", bytes_in, 0,
                             "Bytes read from WebSocket connections after the upgrade"),
    NGX_HTTP_MINICHAT_METRIC("minichat_ws_sent_bytes_total", bytes_out, 0,
                             "Bytes written to WebSocket connections, the 101 response included"),
    NGX_HTTP_MINICHAT_METRIC("minichat_sends_admitted_total", sends, 0,
                             "Messages the send script gave a seq (retries of a cid included)"),
    NGX_HTTP_MINICHAT_METRIC("minichat_acks_sent_total", acks, 0,
                             "Acks queued for senders (the message is durable)"),
    NGX_HTTP_MINICHAT_METRIC("minichat_deliveries_total", deliveries, 0,
                             "Live msg frames queued for recipients on this node"),
    NGX_HTTP_MINICHAT_METRIC("minichat_send_queue_bytes", queued_bytes, 1,
                             "Bytes queued for WebSocket clients and not yet written, on every worker"),
    NGX_HTTP_MINICHAT_METRIC("minichat_slow_clients_closed_total", slow_closed, 0,
                             "Connections closed because they did not read (send queue full, close not taken)"),
    NGX_HTTP_MINICHAT_METRIC("minichat_flush_writes_total", flush_writes, 0,
                             "Connections written by the workers' end-of-turn flushes (frames sent / this: frames per write)"),
    NGX_HTTP_MINICHAT_METRIC("minichat_flush_held_total", flush_held, 0,
                             "Flushes whose frames waited for minichat_flush_window"),
};


/* The closed sets behind the labels; the last entry of each is "other". */
static const char  *ngx_http_minichat_error_codes[NGX_HTTP_MINICHAT_ERRORS] = {
    "bad_request", "unauthorized", "forbidden", "not_found", "too_large", "rate_limited", "unavailable",
    "banned", "other"
};

static const ngx_uint_t  ngx_http_minichat_close_codes[NGX_HTTP_MINICHAT_CLOSES - 1] = {
    MC_WS_CLOSE_NORMAL, MC_WS_CLOSE_GOING_AWAY, MC_WS_CLOSE_PROTOCOL, MC_WS_CLOSE_UNSUPPORTED,
    MC_WS_CLOSE_BAD_DATA, MC_WS_CLOSE_POLICY, MC_WS_CLOSE_TOO_BIG, MC_WS_CLOSE_INTERNAL, MC_WS_CLOSE_TRY_LATER,
    NGX_HTTP_MINICHAT_CLOSE_EXPIRED, NGX_HTTP_MINICHAT_CLOSE_BANNED, NGX_HTTP_MINICHAT_CLOSE_DISCONNECTED
};

static const char  *ngx_http_minichat_close_names[NGX_HTTP_MINICHAT_CLOSES] = {
    "1000", "1001", "1002", "1003", "1007", "1008", "1009", "1011", "1013", "4001", "4003", "4005", "other"
};

/* indexed by NGX_HTTP_MINICHAT_LIMITED_* */
static const char  *ngx_http_minichat_limit_labels[NGX_HTTP_MINICHAT_LIMITS] = {
    "messages", "rest", "user_connections", "connections", "room_messages", "connections_per_ip"
};

/* indexed by NGX_HTTP_MINICHAT_SERVER_API_* and by outcome */
static const char  *ngx_http_minichat_server_api_labels[NGX_HTTP_MINICHAT_SERVER_API_ENDPOINTS] = {
    "publish", "disconnect", "ban", "unban", "ban_state", "other"
};

static const char  *ngx_http_minichat_server_api_outcomes[NGX_HTTP_MINICHAT_SERVER_API_OUTCOMES] = {
    "2xx", "4xx", "5xx"
};

/* indexed by NGX_HTTP_MINICHAT_BANNED_* */
static const char  *ngx_http_minichat_banned_labels[NGX_HTTP_MINICHAT_BANNED] = {
    "refused", "closed"
};

/* bucket bounds: in microseconds to compare, in seconds to print */
static const int64_t  ngx_http_minichat_bucket_us[NGX_HTTP_MINICHAT_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000
};

static const char  *ngx_http_minichat_bucket_le[NGX_HTTP_MINICHAT_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
    "1", "2.5", "5"
};


/* Makes the zone (at configuration time, once per http block). */
char *
ngx_http_minichat_metrics_merge(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf)
{
    ngx_http_minichat_metrics_ctx_t  *ctx;
    ngx_str_t                         name = ngx_string("minichat_metrics");

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_minichat_metrics_ctx_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->metrics_zone = ngx_shared_memory_add(cf, &name, NGX_HTTP_MINICHAT_METRICS_ZONE,
                                              &ngx_http_minichat_module);
    if (mcf->metrics_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->metrics_zone->init = ngx_http_minichat_metrics_init_zone;
    mcf->metrics_zone->data = ctx;

    return NGX_CONF_OK;
}


/* Takes the previous configuration's counters when their layout is this
 * build's (a reload), else a zeroed set from the zone's pool. */
static ngx_int_t
ngx_http_minichat_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_minichat_metrics_ctx_t  *octx = data;
    ngx_http_minichat_metrics_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        ctx->shpool = octx->shpool;
        if (octx->sh->layout == NGX_HTTP_MINICHAT_METRICS_LAYOUT) {
            ctx->sh = octx->sh;
            return NGX_OK;
        }

    } else {
        ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    }

    ctx->sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_http_minichat_metrics_t));
    if (ctx->sh == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0, "minichat: no room for metrics in zone \"%V\"",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    ctx->sh->layout = NGX_HTTP_MINICHAT_METRICS_LAYOUT;
    ctx->shpool->data = ctx->sh;

    return NGX_OK;
}


/* A worker starts counting into its cycle's set. */
void
ngx_http_minichat_metrics_init(ngx_http_minichat_main_conf_t *mcf)
{
    ngx_http_minichat_metrics_ctx_t  *ctx;

    ngx_http_minichat_metrics = NULL;

    if (mcf == NULL || mcf->metrics_zone == NULL) {
        return;
    }

    ctx = mcf->metrics_zone->data;
    ngx_http_minichat_metrics = ctx->sh;
}


/* An error frame sent, by its code. */
void
ngx_http_minichat_metrics_error(const char *code)
{
    ngx_uint_t  i;

    if (ngx_http_minichat_metrics == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_MINICHAT_ERRORS - 1; i++) {
        if (ngx_strcmp(code, ngx_http_minichat_error_codes[i]) == 0) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&ngx_http_minichat_metrics->errors[i], 1);
}


/* A close frame sent, by its code. */
void
ngx_http_minichat_metrics_close(ngx_uint_t code)
{
    ngx_uint_t  i;

    if (ngx_http_minichat_metrics == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_MINICHAT_CLOSES - 1; i++) {
        if (code == ngx_http_minichat_close_codes[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&ngx_http_minichat_metrics->closes[i], 1);
}


void
ngx_http_minichat_metrics_server_api(ngx_uint_t endpoint, ngx_uint_t status)
{
    ngx_uint_t  outcome;

    if (ngx_http_minichat_metrics == NULL || endpoint >= NGX_HTTP_MINICHAT_SERVER_API_ENDPOINTS) {
        return;
    }

    outcome = status < 300 ? 0 : status < 500 ? 1 : 2;
    (void) ngx_atomic_fetch_add(&ngx_http_minichat_metrics->server_api[endpoint][outcome], 1);
}


/* One observation of a round trip that began at start_us (mc_now_us()). */
void
ngx_http_minichat_metrics_observe(ngx_http_minichat_histogram_t *h, int64_t start_us)
{
    int64_t     us;
    ngx_uint_t  i;

    us = mc_now_us() - start_us;
    if (us < 0) {
        us = 0;
    }

    for (i = 0; i < NGX_HTTP_MINICHAT_BUCKETS; i++) {
        if (us <= ngx_http_minichat_bucket_us[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->buckets[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum_us, (ngx_atomic_int_t) us);
}


/* minichat_metrics: GET (or HEAD) answers the text; any other method 405. */
ngx_int_t
ngx_http_minichat_metrics_handler(ngx_http_request_t *r)
{
    ngx_http_minichat_metrics_t             *m = ngx_http_minichat_metrics;
    const ngx_http_minichat_metric_plain_t  *pm;
    ngx_atomic_uint_t                        v;
    ngx_uint_t                               i, j;
    ngx_int_t                                rc;
    ngx_buf_t                               *b;
    ngx_chain_t                              out;
    u_char                                  *p, *last;

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (m == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "minichat: metrics are not counted in this process");
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    b = ngx_create_temp_buf(r->pool, NGX_HTTP_MINICHAT_METRICS_TEXT);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->pos;
    last = b->end;

    for (i = 0; i < sizeof(ngx_http_minichat_metrics_plain) / sizeof(ngx_http_minichat_metrics_plain[0]); i++) {
        pm = &ngx_http_minichat_metrics_plain[i];
        v = *(ngx_atomic_t *) ((u_char *) m + pm->offset);
        p = ngx_http_minichat_metrics_family(p, last, pm->name, pm->gauge ? "gauge" : "counter", pm->help);
        /* a gauge is added to and taken from: signed */
        p = pm->gauge ? ngx_slprintf(p, last, "%s %A\n", pm->name, (ngx_atomic_int_t) v)
                      : ngx_slprintf(p, last, "%s %uA\n", pm->name, v);
    }

    p = ngx_http_minichat_metrics_family(p, last, "minichat_ws_errors_total", "counter",
                                         "Error frames sent to WebSocket clients, by code");
    p = ngx_http_minichat_metrics_labelled(p, last, "minichat_ws_errors_total", "code",
                                           ngx_http_minichat_error_codes, m->errors, NGX_HTTP_MINICHAT_ERRORS);

    p = ngx_http_minichat_metrics_family(p, last, "minichat_ws_closes_total", "counter",
                                         "Close frames sent to WebSocket clients, by close code");
    p = ngx_http_minichat_metrics_labelled(p, last, "minichat_ws_closes_total", "code",
                                           ngx_http_minichat_close_names, m->closes, NGX_HTTP_MINICHAT_CLOSES);

    p = ngx_http_minichat_metrics_family(p, last, "minichat_rate_limited_total", "counter",
                                         "Requests and upgrades a limit refused, by limit");
    p = ngx_http_minichat_metrics_labelled(p, last, "minichat_rate_limited_total", "limit",
                                           ngx_http_minichat_limit_labels, m->limited, NGX_HTTP_MINICHAT_LIMITS);

    p = ngx_http_minichat_metrics_family(p, last, "minichat_server_api_requests_total", "counter",
                                         "Answers of the server API, by endpoint and status class");
    for (i = 0; i < NGX_HTTP_MINICHAT_SERVER_API_ENDPOINTS; i++) {
        for (j = 0; j < NGX_HTTP_MINICHAT_SERVER_API_OUTCOMES; j++) {
            p = ngx_slprintf(p, last, "minichat_server_api_requests_total{endpoint=\"%s\",status=\"%s\"} %uA\n",
                             ngx_http_minichat_server_api_labels[i], ngx_http_minichat_server_api_outcomes[j],
                             m->server_api[i][j]);
        }
    }
    p = ngx_http_minichat_metrics_family(p, last, "minichat_banned_total", "counter",
                                         "Requests and upgrades refused, and connections closed, because of a ban");
    p = ngx_http_minichat_metrics_labelled(p, last, "minichat_banned_total", "action",
                                           ngx_http_minichat_banned_labels, m->banned, NGX_HTTP_MINICHAT_BANNED);

    p = ngx_http_minichat_metrics_family(p, last, "minichat_redis_round_trip_seconds", "histogram",
                                         "Redis commands from first issue to the reply (redirects included)");
    p = ngx_http_minichat_metrics_histogram(p, last, "minichat_redis_round_trip_seconds", &m->redis);

    p = ngx_http_minichat_metrics_family(p, last, "minichat_relay_round_trip_seconds", "histogram",
                                         "Requests to the relay-worker from sending to the answer");
    p = ngx_http_minichat_metrics_histogram(p, last, "minichat_relay_round_trip_seconds", &m->relay);

    if (p == last) {
        /* the bound above is far from reached; a cut text is not served */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0, "minichat: metrics text longer than %uz bytes",
                      (size_t) NGX_HTTP_MINICHAT_METRICS_TEXT);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static u_char *
ngx_http_minichat_metrics_family(u_char *p, u_char *last, const char *name, const char *type, const char *help)
{
    return ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}


static u_char *
ngx_http_minichat_metrics_labelled(u_char *p, u_char *last, const char *name, const char *label,
    const char **values, ngx_atomic_t *counts, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        p = ngx_slprintf(p, last, "%s{%s=\"%s\"} %uA\n", name, label, values[i], counts[i]);
    }

    return p;
}


/* The buckets as Prometheus wants them: cumulative, +Inf last and equal to
 * _count, from one snapshot. */
static u_char *
ngx_http_minichat_metrics_histogram(u_char *p, u_char *last, const char *name, ngx_http_minichat_histogram_t *h)
{
    ngx_atomic_uint_t  counts[NGX_HTTP_MINICHAT_BUCKETS + 1], total, sum;
    ngx_uint_t         i;

    for (i = 0; i <= NGX_HTTP_MINICHAT_BUCKETS; i++) {
        counts[i] = h->buckets[i];
    }
    sum = h->sum_us;

    total = 0;
    for (i = 0; i < NGX_HTTP_MINICHAT_BUCKETS; i++) {
        total += counts[i];
        p = ngx_slprintf(p, last, "%s_bucket{le=\"%s\"} %uA\n", name, ngx_http_minichat_bucket_le[i], total);
    }
    total += counts[NGX_HTTP_MINICHAT_BUCKETS];

    p = ngx_slprintf(p, last, "%s_bucket{le=\"+Inf\"} %uA\n", name, total);
    p = ngx_slprintf(p, last, "%s_sum %uA.%06uA\n", name, sum / 1000000, sum % 1000000);
    p = ngx_slprintf(p, last, "%s_count %uA\n", name, total);

    return p;
}
