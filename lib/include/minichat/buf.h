/*
 * A growable byte buffer: SQL statements, protocol frames, anything built by
 * appending.  data is malloc'ed, grows by doubling and is always followed by
 * a NUL once allocated (so text can be used as a C string; binary data may
 * hold NULs itself).  An all-zero mc_buf_t is a valid empty buffer.
 */
#ifndef MINICHAT_BUF_H
#define MINICHAT_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *data;   /* NULL until the first append */
    size_t len;
    size_t cap;   /* bytes allocated, the NUL's included */
} mc_buf_t;

#define MC_BUF_INIT {NULL, 0, 0}

void mc_buf_init(mc_buf_t *b);
/* Frees the memory; the buffer is empty and usable again. */
void mc_buf_free(mc_buf_t *b);
/* Empties the buffer, keeping its memory. */
void mc_buf_reset(mc_buf_t *b);

/* Makes room for more bytes (plus the NUL).  Returns 0 or -1 when out of memory. */
int mc_buf_reserve(mc_buf_t *b, size_t more);
/* Appends n bytes.  Returns 0 or -1 when out of memory (the buffer is unchanged). */
int mc_buf_append(mc_buf_t *b, const void *p, size_t n);
/* Appends a NUL-terminated string.  Returns 0 or -1. */
int mc_buf_append_str(mc_buf_t *b, const char *s);
/* Appends printf-formatted text of any length.  Returns 0 or -1 (unchanged). */
int mc_buf_appendf(mc_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with a va_list (left for the caller to va_end), for printf-style
 * wrappers. */
int mc_buf_vappendf(mc_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drops the first n bytes (all of them when n >= len), keeping the rest in order. */
void mc_buf_consume(mc_buf_t *b, size_t n);

#endif
