/*
 * Reading rooms and people (see queries.h for the conventions).
 *
 * rooms     the caller's rooms by last activity, newest first, by keyset
 *           over the index my_rooms (user_id, left_at, last_message_at,
 *           room_id): the first page reads from the top, the next ones
 *           strictly below the cursor (the (last_message_at, room_id) of
 *           the previous page's last row), so a page costs its own rows at
 *           any depth.  One row more than asked says whether a next page
 *           exists.  From the replica (the primary when it is down): a room
 *           list may be a moment behind.
 * info      the room and its current members, from the primary (it decides
 *           membership, and follows an invite at once); forbidden unless the
 *           caller is a current member, also for a room that does not exist
 *           (no probing for ids).
 * contacts  the distinct users sharing a current room with the caller (the
 *           recipients of presence), from the replica.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/log.h"
#include "minichat/paging.h"
#include "queries.h"

#define ROOMS_LIMIT_DEFAULT 20
#define ROOMS_LIMIT_MAX 100
#define CONTACTS_LIMIT_MAX 1000

/* a TIMESTAMP(3) column as ms since the epoch (NULL stays NULL) */
#define MS(col) "CAST(ROUND(UNIX_TIMESTAMP(" col ") * 1000) AS UNSIGNED)"

/* Fills a summary from columns id, kind, title, last_seq, last_read_seq,
 * last_message_at (ms), last_preview, members.  Returns 0 or -1. */
static int summary(dbq_t *q, char **row, Minichat__RoomSummary *s)
{
    minichat__room_summary__init(s);
    s->id = dbq_u64(row[0]);
    s->kind = dbq_strndup(q, row[1] ? row[1] : "", row[1] ? strlen(row[1]) : 0);
    s->title = dbq_strndup(q, row[2] ? row[2] : "", row[2] ? strlen(row[2]) : 0);
    s->last_seq = dbq_u64(row[3]);
    s->last_read_seq = dbq_u64(row[4]);
    s->last_message_at = dbq_u64(row[5]);
    s->last_preview = dbq_strndup(q, row[6] ? row[6] : "", row[6] ? strlen(row[6]) : 0);
    s->members = (uint32_t)dbq_u64(row[7]);
    return s->kind && s->title && s->last_preview ? 0 : -1;
}

const char *q_rooms(dbq_t *q, const Minichat__RoomsRequest *req, Minichat__RoomsResult *res)
{
    uint64_t at = 0, after = 0, last_at = 0, last_id = 0;
    uint32_t limit = req->limit ? req->limit : ROOMS_LIMIT_DEFAULT;
    mc_db_role_t role = MC_DB_REPLICA;
    mc_db_rows_t *r;
    char **row;
    char *cursor;
    size_t n;

    if (req->user == 0) {
        return "bad_request: no user";
    }
    if (req->cursor != NULL && req->cursor[0] != '\0' && mc_cursor_decode(req->cursor, &at, &after) != 0) {
        return "bad_request: invalid cursor";
    }
    if (limit > ROOMS_LIMIT_MAX) {
        limit = ROOMS_LIMIT_MAX;
    }
    q->user = req->user; /* after the user's own write, from the primary */
    for (;;) {
        dbq_sql(q,
                "SELECT m.room_id, r.kind, r.title, r.last_seq, m.last_read_seq, " MS("r.last_message_at") ","
                " r.last_preview,"
                " (SELECT COUNT(*) FROM room_members c WHERE c.room_id = m.room_id AND c.left_at IS NULL),"
                " " MS("m.last_message_at") " FROM room_members m FORCE INDEX (my_rooms)"
                " JOIN rooms r ON r.id = m.room_id WHERE m.user_id = ? AND m.left_at IS NULL");
        dbq_arg_u64(q, req->user);
        if (after != 0 && at != 0) {
            /* below the cursor; rows without a time (older data) sort last */
            dbq_sqlf(q, " AND (m.last_message_at < FROM_UNIXTIME(? / 1000) OR (m.last_message_at ="
                        " FROM_UNIXTIME(? / 1000) AND m.room_id < ?) OR m.last_message_at IS NULL)");
            dbq_arg_u64(q, at);
            dbq_arg_u64(q, at);
            dbq_arg_u64(q, after);
        } else if (after != 0) {
            dbq_sqlf(q, " AND m.last_message_at IS NULL AND m.room_id < ?");
            dbq_arg_u64(q, after);
        }
        dbq_sqlf(q, " ORDER BY m.last_message_at DESC, m.room_id DESC LIMIT ?");
        dbq_arg_u64(q, limit + 1);
        if ((r = dbq_select(q, role)) != NULL || role == MC_DB_PRIMARY) {
            break;
        }
        role = MC_DB_PRIMARY; /* the replica failed: the primary answers */
    }
    if (r == NULL) {
        return dbq_fail(q);
    }
    n = mc_db_rows_count(r);
    res->rooms = dbq_alloc(q, (n + 1) * sizeof(Minichat__RoomSummary *));
    if (res->rooms == NULL) {
        goto oom;
    }
    while ((row = mc_db_rows_next(r)) != NULL && res->n_rooms < limit) {
        res->rooms[res->n_rooms] = dbq_alloc(q, sizeof(Minichat__RoomSummary));
        if (res->rooms[res->n_rooms] == NULL || summary(q, row, res->rooms[res->n_rooms]) != 0) {
            goto oom;
        }
        res->n_rooms++;
        last_id = dbq_u64(row[0]);
        last_at = dbq_u64(row[8]);
    }
    if (row != NULL) {
        /* a row past the page: there is a next one */
        cursor = dbq_alloc(q, MC_CURSOR_LEN + 1);
        if (cursor == NULL) {
            goto oom;
        }
        mc_cursor_encode(last_at, last_id, cursor);
        res->next_cursor = cursor;
    }
    mc_db_rows_free(r);
    return NULL;
oom:
    mc_db_rows_free(r);
    return "unavailable: out of memory";
}

const char *q_room_info(dbq_t *q, const Minichat__RoomInfoRequest *req, Minichat__RoomInfoResult *res)
{
    Minichat__RoomMember *mb;
    mc_db_rows_t *r;
    char **row;
    size_t n, i;
    int member = 0;

    if (req->room == 0 || req->user == 0) {
        return "bad_request: no room or user";
    }
    dbq_sql(q, "SELECT id, kind, title, last_seq, 0, " MS("last_message_at") ", last_preview, 0, created_by, "
               MS("created_at") " FROM rooms WHERE id = ?");
    dbq_arg_u64(q, req->room);
    if ((r = dbq_select(q, MC_DB_PRIMARY)) == NULL) {
        return dbq_fail(q);
    }
    row = mc_db_rows_next(r);
    if (row == NULL) {
        mc_db_rows_free(r);
        return "forbidden: not a member of this room";
    }
    res->room = dbq_alloc(q, sizeof(Minichat__RoomSummary));
    if (res->room == NULL || summary(q, row, res->room) != 0) {
        mc_db_rows_free(r);
        return "unavailable: out of memory";
    }
    res->created_by = dbq_u64(row[8]);
    res->created_at = dbq_u64(row[9]);
    mc_db_rows_free(r);

    dbq_sql(q, "SELECT user_id, last_read_seq, joined_seq FROM room_members WHERE room_id = ?"
               " AND left_at IS NULL ORDER BY user_id");
    dbq_arg_u64(q, req->room);
    if ((r = dbq_select(q, MC_DB_PRIMARY)) == NULL) {
        return dbq_fail(q);
    }
    n = mc_db_rows_count(r);
    res->members = dbq_alloc(q, (n + 1) * sizeof(Minichat__RoomMember *));
    mb = dbq_alloc(q, (n + 1) * sizeof(Minichat__RoomMember));
    if (res->members == NULL || mb == NULL) {
        mc_db_rows_free(r);
        return "unavailable: out of memory";
    }
    for (i = 0; (row = mc_db_rows_next(r)) != NULL; i++) {
        minichat__room_member__init(&mb[i]);
        mb[i].user = dbq_u64(row[0]);
        mb[i].last_read_seq = dbq_u64(row[1]);
        mb[i].joined_seq = dbq_u64(row[2]);
        res->members[i] = &mb[i];
        if (mb[i].user == req->user) {
            member = 1;
            res->room->last_read_seq = mb[i].last_read_seq;
        }
    }
    res->n_members = i;
    res->room->members = (uint32_t)i;
    mc_db_rows_free(r);
    if (!member) {
        return "forbidden: not a member of this room";
    }
    return NULL;
}

const char *q_contacts(dbq_t *q, const Minichat__ContactsRequest *req, Minichat__ContactsResult *res)
{
    uint32_t limit = req->limit ? req->limit : CONTACTS_LIMIT_MAX;
    mc_db_rows_t *r;
    int rc;

    if (req->user == 0) {
        return "bad_request: no user";
    }
    if (limit > CONTACTS_LIMIT_MAX) {
        limit = CONTACTS_LIMIT_MAX;
    }
    dbq_sql(q, "SELECT DISTINCT b.user_id FROM room_members a FORCE INDEX (my_rooms)"
               " JOIN room_members b ON b.room_id = a.room_id AND b.left_at IS NULL"
               " WHERE a.user_id = ? AND a.left_at IS NULL AND b.user_id <> ? LIMIT ?");
    dbq_arg_u64(q, req->user);
    dbq_arg_u64(q, req->user);
    dbq_arg_u64(q, limit);
    /* the primary: a user who just joined a room (a replica may lag behind the
     * invite) must hear of the user's presence at once */
    r = dbq_select(q, MC_DB_PRIMARY);
    if (r == NULL) {
        return dbq_fail(q);
    }
    rc = dbq_ids(q, r, &res->users, &res->n_users);
    mc_db_rows_free(r);
    return rc == 0 ? NULL : "unavailable: out of memory";
}
