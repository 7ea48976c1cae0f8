/*
 * libFuzzer target: the request heads the services' operator port reads
 * (lib/src/http_mini.c), as the server reads them: bytes arrive in
 * arbitrary pieces into a buffer of MC_HTTP_HEAD_MAX bytes, the head is
 * parsed again after each piece, and the first answer that is not "more"
 * is final.
 *
 * Checks: "more" only while the buffer has room; the verdict reached piece
 * by piece is the verdict on the whole buffer at once; a parsed request's
 * path lies inside the buffer, starts with '/' and holds no '?', space or
 * control character; the answer built for it (or for the error) starts
 * with a status line of the status returned, and its Content-Length is the
 * length of what follows the head.
 *
 * Input: 4 bytes for the cuts (chunks.h), then the bytes a client sends.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunks.h"
#include "minichat/http_mini.h"

static int fuzz_page(mc_buf_t *out)
{
    return mc_buf_append_str(out, "x 1\n");
}

static int fuzz_not_ready(mc_buf_t *out)
{
    return mc_buf_append_str(out, "{\"ready\":false}") == 0 ? 0 : -1;
}

static const mc_http_handler_t fuzz_handler = {fuzz_page, fuzz_page, fuzz_not_ready};

static void check_answer(const mc_http_req_t *req, int st)
{
    mc_buf_t out = MC_BUF_INIT;
    char line[32];
    const char *cl, *body;
    int status;

    status = mc_http_respond(&fuzz_handler, req, st, &out);
    snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
    if (out.data == NULL || strncmp(out.data, line, strlen(line)) != 0) {
        abort();
    }
    if (st != 0 && status != st) {
        abort(); /* a parse error is answered with its own status */
    }
    cl = strstr(out.data, "\r\nContent-Length: ");
    body = strstr(out.data, "\r\n\r\n");
    if (cl == NULL || body == NULL || (size_t)strtoul(cl + 18, NULL, 10) != out.len - (size_t)(body + 4 - out.data)) {
        abort();
    }
    mc_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char buf[MC_HTTP_HEAD_MAX];
    mc_http_req_t req, whole;
    fuzz_chunks_t cuts;
    size_t len = 0, n, i;
    int st = 1, st_whole;

    fuzz_chunks_init(&cuts, &data, &size);
    while (size > 0 && len < sizeof(buf) && st == 1) {
        n = fuzz_chunks_next(&cuts, size);
        if (n > sizeof(buf) - len) {
            n = sizeof(buf) - len;
        }
        memcpy(buf + len, data, n);
        len += n;
        data += n;
        size -= n;
        st = mc_http_parse(buf, len, &req);
    }
    if (st == 1) {
        if (len >= sizeof(buf)) {
            abort(); /* a full buffer is always decided */
        }
        return 0;
    }
    st_whole = mc_http_parse(buf, len, &whole);
    if (st_whole != st) {
        abort();
    }
    if (st == 0) {
        if (req.path < buf || req.path + req.path_len > buf + len || req.path_len == 0 || req.path[0] != '/'
            || whole.path != req.path || whole.path_len != req.path_len || whole.get != req.get) {
            abort();
        }
        for (i = 0; i < req.path_len; i++) {
            if (req.path[i] == '?' || (unsigned char)req.path[i] <= 0x20 || req.path[i] == 0x7f) {
                abort();
            }
        }
    }
    check_answer(&req, st);
    return 0;
}
