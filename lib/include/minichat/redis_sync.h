/*
 * A synchronous (blocking) way to the Redis node that serves one key, for the
 * services' threads and tools that speak to Redis over a blocking connection
 * (redis_conn.h: the consumer's read-pointer flusher, minichat-ban).  The same call works for a single Redis
 * and a Redis Cluster: it connects to the first address that answers, asks
 * it about the key, and follows MOVED to the key's master.  A later MOVED
 * (a reshard, a failover) is the caller's cue to drop the context and call
 * again.  Every node is reached with the same TLS settings (a TLS cluster
 * announces its TLS ports to a TLS client).
 */
#ifndef MINICHAT_REDIS_SYNC_H
#define MINICHAT_REDIS_SYNC_H

#include <stddef.h>

#include "minichat/redis_conn.h"

/* Returns 0 when addrs is a valid list: "host:port[,host:port...]" (cluster
 * seeds, or one Redis) or "/path/to/socket"; -1 otherwise. */
int mc_redis_addrs_check(const char *addrs);

/* Connects to the node serving key: tries each address of addrs in turn
 * (over TLS when tls->on; a unix socket never), asks `EXISTS key` and
 * follows MOVED (at most 5).  Every call and connect waits at most
 * timeout_ms.  Returns the connection, or NULL with the last error in err. */
mc_redis_conn_t *mc_redis_connect_for_key(const char *addrs, const mc_redis_tls_t *tls, const char *key,
                                          int timeout_ms, char *err, size_t errlen);

#endif
