/*
 * The values of a prepared statement's ? placeholders, as the pure SQL
 * builders (msgbatch.c, readmark.c) produce them and mc_db_exec binds them:
 * 64-bit unsigned numbers, utf8mb4 text, bytes, NULL.  Text and bytes are
 * pointers, not copies: they must live until the statement ran.
 *
 * Statement shapes: a statement for n rows has its own text, and every text
 * is one prepared statement per connection.  Where a repeated row is
 * harmless (an UPDATE's derived table, an IN list) a builder pads its rows
 * to mc_db_rows_bucket(n), a power of 4 up to MC_DB_ROWS_MAX, by repeating
 * the last one, so a few texts serve every count.
 */
#ifndef MINICHAT_DB_ARG_H
#define MINICHAT_DB_ARG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MC_DB_ARG_NULL, MC_DB_ARG_U64, MC_DB_ARG_TEXT, MC_DB_ARG_BLOB } mc_db_arg_type_t;

typedef struct {
    mc_db_arg_type_t type;
    uint64_t u64;
    const char *s;       /* TEXT (utf8mb4) or BLOB (bytes) */
    unsigned long len;
} mc_db_arg_t;

#define MC_DB_U64(v) ((mc_db_arg_t){MC_DB_ARG_U64, (uint64_t)(v), NULL, 0})
#define MC_DB_TEXT(p, n) ((mc_db_arg_t){MC_DB_ARG_TEXT, 0, (p), (unsigned long)(n)})
#define MC_DB_BLOB(p, n) ((mc_db_arg_t){MC_DB_ARG_BLOB, 0, (p), (unsigned long)(n)})
#define MC_DB_NULL ((mc_db_arg_t){MC_DB_ARG_NULL, 0, NULL, 0})

/* the most rows one built statement carries */
#define MC_DB_ROWS_MAX 1024

/* A growable list of values.  An all-zero one is empty and valid. */
typedef struct {
    mc_db_arg_t *v;
    size_t n;
    size_t cap;
} mc_db_args_t;

/* Appends a value.  Returns 0 or -1 when out of memory. */
int mc_db_args_add(mc_db_args_t *a, mc_db_arg_t v);
void mc_db_args_reset(mc_db_args_t *a);
void mc_db_args_free(mc_db_args_t *a);

/* Returns the smallest power of 4 >= n, at most MC_DB_ROWS_MAX (n >= 1). */
size_t mc_db_rows_bucket(size_t n);

#endif
