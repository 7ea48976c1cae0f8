/*
 * Logging for the services: one line per event on stderr,
 * "2026-11-25T01:02:03.456Z relay-worker[123] error: message", and the same
 * line in a log file when one is set (log_file).  The level and the file
 * can change while threads log (a SIGHUP reload): a line goes whole to
 * either the old file or the new one.
 */
#ifndef MINICHAT_LOG_H
#define MINICHAT_LOG_H

#include <stddef.h>

enum { MC_LOG_DEBUG, MC_LOG_INFO, MC_LOG_WARN, MC_LOG_ERROR };

void mc_log_init(const char *program, int min_level);
void mc_log_set_level(int min_level);
/* Logs to path (appending; created 0640) as well as stderr from now on, or
 * to stderr only when path is NULL or empty.  Called again with the same
 * path it reopens the file: after logrotate has moved it, lines go to a new
 * file of that name.  Returns 0, or -1 with the reason in err (the old file,
 * if any, is kept). */
int mc_log_file(const char *path, char *err, size_t err_size);
/* The MC_LOG_* level named "debug", "info", "warn" or "error", or -1. */
int mc_log_level_named(const char *name);
void mc_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define mc_debug(...) mc_log(MC_LOG_DEBUG, __VA_ARGS__)
#define mc_info(...) mc_log(MC_LOG_INFO, __VA_ARGS__)
#define mc_warn(...) mc_log(MC_LOG_WARN, __VA_ARGS__)
#define mc_error(...) mc_log(MC_LOG_ERROR, __VA_ARGS__)

#endif
