/*
 * permessage-deflate negotiation (RFC 7692 section 7, on RFC 6455 9.1's
 * grammar):
 *
 *   extension-list  = 1#extension
 *   extension       = extension-token *( ";" extension-param )
 *   extension-param = token [ "=" ( token / quoted-string ) ]
 *
 * with optional whitespace around the separators and empty list elements
 * skipped (RFC 7230 7).  A quoted value is unquoted before it is checked
 * (RFC 6455 9.1 wants it to be a token then).  Window bits are exactly "8"
 * to "15": no sign, no leading zero.
 */
#include <stdio.h>
#include <string.h>

#include "minichat/ws_deflate_params.h"

#define VALUE_MAX 8  /* longer values are invalid for every parameter we know */

typedef struct {
    const char *p, *end;
} cursor_t;

/* One offer's parameters as read. */
typedef struct {
    int bad;  /* declined: unknown, repeated or invalid parameter */
    int server_nct, client_nct;
    int server_bits, client_bits;  /* 0: absent; -1: client_max_window_bits without a value */
} offer_t;

/* Returns 1 for RFC 7230's tchar. */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return 1;
    }
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) {
        c->p++;
    }
}

/* Takes a token; returns its length (0: none there). */
static size_t take_token(cursor_t *c, const char **tok)
{
    *tok = c->p;
    while (c->p < c->end && is_tchar((unsigned char)*c->p)) {
        c->p++;
    }
    return (size_t)(c->p - *tok);
}

/* Takes a quoted-string, unquoted into v (at most VALUE_MAX bytes kept;
 * *len says how long it really was).  Returns 0 when it is not closed or
 * holds a control character. */
static int take_quoted(cursor_t *c, char *v, size_t *len)
{
    unsigned char ch;

    *len = 0;
    c->p++; /* the opening quote */
    while (c->p < c->end) {
        ch = (unsigned char)*c->p++;
        if (ch == '"') {
            return 1;
        }
        if (ch == '\\') {
            if (c->p == c->end) {
                return 0;
            }
            ch = (unsigned char)*c->p++;
        }
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return 0;
        }
        if (*len < VALUE_MAX) {
            v[*len] = (char)ch;
        }
        (*len)++;
    }
    return 0;
}

/* Returns 8..15 for a window-bits value, else 0. */
static int window_bits(const char *v, size_t len)
{
    if (len == 1 && (v[0] == '8' || v[0] == '9')) {
        return v[0] - '0';
    }
    if (len == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') {
        return 10 + (v[1] - '0');
    }
    return 0;
}

static int name_is(const char *s, size_t len, const char *name)
{
    return len == strlen(name) && memcmp(s, name, len) == 0;
}

/* Applies one parameter of a permessage-deflate offer. */
static void offer_param(offer_t *o, const char *name, size_t nlen, const char *v, size_t vlen, int has_value)
{
    int bits = has_value ? window_bits(v, vlen) : 0;

    if (name_is(name, nlen, "server_no_context_takeover")) {
        if (o->server_nct || has_value) {
            o->bad = 1;
        }
        o->server_nct = 1;

    } else if (name_is(name, nlen, "client_no_context_takeover")) {
        if (o->client_nct || has_value) {
            o->bad = 1;
        }
        o->client_nct = 1;

    } else if (name_is(name, nlen, "server_max_window_bits")) {
        /* zlib refuses a 256-byte window for raw deflate: decline 8 */
        if (o->server_bits || bits < 9) {
            o->bad = 1;
        }
        o->server_bits = bits ? bits : -1;

    } else if (name_is(name, nlen, "client_max_window_bits")) {
        if (o->client_bits || (has_value && bits == 0)) {
            o->bad = 1;
        }
        o->client_bits = has_value ? (bits ? bits : -1) : -1;

    } else {
        o->bad = 1;
    }
}

int mc_ws_deflate_negotiate(const char *s, size_t n, const mc_ws_deflate_policy_t *policy,
                            mc_ws_deflate_params_t *params)
{
    cursor_t c = {s, s + n};
    offer_t o;
    const char *name, *pname, *tv;
    size_t nlen, plen, vlen;
    char v[VALUE_MAX];
    int is_pmd, has_value;

    for (;;) {
        /* empty list elements: ", ," */
        skip_ows(&c);
        while (c.p < c.end && *c.p == ',') {
            c.p++;
            skip_ows(&c);
        }
        if (c.p == c.end) {
            return MC_WS_DEFLATE_NONE;
        }

        nlen = take_token(&c, &name);
        if (nlen == 0) {
            return MC_WS_DEFLATE_MALFORMED;
        }
        is_pmd = name_is(name, nlen, "permessage-deflate");
        memset(&o, 0, sizeof(o));

        skip_ows(&c);
        while (c.p < c.end && *c.p == ';') {
            c.p++;
            skip_ows(&c);
            plen = take_token(&c, &pname);
            if (plen == 0) {
                return MC_WS_DEFLATE_MALFORMED;
            }
            skip_ows(&c);
            has_value = 0;
            vlen = 0;
            if (c.p < c.end && *c.p == '=') {
                c.p++;
                skip_ows(&c);
                has_value = 1;
                if (c.p < c.end && *c.p == '"') {
                    if (!take_quoted(&c, v, &vlen)) {
                        return MC_WS_DEFLATE_MALFORMED;
                    }
                } else {
                    vlen = take_token(&c, &tv);
                    if (vlen == 0) {
                        return MC_WS_DEFLATE_MALFORMED;
                    }
                    memcpy(v, tv, vlen < VALUE_MAX ? vlen : VALUE_MAX);
                }
                skip_ows(&c);
            }
            if (is_pmd) {
                /* a value longer than we keep is wrong for every parameter */
                offer_param(&o, pname, plen, v, vlen > VALUE_MAX ? 0 : vlen, has_value);
                if (vlen > VALUE_MAX) {
                    o.bad = 1;
                }
            }
        }

        if (c.p < c.end && *c.p != ',') {
            return MC_WS_DEFLATE_MALFORMED;
        }

        if (is_pmd && !o.bad) {
            params->server_bits = o.server_bits > 0 ? (unsigned)o.server_bits : 15;
            params->server_bits_named = o.server_bits != 0;
            params->client_bits = o.client_bits > 0 ? (unsigned)o.client_bits : 15;
            params->client_no_context_takeover = o.client_nct || !policy->client_context_takeover;
            return MC_WS_DEFLATE_ACCEPT;
        }
    }
}

size_t mc_ws_deflate_response(const mc_ws_deflate_params_t *params, char *out)
{
    int n;

    n = snprintf(out, MC_WS_DEFLATE_RESPONSE_MAX, "permessage-deflate; server_no_context_takeover");
    if (params->server_bits_named) {
        n += snprintf(out + n, MC_WS_DEFLATE_RESPONSE_MAX - (size_t)n, "; server_max_window_bits=%u",
                      params->server_bits);
    }
    if (params->client_no_context_takeover) {
        n += snprintf(out + n, MC_WS_DEFLATE_RESPONSE_MAX - (size_t)n, "; client_no_context_takeover");
    }
    return (size_t)n;
}
