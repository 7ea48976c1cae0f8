/*
 * Prepared statements cached per connection: the router keeps one cache
 * next to each MYSQL handle and asks it for the statement of an SQL text;
 * the cache prepares it once and hands the same MYSQL_STMT out again.  At
 * most MC_DB_STMT_CACHE statements per connection (the least recently used
 * is closed to make room), so a statement text that varies (a multi-row
 * insert for N rows) cannot grow the server's prepared statements
 * (max_prepared_stmt_count) or our memory without bound.  A reconnect
 * empties the cache (mc_db_stmts_clear before mysql_close): statements live
 * on the server side of one connection and are prepared again on the next.
 */
#ifndef MINICHAT_DB_STMT_H
#define MINICHAT_DB_STMT_H

#include <stddef.h>
#include <stdint.h>

#include <mysql.h>

#define MC_DB_STMT_CACHE 64

typedef struct {
    MYSQL_STMT *st;     /* NULL: a free slot */
    char *sql;
    size_t len;
    uint64_t used;      /* tick of the last use, for eviction */
} mc_db_stmt_slot_t;

typedef struct {
    mc_db_stmt_slot_t slot[MC_DB_STMT_CACHE];
    uint64_t tick;
    uint64_t prepared;  /* statements prepared so far (a cache miss each) */
} mc_db_stmts_t;

/* Returns the prepared statement for sql[0..len) on m, preparing it when the
 * cache does not hold it, or NULL with the MySQL error code in *err
 * (CR_OUT_OF_MEMORY when out of memory) and its text in msg. */
MYSQL_STMT *mc_db_stmts_get(mc_db_stmts_t *c, MYSQL *m, const char *sql, size_t len, unsigned *err, char *msg,
                            size_t msg_size);

/* Closes and forgets one statement (after an error that may have broken it). */
void mc_db_stmts_drop(mc_db_stmts_t *c, MYSQL_STMT *st);

/* Closes every statement (before the connection is closed). */
void mc_db_stmts_clear(mc_db_stmts_t *c);

#endif
