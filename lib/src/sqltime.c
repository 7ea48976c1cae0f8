/*
 * Date-time text to milliseconds (see sqltime.h).  The shape is checked
 * byte by byte; days since the epoch come from the proleptic Gregorian
 * calendar counted in 400-year eras of 146,097 days, with the year taken to
 * start on March 1 so that the leap day is the last day of its year.
 */
#include "minichat/sqltime.h"

/* Reads n digits of s as a number into *v.  Returns 0, or -1 on a non-digit. */
static int sqltime_digits(const char *s, size_t n, unsigned *v)
{
    size_t i;

    *v = 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        *v = *v * 10 + (unsigned)(s[i] - '0');
    }
    return 0;
}

/* Returns the number of days in month m (1..12) of year y. */
static unsigned sqltime_month_days(unsigned y, unsigned m)
{
    static const unsigned char days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) {
        return 29;
    }
    return days[m - 1];
}

/* Returns the days from 1970-01-01 to y-m-d (a valid date, y >= 1970). */
static uint64_t sqltime_days(unsigned y, unsigned m, unsigned d)
{
    unsigned era, yoe, doy, doe;

    if (m <= 2) {
        y--; /* January and February belong to the year before, which ends with them */
    }
    era = y / 400;
    yoe = y - era * 400;                                   /* 0..399 */
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* 0..365, from March 1 */
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* 0..146096 */
    return (uint64_t)era * 146097 + doe - 719468;          /* 719,468: 0000-03-01 to 1970-01-01 */
}

int mc_sqltime_ms(const char *s, size_t n, uint64_t *ms)
{
    unsigned y, mo, d, h, mi, sec, frac = 0, digit;
    size_t i;

    if (n < 19 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':'
        || sqltime_digits(s, 4, &y) != 0 || sqltime_digits(s + 5, 2, &mo) != 0
        || sqltime_digits(s + 8, 2, &d) != 0 || sqltime_digits(s + 11, 2, &h) != 0
        || sqltime_digits(s + 14, 2, &mi) != 0 || sqltime_digits(s + 17, 2, &sec) != 0) {
        return -1;
    }
    if (n > 19) {
        if (s[19] != '.' || n == 20 || n > 26) {
            return -1;
        }
        for (i = 20; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') {
                return -1;
            }
            digit = (unsigned)(s[i] - '0');
            if (i < 23) {
                frac = frac * 10 + digit;
            } else if (i == 23 && digit >= 5) {
                frac++; /* half up, as ROUND() of a positive value */
            }
        }
        for (i = n; i < 23; i++) {
            frac *= 10;
        }
    }
    if (y == 0 && mo == 0 && d == 0 && h == 0 && mi == 0 && sec == 0) {
        *ms = 0;
        return 0;
    }
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > sqltime_month_days(y, mo) || h > 23 || mi > 59 || sec > 59) {
        return -1;
    }
    *ms = ((sqltime_days(y, mo, d) * 24 + h) * 60 + mi) * 60000 + (uint64_t)sec * 1000 + frac;
    return 0;
}
