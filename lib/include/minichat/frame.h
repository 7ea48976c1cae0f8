/*
 * Length-prefixed framing for the unix socket between nginx workers and the
 * relay-worker: every frame is a 4-byte big-endian payload length followed by
 * the payload (one packed minichat.LocalFrame).  Pure code, no I/O.
 */
#ifndef MINICHAT_FRAME_H
#define MINICHAT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define MC_FRAME_HDR 4
#define MC_FRAME_MAX (4u * 1024 * 1024)

enum {
    MC_FRAME_TOO_LARGE = -1, /* the length exceeds the given maximum */
    MC_FRAME_AGAIN = 0,      /* more bytes are needed */
    MC_FRAME_OK = 1          /* a whole frame is in the buffer */
};

/* Looks at the start of buf.  Returns MC_FRAME_OK and sets *payload_len when a
 * whole frame (header + payload) is present, MC_FRAME_AGAIN when more bytes
 * are needed, MC_FRAME_TOO_LARGE when the announced length exceeds max. */
int mc_frame_parse(const uint8_t *buf, size_t len, size_t max, size_t *payload_len);

/* Writes the 4-byte header for a payload of len bytes. */
void mc_frame_put_header(uint8_t *out, uint32_t len);

#endif
