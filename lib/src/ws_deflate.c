/*
 * permessage-deflate's codec on zlib.  Raw deflate streams (negative window
 * bits: no zlib header or checksum).  Each outgoing message ends with a
 * sync flush whose empty stored block (00 00 ff ff) is dropped; each
 * incoming message gets those four bytes back before it is inflated, so
 * that zlib gives out everything up to the message's end.
 *
 * A message may also end with a final block (BFINAL, RFC 7692 7.2.3.4):
 * the stream is then over and the inflater starts a new one for whatever
 * follows, without the old context.
 *
 * The inflater's output buffer starts small and doubles, capped at the
 * caller's maximum plus one byte: reaching that byte means the message is
 * too big, and inflation stops there.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/ws_deflate.h"

static const uint8_t TAIL[4] = {0x00, 0x00, 0xff, 0xff};

int mc_ws_inflater_init(mc_ws_inflater_t *in, unsigned bits)
{
    memset(in, 0, sizeof(*in));
    if (bits < 9) {
        bits = 9;
    }
    if (bits > 15) {
        bits = 15;
    }
    if (inflateInit2(&in->zs, -(int)bits) != Z_OK) {
        return MC_WS_DEFLATE_NOMEM;
    }
    in->ready = 1;
    return MC_WS_DEFLATE_OK;
}

void mc_ws_inflater_free(mc_ws_inflater_t *in)
{
    if (in->ready) {
        inflateEnd(&in->zs);
        in->ready = 0;
    }
}

/* Grows *buf (capacity *cap, *used bytes kept) towards limit.  Returns 0
 * when out of memory. */
static int grow(uint8_t **buf, size_t *cap, size_t limit)
{
    size_t n = *cap ? *cap * 2 : 256;
    uint8_t *p;

    if (n > limit || n < *cap) {
        n = limit;
    }
    p = realloc(*buf, n);
    if (p == NULL) {
        return 0;
    }
    *buf = p;
    *cap = n;
    return 1;
}

/* Makes room for more output (never past limit) and runs inflate() once;
 * zlib's answer goes to *zrc.  Returns MC_WS_DEFLATE_OK, _TOO_BIG when the
 * output reached limit, or _NOMEM. */
static int inflate_step(z_stream *zs, size_t limit, uint8_t **buf, size_t *cap, size_t *used, int *zrc)
{
    if (*used == *cap) {
        if (*cap == limit) {
            return MC_WS_DEFLATE_TOO_BIG;
        }
        if (!grow(buf, cap, limit)) {
            return MC_WS_DEFLATE_NOMEM;
        }
    }
    zs->next_out = *buf + *used;
    zs->avail_out = (uInt)(*cap - *used > (1u << 30) ? (1u << 30) : *cap - *used);
    *zrc = inflate(zs, Z_SYNC_FLUSH);
    *used = (size_t)(zs->next_out - *buf);
    return MC_WS_DEFLATE_OK;
}

/* Feeds data[0..len) to zs, writing into *buf; returns a result code. */
static int inflate_part(z_stream *zs, const uint8_t *data, size_t len, size_t limit, uint8_t **buf, size_t *cap,
                        size_t *used, int *ended)
{
    int rc, step;

    zs->next_in = (Bytef *)(uintptr_t)data;
    zs->avail_in = 0;

    while (len || zs->avail_in) {
        if (zs->avail_in == 0) {
            /* uInt is 32 bits: feed very long input in pieces */
            zs->avail_in = len > (1u << 30) ? (1u << 30) : (uInt)len;
            len -= zs->avail_in;
        }
        step = inflate_step(zs, limit, buf, cap, used, &rc);
        if (step != MC_WS_DEFLATE_OK) {
            return step;
        }
        if (rc == Z_STREAM_END) {
            /* a final block (BFINAL, RFC 7692 7.2.3.4): what follows starts
             * a new stream, without the old context */
            if (inflateReset(zs) != Z_OK) {
                return MC_WS_DEFLATE_BAD;
            }
            if (zs->avail_in == 0 && len == 0) {
                *ended = 1;
                return MC_WS_DEFLATE_OK;
            }
            continue;
        }
        if (rc == Z_BUF_ERROR) {
            if (zs->avail_out == 0 || len) {
                continue;  /* more room, or more input, to give */
            }
            return MC_WS_DEFLATE_OK;  /* all input taken */
        }
        if (rc == Z_MEM_ERROR) {
            return MC_WS_DEFLATE_NOMEM;
        }
        if (rc != Z_OK) {
            return MC_WS_DEFLATE_BAD;
        }
    }
    /* the input is used up; zlib may still hold output it had no room for */
    for (;;) {
        step = inflate_step(zs, limit, buf, cap, used, &rc);
        if (step != MC_WS_DEFLATE_OK) {
            return step;
        }
        if (rc == Z_STREAM_END) {
            *ended = 1;
            return inflateReset(zs) == Z_OK ? MC_WS_DEFLATE_OK : MC_WS_DEFLATE_BAD;
        }
        if (rc == Z_BUF_ERROR || (rc == Z_OK && zs->avail_out != 0)) {
            return MC_WS_DEFLATE_OK;
        }
        if (rc != Z_OK) {
            return rc == Z_MEM_ERROR ? MC_WS_DEFLATE_NOMEM : MC_WS_DEFLATE_BAD;
        }
    }
}

int mc_ws_inflate(mc_ws_inflater_t *in, const uint8_t *data, size_t len, size_t max, int reset, uint8_t **out,
                  size_t *out_len)
{
    uint8_t *buf = NULL;
    size_t cap = 0, used = 0, limit;
    int rc, ended = 0;

    *out = NULL;
    *out_len = 0;

    if (reset && inflateReset(&in->zs) != Z_OK) {
        return MC_WS_DEFLATE_BAD;
    }

    limit = max + 1;  /* one byte past the maximum proves the message too big */
    if (limit == 0) {
        limit = max;
    }

    rc = inflate_part(&in->zs, data, len, limit, &buf, &cap, &used, &ended);
    if (rc == MC_WS_DEFLATE_OK && !ended) {
        /* a message that ends with its final block needs no tail */
        rc = inflate_part(&in->zs, TAIL, sizeof(TAIL), limit, &buf, &cap, &used, &ended);
    }
    if (rc == MC_WS_DEFLATE_OK && used > max) {
        rc = MC_WS_DEFLATE_TOO_BIG;
    }
    if (rc != MC_WS_DEFLATE_OK) {
        free(buf);
        return rc;
    }

    if (used == 0) {
        free(buf);
        buf = NULL;
    }
    *out = buf;
    *out_len = used;
    return MC_WS_DEFLATE_OK;
}

int mc_ws_deflater_init(mc_ws_deflater_t *d, int level, unsigned bits)
{
    memset(d, 0, sizeof(*d));
    if (level < 1 || level > 9 || bits < 9 || bits > 15) {
        return MC_WS_DEFLATE_NOMEM;
    }
    if (deflateInit2(&d->zs, level, Z_DEFLATED, -(int)bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return MC_WS_DEFLATE_NOMEM;
    }
    d->ready = 1;
    return MC_WS_DEFLATE_OK;
}

void mc_ws_deflater_free(mc_ws_deflater_t *d)
{
    if (d->ready) {
        deflateEnd(&d->zs);
        d->ready = 0;
    }
}

int mc_ws_deflate(mc_ws_deflater_t *d, const uint8_t *data, size_t len, size_t reserve, uint8_t **out,
                  size_t *out_len)
{
    z_stream *zs = &d->zs;
    uint8_t *buf, *p;
    size_t cap, used;
    int rc;

    *out = NULL;
    *out_len = 0;

    if (deflateReset(zs) != Z_OK) {
        return MC_WS_DEFLATE_NOMEM;
    }

    /* deflateBound covers Z_FINISH; a sync flush adds an empty stored block */
    cap = reserve + deflateBound(zs, (uLong)len) + 16;
    buf = malloc(cap);
    if (buf == NULL) {
        return MC_WS_DEFLATE_NOMEM;
    }

    zs->next_in = (Bytef *)(uintptr_t)data;
    zs->avail_in = (uInt)len;
    used = reserve;

    for (;;) {
        zs->next_out = buf + used;
        zs->avail_out = (uInt)(cap - used);
        rc = deflate(zs, Z_SYNC_FLUSH);
        used = (size_t)(zs->next_out - buf);
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            free(buf);
            return MC_WS_DEFLATE_NOMEM;
        }
        if (zs->avail_out != 0 && zs->avail_in == 0) {
            break;
        }
        /* out of room: zlib had more to say than its bound (never expected) */
        p = realloc(buf, cap * 2);
        if (p == NULL) {
            free(buf);
            return MC_WS_DEFLATE_NOMEM;
        }
        buf = p;
        cap *= 2;
    }

    /* a sync flush ends with 00 00 ff ff: the receiver puts it back */
    if (used - reserve >= 4 && memcmp(buf + used - 4, TAIL, 4) == 0) {
        used -= 4;
    }

    *out = buf;
    *out_len = used - reserve;
    return MC_WS_DEFLATE_OK;
}
