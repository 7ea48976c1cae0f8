/*
 * Sending chat messages only to nodes that hold one of their recipients
 * (docs/ARCHITECTURE.md "Sending only to nodes with recipients").
 *
 * What this node tells each peer: the users its nginx workers hold
 * connections of, per worker link, as the workers announced them
 * (LocalFrame.users, worker_users.c).  Each change a worker makes is
 * forwarded as a PeerUsers entry, numbered (pu_changes), into every peer's
 * `out` buffer; the stream (grpc_peer_stream.c) attaches what waits there
 * to its next batch, and the first batch it builds on each new call starts
 * over instead: users_start and every link's whole set, read from the links
 * at that moment.  Unary Deliver calls never carry users: calls in flight
 * may cross, and an old change applied after a newer one would lose a user.
 *
 * What each peer told this node: its links' sets, kept as worker_users.c
 * keeps this node's own (link_users_t), known only once a users_start came
 * on the peer's current stream, forgotten when that stream ends.  While not
 * known, the peer gets every message (as before any of this); while known,
 * a chat message goes to it only when one of its links wants it.  A room
 * whose message was left out is remembered per peer (`skipped`): the next
 * message of that room that does go carries after_skip, and the peer's
 * reorderer then takes it without waiting for the seqs before it.
 *
 * The hello guarantee across nodes: a worker holds a new connection's hello
 * until its relay-worker answers the users frame naming the user, so that
 * every message after hello is delivered live (docs/ARCHITECTURE.md
 * "Delivering only to workers with recipients").  With peers filtering, the
 * answer also waits until every peer whose stream is up has acked a batch
 * that carries the change (at most PU_WAIT_MS; then it goes anyway, counted
 * and logged).  A peer whose stream is down does not filter for this node:
 * its next stream starts over with the whole set.
 *
 * Every users frame with a req_id waits while a peer is behind, not only
 * one that adds: the worker releases the hellos of every frame up to the
 * one answered, so a later frame answered first would release an earlier
 * one's hellos early.
 *
 * Locks: each peer's own (p->lock) guards its peer_users_t; pu_wait_lock the
 * answers that wait, and the peers' lifetime for the cq thread.  Order:
 * pu_wait_lock, then p->lock, then worker_link.c's lock (the snapshot reads
 * the links); nothing takes p->lock and then pu_wait_lock.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/slice.h>

#include "minichat/clock.h"
#include "minichat/log.h"
#include "minichat/relay_queue.h"
#include "peer.h"

#define PU_OUT_MAX (256 * 1024)   /* pending changes past this: start over instead */
#define PU_SKIPPED_MAX (1u << 20) /* rooms remembered as left out, per peer */
#define PU_WAIT_MS 1000           /* the longest a worker's answer waits for the peers */

static uint64_t pu_changes; /* the number of the last change forwarded (atomic) */

typedef struct {
    uint64_t conn, req, change, deadline;
} pu_wait_t;

/* Also guards the peers' lifetime for the cq thread: peers_shutdown sets
 * pu_closed under it before the peers go, and the cq thread's entries
 * (apply, forget, check) hold it while they touch them. */
static pthread_mutex_t pu_wait_lock = PTHREAD_MUTEX_INITIALIZER;
static int pu_closed;
static pu_wait_t *pu_waits;
static size_t pu_nwaits, pu_capwaits;
static uint64_t pu_waited, pu_wait_timeouts, pu_wait_logged_at;

/* --- what this node tells its peers ------------------------------------ */

/* Appends one PeerUsers entry (RelayBatch field 3) to b.  Returns 0 or -1. */
static int pu_put_entry(mc_buf_t *b, uint64_t link, const Minichat__UserSet *us, int gone)
{
    Minichat__PeerUsers pu = MINICHAT__PEER_USERS__INIT;
    uint8_t hdr[MC_PB_LD_HDR_MAX];
    size_t len, h;

    pu.link = link;
    pu.set = (Minichat__UserSet *)us;
    pu.gone = gone;
    len = minichat__peer_users__get_packed_size(&pu);
    h = mc_pb_ld_header(hdr, 3, len);
    if (mc_buf_reserve(b, h + len) != 0) {
        return -1;
    }
    (void)mc_buf_append(b, hdr, h);
    minichat__peer_users__pack(&pu, (uint8_t *)b->data + b->len);
    b->len += len;
    return 0;
}

/* Queues one entry for every peer and kicks their streams. */
static uint64_t pu_forward(uint64_t link, const Minichat__UserSet *us, int gone)
{
    uint64_t change = __atomic_add_fetch(&pu_changes, 1, __ATOMIC_SEQ_CST), now = mc_now_ms();
    size_t i, n = peers_count();
    peer_t *p;

    for (i = 0; i < n; i++) {
        p = peers_at(i);
        pthread_mutex_lock(&p->lock);
        if (!p->users.need_start) {
            if (p->users.out.len > PU_OUT_MAX || pu_put_entry(&p->users.out, link, us, gone) != 0) {
                /* too much waiting (a peer long without a stream): the next batch starts over */
                mc_buf_free(&p->users.out);
                p->users.need_start = 1;
            } else {
                p->users.out_upto = change;
            }
        }
        peer_start_locked(p, now);
        pthread_mutex_unlock(&p->lock);
    }
    return change;
}

uint64_t peer_users_note(uint64_t link, const Minichat__UserSet *us)
{
    return pu_forward(link, us, 0);
}

void peer_users_gone(uint64_t link)
{
    Minichat__UserSet none = MINICHAT__USER_SET__INIT;

    (void)pu_forward(link, &none, 1);
}

/* The snapshot's entries: each link's whole set, or `all` for one whose
 * set is not known (it gets every message). */
typedef struct {
    mc_buf_t *b;
    int failed;
} pu_snap_t;

static void pu_snap_link(void *ctx, uint64_t link, const link_users_t *u)
{
    pu_snap_t *sn = ctx;
    Minichat__UserSet us = MINICHAT__USER_SET__INIT;
    uint64_t *ids = NULL;
    size_t i, n = 0;

    if (sn->failed) {
        return;
    }
    if (!u->known) {
        us.all = 1;
    } else {
        ids = malloc((u->set.n ? u->set.n : 1) * sizeof(*ids));
        if (ids == NULL) {
            sn->failed = 1;
            return;
        }
        if (u->set.has_zero) {
            ids[n++] = 0;
        }
        for (i = 0; i < u->set.cap; i++) {
            if (u->set.slot[i] != 0) {
                ids[n++] = u->set.slot[i];
            }
        }
        us.full = 1;
        us.add = ids;
        us.n_add = n;
    }
    if (pu_put_entry(sn->b, link, &us, 0) != 0) {
        sn->failed = 1;
    }
    free(ids);
}

int peer_users_pending_locked(const peer_t *p)
{
    return p->users.need_start || p->users.out.len > 0;
}

void peer_users_stream_opened_locked(peer_t *p)
{
    p->users.need_start = 1;
    mc_buf_free(&p->users.out);
}

int peer_users_attach_locked(peer_t *p, peer_batch_t *b, int have, const char *self)
{
    static const uint8_t start[2] = {4 << 3 | 0, 1}; /* RelayBatch.users_start = true */
    mc_buf_t add = {0};
    uint64_t upto;
    uint8_t *buf;
    size_t old_len = 0, node_len = strlen(self), h, len;
    uint8_t hdr[MC_PB_LD_HDR_MAX];
    pu_snap_t sn;

    if (p->users.need_start) {
        /* read the number before the links: every change up to it is in them */
        upto = __atomic_load_n(&pu_changes, __ATOMIC_SEQ_CST);
        sn.b = &add;
        sn.failed = mc_buf_append(&add, start, sizeof(start)) != 0;
        link_users_each(pu_snap_link, &sn);
        if (sn.failed) {
            mc_buf_free(&add);
            return have ? 1 : -1; /* tried again with the next batch */
        }
        p->users.need_start = 0;
        mc_buf_free(&p->users.out);
    } else if (p->users.out.len > 0) {
        add = p->users.out;
        memset(&p->users.out, 0, sizeof(p->users.out));
        upto = p->users.out_upto;
    } else {
        return have;
    }

    if (have) {
        old_len = GRPC_SLICE_LENGTH(b->batch);
    }
    h = have ? 0 : mc_pb_ld_header(hdr, 1, node_len);
    len = old_len + h + (have ? 0 : node_len) + add.len;
    buf = malloc(len);
    if (buf == NULL) {
        mc_buf_free(&add);
        p->users.need_start = 1; /* what was taken is lost: start over */
        return have ? 1 : -1;
    }
    if (have) {
        memcpy(buf, GRPC_SLICE_START_PTR(b->batch), old_len);
        grpc_slice_unref(b->batch);
    } else {
        memcpy(buf, hdr, h);
        memcpy(buf + h, self, node_len);
        b->count = 0;
        b->at = mc_now_ms();
    }
    memcpy(buf + len - add.len, add.data, add.len);
    mc_buf_free(&add);
    b->batch = grpc_slice_new(buf, len, free);
    b->users_upto = upto;
    return 1;
}

void peer_users_acked_locked(peer_t *p, uint64_t upto)
{
    if (upto > p->users.acked) {
        p->users.acked = upto;
    }
}

/* --- what the peers tell this node ------------------------------------- */

static void pu_forget_locked(peer_t *p)
{
    size_t i;

    for (i = 0; i < p->users.nlinks; i++) {
        link_users_free(&p->users.links[i].u);
    }
    free(p->users.links);
    p->users.links = NULL;
    p->users.nlinks = p->users.caplinks = 0;
    p->users.known = 0;
    p->users.stream = NULL;
}

/* The entry for link, made when missing; NULL when out of memory. */
static peer_link_users_t *pu_link_locked(peer_t *p, uint64_t link)
{
    peer_link_users_t *l;
    size_t i, cap;

    for (i = 0; i < p->users.nlinks; i++) {
        if (p->users.links[i].link == link) {
            return &p->users.links[i];
        }
    }
    if (p->users.nlinks == p->users.caplinks) {
        cap = p->users.caplinks ? 2 * p->users.caplinks : 8;
        l = realloc(p->users.links, cap * sizeof(*l));
        if (l == NULL) {
            return NULL;
        }
        p->users.links = l;
        p->users.caplinks = cap;
    }
    l = &p->users.links[p->users.nlinks++];
    memset(l, 0, sizeof(*l));
    l->link = link;
    return l;
}

void peer_users_apply(const char *node, const void *stream, const Minichat__RelayBatch *b)
{
    peer_link_users_t *l;
    peer_t *p;
    size_t i;

    pthread_mutex_lock(&pu_wait_lock);
    p = pu_closed ? NULL : peers_find(node);
    if (p == NULL) {
        pthread_mutex_unlock(&pu_wait_lock);
        return;
    }
    pthread_mutex_lock(&p->lock);
    if (p->users.known && p->users.stream != stream) {
        /* a batch on another stream: the peer gave the old one up, and
         * what it said there may be stale; until this one's start, it gets
         * every message */
        pu_forget_locked(p);
    }
    if (b->users_start) {
        pu_forget_locked(p);
        p->users.known = 1;
        p->users.stream = stream;
        p->users.starts++;
    }
    if (p->users.known && p->users.stream == stream) {
        for (i = 0; i < b->n_users; i++) {
            const Minichat__PeerUsers *pu = b->users[i];

            if (pu->gone) {
                l = pu_link_locked(p, pu->link);
                if (l != NULL) {
                    link_users_free(&l->u);
                    *l = p->users.links[--p->users.nlinks];
                }
                continue;
            }
            l = pu_link_locked(p, pu->link);
            if (l == NULL || pu->set == NULL || link_users_apply(&l->u, pu->set) != 0) {
                /* out of memory: not known, every message until the next start */
                mc_error("peers: out of memory for the users of \"%s\"; it gets every message until its next "
                         "stream", p->name);
                pu_forget_locked(p);
                break;
            }
        }
    }
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&pu_wait_lock);
}

void peer_users_forget(const void *stream)
{
    size_t i, n;
    peer_t *p;

    pthread_mutex_lock(&pu_wait_lock);
    n = pu_closed ? 0 : peers_count();
    for (i = 0; i < n; i++) {
        p = peers_at(i);
        pthread_mutex_lock(&p->lock);
        if (p->users.known && p->users.stream == stream) {
            pu_forget_locked(p);
        }
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&pu_wait_lock);
}

int peer_users_skip_locked(peer_t *p, const link_msg_t *m)
{
    link_msg_t mm;
    size_t i;

    if (!p->users.known || m->n_rcpt == 0) {
        return 0;
    }
    mm = *m;
    mm.alone_link = 0; /* speaks of this node's links */
    for (i = 0; i < p->users.nlinks; i++) {
        if (link_users_wants(&p->users.links[i].u, &mm, 0)) {
            return 0;
        }
    }
    if (!mc_uset_has(&p->users.skipped, m->room)
        && (p->users.skipped.n >= PU_SKIPPED_MAX || mc_uset_add(&p->users.skipped, m->room) < 0)) {
        return 0; /* cannot remember the room: it goes */
    }
    p->users.skipped_msgs++;
    return 1;
}

int peer_users_after_skip_locked(peer_t *p, uint64_t room)
{
    return mc_uset_del(&p->users.skipped, room);
}

void peer_users_free_locked(peer_t *p)
{
    pu_forget_locked(p);
    mc_buf_free(&p->users.out);
    mc_uset_clear(&p->users.skipped);
}

/* --- answers that wait for the peers ----------------------------------- */

void peer_users_stream_closed_locked(peer_t *p, uint64_t now)
{
    /* the peer may not have seen the end yet, and filter with what it
     * had: it counts as filtering until its next stream's start is acked
     * (that start holds every change) or PU_WAIT_MS pass */
    if (p->st.got_md) {
        p->users.live_until = now + PU_WAIT_MS;
    }
}

/* 1 when a peer that filters for this node, or may still, has not acked
 * change yet (pu_wait_lock held). */
static int pu_behind(uint64_t change, uint64_t now)
{
    size_t i, n = peers_count();
    peer_t *p;
    int behind = 0, live;

    for (i = 0; i < n && !behind; i++) {
        p = peers_at(i);
        pthread_mutex_lock(&p->lock);
        live = !p->unary && p->st.call != NULL && p->st.got_md && !p->st.ended && !p->st.timed_out;
        behind = (live || now < p->users.live_until) && p->users.acked < change;
        pthread_mutex_unlock(&p->lock);
    }
    return behind;
}

int peer_users_hold_answer(uint64_t conn, uint64_t req, uint64_t change)
{
    uint64_t now = mc_now_ms();
    pu_wait_t *w;
    size_t cap;

    pthread_mutex_lock(&pu_wait_lock);
    if (pu_closed || !pu_behind(change, now)) {
        pthread_mutex_unlock(&pu_wait_lock);
        return 0;
    }
    if (pu_nwaits == pu_capwaits) {
        cap = pu_capwaits ? 2 * pu_capwaits : 16;
        w = realloc(pu_waits, cap * sizeof(*w));
        if (w == NULL) {
            pthread_mutex_unlock(&pu_wait_lock);
            return 0; /* answered now */
        }
        pu_waits = w;
        pu_capwaits = cap;
    }
    w = &pu_waits[pu_nwaits++];
    w->conn = conn;
    w->req = req;
    w->change = change;
    w->deadline = now + PU_WAIT_MS;
    pu_waited++;
    pthread_mutex_unlock(&pu_wait_lock);
    return 1;
}

long peer_users_check(uint64_t now)
{
    size_t i = 0;
    long wait = -1;
    pu_wait_t w;
    int late;

    pthread_mutex_lock(&pu_wait_lock);
    while (!pu_closed && i < pu_nwaits) {
        w = pu_waits[i];
        late = now >= w.deadline;
        if (!late && pu_behind(w.change, now)) {
            if (wait < 0 || (long)(w.deadline - now) < wait) {
                wait = (long)(w.deadline - now);
            }
            i++;
            continue;
        }
        pu_waits[i] = pu_waits[--pu_nwaits];
        if (late) {
            pu_wait_timeouts++;
            if (now - pu_wait_logged_at >= 1000) {
                pu_wait_logged_at = now;
                mc_warn("peers: a worker's users change was not acked by every streaming peer within %d ms; "
                        "answered anyway (%" PRIu64 " so far): messages sent meanwhile on a peer node may miss "
                        "a user who just connected here until it resumes", PU_WAIT_MS, pu_wait_timeouts);
            }
        }
        link_users_answer(w.conn, w.req);
    }
    pthread_mutex_unlock(&pu_wait_lock);
    return wait;
}

void peer_users_shutdown(void)
{
    pthread_mutex_lock(&pu_wait_lock);
    pu_closed = 1;
    free(pu_waits); /* the workers' links close next: nobody waits for these */
    pu_waits = NULL;
    pu_nwaits = pu_capwaits = 0;
    pthread_mutex_unlock(&pu_wait_lock);
}

void peer_users_stats(uint64_t *waited, uint64_t *timeouts)
{
    pthread_mutex_lock(&pu_wait_lock);
    *waited = pu_waited;
    *timeouts = pu_wait_timeouts;
    pthread_mutex_unlock(&pu_wait_lock);
}
