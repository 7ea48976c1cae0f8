/*
 * Sessions and presence.
 *
 * A connection's session lives in Redis as {u:<user>}:sess:<sid> (the node
 * holding it) with a TTL of minichat_session_ttl, refreshed on every tick of
 * the connection; `?sid=` naming a session that still exists keeps it, on
 * any node ("resumed":true in hello).  Each connection is also a device in
 * {u:<user>}:devices ("<sid>:<connection id>" -> expiry): the user is online
 * while one entry is in the future.  Two transitions are announced to the
 * user's contacts (users sharing a room, from MySQL through the
 * relay-worker) as presence events: the first device coming online (also
 * when a refresh finds the user's devices had all expired meanwhile), and
 * the last one going away.
 *
 * A node that is killed never says its devices went away.  So every user
 * online is also listed in {presence}:online with the latest expiry of its
 * devices, and worker 0 of every node sweeps that index every few seconds:
 * an entry past its expiry is taken off (by exactly one sweeper, unlist.lua
 * decides) and, if no device refreshed meanwhile, announced offline.  A
 * killed node's users go offline within session_ttl + the sweep interval.
 *
 * An announcement costs the relay-worker a contacts query in MySQL.  A
 * connection storm (a node restarted, 100,000 clients coming back) would
 * make that a query per upgrade all at once, and swamp the relay-worker
 * that also carries the messages: sends behind the queries would miss
 * publish_max_age_ms and be refused.  So a worker has at most
 * NGX_HTTP_MINICHAT_PRESENCE_INFLIGHT lookups out at a time; the rest wait
 * in order (at most NGX_HTTP_MINICHAT_PRESENCE_WAITING; past that an
 * announcement is dropped and counted in a warning) and go as answers come.
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"


#define NGX_HTTP_MINICHAT_SWEEP_INTERVAL  5000
#define NGX_HTTP_MINICHAT_SWEEP_BATCH     "100"
#define NGX_HTTP_MINICHAT_CONTACTS_MAX    1000
#define NGX_HTTP_MINICHAT_PRESENCE_INFLIGHT  16
#define NGX_HTTP_MINICHAT_PRESENCE_WAITING   100000


typedef struct {
    ngx_queue_t  queue;     /* in the worker's waiting announcements */
    uint64_t     user;
    uint64_t     last_seen;
    ngx_uint_t   online;
} ngx_http_minichat_presence_t;


/* announcements of this worker: lookups out, and those waiting for one */
static ngx_uint_t   ngx_http_minichat_presence_out;
static ngx_uint_t   ngx_http_minichat_presence_waiting_n;
static ngx_uint_t   ngx_http_minichat_presence_dropped;
static ngx_queue_t  ngx_http_minichat_presence_waiting;


static void ngx_http_minichat_session_started(redisReply *reply, void *data);
static void ngx_http_minichat_session_refreshed(redisReply *reply, void *data);
static u_char *ngx_http_minichat_device(u_char *p, ngx_http_minichat_ws_t *ws);
static ngx_int_t ngx_http_minichat_session_script(ngx_http_minichat_ws_t *ws, ngx_http_minichat_redis_pt handler,
    void *data);
static void ngx_http_minichat_offline_reply(redisReply *reply, void *data);
static void ngx_http_minichat_announce(uint64_t user, ngx_uint_t online, uint64_t last_seen);
static void ngx_http_minichat_announce_lookup(ngx_http_minichat_presence_t *pr);
static void ngx_http_minichat_announce_next(void);
static void ngx_http_minichat_announce_contacts(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_list(uint64_t user);
static void ngx_http_minichat_sweep(ngx_event_t *ev);
static void ngx_http_minichat_sweep_reply(redisReply *reply, void *data);
static void ngx_http_minichat_unlisted(redisReply *reply, void *data);


static ngx_event_t  ngx_http_minichat_sweeper;


ngx_msec_t
ngx_http_minichat_tick(ngx_http_minichat_main_conf_t *mcf)
{
    return mcf->ping_interval ? mcf->ping_interval : mcf->session_ttl / 3;
}


ngx_int_t
ngx_http_minichat_session_start(ngx_http_minichat_ws_t *ws)
{
    if (ngx_http_minichat_session_script(ws, ngx_http_minichat_session_started, ws) != NGX_OK) {
        return NGX_ERROR;
    }

    ws->pending++;
    ngx_http_minichat_list(ws->user);

    return NGX_OK;
}


void
ngx_http_minichat_session_refresh(ngx_http_minichat_ws_t *ws)
{
    ngx_http_minichat_presence_t  *pr;

    pr = ngx_alloc(sizeof(ngx_http_minichat_presence_t), ngx_cycle->log);
    if (pr == NULL) {
        return;
    }
    pr->user = ws->user;

    if (ngx_http_minichat_session_script(ws, ngx_http_minichat_session_refreshed, pr) != NGX_OK) {
        ngx_free(pr);
        return;
    }

    ngx_http_minichat_list(ws->user);
}


/* A refresh that finds every device of the user gone (swept as expired,
 * announced offline) brings the user back online. */
static void
ngx_http_minichat_session_refreshed(redisReply *reply, void *data)
{
    ngx_http_minichat_presence_t  *pr = data;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3
        && reply->element[1]->type == REDIS_REPLY_INTEGER && reply->element[2]->type == REDIS_REPLY_INTEGER
        && reply->element[1]->integer == 0 && reply->element[2]->integer == 0)
    {
        ngx_http_minichat_announce(pr->user, 1, 0);
    }

    ngx_free(pr);
}


/* The device name of a connection: "<sid>:<connection id>". */
static u_char *
ngx_http_minichat_device(u_char *p, ngx_http_minichat_ws_t *ws)
{
    return ngx_sprintf(p, "%*s:%xL", (size_t) NGX_HTTP_MINICHAT_SID_LEN, ws->sid, ws->id);
}


/* Runs session.lua for the connection. */
static ngx_int_t
ngx_http_minichat_session_script(ngx_http_minichat_ws_t *ws, ngx_http_minichat_redis_pt handler, void *data)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    const char                     *av[6];
    size_t                          al[6];
    u_char                          sess[64], devices[48], now[NGX_INT64_LEN], ttl[NGX_INT64_LEN];
    u_char                          device[16 + 1 + NGX_INT64_LEN];

    av[0] = (const char *) sess;
    al[0] = ngx_sprintf(sess, "{u:%uL}:sess:%*s", ws->user, (size_t) NGX_HTTP_MINICHAT_SID_LEN, ws->sid) - sess;
    av[1] = (const char *) devices;
    al[1] = ngx_sprintf(devices, "{u:%uL}:devices", ws->user) - devices;
    av[2] = (const char *) mcf->node.data;
    al[2] = mcf->node.len;
    av[3] = (const char *) device;
    al[3] = ngx_http_minichat_device(device, ws) - device;
    av[4] = (const char *) now;
    al[4] = ngx_sprintf(now, "%uL", ngx_http_minichat_now_ms()) - now;
    av[5] = (const char *) ttl;
    al[5] = ngx_sprintf(ttl, "%M", mcf->session_ttl) - ttl;

    return ngx_http_minichat_redis_script(MINICHAT_LUA_SESSION_SHA1, MINICHAT_LUA_SESSION_SRC, 2, 6, av, al,
                                          handler, data);
}


static void
ngx_http_minichat_session_started(redisReply *reply, void *data)
{
    ngx_http_minichat_ws_t         *ws = data;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    u_char                          hello[sizeof("{\"op\":\"hello\",\"sid\":\"\",\"user\":,\"node\":\"\","
                                                 "\"resumed\":false}") + 16 + NGX_INT64_LEN + 64], *p;
    ngx_uint_t                      known, was_online;

    /* ws stays held (pending) until the end: hello or the close may fail
     * and close the connection under us */

    if (ws->closed) {
        goto done;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, ws->connection->log, 0, "minichat: session of user %uL not stored: %s",
                      ws->user, reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "redis unavailable");
        if (ngx_http_minichat_conn_hello(ws, NULL, 0) == NGX_OK && !ws->closed) {
            ngx_http_minichat_conn_close(ws, 1011, "session store unavailable");
        }
        goto done;
    }

    known = reply->element[0]->integer == 1;
    was_online = reply->element[1]->integer == 1;
    ws->resumed_sid = known;

    p = ngx_sprintf(hello, "{\"op\":\"hello\",\"sid\":\"%*s\",\"user\":%uL,\"node\":\"",
                    (size_t) NGX_HTTP_MINICHAT_SID_LEN, ws->sid, ws->user);
    p = ngx_http_minichat_json_escape(p, mcf->node.data, ngx_min(mcf->node.len, 64));
    p = ngx_sprintf(p, "\",\"resumed\":%s}", known ? "true" : "false");

    if (ngx_http_minichat_conn_hello(ws, hello, p - hello) != NGX_OK) {
        goto done;
    }

    if (!was_online) {
        ngx_http_minichat_announce(ws->user, 1, 0);
    }

done:

    ws->pending--;
    ngx_http_minichat_conn_release(ws);
}


void
ngx_http_minichat_session_end(ngx_http_minichat_ws_t *ws)
{
    ngx_http_minichat_presence_t  *pr;
    const char                    *av[4];
    size_t                         al[4];
    u_char                         devices[48], seen[48], now[NGX_INT64_LEN];
    u_char                         device[16 + 1 + NGX_INT64_LEN];

    if (!ngx_http_minichat_redis_ready()) {
        /* the sweep will find the device expired */
        return;
    }

    pr = ngx_alloc(sizeof(ngx_http_minichat_presence_t), ngx_cycle->log);
    if (pr == NULL) {
        return;
    }
    pr->user = ws->user;

    av[0] = (const char *) devices;
    al[0] = ngx_sprintf(devices, "{u:%uL}:devices", ws->user) - devices;
    av[1] = (const char *) seen;
    al[1] = ngx_sprintf(seen, "{u:%uL}:seen", ws->user) - seen;
    av[2] = (const char *) device;
    al[2] = ngx_http_minichat_device(device, ws) - device;
    av[3] = (const char *) now;
    al[3] = ngx_sprintf(now, "%uL", ngx_http_minichat_now_ms()) - now;

    if (ngx_http_minichat_redis_script(MINICHAT_LUA_OFFLINE_SHA1, MINICHAT_LUA_OFFLINE_SRC, 2, 4, av, al,
                                       ngx_http_minichat_offline_reply, pr)
        != NGX_OK)
    {
        ngx_free(pr);
    }
}


static void
ngx_http_minichat_offline_reply(redisReply *reply, void *data)
{
    ngx_http_minichat_presence_t  *pr = data;
    const char                    *av[3];
    size_t                         al[3];
    u_char                         user[NGX_INT64_LEN];

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->integer == 1 && ngx_http_minichat_registry_count(pr->user) == 0)
    {
        /* off the sweep index: this announcement is the one */
        av[0] = "ZREM";
        al[0] = 4;
        av[1] = "{presence}:online";
        al[1] = sizeof("{presence}:online") - 1;
        av[2] = (const char *) user;
        al[2] = ngx_sprintf(user, "%uL", pr->user) - user;
        (void) ngx_http_minichat_redis_argv(3, av, al, NULL, NULL);

        ngx_http_minichat_announce(pr->user, 0, (uint64_t) reply->element[1]->integer);
    }

    ngx_free(pr);
}


/* Lists the user in the sweep index with its latest expiry. */
static void
ngx_http_minichat_list(uint64_t user)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    const char                     *av[5];
    size_t                          al[5];
    u_char                          expiry[NGX_INT64_LEN], id[NGX_INT64_LEN];

    av[0] = "ZADD";
    al[0] = 4;
    av[1] = "{presence}:online";
    al[1] = sizeof("{presence}:online") - 1;
    av[2] = "GT";
    al[2] = 2;
    av[3] = (const char *) expiry;
    al[3] = ngx_sprintf(expiry, "%uL", ngx_http_minichat_now_ms() + mcf->session_ttl) - expiry;
    av[4] = (const char *) id;
    al[4] = ngx_sprintf(id, "%uL", user) - id;

    (void) ngx_http_minichat_redis_argv(5, av, al, NULL, NULL);
}


/* Tells the user's contacts, on every node, that it went online or offline:
 * now, or once fewer lookups are out (see the top of this file). */
static void
ngx_http_minichat_announce(uint64_t user, ngx_uint_t online, uint64_t last_seen)
{
    ngx_http_minichat_presence_t  *pr;

    if (!ngx_http_minichat_relay_ready()) {
        return;
    }

    if (ngx_http_minichat_presence_out >= NGX_HTTP_MINICHAT_PRESENCE_INFLIGHT
        && ngx_http_minichat_presence_waiting_n >= NGX_HTTP_MINICHAT_PRESENCE_WAITING)
    {
        if (ngx_http_minichat_presence_dropped++ % 1000 == 0) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "minichat: presence of user %uL not announced: %ui announcements waiting "
                          "(%ui dropped so far)", user, ngx_http_minichat_presence_waiting_n,
                          ngx_http_minichat_presence_dropped);
        }
        return;
    }

    pr = ngx_alloc(sizeof(ngx_http_minichat_presence_t), ngx_cycle->log);
    if (pr == NULL) {
        return;
    }

    pr->user = user;
    pr->online = online;
    pr->last_seen = last_seen;

    if (ngx_http_minichat_presence_out >= NGX_HTTP_MINICHAT_PRESENCE_INFLIGHT) {
        ngx_queue_insert_tail(&ngx_http_minichat_presence_waiting, &pr->queue);
        ngx_http_minichat_presence_waiting_n++;
        return;
    }

    ngx_http_minichat_announce_lookup(pr);
}


/* Asks the relay-worker for the contacts of pr's user; pr is freed by the
 * answer (or here, when the request cannot be made). */
static void
ngx_http_minichat_announce_lookup(ngx_http_minichat_presence_t *pr)
{
    Minichat__LocalFrame       f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__ContactsRequest  cr = MINICHAT__CONTACTS_REQUEST__INIT;

    cr.user = pr->user;
    cr.limit = NGX_HTTP_MINICHAT_CONTACTS_MAX;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_CONTACTS;
    f.contacts = &cr;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_announce_contacts, pr) != NGX_OK) {
        ngx_free(pr);
        return;
    }

    ngx_http_minichat_presence_out++;
}


/* A lookup came back: the next waiting announcements may go. */
static void
ngx_http_minichat_announce_next(void)
{
    ngx_queue_t                   *q;
    ngx_http_minichat_presence_t  *pr;

    ngx_http_minichat_presence_out--;

    while (ngx_http_minichat_presence_out < NGX_HTTP_MINICHAT_PRESENCE_INFLIGHT
           && ngx_http_minichat_presence_waiting_n)
    {
        q = ngx_queue_head(&ngx_http_minichat_presence_waiting);
        ngx_queue_remove(q);
        ngx_http_minichat_presence_waiting_n--;
        pr = ngx_queue_data(q, ngx_http_minichat_presence_t, queue);

        if (!ngx_http_minichat_relay_ready()) {
            ngx_free(pr);
            continue;
        }

        ngx_http_minichat_announce_lookup(pr);
    }
}


static void
ngx_http_minichat_announce_contacts(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_presence_t   *pr = data;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    Minichat__ChatMessage           e = MINICHAT__CHAT_MESSAGE__INIT;
    Minichat__ContactsResult       *cr;

    cr = result ? result->contacts_result : NULL;

    if (cr == NULL || (cr->error && cr->error[0])) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: presence of user %uL not announced: %s",
                      pr->user, cr ? cr->error : "no answer from relay-worker");
        ngx_free(pr);
        ngx_http_minichat_announce_next();
        return;
    }

    if (cr->n_users) {
        e.kind = "presence";
        e.sender = pr->user;
        e.online = pr->online;
        e.last_seen = pr->last_seen;
        e.recipients = cr->users;
        e.n_recipients = cr->n_users;
        e.origin_node = (char *) mcf->node.data;

        (void) ngx_http_minichat_event_send(&e);
    }

    ngx_free(pr);
    ngx_http_minichat_announce_next();
}


ngx_int_t
ngx_http_minichat_event_send(Minichat__ChatMessage *e)
{
    Minichat__LocalFrame  f = MINICHAT__LOCAL_FRAME__INIT;

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_EVENT;
    f.event = e;

    /* the relay-worker hands it to every worker of every node, this one too */
    return ngx_http_minichat_relay_send(&f);
}


void
ngx_http_minichat_presence_init(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_http_minichat_presence_waiting);

    if (ngx_worker != 0) {
        return;
    }

    ngx_memzero(&ngx_http_minichat_sweeper, sizeof(ngx_event_t));
    ngx_http_minichat_sweeper.handler = ngx_http_minichat_sweep;
    ngx_http_minichat_sweeper.log = cycle->log;
    ngx_http_minichat_sweeper.cancelable = 1;
    ngx_add_timer(&ngx_http_minichat_sweeper, NGX_HTTP_MINICHAT_SWEEP_INTERVAL);
}


void
ngx_http_minichat_presence_exit(void)
{
    ngx_queue_t  *q;

    if (ngx_http_minichat_sweeper.timer_set) {
        ngx_del_timer(&ngx_http_minichat_sweeper);
    }

    while (ngx_http_minichat_presence_waiting_n) {
        q = ngx_queue_head(&ngx_http_minichat_presence_waiting);
        ngx_queue_remove(q);
        ngx_http_minichat_presence_waiting_n--;
        ngx_free(ngx_queue_data(q, ngx_http_minichat_presence_t, queue));
    }
}


static void
ngx_http_minichat_sweep(ngx_event_t *ev)
{
    const char  *av[8];
    size_t       al[8];
    u_char       now[NGX_INT64_LEN];

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_MINICHAT_SWEEP_INTERVAL);

    av[0] = "ZRANGEBYSCORE";
    al[0] = sizeof("ZRANGEBYSCORE") - 1;
    av[1] = "{presence}:online";
    al[1] = sizeof("{presence}:online") - 1;
    av[2] = "-inf";
    al[2] = 4;
    av[3] = (const char *) now;
    al[3] = ngx_sprintf(now, "%uL", ngx_http_minichat_now_ms()) - now;
    av[4] = "LIMIT";
    al[4] = 5;
    av[5] = "0";
    al[5] = 1;
    av[6] = NGX_HTTP_MINICHAT_SWEEP_BATCH;
    al[6] = sizeof(NGX_HTTP_MINICHAT_SWEEP_BATCH) - 1;

    (void) ngx_http_minichat_redis_argv(7, av, al, ngx_http_minichat_sweep_reply, NULL);
}


static void
ngx_http_minichat_sweep_reply(redisReply *reply, void *data)
{
    ngx_http_minichat_presence_t  *pr;
    const char                    *av[4];
    size_t                         al[4];
    u_char                         now[NGX_INT64_LEN];
    size_t                         i;
    uint64_t                       user;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    av[0] = "{presence}:online";
    al[0] = sizeof("{presence}:online") - 1;
    av[2] = (const char *) now;
    al[2] = ngx_sprintf(now, "%uL", ngx_http_minichat_now_ms()) - now;

    for (i = 0; i < reply->elements; i++) {
        user = ngx_http_minichat_reply_id(reply->element[i]);
        if (user == 0) {
            continue;
        }

        pr = ngx_alloc(sizeof(ngx_http_minichat_presence_t), ngx_cycle->log);
        if (pr == NULL) {
            return;
        }
        pr->user = user;

        av[1] = reply->element[i]->str;
        al[1] = reply->element[i]->len;

        if (ngx_http_minichat_redis_script(MINICHAT_LUA_UNLIST_SHA1, MINICHAT_LUA_UNLIST_SRC, 1, 3, av, al,
                                           ngx_http_minichat_unlisted, pr)
            != NGX_OK)
        {
            ngx_free(pr);
            return;
        }
    }
}


static void
ngx_http_minichat_unlisted(redisReply *reply, void *data)
{
    ngx_http_minichat_presence_t  *pr = data;
    const char                    *av[4];
    size_t                         al[4];
    u_char                         devices[48], seen[48], now[NGX_INT64_LEN];

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
        ngx_free(pr);
        return;
    }

    /* this sweeper took the user off the index; gone if no device is live */
    av[0] = (const char *) devices;
    al[0] = ngx_sprintf(devices, "{u:%uL}:devices", pr->user) - devices;
    av[1] = (const char *) seen;
    al[1] = ngx_sprintf(seen, "{u:%uL}:seen", pr->user) - seen;
    av[2] = "";
    al[2] = 0;
    av[3] = (const char *) now;
    al[3] = ngx_sprintf(now, "%uL", ngx_http_minichat_now_ms()) - now;

    if (ngx_http_minichat_redis_script(MINICHAT_LUA_OFFLINE_SHA1, MINICHAT_LUA_OFFLINE_SRC, 2, 4, av, al,
                                       ngx_http_minichat_offline_reply, pr)
        != NGX_OK)
    {
        ngx_free(pr);
    }
}
