/*
 * A chat message as this node's workers and the peers get it: packed once,
 * with its member list as the last field.  The peers take the bytes as they
 * are (a protobuf message may hold its fields in any order); the worker link
 * (worker_link.c) sends a worker either the whole or, when that worker
 * already holds the list under the message's members version, the part
 * before the list plus `recipients_cached` (minichat/member_slots.h).
 */
#include <stdlib.h>

#include "relay.h"

uint8_t *msg_pack(Minichat__ChatMessage *m, size_t *len, size_t *rcpt_off)
{
    Minichat__ChatMessage r = MINICHAT__CHAT_MESSAGE__INIT;
    size_t n_rcpt = m->n_recipients, head, tail;
    uint64_t *rcpt = m->recipients;
    protobuf_c_boolean cached = m->recipients_cached;
    uint8_t *buf;

    r.recipients = rcpt;
    r.n_recipients = n_rcpt;
    m->recipients = NULL;
    m->n_recipients = 0;
    m->recipients_cached = 0;
    head = minichat__chat_message__get_packed_size(m);
    tail = minichat__chat_message__get_packed_size(&r); /* field 7 alone: the rest is all defaults */
    buf = malloc(head + tail ? head + tail : 1);
    if (buf != NULL) {
        minichat__chat_message__pack(m, buf);
        minichat__chat_message__pack(&r, buf + head);
        *len = head + tail;
        *rcpt_off = head;
    }
    m->recipients = rcpt;
    m->n_recipients = n_rcpt;
    m->recipients_cached = cached;
    return buf;
}
