/*
 * Batches of chat messages and the SQL that persists them (see msgbatch.h).
 *
 * The roomlist-consumer collects a few hundred Kafka records into an
 * mc_msgbatch_t, sorts it by (room, seq), and runs in one transaction:
 *
 *   INSERT IGNORE INTO messages (...) VALUES (...), (...), ...
 *       -- as many statements as the packet limit needs; PRIMARY KEY(room_id,
 *       -- seq) plus IGNORE turns a redelivered record into a no-op.
 *   UPDATE rooms r JOIN (<one row per room>) v ...
 *       SET r.last_seq = v.seq, ... WHERE r.last_seq < v.seq
 *   UPDATE room_members m JOIN rooms r ... SET m.last_message_at = r.last_message_at
 *       WHERE m.room_id IN (...) AND ... m.last_message_at < r.last_message_at
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
 * Strings go into the SQL as _utf8mb4 X'<hex>' literals: no escaping rule
 * depends on the connection or on NO_BACKSLASH_ESCAPES, and NUL bytes pass.
 * Text is made valid UTF-8 on the way in (invalid bytes become U+FFFD) so a
 * bad record can never fail a batch forever in strict mode.  Times are
 * FROM_UNIXTIME(<s>.<ms>) so that the milliseconds are exact; a time of 0 or
 * one past TIMESTAMP's 2038 limit becomes NOW(3).
 */
#include <stdlib.h>
#include <string.h>

#include "minichat.pb-c.h"
#include "minichat/msgbatch.h"
#include "minichat/utf8.h"

#define MC_TS_MAX_SECONDS 2147483647ULL

static int sql_append_str(mc_buf_t *buf, const char *s, size_t len);
static int sql_append_time(mc_buf_t *buf, uint64_t ts);
static size_t row_sql_size(const mc_msgrow_t *r);
static int row_cmp(const void *a, const void *b);
static int rooms_values_sql(const mc_msgbatch_t *b, mc_buf_t *out);

/* Appends s as a _utf8mb4 X'..' literal.  Returns 0 or -1. */
static int sql_append_str(mc_buf_t *buf, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    static const char pre[] = "_utf8mb4 X'";
    const unsigned char *u = (const unsigned char *)s;
    char *p;
    size_t i;

    if (mc_buf_reserve(buf, sizeof(pre) - 1 + 2 * len + 1) != 0) {
        return -1;
    }
    p = buf->data + buf->len;
    memcpy(p, pre, sizeof(pre) - 1);
    p += sizeof(pre) - 1;
    for (i = 0; i < len; i++) {
        *p++ = hex[u[i] >> 4];
        *p++ = hex[u[i] & 0x0f];
    }
    *p++ = '\'';
    buf->len = (size_t)(p - buf->data);
    buf->data[buf->len] = '\0';
    return 0;
}

/* Appends the SQL expression for a millisecond time.  Returns 0 or -1. */
static int sql_append_time(mc_buf_t *buf, uint64_t ts)
{
    /* TIMESTAMP starts at 1970-01-01 00:00:01: anything earlier would make
     * strict mode reject the batch, forever */
    if (ts < 1000 || ts / 1000 >= MC_TS_MAX_SECONDS) {
        return mc_buf_append(buf, "NOW(3)", 6);
    }
    return mc_buf_appendf(buf, "FROM_UNIXTIME(%llu.%03llu)", (unsigned long long)(ts / 1000),
                          (unsigned long long)(ts % 1000));
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

/* Returns an upper bound of the SQL bytes of one row's VALUES tuple. */
static size_t row_sql_size(const mc_msgrow_t *r)
{
    return 3 * 21 + 2 * (r->cid_len + r->body_len) + 2 * 12 + 48 + 16;
}

int mc_msgbatch_insert_sql(const mc_msgbatch_t *b, size_t *next, size_t max_bytes, mc_buf_t *out)
{
    static const char head[] =
        "INSERT IGNORE INTO messages (room_id, seq, sender_id, kind, body, client_msg_id, created_at) VALUES ";
    const mc_msgrow_t *r;
    size_t i;

    mc_buf_reset(out);
    if (mc_buf_append(out, head, sizeof(head) - 1) != 0) {
        return -1;
    }

    for (i = *next; i < b->n; i++) {
        r = &b->rows[i];
        if (i > *next && out->len + row_sql_size(r) > max_bytes) {
            break;
        }
        if (mc_buf_appendf(out, "%s(%llu,%llu,%llu,'%s',", i > *next ? "," : "", (unsigned long long)r->room,
                           (unsigned long long)r->seq, (unsigned long long)r->sender,
                           r->kind == MC_MSG_SYSTEM ? "system" : "text") != 0
            || sql_append_str(out, r->body, r->body_len) != 0 || mc_buf_append(out, ",", 1) != 0
            || sql_append_str(out, r->cid, r->cid_len) != 0 || mc_buf_append(out, ",", 1) != 0
            || sql_append_time(out, r->ts) != 0 || mc_buf_append(out, ")", 1) != 0)
        {
            return -1;
        }
    }

    *next = i;
    return 0;
}

/* Appends the derived table "(SELECT id, seq, at, preview UNION ALL ...) v"
 * with one row per room: the room's last row in the sorted batch, and the
 * preview of the room's last text message in the batch (NULL when the batch
 * has only system messages for the room).  Returns 0 or -1. */
static int rooms_values_sql(const mc_msgbatch_t *b, mc_buf_t *out)
{
    const mc_msgrow_t *r, *t;
    size_t i, k, start = 0, first = 1;

    if (mc_buf_append(out, "(", 1) != 0) {
        return -1;
    }
    for (i = 0; i < b->n; i++) {
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
        if (mc_buf_appendf(out, first ? "SELECT %llu AS id, %llu AS seq, " : " UNION ALL SELECT %llu, %llu, ",
                           (unsigned long long)r->room, (unsigned long long)r->seq) != 0
            || sql_append_time(out, r->ts) != 0 || (first && mc_buf_append(out, " AS at", 6) != 0)
            || mc_buf_append(out, ", ", 2) != 0
            || (t != NULL
                    ? sql_append_str(out, t->body, mc_utf8_prefix(t->body, t->body_len, MC_MSGBATCH_PREVIEW_CHARS))
                    : mc_buf_append(out, "NULL", 4))
                   != 0
            || (first && mc_buf_append(out, " AS preview", 11) != 0))
        {
            return -1;
        }
        first = 0;
        start = i + 1;
    }
    return mc_buf_append(out, ") v", 3);
}

int mc_msgbatch_rooms_sql(const mc_msgbatch_t *b, mc_buf_t *out)
{
    static const char head[] = "UPDATE rooms r JOIN ";
    static const char tail[] =
        " ON r.id = v.id SET r.last_seq = v.seq, r.last_message_at = v.at,"
        " r.last_preview = COALESCE(LEFT(v.preview, 191), r.last_preview)"
        " WHERE r.last_seq < v.seq";

    mc_buf_reset(out);
    if (b->n == 0) {
        return 0;
    }
    if (mc_buf_append(out, head, sizeof(head) - 1) != 0 || rooms_values_sql(b, out) != 0
        || mc_buf_append(out, tail, sizeof(tail) - 1) != 0)
    {
        return -1;
    }
    return 0;
}

int mc_members_sql(const uint64_t *rooms, size_t n, mc_buf_t *out)
{
    static const char head[] =
        "UPDATE room_members m JOIN rooms r ON r.id = m.room_id SET m.last_message_at = r.last_message_at"
        " WHERE m.room_id IN (";
    static const char tail[] =
        ") AND m.left_at IS NULL AND r.last_message_at IS NOT NULL"
        " AND (m.last_message_at IS NULL OR m.last_message_at < r.last_message_at)";
    size_t i;

    mc_buf_reset(out);
    if (n == 0) {
        return 0;
    }
    if (mc_buf_append(out, head, sizeof(head) - 1) != 0) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (mc_buf_appendf(out, i > 0 ? ",%llu" : "%llu", (unsigned long long)rooms[i]) != 0) {
            return -1;
        }
    }
    return mc_buf_append(out, tail, sizeof(tail) - 1);
}
