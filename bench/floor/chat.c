/*
 * The floor's chat: users, rooms, and what a `send` costs at the least.
 *
 * A user is made the first time a room names it or it connects, and lives
 * until the floor exits (FLOOR_MAX_USERS of them), in an open-addressing
 * table on its id.  A room is an array of pointers to its members' users,
 * the owner first; room ids are 1, 2, 3, ... and index an array.
 *
 * A send is decoded with lib's mc_op_decode() (so the floor refuses what
 * MiniChat refuses), checked against the room (not_found, forbidden), given
 * the room's next seq, acked to the sender, and encoded ONCE as a `msg`
 * frame that is then appended to every open connection of every member
 * but the sending one.  floor.c writes each connection's output once at
 * the end of the turn.  Nothing is stored and no cid is remembered: the
 * floor has no retries to answer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "minichat/clock.h"
#include "minichat/op.h"
#include "minichat/ws.h"

#include "floor.h"

#define FRAME_ROOM 10 /* bytes before a payload, for its WebSocket header */

static size_t slot_of(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

/* Doubles the users table.  Returns 0 or -1. */
static int users_grow(floor_t *fl)
{
    size_t cap = fl->users_cap ? fl->users_cap * 2 : 4096, i, s;
    floor_user_t **t = calloc(cap, sizeof(*t));

    if (t == NULL) {
        return -1;
    }
    for (i = 0; i < fl->users_cap; i++) {
        if (fl->users[i] != NULL) {
            for (s = slot_of(fl->users[i]->id, cap); t[s] != NULL; s = (s + 1) & (cap - 1)) {
            }
            t[s] = fl->users[i];
        }
    }
    free(fl->users);
    fl->users = t;
    fl->users_cap = cap;
    return 0;
}

floor_user_t *floor_user(floor_t *fl, uint64_t id)
{
    floor_user_t *u;
    size_t s;

    if (fl->users_cap > 0) {
        for (s = slot_of(id, fl->users_cap); fl->users[s] != NULL; s = (s + 1) & (fl->users_cap - 1)) {
            if (fl->users[s]->id == id) {
                return fl->users[s];
            }
        }
    }
    if (fl->nusers >= FLOOR_MAX_USERS) {
        return NULL;
    }
    if ((fl->nusers + 1) * 2 > fl->users_cap && users_grow(fl) != 0) {
        return NULL;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        return NULL;
    }
    u->id = id;
    for (s = slot_of(id, fl->users_cap); fl->users[s] != NULL; s = (s + 1) & (fl->users_cap - 1)) {
    }
    fl->users[s] = u;
    fl->nusers++;
    return u;
}

void floor_user_attach(floor_conn_t *c, floor_user_t *u)
{
    c->user = u;
    c->user_prev = NULL;
    c->user_next = u->conns;
    if (u->conns) {
        u->conns->user_prev = c;
    }
    u->conns = c;
}

void floor_user_detach(floor_conn_t *c)
{
    if (c->user == NULL) {
        return;
    }
    if (c->user_prev) {
        c->user_prev->user_next = c->user_next;
    } else {
        c->user->conns = c->user_next;
    }
    if (c->user_next) {
        c->user_next->user_prev = c->user_prev;
    }
    c->user = NULL;
}

int floor_room_create(floor_t *fl, uint64_t owner, const uint64_t *members, size_t n, uint64_t *id, char *err,
                      size_t err_size)
{
    floor_room_t *r, **t;
    floor_user_t *u;
    size_t i, cap;

    if (fl->nrooms >= FLOOR_MAX_ROOMS) {
        snprintf(err, err_size, "the floor holds at most %d rooms", FLOOR_MAX_ROOMS);
        return -1;
    }
    if (fl->nrooms == fl->rooms_cap) {
        cap = fl->rooms_cap ? fl->rooms_cap * 2 : 64;
        t = realloc(fl->rooms, cap * sizeof(*t));
        if (t == NULL) {
            snprintf(err, err_size, "out of memory");
            return -1;
        }
        fl->rooms = t;
        fl->rooms_cap = cap;
    }
    r = calloc(1, sizeof(*r) + (n + 1) * sizeof(floor_user_t *));
    if (r == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    r->id = fl->nrooms + 1;
    r->owner = owner;
    fl->mark++;
    for (i = 0; i <= n; i++) {
        u = floor_user(fl, i == 0 ? owner : members[i - 1]);
        if (u == NULL) {
            free(r);
            snprintf(err, err_size, "the floor holds at most %d users", FLOOR_MAX_USERS);
            return -1;
        }
        if (u->mark != fl->mark) { /* a duplicate member is dropped */
            u->mark = fl->mark;
            r->members[r->n++] = u;
        }
    }
    fl->rooms[fl->nrooms++] = r;
    fl->st.rooms++;
    *id = r->id;
    return 0;
}

/* Appends j, compact, as one text frame's payload to fl->frame, whose
 * first FRAME_ROOM bytes are kept for the header; returns the frame's
 * start (the header written right before the payload), or NULL. */
static const char *build_frame(floor_t *fl, json_t *j, size_t *len)
{
    size_t plen = json_dumpb(j, NULL, 0, JSON_COMPACT), hl;
    uint8_t hdr[FRAME_ROOM];
    char *start;

    mc_buf_reset(&fl->frame);
    if (plen == 0 || mc_buf_reserve(&fl->frame, FRAME_ROOM + plen) != 0
        || json_dumpb(j, fl->frame.data + FRAME_ROOM, plen, JSON_COMPACT) != plen) {
        return NULL;
    }
    fl->frame.len = FRAME_ROOM + plen;
    hl = mc_ws_header(hdr, MC_WS_OP_TEXT, 1, plen);
    start = fl->frame.data + FRAME_ROOM - hl;
    memcpy(start, hdr, hl);
    *len = hl + plen;
    return start;
}

/* Queues j as a text frame to c.  Returns 0 or -1 (c closed). */
static int reply(floor_t *fl, floor_conn_t *c, json_t *j)
{
    const char *f;
    size_t len;
    int rc;

    if (j == NULL) {
        floor_close(fl, c);
        return -1;
    }
    f = build_frame(fl, j, &len);
    rc = f ? floor_queue(fl, c, f, len) : -1;
    json_decref(j);
    if (f == NULL) {
        floor_close(fl, c);
    }
    return rc;
}

static int error_reply(floor_t *fl, floor_conn_t *c, const mc_op_t *op, const char *code, const char *message)
{
    json_t *j = json_pack("{s:s,s:s,s:s}", "op", "error", "code", code, "message", message);

    fl->st.bad_input++;
    if (j != NULL && op->has_id) {
        json_object_set_new(j, "id", json_integer(op->id));
    }
    return reply(fl, c, j);
}

/* Every open connection of every member but c gets the frame f[0..len). */
static void fan_out(floor_t *fl, floor_room_t *r, floor_conn_t *c, const char *f, size_t len)
{
    floor_conn_t *m, *next;
    size_t i;

    for (i = 0; i < r->n; i++) {
        for (m = r->members[i]->conns; m != NULL; m = next) {
            next = m->user_next; /* a failed queue closes m and unlinks it */
            if (m != c && m->state == FC_WS && floor_queue(fl, m, f, len) == 0) {
                fl->st.deliveries++;
            }
        }
    }
}

static int send_op(floor_t *fl, floor_conn_t *c, const mc_op_t *op)
{
    floor_room_t *r;
    int64_t ts = mc_wall_ms();
    const char *f;
    json_t *ack, *msg;
    size_t i, len;

    if (op->room == 0 || op->room > fl->nrooms) {
        return error_reply(fl, c, op, "not_found", "no such room");
    }
    r = fl->rooms[op->room - 1];
    for (i = 0; i < r->n && r->members[i] != c->user; i++) {
    }
    if (i == r->n) {
        return error_reply(fl, c, op, "forbidden", "not a member of the room");
    }
    r->seq++;
    fl->st.sends++;
    ack = json_pack("{s:s,s:I,s:s%,s:I,s:I}", "op", "ack", "room", (json_int_t)r->id, "cid", op->cid, op->cid_len,
                    "seq", (json_int_t)r->seq, "ts", (json_int_t)ts);
    if (ack != NULL && op->has_id) {
        json_object_set_new(ack, "id", json_integer(op->id));
    }
    if (reply(fl, c, ack) != 0) {
        return -1;
    }
    msg = json_pack("{s:s,s:I,s:I,s:I,s:s%,s:s%,s:I}", "op", "msg", "room", (json_int_t)r->id, "seq",
                    (json_int_t)r->seq, "from", (json_int_t)c->user->id, "cid", op->cid, op->cid_len, "body", op->body,
                    op->body_len, "ts", (json_int_t)ts);
    f = msg ? build_frame(fl, msg, &len) : NULL;
    json_decref(msg);
    if (f == NULL) {
        floor_close(fl, c);
        return -1;
    }
    fan_out(fl, r, c, f, len);
    return c->state == FC_DEAD ? -1 : 0;
}

int floor_chat_text(floor_t *fl, floor_conn_t *c, const char *p, size_t n)
{
    mc_op_t op;
    int rc;

    if (mc_op_decode(&op, p, n) != 0) {
        rc = error_reply(fl, c, &op, "bad_request", op.err);
    } else if (op.kind != MC_OP_SEND) {
        rc = error_reply(fl, c, &op, "bad_request", "the floor takes only send");
    } else {
        rc = send_op(fl, c, &op);
    }
    mc_op_free(&op);
    return rc;
}

void floor_chat_free(floor_t *fl)
{
    size_t i;

    for (i = 0; i < fl->users_cap; i++) {
        free(fl->users[i]);
    }
    free(fl->users);
    for (i = 0; i < fl->nrooms; i++) {
        free(fl->rooms[i]);
    }
    free(fl->rooms);
    fl->users = NULL;
    fl->rooms = NULL;
}
