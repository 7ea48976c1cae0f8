/*
 * UTF-8 (see utf8.h).  Everything rests on one decoder, utf8_seq_len(), which
 * says how long the valid sequence at a position is, or 0 when the byte
 * there starts none; validation, counting, prefixes and repair differ only in
 * what they do with a 0.  Runs of ASCII, the common case in chat, are skipped
 * eight bytes at a time.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/utf8.h"

static size_t utf8_seq_len(const unsigned char *s, size_t n);
static int utf8_could_start(const unsigned char *s, size_t n);
static size_t utf8_ascii_run(const unsigned char *s, size_t n);

/* Returns the length of the valid sequence at s (n > 0 bytes left), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80) {
            return 0;
        }
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0)) {
            return 0; /* overlong, or a UTF-16 surrogate */
        }
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80) {
            return 0;
        }
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90)) {
            return 0; /* overlong, or above U+10FFFF */
        }
        return 4;
    }
    return 0; /* a continuation byte, 0xc0, 0xc1, or 0xf5 and up */
}

/* Returns 1 when s[0..n), shorter than the sequence its first byte
 * announces, is a valid beginning of that sequence (more bytes may still
 * complete it), else 0. */
static int utf8_could_start(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t need, i;

    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
    } else {
        return 0;
    }
    if (n >= need) {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    if (n >= 2 && ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0) || (c == 0xf0 && s[1] < 0x90)
                   || (c == 0xf4 && s[1] >= 0x90))) {
        return 0; /* overlong, a surrogate or above U+10FFFF already */
    }
    return 1;
}

/* Returns how many bytes from s on are ASCII, looking at whole 8-byte words
 * first (the rest byte by byte). */
static size_t utf8_ascii_run(const unsigned char *s, size_t n)
{
    size_t i = 0;
    uint64_t w;

    while (i + 8 <= n) {
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ULL) {
            break;
        }
        i += 8;
    }
    while (i < n && s[i] < 0x80) {
        i++;
    }
    return i;
}

int mc_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0, k;

    while (i < n) {
        i += utf8_ascii_run(s + i, n - i);
        if (i == n) {
            break;
        }
        k = utf8_seq_len(s + i, n - i);
        if (k == 0) {
            return 0;
        }
        i += k;
    }
    return 1;
}

int mc_utf8_valid_part(const uint8_t *s, size_t n, size_t *done)
{
    size_t i = 0, k;

    while (i < n) {
        i += utf8_ascii_run(s + i, n - i);
        if (i == n) {
            break;
        }
        k = utf8_seq_len(s + i, n - i);
        if (k == 0) {
            if (utf8_could_start(s + i, n - i)) {
                break;
            }
            *done = i;
            return 0;
        }
        i += k;
    }
    *done = i;
    return 1;
}

size_t mc_utf8_chars(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, chars = 0, k;

    while (i < n) {
        k = utf8_ascii_run(u + i, n - i);
        i += k;
        chars += k;
        if (i == n) {
            break;
        }
        k = utf8_seq_len(u + i, n - i);
        i += k != 0 ? k : 1;
        chars++;
    }
    return chars;
}

size_t mc_utf8_prefix(const char *s, size_t n, size_t chars)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;

    while (i < n && chars > 0) {
        k = utf8_seq_len(u + i, n - i);
        i += k != 0 ? k : 1;
        chars--;
    }
    return i;
}

char *mc_utf8_sanitize(const char *s, size_t n, size_t *out_len)
{
    const unsigned char *u = (const unsigned char *)s;
    char *out, *p;
    size_t i = 0, k;

    if (mc_utf8_valid(u, n)) {
        out = malloc(n + 1);
        if (out == NULL) {
            return NULL;
        }
        if (n > 0) {
            memcpy(out, s, n);
        }
        out[n] = '\0';
        *out_len = n;
        return out;
    }

    /* each invalid byte becomes three */
    out = malloc(3 * n + 1);
    if (out == NULL) {
        return NULL;
    }
    p = out;
    while (i < n) {
        k = utf8_seq_len(u + i, n - i);
        if (k == 0) {
            memcpy(p, "\xef\xbf\xbd", 3);
            p += 3;
            i++;
            continue;
        }
        memcpy(p, u + i, k);
        p += k;
        i += k;
    }
    *p = '\0';
    *out_len = (size_t)(p - out);
    return out;
}
