/*
 * A batch of chat messages on their way from Kafka to MySQL, and the
 * prepared statements that persist it: multi-row INSERT IGNORE statements
 * for `messages`, and forward-only UPDATEs of `rooms` and `room_members`.
 * Pure code (no connection needed): each builder writes a statement text
 * with ? placeholders and its values (db_arg.h); invalid UTF-8 is replaced
 * by U+FFFD before it gets there.
 */
#ifndef MINICHAT_MSGBATCH_H
#define MINICHAT_MSGBATCH_H

#include <stddef.h>
#include <stdint.h>

#include "minichat/buf.h"
#include "minichat/db_arg.h"

/* messages.kind */
enum { MC_MSG_TEXT = 0, MC_MSG_SYSTEM = 1 };

typedef struct {
    uint64_t room;
    uint64_t seq;
    uint64_t sender;
    uint64_t ts;       /* milliseconds since the epoch */
    char at[24];       /* the stored time as decimal seconds, "1732500000.007", for FROM_UNIXTIME(?) */
    size_t at_len;
    int kind;          /* MC_MSG_TEXT or MC_MSG_SYSTEM */
    char *cid;         /* valid UTF-8, owned */
    size_t cid_len;
    char *body;        /* valid UTF-8, owned */
    size_t body_len;
} mc_msgrow_t;

typedef struct {
    mc_msgrow_t *rows;
    size_t n;
    size_t cap;
} mc_msgbatch_t;

enum { MC_MSGBATCH_OK = 0, MC_MSGBATCH_NOMEM = -1, MC_MSGBATCH_MALFORMED = -2 };

/* Longest preview stored in rooms.last_preview, in characters (the column is VARCHAR(191)). */
#define MC_MSGBATCH_PREVIEW_CHARS 191

void mc_msgbatch_init(mc_msgbatch_t *b);
/* Frees the rows' strings and empties the batch, keeping its array. */
void mc_msgbatch_clear(mc_msgbatch_t *b);
void mc_msgbatch_free(mc_msgbatch_t *b);

/* Returns the MC_MSG_* kind a ChatMessage.kind names ("" or "text", and
 * "system"), or -1 for any other name (ephemeral events are not messages). */
int mc_msgkind_parse(const char *name);

/* Appends a copy of one text message.  Returns MC_MSGBATCH_OK, MC_MSGBATCH_NOMEM, or
 * MC_MSGBATCH_MALFORMED when room or seq is 0. */
int mc_msgbatch_add(mc_msgbatch_t *b, uint64_t room, uint64_t seq, uint64_t sender, uint64_t ts, const char *cid,
                    size_t cid_len, const char *body, size_t body_len);

/* Appends one packed minichat.ChatMessage (a Kafka record's value) with its
 * kind.  Returns MC_MSGBATCH_OK, MC_MSGBATCH_NOMEM, or MC_MSGBATCH_MALFORMED
 * when it does not unpack, lacks a room or seq, or has a kind that is not a
 * message (mc_msgkind_parse). */
int mc_msgbatch_add_packed(mc_msgbatch_t *b, const void *data, size_t len);

/* Sorts the rows by (room, seq), the primary key's order, so that inserts
 * append to the index and concurrent batches lock rows in the same order. */
void mc_msgbatch_sort(mc_msgbatch_t *b);

/* the most rows one INSERT carries (7 values each, under the protocol's 65535) */
#define MC_MSGBATCH_INSERT_ROWS 4096

/* Writes into sql and args (replacing them) one INSERT IGNORE for rows
 * from *next on: as many (at most MC_MSGBATCH_INSERT_ROWS) as stay within
 * max_bytes of values (but always at least one row); advances *next.  Returns 0 or -1 when out of memory; sql is left empty when no row
 * is left. */
int mc_msgbatch_insert_stmt(const mc_msgbatch_t *b, size_t *next, size_t max_bytes, mc_buf_t *sql,
                            mc_db_args_t *args);

/* The insert of one row, for bulk execution (mc_db_write_bulk): the
 * columns and values of mc_msgbatch_insert_stmt's rows, run once per row. */
#define MC_MSGBATCH_INSERT_ONE \
    "INSERT IGNORE INTO messages (room_id, seq, sender_id, kind, body, client_msg_id, created_at) " \
    "VALUES (?,?,?,?,?,?,FROM_UNIXTIME(?))"
#define MC_MSGBATCH_INSERT_COLS 7

/* Writes into args (replacing them) the values of rows from *next on, row
 * after row, MC_MSGBATCH_INSERT_COLS each, for MC_MSGBATCH_INSERT_ONE: as
 * many as stay within max_bytes of values (but always at least one row);
 * advances *next.  Returns 0 or -1 when out of memory; args is left empty
 * when no row is left. */
int mc_msgbatch_insert_rows(const mc_msgbatch_t *b, size_t *next, size_t max_bytes, mc_db_args_t *args);

/* Writes into sql and args the forward-only UPDATE of rooms (last_seq,
 * last_message_at, and last_preview from the last text message, kept when
 * the batch has only system messages for the room) for the rooms of a
 * sorted batch from row *next on, at most MC_DB_ROWS_MAX rooms, padded to a
 * power of 4 (rows of one room only: a single-table UPDATE by id, values
 * seq, time, preview, id, seq); advances *next to the first row of the
 * next room left.
 * Returns 0 or -1 when out of memory; sql is left empty when no row is left. */
int mc_msgbatch_rooms_stmt(const mc_msgbatch_t *b, size_t *next, mc_buf_t *sql, mc_db_args_t *args);

/* Writes into sql and args the UPDATE that copies rooms.last_message_at
 * forward into room_members.last_message_at for the members (who have not
 * left) of rooms[*next..n), at most MC_DB_ROWS_MAX of them, padded to a
 * power of 4; advances *next.  Returns 0 or -1 when out of memory; sql is
 * left empty when no room is left. */
int mc_members_stmt(const uint64_t *rooms, size_t n, size_t *next, mc_buf_t *sql, mc_db_args_t *args);

/* Returns the number of distinct rooms in a sorted batch. */
size_t mc_msgbatch_rooms(const mc_msgbatch_t *b);

#endif
