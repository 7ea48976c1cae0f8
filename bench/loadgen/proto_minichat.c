/*
 * MiniChat's client protocol v1 (docs/protocol.md) for the load generator:
 * a JWT in `Authorization: Bearer`, rooms made with `POST /api/rooms`,
 * `send` requests out, `hello` / `msg` / `ack` / `error` in.
 *
 * The frames are read by looking for the fields the load generator needs,
 * not through a JSON tree: the server writes them, the checks are on
 * numbers, and a hundred thousand connections make parsing cost count.
 * The body of a message the load generator sent is "lg <k> <sent_us>"
 * (no character that JSON escapes), so it is read the same way; any other
 * body (a system message) is reported as not ours.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "minichat/jwt.h"

#include "loadgen.h"

#define BODY_TAG "lg "

/* Finds key (with its quotes and colon) in p[0..n); returns the byte after
 * it or NULL. */
static const char *field(const char *p, size_t n, const char *key)
{
    const char *f = memmem(p, n, key, strlen(key));

    return f ? f + strlen(key) : NULL;
}

/* Reads an unsigned decimal at q (inside p[0..n)).  Returns 0 or -1. */
static int number(const char *p, size_t n, const char *q, uint64_t *v)
{
    const char *end = p + n;
    uint64_t x = 0;

    if (q == NULL || q >= end || *q < '0' || *q > '9') {
        return -1;
    }
    while (q < end && *q >= '0' && *q <= '9') {
        x = x * 10 + (uint64_t)(*q - '0');
        q++;
    }
    *v = x;
    return 0;
}

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
        if (number(ans.data, ans.len, field(ans.data, ans.len, "\"id\":"), &id) == 0) {
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
    const char *b;
    uint64_t v;

    memset(ev, 0, sizeof(*ev));
    if (n < 10 || p[0] != '{') {
        return -1;
    }
    if (field(p, n, "\"op\":\"msg\"")) {
        ev->type = LG_EV_MSG;
        if (number(p, n, field(p, n, "\"room\":"), &ev->room) != 0
            || number(p, n, field(p, n, "\"seq\":"), &ev->seq) != 0) {
            return -1;
        }
        b = field(p, n, "\"body\":\"" BODY_TAG);
        if (b != NULL && number(p, n, b, &ev->k) == 0) {
            b = memchr(b, ' ', (size_t)(p + n - b));
            if (b != NULL && number(p, n, b + 1, &v) == 0) {
                ev->sent_us = (int64_t)v;
                ev->ours = 1;
            }
        }
        return 0;
    }
    if (field(p, n, "\"op\":\"ack\"")) {
        ev->type = LG_EV_ACK;
        if (number(p, n, field(p, n, "\"room\":"), &ev->room) != 0
            || number(p, n, field(p, n, "\"seq\":"), &ev->seq) != 0) {
            return -1;
        }
        return 0;
    }
    if (field(p, n, "\"op\":\"hello\"")) {
        ev->type = LG_EV_READY;
        return 0;
    }
    if (field(p, n, "\"op\":\"error\"")) {
        ev->type = LG_EV_ERROR;
        return 0;
    }
    if (field(p, n, "\"op\":\"")) {
        ev->type = LG_EV_OTHER; /* presence, read, typing, ... */
        return 0;
    }
    return -1;
}

static int mc_encode_send(uint64_t room, uint64_t user, uint64_t k, uint64_t id, int64_t sent_us, mc_buf_t *out)
{
    /* cid: unique per user and room for the run (users are fresh each run) */
    return mc_buf_appendf(out,
                          "{\"op\":\"send\",\"id\":%" PRIu64 ",\"room\":%" PRIu64 ",\"cid\":\"lg-%" PRIu64 "-%" PRIu64
                          "\",\"body\":\"" BODY_TAG "%" PRIu64 " %" PRId64 "\"}",
                          id, room, user, k, k, sent_us);
}

const lg_proto_t lg_proto_minichat = {
    "minichat", "minichat.v1", mc_auth_headers, NULL, mc_make_room, mc_parse, mc_encode_send,
};
