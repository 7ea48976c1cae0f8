/*
 * Redis Cluster key slots: CRC16 (XMODEM: polynomial 0x1021, initial value
 * 0, no reflection) of the key modulo 16384, hashed over the hashtag when the
 * key has one.  The hashtag rule is Redis's own (cluster.c keyHashSlot): the
 * first '{', then the first '}' after it; when something lies between them
 * only that is hashed, otherwise ("{}", no '}') the whole key is.  So
 * "foo{}{bar}" hashes the whole key and "foo{{bar}}zap" hashes "{bar".
 * Pure code.
 */
#ifndef MINICHAT_REDIS_SLOT_H
#define MINICHAT_REDIS_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define MC_REDIS_SLOTS 16384

/* Returns the CRC16-XMODEM of s[0..n). */
uint16_t mc_crc16(const char *s, size_t n);

/* Returns the cluster slot (0..16383) of the key s[0..n). */
unsigned mc_redis_slot(const char *key, size_t n);

/* A short hashtag for each slot: "{<tag>}:x" lands on slot `slot`, so a
 * script on a room's slot can also write a per-slot key (the module's index
 * of messages not yet known durable).  The same tags in every process
 * (computed once, the first call, thread-safe).  Writes the tag and a NUL
 * into out (MC_REDIS_SLOT_TAG_MAX bytes) and returns its length. */
#define MC_REDIS_SLOT_TAG_MAX 8
size_t mc_redis_slot_tag(unsigned slot, char *out);

#endif
