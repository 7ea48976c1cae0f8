/*
 * A blocking HTTP/1.1 client for the few REST calls a run makes before its
 * connections open (rooms, in proto_minichat.c).  One connection per
 * request with `Connection: close`, so the answer ends at EOF; every step
 * has a 10 s timeout and the answer is capped at 1 MiB, so a server that
 * stalls or babbles cannot hang or grow the load generator.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "loadgen.h"

#define HTTP_MAX_ANSWER (1 << 20)

/* Writes all of p or fails.  Returns 0 or -1. */
static int write_all(int fd, const char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int lg_http_request(const lg_config_t *cfg, const char *method, const char *target, const char *headers,
                    const char *body, size_t body_len, mc_buf_t *resp_body, char *err, size_t err_size)
{
    struct timeval tv = {10, 0};
    struct sockaddr_in sa;
    mc_buf_t req = MC_BUF_INIT, ans = MC_BUF_INIT;
    char chunk[16384], *end;
    int fd, status = -1;
    ssize_t r;

    mc_buf_reset(resp_body);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_size, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(cfg->port);
    sa.sin_addr = cfg->dst;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(err, err_size, "connect to %s:%u: %s", inet_ntoa(cfg->dst), cfg->port, strerror(errno));
        goto done;
    }
    if (mc_buf_appendf(&req,
                       "%s %s HTTP/1.1\r\nHost: loadgen\r\nConnection: close\r\n%sContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n\r\n",
                       method, target, headers, body_len)
            != 0
        || mc_buf_append(&req, body, body_len) != 0) {
        snprintf(err, err_size, "out of memory");
        goto done;
    }
    if (write_all(fd, req.data, req.len) != 0) {
        snprintf(err, err_size, "%s %s: write: %s", method, target, strerror(errno));
        goto done;
    }
    for (;;) {
        r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            snprintf(err, err_size, "%s %s: read: %s", method, target,
                     errno == EAGAIN ? "no answer within 10 s" : strerror(errno));
            goto done;
        }
        if (r == 0) {
            break;
        }
        if (ans.len + (size_t)r > HTTP_MAX_ANSWER || mc_buf_append(&ans, chunk, (size_t)r) != 0) {
            snprintf(err, err_size, "%s %s: answer larger than %d bytes", method, target, HTTP_MAX_ANSWER);
            goto done;
        }
    }
    end = ans.data ? strstr(ans.data, "\r\n\r\n") : NULL;
    if (end == NULL || sscanf(ans.data, "HTTP/1.%*c %d", &status) != 1) {
        snprintf(err, err_size, "%s %s: not an HTTP answer", method, target);
        status = -1;
        goto done;
    }
    end += 4;
    if (mc_buf_append(resp_body, end, ans.len - (size_t)(end - ans.data)) != 0) {
        snprintf(err, err_size, "out of memory");
        status = -1;
    }
done:
    close(fd);
    mc_buf_free(&req);
    mc_buf_free(&ans);
    return status;
}
