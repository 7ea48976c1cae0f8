/*
 * Offline push: events on a Kafka topic for members connected on no node.
 *
 * Why here.  The roomlist-consumer reads every message exactly once per
 * group (at least once across a crash), in batches, after the message is
 * durable; it already talks to MySQL and Redis.  The nginx module knows
 * who is connected to *its* node only, and the relay-workers would each
 * have to agree on who is connected nowhere; here one process asks Redis
 * once per batch.  Sending stays as fast as before: nothing on the send
 * path waits for a push.
 *
 * Per batch, after the store's COMMIT (rc_push_batch()):
 *
 *   1. Recipients.  The Kafka record carries no recipients (the
 *      relay-worker clears them: a message to a room of 100,000 would carry
 *      800 KB of ids), so the members of the batch's rooms come from
 *      room_members on the primary, in one query: current members (left_at
 *      IS NULL), at most max_recipients + 1 per room (ROW_NUMBER()), so a
 *      batch costs at most rooms x (max_recipients + 1) rows.  A room with
 *      more members than max_recipients gets no events at all (counted as
 *      `large`): a partial push would be arbitrary, and a room that large is
 *      a channel whose readers a gateway should not wake one by one.  A
 *      member gets an event for a message when it joined before it (seq >
 *      joined_seq) and did not send it.
 *   2. Who is online.  Presence keeps every online user in
 *      {presence}:online with the latest expiry of its devices (refreshed on
 *      every tick, removed when the last device closes, swept when a node
 *      dies).  One key, so one node even in a Redis Cluster: the distinct
 *      members of the batch go in ZMSCORE calls of 1,000, pipelined, one
 *      round trip.  A user is online when its score is still in the future.
 *   3. Events.  One record per (message, offline member): key = the user id
 *      in decimal (one user's events share a partition and keep their
 *      order), value = lib/src/push_event.c's JSON.  The producer is
 *      idempotent with acks=all; the batch waits until every event is
 *      delivered (timeout_ms).
 *
 * Ordering with the offsets: the caller commits the batch's Kafka offsets
 * only after this returns 0.  A failed members query or an undelivered
 * event returns -1: the caller keeps the batch and writes it again (the
 * store's writes are idempotent) and pushes it again, so an event is
 * delivered at least once; a gateway drops repeats by (user, room, seq).
 *
 * Old messages: a consumer that was down for an hour, or a new group
 * reading the topic from its start, would wake users about messages long
 * read elsewhere.  A message older than max_age_ms (by its ts) gets no
 * events (counted as stale).
 *
 * Redis down: the batch's pushes are skipped, logged and counted
 * (presence_errors), and the batch completes.  Holding it would stop
 * persistence and room lists for a feature that is best effort by nature
 * (the user reads the message when the app opens anyway); treating
 * everybody as offline would wake every member of every room.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>
#include <librdkafka/rdkafka.h>

#include "kafka_log.h"
#include "minichat/buf.h"
#include "minichat/clock.h"
#include "minichat/log.h"
#include "minichat/push_event.h"
#include "minichat/redis_sync.h"
#include "push.h"

#define PUSH_PRESENCE_KEY "{presence}:online"
#define PUSH_ZMSCORE_CHUNK 1000
#define PUSH_REDIS_TIMEOUT_MS 2000
#define PUSH_METADATA_TIMEOUT_MS 5000
#define PUSH_QUEUE_WAIT_MS 100
/* the members query for one room: room, then the most members + 1 */
#define PUSH_ONE_ROOM_SQL \
    "SELECT room_id, user_id, joined_seq FROM room_members WHERE room_id = ? AND left_at IS NULL " \
    "ORDER BY user_id LIMIT ?"

typedef struct {
    uint64_t room;
    uint64_t user;
    uint64_t joined;   /* joined_seq: the member sees seqs above it */
} push_member_t;

struct rc_push_s {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    char *addr;
    mc_redis_tls_t tls;
    size_t max;
    int timeout_ms;
    int64_t max_age_ms;
    mc_redis_conn_t *redis;

    push_member_t *members;   /* the batch's rooms' members, by room then user */
    size_t nmembers;
    size_t members_cap;
    uint64_t *users;          /* their distinct user ids, sorted */
    unsigned char *online;    /* users[i] is online */
    size_t nusers;
    size_t users_cap;
    mc_buf_t sql;
    mc_db_args_t args;        /* the rooms of the members query */
    mc_buf_t event;

    uint64_t undelivered;     /* delivery reports with an error */
    rc_push_stats_t st;
};

static void push_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque);
static int push_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value);
static int push_check_topic(rc_push_t *p, const char *topic);
static int push_members(rc_push_t *p, mc_db_t *db, const mc_msgbatch_t *b);
static int push_members_query(rc_push_t *p, mc_db_t *db, size_t k, size_t n, size_t bucket, mc_db_rows_t **rows,
                              mc_db_status_t *st);
static int push_add_member(rc_push_t *p, uint64_t room, uint64_t user, uint64_t joined);
static int push_users(rc_push_t *p);
static int push_presence(rc_push_t *p);
static void push_redis_fail(rc_push_t *p, const char *what, const redisReply *r);
static int push_is_online(const rc_push_t *p, uint64_t user);
static int push_produce(rc_push_t *p, uint64_t user, const mc_msgrow_t *row, int64_t deadline);
static int push_events(rc_push_t *p, const mc_msgbatch_t *b, size_t *produced);
static int cmp_u64(const void *a, const void *b);

/* Counts each event's outcome (called from rd_kafka_poll/flush on this thread). */
static void push_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    rc_push_t *p = opaque;

    (void)rk;
    if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (p->undelivered++ == 0) {
            mc_warn("push: an event was not delivered: %s", rd_kafka_err2str(rkm->err));
        }
        return;
    }
    p->st.pushed++;
}

/* Sets one librdkafka property.  Returns 0, or -1 after logging why. */
static int push_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        mc_error("push: cannot set %s=\"%s\": %s", name, value, errstr);
        return -1;
    }
    return 0;
}

rc_push_t *rc_push_new(const rc_push_config_t *cfg)
{
    rc_push_t *p;
    rd_kafka_conf_t *conf;
    char errstr[512], timeout[24];

    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        mc_error("push: out of memory");
        return NULL;
    }
    p->max = cfg->max_recipients;
    p->timeout_ms = cfg->timeout_ms;
    p->max_age_ms = cfg->max_age_ms;
    p->tls = cfg->tls;
    p->addr = strdup(cfg->redis);
    if (p->addr == NULL) {
        mc_error("push: out of memory");
        goto err;
    }
    if (cfg->redis[0] == '\0' || mc_redis_addrs_check(cfg->redis) != 0) {
        mc_error("push: push_topic needs the redis that holds presence (redis \"%s\" is not an address)",
                 cfg->redis);
        goto err;
    }
    if (mc_redis_tls_check(&p->tls, errstr, sizeof(errstr)) != 0) {
        mc_error("%s", errstr);
        goto err;
    }

    conf = rd_kafka_conf_new();
    if (conf == NULL) {
        goto err;
    }
    /* an event that cannot be delivered within the batch's wait fails then,
     * rather than staying queued behind the retry */
    snprintf(timeout, sizeof(timeout), "%d", cfg->timeout_ms);
    if (push_conf_set(conf, "bootstrap.servers", cfg->brokers) != 0
        || push_conf_set(conf, "client.id", "roomlist-consumer-push") != 0
        || push_conf_set(conf, "enable.idempotence", "true") != 0
        || push_conf_set(conf, "acks", "all") != 0
        || push_conf_set(conf, "linger.ms", "5") != 0
        || push_conf_set(conf, "message.timeout.ms", timeout) != 0)
    {
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    if (cfg->sec != NULL && mc_kafka_sec_apply(cfg->sec, conf, errstr, sizeof(errstr)) != 0) {
        mc_error("push: kafka: %s", errstr);
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    rd_kafka_conf_set_log_cb(conf, rc_kafka_log_cb);
    rd_kafka_conf_set_dr_msg_cb(conf, push_dr_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (p->rk == NULL) {
        mc_error("push: cannot create the producer: %s", errstr);
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    p->rkt = rd_kafka_topic_new(p->rk, cfg->topic, NULL);
    if (p->rkt == NULL) {
        mc_error("push: cannot use topic \"%s\": %s", cfg->topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto err;
    }
    if (push_check_topic(p, cfg->topic) != 0) {
        goto err;
    }
    mc_info("push: offline members get events on \"%s\" (rooms of at most %zu members; presence from redis %s)",
            cfg->topic, p->max, p->addr);
    return p;

err:
    rc_push_free(p);
    return NULL;
}

/* A missing topic would hold every batch (the broker does not create
 * topics): refuse to start.  Returns 0, or -1 after logging why; a broker
 * that does not answer yet is a warning. */
static int push_check_topic(rc_push_t *p, const char *topic)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err;
    int rc = 0;

    err = rd_kafka_metadata(p->rk, 0, p->rkt, &md, PUSH_METADATA_TIMEOUT_MS);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mc_warn("push: cannot check topic \"%s\" yet: %s", topic, rd_kafka_err2str(err));
        return 0;
    }
    if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        mc_error("push: topic \"%s\" does not exist; create it, or set push_topic empty to turn pushes off", topic);
        rc = -1;
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}

const rc_push_stats_t *rc_push_stats(const rc_push_t *p)
{
    return &p->st;
}

void rc_push_free(rc_push_t *p)
{
    if (p == NULL) {
        return;
    }
    if (p->rk != NULL && rd_kafka_flush(p->rk, p->timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mc_warn("push: %d events still in flight at exit", rd_kafka_outq_len(p->rk));
    }
    if (p->rkt != NULL) {
        rd_kafka_topic_destroy(p->rkt);
    }
    if (p->rk != NULL) {
        rd_kafka_destroy(p->rk);
    }
    if (p->redis != NULL) {
        mc_redis_conn_close(p->redis);
    }
    mc_buf_free(&p->sql);
    mc_db_args_free(&p->args);
    mc_buf_free(&p->event);
    free(p->members);
    free(p->users);
    free(p->online);
    free(p->addr);
    free(p);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Appends one member.  Returns 0 or -1 when out of memory. */
static int push_add_member(rc_push_t *p, uint64_t room, uint64_t user, uint64_t joined)
{
    push_member_t *m;
    size_t cap;

    if (p->nmembers == p->members_cap) {
        cap = p->members_cap ? p->members_cap * 2 : 256;
        m = realloc(p->members, cap * sizeof(*m));
        if (m == NULL) {
            return -1;
        }
        p->members = m;
        p->members_cap = cap;
    }
    m = &p->members[p->nmembers++];
    m->room = room;
    m->user = user;
    m->joined = joined;
    return 0;
}

/* Reads the current members of the batch's rooms that have text messages
 * (at most max + 1 per room) into p->members, by room then user.  The batch
 * is sorted by room (the store sorted it).  Returns 0, or -1 after logging
 * why. */
static int push_members(rc_push_t *p, mc_db_t *db, const mc_msgbatch_t *b)
{
    mc_db_rows_t *rows = NULL;
    mc_db_status_t st;
    char **row;
    uint64_t last = 0;
    size_t i, k, rooms = 0, bucket;
    int rc = 0;

    p->nmembers = 0;
    mc_db_args_reset(&p->args);
    for (i = 0; i < b->n; i++) {
        if (b->rows[i].kind != MC_MSG_TEXT || (rooms > 0 && b->rows[i].room == last)) {
            continue;
        }
        last = b->rows[i].room;
        if (mc_db_args_add(&p->args, MC_DB_U64(last)) != 0) {
            mc_error("push: out of memory building the members query");
            return -1;
        }
        rooms++;
    }
    /* a prepared statement per power of 4 of rooms, the list padded with
     * its last room (a repeat in IN changes nothing), so that a connection
     * keeps a handful of statements whatever the batches */
    for (k = 0; k < rooms; k += bucket) {
        bucket = mc_db_rows_bucket(rooms - k);
        if (push_members_query(p, db, k, rooms - k < bucket ? rooms - k : bucket, bucket, &rows, &st) != 0) {
            mc_error("push: members query failed: %s (%u)", st.msg, st.err);
            if (mc_db_conn_lost(st.err)) {
                mc_db_reset(db, MC_DB_PRIMARY);
            }
            return -1;
        }
        while (rc == 0 && (row = mc_db_rows_next(rows)) != NULL) {
            if (row[0] == NULL || row[1] == NULL || row[2] == NULL) {
                continue;
            }
            if (push_add_member(p, strtoull(row[0], NULL, 10), strtoull(row[1], NULL, 10),
                                strtoull(row[2], NULL, 10)) != 0)
            {
                mc_error("push: out of memory reading members");
                rc = -1;
            }
        }
        mc_db_rows_free(rows);
        rows = NULL;
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Runs the members query for the rooms p->args[k .. k+n), padded to
 * `bucket` placeholders with the last of them.  Returns what mc_db_exec
 * returns. */
static int push_members_query(rc_push_t *p, mc_db_t *db, size_t k, size_t n, size_t bucket, mc_db_rows_t **rows,
                              mc_db_status_t *st)
{
    mc_db_arg_t *v;
    size_t i;
    int rc, bad;

    mc_buf_reset(&p->sql);
    v = malloc((bucket + 1) * sizeof(*v));
    if (v != NULL && bucket == 1) {
        /* one room (every batch of a single busy room): the same rows in
         * the primary key's order, without the window function's derived
         * table, which cost MariaDB about a fifth of its CPU at 400
         * messages/s (docs/performance.md, "Persistence: ...") */
        v[0] = p->args.v[k];
        v[1] = MC_DB_U64(p->max + 1);
        rc = mc_db_exec(db, MC_DB_PRIMARY, 0, PUSH_ONE_ROOM_SQL, sizeof(PUSH_ONE_ROOM_SQL) - 1, v, 2, rows, st);
        free(v);
        return rc;
    }
    bad = v == NULL
          || mc_buf_append_str(&p->sql, "SELECT room_id, user_id, joined_seq FROM (SELECT room_id, user_id, "
                                        "joined_seq, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY user_id) AS n "
                                        "FROM room_members WHERE left_at IS NULL AND room_id IN (") != 0;
    for (i = 0; !bad && i < bucket; i++) {
        v[i] = p->args.v[k + (i < n ? i : n - 1)];
        bad = mc_buf_append_str(&p->sql, i ? ",?" : "?") != 0;
    }
    if (!bad) {
        v[bucket] = MC_DB_U64(p->max + 1);
        bad = mc_buf_append_str(&p->sql, ")) m WHERE n <= ? ORDER BY room_id, user_id") != 0;
    }
    if (bad) {
        free(v);
        st->err = 0;
        snprintf(st->msg, sizeof(st->msg), "out of memory");
        return -1;
    }
    rc = mc_db_exec(db, MC_DB_PRIMARY, 0, p->sql.data, p->sql.len, v, bucket + 1, rows, st);
    free(v);
    return rc;
}

/* Collects the distinct members of rooms within the limit into p->users.
 * Returns 0 or -1 when out of memory. */
static int push_users(rc_push_t *p)
{
    size_t i, j, k, n = 0;
    uint64_t *u;
    unsigned char *o;

    if (p->nmembers > p->users_cap) {
        u = realloc(p->users, p->nmembers * sizeof(*u));
        if (u == NULL) {
            return -1;
        }
        p->users = u;
        o = realloc(p->online, p->nmembers);
        if (o == NULL) {
            return -1;
        }
        p->online = o;
        p->users_cap = p->nmembers;
    }
    for (i = 0; i < p->nmembers; i = j) {
        for (j = i; j < p->nmembers && p->members[j].room == p->members[i].room; j++) {
        }
        if (j - i > p->max) {
            continue;
        }
        for (k = i; k < j; k++) {
            p->users[n++] = p->members[k].user;
        }
    }
    qsort(p->users, n, sizeof(*p->users), cmp_u64);
    for (i = 0, j = 0; i < n; i++) {
        if (j == 0 || p->users[j - 1] != p->users[i]) {
            p->users[j++] = p->users[i];
        }
    }
    p->nusers = j;
    memset(p->online, 0, p->nusers);
    return 0;
}

/* Logs a failed Redis command, frees r and drops the connection. */
static void push_redis_fail(rc_push_t *p, const char *what, const redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        mc_error("push: redis %s failed: %.*s", what, (int)r->len, r->str);
    } else if (r != NULL) {
        mc_error("push: redis %s: unexpected reply type %d", what, r->type);
    } else {
        mc_error("push: redis %s failed: %s", what,
                 p->redis != NULL && mc_redis_conn_error(p->redis)[0] ? mc_redis_conn_error(p->redis) : "no reply");
    }
    if (r != NULL) {
        freeReplyObject((void *)r);
    }
    if (p->redis != NULL) {
        mc_redis_conn_close(p->redis);
        p->redis = NULL;
    }
}

/* Fills p->online for p->users from {presence}:online: ZMSCORE in chunks,
 * pipelined.  Returns 0, or -1 after a Redis failure (logged; the
 * connection is dropped and the next batch connects again). */
static int push_presence(rc_push_t *p)
{
    const char **argv = NULL;
    size_t *lens = NULL, i, j, n, chunks = 0;
    char (*ids)[24] = NULL;
    char err[512];
    redisReply *r;
    int64_t now;
    int rc = -1;

    if (p->nusers == 0) {
        return 0;
    }
    if (p->redis == NULL) {
        p->redis = mc_redis_connect_for_key(p->addr, &p->tls, PUSH_PRESENCE_KEY, PUSH_REDIS_TIMEOUT_MS, err,
                                            sizeof(err));
        if (p->redis == NULL) {
            mc_error("push: cannot reach the redis node serving %s (%s): %s", PUSH_PRESENCE_KEY, p->addr, err);
            return -1;
        }
    }
    argv = malloc((PUSH_ZMSCORE_CHUNK + 2) * sizeof(*argv));
    lens = malloc((PUSH_ZMSCORE_CHUNK + 2) * sizeof(*lens));
    ids = malloc(PUSH_ZMSCORE_CHUNK * sizeof(*ids));
    if (argv == NULL || lens == NULL || ids == NULL) {
        mc_error("push: out of memory asking for presence");
        goto done;
    }
    argv[0] = "ZMSCORE";
    lens[0] = 7;
    argv[1] = PUSH_PRESENCE_KEY;
    lens[1] = sizeof(PUSH_PRESENCE_KEY) - 1;
    /* scores are nginx's wall clock, not this process's monotonic one */
    now = mc_wall_ms();
    for (i = 0; i < p->nusers; i += n) {
        n = p->nusers - i < PUSH_ZMSCORE_CHUNK ? p->nusers - i : PUSH_ZMSCORE_CHUNK;
        /* the connection copies a command when appending: ids serves every chunk */
        for (j = 0; j < n; j++) {
            lens[j + 2] = (size_t)snprintf(ids[j], sizeof(ids[j]), "%" PRIu64, p->users[i + j]);
            argv[j + 2] = ids[j];
        }
        if (mc_redis_conn_append(p->redis, (int)(n + 2), argv, lens) != 0) {
            push_redis_fail(p, "zmscore", NULL);
            goto done;
        }
        chunks++;
    }
    for (i = 0; chunks > 0; chunks--, i += n) {
        n = p->nusers - i < PUSH_ZMSCORE_CHUNK ? p->nusers - i : PUSH_ZMSCORE_CHUNK;
        if (mc_redis_conn_reply(p->redis, &r) != 0) {
            push_redis_fail(p, "zmscore", NULL);
            goto done;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
            push_redis_fail(p, "zmscore", r);
            goto done;
        }
        for (j = 0; j < n; j++) {
            /* a score is the expiry (ms) of the user's latest device */
            p->online[i + j] = r->element[j]->type == REDIS_REPLY_STRING
                               && strtod(r->element[j]->str, NULL) > (double)now;
        }
        freeReplyObject(r);
    }
    rc = 0;

done:
    free(argv);
    free(lens);
    free(ids);
    return rc;
}

/* Returns 1 when user is online (it is in p->users), else 0. */
static int push_is_online(const rc_push_t *p, uint64_t user)
{
    const uint64_t *u = bsearch(&user, p->users, p->nusers, sizeof(*p->users), cmp_u64);

    return u != NULL && p->online[u - p->users];
}

/* Produces one event, waiting for room in the queue until deadline.
 * Returns 0, or -1 after logging why. */
static int push_produce(rc_push_t *p, uint64_t user, const mc_msgrow_t *row, int64_t deadline)
{
    rd_kafka_resp_err_t err;
    char key[24];
    int klen;

    if (mc_push_event_json(user, row, &p->event) != 0) {
        mc_error("push: cannot encode the event of room %" PRIu64 " seq %" PRIu64, row->room, row->seq);
        return -1;
    }
    klen = snprintf(key, sizeof(key), "%" PRIu64, user);
    for (;;) {
        err = rd_kafka_producev(p->rk, RD_KAFKA_V_RKT(p->rkt), RD_KAFKA_V_KEY(key, (size_t)klen),
                                RD_KAFKA_V_VALUE(p->event.data, p->event.len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || mc_now_ms() >= deadline) {
            break;
        }
        rd_kafka_poll(p->rk, PUSH_QUEUE_WAIT_MS);
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mc_error("push: cannot produce an event: %s", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

/* Produces the batch's events and waits for their delivery.  Returns 0,
 * or -1 when one was not produced or not delivered. */
static int push_events(rc_push_t *p, const mc_msgbatch_t *b, size_t *produced)
{
    const mc_msgrow_t *row;
    size_t i, k, lo = 0, hi = 0;
    int64_t deadline = mc_now_ms() + p->timeout_ms, wall = mc_wall_ms();
    rd_kafka_resp_err_t err;

    p->undelivered = 0;
    for (i = 0; i < b->n; i++) {
        row = &b->rows[i];
        if (row->kind != MC_MSG_TEXT) {
            continue;
        }
        if (p->max_age_ms > 0 && (int64_t)row->ts + p->max_age_ms < wall) {
            /* a replay of old records (a consumer that was down, a new
             * group): nobody wants a notification about them now */
            p->st.stale++;
            continue;
        }
        /* both lists are sorted by room: move the window to this row's room */
        if (hi == lo || p->members[lo].room != row->room) {
            for (lo = hi; lo < p->nmembers && p->members[lo].room < row->room; lo++) {
            }
            for (hi = lo; hi < p->nmembers && p->members[hi].room == row->room; hi++) {
            }
        }
        if (hi - lo > p->max) {
            p->st.large++;
            continue;
        }
        for (k = lo; k < hi; k++) {
            if (p->members[k].user == row->sender || row->seq <= p->members[k].joined) {
                continue;
            }
            if (push_is_online(p, p->members[k].user)) {
                p->st.online++;
                continue;
            }
            if (push_produce(p, p->members[k].user, row, deadline) != 0) {
                return -1;
            }
            (*produced)++;
        }
        rd_kafka_poll(p->rk, 0);
    }
    err = rd_kafka_flush(p->rk, p->timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mc_error("push: %d events not delivered within %d ms", rd_kafka_outq_len(p->rk), p->timeout_ms);
        return -1;
    }
    return p->undelivered == 0 ? 0 : -1;
}

int rc_push_batch(rc_push_t *p, mc_db_t *db, const mc_msgbatch_t *b)
{
    int64_t start = mc_now_ms(), members_ms, presence_ms;
    size_t produced = 0;

    if (push_members(p, db, b) != 0) {
        p->st.failed++;
        return -1;
    }
    if (p->nmembers == 0) {
        return 0;
    }
    members_ms = mc_now_ms();
    if (push_users(p) != 0) {
        mc_error("push: out of memory collecting %zu members", p->nmembers);
        p->st.failed++;
        return -1;
    }
    if (push_presence(p) != 0) {
        p->st.presence_errors++;
        mc_warn("push: no events for this batch of %zu messages: presence unknown", b->n);
        return 0;
    }
    presence_ms = mc_now_ms();
    if (push_events(p, b, &produced) != 0) {
        p->st.failed++;
        return -1;
    }
    mc_debug("push: %zu messages, %zu members (%zu users): %zu events; members %lld ms, presence %lld ms, "
             "events delivered %lld ms",
             b->n, p->nmembers, p->nusers, produced, (long long)(members_ms - start),
             (long long)(presence_ms - members_ms), (long long)(mc_now_ms() - presence_ms));
    return 0;
}
