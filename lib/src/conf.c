/*
 * `key = value` configuration files for the services.  The whole file is read
 * at start-up into an array of pairs; lookups are linear, which is fine for a
 * few dozen keys read once.  Keys not in the caller's list are rejected so a
 * misspelt setting is an error, not a silent default.  Each pair keeps its
 * line, so that an error about a value can say where it was set.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/conf.h"
#include "minichat/log.h"
#include "minichat/secret.h"

typedef struct {
    char *key;
    char *value;
    int line;
} mc_conf_pair_t;

struct mc_conf_s {
    mc_conf_pair_t *pairs;
    size_t n;
    char *path;
    char *errors[MC_CONF_MAX_ERRORS];
    int error_lines[MC_CONF_MAX_ERRORS];
    size_t nerrors;
};

static void conf_add_error(mc_conf_t *c, int line, const char *fmt, va_list ap);

static char *trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s)) {
        s++;
    }
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) {
        *--e = '\0';
    }
    return s;
}

static int known(const char *key, const char *const *known_keys)
{
    for (; known_keys && *known_keys; known_keys++) {
        if (strcmp(key, *known_keys) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Records "PATH[:LINE]: message" (line 0: none). */
static void conf_add_error(mc_conf_t *c, int line, const char *fmt, va_list ap)
{
    char msg[768], where[300];

    if (c->nerrors++ >= MC_CONF_MAX_ERRORS) {
        return;
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    c->error_lines[c->nerrors - 1] = line;
    if (line > 0) {
        snprintf(where, sizeof(where), "%s:%d", c->path, line);
    } else {
        snprintf(where, sizeof(where), "%s", c->path);
    }
    c->errors[c->nerrors - 1] = malloc(strlen(where) + strlen(msg) + 3);
    if (c->errors[c->nerrors - 1] != NULL) {
        sprintf(c->errors[c->nerrors - 1], "%s: %s", where, msg);
    }
}

static void conf_line_error(mc_conf_t *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void conf_line_error(mc_conf_t *c, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    conf_add_error(c, line, fmt, ap);
    va_end(ap);
}

mc_conf_t *mc_conf_load(const char *path, const char *const *known_keys, char *err, size_t err_size)
{
    char line[4096], *p, *eq, *key, *value;
    mc_conf_pair_t *np;
    mc_conf_t *c;
    FILE *f;
    int lineno = 0, skipping = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "cannot open \"%s\": %s", path, strerror(errno));
        return NULL;
    }

    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->path = strdup(path)) == NULL) {
        snprintf(err, err_size, "out of memory");
        free(c);
        fclose(f);
        return NULL;
    }

    while (fgets(line, sizeof(line), f)) {
        if (skipping) {
            /* the rest of a line that was too long */
            skipping = strchr(line, '\n') == NULL;
            continue;
        }
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            conf_line_error(c, lineno, "line too long (at most %zu bytes)", sizeof(line) - 2);
            skipping = 1;
            continue;
        }
        p = strchr(line, '#');
        if (p) {
            *p = '\0';
        }
        p = trim(line);
        if (*p == '\0') {
            continue;
        }
        eq = strchr(p, '=');
        if (eq == NULL) {
            conf_line_error(c, lineno, "expected \"key = value\"");
            continue;
        }
        *eq = '\0';
        key = trim(p);
        value = trim(eq + 1);
        if (!known(key, known_keys)) {
            conf_line_error(c, lineno, "unknown key \"%s\"", key);
            continue;
        }
        np = realloc(c->pairs, (c->n + 1) * sizeof(*np));
        if (np == NULL) {
            goto oom;
        }
        c->pairs = np;
        c->pairs[c->n].key = strdup(key);
        c->pairs[c->n].value = strdup(value);
        c->pairs[c->n].line = lineno;
        c->n++;
        if (c->pairs[c->n - 1].key == NULL || c->pairs[c->n - 1].value == NULL) {
            goto oom;
        }
    }
    if (ferror(f)) {
        snprintf(err, err_size, "cannot read \"%s\": %s", path, strerror(errno));
        goto fail;
    }

    fclose(f);
    return c;

oom:
    snprintf(err, err_size, "out of memory");
fail:
    fclose(f);
    mc_conf_free(c);
    return NULL;
}

/* Returns the pair that sets key (the last one), or NULL. */
static const mc_conf_pair_t *conf_find(const mc_conf_t *c, const char *key)
{
    size_t i;

    /* the last occurrence wins, as in nginx's include-then-override habit */
    for (i = c->n; i > 0; i--) {
        if (strcmp(c->pairs[i - 1].key, key) == 0) {
            return &c->pairs[i - 1];
        }
    }
    return NULL;
}

void mc_conf_error(mc_conf_t *c, const char *key, const char *fmt, ...)
{
    const mc_conf_pair_t *p = key ? conf_find(c, key) : NULL;
    va_list ap;

    va_start(ap, fmt);
    conf_add_error(c, p ? p->line : 0, fmt, ap);
    va_end(ap);
}

size_t mc_conf_nerrors(const mc_conf_t *c)
{
    return c->nerrors;
}

const char *mc_conf_error_at(const mc_conf_t *c, size_t i)
{
    if (i >= c->nerrors) {
        return NULL;
    }
    if (i >= MC_CONF_MAX_ERRORS || c->errors[i] == NULL) {
        return "(more errors)";
    }
    return c->errors[i];
}

size_t mc_conf_log_errors(const mc_conf_t *c)
{
    size_t i, kept = c->nerrors < MC_CONF_MAX_ERRORS ? c->nerrors : MC_CONF_MAX_ERRORS;
    int line, next = 0;

    /* in file order, the errors without a line (missing keys) last: one pass
     * per line that has errors, over at most MC_CONF_MAX_ERRORS of them */
    for (line = 0; line >= 0; line = next) {
        next = -1;
        for (i = 0; i < kept; i++) {
            int l = c->error_lines[i] > 0 ? c->error_lines[i] : INT_MAX;

            if (l == line) {
                mc_error("config: %s", mc_conf_error_at(c, i));
            } else if (l > line && (next < 0 || l < next)) {
                next = l;
            }
        }
    }
    if (c->nerrors > MC_CONF_MAX_ERRORS) {
        mc_error("config: %s: %zu more errors", c->path, c->nerrors - MC_CONF_MAX_ERRORS);
    }
    return c->nerrors;
}

int mc_conf_int(mc_conf_t *c, const char *key, long long def, long long min, long long max, long long *out)
{
    int ok = 1;
    long long v = mc_conf_get_int(c, key, def, &ok);

    if (!ok || v < min || v > max) {
        mc_conf_error(c, key, "%s \"%s\" must be a number in [%lld, %lld]", key, mc_conf_get(c, key, ""), min,
                      max);
        *out = def;
        return -1;
    }
    *out = v;
    return 0;
}

int mc_conf_flag(mc_conf_t *c, const char *key, int def, int *out)
{
    const char *v = mc_conf_get(c, key, def ? "on" : "off");

    if (strcmp(v, "on") == 0) {
        *out = 1;
    } else if (strcmp(v, "off") == 0) {
        *out = 0;
    } else {
        mc_conf_error(c, key, "%s \"%s\" must be on or off", key, v);
        *out = def;
        return -1;
    }
    return 0;
}

int mc_conf_file(mc_conf_t *c, const char *key)
{
    const char *path = mc_conf_get(c, key, NULL);
    char why[300];

    if (path != NULL && path[0] != '\0' && mc_file_readable(path, why, sizeof(why)) != 0) {
        mc_conf_error(c, key, "%s: %s", key, why);
        return -1;
    }
    return 0;
}

const char *mc_conf_get(const mc_conf_t *c, const char *key, const char *def)
{
    const mc_conf_pair_t *p = conf_find(c, key);

    return p ? p->value : def;
}

long long mc_conf_get_int(const mc_conf_t *c, const char *key, long long def, int *ok)
{
    const char *v = mc_conf_get(c, key, NULL);
    char *end;
    long long n;

    if (v == NULL) {
        return def;
    }
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno || end == v || *end != '\0') {
        if (ok) {
            *ok = 0;
        }
        return def;
    }
    return n;
}

void mc_conf_free(mc_conf_t *c)
{
    size_t i;

    if (c == NULL) {
        return;
    }
    for (i = 0; i < c->n; i++) {
        free(c->pairs[i].key);
        free(c->pairs[i].value);
    }
    for (i = 0; i < c->nerrors && i < MC_CONF_MAX_ERRORS; i++) {
        free(c->errors[i]);
    }
    free(c->pairs);
    free(c->path);
    free(c);
}


size_t mc_conf_warn_restart_keys(const mc_conf_t *running, const mc_conf_t *next, const char *const *keys,
                                 const char *const *live)
{
    const char *a, *b;
    size_t n = 0;

    for (; keys && *keys; keys++) {
        a = mc_conf_get(running, *keys, NULL);
        b = mc_conf_get(next, *keys, NULL);
        if (known(*keys, live) || (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0)) {
            continue;
        }
        /* values may be secrets' file names, never secrets: print the key only */
        mc_warn("reload: %s changed in %s; it takes effect at the next restart", *keys, next->path);
        n++;
    }
    return n;
}

const char *mc_conf_list_next(const char **s, size_t *len)
{
    const char *p = *s, *e;

    if (p == NULL) {
        return NULL;
    }
    while (*p == ' ' || *p == ',') {
        p++;
    }
    for (e = p; *e && *e != ',' && *e != ' '; e++) {
    }
    *s = e;
    if (e == p) {
        return NULL;
    }
    *len = (size_t)(e - p);
    return p;
}
