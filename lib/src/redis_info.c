/*
 * INFO replication: a node's role and, for a master, its replication id.
 * Lines are matched whole by field name, so "master_replid2" is not taken
 * for "master_replid"; the id must be exactly 40 hex digits, as Redis makes
 * it, or the reply counts as malformed.
 */
#include <string.h>

#include "minichat/redis_info.h"

/* Finds the value of field in info; returns its start and sets *vlen, or
 * returns NULL. */
static const char *info_field(const char *info, size_t len, const char *field, size_t *vlen)
{
    size_t flen = strlen(field), i = 0, end, v;

    while (i < len) {
        end = i;
        while (end < len && info[end] != '\n') {
            end++;
        }
        if (end - i > flen && memcmp(info + i, field, flen) == 0 && info[i + flen] == ':') {
            v = i + flen + 1;
            *vlen = end - v;
            if (*vlen > 0 && info[v + *vlen - 1] == '\r') {
                (*vlen)--;
            }
            return info + v;
        }
        i = end + 1;
    }
    return NULL;
}

mc_redis_role_t mc_redis_info_replid(const char *info, size_t len, char replid[MC_REDIS_REPLID_LEN + 1])
{
    const char *role, *id;
    size_t rlen, ilen, i;

    if (info == NULL) {
        return MC_REDIS_ROLE_BAD;
    }
    role = info_field(info, len, "role", &rlen);
    if (role == NULL) {
        return MC_REDIS_ROLE_BAD;
    }
    if (rlen == 5 && memcmp(role, "slave", 5) == 0) {
        return MC_REDIS_ROLE_REPLICA;
    }
    if (rlen != 6 || memcmp(role, "master", 6) != 0) {
        return MC_REDIS_ROLE_BAD;
    }
    id = info_field(info, len, "master_replid", &ilen);
    if (id == NULL || ilen != MC_REDIS_REPLID_LEN) {
        return MC_REDIS_ROLE_BAD;
    }
    for (i = 0; i < ilen; i++) {
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) {
            return MC_REDIS_ROLE_BAD;
        }
    }
    memcpy(replid, id, ilen);
    replid[ilen] = '\0';
    return MC_REDIS_ROLE_MASTER;
}
