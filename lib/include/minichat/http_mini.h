/*
 * A tiny HTTP/1.1 server for the services' operator endpoints: GET
 * /metrics (Prometheus text), /status (JSON) and /ready (200 "ready", or 503
 * with a JSON reason).  Anything else is answered 404, a method other than
 * GET 405, a malformed request 400, a request head past MC_HTTP_HEAD_MAX
 * bytes 431, a request with a body 413; every answer carries
 * "Connection: close" and the connection is closed once it has left.
 *
 * It never blocks its caller: the listener and the clients are
 * non-blocking and sit in the server's own epoll set, whose descriptor
 * (mc_http_fd) the caller watches in its loop, or a thread of its own waits
 * on with mc_http_run(s, timeout).  At most MC_HTTP_CLIENTS clients at once:
 * the next ones wait in the kernel's listen backlog until one is done.  A
 * client that has not sent a whole request within MC_HTTP_IDLE_MS, or not
 * taken its answer by then, is closed (so silent clients cannot hold the
 * slots for long).  The handler callbacks run on the thread that calls
 * mc_http_run; each builds its answer into a buffer it is given (empty on
 * entry).
 */
#ifndef MINICHAT_HTTP_MINI_H
#define MINICHAT_HTTP_MINI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "minichat/buf.h"
#include "minichat/conf.h"

#define MC_HTTP_HEAD_MAX 4096   /* request line and headers */
#define MC_HTTP_CLIENTS 16
#define MC_HTTP_IDLE_MS 5000

typedef struct {
    /* Each returns 0, or -1 on failure (answered 500). */
    int (*metrics)(mc_buf_t *out);
    int (*status)(mc_buf_t *out);
    /* Returns 1 when ready (the body is "ready"), 0 when not, with a short
     * JSON object saying why in out, or -1 on failure. */
    int (*ready)(mc_buf_t *out);
} mc_http_handler_t;

typedef struct {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64];          /* as configured, for log lines */
} mc_http_addr_t;

/* Parses a numeric listen address: "IPv4:port" or "[IPv6]:port", port
 * 1..65535.  Returns 0, or -1 with the reason in err. */
int mc_http_addr_parse(const char *s, mc_http_addr_t *out, char *err, size_t err_size);

/* Reads the config key naming the listen address (absent or "off": none).
 * Returns 1 when set (out filled), 0 when absent or off, -1 when bad (an
 * error is recorded in c against the key). */
int mc_http_conf_listen(mc_conf_t *c, const char *key, mc_http_addr_t *out);

/* A parsed request head. */
typedef struct {
    int get;                /* the method is GET */
    const char *path;       /* the target's path, without the query; not NUL-terminated */
    size_t path_len;
} mc_http_req_t;

/* Parses the request head at buf[0..len).  Returns 0 when it is whole
 * (req filled), 1 when more bytes are needed, or the HTTP status to answer
 * a bad one with (400, 413, 431, 505). */
int mc_http_parse(const char *buf, size_t len, mc_http_req_t *req);

/* Builds the whole response (status line, headers, body) to a request, or
 * to a parse error when status is not 0, into out.  Returns the status. */
int mc_http_respond(const mc_http_handler_t *h, const mc_http_req_t *req, int status, mc_buf_t *out);

typedef struct mc_http_s mc_http_t;

/* Listens on addr (SO_REUSEADDR).  Returns the server, or NULL with the
 * reason in err. */
mc_http_t *mc_http_start(const mc_http_addr_t *addr, const mc_http_handler_t *h, char *err, size_t err_size);
/* The server's epoll descriptor: readable when mc_http_run has work. */
int mc_http_fd(const mc_http_t *s);
/* Waits up to timeout_ms (0: not at all) for events, handles them, and
 * closes clients past MC_HTTP_IDLE_MS. */
void mc_http_run(mc_http_t *s, int timeout_ms);
/* Closes the listener and every client and frees s (NULL is fine). */
void mc_http_stop(mc_http_t *s);

#endif
