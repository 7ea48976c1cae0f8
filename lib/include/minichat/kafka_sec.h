/*
 * How the services reach Kafka: the kafka_* security keys of relay-worker's
 * and roomlist-consumer's config files, read in one place, and applied the
 * same way to every librdkafka handle (the producer, the lag checker, the
 * roomlist consumer).
 *
 *   kafka_security_protocol   plaintext | ssl | sasl_plaintext | sasl_ssl  (plaintext)
 *   kafka_ssl_ca              CA certificate(s) of the brokers, PEM (default:
 *                             the system's trust store)
 *   kafka_ssl_cert, kafka_ssl_key
 *                             a client certificate and its key, PEM (for
 *                             brokers with ssl.client.auth=required)
 *   kafka_sasl_mechanism      PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512     (PLAIN)
 *   kafka_sasl_username
 *   kafka_sasl_password_file  a file holding the password (trailing newline
 *                             stripped)
 *
 * With ssl and sasl_ssl librdkafka checks the broker's certificate against
 * the CA and its name against the broker's address
 * (ssl.endpoint.identification.algorithm=https).
 */
#ifndef MINICHAT_KAFKA_SEC_H
#define MINICHAT_KAFKA_SEC_H

#include <stddef.h>

#include "minichat/conf.h"

#define MC_KAFKA_SEC_CONF_KEYS                                                                                     \
    "kafka_security_protocol", "kafka_ssl_ca", "kafka_ssl_cert", "kafka_ssl_key", "kafka_sasl_mechanism",        \
        "kafka_sasl_username", "kafka_sasl_password_file"

typedef enum {
    MC_KAFKA_PLAINTEXT,
    MC_KAFKA_SSL,
    MC_KAFKA_SASL_PLAINTEXT,
    MC_KAFKA_SASL_SSL
} mc_kafka_protocol_t;

typedef struct {
    mc_kafka_protocol_t protocol;
    const char *ssl_ca;          /* NULL for none, as the others; they point into the mc_conf_t */
    const char *ssl_cert;
    const char *ssl_key;
    const char *sasl_mechanism;
    const char *sasl_username;
    char *sasl_password;         /* read from kafka_sasl_password_file, or NULL */
} mc_kafka_sec_t;

/* Fills s from the config.  Files named by the keys must be readable now.
 * Returns 0, or -1 after recording every error in c (mc_conf_error; the
 * messages never hold the password); s needs mc_kafka_sec_free() either way. */
int mc_kafka_sec_read(mc_conf_t *c, mc_kafka_sec_t *s);
void mc_kafka_sec_free(mc_kafka_sec_t *s);
/* Returns "plaintext", "ssl", "sasl_plaintext" or "sasl_ssl". */
const char *mc_kafka_protocol_name(mc_kafka_protocol_t p);

/* The librdkafka properties for s, one at a time: i from 0 up; returns 0
 * and sets *name and *value, or -1 past the last one. */
int mc_kafka_sec_prop(const mc_kafka_sec_t *s, int i, const char **name, const char **value);
/* Returns 1 when a librdkafka property holds a secret and must not be logged. */
int mc_kafka_prop_secret(const char *name);

/* Applies s to a librdkafka configuration (an rd_kafka_conf_t *; void here
 * so that this header needs no librdkafka).  Returns 0, or -1 with a
 * message in err. */
int mc_kafka_sec_apply(const mc_kafka_sec_t *s, void *rd_kafka_conf, char *err, size_t err_size);

/* Connects to the brokers once with s and asks for metadata, for at most
 * timeout_ms.  Returns 0 when the brokers answered, 1 when none could be
 * reached (down or not started yet: the caller carries on), -1 when TLS or
 * authentication failed (a wrong CA, certificate or password: the caller
 * stops), with a message in err for 1 and -1. */
int mc_kafka_sec_probe(const mc_kafka_sec_t *s, const char *brokers, int timeout_ms, char *err, size_t err_size);

#endif
