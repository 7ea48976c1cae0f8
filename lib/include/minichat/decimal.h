/*
 * Decimal numbers from outside: ids and seqs in Redis replies and hash
 * fields, query arguments, JSON object keys.  Strict, so that anything else
 * than plain digits is refused rather than half-read.  Pure code.
 */
#ifndef MINICHAT_DECIMAL_H
#define MINICHAT_DECIMAL_H

#include <stddef.h>
#include <stdint.h>

/* Parses s[0..n) as an unsigned decimal: digits only (no sign, no spaces, no
 * "0x"), at least one, and no larger than 2^64 - 1.  Returns 0 or -1 (*out
 * untouched). */
int mc_parse_u64(const char *s, size_t n, uint64_t *out);

#endif
