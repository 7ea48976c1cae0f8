/*
 * libFuzzer target: permessage-deflate's codec (lib/src/ws_deflate.c).
 *
 *  - a client's message, inflated under a maximum: an accepted message is
 *    never longer than the maximum, and holds exactly what zlib itself
 *    inflates from the same bytes and the RFC 7692 tail (a reference
 *    inflation written here, one output byte past the maximum at most);
 *    a refusal as "too big" means the reference passed the maximum too;
 *  - the same bytes cut into two messages on one inflater that keeps its
 *    context (client context takeover): each accepted message within the
 *    maximum;
 *  - inflate(deflate(x)) = x for the deflater the fan-out uses, at the
 *    fuzzed level and window; under a maximum of |x| - 1 it is too big.
 * The maximum stays small (at most 64 KiB), so a deflate bomb shows as a
 * refusal, and ASan's allocation limits catch an inflater that allocates
 * the inflated size instead of stopping.
 *
 * Input: byte 0 the window bits (9 + b % 7) and level (1 + b / 16 % 9),
 * byte 1 where to cut for the two-message check, bytes 2-3 the maximum
 * (big-endian, + 1), then the data.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "minichat/ws_deflate.h"

static const uint8_t TAIL[4] = { 0x00, 0x00, 0xff, 0xff };

/* Inflates data and the tail with zlib directly (raw, `bits`), producing
 * at most cap bytes into out.  As RFC 7692 7.2.3.4 allows, a final block
 * may end the message (no tail then) or be followed by a new stream in the
 * same message.  Returns the bytes produced, or -1 when zlib finds the data
 * invalid before reaching cap. */
static long ref_inflate(const uint8_t *data, size_t len, unsigned bits, uint8_t *out, size_t cap)
{
    z_stream zs;
    const uint8_t *parts[2] = { data, TAIL };
    size_t lens[2] = { len, sizeof(TAIL) };
    long produced = -1;
    int i, rc, ended = 0;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -(int)bits) != Z_OK) {
        abort();
    }
    zs.next_out = out;
    zs.avail_out = (uInt)cap;

    for (i = 0; i < 2 && !ended && zs.avail_out > 0; i++) {
        zs.next_in = (Bytef *)parts[i];
        zs.avail_in = (uInt)lens[i];
        while (zs.avail_out > 0) {
            rc = inflate(&zs, Z_SYNC_FLUSH);
            if (rc == Z_STREAM_END) {
                if (inflateReset(&zs) != Z_OK) {
                    goto done;
                }
                if (zs.avail_in == 0) {
                    ended = 1;
                    break;
                }
                continue;
            }
            if (rc == Z_BUF_ERROR) {
                break;  /* this part's input is used up */
            }
            if (rc != Z_OK) {
                goto done;
            }
            if (zs.avail_in == 0 && zs.avail_out > 0) {
                break;
            }
        }
    }
    produced = (long)(cap - zs.avail_out);

done:
    inflateEnd(&zs);
    return produced;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mc_ws_inflater_t in, keep;
    mc_ws_deflater_t d;
    unsigned bits;
    int level, rc;
    size_t max, cut, len, out_len, back_len;
    uint8_t *out = NULL, *ref, *packed = NULL, *back = NULL;
    long produced;

    if (size < 4) {
        return 0;
    }
    bits = 9 + data[0] % 7;
    level = 1 + data[0] / 16 % 9;
    max = ((size_t)data[2] << 8 | data[3]) + 1;
    data += 4;
    len = size - 4;
    cut = len ? (size_t)data[-3] % (len + 1) : 0;

    /* a client's message */
    if (mc_ws_inflater_init(&in, bits) != MC_WS_DEFLATE_OK) {
        return 0;
    }
    rc = mc_ws_inflate(&in, data, len, max, 1, &out, &out_len);
    ref = malloc(max + 1);
    if (ref == NULL) {
        abort();
    }
    produced = ref_inflate(data, len, bits, ref, max + 1);
    if (rc == MC_WS_DEFLATE_OK) {
        if (out_len > max || (out_len == 0) != (out == NULL)) {
            abort();
        }
        if (produced != (long)out_len || (out_len && memcmp(out, ref, out_len) != 0)) {
            abort();
        }
    } else if (rc == MC_WS_DEFLATE_TOO_BIG) {
        if (produced >= 0 && (size_t)produced <= max) {
            abort();
        }
    } else if (rc != MC_WS_DEFLATE_BAD && rc != MC_WS_DEFLATE_NOMEM) {
        abort();
    }
    free(out);
    free(ref);
    out = NULL;
    mc_ws_inflater_free(&in);

    /* two messages on one inflater that keeps its context */
    if (mc_ws_inflater_init(&keep, bits) == MC_WS_DEFLATE_OK) {
        rc = mc_ws_inflate(&keep, data, cut, max, 0, &out, &out_len);
        if (rc == MC_WS_DEFLATE_OK && out_len > max) {
            abort();
        }
        free(out);
        out = NULL;
        /* after an error the caller resets, as the module does */
        rc = mc_ws_inflate(&keep, data + cut, len - cut, max, rc != MC_WS_DEFLATE_OK, &out, &out_len);
        if (rc == MC_WS_DEFLATE_OK && out_len > max) {
            abort();
        }
        free(out);
        out = NULL;
        mc_ws_inflater_free(&keep);
    }

    /* the fan-out's deflater, and back */
    if (mc_ws_deflater_init(&d, level, bits) != MC_WS_DEFLATE_OK) {
        return 0;
    }
    if (mc_ws_deflate(&d, data, len, 14, &packed, &out_len) == MC_WS_DEFLATE_OK) {
        if (mc_ws_inflater_init(&in, bits) == MC_WS_DEFLATE_OK) {
            rc = mc_ws_inflate(&in, packed + 14, out_len, len, 1, &back, &back_len);
            if (rc != MC_WS_DEFLATE_OK || back_len != len || (len && memcmp(back, data, len) != 0)) {
                abort();
            }
            free(back);
            back = NULL;
            if (len > 0) {
                rc = mc_ws_inflate(&in, packed + 14, out_len, len - 1, 1, &back, &back_len);
                if (rc != MC_WS_DEFLATE_TOO_BIG) {
                    abort();
                }
                free(back);
            }
            mc_ws_inflater_free(&in);
        }
        free(packed);
    }
    mc_ws_deflater_free(&d);

    return 0;
}
