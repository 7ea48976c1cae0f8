/*
 * libFuzzer target: the UTF-8 helpers (lib/src/utf8.c), differentially.
 *
 *  - mc_utf8_valid() agrees with a plain reference decoder written here from
 *    RFC 3629 (code point by code point, no word-at-a-time tricks);
 *  - mc_utf8_valid_part() fed the text in arbitrary pieces, as a fragmented
 *    WebSocket message is checked, reaches the same verdict as the whole
 *    text, and what it accepts is always valid;
 *  - mc_utf8_sanitize() returns valid text, the input itself when that was
 *    valid, with as many characters as mc_utf8_chars() counts;
 *  - mc_utf8_prefix() never cuts inside the text's bytes or past them.
 *
 * Input: 4 bytes for the cuts (chunks.h), then the text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunks.h"
#include "minichat/utf8.h"

/* Returns 1 when s[0..n) is valid UTF-8 per RFC 3629, decoding each
 * character to its code point and checking the code point's range. */
static int ref_valid(const uint8_t *s, size_t n)
{
    size_t i = 0, len, k;
    uint32_t cp, min;

    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if ((s[i] & 0xe0) == 0xc0) {
            len = 2, cp = s[i] & 0x1f, min = 0x80;
        } else if ((s[i] & 0xf0) == 0xe0) {
            len = 3, cp = s[i] & 0x0f, min = 0x800;
        } else if ((s[i] & 0xf8) == 0xf0) {
            len = 4, cp = s[i] & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len) {
            return 0;
        }
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
        i += len;
    }
    return 1;
}

/* Feeds s in pieces as the module feeds a fragmented text message. */
static int streamed_valid(const uint8_t *s, size_t n, fuzz_chunks_t *cuts)
{
    size_t have = 0, checked = 0, done;

    while (have < n) {
        have += fuzz_chunks_next(cuts, n - have);
        if (!mc_utf8_valid_part(s + checked, have - checked, &done)) {
            return 0;
        }
        checked += done;
        if (have - checked > 3 || !ref_valid(s, checked)) {
            abort();
        }
    }
    return checked == n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_chunks_t cuts;
    size_t out_len, chars, k;
    char *out;
    int valid;

    fuzz_chunks_init(&cuts, &data, &size);

    valid = mc_utf8_valid(data, size);
    if (valid != ref_valid(data, size)) {
        abort();
    }
    if (streamed_valid(data, size, &cuts) != valid) {
        abort();
    }

    out = mc_utf8_sanitize((const char *)data, size, &out_len);
    if (out == NULL) {
        abort();
    }
    if (!ref_valid((const uint8_t *)out, out_len) || out[out_len] != '\0') {
        abort();
    }
    if (valid && (out_len != size || (size && memcmp(out, data, size) != 0))) {
        abort();
    }
    chars = mc_utf8_chars((const char *)data, size);
    if (chars != mc_utf8_chars(out, out_len) || chars > size) {
        abort();
    }
    free(out);

    if (mc_utf8_prefix((const char *)data, size, chars) != size) {
        abort();
    }
    k = mc_utf8_prefix((const char *)data, size, chars / 2);
    if (k > size || mc_utf8_chars((const char *)data, k) != chars / 2) {
        abort();
    }
    if (valid && !ref_valid(data, k)) {
        abort();
    }
    return 0;
}
