/*
 * One write per connection per turn of the event loop.
 *
 * A frame queued for a connection is not written at once: the connection
 * goes on this worker's flush list (once), and one posted event writes every
 * listed connection after the turn's I/O events were handled.  nginx runs
 * posted events after the ones epoll returned, so a relay batch that
 * delivers fifty messages to a member, or a reply and the deliveries that
 * the same read caused, leave in one write and mostly one TCP segment,
 * instead of a write (and a segment, with TCP_NODELAY) each.  The delay is
 * none: the write still happens before the worker sleeps again.
 *
 * With `minichat_flush_window` set, a busy worker lets frames wait (at
 * most a window) so that the messages of several turns leave in one write
 * per connection: at 400 messages a second into a room of 1,000, two or
 * three messages per write instead of one, and about half the worker's CPU.
 * Frames wait only while three things hold:
 *  - the worker is busy: its last pass wrote to at least `busy` connections
 *    (64 by default), a fan-out big enough that its system calls are the
 *    worker's main cost;
 *  - the rate of big fan-outs (messages that reached `busy` of its
 *    connections) is sustained and fast: the moving average of their
 *    intervals (weight 1/8, each counted at most twice the larger of the
 *    window and the bound) is under 1/rate (`rate`, 250 a second, 4ms, by
 *    default).  So 200 messages a second are never held: measured, holding
 *    them made the p99 two to three times the floor's for CPU that has no
 *    target at that rate, and one early message in slow traffic does not
 *    move the average enough;
 *  - the stream has not paused: the last big fan-out came less than a
 *    window ago, and the next one is due (by the average) within a window.
 * The first frame that waits starts the window's timer; when a big fan-out
 * comes and the next one is due (by the average) after the window's end,
 * the waiting frames leave with it at the end of the turn, because waiting
 * for the timer would add delay and no message.  So while the stream keeps
 * its rate the last message of a write waits not at all and the first at
 * most a window less an interval; a stream that slows or stops inside the
 * window leaves at the timer, a window after the first frame waited
 * (docs/performance.md, "The write window ends at a message").
 *
 * The list holds connection pointers; a listed connection is not freed
 * (`flush_queued` keeps release away) until the flush has passed it.
 */
#include "ngx_http_minichat_module.h"


static void ngx_http_minichat_flush_handler(ngx_event_t *ev);


static ngx_http_minichat_ws_t  **ngx_http_minichat_flush_list;
static ngx_uint_t                ngx_http_minichat_flush_n;
static ngx_uint_t                ngx_http_minichat_flush_cap;
static ngx_event_t               ngx_http_minichat_flush_ev;
static ngx_uint_t                ngx_http_minichat_flush_last_n;   /* connections the last pass wrote */
static ngx_msec_t                ngx_http_minichat_flush_fanout_last; /* when the last big fan-out came (0: none yet) */
static ngx_int_t                 ngx_http_minichat_flush_fanout_avg = -1; /* their intervals' moving average, in 1/1024 ms (-1: none yet) */
static ngx_msec_t                ngx_http_minichat_flush_held;     /* when the frames now waiting began to wait */
static ngx_uint_t                ngx_http_minichat_flush_waited;   /* frames of the next pass waited for the window */
static ngx_uint_t                ngx_http_minichat_flush_in_pass;  /* the handler is writing the list */

/* The average's unit: fine enough that its truncated updates settle within
 * 7/1024 ms of the true mean (in 1/16 ms they settled up to 0.44 ms above
 * it, and a bound of 1/rate under that never held). */
#define NGX_HTTP_MINICHAT_FLUSH_UNIT  1024


/* Lists ws for the end of this turn.  NGX_ERROR only when out of memory;
 * the caller then writes at once. */
ngx_int_t
ngx_http_minichat_flush_later(ngx_http_minichat_ws_t *ws)
{
    ngx_http_minichat_ws_t  **list;
    ngx_uint_t                cap;
    ngx_msec_t                      window, gap;
    ngx_uint_t                      sustained;
    ngx_http_minichat_main_conf_t  *mcf;

    if (ws->flush_queued) {
        return NGX_OK;
    }

    if (ngx_http_minichat_flush_n == ngx_http_minichat_flush_cap) {
        cap = ngx_max(ngx_http_minichat_flush_cap * 2, 64);
        list = ngx_alloc(cap * sizeof(*list), ngx_cycle->log);
        if (list == NULL) {
            return NGX_ERROR;
        }
        if (ngx_http_minichat_flush_list) {
            ngx_memcpy(list, ngx_http_minichat_flush_list, ngx_http_minichat_flush_n * sizeof(*list));
            ngx_free(ngx_http_minichat_flush_list);
        }
        ngx_http_minichat_flush_list = list;
        ngx_http_minichat_flush_cap = cap;
    }

    ngx_http_minichat_flush_list[ngx_http_minichat_flush_n++] = ws;
    ws->flush_queued = 1;

    /* queued while a pass writes (a write error closed a connection and
     * told the others): this same pass writes it */
    if (ngx_http_minichat_flush_ev.posted || ngx_http_minichat_flush_in_pass) {
        return NGX_OK;
    }

    ngx_http_minichat_flush_ev.handler = ngx_http_minichat_flush_handler;
    ngx_http_minichat_flush_ev.log = ngx_cycle->log;
    /* a pending flush must not hold a graceful shutdown back */
    ngx_http_minichat_flush_ev.cancelable = 1;

    mcf = ngx_http_minichat_conf();
    window = mcf->flush_window;
    gap = ngx_current_msec - ngx_http_minichat_flush_fanout_last;
    /* the next big fan-out must also be due within the window: waiting
     * for none gains nothing */
    sustained = ngx_http_minichat_flush_fanout_avg >= 0
                && ngx_http_minichat_flush_fanout_avg < (ngx_int_t) (1000 * NGX_HTTP_MINICHAT_FLUSH_UNIT / mcf->flush_rate)
                && ngx_http_minichat_flush_fanout_avg < (ngx_int_t) (window * NGX_HTTP_MINICHAT_FLUSH_UNIT);

    /* a frame leaves at once (and takes the frames already waiting, an ack
     * queued just after the last write, with it) unless the worker is busy
     * (its last pass reached `busy` connections) with a sustained fast
     * stream (big fan-outs under 1/rate apart on average) that has not
     * paused (the last one less than a window ago) */
    if (window == 0 || ngx_http_minichat_flush_last_n < mcf->flush_busy || !sustained
        || gap >= window)
    {
        if (ngx_http_minichat_flush_ev.timer_set) {
            ngx_del_timer(&ngx_http_minichat_flush_ev);
        }
        ngx_post_event(&ngx_http_minichat_flush_ev, &ngx_posted_events);

    } else if (!ngx_http_minichat_flush_ev.timer_set) {
        ngx_add_timer(&ngx_http_minichat_flush_ev, window);
        ngx_http_minichat_flush_held = ngx_current_msec;
        ngx_http_minichat_flush_waited = 1;
    }

    return NGX_OK;
}


/* Writes every listed connection.  A flush that closes a connection (a
 * write error) may queue frames for others (a presence change): they join
 * the end of the list and are written in this same pass. */
static void
ngx_http_minichat_flush_handler(ngx_event_t *ev)
{
    ngx_http_minichat_ws_t  *ws;
    ngx_uint_t               i, written;

    ev->timedout = 0;

    ngx_http_minichat_flush_last_n = ngx_http_minichat_flush_n;
    ngx_http_minichat_flush_in_pass = 1;
    written = 0;

    for (i = 0; i < ngx_http_minichat_flush_n; i++) {
        ws = ngx_http_minichat_flush_list[i];
        ws->flush_queued = 0;

        if (ws->closed) {
            ngx_http_minichat_conn_release(ws);
            continue;
        }

        ws->pending++;
        (void) ngx_http_minichat_conn_flush_listed(ws);
        ws->pending--;
        ngx_http_minichat_conn_release(ws);
        written++;
    }

    ngx_http_minichat_flush_n = 0;
    ngx_http_minichat_flush_in_pass = 0;
    ngx_http_minichat_conn_queued_show();

    /* one atomic add per pass, not per connection: the workers share them */
    ngx_http_minichat_count(flush_writes, written);
    if (ngx_http_minichat_flush_waited) {
        ngx_http_minichat_flush_waited = 0;
        ngx_http_minichat_count(flush_held, 1);
    }

    /* a burst's list need not stay: keep a small one */
    if (ngx_http_minichat_flush_cap > 4096) {
        ngx_free(ngx_http_minichat_flush_list);
        ngx_http_minichat_flush_list = NULL;
        ngx_http_minichat_flush_cap = 0;
    }
}


/* A message reached n connections of this worker: a big one (n >= busy)
 * moves the moving average of the intervals between big ones, and may end
 * the window. */
void
ngx_http_minichat_flush_fanout(ngx_uint_t n)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_msec_t                      gap, most;

    if (mcf->flush_window == 0 || n < mcf->flush_busy) {
        return;
    }

    /* an interval counts at most twice the larger of the window and the
     * bound (so that the average can rise above the bound): after a quiet
     * spell it comes back under the bound within about twenty messages */
    most = 2 * ngx_max(mcf->flush_window, 1000 / mcf->flush_rate + 1);
    gap = ngx_http_minichat_flush_fanout_last == 0 ? most : ngx_current_msec - ngx_http_minichat_flush_fanout_last;
    if (gap > most) {
        gap = most;
    }
    ngx_http_minichat_flush_fanout_last = ngx_current_msec;

    if (ngx_http_minichat_flush_fanout_avg < 0) {
        ngx_http_minichat_flush_fanout_avg = (ngx_int_t) (most * NGX_HTTP_MINICHAT_FLUSH_UNIT);
    }
    ngx_http_minichat_flush_fanout_avg += ((ngx_int_t) (gap * NGX_HTTP_MINICHAT_FLUSH_UNIT)
                                           - ngx_http_minichat_flush_fanout_avg) / 8;

    /* frames wait: when the next big fan-out is due after the window's
     * end, waiting for the timer would add delay and no message, so this
     * message's frames and the waiting ones leave at the end of this turn */
    if (ngx_http_minichat_flush_ev.timer_set
        && (ngx_int_t) ((ngx_current_msec - ngx_http_minichat_flush_held) * NGX_HTTP_MINICHAT_FLUSH_UNIT)
           + ngx_http_minichat_flush_fanout_avg >= (ngx_int_t) (mcf->flush_window * NGX_HTTP_MINICHAT_FLUSH_UNIT))
    {
        ngx_del_timer(&ngx_http_minichat_flush_ev);
        if (!ngx_http_minichat_flush_ev.posted) {
            ngx_post_event(&ngx_http_minichat_flush_ev, &ngx_posted_events);
        }
    }
}


/* One "name=N" parameter of minichat_flush_window (a four-letter name):
 * N in 1..max, given once, into *to. */
static ngx_int_t
ngx_http_minichat_flush_param(ngx_conf_t *cf, ngx_str_t *v, ngx_int_t max, ngx_uint_t *to, const char *unit)
{
    ngx_int_t  n;

    n = ngx_atoi(v->data + 5, v->len - 5);
    if (n < 1 || n > max || *to != NGX_CONF_UNSET_UINT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"minichat_flush_window\" \"%V\": "
                           "%*s must be given once, between 1 and %i %s", v, (size_t) 4, v->data, max, unit);
        return NGX_ERROR;
    }
    *to = n;
    return NGX_OK;
}


/* minichat_flush_window time [busy=N] [rate=N]: time 0 (off) or 1ms..100ms;
 * busy 1..1000000 connections; rate 1..16000 big fan-outs a second. */
char *
ngx_http_minichat_flush_window(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t  *mcf = conf;
    ngx_str_t                      *value;
    ngx_msec_t                      ms;
    ngx_int_t                       rc;
    ngx_uint_t                      i;

    (void) cmd;

    if (mcf->flush_window != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ms = ngx_parse_time(&value[1], 0);
    if (ms == (ngx_msec_t) NGX_ERROR || ms > 100) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"minichat_flush_window\" \"%V\": "
                           "must be 0 (off) or between 1ms and 100ms", &value[1]);
        return NGX_CONF_ERROR;
    }
    mcf->flush_window = ms;

    for (i = 2; i < cf->args->nelts; i++) {
        if (value[i].len > 5 && ngx_strncmp(value[i].data, "busy=", 5) == 0) {
            rc = ngx_http_minichat_flush_param(cf, &value[i], 1000000, &mcf->flush_busy, "connections");

        } else if (value[i].len > 5 && ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            rc = ngx_http_minichat_flush_param(cf, &value[i], 16000, &mcf->flush_rate, "messages a second");

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"minichat_flush_window\" parameter \"%V\": "
                               "expected busy=N or rate=N", &value[i]);
            rc = NGX_ERROR;
        }
        if (rc != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* The worker exits: write what is listed (best effort) and free the list. */
void
ngx_http_minichat_flush_exit(void)
{
    if (ngx_http_minichat_flush_ev.posted) {
        ngx_delete_posted_event(&ngx_http_minichat_flush_ev);
    }
    if (ngx_http_minichat_flush_ev.timer_set) {
        ngx_del_timer(&ngx_http_minichat_flush_ev);
    }

    ngx_http_minichat_flush_handler(&ngx_http_minichat_flush_ev);

    if (ngx_http_minichat_flush_list) {
        ngx_free(ngx_http_minichat_flush_list);
        ngx_http_minichat_flush_list = NULL;
        ngx_http_minichat_flush_cap = 0;
    }
}
