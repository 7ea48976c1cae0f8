/*
 * HS256 JSON Web Tokens: verification for the nginx module, signing for
 * `make token` and tests.  `sub` is the user id (a positive integer, given
 * either as a JSON number or as a decimal string); `exp` is required and
 * checked against the caller's clock (a token that never expires cannot be
 * revoked by waiting, and a connection could live on it forever).  A key
 * may also expect an issuer (`iss`) and an audience (`aud`: a string or an
 * array of strings, RFC 7519 4.1.3).
 *
 * A verifier that checks many tokens against one secret keeps an
 * mc_jwt_key_t: the secret prepared once (HMAC's padded keys already
 * hashed), so that a check costs two SHA-256 passes over the token and no
 * key setup.  A key is not thread-safe (one per nginx worker).
 */
#ifndef MINICHAT_JWT_H
#define MINICHAT_JWT_H

#include <stddef.h>
#include <stdint.h>

#define MC_JWT_MAX 4096

typedef struct {
    uint64_t sub;
    int64_t exp; /* seconds since the epoch; always present, later than now */
} mc_jwt_claims_t;

typedef struct mc_jwt_key_s mc_jwt_key_t;

/* Prepares secret for HS256.  Returns the key, or NULL when out of memory. */
mc_jwt_key_t *mc_jwt_key_new(const uint8_t *secret, size_t secret_len);

/* Makes key's verifications require "iss" equal to iss and "aud" equal to
 * (or, as an array, holding) aud; NULL leaves that claim unchecked.  Returns
 * 0, or -1 when out of memory (the key is unchanged then). */
int mc_jwt_key_expect(mc_jwt_key_t *key, const char *iss, const char *aud);

/* Frees a key (NULL is fine) and wipes what it knew of the secret. */
void mc_jwt_key_free(mc_jwt_key_t *key);

/* Returns 0 and fills *claims on success; -1 on failure with *err set to a
 * short static reason ("malformed token", "bad signature", "expired", ...). */
int mc_jwt_verify(mc_jwt_key_t *key, const char *token, size_t len, int64_t now, mc_jwt_claims_t *claims,
                  const char **err);

/* mc_jwt_verify with a key made for this one call. */
int mc_jwt_verify_hs256(const char *token, size_t len, const uint8_t *secret, size_t secret_len, int64_t now,
                        mc_jwt_claims_t *claims, const char **err);

/* Signs {"sub":"<sub>","exp":exp} into out.  exp 0 omits the claim, which
 * only tests want (such a token is refused).  Returns the token length, or
 * -1 when out is too small. */
int mc_jwt_sign_hs256(uint64_t sub, int64_t exp, const uint8_t *secret, size_t secret_len, char *out, size_t out_size);

/* The same with "iss" and "aud" (strings; NULL omits each) after exp. */
int mc_jwt_sign_claims_hs256(uint64_t sub, int64_t exp, const char *iss, const char *aud, const uint8_t *secret,
                             size_t secret_len, char *out, size_t out_size);

#endif
