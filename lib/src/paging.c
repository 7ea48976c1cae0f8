/*
 * Pagination helpers (see minichat/paging.h).  The cursor is 32 lower-case
 * hex digits: 16 for the time in ms, 16 for the room id, both big-endian, so
 * that it reveals nothing a client should depend on and decodes strictly.
 */
#include <string.h>

#include "minichat/paging.h"

static const char hexdig[] = "0123456789abcdef";

/* Writes v as 16 hex digits. */
static void put_hex64(char *out, uint64_t v)
{
    int i;

    for (i = 15; i >= 0; i--) {
        out[i] = hexdig[v & 0xf];
        v >>= 4;
    }
}

/* Reads 16 lower-case hex digits.  Returns 0 or -1. */
static int get_hex64(const char *s, uint64_t *v)
{
    int i, d;

    *v = 0;
    for (i = 0; i < 16; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            d = s[i] - '0';
        } else if (s[i] >= 'a' && s[i] <= 'f') {
            d = s[i] - 'a' + 10;
        } else {
            return -1;
        }
        *v = (*v << 4) | (uint64_t)d;
    }
    return 0;
}

void mc_cursor_encode(uint64_t at_ms, uint64_t room, char *out)
{
    put_hex64(out, at_ms);
    put_hex64(out + 16, room);
    out[MC_CURSOR_LEN] = '\0';
}

int mc_cursor_decode(const char *s, uint64_t *at_ms, uint64_t *room)
{
    if (s == NULL || strlen(s) != MC_CURSOR_LEN || get_hex64(s, at_ms) != 0 || get_hex64(s + 16, room) != 0
        || *room == 0) {
        return -1;
    }
    return 0;
}

uint64_t mc_history_want(uint64_t before, uint64_t limit)
{
    if (before <= 1) {
        return 0;
    }
    return before - 1 < limit ? before - 1 : limit;
}

int mc_history_complete(uint64_t before, uint64_t limit, const uint64_t *seqs, size_t n)
{
    uint64_t want = mc_history_want(before, limit);
    size_t i;

    if ((uint64_t)n != want) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (seqs[i] != before - 1 - i) {
            return 0;
        }
    }
    return 1;
}
