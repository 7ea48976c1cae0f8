/*
 * The read-pointer flusher: write-back of read marks from Redis to MySQL.
 *
 * A read moves {r:R}:read in Redis at once and the module records the new
 * pointer as {dirty}:read["R:U"] = seq.  Every read_flush_ms this thread:
 *
 *   1. HSCAN {dirty}:read (COUNT 1000 per call) and copies what it sees;
 *   2. parses each field strictly (readmark.c); a bad field or value is
 *      logged and deleted, never written;
 *   3. merges marks of the same member to the highest, and in one
 *      transaction on the primary runs the forward-only UPDATE of
 *      room_members.last_read_seq (a prepared statement, up to 1024 marks
 *      each), then COMMIT;
 *   4. only after the COMMIT deletes each field it saw with a one-key script
 *      that deletes only while the field still holds the value it saw: a
 *      newer read that arrived meanwhile keeps its mark for the next round.
 *
 * A database failure rolls back and leaves every mark in Redis for the next
 * round (a lost connection is reset and reopened then).  A Redis failure
 * drops the connection and reconnects with a backoff from 100 ms to 5 s; a
 * failure after the COMMIT only means the marks are written again next
 * round, which changes nothing because the UPDATE only moves forward.  So
 * MySQL's pointer never moves back, and a mark leaves Redis only once MySQL
 * has a pointer at least as high.
 *
 * Why a thread: the flusher's Redis and MySQL calls are blocking
 * (lib/src/redis_conn.c, plain TCP or TLS; libmariadb), and a round over a large hash takes tens of
 * milliseconds.  On its own thread, with its own database connection, it
 * never delays the Kafka loop; the two only meet in InnoDB, on
 * room_members rows (a deadlock there rolls one of them back, and each
 * retries on its own).  The thread blocks every signal, so SIGTERM reaches
 * the main loop, which then calls rc_readflush_stop(): the thread runs one
 * last round and exits.
 *
 * At most RF_MAX_MARKS marks are taken per round; a bigger hash is worked
 * off in rounds that follow each other without waiting.
 *
 * Redis Cluster: the key has its own hashtag, so it lives on one node, and
 * every command here names only it.  The `redis` setting may list several
 * nodes ("host:port,host:port,..."); connecting tries them in turn and
 * follows MOVED to the key's master (lib/src/redis_sync.c).  A MOVED later
 * (a reshard moved the slot, a replica took over) is a Redis failure like
 * any other: the connection is dropped and the next round connects to the
 * new owner and loads the script there.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <errmsg.h>
#include <mysql.h>

#include "minichat/buf.h"
#include "minichat/clock.h"
#include "minichat/log.h"
#include "minichat/readmark.h"
#include "minichat/redis_sync.h"
#include "minichat/relay_queue.h"
#include "readflush.h"

#define RF_KEY "{dirty}:read"
#define RF_SCAN_COUNT "1000"
#define RF_MAX_MARKS 50000
#define RF_PIPELINE 1000        /* delete scripts in flight at once */
#define RF_REDIS_TIMEOUT_MS 2000
#define RF_BACKOFF_MIN_MS 100
#define RF_BACKOFF_MAX_MS 5000

/* --input: keys: [{dirty}:read], values: [field, value written to MySQL]
 * --output: 1 when the field was deleted, 0 when it holds another value (a
 * newer read) or is gone */
static const char rf_delete_lua[] =
    "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then\n"
    "    return redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "end\n"
    "return 0\n";

typedef struct {
    size_t field;   /* offset of the field in strs */
    size_t flen;
    size_t value;   /* offset of the value in strs */
    size_t vlen;
    int bad;        /* does not parse: deleted without being written */
} rf_entry_t;

struct rc_readflush_s {
    char *addr;             /* as configured: host:port list or /socket */
    mc_redis_tls_t tls;     /* its strings point into the configuration */
    int interval_ms;
    mc_db_t *db;
    mc_redis_conn_t *redis;
    char sha[41];           /* the delete script's SHA1 once loaded, "" before */
    unsigned backoff_ms;

    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;

    mc_buf_t strs;          /* the round's fields and values, back to back */
    rf_entry_t *entries;
    size_t n;
    size_t cap;
    mc_readmark_t *marks;   /* the good entries, merged */
    mc_buf_t sql;
    mc_db_args_t args;

    uint64_t rounds;        /* rounds that wrote something */
    uint64_t moved;         /* room_members rows moved forward */
    uint64_t deleted;       /* marks deleted after the commit */
    uint64_t kept;          /* marks kept because a newer read came */
    uint64_t bad;           /* malformed marks deleted */
    uint64_t failures;      /* rolled back transactions */
};

static void rf_free(rc_readflush_t *rf);
static void *rf_main(void *arg);
static int rf_round(rc_readflush_t *rf);
static int rf_connect(rc_readflush_t *rf);
static void rf_redis_fail(rc_readflush_t *rf, const char *what, const redisReply *r);
static int rf_scan(rc_readflush_t *rf);
static int rf_add(rc_readflush_t *rf, const redisReply *f, const redisReply *v);
static size_t rf_parse(rc_readflush_t *rf, size_t *nbad);
static int rf_write(rc_readflush_t *rf, size_t nmarks, uint64_t *moved);
static int rf_delete(rc_readflush_t *rf, int bad, size_t *deleted, size_t *kept);

rc_readflush_t *rc_readflush_start(const rc_readflush_config_t *cfg)
{
    rc_readflush_t *rf;
    pthread_condattr_t ca;
    sigset_t all, old;
    char why[256];
    int err;

    rf = calloc(1, sizeof(*rf));
    if (rf == NULL) {
        mc_error("readflush: out of memory");
        return NULL;
    }
    rf->interval_ms = cfg->interval_ms;
    rf->backoff_ms = RF_BACKOFF_MIN_MS;
    rf->tls = cfg->tls;
    rf->addr = strdup(cfg->redis);
    if (rf->addr == NULL || mc_redis_addrs_check(cfg->redis) != 0) {
        mc_error("invalid redis address \"%s\" (want host:port[,host:port...] or /path/to/socket)", cfg->redis);
        goto err;
    }
    if (mc_redis_tls_check(&rf->tls, why, sizeof(why)) != 0) {
        mc_error("%s", why);
        goto err;
    }
    rf->db = mc_db_new(&cfg->db);
    if (rf->db == NULL) {
        goto err;
    }

    pthread_mutex_init(&rf->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rf->cond, &ca);
    pthread_condattr_destroy(&ca);

    /* the thread inherits a mask with every signal blocked: SIGTERM goes to the main loop */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    err = pthread_create(&rf->thread, NULL, rf_main, rf);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        mc_error("readflush: cannot start the thread: %s", strerror(err));
        pthread_cond_destroy(&rf->cond);
        pthread_mutex_destroy(&rf->lock);
        goto err;
    }
    mc_info("readflush: flushing %s from redis %s every %d ms", RF_KEY, rf->addr, rf->interval_ms);
    return rf;

err:
    rf_free(rf);
    return NULL;
}

void rc_readflush_stop(rc_readflush_t *rf)
{
    if (rf == NULL) {
        return;
    }
    pthread_mutex_lock(&rf->lock);
    rf->stop = 1;
    pthread_cond_signal(&rf->cond);
    pthread_mutex_unlock(&rf->lock);
    pthread_join(rf->thread, NULL);
    mc_info("readflush: stopped (%llu rounds, %llu rows moved, %llu marks deleted, %llu kept for a newer read, "
            "%llu malformed, %llu failed transactions)",
            (unsigned long long)rf->rounds, (unsigned long long)rf->moved, (unsigned long long)rf->deleted,
            (unsigned long long)rf->kept, (unsigned long long)rf->bad, (unsigned long long)rf->failures);
    pthread_cond_destroy(&rf->cond);
    pthread_mutex_destroy(&rf->lock);
    rf_free(rf);
}

/* Frees everything but the thread's synchronisation. */
static void rf_free(rc_readflush_t *rf)
{
    if (rf->redis != NULL) {
        mc_redis_conn_close(rf->redis);
    }
    mc_db_free(rf->db);
    mc_buf_free(&rf->strs);
    mc_buf_free(&rf->sql);
    mc_db_args_free(&rf->args);
    free(rf->entries);
    free(rf->marks);
    free(rf->addr);
    free(rf);
}

/* The thread: a round, then a wait (none after a full round, the backoff
 * after a Redis failure), until stopped; the round after the stop is the last. */
static void *rf_main(void *arg)
{
    rc_readflush_t *rf = arg;
    struct timespec until;
    int rc, stopping, wait_ms;
    int64_t deadline;

    mysql_thread_init();
    for (;;) {
        pthread_mutex_lock(&rf->lock);
        stopping = rf->stop;
        pthread_mutex_unlock(&rf->lock);

        rc = rf_round(rf);
        if (stopping) {
            break;
        }
        wait_ms = rc > 0 ? 0 : rc < 0 ? (int)rf->backoff_ms : rf->interval_ms;
        if (rc < 0) {
            rf->backoff_ms = mc_backoff_next(rf->backoff_ms, RF_BACKOFF_MIN_MS, RF_BACKOFF_MAX_MS);
        }

        clock_gettime(CLOCK_MONOTONIC, &until);
        deadline = (int64_t)until.tv_nsec + (int64_t)wait_ms * 1000000;
        until.tv_sec += deadline / 1000000000;
        until.tv_nsec = deadline % 1000000000;
        pthread_mutex_lock(&rf->lock);
        while (!rf->stop && pthread_cond_timedwait(&rf->cond, &rf->lock, &until) != ETIMEDOUT) {
            /* spurious wake-up: wait on */
        }
        pthread_mutex_unlock(&rf->lock);
    }
    mysql_thread_end();
    return NULL;
}

/* One round: scan, write, delete.  Returns 1 when the hash may hold more
 * than this round took, 0 when done, -1 after a Redis failure. */
static int rf_round(rc_readflush_t *rf)
{
    size_t nmarks, nbad = 0, deleted = 0, kept = 0, dropped = 0;
    uint64_t moved = 0;
    int64_t start;

    if (rf->redis == NULL && rf_connect(rf) != 0) {
        return -1;
    }
    start = mc_now_ms();
    if (rf_scan(rf) != 0) {
        return -1;
    }
    rf->backoff_ms = RF_BACKOFF_MIN_MS;
    if (rf->n == 0) {
        return 0;
    }

    nmarks = rf_parse(rf, &nbad);
    if (nbad > 0 && rf_delete(rf, 1, &dropped, &kept) != 0) {
        return -1;
    }
    if (nmarks > 0) {
        if (rf_write(rf, nmarks, &moved) != 0) {
            /* every good mark stays in Redis for the next round */
            return 0;
        }
        kept = 0;
        if (rf_delete(rf, 0, &deleted, &kept) != 0) {
            return -1;
        }
    }

    __atomic_fetch_add(&rf->rounds, 1, __ATOMIC_RELAXED);   /* read by rc_readflush_stats */
    __atomic_fetch_add(&rf->moved, moved, __ATOMIC_RELAXED);
    rf->deleted += deleted;
    rf->kept += kept;
    mc_debug("readflush: %zu marks for %zu members written (%llu rows moved), %zu deleted, %zu kept for a newer "
             "read, %zu malformed, in %lld ms",
             rf->n - nbad, nmarks, (unsigned long long)moved, deleted, kept, nbad, (long long)(mc_now_ms() - start));
    return rf->n >= RF_MAX_MARKS ? 1 : 0;
}

/* Connects to Redis and loads the delete script.  Returns 0, or -1 after
 * logging why. */
static int rf_connect(rc_readflush_t *rf)
{
    const char *argv[3] = {"SCRIPT", "LOAD", rf_delete_lua};
    size_t argvlen[3] = {6, 4, sizeof(rf_delete_lua) - 1};
    char err[512];
    redisReply *r;

    rf->redis = mc_redis_connect_for_key(rf->addr, &rf->tls, RF_KEY, RF_REDIS_TIMEOUT_MS, err, sizeof(err));
    if (rf->redis == NULL) {
        mc_error("readflush: cannot reach the redis node serving %s (%s): %s (retry in %u ms)", RF_KEY,
                 rf->addr, err, rf->backoff_ms);
        return -1;
    }

    r = mc_redis_conn_command(rf->redis, 3, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != 40) {
        rf_redis_fail(rf, "script load", r);
        return -1;
    }
    memcpy(rf->sha, r->str, 40);
    rf->sha[40] = '\0';
    freeReplyObject(r);
    mc_info("readflush: connected to redis %s", mc_redis_conn_peer(rf->redis));
    return 0;
}

/* Logs a failed Redis command and drops the connection (freeing r). */
static void rf_redis_fail(rc_readflush_t *rf, const char *what, const redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        mc_error("readflush: redis %s failed: %.*s", what, (int)r->len, r->str);
    } else if (r != NULL) {
        mc_error("readflush: redis %s: unexpected reply type %d", what, r->type);
    } else {
        mc_error("readflush: redis %s failed: %s", what,
                 mc_redis_conn_error(rf->redis)[0] ? mc_redis_conn_error(rf->redis) : "no reply");
    }
    if (r != NULL) {
        freeReplyObject((void *)r);
    }
    mc_redis_conn_close(rf->redis);
    rf->redis = NULL;
}

/* Copies one field and value into the round.  Returns 0 or -1 when out of memory. */
static int rf_add(rc_readflush_t *rf, const redisReply *f, const redisReply *v)
{
    rf_entry_t *e;
    size_t cap;

    if (rf->n == rf->cap) {
        cap = rf->cap != 0 ? rf->cap * 2 : 1024;
        e = realloc(rf->entries, cap * sizeof(*e));
        if (e == NULL) {
            return -1;
        }
        rf->entries = e;
        rf->cap = cap;
    }
    e = &rf->entries[rf->n];
    e->field = rf->strs.len;
    e->flen = f->len;
    if (mc_buf_append(&rf->strs, f->str, f->len) != 0) {
        return -1;
    }
    e->value = rf->strs.len;
    e->vlen = v->len;
    if (mc_buf_append(&rf->strs, v->str, v->len) != 0) {
        return -1;
    }
    e->bad = 0;
    rf->n++;
    return 0;
}

/* Reads the hash with HSCAN into the round (up to about RF_MAX_MARKS
 * entries).  Returns 0, or -1 after a Redis failure. */
static int rf_scan(rc_readflush_t *rf)
{
    char cursor[32] = "0";
    const char *argv[5] = {"HSCAN", RF_KEY, cursor, "COUNT", RF_SCAN_COUNT};
    size_t argvlen[5] = {5, sizeof(RF_KEY) - 1, 0, 5, sizeof(RF_SCAN_COUNT) - 1};
    redisReply *r, *items;
    size_t i;

    mc_buf_reset(&rf->strs);
    rf->n = 0;
    do {
        argvlen[2] = strlen(cursor);
        r = mc_redis_conn_command(rf->redis, 5, argv, argvlen);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2
            || r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof(cursor)
            || r->element[1]->type != REDIS_REPLY_ARRAY)
        {
            rf_redis_fail(rf, "hscan", r);
            return -1;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = '\0';
        items = r->element[1];
        for (i = 0; i + 1 < items->elements; i += 2) {
            if (items->element[i]->type != REDIS_REPLY_STRING || items->element[i + 1]->type != REDIS_REPLY_STRING) {
                continue;
            }
            if (rf_add(rf, items->element[i], items->element[i + 1]) != 0) {
                mc_error("readflush: out of memory reading %s", RF_KEY);
                freeReplyObject(r);
                return rf->n > 0 ? 0 : -1;
            }
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0 && rf->n < RF_MAX_MARKS);
    return 0;
}

/* Parses the round's entries into rf->marks, flagging the bad ones, and
 * merges the marks.  Returns the number of merged marks; *nbad the bad entries. */
static size_t rf_parse(rc_readflush_t *rf, size_t *nbad)
{
    mc_readmark_t *marks;
    rf_entry_t *e;
    size_t i, n = 0;

    marks = realloc(rf->marks, rf->cap * sizeof(*marks));
    if (marks == NULL) {
        mc_error("readflush: out of memory parsing %zu marks", rf->n);
        *nbad = 0;
        return 0;
    }
    rf->marks = marks;
    *nbad = 0;
    for (i = 0; i < rf->n; i++) {
        e = &rf->entries[i];
        if (mc_readmark_parse(rf->strs.data + e->field, e->flen, rf->strs.data + e->value, e->vlen, &marks[n]) == 0) {
            n++;
            continue;
        }
        e->bad = 1;
        (*nbad)++;
        rf->bad++;
        mc_error("readflush: malformed mark \"%.*s\" = \"%.*s\" in %s (want \"room:user\" = seq); deleting it",
                 (int)(e->flen > 64 ? 64 : e->flen), rf->strs.data + e->field, (int)(e->vlen > 64 ? 64 : e->vlen),
                 rf->strs.data + e->value, RF_KEY);
    }
    return mc_readmark_merge(marks, n);
}

/* Writes the merged marks in one transaction on the primary.  Returns 0
 * once committed (*moved: rows that moved), or -1 after rolling back. */
static int rf_write(rc_readflush_t *rf, size_t nmarks, uint64_t *moved)
{
    mc_db_status_t st;
    size_t next = 0;

    memset(&st, 0, sizeof(st));
    if (mc_db_conn(rf->db, MC_DB_PRIMARY) == NULL) {
        __atomic_fetch_add(&rf->failures, 1, __ATOMIC_RELAXED);
        mc_error("readflush: primary unreachable; %zu marks wait for the next round", nmarks);
        return -1;
    }
    if (mc_db_write(rf->db, "readflush: start transaction", "START TRANSACTION", 17, NULL, &st) != 0) {
        goto err;
    }
    while (next < nmarks) {
        if (mc_readmark_stmt(rf->marks, nmarks, &next, &rf->sql, &rf->args) != 0) {
            mc_error("readflush: out of memory building the update");
            goto err;
        }
        if (mc_db_write(rf->db, "readflush: room_members read update", rf->sql.data, rf->sql.len, &rf->args, &st)
            != 0) {
            goto err;
        }
        *moved += st.affected;
    }
    if (mc_db_write(rf->db, "readflush: commit", "COMMIT", 6, NULL, &st) != 0) {
        goto err;
    }
    return 0;

err:
    __atomic_fetch_add(&rf->failures, 1, __ATOMIC_RELAXED);
    if (st.err >= CR_MIN_ERROR || mc_db_write(rf->db, "readflush: rollback", "ROLLBACK", 8, NULL, &st) != 0) {
        /* the connection is gone or unusable: the server rolls back on its own */
        mc_db_reset(rf->db, MC_DB_PRIMARY);
    }
    mc_error("readflush: %zu marks not written; they stay in %s for the next round", nmarks, RF_KEY);
    return -1;
}

/* Deletes the round's good entries (bad = 0) or bad ones (bad = 1), each
 * only while its field still holds the value read, pipelined.  Returns 0
 * (*deleted and *kept counted), or -1 after a Redis failure. */
static int rf_delete(rc_readflush_t *rf, int bad, size_t *deleted, size_t *kept)
{
    const char *argv[6];
    size_t lens[6], i, j, sent;
    redisReply *r;
    rf_entry_t *e;

    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = rf->sha;
    lens[1] = 40;
    argv[2] = "1";
    lens[2] = 1;
    argv[3] = RF_KEY;
    lens[3] = sizeof(RF_KEY) - 1;

    for (i = 0; i < rf->n; i = j) {
        sent = 0;
        for (j = i; j < rf->n && sent < RF_PIPELINE; j++) {
            e = &rf->entries[j];
            if (e->bad != bad) {
                continue;
            }
            argv[4] = rf->strs.data + e->field;
            lens[4] = e->flen;
            argv[5] = rf->strs.data + e->value;
            lens[5] = e->vlen;
            if (mc_redis_conn_append(rf->redis, 6, argv, lens) != 0) {
                rf_redis_fail(rf, "evalsha", NULL);
                return -1;
            }
            sent++;
        }
        for (; sent > 0; sent--) {
            if (mc_redis_conn_reply(rf->redis, &r) != 0) {
                rf_redis_fail(rf, "evalsha", NULL);
                return -1;
            }
            if (r->type == REDIS_REPLY_INTEGER) {
                if (r->integer == 1) {
                    (*deleted)++;
                } else {
                    (*kept)++;
                }
            } else if (r->type == REDIS_REPLY_ERROR) {
                /* NOSCRIPT after a SCRIPT FLUSH, say: the mark stays, and the
                 * next round reconnects and loads the script again */
                mc_error("readflush: delete of a mark failed: %.*s", (int)r->len, r->str);
                freeReplyObject(r);
                while (--sent > 0) {
                    if (mc_redis_conn_reply(rf->redis, &r) == 0) {
                        freeReplyObject(r);
                    }
                }
                mc_redis_conn_close(rf->redis);
                rf->redis = NULL;
                return -1;
            }
            freeReplyObject(r);
        }
    }
    return 0;
}

void rc_readflush_stats(const rc_readflush_t *rf, rc_readflush_stats_t *out)
{
    out->rounds = __atomic_load_n(&rf->rounds, __ATOMIC_RELAXED);
    out->moved = __atomic_load_n(&rf->moved, __ATOMIC_RELAXED);
    out->failures = __atomic_load_n(&rf->failures, __ATOMIC_RELAXED);
}
