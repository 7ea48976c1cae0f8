/*
 * Batches of chat messages and the statements that persist them (see
 * msgbatch.h).
 *
 * The roomlist-consumer collects a few hundred Kafka records into an
 * mc_msgbatch_t, sorts it by (room, seq), and runs in one transaction:
 *
 *   INSERT IGNORE INTO messages (...) VALUES (?,...), (?,...), ...
 *       -- as many rows as the bytes allow, at most MC_MSGBATCH_INSERT_ROWS;
 *       -- PRIMARY KEY(room_id, seq) plus IGNORE turns a redelivered record
 *       -- into a no-op.
 *   UPDATE rooms r JOIN (<one row per room>) v ...
 *       SET r.last_seq = v.seq, ... WHERE r.last_seq < v.seq
 *       -- or, when the batch holds one room, UPDATE rooms SET ...
 *       -- WHERE id = ? AND last_seq < ?
 *   UPDATE room_members m JOIN rooms r ... SET m.last_message_at = r.last_message_at
 *       WHERE m.room_id IN (?, ...) AND ... m.last_message_at < r.last_message_at
 *
 * Every value is a parameter of a prepared statement (db_arg.h): text goes
 * to the server as utf8mb4 in the binary protocol, no escaping rule applies
 * and NUL bytes pass.  A statement's text depends only on its row count.
 * The insert has one text per count: under load every batch is full
 * (batch_size rows), so one statement, prepared once, carries them all in
 * one round trip, which kept the text-SQL throughput (splitting batches
 * into power-of-4 statements cost about a quarter of it); a light load's
 * odd counts are prepared as they come, which costs what parsing the text
 * did, and the connection's statement cache (64) bounds them.  The updates
 * pad their rows to a power of 4 with a repeat of the last one, so they
 * need at most six texts each.
 *
 * The per-room row carries the batch's highest seq for the room, its time and
 * a preview of the room's last text message in the batch: a system message
 * (a join, a leave: its body is JSON) moves the room but keeps the preview
 * of the chat text before it.  The rooms update only moves a room forward, so
 * replaying an old batch, or two consumers racing through a rebalance, can
 * never move a room list backwards.  The members update copies the room's
 * time, whatever batch it runs in, and also only forward: so it can be
 * deferred and coalesced (see debounce.c) without ever writing a stale value.
 *
 * Text is made valid UTF-8 on the way in (invalid bytes become U+FFFD) so a
 * bad record can never fail a batch forever in strict mode.  Times are
 * FROM_UNIXTIME(ms / 1000) so that the milliseconds are exact; a time of 0
 * or one past TIMESTAMP's 2038 limit is sent as NULL and becomes NOW(3).
 * The insert, which evaluates its time once per row, takes it instead as
 * the text of exact decimal seconds, FROM_UNIXTIME('1732500000.007'), made
 * when the row is added (a time out of range becomes the consumer's clock
 * then): `COALESCE(FROM_UNIXTIME(? / 1000), NOW(3))` cost MariaDB about 4
 * CPU-us per row more, a third of a plain insert's whole cost (measured
 * with make bench's scenario 5, docs/performance.md).
 */
#include <stdlib.h>
#include <string.h>

#include <inttypes.h>
#include <stdio.h>

#include "minichat.pb-c.h"
#include "minichat/clock.h"
#include "minichat/msgbatch.h"
#include "minichat/utf8.h"

#define MC_TS_MAX_SECONDS 2147483647ULL

static int arg_time(mc_db_args_t *a, uint64_t ts);
static void row_at(mc_msgrow_t *r);
static size_t row_bytes(const mc_msgrow_t *r);
static int row_cmp(const void *a, const void *b);
static int room_args(mc_db_args_t *args, const mc_msgrow_t *r, const mc_msgrow_t *t);
static int rooms_one_stmt(const mc_msgbatch_t *b, size_t *next, mc_buf_t *sql, mc_db_args_t *args);

/* Adds a millisecond time as the value of COALESCE(FROM_UNIXTIME(? / 1000),
 * NOW(3)): NULL (now) for a time TIMESTAMP cannot hold.  Returns 0 or -1. */
static int arg_time(mc_db_args_t *a, uint64_t ts)
{
    /* TIMESTAMP starts at 1970-01-01 00:00:01: anything earlier would make
     * strict mode reject the batch, forever */
    if (ts < 1000 || ts / 1000 >= MC_TS_MAX_SECONDS) {
        return mc_db_args_add(a, MC_DB_NULL);
    }
    return mc_db_args_add(a, MC_DB_U64(ts));
}

/* Writes the row's time as decimal seconds into r->at: ts, or the wall
 * clock when TIMESTAMP cannot hold ts (the same bounds as arg_time()). */
static void row_at(mc_msgrow_t *r)
{
    uint64_t ts = r->ts;
    int n;

    if (ts < 1000 || ts / 1000 >= MC_TS_MAX_SECONDS) {
        ts = (uint64_t)mc_wall_ms();
    }
    n = snprintf(r->at, sizeof(r->at), "%" PRIu64 ".%03u", ts / 1000, (unsigned)(ts % 1000));
    r->at_len = n > 0 && (size_t)n < sizeof(r->at) ? (size_t)n : 0;
}

void mc_msgbatch_init(mc_msgbatch_t *b)
{
    b->rows = NULL;
    b->n = 0;
    b->cap = 0;
}

void mc_msgbatch_clear(mc_msgbatch_t *b)
{
    size_t i;

    for (i = 0; i < b->n; i++) {
        free(b->rows[i].cid);
        free(b->rows[i].body);
    }
    b->n = 0;
}

void mc_msgbatch_free(mc_msgbatch_t *b)
{
    mc_msgbatch_clear(b);
    free(b->rows);
    mc_msgbatch_init(b);
}

int mc_msgbatch_add(mc_msgbatch_t *b, uint64_t room, uint64_t seq, uint64_t sender, uint64_t ts, const char *cid,
                    size_t cid_len, const char *body, size_t body_len)
{
    mc_msgrow_t *r, *rows;
    size_t cap;

    if (room == 0 || seq == 0) {
        return MC_MSGBATCH_MALFORMED;
    }

    if (b->n == b->cap) {
        cap = b->cap != 0 ? b->cap * 2 : 256;
        rows = realloc(b->rows, cap * sizeof(*rows));
        if (rows == NULL) {
            return MC_MSGBATCH_NOMEM;
        }
        b->rows = rows;
        b->cap = cap;
    }

    r = &b->rows[b->n];
    r->room = room;
    r->seq = seq;
    r->sender = sender;
    r->ts = ts;
    row_at(r);
    r->kind = MC_MSG_TEXT;
    r->cid = mc_utf8_sanitize(cid != NULL ? cid : "", cid != NULL ? cid_len : 0, &r->cid_len);
    r->body = mc_utf8_sanitize(body != NULL ? body : "", body != NULL ? body_len : 0, &r->body_len);
    if (r->cid == NULL || r->body == NULL) {
        free(r->cid);
        free(r->body);
        return MC_MSGBATCH_NOMEM;
    }
    b->n++;
    return MC_MSGBATCH_OK;
}

int mc_msgkind_parse(const char *name)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, "text") == 0) {
        return MC_MSG_TEXT;
    }
    if (strcmp(name, "system") == 0) {
        return MC_MSG_SYSTEM;
    }
    return -1;
}

int mc_msgbatch_add_packed(mc_msgbatch_t *b, const void *data, size_t len)
{
    Minichat__ChatMessage *m;
    int rc, kind;

    m = minichat__chat_message__unpack(NULL, len, data);
    if (m == NULL) {
        return MC_MSGBATCH_MALFORMED;
    }
    /* read, typing and presence never reach Kafka (and carry seq 0); a kind
     * this build does not know is not stored as something it is not */
    kind = mc_msgkind_parse(m->kind);
    if (kind < 0) {
        minichat__chat_message__free_unpacked(m, NULL);
        return MC_MSGBATCH_MALFORMED;
    }
    rc = mc_msgbatch_add(b, m->room, m->seq, m->sender, m->ts, m->cid, m->cid != NULL ? strlen(m->cid) : 0,
                         m->body, m->body != NULL ? strlen(m->body) : 0);
    if (rc == MC_MSGBATCH_OK) {
        b->rows[b->n - 1].kind = kind;
    }
    minichat__chat_message__free_unpacked(m, NULL);
    return rc;
}

/* Orders rows by room, then seq. */
static int row_cmp(const void *a, const void *b)
{
    const mc_msgrow_t *x = a, *y = b;

    if (x->room != y->room) {
        return x->room < y->room ? -1 : 1;
    }
    if (x->seq != y->seq) {
        return x->seq < y->seq ? -1 : 1;
    }
    return 0;
}

void mc_msgbatch_sort(mc_msgbatch_t *b)
{
    if (b->n > 1) {
        qsort(b->rows, b->n, sizeof(*b->rows), row_cmp);
    }
}

size_t mc_msgbatch_rooms(const mc_msgbatch_t *b)
{
    size_t i, n = 0;

    for (i = 0; i < b->n; i++) {
        if (i + 1 == b->n || b->rows[i + 1].room != b->rows[i].room) {
            n++;
        }
    }
    return n;
}

/* Returns an upper bound of the bytes one row's values take on the wire. */
static size_t row_bytes(const mc_msgrow_t *r)
{
    return r->cid_len + r->body_len + 64;
}

/* Returns how many rows from first on fit within max_bytes of values, at
 * most limit (at least one). */
static size_t insert_count(const mc_msgbatch_t *b, size_t first, size_t max_bytes, size_t limit)
{
    size_t k, bytes = 0;

    for (k = 0; first + k < b->n && k < limit; k++) {
        bytes += row_bytes(&b->rows[first + k]);
        if (k > 0 && bytes > max_bytes) {
            break;
        }
    }
    return k;
}

/* Adds one row's seven values, in the insert's column order.  Returns 0 or -1. */
static int row_args(mc_db_args_t *args, const mc_msgrow_t *r)
{
    if (mc_db_args_add(args, MC_DB_U64(r->room)) != 0 || mc_db_args_add(args, MC_DB_U64(r->seq)) != 0
        || mc_db_args_add(args, MC_DB_U64(r->sender)) != 0
        || mc_db_args_add(args, r->kind == MC_MSG_SYSTEM ? MC_DB_TEXT("system", 6) : MC_DB_TEXT("text", 4)) != 0
        || mc_db_args_add(args, MC_DB_TEXT(r->body, r->body_len)) != 0
        || mc_db_args_add(args, MC_DB_TEXT(r->cid, r->cid_len)) != 0
        || mc_db_args_add(args, MC_DB_TEXT(r->at, r->at_len)) != 0)
    {
        return -1;
    }
    return 0;
}

int mc_msgbatch_insert_stmt(const mc_msgbatch_t *b, size_t *next, size_t max_bytes, mc_buf_t *sql,
                            mc_db_args_t *args)
{
    static const char head[] =
        "INSERT IGNORE INTO messages (room_id, seq, sender_id, kind, body, client_msg_id, created_at) VALUES ";
    static const char tuple[] = "(?,?,?,?,?,?,FROM_UNIXTIME(?))";
    size_t i, k;

    mc_buf_reset(sql);
    mc_db_args_reset(args);
    if (*next >= b->n) {
        return 0;
    }
    /* as many rows as fit */
    k = insert_count(b, *next, max_bytes, MC_MSGBATCH_INSERT_ROWS);
    if (mc_buf_append(sql, head, sizeof(head) - 1) != 0) {
        return -1;
    }
    for (i = *next; i < *next + k; i++) {
        if ((i > *next && mc_buf_append(sql, ",", 1) != 0) || mc_buf_append(sql, tuple, sizeof(tuple) - 1) != 0
            || row_args(args, &b->rows[i]) != 0)
        {
            return -1;
        }
    }
    *next += k;
    return 0;
}

int mc_msgbatch_insert_rows(const mc_msgbatch_t *b, size_t *next, size_t max_bytes, mc_db_args_t *args)
{
    size_t i, k;

    mc_db_args_reset(args);
    if (*next >= b->n) {
        return 0;
    }
    k = insert_count(b, *next, max_bytes, b->n);
    for (i = *next; i < *next + k; i++) {
        if (row_args(args, &b->rows[i]) != 0) {
            return -1;
        }
    }
    *next += k;
    return 0;
}

/* Adds one room's derived-table values: the room's last row r and the
 * preview of its last text message t (NULL when there is none).  Returns 0 or -1. */
static int room_args(mc_db_args_t *args, const mc_msgrow_t *r, const mc_msgrow_t *t)
{
    if (mc_db_args_add(args, MC_DB_U64(r->room)) != 0 || mc_db_args_add(args, MC_DB_U64(r->seq)) != 0
        || arg_time(args, r->ts) != 0)
    {
        return -1;
    }
    if (t == NULL) {
        return mc_db_args_add(args, MC_DB_NULL);
    }
    return mc_db_args_add(args, MC_DB_TEXT(t->body, mc_utf8_prefix(t->body, t->body_len, MC_MSGBATCH_PREVIEW_CHARS)));
}

/* mc_msgbatch_rooms_stmt() for rows from *next on that are all one room's
 * (sorted): a single-table UPDATE by primary key, where the derived table
 * of the general form costs MariaDB a temporary table and a join per batch
 * (a tenth of its CPU at 400 messages/s into one room). */
static int rooms_one_stmt(const mc_msgbatch_t *b, size_t *next, mc_buf_t *sql, mc_db_args_t *args)
{
    static const char one[] =
        "UPDATE rooms SET last_seq = ?, last_message_at = COALESCE(FROM_UNIXTIME(? / 1000), NOW(3)),"
        " last_preview = COALESCE(LEFT(?, 191), last_preview) WHERE id = ? AND last_seq < ?";
    const mc_msgrow_t *r = &b->rows[b->n - 1], *t = NULL;
    size_t k;

    for (k = b->n; k > *next; k--) {
        if (b->rows[k - 1].kind == MC_MSG_TEXT) {
            t = &b->rows[k - 1];
            break;
        }
    }
    if (mc_buf_append(sql, one, sizeof(one) - 1) != 0 || mc_db_args_add(args, MC_DB_U64(r->seq)) != 0
        || arg_time(args, r->ts) != 0
        || mc_db_args_add(args, t == NULL ? MC_DB_NULL
                                          : MC_DB_TEXT(t->body, mc_utf8_prefix(t->body, t->body_len,
                                                                               MC_MSGBATCH_PREVIEW_CHARS))) != 0
        || mc_db_args_add(args, MC_DB_U64(r->room)) != 0 || mc_db_args_add(args, MC_DB_U64(r->seq)) != 0)
    {
        return -1;
    }
    *next = b->n;
    return 0;
}

int mc_msgbatch_rooms_stmt(const mc_msgbatch_t *b, size_t *next, mc_buf_t *sql, mc_db_args_t *args)
{
    static const char head[] =
        "UPDATE rooms r JOIN (SELECT CAST(? AS UNSIGNED) AS id, CAST(? AS UNSIGNED) AS seq,"
        " COALESCE(FROM_UNIXTIME(? / 1000), NOW(3)) AS at, ? AS preview";
    static const char more[] = " UNION ALL SELECT ?, ?, COALESCE(FROM_UNIXTIME(? / 1000), NOW(3)), ?";
    static const char tail[] =
        ") v ON r.id = v.id SET r.last_seq = v.seq, r.last_message_at = v.at,"
        " r.last_preview = COALESCE(LEFT(v.preview, 191), r.last_preview)"
        " WHERE r.last_seq < v.seq";
    const mc_msgrow_t *r = NULL, *t = NULL;
    size_t i, k, rooms = 0, start = *next, bucket;

    mc_buf_reset(sql);
    mc_db_args_reset(args);
    if (*next >= b->n) {
        return 0;
    }
    if (b->rows[*next].room == b->rows[b->n - 1].room) {
        return rooms_one_stmt(b, next, sql, args);
    }
    if (mc_buf_append(sql, head, sizeof(head) - 1) != 0) {
        return -1;
    }
    for (i = *next; i < b->n && rooms < MC_DB_ROWS_MAX; i++) {
        if (i + 1 < b->n && b->rows[i + 1].room == b->rows[i].room) {
            continue;
        }
        r = &b->rows[i];
        t = NULL;
        for (k = i + 1; k > start; k--) {
            if (b->rows[k - 1].kind == MC_MSG_TEXT) {
                t = &b->rows[k - 1];
                break;
            }
        }
        if ((rooms > 0 && mc_buf_append(sql, more, sizeof(more) - 1) != 0) || room_args(args, r, t) != 0) {
            return -1;
        }
        rooms++;
        start = i + 1;
    }
    /* pad to the statement's size with the last room again: a repeated row
     * of the derived table updates its room once, to the same values */
    for (bucket = mc_db_rows_bucket(rooms); rooms < bucket; rooms++) {
        if (mc_buf_append(sql, more, sizeof(more) - 1) != 0 || room_args(args, r, t) != 0) {
            return -1;
        }
    }
    *next = start;
    return mc_buf_append(sql, tail, sizeof(tail) - 1);
}

int mc_members_stmt(const uint64_t *rooms, size_t n, size_t *next, mc_buf_t *sql, mc_db_args_t *args)
{
    static const char head[] =
        "UPDATE room_members m JOIN rooms r ON r.id = m.room_id SET m.last_message_at = r.last_message_at"
        " WHERE m.room_id IN (";
    static const char tail[] =
        ") AND m.left_at IS NULL AND r.last_message_at IS NOT NULL"
        " AND (m.last_message_at IS NULL OR m.last_message_at < r.last_message_at)";
    size_t i, k, bucket;

    mc_buf_reset(sql);
    mc_db_args_reset(args);
    if (*next >= n) {
        return 0;
    }
    k = n - *next < MC_DB_ROWS_MAX ? n - *next : MC_DB_ROWS_MAX;
    bucket = mc_db_rows_bucket(k);
    if (mc_buf_append(sql, head, sizeof(head) - 1) != 0) {
        return -1;
    }
    for (i = 0; i < bucket; i++) {
        /* padded with the last room again: IN ignores the repeat */
        if (mc_buf_append(sql, i > 0 ? ",?" : "?", i > 0 ? 2 : 1) != 0
            || mc_db_args_add(args, MC_DB_U64(rooms[*next + (i < k ? i : k - 1)])) != 0)
        {
            return -1;
        }
    }
    *next += k;
    return mc_buf_append(sql, tail, sizeof(tail) - 1);
}
