/*
 * The echo endpoint (a location with `minichat_ws_echo`): a WebSocket
 * that sends every message back as it came, text as text and binary as
 * binary, for conformance suites (`make conformance` runs Autobahn's
 * fuzzing client against it) and for probing the frame code alone.
 *
 * It shares everything below the message with the chat: the handshake
 * checks, the 101, reading and parsing frames, fragmentation, UTF-8
 * validation, pings, the close handshake and lingering close (_ws.c,
 * _conn.c).  What it leaves out is what sits above: no token, no Redis, no
 * session, no registry, no ops.  Its own limit on messages is
 * minichat_ws_echo_max_message_size (Autobahn sends 16 MiB), and its
 * queue takes at least two such messages.
 */
#include "ngx_http_minichat_module.h"


ngx_int_t
ngx_http_minichat_echo_handler(ngx_http_request_t *r)
{
    ngx_http_minichat_ws_t          *ws;
    ngx_http_minichat_ipcap_slot_t  *slot;
    ngx_int_t                        rc;

    rc = ngx_http_minichat_ws_handshake(r);
    if (rc != NGX_OK) {
        return ngx_http_minichat_ws_refuse(r, rc);
    }

    /* echo connections count against minichat_max_connections_per_ip too:
     * they hold a socket like any other */
    if (ngx_http_minichat_ipcap_acquire(r, &slot) != NGX_OK) {
        return ngx_http_minichat_ipcap_refuse(r);
    }

    ws = ngx_http_minichat_ws_create(r, slot);
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws->echo = 1;

    /* no subprotocol: the echo speaks none */
    if (ngx_http_minichat_ws_upgrade(ws, 0) != NGX_OK) {
        return NGX_HTTP_CLOSE;
    }

    ngx_http_minichat_ws_run(ws);

    return NGX_DONE;
}


/* Sends a complete message back in one frame of the same kind. */
ngx_int_t
ngx_http_minichat_echo_message(ngx_http_minichat_ws_t *ws, ngx_uint_t opcode, u_char *data, size_t len)
{
    return ngx_http_minichat_conn_frame(ws, opcode, data, len);
}
