/*
 * librdkafka's log lines through mc_log, for every Kafka handle of the
 * roomlist-consumer (the group consumer and the push producer).
 */
#ifndef RC_KAFKA_LOG_H
#define RC_KAFKA_LOG_H

#include <librdkafka/rdkafka.h>

/* A log callback for rd_kafka_conf_set_log_cb(): maps syslog levels to mc_log's. */
void rc_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

#endif
