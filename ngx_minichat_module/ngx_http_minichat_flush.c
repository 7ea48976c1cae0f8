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
 * With `minichat_flush_window` set, a busy worker writes at most once per
 * window: a frame queued less than a window after the last flush waits for
 * a timer at the window's end, so that the messages of several turns leave
 * in one write per connection (at 400 messages a second into a room of
 * 1,000, a 20ms window sends about eight messages per write instead of
 * one).  Busy means that the last pass wrote to at least `busy`
 * connections (64 by default): a fan-out big enough that its system calls
 * are the worker's main cost.  A frame waits only while the rate of such
 * fan-outs is sustained and fast: the moving average of the intervals
 * between the messages that reached at least `busy` connections of this
 * worker (each interval counted at most two windows, weight 1/8) is under
 * a fifth of a window (4ms, 250 messages a second, at 20ms), and the frame
 * comes within a third of a window of the last pass.  So 200 messages a
 * second (5ms apart) are never held: measured, holding them made the p99
 * two to three times the floor's for CPU that has no target at that rate,
 * and a rule that looked at the last one or two intervals held now and
 * then when a late send was followed by an on-time one, and those 1% made
 * the p99 (docs/performance.md, "The write window on this VM").  The first
 * messages after a quiet spell, and a worker that serves small rooms, add
 * no delay.
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
static ngx_msec_t                ngx_http_minichat_flush_last;
static ngx_uint_t                ngx_http_minichat_flush_last_n;   /* connections the last pass wrote */
static ngx_msec_t                ngx_http_minichat_flush_fanout_last; /* when the last big fan-out came (0: none yet) */
static ngx_int_t                 ngx_http_minichat_flush_fanout_avg = -1; /* their intervals' moving average, in 1/16 ms (-1: none yet) */


/* Lists ws for the end of this turn.  NGX_ERROR only when out of memory;
 * the caller then writes at once. */
ngx_int_t
ngx_http_minichat_flush_later(ngx_http_minichat_ws_t *ws)
{
    ngx_http_minichat_ws_t  **list;
    ngx_uint_t                cap;
    ngx_msec_t                      window, since;
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

    if (ngx_http_minichat_flush_ev.posted) {
        return NGX_OK;
    }

    ngx_http_minichat_flush_ev.handler = ngx_http_minichat_flush_handler;
    ngx_http_minichat_flush_ev.log = ngx_cycle->log;
    /* a pending flush must not hold a graceful shutdown back */
    ngx_http_minichat_flush_ev.cancelable = 1;

    mcf = ngx_http_minichat_conf();
    window = mcf->flush_window;
    since = ngx_current_msec - ngx_http_minichat_flush_last;
    sustained = ngx_http_minichat_flush_fanout_avg >= 0
                && (ngx_msec_t) ngx_http_minichat_flush_fanout_avg < window * 16 / 5;

    /* a frame more than a third of a window after the last pass (a pause
     * in the stream) leaves at once, and takes the frames already waiting
     * (an ack queued just after the last write) with it, rather than
     * waiting behind their timer */
    if (window == 0 || since >= window / 3 || ngx_http_minichat_flush_last_n < mcf->flush_busy || !sustained) {
        if (ngx_http_minichat_flush_ev.timer_set) {
            ngx_del_timer(&ngx_http_minichat_flush_ev);
        }
        ngx_post_event(&ngx_http_minichat_flush_ev, &ngx_posted_events);

    } else if (!ngx_http_minichat_flush_ev.timer_set) {
        ngx_add_timer(&ngx_http_minichat_flush_ev, window - since);
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
    ngx_uint_t               i;

    ev->timedout = 0;

    ngx_http_minichat_flush_last = ngx_current_msec;
    ngx_http_minichat_flush_last_n = ngx_http_minichat_flush_n;

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
    }

    ngx_http_minichat_flush_n = 0;
    ngx_http_minichat_conn_queued_show();

    /* a burst's list need not stay: keep a small one */
    if (ngx_http_minichat_flush_cap > 4096) {
        ngx_free(ngx_http_minichat_flush_list);
        ngx_http_minichat_flush_list = NULL;
        ngx_http_minichat_flush_cap = 0;
    }
}


/* A message reached n connections of this worker: a big one (n >= busy)
 * moves the moving average of the intervals between big ones. */
void
ngx_http_minichat_flush_fanout(ngx_uint_t n)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_msec_t                      gap, most;

    if (mcf->flush_window == 0 || n < mcf->flush_busy) {
        return;
    }

    /* an interval counts two windows at most: after a quiet spell the
     * average comes back under the bound within about twenty messages */
    most = 2 * mcf->flush_window;
    gap = ngx_http_minichat_flush_fanout_last == 0 ? most : ngx_current_msec - ngx_http_minichat_flush_fanout_last;
    if (gap > most) {
        gap = most;
    }
    ngx_http_minichat_flush_fanout_last = ngx_current_msec;

    if (ngx_http_minichat_flush_fanout_avg < 0) {
        ngx_http_minichat_flush_fanout_avg = (ngx_int_t) most * 16;
    }
    ngx_http_minichat_flush_fanout_avg += ((ngx_int_t) gap * 16 - ngx_http_minichat_flush_fanout_avg) / 8;
}


/* minichat_flush_window time [busy=N]: time 0 (off) or 1ms..100ms; N
 * 1..1000000 connections. */
char *
ngx_http_minichat_flush_window(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t  *mcf = conf;
    ngx_str_t                      *value;
    ngx_msec_t                      ms;
    ngx_int_t                       n;

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

    if (cf->args->nelts == 3) {
        if (value[2].len <= 5 || ngx_strncmp(value[2].data, "busy=", 5) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"minichat_flush_window\" parameter \"%V\": "
                               "expected busy=N", &value[2]);
            return NGX_CONF_ERROR;
        }
        n = ngx_atoi(value[2].data + 5, value[2].len - 5);
        if (n < 1 || n > 1000000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"minichat_flush_window\" \"%V\": "
                               "busy must be between 1 and 1000000 connections", &value[2]);
            return NGX_CONF_ERROR;
        }
        mcf->flush_busy = n;
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
