/*
 * Messages admitted but not known durable, and their repair.
 *
 * send.lua notes each new message as "<room>:<seq>" in the pending index of
 * the room's cluster slot ({<tag>}:pend, a sorted set by the send's wall
 * time; the tag is redis_slot.h's for the room's slot, so the script writes
 * it on the room's own slot).  When the relay-worker answers that Kafka has
 * the message, the worker that sent it takes the note out (one ZREM, not
 * waited for).  A note stays when the hand-off failed: the worker crashed
 * between Redis and the relay-worker, the unix link dropped, Kafka timed
 * out, the relay-worker refused the message as too old.
 *
 * With one Redis (no cluster) every room uses slot 0's index.
 *
 * The sweeper (worker 0 of each node) walks the 16384 indexes of a cluster,
 * a few per tick, one full pass every minichat_repair_after (one Redis: its
 * one index every tick), asking each for notes older than
 * minichat_repair_after.  For each, repair.lua (on the
 * room's slot, generation checked like send.lua) answers the message from
 * the room's recent log and the room's members; the sweeper publishes it
 * again as a repair (persist_only, stamped now), and takes the note out
 * once the relay-worker says Kafka has it.  A message Kafka already had is
 * stored once all the same (the consumer's INSERT IGNORE on (room, seq)),
 * and each node's reorderer delivers a repair only where the seq was
 * skipped, so nobody gets a message twice from a repair it did not need.
 *
 * Racing the normal path is harmless for the same reason: a note older
 * than minichat_repair_after whose first publish is still on its way (a
 * slow Kafka) is published twice and stored once.  Both nodes' sweepers may
 * pick the same note; that too is a repeat, stored once.  What the recent
 * log no longer holds (trimmed past its caps, or lost with the room) cannot
 * be published again: repair.lua drops the note and the sweeper logs it as
 * lost at error level.
 */
#include "ngx_http_minichat_module.h"
#include "lua_scripts.h"
#include "minichat/decimal.h"
#include "minichat/redis_slot.h"


#define NGX_HTTP_MINICHAT_DURABLE_TICK      100    /* ms between sweeper steps */
#define NGX_HTTP_MINICHAT_DURABLE_BATCH_STR "16"   /* notes asked per index per step */
#define NGX_HTTP_MINICHAT_DURABLE_INFLIGHT  64     /* repairs under way at once */


typedef struct {
    uint64_t                         room;
    uint64_t                         seq;
    uint64_t                         issued;   /* when repair.lua was issued (its stamp) */
    ngx_http_minichat_members_t     *members;  /* held: its version went to repair.lua */
} ngx_http_minichat_repair_t;


static void ngx_http_minichat_durable_tick(ngx_event_t *ev);
static void ngx_http_minichat_durable_listed(redisReply *reply, void *data);
static void ngx_http_minichat_durable_repair(uint64_t room, uint64_t seq);
static void ngx_http_minichat_durable_found(redisReply *reply, ngx_int_t rc, void *data);
static void ngx_http_minichat_durable_published(Minichat__LocalFrame *result, void *data);


static ngx_event_t   ngx_http_minichat_durable_ev;
static ngx_uint_t    ngx_http_minichat_durable_next;      /* the next slot's index to ask */
static ngx_uint_t    ngx_http_minichat_durable_inflight;  /* index questions and repairs under way */
static uint64_t      ngx_http_minichat_durable_repaired;
static uint64_t      ngx_http_minichat_durable_lost;


u_char *
ngx_http_minichat_durable_key(u_char *p, uint64_t room)
{
    u_char    hashtag[sizeof("r:") + NGX_INT64_LEN];
    char      tag[MC_REDIS_SLOT_TAG_MAX];
    unsigned  slot;

    if (ngx_http_minichat_conf()->redis_seeds == NULL) {
        /* one Redis: slots do not matter, and one index is one question */
        slot = 0;
    } else {
        slot = mc_redis_slot((const char *) hashtag, ngx_sprintf(hashtag, "r:%uL", room) - hashtag);
    }
    (void) mc_redis_slot_tag(slot, tag);

    return ngx_sprintf(p, "{%s}:pend", tag);
}


void
ngx_http_minichat_durable_done(uint64_t room, uint64_t seq)
{
    ngx_str_t  m;
    u_char     key[NGX_HTTP_MINICHAT_DURABLE_KEY_LEN], member[2 * NGX_INT64_LEN + 2];

    m.data = member;
    m.len = ngx_sprintf(member, "%uL:%uL", room, seq) - member;

    /* write-behind, gathered with the others of this index: a note left
     * behind only costs a repeat, stored once */
    ngx_http_minichat_defer("ZREM", key, ngx_http_minichat_durable_key(key, room) - key, &m, 1);
}


void
ngx_http_minichat_durable_init(ngx_cycle_t *cycle)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();

    if (ngx_worker != 0 || mcf->repair_after == 0 || mcf->relay_path.len == 0) {
        return;
    }

    ngx_memzero(&ngx_http_minichat_durable_ev, sizeof(ngx_event_t));
    ngx_http_minichat_durable_ev.handler = ngx_http_minichat_durable_tick;
    ngx_http_minichat_durable_ev.log = cycle->log;
    ngx_http_minichat_durable_ev.cancelable = 1;
    ngx_http_minichat_durable_next = 0;
    ngx_http_minichat_durable_inflight = 0;
    ngx_add_timer(&ngx_http_minichat_durable_ev, NGX_HTTP_MINICHAT_DURABLE_TICK);
}


void
ngx_http_minichat_durable_exit(void)
{
    if (ngx_http_minichat_durable_ev.timer_set) {
        ngx_del_timer(&ngx_http_minichat_durable_ev);
    }

    if (ngx_http_minichat_durable_repaired || ngx_http_minichat_durable_lost) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0, "minichat: sweeper: %uL messages published again, %uL lost",
                      ngx_http_minichat_durable_repaired, ngx_http_minichat_durable_lost);
    }
}


/* One step: asks the next few indexes for notes older than repair_after. */
static void
ngx_http_minichat_durable_tick(ngx_event_t *ev)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    const char                     *av[7];
    size_t                          al[7];
    ngx_uint_t                      per_step, i;
    u_char                          key[NGX_HTTP_MINICHAT_DURABLE_KEY_LEN], max[NGX_INT64_LEN];
    char                            tag[MC_REDIS_SLOT_TAG_MAX];

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_MINICHAT_DURABLE_TICK);

    if (!ngx_http_minichat_redis_ready() || !ngx_http_minichat_relay_ready()
        || ngx_http_minichat_durable_inflight >= NGX_HTTP_MINICHAT_DURABLE_INFLIGHT)
    {
        return;
    }

    /* a cluster: a full pass over the slots' indexes every repair_after;
     * one Redis: its one index every step */
    if (mcf->redis_seeds == NULL) {
        per_step = 1;
        ngx_http_minichat_durable_next = 0;
    } else {
        per_step = MC_REDIS_SLOTS * NGX_HTTP_MINICHAT_DURABLE_TICK / mcf->repair_after + 1;
    }

    av[0] = "ZRANGEBYSCORE";
    al[0] = sizeof("ZRANGEBYSCORE") - 1;
    av[2] = "-inf";
    al[2] = 4;
    av[3] = (const char *) max;
    al[3] = ngx_sprintf(max, "%uL", ngx_http_minichat_now_ms() - mcf->repair_after) - max;
    av[4] = "LIMIT";
    al[4] = 5;
    av[5] = "0";
    al[5] = 1;
    av[6] = NGX_HTTP_MINICHAT_DURABLE_BATCH_STR;
    al[6] = sizeof(NGX_HTTP_MINICHAT_DURABLE_BATCH_STR) - 1;

    for (i = 0; i < per_step; i++) {
        (void) mc_redis_slot_tag((unsigned) ngx_http_minichat_durable_next, tag);
        ngx_http_minichat_durable_next = (ngx_http_minichat_durable_next + 1) % MC_REDIS_SLOTS;

        av[1] = (const char *) key;
        al[1] = ngx_sprintf(key, "{%s}:pend", tag) - key;

        if (ngx_http_minichat_redis_argv(7, av, al, ngx_http_minichat_durable_listed, NULL) != NGX_OK) {
            return;
        }

        ngx_http_minichat_durable_inflight++;
    }
}


/* An index's old notes: repair each. */
static void
ngx_http_minichat_durable_listed(redisReply *reply, void *data)
{
    uint64_t    room, seq;
    size_t      i;
    redisReply *e;
    u_char     *colon, *end;

    (void) data;

    ngx_http_minichat_durable_inflight--;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        end = (u_char *) e->str + e->len;
        colon = ngx_strlchr((u_char *) e->str, end, ':');
        if (colon == NULL
            || mc_parse_u64(e->str, (size_t) (colon - (u_char *) e->str), &room) != 0
            || mc_parse_u64((const char *) colon + 1, (size_t) (end - colon - 1), &seq) != 0
            || room == 0 || seq == 0)
        {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0, "minichat: sweeper: bad note \"%*s\" ignored",
                          (size_t) ngx_min(e->len, 64), e->str);
            continue;
        }

        ngx_http_minichat_durable_repair(room, seq);
    }
}


static void
ngx_http_minichat_durable_repair(uint64_t room, uint64_t seq)
{
    const char                   *keys[6];
    ngx_http_minichat_script_t    script;
    ngx_http_minichat_repair_t   *rp;
    const char                   *av[3];
    size_t                        al[3];
    ngx_str_t                     ver;
    u_char                        seqs[NGX_INT64_LEN], member[2 * NGX_INT64_LEN + 2];
    u_char                        pend[NGX_HTTP_MINICHAT_DURABLE_KEY_LEN];

    rp = ngx_alloc(sizeof(ngx_http_minichat_repair_t), ngx_cycle->log);
    if (rp == NULL) {
        return;
    }

    rp->room = room;
    rp->seq = seq;
    rp->issued = 0;
    rp->members = ngx_http_minichat_members_hold(room);

    /* the pending index is not a room key: the room layer takes a name
     * starting with '{' as the whole key */
    *ngx_http_minichat_durable_key(pend, room) = '\0';
    keys[0] = "seq";
    keys[1] = "log";
    keys[2] = "members";
    keys[3] = "gen";
    keys[4] = (const char *) pend;
    keys[5] = "mver";

    av[0] = (const char *) seqs;
    al[0] = ngx_sprintf(seqs, "%uL", seq) - seqs;
    av[1] = (const char *) member;
    al[1] = ngx_sprintf(member, "%uL:%uL", room, seq) - member;
    ver = ngx_http_minichat_members_version(rp->members);
    av[2] = (const char *) ver.data;
    al[2] = ver.len;

    script.sha1 = MINICHAT_LUA_REPAIR_SHA1;
    script.src = MINICHAT_LUA_REPAIR_SRC;
    script.nkeys = 6;
    script.keys = keys;
    script.gen = 1;
    script.issued = &rp->issued;

    if (ngx_http_minichat_room_script(room, &script, 3, av, al, ngx_http_minichat_durable_found, rp) != NGX_OK) {
        ngx_http_minichat_members_release(rp->members);
        ngx_free(rp);
        return;
    }

    ngx_http_minichat_durable_inflight++;
}


/* repair.lua answered: publish the message again, or say it is lost. */
static void
ngx_http_minichat_durable_found(redisReply *reply, ngx_int_t rc, void *data)
{
    ngx_http_minichat_repair_t     *rp = data;
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    Minichat__LocalFrame            f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__ChatMessage           m = MINICHAT__CHAT_MESSAGE__INIT;
    const uint64_t                 *recipients;
    json_t                         *entry = NULL, *v;
    json_error_t                    err;
    long long                       status;
    size_t                          n;

    if (rc != NGX_OK || reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        goto done;
    }

    status = reply->element[0]->integer;

    if (status == -5) {
        ngx_http_minichat_durable_lost++;
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "minichat: sweeper: room %uL seq %uL was admitted but never confirmed durable, and the "
                      "recent log no longer holds it: lost", rp->room, rp->seq);
        goto done;
    }

    if (status != 1 || reply->elements < 2 || reply->element[1]->type != REDIS_REPLY_STRING) {
        goto done;   /* 0: confirmed meanwhile */
    }

    entry = json_loadb(reply->element[1]->str, reply->element[1]->len, 0, &err);
    if (entry == NULL || !json_is_object(entry)) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: sweeper: room %uL seq %uL: bad log entry",
                      rp->room, rp->seq);
        goto done;
    }

    if (ngx_http_minichat_members_reply(rp->room, &rp->members, reply, 2) != NGX_OK) {
        goto done;
    }
    recipients = ngx_http_minichat_members_ids(rp->members, &n);

    m.room = rp->room;
    m.seq = rp->seq;
    m.sender = ngx_http_minichat_json_id(json_object_get(entry, "from"));
    v = json_object_get(entry, "cid");
    m.cid = (char *) (json_is_string(v) ? json_string_value(v) : "");
    v = json_object_get(entry, "body");
    m.body = (char *) (json_is_string(v) ? json_string_value(v) : "");
    v = json_object_get(entry, "ts");
    m.ts = json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t) json_integer_value(v) : 0;
    v = json_object_get(entry, "kind");
    m.kind = (char *) (json_is_string(v) && ngx_strcmp(json_string_value(v), "system") == 0 ? "system" : "");
    m.recipients = (uint64_t *) recipients;
    m.n_recipients = n;
    m.members_ver = ngx_http_minichat_members_ver(rp->members);
    m.origin_node = (char *) mcf->node.data;
    m.origin_conn = 0;            /* every connection of the sender gets it too */
    m.persist_only = 1;           /* a repair: delivered only where it was skipped */
    m.admitted_at = rp->issued;   /* repair.lua checked the room's generation then */

    if (m.sender == 0 || m.ts == 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "minichat: sweeper: room %uL seq %uL: log entry without "
                      "sender or ts", rp->room, rp->seq);
        goto done;
    }

    f.body_case = MINICHAT__LOCAL_FRAME__BODY_PUBLISH;
    f.publish = &m;

    if (ngx_http_minichat_relay_request(&f, ngx_http_minichat_durable_published, rp) == NGX_OK) {
        /* the request holds a packed copy of the list */
        ngx_http_minichat_members_release(rp->members);
        rp->members = NULL;
        json_decref(entry);
        return;   /* still in flight */
    }

done:

    ngx_http_minichat_members_release(rp->members);
    if (entry) {
        json_decref(entry);
    }
    ngx_http_minichat_durable_inflight--;
    ngx_free(rp);
}


static void
ngx_http_minichat_durable_published(Minichat__LocalFrame *result, void *data)
{
    ngx_http_minichat_repair_t  *rp = data;

    ngx_http_minichat_durable_inflight--;

    if (result != NULL && result->publish_result != NULL && result->publish_result->ok) {
        ngx_http_minichat_durable_repaired++;
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "minichat: sweeper: room %uL seq %uL was admitted but never confirmed durable; published "
                      "it again", rp->room, rp->seq);
        ngx_http_minichat_durable_done(rp->room, rp->seq);
    }

    ngx_free(rp);
}
