/*
 * librdkafka's own log lines (syslog levels) routed through mc_log, so that
 * they carry the service's prefix and obey log_level.
 */
#include <syslog.h>

#include "kafka_log.h"
#include "minichat/log.h"

void rc_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    int l = level <= LOG_ERR ? MC_LOG_ERROR : level == LOG_WARNING ? MC_LOG_WARN : level <= LOG_INFO ? MC_LOG_INFO
                                                                                                       : MC_LOG_DEBUG;

    mc_log(l, "kafka: %s: %s: %s", rd_kafka_name(rk), fac, buf);
}
