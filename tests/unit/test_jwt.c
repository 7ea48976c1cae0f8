/*
 * Unit tests for HS256 JWT signing and verification (lib/src/jwt.c).
 *
 * Hand-made tokens are built here with OpenSSL's HMAC and a base64url encoder
 * of the test's own, independent of jwt.c; the encoder is itself checked
 * against vectors computed with Python's hmac/base64 modules.
 *
 * Every verification of the test secret runs twice: with a key made for the
 * call (mc_jwt_verify_hs256) and with one key kept across the test's calls
 * (mc_jwt_verify, as nginx does), which must agree, so the key's remembered
 * header never changes an answer.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "minichat/jwt.h"

#define SECRET "minichat-test-secret"
#define NOW ((int64_t)1700000000)

static const uint8_t *secret = (const uint8_t *)SECRET;
static const size_t secret_len = sizeof(SECRET) - 1;

/* Computed with python3:
 *   si = b64url('{"alg":"HS256","typ":"JWT"}') + '.' + b64url(payload)
 *   tok = si + '.' + b64url(hmac.new(b"minichat-test-secret", si, sha256).digest())
 */
static const char KNOWN_12345[] = /* payload {"sub":"12345","exp":4102444800} */
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NSIsImV4cCI6NDEwMjQ0NDgwMH0."
    "bdLJxkv0AF7z7A7Iq-hVXlTb2LUyfti5SLd6KYeHcHs";
static const char KNOWN_42[] = /* payload {"sub":"42","exp":4102444800} */
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImV4cCI6NDEwMjQ0NDgwMH0."
    "sJyeQzk_Dj_nU-Hf6mjDi7yVBvrqfbYNSMGj6JH8oss";
static const char KNOWN_777_NUM[] = /* payload {"sub":777,"nbf":1600000000,"exp":4102444800} */
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOjc3NywibmJmIjoxNjAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9."
    "2MQym7AzuNYe8XmVYmFUlWcghV3rxU32HYrw2Zwq6V0";
/* the exp claim of hand-made tokens that must verify (2100-01-01) */
#define EXP ",\"exp\":4102444800"

static const char KNOWN_PADDED[] = /* payload {"sub":"5"} encoded WITH '=' padding, validly signed */
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI1In0=.ldZ-jfRaz8tcmKWvzdoMv1k-A-43BXHpYf9SrxuhdfE";

static const char HS256_HDR[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* ---- helpers ------------------------------------------------------------- */

static size_t t_b64url(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        out[o++] = tbl[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
        out[o++] = tbl[in[i + 2] & 63];
    }
    if (n - i == 1) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[(in[i] & 3) << 4];
    } else if (n - i == 2) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        out[o++] = tbl[(in[i + 1] & 15) << 2];
    }
    out[o] = '\0';
    return o;
}

/* Builds b64url(hdr).b64url(payload).b64url(HMAC-SHA256(key, ...)) into a
 * static buffer. */
static const char *make_token_k(const char *hdr, const char *payload, const void *key, size_t key_len)
{
    static char tok[MC_JWT_MAX * 2];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t o;

    ck_assert_uint_lt((strlen(hdr) + strlen(payload)) * 4 / 3 + 60, sizeof(tok));
    o = t_b64url((const unsigned char *)hdr, strlen(hdr), tok);
    tok[o++] = '.';
    o += t_b64url((const unsigned char *)payload, strlen(payload), tok + o);
    ck_assert_ptr_nonnull(HMAC(EVP_sha256(), key, (int)key_len, (unsigned char *)tok, o, mac, &mac_len));
    ck_assert_uint_eq(mac_len, 32);
    tok[o++] = '.';
    t_b64url(mac, mac_len, tok + o);
    return tok;
}

static const char *make_token(const char *hdr, const char *payload)
{
    return make_token_k(hdr, payload, secret, secret_len);
}

/* The test secret's key kept across one test's verifications. */
static mc_jwt_key_t *kept_key(void)
{
    static mc_jwt_key_t *key;

    if (key == NULL) {
        key = mc_jwt_key_new(secret, secret_len);
        ck_assert_ptr_nonnull(key);
    }
    return key;
}

/* Verifies tok with the test secret at NOW; returns the error string, or
 * NULL on success (claims filled). */
static const char *verify_at(const char *tok, int64_t now, mc_jwt_claims_t *claims)
{
    const char *err = "untouched", *kerr = "untouched";
    mc_jwt_claims_t c, kc;
    int rc, krc;

    memset(&c, 0, sizeof(c));
    memset(&kc, 0, sizeof(kc));
    rc = mc_jwt_verify_hs256(tok, strlen(tok), secret, secret_len, now, &c, &err);
    krc = mc_jwt_verify(kept_key(), tok, strlen(tok), now, &kc, &kerr);
    ck_assert_int_eq(krc, rc);
    if (rc == 0) {
        ck_assert_ptr_null(kerr);
        ck_assert_uint_eq(kc.sub, c.sub);
        ck_assert_int_eq(kc.exp, c.exp);
    } else {
        ck_assert_str_eq(kerr, err);
    }
    if (claims) {
        *claims = c;
    }
    if (rc == 0) {
        ck_assert_ptr_null(err);
        return NULL;
    }
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_nonnull(err);
    return err;
}

static const char *verify(const char *tok)
{
    return verify_at(tok, NOW, NULL);
}

#define ck_assert_verify_err(tok, want)                                                                              \
    do {                                                                                                             \
        const char *e_ = verify(tok);                                                                                \
        ck_assert_msg(e_ != NULL, "token accepted, expected \"%s\"", (want));                                       \
        ck_assert_str_eq(e_, (want));                                                                                \
    } while (0)

/* ---- known vectors ------------------------------------------------------- */

START_TEST(test_helper_matches_python)
{
    ck_assert_str_eq(make_token(HS256_HDR, "{\"sub\":\"12345\",\"exp\":4102444800}"), KNOWN_12345);
    ck_assert_str_eq(make_token(HS256_HDR, "{\"sub\":\"42\"" EXP "}"), KNOWN_42);
    ck_assert_str_eq(make_token(HS256_HDR, "{\"sub\":777,\"nbf\":1600000000" EXP "}"), KNOWN_777_NUM);
}
END_TEST

START_TEST(test_known_vector_verifies)
{
    mc_jwt_claims_t c;

    memset(&c, 0xee, sizeof(c));
    ck_assert_ptr_null(verify_at(KNOWN_12345, NOW, &c));
    ck_assert_uint_eq(c.sub, 12345);
    ck_assert_int_eq(c.exp, 4102444800LL);

    memset(&c, 0xee, sizeof(c));
    ck_assert_ptr_null(verify_at(KNOWN_42, NOW, &c));
    ck_assert_uint_eq(c.sub, 42);
    ck_assert_int_eq(c.exp, 4102444800LL);
}
END_TEST

START_TEST(test_known_vector_sub_number)
{
    mc_jwt_claims_t c;

    memset(&c, 0, sizeof(c));
    ck_assert_ptr_null(verify_at(KNOWN_777_NUM, NOW, &c));
    ck_assert_uint_eq(c.sub, 777);
    ck_assert_int_eq(c.exp, 4102444800LL);
    /* before its nbf the same token is not yet valid */
    ck_assert_str_eq(verify_at(KNOWN_777_NUM, 1599999999, NULL), "not yet valid");
    ck_assert_ptr_null(verify_at(KNOWN_777_NUM, 1600000000, NULL)); /* nbf == now is fine */
}
END_TEST

START_TEST(test_sign_matches_known_vector)
{
    char out[512];
    int n;

    n = mc_jwt_sign_hs256(12345, 4102444800LL, secret, secret_len, out, sizeof(out));
    ck_assert_int_eq(n, (int)strlen(KNOWN_12345));
    ck_assert_str_eq(out, KNOWN_12345);

    n = mc_jwt_sign_hs256(42, 4102444800LL, secret, secret_len, out, sizeof(out));
    ck_assert_int_eq(n, (int)strlen(KNOWN_42));
    ck_assert_str_eq(out, KNOWN_42);
}
END_TEST

/* ---- round trip ---------------------------------------------------------- */

START_TEST(test_round_trip)
{
    static const uint64_t subs[] = {1, 2, 42, 1000000, 4294967296ull, 9223372036854775807ull,
                                    9999999999999999999ull};
    char out[512];
    size_t i;

    for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        mc_jwt_claims_t c;
        const char *err = "untouched";
        int n = mc_jwt_sign_hs256(subs[i], NOW + 3600, secret, secret_len, out, sizeof(out));

        ck_assert_int_gt(n, 0);
        ck_assert_uint_eq(strlen(out), (size_t)n);
        memset(&c, 0, sizeof(c));
        ck_assert_int_eq(mc_jwt_verify_hs256(out, (size_t)n, secret, secret_len, NOW, &c, &err), 0);
        ck_assert_ptr_null(err);
        ck_assert_uint_eq(c.sub, subs[i]);
        ck_assert_int_eq(c.exp, NOW + 3600);
    }
    /* without exp: refused, however early (exp is required) */
    {
        int n = mc_jwt_sign_hs256(7, 0, secret, secret_len, out, sizeof(out));

        ck_assert_int_gt(n, 0);
        ck_assert_str_eq(verify_at(out, 0, NULL), "missing exp");
    }
}
END_TEST

START_TEST(test_verify_uses_len_not_nul)
{
    /* a token followed by junk in the buffer: only len bytes are looked at */
    char buf[512];
    const char *err = NULL;
    mc_jwt_claims_t c;

    snprintf(buf, sizeof(buf), "%s.garbage", KNOWN_42);
    ck_assert_int_eq(mc_jwt_verify_hs256(buf, strlen(KNOWN_42), secret, secret_len, NOW, &c, &err), 0);
    ck_assert_uint_eq(c.sub, 42);
    ck_assert_int_eq(mc_jwt_verify_hs256(buf, strlen(buf), secret, secret_len, NOW, &c, &err), -1);
    ck_assert_str_eq(err, "malformed token");
}
END_TEST

/* ---- signature ----------------------------------------------------------- */

START_TEST(test_wrong_secret)
{
    const char *err = NULL;
    mc_jwt_claims_t c;

    ck_assert_int_eq(mc_jwt_verify_hs256(KNOWN_42, strlen(KNOWN_42), (const uint8_t *)"other-secret", 12, NOW, &c,
                                         &err),
                     -1);
    ck_assert_str_eq(err, "bad signature");
    /* a prefix of the right secret is still the wrong secret */
    ck_assert_int_eq(mc_jwt_verify_hs256(KNOWN_42, strlen(KNOWN_42), secret, secret_len - 1, NOW, &c, &err), -1);
    ck_assert_str_eq(err, "bad signature");
    /* empty secret */
    ck_assert_int_eq(mc_jwt_verify_hs256(KNOWN_42, strlen(KNOWN_42), (const uint8_t *)"", 0, NOW, &c, &err), -1);
    ck_assert_str_eq(err, "bad signature");
}
END_TEST

START_TEST(test_secret_len_honoured)
{
    /* secrets are bytes: an embedded NUL counts */
    static const uint8_t k[] = {'a', 'b', 0, 'c'};
    char out[512];
    const char *err = NULL;
    mc_jwt_claims_t c;
    int n = mc_jwt_sign_hs256(9, 4102444800LL, k, sizeof(k), out, sizeof(out));

    ck_assert_int_gt(n, 0);
    ck_assert_str_eq(out, make_token_k(HS256_HDR, "{\"sub\":\"9\"" EXP "}", k, sizeof(k)));
    ck_assert_int_eq(mc_jwt_verify_hs256(out, (size_t)n, k, sizeof(k), NOW, &c, &err), 0);
    ck_assert_uint_eq(c.sub, 9);
    ck_assert_int_eq(mc_jwt_verify_hs256(out, (size_t)n, k, 2, NOW, &c, &err), -1);
    ck_assert_str_eq(err, "bad signature");
}
END_TEST

START_TEST(test_kept_key_header_changes)
{
    static const char hdr_typ_first[] = "{\"typ\":\"JWT\",\"alg\":\"HS256\"}";
    char tok[512];

    /* a header remembered from a good token lets no other header through */
    ck_assert_ptr_null(verify(KNOWN_42));
    ck_assert_verify_err(make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"1\"}"),
                         "unsupported algorithm");
    /* as long as the remembered one, and equal but for a character */
    ck_assert_verify_err(make_token("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", "{\"sub\":\"1\"}"),
                         "unsupported algorithm");
    ck_assert_verify_err(make_token("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", "{\"sub\":\"1\"}"),
                         "malformed token");
    ck_assert_ptr_null(verify(make_token(hdr_typ_first, "{\"sub\":\"3\"" EXP "}")));
    /* the remembered header says nothing of the signature */
    strcpy(tok, KNOWN_42);
    tok[strlen(tok) - 2] = tok[strlen(tok) - 2] == 'A' ? 'B' : 'A';
    ck_assert_verify_err(tok, "bad signature");
    ck_assert_verify_err(tok, "bad signature");
    ck_assert_ptr_null(verify(KNOWN_42));
    ck_assert_ptr_null(verify(KNOWN_42));
}
END_TEST

START_TEST(test_kept_key_long_header)
{
    char hdr[256];

    /* a header segment longer than the key remembers is checked each time */
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS256\",\"kid\":\"%0120d\"}", 7);
    ck_assert_ptr_null(verify(make_token(hdr, "{\"sub\":\"1\"" EXP "}")));
    ck_assert_ptr_null(verify(make_token(hdr, "{\"sub\":\"2\"" EXP "}")));
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS384\",\"kid\":\"%0120d\"}", 7);
    ck_assert_verify_err(make_token(hdr, "{\"sub\":\"1\"}"), "unsupported algorithm");
}
END_TEST

START_TEST(test_key_lengths)
{
    /* keys up to a block are padded, longer ones hashed first (RFC 2104):
     * each must give what OpenSSL's HMAC() gives */
    static const size_t lens[] = {1, 31, 32, 63, 64, 65, 100, 200};
    uint8_t k[200];
    char out[512];
    const char *err = NULL;
    mc_jwt_claims_t c;
    mc_jwt_key_t *key;
    size_t i;
    int n;

    for (i = 0; i < sizeof(k); i++) {
        k[i] = (uint8_t)(i * 7 + 1);
    }
    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        n = mc_jwt_sign_hs256(11, 4102444800LL, k, lens[i], out, sizeof(out));
        ck_assert_int_gt(n, 0);
        ck_assert_str_eq(out, make_token_k(HS256_HDR, "{\"sub\":\"11\"" EXP "}", k, lens[i]));
        key = mc_jwt_key_new(k, lens[i]);
        ck_assert_ptr_nonnull(key);
        ck_assert_int_eq(mc_jwt_verify(key, out, (size_t)n, NOW, &c, &err), 0);
        ck_assert_uint_eq(c.sub, 11);
        mc_jwt_key_free(key);
        key = mc_jwt_key_new(k, lens[i] - 1);
        ck_assert_ptr_nonnull(key);
        ck_assert_int_eq(mc_jwt_verify(key, out, (size_t)n, NOW, &c, &err), -1);
        ck_assert_str_eq(err, "bad signature");
        mc_jwt_key_free(key);
    }
    mc_jwt_key_free(NULL);
}
END_TEST

START_TEST(test_tampered_payload)
{
    char tok[512], *p;
    const char *forged;

    /* change one character of the payload part */
    strcpy(tok, KNOWN_12345);
    p = strchr(tok, '.') + 1;
    p[3] = (p[3] == 'A') ? 'B' : 'A';
    ck_assert_verify_err(tok, "bad signature");

    /* swap in another (well-formed) payload, keeping the old signature */
    forged = make_token(HS256_HDR, "{\"sub\":\"1\"}");
    {
        char sig[64], *dot2;

        strcpy(sig, strrchr(KNOWN_42, '.'));
        strcpy(tok, forged);
        dot2 = strrchr(tok, '.');
        strcpy(dot2, sig);
    }
    ck_assert_verify_err(tok, "bad signature");

    /* tampered signature */
    strcpy(tok, KNOWN_42);
    p = strrchr(tok, '.') + 1;
    p[0] = (p[0] == 'A') ? 'B' : 'A';
    ck_assert_verify_err(tok, "bad signature");

    /* truncated and empty signatures */
    strcpy(tok, KNOWN_42);
    tok[strlen(tok) - 1] = '\0';
    ck_assert_verify_err(tok, "bad signature");
    strcpy(tok, KNOWN_42);
    strrchr(tok, '.')[1] = '\0';
    ck_assert_verify_err(tok, "bad signature");
}
END_TEST

/* ---- time claims --------------------------------------------------------- */

START_TEST(test_expired)
{
    char out[512];

    ck_assert_int_gt(mc_jwt_sign_hs256(5, NOW - 1, secret, secret_len, out, sizeof(out)), 0);
    ck_assert_verify_err(out, "expired");
    /* exp == now is already expired; exp == now + 1 is not */
    ck_assert_int_gt(mc_jwt_sign_hs256(5, NOW, secret, secret_len, out, sizeof(out)), 0);
    ck_assert_verify_err(out, "expired");
    ck_assert_int_gt(mc_jwt_sign_hs256(5, NOW + 1, secret, secret_len, out, sizeof(out)), 0);
    ck_assert_ptr_null(verify(out));
    /* the known vector expires in 2100 */
    ck_assert_str_eq(verify_at(KNOWN_12345, 4102444800LL, NULL), "expired");
    ck_assert_ptr_null(verify_at(KNOWN_12345, 4102444799LL, NULL));
}
END_TEST

START_TEST(test_exp_not_integer)
{
    ck_assert_verify_err(make_token(HS256_HDR, "{\"sub\":\"1\",\"exp\":\"4102444800\"}"), "invalid exp");
    ck_assert_verify_err(make_token(HS256_HDR, "{\"sub\":\"1\",\"exp\":4102444800.5}"), "invalid exp");
    ck_assert_verify_err(make_token(HS256_HDR, "{\"sub\":\"1\",\"exp\":null}"), "invalid exp");
}
END_TEST

START_TEST(test_nbf)
{
    char p[128];

    snprintf(p, sizeof(p), "{\"sub\":\"3\",\"nbf\":%lld" EXP "}", (long long)NOW + 60);
    ck_assert_verify_err(make_token(HS256_HDR, p), "not yet valid");
    snprintf(p, sizeof(p), "{\"sub\":\"3\",\"nbf\":%lld" EXP "}", (long long)NOW + 1);
    ck_assert_verify_err(make_token(HS256_HDR, p), "not yet valid");
    snprintf(p, sizeof(p), "{\"sub\":\"3\",\"nbf\":%lld" EXP "}", (long long)NOW);
    ck_assert_ptr_null(verify(make_token(HS256_HDR, p)));
    snprintf(p, sizeof(p), "{\"sub\":\"3\",\"nbf\":%lld,\"exp\":%lld}", (long long)NOW - 60, (long long)NOW + 60);
    ck_assert_ptr_null(verify(make_token(HS256_HDR, p)));
    ck_assert_verify_err(make_token(HS256_HDR, "{\"sub\":\"3\",\"nbf\":\"0\"" EXP "}"), "not yet valid");
}
END_TEST

/* ---- required exp, expected iss and aud ---------------------------------- */

START_TEST(test_exp_required)
{
    ck_assert_verify_err(make_token(HS256_HDR, "{\"sub\":\"1\"}"), "missing exp");
    ck_assert_verify_err(make_token(HS256_HDR, "{\"sub\":\"1\",\"nbf\":0}"), "missing exp");
    /* the signature is checked first: a forged exp-less token is a bad signature */
    ck_assert_verify_err(make_token_k(HS256_HDR, "{\"sub\":\"1\"}", "other", 5), "bad signature");
}
END_TEST

/* Verifies tok with a key expecting iss and aud; the error or NULL. */
static const char *verify_expecting(const char *tok, const char *iss, const char *aud)
{
    const char *err = "untouched";
    mc_jwt_claims_t c;
    mc_jwt_key_t *key;
    int rc;

    key = mc_jwt_key_new(secret, secret_len);
    ck_assert_ptr_nonnull(key);
    ck_assert_int_eq(mc_jwt_key_expect(key, iss, aud), 0);
    rc = mc_jwt_verify(key, tok, strlen(tok), NOW, &c, &err);
    mc_jwt_key_free(key);
    ck_assert_int_eq(rc == 0, err == NULL);
    return err;
}

START_TEST(test_iss)
{
    const char *good = make_token(HS256_HDR, "{\"sub\":\"1\",\"iss\":\"https://auth.example\"" EXP "}");

    ck_assert_ptr_null(verify_expecting(good, "https://auth.example", NULL));
    ck_assert_str_eq(verify_expecting(good, "https://auth.example/", NULL), "wrong iss");
    ck_assert_str_eq(verify_expecting(good, "https://AUTH.example", NULL), "wrong iss");
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\"" EXP "}"), "a", NULL), "missing iss");
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\",\"iss\":7" EXP "}"), "7", NULL),
                     "wrong iss");
    /* not expected: any iss, or none, passes */
    ck_assert_ptr_null(verify_expecting(good, NULL, NULL));
}
END_TEST

START_TEST(test_aud)
{
    ck_assert_ptr_null(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\",\"aud\":\"chat\"" EXP "}"), NULL,
                                        "chat"));
    ck_assert_ptr_null(verify_expecting(
        make_token(HS256_HDR, "{\"sub\":\"1\",\"aud\":[\"mail\",\"chat\"]" EXP "}"), NULL, "chat"));
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\",\"aud\":\"mail\"" EXP "}"), NULL,
                                      "chat"),
                     "wrong aud");
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\",\"aud\":[\"mail\"]" EXP "}"), NULL,
                                      "chat"),
                     "wrong aud");
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\",\"aud\":[]" EXP "}"), NULL, "chat"),
                     "wrong aud");
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\"" EXP "}"), NULL, "chat"),
                     "missing aud");
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\",\"aud\":[\"chat\",1]" EXP "}"), NULL,
                                      "chat"),
                     "invalid aud");
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\",\"aud\":{\"a\":1}" EXP "}"), NULL,
                                      "chat"),
                     "invalid aud");
    /* a prefix is not a match */
    ck_assert_str_eq(verify_expecting(make_token(HS256_HDR, "{\"sub\":\"1\",\"aud\":\"cha\"" EXP "}"), NULL,
                                      "chat"),
                     "wrong aud");
}
END_TEST

START_TEST(test_sign_claims)
{
    char out[1024];
    const char *err = "untouched";
    mc_jwt_claims_t c;
    mc_jwt_key_t *key;
    int n;

    n = mc_jwt_sign_claims_hs256(5, NOW + 60, "iss \"quoted\"", "chat", secret, secret_len, out, sizeof(out));
    ck_assert_int_gt(n, 0);
    ck_assert_str_eq(out, make_token(HS256_HDR, "{\"sub\":\"5\",\"exp\":1700000060,\"iss\":\"iss \\\"quoted\\\"\","
                                                "\"aud\":\"chat\"}"));
    key = mc_jwt_key_new(secret, secret_len);
    ck_assert_ptr_nonnull(key);
    ck_assert_int_eq(mc_jwt_key_expect(key, "iss \"quoted\"", "chat"), 0);
    ck_assert_int_eq(mc_jwt_verify(key, out, (size_t)n, NOW, &c, &err), 0);
    ck_assert_uint_eq(c.sub, 5);
    /* expectations can be replaced and dropped */
    ck_assert_int_eq(mc_jwt_key_expect(key, "other", NULL), 0);
    ck_assert_int_eq(mc_jwt_verify(key, out, (size_t)n, NOW, &c, &err), -1);
    ck_assert_str_eq(err, "wrong iss");
    ck_assert_int_eq(mc_jwt_key_expect(key, NULL, NULL), 0);
    ck_assert_int_eq(mc_jwt_verify(key, out, (size_t)n, NOW, &c, &err), 0);
    mc_jwt_key_free(key);
    /* a claim that cannot fit is refused, not cut */
    {
        char big[1100];

        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        ck_assert_int_eq(mc_jwt_sign_claims_hs256(5, NOW, big, NULL, secret, secret_len, out, sizeof(out)), -1);
    }
}
END_TEST

/* ---- algorithm ----------------------------------------------------------- */

START_TEST(test_unsupported_alg)
{
    ck_assert_verify_err(make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"1\"}"), "unsupported algorithm");
    ck_assert_verify_err(make_token("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", "{\"sub\":\"1\"}"),
                         "unsupported algorithm");
    ck_assert_verify_err(make_token("{\"alg\":\"hs256\"}", "{\"sub\":\"1\"}"), "unsupported algorithm");
    ck_assert_verify_err(make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"1\"}"), "unsupported algorithm");
    ck_assert_verify_err(make_token("{\"typ\":\"JWT\"}", "{\"sub\":\"1\"}"), "unsupported algorithm");
    ck_assert_verify_err(make_token("{\"alg\":256}", "{\"sub\":\"1\"}"), "unsupported algorithm");
    /* the classic "alg":"none" with an empty signature */
    {
        char tok[256];
        size_t o = t_b64url((const unsigned char *)"{\"alg\":\"none\"}", 14, tok);

        tok[o++] = '.';
        o += t_b64url((const unsigned char *)"{\"sub\":\"1\"}", 11, tok + o);
        tok[o++] = '.';
        tok[o] = '\0';
        ck_assert_verify_err(tok, "unsupported algorithm");
    }
    /* a minimal header with only alg is fine */
    ck_assert_ptr_null(verify(make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"1\"" EXP "}")));
}
END_TEST

/* ---- malformed ----------------------------------------------------------- */

START_TEST(test_malformed_structure)
{
    char tok[256];
    const char *err = "untouched";
    mc_jwt_claims_t c;

    /* empty */
    ck_assert_int_eq(mc_jwt_verify_hs256("", 0, secret, secret_len, NOW, &c, &err), -1);
    ck_assert_str_eq(err, "malformed token");
    /* no dot, one dot */
    ck_assert_verify_err("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", "malformed token");
    ck_assert_verify_err("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiJ9", "malformed token");
    ck_assert_verify_err(".", "malformed token");
    ck_assert_verify_err("..", "malformed token");
    ck_assert_verify_err("...", "malformed token");
    /* empty header part */
    ck_assert_verify_err(strchr(KNOWN_42, '.'), "malformed token");
    /* extra dot / fourth part */
    snprintf(tok, sizeof(tok), "%s.", KNOWN_42);
    ck_assert_verify_err(tok, "malformed token");
    snprintf(tok, sizeof(tok), "%s.AAAA", KNOWN_42);
    ck_assert_verify_err(tok, "malformed token");
    snprintf(tok, sizeof(tok), ".%s", KNOWN_42);
    ck_assert_verify_err(tok, "malformed token");
    /* header that is not JSON, or not an object */
    ck_assert_verify_err(make_token("not json", "{\"sub\":\"1\"}"), "malformed token");
    ck_assert_verify_err(make_token("[\"alg\",\"HS256\"]", "{\"sub\":\"1\"}"), "malformed token");
    ck_assert_verify_err(make_token("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", "{\"sub\":\"1\"}"), "malformed token");
}
END_TEST

START_TEST(test_malformed_base64)
{
    char tok[256];

    /* non-base64url characters in the header */
    strcpy(tok, KNOWN_42);
    tok[2] = '!';
    ck_assert_verify_err(tok, "malformed token");
    strcpy(tok, KNOWN_42);
    tok[2] = '+'; /* standard base64, not base64url */
    ck_assert_verify_err(tok, "malformed token");
    strcpy(tok, KNOWN_42);
    tok[2] = '/';
    ck_assert_verify_err(tok, "malformed token");
    strcpy(tok, KNOWN_42);
    tok[2] = ' ';
    ck_assert_verify_err(tok, "malformed token");

    /* '=' padding on the header */
    snprintf(tok, sizeof(tok), "eyJhbGciOiJIUzI1NiJ9==%s", strchr(KNOWN_42, '.'));
    ck_assert_verify_err(tok, "malformed token");
    /* the same header without padding is well-formed (fails on signature) */
    snprintf(tok, sizeof(tok), "eyJhbGciOiJIUzI1NiJ9%s", strchr(KNOWN_42, '.'));
    ck_assert_verify_err(tok, "bad signature");

    /* a validly signed token whose payload carries '=' padding */
    ck_assert_verify_err(KNOWN_PADDED, "malformed token");

    /* a validly signed token whose payload has a non-base64url character */
    {
        char si[128], full[256];
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int ml = 0;
        size_t o;

        snprintf(si, sizeof(si), "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI1In0*");
        ck_assert_ptr_nonnull(HMAC(EVP_sha256(), secret, (int)secret_len, (unsigned char *)si, strlen(si), mac, &ml));
        o = (size_t)snprintf(full, sizeof(full), "%s.", si);
        t_b64url(mac, ml, full + o);
        ck_assert_verify_err(full, "malformed token");
    }

    /* header length of 4k+1 characters can't be base64 */
    snprintf(tok, sizeof(tok), "eyJhbGciOiJIUzI1NiJ9A%s", strchr(KNOWN_42, '.'));
    ck_assert_verify_err(tok, "malformed token");
}
END_TEST

START_TEST(test_malformed_too_long)
{
    /* MC_JWT_MAX bytes or more are refused before anything else */
    char *tok = malloc(MC_JWT_MAX + 2);
    const char *err = NULL;
    mc_jwt_claims_t c;
    size_t l = strlen(KNOWN_42);

    ck_assert_ptr_nonnull(tok);
    memset(tok, 'A', MC_JWT_MAX + 1);
    tok[MC_JWT_MAX + 1] = '\0';
    memcpy(tok, KNOWN_42, l);
    ck_assert_int_eq(mc_jwt_verify_hs256(tok, MC_JWT_MAX, secret, secret_len, NOW, &c, &err), -1);
    ck_assert_str_eq(err, "malformed token");
    ck_assert_int_eq(mc_jwt_verify_hs256(tok, MC_JWT_MAX + 1, secret, secret_len, NOW, &c, &err), -1);
    ck_assert_str_eq(err, "malformed token");
    /* the valid prefix alone still verifies */
    ck_assert_int_eq(mc_jwt_verify_hs256(tok, l, secret, secret_len, NOW, &c, &err), 0);
    free(tok);

    /* a big but validly signed token just under the limit is accepted */
    {
        char *p = malloc(3000);
        const char *t;

        ck_assert_ptr_nonnull(p);
        strcpy(p, "{\"sub\":\"8\",\"pad\":\"");
        memset(p + strlen(p), 'x', 2900);
        strcpy(p + 18 + 2900, "\"" EXP "}");
        t = make_token("{\"alg\":\"HS256\"}", p);
        ck_assert_uint_lt(strlen(t), MC_JWT_MAX);
        ck_assert_ptr_null(verify(t));
        free(p);
    }
}
END_TEST

START_TEST(test_malformed_payload_json)
{
    ck_assert_verify_err(make_token(HS256_HDR, "not json"), "malformed token");
    ck_assert_verify_err(make_token(HS256_HDR, "[1,2]"), "malformed token");
    ck_assert_verify_err(make_token(HS256_HDR, "\"sub\""), "malformed token");
    ck_assert_verify_err(make_token(HS256_HDR, "{\"sub\":\"1\"} trailing"), "malformed token");
    /* duplicate keys are refused: no ambiguity about which sub counts */
    ck_assert_verify_err(make_token(HS256_HDR, "{\"sub\":\"1\",\"sub\":\"2\"}"), "malformed token");
}
END_TEST

/* ---- sub ----------------------------------------------------------------- */

START_TEST(test_sub_invalid)
{
    static const char *payloads[] = {
        "{}",
        "{\"exp\":4102444800}",
        "{\"sub\":0}",
        "{\"sub\":\"0\"}",
        "{\"sub\":-5}",
        "{\"sub\":\"-5\"}",
        "{\"sub\":\"abc\"}",
        "{\"sub\":\"12abc\"}",
        "{\"sub\":\"\"}",
        "{\"sub\":\" 12\"}",
        "{\"sub\":\"+12\"}",
        "{\"sub\":\"012\"}",
        "{\"sub\":\"12345678901234567890\"}", /* 20 digits */
        "{\"sub\":1.5}",
        "{\"sub\":true}",
        "{\"sub\":null}",
        "{\"sub\":[1]}",
        "{\"sub\":{\"id\":1}}",
        "{\"Sub\":\"1\"}",
    };
    size_t i;

    for (i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        const char *e = verify(make_token(HS256_HDR, payloads[i]));

        ck_assert_msg(e != NULL && strcmp(e, "missing or invalid sub") == 0, "payload %s gave \"%s\"", payloads[i],
                      e ? e : "(accepted)");
    }
}
END_TEST

START_TEST(test_sub_valid_forms)
{
    mc_jwt_claims_t c;

    ck_assert_ptr_null(verify_at(make_token(HS256_HDR, "{\"sub\":1" EXP "}"), NOW, &c));
    ck_assert_uint_eq(c.sub, 1);
    ck_assert_ptr_null(verify_at(make_token(HS256_HDR, "{\"sub\":123456789012" EXP "}"), NOW, &c));
    ck_assert_uint_eq(c.sub, 123456789012ull);
    ck_assert_ptr_null(verify_at(make_token(HS256_HDR, "{\"sub\":9223372036854775807" EXP "}"), NOW, &c));
    ck_assert_uint_eq(c.sub, 9223372036854775807ull);
    ck_assert_ptr_null(verify_at(make_token(HS256_HDR, "{\"sub\":\"9999999999999999999\"" EXP "}"), NOW, &c));
    ck_assert_uint_eq(c.sub, 9999999999999999999ull);
    /* unknown claims are ignored */
    ck_assert_ptr_null(verify_at(make_token(HS256_HDR, "{\"iss\":\"x\",\"sub\":\"31\",\"name\":\"bob\"" EXP "}"), NOW, &c));
    ck_assert_uint_eq(c.sub, 31);
}
END_TEST

/* ---- signing ------------------------------------------------------------- */

START_TEST(test_sign_small_buffer)
{
    char out[512];
    int n = mc_jwt_sign_hs256(42, 4102444800LL, secret, secret_len, out, sizeof(out));
    size_t need = (size_t)n + 1;

    ck_assert_int_eq(n, (int)strlen(KNOWN_42));
    ck_assert_int_eq(mc_jwt_sign_hs256(42, 0, secret, secret_len, out, 0), -1);
    ck_assert_int_eq(mc_jwt_sign_hs256(42, 0, secret, secret_len, out, 1), -1);
    ck_assert_int_eq(mc_jwt_sign_hs256(42, 0, secret, secret_len, out, 16), -1);
    /* no room for the NUL: refused */
    ck_assert_int_eq(mc_jwt_sign_hs256(42, 4102444800LL, secret, secret_len, out, need - 1), -1);
    ck_assert_int_eq(mc_jwt_sign_hs256(42, NOW, secret, secret_len, out, 40), -1);
    /* with a large enough buffer it works again */
    ck_assert_int_eq(mc_jwt_sign_hs256(42, 4102444800LL, secret, secret_len, out, sizeof(out)), n);
}
END_TEST

START_TEST(test_sign_exact_fit)
{
    /* whatever size the signer accepts, it must not write past it: sign into
     * a heap buffer of exactly out_size bytes (ASan catches overruns) for every
     * size from too small to comfortable */
    size_t sz;
    int last = -1;

    for (sz = 1; sz <= 200; sz++) {
        char *out = malloc(sz);
        int n;

        ck_assert_ptr_nonnull(out);
        n = mc_jwt_sign_hs256(18446744073709551615ull, INT64_MAX, secret, secret_len, out, sz);
        if (n >= 0) {
            ck_assert_uint_lt((size_t)n, sz);
            ck_assert_uint_eq(strlen(out), (size_t)n);
            last = n;
        } else {
            ck_assert_int_eq(last, -1); /* once it fits, it keeps fitting */
        }
        free(out);
    }
    ck_assert_int_gt(last, 0);
}
END_TEST

static Suite *jwt_suite(void)
{
    Suite *s = suite_create("jwt");
    TCase *tc;

    tc = tcase_create("vectors");
    tcase_add_test(tc, test_helper_matches_python);
    tcase_add_test(tc, test_known_vector_verifies);
    tcase_add_test(tc, test_known_vector_sub_number);
    tcase_add_test(tc, test_sign_matches_known_vector);
    suite_add_tcase(s, tc);

    tc = tcase_create("round_trip");
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_verify_uses_len_not_nul);
    suite_add_tcase(s, tc);

    tc = tcase_create("signature");
    tcase_add_test(tc, test_wrong_secret);
    tcase_add_test(tc, test_secret_len_honoured);
    tcase_add_test(tc, test_tampered_payload);
    suite_add_tcase(s, tc);

    tc = tcase_create("key");
    tcase_add_test(tc, test_kept_key_header_changes);
    tcase_add_test(tc, test_kept_key_long_header);
    tcase_add_test(tc, test_key_lengths);
    suite_add_tcase(s, tc);

    tc = tcase_create("time");
    tcase_add_test(tc, test_expired);
    tcase_add_test(tc, test_exp_not_integer);
    tcase_add_test(tc, test_exp_required);
    tcase_add_test(tc, test_iss);
    tcase_add_test(tc, test_aud);
    tcase_add_test(tc, test_sign_claims);
    tcase_add_test(tc, test_nbf);
    suite_add_tcase(s, tc);

    tc = tcase_create("alg");
    tcase_add_test(tc, test_unsupported_alg);
    suite_add_tcase(s, tc);

    tc = tcase_create("malformed");
    tcase_add_test(tc, test_malformed_structure);
    tcase_add_test(tc, test_malformed_base64);
    tcase_add_test(tc, test_malformed_too_long);
    tcase_add_test(tc, test_malformed_payload_json);
    suite_add_tcase(s, tc);

    tc = tcase_create("sub");
    tcase_add_test(tc, test_sub_invalid);
    tcase_add_test(tc, test_sub_valid_forms);
    suite_add_tcase(s, tc);

    tc = tcase_create("sign");
    tcase_add_test(tc, test_sign_small_buffer);
    tcase_add_test(tc, test_sign_exact_fit);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jwt_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
