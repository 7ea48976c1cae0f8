/*
 * Rate limits: the "rate=10r/s burst=20" values of the minichat_limit_*
 * directives, and GCRA (the generic cell rate algorithm) as lua/limit.lua
 * and lua/gcra.lua run it in Redis.  Pure code: the C copy of the algorithm
 * is the executable specification the Lua scripts are checked against.
 *
 * GCRA keeps one number per limit, the theoretical arrival time (TAT) of
 * the next request.  With emission interval T = 1/rate and burst b (as in
 * nginx's limit_req: b requests beyond the rate may come at once), a
 * request at time now is allowed when max(TAT, now) + T - now <= (b + 1) T,
 * and then TAT becomes max(TAT, now) + T.  A refused request changes
 * nothing and may retry after (max(TAT, now) + T - now) - (b + 1) T.
 */
#ifndef MINICHAT_RATE_H
#define MINICHAT_RATE_H

#include <stddef.h>
#include <stdint.h>

/* Parses "Nr/s" or "Nr/m" (N a positive integer, at most 1000000) into the
 * emission interval in microseconds (at least 1).  Returns 0 or -1. */
int mc_rate_parse(const char *s, size_t n, uint64_t *interval_us);

/* Decides one request at now_us for a limit whose state is *tat_us (0: no
 * state yet).  Returns 1 (allowed, *tat_us moved) or 0 (refused, *tat_us
 * untouched, *retry_us the wait before a retry is allowed). */
int mc_gcra(uint64_t *tat_us, uint64_t now_us, uint64_t interval_us, uint64_t burst, uint64_t *retry_us);

#endif
