/*
 * Reads the claims a JWT check needs (`sub`, `exp`, `nbf`) from a token's
 * payload without building a JSON tree.
 *
 * The payload is accepted exactly when jansson's json_loadb(...,
 * JSON_REJECT_DUPLICATES) would return an object for it: valid UTF-8, RFC
 * 8259 grammar, no duplicate key in any object, no \u0000 and no lone
 * surrogate escape, integers within int64, reals that do not overflow, at
 * most 2048 levels of nesting.  Only the top level's three claims are kept;
 * everything else is checked and skipped.  tests/unit/test_jwt_claims.c
 * holds it against jansson on tricky and mutated payloads.  Pure code, no
 * allocation.
 */
#ifndef MINICHAT_JWT_CLAIMS_H
#define MINICHAT_JWT_CLAIMS_H

#include <stddef.h>
#include <stdint.h>

/* the most keys one payload may hold (a 4 KiB token's payload has < 620) */
#define MC_JWT_CLAIMS_MAX_KEYS 1024

typedef enum {
    MC_CLAIM_ABSENT = 0,
    MC_CLAIM_INT,    /* a JSON integer: num */
    MC_CLAIM_STRING, /* a JSON string: str[0..len) when len < sizeof(str), else only len */
    MC_CLAIM_OTHER   /* a real, true, false, null, an object or an array */
} mc_claim_kind_t;

typedef struct {
    mc_claim_kind_t kind;
    int64_t num;
    size_t len;
    char str[24]; /* NUL-terminated when it fits */
} mc_claim_t;

typedef struct {
    mc_claim_t sub;
    mc_claim_t exp;
    mc_claim_t nbf;
} mc_jwt_claims_raw_t;

/* Reads json[0..n) into *out.  scratch (at least n + 1 bytes) holds decoded
 * keys while the reader runs.  Returns 0 when the payload is a JSON object
 * as described above, -1 otherwise (or when scratch is too small, or the
 * payload has more than MC_JWT_CLAIMS_MAX_KEYS keys). */
int mc_jwt_claims_read(const uint8_t *json, size_t n, mc_jwt_claims_raw_t *out, char *scratch, size_t scratch_size);

#endif
