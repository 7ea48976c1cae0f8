/*
 * The per-peer send queue of the relay-worker: a bounded FIFO of packed
 * minichat.ChatMessage blobs waiting to go to one peer node, and the encoder
 * that turns its head into one packed minichat.RelayBatch without unpacking
 * anything (a RelayBatch is field 1 = from_node followed by field 2 = each
 * message, so the packed messages are copied behind a tag and a length).
 *
 * Bounds: at most max_items messages and max_bytes payload bytes.  A push
 * that would pass either drops the oldest messages first and counts them in
 * `dropped`; cross-node delivery is best-effort, clients recover the gap by
 * resuming.  Pure code, no locking, no I/O.
 */
#ifndef MINICHAT_RELAY_QUEUE_H
#define MINICHAT_RELAY_QUEUE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *data;
    size_t len;
    uint64_t at_ms;   /* when it was queued */
} mc_rq_item_t;

typedef struct {
    mc_rq_item_t *items; /* ring of `cap` slots */
    size_t cap;
    size_t head;
    size_t count;
    size_t bytes;     /* sum of the queued items' len */
    size_t max_items;
    size_t max_bytes;
    uint64_t dropped; /* messages dropped because the queue was full */
} mc_relay_queue_t;

/* Initializes an empty queue.  Returns 0, or -1 when a bound is zero. */
int mc_rq_init(mc_relay_queue_t *q, size_t max_items, size_t max_bytes);

/* Frees the queued messages and the ring. */
void mc_rq_free(mc_relay_queue_t *q);

/* Appends a copy of msg[0..len) queued at now_ms, dropping the oldest
 * messages when a bound would be passed.  Returns the number of messages
 * dropped (>= 0), or -1 when out of memory or when len alone exceeds
 * max_bytes (nothing is changed). */
long mc_rq_push(mc_relay_queue_t *q, const uint8_t *msg, size_t len, uint64_t now_ms);

/* Drops the messages queued before `before_ms` (they are too old to be
 * delivered live) and counts them in `dropped`.  Returns how many. */
size_t mc_rq_expire(mc_relay_queue_t *q, uint64_t before_ms);

/* Returns when the oldest queued message was queued, or 0 when empty. */
uint64_t mc_rq_oldest(const mc_relay_queue_t *q);

/* Removes the oldest messages and encodes them as one packed RelayBatch from
 * `from_node` into a malloc'ed *out of *out_len bytes.  Takes at least one
 * message, then more while the payload stays within max_batch_bytes and the
 * count within max_batch_items.  Returns the number of messages taken (0 when
 * the queue is empty, *out untouched), or -1 when out of memory (the queue is
 * unchanged). */
long mc_rq_take_batch(mc_relay_queue_t *q, const char *from_node, size_t max_batch_bytes, size_t max_batch_items,
                      uint8_t **out, size_t *out_len);

/* Writes the protobuf key and length prefix of a length-delimited field
 * (wire type 2) into out (at least MC_PB_LD_HDR_MAX bytes); returns its size. */
#define MC_PB_LD_HDR_MAX 15
size_t mc_pb_ld_header(uint8_t *out, uint32_t field, size_t len);

/* Returns the next retry delay: twice cur, at least min_ms, at most max_ms. */
unsigned mc_backoff_next(unsigned cur_ms, unsigned min_ms, unsigned max_ms);

#endif
