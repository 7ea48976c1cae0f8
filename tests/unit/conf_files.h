/*
 * For the unit tests that read files (test_db_conf.c, test_kafka_sec.c,
 * test_secret.c): a suite run in a temporary directory made for it, files
 * written into that directory, and a config loaded from text whose "@D@"
 * stands for it.  Header only: each test includes it once.
 */
#ifndef MINICHAT_TEST_CONF_FILES_H
#define MINICHAT_TEST_CONF_FILES_H

#include <check.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "minichat/conf.h"

/* Writes content to dir/name. */
static inline void tf_put(const char *dir, const char *name, const char *content)
{
    char path[256];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    ck_assert_int_eq(close(fd), 0);
}

/* Writes text, "@D@" replaced by dir, to dir/svc.conf and loads it with the
 * known keys; fails the test when it does not load. */
static inline mc_conf_t *tf_load(const char *dir, const char *text, const char *const *keys, char *err, size_t errlen)
{
    char buf[2048], path[256];
    const char *p, *at;
    size_t n = 0;
    mc_conf_t *conf;

    for (p = text; (at = strstr(p, "@D@")) != NULL; p = at + 3) {
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%.*s%s", (int)(at - p), p, dir);
    }
    snprintf(buf + n, sizeof(buf) - n, "%s", p);
    tf_put(dir, "svc.conf", buf);
    snprintf(path, sizeof(path), "%s/svc.conf", dir);
    conf = mc_conf_load(path, keys, err, errlen);
    ck_assert_msg(conf != NULL, "%s", err);
    return conf;
}

/* Copies every error recorded in conf into buf, one per line. */
static inline const char *tf_errors(const mc_conf_t *conf, char *buf, size_t size)
{
    size_t i, n = 0;

    buf[0] = '\0';
    for (i = 0; i < mc_conf_nerrors(conf) && n < size; i++) {
        n += (size_t)snprintf(buf + n, size - n, "%s\n", mc_conf_error_at(conf, i));
    }
    return buf;
}

/* Makes dir from its template ("/tmp/name_XXXXXX", rewritten in place),
 * runs the suite, removes the files named in `names` and the directory.
 * Returns main()'s exit status. */
static inline int tf_run(Suite *suite, char *dir, const char *const *names)
{
    SRunner *sr = srunner_create(suite);
    char path[256];
    int failed, i;

    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        srunner_free(sr);
        return EXIT_FAILURE;
    }
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (i = 0; names[i] != NULL; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
