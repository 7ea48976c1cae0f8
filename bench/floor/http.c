/*
 * The floor's HTTP side: one request per connection, then either the
 * WebSocket upgrade (GET /ws) or one answer and a close.
 *
 *   GET /ws         an HS256 token (Authorization: Bearer, or ?token=)
 *                   signed with --secret-file; 101 with the subprotocol
 *                   minichat.v1 when offered, then {"op":"hello",...}
 *   POST /api/rooms {"members":[...]} as MiniChat's (at most 1000 positive
 *                   ids; the caller is added): 201 {"id":N,"existed":false}
 *
 * Anything else is answered 404; a malformed request 400, a bad token 401,
 * a request over FLOOR_MAX_REQUEST bytes 413 -- each with a JSON error
 * and a close.  The request is read only once it is whole in the
 * connection's buffer (at most FLOOR_MAX_REQUEST bytes, a timeout in
 * floor.c), so there is no parser state to keep.  Idempotency-Key is not
 * honoured: the floor never answers 503, so the load generator never
 * retries a room.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "minichat/ws.h"

#include "floor.h"

typedef struct {
    const char *method, *target, *headers, *body;
    size_t method_len, target_len, headers_len, body_len;
} request_t;

/* Answers status with a JSON error body and closes after the write.
 * Returns -1 (the connection is done with HTTP). */
static int answer_error(floor_t *fl, floor_conn_t *c, int status, const char *reason, const char *message)
{
    mc_buf_t b = MC_BUF_INIT;

    fl->st.bad_input++;
    if (mc_buf_appendf(&b,
                       "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       "Content-Length: %zu\r\n\r\n{\"error\":\"%s\"}",
                       status, reason, strlen(message) + 12, message)
            != 0
        || floor_queue(fl, c, b.data, b.len) != 0) {
        mc_buf_free(&b);
        floor_close(fl, c);
        return -1;
    }
    mc_buf_free(&b);
    floor_close_after_write(fl, c);
    return -1;
}

/* The value of header name (case-insensitive), trimmed, or NULL. */
static const char *header(const request_t *rq, const char *name, size_t *vlen)
{
    const char *p = rq->headers, *end = rq->headers + rq->headers_len, *eol, *v;
    size_t nl = strlen(name);

    while (p < end) {
        eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL) {
            eol = end;
        }
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (eol > v && (eol[-1] == ' ' || eol[-1] == '\t')) {
                eol--;
            }
            *vlen = (size_t)(eol - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* 1 when the header's value holds word (case-insensitive). */
static int header_has(const request_t *rq, const char *name, const char *word)
{
    size_t vlen, wl = strlen(word), i;
    const char *v = header(rq, name, &vlen);

    for (i = 0; v != NULL && i + wl <= vlen; i++) {
        if (strncasecmp(v + i, word, wl) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The token's user, or 0 with *why. */
static uint64_t token_user(floor_t *fl, const request_t *rq, const char **why)
{
    const char *t = NULL, *q;
    mc_jwt_claims_t claims;
    size_t len = 0, vlen;

    q = header(rq, "Authorization", &vlen);
    if (q != NULL && vlen > 7 && strncasecmp(q, "Bearer ", 7) == 0) {
        t = q + 7;
        len = vlen - 7;
    } else {
        q = memchr(rq->target, '?', rq->target_len);
        while (q != NULL && q < rq->target + rq->target_len) {
            q++;
            if ((size_t)(rq->target + rq->target_len - q) > 6 && memcmp(q, "token=", 6) == 0) {
                t = q + 6;
                while (t + len < rq->target + rq->target_len && t[len] != '&') {
                    len++;
                }
                break;
            }
            q = memchr(q, '&', (size_t)(rq->target + rq->target_len - q));
        }
    }
    if (t == NULL) {
        *why = "no token";
        return 0;
    }
    if (mc_jwt_verify(fl->key, t, len, (int64_t)time(NULL), &claims, why) != 0) {
        return 0;
    }
    return claims.sub;
}

static int upgrade(floor_t *fl, floor_conn_t *c, const request_t *rq)
{
    char accept[29], hello[160];
    const char *key, *version, *why = "";
    floor_user_t *u;
    mc_buf_t b = MC_BUF_INIT;
    uint64_t user;
    size_t klen, vlen;
    int n, rc;

    key = header(rq, "Sec-WebSocket-Key", &klen);
    version = header(rq, "Sec-WebSocket-Version", &vlen);
    if (!header_has(rq, "Upgrade", "websocket") || key == NULL || klen == 0 || version == NULL || vlen != 2
        || memcmp(version, "13", 2) != 0) {
        return answer_error(fl, c, 400, "Bad Request", "a WebSocket upgrade (version 13) is expected");
    }
    user = token_user(fl, rq, &why);
    if (user == 0) {
        return answer_error(fl, c, 401, "Unauthorized", why);
    }
    u = floor_user(fl, user);
    if (u == NULL) {
        return answer_error(fl, c, 503, "Service Unavailable", "too many users");
    }
    mc_ws_accept(key, klen, accept);
    rc = mc_buf_appendf(&b,
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                        accept,
                        header_has(rq, "Sec-WebSocket-Protocol", "minichat.v1")
                            ? "Sec-WebSocket-Protocol: minichat.v1\r\n"
                            : "");
    n = snprintf(hello, sizeof(hello),
                 "{\"op\":\"hello\",\"sid\":\"%016" PRIx64 "\",\"user\":%" PRIu64 ",\"node\":\"%s\",\"resumed\":false}",
                 fl->st.upgrades + 1, user, fl->node);
    if (rc != 0 || floor_queue(fl, c, b.data, b.len) != 0
        || floor_queue_frame(fl, c, MC_WS_OP_TEXT, hello, (size_t)n) != 0) {
        mc_buf_free(&b);
        floor_close(fl, c);
        return -1;
    }
    mc_buf_free(&b);
    fl->st.upgrades++;
    c->state = FC_WS;
    floor_user_attach(c, u);
    return 0;
}

static int create_room(floor_t *fl, floor_conn_t *c, const request_t *rq)
{
    uint64_t members[FLOOR_MAX_MEMBERS], owner, id;
    const char *why = "";
    char err[160], ans[256];
    json_error_t jerr;
    json_t *req, *arr, *v;
    size_t i, n;
    int len;

    owner = token_user(fl, rq, &why);
    if (owner == 0) {
        return answer_error(fl, c, 401, "Unauthorized", why);
    }
    req = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &jerr);
    arr = req ? json_object_get(req, "members") : NULL;
    if (!json_is_array(arr) || json_array_size(arr) > FLOOR_MAX_MEMBERS) {
        json_decref(req);
        return answer_error(fl, c, 400, "Bad Request", "\\\"members\\\" must be an array of at most 1000 user ids");
    }
    n = json_array_size(arr);
    for (i = 0; i < n; i++) {
        v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            json_decref(req);
            return answer_error(fl, c, 400, "Bad Request", "\\\"members\\\" must hold positive integers");
        }
        members[i] = (uint64_t)json_integer_value(v);
    }
    json_decref(req);
    if (floor_room_create(fl, owner, members, n, &id, err, sizeof(err)) != 0) {
        return answer_error(fl, c, 503, "Service Unavailable", err);
    }
    len = snprintf(ans, sizeof(ans), "{\"id\":%" PRIu64 ",\"existed\":false}", id);
    mc_buf_reset(&fl->frame);
    if (mc_buf_appendf(&fl->frame,
                       "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       "Content-Length: %d\r\n\r\n%s",
                       len, ans)
            != 0
        || floor_queue(fl, c, fl->frame.data, fl->frame.len) != 0) {
        floor_close(fl, c);
        return -1;
    }
    floor_close_after_write(fl, c);
    return -1;
}

int floor_http(floor_t *fl, floor_conn_t *c)
{
    const char *p = c->in.data, *hend, *sp1, *sp2, *eol, *cl;
    size_t hlen, vlen, plen;
    request_t rq;
    long clen = 0;
    char num[24];
    int rc;

    hend = memmem(p, c->in.len, "\r\n\r\n", 4);
    if (hend == NULL) {
        if (c->in.len > FLOOR_MAX_REQUEST) {
            return answer_error(fl, c, 413, "Payload Too Large", "request headers too large");
        }
        return 0;
    }
    hlen = (size_t)(hend + 4 - p);
    memset(&rq, 0, sizeof(rq));
    eol = memmem(p, hlen, "\r\n", 2);
    sp1 = memchr(p, ' ', (size_t)(eol - p));
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (sp2 == NULL || (size_t)(eol - sp2) != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        return answer_error(fl, c, 400, "Bad Request", "not an HTTP/1.x request line");
    }
    rq.method = p;
    rq.method_len = (size_t)(sp1 - p);
    rq.target = sp1 + 1;
    rq.target_len = (size_t)(sp2 - sp1 - 1);
    rq.headers = eol + 2;
    rq.headers_len = (size_t)(hend - eol - 2);
    cl = header(&rq, "Content-Length", &vlen);
    if (cl != NULL) {
        if (vlen == 0 || vlen >= sizeof(num) || strspn(cl, "0123456789") < vlen) {
            return answer_error(fl, c, 400, "Bad Request", "bad Content-Length");
        }
        memcpy(num, cl, vlen);
        num[vlen] = '\0';
        clen = strtol(num, NULL, 10);
        if (clen > FLOOR_MAX_REQUEST || hlen + (size_t)clen > FLOOR_MAX_REQUEST) {
            return answer_error(fl, c, 413, "Payload Too Large", "request too large");
        }
    }
    if (c->in.len < hlen + (size_t)clen) {
        return 0;
    }
    rq.body = p + hlen;
    rq.body_len = (size_t)clen;
    plen = strcspn(rq.target, "? ");
    if (rq.method_len == 3 && memcmp(rq.method, "GET", 3) == 0 && plen == 3 && memcmp(rq.target, "/ws", 3) == 0) {
        rc = upgrade(fl, c, &rq);
        if (rc == 0) {
            mc_buf_consume(&c->in, hlen + (size_t)clen);
        }
        return rc;
    }
    if (rq.method_len == 4 && memcmp(rq.method, "POST", 4) == 0 && plen == 10
        && memcmp(rq.target, "/api/rooms", 10) == 0) {
        return create_room(fl, c, &rq);
    }
    return answer_error(fl, c, 404, "Not Found", "the floor serves GET /ws and POST /api/rooms only");
}
