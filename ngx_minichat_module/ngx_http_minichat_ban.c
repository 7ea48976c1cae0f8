/*
 * Bans and disconnects, whoever decides them: a strike (_limit.c, through
 * lua/limit.lua) or the app's backend (the server API, _server_api.c).
 *
 * A ban has three parts, and each has one place here:
 *
 *   Redis     {u:<user>}:ban and the `until` of {u:<user>}:strikes: written
 *             by limit.lua for a strike, by lua/ban.lua for a ban or a lift
 *             by hand (minichat-ban runs the same script), read by
 *             limit.lua at every upgrade and, with a per-user limit
 *             configured, every send and REST request;
 *   the nodes a "ban" event through the relay-worker to every worker of
 *             every node (this one too): each closes the user's
 *             connections with 4003 (_registry.c); a "disconnect" event
 *             closes them with 4005 and bans nothing;
 *   MySQL     a BanRequest through the relay-worker: users.status,
 *             banned_until and strikes (relay-worker/queries_users.c).
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"


typedef struct {
    ngx_http_minichat_ban_pt     handler;
    void                        *data;
} ngx_http_minichat_ban_call_t;


typedef struct {
    ngx_http_minichat_recorded_pt  handler;
    void                          *data;
    uint64_t                       user;
} ngx_http_minichat_ban_record_t;


static void ngx_http_minichat_ban_reply(redisReply *reply, void *data);
static void ngx_http_minichat_ban_recorded(Minichat__LocalFrame *result, void *data);


ngx_int_t
ngx_http_minichat_ban_script(uint64_t user, const char *op, uint64_t dur_ms, ngx_http_minichat_ban_pt handler,
    void *data)
{
    ngx_http_minichat_ban_call_t  *call;
    const char                    *av[4];
    size_t                         al[4];
    u_char                         keys[2][sizeof("{u:}:strikes") + NGX_INT64_LEN];
    u_char                         dur[NGX_INT64_LEN];

    if (!ngx_http_minichat_redis_ready()) {
        return NGX_ERROR;
    }

    av[0] = (const char *) keys[0];
    al[0] = ngx_sprintf(keys[0], "{u:%uL}:ban", user) - keys[0];
    av[1] = (const char *) keys[1];
    al[1] = ngx_sprintf(keys[1], "{u:%uL}:strikes", user) - keys[1];
    av[2] = op;
    al[2] = ngx_strlen(op);
    av[3] = (const char *) dur;
    al[3] = ngx_sprintf(dur, "%uL", dur_ms) - dur;

    call = ngx_alloc(sizeof(ngx_http_minichat_ban_call_t), ngx_cycle->log);
    if (call == NULL) {
        return NGX_ERROR;
    }
    call->handler = handler;
    call->data = data;

    if (ngx_http_minichat_redis_script(MINICHAT_LUA_BAN_SHA1, MINICHAT_LUA_BAN_SRC, 2, 4, av, al,
                                       ngx_http_minichat_ban_reply, call)
        != NGX_OK)
    {
        ngx_free(call);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_ban_reply(redisReply *reply, void *data)
{
    ngx_http_minichat_ban_call_t  *call = data;
    ngx_http_minichat_ban_pt       handler = call->handler;
    void                          *hdata = call->data;
    ngx_http_minichat_ban_state_t  st;
    size_t                         i;

    ngx_free(call);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        if (reply) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: ban script failed: %s",
                          reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        }
        handler(NGX_ERROR, NULL, hdata);
        return;
    }

    for (i = 0; i < 3; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER || reply->element[i]->integer < 0) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: unexpected reply from ban script");
            handler(NGX_ERROR, NULL, hdata);
            return;
        }
    }

    st.banned = reply->element[0]->integer != 0;
    st.until = (uint64_t) reply->element[1]->integer;
    st.strikes = (ngx_uint_t) reply->element[2]->integer;

    handler(NGX_OK, &st, hdata);
}


ngx_int_t
ngx_http_minichat_ban_announce(uint64_t user, const char *kind, uint64_t until, const ngx_str_t *reason)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    Minichat__ChatMessage           e = MINICHAT__CHAT_MESSAGE__INIT;
    u_char                          text[NGX_HTTP_MINICHAT_REASON_MAX + 1];

    e.kind = (char *) kind;
    e.sender = user;
    e.recipients = &user;
    e.n_recipients = 1;
    e.ban_until = until;
    e.origin_node = (char *) mcf->node.data;

    if (reason && reason->len) {
        *ngx_cpymem(text, reason->data, ngx_min(reason->len, NGX_HTTP_MINICHAT_REASON_MAX)) = '\0';
        e.body = (char *) text;
    }

    if (ngx_http_minichat_event_send(&e) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "minichat: %s of user %uL not announced: relay-worker unavailable", kind, user);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_minichat_ban_record(uint64_t user, ngx_uint_t banned, ngx_uint_t lift, uint64_t until,
    ngx_uint_t strikes, ngx_http_minichat_recorded_pt handler, void *data)
{
    Minichat__LocalFrame             f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__BanRequest             br = MINICHAT__BAN_REQUEST__INIT;
    ngx_http_minichat_ban_record_t  *rec;

    br.user = user;
    br.banned = banned;
    br.lift = lift;
    br.strikes = strikes;
    /* an expired ban: whatever ban MySQL holds that ended by now */
    br.until = banned ? until : ngx_http_minichat_now_ms();

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_BAN;
    f.ban = &br;

    rec = ngx_alloc(sizeof(ngx_http_minichat_ban_record_t), ngx_cycle->log);
    if (rec == NULL) {
        return NGX_ERROR;
    }
    rec->handler = handler;
    rec->data = data;
    rec->user = user;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_ban_recorded, rec) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "minichat: ban state of user %uL not recorded in mysql: relay-worker unavailable", user);
        ngx_free(rec);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_ban_recorded(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_ban_record_t  *rec = data;
    ngx_http_minichat_recorded_pt    handler = rec->handler;
    void                            *hdata = rec->data;
    ngx_int_t                        rc = NGX_OK;

    if (result == NULL || result->ban_result == NULL || (result->ban_result->error && result->ban_result->error[0])) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: ban state of user %uL not recorded in mysql: %s",
                      rec->user, result && result->ban_result ? result->ban_result->error
                                                              : "no answer from relay-worker");
        rc = NGX_ERROR;
    }

    ngx_free(rec);

    if (handler) {
        handler(rc, hdata);
    }
}
