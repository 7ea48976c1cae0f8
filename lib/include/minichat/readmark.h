/*
 * Read marks on their way from Redis to MySQL (write-back of read pointers).
 * The module records a user's read pointer as the field "<room>:<user>" with
 * the value "<seq>" in the hash {dirty}:read; the roomlist-consumer's flusher
 * parses the fields, merges duplicates and writes them with one forward-only
 * UPDATE of room_members per chunk.  Pure code: parsing, and the prepared
 * statement's text and values.
 */
#ifndef MINICHAT_READMARK_H
#define MINICHAT_READMARK_H

#include <stddef.h>
#include <stdint.h>

#include "minichat/buf.h"
#include "minichat/db_arg.h"

typedef struct {
    uint64_t room;
    uint64_t user;
    uint64_t seq;
} mc_readmark_t;

/* Parses a field "room:user" (both decimal, both > 0) and its value "seq"
 * (decimal, 0 allowed).  Returns 0 and fills *m, or -1 when anything is off. */
int mc_readmark_parse(const char *field, size_t flen, const char *value, size_t vlen, mc_readmark_t *m);

/* Sorts marks by (room, user), the primary key's order, and merges marks of
 * the same member into one with the highest seq.  Returns the new count. */
size_t mc_readmark_merge(mc_readmark_t *marks, size_t n);

/* Writes into sql and args (replacing them) one forward-only UPDATE of
 * room_members.last_read_seq for marks[*next ..], at most MC_DB_ROWS_MAX of
 * them, padded to a power of 4 (db_arg.h), and advances *next.  Rows for
 * users who are not members match nothing.  Returns 0 or -1 when out of
 * memory; sql is empty when *next >= n. */
int mc_readmark_stmt(const mc_readmark_t *marks, size_t n, size_t *next, mc_buf_t *sql, mc_db_args_t *args);

#endif
