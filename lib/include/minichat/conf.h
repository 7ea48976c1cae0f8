/*
 * Config files for the services: one `key = value` per line, `#` starts a
 * comment, blank lines are ignored.  Unknown keys are errors, so typos are
 * caught at start-up.
 */
#ifndef MINICHAT_CONF_H
#define MINICHAT_CONF_H

#include <stddef.h>

typedef struct mc_conf_s mc_conf_t;

/* Returns a parsed file or NULL with a message in err. */
mc_conf_t *mc_conf_load(const char *path, const char *const *known_keys, char *err, size_t err_size);
/* Returns the value or def when the key is absent. */
const char *mc_conf_get(const mc_conf_t *c, const char *key, const char *def);
/* Returns the integer value or def; *ok is set to 0 when the value is not a number. */
long long mc_conf_get_int(const mc_conf_t *c, const char *key, long long def, int *ok);
void mc_conf_free(mc_conf_t *c);
/* The next item of a list value ("a, b c"): items are separated by commas
 * and/or spaces.  Returns the item's start and sets *len, advancing *s past
 * it; NULL when no item is left. */
const char *mc_conf_list_next(const char **s, size_t *len);

#endif
