/*
 * HS256 JWT verification and signing.
 *
 * Verification is strict: three base64url parts without padding, a header
 * whose "alg" is exactly "HS256" (never "none", never another algorithm), a
 * signature compared in constant time, a positive integer "sub", and "exp"
 * and "nbf" honoured when present.  Only after the signature matches is the
 * payload parsed, so an attacker's JSON never reaches the parser unsigned.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "minichat/jwt.h"

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
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
static int read_sub(json_t *v, uint64_t *sub)
{
    const char *s;
    char *end;
    unsigned long long n;

    if (json_is_integer(v)) {
        if (json_integer_value(v) <= 0) {
            return -1;
        }
        *sub = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        s = json_string_value(v);
        if (*s < '1' || *s > '9' || strlen(s) > 19) {
            return -1;
        }
        n = strtoull(s, &end, 10);
        if (*end != '\0' || n == 0) {
            return -1;
        }
        *sub = n;
        return 0;
    }
    return -1;
}

int mc_jwt_verify_hs256(const char *token, size_t len, const uint8_t *secret, size_t secret_len, int64_t now,
                        mc_jwt_claims_t *claims, const char **err)
{
    unsigned char buf[MC_JWT_MAX], mac[EVP_MAX_MD_SIZE];
    const char *dot1, *dot2, *alg;
    unsigned int mac_len = 0;
    json_t *hdr = NULL, *pl = NULL, *v;
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

    n = b64url_decode(token, (size_t)(dot1 - token), buf, sizeof(buf) - 1);
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

    n = b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), buf, sizeof(buf));
    if (n != 32) {
        *err = "bad signature";
        goto err;
    }
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)token, (size_t)(dot2 - token), mac,
             &mac_len) == NULL ||
        mac_len != 32 || CRYPTO_memcmp(mac, buf, 32) != 0) {
        *err = "bad signature";
        goto err;
    }

    n = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, sizeof(buf) - 1);
    if (n <= 0) {
        goto err;
    }
    pl = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(pl)) {
        goto err;
    }
    if (read_sub(json_object_get(pl, "sub"), &claims->sub) != 0) {
        *err = "missing or invalid sub";
        goto err;
    }
    claims->exp = 0;
    v = json_object_get(pl, "exp");
    if (v) {
        if (!json_is_integer(v)) {
            *err = "invalid exp";
            goto err;
        }
        claims->exp = json_integer_value(v);
        if (claims->exp <= now) {
            *err = "expired";
            goto err;
        }
    }
    v = json_object_get(pl, "nbf");
    if (v && (!json_is_integer(v) || json_integer_value(v) > now)) {
        *err = "not yet valid";
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

int mc_jwt_sign_hs256(uint64_t sub, int64_t exp, const uint8_t *secret, size_t secret_len, char *out, size_t out_size)
{
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    char payload[96];
    size_t o, pn;

    if (exp) {
        pn = (size_t)snprintf(payload, sizeof(payload), "{\"sub\":\"%llu\",\"exp\":%lld}", (unsigned long long)sub,
                              (long long)exp);
    } else {
        pn = (size_t)snprintf(payload, sizeof(payload), "{\"sub\":\"%llu\"}", (unsigned long long)sub);
    }
    /* base64 grows 4/3; the signature adds 43 characters and two dots */
    if (out_size < (sizeof(hdr) - 1 + pn) * 4 / 3 + 4 + 2 + 43 + 1) {
        return -1;
    }
    o = b64url_encode((const unsigned char *)hdr, sizeof(hdr) - 1, out);
    out[o++] = '.';
    o += b64url_encode((const unsigned char *)payload, pn, out + o);
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (unsigned char *)out, o, mac, &mac_len) == NULL) {
        return -1;
    }
    out[o++] = '.';
    o += b64url_encode(mac, mac_len, out + o);
    out[o] = '\0';
    return (int)o;
}
