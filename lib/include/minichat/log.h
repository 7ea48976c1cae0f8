/*
 * Logging for the services: one line per event on stderr,
 * "2026-11-25T01:02:03.456Z relay-worker[123] error: message".
 */
#ifndef MINICHAT_LOG_H
#define MINICHAT_LOG_H

enum { MC_LOG_DEBUG, MC_LOG_INFO, MC_LOG_WARN, MC_LOG_ERROR };

void mc_log_init(const char *program, int min_level);
void mc_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define mc_debug(...) mc_log(MC_LOG_DEBUG, __VA_ARGS__)
#define mc_info(...) mc_log(MC_LOG_INFO, __VA_ARGS__)
#define mc_warn(...) mc_log(MC_LOG_WARN, __VA_ARGS__)
#define mc_error(...) mc_log(MC_LOG_ERROR, __VA_ARGS__)

#endif
