/*
 * Which users each nginx worker holds connections of, and whether a chat
 * message is for one of them (docs/ARCHITECTURE.md "Delivering only to
 * workers with recipients").
 *
 * A worker announces its users over the link (LocalFrame.users): the whole
 * set first on every connection, then what changed, batched per turn of its
 * event loop.  worker_link.c keeps one link_users_t per connection, under
 * its lock, and asks link_users_wants() for every chat message before it
 * writes the message to that connection.  A connection that never announced
 * (a module from before this) is sent everything, and so is one whose set
 * could not be kept (out of memory): "not known" always means "all users".
 *
 * The question is answered from the message as msg_pack() laid it out: its
 * member list is the last field, so the ids are read from msg[rcpt_off ..
 * len) without unpacking the message.
 */
#include "relay.h"

/* Reads a varint at *p (before end) into *v and moves *p past it.  Returns
 * 0, or -1 when it is cut short or longer than 10 bytes. */
static int users_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    unsigned shift;

    *v = 0;
    for (shift = 0; shift < 70 && *p < end; shift += 7) {
        *v |= (uint64_t)(**p & 0x7f) << shift;
        if ((*(*p)++ & 0x80) == 0) {
            return 0;
        }
    }
    return -1;
}

int link_users_wants(const link_users_t *u, const link_msg_t *m, uint64_t link_id)
{
    const uint8_t *p = m->msg + m->rcpt_off, *end = m->msg + m->len, *run;
    uint64_t key, len, id, skip;

    if (!u->known) {
        return 1;
    }
    /* the sender's only connection there sent it: it gets an ack, not a msg */
    skip = m->alone_link != 0 && m->alone_link == link_id ? m->alone_user : 0;
    while (p < end) {
        if (users_varint(&p, end, &key) != 0) {
            return 1; /* not what msg_pack() writes: let the worker judge it */
        }
        if (key == (7 << 3 | 2)) {        /* recipients, packed */
            if (users_varint(&p, end, &len) != 0 || len > (uint64_t)(end - p)) {
                return 1;
            }
            run = p + len;
            while (p < run) {
                if (users_varint(&p, run, &id) != 0) {
                    return 1;
                }
                if ((skip == 0 || id != skip) && mc_uset_has(&u->set, id)) {
                    return 1;
                }
            }
        } else if (key == (7 << 3 | 0)) { /* recipients, one id */
            if (users_varint(&p, end, &id) != 0 || ((skip == 0 || id != skip) && mc_uset_has(&u->set, id))) {
                return 1;
            }
        } else {
            return 1;
        }
    }
    return 0;
}

int link_users_apply(link_users_t *u, const Minichat__UserSet *us)
{
    size_t i;

    if (us->all) {
        link_users_free(u); /* every message from now on */
        return 0;
    }
    if (us->full) {
        mc_uset_clear(&u->set);
        u->known = 1;
    }
    if (!u->known) {
        /* changes to a set we do not have (never announced, or dropped) */
        return 0;
    }
    for (i = 0; i < us->n_add; i++) {
        if (mc_uset_add(&u->set, us->add[i]) < 0) {
            mc_uset_clear(&u->set);
            u->known = 0; /* every message from now on, until the next full set */
            return -1;
        }
    }
    for (i = 0; i < us->n_del; i++) {
        (void)mc_uset_del(&u->set, us->del[i]);
    }
    return 0;
}

void link_users_free(link_users_t *u)
{
    mc_uset_clear(&u->set);
    u->known = 0;
}
