/*
 * The members cache: each worker keeps the member ids of the rooms it sends
 * into, so that the room scripts (send, read, typing, repair) need not
 * answer a room's whole member list on every call.
 *
 * Redis keeps a members version per room, {r:<room>}:mver: load.lua sets it
 * to a fresh random number whenever it (re)builds a room's member set, and
 * join.lua and leave.lua add one to it whenever they change the set.  A
 * room script gets the version this worker holds for the room (empty when
 * none) and answers the room's current version, plus the member list only
 * when the two differ.  So the decision is Redis's, made inside the same
 * script that checks membership, and a worker never delivers to a stale
 * list: a member who joined gets the next message whatever this worker
 * held, one who left does not.
 *
 * Lifetime.  A caller holds an entry (a reference) from the moment it
 * sends the held version until the reply is read; the reply is read
 * against that entry, never against whatever the cache holds by then (a
 * newer list, or none after an eviction).  An entry is never changed: a new
 * version is a new entry, which takes the old one's place in the cache; the
 * old one is freed when its last holder lets go.
 *
 * Bounds: at most minichat_members_cache rooms (0: no cache, every call
 * gets the list) and at most 1,000 member ids per cached room on average;
 * past either, the least recently used entry goes.  An entry costs about
 * 100 bytes plus 8 per member.
 */
#include "ngx_http_minichat_module.h"


#define NGX_HTTP_MINICHAT_MEMBERS_IDS_PER_ROOM  1000


struct ngx_http_minichat_members_s {
    ngx_rbtree_node_t   node;      /* key: the room id */
    ngx_queue_t         lru;       /* most recently used first */
    ngx_uint_t          refs;      /* the cache's own reference counts as one */
    size_t              ver_len;
    u_char              ver[NGX_INT64_LEN + 1];
    size_t              n;
    uint64_t           *ids;
};


typedef struct {
    ngx_rbtree_t        tree;
    ngx_rbtree_node_t   sentinel;
    ngx_queue_t         lru;
    ngx_uint_t          rooms;
    size_t              ids;
    ngx_uint_t          ready;
} ngx_http_minichat_members_cache_t;


static ngx_http_minichat_members_t *ngx_http_minichat_members_find(uint64_t room);
static void ngx_http_minichat_members_insert(ngx_http_minichat_members_t *m);
static void ngx_http_minichat_members_evict(ngx_http_minichat_members_t *m);


static ngx_http_minichat_members_cache_t  ngx_http_minichat_members_cache;


/* The entry cached for room, held by the caller (release it), or NULL when
 * none is. */
ngx_http_minichat_members_t *
ngx_http_minichat_members_hold(uint64_t room)
{
    ngx_http_minichat_members_t  *m;

    m = ngx_http_minichat_members_find(room);
    if (m == NULL) {
        return NULL;
    }

    ngx_queue_remove(&m->lru);
    ngx_queue_insert_head(&ngx_http_minichat_members_cache.lru, &m->lru);
    m->refs++;

    return m;
}


/* The version a script gets for a held entry: empty for none. */
ngx_str_t
ngx_http_minichat_members_version(ngx_http_minichat_members_t *m)
{
    ngx_str_t  v;

    if (m == NULL) {
        v.data = (u_char *) "";
        v.len = 0;
        return v;
    }

    v.data = m->ver;
    v.len = m->ver_len;
    return v;
}


/* The version of a held entry as a number, for the relay-worker link
 * (ChatMessage.members_ver): 0 for none, or for a list that was not cached
 * under a version. */
uint64_t
ngx_http_minichat_members_ver(ngx_http_minichat_members_t *m)
{
    uint64_t  v = 0;
    size_t    i;

    if (m == NULL || m->ver_len == 0 || m->ver_len > NGX_INT64_LEN - 1) {
        return 0;
    }

    for (i = 0; i < m->ver_len; i++) {
        if (m->ver[i] < '0' || m->ver[i] > '9') {
            return 0;
        }
        v = v * 10 + (m->ver[i] - '0');   /* at most 19 digits: no overflow */
    }

    return v;
}


void
ngx_http_minichat_members_release(ngx_http_minichat_members_t *m)
{
    if (m == NULL || --m->refs > 0) {
        return;
    }

    if (m->ids) {
        ngx_free(m->ids);
    }
    ngx_free(m);
}


/*
 * Reads a room script's members out of its reply: reply->element[from] is
 * the room's members version, reply->element[from + 1], when there, the
 * members (one comma-separated string) because the version is not the one
 * *held was sent with.  A new list replaces *held (released) and is cached
 * under its version; the ids are those of *held either way.  Returns NGX_OK,
 * or NGX_ERROR for a malformed reply (no list, yet no held entry) or when
 * out of memory.
 */
ngx_int_t
ngx_http_minichat_members_reply(uint64_t room, ngx_http_minichat_members_t **held, redisReply *reply, size_t from)
{
    ngx_http_minichat_members_t  *m;
    redisReply                   *ver;
    uint64_t                     *ids;
    ngx_int_t                     n;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements <= from) {
        return NGX_ERROR;
    }

    ver = reply->element[from];

    if (reply->elements == from + 1) {
        if (*held == NULL) {
            return NGX_ERROR;
        }
        return NGX_OK;
    }

    n = ngx_http_minichat_reply_ids(reply, from + 1, &ids);
    if (n < 0) {
        return NGX_ERROR;
    }

    m = ngx_alloc(sizeof(ngx_http_minichat_members_t), ngx_cycle->log);
    if (m == NULL) {
        if (ids) {
            ngx_free(ids);
        }
        return NGX_ERROR;
    }

    m->node.key = (ngx_rbtree_key_t) room;
    m->refs = 1;
    m->n = (size_t) n;
    m->ids = ids;
    m->ver_len = 0;

    /* a version is decimal digits; anything else (none, a room loaded
     * before versions existed) is not cached */
    if (ver->type == REDIS_REPLY_STRING && ver->len > 0 && ver->len <= NGX_INT64_LEN) {
        ngx_memcpy(m->ver, ver->str, ver->len);
        m->ver_len = ver->len;
        ngx_http_minichat_members_insert(m);
    }

    ngx_http_minichat_members_release(*held);
    *held = m;

    return NGX_OK;
}


const uint64_t *
ngx_http_minichat_members_ids(ngx_http_minichat_members_t *m, size_t *n)
{
    *n = m->n;
    return m->ids;
}


/* Lets go of every cached entry (the worker exits). */
void
ngx_http_minichat_members_exit(void)
{
    ngx_queue_t  *q;

    if (!ngx_http_minichat_members_cache.ready) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_minichat_members_cache.lru)) {
        q = ngx_queue_last(&ngx_http_minichat_members_cache.lru);
        ngx_http_minichat_members_evict(ngx_queue_data(q, ngx_http_minichat_members_t, lru));
    }
}


static ngx_http_minichat_members_t *
ngx_http_minichat_members_find(uint64_t room)
{
    ngx_rbtree_node_t  *node, *sentinel;
    ngx_rbtree_key_t    key = (ngx_rbtree_key_t) room;

    if (!ngx_http_minichat_members_cache.ready) {
        return NULL;
    }

    node = ngx_http_minichat_members_cache.tree.root;
    sentinel = ngx_http_minichat_members_cache.tree.sentinel;

    while (node != sentinel) {
        if (key == node->key) {
            return (ngx_http_minichat_members_t *) node;
        }
        node = key < node->key ? node->left : node->right;
    }

    return NULL;
}


/* Caches m under its room, in place of what was cached for it, then evicts
 * the least recently used entries past the bounds. */
static void
ngx_http_minichat_members_insert(ngx_http_minichat_members_t *m)
{
    ngx_http_minichat_members_cache_t  *c = &ngx_http_minichat_members_cache;
    ngx_http_minichat_members_t        *old;
    ngx_uint_t                          max;
    ngx_queue_t                        *q;

    max = ngx_http_minichat_conf()->members_cache;
    if (max == 0) {
        return;
    }

    if (!c->ready) {
        ngx_rbtree_init(&c->tree, &c->sentinel, ngx_rbtree_insert_value);
        ngx_queue_init(&c->lru);
        c->ready = 1;
    }

    old = ngx_http_minichat_members_find((uint64_t) m->node.key);
    if (old) {
        ngx_http_minichat_members_evict(old);
    }

    ngx_rbtree_insert(&c->tree, &m->node);
    ngx_queue_insert_head(&c->lru, &m->lru);
    m->refs++;
    c->rooms++;
    c->ids += m->n;

    while (c->rooms > max || (c->ids > max * NGX_HTTP_MINICHAT_MEMBERS_IDS_PER_ROOM && c->rooms > 1)) {
        q = ngx_queue_last(&c->lru);
        ngx_http_minichat_members_evict(ngx_queue_data(q, ngx_http_minichat_members_t, lru));
    }
}


/* Takes m out of the cache; its holders keep it until they let go. */
static void
ngx_http_minichat_members_evict(ngx_http_minichat_members_t *m)
{
    ngx_http_minichat_members_cache_t  *c = &ngx_http_minichat_members_cache;

    ngx_rbtree_delete(&c->tree, &m->node);
    ngx_queue_remove(&m->lru);
    c->rooms--;
    c->ids -= m->n;
    ngx_http_minichat_members_release(m);
}
