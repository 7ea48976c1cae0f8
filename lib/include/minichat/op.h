/*
 * The client protocol's requests (docs/protocol.md), decoded: one complete
 * WebSocket text message is one JSON object with an "op", an optional
 * integer "id" and the op's fields.  mc_op_decode() parses it with jansson
 * and checks every field the op takes, so that the module's op handlers
 * start from typed values and the whole of what a client can send is
 * checked by code that runs (and is fuzzed, fuzz/fuzz_op.c) without nginx.
 * Pure code: no I/O; the strings of a decoded op point into the parsed
 * JSON, which mc_op_free() releases.
 */
#ifndef MINICHAT_OP_H
#define MINICHAT_OP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define MC_OP_CID_MAX 64        /* bytes of a send's "cid" */
#define MC_OP_HISTORY_MAX 200   /* a history page's "limit" */
#define MC_OP_ROOMS_MAX 100     /* a rooms page's "limit" */
#define MC_OP_CURSOR_MAX 128    /* bytes of a rooms "cursor" */
#define MC_OP_RESUME_ROOMS 100  /* rooms in one resume */
#define MC_OP_EPOCH_MAX 16      /* bytes of a resume room's "epoch" */

typedef enum {
    MC_OP_NONE = 0,             /* the envelope itself is bad */
    MC_OP_UNKNOWN,              /* "op" is a string naming no op */
    MC_OP_SEND,
    MC_OP_READ,
    MC_OP_TYPING,
    MC_OP_HISTORY,
    MC_OP_RESUME,
    MC_OP_ROOMS
} mc_op_kind_t;

typedef struct {
    uint64_t room;              /* > 0 and <= 2^63 - 1 */
    uint64_t seq;               /* the last seq the client has */
    const char *epoch;          /* "" when not given */
} mc_op_resume_room_t;

typedef struct {
    mc_op_kind_t kind;
    int has_id;
    int64_t id;                 /* the request's "id", 0 without one */
    uint64_t room;              /* send, read, typing, history: > 0 */
    uint64_t seq;               /* read */
    const char *cid;            /* send: 1 to MC_OP_CID_MAX bytes, no NUL */
    size_t cid_len;
    const char *body;           /* send: at least 1 byte, no NUL */
    size_t body_len;
    uint64_t before;            /* history: 0 for the newest page */
    unsigned limit;             /* history, rooms: 0 for the default */
    const char *cursor;         /* rooms: NULL for the first page */
    mc_op_resume_room_t rooms[MC_OP_RESUME_ROOMS];
    size_t nrooms;              /* resume: 1 to MC_OP_RESUME_ROOMS */
    json_t *json;               /* owns the strings above */
    char err[160];              /* what is wrong, for a bad_request */
} mc_op_t;

/* Decodes the request data[0..len) (valid UTF-8).  Returns 0 with *op
 * filled, or -1 with op->err saying what is wrong; the request's id and
 * kind are kept as far as they were read (kind is MC_OP_NONE when the
 * envelope, the object, "id" or "op", is bad).  Call mc_op_free() after
 * either. */
int mc_op_decode(mc_op_t *op, const char *data, size_t len);

/* Releases what mc_op_decode() holds (the strings of *op die with it). */
void mc_op_free(mc_op_t *op);

#endif
