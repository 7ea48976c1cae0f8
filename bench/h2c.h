/*
 * h2c: the little of HTTP/2 (RFC 9113) a load generator needs to speak
 * cleartext HTTP/2 with prior knowledge to nginx (`listen ... http2;`
 * without ssl): the connection preface, GET requests as one HEADERS frame
 * each (HPACK literals without indexing, no Huffman, no dynamic table), frame
 * parsing, and the status of a response read from its header block.  Not a
 * client library: no flow control beyond opening the connection window
 * wide, no CONTINUATION, no request bodies.  Used by bench/ratelimit_load.c.
 */
#ifndef MINICHAT_BENCH_H2C_H
#define MINICHAT_BENCH_H2C_H

#include <stddef.h>
#include <stdint.h>

#define H2C_FRAME_HEAD 9

enum {
    H2C_DATA = 0x0,
    H2C_HEADERS = 0x1,
    H2C_RST_STREAM = 0x3,
    H2C_SETTINGS = 0x4,
    H2C_PING = 0x6,
    H2C_GOAWAY = 0x7,
    H2C_WINDOW_UPDATE = 0x8
};

enum { H2C_END_STREAM = 0x1, H2C_ACK = 0x1, H2C_END_HEADERS = 0x4, H2C_PADDED = 0x8, H2C_PRIORITY = 0x20 };

typedef struct {
    uint32_t len;   /* of the payload */
    uint8_t type;
    uint8_t flags;
    uint32_t stream;
    const uint8_t *payload;
} h2c_frame_t;

/* Writes the client preface, an empty SETTINGS frame and a WINDOW_UPDATE
 * that opens the connection's receive window to its maximum.  Returns the
 * length, or 0 when out is smaller than 64 bytes. */
size_t h2c_preface(uint8_t *out, size_t cap);

/* Writes one HEADERS frame (END_STREAM | END_HEADERS) for `GET path` with
 * the given :authority and, when authorization is not NULL, an
 * authorization header; its stream id is 0 until h2c_set_stream.  Returns
 * the frame's length, or 0 when it does not fit in cap. */
size_t h2c_get(uint8_t *out, size_t cap, const char *path, const char *authority, const char *authorization);

/* Sets the stream id of the frame at f. */
void h2c_set_stream(uint8_t *f, uint32_t stream);

/* Writes a SETTINGS frame with the ACK flag.  Returns its length (9). */
size_t h2c_settings_ack(uint8_t *out);

/* Writes a WINDOW_UPDATE of inc for the stream (0: the connection).
 * Returns its length (13). */
size_t h2c_window_update(uint8_t *out, uint32_t stream, uint32_t inc);

/* Reads the frame at the start of buf.  Returns 1 and fills f when buf holds
 * all of it, 0 when more bytes are needed, -1 when its length is over
 * max_payload. */
int h2c_frame(const uint8_t *buf, size_t len, size_t max_payload, h2c_frame_t *f);

/* Returns the :status of a HEADERS frame's payload (which must carry the
 * status as its first field, as RFC 9113 requires), or 0 when it is not
 * there in a form this reader knows. */
int h2c_status(const h2c_frame_t *f);

#endif
