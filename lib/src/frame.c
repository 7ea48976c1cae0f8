/*
 * Length-prefixed frames on the nginx <-> relay-worker unix socket.  The
 * reader never trusts the announced length: anything above the caller's
 * maximum is refused before a byte of payload is buffered.
 */
#include "minichat/frame.h"

int mc_frame_parse(const uint8_t *buf, size_t len, size_t max, size_t *payload_len)
{
    uint32_t n;

    if (len < MC_FRAME_HDR) {
        return MC_FRAME_AGAIN;
    }
    n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) | ((uint32_t)buf[2] << 8) | buf[3];
    if (n > max) {
        return MC_FRAME_TOO_LARGE;
    }
    if (len - MC_FRAME_HDR < n) {
        return MC_FRAME_AGAIN;
    }
    *payload_len = n;
    return MC_FRAME_OK;
}

void mc_frame_put_header(uint8_t *out, uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
}
