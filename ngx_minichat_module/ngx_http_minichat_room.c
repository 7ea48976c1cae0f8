/*
 * Room scripts, with the rebuild of a room Redis has lost.
 *
 * Every room script runs on `{r:<room>}:<name>` keys and answers -2 (alone
 * or as the first element of an array) when `{r:<room>}:seq` is missing: the
 * room is not loaded, because Redis lost it (restart without AOF, FLUSHALL,
 * failover to a lagging replica) or never had it.  The runner then asks the
 * relay-worker what MySQL holds (RoomStateRequest), loads it with load.lua
 * (a no-op when another worker got there first) and runs the script once
 * more.  MySQL is the truth: seqs continue from its last_seq, so a seq is
 * never issued twice and an acked message is never taken for a duplicate.
 *
 * A room's generation.  Scripts that rest on the room's seq (send, seq)
 * carry the replication id of the master they run on and answer -4 when it
 * is not the room's {r:<room>}:gen: a replica was promoted, or Redis
 * restarted, since the room was loaded, and this master may lack seqs that
 * were acked.  The runner then revalidates the room the same way (MySQL's
 * state after the consumer caught up with Kafka; load.lua merges: seq =
 * max(Redis, MySQL), read pointers forward only, gen = the id) and runs the
 * script once more.
 *
 * The caller's handler runs exactly once: NGX_OK with the script's reply,
 * NGX_DECLINED when MySQL has no such room, NGX_ERROR when Redis, the
 * relay-worker or MySQL is unavailable (reply NULL).
 *
 * A room MySQL does not have is remembered for a while as {r:<room>}:none,
 * so that requests naming it do not each cost a MySQL query.  The marker
 * only matters while the room is not loaded: creating the room loads it.
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"
#include "minichat/decimal.h"


#define NGX_HTTP_MINICHAT_NONE_TTL  "30"


struct ngx_http_minichat_room_call_s {
    uint64_t                         room;
    const char                      *sha1;     /* static strings; the script struct may not outlive the call */
    const char                      *src;
    int                              nkeys;
    ngx_http_minichat_room_pt        handler;
    void                            *data;
    ngx_uint_t                       retried;
    ngx_uint_t                       gen;
    uint64_t                        *issued;
    int                              argc;     /* keys and arguments */
    const char                     **argv;
    size_t                          *argvlen;
};


static ngx_int_t ngx_http_minichat_room_run(ngx_http_minichat_room_call_t *call);
static void ngx_http_minichat_room_reply(redisReply *reply, void *data);
static void ngx_http_minichat_room_none(redisReply *reply, void *data);
static void ngx_http_minichat_room_ask(ngx_http_minichat_room_call_t *call);
static void ngx_http_minichat_room_state(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_room_loaded(redisReply *reply, void *data);
static void ngx_http_minichat_room_done(ngx_http_minichat_room_call_t *call, redisReply *reply, ngx_int_t rc);


/* load.lua's keys; the seventh is the current cid bucket, the eighth "gen" */
static const char  *ngx_http_minichat_load_keys[] = { "seq", "members", "left", "read", "epoch", "log" };


ngx_int_t
ngx_http_minichat_room_script(uint64_t room, const ngx_http_minichat_script_t *script, ngx_uint_t nargs,
    const char **args, const size_t *arglens, ngx_http_minichat_room_pt handler, void *data)
{
    ngx_http_minichat_room_call_t  *call;
    size_t                          total;
    ngx_uint_t                      i, n;
    u_char                         *p;

    n = script->nkeys + nargs;
    total = sizeof(ngx_http_minichat_room_call_t) + n * (sizeof(char *) + sizeof(size_t));
    for (i = 0; i < script->nkeys; i++) {
        total += sizeof("{r:}:") + NGX_INT64_LEN + ngx_strlen(script->keys[i]);
    }
    for (i = 0; i < nargs; i++) {
        total += arglens[i];
    }

    call = ngx_alloc(total, ngx_cycle->log);
    if (call == NULL) {
        return NGX_ERROR;
    }

    call->room = room;
    call->sha1 = script->sha1;
    call->src = script->src;
    call->nkeys = (int) script->nkeys;
    call->handler = handler;
    call->data = data;
    call->retried = 0;
    call->gen = script->gen;
    call->issued = script->issued;
    call->argc = (int) n;
    call->argv = (const char **) (call + 1);
    call->argvlen = (size_t *) (call->argv + n);
    p = (u_char *) (call->argvlen + n);

    for (i = 0; i < script->nkeys; i++) {
        call->argv[i] = (const char *) p;
        if (script->keys[i][0] == '{') {
            p = ngx_cpymem(p, script->keys[i], ngx_strlen(script->keys[i]));
            call->argvlen[i] = p - (u_char *) call->argv[i];
            continue;
        }
        p = ngx_sprintf(p, "{r:%uL}:%s", room, script->keys[i]);
        call->argvlen[i] = p - (u_char *) call->argv[i];
    }

    for (i = 0; i < nargs; i++) {
        call->argv[script->nkeys + i] = (const char *) p;
        call->argvlen[script->nkeys + i] = arglens[i];
        p = ngx_cpymem(p, args[i], arglens[i]);
    }

    if (ngx_http_minichat_room_run(call) != NGX_OK) {
        ngx_free(call);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_minichat_room_run(ngx_http_minichat_room_call_t *call)
{
    if (call->issued) {
        *call->issued = ngx_http_minichat_now_ms();
    }

    if (call->gen) {
        return ngx_http_minichat_redis_script_gen(call->sha1, call->src, call->nkeys, call->argc, call->argv,
                                                  call->argvlen, ngx_http_minichat_room_reply, call);
    }

    return ngx_http_minichat_redis_script(call->sha1, call->src, call->nkeys, call->argc, call->argv, call->argvlen,
                                          ngx_http_minichat_room_reply, call);
}


/* Returns the script's status: the integer reply or an array's first
 * element; 0 when it has none. */
static long long
ngx_http_minichat_room_status(redisReply *reply)
{
    if (reply->type == REDIS_REPLY_INTEGER) {
        return reply->integer;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1
        && reply->element[0]->type == REDIS_REPLY_INTEGER)
    {
        return reply->element[0]->integer;
    }

    return 0;
}


static void
ngx_http_minichat_room_reply(redisReply *reply, void *data)
{
    ngx_http_minichat_room_call_t  *call = data;
    long long                       status;

    if (reply == NULL) {
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: room %uL: script failed: %s", call->room,
                      reply->str);
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
        return;
    }

    status = ngx_http_minichat_room_status(reply);

    if (status != -2 && (status != -4 || !call->gen)) {
        ngx_http_minichat_room_done(call, reply, NGX_OK);
        return;
    }

    if (call->retried) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: room %uL still %s after a rebuild", call->room,
                      status == -2 ? "not loaded" : "of another generation");
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
        return;
    }

    call->retried = 1;

    if (status == -4) {
        /* loaded, so MySQL has it: no need to look for the none marker */
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "minichat: room %uL was loaded under another redis replication id (a failover or a "
                      "restart since); revalidating it against mysql", call->room);
        ngx_http_minichat_room_ask(call);
        return;
    }

    /* a room known not to exist costs no MySQL query */
    {
        const char  *av[2];
        size_t       al[2];
        u_char       key[sizeof("{r:}:none") + NGX_INT64_LEN];

        av[0] = "EXISTS";
        al[0] = 6;
        av[1] = (const char *) key;
        al[1] = ngx_sprintf(key, "{r:%uL}:none", call->room) - key;

        if (ngx_http_minichat_redis_argv(2, av, al, ngx_http_minichat_room_none, call) != NGX_OK) {
            ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
        }
    }
}


static void
ngx_http_minichat_room_none(redisReply *reply, void *data)
{
    ngx_http_minichat_room_call_t  *call = data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
        return;
    }

    if (reply->integer == 1) {
        ngx_http_minichat_room_done(call, NULL, NGX_DECLINED);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0, "minichat: room %uL is not in redis; loading it from mysql",
                  call->room);

    ngx_http_minichat_room_ask(call);
}


/* Asks the relay-worker for the room as MySQL has it, once the consumer has
 * caught up with Kafka (RoomStateRequest). */
static void
ngx_http_minichat_room_ask(ngx_http_minichat_room_call_t *call)
{
    Minichat__LocalFrame            f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__RoomStateRequest      rs = MINICHAT__ROOM_STATE_REQUEST__INIT;

    rs.room = call->room;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_ROOM_STATE;
    f.room_state = &rs;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_room_state, call) != NGX_OK) {
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
    }
}


static void
ngx_http_minichat_room_state(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_room_call_t  *call = data;
    Minichat__RoomStateResult      *st;

    st = result ? result->room_state_result : NULL;

    if (st == NULL || (st->error && st->error[0])) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: room %uL: cannot load it from mysql: %s",
                      call->room, st ? st->error : "no answer from relay-worker");
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
        return;
    }

    if (!st->found) {
        const char  *av[5];
        size_t       al[5];
        u_char       key[sizeof("{r:}:none") + NGX_INT64_LEN];

        av[0] = "SET";
        al[0] = 3;
        av[1] = (const char *) key;
        al[1] = ngx_sprintf(key, "{r:%uL}:none", call->room) - key;
        av[2] = "1";
        al[2] = 1;
        av[3] = "EX";
        al[3] = 2;
        av[4] = NGX_HTTP_MINICHAT_NONE_TTL;
        al[4] = sizeof(NGX_HTTP_MINICHAT_NONE_TTL) - 1;
        (void) ngx_http_minichat_redis_argv(5, av, al, NULL, NULL);

        ngx_http_minichat_room_done(call, NULL, NGX_DECLINED);
        return;
    }

    if (ngx_http_minichat_room_load(call->room, st, ngx_http_minichat_room_loaded, call) != NGX_OK) {
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
    }
}


ngx_int_t
ngx_http_minichat_room_load(uint64_t room, Minichat__RoomStateResult *st, ngx_http_minichat_redis_pt handler,
    void *data)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    const char                    **argv = NULL;
    size_t                         *argvlen = NULL, n, i, k, strs;
    u_char                         *nums = NULL, *p, epoch[16];
    u_char                          keys[10][sizeof("{r:}:logbytes") + 2 * NGX_INT64_LEN];
    ngx_int_t                       rc;

    if (st->n_left != st->n_left_seq || st->n_read_user != st->n_read_seq
        || st->n_idem_sender != st->n_idem_cid || st->n_idem_cid != st->n_idem_seq
        || st->n_idem_seq != st->n_idem_ts)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: room %uL: malformed room state", room);
        return NGX_ERROR;
    }

    /* 10 keys; last_seq, epoch, n, members, k, (user, seq) * k, j, (user, seq) * j,
     * i, ("sender:cid", "seq:ts") * i, idem_ttl, mver; the replid follows */
    n = 10 + 8 + st->n_members + 2 * st->n_left + 2 * st->n_read_user + 2 * st->n_idem_cid;
    strs = n * (2 * NGX_INT64_LEN + 2);
    for (i = 0; i < st->n_idem_cid; i++) {
        strs += ngx_strlen(st->idem_cid[i]);
    }

    argv = ngx_alloc(n * sizeof(char *), ngx_cycle->log);
    argvlen = ngx_alloc(n * sizeof(size_t), ngx_cycle->log);
    nums = ngx_alloc(strs, ngx_cycle->log);
    if (argv == NULL || argvlen == NULL || nums == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    for (i = 0; i < 6; i++) {
        argv[i] = (const char *) keys[i];
        argvlen[i] = ngx_sprintf(keys[i], "{r:%uL}:%s", room, ngx_http_minichat_load_keys[i]) - keys[i];
    }
    argv[6] = (const char *) keys[6];
    p = ngx_sprintf(keys[6], "{r:%uL}:", room);
    argvlen[6] = ngx_http_minichat_room_idem_key(p, ngx_http_minichat_now_ms(), 0) - keys[6];
    argv[7] = (const char *) keys[7];
    argvlen[7] = ngx_sprintf(keys[7], "{r:%uL}:gen", room) - keys[7];
    argv[8] = (const char *) keys[8];
    argvlen[8] = ngx_sprintf(keys[8], "{r:%uL}:logbytes", room) - keys[8];
    argv[9] = (const char *) keys[9];
    argvlen[9] = ngx_sprintf(keys[9], "{r:%uL}:mver", room) - keys[9];

    p = nums;
    k = 10;

#define ngx_http_minichat_push(fmt, ...)                                       \
    argv[k] = (const char *) p;                                                \
    p = ngx_sprintf(p, fmt, __VA_ARGS__);                                      \
    argvlen[k] = p - (u_char *) argv[k];                                       \
    k++

    ngx_http_minichat_push("%uL", (uint64_t) st->last_seq);

    argv[k] = (const char *) epoch;
    argvlen[k] = ngx_sprintf(epoch, "%08xD", (uint32_t) ngx_random()) - epoch;
    k++;

    ngx_http_minichat_push("%uz", st->n_members);
    for (i = 0; i < st->n_members; i++) {
        ngx_http_minichat_push("%uL", (uint64_t) st->members[i]);
    }

    ngx_http_minichat_push("%uz", st->n_left);
    for (i = 0; i < st->n_left; i++) {
        ngx_http_minichat_push("%uL", (uint64_t) st->left[i]);
        ngx_http_minichat_push("%uL", (uint64_t) st->left_seq[i]);
    }

    ngx_http_minichat_push("%uz", st->n_read_user);
    for (i = 0; i < st->n_read_user; i++) {
        ngx_http_minichat_push("%uL", (uint64_t) st->read_user[i]);
        ngx_http_minichat_push("%uL", (uint64_t) st->read_seq[i]);
    }

    ngx_http_minichat_push("%uz", st->n_idem_cid);
    for (i = 0; i < st->n_idem_cid; i++) {
        ngx_http_minichat_push("%uL:%s", (uint64_t) st->idem_sender[i], st->idem_cid[i]);
        ngx_http_minichat_push("%uL:%uL", (uint64_t) st->idem_seq[i], (uint64_t) st->idem_ts[i]);
    }

    ngx_http_minichat_push("%T", mcf->idem_ttl);

    /* a fresh members version (lua/load.lua): 62 random bits, so that INCR
     * never overflows and a rebuilt set does not meet a version a worker
     * holds from before */
    ngx_http_minichat_push("%uL", (((uint64_t) ngx_random() << 31) ^ (uint64_t) ngx_random()) & 0x3fffffffffffffffULL);

#undef ngx_http_minichat_push

    rc = ngx_http_minichat_redis_script_gen(MINICHAT_LUA_LOAD_SHA1, MINICHAT_LUA_LOAD_SRC, 10, (int) k, argv, argvlen,
                                            handler, data);

done:

    if (argv) {
        ngx_free(argv);
    }
    if (argvlen) {
        ngx_free(argvlen);
    }
    if (nums) {
        ngx_free(nums);
    }

    return rc;
}


ngx_int_t
ngx_http_minichat_room_load_new(uint64_t room, uint64_t *members, size_t n, ngx_http_minichat_redis_pt handler,
    void *data)
{
    Minichat__RoomStateResult  st = MINICHAT__ROOM_STATE_RESULT__INIT;

    st.found = 1;
    st.members = members;
    st.n_members = n;

    return ngx_http_minichat_room_load(room, &st, handler, data);
}


u_char *
ngx_http_minichat_room_idem_key(u_char *p, uint64_t ts, ngx_uint_t back)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    uint64_t                        bucket;

    bucket = ts / ((uint64_t) mcf->idem_ttl * 1000);

    return ngx_sprintf(p, "idem:%uL", bucket - back);
}


static void
ngx_http_minichat_room_loaded(redisReply *reply, void *data)
{
    ngx_http_minichat_room_call_t  *call = data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: room %uL: load script failed: %s", call->room,
                      reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no reply");
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
        return;
    }

    if (reply->integer == 1 || reply->integer == 2) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0, "minichat: room %uL %s from mysql", call->room,
                      reply->integer == 1 ? "loaded into redis" : "revalidated");
    }

    if (ngx_http_minichat_room_run(call) != NGX_OK) {
        ngx_http_minichat_room_done(call, NULL, NGX_ERROR);
    }
}


static void
ngx_http_minichat_room_done(ngx_http_minichat_room_call_t *call, redisReply *reply, ngx_int_t rc)
{
    call->handler(reply, rc, call->data);
    ngx_free(call);
}


uint64_t
ngx_http_minichat_reply_id(redisReply *r)
{
    uint64_t  v;

    if (r->type == REDIS_REPLY_INTEGER) {
        return r->integer > 0 ? (uint64_t) r->integer : 0;
    }

    if (r->type != REDIS_REPLY_STRING || r->len > 20 || mc_parse_u64(r->str, r->len, &v) != 0) {
        return 0;
    }

    return v;
}


/* Collects the member ids of a comma-separated list (send.lua's one
 * string: "11,12,13"); ids that do not parse are skipped.  Returns the
 * count, with *out allocated (NULL when zero), or -1 when out of memory. */
static ngx_int_t
ngx_http_minichat_reply_id_list(const char *s, size_t len, uint64_t **out)
{
    const char  *p, *end = s + len, *comma;
    size_t       n, cap;
    uint64_t    *ids, v;

    *out = NULL;

    if (len == 0) {
        return 0;
    }

    for (p = s, cap = 1; p < end; p++) {
        cap += *p == ',';
    }

    ids = ngx_alloc(cap * sizeof(uint64_t), ngx_cycle->log);
    if (ids == NULL) {
        return -1;
    }

    for (p = s, n = 0; p < end; p = comma + 1) {
        comma = memchr(p, ',', end - p);
        if (comma == NULL) {
            comma = end;
        }
        if (comma - p <= 20 && mc_parse_u64(p, comma - p, &v) == 0 && v) {
            ids[n++] = v;
        }
    }

    *out = ids;
    return (ngx_int_t) n;
}


/* Collects the member ids of reply->element[from..] (one id each), or of
 * the one comma-separated string there; returns the count, with *out
 * allocated (NULL when zero), or -1 when out of memory. */
ngx_int_t
ngx_http_minichat_reply_ids(redisReply *reply, size_t from, uint64_t **out)
{
    size_t     i, n;
    uint64_t  *ids;

    *out = NULL;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements <= from) {
        return 0;
    }

    if (reply->elements == from + 1 && reply->element[from]->type == REDIS_REPLY_STRING) {
        return ngx_http_minichat_reply_id_list(reply->element[from]->str, reply->element[from]->len, out);
    }

    ids = ngx_alloc((reply->elements - from) * sizeof(uint64_t), ngx_cycle->log);
    if (ids == NULL) {
        return -1;
    }

    for (i = from, n = 0; i < reply->elements; i++) {
        ids[n] = ngx_http_minichat_reply_id(reply->element[i]);
        if (ids[n]) {
            n++;
        }
    }

    *out = ids;
    return (ngx_int_t) n;
}
