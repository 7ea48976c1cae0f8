/*
 * One write per HTTP/2 connection for the REST answers of one batch of
 * Redis replies.
 *
 * nginx's HTTP/2 code sends a stream's frames as soon as they are queued
 * (ngx_http_v2_filter_send calls ngx_http_v2_send_output_queue), unless
 * the connection's socket is not writable: then they wait in the
 * connection's output queue and leave together, in one writev, when the
 * write event comes.  A client that has 16 requests in flight on one
 * connection gets their rate-limit answers from one Redis read, and nginx
 * would write them one by one, each write a TCP transmit (on loopback, the
 * receiver's softirq too) on the worker's core.
 *
 * So while the Redis read handler dispatches replies (begin .. end), the
 * first answer for an HTTP/2 stream marks its connection's write event not
 * ready, as a full socket would, and remembers the connection; at the end
 * the event is made ready again and posted, and nginx's own write handler
 * (ngx_http_v2_write_handler) sends the queued frames in one writev and
 * finishes the streams, exactly as after a full socket drained.  The hold
 * never outlives the event handler that set it, so no timer, read or other
 * event of that connection ever sees it; a connection closed meanwhile
 * (its number changed or its fd gone) is skipped.
 *
 * HTTP/1.1 connections are left alone: nginx serves pipelined requests one
 * at a time, so one batch never has two answers for one connection.
 */
#include "ngx_http_minichat_module.h"


#define NGX_HTTP_MINICHAT_H2BATCH_MAX  256


typedef struct {
    ngx_connection_t  *c;
    ngx_atomic_uint_t  number;
} ngx_http_minichat_h2batch_held_t;


static ngx_uint_t                        ngx_http_minichat_h2batch_depth;
static ngx_uint_t                        ngx_http_minichat_h2batch_n;
static ngx_http_minichat_h2batch_held_t  ngx_http_minichat_h2batch_held[NGX_HTTP_MINICHAT_H2BATCH_MAX];


void
ngx_http_minichat_h2batch_begin(void)
{
    ngx_http_minichat_h2batch_depth++;
}


/* Before r's answer is sent: inside a batch, holds the writes of r's
 * HTTP/2 connection.  Anything else is sent at once, as always. */
void
ngx_http_minichat_h2batch_hold(ngx_http_request_t *r)
{
#if (NGX_HTTP_V2)
    ngx_connection_t  *c;

    if (ngx_http_minichat_h2batch_depth == 0 || r->stream == NULL) {
        return;
    }

    c = r->stream->connection->connection;

    if (!c->write->ready) {
        /* held already (so it is on the list), or a full socket: the
         * frames wait either way */
        return;
    }

    if (ngx_http_minichat_h2batch_n == NGX_HTTP_MINICHAT_H2BATCH_MAX) {
        /* more connections in one batch than the list holds: the rest
         * write as they always did */
        return;
    }

    ngx_http_minichat_h2batch_held[ngx_http_minichat_h2batch_n].c = c;
    ngx_http_minichat_h2batch_held[ngx_http_minichat_h2batch_n].number = c->number;
    ngx_http_minichat_h2batch_n++;

    c->write->ready = 0;
#else
    (void) r;
#endif
}


/* Ends a batch: the held connections' write events are ready again and
 * posted, so each connection's frames leave in one write. */
void
ngx_http_minichat_h2batch_end(void)
{
    ngx_connection_t  *c;
    ngx_uint_t         i;

    if (--ngx_http_minichat_h2batch_depth > 0) {
        return;
    }

    for (i = 0; i < ngx_http_minichat_h2batch_n; i++) {
        c = ngx_http_minichat_h2batch_held[i].c;

        if (c->fd == (ngx_socket_t) -1 || c->number != ngx_http_minichat_h2batch_held[i].number) {
            continue;
        }

        c->write->ready = 1;
        ngx_post_event(c->write, &ngx_posted_events);
    }

    ngx_http_minichat_h2batch_n = 0;
}
