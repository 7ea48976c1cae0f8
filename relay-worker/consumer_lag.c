/*
 * Has the roomlist-consumer caught up with Kafka?  Rebuilding a room in Redis
 * from MySQL is safe only when MySQL holds every acked message, i.e. when the
 * consumer group has committed offsets up to what the topic held when the
 * rebuild was asked for (the consumer commits only after its MySQL COMMIT).
 *
 * A consumer handle of its own with group.id = the consumer's group, never
 * subscribed (so it never joins the group or takes partitions): it only asks
 * the group coordinator for committed offsets (rd_kafka_committed) and the
 * brokers for high watermarks (rd_kafka_query_watermark_offsets).  Every
 * partition of the topic is checked, not only the room's: the producer's
 * partitioner is librdkafka's business, and a consumer that keeps up keeps
 * up everywhere.  Used by the DB threads only, one handle each; blocking
 * calls are bounded by the wait.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "minichat/clock.h"
#include "minichat/log.h"
#include "queries.h"
#include "relay.h"

#define LAG_POLL_MS 20

struct consumer_lag_s {
    rd_kafka_t *rk;
    char *topic;
};

consumer_lag_t *consumer_lag_new(const char *brokers, const mc_kafka_sec_t *sec, const char *group, const char *topic)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    consumer_lag_t *l = calloc(1, sizeof(*l));
    char errstr[512];

    if (conf == NULL || l == NULL || (l->topic = strdup(topic)) == NULL) {
        goto err;
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK
        || rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK
        || rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK
        || rd_kafka_conf_set(conf, "client.id", "minichat-relay-lag", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        mc_error("kafka: lag check: %s", errstr);
        goto err;
    }
    if (mc_kafka_sec_apply(sec, conf, errstr, sizeof(errstr)) != 0) {
        mc_error("kafka: lag check: %s", errstr);
        goto err;
    }
    l->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (l->rk == NULL) {
        mc_error("kafka: lag check: %s", errstr);
        goto err;
    }
    return l;
err:
    if (conf != NULL) {
        rd_kafka_conf_destroy(conf);
    }
    if (l != NULL) {
        free(l->topic);
        free(l);
    }
    return NULL;
}

void consumer_lag_free(consumer_lag_t *l)
{
    if (l == NULL) {
        return;
    }
    rd_kafka_consumer_close(l->rk);
    rd_kafka_destroy(l->rk);
    free(l->topic);
    free(l);
}

/* Returns the milliseconds left until deadline (0 when past). */
static int left_ms(uint64_t deadline)
{
    uint64_t now = mc_now_ms();

    return now >= deadline ? 0 : (int)(deadline - now);
}

/* Fills list with the topic's partitions and hi[] with their high
 * watermarks now.  Returns 0 or -1. */
static int lag_targets(consumer_lag_t *l, uint64_t deadline, rd_kafka_topic_partition_list_t **list, int64_t **hi)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(l->rk, l->topic, NULL);
    rd_kafka_resp_err_t err;
    int64_t lo;
    int i, n;

    if (rkt == NULL) {
        return -1;
    }
    err = rd_kafka_metadata(l->rk, 0, rkt, &md, left_ms(deadline));
    rd_kafka_topic_destroy(rkt);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err) {
        mc_warn("kafka: lag check: no metadata for \"%s\": %s", l->topic,
                rd_kafka_err2str(err ? err : md->topics[0].err));
        if (md) {
            rd_kafka_metadata_destroy(md);
        }
        return -1;
    }
    n = md->topics[0].partition_cnt;
    *list = rd_kafka_topic_partition_list_new(n);
    *hi = calloc((size_t)n + 1, sizeof(int64_t));
    for (i = 0; i < n && *hi != NULL; i++) {
        rd_kafka_topic_partition_list_add(*list, l->topic, md->topics[0].partitions[i].id);
        err = rd_kafka_query_watermark_offsets(l->rk, l->topic, md->topics[0].partitions[i].id, &lo, &(*hi)[i],
                                               left_ms(deadline));
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            mc_warn("kafka: lag check: watermarks of \"%s\" [%d]: %s", l->topic, md->topics[0].partitions[i].id,
                    rd_kafka_err2str(err));
            break;
        }
        if ((*hi)[i] <= lo) {
            (*hi)[i] = -1; /* nothing to consume there */
        }
    }
    rd_kafka_metadata_destroy(md);
    if (*hi == NULL || i < n) {
        rd_kafka_topic_partition_list_destroy(*list);
        free(*hi);
        return -1;
    }
    return 0;
}

int consumer_lag_wait(consumer_lag_t *l, long long wait_ms)
{
    uint64_t deadline = mc_now_ms() + (uint64_t)wait_ms;
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t err;
    int64_t *hi;
    int i, behind = -1, rc = -1;

    if (lag_targets(l, deadline, &list, &hi) != 0) {
        return -1;
    }
    for (;;) {
        err = rd_kafka_committed(l->rk, list, left_ms(deadline) ? left_ms(deadline) : 1);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            for (i = 0, behind = -1; i < list->cnt; i++) {
                if (hi[i] >= 0 && (list->elems[i].err || list->elems[i].offset < hi[i])) {
                    behind = i;
                    break;
                }
            }
            if (behind < 0) {
                rc = 0;
                break;
            }
        }
        if (left_ms(deadline) <= LAG_POLL_MS) {
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                mc_warn("kafka: lag check: committed offsets: %s", rd_kafka_err2str(err));
            } else {
                mc_warn("kafka: lag check: the consumer is behind on \"%s\" [%d]: committed %" PRId64
                        ", high watermark %" PRId64, l->topic, list->elems[behind].partition,
                        list->elems[behind].offset, hi[behind]);
            }
            break;
        }
        struct timespec ts = {0, LAG_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    rd_kafka_topic_partition_list_destroy(list);
    free(hi);
    return rc;
}
