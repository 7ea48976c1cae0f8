/*
 * Strict decimal parsing (see decimal.h).  The overflow test runs before
 * each multiplication, so a number one digit too long, or one above
 * 2^64 - 1 in its last digit, is refused without wrapping.
 */
#include "minichat/decimal.h"

int mc_parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    unsigned d;
    size_t i;

    if (n == 0) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -1;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}
