/*
 * HS256 JSON Web Tokens: verification for the nginx module, signing for
 * `make token` and tests.  `sub` is the user id (a positive integer, given
 * either as a JSON number or as a decimal string); `exp`, when present, is
 * checked against the caller's clock.
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
    int64_t exp; /* 0 when the token has none */
} mc_jwt_claims_t;

typedef struct mc_jwt_key_s mc_jwt_key_t;

/* Prepares secret for HS256.  Returns the key, or NULL when out of memory. */
mc_jwt_key_t *mc_jwt_key_new(const uint8_t *secret, size_t secret_len);

/* Frees a key (NULL is fine) and wipes what it knew of the secret. */
void mc_jwt_key_free(mc_jwt_key_t *key);

/* Returns 0 and fills *claims on success; -1 on failure with *err set to a
 * short static reason ("malformed token", "bad signature", "expired", ...). */
int mc_jwt_verify(mc_jwt_key_t *key, const char *token, size_t len, int64_t now, mc_jwt_claims_t *claims,
                  const char **err);

/* mc_jwt_verify with a key made for this one call. */
int mc_jwt_verify_hs256(const char *token, size_t len, const uint8_t *secret, size_t secret_len, int64_t now,
                        mc_jwt_claims_t *claims, const char **err);

/* Signs {"sub":"<sub>","exp":exp} (exp omitted when 0) into out.  Returns the
 * token length, or -1 when out is too small. */
int mc_jwt_sign_hs256(uint64_t sub, int64_t exp, const uint8_t *secret, size_t secret_len, char *out, size_t out_size);

#endif
