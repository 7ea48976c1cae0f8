/*
 * A blocking Redis connection for the services' threads and tools: TCP, a
 * unix socket, or TLS over TCP (OpenSSL).  hiredis 0.14's synchronous
 * client reads and writes its fd itself and has no TLS, so this one owns
 * the socket: commands are formatted with resp.h into an output buffer and
 * written when a reply is asked for (so appends pipeline), replies are
 * parsed with hiredis's redisReader into the usual redisReply objects
 * (freeReplyObject() frees them).  Every connect, handshake, write and
 * read waits at most the timeout given at open.  After any failure the
 * connection is unusable: close it and open another.  Links hiredis and
 * OpenSSL.
 */
#ifndef MINICHAT_REDIS_CONN_H
#define MINICHAT_REDIS_CONN_H

#include <stddef.h>

#include <hiredis/hiredis.h>

/* TLS settings; all-zero is plain TCP.  Strings may be NULL or "". */
typedef struct {
    int on;
    int verify;            /* check the server's certificate against ca_file (and name) */
    const char *ca_file;
    const char *cert_file; /* a client certificate, with key_file */
    const char *key_file;
    const char *name;      /* SNI and, with verify, the name the certificate must carry */
} mc_redis_tls_t;

typedef struct mc_redis_conn_s mc_redis_conn_t;

/* Returns 0 when tls is usable (verify needs a CA file; a certificate and
 * its key go together), -1 with the reason in err. */
int mc_redis_tls_check(const mc_redis_tls_t *tls, char *err, size_t errlen);

/* Connects to host:port (path NULL) or to the unix socket path (tls
 * ignored); tls NULL is plain TCP.  Returns the connection, or NULL with
 * the reason in err. */
mc_redis_conn_t *mc_redis_conn_open(const char *host, int port, const char *path, const mc_redis_tls_t *tls,
                                    int timeout_ms, char *err, size_t errlen);
/* Queues a command.  Returns 0, or -1 (out of memory, connection failed). */
int mc_redis_conn_append(mc_redis_conn_t *c, int argc, const char *const *argv, const size_t *argvlen);
/* Writes what is queued and reads the next reply into *reply.  Returns 0,
 * or -1 with the reason in mc_redis_conn_error(). */
int mc_redis_conn_reply(mc_redis_conn_t *c, redisReply **reply);
/* Append and reply in one.  Returns the reply or NULL (see
 * mc_redis_conn_error()). */
redisReply *mc_redis_conn_command(mc_redis_conn_t *c, int argc, const char *const *argv, const size_t *argvlen);
/* The reason of the last failure ("" before any). */
const char *mc_redis_conn_error(const mc_redis_conn_t *c);
/* "host:port" or the socket's path, "(TLS)" appended when it is. */
const char *mc_redis_conn_peer(const mc_redis_conn_t *c);
void mc_redis_conn_close(mc_redis_conn_t *c);

#endif
