/*
 * Every Redis script must touch one cluster slot: a script whose keys live
 * on two masters fails with "non local key" (or CROSSSLOT) on a Redis
 * Cluster, and works by luck on a single Redis, so nothing else would catch
 * it.  This test reads each script's (lua/NAME.lua) contract comment
 *
 *   --input: keys: [{r:<room>}:members, {r:<room>}:seq,
 *   --              {r:<room>}:idem:<n>]
 *
 * substitutes sample values for the placeholders (<room>, <user>, <sid>,
 * <n>, ...; several samples, so that two different hashtags cannot agree by
 * chance), and checks that every declared key of a script maps to the same
 * slot, that the script reads no KEYS[i] beyond what it declares, and that
 * no code line spells a hashtagged key itself ('{u:' .. id ..): Redis
 * Cluster refuses a key a script did not declare when it lives elsewhere.  A
 * script without the contract fails too.  A script that writes and declares
 * a room's recent log must declare the log's byte total as well (send.lua
 * trims by it).  Run from the checkout's top (make does), or with
 * MINICHAT_LUA_DIR set.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/redis_slot.h"

#define MAX_KEYS 32
#define KEY_MAX 256

static const char *lua_dir(void)
{
    const char *d = getenv("MINICHAT_LUA_DIR");

    return d != NULL ? d : "lua";
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *s;
    long n;

    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* Collects the declared keys of src into keys (templates, placeholders
 * kept).  Returns their count, or -1 when there is no contract. */
static int declared_keys(const char *src, char keys[][KEY_MAX])
{
    const char *p = strstr(src, "--input: keys: [");
    int n = 0;
    size_t len = 0;

    if (p == NULL) {
        return -1;
    }
    p += strlen("--input: keys: [");
    for (; *p != '\0' && *p != ']'; p++) {
        if (*p == '\n') {
            /* a continuation line starts with "--" and spaces */
            p++;
            ck_assert_msg(p[0] == '-' && p[1] == '-', "keys list broken across a non-comment line");
            p++;
            continue;
        }
        if (*p == ',' || *p == ' ') {
            if (len > 0) {
                keys[n++][len] = '\0';
                len = 0;
                ck_assert_int_lt(n, MAX_KEYS);
            }
            continue;
        }
        ck_assert_int_lt(len, KEY_MAX - 1);
        keys[n][len++] = *p;
    }
    ck_assert_msg(*p == ']', "keys list not closed");
    if (len > 0) {
        keys[n++][len] = '\0';
    }
    return n;
}

/* Writes tmpl with each <placeholder> replaced by a sample value into out. */
static void substitute(const char *tmpl, int sample, char *out)
{
    static const char *samples[][3] = {{"12", "42", "5"}, {"987654321", "7", "123"}, {"1", "18446744073709551615", "0"}};
    const char *p = tmpl, *end;
    char name[64];
    size_t o = 0, nl;

    while (*p != '\0') {
        if (*p == '<' && (end = strchr(p, '>')) != NULL) {
            nl = (size_t)(end - p - 1);
            ck_assert_uint_lt(nl, sizeof(name));
            memcpy(name, p + 1, nl);
            name[nl] = '\0';
            if (strcmp(name, "roomtag") == 0) {
                /* the slot tag of the room's slot (redis_slot.h) */
                char rk[64], tag[MC_REDIS_SLOT_TAG_MAX];
                int rn = sprintf(rk, "r:%s", samples[sample][0]);

                ck_assert_uint_gt(mc_redis_slot_tag(mc_redis_slot(rk, (size_t)rn), tag), 0);
                o += (size_t)sprintf(out + o, "%s", tag);
            } else if (strcmp(name, "room") == 0) {
                o += (size_t)sprintf(out + o, "%s", samples[sample][0]);
            } else if (strcmp(name, "user") == 0) {
                o += (size_t)sprintf(out + o, "%s", samples[sample][1]);
            } else if (strcmp(name, "n") == 0 || strcmp(name, "n-1") == 0) {
                o += (size_t)sprintf(out + o, "%s%s", samples[sample][2], name[1] ? "9" : "");
            } else {
                /* <sid> and anything new: its name and the sample number */
                o += (size_t)sprintf(out + o, "%s%d", name, sample);
            }
            p = end + 1;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
}

/* Returns the first code line (not a "--" comment) of src holding a string
 * that starts like a hashtagged key ('{r:', "{u:", ...), or NULL: a key
 * the script makes up itself instead of taking from KEYS. */
static const char *literal_key(const char *src)
{
    const char *line = src, *p, *end;

    while (*line != '\0') {
        end = strchr(line, '\n');
        if (end == NULL) {
            end = line + strlen(line);
        }
        for (p = line; p < end && (*p == ' ' || *p == '\t'); p++) {
        }
        if (!(p + 1 < end && p[0] == '-' && p[1] == '-')) {
            for (; p + 3 < end; p++) {
                if ((p[0] == '\'' || p[0] == '"') && p[1] == '{' && p[2] >= 'a' && p[2] <= 'z') {
                    const char *q = p + 2;
                    while (q < end && ((*q >= 'a' && *q <= 'z') || *q == '_')) {
                        q++;
                    }
                    if (q < end && (*q == ':' || *q == '}')) {
                        return line;
                    }
                }
            }
        }
        line = *end ? end + 1 : end;
    }
    return NULL;
}

/* Returns the highest i of a KEYS[i] in src (0 when there is none). */
static int highest_key_used(const char *src)
{
    const char *p = src;
    int i, max = 0;

    while ((p = strstr(p, "KEYS[")) != NULL) {
        p += 5;
        if (sscanf(p, "%d", &i) == 1 && i > max) {
            max = i;
        }
    }
    return max;
}

START_TEST(test_every_script_one_slot)
{
    char keys[MAX_KEYS][KEY_MAX], key[KEY_MAX * 2], path[512];
    struct dirent *de;
    unsigned slot, first;
    int n, i, s, scripts = 0;
    size_t l;
    char *src;
    DIR *d;

    d = opendir(lua_dir());
    ck_assert_msg(d != NULL, "cannot open %s (run from the top or set MINICHAT_LUA_DIR)", lua_dir());
    while ((de = readdir(d)) != NULL) {
        l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".lua") != 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", lua_dir(), de->d_name);
        src = slurp(path);
        n = declared_keys(src, keys);
        ck_assert_msg(n > 0, "%s declares no \"--input: keys: [...]\"", de->d_name);
        ck_assert_msg(highest_key_used(src) <= n, "%s uses KEYS[%d] but declares %d keys", de->d_name,
                      highest_key_used(src), n);
        ck_assert_msg(literal_key(src) == NULL, "%s names a key of its own (not from KEYS): %.60s", de->d_name,
                      literal_key(src));
        for (s = 0; s < 3; s++) {
            for (i = 0; i < n; i++) {
                substitute(keys[i], s, key);
                slot = mc_redis_slot(key, strlen(key));
                if (i == 0) {
                    first = slot;
                    continue;
                }
                ck_assert_msg(slot == first, "%s: key %s (slot %u) is not in the slot of its first key (%u)",
                              de->d_name, key, slot, first);
            }
        }
        free(src);
        scripts++;
    }
    closedir(d);
    ck_assert_int_ge(scripts, 10);
}
END_TEST

START_TEST(test_checker_catches_another_hashtag)
{
    char keys[MAX_KEYS][KEY_MAX], a[KEY_MAX * 2], b[KEY_MAX * 2];
    const char *bad = "--input: keys: [{r:<room>}:seq,\n--              {u:<user>}:rl]\n";

    ck_assert_int_eq(declared_keys(bad, keys), 2);
    substitute(keys[0], 0, a);
    substitute(keys[1], 0, b);
    ck_assert_str_eq(a, "{r:12}:seq");
    ck_assert_str_eq(b, "{u:42}:rl");
    ck_assert_uint_ne(mc_redis_slot(a, strlen(a)), mc_redis_slot(b, strlen(b)));
    ck_assert_int_eq(highest_key_used("redis.call('GET', KEYS[3]) KEYS[12]"), 12);
    ck_assert_ptr_nonnull(literal_key("local x = 1\nredis.call('GET', '{u:' .. ARGV[1] .. '}:rl')\n"));
    ck_assert_ptr_nonnull(literal_key("redis.call(\"DEL\", \"{presence}:online\")"));
    ck_assert_ptr_null(literal_key("-- '{r:<room>}:seq' in a comment\nlocal e = '{\"op\":\"msg\"}'\n"));
}
END_TEST

/* Writes into name the Lua variable that src binds to KEYS[k] (a `local a,
 * b = KEYS[1], KEYS[2]` line), or "KEYS[k]" itself when none is. */
static void key_variable(const char *src, int k, char *name, size_t cap)
{
    char want[32];
    const char *line = src, *end, *eq, *p;
    int pos, i;

    snprintf(want, sizeof(want), "KEYS[%d]", k);
    snprintf(name, cap, "%s", want);
    for (; *line != '\0'; line = *end ? end + 1 : end) {
        end = strchr(line, '\n');
        if (end == NULL) {
            end = line + strlen(line);
        }
        if (strncmp(line, "local ", 6) != 0 || (eq = memchr(line, '=', (size_t)(end - line))) == NULL) {
            continue;
        }
        /* which item of the right-hand side is KEYS[k]? */
        for (p = eq + 1, pos = 0; p < end; p++) {
            if (*p == ',') {
                pos++;
            } else if (strncmp(p, want, strlen(want)) == 0) {
                break;
            }
        }
        if (p >= end) {
            continue;
        }
        /* the same item of the left-hand side */
        for (p = line + 6, i = 0; i < pos && p < eq; p++) {
            if (*p == ',') {
                i++;
            }
        }
        while (*p == ' ') {
            p++;
        }
        for (i = 0; p < eq && (size_t)i + 1 < cap && (p[0] == '_' || (p[0] >= 'a' && p[0] <= 'z')
                                                       || (p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= '0' && p[0] <= '9'));
             p++) {
            name[i++] = *p;
        }
        name[i] = '\0';
        return;
    }
}

/* Returns 1 when src changes the key it holds in var: a write command
 * (ZADD, ZREM..., ZPOP..., DEL, UNLINK, RENAME...) with var among its
 * arguments (up to the call's first ')'). */
static int writes_key(const char *src, const char *var)
{
    static const char *writes[] = {"'ZADD'", "'ZREM", "'ZPOP", "'DEL'", "'UNLINK'", "'RENAME", NULL};
    const char *p;
    size_t vl = strlen(var);
    int i;

    for (i = 0; writes[i] != NULL; i++) {
        for (p = src; (p = strstr(p, writes[i])) != NULL; p++) {
            const char *q = strchr(p + 1, '\'');

            if (q == NULL) {
                break;
            }
            /* any argument of the call: DEL takes several keys */
            for (q++; *q != '\0' && *q != ')'; q++) {
                if ((q[-1] == ',' || q[-1] == ' ') && strncmp(q, var, vl) == 0
                    && !(q[vl] == '_' || (q[vl] >= 'a' && q[vl] <= 'z') || (q[vl] >= '0' && q[vl] <= '9'))) {
                    return 1;
                }
            }
        }
    }
    return 0;
}

/* Returns 1 when src writes its declared key want. */
static int writes_declared(const char *src, char keys[][KEY_MAX], int n, const char *want)
{
    char var[64];
    int i;

    for (i = 0; i < n; i++) {
        if (strcmp(keys[i], want) == 0) {
            key_variable(src, i + 1, var, sizeof(var));
            return writes_key(src, var);
        }
    }
    return 0;
}

/* Returns 1 when the declared keys include exactly want. */
static int declares(char keys[][KEY_MAX], int n, const char *want)
{
    int i;

    for (i = 0; i < n; i++) {
        if (strcmp(keys[i], want) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A script that writes the room's recent log must
 * keep the log's byte total ({r:<room>}:logbytes) with it: send.lua trims
 * by that total, and a log changed behind its back would be trimmed by a
 * wrong one. */
START_TEST(test_log_writers_keep_the_byte_total)
{
    char keys[MAX_KEYS][KEY_MAX], path[512];
    struct dirent *de;
    int n, writers = 0;
    size_t l;
    char *src;
    DIR *d;

    d = opendir(lua_dir());
    ck_assert_msg(d != NULL, "cannot open %s (run from the top or set MINICHAT_LUA_DIR)", lua_dir());
    while ((de = readdir(d)) != NULL) {
        l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".lua") != 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", lua_dir(), de->d_name);
        src = slurp(path);
        n = declared_keys(src, keys);
        if (n > 0 && writes_declared(src, keys, n, "{r:<room>}:log")) {
            ck_assert_msg(declares(keys, n, "{r:<room>}:logbytes"),
                          "%s writes and has {r:<room>}:log but not {r:<room>}:logbytes", de->d_name);
            writers++;
        }
        free(src);
    }
    closedir(d);
    /* send.lua appends, load.lua drops */
    ck_assert_int_ge(writers, 2);
    ck_assert_int_eq(writes_key("redis.call('ZREVRANGEBYSCORE', KEYS[4], 1, 2)", "KEYS[4]"), 0);
    ck_assert_int_eq(writes_key("redis.call('ZREMRANGEBYRANK', KEYS[5], 0, 1)", "KEYS[5]"), 1);
    {
        /* the log's variable is found; a write of another key is not the log's */
        const char *src = "--input: keys: [{r:<room>}:seq, {r:<room>}:log, {x}:pend]\n"
                          "local seqk, logk, pendk = KEYS[1], KEYS[2], KEYS[3]\n"
                          "redis.call('ZREM', pendk, 'a')\nredis.call('ZRANGE', logk, 0, 1)\n";
        char keys[MAX_KEYS][KEY_MAX], var[64];

        ck_assert_int_eq(declared_keys(src, keys), 3);
        key_variable(src, 2, var, sizeof(var));
        ck_assert_str_eq(var, "logk");
        ck_assert_int_eq(writes_declared(src, keys, 3, "{r:<room>}:log"), 0);
        ck_assert_int_eq(writes_declared(src, keys, 3, "{x}:pend"), 1);
        ck_assert_int_eq(writes_key("redis.call('ZADD', logkey, 1, 'a')", "logk"), 0);
        ck_assert_int_eq(writes_key("redis.call('DEL', KEYS[2], KEYS[6])", "KEYS[6]"), 1);
    }
}
END_TEST

static Suite *lua_keys_suite(void)
{
    Suite *s = suite_create("lua_keys");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_every_script_one_slot);
    tcase_add_test(tc, test_checker_catches_another_hashtag);
    tcase_add_test(tc, test_log_writers_keep_the_byte_total);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(lua_keys_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
