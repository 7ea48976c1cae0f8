/*
 * The users this worker holds connections of, as its relay-worker knows
 * them (LocalFrame.users), so that the relay-worker writes a chat message
 * only to the workers that hold one of its recipients
 * (relay-worker/worker_users.c; docs/ARCHITECTURE.md "Delivering only to
 * workers with recipients").
 *
 * On every connection of the link the whole set goes first, right after the
 * link's hello.  Then each connection that registers or leaves names its
 * user here; at the end of the event-loop turn (a posted event) one frame
 * says which of those users this worker holds now (`add`) and which it no
 * longer does (`del`), looked up in the registry then, so that the order of
 * the turn's events does not matter.
 *
 * Every users frame is a request: the relay-worker answers once the set
 * includes it, and every deliver after that answer on the stream was chosen
 * with it.  A new connection's hello waits for the answer to the frame that
 * carries its user (ngx_http_minichat_users_hold): the client resumes after
 * hello, so the Redis read of its resume comes after the relay-worker
 * counts it, and a message the relay-worker left out for this worker before
 * is in that read (its seq was assigned before).  The wait ends early, and
 * the hello goes, when the link is down (nothing is delivered then anyway),
 * when the request times out, or when the relay-worker turns out not to
 * answer users frames (a relay-worker from before this: it sends every
 * message, and no further frames are sent to it until the link reconnects).
 */
#include "ngx_http_minichat_module.h"
#include "minichat/buf.h"


typedef enum {
    NGX_HTTP_MINICHAT_USERS_UNKNOWN = 0, /* the first frame on the link is not answered yet */
    NGX_HTTP_MINICHAT_USERS_YES,         /* the relay-worker answers users frames */
    NGX_HTTP_MINICHAT_USERS_NO           /* it did not: it sends everything; say nothing more */
} ngx_http_minichat_users_peer_e;


typedef struct {
    ngx_http_minichat_ws_t      *ws;
    uint64_t                     batch;   /* released once that frame is answered (or given up on) */
} ngx_http_minichat_users_wait_t;


typedef struct {
    mc_buf_t                     changed; /* uint64_t users named this turn */
    mc_buf_t                     waiting; /* ngx_http_minichat_users_wait_t: hellos held */
    ngx_uint_t                   lost;    /* a change could not be noted: restart the link */
    uint64_t                     batch;   /* the number of the next frame */
    ngx_event_t                  flush;   /* posted: the end of the turn */
    ngx_http_minichat_users_peer_e  peer;
} ngx_http_minichat_users_t;


static void ngx_http_minichat_users_flush_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_minichat_users_send(Minichat__UserSet *us, uint64_t batch);
static void ngx_http_minichat_users_answered(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_users_release(uint64_t upto);
static void ngx_http_minichat_users_all(void);


static ngx_http_minichat_users_t  ngx_http_minichat_users;


void
ngx_http_minichat_users_init(ngx_cycle_t *cycle)
{
    ngx_http_minichat_users_t  *u = &ngx_http_minichat_users;

    ngx_memzero(u, sizeof(ngx_http_minichat_users_t));
    u->batch = 1;
    u->flush.handler = ngx_http_minichat_users_flush_handler;
    u->flush.log = cycle->log;
    u->flush.data = u;
}


void
ngx_http_minichat_users_exit(void)
{
    ngx_http_minichat_users_t  *u = &ngx_http_minichat_users;

    if (u->flush.posted) {
        ngx_delete_posted_event(&u->flush);
    }

    ngx_http_minichat_users_release((uint64_t) -1);
    mc_buf_free(&u->changed);
    mc_buf_free(&u->waiting);
}


/* The link is up (its hello queued): the whole set goes first. */
void
ngx_http_minichat_users_link_up(void)
{
    ngx_http_minichat_users_t  *u = &ngx_http_minichat_users;
    Minichat__UserSet           us = MINICHAT__USER_SET__INIT;
    mc_buf_t                    all;

    u->peer = NGX_HTTP_MINICHAT_USERS_UNKNOWN;
    mc_buf_reset(&u->changed); /* the set below is newer than any of them */

    mc_buf_init(&all);
    if (ngx_http_minichat_registry_users(&all) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, u->flush.log, 0, "minichat: out of memory listing this worker's users "
                      "for the relay-worker; it sends this worker every message");
        mc_buf_free(&all);
        u->peer = NGX_HTTP_MINICHAT_USERS_NO;
        ngx_http_minichat_users_release(u->batch);
        return;
    }

    us.full = 1;
    us.add = (uint64_t *) all.data;
    us.n_add = all.len / sizeof(uint64_t);

    (void) ngx_http_minichat_users_send(&us, u->batch++);

    mc_buf_free(&all);
}


void
ngx_http_minichat_users_changed(uint64_t user)
{
    ngx_http_minichat_users_t  *u = &ngx_http_minichat_users;

    if (u->flush.handler == NULL || u->peer == NGX_HTTP_MINICHAT_USERS_NO || !ngx_http_minichat_relay_ready()) {
        return; /* no link (the next one starts with the whole set), or a relay-worker that sends everything */
    }

    if (mc_buf_append(&u->changed, &user, sizeof(user)) != 0) {
        /* the relay-worker would miss this user's messages: the turn's end
         * starts the link again, which sends the whole set */
        ngx_log_error(NGX_LOG_ERR, u->flush.log, 0, "minichat: out of memory noting user %uL for the "
                      "relay-worker", user);
        u->lost = 1;
    }

    if (!u->flush.posted) {
        ngx_post_event(&u->flush, &ngx_posted_events);
    }
}


ngx_int_t
ngx_http_minichat_users_hold(ngx_http_minichat_ws_t *ws)
{
    ngx_http_minichat_users_t       *u = &ngx_http_minichat_users;
    ngx_http_minichat_users_wait_t   w;

    if (u->flush.handler == NULL || u->peer == NGX_HTTP_MINICHAT_USERS_NO || !ngx_http_minichat_relay_ready()
        || !u->flush.posted)
    {
        return NGX_OK;
    }

    /* the frame of this turn carries ws's user */
    w.ws = ws;
    w.batch = u->batch;

    if (mc_buf_append(&u->waiting, &w, sizeof(w)) != 0) {
        return NGX_OK; /* hello at once: a message may be missed until the client sees its gap */
    }

    ws->pending++;

    return NGX_AGAIN;
}


static void
ngx_http_minichat_users_flush_handler(ngx_event_t *ev)
{
    ngx_http_minichat_users_t  *u = ev->data;
    Minichat__UserSet           us = MINICHAT__USER_SET__INIT;
    uint64_t                   *ids, *add, *del;
    size_t                      i, n;

    if (u->lost) {
        /* a safe place for it: not inside a connection's close */
        u->lost = 0;
        mc_buf_reset(&u->changed);
        ngx_http_minichat_relay_restart("out of memory for the users set");
        ngx_http_minichat_users_release(u->batch++);
        return;
    }

    n = u->changed.len / sizeof(uint64_t);
    if (n == 0) {
        return;
    }

    if (u->peer == NGX_HTTP_MINICHAT_USERS_NO || !ngx_http_minichat_relay_ready()) {
        mc_buf_reset(&u->changed);
        ngx_http_minichat_users_release(u->batch++);
        return;
    }

    add = ngx_alloc(2 * n * sizeof(uint64_t), ev->log);
    if (add == NULL) {
        mc_buf_reset(&u->changed);
        ngx_http_minichat_relay_restart("out of memory for the users set");
        ngx_http_minichat_users_release(u->batch++);
        return;
    }
    del = add + n;

    ids = (uint64_t *) u->changed.data;
    for (i = 0; i < n; i++) {
        if (ngx_http_minichat_registry_count(ids[i]) > 0) {
            add[us.n_add++] = ids[i];
        } else {
            del[us.n_del++] = ids[i];
        }
    }
    us.add = add;
    us.del = del;

    (void) ngx_http_minichat_users_send(&us, u->batch++);

    ngx_free(add);

    if (u->changed.cap > 65536) {
        mc_buf_free(&u->changed); /* a burst grew it */
    } else {
        mc_buf_reset(&u->changed);
    }
}


/* Sends one users frame numbered batch, as a request: the answer releases
 * the hellos waiting for it.  When it cannot go, they go at once. */
static ngx_int_t
ngx_http_minichat_users_send(Minichat__UserSet *us, uint64_t batch)
{
    Minichat__LocalFrame  f = MINICHAT__LOCAL_FRAME__INIT;

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_USERS;
    f.users = us;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_users_answered, (void *) (uintptr_t) batch)
        != NGX_OK)
    {
        ngx_http_minichat_users_release(batch);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_users_answered(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_users_t  *u = &ngx_http_minichat_users;
    uint64_t                    batch = (uint64_t) (uintptr_t) data;

    if (result != NULL) {
        u->peer = NGX_HTTP_MINICHAT_USERS_YES;

    } else if (u->peer == NGX_HTTP_MINICHAT_USERS_UNKNOWN && ngx_http_minichat_relay_ready()) {
        /* the link is up and never answered: a relay-worker that sends
         * every message (an older one), or one too slow to trust with a
         * set that would go stale: stop telling it, and tell it to drop
         * what it has (an older one ignores that too) */
        ngx_log_error(NGX_LOG_WARN, u->flush.log, 0, "minichat: the relay-worker does not answer users frames "
                      "(an older version?): it is asked for every message on this link");
        u->peer = NGX_HTTP_MINICHAT_USERS_NO;
        mc_buf_reset(&u->changed);
        ngx_http_minichat_users_all();
    }

    ngx_http_minichat_users_release(batch);
}


/* Asks the relay-worker for every message again (no answer expected). */
static void
ngx_http_minichat_users_all(void)
{
    Minichat__LocalFrame  f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__UserSet     us = MINICHAT__USER_SET__INIT;

    us.all = 1;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_USERS;
    f.users = &us;

    if (ngx_http_minichat_relay_send(&f) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_minichat_users.flush.log, 0,
                      "minichat: cannot ask the relay-worker for every message; restarting the link");
        ngx_http_minichat_relay_restart("users set abandoned");
    }
}


/* Sends the hellos of connections waiting for frames up to upto. */
static void
ngx_http_minichat_users_release(uint64_t upto)
{
    ngx_http_minichat_users_t       *u = &ngx_http_minichat_users;
    ngx_http_minichat_users_wait_t  *w;
    ngx_http_minichat_ws_t          *ws;
    size_t                           i, n, kept;

    n = u->waiting.len / sizeof(ngx_http_minichat_users_wait_t);
    if (n == 0) {
        return;
    }

    /* taken off the list first: a session start may close a connection,
     * and nothing here is re-entered through it */
    w = (ngx_http_minichat_users_wait_t *) u->waiting.data;
    kept = 0;

    for (i = 0; i < n; i++) {
        if (w[i].batch > upto) {
            w[kept++] = w[i];
            continue;
        }

        ws = w[i].ws;
        ws->pending--;

        if (!ws->closed && ngx_http_minichat_session_start(ws) != NGX_OK) {
            if (ngx_http_minichat_conn_hello(ws, NULL, 0) == NGX_OK && !ws->closed) {
                ngx_http_minichat_conn_close(ws, 1011, "session store unavailable");
            }
        }

        ngx_http_minichat_conn_release(ws);
    }

    u->waiting.len = kept * sizeof(ngx_http_minichat_users_wait_t);
}
