/*
 * A JWT payload's claims without a JSON tree (see jwt_claims.h for the
 * contract).
 *
 * A REST request through nginx verifies one token, and parsing its payload
 * with jansson allocated an object, its hash table and a value per member
 * only to read three of them.  This reader walks the payload once,
 * recursively (one C frame per level of nesting, at most 2048 as jansson
 * allows), keeps the three top-level claims it is asked for and only
 * validates the rest.
 *
 * What jansson refuses is refused here too, so a token is accepted or
 * refused exactly as before: the whole input is checked as UTF-8 first
 * (jansson checks every byte it reads); strings refuse raw control
 * characters, unknown escapes, \u0000 and unpaired surrogates; numbers
 * follow the JSON grammar, integers must fit in int64 (strtoll's range) and
 * reals must not overflow strtod; every object's keys, decoded, must be
 * distinct (JSON_REJECT_DUPLICATES).  Decoded keys live in the caller's
 * scratch buffer, as a stack: an object's keys are dropped when it ends.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/jwt_claims.h"
#include "minichat/utf8.h"

#define MC_JWT_CLAIMS_MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    char *arena;     /* decoded keys, then the string or number being read */
    size_t top;      /* arena bytes held by the keys of open objects */
    size_t cap;
    struct {
        size_t off;
        size_t len;
    } keys[MC_JWT_CLAIMS_MAX_KEYS];
    size_t nkeys;
    int depth;
} reader_t;

static int read_value(reader_t *r, mc_claim_t *claim);

static void skip_ws(reader_t *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) {
        r->p++;
    }
}

/* Reads 4 hex digits.  Returns the value, or -1. */
static long read_hex4(reader_t *r)
{
    long v = 0;
    int i, d;

    if (r->end - r->p < 4) {
        return -1;
    }
    for (i = 0; i < 4; i++) {
        d = r->p[i];
        if (d >= '0' && d <= '9') {
            d -= '0';
        } else if (d >= 'a' && d <= 'f') {
            d -= 'a' - 10;
        } else if (d >= 'A' && d <= 'F') {
            d -= 'A' - 10;
        } else {
            return -1;
        }
        v = v * 16 + d;
    }
    r->p += 4;
    return v;
}

/* Appends code point cp as UTF-8 at arena[*o].  Returns 0 or -1. */
static int put_utf8(reader_t *r, size_t *o, unsigned long cp)
{
    unsigned char b[4];
    size_t n, i;

    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (r->cap - *o < n) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        r->arena[(*o)++] = (char)b[i];
    }
    return 0;
}

/* Reads a string (at its opening quote), decoded into the arena at r->top.
 * Returns its decoded length, or -1. */
static long read_string(reader_t *r)
{
    size_t o = r->top;
    unsigned long cp;
    long lo;
    uint8_t c;

    r->p++;
    for (;;) {
        if (r->p >= r->end) {
            return -1;
        }
        c = *r->p++;
        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            return -1;
        }
        if (c == '\\') {
            if (r->p >= r->end) {
                return -1;
            }
            c = *r->p++;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u':
                lo = read_hex4(r);
                if (lo < 0 || lo == 0 || (lo >= 0xdc00 && lo <= 0xdfff)) {
                    return -1;
                }
                cp = (unsigned long)lo;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') {
                        return -1;
                    }
                    r->p += 2;
                    lo = read_hex4(r);
                    if (lo < 0xdc00 || lo > 0xdfff) {
                        return -1;
                    }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned long)lo - 0xdc00);
                }
                if (put_utf8(r, &o, cp) != 0) {
                    return -1;
                }
                continue;
            default:
                return -1;
            }
        }
        if (o >= r->cap) {
            return -1;
        }
        r->arena[o++] = (char)c;
    }
    return (long)(o - r->top);
}

static int is_digit(const reader_t *r)
{
    return r->p < r->end && *r->p >= '0' && *r->p <= '9';
}

/* Reads a number.  Returns 0 with *is_int and (for an integer) *v set, or
 * -1 for bad grammar, an integer outside int64, or a real that overflows. */
static int read_number(reader_t *r, int *is_int, int64_t *v)
{
    const uint8_t *start = r->p;
    uint64_t acc = 0, limit;
    int neg = 0;
    size_t len;
    double d;

    if (*r->p == '-') {
        neg = 1;
        r->p++;
    }
    if (!is_digit(r)) {
        return -1;
    }
    if (*r->p == '0') {
        r->p++;
        if (is_digit(r)) {
            return -1;
        }
    } else {
        while (is_digit(r)) {
            r->p++;
        }
    }
    *is_int = 1;
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (!is_digit(r)) {
            return -1;
        }
        while (is_digit(r)) {
            r->p++;
        }
        *is_int = 0;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) {
            r->p++;
        }
        if (!is_digit(r)) {
            return -1;
        }
        while (is_digit(r)) {
            r->p++;
        }
        *is_int = 0;
    }

    if (*is_int) {
        limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (start += neg; start < r->p; start++) {
            if (acc > (limit - (uint64_t)(*start - '0')) / 10) {
                return -1;
            }
            acc = acc * 10 + (uint64_t)(*start - '0');
        }
        *v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
        return 0;
    }

    /* a real: only whether strtod overflows matters */
    len = (size_t)(r->p - start);
    if (r->cap - r->top < len + 1) {
        return -1;
    }
    memcpy(r->arena + r->top, start, len);
    r->arena[r->top + len] = '\0';
    errno = 0;
    d = strtod(r->arena + r->top, NULL);
    if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE) {
        return -1;
    }
    return 0;
}

static int read_literal(reader_t *r, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) {
        return -1;
    }
    r->p += n;
    return 0;
}

/* Reads an object (at its brace).  top: the payload itself, whose claims
 * go to *out.  Returns 0 or -1. */
static int read_object(reader_t *r, mc_jwt_claims_raw_t *out)
{
    size_t first_key = r->nkeys, top = r->top, i;
    mc_claim_t *claim;
    long len;
    char *key;

    if (++r->depth > MC_JWT_CLAIMS_MAX_DEPTH) {
        return -1;
    }
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        goto done;
    }
    for (;;) {
        skip_ws(r);
        if (r->p >= r->end || *r->p != '"') {
            return -1;
        }
        len = read_string(r);
        if (len < 0) {
            return -1;
        }
        key = r->arena + r->top;
        for (i = first_key; i < r->nkeys; i++) {
            if (r->keys[i].len == (size_t)len && memcmp(r->arena + r->keys[i].off, key, (size_t)len) == 0) {
                return -1;
            }
        }
        if (r->nkeys == MC_JWT_CLAIMS_MAX_KEYS) {
            return -1;
        }
        r->keys[r->nkeys].off = r->top;
        r->keys[r->nkeys].len = (size_t)len;
        r->nkeys++;
        r->top += (size_t)len;

        claim = NULL;
        if (out && len == 3) {
            if (memcmp(key, "sub", 3) == 0) {
                claim = &out->sub;
            } else if (memcmp(key, "exp", 3) == 0) {
                claim = &out->exp;
            } else if (memcmp(key, "nbf", 3) == 0) {
                claim = &out->nbf;
            }
        }

        skip_ws(r);
        if (r->p >= r->end || *r->p != ':') {
            return -1;
        }
        r->p++;
        skip_ws(r);
        if (read_value(r, claim) != 0) {
            return -1;
        }
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            break;
        }
        return -1;
    }

done:
    r->nkeys = first_key;
    r->top = top;
    r->depth--;
    return 0;
}

static int read_array(reader_t *r)
{
    if (++r->depth > MC_JWT_CLAIMS_MAX_DEPTH) {
        return -1;
    }
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        r->depth--;
        return 0;
    }
    for (;;) {
        skip_ws(r);
        if (read_value(r, NULL) != 0) {
            return -1;
        }
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == ']') {
            r->p++;
            r->depth--;
            return 0;
        }
        return -1;
    }
}

/* Reads any value; when claim is not NULL, records what it was. */
static int read_value(reader_t *r, mc_claim_t *claim)
{
    mc_claim_kind_t kind = MC_CLAIM_OTHER;
    int64_t num = 0;
    long len = 0;
    int rc, is_int = 0;

    if (r->p >= r->end) {
        return -1;
    }
    switch (*r->p) {
    case '"':
        len = read_string(r);
        rc = len < 0 ? -1 : 0;
        kind = MC_CLAIM_STRING;
        break;
    case '{':
        rc = read_object(r, NULL);
        break;
    case '[':
        rc = read_array(r);
        break;
    case 't':
        rc = read_literal(r, "true");
        break;
    case 'f':
        rc = read_literal(r, "false");
        break;
    case 'n':
        rc = read_literal(r, "null");
        break;
    default:
        if (*r->p != '-' && (*r->p < '0' || *r->p > '9')) {
            return -1;
        }
        rc = read_number(r, &is_int, &num);
        if (is_int) {
            kind = MC_CLAIM_INT;
        }
        break;
    }
    if (rc != 0 || claim == NULL) {
        return rc;
    }
    claim->kind = kind;
    claim->num = num;
    if (kind == MC_CLAIM_STRING) {
        claim->len = (size_t)len;
        if ((size_t)len < sizeof(claim->str)) {
            memcpy(claim->str, r->arena + r->top, (size_t)len);
            claim->str[len] = '\0';
        }
    }
    return 0;
}

int mc_jwt_claims_read(const uint8_t *json, size_t n, mc_jwt_claims_raw_t *out, char *scratch, size_t scratch_size)
{
    reader_t r;

    memset(out, 0, sizeof(*out));
    if (scratch_size < n + 1 || !mc_utf8_valid(json, n)) {
        return -1;
    }
    r.p = json;
    r.end = json + n;
    r.arena = scratch;
    r.top = 0;
    r.cap = scratch_size;
    r.nkeys = 0;
    r.depth = 0;

    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{' || read_object(&r, out) != 0) {
        return -1;
    }
    skip_ws(&r);
    return r.p == r.end ? 0 : -1;
}
