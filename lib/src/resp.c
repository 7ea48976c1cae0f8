/*
 * RESP command formatting (see minichat/resp.h).  Lengths are written with
 * a small decimal writer; the output is checked against size before every
 * copy, so a command that does not fit is refused, never truncated.
 */
#include <string.h>

#include "minichat/resp.h"

/* Writes "<c><n>\r\n" at out + *o.  Returns 0, or -1 when it does not fit. */
static int put_header(char *out, size_t size, size_t *o, char c, size_t n)
{
    char digits[24];
    size_t d = 0;

    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);

    if (size - *o < 1 + d + 2) {
        return -1;
    }
    out[(*o)++] = c;
    while (d) {
        out[(*o)++] = digits[--d];
    }
    out[(*o)++] = '\r';
    out[(*o)++] = '\n';
    return 0;
}

/* Returns the number of decimal digits of n. */
static size_t digits_of(size_t n)
{
    size_t d = 1;

    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

size_t mc_resp_command_size(int argc, const size_t *argvlen)
{
    size_t total = 1 + digits_of((size_t)argc) + 2;
    int i;

    for (i = 0; i < argc; i++) {
        total += 1 + digits_of(argvlen[i]) + 2 + argvlen[i] + 2;
    }
    return total;
}

long mc_resp_command(char *out, size_t size, int argc, const char *const *argv, const size_t *argvlen)
{
    size_t o = 0;
    int i;

    if (argc < 1 || put_header(out, size, &o, '*', (size_t)argc) != 0) {
        return -1;
    }
    for (i = 0; i < argc; i++) {
        if (put_header(out, size, &o, '$', argvlen[i]) != 0 || size - o < argvlen[i] + 2) {
            return -1;
        }
        memcpy(out + o, argv[i], argvlen[i]);
        o += argvlen[i];
        out[o++] = '\r';
        out[o++] = '\n';
    }
    return (long)o;
}
