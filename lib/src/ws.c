/*
 * RFC 6455 frame codec.  Mostly the server side; the client side (a frame
 * from a server, a masked header) is here too for the load generator in
 * bench/loadgen/, so that both directions share one parser.
 *
 * The parser only looks at the header; the caller keeps the bytes and unmasks
 * the payload in place once it has all of it (or piece by piece: unmasking
 * takes the offset inside the payload).  Every protocol violation maps to a
 * distinct error so the connection can be closed with the right code.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "minichat/ws.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static int parse_header(const uint8_t *p, size_t n, uint64_t max_payload, unsigned rsv, unsigned from_client,
                        mc_ws_frame_t *f);

int mc_ws_parse_header(const uint8_t *p, size_t n, uint64_t max_payload, mc_ws_frame_t *f)
{
    return mc_ws_parse_header_rsv(p, n, max_payload, 0, f);
}

int mc_ws_parse_header_rsv(const uint8_t *p, size_t n, uint64_t max_payload, unsigned rsv, mc_ws_frame_t *f)
{
    return parse_header(p, n, max_payload, rsv, 1, f);
}

int mc_ws_parse_server_header(const uint8_t *p, size_t n, uint64_t max_payload, mc_ws_frame_t *f)
{
    return parse_header(p, n, max_payload, 0, 0, f);
}

/* The header parser of both directions: a client's frames must be masked
 * (from_client 1), a server's must not (0; its mask stays zero). */
static int parse_header(const uint8_t *p, size_t n, uint64_t max_payload, unsigned rsv, unsigned from_client,
                        mc_ws_frame_t *f)
{
    uint64_t len;
    size_t need = 2;
    int i;

    if (n < 2) {
        return MC_WS_AGAIN;
    }

    f->fin = p[0] >> 7;
    f->opcode = p[0] & 0x0f;
    f->masked = p[1] >> 7;
    len = p[1] & 0x7f;

    f->rsv1 = (p[0] & MC_WS_RSV1) != 0;
    if (p[0] & 0x70 & ~rsv) {
        return MC_WS_ERR_RSV;
    }
    if (f->rsv1 && f->opcode != MC_WS_OP_TEXT && f->opcode != MC_WS_OP_BINARY) {
        return MC_WS_ERR_RSV;
    }
    switch (f->opcode) {
    case MC_WS_OP_CONT:
    case MC_WS_OP_TEXT:
    case MC_WS_OP_BINARY:
        break;
    case MC_WS_OP_CLOSE:
    case MC_WS_OP_PING:
    case MC_WS_OP_PONG:
        if (!f->fin || len > 125) {
            return MC_WS_ERR_CONTROL;
        }
        break;
    default:
        return MC_WS_ERR_OPCODE;
    }
    if (from_client && !f->masked) {
        return MC_WS_ERR_UNMASKED;
    }
    if (!from_client && f->masked) {
        return MC_WS_ERR_MASKED;
    }

    if (len == 126) {
        need += 2;
    } else if (len == 127) {
        need += 8;
    }
    if (from_client) {
        need += 4;
    }
    if (n < need) {
        return MC_WS_AGAIN;
    }

    if (len == 126) {
        len = ((uint64_t)p[2] << 8) | p[3];
        if (len < 126) {
            return MC_WS_ERR_LENGTH;
        }
    } else if (len == 127) {
        len = 0;
        for (i = 0; i < 8; i++) {
            len = (len << 8) | p[2 + i];
        }
        if (len >> 63 || len <= 0xffff) {
            return MC_WS_ERR_LENGTH;
        }
    }
    if (len > max_payload) {
        return MC_WS_ERR_TOO_BIG;
    }

    if (from_client) {
        memcpy(f->mask, p + need - 4, 4);
    } else {
        memset(f->mask, 0, 4);
    }
    f->header_len = need;
    f->payload_len = len;
    return MC_WS_OK;
}

int mc_ws_error_close_code(int err)
{
    switch (err) {
    case MC_WS_ERR_TOO_BIG:
        return MC_WS_CLOSE_TOO_BIG;
    default:
        return MC_WS_CLOSE_PROTOCOL;
    }
}

int mc_ws_close_code_valid(unsigned code)
{
    /* RFC 6455 7.4: 1000-1003 and 1007-1014 are defined for the wire (1004
     * is reserved, 1005, 1006 and 1015 must never be sent); 1016-2999 are
     * for future extensions of the protocol; 3000-4999 are for libraries and
     * applications */
    if (code >= 3000 && code <= 4999) {
        return 1;
    }
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}

void mc_ws_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t offset)
{
    size_t i;

    for (i = 0; i < n; i++) {
        data[i] ^= mask[(offset + i) & 3];
    }
}

size_t mc_ws_header(uint8_t *out, unsigned opcode, unsigned fin, uint64_t payload_len)
{
    int i;

    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (i = 0; i < 8; i++) {
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    }
    return 10;
}

size_t mc_ws_client_header(uint8_t *out, unsigned opcode, unsigned fin, uint64_t payload_len, const uint8_t mask[4])
{
    size_t n = mc_ws_header(out, opcode, fin, payload_len);

    out[1] |= 0x80;
    memcpy(out + n, mask, 4);
    return n + 4;
}

void mc_ws_accept(const char *key, size_t key_len, char out[29])
{
    unsigned char digest[SHA_DIGEST_LENGTH], buf[128 + sizeof(WS_GUID)];
    unsigned int dlen = 0;

    /* RFC 6455 keys are 24 characters; anything longer is cut, never overrun */
    if (key_len > 128) {
        key_len = 128;
    }
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, WS_GUID, sizeof(WS_GUID) - 1);
    EVP_Digest(buf, key_len + sizeof(WS_GUID) - 1, digest, &dlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    out[28] = '\0';
}
