/*
 * Access to a unix socket (see sock_access.h).  Everything that can fail
 * does so at start-up with a message naming the value: a mode with bits
 * past 0777, a user or group that does not exist, an item without its
 * `kind:` prefix, a list longer than MC_SOCK_ACCESS_MAX.  Names go through
 * getpwnam_r/getgrnam_r once, so the accept path never waits on NSS (an
 * LDAP directory could take seconds); a group is matched against the
 * groups the peer process really has (SO_PEERGROUPS), which the caller
 * passes in, not against /etc/group.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/sock_access.h"

#define SOCK_ACCESS_ITEM_MAX 256
#define SOCK_ACCESS_NSS_BUF 16384

/* Parses a decimal id (no sign, at most 4294967294: -1 means "none" to
 * chown).  Returns 0 or -1. */
static int parse_id(const char *s, unsigned long *out)
{
    unsigned long long n = 0;

    if (*s == '\0') {
        return -1;
    }
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) {
            return -1;
        }
        n = n * 10 + (unsigned)(*s - '0');
        if (n > 4294967294ULL) {
            return -1;
        }
    }
    *out = (unsigned long)n;
    return 0;
}

int mc_sock_mode_parse(const char *s, mode_t *mode, char *err, size_t err_size)
{
    unsigned long m = 0;
    const char *p = s;

    if (*p == '\0') {
        snprintf(err, err_size, "empty file mode");
        return -1;
    }
    for (; *p; p++) {
        if (*p < '0' || *p > '7' || m > 0777) {
            snprintf(err, err_size, "file mode \"%s\" is not octal in [0, 0777]", s);
            return -1;
        }
        m = m * 8 + (unsigned long)(*p - '0');
    }
    if (m > 0777) {
        snprintf(err, err_size, "file mode \"%s\" is not octal in [0, 0777]", s);
        return -1;
    }
    *mode = (mode_t)m;
    return 0;
}

/* Resolves a user name.  Returns 0, or -1 with a message in err. */
static int user_by_name(const char *name, uid_t *uid, char *err, size_t err_size)
{
    char buf[SOCK_ACCESS_NSS_BUF];
    struct passwd pw, *res = NULL;
    int rc = getpwnam_r(name, &pw, buf, sizeof(buf), &res);

    if (res == NULL) {
        snprintf(err, err_size, "no user \"%s\"%s%s", name, rc ? ": " : "", rc ? strerror(rc) : "");
        return -1;
    }
    *uid = pw.pw_uid;
    return 0;
}

/* Resolves a group name.  Returns 0, or -1 with a message in err. */
static int group_by_name(const char *name, gid_t *gid, char *err, size_t err_size)
{
    char buf[SOCK_ACCESS_NSS_BUF];
    struct group gr, *res = NULL;
    int rc = getgrnam_r(name, &gr, buf, sizeof(buf), &res);

    if (res == NULL) {
        snprintf(err, err_size, "no group \"%s\"%s%s", name, rc ? ": " : "", rc ? strerror(rc) : "");
        return -1;
    }
    *gid = gr.gr_gid;
    return 0;
}

int mc_sock_group_parse(const char *s, gid_t *gid, char *err, size_t err_size)
{
    unsigned long n;

    if (*s == '\0') {
        snprintf(err, err_size, "empty group");
        return -1;
    }
    if (isdigit((unsigned char)*s)) {
        if (parse_id(s, &n) != 0) {
            snprintf(err, err_size, "gid \"%s\" is not a number in [0, 4294967294]", s);
            return -1;
        }
        *gid = (gid_t)n;
        return 0;
    }
    return group_by_name(s, gid, err, err_size);
}

/* Adds one `kind:value` item.  Returns 0, or -1 with a message in err. */
static int peers_add(mc_sock_peers_t *peers, const char *item, char *err, size_t err_size)
{
    const char *colon = strchr(item, ':'), *v;
    size_t klen;
    unsigned long n;
    uid_t uid;
    gid_t gid;
    int is_user;

    if (colon == NULL || colon[1] == '\0') {
        snprintf(err, err_size, "\"%s\" is not user:NAME, uid:N, group:NAME or gid:N", item);
        return -1;
    }
    klen = (size_t)(colon - item);
    v = colon + 1;
    if (klen == 4 && strncmp(item, "user", 4) == 0) {
        is_user = 1;
        if (user_by_name(v, &uid, err, err_size) != 0) {
            return -1;
        }
    } else if (klen == 5 && strncmp(item, "group", 5) == 0) {
        is_user = 0;
        if (group_by_name(v, &gid, err, err_size) != 0) {
            return -1;
        }
    } else if (klen == 3 && (strncmp(item, "uid", 3) == 0 || strncmp(item, "gid", 3) == 0)) {
        is_user = item[0] == 'u';
        if (parse_id(v, &n) != 0) {
            snprintf(err, err_size, "\"%s\": the id is not a number in [0, 4294967294]", item);
            return -1;
        }
        uid = (uid_t)n;
        gid = (gid_t)n;
    } else {
        snprintf(err, err_size, "\"%s\" is not user:NAME, uid:N, group:NAME or gid:N", item);
        return -1;
    }
    if ((is_user ? peers->nuids : peers->ngids) == MC_SOCK_ACCESS_MAX) {
        snprintf(err, err_size, "more than %d %s", MC_SOCK_ACCESS_MAX, is_user ? "users" : "groups");
        return -1;
    }
    if (is_user) {
        peers->uids[peers->nuids++] = uid;
    } else {
        peers->gids[peers->ngids++] = gid;
    }
    return 0;
}

int mc_sock_peers_parse(const char *spec, mc_sock_peers_t *peers, char *err, size_t err_size)
{
    char item[SOCK_ACCESS_ITEM_MAX];
    const char *p = spec, *end, *b, *e;
    size_t n;

    peers->nuids = 0;
    peers->ngids = 0;
    for (;;) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = p + strlen(p);
        }
        b = p;
        e = end;
        while (b < e && isspace((unsigned char)*b)) {
            b++;
        }
        while (e > b && isspace((unsigned char)e[-1])) {
            e--;
        }
        n = (size_t)(e - b);
        if (n == 0) {
            if (*end == ',' || p != spec) {
                snprintf(err, err_size, "empty item in \"%s\"", spec);
                return -1;
            }
        } else if (n >= sizeof(item)) {
            snprintf(err, err_size, "an item of \"%.32s...\" is longer than %d characters", spec,
                     SOCK_ACCESS_ITEM_MAX - 1);
            return -1;
        } else {
            memcpy(item, b, n);
            item[n] = '\0';
            if (peers_add(peers, item, err, err_size) != 0) {
                return -1;
            }
        }
        if (*end == '\0') {
            return 0;
        }
        p = end + 1;
    }
}

int mc_sock_peers_allow(const mc_sock_peers_t *peers, uid_t uid, gid_t gid, const gid_t *groups, size_t ngroups)
{
    size_t i, j;

    for (i = 0; i < peers->nuids; i++) {
        if (peers->uids[i] == uid) {
            return 1;
        }
    }
    for (i = 0; i < peers->ngids; i++) {
        if (peers->gids[i] == gid) {
            return 1;
        }
        for (j = 0; j < ngroups; j++) {
            if (peers->gids[i] == groups[j]) {
                return 1;
            }
        }
    }
    return 0;
}
