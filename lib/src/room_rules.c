/*
 * Room validation (see room_rules.h).  The texts are the ones clients have
 * always seen from the module; the relay-worker reaches the same rules only
 * for requests the module let through, or from other callers of the link.
 *
 * A title's length is counted in characters, as MySQL's VARCHAR(191) counts
 * it, and only after the UTF-8 check, so a count never runs over bytes that
 * are not characters.  Member ids are sorted rather than compared pairwise:
 * the relay-worker takes lists of up to 10,000 ids.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/room_rules.h"
#include "minichat/utf8.h"

static int cmp_u64(const void *a, const void *b);

/* qsort's order for uint64_t. */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

const char *mc_room_check_kind(const char *kind)
{
    if (kind == NULL || (strcmp(kind, "group") != 0 && strcmp(kind, "direct") != 0)) {
        return "\"kind\" must be \"group\" or \"direct\"";
    }
    return NULL;
}

const char *mc_room_check_title(const char *s, size_t len)
{
    if (s == NULL) {
        return "\"title\" must be a string of at most 191 characters";
    }
    if (!mc_utf8_valid((const uint8_t *)s, len)) {
        return "\"title\" must be valid UTF-8";
    }
    if (mc_utf8_chars(s, len) > MC_ROOM_TITLE_MAX) {
        return "\"title\" must be a string of at most 191 characters";
    }
    if (memchr(s, '\0', len) != NULL) {
        return "\"title\" must not contain NUL";
    }
    return NULL;
}

const char *mc_room_check_idem_key(const char *s, size_t len)
{
    size_t i;

    if (s == NULL || len == 0 || len > MC_ROOM_IDEM_MAX) {
        return "the idempotency key must be 1 to 64 printable ASCII characters";
    }
    for (i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) {
            return "the idempotency key must be 1 to 64 printable ASCII characters";
        }
    }
    return NULL;
}

const char *mc_room_members(uint64_t *ids, size_t *n, size_t max)
{
    if (*n > max) {
        return "too many members";
    }
    *n = mc_room_ids_uniq(ids, *n);
    if (*n > 0 && ids[0] == 0) {
        return "\"members\" must hold positive integer user ids";
    }
    return NULL;
}

const char *mc_room_check_count(const char *kind, size_t n)
{
    if (kind != NULL && strcmp(kind, "direct") == 0 && n != 2) {
        return "a direct room has exactly two members";
    }
    return NULL;
}

size_t mc_room_ids_uniq(uint64_t *ids, size_t n)
{
    size_t i, k = 0;

    if (n == 0) {
        return 0;
    }
    qsort(ids, n, sizeof(uint64_t), cmp_u64);
    for (i = 0; i < n; i++) {
        if (k == 0 || ids[k - 1] != ids[i]) {
            ids[k++] = ids[i];
        }
    }
    return k;
}
