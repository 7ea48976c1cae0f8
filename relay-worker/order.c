/*
 * Per-room order of what this node's nginx workers receive.
 *
 * Messages reach the relay-worker from several sources at once: the node's
 * own nginx workers (one unix connection each) and every peer node (gRPC).
 * Each source keeps a room's seqs in order, but the sources interleave, so a
 * worker could see seq 6 from one before seq 5 from another.  Every message
 * for local delivery therefore passes through one mc_reorder_t (lib), which
 * releases each room's messages by seq, holding a message briefly while a
 * lower seq may still be on its way.  Released messages are broadcast to
 * every local worker, the origin worker included (it skips the sending
 * connection itself), under the same lock, so that the order in which
 * messages are released is the order in which every worker receives them.
 *
 * A seq more than order_max_ahead past a room's position is refused (see
 * minichat/reorder.h): a forged or corrupt peer batch cannot move a room's
 * position far ahead and make every later real seq late.
 *
 * Both the main thread (local publishes, ticks) and the completion-queue
 * thread (peer batches) push; order_lock serialises them.  Lock order:
 * order_lock, then worker_link.c's lock inside link_deliver().
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"
#include "minichat/buf.h"
#include "minichat/clock.h"
#include "minichat/log.h"
#include "minichat/reorder.h"

typedef struct {
    link_msg_t msg;   /* msg.msg points into data */
    uint8_t data[];
} order_item_t;

static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
static mc_reorder_t *order;
static mc_buf_t order_out; /* released items (pointers), sent at the next flush */
static mc_buf_t order_msgs; /* their link_msg_t, built at the flush */
static uint64_t order_out_failed;
static uint64_t order_refused_seen; /* stats.refused when order_drop last ran */
static int order_repair;            /* the message being pushed is a repair (under order_lock) */

/* Appends a released message to the pending broadcast. */
static void order_emit(void *ctx, uint64_t room, uint64_t seq, void *item)
{
    order_item_t *it = item;

    (void)ctx;
    if (mc_buf_append(&order_out, &it, sizeof(it)) != 0) {
        order_out_failed++;
        mc_error("order: out of memory, room %llu seq %llu not delivered locally", (unsigned long long)room,
                 (unsigned long long)seq);
        free(it);
    }
}

static void order_drop(void *ctx, uint64_t room, uint64_t seq, void *item)
{
    static uint64_t logged_at, refused_logged_at;
    uint64_t now = mc_now_ms();
    mc_reorder_stats_t st;

    (void)ctx;
    /* the reorderer counts a refusal before it drops the message */
    mc_reorder_stats(order, &st);
    if (st.refused != order_refused_seen) {
        order_refused_seen = st.refused;
        if (now - refused_logged_at >= 1000) {
            refused_logged_at = now;
            mc_warn("order: room %llu seq %llu is more than order_max_ahead (%llu) past the room's position; "
                    "refused (a forged or corrupt batch?), %llu refused so far",
                    (unsigned long long)room, (unsigned long long)seq,
                    (unsigned long long)relay_conf.order.max_ahead, (unsigned long long)st.refused);
        }
        free(item);
        return;
    }
    /* a repair of a seq released here (a retry of a delivered message) is
     * normal, and so is a repeat (a retried peer batch); a late first
     * delivery is a loss for live clients: say so, at most once a second */
    if (order_repair) {
        mc_debug("order: room %llu seq %llu published again, delivered here before", (unsigned long long)room,
                 (unsigned long long)seq);
    } else if (now - logged_at >= 1000) {
        logged_at = now;
        mc_warn("order: room %llu seq %llu arrived after the room had moved past it; not delivered live "
                "(a repeat, or later than order_gap_ms / order_first_hold_ms)",
                (unsigned long long)room, (unsigned long long)seq);
    }
    free(item);
}

/* Sends what was released, in one write per worker; called with order_lock
 * held. */
static void order_flush_locked(void)
{
    order_item_t **items = (order_item_t **)order_out.data;
    size_t i, n = order_out.len / sizeof(*items);

    if (n == 0) {
        return;
    }
    mc_buf_reset(&order_msgs);
    if (mc_buf_reserve(&order_msgs, n * sizeof(link_msg_t)) != 0) {
        order_out_failed += n;
        mc_error("order: out of memory, %zu released messages not delivered locally", n);
    } else {
        for (i = 0; i < n; i++) {
            (void)mc_buf_append(&order_msgs, &items[i]->msg, sizeof(link_msg_t)); /* reserved above */
        }
        link_deliver((const link_msg_t *)order_msgs.data, n);
    }
    for (i = 0; i < n; i++) {
        free(items[i]);
    }
    mc_buf_reset(&order_out);
    if (order_msgs.cap > (1u << 20)) {
        /* a burst grew them; give the memory back */
        mc_buf_free(&order_msgs);
        mc_buf_free(&order_out);
    }
}

int order_init(const mc_reorder_conf_t *conf)
{
    order = mc_reorder_new(conf, order_emit, order_drop, NULL);
    if (order == NULL) {
        mc_error("order: out of memory");
        return -1;
    }
    return 0;
}

void order_push(uint64_t seq, const link_msg_t *msg, int repair)
{
    order_item_t *it = malloc(sizeof(*it) + msg->len);

    if (it == NULL) {
        mc_error("order: out of memory, room %llu seq %llu not delivered locally", (unsigned long long)msg->room,
                 (unsigned long long)seq);
        return;
    }
    it->msg = *msg;
    memcpy(it->data, msg->msg, msg->len);
    it->msg.msg = it->data;

    pthread_mutex_lock(&order_lock);
    order_repair = repair;
    (void)mc_reorder_push_after(order, msg->room, seq, it, mc_now_ms(), msg->after_ms, msg->after_skip);
    order_repair = 0;
    order_flush_locked();
    pthread_mutex_unlock(&order_lock);
}

long order_tick(uint64_t now)
{
    int64_t t;

    pthread_mutex_lock(&order_lock);
    mc_reorder_tick(order, now);
    order_flush_locked();
    t = mc_reorder_timeout(order, now);
    pthread_mutex_unlock(&order_lock);
    return (long)t;
}

void order_stats(mc_reorder_stats_t *st)
{
    pthread_mutex_lock(&order_lock);
    mc_reorder_stats(order, st);
    pthread_mutex_unlock(&order_lock);
}

void order_close(void)
{
    pthread_mutex_lock(&order_lock);
    mc_reorder_free(order);
    order = NULL;
    mc_buf_free(&order_out);
    mc_buf_free(&order_msgs);
    pthread_mutex_unlock(&order_lock);
}
