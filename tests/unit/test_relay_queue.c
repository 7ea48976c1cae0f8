/*
 * Unit tests for the relay-worker's per-peer queue: FIFO order, the bounds
 * (drop oldest, counted), and the hand-written RelayBatch encoding, checked by
 * decoding it with the protobuf-c generated code.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat.pb-c.h"
#include "minichat/relay_queue.h"

/* Packs a ChatMessage for room/seq with a body of body_len 'x's; returns its length. */
static size_t pack_msg(uint64_t room, uint64_t seq, size_t body_len, uint8_t **out)
{
    Minichat__ChatMessage m = MINICHAT__CHAT_MESSAGE__INIT;
    uint64_t rcpt[2] = {7, 8};
    char *body = malloc(body_len + 1);
    size_t n;

    ck_assert_ptr_nonnull(body);
    memset(body, 'x', body_len);
    body[body_len] = '\0';
    m.room = room;
    m.seq = seq;
    m.sender = 7;
    m.cid = "c";
    m.body = body;
    m.recipients = rcpt;
    m.n_recipients = 2;
    m.origin_node = "a";
    n = minichat__chat_message__get_packed_size(&m);
    *out = malloc(n);
    ck_assert_ptr_nonnull(*out);
    minichat__chat_message__pack(&m, *out);
    free(body);
    return n;
}

static void push_msg(mc_relay_queue_t *q, uint64_t seq, size_t body_len)
{
    uint8_t *p;
    size_t n = pack_msg(1, seq, body_len, &p);

    ck_assert_int_ge(mc_rq_push(q, p, n, 0), 0);
    free(p);
}

/* Takes a batch and checks it decodes to from_node and seqs first..first+count-1. */
static void take_and_check(mc_relay_queue_t *q, size_t max_bytes, size_t max_items, long expect, uint64_t first)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    long n = mc_rq_take_batch(q, "node-a", max_bytes, max_items, &buf, &len);
    Minichat__RelayBatch *b;
    long i;

    ck_assert_int_eq(n, expect);
    b = minichat__relay_batch__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(b->from_node, "node-a");
    ck_assert_int_eq((long)b->n_messages, expect);
    for (i = 0; i < n; i++) {
        ck_assert_uint_eq(b->messages[i]->seq, first + (uint64_t)i);
        ck_assert_uint_eq(b->messages[i]->room, 1);
        ck_assert_uint_eq(b->messages[i]->n_recipients, 2);
        ck_assert_str_eq(b->messages[i]->origin_node, "a");
    }
    minichat__relay_batch__free_unpacked(b, NULL);
    free(buf);
}

START_TEST(test_fifo_and_batch)
{
    mc_relay_queue_t q;
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t s;

    ck_assert_int_eq(mc_rq_init(&q, 1000, 1 << 20), 0);
    ck_assert_int_eq(mc_rq_take_batch(&q, "a", 100, 100, &buf, &len), 0);
    ck_assert_ptr_null(buf);
    for (s = 1; s <= 100; s++) {
        push_msg(&q, s, 10);
    }
    ck_assert_uint_eq(q.count, 100);
    take_and_check(&q, 1 << 20, 30, 30, 1);
    take_and_check(&q, 1 << 20, 1000, 70, 31);
    ck_assert_uint_eq(q.count, 0);
    ck_assert_uint_eq(q.bytes, 0);
    mc_rq_free(&q);
}
END_TEST

START_TEST(test_batch_byte_limit)
{
    mc_relay_queue_t q;

    ck_assert_int_eq(mc_rq_init(&q, 1000, 1 << 20), 0);
    push_msg(&q, 1, 5000);
    push_msg(&q, 2, 5000);
    push_msg(&q, 3, 10);
    push_msg(&q, 4, 10);
    /* the first message alone passes the limit but is still taken */
    take_and_check(&q, 100, 100, 1, 1);
    take_and_check(&q, 6000, 100, 3, 2);
    push_msg(&q, 5, 5000);
    push_msg(&q, 6, 5000);
    take_and_check(&q, 6000, 100, 1, 5);
    take_and_check(&q, 6000, 100, 1, 6);
    mc_rq_free(&q);
}
END_TEST

START_TEST(test_drop_oldest_count)
{
    mc_relay_queue_t q;
    uint64_t s;

    ck_assert_int_eq(mc_rq_init(&q, 50, 1 << 20), 0);
    for (s = 1; s <= 120; s++) {
        push_msg(&q, s, 10);
    }
    ck_assert_uint_eq(q.count, 50);
    ck_assert_uint_eq(q.dropped, 70);
    take_and_check(&q, 1 << 20, 1000, 50, 71);
    mc_rq_free(&q);
}
END_TEST

START_TEST(test_drop_oldest_bytes)
{
    mc_relay_queue_t q;
    uint8_t *p;
    size_t n = pack_msg(1, 1, 100, &p);

    ck_assert_int_eq(mc_rq_init(&q, 1000, 3 * n), 0);
    ck_assert_int_eq(mc_rq_push(&q, p, n, 0), 0);
    ck_assert_int_eq(mc_rq_push(&q, p, n, 0), 0);
    ck_assert_int_eq(mc_rq_push(&q, p, n, 0), 0);
    ck_assert_int_eq(mc_rq_push(&q, p, n, 0), 1);
    ck_assert_uint_eq(q.bytes, 3 * n);
    /* a message larger than the whole budget is refused, nothing changes */
    ck_assert_int_eq(mc_rq_push(&q, p, 3 * n + 1, 0), -1);
    ck_assert_uint_eq(q.count, 3);
    ck_assert_uint_eq(q.dropped, 1);
    free(p);
    mc_rq_free(&q);
}
END_TEST

START_TEST(test_wraparound)
{
    mc_relay_queue_t q;
    uint64_t s, next = 1, pushed = 0;

    ck_assert_int_eq(mc_rq_init(&q, 1000, 1 << 20), 0);
    for (s = 0; s < 40; s++) {
        push_msg(&q, ++pushed, 3);
        push_msg(&q, ++pushed, 3);
        push_msg(&q, ++pushed, 3);
        take_and_check(&q, 1 << 20, 2, 2, next);
        next += 2;
    }
    take_and_check(&q, 1 << 20, 1000, 40, next);
    mc_rq_free(&q);
}
END_TEST

START_TEST(test_empty_node_and_zero_limits)
{
    mc_relay_queue_t q;
    Minichat__RelayBatch *b;
    uint8_t *buf = NULL;
    size_t len = 0;

    ck_assert_int_eq(mc_rq_init(&q, 0, 100), -1);
    ck_assert_int_eq(mc_rq_init(&q, 100, 0), -1);
    ck_assert_int_eq(mc_rq_init(&q, 100, 1 << 20), 0);
    push_msg(&q, 1, 10);
    push_msg(&q, 2, 10);
    /* zero limits still take one message, so a sender always makes progress */
    ck_assert_int_eq(mc_rq_take_batch(&q, "", 0, 0, &buf, &len), 1);
    b = minichat__relay_batch__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(b->from_node, "");
    ck_assert_uint_eq(b->n_messages, 1);
    ck_assert_uint_eq(b->messages[0]->seq, 1);
    minichat__relay_batch__free_unpacked(b, NULL);
    free(buf);
    ck_assert_uint_eq(q.count, 1);
    mc_rq_free(&q);
    mc_rq_free(&q); /* idempotent */
}
END_TEST

START_TEST(test_ld_header_and_backoff)
{
    uint8_t h[MC_PB_LD_HDR_MAX];

    ck_assert_uint_eq(mc_pb_ld_header(h, 2, 5), 2);
    ck_assert_uint_eq(h[0], 0x12);
    ck_assert_uint_eq(h[1], 5);
    ck_assert_uint_eq(mc_pb_ld_header(h, 4, 300), 3);
    ck_assert_uint_eq(h[0], 0x22);
    ck_assert_uint_eq(h[1], 0xac);
    ck_assert_uint_eq(h[2], 0x02);

    ck_assert_uint_eq(mc_backoff_next(0, 100, 2000), 100);
    ck_assert_uint_eq(mc_backoff_next(100, 100, 2000), 200);
    ck_assert_uint_eq(mc_backoff_next(1600, 100, 2000), 2000);
    ck_assert_uint_eq(mc_backoff_next(2000, 100, 2000), 2000);
    ck_assert_uint_eq(mc_backoff_next(4000000000u, 100, 2000), 2000);
}
END_TEST

/* Messages queued before the cut-off are dropped from the head, counted,
 * and the rest keep their order. */
START_TEST(test_expire_old)
{
    mc_relay_queue_t q;
    uint8_t *buf = NULL;
    size_t len = 0;

    ck_assert_int_eq(mc_rq_init(&q, 100, 1 << 20), 0);
    ck_assert_uint_eq(mc_rq_oldest(&q), 0);
    ck_assert_int_eq(mc_rq_push(&q, (const uint8_t *)"a", 1, 1000), 0);
    ck_assert_int_eq(mc_rq_push(&q, (const uint8_t *)"b", 1, 2000), 0);
    ck_assert_int_eq(mc_rq_push(&q, (const uint8_t *)"c", 1, 3000), 0);
    ck_assert_uint_eq(mc_rq_oldest(&q), 1000);

    ck_assert_uint_eq(mc_rq_expire(&q, 1000), 0);       /* strictly before */
    ck_assert_uint_eq(mc_rq_expire(&q, 2500), 2);
    ck_assert_uint_eq(q.count, 1);
    ck_assert_uint_eq(q.bytes, 1);
    ck_assert_uint_eq(q.dropped, 2);
    ck_assert_uint_eq(mc_rq_oldest(&q), 3000);

    ck_assert_int_eq(mc_rq_take_batch(&q, "", 100, 100, &buf, &len), 1);
    ck_assert_uint_eq(len, 3);                            /* tag, length, "c" */
    ck_assert_int_eq(buf[2], 'c');
    free(buf);
    ck_assert_uint_eq(mc_rq_expire(&q, 99999), 0);        /* empty: nothing to do */
    mc_rq_free(&q);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("relay_queue");
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_fifo_and_batch);
    tcase_add_test(tc, test_batch_byte_limit);
    tcase_add_test(tc, test_drop_oldest_count);
    tcase_add_test(tc, test_drop_oldest_bytes);
    tcase_add_test(tc, test_wraparound);
    tcase_add_test(tc, test_empty_node_and_zero_limits);
    tcase_add_test(tc, test_ld_header_and_backoff);
    tcase_add_test(tc, test_expire_old);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
