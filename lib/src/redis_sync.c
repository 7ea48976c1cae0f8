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

/* Asks c about key and follows MOVED.  Returns the connection serving the
 * key (c itself, or a new one with c closed), or NULL with c closed. */
static mc_redis_conn_t *follow(mc_redis_conn_t *c, const mc_redis_addr_t *at, const mc_redis_tls_t *tls,
                               const char *key, int timeout_ms, char *err, size_t errlen)
{
    const char *argv[2] = {"EXISTS", key};
    size_t argvlen[2] = {6, strlen(key)};
    mc_redis_redirect_t rr;
    mc_redis_addr_t here = *at;
    redisReply *r;
    int hops;

    for (hops = 0;; hops++) {
        r = mc_redis_conn_command(c, 2, argv, argvlen);
        if (r == NULL) {
            snprintf(err, errlen, "%s: %s", mc_redis_conn_peer(c), mc_redis_conn_error(c));
            break;
        }
        if (r->type == REDIS_REPLY_INTEGER
            || (r->type == REDIS_REPLY_ERROR && mc_redis_error_class(r->str, r->len) == MC_REDIS_ERR_ASK)) {
            freeReplyObject(r);
            return c;
        }
        if (r->type != REDIS_REPLY_ERROR || hops == REDIRECTS_MAX
            || mc_redis_redirect_parse(r->str, r->len, &rr) != 0 || rr.ask) {
            snprintf(err, errlen, "%s: %s", mc_redis_conn_peer(c),
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply to EXISTS");
            freeReplyObject(r);
            break;
        }
        freeReplyObject(r);
        if (rr.addr.host[0] == '\0') {
            memcpy(rr.addr.host, here.host, sizeof(here.host));
        }
        mc_redis_conn_close(c);
        here = rr.addr;
        c = mc_redis_conn_open(here.host, here.port, NULL, tls, timeout_ms, err, errlen);
        if (c == NULL) {
            return NULL;
        }
    }
    mc_redis_conn_close(c);
    return NULL;
}

mc_redis_conn_t *mc_redis_connect_for_key(const char *addrs, const mc_redis_tls_t *tls, const char *key,
                                          int timeout_ms, char *err, size_t errlen)
{
    mc_redis_addr_t a;
    mc_redis_conn_t *c;
    const char *p = addrs, *comma;
    size_t n;

    snprintf(err, errlen, "no address");
    if (mc_redis_addrs_check(addrs) != 0) {
        snprintf(err, errlen, "invalid address list \"%s\"", addrs != NULL ? addrs : "");
        return NULL;
    }
    if (addrs[0] == '/') {
        memset(&a, 0, sizeof(a));
        c = mc_redis_conn_open(NULL, 0, addrs, NULL, timeout_ms, err, errlen);
        return c != NULL ? follow(c, &a, NULL, key, timeout_ms, err, errlen) : NULL;
    }
    for (;;) {
        comma = strchr(p, ',');
        n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (mc_redis_addr_parse(p, n, &a) == 0) {
            c = mc_redis_conn_open(a.host, a.port, NULL, tls, timeout_ms, err, errlen);
            if (c != NULL && (c = follow(c, &a, tls, key, timeout_ms, err, errlen)) != NULL) {
                return c;
            }
        }
        if (comma == NULL) {
            return NULL;
        }
        p = comma + 1;
    }
}
