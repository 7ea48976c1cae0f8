/*
 * `key = value` configuration files for the services.  The whole file is read
 * at start-up into an array of pairs; lookups are linear, which is fine for a
 * few dozen keys read once.  Keys not in the caller's list are rejected so a
 * misspelt setting is an error, not a silent default.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/conf.h"

typedef struct {
    char *key;
    char *value;
} mc_conf_pair_t;

struct mc_conf_s {
    mc_conf_pair_t *pairs;
    size_t n;
};

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

mc_conf_t *mc_conf_load(const char *path, const char *const *known_keys, char *err, size_t err_size)
{
    char line[4096], *p, *eq, *key, *value;
    mc_conf_pair_t *np;
    mc_conf_t *c;
    FILE *f;
    int lineno = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "cannot open \"%s\": %s", path, strerror(errno));
        return NULL;
    }

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, err_size, "out of memory");
        fclose(f);
        return NULL;
    }

    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(err, err_size, "%s:%d: line too long", path, lineno);
            goto err;
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
            snprintf(err, err_size, "%s:%d: expected \"key = value\"", path, lineno);
            goto err;
        }
        *eq = '\0';
        key = trim(p);
        value = trim(eq + 1);
        if (!known(key, known_keys)) {
            snprintf(err, err_size, "%s:%d: unknown key \"%s\"", path, lineno, key);
            goto err;
        }
        np = realloc(c->pairs, (c->n + 1) * sizeof(*np));
        if (np == NULL) {
            snprintf(err, err_size, "out of memory");
            goto err;
        }
        c->pairs = np;
        c->pairs[c->n].key = strdup(key);
        c->pairs[c->n].value = strdup(value);
        c->n++;
        if (c->pairs[c->n - 1].key == NULL || c->pairs[c->n - 1].value == NULL) {
            snprintf(err, err_size, "out of memory");
            goto err;
        }
    }

    fclose(f);
    return c;

err:
    fclose(f);
    mc_conf_free(c);
    return NULL;
}

const char *mc_conf_get(const mc_conf_t *c, const char *key, const char *def)
{
    size_t i;

    /* the last occurrence wins, as in nginx's include-then-override habit */
    for (i = c->n; i > 0; i--) {
        if (strcmp(c->pairs[i - 1].key, key) == 0) {
            return c->pairs[i - 1].value;
        }
    }
    return def;
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
    free(c->pairs);
    free(c);
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
