/*
 * Centrifugo's JSON client protocol (v6, bidirectional WebSocket at
 * /connection/websocket) for the load generator, so that `make bench`
 * measures MiniChat and Centrifugo on the same load (issue 9).
 *
 * The path is kept the same as MiniChat's: a member connects and
 * subscribes to its room's channel; the room's owner subscribes too and
 * sends with the client `publish` command (the bench namespace allows
 * publishing to subscribers, bench/centrifugo/config.json), so every
 * message goes client -> server -> members.  The first frame after the
 * upgrade carries both commands, one per line:
 *
 *   {"id":1,"connect":{"token":"<JWT>","name":"loadgen"}}
 *   {"id":2,"subscribe":{"channel":"room:<id>"}}
 *
 * and the two replies make the connection open (in idle mode only the
 * connect).  The token is the one MiniChat takes (HS256, "sub" as a
 * string, "exp"), signed with the same secret.  A room is made by
 * subscribing to it: there is nothing to create, so a room's id is its
 * owner's user id (fresh each run).  Message k is published as
 * {"body":"lg <k> <sent_us>"}, the body MiniChat carries (scan.c).
 *
 * In: replies {"id":N,"connect"|"subscribe"|"publish":{...}} or
 * {"id":N,"error":{...}}, pushes {"push":{"channel":"room:<id>","pub":
 * {"data":...,"offset":N}}} (the offset, with history on, is the room's
 * sequence), and pings: an empty object {} that must be answered with {}.
 * Centrifugo writes the pushes queued for a connection as one frame, one
 * JSON object per line.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "minichat/jwt.h"

#include "loadgen.h"

#define CF_NS "room:"

static int cf_on_open(const lg_config_t *cfg, uint64_t user, uint64_t room, mc_buf_t *out)
{
    char tok[MC_JWT_MAX];

    if (lg_token(cfg, user, tok, sizeof(tok)) < 0
        || mc_buf_appendf(out, "{\"id\":1,\"connect\":{\"token\":\"%s\",\"name\":\"loadgen\"}}", tok) != 0) {
        return -1;
    }
    if (room == 0) {
        return 1;
    }
    if (mc_buf_appendf(out, "\n{\"id\":2,\"subscribe\":{\"channel\":\"" CF_NS "%" PRIu64 "\"}}", room) != 0) {
        return -1;
    }
    return 2;
}

static int cf_make_room(const lg_config_t *cfg, uint64_t owner, const uint64_t *members, size_t n, uint64_t *room,
                        char *err, size_t err_size)
{
    (void)cfg;
    (void)members;
    (void)n;
    (void)err;
    (void)err_size;
    *room = owner;
    return 0;
}

/* A push: a publication into one of our rooms, or something else the
 * server tells (join, leave, unsubscribe, disconnect...). */
static int cf_push(const char *p, size_t n, lg_event_t *ev)
{
    if (lg_field(p, n, "\"pub\":") == NULL) {
        /* a disconnect push comes before the server closes: say why */
        ev->type = lg_field(p, n, "\"disconnect\":") ? LG_EV_ERROR : LG_EV_OTHER;
        return 0;
    }
    ev->type = LG_EV_MSG;
    if (lg_number(p, n, lg_field(p, n, "\"channel\":\"" CF_NS), &ev->room) != 0) {
        return -1;
    }
    lg_body_read(p, n, ev);
    /* no history in the namespace: no offset; the order is then checked
     * on the message index alone */
    if (lg_number(p, n, lg_field(p, n, "\"offset\":"), &ev->seq) != 0) {
        ev->seq = ev->ours ? ev->k + 1 : 0;
    }
    return 0;
}

static int cf_parse(const char *p, size_t n, lg_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    if (n < 2 || p[0] != '{' || p[n - 1] != '}') {
        return -1;
    }
    if (n == 2) {
        ev->type = LG_EV_PING;
        return 0;
    }
    if (lg_field(p, n, "\"push\":{")) {
        return cf_push(p, n, ev);
    }
    if (lg_field(p, n, "\"error\":{")) {
        ev->type = LG_EV_ERROR;
        return 0;
    }
    if (lg_field(p, n, "\"connect\":{") || lg_field(p, n, "\"subscribe\":{")) {
        ev->type = LG_EV_READY;
        return 0;
    }
    if (lg_field(p, n, "\"publish\":{")) {
        ev->type = LG_EV_ACK;
        return 0;
    }
    ev->type = LG_EV_OTHER;
    return 0;
}

static int cf_encode_send(uint64_t room, uint64_t user, uint64_t k, uint64_t id, int64_t sent_us, mc_buf_t *out)
{
    (void)user;
    /* ids 1 and 2 are the connect and the subscribe */
    if (mc_buf_appendf(out,
                       "{\"id\":%" PRIu64 ",\"publish\":{\"channel\":\"" CF_NS "%" PRIu64 "\",\"data\":{\"body\":\"",
                       id + 2, room)
            != 0
        || lg_body_append(out, k, sent_us) != 0) {
        return -1;
    }
    return mc_buf_append_str(out, "\"}}}");
}

const lg_proto_t lg_proto_centrifugo = {
    .name = "centrifugo",
    .path = "/connection/websocket",
    .lines = 1,
    .pong = "{}",
    .on_open = cf_on_open,
    .make_room = cf_make_room,
    .parse = cf_parse,
    .encode_send = cf_encode_send,
};
