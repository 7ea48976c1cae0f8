/*
 * A cap on concurrent WebSocket connections per client address
 * (minichat_max_connections_per_ip), counted across the node's workers.
 *
 * nginx's limit_conn counts requests; a WebSocket outlives its request (the
 * module may free the request right after the upgrade), so the count here
 * belongs to the connection instead: an upgrade takes a slot just before
 * its 101 (ngx_http_minichat_ipcap_acquire) and the connection gives it back
 * once, when it is released, whatever closed it
 * (ngx_http_minichat_ipcap_release).  The connection keeps a pointer to its
 * address's entry, so the release needs no lookup and cannot miss: what
 * realip or a later request does to c->sockaddr does not matter.
 *
 * The counts live in one shared-memory zone ("minichat_ipcap", sized by
 * minichat_max_connections_per_ip_zone): a red-black tree of entries keyed
 * by the CRC32 of the address bytes (4 for IPv4 and IPv4-mapped IPv6, 16
 * for IPv6), each holding its bytes and its count, allocated from the
 * zone's slab pool when an address's first connection comes and freed when
 * its last one goes.  An entry is 64 bytes of slab: 10m holds about 150,000
 * addresses.
 *
 * Traps:
 * - The zone can fill (more distinct addresses than it holds).  Then a new
 *   address is admitted uncounted and the event logged: refusing would let
 *   whoever holds many addresses lock every new client out, which is worse
 *   than an address escaping its cap.
 * - A reload with the same zone size keeps the zone (and the old workers'
 *   connections in it); another size makes a new zone, where the old
 *   workers' connections are not counted.  A worker that crashes leaks its
 *   connections' counts until the next restart (as limit_conn does).
 * - Unix-socket clients have no address: they are not counted.
 */
#include "ngx_http_minichat_module.h"


/* One address's entry; the rbtree node's key is the CRC32 of the bytes. */
struct ngx_http_minichat_ipcap_slot_s {
    ngx_rbtree_node_t  node;
    uint32_t           count;
    u_char             len;
    u_char             addr[16];
};

typedef struct {
    ngx_rbtree_t       rbtree;
    ngx_rbtree_node_t  sentinel;
} ngx_http_minichat_ipcap_sh_t;

typedef struct {
    ngx_http_minichat_ipcap_sh_t  *sh;
    ngx_slab_pool_t               *shpool;
} ngx_http_minichat_ipcap_ctx_t;


static ngx_int_t ngx_http_minichat_ipcap_init_zone(ngx_shm_zone_t *shm_zone, void *data);
static void ngx_http_minichat_ipcap_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);
static size_t ngx_http_minichat_ipcap_key(ngx_connection_t *c, u_char *addr);
static ngx_http_minichat_ipcap_slot_t *ngx_http_minichat_ipcap_lookup(ngx_http_minichat_ipcap_ctx_t *ctx,
    uint32_t hash, u_char *addr, size_t len);


/* minichat_max_connections_per_ip N | off */
char *
ngx_http_minichat_ipcap_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    ngx_str_t  *value;
    ngx_int_t   n;

    if (mcf->ipcap_max != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        mcf->ipcap_max = 0;
        return NGX_CONF_OK;
    }

    n = ngx_atoi(value[1].data, value[1].len);
    if (n < 1 || n > NGX_HTTP_MINICHAT_IPCAP_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"%V\" \"%V\": must be off or between 1 and %d",
                           &value[0], &value[1], NGX_HTTP_MINICHAT_IPCAP_MAX);
        return NGX_CONF_ERROR;
    }

    mcf->ipcap_max = n;

    return NGX_CONF_OK;
}


/* Defaults (off; a 10m zone), and the zone when the cap is on. */
char *
ngx_http_minichat_ipcap_merge(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf)
{
    ngx_http_minichat_ipcap_ctx_t  *ctx;
    ngx_str_t                       name = ngx_string("minichat_ipcap");

    ngx_conf_init_uint_value(mcf->ipcap_max, 0);
    ngx_conf_init_size_value(mcf->ipcap_zone_size, 10 * 1024 * 1024);

    if (mcf->ipcap_max == 0) {
        return NGX_CONF_OK;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_minichat_ipcap_ctx_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->ipcap_zone = ngx_shared_memory_add(cf, &name, mcf->ipcap_zone_size, &ngx_http_minichat_module);
    if (mcf->ipcap_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->ipcap_zone->init = ngx_http_minichat_ipcap_init_zone;
    mcf->ipcap_zone->data = ctx;

    return NGX_CONF_OK;
}


/* Makes the tree in a new zone, or takes over the tree of the zone the
 * previous configuration used (a reload with the same size). */
static ngx_int_t
ngx_http_minichat_ipcap_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_minichat_ipcap_ctx_t  *octx = data;
    ngx_http_minichat_ipcap_ctx_t  *ctx;
    size_t                          len;

    ctx = shm_zone->data;

    if (octx) {
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_alloc(ctx->shpool, sizeof(ngx_http_minichat_ipcap_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;
    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel, ngx_http_minichat_ipcap_insert);

    len = sizeof(" in minichat_ipcap zone \"\"") + shm_zone->shm.name.len;
    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }
    ngx_sprintf(ctx->shpool->log_ctx, " in minichat_ipcap zone \"%V\"%Z", &shm_zone->shm.name);

    /* a full zone is expected under attack, and logged by acquire */
    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_http_minichat_ipcap_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_http_minichat_ipcap_slot_t   *s, *t;
    ngx_rbtree_node_t               **p;

    s = (ngx_http_minichat_ipcap_slot_t *) node;

    for ( ;; ) {
        if (node->key != temp->key) {
            p = node->key < temp->key ? &temp->left : &temp->right;

        } else {
            t = (ngx_http_minichat_ipcap_slot_t *) temp;
            p = (s->len < t->len || (s->len == t->len && ngx_memcmp(s->addr, t->addr, s->len) < 0))
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* The bytes that name the connection's client: 4 for IPv4 (and IPv6's
 * IPv4-mapped addresses), 16 for IPv6; 0 for a unix socket. */
static size_t
ngx_http_minichat_ipcap_key(ngx_connection_t *c, u_char *addr)
{
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    switch (c->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) c->sockaddr;
        ngx_memcpy(addr, &sin->sin_addr, 4);
        return 4;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) c->sockaddr;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            ngx_memcpy(addr, &sin6->sin6_addr.s6_addr[12], 4);
            return 4;
        }
        ngx_memcpy(addr, &sin6->sin6_addr, 16);
        return 16;
#endif

    default:
        return 0;
    }
}


/* The entry of an address, or NULL; the zone's mutex is held. */
static ngx_http_minichat_ipcap_slot_t *
ngx_http_minichat_ipcap_lookup(ngx_http_minichat_ipcap_ctx_t *ctx, uint32_t hash, u_char *addr, size_t len)
{
    ngx_rbtree_node_t               *node, *sentinel;
    ngx_http_minichat_ipcap_slot_t  *s;
    ngx_int_t                        rc;

    node = ctx->sh->rbtree.root;
    sentinel = ctx->sh->rbtree.sentinel;

    while (node != sentinel) {
        if (hash != node->key) {
            node = hash < node->key ? node->left : node->right;
            continue;
        }

        s = (ngx_http_minichat_ipcap_slot_t *) node;
        rc = len < s->len ? -1 : len > s->len ? 1 : ngx_memcmp(addr, s->addr, len);
        if (rc == 0) {
            return s;
        }
        node = rc < 0 ? node->left : node->right;
    }

    return NULL;
}


/* Takes one of the client address's slots for an upgrade about to be
 * answered.  NGX_OK: admitted, *slot is what the connection gives back
 * (NULL: nothing to give back, the cap is off or the address uncounted);
 * NGX_DECLINED: the address holds minichat_max_connections_per_ip already. */
ngx_int_t
ngx_http_minichat_ipcap_acquire(ngx_http_request_t *r, ngx_http_minichat_ipcap_slot_t **slot)
{
    ngx_http_minichat_main_conf_t   *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_ipcap_ctx_t   *ctx;
    ngx_http_minichat_ipcap_slot_t  *s;
    ngx_connection_t                *c = r->connection;
    u_char                           addr[16];
    uint32_t                         hash, count;
    size_t                           len;

    *slot = NULL;

    if (mcf == NULL || mcf->ipcap_zone == NULL) {
        return NGX_OK;
    }

    len = ngx_http_minichat_ipcap_key(c, addr);
    if (len == 0) {
        return NGX_OK;
    }

    ctx = mcf->ipcap_zone->data;
    hash = ngx_crc32_short(addr, len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    s = ngx_http_minichat_ipcap_lookup(ctx, hash, addr, len);

    if (s == NULL) {
        s = ngx_slab_alloc_locked(ctx->shpool, sizeof(ngx_http_minichat_ipcap_slot_t));
        if (s == NULL) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            ngx_log_error(NGX_LOG_WARN, c->log, 0,
                          "minichat: minichat_max_connections_per_ip zone is full; "
                          "connection from %V not counted", &c->addr_text);
            return NGX_OK;
        }

        s->node.key = hash;
        s->count = 0;
        s->len = (u_char) len;
        ngx_memcpy(s->addr, addr, len);
        ngx_rbtree_insert(&ctx->sh->rbtree, &s->node);

    } else if (s->count >= mcf->ipcap_max) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        ngx_http_minichat_count(limited[NGX_HTTP_MINICHAT_LIMITED_PER_IP], 1);
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "minichat: websocket refused: %ui connections from %V already (minichat_max_connections_per_ip)",
                      mcf->ipcap_max, &c->addr_text);
        return NGX_DECLINED;
    }

    count = ++s->count;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0, "minichat ipcap: %V holds %uD", &c->addr_text, count);

    *slot = s;

    return NGX_OK;
}


/* Answers an upgrade the cap refused: 429 rate_limited without a retry
 * time (a slot frees when one of the address's connections closes). */
ngx_int_t
ngx_http_minichat_ipcap_refuse(ngx_http_request_t *r)
{
    return ngx_http_minichat_api_refuse(r, NGX_HTTP_TOO_MANY_REQUESTS, "rate_limited",
                                        "too many connections from this address");
}


/* Gives the connection's slot back (once: the pointer is cleared); the
 * address's entry goes with its last connection. */
void
ngx_http_minichat_ipcap_release(ngx_http_minichat_ipcap_slot_t **slot)
{
    ngx_http_minichat_main_conf_t   *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_ipcap_ctx_t   *ctx;
    ngx_http_minichat_ipcap_slot_t  *s = *slot;

    if (s == NULL) {
        return;
    }

    *slot = NULL;

    ctx = mcf->ipcap_zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (--s->count == 0) {
        ngx_rbtree_delete(&ctx->sh->rbtree, &s->node);
        ngx_slab_free_locked(ctx->shpool, s);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}
