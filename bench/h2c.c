/*
 * h2c: HTTP/2 framing for the benches (see h2c.h for what it leaves out).
 *
 * A request is one HEADERS frame whose fields are HPACK representations
 * that need no state: `:method GET` and `:scheme http` are indexed entries
 * of the static table; `:path`, `:authority` and `authorization` are
 * "literal without indexing" with an indexed name and a raw (not Huffman)
 * value, so the server's dynamic table is never touched and a frame built
 * once can be sent again under any stream id.  Responses are only counted:
 * their status is the first field of the header block, an indexed static
 * entry (200, 204, 206, 304, 400, 404, 500) or a literal with the name of
 * static entry 8, which is all nginx writes.
 */
#include "h2c.h"

#include <string.h>

static const char h2c_preface_bytes[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* The statuses of HPACK static entries 8 to 14. */
static const int h2c_static_status[] = {200, 204, 206, 304, 400, 404, 500};

static void h2c_head(uint8_t *out, uint32_t len, uint8_t type, uint8_t flags, uint32_t stream)
{
    out[0] = (uint8_t)(len >> 16);
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    out[3] = type;
    out[4] = flags;
    h2c_set_stream(out, stream);
}

void h2c_set_stream(uint8_t *f, uint32_t stream)
{
    f[5] = (uint8_t)((stream >> 24) & 0x7f);
    f[6] = (uint8_t)(stream >> 16);
    f[7] = (uint8_t)(stream >> 8);
    f[8] = (uint8_t)stream;
}

/* Appends an HPACK integer with an n-bit prefix whose high bits are `high`.
 * Returns the new position, or NULL when it does not fit before end. */
static uint8_t *h2c_int(uint8_t *p, uint8_t *end, uint8_t high, int n, size_t v)
{
    size_t max = ((size_t)1 << n) - 1;

    if (p >= end) {
        return NULL;
    }
    if (v < max) {
        *p++ = (uint8_t)(high | v);
        return p;
    }
    *p++ = (uint8_t)(high | max);
    v -= max;
    while (v >= 128) {
        if (p >= end) {
            return NULL;
        }
        *p++ = (uint8_t)(0x80 | (v & 0x7f));
        v >>= 7;
    }
    if (p >= end) {
        return NULL;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Appends a literal field without indexing: static name index, raw value.
 * Returns the new position, or NULL when it does not fit. */
static uint8_t *h2c_literal(uint8_t *p, uint8_t *end, size_t name_index, const char *value)
{
    size_t vl = strlen(value);

    p = h2c_int(p, end, 0x00, 4, name_index);
    if (p != NULL) {
        p = h2c_int(p, end, 0x00, 7, vl);
    }
    if (p == NULL || (size_t)(end - p) < vl) {
        return NULL;
    }
    memcpy(p, value, vl);
    return p + vl;
}

size_t h2c_preface(uint8_t *out, size_t cap)
{
    size_t n = sizeof(h2c_preface_bytes) - 1;

    if (cap < 64) {
        return 0;
    }
    memcpy(out, h2c_preface_bytes, n);
    h2c_head(out + n, 0, H2C_SETTINGS, 0, 0);
    n += H2C_FRAME_HEAD;
    /* from 65535 (the initial window) to 2^31 - 1 */
    n += h2c_window_update(out + n, 0, 0x7fffffffu - 65535u);
    return n;
}

size_t h2c_get(uint8_t *out, size_t cap, const char *path, const char *authority, const char *authorization)
{
    uint8_t *p = out + H2C_FRAME_HEAD, *end = out + cap;

    if (cap < H2C_FRAME_HEAD + 2) {
        return 0;
    }
    *p++ = 0x80 | 2;   /* :method GET */
    *p++ = 0x80 | 6;   /* :scheme http */
    p = h2c_literal(p, end, 4, path);
    if (p != NULL) {
        p = h2c_literal(p, end, 1, authority);
    }
    if (p != NULL && authorization != NULL) {
        p = h2c_literal(p, end, 23, authorization);
    }
    if (p == NULL || p - out - H2C_FRAME_HEAD > 16384) {
        return 0;
    }
    h2c_head(out, (uint32_t)(p - out - H2C_FRAME_HEAD), H2C_HEADERS, H2C_END_STREAM | H2C_END_HEADERS, 0);
    return (size_t)(p - out);
}

size_t h2c_settings_ack(uint8_t *out)
{
    h2c_head(out, 0, H2C_SETTINGS, H2C_ACK, 0);
    return H2C_FRAME_HEAD;
}

size_t h2c_window_update(uint8_t *out, uint32_t stream, uint32_t inc)
{
    h2c_head(out, 4, H2C_WINDOW_UPDATE, 0, stream);
    out[9] = (uint8_t)((inc >> 24) & 0x7f);
    out[10] = (uint8_t)(inc >> 16);
    out[11] = (uint8_t)(inc >> 8);
    out[12] = (uint8_t)inc;
    return H2C_FRAME_HEAD + 4;
}

int h2c_frame(const uint8_t *buf, size_t len, size_t max_payload, h2c_frame_t *f)
{
    if (len < H2C_FRAME_HEAD) {
        return 0;
    }
    f->len = (uint32_t)buf[0] << 16 | (uint32_t)buf[1] << 8 | buf[2];
    if (f->len > max_payload) {
        return -1;
    }
    if (len < H2C_FRAME_HEAD + (size_t)f->len) {
        return 0;
    }
    f->type = buf[3];
    f->flags = buf[4];
    f->stream = ((uint32_t)buf[5] & 0x7f) << 24 | (uint32_t)buf[6] << 16 | (uint32_t)buf[7] << 8 | buf[8];
    f->payload = buf + H2C_FRAME_HEAD;
    return 1;
}

int h2c_status(const h2c_frame_t *f)
{
    const uint8_t *p = f->payload, *end = f->payload + f->len;
    int status = 0, i;

    if (f->flags & H2C_PADDED) {
        if (p >= end || *p >= (size_t)(end - p)) {
            return 0;
        }
        end -= *p++;
    }
    if (f->flags & H2C_PRIORITY) {
        p += 5;
    }
    if (p >= end) {
        return 0;
    }
    if (*p & 0x80) {
        i = *p & 0x7f;
        return i >= 8 && i <= 14 ? h2c_static_status[i - 8] : 0;
    }
    /* a literal with the name of entry 8: incremental indexing (0x48),
     * without indexing (0x08) or never indexed (0x18), a raw 3-digit value */
    if (*p != 0x48 && *p != 0x08 && *p != 0x18) {
        return 0;
    }
    if (end - p < 5 || p[1] != 3) {
        return 0;
    }
    for (i = 2; i < 5; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
        status = status * 10 + (p[i] - '0');
    }
    return status;
}
