/*
 * The relay-worker's per-peer queue (see minichat/relay_queue.h).
 *
 * The ring grows by doubling up to max_items slots, so an idle peer costs a
 * few slots and a backlog costs one pointer pair per message.  The batch
 * encoder writes the RelayBatch wire format by hand: from_node as field 1,
 * then each queued ChatMessage as field 2 with its length.  protobuf-c
 * decodes that exactly as if it had packed the batch itself, and the sender
 * never has to unpack and repack messages it only forwards.
 */
#include <stdlib.h>
#include <string.h>

#include "minichat/relay_queue.h"

#define MC_RQ_MIN_CAP 16

/* Returns a pointer to the i-th oldest item (i < count). */
static mc_rq_item_t *rq_at(mc_relay_queue_t *q, size_t i)
{
    return &q->items[(q->head + i) % q->cap];
}

/* Drops the oldest item. */
static void rq_drop_head(mc_relay_queue_t *q)
{
    mc_rq_item_t *it = rq_at(q, 0);

    q->bytes -= it->len;
    free(it->data);
    it->data = NULL;
    it->len = 0;
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

/* Makes room for one more item.  Returns 0 or -1 when out of memory. */
static int rq_grow(mc_relay_queue_t *q)
{
    mc_rq_item_t *items;
    size_t cap, i;

    if (q->count < q->cap) {
        return 0;
    }
    cap = q->cap ? q->cap * 2 : MC_RQ_MIN_CAP;
    if (cap > q->max_items) {
        cap = q->max_items;
    }
    items = malloc(cap * sizeof(*items));
    if (items == NULL) {
        return -1;
    }
    for (i = 0; i < q->count; i++) {
        items[i] = *rq_at(q, i);
    }
    free(q->items);
    q->items = items;
    q->cap = cap;
    q->head = 0;
    return 0;
}

int mc_rq_init(mc_relay_queue_t *q, size_t max_items, size_t max_bytes)
{
    memset(q, 0, sizeof(*q));
    if (max_items == 0 || max_bytes == 0) {
        return -1;
    }
    q->max_items = max_items;
    q->max_bytes = max_bytes;
    return 0;
}

void mc_rq_free(mc_relay_queue_t *q)
{
    while (q->count) {
        rq_drop_head(q);
    }
    free(q->items);
    q->items = NULL;
    q->cap = 0;
    q->head = 0;
}

long mc_rq_push(mc_relay_queue_t *q, const uint8_t *msg, size_t len, uint64_t now_ms)
{
    uint8_t *copy;
    long dropped = 0;

    if (len > q->max_bytes) {
        return -1;
    }
    copy = malloc(len ? len : 1);
    if (copy == NULL) {
        return -1;
    }
    memcpy(copy, msg, len);

    while (q->count && (q->count >= q->max_items || q->bytes + len > q->max_bytes)) {
        rq_drop_head(q);
        dropped++;
    }
    if (rq_grow(q) != 0) {
        free(copy);
        q->dropped += dropped;
        return -1;
    }
    q->items[(q->head + q->count) % q->cap] = (mc_rq_item_t){copy, len, now_ms};
    q->count++;
    q->bytes += len;
    q->dropped += dropped;
    return dropped;
}

size_t mc_pb_ld_header(uint8_t *out, uint32_t field, size_t len)
{
    uint64_t v = ((uint64_t)field << 3) | 2;
    size_t n = 0;
    int pass;

    for (pass = 0; pass < 2; pass++) {
        while (v >= 0x80) {
            out[n++] = (uint8_t)(v | 0x80);
            v >>= 7;
        }
        out[n++] = (uint8_t)v;
        v = len;
    }
    return n;
}

size_t mc_rq_expire(mc_relay_queue_t *q, uint64_t before_ms)
{
    size_t n = 0;

    while (q->count && rq_at(q, 0)->at_ms < before_ms) {
        rq_drop_head(q);
        n++;
    }
    q->dropped += n;
    return n;
}

uint64_t mc_rq_oldest(const mc_relay_queue_t *q)
{
    return q->count ? q->items[q->head].at_ms : 0;
}

long mc_rq_take_batch(mc_relay_queue_t *q, const char *from_node, size_t max_batch_bytes, size_t max_batch_items,
                           uint8_t **out, size_t *out_len)
{
    size_t node_len = strlen(from_node), total, n, i, off;
    uint8_t *buf;
    mc_rq_item_t *it;

    if (q->count == 0) {
        return 0;
    }
    total = MC_PB_LD_HDR_MAX + node_len;
    for (n = 0; n < q->count && n < max_batch_items; n++) {
        it = rq_at(q, n);
        if (n > 0 && total + MC_PB_LD_HDR_MAX + it->len > max_batch_bytes) {
            break;
        }
        total += MC_PB_LD_HDR_MAX + it->len;
    }
    if (n == 0) {
        n = 1; /* max_batch_items == 0: still make progress */
        total += MC_PB_LD_HDR_MAX + rq_at(q, 0)->len;
    }

    buf = malloc(total);
    if (buf == NULL) {
        return -1;
    }
    off = 0;
    if (node_len) {
        off += mc_pb_ld_header(buf + off, 1, node_len);
        memcpy(buf + off, from_node, node_len);
        off += node_len;
    }
    for (i = 0; i < n; i++) {
        it = rq_at(q, 0);
        off += mc_pb_ld_header(buf + off, 2, it->len);
        memcpy(buf + off, it->data, it->len);
        off += it->len;
        rq_drop_head(q);
    }
    *out = buf;
    *out_len = off;
    return (long)n;
}

unsigned mc_backoff_next(unsigned cur_ms, unsigned min_ms, unsigned max_ms)
{
    unsigned next = cur_ms > max_ms / 2 ? max_ms : cur_ms * 2;

    if (next < min_ms) {
        next = min_ms;
    }
    if (next > max_ms) {
        next = max_ms;
    }
    return next;
}
