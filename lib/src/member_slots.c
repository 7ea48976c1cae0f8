/*
 * Member lists already sent on an ordered stream (minichat/member_slots.h):
 * a direct-mapped table that the sender mirrors and the receiver fills by
 * the same rule, so neither needs to tell the other what it dropped.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/member_slots.h"

static mc_mslot_t *slot_of(const mc_mslots_t *t, uint64_t room)
{
    return (mc_mslot_t *)&t->slot[room % MC_MSLOTS];
}

int mc_mslots_keepable(uint64_t ver, size_t n)
{
    return ver != 0 && n <= MC_MSLOTS_MAX_IDS;
}

int mc_mslots_has(const mc_mslots_t *t, uint64_t room, uint64_t ver)
{
    const mc_mslot_t *s = slot_of(t, room);

    return room != 0 && ver != 0 && s->room == room && s->ver == ver;
}

void mc_mslots_sent(mc_mslots_t *t, uint64_t room, uint64_t ver, size_t n)
{
    mc_mslot_t *s = slot_of(t, room);

    if (room == 0 || !mc_mslots_keepable(ver, n)) {
        return;
    }
    s->room = room;
    s->ver = ver;
    s->n = n;
}

int mc_mslots_store(mc_mslots_t *t, uint64_t room, uint64_t ver, const uint64_t *ids, size_t n)
{
    mc_mslot_t *s = slot_of(t, room);
    uint64_t *copy = NULL;

    if (room == 0 || !mc_mslots_keepable(ver, n)) {
        return 0;
    }
    if (s->room == room && s->ver == ver && s->n == n) {
        return 0; /* the same list again (a sender without a mirror) */
    }
    if (n > 0) {
        copy = malloc(n * sizeof(*copy));
        if (copy == NULL) {
            free(s->ids);
            memset(s, 0, sizeof(*s));
            return -1;
        }
        memcpy(copy, ids, n * sizeof(*copy));
    }
    free(s->ids);
    s->room = room;
    s->ver = ver;
    s->n = n;
    s->ids = copy;
    return 0;
}

const uint64_t *mc_mslots_find(const mc_mslots_t *t, uint64_t room, uint64_t ver, size_t *n)
{
    const mc_mslot_t *s = slot_of(t, room);
    static const uint64_t none[1] = {0};

    if (!mc_mslots_has(t, room, ver)) {
        return NULL;
    }
    *n = s->n;
    return s->ids ? s->ids : none;
}

void mc_mslots_clear(mc_mslots_t *t)
{
    size_t i;

    for (i = 0; i < MC_MSLOTS; i++) {
        free(t->slot[i].ids);
    }
    memset(t, 0, sizeof(*t));
}
