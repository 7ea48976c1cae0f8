/*
 * Offline push: after a batch is in MySQL, one event on the push topic for
 * every member of a message's room who is connected on no node
 * (docs/push.md is the event's schema, push.c the design).
 */
#ifndef RC_PUSH_H
#define RC_PUSH_H

#include <stddef.h>
#include <stdint.h>

#include "minichat/db.h"
#include "minichat/msgbatch.h"
#include "minichat/kafka_sec.h"
#include "minichat/redis_conn.h"

typedef struct rc_push_s rc_push_t;

typedef struct {
    const char *brokers;      /* bootstrap brokers */
    const mc_kafka_sec_t *sec; /* TLS and SASL to the brokers (the consumer's) */
    const char *topic;        /* the push topic (not "") */
    const char *redis;        /* the Redis holding {presence}:online: host:port[,...] or /socket */
    mc_redis_tls_t tls;       /* its strings must outlive the pusher */
    size_t max_recipients;    /* a room with more members than this gets no events */
    int timeout_ms;           /* longest wait for a batch's events to be delivered */
    int64_t max_age_ms;       /* no events for messages older than this (by ts); 0: any age */
} rc_push_config_t;

typedef struct {
    uint64_t pushed;          /* events delivered */
    uint64_t online;          /* recipients skipped because they were online */
    uint64_t large;           /* messages without events: their room has too many members */
    uint64_t stale;           /* messages without events: older than max_age_ms */
    uint64_t presence_errors; /* batches without events: Redis could not say who is online */
    uint64_t failed;          /* batches held because an event was not delivered */
} rc_push_stats_t;

/* Creates the producer and checks that the topic exists.  Returns NULL
 * after logging why (a missing topic, a bad setting); a Kafka that does not
 * answer yet is only a warning. */
rc_push_t *rc_push_new(const rc_push_config_t *cfg);

/* Pushes the events of a batch already committed to MySQL: members from the
 * primary through db, who is online from Redis, events produced and
 * delivered.  Returns 0 when the batch is done (also when Redis failed: the
 * batch's pushes are then skipped and counted), -1 when the caller must
 * keep the batch and try again (the members query or a delivery failed). */
int rc_push_batch(rc_push_t *p, mc_db_t *db, const mc_msgbatch_t *b);

const rc_push_stats_t *rc_push_stats(const rc_push_t *p);

/* Waits a little for events still in flight, and frees everything.  NULL is ignored. */
void rc_push_free(rc_push_t *p);

#endif
