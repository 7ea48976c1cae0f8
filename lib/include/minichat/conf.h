/*
 * Config files for the services: one `key = value` per line, `#` starts a
 * comment, blank lines are ignored.  Unknown keys are errors, so typos are
 * caught at start-up.
 *
 * Errors are collected, not fatal one by one: a line that is not
 * `key = value`, an unknown key, and every bad value that a reader reports
 * with mc_conf_error() is kept as "FILE:LINE: message", so that one run
 * (`-t`, or a start) lists everything that is wrong with a file.
 */
#ifndef MINICHAT_CONF_H
#define MINICHAT_CONF_H

#include <stddef.h>

typedef struct mc_conf_s mc_conf_t;

/* Reads a file.  Returns NULL with a message in err only when it cannot be
 * read at all (missing, unreadable, out of memory); bad lines and unknown
 * keys are recorded as errors and reading goes on: check mc_conf_nerrors()
 * before using the values. */
mc_conf_t *mc_conf_load(const char *path, const char *const *known_keys, char *err, size_t err_size);
/* Records an error about key's value as "FILE:LINE: message", LINE being
 * where key was set last, or "FILE: message" when key is not set (a missing
 * required key, a default that clashes with another key). */
void mc_conf_error(mc_conf_t *c, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The number of errors recorded, and the i-th of them (i < that number;
 * only the first MC_CONF_MAX_ERRORS keep their text, later ones read
 * "(more errors)"). */
size_t mc_conf_nerrors(const mc_conf_t *c);
const char *mc_conf_error_at(const mc_conf_t *c, size_t i);
#define MC_CONF_MAX_ERRORS 64
/* Logs every recorded error at level error ("config: FILE:LINE: ...") and
 * returns how many there were. */
size_t mc_conf_log_errors(const mc_conf_t *c);
/* Reports an integer key outside [min, max] (or not a number) as an error
 * and returns -1; stores the value (def when absent) in *out otherwise. */
int mc_conf_int(mc_conf_t *c, const char *key, long long def, long long min, long long max, long long *out);
/* Reports a key that is neither "on" nor "off" as an error and returns -1;
 * stores 1 or 0 (def when absent) in *out otherwise. */
int mc_conf_flag(mc_conf_t *c, const char *key, int def, int *out);
/* Reports a file named by key (when set and not empty) that cannot be
 * opened for reading, and returns -1; 0 when it can or key is unset. */
int mc_conf_file(mc_conf_t *c, const char *key);
/* Returns the value or def when the key is absent. */
const char *mc_conf_get(const mc_conf_t *c, const char *key, const char *def);
/* Returns the integer value or def; *ok is set to 0 when the value is not a number. */
long long mc_conf_get_int(const mc_conf_t *c, const char *key, long long def, int *ok);
void mc_conf_free(mc_conf_t *c);
/* For a reload: logs a warning for each of keys whose value differs
 * between the running file and the new one (set, unset or changed), except
 * the live ones (applied by the reload), and returns how many: those take
 * effect at the next restart. */
size_t mc_conf_warn_restart_keys(const mc_conf_t *running, const mc_conf_t *next, const char *const *keys,
                                 const char *const *live);
/* The next item of a list value ("a, b c"): items are separated by commas
 * and/or spaces.  Returns the item's start and sets *len, advancing *s past
 * it; NULL when no item is left. */
const char *mc_conf_list_next(const char **s, size_t *len);

#endif
