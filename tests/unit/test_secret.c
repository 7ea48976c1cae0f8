/*
 * Unit tests for secret files and readable-file checks (lib/src/secret.c).
 * Files are written into a directory main() makes with mkdtemp and removes
 * after the run.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "minichat/secret.h"
#include "conf_files.h"

static char tmp_dir[64];

/* Writes len bytes to tmp_dir/name and returns the path (static buffer). */
static const char *put(const char *name, const char *content, size_t len)
{
    static char path[128];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
    ck_assert_int_eq(close(fd), 0);
    return path;
}

static const char *puts0(const char *name, const char *content)
{
    return put(name, content, strlen(content));
}

START_TEST(test_trailing_newline_stripped)
{
    char err[256], *s;

    s = mc_secret_read(puts0("a", "s3cret\n"), err, sizeof(err));
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "s3cret");
    mc_secret_free(s);

    s = mc_secret_read(puts0("b", "s3cret\r\n"), err, sizeof(err));
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "s3cret");
    mc_secret_free(s);

    /* no newline at all; spaces are part of a password */
    s = mc_secret_read(puts0("c", " pass word "), err, sizeof(err));
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, " pass word ");
    mc_secret_free(s);
}
END_TEST

START_TEST(test_refused_contents)
{
    char err[256], big[MC_SECRET_MAX + 2];

    ck_assert_ptr_null(mc_secret_read(puts0("e", ""), err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "is empty"));
    ck_assert_ptr_null(mc_secret_read(puts0("n", "\n"), err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "is empty"));
    ck_assert_ptr_null(mc_secret_read(puts0("two", "one\ntwo\n"), err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "more than one line"));
    ck_assert_ptr_null(mc_secret_read(put("nul", "ab\0cd", 5), err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "NUL"));
    /* the error never repeats the content */
    ck_assert_ptr_null(strstr(err, "ab"));

    memset(big, 'x', sizeof(big));
    ck_assert_ptr_null(mc_secret_read(put("big", big, sizeof(big)), err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "longer than"));
    /* exactly MC_SECRET_MAX bytes with the newline is fine */
    big[MC_SECRET_MAX - 1] = '\n';
    {
        char *s = mc_secret_read(put("max", big, MC_SECRET_MAX), err, sizeof(err));

        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq(strlen(s), MC_SECRET_MAX - 1);
        mc_secret_free(s);
    }
}
END_TEST

START_TEST(test_unreadable)
{
    char err[256], path[128];

    snprintf(path, sizeof(path), "%s/missing", tmp_dir);
    ck_assert_ptr_null(mc_secret_read(path, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "cannot open"));
    ck_assert_ptr_nonnull(strstr(err, "missing"));
    ck_assert_int_eq(mc_file_readable(path, err, sizeof(err)), -1);
    ck_assert_int_eq(mc_file_readable(tmp_dir, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
    ck_assert_int_eq(mc_file_readable("", err, sizeof(err)), -1);
    ck_assert_int_eq(mc_file_readable(puts0("ok", "x"), err, sizeof(err)), 0);
    mc_secret_free(NULL);
}
END_TEST

static Suite *secret_suite(void)
{
    Suite *s = suite_create("secret");
    TCase *tc = tcase_create("read");

    tcase_add_test(tc, test_trailing_newline_stripped);
    tcase_add_test(tc, test_refused_contents);
    tcase_add_test(tc, test_unreadable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    static const char *const names[] = {"a", "b", "c", "e", "n", "two", "nul", "big", "max", "ok", NULL};

    strcpy(tmp_dir, "/tmp/mc_test_secret_XXXXXX");
    return tf_run(secret_suite(), tmp_dir, names);
}
