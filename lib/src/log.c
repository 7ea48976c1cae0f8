/*
 * Service logging.  Every line carries a UTC timestamp with milliseconds, the
 * program name and pid, and the level, and is written with one write(2) so
 * that lines from several threads never interleave.
 *
 * The log file keeps one descriptor number for the life of the process: a
 * reopen opens the new file and dup2()s it onto that number, which the
 * kernel does atomically, so a thread that is writing meanwhile writes to
 * the old file or the new one, never to a closed descriptor.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "minichat/log.h"

static const char *log_program = "minichat";
static int log_min_level = MC_LOG_INFO;
static int log_fd = -1;                 /* the log file, or -1 */
static pthread_mutex_t log_file_lock = PTHREAD_MUTEX_INITIALIZER;   /* for mc_log_file() callers */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void mc_log_init(const char *program, int min_level)
{
    log_program = program;
    mc_log_set_level(min_level);
}

void mc_log_set_level(int min_level)
{
    __atomic_store_n(&log_min_level, min_level, __ATOMIC_RELAXED);
}

int mc_log_level_named(const char *name)
{
    int i;

    for (i = MC_LOG_DEBUG; i <= MC_LOG_ERROR; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int mc_log_file(const char *path, char *err, size_t err_size)
{
    int fd, rc = 0;

    pthread_mutex_lock(&log_file_lock);
    if (path == NULL || path[0] == '\0') {
        fd = __atomic_exchange_n(&log_fd, -1, __ATOMIC_RELAXED);
        if (fd >= 0) {
            close(fd);
        }
        goto out;
    }
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, err_size, "cannot open log file \"%s\": %s", path, strerror(errno));
        rc = -1;
        goto out;
    }
    if (log_fd < 0) {
        __atomic_store_n(&log_fd, fd, __ATOMIC_RELEASE);
    } else {
        if (dup2(fd, log_fd) < 0) {
            snprintf(err, err_size, "cannot reopen log file \"%s\": %s", path, strerror(errno));
            close(fd);
            rc = -1;
            goto out;
        }
        close(fd);
    }
out:
    pthread_mutex_unlock(&log_file_lock);
    return rc;
}

void mc_log(int level, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n, m, fd;

    if (level < __atomic_load_n(&log_min_level, __ATOMIC_RELAXED)) {
        return;
    }
    if (level < MC_LOG_DEBUG || level > MC_LOG_ERROR) {
        level = MC_LOG_ERROR;
    }

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s[%d] %s: ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000), log_program,
                 (int)getpid(), level_names[level]);

    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);

    if (m < 0) {
        m = 0;
    }
    n += m;
    if (n > (int)sizeof(line) - 2) {
        n = sizeof(line) - 2;
    }
    line[n++] = '\n';

    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
    fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && write(fd, line, n) < 0) {
        /* stderr has it */
    }
}
