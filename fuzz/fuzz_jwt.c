/*
 * libFuzzer target: the HS256 verifier (lib/src/jwt.c).
 *
 * A random token almost never carries a valid signature, and the verifier
 * parses the payload only after the signature matches, so the first byte of
 * the input picks a mode:
 *  - 0: the rest is a token, verified as it is;
 *  - 1: the rest is "<header JSON>\n<payload JSON>"; both are base64url
 *    encoded and signed here with OpenSSL's own HMAC(), so the fuzzer's JSON
 *    reaches the claim checks; the verifier must never call that signature
 *    bad (a differential check of its prepared-key HMAC);
 *  - 2: the rest gives a sub and an exp for mc_jwt_sign_hs256(), whose token
 *    must verify to the same claims.
 * In every mode a key kept across inputs (its header cache warm from the
 * previous ones) must reach the same verdict as a fresh key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "minichat/jwt.h"

static const uint8_t secret[] = "fuzz-secret-0123456789";
#define SECRET_LEN (sizeof(secret) - 1)
#define NOW 1700000000

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i, o = 0;
    uint32_t v;

    for (i = 0; i + 2 < n; i += 3) {
        v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    if (n - i == 1) {
        v = (uint32_t)in[i] << 16;
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
    } else if (n - i == 2) {
        v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
    }
    return o;
}

/* Verifies with the warm key and a fresh one; they must agree. */
static int verify(mc_jwt_key_t *warm, const char *tok, size_t len, mc_jwt_claims_t *claims, const char **err)
{
    mc_jwt_claims_t c2;
    const char *e2;
    int rc, rc2;

    memset(claims, 0, sizeof(*claims));
    memset(&c2, 0, sizeof(c2));
    rc = mc_jwt_verify(warm, tok, len, NOW, claims, err);
    rc2 = mc_jwt_verify_hs256(tok, len, secret, SECRET_LEN, NOW, &c2, &e2);
    if (rc != rc2 || (rc == 0 && (claims->sub != c2.sub || claims->exp != c2.exp))) {
        abort();
    }
    if (rc != 0 && *err == NULL) {
        abort();
    }
    if (rc == 0 && (claims->sub == 0 || (claims->exp != 0 && claims->exp <= NOW))) {
        abort();
    }
    return rc;
}

static void signed_json(mc_jwt_key_t *warm, const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    mc_jwt_claims_t claims;
    const char *err;
    size_t hl, pl, o;
    char *tok;

    if (nl == NULL || size > 3000) {
        return;
    }
    hl = (size_t)(nl - data);
    pl = size - hl - 1;
    tok = malloc(2 * size + 64);
    if (tok == NULL) {
        abort();
    }
    o = b64url(data, hl, tok);
    tok[o++] = '.';
    o += b64url(nl + 1, pl, tok + o);
    if (HMAC(EVP_sha256(), secret, SECRET_LEN, (const unsigned char *)tok, o, mac, &mac_len) == NULL) {
        abort();
    }
    tok[o++] = '.';
    o += b64url(mac, mac_len, tok + o);
    if (verify(warm, tok, o, &claims, &err) != 0 && strcmp(err, "bad signature") == 0) {
        abort();
    }
    free(tok);
}

static void sign_round_trip(mc_jwt_key_t *warm, const uint8_t *data, size_t size)
{
    mc_jwt_claims_t claims;
    uint64_t sub = 0;
    int64_t exp = 0;
    const char *err;
    char tok[512];
    size_t i;
    int n;

    for (i = 0; i < size && i < 8; i++) {
        sub = (sub << 8) | data[i];
    }
    for (; i < size && i < 16; i++) {
        exp = (int64_t)(((uint64_t)exp << 8) | data[i]);
    }
    n = mc_jwt_sign_hs256(sub, exp, secret, SECRET_LEN, tok, sizeof(tok));
    if (n <= 0) {
        abort();
    }
    if (verify(warm, tok, (size_t)n, &claims, &err) == 0) {
        if (claims.sub != sub || claims.exp != exp) {
            abort();
        }
    } else if (sub != 0 && sub <= INT64_MAX && (exp == 0 || exp > NOW)) {
        abort(); /* a token we signed, with good claims, was refused */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mc_jwt_key_t *warm;
    mc_jwt_claims_t claims;
    const char *err;

    if (warm == NULL) {
        warm = mc_jwt_key_new(secret, SECRET_LEN);
        if (warm == NULL) {
            abort();
        }
    }
    if (size == 0) {
        return 0;
    }
    switch (data[0] % 3) {
    case 0:
        (void)verify(warm, (const char *)data + 1, size - 1, &claims, &err);
        break;
    case 1:
        signed_json(warm, data + 1, size - 1);
        break;
    default:
        sign_round_trip(warm, data + 1, size - 1);
        break;
    }
    return 0;
}
