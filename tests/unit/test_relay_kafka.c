/*
 * Unit tests for the relay-worker's Kafka producer (relay-worker/kafka.c)
 * against librdkafka's mock cluster (no real Kafka):
 *
 *  - a message's fan-out waits for its delivery report: the durable
 *    handler runs once Kafka has the message, never before, and the waiting
 *    worker's answer comes after it;
 *  - a retriable delivery error (a timeout while the broker is down) is
 *    produced again while the message is younger than publish_max_age_ms,
 *    and then succeeds: one answer, ok, one fan-out;
 *  - the same error on a message older than that is answered as a failure
 *    and fans out nothing;
 *  - a fatal producer error stops the relay-worker (relay_stop, kafka_fatal).
 *
 * kafka.c is compiled into this test; its few calls into the rest of the
 * relay-worker (the worker link, the epoll loop) are stubbed below.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "../../relay-worker/kafka.c"

#include <librdkafka/rdkafka_mock.h>

relay_conf_t relay_conf;
volatile sig_atomic_t relay_stop;
relay_hists_t relay_hists; /* metrics.c's; all-zero histograms count into their +Inf bucket */

static int test_epfd = -1;
static int answers_n, answers_ok;
static int durable_n;
static uint64_t durable_seq;
static int corked; /* inside kafka_poll's link_cork() .. link_uncork() */

int relay_epoll_fd(void)
{
    return test_epfd;
}

uint8_t *relay_pack_frame(const Minichat__LocalFrame *f, size_t *len)
{
    size_t n = minichat__local_frame__get_packed_size(f);
    uint8_t *buf = malloc(n ? n : 1);

    if (buf != NULL) {
        minichat__local_frame__pack(f, buf);
        *len = n;
    }
    return buf;
}

void link_cork(void)
{
    ck_assert_int_eq(corked, 0);
    corked = 1;
}

void link_uncork(void)
{
    ck_assert_int_eq(corked, 1);
    corked = 0;
}

int link_send(uint64_t conn_id, const uint8_t *frame, size_t len)
{
    Minichat__LocalFrame *f = minichat__local_frame__unpack(NULL, len, frame);

    ck_assert_uint_eq(conn_id, 7);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->body_case, MINICHAT__LOCAL_FRAME__BODY_PUBLISH_RESULT);
    /* the recipients saw it before the sender's ack, never after */
    if (f->publish_result->ok) {
        ck_assert_int_eq(durable_n, answers_n + 1);
        /* an ack comes from a delivery report, inside a corked poll: the
         * acks of one poll leave in one write */
        ck_assert_int_eq(corked, 1);
        answers_ok++;
    }
    answers_n++;
    minichat__local_frame__free_unpacked(f, NULL);
    return 0;
}

static void on_durable(uint64_t room, uint64_t seq, const kafka_fanout_t *fan)
{
    ck_assert_uint_eq(room, 12);
    ck_assert_ptr_nonnull(fan->frame);
    ck_assert_uint_eq(fan->msg.len, 5);
    ck_assert_ptr_eq(fan->msg.msg, fan->frame);
    durable_n++;
    durable_seq = seq;
}

static rd_kafka_mock_cluster_t *mock;
static rd_kafka_t *mock_rk;        /* the handle the mock cluster lives in */

/* A producer on a one-broker mock cluster, through kafka_init(). */
static void setup(long long timeout_ms, long long max_age_ms)
{
    static char brokers[256];
    rd_kafka_t *mrk;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[256];

    /* the mock cluster lives in a handle of its own */
    mrk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_ptr_nonnull(mrk);
    mock = rd_kafka_mock_cluster_new(mrk, 1);
    ck_assert_ptr_nonnull(mock);
    snprintf(brokers, sizeof(brokers), "%s", rd_kafka_mock_cluster_bootstraps(mock));
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock, "t", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);

    memset(&relay_conf, 0, sizeof(relay_conf));
    relay_conf.node = "a";
    relay_conf.kafka_brokers = brokers;
    relay_conf.kafka_topic = "t";
    relay_conf.kafka_linger_ms = 1;
    relay_conf.kafka_compression = "none";
    relay_conf.kafka_timeout_ms = timeout_ms;
    relay_conf.publish_max_age_ms = max_age_ms;
    relay_stop = 0;
    kafka_fatal = 0;
    answers_n = answers_ok = durable_n = 0;
    durable_seq = 0;
    test_epfd = epoll_create1(EPOLL_CLOEXEC);
    ck_assert_int_ge(test_epfd, 0);
    ck_assert_int_eq(kafka_init(&relay_conf), 0);
    kafka_set_durable_handler(on_durable);
    mock_rk = mrk;
}

static void teardown(void)
{
    kafka_close();
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    close(test_epfd);
}

/* Produces room 12's message seq with a fan-out, for worker connection 7. */
static void produce(uint64_t seq, uint64_t admitted_at)
{
    Minichat__ChatMessage m = MINICHAT__CHAT_MESSAGE__INIT;
    kafka_fanout_t fan;

    m.room = 12;
    m.seq = seq;
    m.sender = 5;
    m.body = "hi";
    m.admitted_at = admitted_at;
    fan.frame = malloc(5);
    ck_assert_ptr_nonnull(fan.frame);
    memcpy(fan.frame, "frame", 5);
    memset(&fan.msg, 0, sizeof(fan.msg));
    fan.msg.msg = fan.frame;
    fan.msg.len = 5;
    fan.msg.rcpt_off = 5;
    fan.repair = 0;
    kafka_produce(&m, 7, 100 + seq, &fan);
}

/* Serves Kafka as the relay-worker's loop does: waits up to ms for the
 * queue's event fd, then polls (corked). */
static void serve(int ms)
{
    struct epoll_event ev;

    if (epoll_wait(test_epfd, &ev, 1, ms) == 1 && kafka_is_event(ev.data.ptr)) {
        kafka_on_event();
    } else {
        kafka_poll();
    }
}

/* Polls until n answers came, at most 20 s. */
static void wait_answers(int n)
{
    int i;

    for (i = 0; i < 2000 && answers_n < n; i++) {
        serve(10);
    }
    ck_assert_int_eq(answers_n, n);
}

START_TEST(test_fanout_waits_for_kafka)
{
    setup(30000, 60000);
    produce(1, (uint64_t)mc_wall_ms());
    ck_assert_int_eq(durable_n, 0);   /* nothing before the report */
    wait_answers(1);
    ck_assert_int_eq(answers_ok, 1);
    ck_assert_int_eq(durable_n, 1);
    ck_assert_uint_eq(durable_seq, 1);
    ck_assert_uint_eq(kafka_reproduced, 0);
    teardown();
}
END_TEST

START_TEST(test_retriable_error_produced_again)
{
    int i;

    /* a message times out in 300 ms while the broker is down, and may be
     * published for a minute after its seq was assigned */
    setup(300, 60000);
    rd_kafka_mock_broker_set_down(mock, 1);
    produce(2, (uint64_t)mc_wall_ms());
    /* at least one timeout, produced again */
    for (i = 0; i < 300 && kafka_reproduced == 0; i++) {
        serve(10);
    }
    ck_assert_uint_ge(kafka_reproduced, 1);
    ck_assert_int_eq(answers_n, 0);
    ck_assert_int_eq(durable_n, 0);
    rd_kafka_mock_broker_set_up(mock, 1);
    wait_answers(1);
    ck_assert_int_eq(answers_ok, 1);
    ck_assert_int_eq(durable_n, 1);
    ck_assert_uint_eq(durable_seq, 2);
    teardown();
}
END_TEST

START_TEST(test_retriable_error_on_an_old_message_fails)
{
    /* the same timeout, but the seq was assigned longer ago than
     * publish_max_age_ms: a failure, left to the client's retry or the
     * module's sweeper, and nothing fans out */
    setup(300, 1000);
    rd_kafka_mock_broker_set_down(mock, 1);
    produce(3, (uint64_t)mc_wall_ms() - 5000);
    wait_answers(1);
    ck_assert_int_eq(answers_ok, 0);
    ck_assert_int_eq(durable_n, 0);
    ck_assert_uint_eq(kafka_reproduced, 0);
    rd_kafka_mock_broker_set_up(mock, 1);
    teardown();
}
END_TEST

START_TEST(test_fatal_error_stops_the_relay)
{
    setup(30000, 60000);
    ck_assert_int_eq(rd_kafka_test_fatal_error(kafka_rk, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                               "test: sequence broken"), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_poll(kafka_rk, 100);
    ck_assert_int_eq(kafka_fatal, 1);
    ck_assert_int_eq(relay_stop, 1);
    teardown();
}
END_TEST

START_TEST(test_retriable_classes)
{
    ck_assert_int_eq(kafka_err_retriable(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT), 1);
    ck_assert_int_eq(kafka_err_retriable(RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS), 1);
    ck_assert_int_eq(kafka_err_retriable(RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION), 1);
    ck_assert_int_eq(kafka_err_retriable(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE), 0);
    ck_assert_int_eq(kafka_err_retriable(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED), 0);
    ck_assert_int_eq(kafka_err_retriable(RD_KAFKA_RESP_ERR__PURGE_QUEUE), 0);
    ck_assert_int_eq(kafka_err_retriable(RD_KAFKA_RESP_ERR__FATAL), 0);
}
END_TEST

static Suite *relay_kafka_suite(void)
{
    Suite *s = suite_create("relay_kafka");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fanout_waits_for_kafka);
    tcase_add_test(tc, test_retriable_error_produced_again);
    tcase_add_test(tc, test_retriable_error_on_an_old_message_fails);
    tcase_add_test(tc, test_fatal_error_stops_the_relay);
    tcase_add_test(tc, test_retriable_classes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(relay_kafka_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
