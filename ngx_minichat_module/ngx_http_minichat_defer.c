/*
 * Write-behind Redis commands: writes nobody waits for, gathered for a
 * short while and sent as one command per key.
 *
 * Every acked message used to cost Redis two small commands of its own
 * beside send.lua: the sender's read-pointer mark (`HSET {dirty}:read
 * room:user seq`, for the flusher that writes it to MySQL) and, once Kafka
 * has the message, `ZREM {<tag>}:pend room:seq` (the sweeper's note).  Each
 * was a round trip of its own, so a read, a reply write and an AOF write in
 * Redis per message.  Both are write-behind already (the flusher and the
 * sweeper look at them seconds later), so they wait here up to
 * NGX_HTTP_MINICHAT_DEFER_MS and leave as `HSET key f v f v ...` and
 * `ZREM key m m ...`.  The order of the fields of one key is kept, so a
 * field set twice ends with the later value, as before.
 *
 * Bounds: at most NGX_HTTP_MINICHAT_DEFER_KEYS keys and
 * NGX_HTTP_MINICHAT_DEFER_ARGS arguments per key wait at once; past either,
 * everything goes at once.  A graceful exit sends what waits.  Lost (Redis
 * down when they go, a worker killed), a mark only delays a read pointer's
 * way to MySQL until the reader's next read, a note only costs a repeated
 * publish that MySQL stores once: the same as the single commands before.
 */
#include "ngx_http_minichat_module.h"


#define NGX_HTTP_MINICHAT_DEFER_MS       50
#define NGX_HTTP_MINICHAT_DEFER_KEYS     64
#define NGX_HTTP_MINICHAT_DEFER_ARGS     512
#define NGX_HTTP_MINICHAT_DEFER_KEY_LEN  64
#define NGX_HTTP_MINICHAT_DEFER_ARG_LEN  (2 * NGX_INT64_LEN + 2)


typedef struct {
    const char  *cmd;
    size_t       key_len;
    u_char       key[NGX_HTTP_MINICHAT_DEFER_KEY_LEN];
    ngx_uint_t   n;
    size_t       lens[NGX_HTTP_MINICHAT_DEFER_ARGS];
    u_char       args[NGX_HTTP_MINICHAT_DEFER_ARGS][NGX_HTTP_MINICHAT_DEFER_ARG_LEN];
} ngx_http_minichat_defer_key_t;


static void ngx_http_minichat_defer_timer(ngx_event_t *ev);
static void ngx_http_minichat_defer_send(ngx_http_minichat_defer_key_t *k);


static ngx_http_minichat_defer_key_t  *ngx_http_minichat_defer_keys[NGX_HTTP_MINICHAT_DEFER_KEYS];
static ngx_uint_t                      ngx_http_minichat_defer_nkeys;
static ngx_event_t                     ngx_http_minichat_defer_ev;


/*
 * Queues the one or two arguments args[0..n-1] (each at most
 * 2 * NGX_INT64_LEN + 2 bytes: ids, "id:id") of `cmd key ...`: a field and
 * its value of an HSET, a member of a ZREM; cmd is a static string.  Sends
 * the command at once when it cannot wait (out of memory, an odd key).
 */
void
ngx_http_minichat_defer(const char *cmd, const u_char *key, size_t key_len, const ngx_str_t *args, ngx_uint_t n)
{
    ngx_http_minichat_defer_key_t  *k = NULL;
    const char                     *av[4];
    size_t                          al[4];
    ngx_uint_t                      i;

    if (n == 0 || n > 2) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: deferred %s of %ui arguments", cmd, n);
        return;
    }

    for (i = 0; i < n; i++) {
        if (args[i].len > NGX_HTTP_MINICHAT_DEFER_ARG_LEN) {
            goto now;
        }
    }

    if (key_len > NGX_HTTP_MINICHAT_DEFER_KEY_LEN) {
        goto now;
    }

    for (i = 0; i < ngx_http_minichat_defer_nkeys; i++) {
        k = ngx_http_minichat_defer_keys[i];
        if (k->cmd == cmd && k->key_len == key_len && ngx_memcmp(k->key, key, key_len) == 0) {
            break;
        }
        k = NULL;
    }

    if (k != NULL && k->n + n > NGX_HTTP_MINICHAT_DEFER_ARGS) {
        ngx_http_minichat_defer_send(k);
    }

    if (k == NULL) {
        if (ngx_http_minichat_defer_nkeys == NGX_HTTP_MINICHAT_DEFER_KEYS) {
            ngx_http_minichat_defer_flush();
        }

        k = ngx_alloc(sizeof(ngx_http_minichat_defer_key_t), ngx_cycle->log);
        if (k == NULL) {
            goto now;
        }
        k->cmd = cmd;
        k->key_len = key_len;
        ngx_memcpy(k->key, key, key_len);
        k->n = 0;
        ngx_http_minichat_defer_keys[ngx_http_minichat_defer_nkeys++] = k;
    }

    for (i = 0; i < n; i++) {
        ngx_memcpy(k->args[k->n], args[i].data, args[i].len);
        k->lens[k->n++] = args[i].len;
    }

    if (!ngx_http_minichat_defer_ev.timer_set) {
        ngx_http_minichat_defer_ev.handler = ngx_http_minichat_defer_timer;
        ngx_http_minichat_defer_ev.log = ngx_cycle->log;
        ngx_http_minichat_defer_ev.cancelable = 1;
        ngx_add_timer(&ngx_http_minichat_defer_ev, NGX_HTTP_MINICHAT_DEFER_MS);
    }

    return;

now:

    av[0] = cmd;
    al[0] = ngx_strlen(cmd);
    av[1] = (const char *) key;
    al[1] = key_len;
    for (i = 0; i < n; i++) {
        av[2 + i] = (const char *) args[i].data;
        al[2 + i] = args[i].len;
    }

    (void) ngx_http_minichat_redis_argv((int) (2 + n), av, al, NULL, NULL);
}


/* Sends every waiting command. */
void
ngx_http_minichat_defer_flush(void)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_http_minichat_defer_nkeys; i++) {
        ngx_http_minichat_defer_send(ngx_http_minichat_defer_keys[i]);
        ngx_free(ngx_http_minichat_defer_keys[i]);
    }

    ngx_http_minichat_defer_nkeys = 0;

    if (ngx_http_minichat_defer_ev.timer_set) {
        ngx_del_timer(&ngx_http_minichat_defer_ev);
    }
}


static void
ngx_http_minichat_defer_timer(ngx_event_t *ev)
{
    ngx_http_minichat_defer_flush();
}


/* Sends k's command with the arguments gathered so far, and empties it. */
static void
ngx_http_minichat_defer_send(ngx_http_minichat_defer_key_t *k)
{
    const char  **av;
    size_t       *al;
    ngx_uint_t    i;

    if (k->n == 0) {
        return;
    }

    av = ngx_alloc((k->n + 2) * (sizeof(char *) + sizeof(size_t)), ngx_cycle->log);
    if (av == NULL) {
        k->n = 0;
        return;
    }
    al = (size_t *) (av + k->n + 2);

    av[0] = k->cmd;
    al[0] = ngx_strlen(k->cmd);
    av[1] = (const char *) k->key;
    al[1] = k->key_len;
    for (i = 0; i < k->n; i++) {
        av[2 + i] = (const char *) k->args[i];
        al[2 + i] = k->lens[i];
    }

    /* not waited for, as each of them was not */
    (void) ngx_http_minichat_redis_argv((int) (k->n + 2), av, al, NULL, NULL);

    ngx_free(av);
    k->n = 0;
}
