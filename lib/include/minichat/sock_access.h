/*
 * Who may use a unix socket: the socket file's mode and group, and the list
 * of local users and groups whose connections a server accepts (checked
 * against the peer's credentials, SO_PEERCRED and SO_PEERGROUPS).  Parsing
 * happens once at start-up (names are resolved then, through NSS); the
 * check on accept is a plain lookup in small arrays.
 */
#ifndef MINICHAT_SOCK_ACCESS_H
#define MINICHAT_SOCK_ACCESS_H

#include <stddef.h>
#include <sys/types.h>

#define MC_SOCK_ACCESS_MAX 64 /* users, and groups likewise, in one list */

typedef struct {
    uid_t uids[MC_SOCK_ACCESS_MAX];
    size_t nuids;
    gid_t gids[MC_SOCK_ACCESS_MAX];
    size_t ngids;
} mc_sock_peers_t;

/* Parses an octal file mode ("0660", "660"; at most 0777) into *mode.
 * Returns 0, or -1 with a message in err. */
int mc_sock_mode_parse(const char *s, mode_t *mode, char *err, size_t err_size);

/* Resolves a group name or a decimal gid into *gid.  Returns 0, or -1 with
 * a message in err (no such group, a bad number). */
int mc_sock_group_parse(const char *s, gid_t *gid, char *err, size_t err_size);

/* Parses a comma-separated list of `user:NAME`, `uid:N`, `group:NAME` and
 * `gid:N` (spaces around items are ignored; "" is the empty list) into
 * *peers.  Names must exist.  Returns 0, or -1 with a message in err. */
int mc_sock_peers_parse(const char *spec, mc_sock_peers_t *peers, char *err, size_t err_size);

/* Returns 1 when uid is a listed user, or gid or one of groups[0..ngroups)
 * is a listed group; else 0. */
int mc_sock_peers_allow(const mc_sock_peers_t *peers, uid_t uid, gid_t gid, const gid_t *groups, size_t ngroups);

#endif
