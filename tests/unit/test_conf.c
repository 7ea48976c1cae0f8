/*
 * Unit tests for the `key = value` config reader (lib/src/conf.c).  Every
 * test writes its own files with mkstemp inside a directory that main()
 * creates under /tmp with mkdtemp.  A passing test removes its files in the
 * teardown; a failing one ends its forked process with _exit(), so main()
 * empties and removes the directory after the run in any case.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "minichat/conf.h"

static const char *const KEYS[] = {"listen", "name", "path", "empty", "port", "timeout", "url", NULL};

#define MAX_TMP 8
static char tmp_dir[64];
static char tmp_paths[MAX_TMP][128];
static int n_tmp;

static void remove_tmp_files(void)
{
    int i;

    for (i = 0; i < n_tmp; i++) {
        unlink(tmp_paths[i]);
    }
    n_tmp = 0;
}

/* Writes len bytes of content to a fresh temp file and returns its path. */
static const char *write_tmp_n(const char *content, size_t len)
{
    char *path;
    int fd;

    ck_assert_int_lt(n_tmp, MAX_TMP);
    path = tmp_paths[n_tmp];
    snprintf(path, sizeof(tmp_paths[0]), "%s/confXXXXXX", tmp_dir);
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    n_tmp++;
    ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
    ck_assert_int_eq(close(fd), 0);
    return path;
}

static const char *write_tmp(const char *content)
{
    return write_tmp_n(content, strlen(content));
}

static void setup(void)
{
    n_tmp = 0;
}

static void teardown(void)
{
    remove_tmp_files();
}

/* Loads content with KEYS; asserts success. */
static mc_conf_t *load_ok(const char *content)
{
    char err[256] = "";
    mc_conf_t *c = mc_conf_load(write_tmp(content), KEYS, err, sizeof(err));

    ck_assert_msg(c != NULL, "load failed: %s", err);
    return c;
}

/* Loads content with KEYS; asserts that it was read with errors and returns
 * them, one per line. */
static const char *load_err(const char *content, const char **path)
{
    static char errs[2048];
    char err[512] = "";
    size_t i, n = 0;
    mc_conf_t *c;

    *path = write_tmp(content);
    c = mc_conf_load(*path, KEYS, err, sizeof(err));
    ck_assert_msg(c != NULL, "load failed: %s", err);
    ck_assert_msg(mc_conf_nerrors(c) > 0, "no error recorded");
    errs[0] = '\0';
    for (i = 0; i < mc_conf_nerrors(c) && n < sizeof(errs); i++) {
        n += (size_t)snprintf(errs + n, sizeof(errs) - n, "%s\n", mc_conf_error_at(c, i));
    }
    mc_conf_free(c);
    return errs;
}

START_TEST(test_basic_values)
{
    mc_conf_t *c = load_ok("# a comment line\n"
                           "\n"
                           "   \n"
                           "\t\n"
                           "listen = 127.0.0.1:9000   # trailing comment\n"
                           "  name=  hello world  \n"
                           "path =/var/lib/minichat\n"
                           "   # indented comment\n"
                           "empty =\n"
                           "\tport\t=\t8080\t\n"
                           "url = mysql://u:p@h/db?x=1\n");

    ck_assert_str_eq(mc_conf_get(c, "listen", NULL), "127.0.0.1:9000");
    ck_assert_str_eq(mc_conf_get(c, "name", NULL), "hello world");
    ck_assert_str_eq(mc_conf_get(c, "path", NULL), "/var/lib/minichat");
    ck_assert_str_eq(mc_conf_get(c, "empty", "def"), "");
    ck_assert_str_eq(mc_conf_get(c, "port", NULL), "8080");
    /* only the first '=' separates key from value */
    ck_assert_str_eq(mc_conf_get(c, "url", NULL), "mysql://u:p@h/db?x=1");
    mc_conf_free(c);
}
END_TEST

START_TEST(test_comment_in_value)
{
    mc_conf_t *c = load_ok("name = a#b\npath = #all comment\n");

    ck_assert_str_eq(mc_conf_get(c, "name", NULL), "a");
    ck_assert_str_eq(mc_conf_get(c, "path", "def"), "");
    mc_conf_free(c);
}
END_TEST

START_TEST(test_crlf_and_no_final_newline)
{
    mc_conf_t *c = load_ok("name = crlf\r\nport = 12\r\npath = last line without newline");

    ck_assert_str_eq(mc_conf_get(c, "name", NULL), "crlf");
    ck_assert_str_eq(mc_conf_get(c, "port", NULL), "12");
    ck_assert_str_eq(mc_conf_get(c, "path", NULL), "last line without newline");
    mc_conf_free(c);
}
END_TEST

START_TEST(test_empty_file)
{
    mc_conf_t *c = load_ok("");
    int ok = 1;

    ck_assert_str_eq(mc_conf_get(c, "name", "dflt"), "dflt");
    ck_assert_ptr_null(mc_conf_get(c, "name", NULL));
    ck_assert_int_eq(mc_conf_get_int(c, "port", 77, &ok), 77);
    ck_assert_int_eq(ok, 1);
    mc_conf_free(c);

    c = load_ok("# only comments\n\n  # and blanks\n");
    ck_assert_str_eq(mc_conf_get(c, "listen", "x"), "x");
    mc_conf_free(c);
}
END_TEST

START_TEST(test_get_default)
{
    static const char def[] = "the default";
    mc_conf_t *c = load_ok("name = n\n");

    /* the very pointer given as default comes back */
    ck_assert_ptr_eq(mc_conf_get(c, "path", def), def);
    ck_assert_ptr_null(mc_conf_get(c, "path", NULL));
    /* keys are case-sensitive and matched whole */
    ck_assert_ptr_eq(mc_conf_get(c, "Name", def), def);
    ck_assert_ptr_eq(mc_conf_get(c, "nam", def), def);
    ck_assert_ptr_eq(mc_conf_get(c, "name ", def), def);
    ck_assert_str_eq(mc_conf_get(c, "name", def), "n");
    mc_conf_free(c);
}
END_TEST

START_TEST(test_last_occurrence_wins)
{
    mc_conf_t *c = load_ok("port = 1\nname = first\nport = 2\nname = second\nport = 3\n");

    ck_assert_str_eq(mc_conf_get(c, "port", NULL), "3");
    ck_assert_str_eq(mc_conf_get(c, "name", NULL), "second");
    ck_assert_int_eq(mc_conf_get_int(c, "port", -1, NULL), 3);
    mc_conf_free(c);
}
END_TEST

START_TEST(test_unknown_key)
{
    const char *path;
    const char *err = load_err("listen = 1\n\n# c\nbogus_key = 2\nname = x\n", &path);
    char want[128];

    ck_assert_ptr_nonnull(strstr(err, "bogus_key"));
    ck_assert_ptr_nonnull(strstr(err, path));
    snprintf(want, sizeof(want), "%s:4:", path);
    ck_assert_msg(strstr(err, want) != NULL, "no \"%s\" in \"%s\"", want, err);
    ck_assert_ptr_nonnull(strstr(err, "unknown key"));
}
END_TEST

START_TEST(test_unknown_key_first_line_and_no_keys)
{
    char err[256] = "";
    const char *path = write_tmp("name = x\n");
    mc_conf_t *c;

    /* a NULL list knows no key at all */
    c = mc_conf_load(path, NULL, err, sizeof(err));
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(mc_conf_nerrors(c), 1);
    ck_assert_ptr_nonnull(strstr(mc_conf_error_at(c, 0), ":1:"));
    ck_assert_ptr_nonnull(strstr(mc_conf_error_at(c, 0), "\"name\""));
    /* an unknown key is not kept */
    ck_assert_ptr_null(mc_conf_get(c, "name", NULL));
    mc_conf_free(c);

    /* an empty key is unknown too */
    {
        const char *p2;
        const char *e2 = load_err("= value\n", &p2);

        ck_assert_ptr_nonnull(strstr(e2, "unknown key \"\""));
    }
}
END_TEST

START_TEST(test_missing_equals)
{
    const char *path;
    const char *err = load_err("name = x\nport = 1\nlisten 127.0.0.1\n", &path);
    char want[128];

    snprintf(want, sizeof(want), "%s:3:", path);
    ck_assert_msg(strstr(err, want) != NULL, "no \"%s\" in \"%s\"", want, err);
    ck_assert_ptr_nonnull(strstr(err, "key = value"));
}
END_TEST

START_TEST(test_missing_file)
{
    char err[256] = "", path[128];
    mc_conf_t *c;

    snprintf(path, sizeof(path), "%s/does-not-exist/x.conf", tmp_dir);
    c = mc_conf_load(path, KEYS, err, sizeof(err));
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "cannot open"));
    ck_assert_ptr_nonnull(strstr(err, "No such file"));
}
END_TEST

START_TEST(test_error_truncated_to_err_size)
{
    char err[8], path[128];
    mc_conf_t *c;

    snprintf(path, sizeof(path), "%s/missing.conf", tmp_dir);
    memset(err, 'Z', sizeof(err));
    c = mc_conf_load(path, KEYS, err, sizeof(err));
    ck_assert_ptr_null(c);
    ck_assert_uint_eq(strlen(err), sizeof(err) - 1);
    ck_assert_int_eq(strncmp(err, "cannot open", sizeof(err) - 1), 0);
}
END_TEST

START_TEST(test_line_too_long)
{
    size_t n = 5000;
    char *content = malloc(n + 48);
    char err[256] = "";
    const char *path;
    mc_conf_t *c;

    ck_assert_ptr_nonnull(content);
    strcpy(content, "name = ok\nurl = ");
    memset(content + strlen(content), 'x', n);
    strcpy(content + 16 + n, "\n");
    strcat(content, "port = 7\n");
    path = write_tmp(content);
    free(content);
    c = mc_conf_load(path, KEYS, err, sizeof(err));
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(mc_conf_nerrors(c), 1);
    ck_assert_ptr_nonnull(strstr(mc_conf_error_at(c, 0), ":2:"));
    ck_assert_ptr_nonnull(strstr(mc_conf_error_at(c, 0), "line too long"));
    /* the rest of the long line is skipped, not read as lines of its own;
     * the next line is line 3 and is read */
    ck_assert_ptr_null(mc_conf_get(c, "url", NULL));
    ck_assert_str_eq(mc_conf_get(c, "port", ""), "7");
    ck_assert_str_eq(mc_conf_get(c, "name", ""), "ok");
    mc_conf_free(c);

    /* a long line under the limit is fine */
    content = malloc(4000);
    ck_assert_ptr_nonnull(content);
    strcpy(content, "url = ");
    memset(content + 6, 'y', 3000);
    strcpy(content + 3006, "\n");
    path = write_tmp(content);
    free(content);
    c = mc_conf_load(path, KEYS, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(strlen(mc_conf_get(c, "url", "")), 3000);
    mc_conf_free(c);
}
END_TEST

/* Every bad line is recorded with its line, and the good lines around
 * them are still read: one run lists everything wrong with a file. */
START_TEST(test_every_error_recorded)
{
    char err[256] = "";
    const char *path = write_tmp("name = a\n"          /* 1 */
                                 "bogus = 1\n"         /* 2 */
                                 "port = 80\n"         /* 3 */
                                 "listen 1.2.3.4\n"    /* 4 */
                                 "\n"                  /* 5 */
                                 "other = 2\n"         /* 6 */
                                 "timeout = 5\n");     /* 7 */
    char want[160];
    mc_conf_t *c = mc_conf_load(path, KEYS, err, sizeof(err));

    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(mc_conf_nerrors(c), 3);
    snprintf(want, sizeof(want), "%s:2: unknown key \"bogus\"", path);
    ck_assert_str_eq(mc_conf_error_at(c, 0), want);
    snprintf(want, sizeof(want), "%s:4: expected \"key = value\"", path);
    ck_assert_str_eq(mc_conf_error_at(c, 1), want);
    snprintf(want, sizeof(want), "%s:6: unknown key \"other\"", path);
    ck_assert_str_eq(mc_conf_error_at(c, 2), want);
    ck_assert_ptr_null(mc_conf_error_at(c, 3));
    ck_assert_str_eq(mc_conf_get(c, "name", ""), "a");
    ck_assert_str_eq(mc_conf_get(c, "port", ""), "80");
    ck_assert_str_eq(mc_conf_get(c, "timeout", ""), "5");
    ck_assert_uint_eq(mc_conf_log_errors(c), 3);
    mc_conf_free(c);
}
END_TEST

/* Errors about values: the line where the key was set last, or the file
 * alone for a key that is not set; the typed readers report and keep the
 * default. */
START_TEST(test_value_errors)
{
    char err[256] = "", want[200];
    const char *path = write_tmp("port = 1\nport = 99999\nname = maybe\ntimeout = 5x\n"
                                 "path = /nonexistent/file.pem\nempty =\nurl = on\n");
    mc_conf_t *c = mc_conf_load(path, KEYS, err, sizeof(err));
    long long v = -1;
    int f = -1;

    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(mc_conf_nerrors(c), 0);

    ck_assert_int_eq(mc_conf_int(c, "port", 7, 1, 65535, &v), -1);
    ck_assert_int_eq(v, 7);
    snprintf(want, sizeof(want), "%s:2: port \"99999\" must be a number in [1, 65535]", path);
    ck_assert_str_eq(mc_conf_error_at(c, 0), want);
    ck_assert_int_eq(mc_conf_int(c, "timeout", 3, 0, 10, &v), -1);
    ck_assert_ptr_nonnull(strstr(mc_conf_error_at(c, 1), ":4: timeout \"5x\""));
    ck_assert_int_eq(mc_conf_int(c, "listen", 42, 0, 100, &v), 0);   /* absent: the default */
    ck_assert_int_eq(v, 42);

    ck_assert_int_eq(mc_conf_flag(c, "name", 1, &f), -1);
    ck_assert_int_eq(f, 1);
    ck_assert_ptr_nonnull(strstr(mc_conf_error_at(c, 2), ":3: name \"maybe\" must be on or off"));
    ck_assert_int_eq(mc_conf_flag(c, "url", 0, &f), 0);
    ck_assert_int_eq(f, 1);
    ck_assert_int_eq(mc_conf_flag(c, "listen", 0, &f), 0);
    ck_assert_int_eq(f, 0);

    ck_assert_int_eq(mc_conf_file(c, "path"), -1);
    ck_assert_ptr_nonnull(strstr(mc_conf_error_at(c, 3), ":5: path: cannot open \"/nonexistent/file.pem\""));
    ck_assert_int_eq(mc_conf_file(c, "empty"), 0);    /* set but empty: no file */
    ck_assert_int_eq(mc_conf_file(c, "listen"), 0);   /* not set */

    mc_conf_error(c, "listen", "listen is required");
    snprintf(want, sizeof(want), "%s: listen is required", path);
    ck_assert_str_eq(mc_conf_error_at(c, 4), want);
    mc_conf_error(c, NULL, "a %s of %d", "clash", 2);
    snprintf(want, sizeof(want), "%s: a clash of 2", path);
    ck_assert_str_eq(mc_conf_error_at(c, 5), want);
    ck_assert_uint_eq(mc_conf_nerrors(c), 6);
    mc_conf_free(c);
}
END_TEST

/* A file of nothing but errors: memory stays bounded, the count is right. */
START_TEST(test_error_cap)
{
    size_t i, n = 3 * MC_CONF_MAX_ERRORS;
    char *content = malloc(n * 8 + 1), err[256] = "";
    const char *path;
    mc_conf_t *c;

    ck_assert_ptr_nonnull(content);
    content[0] = '\0';
    for (i = 0; i < n; i++) {
        strcat(content, "x = 1\n");
    }
    path = write_tmp(content);
    free(content);
    c = mc_conf_load(path, KEYS, err, sizeof(err));
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(mc_conf_nerrors(c), n);
    ck_assert_ptr_nonnull(strstr(mc_conf_error_at(c, MC_CONF_MAX_ERRORS - 1), "unknown key"));
    ck_assert_str_eq(mc_conf_error_at(c, MC_CONF_MAX_ERRORS), "(more errors)");
    ck_assert_str_eq(mc_conf_error_at(c, n - 1), "(more errors)");
    ck_assert_ptr_null(mc_conf_error_at(c, n));
    mc_conf_free(c);
}
END_TEST

START_TEST(test_get_int)
{
    mc_conf_t *c = load_ok("port = 8080\n"
                           "timeout = -42\n"
                           "name = 12abc\n"
                           "path = abc\n"
                           "empty =\n"
                           "listen = 99999999999999999999\n"
                           "url = 0x10\n");
    int ok;

    ok = 1;
    ck_assert_int_eq(mc_conf_get_int(c, "port", 5, &ok), 8080);
    ck_assert_int_eq(ok, 1);
    ck_assert_int_eq(mc_conf_get_int(c, "timeout", 5, &ok), -42);
    ck_assert_int_eq(ok, 1);
    /* absent: the default, and ok is left alone */
    ok = 1;
    ck_assert_int_eq(mc_conf_get_int(c, "nope", 5, &ok), 5);
    ck_assert_int_eq(ok, 1);

    /* not numbers: the default, ok cleared */
    ok = 1;
    ck_assert_int_eq(mc_conf_get_int(c, "name", 5, &ok), 5);
    ck_assert_int_eq(ok, 0);
    ok = 1;
    ck_assert_int_eq(mc_conf_get_int(c, "path", 6, &ok), 6);
    ck_assert_int_eq(ok, 0);
    ok = 1;
    ck_assert_int_eq(mc_conf_get_int(c, "empty", 7, &ok), 7);
    ck_assert_int_eq(ok, 0);
    ok = 1; /* out of range */
    ck_assert_int_eq(mc_conf_get_int(c, "listen", 8, &ok), 8);
    ck_assert_int_eq(ok, 0);
    ok = 1; /* decimal only */
    ck_assert_int_eq(mc_conf_get_int(c, "url", 9, &ok), 9);
    ck_assert_int_eq(ok, 0);

    /* ok may be NULL */
    ck_assert_int_eq(mc_conf_get_int(c, "name", 10, NULL), 10);
    ck_assert_int_eq(mc_conf_get_int(c, "port", 10, NULL), 8080);
    mc_conf_free(c);
}
END_TEST

START_TEST(test_get_int_limits)
{
    mc_conf_t *c = load_ok("port = 9223372036854775807\ntimeout = -9223372036854775808\nname = +15\n");
    int ok = 1;

    ck_assert_int_eq(mc_conf_get_int(c, "port", 0, &ok), 9223372036854775807LL);
    ck_assert_int_eq(mc_conf_get_int(c, "timeout", 0, &ok), (-9223372036854775807LL - 1));
    ck_assert_int_eq(mc_conf_get_int(c, "name", 0, &ok), 15);
    ck_assert_int_eq(ok, 1);
    mc_conf_free(c);
}
END_TEST

START_TEST(test_free_null)
{
    mc_conf_free(NULL);
}
END_TEST

/* Removes whatever a failed test left in tmp_dir, then tmp_dir itself. */
static void remove_tmp_dir(void)
{
    char path[512];
    struct dirent *e;
    DIR *d = opendir(tmp_dir);

    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof(path), "%s/%s", tmp_dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    rmdir(tmp_dir);
}

START_TEST(test_list_next)
{
    const char *rest = " a@h:1,b  ,, c ", *item;
    size_t len = 0;

    item = mc_conf_list_next(&rest, &len);
    ck_assert_ptr_nonnull(item);
    ck_assert_int_eq((int)len, 5);
    ck_assert(strncmp(item, "a@h:1", len) == 0);
    item = mc_conf_list_next(&rest, &len);
    ck_assert_ptr_nonnull(item);
    ck_assert(len == 1 && item[0] == 'b');
    item = mc_conf_list_next(&rest, &len);
    ck_assert_ptr_nonnull(item);
    ck_assert(len == 1 && item[0] == 'c');
    ck_assert_ptr_null(mc_conf_list_next(&rest, &len));
    ck_assert_ptr_null(mc_conf_list_next(&rest, &len));

    rest = " , ";
    ck_assert_ptr_null(mc_conf_list_next(&rest, &len));
    rest = NULL;
    ck_assert_ptr_null(mc_conf_list_next(&rest, &len));
}
END_TEST

static Suite *conf_suite(void)
{
    Suite *s = suite_create("conf");
    TCase *tc;

    tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_basic_values);
    tcase_add_test(tc, test_comment_in_value);
    tcase_add_test(tc, test_crlf_and_no_final_newline);
    tcase_add_test(tc, test_empty_file);
    tcase_add_test(tc, test_get_default);
    tcase_add_test(tc, test_last_occurrence_wins);
    tcase_add_test(tc, test_free_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_unknown_key);
    tcase_add_test(tc, test_unknown_key_first_line_and_no_keys);
    tcase_add_test(tc, test_missing_equals);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_error_truncated_to_err_size);
    tcase_add_test(tc, test_line_too_long);
    tcase_add_test(tc, test_every_error_recorded);
    tcase_add_test(tc, test_value_errors);
    tcase_add_test(tc, test_error_cap);
    suite_add_tcase(s, tc);

    tc = tcase_create("get_int");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_get_int);
    tcase_add_test(tc, test_get_int_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("list");
    tcase_add_test(tc, test_list_next);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conf_suite());
    int failed;

    strcpy(tmp_dir, "/tmp/mc_test_conf_XXXXXX");
    if (mkdtemp(tmp_dir) == NULL) {
        perror("mkdtemp");
        srunner_free(sr);
        return EXIT_FAILURE;
    }
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_tmp_dir();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
