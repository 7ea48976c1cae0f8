/*
 * Redis Cluster key slots (see redis_slot.h).  The CRC runs bit by bit, with
 * no lookup table: keys here are a few dozen bytes, a table built on first
 * use would be a data race between the consumer's threads, and a constant
 * table is 512 bytes to get wrong.  The slot is the CRC's low 14 bits, as
 * Redis takes it (crc16 & 16383).
 */
#include "minichat/redis_slot.h"

uint16_t mc_crc16(const char *s, size_t n)
{
    uint16_t crc = 0;
    size_t i;
    int b;

    for (i = 0; i < n; i++) {
        crc ^= (uint16_t)((unsigned char)s[i] << 8);
        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

unsigned mc_redis_slot(const char *key, size_t n)
{
    size_t open, close;

    for (open = 0; open < n; open++) {
        if (key[open] == '{') {
            break;
        }
    }
    if (open == n) {
        return mc_crc16(key, n) & (MC_REDIS_SLOTS - 1);
    }
    for (close = open + 1; close < n; close++) {
        if (key[close] == '}') {
            break;
        }
    }
    /* no '}' after the '{', or nothing between them: the whole key */
    if (close == n || close == open + 1) {
        return mc_crc16(key, n) & (MC_REDIS_SLOTS - 1);
    }
    return mc_crc16(key + open + 1, close - open - 1) & (MC_REDIS_SLOTS - 1);
}
