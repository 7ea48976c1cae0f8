/*
 * libFuzzer target: the WebSocket frame codec (lib/src/ws.c) driven the way
 * the module's reader drives it (ngx_http_minichat_ws.c): client bytes arrive
 * in arbitrary pieces into a bounded input buffer, every complete frame is
 * parsed, unmasked and handled, fragments are assembled into a message whose
 * UTF-8 is checked piece by piece as it grows.
 *
 * Beyond "no crash, no leak, no sanitizer report", it checks:
 *  - a parsed header is consistent (its length is 6, 8 or 14, control frames
 *    are final and short, no payload above the maximum) and every shorter
 *    prefix of it asks for more bytes;
 *  - mc_ws_header() writes a header that parses back to the same frame;
 *  - unmasking a payload in two pieces (with the offset) equals unmasking
 *    it whole;
 *  - the piecewise UTF-8 verdict on a fragmented text message equals the
 *    whole-message verdict of mc_utf8_valid(), and a parse error maps to
 *    1002 or 1009 (1009 exactly for a payload above the maximum).
 *
 * Input: 4 bytes for the cuts (chunks.h), 1 byte for the maximum message
 * size, then the client's byte stream.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunks.h"
#include "minichat/ws.h"

#define WS_MAX_HEADER 14

typedef struct {
    uint8_t *in;
    size_t in_len, in_cap;
    uint64_t max;
    uint8_t *msg;
    size_t msg_len, msg_checked;
    unsigned msg_opcode;
    int closed;
    int close_code;
} conn_t;

static void check_header(const uint8_t *p, size_t n, uint64_t max, const mc_ws_frame_t *f)
{
    mc_ws_frame_t g;
    uint8_t out[WS_MAX_HEADER];
    size_t k, hl;

    if (f->header_len != 6 && f->header_len != 8 && f->header_len != 14) {
        abort();
    }
    if (f->header_len > n || f->payload_len > max || !f->masked) {
        abort();
    }
    if (f->opcode >= 8 && (!f->fin || f->payload_len > 125)) {
        abort();
    }
    for (k = 0; k < f->header_len; k++) {
        if (mc_ws_parse_header(p, k, max, &g) != MC_WS_AGAIN) {
            abort();
        }
    }

    /* the server's encoder, masked as a client would send it, reads back */
    hl = mc_ws_header(out, f->opcode, f->fin, f->payload_len);
    if (hl + 4 != f->header_len) {
        abort();
    }
    out[1] |= 0x80;
    memcpy(out + hl, f->mask, 4);
    if (mc_ws_parse_header(out, hl + 4, max, &g) != MC_WS_OK || g.fin != f->fin || g.opcode != f->opcode
        || g.payload_len != f->payload_len || g.header_len != f->header_len || memcmp(g.mask, f->mask, 4) != 0) {
        abort();
    }
}

static void check_unmask(const uint8_t *payload, size_t n, const uint8_t mask[4])
{
    uint8_t *a, *b;
    size_t cut;

    if (n == 0) {
        return;
    }
    a = malloc(n);
    b = malloc(n);
    if (a == NULL || b == NULL) {
        abort();
    }
    memcpy(a, payload, n);
    memcpy(b, payload, n);
    mc_ws_unmask(a, n, mask, 0);
    cut = (payload[0] * 7u) % n;
    mc_ws_unmask(b, cut, mask, 0);
    mc_ws_unmask(b + cut, n - cut, mask, cut);
    if (memcmp(a, b, n) != 0) {
        abort();
    }
    free(a);
    free(b);
}

static void conn_close(conn_t *c, int code)
{
    c->closed = 1;
    c->close_code = code;
}

/* A whole unfragmented message, or the last fragment of one. */
static void deliver(conn_t *c, unsigned opcode, const uint8_t *data, size_t len)
{
    size_t done = 0;
    int whole, part;

    if (opcode != MC_WS_OP_TEXT) {
        return;
    }
    whole = mc_utf8_valid(data, len);
    part = mc_utf8_valid_part(data, len, &done);
    if ((part && done == len) != whole) {
        abort();
    }
    if (!whole) {
        conn_close(c, MC_WS_CLOSE_BAD_DATA);
    }
}

static void fragment(conn_t *c, const uint8_t *payload, size_t len, unsigned fin)
{
    size_t done;
    uint8_t *p;
    int ok;

    if (c->msg_len + len > c->max) {
        conn_close(c, MC_WS_CLOSE_TOO_BIG);
        return;
    }
    p = realloc(c->msg, c->msg_len + len + 1);
    if (p == NULL) {
        abort();
    }
    c->msg = p;
    if (len) {
        memcpy(c->msg + c->msg_len, payload, len);
    }
    c->msg_len += len;

    if (c->msg_opcode == MC_WS_OP_TEXT) {
        ok = mc_utf8_valid_part(c->msg + c->msg_checked, c->msg_len - c->msg_checked, &done)
             && !(fin && c->msg_checked + done != c->msg_len);
        if (!ok) {
            /* what the pieces refused, the whole refuses */
            if (mc_utf8_valid(c->msg, c->msg_len)) {
                abort();
            }
            conn_close(c, MC_WS_CLOSE_BAD_DATA);
            return;
        }
        c->msg_checked += done;
        if (c->msg_len - c->msg_checked > 3 || !mc_utf8_valid(c->msg, c->msg_checked)) {
            abort();
        }
        if (fin && !mc_utf8_valid(c->msg, c->msg_len)) {
            abort();
        }
    }
    if (fin) {
        deliver(c, c->msg_opcode, c->msg, c->msg_len);
        c->msg_len = 0;
        c->msg_checked = 0;
        c->msg_opcode = 0;
    }
}

static void frame(conn_t *c, const mc_ws_frame_t *f, const uint8_t *payload)
{
    size_t len = f->payload_len;
    unsigned code;

    switch (f->opcode) {
    case MC_WS_OP_PING:
    case MC_WS_OP_PONG:
        return;
    case MC_WS_OP_CLOSE:
        if (len == 1) {
            conn_close(c, MC_WS_CLOSE_PROTOCOL);
            return;
        }
        code = MC_WS_CLOSE_NORMAL;
        if (len >= 2) {
            code = ((unsigned)payload[0] << 8) | payload[1];
            if (!mc_ws_close_code_valid(code)) {
                conn_close(c, MC_WS_CLOSE_PROTOCOL);
                return;
            }
            if (!mc_utf8_valid(payload + 2, len - 2)) {
                conn_close(c, MC_WS_CLOSE_BAD_DATA);
                return;
            }
        }
        conn_close(c, (int)code);
        return;
    case MC_WS_OP_TEXT:
    case MC_WS_OP_BINARY:
        if (c->msg_opcode) {
            conn_close(c, MC_WS_CLOSE_PROTOCOL);
            return;
        }
        if (f->fin) {
            deliver(c, f->opcode, payload, len);
            return;
        }
        c->msg_opcode = f->opcode;
        c->msg_checked = 0;
        fragment(c, payload, len, 0);
        return;
    default:
        if (!c->msg_opcode) {
            conn_close(c, MC_WS_CLOSE_PROTOCOL);
            return;
        }
        fragment(c, payload, len, f->fin);
    }
}

/* Handles every complete frame in c->in, as ngx_http_minichat_ws_process. */
static void process(conn_t *c)
{
    mc_ws_frame_t f;
    size_t off = 0, total;
    int rc, code;

    while (off < c->in_len && !c->closed) {
        rc = mc_ws_parse_header(c->in + off, c->in_len - off, c->max, &f);
        if (rc == MC_WS_AGAIN) {
            break;
        }
        if (rc != MC_WS_OK) {
            code = mc_ws_error_close_code(rc);
            if (rc < MC_WS_ERR_TOO_BIG || code != (rc == MC_WS_ERR_TOO_BIG ? MC_WS_CLOSE_TOO_BIG : MC_WS_CLOSE_PROTOCOL)) {
                abort();
            }
            conn_close(c, code);
            return;
        }
        check_header(c->in + off, c->in_len - off, c->max, &f);
        total = f.header_len + f.payload_len;
        if (c->in_len - off < total) {
            break;
        }
        check_unmask(c->in + off + f.header_len, f.payload_len, f.mask);
        mc_ws_unmask(c->in + off + f.header_len, f.payload_len, f.mask, 0);
        frame(c, &f, c->in + off + f.header_len);
        off += total;
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_chunks_t cuts;
    conn_t c;
    size_t n;

    fuzz_chunks_init(&cuts, &data, &size);
    if (size == 0) {
        return 0;
    }
    memset(&c, 0, sizeof(c));
    /* 0 to 16320 bytes: small enough that the fuzzer reaches the limit */
    c.max = (uint64_t)data[0] * 64;
    data++;
    size--;
    c.in_cap = c.max + WS_MAX_HEADER;
    c.in = malloc(c.in_cap);
    if (c.in == NULL) {
        abort();
    }

    while (size > 0 && !c.closed) {
        n = fuzz_chunks_next(&cuts, size);
        if (n > c.in_cap - c.in_len) {
            n = c.in_cap - c.in_len;
        }
        if (n == 0) {
            /* the buffer holds max + 14 bytes: any frame the parser takes
             * fits, so a full buffer always starts with a complete frame */
            abort();
        }
        memcpy(c.in + c.in_len, data, n);
        c.in_len += n;
        data += n;
        size -= n;
        process(&c);
    }

    free(c.in);
    free(c.msg);
    return 0;
}
