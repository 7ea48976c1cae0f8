/*
 * Rate limits, strikes and bans: the minichat_limit_* directives and the
 * checks the send path, the REST API and the WebSocket upgrade run.
 *
 * Every limit is GCRA in a Redis script (lib/src/rate.c is the algorithm in
 * C): one key per limit holding one number, the theoretical arrival time of
 * the next request, so a decision is one script call that reads and writes
 * one key, and a refusal knows its exact retry_after.  Keys carry the
 * hashtag of what they limit, so each script touches one cluster slot:
 *
 *   {u:<user>}:rl:msg|rest|conn, {u:<user>}:ban, {u:<user>}:strikes
 *                                    lua/limit.lua: per user, with the ban
 *   {ip:<addr>}:rl:conn              lua/gcra.lua: upgrades per address
 *   {r:<room>}:rl                    inside lua/send.lua: messages per room
 *
 * A refusal by a per-user limit counts toward a strike; a strike bans the
 * user (limit.lua answers 3).  This file then tells every node (a "ban"
 * event: each closes the user's connections with 4003) and MySQL (a
 * BanRequest through the relay-worker: users.status), both through _ban.c.  A ban that ran out
 * in Redis is reported by the next check of that user, and MySQL is told
 * (BanRequest with banned = false).
 *
 * When Redis cannot be asked, minichat_limit_redis_down says whether the
 * request goes on (open, the default) or is refused with unavailable.
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"
#include "minichat/rate.h"


#define NGX_HTTP_MINICHAT_BANS_MAX  8

#if (4 + NGX_HTTP_MINICHAT_BANS_MAX > NGX_HTTP_MINICHAT_LIMIT_ARGS_MAX)
#error "limit.lua's values do not fit NGX_HTTP_MINICHAT_LIMIT_ARGS_MAX"
#endif


/* limit.lua's values (interval_us, burst, refusals, window_ms, ban_ms...)
 * for each per-user kind: fixed by the configuration, so formatted once
 * there rather than for every check. */
struct ngx_http_minichat_limit_args_s {
    const char                  *av[3][4 + NGX_HTTP_MINICHAT_BANS_MAX];
    size_t                       al[3][4 + NGX_HTTP_MINICHAT_BANS_MAX];
    ngx_uint_t                   n;       /* values per kind */
};


typedef struct {
    ngx_http_minichat_limit_pt   handler;
    void                        *data;
    uint64_t                     user;    /* 0: an address limit */
    ngx_msec_t                   start;   /* when the check was issued */
    ngx_uint_t                   limited; /* NGX_HTTP_MINICHAT_LIMITED_*: the counter of a refusal */
} ngx_http_minichat_limit_call_t;


static char *ngx_http_minichat_limit_format_args(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf);
static void ngx_http_minichat_limit_reply(redisReply *reply, void *data);
static void ngx_http_minichat_limit_answer(ngx_http_minichat_limit_pt handler, ngx_msec_t start, ngx_int_t rc,
    uint64_t value, void *data);
static void ngx_http_minichat_limit_banned(uint64_t user, uint64_t until, ngx_uint_t strikes);
static ngx_uint_t ngx_http_minichat_limit_counter(ngx_uint_t kind);
static ngx_int_t ngx_http_minichat_limit_decide(uint64_t user, ngx_uint_t counter, long long status, long long a,
    long long b, uint64_t *value);


static const char  *ngx_http_minichat_limit_names[] = { "msg", "rest", "conn" };


/* minichat_limit_* rate=Nr/s|Nr/m [burst=N] | off */
char *
ngx_http_minichat_limit_rate_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_rate_t  *rt = (ngx_http_minichat_rate_t *) ((u_char *) conf + cmd->offset);
    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_int_t                  n;
    uint64_t                   interval = 0;

    if (rt->burst != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        rt->interval_us = 0;
        rt->burst = 0;
        return NGX_CONF_OK;
    }

    rt->burst = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            if (mc_rate_parse((const char *) value[i].data + 5, value[i].len - 5, &interval) != 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid rate \"%V\" in \"%V\", expected rate=Nr/s or rate=Nr/m",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n == NGX_ERROR || n > 1000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid burst value \"%V\" in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }
            rt->burst = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\" in \"%V\"", &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (interval == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" needs rate=... (or off)", &cmd->name);
        return NGX_CONF_ERROR;
    }

    rt->interval_us = interval;

    return NGX_CONF_OK;
}


/* minichat_limit_strikes refusals=N window=time | off */
char *
ngx_http_minichat_limit_strikes_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    ngx_str_t   *value, s;
    ngx_uint_t   i;
    ngx_int_t    n;

    if (mcf->strike_refusals != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        mcf->strike_refusals = 0;
        mcf->strike_window = 0;
        return NGX_CONF_OK;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "refusals=", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n == NGX_ERROR || n == 0 || n > 1000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid refusals value \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }
            mcf->strike_refusals = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "window=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;
            mcf->strike_window = ngx_parse_time(&s, 0);
            if (mcf->strike_window == (ngx_msec_t) NGX_ERROR || mcf->strike_window < 1000
                || mcf->strike_window > 86400000)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid window value \"%V\": must be between 1s and 1d", &value[i]);
                return NGX_CONF_ERROR;
            }
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (mcf->strike_refusals == NGX_CONF_UNSET_UINT || mcf->strike_window == NGX_CONF_UNSET_MSEC) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"minichat_limit_strikes\" needs refusals=N and window=time");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* minichat_limit_bans time [time ...] [permanent] */
char *
ngx_http_minichat_limit_bans_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_minichat_main_conf_t *mcf = conf;

    ngx_str_t   *value;
    ngx_msec_t  *ms;
    ngx_uint_t   i;

    if (mcf->bans != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts - 1 > NGX_HTTP_MINICHAT_BANS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"minichat_limit_bans\" takes at most %d durations",
                           NGX_HTTP_MINICHAT_BANS_MAX);
        return NGX_CONF_ERROR;
    }

    mcf->bans = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(ngx_msec_t));
    if (mcf->bans == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        ms = ngx_array_push(mcf->bans);
        if (ms == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_strcmp(value[i].data, "permanent") == 0) {
            if (i != cf->args->nelts - 1) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"permanent\" must be the last ban");
                return NGX_CONF_ERROR;
            }
            *ms = 0;
            continue;
        }

        *ms = ngx_parse_time(&value[i], 0);
        if (*ms == (ngx_msec_t) NGX_ERROR || *ms < 1000 || *ms > (ngx_msec_t) 365 * 86400000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid ban duration \"%V\": must be between 1s and 365d, or \"permanent\"",
                               &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void
ngx_http_minichat_limit_merge_rate(ngx_http_minichat_rate_t *rt)
{
    if (rt->burst == NGX_CONF_UNSET_UINT) {
        rt->interval_us = 0;
        rt->burst = 0;
    }
}


/* Defaults (from init main conf): every limit off; 50 refusals within a
 * minute make a strike; bans of 1 day, 7 days, then permanent. */
char *
ngx_http_minichat_limit_merge(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf)
{
    ngx_msec_t  *ms;

    ngx_http_minichat_limit_merge_rate(&mcf->limit_messages);
    ngx_http_minichat_limit_merge_rate(&mcf->limit_room_messages);
    ngx_http_minichat_limit_merge_rate(&mcf->limit_connections);
    ngx_http_minichat_limit_merge_rate(&mcf->limit_user_connections);
    ngx_http_minichat_limit_merge_rate(&mcf->limit_rest);

    ngx_conf_init_uint_value(mcf->strike_refusals, 50);
    ngx_conf_init_msec_value(mcf->strike_window, 60000);
    ngx_conf_init_uint_value(mcf->limit_redis_down, NGX_HTTP_MINICHAT_LIMIT_OPEN);

    if (mcf->bans == NGX_CONF_UNSET_PTR) {
        mcf->bans = ngx_array_create(cf->pool, 3, sizeof(ngx_msec_t));
        if (mcf->bans == NULL) {
            return NGX_CONF_ERROR;
        }
        ms = ngx_array_push_n(mcf->bans, 3);
        if (ms == NULL) {
            return NGX_CONF_ERROR;
        }
        ms[0] = 86400000;
        ms[1] = 7 * 86400000;
        ms[2] = 0;
    }

    return ngx_http_minichat_limit_format_args(cf, mcf);
}


/* Pool-allocated decimal of n. */
static const char *
ngx_http_minichat_limit_decimal(ngx_conf_t *cf, uint64_t n, size_t *len)
{
    u_char  *p;

    p = ngx_pnalloc(cf->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NULL;
    }
    *len = ngx_sprintf(p, "%uL", n) - p;

    return (const char *) p;
}


static char *
ngx_http_minichat_limit_format_args(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf)
{
    ngx_http_minichat_limit_args_t  *la;
    ngx_http_minichat_rate_t        *rates[3];
    ngx_msec_t                      *bans;
    uint64_t                         v;
    ngx_uint_t                       k, i;

    rates[NGX_HTTP_MINICHAT_LIMIT_MESSAGES] = &mcf->limit_messages;
    rates[NGX_HTTP_MINICHAT_LIMIT_REST] = &mcf->limit_rest;
    rates[NGX_HTTP_MINICHAT_LIMIT_CONN] = &mcf->limit_user_connections;

    la = ngx_pcalloc(cf->pool, sizeof(ngx_http_minichat_limit_args_t));
    if (la == NULL) {
        return NGX_CONF_ERROR;
    }

    bans = mcf->bans->elts;
    la->n = 4 + mcf->bans->nelts;

    for (k = 0; k < 3; k++) {
        for (i = 0; i < la->n; i++) {
            v = i == 0 ? rates[k]->interval_us
                : i == 1 ? rates[k]->burst
                : i == 2 ? mcf->strike_refusals
                : i == 3 ? mcf->strike_window : bans[i - 4];

            la->av[k][i] = ngx_http_minichat_limit_decimal(cf, v, &la->al[k][i]);
            if (la->av[k][i] == NULL) {
                return NGX_CONF_ERROR;
            }
        }
    }

    mcf->limit_args = la;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_minichat_limit_down(void)
{
    return ngx_http_minichat_conf()->limit_redis_down == NGX_HTTP_MINICHAT_LIMIT_OPEN ? NGX_DECLINED : NGX_ERROR;
}


ngx_uint_t
ngx_http_minichat_limit_user_args(uint64_t user, ngx_uint_t kind, u_char keys[3][NGX_HTTP_MINICHAT_LIMIT_KEY_LEN],
    const char **kv, size_t *kl, const char **av, size_t *al)
{
    ngx_http_minichat_limit_args_t  *la = ngx_http_minichat_conf()->limit_args;
    u_char                           tag[sizeof("{u:}") + NGX_INT64_LEN], *p;
    size_t                           tlen;
    ngx_uint_t                       i;

    /* {u:<user>}:rl:<kind>, {u:<user>}:ban, {u:<user>}:strikes */
    tlen = ngx_sprintf(tag, "{u:%uL}", user) - tag;

    p = ngx_cpymem(keys[0], tag, tlen);
    p = ngx_cpymem(p, ":rl:", 4);
    p = ngx_cpymem(p, ngx_http_minichat_limit_names[kind], ngx_strlen(ngx_http_minichat_limit_names[kind]));
    kv[0] = (const char *) keys[0];
    kl[0] = p - keys[0];

    p = ngx_cpymem(keys[1], tag, tlen);
    p = ngx_cpymem(p, ":ban", 4);
    kv[1] = (const char *) keys[1];
    kl[1] = p - keys[1];

    p = ngx_cpymem(keys[2], tag, tlen);
    p = ngx_cpymem(p, ":strikes", 8);
    kv[2] = (const char *) keys[2];
    kl[2] = p - keys[2];

    for (i = 0; i < la->n; i++) {
        av[i] = la->av[kind][i];
        al[i] = la->al[kind][i];
    }

    return la->n;
}


ngx_int_t
ngx_http_minichat_limit_user(uint64_t user, ngx_uint_t kind, ngx_http_minichat_limit_pt handler, void *data)
{
    ngx_http_minichat_limit_call_t  *call;
    const char                      *av[3 + NGX_HTTP_MINICHAT_LIMIT_ARGS_MAX];
    size_t                           al[3 + NGX_HTTP_MINICHAT_LIMIT_ARGS_MAX];
    u_char                           keys[3][NGX_HTTP_MINICHAT_LIMIT_KEY_LEN];
    ngx_uint_t                       n;

    if (!ngx_http_minichat_redis_ready()) {
        return ngx_http_minichat_limit_down();
    }

    n = 3 + ngx_http_minichat_limit_user_args(user, kind, keys, av, al, &av[3], &al[3]);

    call = ngx_alloc(sizeof(ngx_http_minichat_limit_call_t), ngx_cycle->log);
    if (call == NULL) {
        return NGX_ERROR;
    }
    call->handler = handler;
    call->data = data;
    call->user = user;
    call->start = ngx_current_msec;
    call->limited = ngx_http_minichat_limit_counter(kind);

    if (ngx_http_minichat_redis_script(MINICHAT_LUA_LIMIT_SHA1, MINICHAT_LUA_LIMIT_SRC, 3, (int) n, av, al,
                                       ngx_http_minichat_limit_reply, call)
        != NGX_OK)
    {
        ngx_free(call);
        return ngx_http_minichat_limit_down();
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_minichat_limit_addr(ngx_str_t *addr, ngx_http_minichat_limit_pt handler, void *data)
{
    ngx_http_minichat_main_conf_t   *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_limit_call_t  *call;
    const char                      *av[3];
    size_t                           al[3];
    u_char                           key[sizeof("{ip:}:rl:conn") + NGX_SOCKADDR_STRLEN];
    u_char                           nums[2][NGX_INT64_LEN + 1];

    if (!ngx_http_minichat_redis_ready()) {
        return ngx_http_minichat_limit_down();
    }

    av[0] = (const char *) key;
    al[0] = ngx_snprintf(key, sizeof(key), "{ip:%V}:rl:conn", addr) - key;
    av[1] = (const char *) nums[0];
    al[1] = ngx_sprintf(nums[0], "%uL", mcf->limit_connections.interval_us) - nums[0];
    av[2] = (const char *) nums[1];
    al[2] = ngx_sprintf(nums[1], "%ui", mcf->limit_connections.burst) - nums[1];

    call = ngx_alloc(sizeof(ngx_http_minichat_limit_call_t), ngx_cycle->log);
    if (call == NULL) {
        return NGX_ERROR;
    }
    call->handler = handler;
    call->data = data;
    call->user = 0;
    call->start = ngx_current_msec;
    call->limited = NGX_HTTP_MINICHAT_LIMITED_CONNECTIONS;

    if (ngx_http_minichat_redis_script(MINICHAT_LUA_GCRA_SHA1, MINICHAT_LUA_GCRA_SRC, 1, 3, av, al,
                                       ngx_http_minichat_limit_reply, call)
        != NGX_OK)
    {
        ngx_free(call);
        return ngx_http_minichat_limit_down();
    }

    return NGX_OK;
}


void
ngx_http_minichat_limit_room_args(u_char *interval, size_t *ilen, u_char *burst, size_t *blen)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();

    *ilen = ngx_sprintf(interval, "%uL", mcf->limit_room_messages.interval_us) - interval;
    *blen = ngx_sprintf(burst, "%ui", mcf->limit_room_messages.burst) - burst;
}


/* Returns element i of an array reply as an integer, or -1. */
static long long
ngx_http_minichat_limit_int(redisReply *reply, size_t i)
{
    if (i >= reply->elements || reply->element[i]->type != REDIS_REPLY_INTEGER) {
        return -1;
    }
    return reply->element[i]->integer;
}


static void
ngx_http_minichat_limit_reply(redisReply *reply, void *data)
{
    ngx_http_minichat_limit_call_t  *call = data;
    ngx_http_minichat_limit_pt       handler = call->handler;
    void                            *hdata = call->data;
    uint64_t                         user = call->user;
    ngx_msec_t                       start = call->start;
    ngx_uint_t                       counter = call->limited;
    long long                        status, a, b;
    ngx_int_t                        rc;
    uint64_t                         value = 0;

    ngx_free(call);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: limit script failed: %s", reply->str);
        }
        rc = ngx_http_minichat_limit_down();
        ngx_http_minichat_limit_answer(handler, start, rc == NGX_DECLINED ? NGX_OK : NGX_ERROR, 0, hdata);
        return;
    }

    status = ngx_http_minichat_limit_int(reply, 0);
    a = ngx_http_minichat_limit_int(reply, 1);
    b = ngx_http_minichat_limit_int(reply, 2);

    rc = ngx_http_minichat_limit_decide(user, counter, status, a, b, &value);
    if (rc == NGX_ABORT) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: unexpected status %L from limit script", status);
        rc = ngx_http_minichat_limit_down() == NGX_DECLINED ? NGX_OK : NGX_ERROR;
    }

    ngx_http_minichat_limit_answer(handler, start, rc, value, hdata);
}


static ngx_uint_t
ngx_http_minichat_limit_counter(ngx_uint_t kind)
{
    return kind == NGX_HTTP_MINICHAT_LIMIT_MESSAGES ? NGX_HTTP_MINICHAT_LIMITED_MESSAGES
           : kind == NGX_HTTP_MINICHAT_LIMIT_REST ? NGX_HTTP_MINICHAT_LIMITED_REST
           : NGX_HTTP_MINICHAT_LIMITED_USER_CONNECTIONS;
}


ngx_int_t
ngx_http_minichat_limit_verdict(uint64_t user, ngx_uint_t kind, redisReply *reply, size_t from, uint64_t *value)
{
    return ngx_http_minichat_limit_decide(user, ngx_http_minichat_limit_counter(kind),
                                          ngx_http_minichat_limit_int(reply, from),
                                          ngx_http_minichat_limit_int(reply, from + 1),
                                          ngx_http_minichat_limit_int(reply, from + 2), value);
}


/* limit.lua's answer: {0, expired}, {1, retry_after_ms, expired},
 * {2, until_ms}, {3, until_ms, strikes}; user 0 is an address limit
 * (gcra.lua: {0} or {1, retry_after_ms}); counter is the refusal's. */
static ngx_int_t
ngx_http_minichat_limit_decide(uint64_t user, ngx_uint_t counter, long long status, long long a, long long b,
    uint64_t *value)
{
    *value = 0;

    switch (status) {

    case 0:
        if (a == 1 && user) {
            (void) ngx_http_minichat_ban_record(user, 0, 0, 0, 0, NULL, NULL);
        }
        return NGX_OK;

    case 1:
        *value = a > 0 ? (uint64_t) a : 1;
        ngx_http_minichat_count(limited[counter], 1);
        if (b == 1 && user) {
            (void) ngx_http_minichat_ban_record(user, 0, 0, 0, 0, NULL, NULL);
        }
        return NGX_BUSY;

    case 2:
        *value = a > 0 ? (uint64_t) a : 0;
        ngx_http_minichat_count(banned[NGX_HTTP_MINICHAT_BANNED_REFUSED], 1);
        return NGX_DECLINED;

    case 3:
        *value = a > 0 ? (uint64_t) a : 0;
        ngx_http_minichat_count(banned[NGX_HTTP_MINICHAT_BANNED_REFUSED], 1);
        ngx_http_minichat_limit_banned(user, *value, b > 0 ? (ngx_uint_t) b : 1);
        return NGX_DECLINED;
    }

    return NGX_ABORT;
}


/* Calls the check's handler; what it sends to Redis next shares the check's
 * deadline (the operation started when the check was issued). */
static void
ngx_http_minichat_limit_answer(ngx_http_minichat_limit_pt handler, ngx_msec_t start, ngx_int_t rc, uint64_t value,
    void *data)
{
    ngx_msec_t  outer;

    outer = ngx_http_minichat_redis_op_start(start);
    handler(rc, value, data);
    (void) ngx_http_minichat_redis_op_start(outer);
}


/* A strike banned the user: every node closes the user's connections, and
 * MySQL records the ban (_ban.c). */
static void
ngx_http_minichat_limit_banned(uint64_t user, uint64_t until, ngx_uint_t strikes)
{
    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0, "minichat: user %uL banned (strike %ui) until %uL%s", user,
                  strikes, until, until ? "" : " (permanent)");

    (void) ngx_http_minichat_ban_announce(user, "ban", until, NULL);
    (void) ngx_http_minichat_ban_record(user, 1, 0, until, strikes, NULL, NULL);
}
