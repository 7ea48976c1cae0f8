/*
 * Secrets and key files named in the services' config files: a password read
 * from a file of its own (so that it stays out of the config file and out of
 * the process list), and a check that a certificate or key file can be read,
 * so that a wrong path is an error at start-up rather than a TLS failure
 * later.
 */
#ifndef MINICHAT_SECRET_H
#define MINICHAT_SECRET_H

#include <stddef.h>

#define MC_SECRET_MAX 1024   /* bytes of a secret file, trailing newline included */

/* Reads the secret in path: its whole content, one trailing "\n" or "\r\n"
 * stripped.  An empty file, a file over MC_SECRET_MAX bytes, or one with a
 * NUL byte or a line break inside is refused.  Returns a heap copy that the
 * caller frees with mc_secret_free(), or NULL with a message in err (the
 * message never holds the secret). */
char *mc_secret_read(const char *path, char *err, size_t err_size);
/* Wipes and frees a secret from mc_secret_read() (NULL is fine). */
void mc_secret_free(char *secret);
/* Returns 0 when path names a regular file this process can open for
 * reading, else -1 with a message in err. */
int mc_file_readable(const char *path, char *err, size_t err_size);

#endif
