/*
 * Reading the server's JSON by the fields the load generator needs, and
 * the message body it writes, for every protocol (proto_*.c).
 *
 * Frames are not parsed into a tree: the server writes them, the checks
 * are on numbers, and a hundred thousand connections make parsing cost
 * count.  The body of a message the load generator sends is
 * "lg <k> <sent_us>" (LG_BODY_TAG first, no character that JSON escapes),
 * whatever the protocol wraps around it, so that every system carries the
 * same bytes and latency is read the same way.
 */
#include <inttypes.h>
#include <string.h>

#include "loadgen.h"

const char *lg_field(const char *p, size_t n, const char *key)
{
    size_t kl = strlen(key);
    const char *f = memmem(p, n, key, kl);

    return f ? f + kl : NULL;
}

int lg_number(const char *p, size_t n, const char *q, uint64_t *v)
{
    const char *end = p + n;
    uint64_t x = 0;

    if (q == NULL || q >= end || *q < '0' || *q > '9') {
        return -1;
    }
    while (q < end && *q >= '0' && *q <= '9') {
        if (x > (UINT64_MAX - 9) / 10) {
            return -1;
        }
        x = x * 10 + (uint64_t)(*q - '0');
        q++;
    }
    *v = x;
    return 0;
}

int lg_body_append(mc_buf_t *out, uint64_t k, int64_t sent_us)
{
    return mc_buf_appendf(out, LG_BODY_TAG "%" PRIu64 " %" PRId64, k, sent_us);
}

void lg_body_read(const char *p, size_t n, lg_event_t *ev)
{
    const char *b = lg_field(p, n, "\"body\":\"" LG_BODY_TAG);
    uint64_t k, v;

    if (b == NULL || lg_number(p, n, b, &k) != 0) {
        return;
    }
    b = memchr(b, ' ', (size_t)(p + n - b));
    if (b != NULL && lg_number(p, n, b + 1, &v) == 0) {
        ev->k = k;
        ev->sent_us = (int64_t)v;
        ev->ours = 1;
    }
}
