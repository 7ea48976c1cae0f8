/*
 * Room creation for the nginx workers, on a thread of its own because the
 * MySQL calls block.
 *
 * The main thread validates a CreateRoomRequest (kind, title, members), and
 * either answers at once with an error or queues a job; the job queue is a
 * mutex + condvar list with a bound, past which requests are refused as
 * "unavailable".  The DB thread runs one transaction per job on the primary
 * (through the mc_db router):
 *     START TRANSACTION;
 *     INSERT INTO rooms (kind, title, created_by) VALUES (...);
 *     INSERT INTO room_members (room_id, user_id) VALUES (...), (...);
 *     COMMIT;
 * and answers the connection that asked, by id: if the worker went away
 * meanwhile the answer is dropped with a log line.  A lost connection before
 * COMMIT is retried once on a fresh connection; a lost COMMIT is not (the room
 * may exist), the caller gets an error.
 *
 * Errors carry a code from the client protocol's closed set in front:
 * "bad_request: ..." for a request that can never succeed, "unavailable: ..."
 * for one that may succeed later.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>
#include <mysql.h>

#include "minichat/db.h"
#include "minichat/log.h"
#include "minichat/ws.h"
#include "relay.h"

#define ROOMS_MAX_JOBS 10000
#define ROOMS_MAX_MEMBERS 10000
#define ROOMS_TITLE_MAX 191 /* characters, rooms.title is VARCHAR(191) */

typedef struct rooms_job_s rooms_job_t;
struct rooms_job_s {
    rooms_job_t *next;
    uint64_t conn_id;
    uint64_t req_id;
    int group;
    char *title;
    uint64_t creator;
    uint64_t *members;
    size_t n_members;
};

static pthread_mutex_t rooms_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rooms_cond = PTHREAD_COND_INITIALIZER;
static rooms_job_t *rooms_head, *rooms_tail;
static size_t rooms_njobs;
static int rooms_stopping;
static int rooms_running;
static pthread_t rooms_thread;
static mc_db_t *rooms_db;

/* Answers a request on its connection: id > 0 or an error. */
static void rooms_answer(uint64_t conn_id, uint64_t req_id, uint64_t id, const char *error)
{
    Minichat__LocalFrame f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__CreateRoomResult r = MINICHAT__CREATE_ROOM_RESULT__INIT;
    uint8_t *buf;
    size_t len;

    r.id = id;
    r.error = (char *)(error ? error : "");
    f.req_id = req_id;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_CREATE_ROOM_RESULT;
    f.create_room_result = &r;
    buf = relay_pack_frame(&f, &len);
    if (buf == NULL) {
        mc_error("rooms: out of memory answering request %" PRIu64, req_id);
        return;
    }
    if (link_send(conn_id, buf, len) != 0) {
        mc_warn("rooms: worker of request %" PRIu64 " went away (room %" PRIu64 ")", req_id, id);
    }
    free(buf);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Returns the number of UTF-8 characters in a valid string. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;

    for (; *s; s++) {
        n += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return n;
}

/* Checks a request and builds its job.  Returns NULL with *error set. */
static rooms_job_t *rooms_job_new(const Minichat__CreateRoomRequest *req, const char **error)
{
    rooms_job_t *j;
    size_t i, n;
    const char *title = req->title ? req->title : "";

    *error = NULL;
    if (req->kind == NULL || (strcmp(req->kind, "group") != 0 && strcmp(req->kind, "direct") != 0)) {
        *error = "bad_request: kind must be \"group\" or \"direct\"";
    } else if (req->creator == 0) {
        *error = "bad_request: no creator";
    } else if (!mc_utf8_valid((const uint8_t *)title, strlen(title))) {
        *error = "bad_request: title is not valid UTF-8";
    } else if (utf8_chars(title) > ROOMS_TITLE_MAX) {
        *error = "bad_request: title longer than 191 characters";
    } else if (req->n_members >= ROOMS_MAX_MEMBERS) {
        *error = "bad_request: too many members";
    }
    if (*error) {
        return NULL;
    }

    j = calloc(1, sizeof(*j));
    if (j == NULL || (j->title = strdup(title)) == NULL
        || (j->members = malloc((req->n_members + 1) * sizeof(uint64_t))) == NULL) {
        *error = "unavailable: out of memory";
        goto err;
    }
    j->group = strcmp(req->kind, "group") == 0;
    j->creator = req->creator;
    memcpy(j->members, req->members, req->n_members * sizeof(uint64_t));
    j->members[req->n_members] = req->creator;
    qsort(j->members, req->n_members + 1, sizeof(uint64_t), cmp_u64);
    for (i = 0, n = 0; i < req->n_members + 1; i++) {
        if (j->members[i] == 0) {
            *error = "bad_request: member id 0";
            goto err;
        }
        if (n == 0 || j->members[n - 1] != j->members[i]) {
            j->members[n++] = j->members[i];
        }
    }
    j->n_members = n;
    if (!j->group && n != 2) {
        *error = "bad_request: a direct room has exactly two members";
        goto err;
    }
    return j;
err:
    if (j) {
        free(j->title);
        free(j->members);
        free(j);
    }
    return NULL;
}

static void rooms_job_free(rooms_job_t *j)
{
    free(j->title);
    free(j->members);
    free(j);
}

void rooms_submit(uint64_t conn_id, uint64_t req_id, const Minichat__CreateRoomRequest *req)
{
    const char *error;
    rooms_job_t *j;

    j = rooms_job_new(req, &error);
    if (j == NULL) {
        rooms_answer(conn_id, req_id, 0, error);
        return;
    }
    if (!rooms_running) {
        rooms_answer(conn_id, req_id, 0, "unavailable: no database configured");
        rooms_job_free(j);
        return;
    }
    j->conn_id = conn_id;
    j->req_id = req_id;
    pthread_mutex_lock(&rooms_lock);
    if (rooms_njobs >= ROOMS_MAX_JOBS) {
        pthread_mutex_unlock(&rooms_lock);
        mc_error("rooms: %d requests waiting for the database, refusing more", ROOMS_MAX_JOBS);
        rooms_answer(conn_id, req_id, 0, "unavailable: database busy");
        rooms_job_free(j);
        return;
    }
    if (rooms_tail) {
        rooms_tail->next = j;
    } else {
        rooms_head = j;
    }
    rooms_tail = j;
    rooms_njobs++;
    pthread_cond_signal(&rooms_cond);
    pthread_mutex_unlock(&rooms_lock);
}

/* Returns 1 when a MySQL error means the connection is gone. */
static int rooms_conn_lost(unsigned err)
{
    return err == CR_SERVER_GONE_ERROR || err == CR_SERVER_LOST || err == CR_CONNECTION_ERROR
           || err == CR_CONN_HOST_ERROR || err == CR_COMMANDS_OUT_OF_SYNC;
}

/* Runs one statement.  Returns 0, or the MySQL error number with a log line. */
static unsigned rooms_query(MYSQL *m, const char *sql, size_t len)
{
    unsigned err;

    if (mysql_real_query(m, sql, (unsigned long)len) == 0) {
        return 0;
    }
    err = mysql_errno(m);
    mc_error("rooms: query failed: %u %s", err, mysql_error(m));
    return err ? err : CR_UNKNOWN_ERROR;
}

/* Runs the transaction for a job.  Returns the room id, or 0 with *lost set
 * when the connection went away before COMMIT (a retry is safe). */
static uint64_t rooms_create(MYSQL *m, const rooms_job_t *j, int *lost)
{
    char *sql = NULL, *p;
    size_t tlen = strlen(j->title), cap, i;
    uint64_t id = 0;
    unsigned err;

    *lost = 0;
    cap = 128 + 2 * tlen + j->n_members * 48;
    sql = malloc(cap);
    if (sql == NULL) {
        mc_error("rooms: out of memory");
        return 0;
    }
    if ((err = rooms_query(m, "START TRANSACTION", 17)) != 0) {
        goto fail;
    }
    p = sql + sprintf(sql, "INSERT INTO rooms (kind, title, created_by) VALUES ('%s', '",
                      j->group ? "group" : "direct");
    p += mysql_real_escape_string(m, p, j->title, (unsigned long)tlen);
    p += sprintf(p, "', %" PRIu64 ")", j->creator);
    if ((err = rooms_query(m, sql, (size_t)(p - sql))) != 0) {
        goto fail;
    }
    id = mysql_insert_id(m);
    p = sql + sprintf(sql, "INSERT INTO room_members (room_id, user_id) VALUES ");
    for (i = 0; i < j->n_members; i++) {
        p += sprintf(p, "%s(%" PRIu64 ", %" PRIu64 ")", i ? ", " : "", id, j->members[i]);
    }
    if ((err = rooms_query(m, sql, (size_t)(p - sql))) != 0) {
        goto fail;
    }
    if (rooms_query(m, "COMMIT", 6) != 0) {
        id = 0; /* the outcome is unknown: no retry */
        goto done;
    }
    goto done;
fail:
    id = 0;
    *lost = rooms_conn_lost(err);
    if (!*lost) {
        (void)rooms_query(m, "ROLLBACK", 8);
    }
done:
    free(sql);
    return id;
}

/* Handles one job on the DB thread. */
static void rooms_run(const rooms_job_t *j)
{
    MYSQL *m;
    uint64_t id = 0;
    int attempt, lost;

    for (attempt = 0; attempt < 2; attempt++) {
        m = mc_db_conn(rooms_db, MC_DB_PRIMARY);
        if (m == NULL) {
            rooms_answer(j->conn_id, j->req_id, 0, "unavailable: database unreachable");
            return;
        }
        id = rooms_create(m, j, &lost);
        if (id != 0) {
            break;
        }
        mc_db_reset(rooms_db, MC_DB_PRIMARY);
        if (!lost) {
            break;
        }
    }
    if (id == 0) {
        rooms_answer(j->conn_id, j->req_id, 0, "unavailable: database error");
        return;
    }
    mc_info("rooms: created %s room %" PRIu64 " by %" PRIu64 " with %zu members", j->group ? "group" : "direct", id,
            j->creator, j->n_members);
    rooms_answer(j->conn_id, j->req_id, id, NULL);
}

static void *rooms_loop(void *arg)
{
    rooms_job_t *j;

    (void)arg;
    mysql_thread_init();
    pthread_mutex_lock(&rooms_lock);
    while (!rooms_stopping) {
        if (rooms_head == NULL) {
            pthread_cond_wait(&rooms_cond, &rooms_lock);
            continue;
        }
        j = rooms_head;
        rooms_head = j->next;
        if (rooms_head == NULL) {
            rooms_tail = NULL;
        }
        rooms_njobs--;
        pthread_mutex_unlock(&rooms_lock);
        rooms_run(j);
        rooms_job_free(j);
        pthread_mutex_lock(&rooms_lock);
    }
    pthread_mutex_unlock(&rooms_lock);
    mc_db_free(rooms_db);
    rooms_db = NULL;
    mysql_thread_end();
    return NULL;
}

int rooms_start(const mc_db_config_t *cfg)
{
    if (cfg->primary == NULL || cfg->primary[0] == '\0') {
        mc_warn("rooms: no mysql_primary, create_room requests will fail");
        return 0;
    }
    rooms_db = mc_db_new(cfg);
    if (rooms_db == NULL) {
        mc_error("rooms: cannot set up the database router");
        return -1;
    }
    errno = pthread_create(&rooms_thread, NULL, rooms_loop, NULL);
    if (errno != 0) {
        mc_error("rooms: pthread_create: %s", strerror(errno));
        mc_db_free(rooms_db);
        rooms_db = NULL;
        return -1;
    }
    rooms_running = 1;
    return 0;
}

void rooms_stop(void)
{
    rooms_job_t *j;

    if (!rooms_running) {
        return;
    }
    pthread_mutex_lock(&rooms_lock);
    rooms_stopping = 1;
    pthread_cond_signal(&rooms_cond);
    pthread_mutex_unlock(&rooms_lock);
    pthread_join(rooms_thread, NULL);
    rooms_running = 0;
    while ((j = rooms_head) != NULL) {
        rooms_head = j->next;
        rooms_answer(j->conn_id, j->req_id, 0, "unavailable: shutting down");
        rooms_job_free(j);
    }
    rooms_tail = NULL;
    rooms_njobs = 0;
}
