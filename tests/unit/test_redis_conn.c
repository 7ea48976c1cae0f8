/*
 * Tests for lib/src/redis_conn.c and the TLS side of lib/src/redis_sync.c
 * against real redis-servers: one plain, one listening for TLS only
 * (`port 0`, `tls-port`), with a CA and certificates made by `openssl` in
 * a temporary directory.  The servers are started once for the suite (an
 * unchecked fixture) and stopped after it; each test runs in its own fork.
 */
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "minichat/redis_conn.h"
#include "minichat/redis_sync.h"

#define TIMEOUT_MS 2000

static char dir[64];
static int plain_port, tls_port;
static char ca[128], other_ca[128], client_crt[128], client_key[128];

static int free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd, port;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd == -1 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0
        || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        return -1;
    }
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void servers_stop(void);

static void run(const char *cmd)
{
    if (system(cmd) != 0) {
        fprintf(stderr, "failed: %s\n", cmd);
        exit(1);
    }
}

/* PING until it answers, for up to 10 s.  Returns 0 or -1. */
static int wait_ping(const char *host, int port, const mc_redis_tls_t *tls)
{
    const char *argv[1] = {"PING"};
    size_t argvlen[1] = {4};
    char err[256];
    mc_redis_conn_t *c;
    redisReply *r;
    int i;

    for (i = 0; i < 100; i++) {
        c = mc_redis_conn_open(host, port, NULL, tls, TIMEOUT_MS, err, sizeof(err));
        r = c != NULL ? mc_redis_conn_command(c, 1, argv, argvlen) : NULL;
        mc_redis_conn_close(c);
        if (r != NULL) {
            freeReplyObject(r);
            return 0;
        }
        usleep(100000);
    }
    return -1;
}

static mc_redis_tls_t good_tls(void)
{
    mc_redis_tls_t t = {1, 1, ca, NULL, NULL, "server.test"};

    return t;
}

static void servers_start(void)
{
    char cmd[2048];
    mc_redis_tls_t t;

    snprintf(dir, sizeof(dir), "/tmp/mc-redis-conn-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        exit(1);
    }
    snprintf(cmd, sizeof(cmd),
             "cd %s && for n in ca other-ca; do openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout $n.key -out $n.crt -days 2 -subj /CN=$n; done 2>/dev/null && "
             "for n in server client; do openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout $n.key -out $n.csr -subj /CN=$n && "
             "echo subjectAltName=DNS:$n.test,IP:127.0.0.1 > $n.ext && "
             "openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 2 "
             "-extfile $n.ext; done 2>/dev/null",
             dir);
    run(cmd);
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(other_ca, sizeof(other_ca), "%s/other-ca.crt", dir);
    snprintf(client_crt, sizeof(client_crt), "%s/client.crt", dir);
    snprintf(client_key, sizeof(client_key), "%s/client.key", dir);

    plain_port = free_port();
    tls_port = free_port();
    snprintf(cmd, sizeof(cmd),
             "cd %s && redis-server --bind 127.0.0.1 --port %d --save '' --appendonly no --dir %s "
             "--daemonize yes --pidfile %s/plain.pid --logfile %s/plain.log && "
             "redis-server --bind 127.0.0.1 --port 0 --tls-port %d --tls-cert-file server.crt "
             "--tls-key-file server.key --tls-ca-cert-file ca.crt --tls-auth-clients optional --save '' "
             "--appendonly no --dir %s --daemonize yes --pidfile %s/tls.pid --logfile %s/tls.log",
             dir, plain_port, dir, dir, dir, tls_port, dir, dir, dir);
    run(cmd);
    t = good_tls();
    if (wait_ping("127.0.0.1", plain_port, NULL) != 0 || wait_ping("127.0.0.1", tls_port, &t) != 0) {
        fprintf(stderr, "the test redis-servers did not answer\n");
        servers_stop();
        exit(1);
    }
}

static void servers_stop(void)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "cd %s && for p in plain tls; do [ -f $p.pid ] && kill $(cat $p.pid); done; "
             "sleep 0.2; rm -rf %s", dir, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cleanup of %s failed\n", dir);
    }
}

/* SET then GET of a value of n bytes, pipelined; checks the value. */
static void set_get(mc_redis_conn_t *c, const char *key, size_t n)
{
    char *v = malloc(n);
    const char *set[3] = {"SET", key, v};
    size_t setlen[3] = {3, strlen(key), n};
    const char *get[2] = {"GET", key};
    size_t getlen[2] = {3, strlen(key)};
    redisReply *r;
    size_t i;

    ck_assert_ptr_nonnull(v);
    for (i = 0; i < n; i++) {
        v[i] = (char)('a' + i % 26);
    }
    ck_assert_int_eq(mc_redis_conn_append(c, 3, set, setlen), 0);
    ck_assert_int_eq(mc_redis_conn_append(c, 2, get, getlen), 0);
    ck_assert_int_eq(mc_redis_conn_reply(c, &r), 0);
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    ck_assert_int_eq(mc_redis_conn_reply(c, &r), 0);
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    ck_assert_uint_eq(r->len, n);
    ck_assert_int_eq(memcmp(r->str, v, n), 0);
    freeReplyObject(r);
    free(v);
}

/* INCR key k times pipelined; the replies come back in order. */
static void pipeline(mc_redis_conn_t *c, const char *key, int k)
{
    const char *argv[2] = {"INCR", key};
    size_t argvlen[2] = {4, strlen(key)};
    const char *del[2] = {"DEL", key};
    size_t dellen[2] = {3, strlen(key)};
    redisReply *r;
    int i;

    r = mc_redis_conn_command(c, 2, del, dellen);
    ck_assert_ptr_nonnull(r);
    freeReplyObject(r);
    for (i = 0; i < k; i++) {
        ck_assert_int_eq(mc_redis_conn_append(c, 2, argv, argvlen), 0);
    }
    for (i = 1; i <= k; i++) {
        ck_assert_int_eq(mc_redis_conn_reply(c, &r), 0);
        ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
        ck_assert_int_eq(r->integer, i);
        freeReplyObject(r);
    }
}

START_TEST(test_plain)
{
    char err[256];
    mc_redis_conn_t *c = mc_redis_conn_open("127.0.0.1", plain_port, NULL, NULL, TIMEOUT_MS, err, sizeof(err));

    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_null(strstr(mc_redis_conn_peer(c), "TLS"));
    pipeline(c, "plain:n", 500);
    set_get(c, "plain:big", 200000);   /* many reads of 16 KB */
    mc_redis_conn_close(c);
}
END_TEST

START_TEST(test_tls)
{
    mc_redis_tls_t t = good_tls();
    char err[256];
    mc_redis_conn_t *c = mc_redis_conn_open("127.0.0.1", tls_port, NULL, &t, TIMEOUT_MS, err, sizeof(err));

    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_nonnull(strstr(mc_redis_conn_peer(c), "(TLS)"));
    pipeline(c, "tls:n", 500);
    set_get(c, "tls:big", 200000);
    mc_redis_conn_close(c);
}
END_TEST

START_TEST(test_tls_client_certificate)
{
    mc_redis_tls_t t = good_tls();
    char err[256];
    mc_redis_conn_t *c;

    t.cert_file = client_crt;
    t.key_file = client_key;
    c = mc_redis_conn_open("127.0.0.1", tls_port, NULL, &t, TIMEOUT_MS, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    set_get(c, "tls:cert", 10);
    mc_redis_conn_close(c);

    /* a key that is not there is said at once */
    t.key_file = "/nonexistent.key";
    c = mc_redis_conn_open("127.0.0.1", tls_port, NULL, &t, TIMEOUT_MS, err, sizeof(err));
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "client certificate") != NULL, "%s", err);
}
END_TEST

START_TEST(test_tls_wrong_ca)
{
    mc_redis_tls_t t = good_tls();
    char err[256];
    mc_redis_conn_t *c;

    t.ca_file = other_ca;
    c = mc_redis_conn_open("127.0.0.1", tls_port, NULL, &t, TIMEOUT_MS, err, sizeof(err));
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "TLS certificate verify error") != NULL, "%s", err);

    /* without verification the same CA file does not matter */
    t.verify = 0;
    c = mc_redis_conn_open("127.0.0.1", tls_port, NULL, &t, TIMEOUT_MS, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    mc_redis_conn_close(c);
}
END_TEST

START_TEST(test_tls_wrong_name)
{
    mc_redis_tls_t t = good_tls();
    char err[256];
    mc_redis_conn_t *c;

    t.name = "other.test";
    c = mc_redis_conn_open("127.0.0.1", tls_port, NULL, &t, TIMEOUT_MS, err, sizeof(err));
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "hostname mismatch") != NULL, "%s", err);
}
END_TEST

START_TEST(test_wrong_transport)
{
    const char *argv[1] = {"PING"};
    size_t argvlen[1] = {4};
    mc_redis_tls_t t = good_tls();
    char err[256];
    mc_redis_conn_t *c;

    /* plain RESP to the TLS port: Redis drops it, the command fails */
    c = mc_redis_conn_open("127.0.0.1", tls_port, NULL, NULL, TIMEOUT_MS, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_null(mc_redis_conn_command(c, 1, argv, argvlen));
    ck_assert_str_ne(mc_redis_conn_error(c), "");
    /* and the connection stays failed */
    ck_assert_int_eq(mc_redis_conn_append(c, 1, argv, argvlen), -1);
    mc_redis_conn_close(c);

    /* a TLS handshake with the plain port: no answer in time, or an error */
    c = mc_redis_conn_open("127.0.0.1", plain_port, NULL, &t, 500, err, sizeof(err));
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "TLS handshake") != NULL, "%s", err);
}
END_TEST

START_TEST(test_no_answer_times_out)
{
    const char *argv[1] = {"PING"};
    size_t argvlen[1] = {4};
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    char err[256];
    mc_redis_conn_t *c;
    int lfd;

    /* a listener that never accepts: the kernel completes the connect */
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(lfd, 8), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);

    c = mc_redis_conn_open("127.0.0.1", ntohs(sa.sin_port), NULL, NULL, 300, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_null(mc_redis_conn_command(c, 1, argv, argvlen));
    ck_assert_msg(strstr(mc_redis_conn_error(c), "timed out") != NULL, "%s", mc_redis_conn_error(c));
    mc_redis_conn_close(c);
    close(lfd);

    /* nobody listening */
    c = mc_redis_conn_open("127.0.0.1", ntohs(sa.sin_port), NULL, NULL, 300, err, sizeof(err));
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "refused") != NULL, "%s", err);
}
END_TEST

START_TEST(test_tls_check)
{
    mc_redis_tls_t t = {1, 1, NULL, NULL, NULL, NULL};
    char err[256];

    ck_assert_int_eq(mc_redis_tls_check(NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(mc_redis_tls_check(&t, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "redis_tls_ca_file"));
    t.verify = 0;
    ck_assert_int_eq(mc_redis_tls_check(&t, err, sizeof(err)), 0);
    t.cert_file = "c.crt";
    ck_assert_int_eq(mc_redis_tls_check(&t, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "go together"));
    t.on = 0;
    ck_assert_int_eq(mc_redis_tls_check(&t, err, sizeof(err)), 0);
}
END_TEST

START_TEST(test_connect_for_key_over_tls)
{
    mc_redis_tls_t t = good_tls();
    char addrs[64], err[256];
    mc_redis_conn_t *c;

    /* the first address refuses; the second is the TLS Redis */
    snprintf(addrs, sizeof(addrs), "127.0.0.1:%d,127.0.0.1:%d", free_port(), tls_port);
    c = mc_redis_connect_for_key(addrs, &t, "{dirty}:read", TIMEOUT_MS, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_nonnull(strstr(mc_redis_conn_peer(c), "(TLS)"));
    mc_redis_conn_close(c);
}
END_TEST

static Suite *redis_conn_suite(void)
{
    Suite *s = suite_create("redis_conn");
    TCase *tc = tcase_create("servers");

    tcase_add_unchecked_fixture(tc, servers_start, servers_stop);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_plain);
    tcase_add_test(tc, test_tls);
    tcase_add_test(tc, test_tls_client_certificate);
    tcase_add_test(tc, test_tls_wrong_ca);
    tcase_add_test(tc, test_tls_wrong_name);
    tcase_add_test(tc, test_wrong_transport);
    tcase_add_test(tc, test_no_answer_times_out);
    tcase_add_test(tc, test_tls_check);
    tcase_add_test(tc, test_connect_for_key_over_tls);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(redis_conn_suite());
    int failed;

    signal(SIGPIPE, SIG_IGN);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
