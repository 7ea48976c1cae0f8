/*
 * The DB job queue: every request of the nginx workers that needs MySQL
 * (create_room, room_state, history, rooms, room_info, invite, leave,
 * contacts, ban) runs here, on threads of its own, because libmariadb's calls
 * block and the main thread must not.
 *
 * The dispatcher hands over the unpacked LocalFrame (db_jobs_submit takes
 * ownership).  The queue is a mutex + condvar list with a bound
 * (db_queue_max); past it a request is answered at once with
 * "unavailable: database busy".  db_threads threads take jobs in turn, each
 * with its own mc_db router (its own connections to the primary and every
 * replica, kept between jobs: db_threads x (1 + replicas) connections in
 * all; one table of recent writers shared for read-your-writes) and, when Kafka is
 * configured and rebuild_wait_ms > 0, its own consumer-lag handle.  A job
 * calls its query function (queries_*.c), which fills the result from the
 * job's arena; the result is packed and sent to the connection that asked, by
 * id: if the worker went away meanwhile the answer is dropped with a log
 * line.  A connection lost before COMMIT runs the job once more.
 *
 * Each thread's router measures the replicas' lag (lib/src/db.c) after a
 * job, when one is due, rather than before the next (lag_between): a
 * stream of history pages no longer has one page in ~100 carry the three
 * round trips of a measurement.  After a quiet spell longer than
 * MC_DB_LAG_STALE check periods the first read measures before it reads,
 * as every read did before: an idle relay-worker sends nothing.
 *
 * Every router publishes its servers' verdicts (up, down, lagging, and
 * when each replica's lag was measured) after each job and each
 * measurement; the main loop's history reads (history_loop.c) follow them,
 * and hand a page to these threads whenever they are not fresh.  While the
 * loop reads pages, it queues a measurement job (db_jobs_refresh: no
 * request, at most one waiting) once a verdict is a check period old, so
 * that a steady stream of pages on the loop keeps the verdicts fresh without
 * a page waiting for a measurement.
 *
 * Jobs are independent: two threads may run two requests of one worker at
 * the same time; the transactions' row locks order what must be ordered.
 * On shutdown the threads finish their current job; queued jobs are
 * answered "unavailable: shutting down".
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>
#include <mysqld_error.h>

#include "minichat/clock.h"
#include "minichat/frame.h"
#include "minichat/db_conf.h"
#include "minichat/log.h"
#include "queries.h"
#include "relay.h"

#define DB_THREADS_MAX 16
/* runs of one request while the database asks for it to run again (a lost
 * connection, a deadlock, a lock wait timeout) */
#define DB_ATTEMPTS 3

typedef struct db_job_s db_job_t;
struct db_job_s {
    db_job_t *next;
    uint64_t conn_id;
    Minichat__LocalFrame *req;
};

typedef struct {
    pthread_t tid;
    dbq_t q;
} db_thread_t;

static pthread_mutex_t db_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t db_cond = PTHREAD_COND_INITIALIZER;
static db_job_t *db_head, *db_tail;
static size_t db_njobs;
static int db_refresh_queued;   /* a measurement job (req NULL, db_jobs_refresh) waits in the queue */
static int db_stopping;
static int db_nthreads;
static db_thread_t db_threads[DB_THREADS_MAX];
static const relay_conf_t *db_conf;
static mc_db_ryw_t *db_ryw;     /* the recent writers, shared by the threads' routers */
static mc_db_config_t db_cfg;   /* relay_conf.db with db_ryw */
/* what the requests found, under db_lock (db_jobs_stats) */
static uint64_t db_ok, db_failed, db_unavailable, db_busy;
static uint64_t db_reruns[DB_RERUN_REASONS];

const char *const db_rerun_reason_names[DB_RERUN_REASONS] = {"connection", "deadlock", "lock_wait"};

/* Counts a request that runs again after the error errno (a lost
 * connection, a deadlock, a lock wait timeout). */
static void db_count_rerun(unsigned errno_)
{
    db_rerun_reason_t r = errno_ == ER_LOCK_DEADLOCK       ? DB_RERUN_DEADLOCK
                          : errno_ == ER_LOCK_WAIT_TIMEOUT ? DB_RERUN_LOCK_WAIT
                                                           : DB_RERUN_CONNECTION;

    pthread_mutex_lock(&db_lock);
    db_reruns[r]++;
    pthread_mutex_unlock(&db_lock);
}
static int db_health_known;
static mc_db_health_t db_health;

/* Counts an answer by its error (NULL or "" for none); db_lock held. */
static void db_count_locked(const char *error)
{
    if (error == NULL || error[0] == '\0') {
        db_ok++;
    } else if (strncmp(error, "unavailable", 11) == 0) {
        db_unavailable++;
    } else {
        db_failed++;
    }
}

/* Keeps the servers as q's router found them (the verdicts the main loop's
 * history reads follow, db_jobs_verdicts); db_lock held. */
static void db_publish_locked(const mc_db_health_t *h)
{
    db_health = *h;
    db_health_known = 1;
}

/* Counts the answer of a request that ran on a DB thread (q; NULL: it was
 * answered without running, counted elsewhere or not at all) by its error
 * (NULL or "" for none), and keeps the servers as q's router found them. */
static void db_count(dbq_t *q, const char *error)
{
    mc_db_health_t h;

    if (q == NULL) {
        return;
    }
    mc_db_health(q->db, &h);
    pthread_mutex_lock(&db_lock);
    db_count_locked(error);
    db_publish_locked(&h);
    pthread_mutex_unlock(&db_lock);
}

/* Publishes q's router's verdicts after a lag measurement between jobs. */
static void db_publish(dbq_t *q)
{
    mc_db_health_t h;

    mc_db_health(q->db, &h);
    pthread_mutex_lock(&db_lock);
    db_publish_locked(&h);
    pthread_mutex_unlock(&db_lock);
}

void db_jobs_count(const char *error)
{
    pthread_mutex_lock(&db_lock);
    db_count_locked(error);
    pthread_mutex_unlock(&db_lock);
}

int db_jobs_verdicts(mc_db_health_t *h)
{
    int known;

    pthread_mutex_lock(&db_lock);
    known = db_health_known;
    if (known) {
        *h = db_health;
    }
    pthread_mutex_unlock(&db_lock);
    return known;
}

int db_jobs_recent_writes(void)
{
    return db_ryw != NULL && mc_db_ryw_recent(db_ryw, 0, mc_now_ms());
}

void db_jobs_send(uint64_t conn_id, const Minichat__LocalFrame *f)
{
    uint8_t *buf;
    size_t len;

    buf = relay_pack_frame(f, &len);
    if (buf == NULL) {
        mc_error("db: out of memory answering request %" PRIu64, f->req_id);
        return;
    }
    if (len > MC_FRAME_HDR + MC_FRAME_MAX) {
        mc_error("db: the answer to request %" PRIu64 " is %zu bytes, over the frame limit; dropped", f->req_id,
                 len);
    } else if (link_send(conn_id, buf, len) != 0) {
        mc_warn("db: the worker of request %" PRIu64 " went away", f->req_id);
    }
    free(buf);
}

/* One request kind: runs fn (when q is set, again while it asks for a retry
 * after a lost connection, a deadlock or a lock wait timeout, up to
 * DB_ATTEMPTS runs) or just answers error, and sends the result. */
#define DB_CASE(REQ, field, RES, rfield, Type, INIT, fn)                                                               \
    case MINICHAT__LOCAL_FRAME__BODY_##REQ: {                                                                          \
        Type r = INIT;                                                                                                 \
        const char *e = error;                                                                                         \
        int attempt;                                                                                                   \
        for (attempt = 0; q != NULL && attempt < DB_ATTEMPTS; attempt++) {                                             \
            dbq_reset(q);                                                                                              \
            r = (Type)INIT;                                                                                            \
            e = fn(q, req->field, &r);                                                                                 \
            if (!q->retry) {                                                                                           \
                break;                                                                                                 \
            }                                                                                                          \
            if (attempt + 1 < DB_ATTEMPTS) {                                                                           \
                db_count_rerun(q->last_errno);                                                                         \
            }                                                                                                          \
        }                                                                                                              \
        r.error = (char *)(e ? e : "");                                                                                \
        db_count(q, e);                                                                                                \
        f.body_case = MINICHAT__LOCAL_FRAME__BODY_##RES;                                                               \
        f.rfield = &r;                                                                                                 \
        db_jobs_send(conn_id, &f);                                                                                     \
        break;                                                                                                         \
    }

/* Runs a request on a DB thread (q) or answers it with error (q NULL). */
static void db_answer(dbq_t *q, uint64_t conn_id, const Minichat__LocalFrame *req, const char *error)
{
    Minichat__LocalFrame f = MINICHAT__LOCAL_FRAME__INIT;

    f.req_id = req->req_id;
    switch (req->body_case) {
        DB_CASE(CREATE_ROOM, create_room, CREATE_ROOM_RESULT, create_room_result, Minichat__CreateRoomResult,
                MINICHAT__CREATE_ROOM_RESULT__INIT, q_create_room)
        DB_CASE(ROOM_STATE, room_state, ROOM_STATE_RESULT, room_state_result, Minichat__RoomStateResult,
                MINICHAT__ROOM_STATE_RESULT__INIT, q_room_state)
        DB_CASE(HISTORY, history, HISTORY_RESULT, history_result, Minichat__HistoryResult,
                MINICHAT__HISTORY_RESULT__INIT, q_history)
        DB_CASE(ROOMS, rooms, ROOMS_RESULT, rooms_result, Minichat__RoomsResult, MINICHAT__ROOMS_RESULT__INIT,
                q_rooms)
        DB_CASE(ROOM_INFO, room_info, ROOM_INFO_RESULT, room_info_result, Minichat__RoomInfoResult,
                MINICHAT__ROOM_INFO_RESULT__INIT, q_room_info)
        DB_CASE(INVITE, invite, INVITE_RESULT, invite_result, Minichat__InviteResult, MINICHAT__INVITE_RESULT__INIT,
                q_invite)
        DB_CASE(LEAVE, leave, LEAVE_RESULT, leave_result, Minichat__LeaveResult, MINICHAT__LEAVE_RESULT__INIT,
                q_leave)
        DB_CASE(CONTACTS, contacts, CONTACTS_RESULT, contacts_result, Minichat__ContactsResult,
                MINICHAT__CONTACTS_RESULT__INIT, q_contacts)
        DB_CASE(BAN, ban, BAN_RESULT, ban_result, Minichat__BanResult, MINICHAT__BAN_RESULT__INIT, q_ban)
    default:
        mc_error("db: request case %d is not a database request", (int)req->body_case);
        break;
    }
    if (q != NULL) {
        dbq_reset(q);
    }
}

int db_jobs_accepts(int body_case)
{
    switch (body_case) {
    case MINICHAT__LOCAL_FRAME__BODY_CREATE_ROOM:
    case MINICHAT__LOCAL_FRAME__BODY_ROOM_STATE:
    case MINICHAT__LOCAL_FRAME__BODY_HISTORY:
    case MINICHAT__LOCAL_FRAME__BODY_ROOMS:
    case MINICHAT__LOCAL_FRAME__BODY_ROOM_INFO:
    case MINICHAT__LOCAL_FRAME__BODY_INVITE:
    case MINICHAT__LOCAL_FRAME__BODY_LEAVE:
    case MINICHAT__LOCAL_FRAME__BODY_CONTACTS:
    case MINICHAT__LOCAL_FRAME__BODY_BAN:
        return 1;
    default:
        return 0;
    }
}

/* Appends j to the queue, whose lock the caller holds, releases the lock
 * and wakes a DB thread. */
static void db_enqueue_unlock(db_job_t *j)
{
    if (db_tail) {
        db_tail->next = j;
    } else {
        db_head = j;
    }
    db_tail = j;
    db_njobs++;
    pthread_mutex_unlock(&db_lock);
    pthread_cond_signal(&db_cond); /* after the unlock: the woken thread does not wait for the lock */
}

void db_jobs_submit(uint64_t conn_id, Minichat__LocalFrame *req)
{
    db_job_t *j;

    if (db_nthreads == 0) {
        db_answer(NULL, conn_id, req, "unavailable: no database configured");
        minichat__local_frame__free_unpacked(req, NULL);
        return;
    }
    j = calloc(1, sizeof(*j));
    pthread_mutex_lock(&db_lock);
    if (j == NULL || db_njobs >= db_conf->db_queue_max || db_stopping) {
        db_busy += !db_stopping;
        pthread_mutex_unlock(&db_lock);
        if (j != NULL && !db_stopping) {
            mc_error("db: %zu requests waiting for the database, refusing more", db_njobs);
        }
        db_answer(NULL, conn_id, req,
                  j == NULL     ? "unavailable: out of memory"
                  : db_stopping ? "unavailable: shutting down"
                                : "unavailable: database busy");
        minichat__local_frame__free_unpacked(req, NULL);
        free(j);
        return;
    }
    j->conn_id = conn_id;
    j->req = req;
    db_enqueue_unlock(j);
}

static void db_job_free(db_job_t *j)
{
    if (j->req != NULL) {
        minichat__local_frame__free_unpacked(j->req, NULL);
    }
    free(j);
}

void db_jobs_refresh(void)
{
    db_job_t *j;

    if (db_nthreads == 0 || !db_cfg.lag_between) {
        return;
    }
    pthread_mutex_lock(&db_lock);
    if (db_refresh_queued || db_stopping || db_njobs >= db_conf->db_queue_max
        || (j = calloc(1, sizeof(*j))) == NULL) {
        pthread_mutex_unlock(&db_lock);
        return;
    }
    db_refresh_queued = 1;
    db_enqueue_unlock(j);
}

/* A DB thread: takes jobs in turn; measures the replicas' lag (when due)
 * after a job, so that no request waits for it. */
static void *db_loop(void *arg)
{
    db_thread_t *t = arg;
    db_job_t *j;
    int64_t t0;

    mysql_thread_init();
    if (db_cfg.lag_between) {
        mc_db_lag_refresh(t->q.db);
        db_publish(&t->q);
    }
    pthread_mutex_lock(&db_lock);
    while (!db_stopping) {
        if (db_head == NULL) {
            pthread_cond_wait(&db_cond, &db_lock);
            continue;
        }
        j = db_head;
        db_head = j->next;
        if (db_head == NULL) {
            db_tail = NULL;
        }
        db_njobs--;
        if (j->req == NULL) {
            db_refresh_queued = 0;
            pthread_mutex_unlock(&db_lock);
            mc_db_lag_refresh(t->q.db); /* the main loop's verdicts are getting old */
            db_publish(&t->q);
            db_job_free(j);
            pthread_mutex_lock(&db_lock);
            continue;
        }
        pthread_mutex_unlock(&db_lock);
        t0 = mc_now_us();
        db_answer(&t->q, j->conn_id, j->req, NULL);
        mc_hist_observe(&relay_hists.db_request, (uint64_t)(mc_now_us() - t0));
        db_job_free(j);
        if (db_cfg.lag_between) {
            mc_db_lag_refresh(t->q.db);
            db_publish(&t->q);
        }
        pthread_mutex_lock(&db_lock);
    }
    pthread_mutex_unlock(&db_lock);
    mysql_thread_end();
    return NULL;
}

/* Frees what db_jobs_start set up for thread i. */
static void db_thread_free(db_thread_t *t)
{
    if (t->q.db) {
        mc_db_free(t->q.db);
    }
    consumer_lag_free(t->q.lag);
    dbq_free(&t->q);
    memset(t, 0, sizeof(*t));
}

int db_check_start(const relay_conf_t *conf)
{
    mc_db_t *db;
    unsigned int err;

    if (conf->db.primary == NULL || conf->db.primary[0] == '\0') {
        return 0;
    }
    db = mc_db_new(&conf->db);
    if (db == NULL) {
        mc_error("db: cannot set up the database router");
        return -1;
    }
    if (mc_db_conn(db, MC_DB_PRIMARY) != NULL) {
        mc_db_free(db);
        return 0;
    }
    err = mc_db_connect_errno(db);
    mc_db_free(db);
    if (mc_db_error_is_config(err)) {
        mc_error("db: the primary refuses these settings (error %u above): check mysql_user, mysql_password or "
                 "mysql_password_file, mysql_database and mysql_ssl*", err);
        return -1;
    }
    mc_warn("db: primary not reachable yet; requests will try again");
    return 0;
}

int db_jobs_start(const relay_conf_t *conf)
{
    db_thread_t *t;
    int i;

    db_conf = conf;
    if (conf->db.primary == NULL || conf->db.primary[0] == '\0') {
        mc_warn("db: no mysql_primary, every database request will fail");
        return 0;
    }
    /* a slot per writer of a busy window: 64k users writing within it */
    db_ryw = mc_db_ryw_new(conf->db.ryw_ms, 65536);
    if (db_ryw == NULL) {
        mc_error("db: out of memory");
        return -1;
    }
    db_cfg = conf->db;
    db_cfg.ryw = db_ryw;
    db_cfg.lag_between = conf->db.max_lag_ms > 0;
    for (i = 0; i < conf->db_threads && i < DB_THREADS_MAX; i++) {
        t = &db_threads[i];
        t->q.db = mc_db_new(&db_cfg);
        if (t->q.db == NULL) {
            mc_error("db: cannot set up the database router");
            goto err;
        }
        t->q.rebuild_wait_ms = conf->rebuild_wait_ms;
        if (conf->rebuild_wait_ms > 0 && conf->kafka_brokers != NULL && conf->kafka_brokers[0] != '\0') {
            t->q.lag = consumer_lag_new(conf->kafka_brokers, &conf->kafka_sec, conf->kafka_consumer_group,
                                     conf->kafka_topic);
            if (t->q.lag == NULL) {
                goto err;
            }
        }
        errno = pthread_create(&t->tid, NULL, db_loop, t);
        if (errno != 0) {
            mc_error("db: pthread_create: %s", strerror(errno));
            goto err;
        }
        db_nthreads++;
    }
    mc_info("db: %d threads, queue bound %zu, rebuild wait %lld ms, replica lag bound %lld ms,"
            " read-your-writes %lld ms", db_nthreads, conf->db_queue_max, conf->rebuild_wait_ms,
            (long long)conf->db.max_lag_ms, (long long)conf->db.ryw_ms);
    return 0;
err:
    db_thread_free(&db_threads[i]);
    db_jobs_stop();
    return -1;
}

void db_jobs_stop(void)
{
    db_job_t *j;
    int i;

    pthread_mutex_lock(&db_lock);
    db_stopping = 1;
    pthread_cond_broadcast(&db_cond);
    pthread_mutex_unlock(&db_lock);
    for (i = 0; i < db_nthreads; i++) {
        pthread_join(db_threads[i].tid, NULL);
        db_thread_free(&db_threads[i]);
    }
    db_nthreads = 0;
    while ((j = db_head) != NULL) {
        db_head = j->next;
        if (j->req == NULL) {
            db_job_free(j); /* a measurement nobody waits for */
            continue;
        }
        db_answer(NULL, j->conn_id, j->req, "unavailable: shutting down");
        db_job_free(j);
    }
    db_tail = NULL;
    db_njobs = 0;
    db_refresh_queued = 0;
    mc_db_ryw_free(db_ryw);
    db_ryw = NULL;
}

void db_jobs_stats(db_jobs_stats_t *st)
{
    pthread_mutex_lock(&db_lock);
    st->threads = db_nthreads;
    st->queued = db_njobs;
    st->ok = db_ok;
    st->failed = db_failed;
    st->unavailable = db_unavailable;
    st->busy = db_busy;
    memcpy(st->reruns, db_reruns, sizeof(st->reruns));
    st->health_known = db_health_known;
    st->health = db_health;
    pthread_mutex_unlock(&db_lock);
}
