/*
 * The blocking Redis connection (see redis_conn.h).
 *
 * The connect is non-blocking with poll() so that it too waits at most the
 * timeout; the socket is then made blocking with SO_RCVTIMEO/SO_SNDTIMEO,
 * which OpenSSL's socket BIO inherits, so the handshake and every read and
 * write of either transport time out alike.  A TLS handshake with verify on
 * fails on a certificate the CA did not sign or whose names do not include
 * `name` (SSL_set1_host); the error says which, in OpenSSL's words.  Writes
 * use MSG_NOSIGNAL on plain sockets; the threads that use this block
 * SIGPIPE for TLS ones.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "minichat/buf.h"
#include "minichat/redis_conn.h"
#include "minichat/resp.h"

#define CONN_READ 16384

struct mc_redis_conn_s {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    redisReader *reader;
    mc_buf_t out;
    int failed;
    char peer[300];
    char errstr[256];
};

static int is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int mc_redis_tls_check(const mc_redis_tls_t *tls, char *err, size_t errlen)
{
    if (tls == NULL || !tls->on) {
        return 0;
    }
    if (tls->verify && !is_set(tls->ca_file)) {
        snprintf(err, errlen, "redis_tls_verify needs redis_tls_ca_file (or redis_tls_verify = off)");
        return -1;
    }
    if (is_set(tls->cert_file) != is_set(tls->key_file)) {
        snprintf(err, errlen, "redis_tls_certificate and redis_tls_certificate_key go together");
        return -1;
    }
    return 0;
}

/* Puts OpenSSL's first queued error (or what) into err, clearing the queue. */
static void ssl_reason(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[200];

    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(err, errlen, "%s: %s", what, buf);
    } else {
        snprintf(err, errlen, "%s", what);
    }
    ERR_clear_error();
}

/* Connects fd to sa within timeout_ms.  Returns 0 or -1 (errno set). */
static int connect_within(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    struct pollfd pfd = {fd, POLLOUT, 0};
    socklen_t elen = sizeof(int);
    int flags, e = 0, n;

    flags = fcntl(fd, F_GETFL, 0);
    if (flags == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
        return -1;
    }
    if (connect(fd, sa, len) == -1) {
        if (errno != EINPROGRESS) {
            return -1;
        }
        do {
            n = poll(&pfd, 1, timeout_ms);
        } while (n == -1 && errno == EINTR);
        if (n == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (n == -1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) == -1) {
            return -1;
        }
        if (e != 0) {
            errno = e;
            return -1;
        }
    }
    return fcntl(fd, F_SETFL, flags) == -1 ? -1 : 0;
}

/* Opens the socket to host:port or path.  Returns the fd or -1 (err filled). */
static int open_socket(const char *host, int port, const char *path, int timeout_ms, char *err, size_t errlen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    struct addrinfo hints, *res = NULL;
    struct sockaddr_un un;
    char service[16];
    int fd, rc, one = 1;

    if (path != NULL) {
        if (strlen(path) >= sizeof(un.sun_path)) {
            snprintf(err, errlen, "socket path too long");
            return -1;
        }
        memset(&un, 0, sizeof(un));
        un.sun_family = AF_UNIX;
        memcpy(un.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        rc = fd == -1 ? -1 : connect_within(fd, (struct sockaddr *)&un, sizeof(un), timeout_ms);
    } else {
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(service, sizeof(service), "%d", port);
        rc = getaddrinfo(host, service, &hints, &res);
        if (rc != 0) {
            snprintf(err, errlen, "%s", gai_strerror(rc));
            return -1;
        }
        fd = socket(res->ai_family, SOCK_STREAM, 0);
        rc = fd == -1 ? -1 : connect_within(fd, res->ai_addr, res->ai_addrlen, timeout_ms);
        freeaddrinfo(res);
    }
    if (rc == 0 && path == NULL) {
        rc = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (rc == 0) {
        rc = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    if (rc == 0) {
        rc = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s", strerror(errno == EAGAIN ? ETIMEDOUT : errno));
        if (fd != -1) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* Makes c TLS.  Returns 0 or -1 (err filled). */
static int start_tls(mc_redis_conn_t *c, const mc_redis_tls_t *tls, char *err, size_t errlen)
{
    long vr;

    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL || SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1) {
        ssl_reason(err, errlen, "TLS context");
        return -1;
    }
    if (tls->verify) {
        if (SSL_CTX_load_verify_locations(c->ctx, tls->ca_file, NULL) != 1) {
            ssl_reason(err, errlen, "cannot load the CA file");
            return -1;
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    }
    if (is_set(tls->cert_file)
        && (SSL_CTX_use_certificate_chain_file(c->ctx, tls->cert_file) != 1
            || SSL_CTX_use_PrivateKey_file(c->ctx, tls->key_file, SSL_FILETYPE_PEM) != 1)) {
        ssl_reason(err, errlen, "cannot load the client certificate or key");
        return -1;
    }
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        ssl_reason(err, errlen, "TLS connection");
        return -1;
    }
    if (is_set(tls->name)
        && (SSL_set_tlsext_host_name(c->ssl, tls->name) != 1 || (tls->verify && SSL_set1_host(c->ssl, tls->name) != 1))) {
        ssl_reason(err, errlen, "TLS server name");
        return -1;
    }
    if (SSL_connect(c->ssl) != 1) {
        vr = SSL_get_verify_result(c->ssl);
        if (tls->verify && vr != X509_V_OK) {
            snprintf(err, errlen, "TLS certificate verify error: (%ld:%s)", vr, X509_verify_cert_error_string(vr));
            ERR_clear_error();
        } else {
            ssl_reason(err, errlen, errno == EAGAIN ? "TLS handshake timed out" : "TLS handshake failed");
        }
        return -1;
    }
    return 0;
}

mc_redis_conn_t *mc_redis_conn_open(const char *host, int port, const char *path, const mc_redis_tls_t *tls,
                                    int timeout_ms, char *err, size_t errlen)
{
    mc_redis_conn_t *c;
    char why[256];
    int tls_on = path == NULL && tls != NULL && tls->on;

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->fd = -1;
    if (path != NULL) {
        snprintf(c->peer, sizeof(c->peer), "%s", path);
    } else {
        snprintf(c->peer, sizeof(c->peer), "%s:%d%s", host, port, tls_on ? " (TLS)" : "");
    }

    if (tls_on && mc_redis_tls_check(tls, why, sizeof(why)) != 0) {
        goto failed;
    }
    c->fd = open_socket(host, port, path, timeout_ms, why, sizeof(why));
    if (c->fd == -1 || (tls_on && start_tls(c, tls, why, sizeof(why)) != 0)) {
        goto failed;
    }
    c->reader = redisReaderCreate();
    if (c->reader == NULL) {
        snprintf(why, sizeof(why), "out of memory");
        goto failed;
    }
    return c;

failed:
    snprintf(err, errlen, "%s: %s", c->peer, why);
    mc_redis_conn_close(c);
    return NULL;
}

/* Marks c failed with a reason.  Returns -1. */
static int fail(mc_redis_conn_t *c, const char *what, int ssl_error)
{
    int e = errno;

    c->failed = 1;
    if (ssl_error) {
        ssl_reason(c->errstr, sizeof(c->errstr), what);
    } else {
        snprintf(c->errstr, sizeof(c->errstr), "%s: %s", what,
                 e == EAGAIN || e == EWOULDBLOCK ? "timed out" : e == 0 ? "connection closed" : strerror(e));
    }
    return -1;
}

int mc_redis_conn_append(mc_redis_conn_t *c, int argc, const char *const *argv, const size_t *argvlen)
{
    size_t size;
    long n;

    if (c->failed || argc < 1) {
        return -1;
    }
    size = mc_resp_command_size(argc, argvlen);
    if (mc_buf_reserve(&c->out, size) != 0) {
        errno = ENOMEM;
        return fail(c, "append", 0);
    }
    n = mc_resp_command(c->out.data + c->out.len, c->out.cap - c->out.len, argc, argv, argvlen);
    if (n < 0) {
        errno = EINVAL;
        return fail(c, "append", 0);
    }
    c->out.len += (size_t)n;
    return 0;
}

/* Writes the whole output buffer.  Returns 0 or -1. */
static int flush_out(mc_redis_conn_t *c)
{
    size_t off = 0;
    ssize_t n;

    while (off < c->out.len) {
        errno = 0;
        if (c->ssl != NULL) {
            n = SSL_write(c->ssl, c->out.data + off, (int)(c->out.len - off));
            if (n <= 0) {
                return SSL_get_error(c->ssl, (int)n) == SSL_ERROR_SSL ? fail(c, "write", 1) : fail(c, "write", 0);
            }
        } else {
            n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);
            if (n == -1 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return fail(c, "write", 0);
            }
        }
        off += (size_t)n;
    }
    mc_buf_reset(&c->out);
    return 0;
}

int mc_redis_conn_reply(mc_redis_conn_t *c, redisReply **reply)
{
    char buf[CONN_READ];
    void *r = NULL;
    ssize_t n;

    *reply = NULL;
    if (c->failed || flush_out(c) != 0) {
        return -1;
    }
    for (;;) {
        if (redisReaderGetReply(c->reader, &r) != REDIS_OK) {
            c->failed = 1;
            snprintf(c->errstr, sizeof(c->errstr), "bad reply: %s", c->reader->errstr);
            return -1;
        }
        if (r != NULL) {
            *reply = r;
            return 0;
        }
        errno = 0;
        if (c->ssl != NULL) {
            n = SSL_read(c->ssl, buf, sizeof(buf));
            if (n <= 0) {
                return SSL_get_error(c->ssl, (int)n) == SSL_ERROR_SSL ? fail(c, "read", 1) : fail(c, "read", 0);
            }
        } else {
            n = recv(c->fd, buf, sizeof(buf), 0);
            if (n == -1 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return fail(c, "read", 0);
            }
        }
        if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
            c->failed = 1;
            snprintf(c->errstr, sizeof(c->errstr), "reply parser: %s", c->reader->errstr);
            return -1;
        }
    }
}

redisReply *mc_redis_conn_command(mc_redis_conn_t *c, int argc, const char *const *argv, const size_t *argvlen)
{
    redisReply *r;

    if (mc_redis_conn_append(c, argc, argv, argvlen) != 0 || mc_redis_conn_reply(c, &r) != 0) {
        return NULL;
    }
    return r;
}

const char *mc_redis_conn_error(const mc_redis_conn_t *c)
{
    return c->errstr;
}

const char *mc_redis_conn_peer(const mc_redis_conn_t *c)
{
    return c->peer;
}

void mc_redis_conn_close(mc_redis_conn_t *c)
{
    if (c == NULL) {
        return;
    }
    if (c->ssl != NULL) {
        if (!c->failed) {
            SSL_shutdown(c->ssl);   /* our close_notify; not waiting for theirs */
        }
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    SSL_CTX_free(c->ctx);
    if (c->fd != -1) {
        close(c->fd);
    }
    if (c->reader != NULL) {
        redisReaderFree(c->reader);
    }
    mc_buf_free(&c->out);
    free(c);
}
