/*
 * Admitting a message into a room, and the `send` op.
 *
 * lua/send.lua (through the room layer, so a room Redis lost is rebuilt
 * first) checks membership, deduplicates by (sender, cid) and assigns the
 * room's next seq.  The message then goes to the relay-worker, which
 * produces it to Kafka and fans it out to every node's workers in room
 * order (this worker included: the sending connection is skipped there, it
 * gets the ack instead).  The handler runs once the relay-worker says Kafka
 * has it: only then is the message acked, so an ack means it will reach
 * MySQL.  A repeated cid is answered with the first seq and published again
 * for persistence only, which repairs a first hand-off that failed.
 *
 * System messages (a leave, a join, the server API's publish) take the same
 * path with kind "system"; the server API's have sender 0, a member of no
 * room (send.lua lets it in and moves no read pointer for it).
 *
 * Limits: a `send` first runs the sender's ban check and per-user limit
 * (lua/limit.lua on the {u:<user>} slot, whatever is configured: a ban
 * whose event never reached this connection is still refused); a refusal
 * or a ban answers at once and send.lua does not run.  With a single Redis
 * both run in one call (send_limited.lua, built from the two scripts: one
 * round trip per send); a Redis Cluster has the user's keys and the room's
 * on different slots, so there limit.lua is a round trip of its own before
 * send.lua.  The room's limit rides inside send.lua (same slot, no extra
 * round trip) and refuses before a seq is spent.  System messages are not
 * limited.
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"


typedef struct {
    ngx_http_minichat_sent_pt   handler;
    void                       *data;
    uint64_t                    room;
    uint64_t                    sender;
    uint64_t                    origin_conn;
    uint64_t                    ts;
    uint64_t                    admitted;   /* wall ms: the send script's last issue */
    uint64_t                    seq;
    ngx_uint_t                  system;
    ngx_uint_t                  limit;     /* send_limited.lua: the sender's check rides along */
    ngx_http_minichat_members_t *members;  /* held: its version went to send.lua */
    ngx_str_t                   cid;
    ngx_str_t                   body;
} ngx_http_minichat_admit_t;


/* The `send` op of one connection, waiting for its ack. */
typedef struct {
    ngx_http_minichat_req_t     rq;
    size_t                      cid_len;
    u_char                      cid[NGX_HTTP_MINICHAT_CID_MAX];
    uint64_t                    room;
    ngx_uint_t                  limit;    /* the ban and limit checked in send_limited.lua */
    ngx_str_t                   body;     /* a copy, while the ban and limit are checked */
} ngx_http_minichat_send_t;


static void ngx_http_minichat_admitted(redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_minichat_published(Minichat__LocalFrame *result, void *data);
static void ngx_http_minichat_admit_done(ngx_http_minichat_admit_t *a, ngx_int_t rc, const char *code,
    const char *text);
static void ngx_http_minichat_send_done(ngx_int_t rc, const char *code, const char *text, uint64_t seq,
    uint64_t ts, void *data);
static void ngx_http_minichat_send_limited(ngx_int_t rc, uint64_t value, void *data);
static ngx_int_t ngx_http_minichat_send_admit(ngx_http_minichat_send_t *s);




ngx_int_t
ngx_http_minichat_message_send(ngx_http_minichat_message_t *m, ngx_http_minichat_sent_pt handler, void *data)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    ngx_http_minichat_admit_t      *a;
    ngx_http_minichat_script_t      script;
    const char                     *args[1 + NGX_HTTP_MINICHAT_LIMIT_ARGS_MAX + 12], **av, *keys[14];
    size_t                          lens[1 + NGX_HTTP_MINICHAT_LIMIT_ARGS_MAX + 12], *al, kl[3];
    ngx_str_t                       ver;
    ngx_uint_t                      nl, k;
    u_char                          nums[9][NGX_INT64_LEN + 1];
    u_char                          lkeys[3][NGX_HTTP_MINICHAT_LIMIT_KEY_LEN];
    u_char                          idem[2][sizeof("idem:") + NGX_INT64_LEN];
    u_char                          pend[NGX_HTTP_MINICHAT_DURABLE_KEY_LEN];

    if (!ngx_http_minichat_relay_ready()) {
        /* without the relay the message could not be persisted: refuse it
         * before a seq is spent */
        return NGX_DECLINED;
    }

    a = ngx_alloc(sizeof(ngx_http_minichat_admit_t) + m->cid.len + m->body.len + 2, ngx_cycle->log);
    if (a == NULL) {
        return NGX_ERROR;
    }

    a->handler = handler;
    a->data = data;
    a->room = m->room;
    a->sender = m->sender;
    a->origin_conn = m->origin_conn;
    a->ts = ngx_http_minichat_now_ms();
    a->admitted = a->ts;
    a->seq = 0;
    a->system = (m->kind && ngx_strcmp(m->kind, "system") == 0);
    a->limit = m->limit;
    a->members = ngx_http_minichat_members_hold(a->room);
    a->cid.data = (u_char *) (a + 1);
    a->cid.len = m->cid.len;
    a->body.data = a->cid.data + m->cid.len + 1;
    a->body.len = m->body.len;
    *ngx_cpymem(a->cid.data, m->cid.data, m->cid.len) = '\0';
    *ngx_cpymem(a->body.data, m->body.data, m->body.len) = '\0';

    /* with the sender's check: limit.lua's keys first, and its values,
     * after their count, before send.lua's */
    k = 0;
    nl = 0;
    av = args;
    al = lens;
    if (a->limit) {
        nl = ngx_http_minichat_limit_user_args(a->sender, NGX_HTTP_MINICHAT_LIMIT_MESSAGES, lkeys, keys, kl,
                                               &args[1], &lens[1]);
        for (k = 0; k < 3; k++) {
            /* the room layer takes keys that start with '{' as they are */
            lkeys[k][kl[k]] = '\0';
        }
        args[0] = (const char *) nums[8];
        lens[0] = ngx_sprintf(nums[8], "%ui", nl) - nums[8];
        av = &args[1 + nl];
        al = &lens[1 + nl];
    }

    /* sender, cid, body, ts, log_max, idem_ttl, room, kind, (the room's limit), log_bytes, held_mver */
    av[0] = (const char *) nums[0];
    al[0] = ngx_sprintf(nums[0], "%uL", a->sender) - nums[0];
    av[1] = (const char *) a->cid.data;
    al[1] = a->cid.len;
    av[2] = (const char *) a->body.data;
    al[2] = a->body.len;
    av[3] = (const char *) nums[1];
    al[3] = ngx_sprintf(nums[1], "%uL", a->ts) - nums[1];
    av[4] = (const char *) nums[2];
    al[4] = ngx_sprintf(nums[2], "%ui", mcf->log_max) - nums[2];
    av[5] = (const char *) nums[3];
    al[5] = ngx_sprintf(nums[3], "%T", mcf->idem_ttl) - nums[3];
    av[6] = (const char *) nums[4];
    al[6] = ngx_sprintf(nums[4], "%uL", a->room) - nums[4];
    av[7] = a->system ? "system" : "text";
    al[7] = ngx_strlen(av[7]);
    /* the room's rate limit: interval_us, burst (system messages: none) */
    av[8] = (const char *) nums[5];
    av[9] = (const char *) nums[6];
    if (a->system) {
        av[8] = "0";
        al[8] = 1;
        av[9] = "0";
        al[9] = 1;
    } else {
        ngx_http_minichat_limit_room_args(nums[5], &al[8], nums[6], &al[9]);
    }
    av[10] = (const char *) nums[7];
    al[10] = ngx_sprintf(nums[7], "%uz", mcf->log_bytes) - nums[7];
    ver = ngx_http_minichat_members_version(a->members);
    av[11] = (const char *) ver.data;
    al[11] = ver.len;

    /* the cid buckets of now and of the interval before */
    keys[k + 0] = "members";
    keys[k + 1] = "seq";
    keys[k + 2] = (const char *) idem[0];
    keys[k + 3] = (const char *) idem[1];
    keys[k + 4] = "log";
    keys[k + 5] = "read";
    keys[k + 6] = "rl";
    keys[k + 7] = "gen";
    keys[k + 8] = "logbytes";
    *ngx_http_minichat_durable_key(pend, a->room) = '\0';
    keys[k + 9] = (const char *) pend;
    keys[k + 10] = "mver";
    *ngx_http_minichat_room_idem_key(idem[0], a->ts, 0) = '\0';
    *ngx_http_minichat_room_idem_key(idem[1], a->ts, 1) = '\0';

    script.sha1 = a->limit ? MINICHAT_LUA_SEND_LIMITED_SHA1 : MINICHAT_LUA_SEND_SHA1;
    script.src = a->limit ? MINICHAT_LUA_SEND_LIMITED_SRC : MINICHAT_LUA_SEND_SRC;
    script.nkeys = k + 11;
    script.keys = keys;
    script.gen = 1;
    script.issued = &a->admitted;

    if (ngx_http_minichat_room_script(a->room, &script, (a->limit ? 1 + nl : 0) + 12, args, lens,
                                      ngx_http_minichat_admitted, a)
        != NGX_OK)
    {
        ngx_http_minichat_members_release(a->members);
        ngx_free(a);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_admitted(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_admit_t      *a = data;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    Minichat__LocalFrame            f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__ChatMessage           m = MINICHAT__CHAT_MESSAGE__INIT;
    const uint64_t                 *recipients;
    long long                       status;
    uint64_t                        after;
    size_t                          n;

    if (rc == NGX_DECLINED) {
        ngx_http_minichat_admit_done(a, NGX_DECLINED, "not_found", "no such room");
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_minichat_admit_done(a, NGX_ERROR, "unavailable", "storage unavailable; retry with the same cid");
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 || reply->element[0]->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: unexpected reply from send script");
        ngx_http_minichat_admit_done(a, NGX_ERROR, "unavailable", "storage error; retry");
        return;
    }

    status = reply->element[0]->integer;

    if (a->limit && status == -5) {
        /* send_limited.lua: the sender's limit or ban refused it */
        rc = ngx_http_minichat_limit_verdict(a->sender, NGX_HTTP_MINICHAT_LIMIT_MESSAGES, reply, 1, &a->seq);
        if (rc == NGX_BUSY || rc == NGX_DECLINED) {
            ngx_http_minichat_admit_done(a, rc, NULL, NULL);
            return;
        }
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: unexpected limit status from send script");
        ngx_http_minichat_admit_done(a, NGX_ERROR, "unavailable", "storage error; retry");
        return;
    }

    if (a->limit && status == -6 && reply->elements == 2 && reply->element[1]->type == REDIS_REPLY_ARRAY
        && reply->element[1]->elements >= 1 && reply->element[1]->element[0]->type == REDIS_REPLY_INTEGER)
    {
        /* allowed, and a ban of the sender's had run out: MySQL hears of it */
        (void) ngx_http_minichat_ban_record(a->sender, 0, 0, 0, 0, NULL, NULL);
        reply = reply->element[1];
        status = reply->element[0]->integer;
    }

    if (status == -1) {
        ngx_http_minichat_admit_done(a, NGX_DECLINED, "forbidden", "not a member of this room");
        return;
    }

    if (status == -3) {
        /* the room's limit: the handler gets retry_after_ms in seq */
        a->seq = (reply->elements >= 2 && reply->element[1]->type == REDIS_REPLY_INTEGER
                  && reply->element[1]->integer > 0) ? (uint64_t) reply->element[1]->integer : 1;
        ngx_http_minichat_count(limited[NGX_HTTP_MINICHAT_LIMITED_ROOM_MESSAGES], 1);
        ngx_http_minichat_admit_done(a, NGX_BUSY, "rate_limited", "too many messages in this room; retry after "
                                     "retry_after_ms");
        return;
    }

    if ((status != 1 && status != 2) || reply->elements < 4
        || reply->element[1]->type != REDIS_REPLY_INTEGER || reply->element[2]->type != REDIS_REPLY_INTEGER
        || reply->element[3]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "minichat: unexpected status %L from send script", status);
        ngx_http_minichat_admit_done(a, NGX_ERROR, "unavailable", "storage error; retry");
        return;
    }

    a->seq = (uint64_t) reply->element[1]->integer;
    a->ts = (uint64_t) reply->element[2]->integer;
    after = reply->element[3]->integer > 0 ? (uint64_t) reply->element[3]->integer : 0;

    ngx_http_minichat_count(sends, 1);

    /* a retry (status 2) is published again as a repair: the reorderers
     * deliver it where it was never delivered, so it needs the members too */
    if (ngx_http_minichat_members_reply(a->room, &a->members, reply, 4) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: room %uL seq %uL: no members from send script",
                      a->room, a->seq);
        ngx_http_minichat_admit_done(a, NGX_ERROR, "unavailable", "storage error; retry with the same cid");
        return;
    }
    recipients = ngx_http_minichat_members_ids(a->members, &n);

    if (status == 1 && a->sender != 0) {
        /* send.lua moved the sender's read pointer: MySQL gets it too (the
         * server API's sender 0 has none) */
        ngx_http_minichat_read_mark(a->room, a->sender, a->seq);
    }

    m.room = a->room;
    m.seq = a->seq;
    m.sender = a->sender;
    m.cid = (char *) a->cid.data;
    m.body = (char *) a->body.data;
    m.ts = a->ts;
    m.recipients = (uint64_t *) recipients;
    m.n_recipients = n;
    m.members_ver = ngx_http_minichat_members_ver(a->members);
    m.origin_node = (char *) mcf->node.data;
    m.origin_conn = a->origin_conn;
    m.persist_only = (status == 2);
    m.admitted_at = a->admitted;
    m.after_ms = after;
    /* the sending connection is the sender's only one here: this worker
     * needs no msg back for the sender.  Asked now, after the seq was
     * assigned: a connection of the sender's that opens later sends its
     * session script after that, so a resume after its hello replays it */
    m.origin_alone = a->origin_conn != 0 && ngx_http_minichat_registry_alone(a->sender, a->origin_conn);
    m.kind = a->system ? "system" : "";

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_PUBLISH;
    f.publish = &m;

    /* the ack waits for the relay-worker's word that Kafka has the message */
    rc = ngx_http_minichat_relay_request(&f, ngx_http_minichat_published, a);

    /* the request holds a packed copy: the list is not needed past here */
    ngx_http_minichat_members_release(a->members);
    a->members = NULL;

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "minichat: room %uL seq %uL admitted but not handed to the relay-worker; "
                      "a retry with the same cid repairs it", a->room, a->seq);
        ngx_http_minichat_admit_done(a, NGX_ERROR, "unavailable", "relay-worker unavailable; retry with the same cid");
    }
}


/* The relay-worker's answer to a publish: the message is durable in Kafka,
 * or not (the client retries with the same cid). */
static void
ngx_http_minichat_published(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_admit_t  *a = data;

    if (result == NULL || result->publish_result == NULL || !result->publish_result->ok) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "minichat: room %uL seq %uL not confirmed durable: %s", a->room, a->seq,
                      result && result->publish_result ? result->publish_result->error
                                                       : "no answer from relay-worker");
        ngx_http_minichat_admit_done(a, NGX_ERROR, "unavailable", "message not stored; retry with the same cid");
        return;
    }

    /* durable: the sweeper need not publish it again */
    ngx_http_minichat_durable_done(a->room, a->seq);

    ngx_http_minichat_admit_done(a, NGX_OK, NULL, NULL);
}


static void
ngx_http_minichat_admit_done(ngx_http_minichat_admit_t *a, ngx_int_t rc, const char *code, const char *text)
{
    a->handler(rc, code, text, a->seq, a->ts, a->data);
    ngx_http_minichat_members_release(a->members);
    ngx_free(a);
}


ngx_int_t
ngx_http_minichat_op_send(ngx_http_minichat_req_t *rq, const mc_op_t *op)
{
    ngx_http_minichat_ws_t       *ws = rq->ws;
    ngx_http_minichat_send_t  *s;
    ngx_int_t                  rc;

    if (ws->pending >= NGX_HTTP_MINICHAT_MAX_INFLIGHT) {
        return ngx_http_minichat_req_error(rq, "rate_limited", "too many requests awaiting their answer; wait");
    }

    /* the body waits in a copy for the ban check's and limit's answer */
    s = ngx_alloc(sizeof(ngx_http_minichat_send_t) + op->body_len, ws->connection->log);
    if (s == NULL) {
        return ngx_http_minichat_req_error(rq, "unavailable", "out of memory");
    }
    s->body.len = op->body_len;
    s->body.data = (u_char *) (s + 1);
    ngx_memcpy(s->body.data, op->body, s->body.len);

    s->rq = *rq;
    s->room = op->room;
    s->cid_len = op->cid_len;
    ngx_memcpy(s->cid, op->cid, s->cid_len);

    /* one Redis holds the sender's keys and the room's: the check rides in
     * send.lua's call (send_limited.lua), one round trip */
    s->limit = ngx_http_minichat_conf()->redis_seeds == NULL && ngx_http_minichat_redis_ready();

    if (!s->limit) {
        rc = ngx_http_minichat_limit_user(ws->user, NGX_HTTP_MINICHAT_LIMIT_MESSAGES, ngx_http_minichat_send_limited,
                                          s);
        if (rc == NGX_OK) {
            ws->pending++;
            return NGX_OK;
        }
        if (rc == NGX_ERROR) {
            ngx_free(s);
            return ngx_http_minichat_req_error(rq, "unavailable", "storage unavailable; retry");
        }
        /* Redis is down and the policy is open: send.lua will say */
    }

    if (ngx_http_minichat_send_admit(s) != NGX_OK) {
        ngx_free(s);
        return NGX_OK;
    }

    ws->pending++;

    return NGX_OK;
}


/* The ban check and per-user limit answered: admit the message, or refuse it.  A message
 * sent before the client closed is admitted all the same (as without a
 * limit); only the answer is lost. */
static void
ngx_http_minichat_send_limited(ngx_int_t rc, uint64_t value, void *data)
{
    ngx_http_minichat_send_t  *s = data;
    ngx_http_minichat_ws_t    *ws = s->rq.ws;

    if (rc != NGX_OK) {
        if (!ws->closed) {
            (void) ngx_http_minichat_req_limited(&s->rq, rc, value);
        }
        ngx_free(s);

    } else if (ngx_http_minichat_send_admit(s) != NGX_OK) {
        ngx_free(s);

    } else {
        /* send_done ends it; the pending count carries over */
        return;
    }

    ws->pending--;
    ngx_http_minichat_conn_release(ws);
}


/* Admits the message of a send whose ban check and per-user limit allowed
 * it (or could not be asked, with minichat_limit_redis_down open); an
 * error is answered here. */
static ngx_int_t
ngx_http_minichat_send_admit(ngx_http_minichat_send_t *s)
{
    ngx_http_minichat_message_t  m;
    ngx_int_t                    rc;

    ngx_memzero(&m, sizeof(m));
    m.room = s->room;
    m.sender = s->rq.ws->user;
    m.origin_conn = s->rq.ws->id;
    m.kind = "text";
    m.cid.data = s->cid;
    m.cid.len = s->cid_len;
    m.body = s->body;
    m.limit = s->limit;

    rc = ngx_http_minichat_message_send(&m, ngx_http_minichat_send_done, s);
    if (rc != NGX_OK) {
        (void) ngx_http_minichat_req_error(&s->rq, "unavailable", rc == NGX_DECLINED
                                                                  ? "relay-worker not connected; retry"
                                                                  : "storage unavailable; retry");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_minichat_send_done(ngx_int_t rc, const char *code, const char *text, uint64_t seq, uint64_t ts,
    void *data)
{
    ngx_http_minichat_send_t  *s = data;
    ngx_http_minichat_ws_t    *ws = s->rq.ws;
    u_char                     ack[sizeof(",\"room\":,\"cid\":\"\",\"seq\":,\"ts\":") + 3 * NGX_INT64_LEN
                                   + 6 * NGX_HTTP_MINICHAT_CID_MAX];
    u_char                    *p;

    if (!ws->closed) {
        if (code == NULL && rc != NGX_OK) {
            /* the sender's limit or ban, checked in the same call */
            (void) ngx_http_minichat_req_limited(&s->rq, rc, seq);

        } else if (rc == NGX_OK) {
            p = ngx_sprintf(ack, ",\"room\":%uL,\"cid\":\"", s->room);
            p = ngx_http_minichat_json_escape(p, s->cid, s->cid_len);
            p = ngx_sprintf(p, "\",\"seq\":%uL,\"ts\":%uL", seq, ts);
            if (ngx_http_minichat_req_reply(&s->rq, "ack", ack, p - ack) == NGX_OK) {
                ngx_http_minichat_count(acks, 1);
            }

        } else if (rc == NGX_BUSY) {
            (void) ngx_http_minichat_conn_error_num(ws, s->rq.id, s->rq.has_id, code, text, "retry_after_ms", seq);

        } else {
            (void) ngx_http_minichat_req_error(&s->rq, code, text);
        }
    }

    ngx_free(s);
    ws->pending--;
    ngx_http_minichat_conn_release(ws);
}
