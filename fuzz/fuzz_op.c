/*
 * libFuzzer target: the client request decoder (lib/src/op.c), which the
 * module runs on every text message a client sends.
 *
 * Checks: a decoded op keeps every bound docs/protocol.md states (positive
 * ids below 2^63, a cid of 1 to 64 bytes, page sizes, at most 100 resume
 * rooms with short epochs); a refusal always says why; and a request that
 * decodes, written out again by jansson and decoded again, decodes to the
 * same op (nothing in the decoder depends on how the JSON was spelled).
 *
 * Input: the message, as it arrives (the module has checked its UTF-8; the
 * decoder must cope without that too).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/op.h"

static void check_bounds(const mc_op_t *op)
{
    size_t i;

    switch (op->kind) {
    case MC_OP_SEND:
        if (op->cid_len == 0 || op->cid_len > MC_OP_CID_MAX || op->body_len == 0
            || memchr(op->cid, '\0', op->cid_len) || memchr(op->body, '\0', op->body_len)) {
            abort();
        }
        /* fall through */
    case MC_OP_READ:
    case MC_OP_TYPING:
    case MC_OP_HISTORY:
        if (op->room == 0 || op->room > INT64_MAX || op->seq > INT64_MAX || op->before > INT64_MAX
            || op->limit > MC_OP_HISTORY_MAX) {
            abort();
        }
        break;
    case MC_OP_ROOMS:
        if (op->limit > MC_OP_ROOMS_MAX || (op->cursor && strlen(op->cursor) > MC_OP_CURSOR_MAX)) {
            abort();
        }
        break;
    case MC_OP_RESUME:
        if (op->nrooms == 0 || op->nrooms > MC_OP_RESUME_ROOMS) {
            abort();
        }
        for (i = 0; i < op->nrooms; i++) {
            if (op->rooms[i].room == 0 || op->rooms[i].room > INT64_MAX || op->rooms[i].seq > INT64_MAX
                || op->rooms[i].epoch == NULL || strlen(op->rooms[i].epoch) > MC_OP_EPOCH_MAX) {
                abort();
            }
        }
        break;
    default:
        abort(); /* success with no op */
    }
}

static int same_op(const mc_op_t *a, const mc_op_t *b)
{
    size_t i;

    if (a->kind != b->kind || a->has_id != b->has_id || a->id != b->id || a->room != b->room || a->seq != b->seq
        || a->before != b->before || a->limit != b->limit || a->cid_len != b->cid_len || a->body_len != b->body_len
        || (a->cid_len && memcmp(a->cid, b->cid, a->cid_len) != 0)
        || (a->body_len && memcmp(a->body, b->body, a->body_len) != 0) || !a->cursor != !b->cursor
        || (a->cursor && strcmp(a->cursor, b->cursor) != 0) || a->nrooms != b->nrooms) {
        return 0;
    }
    /* jansson keeps an object's keys in insertion order, and so do dumps */
    for (i = 0; i < a->nrooms; i++) {
        if (a->rooms[i].room != b->rooms[i].room || a->rooms[i].seq != b->rooms[i].seq
            || strcmp(a->rooms[i].epoch, b->rooms[i].epoch) != 0) {
            return 0;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mc_op_t op, again;
    char *text;
    int rc;

    rc = mc_op_decode(&op, (const char *)data, size);
    if (rc != 0) {
        if (op.err[0] == '\0' || memchr(op.err, '\0', sizeof(op.err)) == NULL) {
            abort();
        }
        mc_op_free(&op);
        return 0;
    }
    check_bounds(&op);

    text = json_dumps(op.json, JSON_COMPACT);
    if (text == NULL) {
        abort();
    }
    if (mc_op_decode(&again, text, strlen(text)) != 0 || !same_op(&op, &again)) {
        abort();
    }
    mc_op_free(&again);
    free(text);
    mc_op_free(&op);
    return 0;
}
