/*
 * History pages read on the main loop (history_on_loop = on): the first
 * replica read of a page runs on the relay-worker's epoll loop with
 * libmariadb's non-blocking API instead of going to a DB thread, which saves
 * the hand-off (a condvar wake-up of a DB thread, and the wake-up of the
 * main thread that flushes the answer) on the common path of a page.
 *
 * The loop owns one connection per replica (MYSQL_OPT_NONBLOCK, opened with
 * the router's options by mc_db_replica_connect_start, the statement
 * prepared on it once), its socket in the main epoll set.  A connection runs
 * one statement at a time: execute, store, then the rows are turned into
 * the page by the DB threads' own code (mc_db_stmt_rows, q_history_rows).
 *
 * Correctness never depends on this path.  The loop decides nothing about
 * the servers: it follows the verdicts the DB threads' routers publish
 * (db_jobs_verdicts: a replica up, not down, not lagging, its lag measured
 * within MC_DB_LAG_STALE check periods) and picks among the usable ones in
 * turn with the router's own rule (mc_db_route_pick).  Everything else goes
 * to the DB threads as a job, exactly as with history_on_loop = off:
 *  - no verdict yet, a stale one, no usable replica with a ready connection,
 *    or read-your-writes sending everyone to the primary;
 *  - more than history_on_loop_max pages taken by the loop (running or
 *    waiting for their connection);
 *  - a page that is not complete from the replica (a hole: the primary and
 *    the consumer wait are the DB threads' job, q_history from the start);
 *  - an error, a lost connection or a read longer than HLOOP_READ_MS: the
 *    connection is closed, tried again after HLOOP_RETRY_MS, and its page
 *    (and those waiting for it) handed over;
 *  - a request that is no plain page (bad, or nothing below seq 1).
 * While pages come, a verdict a check period old makes the loop queue a
 * measurement for a DB thread (db_jobs_refresh), so a steady stream keeps
 * the verdicts fresh; after a quiet spell the first page finds a stale one
 * and goes to a DB thread, which measures and publishes.
 *
 * Connects start when a page finds a usable replica without a connection
 * (that page goes to a DB thread); an idle connection whose socket becomes
 * readable (the server closed it) is closed.  A connection closed with work
 * in progress is shut down first, so that mysql_close never waits.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <errmsg.h>
#include <mysql.h>

#include "minichat/clock.h"
#include "minichat/db_route.h"
#include "minichat/log.h"
#include "minichat/paging.h"
#include "queries.h"
#include "relay.h"

#define HLOOP_RETRY_MS 5000    /* a failed connection is opened again after this */
#define HLOOP_CONNECT_MS 3000  /* connect and prepare, as MC_DB_CONNECT_TIMEOUT */
#define HLOOP_READ_MS 5000     /* a page's statement on the loop; past it a DB thread reads it */

typedef struct hloop_read_s hloop_read_t;
struct hloop_read_s {
    hloop_read_t *next;
    uint64_t conn_id;
    Minichat__LocalFrame *req;
    uint32_t limit;
    int64_t t0_us;
};

typedef enum { HC_DOWN, HC_CONNECTING, HC_PREPARING, HC_READY, HC_EXECUTING, HC_STORING } hloop_state_t;

typedef struct {
    int i;                   /* the replica */
    hloop_state_t state;
    MYSQL *m;
    MYSQL_STMT *stmt;
    int fd;                  /* in epoll, or -1 */
    uint32_t events;         /* registered for fd */
    int64_t retry_ms;        /* HC_DOWN: not opened before this */
    int64_t deadline_ms;     /* of the wait in progress */
    hloop_read_t *cur;       /* the page running, or NULL */
    mc_db_arg_t args[3];
    MYSQL_BIND bind[3];
    unsigned long lens[3];
} hloop_conn_t;

static int hloop_on;
static int hloop_max;
static mc_db_t *hloop_db;        /* the replicas' addresses and the router's options; no connection of its own */
static mc_db_route_t hloop_route; /* the round-robin cursor and, per pick, the verdicts */
static int64_t hloop_check_ms, hloop_max_lag_ms;
static hloop_conn_t hloop_conns[MC_DB_REPLICAS_MAX];
static size_t hloop_nconns;
static hloop_read_t *hloop_head, *hloop_tail; /* waiting for a connection */
static int hloop_taken;          /* running or waiting */
static dbq_t hloop_q;            /* the arena of a page's answer */
static uint64_t hloop_answered, hloop_handed;

static void hloop_close(hloop_conn_t *c, int64_t now);
static void hloop_step(hloop_conn_t *c, int status);
static void hloop_next(hloop_conn_t *c);

/* Hands a page to the DB threads (which answer it from the start). */
static void hloop_hand_over(hloop_read_t *r)
{
    hloop_taken--;
    hloop_handed++;
    db_jobs_submit(r->conn_id, r->req);
    free(r);
}

/* Registers c's socket for the MYSQL_WAIT_* flags of status.  Returns 0 or -1. */
static int hloop_watch(hloop_conn_t *c, int status)
{
    struct epoll_event ev;
    uint32_t want = 0;
    int fd;

    if (status & MYSQL_WAIT_READ) {
        want |= EPOLLIN;
    }
    if (status & MYSQL_WAIT_WRITE) {
        want |= EPOLLOUT;
    }
    fd = (int)mysql_get_socket(c->m);
    if (fd < 0) {
        return -1;
    }
    if (c->fd == fd && c->events == want) {
        return 0;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = want;
    ev.data.ptr = c;
    if (c->fd != fd && c->fd >= 0) {
        (void)epoll_ctl(relay_epoll_fd(), EPOLL_CTL_DEL, c->fd, NULL);
        c->fd = -1;
    }
    if (epoll_ctl(relay_epoll_fd(), c->fd == fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
        mc_error("history loop: epoll_ctl: %s", strerror(errno));
        return -1;
    }
    c->fd = fd;
    c->events = want;
    return 0;
}

/* Closes c (a page in progress and those waiting go to the DB threads) and
 * pauses it for HLOOP_RETRY_MS. */
static void hloop_close(hloop_conn_t *c, int64_t now)
{
    hloop_read_t *r;

    if (c->fd >= 0) {
        (void)epoll_ctl(relay_epoll_fd(), EPOLL_CTL_DEL, c->fd, NULL);
        if (c->state != HC_READY) {
            (void)shutdown(c->fd, SHUT_RDWR); /* mysql_close then fails fast instead of waiting */
        }
        c->fd = -1;
    }
    c->events = 0;
    if (c->stmt != NULL) {
        mysql_stmt_close(c->stmt);
        c->stmt = NULL;
    }
    if (c->m != NULL) {
        mysql_close(c->m);
        c->m = NULL;
    }
    c->state = HC_DOWN;
    c->retry_ms = now + HLOOP_RETRY_MS;
    if (c->cur != NULL) {
        r = c->cur;
        c->cur = NULL;
        hloop_hand_over(r);
    }
    while ((r = hloop_head) != NULL) {
        hloop_head = r->next;
        hloop_hand_over(r);
    }
    hloop_tail = NULL;
}

/* Closes c after an error, with a log line naming what failed. */
static void hloop_fail(hloop_conn_t *c, const char *what)
{
    unsigned err = c->stmt != NULL && mysql_stmt_errno(c->stmt) ? mysql_stmt_errno(c->stmt)
                   : c->m != NULL                              ? mysql_errno(c->m)
                                                               : 0;
    const char *msg = c->stmt != NULL && mysql_stmt_errno(c->stmt) ? mysql_stmt_error(c->stmt)
                      : c->m != NULL                              ? mysql_error(c->m)
                                                                  : "";

    mc_warn("history loop: %s: %s failed: %s (%u); its pages go to the DB threads, connecting again in %d ms",
            mc_db_replica_name(hloop_db, c->i), what, msg, err, HLOOP_RETRY_MS);
    hloop_close(c, mc_now_ms());
}

/* Starts connecting c.  The page that found it closed goes elsewhere. */
static void hloop_connect(hloop_conn_t *c, int64_t now)
{
    int status;

    status = mc_db_replica_connect_start(hloop_db, c->i, &c->m);
    if (status < 0) {
        c->retry_ms = now + HLOOP_RETRY_MS;
        return;
    }
    c->state = HC_CONNECTING;
    c->deadline_ms = now + HLOOP_CONNECT_MS;
    hloop_step(c, status);
}

/* Sends a page's answer, or hands the page over when it has a hole. */
static void hloop_answer(hloop_read_t *r, mc_db_rows_t *rows)
{
    Minichat__LocalFrame f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__HistoryResult res = MINICHAT__HISTORY_RESULT__INIT;
    int complete = 0;

    if (q_history_rows(&hloop_q, r->req->history, r->limit, rows, &res, &complete) != 0 || !complete) {
        dbq_reset(&hloop_q);
        mc_debug("history loop: room %" PRIu64 " before %" PRIu64 ": not complete from the replica, to a DB thread",
                 r->req->history->room, r->req->history->before);
        hloop_hand_over(r);
        return;
    }
    res.error = "";
    f.req_id = r->req->req_id;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_HISTORY_RESULT;
    f.history_result = &res;
    db_jobs_send(r->conn_id, &f);
    db_jobs_count(NULL);
    dbq_reset(&hloop_q);
    mc_hist_observe(&relay_hists.db_request, (uint64_t)(mc_now_us() - r->t0_us));
    hloop_taken--;
    hloop_answered++;
    minichat__local_frame__free_unpacked(r->req, NULL);
    free(r);
}

/* Starts page r on the ready connection c. */
static void hloop_start(hloop_conn_t *c, hloop_read_t *r)
{
    mc_db_status_t st;
    my_bool on = 1;
    int ret = 0, status;

    c->cur = r;
    c->args[0] = MC_DB_U64(r->req->history->room);
    c->args[1] = MC_DB_U64(r->req->history->before);
    c->args[2] = MC_DB_U64(r->limit);
    if (mc_db_stmt_bind(c->stmt, c->args, 3, c->bind, c->lens, &st) != 0
        || mysql_stmt_attr_set(c->stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &on) != 0) {
        hloop_fail(c, "binding a page's values");
        return;
    }
    c->state = HC_EXECUTING;
    c->deadline_ms = mc_now_ms() + HLOOP_READ_MS;
    status = mysql_stmt_execute_start(&ret, c->stmt);
    if (status == 0 && ret != 0) {
        hloop_fail(c, "a page's statement");
        return;
    }
    hloop_step(c, status);
}

/* c finished a step with status (0: the step is done, else the MYSQL_WAIT_*
 * flags to wait for): moves to the next one until something must wait. */
static void hloop_step(hloop_conn_t *c, int status)
{
    static const char sql[] = Q_HISTORY_SQL;
    mc_db_rows_t *rows;
    mc_db_status_t st;
    hloop_read_t *r;
    int ret = 0;

    while (status == 0) {
        switch (c->state) {
        case HC_CONNECTING:
            mc_info("history loop: connected to %s (tls %s)", mc_db_replica_name(hloop_db, c->i),
                    mysql_get_ssl_cipher(c->m) != NULL ? mysql_get_ssl_cipher(c->m) : "off");
            c->stmt = mysql_stmt_init(c->m);
            if (c->stmt == NULL) {
                hloop_fail(c, "mysql_stmt_init");
                return;
            }
            c->state = HC_PREPARING;
            status = mysql_stmt_prepare_start(&ret, c->stmt, sql, sizeof(sql) - 1);
            if (status == 0 && ret != 0) {
                hloop_fail(c, "preparing the page statement");
                return;
            }
            break;
        case HC_PREPARING:
            c->state = HC_READY;
            hloop_next(c);
            return;
        case HC_EXECUTING:
            c->state = HC_STORING;
            status = mysql_stmt_store_result_start(&ret, c->stmt);
            if (status == 0 && ret != 0) {
                hloop_fail(c, "storing a page");
                return;
            }
            break;
        case HC_STORING:
            r = c->cur;
            c->cur = NULL;
            c->state = HC_READY;
            if (mc_db_stmt_rows(c->stmt, &rows, &st) != 0) {
                c->cur = r;
                c->state = HC_STORING;
                hloop_fail(c, "reading a page's rows");
                return;
            }
            hloop_answer(r, rows);
            hloop_next(c);
            return;
        default:
            return;
        }
    }
    if (hloop_watch(c, status) != 0) {
        hloop_fail(c, "watching the socket");
    }
}

/* c is ready: starts the next waiting page, or watches the idle socket (a
 * server that closes it makes it readable). */
static void hloop_next(hloop_conn_t *c)
{
    hloop_read_t *r = hloop_head;

    c->deadline_ms = 0;
    if (r != NULL) {
        hloop_head = r->next;
        if (hloop_head == NULL) {
            hloop_tail = NULL;
        }
        hloop_start(c, r);
        return;
    }
    if (hloop_watch(c, MYSQL_WAIT_READ) != 0) {
        hloop_fail(c, "watching the socket");
    }
}

int hloop_is_event(const void *ptr)
{
    return ptr >= (const void *)&hloop_conns[0] && ptr < (const void *)&hloop_conns[MC_DB_REPLICAS_MAX];
}

void hloop_on_event(void *ptr, uint32_t events)
{
    hloop_conn_t *c = ptr;
    MYSQL *mret = NULL;
    int ready = 0, status, ret = 0;

    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ready |= MYSQL_WAIT_READ;
    }
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        ready |= MYSQL_WAIT_WRITE;
    }
    switch (c->state) {
    case HC_READY:
        /* nothing was asked: the server closed the connection (or broke the protocol) */
        mc_info("history loop: %s closed the idle connection", mc_db_replica_name(hloop_db, c->i));
        hloop_close(c, mc_now_ms());
        c->retry_ms = 0; /* opened again by the next page */
        return;
    case HC_CONNECTING:
        status = mysql_real_connect_cont(&mret, c->m, ready);
        if (status == 0 && mret == NULL) {
            hloop_fail(c, "connecting");
            return;
        }
        break;
    case HC_PREPARING:
        status = mysql_stmt_prepare_cont(&ret, c->stmt, ready);
        if (status == 0 && ret != 0) {
            hloop_fail(c, "preparing the page statement");
            return;
        }
        break;
    case HC_EXECUTING:
        status = mysql_stmt_execute_cont(&ret, c->stmt, ready);
        if (status == 0 && ret != 0) {
            hloop_fail(c, "a page's statement");
            return;
        }
        break;
    case HC_STORING:
        status = mysql_stmt_store_result_cont(&ret, c->stmt, ready);
        if (status == 0 && ret != 0) {
            hloop_fail(c, "storing a page");
            return;
        }
        break;
    default:
        return;
    }
    hloop_step(c, status);
}

void hloop_tick(int64_t now)
{
    size_t i;

    for (i = 0; i < hloop_nconns; i++) {
        if (hloop_conns[i].state != HC_DOWN && hloop_conns[i].state != HC_READY && hloop_conns[i].deadline_ms > 0
            && now >= hloop_conns[i].deadline_ms) {
            mc_warn("history loop: %s: no answer in %lld ms", mc_db_replica_name(hloop_db, hloop_conns[i].i),
                    (long long)(hloop_conns[i].state == HC_CONNECTING || hloop_conns[i].state == HC_PREPARING
                                    ? HLOOP_CONNECT_MS
                                    : HLOOP_READ_MS));
            hloop_close(&hloop_conns[i], now);
        }
    }
}

/* Returns 1 when the verdicts let the loop read from replica i now. */
static int hloop_usable(const mc_db_health_t *h, size_t i, int64_t now)
{
    if (i >= h->replicas || h->replica[i] != MC_DB_UP) {
        return 0;
    }
    return hloop_max_lag_ms <= 0 || (h->checked_ms[i] > 0 && now - h->checked_ms[i] < MC_DB_LAG_STALE * hloop_check_ms);
}

int hloop_submit(uint64_t conn_id, Minichat__LocalFrame *f)
{
    mc_db_health_t h;
    hloop_read_t *r;
    hloop_conn_t *c;
    uint32_t limit;
    int64_t now;
    size_t i;
    int k, busy = 0, refresh = 0;

    if (!hloop_on || f->body_case != MINICHAT__LOCAL_FRAME__BODY_HISTORY || f->history == NULL
        || q_history_limit(f->history, &limit) != NULL || mc_history_want(f->history->before, limit) == 0
        || hloop_taken >= hloop_max || !db_jobs_verdicts(&h) || db_jobs_recent_writes()) {
        return -1;
    }
    now = mc_now_ms();
    for (i = 0; i < hloop_nconns; i++) {
        c = &hloop_conns[i];
        hloop_route.r[i].down_until_ms = 0;
        hloop_route.r[i].lagging = 1;
        if (!hloop_usable(&h, i, now)) {
            continue;
        }
        if (hloop_max_lag_ms > 0 && now - h.checked_ms[i] >= hloop_check_ms) {
            refresh = 1;
        }
        if (c->state == HC_DOWN) {
            if (now >= c->retry_ms) {
                hloop_connect(c, now);
            }
        } else if (c->state == HC_READY) {
            hloop_route.r[i].lagging = 0;
        } else if (c->cur != NULL) {
            busy = 1;
        }
    }
    if (refresh) {
        db_jobs_refresh(); /* a verdict a check period old: measured again before it goes stale */
    }
    k = mc_db_route_pick(&hloop_route, now);
    if (k < 0 && !busy) {
        return -1;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return -1;
    }
    r->conn_id = conn_id;
    r->req = f;
    r->limit = limit;
    r->t0_us = mc_now_us();
    hloop_taken++;
    if (k < 0) {
        /* every usable connection runs a page: wait for one */
        if (hloop_tail != NULL) {
            hloop_tail->next = r;
        } else {
            hloop_head = r;
        }
        hloop_tail = r;
        return 0;
    }
    hloop_start(&hloop_conns[k], r);
    return 0;
}

int hloop_start_loop(const relay_conf_t *conf)
{
    size_t i;

    hloop_on = conf->history_on_loop;
    hloop_max = conf->history_on_loop_max;
    if (!hloop_on || conf->db.primary == NULL || conf->db.primary[0] == '\0') {
        hloop_on = 0;
        return 0;
    }
    hloop_db = mc_db_new(&conf->db);
    if (hloop_db == NULL) {
        mc_error("history loop: cannot set up the replicas");
        return -1;
    }
    hloop_nconns = mc_db_replica_count(hloop_db);
    if (hloop_nconns == 0) {
        mc_info("history loop: no replicas, history pages run on the DB threads");
        mc_db_free(hloop_db);
        hloop_db = NULL;
        hloop_on = 0;
        return 0;
    }
    hloop_check_ms = conf->db.lag_check_ms;
    hloop_max_lag_ms = conf->db.max_lag_ms;
    mc_db_route_init(&hloop_route, hloop_nconns, 0, 0, 0);
    for (i = 0; i < hloop_nconns; i++) {
        memset(&hloop_conns[i], 0, sizeof(hloop_conns[i]));
        hloop_conns[i].i = (int)i;
        hloop_conns[i].fd = -1;
    }
    mc_info("history loop: on, %zu replica connection(s), at most %d pages on the loop", hloop_nconns, hloop_max);
    return 0;
}

void hloop_stop(void)
{
    hloop_read_t *r;
    size_t i;

    for (i = 0; i < hloop_nconns; i++) {
        hloop_close(&hloop_conns[i], mc_now_ms()); /* pages in progress go to the DB threads, which answer them */
    }
    while ((r = hloop_head) != NULL) {
        hloop_head = r->next;
        hloop_hand_over(r);
    }
    hloop_tail = NULL;
    hloop_nconns = 0;
    dbq_free(&hloop_q);
    mc_db_free(hloop_db);
    hloop_db = NULL;
    hloop_on = 0;
}

void hloop_stats(uint64_t *answered, uint64_t *handed)
{
    *answered = hloop_answered;
    *handed = hloop_handed;
}
