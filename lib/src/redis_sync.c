/*
 * The blocking way to the node that serves a key (see redis_sync.h).
 *
 * The question asked is `EXISTS key`: a read any node answers, with MOVED
 * from a node that does not serve the key's slot, and a plain integer from a
 * single Redis or from the right master.  ASK (the slot is migrating) keeps
 * the node asked: it still owns the slot until the migration ends, which the
 * caller learns as a MOVED on a later command.  A node in a failed state
 * (CLUSTERDOWN) or one that cannot be reached moves on to the next address.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/redis_cluster.h"
#include "minichat/redis_sync.h"

#define REDIRECTS_MAX 5

int mc_redis_addrs_check(const char *addrs)
{
    mc_redis_addr_t a;
    const char *p = addrs, *comma;
    size_t n;

    if (addrs == NULL || addrs[0] == '\0') {
        return -1;
    }
    if (addrs[0] == '/') {
        return 0;
    }
    for (;;) {
        comma = strchr(p, ',');
        n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (mc_redis_addr_parse(p, n, &a) != 0 || a.host[0] == '\0') {
            return -1;
        }
        if (comma == NULL) {
            return 0;
        }
        p = comma + 1;
    }
}

/* Connects to one node.  Returns the context or NULL (err filled). */
static redisContext *connect_one(const mc_redis_addr_t *a, const char *path, int timeout_ms, char *err,
                                 size_t errlen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c;

    c = path != NULL ? redisConnectUnixWithTimeout(path, tv) : redisConnectWithTimeout(a->host, a->port, tv);
    if (c == NULL || c->err) {
        snprintf(err, errlen, "%s%s%d: %s", path != NULL ? path : a->host, path != NULL ? "" : ":",
                 path != NULL ? 0 : a->port, c != NULL ? c->errstr : "out of memory");
        if (c != NULL) {
            redisFree(c);
        }
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

/* Asks c about key and follows MOVED.  Returns the context serving the key
 * (c itself, or a new one with c freed), or NULL with c freed. */
static redisContext *follow(redisContext *c, const mc_redis_addr_t *at, const char *key, int timeout_ms, char *err,
                            size_t errlen)
{
    mc_redis_redirect_t rr;
    mc_redis_addr_t here = *at;
    redisReply *r;
    int hops;

    for (hops = 0;; hops++) {
        r = redisCommand(c, "EXISTS %s", key);
        if (r == NULL) {
            snprintf(err, errlen, "%s:%d: %s", here.host, here.port, c->errstr[0] ? c->errstr : "no reply");
            break;
        }
        if (r->type == REDIS_REPLY_INTEGER
            || (r->type == REDIS_REPLY_ERROR && mc_redis_error_class(r->str, r->len) == MC_REDIS_ERR_ASK)) {
            freeReplyObject(r);
            return c;
        }
        if (r->type != REDIS_REPLY_ERROR || hops == REDIRECTS_MAX
            || mc_redis_redirect_parse(r->str, r->len, &rr) != 0 || rr.ask) {
            snprintf(err, errlen, "%s:%d: %s", here.host, here.port,
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply to EXISTS");
            freeReplyObject(r);
            break;
        }
        freeReplyObject(r);
        if (rr.addr.host[0] == '\0') {
            memcpy(rr.addr.host, here.host, sizeof(here.host));
        }
        redisFree(c);
        here = rr.addr;
        c = connect_one(&here, NULL, timeout_ms, err, errlen);
        if (c == NULL) {
            return NULL;
        }
    }
    redisFree(c);
    return NULL;
}

redisContext *mc_redis_connect_for_key(const char *addrs, const char *key, int timeout_ms, char *err,
                                       size_t errlen)
{
    mc_redis_addr_t a;
    redisContext *c;
    const char *p = addrs, *comma;
    size_t n;

    snprintf(err, errlen, "no address");
    if (mc_redis_addrs_check(addrs) != 0) {
        snprintf(err, errlen, "invalid address list \"%s\"", addrs != NULL ? addrs : "");
        return NULL;
    }
    if (addrs[0] == '/') {
        memset(&a, 0, sizeof(a));
        c = connect_one(&a, addrs, timeout_ms, err, errlen);
        return c != NULL ? follow(c, &a, key, timeout_ms, err, errlen) : NULL;
    }
    for (;;) {
        comma = strchr(p, ',');
        n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (mc_redis_addr_parse(p, n, &a) == 0) {
            c = connect_one(&a, NULL, timeout_ms, err, errlen);
            if (c != NULL && (c = follow(c, &a, key, timeout_ms, err, errlen)) != NULL) {
                return c;
            }
        }
        if (comma == NULL) {
            return NULL;
        }
        p = comma + 1;
    }
}
