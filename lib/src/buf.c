/*
 * The growable byte buffer (see buf.h).  Growth doubles from 4 KiB, so a
 * buffer reused between batches settles at its high-water mark and appends
 * cost a memcpy.  Every failure leaves the buffer as it was, so a caller can
 * report "out of memory" and keep what it built.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/buf.h"

#define MC_BUF_MIN 4096

void mc_buf_init(mc_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void mc_buf_free(mc_buf_t *b)
{
    free(b->data);
    mc_buf_init(b);
}

void mc_buf_reset(mc_buf_t *b)
{
    b->len = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

int mc_buf_reserve(mc_buf_t *b, size_t more)
{
    size_t cap;
    char *p;

    if (more > (size_t)-1 / 2 - b->len - 1) {
        return -1;
    }
    if (b->len + more + 1 <= b->cap) {
        return 0;
    }
    cap = b->cap != 0 ? b->cap : MC_BUF_MIN;
    while (cap < b->len + more + 1) {
        cap *= 2;
    }
    p = realloc(b->data, cap);
    if (p == NULL) {
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int mc_buf_append(mc_buf_t *b, const void *p, size_t n)
{
    if (mc_buf_reserve(b, n) != 0) {
        return -1;
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int mc_buf_append_str(mc_buf_t *b, const char *s)
{
    return mc_buf_append(b, s, strlen(s));
}

int mc_buf_appendf(mc_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = mc_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int mc_buf_vappendf(mc_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    size_t room;
    int n;

    /* first try into whatever room there is; most appends are short */
    if (mc_buf_reserve(b, 64) != 0) {
        return -1;
    }
    room = b->cap - b->len;
    va_copy(ap2, ap);
    n = vsnprintf(b->data + b->len, room, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        b->data[b->len] = '\0';
        return -1;
    }
    if ((size_t)n >= room) {
        if (mc_buf_reserve(b, (size_t)n) != 0) {
            b->data[b->len] = '\0';
            return -1;
        }
        va_copy(ap2, ap);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        va_end(ap2);
    }
    b->len += (size_t)n;
    return 0;
}

void mc_buf_consume(mc_buf_t *b, size_t n)
{
    if (n >= b->len) {
        mc_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}
