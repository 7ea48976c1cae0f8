/*
 * The slot map and the error texts of Redis Cluster (see redis_cluster.h).
 *
 * CLUSTER SLOTS answers an array of ranges, each
 *   [start, end, [host, port, id, ...], [replica host, port, id, ...]...]
 * and only the first node of a range (its master) matters to a client that
 * writes.  Every element is checked before use: a reply of the wrong shape
 * is refused as a whole rather than half-applied, since a half map would
 * send commands to nodes that answer MOVED forever.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/decimal.h"
#include "minichat/redis_cluster.h"

static int slotmap_add(mc_redis_slotmap_t *m, const mc_redis_addr_t *a, size_t *cap);

int mc_redis_addr_parse(const char *s, size_t n, mc_redis_addr_t *a)
{
    uint64_t port;
    size_t colon;

    for (colon = n; colon > 0; colon--) {
        if (s[colon - 1] == ':') {
            break;
        }
    }
    if (colon == 0) {
        return -1;
    }
    colon--;
    if (colon >= MC_REDIS_HOST_MAX || mc_parse_u64(s + colon + 1, n - colon - 1, &port) != 0
        || port == 0 || port > 65535 || memchr(s, '\0', colon) != NULL) {
        return -1;
    }
    memcpy(a->host, s, colon);
    a->host[colon] = '\0';
    a->port = (int)port;
    return 0;
}

int mc_redis_slotmap_parse(mc_redis_slotmap_t *m, const redisReply *r, const char *default_host)
{
    const redisReply *range, *node;
    mc_redis_addr_t a;
    size_t i, cap = 0, slots = 0;
    long long s;
    int idx;

    m->nodes = NULL;
    m->nnodes = 0;
    memset(m->owner, 0xff, sizeof(m->owner));

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        goto err;
    }
    for (i = 0; i < r->elements; i++) {
        range = r->element[i];
        if (range == NULL || range->type != REDIS_REPLY_ARRAY || range->elements < 3
            || range->element[0]->type != REDIS_REPLY_INTEGER || range->element[1]->type != REDIS_REPLY_INTEGER
            || range->element[0]->integer < 0 || range->element[1]->integer >= MC_REDIS_SLOTS
            || range->element[0]->integer > range->element[1]->integer) {
            goto err;
        }
        node = range->element[2];
        if (node->type != REDIS_REPLY_ARRAY || node->elements < 2 || node->element[0]->type != REDIS_REPLY_STRING
            || node->element[1]->type != REDIS_REPLY_INTEGER || node->element[1]->integer <= 0
            || node->element[1]->integer > 65535 || node->element[0]->len >= MC_REDIS_HOST_MAX) {
            goto err;
        }
        if (node->element[0]->len == 0) {
            if (default_host == NULL || strlen(default_host) >= MC_REDIS_HOST_MAX) {
                goto err;
            }
            strcpy(a.host, default_host);
        } else {
            memcpy(a.host, node->element[0]->str, node->element[0]->len);
            a.host[node->element[0]->len] = '\0';
        }
        a.port = (int)node->element[1]->integer;

        idx = mc_redis_slotmap_find(m, &a);
        if (idx < 0) {
            if (slotmap_add(m, &a, &cap) != 0) {
                goto err;
            }
            idx = (int)m->nnodes - 1;
        }
        for (s = range->element[0]->integer; s <= range->element[1]->integer; s++) {
            m->owner[s] = (int16_t)idx;
            slots++;
        }
    }
    if (slots == 0) {
        goto err;
    }
    return 0;

err:
    mc_redis_slotmap_free(m);
    return -1;
}

/* Appends *a to m->nodes.  Returns 0, or -1 when out of memory or when the
 * map would hold more masters than slots. */
static int slotmap_add(mc_redis_slotmap_t *m, const mc_redis_addr_t *a, size_t *cap)
{
    mc_redis_addr_t *nodes;

    if (m->nnodes == MC_REDIS_SLOTS) {
        return -1;
    }
    if (m->nnodes == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        nodes = realloc(m->nodes, *cap * sizeof(mc_redis_addr_t));
        if (nodes == NULL) {
            return -1;
        }
        m->nodes = nodes;
    }
    m->nodes[m->nnodes++] = *a;
    return 0;
}

void mc_redis_slotmap_free(mc_redis_slotmap_t *m)
{
    free(m->nodes);
    m->nodes = NULL;
    m->nnodes = 0;
    memset(m->owner, 0xff, sizeof(m->owner));
}

int mc_redis_slotmap_owner(const mc_redis_slotmap_t *m, unsigned slot)
{
    return slot < MC_REDIS_SLOTS ? m->owner[slot] : -1;
}

int mc_redis_slotmap_find(const mc_redis_slotmap_t *m, const mc_redis_addr_t *a)
{
    size_t i;

    for (i = 0; i < m->nnodes; i++) {
        if (m->nodes[i].port == a->port && strcmp(m->nodes[i].host, a->host) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Returns 1 when s[0..n) begins with the word w (followed by ' ' or the end). */
static int starts_with_word(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);

    return n >= wl && memcmp(s, w, wl) == 0 && (n == wl || s[wl] == ' ');
}

mc_redis_err_t mc_redis_error_class(const char *s, size_t n)
{
    if (s == NULL) {
        return MC_REDIS_ERR_OTHER;
    }
    if (starts_with_word(s, n, "MOVED")) {
        return MC_REDIS_ERR_MOVED;
    }
    if (starts_with_word(s, n, "ASK")) {
        return MC_REDIS_ERR_ASK;
    }
    if (starts_with_word(s, n, "TRYAGAIN")) {
        return MC_REDIS_ERR_TRYAGAIN;
    }
    if (starts_with_word(s, n, "CLUSTERDOWN")) {
        return MC_REDIS_ERR_CLUSTERDOWN;
    }
    if (starts_with_word(s, n, "LOADING")) {
        return MC_REDIS_ERR_LOADING;
    }
    if (starts_with_word(s, n, "NOSCRIPT")) {
        return MC_REDIS_ERR_NOSCRIPT;
    }
    return MC_REDIS_ERR_OTHER;
}

int mc_redis_redirect_parse(const char *s, size_t n, mc_redis_redirect_t *r)
{
    mc_redis_redirect_t out;
    const char *p, *sp;
    uint64_t slot;
    size_t skip;

    if (s == NULL) {
        return -1;
    }
    if (starts_with_word(s, n, "MOVED")) {
        out.ask = 0;
        skip = 6;
    } else if (starts_with_word(s, n, "ASK")) {
        out.ask = 1;
        skip = 4;
    } else {
        return -1;
    }
    if (n <= skip) {
        return -1;
    }
    p = s + skip;
    sp = memchr(p, ' ', n - skip);
    if (sp == NULL || mc_parse_u64(p, (size_t)(sp - p), &slot) != 0 || slot >= MC_REDIS_SLOTS) {
        return -1;
    }
    p = sp + 1;
    if (memchr(p, ' ', (size_t)(s + n - p)) != NULL || mc_redis_addr_parse(p, (size_t)(s + n - p), &out.addr) != 0) {
        return -1;
    }
    out.slot = (unsigned)slot;
    *r = out;
    return 0;
}
