/*
 * The node's status page and its readiness answer, for operators and load
 * balancers (docs/operations.md, "Status and readiness").
 *
 * minichat_ready answers what the worker that took the request can do now:
 * 200 {"ready":true} when it has Redis (the single Redis ready; in a
 * cluster, a slot map read and every slot's master ready) and, when
 * minichat_relay is set, its link to the relay-worker up; else 503 with
 * {"ready":false,"reason":"..."}.  A worker that is shutting down (nginx -s
 * quit, an old worker after a reload) answers 503 too.  The answer is read
 * from the worker's own state: no I/O, no allocation beyond the reply, so a
 * balancer may ask often.  Every worker of a node keeps its own Redis and
 * relay-worker connections, and they come and go together (same servers),
 * so one worker's answer stands for the node.
 *
 * minichat_status answers a JSON object: the node, the build, this
 * process, what it sees of Redis (per node), its relay-worker link (up or
 * down, since when), the connections open on the node (from the metrics
 * zone) and in this worker, and its readiness.  The Redis and link parts
 * are this worker's view: another worker may be a moment ahead or behind.
 * It is built in one buffer on the request's pool; its size is bounded by
 * the number of Redis nodes (at most NGX_HTTP_MINICHAT_STATUS_NODES are
 * listed, the count says how many there are).
 *
 * The relay-worker's own status (its peers and their health, Kafka, its
 * worker links) comes over the worker's link: a LocalFrame status_req,
 * answered with the JSON of the relay-worker's status page, which goes in
 * as "relay_worker" once it is checked to be one JSON object.  The page
 * waits for it at most minichat_relay_timeout; without an answer (the link
 * down, a timeout, a lost link) "relay_worker" says so in an "error" field
 * and the rest of the page is served as it is.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/redis_cluster.h"


/* MC_BUILD_NAME: the build's name (git describe), written by the Makefile */
#include "minichat_build.h"

#define NGX_HTTP_MINICHAT_STATUS_NODES  64
/* the page without the Redis nodes: node name and relay path escaped (6
 * bytes a byte at most) and a few hundred bytes of fields */
#define NGX_HTTP_MINICHAT_STATUS_BASE   (4096 + 6 * (NGX_HTTP_MINICHAT_TEXT_MAX + 108))
#define NGX_HTTP_MINICHAT_STATUS_NODE   (sizeof("{\"addr\":\"\",\"state\":\"connecting\",\"master\":false," \
                                                "\"slots\":},") + 64 + 2 * NGX_INT_T_LEN)


static ngx_int_t ngx_http_minichat_status_method(ngx_http_request_t *r);
static const char *ngx_http_minichat_status_unready(void);
static u_char *ngx_http_minichat_status_redis(u_char *p, u_char *last);
static u_char *ngx_http_minichat_status_string(u_char *p, u_char *last, const u_char *s, size_t n);
static void ngx_http_minichat_status_relay_done(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_status_finish(ngx_http_request_t *r, ngx_str_t *page, const char *error,
    const char *json, size_t len);


/* A page waiting for the relay-worker's part. */
typedef struct {
    ngx_http_request_t  *request;
    ngx_str_t            page;     /* the fields so far, without the closing brace */
} ngx_http_minichat_status_wait_t;


/* GET and HEAD only; NGX_OK or the status that refuses the request. */
static ngx_int_t
ngx_http_minichat_status_method(ngx_http_request_t *r)
{
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    return ngx_http_discard_request_body(r);
}


/* Returns NULL when this worker can take new WebSocket clients, else why
 * not (a constant string). */
static const char *
ngx_http_minichat_status_unready(void)
{
    ngx_http_minichat_main_conf_t     *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_redis_status_t   st;
    uint64_t                           since;

    if (mcf == NULL || !mcf->enabled) {
        return "minichat is not configured (no minichat_redis)";
    }

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return "shutting down";
    }

    (void) ngx_http_minichat_redis_status(&st, NULL, 0);

    if (!st.cluster) {
        if (!ngx_http_minichat_redis_ready()) {
            return "redis not connected";
        }

    } else if (!st.mapped) {
        return "redis cluster slot map not read yet";

    } else if (st.slots_ready < MC_REDIS_SLOTS) {
        return "redis cluster: some slots have no ready master";
    }

    if (mcf->relay_path.len && !ngx_http_minichat_relay_state(&since)) {
        return "relay-worker link down";
    }

    return NULL;
}


/* minichat_ready */
ngx_int_t
ngx_http_minichat_ready_handler(ngx_http_request_t *r)
{
    u_char      buf[sizeof("{\"ready\":false,\"reason\":\"\"}") + 128], *p;
    const char *why;
    ngx_int_t   rc;

    rc = ngx_http_minichat_status_method(r);
    if (rc != NGX_OK) {
        return rc;
    }

    why = ngx_http_minichat_status_unready();
    if (why == NULL) {
        return ngx_http_minichat_api_reply(r, NGX_HTTP_OK, (u_char *) "{\"ready\":true}",
                                           sizeof("{\"ready\":true}") - 1);
    }

    p = ngx_snprintf(buf, sizeof(buf), "{\"ready\":false,\"reason\":\"%s\"}", why);

    return ngx_http_minichat_api_reply(r, NGX_HTTP_SERVICE_UNAVAILABLE, buf, p - buf);
}


/* minichat_status */
ngx_int_t
ngx_http_minichat_status_handler(ngx_http_request_t *r)
{
    ngx_http_minichat_main_conf_t    *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_status_wait_t  *wait;
    Minichat__LocalFrame              f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__StatusRequest           sreq = MINICHAT__STATUS_REQUEST__INIT;
    ngx_core_conf_t                  *ccf;
    ngx_str_t                         page;
    const char                       *why;
    uint64_t                          since;
    ngx_uint_t                        up;
    ngx_int_t                         rc, open;
    size_t                            size;
    u_char                           *buf, *p, *last;

    rc = ngx_http_minichat_status_method(r);
    if (rc != NGX_OK) {
        return rc;
    }

    size = NGX_HTTP_MINICHAT_STATUS_BASE + NGX_HTTP_MINICHAT_STATUS_NODES * NGX_HTTP_MINICHAT_STATUS_NODE;
    buf = ngx_pnalloc(r->pool, size);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = buf;
    last = buf + size;
    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx, ngx_core_module);
    why = ngx_http_minichat_status_unready();

    p = ngx_slprintf(p, last, "{\"node\":");
    if (mcf && mcf->enabled) {
        p = ngx_http_minichat_status_string(p, last, mcf->node.data, mcf->node.len);
    } else {
        p = ngx_slprintf(p, last, "null");
    }

    p = ngx_slprintf(p, last, ",\"build\":\"%s\",\"nginx\":\"%s\",\"pid\":%P,\"worker\":%i,\"workers\":%i",
                     MC_BUILD_NAME, NGINX_VERSION, ngx_pid, (ngx_int_t) ngx_worker,
                     ccf ? ccf->worker_processes : 0);

    p = ngx_slprintf(p, last, ",\"ready\":%s", why ? "false" : "true");
    if (why) {
        p = ngx_slprintf(p, last, ",\"reason\":\"%s\"", why);
    }

    open = ngx_http_minichat_metrics ? (ngx_int_t) (ngx_atomic_int_t) ngx_http_minichat_metrics->conn_open : -1;
    p = ngx_slprintf(p, last, ",\"connections\":{\"open\":%i,\"worker\":%ui}", open, ngx_http_minichat_ws_open);

    if (mcf && mcf->enabled) {
        p = ngx_http_minichat_status_redis(p, last);

        if (mcf->relay_path.len) {
            up = ngx_http_minichat_relay_state(&since);
            p = ngx_slprintf(p, last, ",\"relay\":{\"path\":");
            p = ngx_http_minichat_status_string(p, last, mcf->relay_path.data, mcf->relay_path.len);
            p = ngx_slprintf(p, last, ",\"state\":\"%s\",\"since_ms\":%uL}", up ? "up" : "down", since);

        } else {
            p = ngx_slprintf(p, last, ",\"relay\":null");
        }
    }

    if (p == last) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0, "minichat: status longer than %uz bytes", size);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    page.data = buf;
    page.len = p - buf;

    if (mcf == NULL || !mcf->enabled || mcf->relay_path.len == 0) {
        p = ngx_slprintf(p, last, "}");
        return ngx_http_minichat_api_reply(r, NGX_HTTP_OK, buf, p - buf);
    }

    wait = ngx_palloc(r->pool, sizeof(ngx_http_minichat_status_wait_t));
    if (wait == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    wait->request = r;
    wait->page = page;

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_STATUS_REQ;
    f.status_req = &sreq;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_status_relay_done, wait) != NGX_OK) {
        /* answered now: the link is down */
        r->main->count++;
        ngx_http_minichat_status_finish(r, &page, "relay-worker link down", NULL, 0);
        return NGX_DONE;
    }

    r->main->count++;

    return NGX_DONE;
}


/* The relay-worker's answer (result NULL: none came). */
static void
ngx_http_minichat_status_relay_done(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_status_wait_t  *wait = data;
    json_t                           *o;
    const char                       *s;
    size_t                            n;

    if (result == NULL) {
        ngx_http_minichat_status_finish(wait->request, &wait->page, "no answer from the relay-worker", NULL, 0);
        return;
    }

    if (result->body_case != MINICHAT__LOCAL_FRAME__BODY_STATUS || result->status->json == NULL) {
        ngx_http_minichat_status_finish(wait->request, &wait->page, "the relay-worker answered something else",
                                        NULL, 0);
        return;
    }

    s = result->status->json;
    n = ngx_strlen(s);

    /* embedded as it came: only a JSON object keeps the page JSON */
    o = json_loadb(s, n, 0, NULL);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        ngx_http_minichat_status_finish(wait->request, &wait->page, "the relay-worker's status is not a JSON object",
                                        NULL, 0);
        return;
    }
    json_decref(o);

    ngx_http_minichat_status_finish(wait->request, &wait->page, NULL, s, n);
}


/* Ends the page with "relay_worker": the relay-worker's JSON, or an object
 * with error, and answers it. */
static void
ngx_http_minichat_status_finish(ngx_http_request_t *r, ngx_str_t *page, const char *error, const char *json,
    size_t len)
{
    size_t   size;
    u_char  *buf, *p;

    size = page->len + sizeof(",\"relay_worker\":{\"error\":\"\"}}") + (error ? ngx_strlen(error) : 0) + len;

    buf = ngx_pnalloc(r->pool, size);
    if (buf == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        ngx_http_run_posted_requests(r->connection);
        return;
    }

    p = ngx_cpymem(buf, page->data, page->len);
    p = ngx_cpymem(p, ",\"relay_worker\":", sizeof(",\"relay_worker\":") - 1);

    if (error) {
        p = ngx_sprintf(p, "{\"error\":\"%s\"}", error);
    } else {
        p = ngx_cpymem(p, json, len);
    }

    *p++ = '}';

    ngx_http_minichat_api_finish(r, NGX_HTTP_OK, buf, p - buf);
}


/* ,"redis":{"mode":...,"ready":...,"nodes":[...]} */
static u_char *
ngx_http_minichat_status_redis(u_char *p, u_char *last)
{
    ngx_http_minichat_redis_node_status_t  nodes[NGX_HTTP_MINICHAT_STATUS_NODES];
    ngx_http_minichat_redis_status_t       st;
    ngx_uint_t                             i, n;
    const char                            *state;

    n = ngx_http_minichat_redis_status(&st, nodes, NGX_HTTP_MINICHAT_STATUS_NODES);

    p = ngx_slprintf(p, last, ",\"redis\":{\"mode\":\"%s\"", st.cluster ? "cluster" : "single");

    if (st.cluster) {
        p = ngx_slprintf(p, last, ",\"mapped\":%s,\"slots_ready\":%ui", st.mapped ? "true" : "false",
                         st.slots_ready);
    }

    p = ngx_slprintf(p, last, ",\"node_count\":%ui,\"nodes\":[", st.nnodes);

    for (i = 0; i < n; i++) {
        state = nodes[i].ready ? "ready" : nodes[i].connected ? "connecting" : "down";
        p = ngx_slprintf(p, last, "%s{\"addr\":\"%s:%i\",\"state\":\"%s\",\"master\":%s", i ? "," : "",
                         nodes[i].host, nodes[i].port, state, nodes[i].master ? "true" : "false");
        if (st.cluster) {
            p = ngx_slprintf(p, last, ",\"slots\":%ui", nodes[i].slots);
        }
        p = ngx_slprintf(p, last, "}");
    }

    return ngx_slprintf(p, last, "]}");
}


/* A JSON string of s[0..n), quoted and escaped, or p when it does not fit
 * (the caller sees the buffer's end reached). */
static u_char *
ngx_http_minichat_status_string(u_char *p, u_char *last, const u_char *s, size_t n)
{
    if ((size_t) (last - p) < ngx_http_minichat_json_escape_len(s, n) + 2) {
        return last;
    }

    *p++ = '"';
    p = ngx_http_minichat_json_escape(p, s, n);
    *p++ = '"';

    return p;
}
