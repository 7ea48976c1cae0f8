/*
 * Users' ban state in MySQL (primary), as Redis decided it: the module
 * sends a BanRequest when a strike bans a user (lua/limit.lua) and when it
 * sees that a ban ran out in Redis.  users.status is 'banned' while a ban
 * holds; banned_until is its end (NULL: permanent) and strikes the count so
 * far.  A user row is created when the user has none (ids come from JWTs).
 *
 * An unban by hand (the server API: `lift`) makes the user active whatever
 * ban is recorded, with the statement minichat-ban runs (minichat/ban.h).
 *
 * Lifting an expired ban names the time by which it ended, so a ban written
 * later (a new strike whose job ran first) is never lifted by mistake.
 */
#include <inttypes.h>
#include <stdio.h>

#include <mysql.h>

#include "minichat/ban.h"

#include "queries.h"

const char *q_ban(dbq_t *q, const Minichat__BanRequest *req, Minichat__BanResult *res)
{
    (void)res;

    if (req->user == 0) {
        return "bad_request: no user";
    }
    /* times as ms since the epoch: FROM_UNIXTIME(ms / 1000) keeps the milliseconds */
    if (req->lift) {
        dbq_sql(q, MC_BAN_SQL_LIFT);
        dbq_arg_u64(q, req->user);
    } else if (req->banned) {
        dbq_sql(q, "INSERT INTO users (id, status, banned_until, strikes) VALUES (?, 'banned', FROM_UNIXTIME(? / 1000), ?)"
                   " ON DUPLICATE KEY UPDATE status = 'banned', banned_until = VALUES(banned_until),"
                   " strikes = GREATEST(strikes, VALUES(strikes))");
        dbq_arg_u64(q, req->user);
        if (req->until) {
            dbq_arg_u64(q, req->until);
        } else {
            dbq_arg_null(q); /* permanent */
        }
        dbq_arg_u64(q, req->strikes);
    } else {
        /* one second of slack for the clocks of Redis and MySQL */
        dbq_sql(q, "UPDATE users SET status = 'active', banned_until = NULL WHERE id = ?"
                   " AND status = 'banned' AND banned_until IS NOT NULL"
                   " AND banned_until <= FROM_UNIXTIME(? / 1000) + INTERVAL 1 SECOND");
        dbq_arg_u64(q, req->user);
        dbq_arg_u64(q, req->until);
    }
    if (dbq_exec(q, MC_DB_PRIMARY) != 0) {
        return dbq_fail(q);
    }
    return NULL;
}
