/*
 * floor: the raw broadcaster that `make bench` measures MiniChat against
 * (issue 9).  One process, one epoll loop, no Redis, no relay, no
 * persistence: what a broadcaster costs at the least, so that MiniChat's
 * numbers have a floor beside them.
 *
 * It speaks just enough of MiniChat's protocol v1 (docs/protocol.md) for
 * bench/loadgen's `--proto minichat` deliver mode: `POST /api/rooms` (the
 * floor answers with a room id), the upgrade `GET /ws` with an HS256 token
 * (Authorization: Bearer or ?token=), `hello`, `send` -> `ack`, and `msg`
 * to every other connection of every member.  A send is encoded ONCE into
 * a prebuilt frame which is copied into each recipient's output buffer;
 * at the end of each turn of the event loop every connection with output
 * gets one write.  Nothing is stored: a room's seq lives in memory.
 *
 * Files: floor.c (the loop: listen, accept, read, the end-of-turn writes,
 * closes), http.c (an HTTP request: the upgrade and the REST call),
 * chat.c (users, rooms and the send -> ack -> fan-out), all sharing
 * floor_t.  The WebSocket codec, the token check, the request decoder and
 * the buffers are lib's (lib/include/minichat/).
 *
 * Bounds, so that bad or excess input costs an error and never memory
 * without end: FLOOR_MAX_REQUEST bytes of HTTP request, FLOOR_MAX_MESSAGE
 * bytes of WebSocket message, FLOOR_MAX_OUT bytes waiting per connection
 * (a client that reads slower is dropped), --max-conns connections,
 * FLOOR_MAX_USERS users and FLOOR_MAX_ROOMS rooms.
 */
#ifndef FLOOR_H
#define FLOOR_H

#include <stddef.h>
#include <stdint.h>

#include "minichat/buf.h"
#include "minichat/jwt.h"

#define FLOOR_MAX_REQUEST (64 * 1024)   /* headers and body of one HTTP request */
#define FLOOR_MAX_MESSAGE (64 * 1024)   /* one WebSocket message */
#define FLOOR_MAX_OUT (4 * 1024 * 1024) /* bytes queued for one connection */
#define FLOOR_MAX_USERS (1 << 21)
#define FLOOR_MAX_ROOMS (1 << 20)
#define FLOOR_MAX_MEMBERS 1000          /* as MiniChat's POST /api/rooms */
#define FLOOR_HTTP_TIMEOUT_MS 10000     /* a request must be whole by then */
#define FLOOR_LINGER_MS 2000            /* the peer's EOF is awaited that long */

typedef struct floor_user_s floor_user_t;
typedef struct floor_conn_s floor_conn_t;

/* HTTP -> WS; either -> CLOSING (a last answer or close frame queued) ->
 * LINGER (written, our side shut down, reading until the peer's EOF so
 * that unread input cannot turn into a reset that destroys the answer) ->
 * DEAD (closed, freed at the end of the turn) */
enum { FC_HTTP, FC_WS, FC_CLOSING, FC_LINGER, FC_DEAD };

struct floor_conn_s {
    int fd;
    uint8_t state;
    uint8_t dirty;          /* on the end-of-turn write list */
    uint8_t polling_out;    /* EPOLLOUT armed: the kernel took less than all */
    int64_t since_ms;       /* accepted, or lingering, since (the timeouts) */
    floor_user_t *user;     /* set at the upgrade */
    floor_conn_t *user_prev, *user_next; /* the user's connections */
    floor_conn_t *prev, *next;           /* every connection */
    floor_conn_t *next_dirty;            /* the write list, or the dead list */
    mc_buf_t in;
    mc_buf_t out;
};

struct floor_user_s {
    uint64_t id;
    uint64_t mark;          /* floor_t.mark of the last room it joined (drops duplicates) */
    floor_conn_t *conns;    /* open WebSocket connections */
};

typedef struct {
    uint64_t id;
    uint64_t seq;
    uint64_t owner;
    size_t n;
    floor_user_t *members[]; /* the owner included */
} floor_room_t;

typedef struct {
    uint64_t accepted, upgrades, refused, rooms, sends, deliveries, writes, slow_closed, bad_input;
} floor_stats_t;

typedef struct {
    int ep;
    int lfd;
    int max_conns;
    int nconns;
    const char *node;
    mc_jwt_key_t *key;
    floor_conn_t *all;      /* every connection */
    floor_conn_t *dirty;    /* written at the end of this turn */
    floor_conn_t *dead;     /* freed at the end of this turn */
    /* users: open addressing on the id, never shrinks */
    floor_user_t **users;
    size_t users_cap, nusers;
    /* rooms: id - 1 indexes the array */
    floor_room_t **rooms;
    size_t rooms_cap, nrooms;
    uint64_t mark;          /* one per room made: floor_user_t.mark */
    mc_buf_t frame;         /* a frame being built */
    floor_stats_t st;
} floor_t;

/* floor.c */
/* Appends n bytes to c's output for the end of this turn.  Returns 0, or
 * -1 when c is past FLOOR_MAX_OUT or out of memory (c is then closed). */
int floor_queue(floor_t *fl, floor_conn_t *c, const void *p, size_t n);
/* Appends one unmasked frame.  Returns 0 or -1 (as floor_queue). */
int floor_queue_frame(floor_t *fl, floor_conn_t *c, unsigned opcode, const void *p, size_t n);
/* Closes c once its output is written (FC_CLOSING). */
void floor_close_after_write(floor_t *fl, floor_conn_t *c);
/* Closes c now; its memory goes at the end of the turn. */
void floor_close(floor_t *fl, floor_conn_t *c);

/* http.c */
/* Handles c's buffered bytes while it speaks HTTP.  Returns 0 (wait for
 * more, or answered), or -1 (c was closed). */
int floor_http(floor_t *fl, floor_conn_t *c);

/* chat.c */
/* The user with this id, made when absent.  NULL past FLOOR_MAX_USERS or
 * out of memory. */
floor_user_t *floor_user(floor_t *fl, uint64_t id);
/* Makes a room of owner and members[0..n) (duplicates dropped).  Returns
 * 0 with *id, or -1 with err. */
int floor_room_create(floor_t *fl, uint64_t owner, const uint64_t *members, size_t n, uint64_t *id, char *err,
                      size_t err_size);
/* c joined or left its user's open connections. */
void floor_user_attach(floor_conn_t *c, floor_user_t *u);
void floor_user_detach(floor_conn_t *c);
/* One whole text message from c.  Returns 0, or -1 when c was closed. */
int floor_chat_text(floor_t *fl, floor_conn_t *c, const char *p, size_t n);
/* Frees the users and rooms. */
void floor_chat_free(floor_t *fl);

#endif
