/*
 * The librdkafka side of the Kafka security settings (minichat/kafka_sec.h):
 * applying them to a handle's configuration, and a start-up probe that tells
 * a wrong CA, client certificate or SASL password (stop now, with the
 * broker's reason) from brokers that are merely not up yet (carry on:
 * librdkafka reconnects by itself).
 *
 * The probe is a short-lived producer handle of its own: it asks for
 * metadata, which needs a connection, a TLS handshake and SASL, and watches
 * the error callback for RD_KAFKA_RESP_ERR__SSL and __AUTHENTICATION, and
 * for a transport error that is a TLS alert from the broker ("SSL alert
 * number N": with TLS 1.3 a broker that requires a client certificate
 * refuses it after the client's side of the handshake is done, so librdkafka
 * sees it as a failed receive).  librdkafka reports a failure before it
 * reports all brokers down, so once "all brokers down" arrives the verdict
 * is known.
 */
#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "minichat/clock.h"
#include "minichat/kafka_sec.h"
#include "minichat/log.h"

#define MC_KAFKA_PROBE_STEP_MS 500

typedef struct {
    int failed;          /* TLS or authentication failed */
    int down;            /* all brokers down */
    char reason[512];    /* the first TLS or authentication failure */
} mc_kafka_probe_t;

int mc_kafka_sec_apply(const mc_kafka_sec_t *s, void *rd_kafka_conf, char *err, size_t err_size)
{
    const char *name, *value;
    char why[512];
    int i;

    for (i = 0; mc_kafka_sec_prop(s, i, &name, &value) == 0; i++) {
        if (rd_kafka_conf_set(rd_kafka_conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
            snprintf(err, err_size, "%s=%s: %s", name, mc_kafka_prop_secret(name) ? "(secret)" : value, why);
            return -1;
        }
    }
    return 0;
}

/* Records TLS and authentication failures (a TLS alert from the broker
 * included) and "all brokers down". */
static void mc_kafka_probe_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    mc_kafka_probe_t *p = opaque;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__SSL || err == RD_KAFKA_RESP_ERR__AUTHENTICATION
        || (err == RD_KAFKA_RESP_ERR__TRANSPORT && strstr(reason, "SSL alert") != NULL)) {
        if (!p->failed) {
            snprintf(p->reason, sizeof(p->reason), "%s", reason);
        }
        p->failed = 1;
    } else if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        p->down = 1;
    }
}

/* librdkafka's own lines are the probe's business: debug only. */
static void mc_kafka_probe_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    mc_debug("kafka: probe: %s: %s", fac, buf);
}

int mc_kafka_sec_probe(const mc_kafka_sec_t *s, const char *brokers, int timeout_ms, char *err, size_t err_size)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    mc_kafka_probe_t p;
    rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR__TIMED_OUT;
    int64_t deadline = mc_now_ms() + timeout_ms, now;
    char why[512];
    rd_kafka_t *rk;
    int rc = 1, step, settle = 0;

    memset(&p, 0, sizeof(p));
    if (conf == NULL) {
        snprintf(err, err_size, "out of memory");
        return 1;
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, why, sizeof(why)) != RD_KAFKA_CONF_OK
        || rd_kafka_conf_set(conf, "client.id", "minichat-probe", why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(err, err_size, "%s", why);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    if (mc_kafka_sec_apply(s, conf, err, err_size) != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_error_cb(conf, mc_kafka_probe_error_cb);
    rd_kafka_conf_set_log_cb(conf, mc_kafka_probe_log_cb);
    rd_kafka_conf_set_opaque(conf, &p);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (rk == NULL) {
        snprintf(err, err_size, "%s", why);
        rd_kafka_conf_destroy(conf);
        return -1;
    }

    while ((now = mc_now_ms()) < deadline) {
        step = (int)(deadline - now < MC_KAFKA_PROBE_STEP_MS ? deadline - now : MC_KAFKA_PROBE_STEP_MS);
        rerr = rd_kafka_metadata(rk, 0, NULL, &md, step);
        if (rerr == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_metadata_destroy(md);
            rc = 0;
            break;
        }
        rd_kafka_poll(rk, 100);
        if (p.failed) {
            break;
        }
        /* one more round after "all brokers down", for a late TLS verdict */
        if (p.down && settle++ > 0) {
            break;
        }
    }
    if (p.failed) {
        snprintf(err, err_size, "%s", p.reason);
        rc = -1;
    } else if (rc != 0) {
        snprintf(err, err_size, "no broker of %s answered within %d ms (%s)", brokers, timeout_ms,
                 p.down ? "all brokers down" : rd_kafka_err2str(rerr));
    }
    rd_kafka_destroy(rk);
    return rc;
}
