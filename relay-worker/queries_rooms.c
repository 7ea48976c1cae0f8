/*
 * Creating and changing rooms, and what Redis needs to rebuild one, all on
 * the primary (see queries.h for the conventions).
 *
 * create   START TRANSACTION; INSERT rooms; [INSERT room_requests (creator,
 *          key, room)]; INSERT room_members (... last_message_at = NOW(3));
 *          COMMIT.  A duplicate (creator, key) means an earlier request made
 *          the room: roll back, answer that room with existed = true.  Two
 *          requests with one key racing: the second INSERT waits on the
 *          first's row lock and then fails as a duplicate.
 * invite   START TRANSACTION; the room row FOR UPDATE (invites of one room
 *          take turns); its current members; then for a group room an
 *          upsert of the new members (a former member rejoins: left_at and
 *          left_seq cleared, joined_seq and the read pointer set to the
 *          room's current seq), for a direct room past two members a new
 *          group room with everybody (`added` then lists the invitees who
 *          were not in the direct room); COMMIT.
 * leave    one UPDATE ... WHERE left_at IS NULL; when it changes nothing, a
 *          former member with the same left_seq is a repeat (ok), anything
 *          else is forbidden.
 * state    rooms.last_seq and MAX(messages.seq) (the larger), every member
 *          row: current members, former members with their left_seq, read
 *          pointers.  Before reading, the roomlist-consumer must have caught
 *          up with Kafka (consumer_lag.c), or an acked message could be
 *          missing and its seq issued twice.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysqld_error.h>

#include "minichat/log.h"
#include "minichat/room_rules.h"
#include "queries.h"

#define Q_IDEM_RECENT 1000 /* latest messages whose cids a rebuild restores */

/* Returns "bad_request: <why>" in the job's arena, why being a text of
 * room_rules.h. */
static const char *bad_request(dbq_t *q, const char *why)
{
    static const char code[] = "bad_request: ";
    size_t n = strlen(why);
    char *s = dbq_alloc(q, sizeof(code) + n);

    if (s == NULL) {
        return "unavailable: out of memory";
    }
    memcpy(s, code, sizeof(code) - 1);
    memcpy(s + sizeof(code) - 1, why, n + 1);
    return s;
}

/* Appends "(?,?,?,?,NOW(3)), ..." and the values (room, user, read,
 * joined) for the ids: one statement text per count, each prepared once. */
static void member_values(dbq_t *q, uint64_t room, const uint64_t *ids, size_t n, uint64_t seq)
{
    size_t i;

    for (i = 0; i < n; i++) {
        dbq_sqlf(q, i ? ",(?,?,?,?,NOW(3))" : "(?,?,?,?,NOW(3))");
        dbq_arg_u64(q, room);
        dbq_arg_u64(q, ids[i]);
        dbq_arg_u64(q, seq);
        dbq_arg_u64(q, seq);
    }
}

/* Reads the current members of a room into an arena array, sorted.
 * Returns 0 or -1. */
static int current_members(dbq_t *q, uint64_t room, int lock, uint64_t **ids, size_t *n)
{
    mc_db_rows_t *res;
    int rc;

    dbq_sql(q, lock ? "SELECT user_id FROM room_members WHERE room_id = ? AND left_at IS NULL ORDER BY user_id FOR UPDATE"
                    : "SELECT user_id FROM room_members WHERE room_id = ? AND left_at IS NULL ORDER BY user_id");
    dbq_arg_u64(q, room);
    res = dbq_select(q, MC_DB_PRIMARY);
    if (res == NULL) {
        return -1;
    }
    rc = dbq_ids(q, res, ids, n);
    mc_db_rows_free(res);
    return rc;
}

/* Inserts a room and its members (transaction open).  Returns the id or 0. */
static uint64_t insert_room(dbq_t *q, int group, const char *title, uint64_t creator, const uint64_t *members,
                            size_t n)
{
    uint64_t id;

    dbq_sql(q, "INSERT INTO rooms (kind, title, created_by) VALUES (?, ?, ?)");
    dbq_arg_text(q, group ? "group" : "direct", group ? 5 : 6);
    dbq_arg_text(q, title, strlen(title));
    dbq_arg_u64(q, creator);
    if (dbq_exec(q, MC_DB_PRIMARY) != 0) {
        return 0;
    }
    id = q->st.insert_id;
    dbq_sql(q, "INSERT INTO room_members (room_id, user_id, last_read_seq, joined_seq, last_message_at) VALUES ");
    member_values(q, id, members, n, 0);
    if (dbq_exec(q, MC_DB_PRIMARY) != 0) {
        return 0;
    }
    return id;
}

/* The room an earlier request with the same (creator, key) made, or 0. */
static uint64_t earlier_room(dbq_t *q, uint64_t creator, const char *key)
{
    mc_db_rows_t *res;
    char **row;
    uint64_t id = 0;

    dbq_sql(q, "SELECT room_id FROM room_requests WHERE creator_id = ? AND idem_key = ?");
    dbq_arg_u64(q, creator);
    dbq_arg_blob(q, key, strlen(key));
    res = dbq_select(q, MC_DB_PRIMARY);
    if (res == NULL) {
        return 0;
    }
    if ((row = mc_db_rows_next(res)) != NULL) {
        id = dbq_u64(row[0]);
    }
    mc_db_rows_free(res);
    return id;
}

const char *q_create_room(dbq_t *q, const Minichat__CreateRoomRequest *req, Minichat__CreateRoomResult *res)
{
    const char *title = req->title ? req->title : "", *key = req->idempotency_key ? req->idempotency_key : "", *why;
    uint64_t *members, id;
    size_t n, i;
    int group;

    if ((why = mc_room_check_kind(req->kind)) != NULL) {
        return bad_request(q, why);
    }
    if (req->creator == 0) {
        return "bad_request: no creator";
    }
    if ((why = mc_room_check_title(title, strlen(title))) != NULL) {
        return bad_request(q, why);
    }
    if (strlen(key) > MC_ROOM_IDEM_MAX) {
        /* any bytes (a blob parameter); printable ASCII is the REST API's rule */
        return "bad_request: idempotency key longer than 64 bytes";
    }
    members = dbq_alloc(q, (req->n_members + 1) * sizeof(uint64_t));
    if (members == NULL) {
        return "unavailable: out of memory";
    }
    memcpy(members, req->members, req->n_members * sizeof(uint64_t));
    members[req->n_members] = req->creator;
    n = req->n_members + 1;
    if ((why = mc_room_members(members, &n, DBQ_MAX_MEMBERS)) != NULL
        || (why = mc_room_check_count(req->kind, n)) != NULL)
    {
        return bad_request(q, why);
    }
    group = strcmp(req->kind, "group") == 0;

    if (dbq_begin(q) != 0 || (id = insert_room(q, group, title, req->creator, members, n)) == 0) {
        return dbq_fail(q);
    }
    if (key[0] != '\0') {
        dbq_sql(q, "INSERT INTO room_requests (creator_id, idem_key, room_id) VALUES (?, ?, ?)");
        dbq_arg_u64(q, req->creator);
        dbq_arg_blob(q, key, strlen(key));
        dbq_arg_u64(q, id);
        if (dbq_exec(q, MC_DB_PRIMARY) != 0) {
            if (q->last_errno != ER_DUP_ENTRY) {
                return dbq_fail(q);
            }
            (void)dbq_fail(q); /* roll back our room; answer the earlier one */
            if (q->retry) {
                return "unavailable: database error";
            }
            id = earlier_room(q, req->creator, key);
            if (id == 0 || current_members(q, id, 0, &members, &n) != 0) {
                return dbq_fail(q);
            }
            res->id = id;
            res->existed = 1;
            res->members = members;
            res->n_members = n;
            return NULL;
        }
    }
    if (dbq_commit(q) != 0) {
        return dbq_fail(q);
    }
    mc_info("db: created %s room %" PRIu64 " by %" PRIu64 " with %zu members", group ? "group" : "direct", id,
            req->creator, n);
    for (i = 0; i < n; i++) {
        dbq_wrote(q, members[i]); /* the creator and the members see the new room at once */
    }
    res->id = id;
    res->members = members;
    res->n_members = n;
    return NULL;
}

const char *q_invite(dbq_t *q, const Minichat__InviteRequest *req, Minichat__InviteResult *res)
{
    uint64_t *cur, *all, *added, id;
    size_t ncur, nall, nadded, ninv, i;
    mc_db_rows_t *r;
    char **row;
    const char *why;
    char *title;
    int group;

    if (req->room == 0 || req->user == 0 || req->n_members == 0) {
        return "bad_request: an invite needs a room, an inviter and members";
    }
    added = dbq_alloc(q, req->n_members * sizeof(uint64_t));
    if (added == NULL) {
        return "unavailable: out of memory";
    }
    memcpy(added, req->members, req->n_members * sizeof(uint64_t));
    ninv = req->n_members;
    if ((why = mc_room_members(added, &ninv, DBQ_MAX_MEMBERS)) != NULL) {
        return bad_request(q, why);
    }
    if (dbq_begin(q) != 0) {
        return dbq_fail(q);
    }
    dbq_sql(q, "SELECT kind, title FROM rooms WHERE id = ? FOR UPDATE");
    dbq_arg_u64(q, req->room);
    if ((r = dbq_select(q, MC_DB_PRIMARY)) == NULL) {
        return dbq_fail(q);
    }
    row = mc_db_rows_next(r);
    if (row == NULL) {
        mc_db_rows_free(r);
        (void)dbq_fail(q);
        return "not_found: no such room";
    }
    group = row[0] && strcmp(row[0], "group") == 0;
    title = dbq_strndup(q, row[1] ? row[1] : "", row[1] ? strlen(row[1]) : 0);
    mc_db_rows_free(r);
    if (title == NULL || current_members(q, req->room, 1, &cur, &ncur) != 0) {
        return dbq_fail(q);
    }
    if (!dbq_has(cur, ncur, req->user)) {
        (void)dbq_fail(q);
        return "forbidden: not a member of this room";
    }

    /* everybody afterwards, and who is new */
    all = dbq_alloc(q, (ncur + ninv) * sizeof(uint64_t));
    if (all == NULL) {
        return dbq_fail(q);
    }
    for (i = 0, nadded = 0; i < ninv; i++) {
        if (!dbq_has(cur, ncur, added[i])) {
            added[nadded++] = added[i];
        }
    }
    memcpy(all, cur, ncur * sizeof(uint64_t));
    memcpy(all + ncur, added, nadded * sizeof(uint64_t));
    nall = mc_room_ids_uniq(all, ncur + nadded);
    if (nall > DBQ_MAX_MEMBERS) {
        (void)dbq_fail(q);
        return "bad_request: a room holds at most 10000 members";
    }

    id = req->room;
    if (nadded > 0 && (group || nall <= 2)) {
        dbq_sql(q, "INSERT INTO room_members (room_id, user_id, last_read_seq, joined_seq, last_message_at) VALUES ");
        member_values(q, id, added, nadded, req->joined_seq);
        dbq_sqlf(q, " ON DUPLICATE KEY UPDATE left_at=NULL, left_seq=0, joined_seq=VALUES(joined_seq),"
                    " last_read_seq=GREATEST(last_read_seq, VALUES(last_read_seq)), last_message_at=NOW(3)");
        if (dbq_exec(q, MC_DB_PRIMARY) != 0) {
            return dbq_fail(q);
        }
    } else if (nadded > 0) {
        /* a direct room stays a conversation of two: the group is a new room */
        id = insert_room(q, 1, title, req->user, all, nall);
        if (id == 0) {
            return dbq_fail(q);
        }
        res->created = 1;
    }
    if (dbq_commit(q) != 0) {
        return dbq_fail(q);
    }
    if (nadded > 0) {
        mc_info("db: %zu members invited by %" PRIu64 " to room %" PRIu64 "%s", nadded, req->user, id,
                res->created ? " (a new group room)" : "");
        dbq_wrote(q, req->user);
        for (i = 0; i < nadded; i++) {
            dbq_wrote(q, added[i]);
        }
    }
    res->room = id;
    res->added = added;
    res->n_added = nadded;
    res->members = all;
    res->n_members = nall;
    return NULL;
}

const char *q_leave(dbq_t *q, const Minichat__LeaveRequest *req, Minichat__LeaveResult *res)
{
    mc_db_rows_t *r;
    char **row;
    const char *err = NULL;

    if (req->room == 0 || req->user == 0) {
        return "bad_request: a leave needs a room and a user";
    }
    if (req->left_seq) {
        dbq_sql(q, "UPDATE room_members SET left_at = NOW(3), left_seq = ? WHERE room_id = ?"
                   " AND user_id = ? AND left_at IS NULL");
        dbq_arg_u64(q, req->left_seq);
        dbq_arg_u64(q, req->room);
        dbq_arg_u64(q, req->user);
        if (dbq_exec(q, MC_DB_PRIMARY) != 0) {
            return dbq_fail(q);
        }
        if (q->st.affected == 1) {
            dbq_wrote(q, req->user);
            mc_info("db: user %" PRIu64 " left room %" PRIu64 " at seq %" PRIu64, req->user, req->room,
                    req->left_seq);
            res->left_seq = req->left_seq;
            return NULL;
        }
    }
    /* not a current member: a user who left already gets that leave back (a
     * retried leave finishes what the first one started); anyone else is
     * refused */
    dbq_sql(q, "SELECT left_seq FROM room_members WHERE room_id = ? AND user_id = ? AND left_at IS NOT NULL");
    dbq_arg_u64(q, req->room);
    dbq_arg_u64(q, req->user);
    if ((r = dbq_select(q, MC_DB_PRIMARY)) == NULL) {
        return dbq_fail(q);
    }
    row = mc_db_rows_next(r);
    if (row == NULL) {
        err = "forbidden: not a member of this room";
    } else {
        res->left_seq = dbq_u64(row[0]);
    }
    mc_db_rows_free(r);
    return err;
}

const char *q_room_state(dbq_t *q, const Minichat__RoomStateRequest *req, Minichat__RoomStateResult *res)
{
    mc_db_rows_t *r;
    char **row;
    size_t n, i;

    if (req->room == 0) {
        return "bad_request: no room";
    }
    if (q->lag != NULL && consumer_lag_wait(q->lag, q->rebuild_wait_ms) != 0) {
        return "unavailable: consumer lagging";
    }
    dbq_sql(q, "SELECT GREATEST(r.last_seq, COALESCE((SELECT MAX(seq) FROM messages WHERE room_id = r.id), 0))"
               " FROM rooms r WHERE r.id = ?");
    dbq_arg_u64(q, req->room);
    if ((r = dbq_select(q, MC_DB_PRIMARY)) == NULL) {
        return dbq_fail(q);
    }
    row = mc_db_rows_next(r);
    if (row != NULL) {
        res->found = 1;
        res->last_seq = dbq_u64(row[0]);
    }
    mc_db_rows_free(r);
    if (!res->found) {
        return NULL;
    }

    dbq_sql(q, "SELECT user_id, left_at IS NULL, left_seq, last_read_seq FROM room_members WHERE room_id = ?"
               " ORDER BY user_id");
    dbq_arg_u64(q, req->room);
    if ((r = dbq_select(q, MC_DB_PRIMARY)) == NULL) {
        return dbq_fail(q);
    }
    n = mc_db_rows_count(r);
    res->members = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    res->left = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    res->left_seq = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    res->read_user = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    res->read_seq = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    if (res->members == NULL || res->left == NULL || res->left_seq == NULL || res->read_user == NULL
        || res->read_seq == NULL) {
        mc_db_rows_free(r);
        return "unavailable: out of memory";
    }
    for (i = 0; (row = mc_db_rows_next(r)) != NULL; i++) {
        if (dbq_u64(row[1])) {
            res->members[res->n_members++] = dbq_u64(row[0]);
        } else {
            res->left[res->n_left] = dbq_u64(row[0]);
            res->left_seq[res->n_left++] = dbq_u64(row[2]);
            res->n_left_seq = res->n_left;
        }
        if (dbq_u64(row[3]) > 0) {
            res->read_user[res->n_read_user] = dbq_u64(row[0]);
            res->read_seq[res->n_read_user++] = dbq_u64(row[3]);
            res->n_read_seq = res->n_read_user;
        }
    }
    mc_db_rows_free(r);

    /* the latest cids: a send retried across the loss is still the same message */
    dbq_sql(q, "SELECT sender_id, client_msg_id, seq, CAST(UNIX_TIMESTAMP(created_at) * 1000 AS UNSIGNED)"
               " FROM messages WHERE room_id = ? ORDER BY seq DESC LIMIT ?");
    dbq_arg_u64(q, req->room);
    dbq_arg_u64(q, Q_IDEM_RECENT);
    if ((r = dbq_select(q, MC_DB_PRIMARY)) == NULL) {
        return dbq_fail(q);
    }
    n = mc_db_rows_count(r);
    res->idem_sender = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    res->idem_cid = dbq_alloc(q, (n + 1) * sizeof(char *));
    res->idem_seq = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    res->idem_ts = dbq_alloc(q, (n + 1) * sizeof(uint64_t));
    if (res->idem_sender == NULL || res->idem_cid == NULL || res->idem_seq == NULL || res->idem_ts == NULL) {
        mc_db_rows_free(r);
        return "unavailable: out of memory";
    }
    while ((row = mc_db_rows_next(r)) != NULL) {
        const unsigned long *lens = mc_db_rows_lengths(r);

        if (row[1] == NULL || (res->idem_cid[res->n_idem_cid] = dbq_strndup(q, row[1], lens[1])) == NULL) {
            continue;
        }
        res->idem_sender[res->n_idem_sender++] = dbq_u64(row[0]);
        res->n_idem_cid++;
        res->idem_seq[res->n_idem_seq++] = dbq_u64(row[2]);
        res->idem_ts[res->n_idem_ts++] = row[3] ? dbq_u64(row[3]) : 0;
    }
    mc_db_rows_free(r);
    return NULL;
}
