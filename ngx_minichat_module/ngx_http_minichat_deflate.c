/*
 * permessage-deflate (RFC 7692) on the module's WebSocket connections,
 * chat and echo alike: the negotiation at the upgrade, compressing outgoing
 * messages and inflating incoming ones.  The codec and the offer parser are
 * lib/'s (ws_deflate.c, ws_deflate_params.c); this file owns the zlib
 * streams and decides which one each message uses.
 *
 * Outgoing: the server always compresses without context takeover, so a
 * message compresses the same way for every connection with the same
 * window: a fan-out (_registry.c) compresses a message once per window
 * (and level) in a ngx_http_minichat_deflate_cache_t and hands the same
 * bytes to every such recipient.  The zlib deflaters are the worker's, one
 * per window and level in use, made on first use and reset per message: no
 * connection holds one.  A message under minichat_ws_deflate_threshold, or
 * one compression does not shrink, goes out uncompressed (RSV1 clear).
 *
 * Incoming: a compressed message (RSV1 on its first frame) is assembled
 * compressed, then inflated whole, bounded by the connection's message
 * limit (a deflate bomb closes with 1009 having cost at most about twice
 * that limit).  A client without context takeover is inflated by the
 * worker's one shared inflater, reset per message; only a client that
 * keeps its context (minichat_ws_deflate_client_takeover on, and the client
 * did not offer client_no_context_takeover) gets an inflater of its own,
 * made at its first compressed message and kept until the connection
 * closes: about 7 KiB of zlib state plus its window (2^bits, 32 KiB at 15).
 */
#include "ngx_http_minichat_module.h"
#include "minichat/ws.h"
#include "minichat/ws_deflate.h"
#include "minichat/ws_deflate_params.h"


#define NGX_HTTP_MINICHAT_DEFLATE_HEADER  "\r\nSec-WebSocket-Extensions: "


struct ngx_http_minichat_inflater_s {
    mc_ws_inflater_t  in;
};


static mc_ws_deflater_t *ngx_http_minichat_deflater(ngx_uint_t bits, ngx_uint_t level);


/* the worker's deflaters by window bits (9..15) and level (1..9) */
static mc_ws_deflater_t  *ngx_http_minichat_deflaters[16][10];
/* the worker's inflater for clients without context takeover */
static mc_ws_inflater_t  *ngx_http_minichat_shared_inflater;


u_char *
ngx_http_minichat_deflate_negotiate(ngx_http_minichat_ws_t *ws, u_char *p)
{
    ngx_http_minichat_loc_conf_t  *lcf;
    ngx_http_request_t            *r = ws->request;
    mc_ws_deflate_policy_t         policy;
    mc_ws_deflate_params_t         params;
    ngx_list_part_t               *part;
    ngx_table_elt_t               *h;
    ngx_uint_t                     i;
    char                           resp[MC_WS_DEFLATE_RESPONSE_MAX];
    size_t                         n;
    int                            rc;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_minichat_module);
    if (!lcf->deflate) {
        return p;
    }

    policy.client_context_takeover = lcf->deflate_client_takeover;
    rc = MC_WS_DEFLATE_NONE;

    /* offers are tried in order, across every Sec-WebSocket-Extensions */
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Sec-WebSocket-Extensions") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Sec-WebSocket-Extensions",
                               sizeof("Sec-WebSocket-Extensions") - 1) != 0)
        {
            continue;
        }

        rc = mc_ws_deflate_negotiate((const char *) h[i].value.data, h[i].value.len, &policy, &params);
        if (rc == MC_WS_DEFLATE_MALFORMED) {
            ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                          "minichat: malformed Sec-WebSocket-Extensions \"%V\", no compression", &h[i].value);
            return p;
        }
        if (rc == MC_WS_DEFLATE_ACCEPT) {
            break;
        }
    }

    if (rc != MC_WS_DEFLATE_ACCEPT) {
        return p;
    }

    ws->deflate_bits = params.server_bits;
    ws->deflate_client_bits = params.client_bits;
    ws->deflate_takeover = !params.client_no_context_takeover;

    n = mc_ws_deflate_response(&params, resp);
    p = ngx_cpymem(p, NGX_HTTP_MINICHAT_DEFLATE_HEADER, sizeof(NGX_HTTP_MINICHAT_DEFLATE_HEADER) - 1);

    return ngx_cpymem(p, resp, n);
}


ngx_int_t
ngx_http_minichat_deflate_pick(ngx_http_minichat_deflate_cache_t *cache, ngx_http_minichat_ws_t *ws,
    ngx_uint_t opcode, const u_char *payload, size_t plen, const u_char **frame, size_t *len)
{
    ngx_http_minichat_loc_conf_t  *lcf;
    mc_ws_deflater_t              *d;
    ngx_uint_t                     i, level;
    uint8_t                       *buf;
    u_char                         hdr[10];
    size_t                         zn, hlen;

    if (!ws->deflate_bits) {
        return NGX_DECLINED;
    }

    lcf = ws->lcf;
    if (plen < lcf->deflate_threshold) {
        return NGX_DECLINED;
    }

    level = lcf->deflate_level;

    for (i = 0; i < cache->n; i++) {
        if (cache->copy[i].bits == ws->deflate_bits && cache->copy[i].level == level) {
            if (cache->copy[i].frame == NULL) {
                /* compression did not pay (or failed) for this window */
                return NGX_DECLINED;
            }
            *frame = cache->copy[i].frame;
            *len = cache->copy[i].len;
            return NGX_OK;
        }
    }

    if (cache->n == NGX_HTTP_MINICHAT_DEFLATE_COPIES) {
        /* recipients with this many different windows: the rest get it plain */
        return NGX_DECLINED;
    }

    i = cache->n++;
    cache->copy[i].bits = (u_char) ws->deflate_bits;
    cache->copy[i].level = (u_char) level;
    cache->copy[i].buf = NULL;
    cache->copy[i].frame = NULL;

    d = ngx_http_minichat_deflater(ws->deflate_bits, level);
    if (d == NULL || mc_ws_deflate(d, payload, plen, sizeof(hdr), &buf, &zn) != MC_WS_DEFLATE_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: deflate failed (out of memory); sending uncompressed");
        return NGX_DECLINED;
    }

    if (zn >= plen) {
        ngx_free(buf);
        return NGX_DECLINED;
    }

    hlen = mc_ws_header(hdr, opcode, 1, zn);
    hdr[0] |= MC_WS_RSV1;

    cache->copy[i].buf = buf;
    cache->copy[i].frame = buf + sizeof(hdr) - hlen;
    cache->copy[i].len = hlen + zn;
    ngx_memcpy(cache->copy[i].frame, hdr, hlen);

    *frame = cache->copy[i].frame;
    *len = cache->copy[i].len;

    return NGX_OK;
}


void
ngx_http_minichat_deflate_cache_free(ngx_http_minichat_deflate_cache_t *cache)
{
    ngx_uint_t  i;

    for (i = 0; i < cache->n; i++) {
        if (cache->copy[i].buf) {
            ngx_free(cache->copy[i].buf);
        }
    }

    cache->n = 0;
}


ngx_int_t
ngx_http_minichat_deflate_inflate(ngx_http_minichat_ws_t *ws, const u_char *data, size_t len, u_char **out,
    size_t *out_len)
{
    mc_ws_inflater_t  *in;
    int                rc, reset;

    if (ws->deflate_takeover) {
        if (ws->inflater == NULL) {
            ws->inflater = ngx_alloc(sizeof(ngx_http_minichat_inflater_t), ws->connection->log);
            if (ws->inflater == NULL) {
                ngx_http_minichat_conn_abort(ws);
                return NGX_ERROR;
            }
            if (mc_ws_inflater_init(&ws->inflater->in, ws->deflate_client_bits) != MC_WS_DEFLATE_OK) {
                ngx_free(ws->inflater);
                ws->inflater = NULL;
                ngx_http_minichat_conn_abort(ws);
                return NGX_ERROR;
            }
        }
        in = &ws->inflater->in;
        reset = 0;

    } else {
        if (ngx_http_minichat_shared_inflater == NULL) {
            in = ngx_alloc(sizeof(mc_ws_inflater_t), ws->connection->log);
            if (in == NULL || mc_ws_inflater_init(in, 15) != MC_WS_DEFLATE_OK) {
                if (in) {
                    ngx_free(in);
                }
                ngx_http_minichat_conn_abort(ws);
                return NGX_ERROR;
            }
            ngx_http_minichat_shared_inflater = in;
        }
        in = ngx_http_minichat_shared_inflater;
        reset = 1;
    }

    rc = mc_ws_inflate(in, data, len, ngx_http_minichat_ws_max_message(ws), reset, out, out_len);

    switch (rc) {

    case MC_WS_DEFLATE_OK:
        return NGX_OK;

    case MC_WS_DEFLATE_TOO_BIG:
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "minichat: compressed message of %uz bytes inflates past the limit; closing", len);
        ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_TOO_BIG, "message too big");
        return NGX_DECLINED;

    case MC_WS_DEFLATE_BAD:
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0, "minichat: invalid compressed message; closing");
        ngx_http_minichat_conn_close(ws, MC_WS_CLOSE_BAD_DATA, "invalid compressed data");
        return NGX_ERROR;

    default:
        ngx_http_minichat_conn_abort(ws);
        return NGX_ERROR;
    }
}


void
ngx_http_minichat_deflate_free(ngx_http_minichat_ws_t *ws)
{
    if (ws->inflater) {
        mc_ws_inflater_free(&ws->inflater->in);
        ngx_free(ws->inflater);
        ws->inflater = NULL;
    }
}


void
ngx_http_minichat_deflate_exit(void)
{
    ngx_uint_t  b, l;

    for (b = 0; b < 16; b++) {
        for (l = 0; l < 10; l++) {
            if (ngx_http_minichat_deflaters[b][l]) {
                mc_ws_deflater_free(ngx_http_minichat_deflaters[b][l]);
                ngx_free(ngx_http_minichat_deflaters[b][l]);
                ngx_http_minichat_deflaters[b][l] = NULL;
            }
        }
    }

    if (ngx_http_minichat_shared_inflater) {
        mc_ws_inflater_free(ngx_http_minichat_shared_inflater);
        ngx_free(ngx_http_minichat_shared_inflater);
        ngx_http_minichat_shared_inflater = NULL;
    }
}


/* The worker's deflater for a window and level, made on first use. */
static mc_ws_deflater_t *
ngx_http_minichat_deflater(ngx_uint_t bits, ngx_uint_t level)
{
    mc_ws_deflater_t  *d;

    if (bits < 9 || bits > 15 || level < 1 || level > 9) {
        return NULL;
    }

    d = ngx_http_minichat_deflaters[bits][level];
    if (d) {
        return d;
    }

    d = ngx_alloc(sizeof(mc_ws_deflater_t), ngx_cycle->log);
    if (d == NULL) {
        return NULL;
    }

    if (mc_ws_deflater_init(d, (int) level, (unsigned) bits) != MC_WS_DEFLATE_OK) {
        ngx_free(d);
        return NULL;
    }

    ngx_http_minichat_deflaters[bits][level] = d;

    return d;
}
