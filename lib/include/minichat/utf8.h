/*
 * UTF-8 for the whole project, one copy: validation (WebSocket text frames,
 * titles), counting characters (limits in characters, not bytes), the byte
 * length of a prefix of whole characters (previews) and repair (text from
 * Kafka on its way to MySQL).  Valid means RFC 3629: no overlong forms, no
 * UTF-16 surrogates, nothing above U+10FFFF.  Pure code.
 */
#ifndef MINICHAT_UTF8_H
#define MINICHAT_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Returns 1 when s[0..n) is valid UTF-8, else 0. */
int mc_utf8_valid(const uint8_t *s, size_t n);

/* Validates a piece of a longer text (a WebSocket message arriving in
 * fragments).  Returns 0 at the first byte that no continuation can make
 * valid; else 1, with *done = the bytes of complete characters (what is left,
 * at most 3 bytes, is the valid beginning of a character: validate again
 * from *done when more bytes come).  Whole text is valid when this returns 1
 * with *done == n. */
int mc_utf8_valid_part(const uint8_t *s, size_t n, size_t *done);

/* Returns the number of characters in s[0..n); each byte that does not start
 * a valid sequence counts as one (as mc_utf8_sanitize() would replace it). */
size_t mc_utf8_chars(const char *s, size_t n);

/* Returns the byte length of the first `chars` characters of s[0..n) (all of
 * s when it has fewer), counted as mc_utf8_chars() does: never cuts a valid
 * sequence in two. */
size_t mc_utf8_prefix(const char *s, size_t n, size_t chars);

/* Returns a malloc'ed, NUL-terminated copy of s with every invalid byte
 * replaced by U+FFFD, and its length in *out_len; NULL when out of memory. */
char *mc_utf8_sanitize(const char *s, size_t n, size_t *out_len);

#endif
