/*
 * loadgen: a WebSocket load generator for MiniChat (issues 7 and 9).
 *
 * One parent forks P runner processes; each runner owns a slice of the
 * connections (fewer than the 20,000 open files a process may have here)
 * and drives them from one epoll loop, non-blocking, spreading them over
 * loopback source addresses (127.0.0.2, 127.0.0.3, ...: each gives about
 * 28k ephemeral ports towards one destination).  The parent only watches:
 * runners publish their counters in a shared anonymous mapping
 * (lg_shared_t), the parent prints progress from it, moves every runner
 * through the same phases (connect, hold, send, stop) with two flags in the
 * same mapping, and adds the counters up at the end.
 *
 * What is spoken on a connection after the WebSocket upgrade belongs to a
 * protocol (lg_proto_t): how a user authenticates, how a room is made, what
 * a sent message looks like and what a frame from the server means.  The
 * runner knows only the events a protocol reports (ready, msg, ack,
 * ping, error), so each protocol is one table: MiniChat's v1
 * (proto_minichat.c) and Centrifugo's JSON protocol (proto_centrifugo.c,
 * issue 9, to compare the two on the same load).  `--proto` picks one.
 *
 * Modes:
 *   idle     open N connections, hold them (answering pings), report.
 *   deliver  N members in rooms of S (each room also has a sender, the
 *            room's owner); after the hold each sender sends K messages at
 *            a rate; every member checks that it got every message of its
 *            room once and in order; the body carries the send time
 *            (CLOCK_MONOTONIC, the same clock in every process of the
 *            host) for send->receive latency.  The senders may connect
 *            to another server than the members (--sender-host,
 *            --sender-port): another node of the same system, so that
 *            every message crosses from one node to the other.
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "minichat/buf.h"

/* below the 20,000 files a process may open here: room for the epoll fd,
 * a REST socket, stdio */
#define LG_MAX_CONNS_PER_PROC 19000
#define LG_MAX_ROOM_SIZE 1000
#define LG_MAX_PROCS 64
#define LG_MAX_SRC_ADDRS 250

typedef enum { LG_MODE_IDLE, LG_MODE_DELIVER } lg_mode_t;

typedef struct lg_proto_s lg_proto_t;

typedef struct {
    lg_mode_t mode;
    const lg_proto_t *proto;
    struct in_addr dst;     /* the members' server (and the REST calls') */
    uint16_t port;
    struct in_addr sender_dst; /* the senders' server: the members' unless --sender-host/--sender-port */
    uint16_t sender_port;
    const char *path;       /* the WebSocket path (the protocol's own by default) */
    int conns;              /* idle: connections; deliver: receiving members */
    int procs;
    int src_addrs;          /* 127.0.0.2 .. 127.0.0.(1 + src_addrs) */
    double connect_rate;    /* new connections per second over all processes; 0: no pacing */
    int inflight;           /* handshakes in flight per process */
    double handshake_timeout;
    int retries;            /* per connection, after 429/503/timeouts */
    double connect_timeout; /* the whole connect phase */
    double hold;            /* seconds every connection stays idle after the last one opened */
    int min_pings;          /* each connection must have answered this many pings */
    int room_size;          /* deliver: receiving members per room */
    int messages;           /* deliver: messages per room */
    double msg_rate;        /* deliver: messages per second per room */
    double wait;            /* deliver: seconds after the last send for the last delivery */
    uint64_t user_base;     /* user ids base+0 ... */
    uint8_t secret[1024];
    size_t secret_len;
    const char *ready_file; /* written once every connection is open (or at the connect timeout) */
    double progress;        /* seconds between progress lines */
} lg_config_t;

/* Latency histogram: exact below 64 us, then 64 buckets per power of two
 * (under 1.6% error) up to 2^40 us. */
#define LG_HIST_SUB 64
#define LG_HIST_BUCKETS ((40 - 5) * LG_HIST_SUB)

typedef struct {
    uint64_t count[LG_HIST_BUCKETS];
    uint64_t n;
    uint64_t max;
} lg_hist_t;

void lg_hist_add(lg_hist_t *h, uint64_t us);
void lg_hist_merge(lg_hist_t *into, const lg_hist_t *from);
/* Returns the value (upper edge of its bucket) under which a fraction q of
 * the samples lie; 0 when there are none. */
uint64_t lg_hist_quantile(const lg_hist_t *h, double q);

/* A runner's phases, published in lg_stats_t.phase. */
enum { LG_PH_SETUP, LG_PH_CONNECTING, LG_PH_CONNECTED, LG_PH_SENDING, LG_PH_DONE, LG_PH_FAILED };

/* One runner's counters, written by it alone, read by the parent. */
typedef struct {
    int phase;
    uint64_t target;       /* connections of this runner */
    uint64_t open;         /* open now (ready: hello received) */
    uint64_t opened;       /* ever opened */
    uint64_t failed;       /* given up after retries */
    uint64_t closed;       /* open connections the server (or the network) closed */
    uint64_t retries;      /* 429, 503, timeouts, refused connects */
    uint64_t pings;        /* pings answered */
    uint64_t min_pings;    /* fewest pings answered by an open connection (at the end) */
    uint64_t rooms;        /* rooms made */
    uint64_t sent, acked, expected, received, out_of_order, errors;
    uint64_t late;         /* sends that left over 1 ms after their schedule */
    uint64_t pss_kb;       /* this runner's own memory, once connected */
    int64_t first_send_us; /* the first send, the last delivery (CLOCK_MONOTONIC; 0: none) */
    int64_t last_rx_us;
    lg_hist_t latency;
    lg_hist_t ack_latency; /* a sender's send -> its ack */
} lg_stats_t;

typedef struct {
    int go_send;           /* parent -> runners: the hold is over, send */
    int stop;              /* parent -> runners: close everything and exit */
    lg_stats_t st[LG_MAX_PROCS];
} lg_shared_t;

/* What a protocol makes of one text message from the server. */
enum { LG_EV_OTHER, LG_EV_READY, LG_EV_MSG, LG_EV_ACK, LG_EV_ERROR, LG_EV_PING };

typedef struct {
    int type;
    uint64_t room;
    uint64_t seq;
    uint64_t k;         /* the loadgen's message index in its room (LG_EV_MSG of ours) */
    int64_t sent_us;    /* its send time, CLOCK_MONOTONIC */
    int ours;           /* 1 when the body is one the loadgen wrote */
} lg_event_t;

struct lg_proto_s {
    const char *name;
    /* The WebSocket path when --path is not given. */
    const char *path;
    /* The Sec-WebSocket-Protocol to offer, or NULL. */
    const char *subprotocol;
    /* 1 when the server may put several messages into one text frame, one
     * per line (Centrifugo merges queued pushes so). */
    int lines;
    /* The text payload that answers an LG_EV_PING (an application-level
     * ping), or NULL when the protocol has none. */
    const char *pong;
    /* Appends the upgrade request's authentication header lines (each
     * ending in CRLF) for user, or NULL.  Returns 0 or -1. */
    int (*auth_headers)(const lg_config_t *cfg, uint64_t user, mc_buf_t *out);
    /* Appends the payload of the first text message after the upgrade
     * (commands: connect, subscribe to room when room is not 0), or NULL
     * when the protocol needs none.  Returns -1, or how many LG_EV_READY
     * events (replies) make the connection open. */
    int (*on_open)(const lg_config_t *cfg, uint64_t user, uint64_t room, mc_buf_t *out);
    /* Makes a room owned by owner with members (blocking, before the
     * connections open).  Returns 0 and the room's id (not 0), or -1 with
     * err. */
    int (*make_room)(const lg_config_t *cfg, uint64_t owner, const uint64_t *members, size_t n, uint64_t *room,
                     char *err, size_t err_size);
    /* Parses one text message from the server.  Returns 0, or -1 when it
     * is not something the protocol sends. */
    int (*parse)(const char *p, size_t n, lg_event_t *ev);
    /* Appends the text payload that sends message k (request id id) into
     * room, stamped with sent_us.  Returns 0 or -1. */
    int (*encode_send)(uint64_t room, uint64_t user, uint64_t k, uint64_t id, int64_t sent_us, mc_buf_t *out);
};

extern const lg_proto_t lg_proto_minichat;
extern const lg_proto_t lg_proto_centrifugo;

/* Reading frames by their fields (scan.c). */
#define LG_BODY_TAG "lg "
/* Finds key (with its quotes and colon) in p[0..n); returns the byte after
 * it or NULL. */
const char *lg_field(const char *p, size_t n, const char *key);
/* Reads an unsigned decimal at q (inside p[0..n); q may be NULL).
 * Returns 0 or -1. */
int lg_number(const char *p, size_t n, const char *q, uint64_t *v);
/* Appends the body of message k sent at sent_us.  Returns 0 or -1. */
int lg_body_append(mc_buf_t *out, uint64_t k, int64_t sent_us);
/* Fills ev->k, ev->sent_us and ev->ours when p[0..n) has a "body" the
 * load generator wrote; leaves ev alone otherwise. */
void lg_body_read(const char *p, size_t n, lg_event_t *ev);

/* Runs runner `idx` of cfg->procs until the parent says stop.  Returns the
 * process exit status. */
int lg_runner_run(const lg_config_t *cfg, lg_shared_t *sh, int idx);

/* The receiving members, senders and rooms of a deliver run; in idle mode
 * rooms is 0 and every connection is a member. */
int lg_rooms(const lg_config_t *cfg);
int lg_total_conns(const lg_config_t *cfg);

/* The user of receiving member g (0 <= g < conns) and the owner (sender)
 * of room r. */
uint64_t lg_member_user(const lg_config_t *cfg, int g);
uint64_t lg_owner_user(const lg_config_t *cfg, int r);

/* Signs a token for user into out.  Returns its length or -1. */
int lg_token(const lg_config_t *cfg, uint64_t user, char *out, size_t size);

/* A blocking HTTP/1.1 request on a connection of its own (Connection:
 * close), with a 10 s timeout on each step.  Returns the status (and the
 * body in *body, reset first), or -1 with err. */
int lg_http_request(const lg_config_t *cfg, const char *method, const char *target, const char *headers,
                    const char *body, size_t body_len, mc_buf_t *resp_body, char *err, size_t err_size);

#endif
