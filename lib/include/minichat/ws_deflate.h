/*
 * permessage-deflate (RFC 7692) codec on zlib: raw deflate, one message at
 * a time, the 0x00 0x00 0xff 0xff tail of a sync flush taken off on the way
 * out and put back on the way in (7.2.1, 7.2.2).  Pure code, no nginx.
 *
 * Compression never keeps context between messages (the server always
 * negotiates server_no_context_takeover): a deflater is reset before each
 * message, so one deflater serves any number of connections and a
 * message's compressed bytes suit every recipient with the same window.
 *
 * Inflation is bounded: output grows (doubling) only while the message is
 * within the caller's maximum, so a deflate bomb costs at most about twice
 * that maximum, never its inflated size.  An inflater either keeps its
 * context between messages (the client takes over context: one inflater
 * per connection) or is reset before each (shared by many connections).
 *
 * Memory (zlib 1.2.13, 64-bit): an inflater's state is about 7 KiB, plus
 * 2^bits bytes of window from its first message on (32 KiB at 15 bits); a
 * deflater at memLevel 8 and 15 bits about 256 KiB.
 */
#ifndef MINICHAT_WS_DEFLATE_H
#define MINICHAT_WS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

/* Results. */
enum {
    MC_WS_DEFLATE_OK = 0,
    MC_WS_DEFLATE_TOO_BIG = -1,  /* the inflated message exceeds the maximum */
    MC_WS_DEFLATE_BAD = -2,      /* not valid deflate data */
    MC_WS_DEFLATE_NOMEM = -3
};

typedef struct {
    z_stream zs;
    int ready;
} mc_ws_inflater_t;

typedef struct {
    z_stream zs;
    int ready;
} mc_ws_deflater_t;

/* Prepares an inflater for windows of up to `bits` (8..15; 8 is taken as 9,
 * the smallest zlib keeps).  Returns MC_WS_DEFLATE_OK or _NOMEM. */
int mc_ws_inflater_init(mc_ws_inflater_t *in, unsigned bits);
void mc_ws_inflater_free(mc_ws_inflater_t *in);

/* Inflates one whole message data[0..len) into *out (malloc'd, the
 * caller frees it; NULL when the message is empty) of *out_len bytes, at
 * most max.  reset: forget the previous message's context first (no
 * context takeover).  After an error the inflater must be reset before
 * its next message (context is lost: the connection is closed anyway). */
int mc_ws_inflate(mc_ws_inflater_t *in, const uint8_t *data, size_t len, size_t max, int reset, uint8_t **out,
                  size_t *out_len);

/* Prepares a deflater: level 1..9, window bits 9..15.  Returns
 * MC_WS_DEFLATE_OK or _NOMEM. */
int mc_ws_deflater_init(mc_ws_deflater_t *d, int level, unsigned bits);
void mc_ws_deflater_free(mc_ws_deflater_t *d);

/* Compresses one message with a fresh context into *out (malloc'd, the
 * caller frees it), leaving `reserve` bytes free in front of the
 * compressed bytes (room for a frame header); *out_len counts the
 * compressed bytes only.  Returns MC_WS_DEFLATE_OK or _NOMEM. */
int mc_ws_deflate(mc_ws_deflater_t *d, const uint8_t *data, size_t len, size_t reserve, uint8_t **out,
                  size_t *out_len);

#endif
