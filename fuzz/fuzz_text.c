/*
 * libFuzzer target: the small parsers of text that comes from outside, one
 * per value of the input's first byte:
 *   0 mc_parse_u64 (decimal.c)          5 mc_redis_error_class (redis_cluster.c)
 *   1 mc_cursor_decode (paging.c)       6 mc_redis_info_replid (redis_info.c)
 *   2 mc_readmark_parse (readmark.c)    7 mc_room_check_title (room_rules.c)
 *   3 mc_redis_addr_parse               8 mc_room_check_idem_key
 *   4 mc_redis_redirect_parse           9 mc_room_members (ids as 8-byte words)
 * Each accepted value is checked against what its header promises: a
 * decimal prints back to its digits, a cursor encodes back to itself, an
 * address has a port in 1..65535, a member list comes out sorted and unique.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/decimal.h"
#include "minichat/paging.h"
#include "minichat/readmark.h"
#include "minichat/redis_cluster.h"
#include "minichat/redis_info.h"
#include "minichat/room_rules.h"
#include "minichat/utf8.h"

#define MEMBERS_MAX 16

static void decimal(const char *s, size_t n)
{
    char out[32];
    uint64_t v;
    size_t z = 0;

    if (mc_parse_u64(s, n, &v) != 0) {
        return;
    }
    while (z + 1 < n && s[z] == '0') {
        z++; /* leading zeros are digits too */
    }
    if ((size_t)snprintf(out, sizeof(out), "%llu", (unsigned long long)v) != n - z || memcmp(out, s + z, n - z) != 0) {
        abort();
    }
}

static void cursor(const char *s, size_t n)
{
    char str[MC_CURSOR_LEN + 8], out[MC_CURSOR_LEN + 1];
    uint64_t at, room;

    if (n >= sizeof(str)) {
        return;
    }
    memcpy(str, s, n);
    str[n] = '\0';
    if (mc_cursor_decode(str, &at, &room) != 0) {
        return;
    }
    mc_cursor_encode(at, room, out);
    if (room == 0 || strcmp(out, str) != 0) {
        abort();
    }
}

static void readmark(const char *s, size_t n)
{
    const char *nl = memchr(s, '\n', n);
    mc_readmark_t m;

    if (nl == NULL) {
        return;
    }
    if (mc_readmark_parse(s, (size_t)(nl - s), nl + 1, n - (size_t)(nl - s) - 1, &m) == 0
        && (m.room == 0 || m.user == 0)) {
        abort();
    }
}

static void addr(const char *s, size_t n)
{
    mc_redis_addr_t a;

    if (mc_redis_addr_parse(s, n, &a) == 0
        && (a.port < 1 || a.port > 65535 || memchr(a.host, '\0', sizeof(a.host)) == NULL)) {
        abort();
    }
}

static void redirect(const char *s, size_t n)
{
    mc_redis_redirect_t r;

    if (mc_redis_redirect_parse(s, n, &r) == 0
        && (r.slot >= MC_REDIS_SLOTS || r.addr.port < 1 || r.addr.port > 65535
            || memchr(r.addr.host, '\0', sizeof(r.addr.host)) == NULL)) {
        abort();
    }
}

static void info(const char *s, size_t n)
{
    char id[MC_REDIS_REPLID_LEN + 1];
    size_t i;

    memset(id, 'x', sizeof(id));
    if (mc_redis_info_replid(s, n, id) != MC_REDIS_ROLE_MASTER) {
        return;
    }
    for (i = 0; i < MC_REDIS_REPLID_LEN; i++) {
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f') || (id[i] >= 'A' && id[i] <= 'F'))) {
            abort();
        }
    }
    if (id[MC_REDIS_REPLID_LEN] != '\0') {
        abort();
    }
}

static void title(const char *s, size_t n)
{
    if (mc_room_check_title(s, n) == NULL
        && (!mc_utf8_valid((const uint8_t *)s, n) || memchr(s, '\0', n) || mc_utf8_chars(s, n) > MC_ROOM_TITLE_MAX)) {
        abort();
    }
}

static void idem(const char *s, size_t n)
{
    size_t i;

    if (mc_room_check_idem_key(s, n) != NULL) {
        return;
    }
    if (n == 0 || n > MC_ROOM_IDEM_MAX) {
        abort();
    }
    for (i = 0; i < n; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e) {
            abort();
        }
    }
}

static void members(const char *s, size_t n)
{
    uint64_t ids[MEMBERS_MAX];
    size_t k = n / 8, i, max;

    if (k == 0) {
        return;
    }
    max = (size_t)(unsigned char)s[0] % (MEMBERS_MAX + 1);
    if (k > MEMBERS_MAX) {
        k = MEMBERS_MAX;
    }
    memcpy(ids, s, k * 8);
    if (mc_room_members(ids, &k, max) != NULL) {
        return;
    }
    if (k > max) {
        abort();
    }
    for (i = 0; i < k; i++) {
        if (ids[i] == 0 || (i > 0 && ids[i - 1] >= ids[i])) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data + 1;
    char *copy;
    size_t n;

    if (size == 0) {
        return 0;
    }
    n = size - 1;
    /* an exact-size copy, so that ASan sees any read past the end */
    copy = malloc(n ? n : 1);
    if (copy == NULL) {
        abort();
    }
    memcpy(copy, s, n);
    s = copy;

    switch (data[0] % 10) {
    case 0:
        decimal(s, n);
        break;
    case 1:
        cursor(s, n);
        break;
    case 2:
        readmark(s, n);
        break;
    case 3:
        addr(s, n);
        break;
    case 4:
        redirect(s, n);
        break;
    case 5:
        (void)mc_redis_error_class(s, n);
        break;
    case 6:
        info(s, n);
        break;
    case 7:
        title(s, n);
        break;
    case 8:
        idem(s, n);
        break;
    default:
        members(s, n);
        break;
    }
    free(copy);
    return 0;
}
