/*
 * The Kafka side of the roomlist-consumer: a consumer group member that
 * collects records into batches and hands them to the store.
 */
#ifndef RC_CONSUMER_H
#define RC_CONSUMER_H

#include <signal.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "minichat/kafka_sec.h"
#include "minichat/msgbatch.h"
#include "push.h"
#include "store.h"

typedef struct {
    const char *brokers;
    const mc_kafka_sec_t *sec;   /* TLS and SASL to the brokers */
    const char *topic;
    const char *group;
    const char *instance;   /* group.instance.id (static membership), "" for none */
    const char *session_timeout_ms;
    size_t batch_size;   /* flush after this many records ... */
    int batch_ms;        /* ... or this long after the batch's first record */
    int stats_s;         /* seconds between stats lines, 0 for none */
} rc_consumer_config_t;

typedef struct {
    rd_kafka_t *rk;
    rc_store_t *store;
    rc_push_t *push;                           /* NULL: pushes are off */
    rc_consumer_config_t cfg;
    volatile sig_atomic_t *run;

    mc_msgbatch_t batch;
    rd_kafka_topic_partition_list_t *offsets;  /* per partition: next offset after the batch */
    rd_kafka_topic_partition_list_t *sent;     /* per partition: the offsets committed asynchronously
                                                  since the last synchronous commit */
    size_t records;                            /* records in the batch, malformed ones included */
    int64_t first_ms;                          /* when the batch's first record arrived */
    int flushing;                              /* inside rc_consumer_flush() */
    int paused;                                /* the assignment is paused while the store fails */
    int fatal;                                 /* Kafka reported a fatal error: this handle is done */

    uint64_t malformed;
    uint64_t consumed;
    uint64_t commits_failed;
    uint64_t retries;                          /* batch writes retried */
    int64_t last_batch_ms;                     /* mc_now_ms() of the last committed batch, 0: none */
} rc_consumer_t;

/* Creates the Kafka consumer and subscribes.  The counters (malformed to
 * last_batch_ms) carry over from an earlier handle in the same struct, so
 * zero it once before the first call.  Returns 0, or -1 after logging why. */
int rc_consumer_init(rc_consumer_t *c, const rc_consumer_config_t *cfg, rc_store_t *store, rc_push_t *push,
                     volatile sig_atomic_t *run);

/* Consumes and persists until *run becomes 0 or Kafka reports a fatal
 * error (c->fatal set: the caller may make a new consumer), then flushes
 * what is left, leaves the group and destroys the consumer.  Returns 0, or
 * -1 after an error. */
int rc_consumer_run(rc_consumer_t *c);

#endif
