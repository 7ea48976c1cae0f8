/*
 * For the unit tests of config-key parsers (test_db_conf.c,
 * test_kafka_sec.c): files written into a test's temporary directory, and a
 * config loaded from text whose "@D@" stands for that directory.  Header
 * only: each test includes it once.
 */
#ifndef MINICHAT_TEST_CONF_FILES_H
#define MINICHAT_TEST_CONF_FILES_H

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "minichat/conf.h"

/* Writes content to dir/name. */
static void tf_put(const char *dir, const char *name, const char *content)
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
static mc_conf_t *tf_load(const char *dir, const char *text, const char *const *keys, char *err, size_t errlen)
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

#endif
