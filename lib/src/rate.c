/*
 * Rate values and GCRA (see rate.h).  The rate is kept as an emission
 * interval in microseconds: 1000000 / N for "Nr/s", 60000000 / N for
 * "Nr/m", rounded down but never 0, so a limit is never looser than
 * configured by more than a rounding microsecond.
 */
#include "minichat/rate.h"

#include "minichat/decimal.h"

#define MC_RATE_MAX 1000000

int mc_rate_parse(const char *s, size_t n, uint64_t *interval_us)
{
    uint64_t v, unit;

    if (s == NULL || n < 4 || s[n - 3] != 'r' || s[n - 2] != '/') {
        return -1;
    }
    if (s[n - 1] == 's') {
        unit = 1000000;
    } else if (s[n - 1] == 'm') {
        unit = 60000000;
    } else {
        return -1;
    }
    if (mc_parse_u64(s, n - 3, &v) != 0 || v == 0 || v > MC_RATE_MAX) {
        return -1;
    }
    v = unit / v;
    *interval_us = v ? v : 1;
    return 0;
}

int mc_gcra(uint64_t *tat_us, uint64_t now_us, uint64_t interval_us, uint64_t burst, uint64_t *retry_us)
{
    uint64_t tat, next, limit;

    tat = *tat_us > now_us ? *tat_us : now_us;
    next = tat + interval_us;
    limit = (burst + 1) * interval_us;

    if (next - now_us > limit) {
        *retry_us = next - now_us - limit;
        return 0;
    }
    *tat_us = next;
    return 1;
}
