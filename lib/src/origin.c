/*
 * Origin patterns (see minichat/origin.h).  Both a pattern and an origin
 * are split into scheme, host and port; the pattern's host may start with
 * "*." (a wildcard label), which the origin's host must precede with at
 * least one label of its own.  Nothing is normalised: an origin that a
 * browser would never send ("HTTPS://A.EXAMPLE:443/") simply does not
 * match, which is the safe side.
 */
#include "minichat/origin.h"

#include <string.h>

typedef struct {
    const char *scheme;
    size_t scheme_len;
    const char *host;
    size_t host_len;
    const char *port; /* NULL: none */
    size_t port_len;
} origin_parts_t;

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int same_nocase(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) {
            return 0;
        }
    }
    return 1;
}

/* Splits s[0..n) into parts.  Returns NULL, or what is wrong. */
static const char *split(const char *s, size_t n, origin_parts_t *o)
{
    const char *sep, *end = s + n, *p;

    memset(o, 0, sizeof(*o));
    sep = NULL;
    for (p = s; p + 3 <= end; p++) {
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            sep = p;
            break;
        }
    }
    if (sep == NULL || sep == s) {
        return "must start with a scheme and \"://\"";
    }
    o->scheme = s;
    o->scheme_len = (size_t)(sep - s);
    o->host = sep + 3;

    p = o->host;
    if (p < end && *p == '[') {
        /* an IPv6 literal: up to its closing bracket */
        while (p < end && *p != ']') {
            p++;
        }
        if (p == end) {
            return "has an unclosed \"[\"";
        }
        p++;
    } else {
        while (p < end && *p != ':') {
            p++;
        }
    }
    o->host_len = (size_t)(p - o->host);
    if (o->host_len == 0) {
        return "has no host";
    }
    if (p < end) {
        if (*p != ':') {
            return "has something after the host other than a port";
        }
        o->port = p + 1;
        o->port_len = (size_t)(end - o->port);
    }
    return NULL;
}

static int host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '[' || c == ']' || c == ':';
}

const char *mc_origin_check_pattern(const char *p, size_t n)
{
    origin_parts_t o;
    const char *err, *h;
    size_t i, hl;
    unsigned long port;

    if (p == NULL || n == 0) {
        return "is empty";
    }
    err = split(p, n, &o);
    if (err) {
        return err;
    }
    if (!(o.scheme_len == 4 && same_nocase(o.scheme, "http", 4)) &&
        !(o.scheme_len == 5 && same_nocase(o.scheme, "https", 5))) {
        return "must use the scheme http or https";
    }
    h = o.host;
    hl = o.host_len;
    if (hl >= 2 && h[0] == '*' && h[1] == '.') {
        h += 2;
        hl -= 2;
        if (hl == 0 || h[0] == '.' || h[0] == '[') {
            return "needs a domain after \"*.\"";
        }
    }
    for (i = 0; i < hl; i++) {
        if (!host_char((unsigned char)h[i])) {
            return "has a character a host cannot hold (a path, a \"*\" other than a leading \"*.\", ...)";
        }
        if (h[i] == '.' && (i == 0 || h[i - 1] == '.')) {
            return "has an empty label";
        }
    }
    if (h[hl - 1] == '.') {
        return "has an empty label";
    }
    if (o.port) {
        if (o.port_len == 0 || o.port_len > 5) {
            return "has an invalid port";
        }
        port = 0;
        for (i = 0; i < o.port_len; i++) {
            if (o.port[i] < '0' || o.port[i] > '9') {
                return "has an invalid port";
            }
            port = port * 10 + (unsigned long)(o.port[i] - '0');
        }
        if (port == 0 || port > 65535) {
            return "has an invalid port";
        }
    }
    return NULL;
}

int mc_origin_match(const char *p, size_t pn, const char *o, size_t on)
{
    origin_parts_t pp, op;
    const char *ph;
    size_t phl;

    if (split(p, pn, &pp) != NULL || split(o, on, &op) != NULL) {
        return 0;
    }
    if (pp.scheme_len != op.scheme_len || !same_nocase(pp.scheme, op.scheme, pp.scheme_len)) {
        return 0;
    }
    if ((pp.port == NULL) != (op.port == NULL) ||
        (pp.port && (pp.port_len != op.port_len || memcmp(pp.port, op.port, pp.port_len) != 0))) {
        return 0;
    }
    ph = pp.host;
    phl = pp.host_len;
    if (phl >= 2 && ph[0] == '*' && ph[1] == '.') {
        /* ".rest" must end the origin's host, with a label before it */
        ph += 1;
        phl -= 1;
        return op.host_len > phl && op.host[0] != '.' &&
               same_nocase(op.host + op.host_len - phl, ph, phl);
    }
    return op.host_len == phl && same_nocase(op.host, ph, phl);
}
