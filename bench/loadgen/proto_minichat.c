/*
 * MiniChat's client protocol v1 (docs/protocol.md) for the load generator:
 * a JWT in `Authorization: Bearer`, rooms made with `POST /api/rooms`,
 * `send` requests out, `hello` / `msg` / `ack` / `error` in.
 *
 * Frames are read by their fields (scan.c); a body other than the load
 * generator's own (a system message) is reported as not ours.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "minichat/jwt.h"

#include "loadgen.h"

static int mc_auth_headers(const lg_config_t *cfg, uint64_t user, mc_buf_t *out)
{
    char tok[MC_JWT_MAX];

    if (lg_token(cfg, user, tok, sizeof(tok)) < 0) {
        return -1;
    }
    return mc_buf_appendf(out, "Authorization: Bearer %s\r\n", tok);
}

static int mc_make_room(const lg_config_t *cfg, uint64_t owner, const uint64_t *members, size_t n, uint64_t *room,
                        char *err, size_t err_size)
{
    mc_buf_t body = MC_BUF_INIT, hdr = MC_BUF_INIT, ans = MC_BUF_INIT;
    struct timespec retry_pause = {1, 0};
    int status = -1, attempt, rc = -1;
    uint64_t id;
    size_t i;

    if (mc_buf_appendf(&body, "{\"kind\":\"group\",\"title\":\"loadgen\",\"members\":[") != 0) {
        goto oom;
    }
    for (i = 0; i < n; i++) {
        if (mc_buf_appendf(&body, "%s%" PRIu64, i ? "," : "", members[i]) != 0) {
            goto oom;
        }
    }
    /* the key makes a retry after a 503 return the same room */
    if (mc_buf_append_str(&body, "]}") != 0 || mc_auth_headers(cfg, owner, &hdr) != 0
        || mc_buf_appendf(&hdr, "Idempotency-Key: loadgen-%" PRIu64 "\r\n", owner) != 0) {
        goto oom;
    }
    for (attempt = 0; attempt < 5; attempt++) {
        status = lg_http_request(cfg, "POST", "/api/rooms", hdr.data, body.data, body.len, &ans, err, err_size);
        /* a busy stack may also not answer in time: the key makes the
         * retry safe */
        if (status != 503 && status != 429 && status != -1) {
            break;
        }
        nanosleep(&retry_pause, NULL);
    }
    if (status == 201 || status == 200) {
        if (lg_number(ans.data, ans.len, lg_field(ans.data, ans.len, "\"id\":"), &id) == 0) {
            *room = id;
            rc = 0;
        } else {
            snprintf(err, err_size, "POST /api/rooms: no id in %.200s", ans.data);
        }
    } else if (status > 0) {
        snprintf(err, err_size, "POST /api/rooms: HTTP %d %.200s", status, ans.data ? ans.data : "");
    }
    goto done;
oom:
    snprintf(err, err_size, "out of memory");
done:
    mc_buf_free(&body);
    mc_buf_free(&hdr);
    mc_buf_free(&ans);
    return rc;
}

static int mc_parse(const char *p, size_t n, lg_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    if (n < 10 || p[0] != '{') {
        return -1;
    }
    if (lg_field(p, n, "\"op\":\"msg\"")) {
        ev->type = LG_EV_MSG;
        if (lg_number(p, n, lg_field(p, n, "\"room\":"), &ev->room) != 0
            || lg_number(p, n, lg_field(p, n, "\"seq\":"), &ev->seq) != 0) {
            return -1;
        }
        lg_body_read(p, n, ev);
        return 0;
    }
    if (lg_field(p, n, "\"op\":\"ack\"")) {
        ev->type = LG_EV_ACK;
        if (lg_number(p, n, lg_field(p, n, "\"room\":"), &ev->room) != 0
            || lg_number(p, n, lg_field(p, n, "\"seq\":"), &ev->seq) != 0) {
            return -1;
        }
        return 0;
    }
    if (lg_field(p, n, "\"op\":\"hello\"")) {
        ev->type = LG_EV_READY;
        return 0;
    }
    if (lg_field(p, n, "\"op\":\"error\"")) {
        ev->type = LG_EV_ERROR;
        return 0;
    }
    if (lg_field(p, n, "\"op\":\"")) {
        ev->type = LG_EV_OTHER; /* presence, read, typing, ... */
        return 0;
    }
    return -1;
}

static int mc_encode_send(uint64_t room, uint64_t user, uint64_t k, uint64_t id, int64_t sent_us, mc_buf_t *out)
{
    /* cid: unique per user and room for the run (users are fresh each run) */
    if (mc_buf_appendf(out,
                       "{\"op\":\"send\",\"id\":%" PRIu64 ",\"room\":%" PRIu64 ",\"cid\":\"lg-%" PRIu64 "-%" PRIu64
                       "\",\"body\":\"",
                       id, room, user, k)
            != 0
        || lg_body_append(out, k, sent_us) != 0) {
        return -1;
    }
    return mc_buf_append_str(out, "\"}");
}

const lg_proto_t lg_proto_minichat = {
    .name = "minichat",
    .path = "/ws",
    .subprotocol = "minichat.v1",
    .auth_headers = mc_auth_headers,
    .make_room = mc_make_room,
    .parse = mc_parse,
    .encode_send = mc_encode_send,
};
