/*
 * Client requests decoded and checked (see op.h).
 *
 * The envelope comes first (a JSON object, an integer "id" if any, a string
 * "op"), then one function per op reads that op's fields; each refusal
 * names the field and what it must be, in the words docs/protocol.md uses.
 * Integers are jansson's json_int_t (64-bit signed), so an id can never
 * exceed 2^63 - 1 and a negative value is refused before any cast.
 */
#include <stdio.h>
#include <string.h>

#include "minichat/decimal.h"
#include "minichat/op.h"

typedef int (*op_fields_pt)(mc_op_t *op, json_t *req);

static int op_fail(mc_op_t *op, const char *text);
static uint64_t op_id(json_t *v);
static int op_limit(mc_op_t *op, json_t *v, unsigned max, const char *text);
static int op_send(mc_op_t *op, json_t *req);
static int op_read(mc_op_t *op, json_t *req);
static int op_typing(mc_op_t *op, json_t *req);
static int op_history(mc_op_t *op, json_t *req);
static int op_resume(mc_op_t *op, json_t *req);
static int op_rooms(mc_op_t *op, json_t *req);

static const struct {
    const char *name;
    mc_op_kind_t kind;
    op_fields_pt fields;
} op_table[] = {
    {"send", MC_OP_SEND, op_send},       {"read", MC_OP_READ, op_read},
    {"typing", MC_OP_TYPING, op_typing}, {"history", MC_OP_HISTORY, op_history},
    {"resume", MC_OP_RESUME, op_resume}, {"rooms", MC_OP_ROOMS, op_rooms},
};

#define ROOM_TEXT "\"room\" must be a positive integer"

/* Sets op->err to text and returns -1. */
static int op_fail(mc_op_t *op, const char *text)
{
    snprintf(op->err, sizeof(op->err), "%s", text);
    return -1;
}

/* Returns a positive JSON integer's value, or 0 for anything else. */
static uint64_t op_id(json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* Reads an optional page size: absent or null leaves op->limit 0. */
static int op_limit(mc_op_t *op, json_t *v, unsigned max, const char *text)
{
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (json_int_t)max) {
        return op_fail(op, text);
    }
    op->limit = (unsigned)json_integer_value(v);
    return 0;
}

static int op_send(mc_op_t *op, json_t *req)
{
    json_t *jcid = json_object_get(req, "cid"), *jbody = json_object_get(req, "body");

    op->room = op_id(json_object_get(req, "room"));
    if (op->room == 0) {
        return op_fail(op, ROOM_TEXT);
    }
    if (!json_is_string(jcid) || json_string_length(jcid) == 0 || json_string_length(jcid) > MC_OP_CID_MAX) {
        return op_fail(op, "\"cid\" must be a string of 1 to 64 bytes");
    }
    if (!json_is_string(jbody) || json_string_length(jbody) == 0) {
        return op_fail(op, "\"body\" must be a non-empty string");
    }
    op->cid = json_string_value(jcid);
    op->cid_len = json_string_length(jcid);
    op->body = json_string_value(jbody);
    op->body_len = json_string_length(jbody);
    if (memchr(op->cid, '\0', op->cid_len)) {
        return op_fail(op, "\"cid\" must not contain NUL");
    }
    if (memchr(op->body, '\0', op->body_len)) {
        return op_fail(op, "\"body\" must not contain NUL");
    }
    return 0;
}

static int op_read(mc_op_t *op, json_t *req)
{
    json_t *js = json_object_get(req, "seq");

    op->room = op_id(json_object_get(req, "room"));
    if (op->room == 0) {
        return op_fail(op, ROOM_TEXT);
    }
    if (!json_is_integer(js) || json_integer_value(js) < 0) {
        return op_fail(op, "\"seq\" must be a non-negative integer");
    }
    op->seq = (uint64_t)json_integer_value(js);
    return 0;
}

static int op_typing(mc_op_t *op, json_t *req)
{
    op->room = op_id(json_object_get(req, "room"));
    return op->room == 0 ? op_fail(op, ROOM_TEXT) : 0;
}

static int op_history(mc_op_t *op, json_t *req)
{
    json_t *jb = json_object_get(req, "before");

    op->room = op_id(json_object_get(req, "room"));
    if (op->room == 0) {
        return op_fail(op, ROOM_TEXT);
    }
    if (jb && !json_is_null(jb)) {
        if (!json_is_integer(jb) || json_integer_value(jb) < 1) {
            return op_fail(op, "\"before\" must be a positive integer");
        }
        op->before = (uint64_t)json_integer_value(jb);
    }
    return op_limit(op, json_object_get(req, "limit"), MC_OP_HISTORY_MAX, "\"limit\" must be an integer from 1 to 200");
}

static int op_resume(mc_op_t *op, json_t *req)
{
    json_t *rooms = json_object_get(req, "rooms"), *v, *jseq, *jepoch;
    mc_op_resume_room_t *r;
    const char *key;
    uint64_t room;

    if (!json_is_object(rooms) || json_object_size(rooms) == 0 || json_object_size(rooms) > MC_OP_RESUME_ROOMS) {
        return op_fail(op, "\"rooms\" must be an object of 1 to 100 rooms: {\"<room>\": <seq>}");
    }
    json_object_foreach(rooms, key, v)
    {
        jseq = json_is_object(v) ? json_object_get(v, "seq") : v;
        jepoch = json_is_object(v) ? json_object_get(v, "epoch") : NULL;

        /* at most 19 digits, so that the id fits a signed 64-bit column */
        if (strlen(key) > 19 || mc_parse_u64(key, strlen(key), &room) != 0 || room == 0 || room > INT64_MAX) {
            return op_fail(op, "room keys must be positive integers");
        }
        if (!json_is_integer(jseq) || json_integer_value(jseq) < 0 || (jepoch && !json_is_string(jepoch))
            || (jepoch && json_string_length(jepoch) > MC_OP_EPOCH_MAX)) {
            return op_fail(op, "each room needs a seq: a non-negative integer, or {\"seq\": n, \"epoch\": \"…\"}");
        }
        r = &op->rooms[op->nrooms++];
        r->room = room;
        r->seq = (uint64_t)json_integer_value(jseq);
        r->epoch = jepoch ? json_string_value(jepoch) : "";
    }
    return 0;
}

static int op_rooms(mc_op_t *op, json_t *req)
{
    json_t *jc = json_object_get(req, "cursor");

    if (op_limit(op, json_object_get(req, "limit"), MC_OP_ROOMS_MAX, "\"limit\" must be an integer from 1 to 100") != 0) {
        return -1;
    }
    if (jc && !json_is_null(jc)) {
        if (!json_is_string(jc) || json_string_length(jc) > MC_OP_CURSOR_MAX) {
            return op_fail(op, "\"cursor\" must be a string from a rooms reply");
        }
        op->cursor = json_string_value(jc);
    }
    return 0;
}

int mc_op_decode(mc_op_t *op, const char *data, size_t len)
{
    json_error_t jerr;
    const char *name;
    json_t *v;
    size_t i;

    memset(op, 0, offsetof(mc_op_t, rooms));
    op->nrooms = 0;
    op->err[0] = '\0';

    op->json = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (op->json == NULL) {
        /* jansson's own words, such as "\u0000 is not allowed" */
        return op_fail(op, jerr.text);
    }
    if (!json_is_object(op->json)) {
        return op_fail(op, "a request is a JSON object");
    }
    v = json_object_get(op->json, "id");
    if (v) {
        if (!json_is_integer(v)) {
            return op_fail(op, "\"id\" must be an integer");
        }
        op->id = json_integer_value(v);
        op->has_id = 1;
    }
    name = json_string_value(json_object_get(op->json, "op"));
    if (name == NULL) {
        return op_fail(op, "\"op\" must be a string");
    }
    op->kind = MC_OP_UNKNOWN;
    for (i = 0; i < sizeof(op_table) / sizeof(op_table[0]); i++) {
        if (strcmp(op_table[i].name, name) == 0) {
            op->kind = op_table[i].kind;
            return op_table[i].fields(op, op->json);
        }
    }
    return op_fail(op, "unknown op");
}

void mc_op_free(mc_op_t *op)
{
    json_decref(op->json);
    op->json = NULL;
}
