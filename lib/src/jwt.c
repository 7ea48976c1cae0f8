/*
 * HS256 JWT verification and signing.
 *
 * Verification is strict: three base64url parts without padding, a header
 * whose "alg" is exactly "HS256" (never "none", never another algorithm), a
 * signature compared in constant time, a positive integer "sub", an integer
 * "exp" in the future (required), "nbf" honoured when present, and "iss" and
 * "aud" compared with what the key expects (mc_jwt_key_expect).  Only after the signature matches is the
 * payload parsed, so an attacker's JSON never reaches the parser unsigned.
 *
 * HMAC-SHA256 is computed as RFC 2104 defines it, from a prepared key: the
 * SHA-256 states after hashing the key XOR ipad and the key XOR opad are
 * kept, and a MAC copies them and hashes the message and then the inner
 * digest.  OpenSSL's one-shot HMAC() would fetch the algorithm and set the
 * key up again on every call, which cost more than the hashing itself (a
 * REST request through nginx checks one token).
 *
 * The payload is read by lib/src/jwt_claims.c, which accepts exactly what
 * jansson (with JSON_REJECT_DUPLICATES) would and keeps only sub, exp and
 * nbf, with no allocation; the rarely changing header still goes through
 * jansson.
 *
 * An issuer's tokens all carry the same header, so the key also remembers
 * the last header segment that passed the header check: the same bytes
 * again pass it without being decoded and parsed.  The check is a function
 * of those bytes alone, so the result is the same either way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "minichat/jwt.h"
#include "minichat/jwt_claims.h"

#define MC_JWT_BLOCK 64       /* SHA-256's block: HMAC's key size */
#define MC_JWT_HDR_MAX 128    /* the longest header segment remembered */

struct mc_jwt_key_s {
    EVP_MD_CTX *inner; /* SHA-256 after (key XOR ipad) */
    EVP_MD_CTX *outer; /* SHA-256 after (key XOR opad) */
    EVP_MD_CTX *work;
    char hdr[MC_JWT_HDR_MAX]; /* the last header segment that passed */
    size_t hdr_len;
    char *iss; /* expected "iss", or NULL */
    char *aud; /* expected in "aud", or NULL */
};

mc_jwt_key_t *mc_jwt_key_new(const uint8_t *secret, size_t secret_len)
{
    unsigned char k0[MC_JWT_BLOCK], pad[MC_JWT_BLOCK];
    unsigned int n = 0;
    mc_jwt_key_t *key;
    size_t i;

    key = calloc(1, sizeof(*key));
    if (key == NULL) {
        return NULL;
    }
    key->inner = EVP_MD_CTX_new();
    key->outer = EVP_MD_CTX_new();
    key->work = EVP_MD_CTX_new();
    if (key->inner == NULL || key->outer == NULL || key->work == NULL) {
        goto err;
    }

    /* a key longer than a block is replaced by its digest (RFC 2104) */
    memset(k0, 0, sizeof(k0));
    if (secret_len > MC_JWT_BLOCK) {
        if (EVP_Digest(secret, secret_len, k0, &n, EVP_sha256(), NULL) != 1) {
            goto err;
        }
    } else if (secret_len > 0) {
        memcpy(k0, secret, secret_len);
    }

    for (i = 0; i < MC_JWT_BLOCK; i++) {
        pad[i] = k0[i] ^ 0x36;
    }
    if (EVP_DigestInit_ex(key->inner, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(key->inner, pad, sizeof(pad)) != 1) {
        goto err;
    }
    for (i = 0; i < MC_JWT_BLOCK; i++) {
        pad[i] = k0[i] ^ 0x5c;
    }
    if (EVP_DigestInit_ex(key->outer, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(key->outer, pad, sizeof(pad)) != 1) {
        goto err;
    }

    OPENSSL_cleanse(k0, sizeof(k0));
    OPENSSL_cleanse(pad, sizeof(pad));
    return key;

err:
    OPENSSL_cleanse(k0, sizeof(k0));
    OPENSSL_cleanse(pad, sizeof(pad));
    mc_jwt_key_free(key);
    return NULL;
}

int mc_jwt_key_expect(mc_jwt_key_t *key, const char *iss, const char *aud)
{
    char *i = NULL, *a = NULL;

    if ((iss && (i = strdup(iss)) == NULL) || (aud && (a = strdup(aud)) == NULL)) {
        free(i);
        return -1;
    }
    free(key->iss);
    free(key->aud);
    key->iss = i;
    key->aud = a;
    return 0;
}

void mc_jwt_key_free(mc_jwt_key_t *key)
{
    if (key == NULL) {
        return;
    }
    free(key->iss);
    free(key->aud);
    /* EVP_MD_CTX_free wipes the hash states */
    EVP_MD_CTX_free(key->inner);
    EVP_MD_CTX_free(key->outer);
    EVP_MD_CTX_free(key->work);
    free(key);
}

/* HMAC-SHA256 of msg into mac (32 bytes).  Returns 0 or -1. */
static int key_mac(mc_jwt_key_t *key, const void *msg, size_t len, unsigned char *mac)
{
    unsigned char inner[32];
    unsigned int n = 0;

    if (EVP_MD_CTX_copy_ex(key->work, key->inner) != 1 || EVP_DigestUpdate(key->work, msg, len) != 1 ||
        EVP_DigestFinal_ex(key->work, inner, &n) != 1 || n != 32) {
        return -1;
    }
    if (EVP_MD_CTX_copy_ex(key->work, key->outer) != 1 || EVP_DigestUpdate(key->work, inner, n) != 1 ||
        EVP_DigestFinal_ex(key->work, mac, &n) != 1 || n != 32) {
        return -1;
    }
    return 0;
}

/* base64url's alphabet: each letter's value; 0 for every other byte */
static const signed char b64url_values[256] = {
    ['A'] = 0,  ['B'] = 1,  ['C'] = 2,  ['D'] = 3,  ['E'] = 4,  ['F'] = 5,  ['G'] = 6,  ['H'] = 7,  ['I'] = 8,
    ['J'] = 9,  ['K'] = 10, ['L'] = 11, ['M'] = 12, ['N'] = 13, ['O'] = 14, ['P'] = 15, ['Q'] = 16, ['R'] = 17,
    ['S'] = 18, ['T'] = 19, ['U'] = 20, ['V'] = 21, ['W'] = 22, ['X'] = 23, ['Y'] = 24, ['Z'] = 25, ['a'] = 26,
    ['b'] = 27, ['c'] = 28, ['d'] = 29, ['e'] = 30, ['f'] = 31, ['g'] = 32, ['h'] = 33, ['i'] = 34, ['j'] = 35,
    ['k'] = 36, ['l'] = 37, ['m'] = 38, ['n'] = 39, ['o'] = 40, ['p'] = 41, ['q'] = 42, ['r'] = 43, ['s'] = 44,
    ['t'] = 45, ['u'] = 46, ['v'] = 47, ['w'] = 48, ['x'] = 49, ['y'] = 50, ['z'] = 51, ['0'] = 52, ['1'] = 53,
    ['2'] = 54, ['3'] = 55, ['4'] = 56, ['5'] = 57, ['6'] = 58, ['7'] = 59, ['8'] = 60, ['9'] = 61, ['-'] = 62,
    ['_'] = 63,
};

/* Returns c's base64url value, or -1 when c is not in the alphabet. */
static int b64url_value(unsigned char c)
{
    return b64url_values[c] || c == 'A' ? b64url_values[c] : -1;
}

/* Decodes unpadded base64url; returns the decoded length or -1. */
static long b64url_decode(const char *in, size_t n, unsigned char *out, size_t out_size)
{
    uint32_t acc = 0;
    size_t i, o = 0;
    int bits = 0, v;

    if (n % 4 == 1) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        v = b64url_value((unsigned char)in[i]);
        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= out_size) {
                return -1;
            }
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* leftover bits must be zero (canonical encoding) */
    if (bits && (acc & ((1u << bits) - 1))) {
        return -1;
    }
    return (long)o;
}

static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t acc = 0;
    size_t i, o = 0;
    int bits = 0;

    for (i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tbl[(acc >> bits) & 0x3f];
        }
    }
    if (bits) {
        out[o++] = tbl[(acc << (6 - bits)) & 0x3f];
    }
    return o;
}

/* Reads a positive integer user id from a JSON number or decimal string. */
static int read_sub(const mc_claim_t *v, uint64_t *sub)
{
    char *end;
    unsigned long long n;

    if (v->kind == MC_CLAIM_INT) {
        if (v->num <= 0) {
            return -1;
        }
        *sub = (uint64_t)v->num;
        return 0;
    }
    if (v->kind == MC_CLAIM_STRING) {
        if (v->len > 19 || v->str[0] < '1' || v->str[0] > '9') {
            return -1;
        }
        n = strtoull(v->str, &end, 10);
        if (*end != '\0' || n == 0) {
            return -1;
        }
        *sub = n;
        return 0;
    }
    return -1;
}

/* Checks "aud" (a string, or an array of strings) against want.  Returns 0
 * when want is one of its values, else -1 with *err set. */
static int check_aud(json_t *v, const char *want, const char **err)
{
    size_t i;

    if (v == NULL) {
        *err = "missing aud";
        return -1;
    }
    if (json_is_string(v)) {
        if (strcmp(json_string_value(v), want) == 0) {
            return 0;
        }
        *err = "wrong aud";
        return -1;
    }
    if (!json_is_array(v)) {
        *err = "invalid aud";
        return -1;
    }
    for (i = 0; i < json_array_size(v); i++) {
        if (!json_is_string(json_array_get(v, i))) {
            *err = "invalid aud";
            return -1;
        }
    }
    for (i = 0; i < json_array_size(v); i++) {
        if (strcmp(json_string_value(json_array_get(v, i)), want) == 0) {
            return 0;
        }
    }
    *err = "wrong aud";
    return -1;
}

int mc_jwt_verify(mc_jwt_key_t *key, const char *token, size_t len, int64_t now, mc_jwt_claims_t *claims,
                  const char **err)
{
    unsigned char buf[MC_JWT_MAX], mac[32];
    char scratch[MC_JWT_MAX];
    const char *dot1, *dot2, *alg;
    mc_jwt_claims_raw_t raw;
    json_t *hdr = NULL, *pl = NULL, *v;
    size_t hlen;
    long n;

    *err = "malformed token";
    if (len == 0 || len >= MC_JWT_MAX) {
        return -1;
    }
    dot1 = memchr(token, '.', len);
    if (dot1 == NULL) {
        return -1;
    }
    dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token))) {
        return -1;
    }

    hlen = (size_t)(dot1 - token);
    if (hlen == 0 || hlen != key->hdr_len || memcmp(token, key->hdr, hlen) != 0) {
        n = b64url_decode(token, hlen, buf, sizeof(buf) - 1);
        if (n <= 0) {
            return -1;
        }
        hdr = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(hdr)) {
            goto err;
        }
        alg = json_string_value(json_object_get(hdr, "alg"));
        if (alg == NULL || strcmp(alg, "HS256") != 0) {
            *err = "unsupported algorithm";
            goto err;
        }
        if (hlen <= sizeof(key->hdr)) {
            memcpy(key->hdr, token, hlen);
            key->hdr_len = hlen;
        }
    }

    n = b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), buf, sizeof(buf));
    if (n != 32) {
        *err = "bad signature";
        goto err;
    }
    if (key_mac(key, token, (size_t)(dot2 - token), mac) != 0 || CRYPTO_memcmp(mac, buf, 32) != 0) {
        *err = "bad signature";
        goto err;
    }

    n = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, sizeof(buf) - 1);
    if (n <= 0) {
        goto err;
    }
    if (mc_jwt_claims_read(buf, (size_t)n, &raw, scratch, sizeof(scratch)) != 0) {
        goto err;
    }
    if (read_sub(&raw.sub, &claims->sub) != 0) {
        *err = "missing or invalid sub";
        goto err;
    }
    if (raw.exp.kind == MC_CLAIM_ABSENT) {
        *err = "missing exp";
        goto err;
    }
    if (raw.exp.kind != MC_CLAIM_INT) {
        *err = "invalid exp";
        goto err;
    }
    claims->exp = raw.exp.num;
    if (claims->exp <= now) {
        *err = "expired";
        goto err;
    }
    if (raw.nbf.kind != MC_CLAIM_ABSENT && (raw.nbf.kind != MC_CLAIM_INT || raw.nbf.num > now)) {
        *err = "not yet valid";
        goto err;
    }
    if (key->iss || key->aud) {
        /* iss and aud are checked only when configured: the payload is
         * parsed once more, into a tree, for them */
        pl = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(pl)) {
            goto err;
        }
    }
    if (key->iss) {
        v = json_object_get(pl, "iss");
        if (v == NULL) {
            *err = "missing iss";
            goto err;
        }
        if (!json_is_string(v) || strcmp(json_string_value(v), key->iss) != 0) {
            *err = "wrong iss";
            goto err;
        }
    }
    if (key->aud && check_aud(json_object_get(pl, "aud"), key->aud, err) != 0) {
        goto err;
    }

    json_decref(hdr);
    json_decref(pl);
    *err = NULL;
    return 0;

err:
    json_decref(hdr);
    json_decref(pl);
    return -1;
}

int mc_jwt_verify_hs256(const char *token, size_t len, const uint8_t *secret, size_t secret_len, int64_t now,
                        mc_jwt_claims_t *claims, const char **err)
{
    mc_jwt_key_t *key;
    int rc;

    key = mc_jwt_key_new(secret, secret_len);
    if (key == NULL) {
        *err = "out of memory";
        return -1;
    }
    rc = mc_jwt_verify(key, token, len, now, claims, err);
    mc_jwt_key_free(key);
    return rc;
}

int mc_jwt_sign_hs256(uint64_t sub, int64_t exp, const uint8_t *secret, size_t secret_len, char *out, size_t out_size)
{
    return mc_jwt_sign_claims_hs256(sub, exp, NULL, NULL, secret, secret_len, out, out_size);
}

/* Appends ,"name":<value as a JSON string> to payload at *pn.  Returns 0,
 * or -1 when it does not fit. */
static int append_claim(char *payload, size_t size, size_t *pn, const char *name, const char *value)
{
    json_t *s;
    char *enc;
    int n;

    s = json_string(value);
    enc = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    json_decref(s);
    if (enc == NULL) {
        return -1;
    }
    n = snprintf(payload + *pn, size - *pn, ",\"%s\":%s", name, enc);
    free(enc);
    if (n < 0 || (size_t)n >= size - *pn) {
        return -1;
    }
    *pn += (size_t)n;
    return 0;
}

int mc_jwt_sign_claims_hs256(uint64_t sub, int64_t exp, const char *iss, const char *aud, const uint8_t *secret,
                             size_t secret_len, char *out, size_t out_size)
{
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    unsigned char mac[32];
    mc_jwt_key_t *key;
    char payload[1024];
    size_t o, pn;

    if (exp) {
        pn = (size_t)snprintf(payload, sizeof(payload), "{\"sub\":\"%llu\",\"exp\":%lld", (unsigned long long)sub,
                              (long long)exp);
    } else {
        pn = (size_t)snprintf(payload, sizeof(payload), "{\"sub\":\"%llu\"", (unsigned long long)sub);
    }
    if ((iss && append_claim(payload, sizeof(payload) - 1, &pn, "iss", iss) != 0) ||
        (aud && append_claim(payload, sizeof(payload) - 1, &pn, "aud", aud) != 0)) {
        return -1;
    }
    payload[pn++] = '}';
    /* base64 grows 4/3; the signature adds 43 characters and two dots */
    if (out_size < (sizeof(hdr) - 1 + pn) * 4 / 3 + 4 + 2 + 43 + 1) {
        return -1;
    }
    o = b64url_encode((const unsigned char *)hdr, sizeof(hdr) - 1, out);
    out[o++] = '.';
    o += b64url_encode((const unsigned char *)payload, pn, out + o);
    key = mc_jwt_key_new(secret, secret_len);
    if (key == NULL || key_mac(key, out, o, mac) != 0) {
        mc_jwt_key_free(key);
        return -1;
    }
    mc_jwt_key_free(key);
    out[o++] = '.';
    o += b64url_encode(mac, sizeof(mac), out + o);
    out[o] = '\0';
    return (int)o;
}
