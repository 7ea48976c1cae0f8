/*
 * RFC 6455 WebSocket frame codec, free of nginx types so that it can be unit
 * tested on its own.  Client frames must be masked, server frames are never
 * masked.  The server side (the module) parses client frames and writes
 * server headers; the client side (bench/loadgen) does the opposite with
 * mc_ws_parse_server_header() and mc_ws_client_header().
 */
#ifndef MINICHAT_WS_H
#define MINICHAT_WS_H

#include <stddef.h>
#include <stdint.h>

/* mc_utf8_valid() for text frames and close reasons (it lives in utf8.c) */
#include "minichat/utf8.h"

enum {
    MC_WS_OP_CONT = 0x0,
    MC_WS_OP_TEXT = 0x1,
    MC_WS_OP_BINARY = 0x2,
    MC_WS_OP_CLOSE = 0x8,
    MC_WS_OP_PING = 0x9,
    MC_WS_OP_PONG = 0xa
};

/* Close codes used by MiniChat. */
enum {
    MC_WS_CLOSE_NORMAL = 1000,
    MC_WS_CLOSE_GOING_AWAY = 1001,
    MC_WS_CLOSE_PROTOCOL = 1002,
    MC_WS_CLOSE_UNSUPPORTED = 1003,
    MC_WS_CLOSE_BAD_DATA = 1007,
    MC_WS_CLOSE_POLICY = 1008,
    MC_WS_CLOSE_TOO_BIG = 1009,
    MC_WS_CLOSE_INTERNAL = 1011,
    MC_WS_CLOSE_TRY_LATER = 1013
};

/* Results of mc_ws_parse_header(). */
enum {
    MC_WS_AGAIN = 0,            /* need more bytes */
    MC_WS_OK = 1,               /* header parsed */
    MC_WS_ERR_RSV = -1,         /* reserved bits set */
    MC_WS_ERR_OPCODE = -2,      /* unknown opcode */
    MC_WS_ERR_UNMASKED = -3,    /* client frame without mask */
    MC_WS_ERR_CONTROL = -4,     /* control frame fragmented or > 125 bytes */
    MC_WS_ERR_LENGTH = -5,      /* non-minimal or 64-bit length with top bit set */
    MC_WS_ERR_TOO_BIG = -6,     /* payload longer than the allowed maximum */
    MC_WS_ERR_MASKED = -7       /* server frame with a mask (client side only) */
};

/* RSV1: the message is compressed (permessage-deflate, RFC 7692) */
#define MC_WS_RSV1 0x40

typedef struct {
    unsigned fin;
    unsigned rsv1;       /* set only when the caller allowed it */
    unsigned opcode;
    unsigned masked;
    uint8_t mask[4];
    size_t header_len;   /* bytes of header, including the mask key */
    uint64_t payload_len;
} mc_ws_frame_t;

/* Parses a client frame header at p[0..n).  max_payload bounds payload_len.
 * Every reserved bit is an error (MC_WS_ERR_RSV). */
int mc_ws_parse_header(const uint8_t *p, size_t n, uint64_t max_payload, mc_ws_frame_t *f);

/* The same, with the reserved bits in `rsv` (MC_WS_RSV1 once
 * permessage-deflate is negotiated) allowed on the first frame of a data
 * message: still an error on control and continuation frames (RFC 7692
 * 6.1). */
int mc_ws_parse_header_rsv(const uint8_t *p, size_t n, uint64_t max_payload, unsigned rsv, mc_ws_frame_t *f);

/* Parses a server frame header at p[0..n), for a client: the frame must not
 * be masked (MC_WS_ERR_MASKED) and every reserved bit is an error (no
 * extension is negotiated by the clients that use it).  f->mask is zero. */
int mc_ws_parse_server_header(const uint8_t *p, size_t n, uint64_t max_payload, mc_ws_frame_t *f);

/* Returns the close code that a parse error calls for. */
int mc_ws_error_close_code(int err);

/* Returns 1 when a peer may send this close code (RFC 6455 7.4), else 0. */
int mc_ws_close_code_valid(unsigned code);

/* XORs data with the mask; offset is the position of data[0] in the payload. */
void mc_ws_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t offset);

/* Writes an unmasked server frame header into out (at least 10 bytes) and
 * returns its length. */
size_t mc_ws_header(uint8_t *out, unsigned opcode, unsigned fin, uint64_t payload_len);

/* Writes a masked client frame header, the mask key included, into out (at
 * least 14 bytes) and returns its length.  The caller masks the payload
 * with mc_ws_unmask() (XOR is its own inverse). */
size_t mc_ws_client_header(uint8_t *out, unsigned opcode, unsigned fin, uint64_t payload_len, const uint8_t mask[4]);

/* Computes Sec-WebSocket-Accept for a Sec-WebSocket-Key; out gets 28 chars + NUL. */
void mc_ws_accept(const char *key, size_t key_len, char out[29]);

#endif
