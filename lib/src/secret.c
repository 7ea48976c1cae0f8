/*
 * Secret files and readable-file checks for the services' config (see
 * minichat/secret.h).  A secret is read with one bounded read: a password
 * file is a few bytes, so anything past MC_SECRET_MAX is a wrong file (a
 * key, a log) and is refused instead of being sent to a server.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "minichat/secret.h"

int mc_file_readable(const char *path, char *err, size_t err_size)
{
    struct stat st;
    int fd;

    if (path == NULL || path[0] == '\0') {
        snprintf(err, err_size, "no file name");
        return -1;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_size, "cannot open \"%s\": %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "\"%s\" is not a regular file", path);
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

char *mc_secret_read(const char *path, char *err, size_t err_size)
{
    char buf[MC_SECRET_MAX + 1], *s;
    size_t len = 0;
    ssize_t n;
    int fd;

    if (mc_file_readable(path, err, err_size) != 0) {
        return NULL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_size, "cannot open \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            snprintf(err, err_size, "cannot read \"%s\": %s", path, strerror(errno));
            close(fd);
            explicit_bzero(buf, sizeof(buf));
            return NULL;
        }
        len += (size_t)n;
    }
    close(fd);

    s = NULL;
    if (len > MC_SECRET_MAX) {
        snprintf(err, err_size, "\"%s\" is longer than %d bytes: not a password file", path, MC_SECRET_MAX);
    } else {
        if (len > 0 && buf[len - 1] == '\n') {
            len--;
            if (len > 0 && buf[len - 1] == '\r') {
                len--;
            }
        }
        if (len == 0) {
            snprintf(err, err_size, "\"%s\" is empty", path);
        } else if (memchr(buf, '\0', len) != NULL || memchr(buf, '\n', len) != NULL
                   || memchr(buf, '\r', len) != NULL) {
            snprintf(err, err_size, "\"%s\" holds more than one line (or a NUL byte): not a password file", path);
        } else if ((s = malloc(len + 1)) == NULL) {
            snprintf(err, err_size, "out of memory");
        } else {
            memcpy(s, buf, len);
            s[len] = '\0';
        }
    }
    explicit_bzero(buf, sizeof(buf));
    return s;
}

void mc_secret_free(char *secret)
{
    if (secret != NULL) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
}
