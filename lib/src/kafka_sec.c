/*
 * The kafka_* security keys (see minichat/kafka_sec.h) and the librdkafka
 * properties they become.  Pure code: no librdkafka here, so the parsing and
 * the mapping are unit-tested without a broker (tests/unit/test_kafka_sec.c);
 * kafka_client.c hands the properties to librdkafka.
 */
#include <stdio.h>
#include <string.h>

#include "minichat/kafka_sec.h"
#include "minichat/secret.h"

static const char *const mc_kafka_protocols[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
static const char *const mc_kafka_mechanisms[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"};

const char *mc_kafka_protocol_name(mc_kafka_protocol_t p)
{
    return (unsigned)p < 4 ? mc_kafka_protocols[p] : "?";
}

/* Returns the value of key, or NULL when absent or empty. */
static const char *mc_kafka_conf_str(const mc_conf_t *c, const char *key)
{
    const char *v = mc_conf_get(c, key, NULL);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

int mc_kafka_sec_read(mc_conf_t *c, mc_kafka_sec_t *s)
{
    const char *proto = mc_conf_get(c, "kafka_security_protocol", "plaintext");
    const char *pw_file = mc_kafka_conf_str(c, "kafka_sasl_password_file");
    size_t errors = mc_conf_nerrors(c);
    char why[300];
    int i, tls, sasl;

    memset(s, 0, sizeof(*s));
    for (i = 0; i < 4 && strcmp(proto, mc_kafka_protocols[i]) != 0; i++) {
    }
    if (i == 4) {
        mc_conf_error(c, "kafka_security_protocol",
                      "kafka_security_protocol \"%s\" is not plaintext, ssl, sasl_plaintext or sasl_ssl", proto);
        /* what the other keys need depends on it: only their files are checked */
        mc_conf_file(c, "kafka_ssl_ca");
        mc_conf_file(c, "kafka_ssl_cert");
        mc_conf_file(c, "kafka_ssl_key");
        return -1;
    }
    s->protocol = (mc_kafka_protocol_t)i;
    tls = s->protocol == MC_KAFKA_SSL || s->protocol == MC_KAFKA_SASL_SSL;
    sasl = s->protocol == MC_KAFKA_SASL_PLAINTEXT || s->protocol == MC_KAFKA_SASL_SSL;
    s->ssl_ca = mc_kafka_conf_str(c, "kafka_ssl_ca");
    s->ssl_cert = mc_kafka_conf_str(c, "kafka_ssl_cert");
    s->ssl_key = mc_kafka_conf_str(c, "kafka_ssl_key");
    s->sasl_mechanism = mc_kafka_conf_str(c, "kafka_sasl_mechanism");
    s->sasl_username = mc_kafka_conf_str(c, "kafka_sasl_username");

    if (!tls && (s->ssl_ca || s->ssl_cert || s->ssl_key)) {
        mc_conf_error(c, s->ssl_ca ? "kafka_ssl_ca" : s->ssl_cert ? "kafka_ssl_cert" : "kafka_ssl_key",
                      "kafka_ssl_ca, kafka_ssl_cert and kafka_ssl_key need kafka_security_protocol ssl or "
                      "sasl_ssl, not %s", proto);
    }
    if ((s->ssl_cert == NULL) != (s->ssl_key == NULL)) {
        mc_conf_error(c, s->ssl_cert ? "kafka_ssl_cert" : "kafka_ssl_key",
                      "kafka_ssl_cert and kafka_ssl_key go together: set both or neither");
    }
    if (!sasl && (s->sasl_mechanism || s->sasl_username || pw_file)) {
        mc_conf_error(c, s->sasl_mechanism ? "kafka_sasl_mechanism"
                         : s->sasl_username ? "kafka_sasl_username" : "kafka_sasl_password_file",
                      "kafka_sasl_* keys need kafka_security_protocol sasl_plaintext or sasl_ssl, not %s", proto);
    }
    if (sasl) {
        if (s->sasl_mechanism == NULL) {
            s->sasl_mechanism = "PLAIN";
        }
        for (i = 0; i < 3 && strcmp(s->sasl_mechanism, mc_kafka_mechanisms[i]) != 0; i++) {
        }
        if (i == 3) {
            mc_conf_error(c, "kafka_sasl_mechanism",
                          "kafka_sasl_mechanism \"%s\" is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                          s->sasl_mechanism);
        }
        if (s->sasl_username == NULL || pw_file == NULL) {
            mc_conf_error(c, "kafka_security_protocol",
                          "kafka_security_protocol %s needs kafka_sasl_username and kafka_sasl_password_file",
                          proto);
        }
    }
    mc_conf_file(c, "kafka_ssl_ca");
    mc_conf_file(c, "kafka_ssl_cert");
    mc_conf_file(c, "kafka_ssl_key");
    if (sasl && pw_file != NULL) {
        s->sasl_password = mc_secret_read(pw_file, why, sizeof(why));
        if (s->sasl_password == NULL) {
            mc_conf_error(c, "kafka_sasl_password_file", "kafka_sasl_password_file: %s", why);
        }
    }
    return mc_conf_nerrors(c) > errors ? -1 : 0;
}

void mc_kafka_sec_free(mc_kafka_sec_t *s)
{
    mc_secret_free(s->sasl_password);
    s->sasl_password = NULL;
}

int mc_kafka_sec_prop(const mc_kafka_sec_t *s, int i, const char **name, const char **value)
{
    const char *names[7], *values[7];
    int n = 0;

    names[n] = "security.protocol";
    values[n++] = mc_kafka_protocol_name(s->protocol);
    if (s->ssl_ca != NULL) {
        names[n] = "ssl.ca.location";
        values[n++] = s->ssl_ca;
    }
    if (s->ssl_cert != NULL) {
        names[n] = "ssl.certificate.location";
        values[n++] = s->ssl_cert;
        names[n] = "ssl.key.location";
        values[n++] = s->ssl_key;
    }
    if (s->protocol == MC_KAFKA_SASL_PLAINTEXT || s->protocol == MC_KAFKA_SASL_SSL) {
        names[n] = "sasl.mechanisms";
        values[n++] = s->sasl_mechanism;
        names[n] = "sasl.username";
        values[n++] = s->sasl_username;
        names[n] = "sasl.password";
        values[n++] = s->sasl_password;
    }
    if (i < 0 || i >= n) {
        return -1;
    }
    *name = names[i];
    *value = values[i];
    return 0;
}

int mc_kafka_prop_secret(const char *name)
{
    return strcmp(name, "sasl.password") == 0 || strcmp(name, "ssl.key.password") == 0;
}
