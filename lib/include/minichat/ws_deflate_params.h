/*
 * permessage-deflate (RFC 7692) negotiation: reading the client's
 * Sec-WebSocket-Extensions offers and writing the server's response.  Pure
 * code, no zlib and no nginx.
 *
 * Offers are tried in the order the client listed them; the first
 * permessage-deflate offer whose parameters are all known, valid and not
 * repeated is accepted.  An offer this server cannot honour (an unknown
 * parameter, a bad value, server_max_window_bits=8, which zlib cannot
 * produce for raw deflate) is declined and the next one tried.  A header
 * that breaks RFC 6455's extension grammar (9.1) is malformed: nothing in
 * it is accepted.
 *
 * The server always compresses without context takeover (the response
 * always names server_no_context_takeover, which RFC 7692 7.1.1.1 allows
 * even when not offered): one compressed copy of a message then suits
 * every recipient with the same window.  Whether the client may keep its
 * context is the caller's policy.
 */
#ifndef MINICHAT_WS_DEFLATE_PARAMS_H
#define MINICHAT_WS_DEFLATE_PARAMS_H

#include <stddef.h>

/* Results of mc_ws_deflate_negotiate(). */
enum {
    MC_WS_DEFLATE_MALFORMED = -1, /* the header breaks the extension grammar */
    MC_WS_DEFLATE_NONE = 0,       /* no acceptable permessage-deflate offer */
    MC_WS_DEFLATE_ACCEPT = 1      /* an offer was accepted: params are set */
};

/* the longest response mc_ws_deflate_response() writes, with its NUL */
#define MC_WS_DEFLATE_RESPONSE_MAX 128

typedef struct {
    unsigned client_context_takeover; /* 0: the response asks client_no_context_takeover */
} mc_ws_deflate_policy_t;

typedef struct {
    unsigned server_bits;        /* 9..15: the window the server compresses with */
    unsigned server_bits_named;  /* the offer named server_max_window_bits: so must the response */
    unsigned client_bits;        /* 8..15: the largest window the client may use */
    unsigned client_no_context_takeover; /* the client resets its context for every message */
} mc_ws_deflate_params_t;

/* Reads one Sec-WebSocket-Extensions header value s[0..n).  Returns
 * MC_WS_DEFLATE_ACCEPT with *params set, MC_WS_DEFLATE_NONE, or
 * MC_WS_DEFLATE_MALFORMED. */
int mc_ws_deflate_negotiate(const char *s, size_t n, const mc_ws_deflate_policy_t *policy,
                            mc_ws_deflate_params_t *params);

/* Writes the response's extension (without the header name) into out, which
 * holds MC_WS_DEFLATE_RESPONSE_MAX bytes, NUL-terminated; returns its
 * length. */
size_t mc_ws_deflate_response(const mc_ws_deflate_params_t *params, char *out);

#endif
