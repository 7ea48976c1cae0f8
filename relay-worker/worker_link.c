/*
 * The worker link: the unix-socket server for this node's nginx workers.  It
 * owns the transport and nothing else: accepting, reading, the 4-byte length
 * framing, the `hello` handshake, and one bounded output buffer per
 * connection.  Every other frame is unpacked and handed, with its ownership,
 * to the frame handler given to link_listen() (dispatch.c), so this file
 * knows nothing of what a frame asks for; the services answer through
 * link_send() and link_broadcast(), naming connections by id.
 *
 * Reading belongs to the main thread alone (level-triggered epoll, one read
 * per event, every whole frame in the buffer handled at once).  Writing
 * happens from three threads (main: local fan-out, Kafka results; cq:
 * messages and events from other nodes; db: query results), so the
 * connection table and every output buffer sit under `link_lock`.  A writer first tries a direct non-blocking send();
 * what does not fit goes to the connection's output buffer and EPOLLOUT is
 * armed (epoll_ctl is thread-safe); the main thread flushes on EPOLLOUT.  A
 * worker that stops reading is dropped once its buffer passes
 * local_outbuf_max, so memory stays bounded.
 *
 * Who may connect: the socket file is created 0600 (umask around bind), then
 * chowned to unix_socket_group when set and chmod'ed to unix_socket_mode
 * (0660 by default), so no one else can connect in between.  Each accepted
 * connection's credentials (SO_PEERCRED: pid, uid, gid; SO_PEERGROUPS: the
 * supplementary groups, read only when allowed_peers names groups) are
 * checked before anything is read: root and this process's own user are
 * always accepted (either could ptrace the relay-worker anyway), anyone
 * else only when allowed_peers lists its uid or one of its groups.  A
 * refused peer is closed at once, logged once at warn and counted.
 *
 * Corking (link_cork/link_uncork): a thread that is about to answer many
 * frames at once (the main thread serving a batch of Kafka delivery
 * reports, one ack each) corks first: its writes then only queue in the
 * output buffers, and uncorking sends each buffer with one send(), so the
 * worker wakes and reads once per batch instead of once per frame.  The
 * cork is the calling thread's own and nests (the writes leave at the
 * outermost uncork); other threads' writes queue behind what is corked
 * (never ahead of it) and arm EPOLLOUT as usual.  The main thread corks
 * each round of its epoll loop, the cq thread each run of completions that
 * were ready together (grpc_server.c), so that messages that arrived
 * together reach each worker in one write.
 *
 * Member lists (link_deliver): each connection keeps a mirror of the lists
 * its worker holds from us and a table of those the worker sent us
 * (minichat/member_slots.h); a chat message whose list the worker holds
 * under the same members version leaves without it.  Both start empty with
 * the connection, as the worker's own tables do.
 *
 * Users (link_deliver): a worker says which users it holds connections of
 * (LocalFrame.users, worker_users.c), and a chat message goes only to the
 * connections holding one of its recipients, or that never said.  A
 * message left out for a connection changes neither its member-list mirror
 * nor the worker's table: both ends skip it alike.  A users frame with a
 * req_id is answered (an empty users frame, same req_id) once applied, so
 * the worker knows every later deliver on the stream was chosen with it.
 *
 * Only the main thread frees a connection.  Another thread that must give up
 * on one marks it dead and shuts the socket down, which wakes the main thread
 * with EPOLLHUP.  Other threads name connections by id, never by pointer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "minichat/buf.h"
#include "minichat/frame.h"
#include "minichat/log.h"
#include "minichat/relay_queue.h"
#include "relay.h"

#define LINK_MAX_CONNS 1024
#define LINK_READ_MIN 65536
#define LINK_PEER_GROUPS 64 /* supplementary groups read on the stack; more are malloc'ed */

enum { LINK_LISTEN = 1, LINK_CONN = 2 };

typedef struct {
    int kind;
    int fd;
    uint64_t id;
    int hello;
    char node[64];
    unsigned pid;
    /* input: main thread only */
    uint8_t *in;
    size_t in_len, in_cap;
    /* output and state below: under link_lock */
    int dead;
    int want_out;
    mc_buf_t out;   /* out.data[out_off..out.len) waits for the socket */
    size_t out_off;
    mc_mslots_t sent; /* member lists this worker holds from us (under link_lock) */
    mc_mslots_t recv; /* member lists it sent us (main thread) */
    link_users_t users; /* the users it holds connections of (under link_lock) */
} link_conn_t;

typedef struct {
    int kind;
    int fd;
} link_listener_t;

static pthread_mutex_t link_lock = PTHREAD_MUTEX_INITIALIZER;
static link_conn_t *link_conns[LINK_MAX_CONNS];
static size_t link_nconns;
static uint64_t link_next_id = 1;
static uint64_t link_dropped; /* connections dropped for not reading */
static uint64_t link_refused; /* connections refused by their credentials */
static uint64_t link_skipped; /* messages not written to a worker that holds none of their recipients */
static link_listener_t link_listener = {LINK_LISTEN, -1};
static char link_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static link_handler_t link_handler;
static mc_buf_t link_scratch; /* one connection's deliver frames (under link_lock) */
static __thread int link_corked; /* this thread queues its writes until as many link_uncork() */

static void conn_close(link_conn_t *c);

uint8_t *relay_pack_frame(const Minichat__LocalFrame *f, size_t *len)
{
    size_t n = minichat__local_frame__get_packed_size(f);
    uint8_t *buf = malloc(MC_FRAME_HDR + n);

    if (buf == NULL) {
        return NULL;
    }
    mc_frame_put_header(buf, (uint32_t)n);
    minichat__local_frame__pack(f, buf + MC_FRAME_HDR);
    *len = MC_FRAME_HDR + n;
    return buf;
}

/* Gives up on a connection from any thread (lock held): the main thread closes it. */
static void conn_kill_locked(link_conn_t *c)
{
    if (!c->dead) {
        c->dead = 1;
        shutdown(c->fd, SHUT_RDWR);
    }
}

/* Arms or disarms EPOLLOUT to match the output buffer (lock held). */
static void conn_arm_locked(link_conn_t *c)
{
    struct epoll_event ev;
    int want = c->out.len > c->out_off;

    if (want == c->want_out || c->dead) {
        return;
    }
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(relay_epoll_fd(), EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        mc_error("link: epoll_ctl(%d): %s", c->fd, strerror(errno));
        conn_kill_locked(c);
        return;
    }
    c->want_out = want;
}

/* Sends as much of the output buffer as the socket takes (lock held).
 * Returns 0, or -1 when the connection is broken. */
static int conn_flush_locked(link_conn_t *c)
{
    ssize_t n;

    while (c->out.len > c->out_off) {
        n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            mc_warn("link: send to worker %s/%u: %s", c->node, c->pid, strerror(errno));
            conn_kill_locked(c);
            return -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out.len) {
        c->out_off = 0;
        if (c->out.cap > 4 * LINK_READ_MIN) {
            mc_buf_free(&c->out); /* give a backlog's memory back */
        } else {
            mc_buf_reset(&c->out);
        }
    }
    conn_arm_locked(c);
    return 0;
}

/* Queues frames for one connection and tries to send them (lock held). */
static void conn_write_locked(link_conn_t *c, const uint8_t *p, size_t n)
{
    size_t pending;
    ssize_t w;

    if (c->dead || n == 0) {
        return;
    }
    if (c->out.len == c->out_off && !link_corked) {
        w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            mc_warn("link: send to worker %s/%u: %s", c->node, c->pid, strerror(errno));
            conn_kill_locked(c);
            return;
        }
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        }
        if (n == 0) {
            return;
        }
    }
    if (c->out_off > 0 && c->out.len + n >= c->out.cap) {
        mc_buf_consume(&c->out, c->out_off); /* the sent part makes room before the buffer grows */
        c->out_off = 0;
    }
    pending = c->out.len - c->out_off;
    if (pending + n > relay_conf.local_outbuf_max || mc_buf_append(&c->out, p, n) != 0) {
        mc_error("link: worker %s/%u is not reading (%zu bytes queued, limit %zu), dropping it", c->node, c->pid,
                 pending + n, relay_conf.local_outbuf_max);
        link_dropped++;
        conn_kill_locked(c);
        return;
    }
    if (!link_corked) {
        conn_arm_locked(c); /* corked: link_uncork() sends it, or arms */
    }
}

void link_cork(void)
{
    link_corked++;
}

void link_uncork(void)
{
    size_t i;

    if (link_corked == 0 || --link_corked > 0) {
        return;
    }
    pthread_mutex_lock(&link_lock);
    for (i = 0; i < link_nconns; i++) {
        if (!link_conns[i]->dead && link_conns[i]->out.len > link_conns[i]->out_off && !link_conns[i]->want_out) {
            (void)conn_flush_locked(link_conns[i]); /* a broken one is marked dead; the main thread closes it */
        }
    }
    pthread_mutex_unlock(&link_lock);
}

int link_send(uint64_t conn_id, const uint8_t *frame, size_t len)
{
    size_t i;
    int rc = -1;

    pthread_mutex_lock(&link_lock);
    for (i = 0; i < link_nconns; i++) {
        if (link_conns[i]->id == conn_id && !link_conns[i]->dead) {
            conn_write_locked(link_conns[i], frame, len);
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&link_lock);
    return rc;
}

void link_broadcast(uint64_t except_id, const uint8_t *frames, size_t len)
{
    size_t i;

    if (len == 0) {
        return;
    }
    pthread_mutex_lock(&link_lock);
    for (i = 0; i < link_nconns; i++) {
        if (link_conns[i]->id != except_id && link_conns[i]->hello) {
            conn_write_locked(link_conns[i], frames, len);
        }
    }
    pthread_mutex_unlock(&link_lock);
}

/* Appends msg to link_scratch as c gets it: without its list when c holds
 * it under the message's version, else whole (and c holds it from now on).
 * Returns 0, or -1 when out of memory (lock held). */
static int conn_deliver_frame_locked(link_conn_t *c, const link_msg_t *msg)
{
    static const uint8_t cached[3] = {0x90, 0x01, 0x01}; /* recipients_cached (18) = true */
    uint8_t hdr[MC_FRAME_HDR + MC_PB_LD_HDR_MAX];
    const uint8_t *tail;
    size_t body, tail_len, h;
    int has = mc_mslots_has(&c->sent, msg->room, msg->ver);

    tail = has ? cached : msg->msg + msg->rcpt_off;
    tail_len = has ? sizeof(cached) : msg->len - msg->rcpt_off;
    body = msg->rcpt_off + tail_len;
    /* LocalFrame{deliver = message}: field 4 */
    h = mc_pb_ld_header(hdr + MC_FRAME_HDR, 4, body);
    mc_frame_put_header(hdr, (uint32_t)(h + body));
    if (mc_buf_reserve(&link_scratch, MC_FRAME_HDR + h + body) != 0) {
        return -1;
    }
    (void)mc_buf_append(&link_scratch, hdr, MC_FRAME_HDR + h); /* reserved above */
    (void)mc_buf_append(&link_scratch, msg->msg, msg->rcpt_off);
    (void)mc_buf_append(&link_scratch, tail, tail_len);
    if (!has) {
        mc_mslots_sent(&c->sent, msg->room, msg->ver, msg->n_rcpt);
    }
    return 0;
}

void link_deliver(const link_msg_t *msgs, size_t n)
{
    link_conn_t *c;
    size_t i, j;

    if (n == 0) {
        return;
    }
    pthread_mutex_lock(&link_lock);
    for (i = 0; i < link_nconns; i++) {
        c = link_conns[i];
        if (!c->hello || c->dead) {
            continue;
        }
        mc_buf_reset(&link_scratch);
        for (j = 0; j < n; j++) {
            if (!link_users_wants(&c->users, &msgs[j], c->id)) {
                link_skipped++;
                continue; /* no recipient there: its mirror and its table stay as they are */
            }
            if (conn_deliver_frame_locked(c, &msgs[j]) != 0) {
                /* its mirror no longer matches what it will get: start again */
                mc_error("link: out of memory for worker %s/%u's messages, dropping it", c->node, c->pid);
                conn_kill_locked(c);
                break;
            }
        }
        if (j == n && link_scratch.len > 0) {
            conn_write_locked(c, (const uint8_t *)link_scratch.data, link_scratch.len);
        }
    }
    if (link_scratch.cap > 4 * LINK_READ_MIN) {
        mc_buf_free(&link_scratch);
    }
    pthread_mutex_unlock(&link_lock);
}

void link_stats(uint64_t *conns, uint64_t *dropped, uint64_t *refused, uint64_t *skipped)
{
    pthread_mutex_lock(&link_lock);
    *conns = link_nconns;
    *dropped = link_dropped;
    *refused = link_refused;
    *skipped = link_skipped;
    pthread_mutex_unlock(&link_lock);
}

void link_users_each(void (*fn)(void *ctx, uint64_t link, const link_users_t *u), void *ctx)
{
    size_t i;

    pthread_mutex_lock(&link_lock);
    for (i = 0; i < link_nconns; i++) {
        if (link_conns[i]->hello && !link_conns[i]->dead) {
            fn(ctx, link_conns[i]->id, &link_conns[i]->users);
        }
    }
    pthread_mutex_unlock(&link_lock);
}

void link_users_answer(uint64_t conn_id, uint64_t req_id)
{
    Minichat__LocalFrame ack = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__UserSet none = MINICHAT__USER_SET__INIT;
    uint8_t *buf;
    size_t len;

    ack.req_id = req_id;
    ack.body_case = MINICHAT__LOCAL_FRAME__BODY_USERS;
    ack.users = &none;
    buf = relay_pack_frame(&ack, &len);
    if (buf == NULL) {
        mc_error("link: out of memory answering a worker's users (conn %llu)", (unsigned long long)conn_id);
        return; /* the worker's wait for it ends with its timer */
    }
    (void)link_send(conn_id, buf, len); /* gone: nobody waits */
    free(buf);
}

/* Applies a users frame, tells the peers, and answers one with a req_id
 * once the peers that filter for this node have the change (main thread). */
static void on_users(link_conn_t *c, const Minichat__LocalFrame *f)
{
    uint64_t change;
    int rc;

    pthread_mutex_lock(&link_lock);
    rc = link_users_apply(&c->users, f->users);
    pthread_mutex_unlock(&link_lock);
    if (rc != 0) {
        mc_error("link: out of memory for worker %s/%u's users; it gets every message from now on", c->node,
                 c->pid);
        f->users->all = 1; /* the peers too: what it holds is not known here any more */
    }
    change = peer_users_note(c->id, f->users);
    if (f->req_id == 0) {
        return;
    }
    if (peer_users_hold_answer(c->id, f->req_id, change)) {
        return; /* peer_users_check answers once the peers have it, in order */
    }
    link_users_answer(c->id, f->req_id);
}

/* Handles one frame: the hello and users here, anything else through the
 * handler.  Returns 0, or -1 to close the connection. */
static int on_frame(link_conn_t *c, const uint8_t *p, size_t n)
{
    Minichat__LocalFrame *f = minichat__local_frame__unpack(NULL, n, p);
    link_from_t from;

    if (f == NULL) {
        mc_error("link: malformed frame (%zu bytes) from worker %s/%u, closing", n, c->node, c->pid);
        return -1;
    }
    if (f->body_case != MINICHAT__LOCAL_FRAME__BODY_HELLO) {
        if (!c->hello) {
            mc_error("link: first frame from fd %d is not hello (case %d), closing", c->fd, (int)f->body_case);
            minichat__local_frame__free_unpacked(f, NULL);
            return -1;
        }
        if (f->body_case == MINICHAT__LOCAL_FRAME__BODY_USERS) {
            on_users(c, f);
            minichat__local_frame__free_unpacked(f, NULL);
            return 0;
        }
        from.id = c->id;
        from.node = c->node;
        from.pid = c->pid;
        from.members = &c->recv;
        return link_handler.frame(&from, f);
    }
    if (c->hello) {
        mc_warn("link: worker %s/%u said hello twice, ignored", c->node, c->pid);
    } else {
        snprintf(c->node, sizeof(c->node), "%s", f->hello->node ? f->hello->node : "");
        c->pid = f->hello->pid;
        pthread_mutex_lock(&link_lock);
        c->hello = 1;
        pthread_mutex_unlock(&link_lock);
        /* until its users frame comes, it gets every message: so do the
         * peers send this node every message */
        {
            Minichat__UserSet all = MINICHAT__USER_SET__INIT;

            all.all = 1;
            (void)peer_users_note(c->id, &all);
        }
        mc_info("link: worker %s/%u connected (conn %llu)", c->node, c->pid, (unsigned long long)c->id);
        if (strcmp(c->node, relay_conf.node) != 0) {
            mc_warn("link: worker says node \"%s\", this relay is \"%s\"", c->node, relay_conf.node);
        }
    }
    minichat__local_frame__free_unpacked(f, NULL);
    return 0;
}

/* Reads once and handles every whole frame.  Returns 0, or -1 to close. */
static int conn_read(link_conn_t *c)
{
    size_t off = 0, plen, ncap;
    uint8_t *nb;
    ssize_t n;
    int rc;

    if (c->in_cap - c->in_len < LINK_READ_MIN) {
        ncap = c->in_cap ? c->in_cap * 2 : LINK_READ_MIN * 2;
        while (ncap - c->in_len < LINK_READ_MIN) {
            ncap *= 2;
        }
        nb = realloc(c->in, ncap);
        if (nb == NULL) {
            mc_error("link: out of memory");
            return -1;
        }
        c->in = nb;
        c->in_cap = ncap;
    }
    n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0) {
        return -1;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            return 0;
        }
        mc_warn("link: read from worker %s/%u: %s", c->node, c->pid, strerror(errno));
        return -1;
    }
    c->in_len += (size_t)n;

    for (;;) {
        rc = mc_frame_parse(c->in + off, c->in_len - off, MC_FRAME_MAX, &plen);
        if (rc == MC_FRAME_AGAIN) {
            rc = 0;
            break;
        }
        if (rc == MC_FRAME_TOO_LARGE) {
            mc_error("link: oversize frame from worker %s/%u (limit %u), closing", c->node, c->pid, MC_FRAME_MAX);
            rc = -1;
            break;
        }
        if (on_frame(c, c->in + off + MC_FRAME_HDR, plen) != 0) {
            rc = -1;
            break;
        }
        off += MC_FRAME_HDR + plen;
    }
    /* what was accepted before an error still goes out */
    link_handler.read_done();
    if (rc != 0) {
        return -1;
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (c->in_cap > 4 * LINK_READ_MIN && c->in_len < LINK_READ_MIN) {
        nb = realloc(c->in, 2 * LINK_READ_MIN); /* give a big frame's memory back */
        if (nb != NULL) {
            c->in = nb;
            c->in_cap = 2 * LINK_READ_MIN;
        }
    }
    return 0;
}

/* Reads the peer's supplementary groups into *groups (buf when they fit,
 * else a malloc'ed array the caller frees).  Returns the count, or -1 with
 * errno set. */
static int peer_groups(int fd, gid_t *buf, gid_t **groups)
{
    socklen_t len = LINK_PEER_GROUPS * sizeof(gid_t);
    gid_t *big;

    *groups = buf;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, buf, &len) == 0) {
        return (int)(len / sizeof(gid_t));
    }
    if (errno != ERANGE || len == 0 || len > 65536 * sizeof(gid_t)) {
        return -1;
    }
    big = malloc(len); /* len is the size the kernel asked for */
    if (big == NULL || getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, big, &len) != 0) {
        free(big);
        return -1;
    }
    *groups = big;
    return (int)(len / sizeof(gid_t));
}

/* Returns 1 when the peer on fd may speak to us, else 0 (logged). */
static int peer_allowed(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    gid_t buf[LINK_PEER_GROUPS], *groups = buf;
    int ngroups = 0, ok;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        mc_warn("link: refused a connection: SO_PEERCRED: %s", strerror(errno));
        return 0;
    }
    if (cred.uid == 0 || cred.uid == geteuid()) {
        return 1;
    }
    if (relay_conf.allowed_peers.ngids > 0) {
        ngroups = peer_groups(fd, buf, &groups);
        if (ngroups < 0) {
            mc_warn("link: SO_PEERGROUPS of pid %d: %s; checking its primary group only", (int)cred.pid,
                    strerror(errno));
            ngroups = 0;
        }
    }
    ok = mc_sock_peers_allow(&relay_conf.allowed_peers, cred.uid, cred.gid, groups, (size_t)ngroups);
    if (groups != buf) {
        free(groups);
    }
    if (!ok) {
        mc_warn("link: refused a connection from pid %d uid %u gid %u: not in allowed_peers", (int)cred.pid,
                (unsigned)cred.uid, (unsigned)cred.gid);
    }
    return ok;
}

/* Accepts every pending connection. */
static void on_accept(void)
{
    struct epoll_event ev;
    link_conn_t *c;
    int fd;

    for (;;) {
        fd = accept4(link_listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                mc_error("link: accept: %s", strerror(errno));
            }
            return;
        }
        if (!peer_allowed(fd)) {
            pthread_mutex_lock(&link_lock);
            link_refused++;
            pthread_mutex_unlock(&link_lock);
            close(fd);
            continue;
        }
        c = calloc(1, sizeof(*c));
        if (c == NULL || link_nconns == LINK_MAX_CONNS) {
            mc_error("link: %s, refusing a worker", c ? "too many connections" : "out of memory");
            free(c);
            close(fd);
            continue;
        }
        c->kind = LINK_CONN;
        c->fd = fd;
        c->id = link_next_id++;
        strcpy(c->node, "?");
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(relay_epoll_fd(), EPOLL_CTL_ADD, fd, &ev) != 0) {
            mc_error("link: epoll_ctl: %s", strerror(errno));
            free(c);
            close(fd);
            continue;
        }
        pthread_mutex_lock(&link_lock);
        link_conns[link_nconns++] = c;
        pthread_mutex_unlock(&link_lock);
        mc_debug("link: accepted fd %d (conn %llu)", fd, (unsigned long long)c->id);
    }
}

/* Removes a connection from the table and frees it (main thread). */
static void conn_close(link_conn_t *c)
{
    size_t i;

    pthread_mutex_lock(&link_lock);
    if (!c->dead && c->out.len > c->out_off) {
        /* what the round answered before giving up on the worker (corked
         * writes: an error frame, say) still goes, as far as it fits */
        (void)conn_flush_locked(c);
    }
    for (i = 0; i < link_nconns; i++) {
        if (link_conns[i] == c) {
            link_conns[i] = link_conns[--link_nconns];
            break;
        }
    }
    pthread_mutex_unlock(&link_lock);
    epoll_ctl(relay_epoll_fd(), EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->hello) {
        mc_info("link: worker %s/%u disconnected (conn %llu)", c->node, c->pid, (unsigned long long)c->id);
    }
    free(c->in);
    mc_buf_free(&c->out);
    mc_mslots_clear(&c->recv);
    link_users_free(&c->users);
    if (c->hello) {
        peer_users_gone(c->id);
    }
    free(c);
}

void link_on_event(void *ptr, uint32_t events)
{
    link_conn_t *c = ptr;
    int dead;

    if (c->kind == LINK_LISTEN) {
        on_accept();
        return;
    }
    pthread_mutex_lock(&link_lock);
    dead = c->dead;
    if (!dead && (events & EPOLLOUT)) {
        dead = conn_flush_locked(c) != 0;
    }
    pthread_mutex_unlock(&link_lock);
    if (!dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        dead = conn_read(c) != 0;
    }
    if (dead) {
        conn_close(c);
    }
}

/* Returns 1 when something accepts connections on the socket path. */
static int link_in_use(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;

    if (fd < 0) {
        return 0;
    }
    rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
    close(fd);
    return rc;
}

int link_listen(const char *path, const link_handler_t *handler)
{
    struct sockaddr_un sa;
    struct epoll_event ev;
    mode_t umask_was;
    int fd, rc;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        mc_error("unix_socket \"%s\" is too long", path);
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        mc_error("socket: %s", strerror(errno));
        return -1;
    }
    if (link_in_use(&sa)) {
        mc_error("\"%s\" is served by a running process, not taking it over", path);
        goto err;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        mc_error("unlink \"%s\": %s", path, strerror(errno));
        goto err;
    }
    /* created 0600, so that no one connects before the mode and group are set */
    umask_was = umask(0177);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(umask_was);
    if (rc != 0) {
        mc_error("bind \"%s\": %s", path, strerror(errno));
        goto err;
    }
    if (relay_conf.unix_socket_chgrp && chown(path, (uid_t)-1, relay_conf.unix_socket_group) != 0) {
        mc_error("unix_socket_group: chown \"%s\" to gid %u: %s", path, (unsigned)relay_conf.unix_socket_group,
                 strerror(errno));
        goto err;
    }
    if (chmod(path, relay_conf.unix_socket_mode) != 0) {
        mc_error("chmod \"%s\" %04o: %s", path, (unsigned)relay_conf.unix_socket_mode, strerror(errno));
        goto err;
    }
    if (listen(fd, 128) != 0) {
        mc_error("listen \"%s\": %s", path, strerror(errno));
        goto err;
    }
    link_listener.fd = fd;
    ev.events = EPOLLIN;
    ev.data.ptr = &link_listener;
    if (epoll_ctl(relay_epoll_fd(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        mc_error("epoll_ctl: %s", strerror(errno));
        goto err;
    }
    strcpy(link_path, path);
    link_handler = *handler;
    return 0;
err:
    link_listener.fd = -1;
    close(fd);
    return -1;
}

void link_stop_accepting(void)
{
    if (link_listener.fd >= 0) {
        epoll_ctl(relay_epoll_fd(), EPOLL_CTL_DEL, link_listener.fd, NULL);
        close(link_listener.fd);
        link_listener.fd = -1;
        unlink(link_path);
    }
}

int link_listening(void)
{
    return link_listener.fd >= 0;
}

void link_close_all(void)
{
    size_t i;

    link_stop_accepting();
    while (link_nconns) {
        pthread_mutex_lock(&link_lock);
        (void)conn_flush_locked(link_conns[0]); /* best effort: the last results */
        pthread_mutex_unlock(&link_lock);
        conn_close(link_conns[0]);
    }
    for (i = 0; i < LINK_MAX_CONNS; i++) {
        link_conns[i] = NULL;
    }
    mc_buf_free(&link_scratch);
}
