/*
 * The dispatcher: what each LocalFrame from an nginx worker asks for, and
 * which service does it.  The worker link (worker_link.c) hands every frame
 * but `hello` here, with its ownership; this file calls the services (Kafka,
 * the peers, the reorderer, the DB thread) and never the other way round, so
 * calls run one way: link -> dispatcher -> services, and the services answer
 * the workers through the link by connection id.
 *
 *   publish      a chat message with a seq (kind "", "text" or "system",
 *                which travels along to Kafka and the peers): to every
 *                peer and to this node's workers through the per-room
 *                reorderer, and to Kafka, whose delivery report answers
 *                the worker.  With `fanout = admitted` (the default) the
 *                peers and workers get it at once; with `fanout = durable`
 *                only from the delivery report, so nobody sees a message
 *                Kafka has not taken.  A persist_only
 *                publish (a retried send, or the module's sweeper) goes
 *                the same way as a repair: the reorderers release it only
 *                where its seq was skipped (nobody there got it).  A message stamped
 *                (admitted_at) longer than publish_max_age_ms ago is
 *                refused: a Redis failover since may have issued its seq
 *                again; the client's retry gets a fresh stamp.  A
 *                publish that left its member list out (recipients_cached)
 *                gets the list this connection sent before under its
 *                members_ver (minichat/member_slots.h); one it never sent
 *                closes the link.
 *   event        an ephemeral event (kind read, typing, presence, ban or disconnect, seq 0):
 *                every peer (in the same queues and batches as messages) and
 *                every worker of this node as LocalFrame{event}, the origin
 *                worker included (it skips the origin connection); never
 *                Kafka, never the reorderer: an event has no seq to order by
 *                and nothing to persist.
 *   status_req   the relay-worker's status JSON (status.c), answered at once
 *                as LocalFrame{status} with the request's req_id.
 *   create_room, room_state, history, rooms, room_info, invite, leave,
 *   contacts, ban  the DB job queue (db_jobs.c) takes the frame over and
 *                answers the worker from a DB thread.
 *
 * Everything here runs on the main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/buf.h"
#include "minichat/clock.h"
#include "minichat/frame.h"
#include "minichat/log.h"
#include "minichat/relay_queue.h"
#include "relay.h"

/* Packs m as LocalFrame{field = m} with its length header into one malloc'ed
 * buffer; *msg and *msg_len locate the packed ChatMessage inside it (what the
 * peers get).  Returns NULL when out of memory. */
static uint8_t *dispatch_wrap(const Minichat__ChatMessage *m, uint32_t field, size_t *len, uint8_t **msg,
                              size_t *msg_len)
{
    uint8_t hdr[MC_PB_LD_HDR_MAX], *buf;
    size_t n = minichat__chat_message__get_packed_size(m), h;

    h = mc_pb_ld_header(hdr, field, n);
    buf = malloc(MC_FRAME_HDR + h + n);
    if (buf == NULL) {
        return NULL;
    }
    mc_frame_put_header(buf, (uint32_t)(h + n));
    memcpy(buf + MC_FRAME_HDR, hdr, h);
    minichat__chat_message__pack(m, buf + MC_FRAME_HDR + h);
    *len = MC_FRAME_HDR + h + n;
    *msg = buf + MC_FRAME_HDR + h;
    *msg_len = n;
    return buf;
}

/* Fills in a publish's member list when the worker left it out
 * (recipients_cached: the list it sent before under m->members_ver), or
 * keeps the list it carries for later.  Returns 1 when m now borrows the
 * connection's list (dispatch_members_return() before freeing m), 0 when
 * m is as it came, or -1 when the worker left out a list it never sent (its
 * tables and ours disagree: the link starts again). */
static int dispatch_members_take(const link_from_t *from, Minichat__ChatMessage *m)
{
    const uint64_t *ids;
    size_t n = 0;

    if (!m->recipients_cached) {
        if (mc_mslots_store(from->members, m->room, m->members_ver, m->recipients, m->n_recipients) != 0) {
            mc_error("dispatch: out of memory keeping room %llu's member list", (unsigned long long)m->room);
        }
        return 0;
    }
    ids = mc_mslots_find(from->members, m->room, m->members_ver, &n);
    if (ids == NULL) {
        mc_error("dispatch: worker %s/%u left out room %llu's members (version %llu) it never sent; closing its "
                 "link", from->node, from->pid, (unsigned long long)m->room, (unsigned long long)m->members_ver);
        return -1;
    }
    m->recipients = (uint64_t *)ids;
    m->n_recipients = n;
    m->recipients_cached = 0;
    return 1;
}

static void dispatch_members_return(Minichat__ChatMessage *m)
{
    m->recipients = NULL;
    m->n_recipients = 0;
}

/* Names this node as a message's origin unless the worker did.  Returns 0,
 * or -1 when out of memory. */
static int dispatch_set_origin(Minichat__ChatMessage *m)
{
    char *node;

    if (m->origin_node != NULL && m->origin_node[0] != '\0') {
        return 0;
    }
    node = strdup(relay_conf.node);
    if (node == NULL) {
        return -1;
    }
    if (m->origin_node != NULL && m->origin_node != protobuf_c_empty_string) {
        free(m->origin_node); /* "" on the wire; the unset default is static */
    }
    m->origin_node = node; /* freed with the frame */
    return 0;
}

static void dispatch_durable(uint64_t room, uint64_t seq, const kafka_fanout_t *fan);

/* Handles a publish: Kafka, then (unless it only repeats a message for
 * persistence) the peers and this node's workers in room order. */
static void on_publish(const link_from_t *from, Minichat__ChatMessage *m, uint64_t req_id)
{
    kafka_fanout_t fan;
    int64_t age;

    if (m->room == 0 || m->seq == 0) {
        mc_warn("dispatch: worker %s/%u published a message without room or seq, ignored", from->node, from->pid);
        if (req_id) {
            kafka_answer(from->id, req_id, "bad_request: a message needs a room and a seq");
        }
        return;
    }
    if (relay_is_event_kind(m->kind)) {
        mc_warn("dispatch: worker %s/%u published a \"%s\" event as a message, ignored", from->node, from->pid,
                m->kind);
        if (req_id) {
            kafka_answer(from->id, req_id, "bad_request: events travel as LocalFrame.event");
        }
        return;
    }
    if (m->admitted_at) {
        age = mc_wall_ms() - (int64_t)m->admitted_at;
        if (age > relay_conf.publish_max_age_ms) {
            mc_warn("dispatch: room %llu seq %llu was assigned %lld ms ago (publish_max_age_ms %lld): refused",
                    (unsigned long long)m->room, (unsigned long long)m->seq, (long long)age,
                    relay_conf.publish_max_age_ms);
            if (req_id) {
                kafka_answer(from->id, req_id, "unavailable: seq assigned too long ago; retry with the same cid");
            }
            return;
        }
    }
    if (dispatch_set_origin(m) != 0) {
        mc_error("dispatch: out of memory");
        if (req_id) {
            kafka_answer(from->id, req_id, "unavailable: out of memory");
        }
        return;
    }
    /* the message as the workers and peers get it; it may wait for Kafka's word */
    fan.repair = m->persist_only;
    fan.frame = msg_pack(m, &fan.msg.len, &fan.msg.rcpt_off);
    if (fan.frame == NULL) {
        mc_error("dispatch: out of memory");
        if (req_id) {
            kafka_answer(from->id, req_id, "unavailable: out of memory");
        }
        return;
    }
    fan.msg.msg = fan.frame;
    fan.msg.room = m->room;
    fan.msg.ver = m->members_ver;
    fan.msg.n_rcpt = m->n_recipients;
    fan.msg.alone_link = m->origin_alone && !fan.repair ? from->id : 0;
    fan.msg.alone_user = m->sender;
    fan.msg.after_ms = m->after_ms;
    fan.msg.after_skip = 0;
    if (!relay_conf.fanout_durable && !fan.repair) {
        /* fanout = admitted: the recipients get it now, beside Kafka; the
         * sender's ack still waits for Kafka */
        dispatch_durable(m->room, m->seq, &fan);
        free(fan.frame);
        kafka_produce(m, from->id, req_id, NULL);
        return;
    }
    kafka_produce(m, from->id, req_id, &fan);
}

/* A message is durable in Kafka: the peers and this node's workers may
 * have it.  A repair (persist_only: a retried send, or the sweeper's) goes
 * the same way; the reorderers release it only where nobody had it. */
static void dispatch_durable(uint64_t room, uint64_t seq, const kafka_fanout_t *fan)
{
    (void)room; /* fan->msg.room */
    order_push(seq, &fan->msg, fan->repair);
    peers_push_msg(&fan->msg, fan->repair); /* main.c's dispatch() kicks the peers once per round */
}

int dispatch_init(void)
{
    kafka_set_durable_handler(dispatch_durable);
    mc_info("dispatch: recipients get a message %s", relay_conf.fanout_durable
            ? "once Kafka has it (fanout = durable)" : "when it is admitted, beside Kafka (fanout = admitted)");
    return 0;
}

/* Handles an ephemeral event: the peers and every local worker. */
static void on_event(const link_from_t *from, Minichat__ChatMessage *m)
{
    uint8_t *frame, *msg;
    size_t len, msg_len;

    if (!relay_is_event_kind(m->kind) || m->seq != 0
        || (m->room == 0 && strcmp(m->kind, "presence") != 0 && strcmp(m->kind, "ban") != 0
            && strcmp(m->kind, "disconnect") != 0))
    {
        mc_warn("dispatch: worker %s/%u sent an invalid event (kind \"%s\", room %llu, seq %llu), ignored",
                from->node, from->pid, m->kind ? m->kind : "", (unsigned long long)m->room,
                (unsigned long long)m->seq);
        return;
    }
    if (dispatch_set_origin(m) != 0) {
        mc_error("dispatch: out of memory");
        return;
    }
    /* LocalFrame{event = m}: field 22 */
    frame = dispatch_wrap(m, 22, &len, &msg, &msg_len);
    if (frame == NULL) {
        mc_error("dispatch: out of memory, event dropped");
        return;
    }
    if (len > MC_FRAME_HDR + MC_FRAME_MAX) {
        mc_warn("dispatch: event of %zu bytes from worker %s/%u, dropped", len, from->node, from->pid);
        free(frame);
        return;
    }
    link_broadcast(0, frame, len);
    peers_push(msg, msg_len);
    free(frame);
}

/* Answers a status request with the status JSON. */
static void on_status(const link_from_t *from, uint64_t req_id)
{
    Minichat__LocalFrame f = MINICHAT__LOCAL_FRAME__INIT;
    Minichat__StatusResult r = MINICHAT__STATUS_RESULT__INIT;
    mc_buf_t json = MC_BUF_INIT;
    uint8_t *frame;
    size_t len;

    if (relay_status_json(&json) != 0) {
        mc_error("dispatch: out of memory building the status for worker %s/%u", from->node, from->pid);
        return;
    }
    r.json = json.data;
    f.req_id = req_id;
    f.body_case = MINICHAT__LOCAL_FRAME__BODY_STATUS;
    f.status = &r;
    frame = relay_pack_frame(&f, &len);
    mc_buf_free(&json);
    if (frame == NULL) {
        mc_error("dispatch: out of memory answering worker %s/%u's status request", from->node, from->pid);
        return;
    }
    (void)link_send(from->id, frame, len);
    free(frame);
}

int dispatch_frame(const link_from_t *from, Minichat__LocalFrame *f)
{
    int borrowed;

    if (db_jobs_accepts((int)f->body_case)) {
        if (hloop_submit(from->id, f) != 0) {
            db_jobs_submit(from->id, f);
        }
        return 0;
    }
    switch (f->body_case) {
    case MINICHAT__LOCAL_FRAME__BODY_PUBLISH:
        borrowed = dispatch_members_take(from, f->publish);
        if (borrowed < 0) {
            if (f->req_id) {
                kafka_answer(from->id, f->req_id, "unavailable: member list out of step; retry with the same cid");
            }
            minichat__local_frame__free_unpacked(f, NULL);
            return -1;
        }
        on_publish(from, f->publish, f->req_id);
        if (borrowed) {
            dispatch_members_return(f->publish);
        }
        break;
    case MINICHAT__LOCAL_FRAME__BODY_EVENT:
        on_event(from, f->event);
        break;
    case MINICHAT__LOCAL_FRAME__BODY_STATUS_REQ:
        on_status(from, f->req_id);
        break;
    default:
        mc_warn("dispatch: unexpected frame (case %d) from worker %s/%u, ignored", (int)f->body_case, from->node,
                from->pid);
        break;
    }
    minichat__local_frame__free_unpacked(f, NULL);
    return 0;
}

void dispatch_read_done(void)
{
    peers_kick();
}
