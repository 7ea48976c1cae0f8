/*
 * The WebSocket Origin allowlist (minichat_allowed_origins): which browser
 * origins may open a chat connection.  A pattern is an origin as browsers
 * send it (RFC 6454: scheme "://" host [":" port], no path), whose host may
 * begin with "*." to stand for any subdomain of the rest at any depth: the
 * host "*.b.example" (scheme https) matches the origins of x.b.example and
 * x.y.b.example over https, never b.example itself.  Schemes and
 * hosts compare without regard to case; ports compare exactly (browsers
 * leave out the default port, and so must a pattern that means it).  Pure
 * code: no allocation, no I/O.
 */
#ifndef MINICHAT_ORIGIN_H
#define MINICHAT_ORIGIN_H

#include <stddef.h>

/* Checks a pattern p[0..n).  Returns NULL when it is valid, else a static
 * text saying what is wrong (for the configuration's error message). */
const char *mc_origin_check_pattern(const char *p, size_t n);

/* Returns 1 when the Origin header value o[0..on) matches the valid pattern
 * p[0..pn), else 0 (a malformed origin matches nothing). */
int mc_origin_match(const char *p, size_t pn, const char *o, size_t on);

#endif
