/*
 * Redis Cluster key slots (see redis_slot.h).  The CRC runs bit by bit, with
 * no lookup table: keys here are a few dozen bytes, a table built on first
 * use would be a data race between the consumer's threads, and a constant
 * table is 512 bytes to get wrong.  The slot is the CRC's low 14 bits, as
 * Redis takes it (crc16 & 16383).
 */
#include <pthread.h>

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

/* The tag of each slot: "p" and a number in base 36, the smallest number
 * whose tag hashes to the slot (stored plus one; 0: not computed). */
static uint32_t slot_tags[MC_REDIS_SLOTS];
static pthread_once_t slot_tags_once = PTHREAD_ONCE_INIT;

static size_t slot_tag_format(uint32_t i, char *out)
{
    char digits[8];
    size_t n = 0, k;

    do {
        digits[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36];
        i /= 36;
    } while (i > 0);
    out[0] = 'p';
    for (k = 0; k < n; k++) {
        out[1 + k] = digits[n - 1 - k];
    }
    out[1 + n] = '\0';
    return 1 + n;
}

static void slot_tags_compute(void)
{
    char tag[MC_REDIS_SLOT_TAG_MAX];
    unsigned left = MC_REDIS_SLOTS, slot;
    uint32_t i;
    size_t n;

    /* every slot is covered well before 36^4 numbers (the unit test checks) */
    for (i = 0; left > 0 && i < 36u * 36 * 36 * 36; i++) {
        n = slot_tag_format(i, tag);
        slot = mc_crc16(tag, n) & (MC_REDIS_SLOTS - 1);
        if (slot_tags[slot] == 0) {
            slot_tags[slot] = i + 1;
            left--;
        }
    }
}

size_t mc_redis_slot_tag(unsigned slot, char *out)
{
    (void)pthread_once(&slot_tags_once, slot_tags_compute);
    slot &= MC_REDIS_SLOTS - 1;
    if (slot_tags[slot] == 0) {
        out[0] = '\0';
        return 0;
    }
    return slot_tag_format(slot_tags[slot] - 1, out);
}
