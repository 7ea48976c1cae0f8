/*
 * Service logging.  Every line carries a UTC timestamp with milliseconds, the
 * program name and pid, and the level, and is written with one write(2) so
 * that lines from several threads never interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "minichat/log.h"

static const char *log_program = "minichat";
static int log_min_level = MC_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void mc_log_init(const char *program, int min_level)
{
    log_program = program;
    log_min_level = min_level;
}

void mc_log(int level, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n, m;

    if (level < log_min_level) {
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
}
