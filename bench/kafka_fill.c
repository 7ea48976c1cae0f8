/*
 * kafka_fill: produces MSGS chat messages for ROOMS rooms (ids from
 * ROOM_BASE) straight into the messages topic, as the relay-workers would,
 * so that bench/consumer_rate.sh can time the roomlist-consumer alone.
 * Seqs are dense per room (1, 2, ...), the key is the room id in decimal.
 *
 *   kafka_fill BROKERS TOPIC ROOM_BASE ROOMS MSGS BODY_BYTES [RATE [COMPRESSION]]
 *
 * RATE (messages a second) paces the messages evenly, for the consumer's
 * cost per row at a light load; without it (or 0) they go as fast as
 * librdkafka takes them.  COMPRESSION is the producer's compression.type
 * (none by default; the relay-worker's kafka_compression, to compare the
 * consumer's side of it).  At the end it prints its own CPU time,
 * `kafka_fill: cpu_ms=N` (getrusage: the producer's share of a persistence
 * run, on the same cores as everything else in the bench).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <librdkafka/rdkafka.h>

#include "minichat.pb-c.h"
#include "minichat/clock.h"

int main(int argc, char **argv)
{
    Minichat__ChatMessage m = MINICHAT__CHAT_MESSAGE__INIT;
    char errstr[512], key[24], cid[32], *body;
    unsigned long long base, rooms, msgs, blen, rate = 0, i;
    int64_t t0, due;
    rd_kafka_conf_t *conf;
    rd_kafka_topic_t *rkt;
    rd_kafka_t *rk;
    struct rusage ru;
    uint8_t *buf;
    size_t n;
    int klen;

    if (argc < 7 || argc > 9) {
        fprintf(stderr, "usage: kafka_fill BROKERS TOPIC ROOM_BASE ROOMS MSGS BODY_BYTES [RATE [COMPRESSION]]\n");
        return 2;
    }
    if (argc >= 8) {
        rate = strtoull(argv[7], NULL, 10);
        if (rate > 1000000) {
            fprintf(stderr, "kafka_fill: RATE is at most 1000000 messages a second\n");
            return 2;
        }
    }
    base = strtoull(argv[3], NULL, 10);
    rooms = strtoull(argv[4], NULL, 10);
    msgs = strtoull(argv[5], NULL, 10);
    blen = strtoull(argv[6], NULL, 10);
    if (base == 0 || rooms == 0 || blen > 65536) {
        fprintf(stderr, "kafka_fill: ROOM_BASE and ROOMS must be > 0, BODY_BYTES at most 65536\n");
        return 2;
    }
    body = malloc(blen + 1);
    if (body == NULL) {
        return 1;
    }
    memset(body, 'x', blen);
    body[blen] = '\0';

    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK
        || rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK
        || rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", errstr, sizeof(errstr))
               != RD_KAFKA_CONF_OK
        || rd_kafka_conf_set(conf, "compression.type", argc == 9 ? argv[8] : "none", errstr, sizeof(errstr))
               != RD_KAFKA_CONF_OK)
    {
        fprintf(stderr, "kafka_fill: %s\n", errstr);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "kafka_fill: %s\n", errstr);
        return 1;
    }
    rkt = rd_kafka_topic_new(rk, argv[2], NULL);

    t0 = mc_now_ms();
    for (i = 0; i < msgs; i++) {
        if (rate > 0) {
            due = t0 + (int64_t)(i * 1000 / rate);
            while (mc_now_ms() < due) {
                rd_kafka_poll(rk, (int)(due - mc_now_ms()));
            }
        }
        m.room = base + i % rooms;
        m.seq = i / rooms + 1;
        m.sender = 1;
        snprintf(cid, sizeof(cid), "fill-%llu", i);
        m.cid = cid;
        m.body = body;
        m.ts = (uint64_t)mc_wall_ms();
        n = minichat__chat_message__get_packed_size(&m);
        buf = malloc(n);
        if (buf == NULL) {
            return 1;
        }
        minichat__chat_message__pack(&m, buf);
        klen = snprintf(key, sizeof(key), "%" PRIu64, m.room);
        while (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_FREE, buf, n, key, (size_t)klen, NULL)
               != 0) {
            rd_kafka_poll(rk, 10); /* queue full: let it drain */
        }
        rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "kafka_fill: not every message was delivered\n");
        return 1;
    }
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    free(body);
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        printf("kafka_fill: cpu_ms=%ld\n", (long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000
                                               + (long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000);
    }
    return 0;
}
