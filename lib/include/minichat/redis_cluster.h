/*
 * The pure parts of a Redis Cluster client, shared by the module's async
 * client and the services' synchronous helper: the slot map read from a
 * `CLUSTER SLOTS` reply (slot → master address), the `MOVED`/`ASK`
 * redirections and the error classes a client must treat apart (TRYAGAIN,
 * CLUSTERDOWN, LOADING: retry later; NOSCRIPT: send the source).  No I/O:
 * the reply is hiredis's redisReply as hiredis parsed it (a test builds one by
 * hand), and addresses are "host:port" text as Redis writes them.
 *
 * Traps: a node's host in CLUSTER SLOTS (and in a MOVED) may be empty, which
 * means "the node you asked"; the caller passes that host in.  An IPv6
 * address has colons of its own, so the port is after the last one.  A
 * master may serve several slot ranges: it is one node of the map, listed
 * once.
 */
#ifndef MINICHAT_REDIS_CLUSTER_H
#define MINICHAT_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "minichat/redis_slot.h"

#define MC_REDIS_HOST_MAX 256

typedef struct {
    char host[MC_REDIS_HOST_MAX];   /* may be "" until the caller fills it */
    int port;
} mc_redis_addr_t;

typedef struct {
    mc_redis_addr_t *nodes;         /* masters, each once */
    size_t nnodes;
    int16_t owner[MC_REDIS_SLOTS];  /* index into nodes; -1: no master */
} mc_redis_slotmap_t;

typedef enum {
    MC_REDIS_ERR_OTHER = 0,
    MC_REDIS_ERR_MOVED,
    MC_REDIS_ERR_ASK,
    MC_REDIS_ERR_TRYAGAIN,      /* multi-key command during a slot migration */
    MC_REDIS_ERR_CLUSTERDOWN,   /* a slot has no master (failover running) */
    MC_REDIS_ERR_LOADING,       /* the node is loading its data set */
    MC_REDIS_ERR_NOSCRIPT       /* that node has not cached the script */
} mc_redis_err_t;

typedef struct {
    int ask;                    /* 1 for ASK, 0 for MOVED */
    unsigned slot;
    mc_redis_addr_t addr;       /* host "" means the node that answered */
} mc_redis_redirect_t;

/* Parses "host:port" (port after the last ':', 1..65535; host may be empty,
 * at most MC_REDIS_HOST_MAX - 1 bytes).  Returns 0, or -1 (*a untouched). */
int mc_redis_addr_parse(const char *s, size_t n, mc_redis_addr_t *a);

/* Builds *m from a CLUSTER SLOTS reply; a master listed with host "" gets
 * default_host.  Returns 0, or -1 when the reply is malformed or lists no
 * slot (then *m is empty and needs no free). */
int mc_redis_slotmap_parse(mc_redis_slotmap_t *m, const redisReply *r, const char *default_host);

/* Frees the node list of *m and leaves it empty (every slot -1). */
void mc_redis_slotmap_free(mc_redis_slotmap_t *m);

/* Returns the index in m->nodes of the master serving slot, or -1. */
int mc_redis_slotmap_owner(const mc_redis_slotmap_t *m, unsigned slot);

/* Returns the index in m->nodes of the node at *a, or -1. */
int mc_redis_slotmap_find(const mc_redis_slotmap_t *m, const mc_redis_addr_t *a);

/* Returns the class of a Redis error reply's text s[0..n). */
mc_redis_err_t mc_redis_error_class(const char *s, size_t n);

/* Parses "MOVED <slot> <host:port>" or "ASK <slot> <host:port>".  Returns 0,
 * or -1 when s is anything else (a slot past 16383, no port, extra text). */
int mc_redis_redirect_parse(const char *s, size_t n, mc_redis_redirect_t *r);

#endif
