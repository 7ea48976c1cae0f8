/*
 * Unit tests for the mysql_* keys (lib/src/db_conf.c): each test writes a
 * config file (and the files it names) into a directory main() makes with
 * mkdtemp, loads it with the services' key list and reads the settings.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "minichat/db_conf.h"
#include "conf_files.h"

static const char *const KEYS[] = {MC_DB_CONF_KEYS, NULL};
static char tmp_dir[64];
static char err[512];
static mc_conf_t *conf;
static mc_db_conf_t dc;

static void put(const char *name, const char *content)
{
    tf_put(tmp_dir, name, content);
}

/* Loads a config whose text has "@D@" replaced by tmp_dir and reads it.
 * Returns what mc_db_conf_read() returns; err holds the errors it recorded. */
static int read_conf(const char *text)
{
    int rc;

    conf = tf_load(tmp_dir, text, KEYS, err, sizeof(err));
    rc = mc_db_conf_read(conf, &dc);
    tf_errors(conf, err, sizeof(err));
    return rc;
}

static void setup(void)
{
    put("ca.pem", "ca\n");
    put("cert.pem", "cert\n");
    put("key.pem", "key\n");
    put("pw", "hunter2\n");
    conf = NULL;
    memset(&dc, 0, sizeof(dc));
    err[0] = '\0';
}

static void teardown(void)
{
    mc_db_conf_free(&dc);
    mc_conf_free(conf);
}

START_TEST(test_replicas_and_bounds)
{
    /* mysql_replica is the one-item spelling of mysql_replicas */
    ck_assert_int_eq(read_conf("mysql_replica = 127.0.0.1:3307\n"), 0);
    ck_assert_str_eq(dc.db.replicas, "127.0.0.1:3307");
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("mysql_replicas = a:1,b:2\nmysql_replica_max_lag_ms = 0\n"), 0);
    ck_assert_str_eq(dc.db.replicas, "a:1,b:2");
    ck_assert_int_eq(dc.db.max_lag_ms, 0);
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("mysql_replica = a:1\nmysql_replicas = b:2\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "both set"));
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("mysql_read_your_writes_ms = -1\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "mysql_read_your_writes_ms"));
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("mysql_lock_wait_s = 3601\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "mysql_lock_wait_s"));
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("mysql_lock_wait_s = 5\n"), 0);
    ck_assert_int_eq(dc.db.lock_wait_s, 5);
    mc_conf_free(conf);
    /* lag samples must cover the bound */
    ck_assert_int_eq(read_conf("mysql_replica_max_lag_ms = 60000\nmysql_replica_check_ms = 10\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "mysql_replica_check_ms"));
}
END_TEST

START_TEST(test_defaults)
{
    ck_assert_int_eq(read_conf("mysql_primary = 127.0.0.1:3306\n"), 0);
    ck_assert_str_eq(dc.db.primary, "127.0.0.1:3306");
    ck_assert_str_eq(dc.db.replicas, "");
    ck_assert_int_eq(dc.db.max_lag_ms, 2000);
    ck_assert_int_eq(dc.db.lag_check_ms, 250);
    ck_assert_int_eq(dc.db.ryw_ms, 2000);
    ck_assert_int_eq(dc.db.lock_wait_s, 0);
    ck_assert_str_eq(dc.db.user, "root");
    ck_assert_str_eq(dc.db.password, "");
    ck_assert_str_eq(dc.db.database, "minichat");
    ck_assert_int_eq(dc.db.ssl, MC_DB_SSL_OFF);
    ck_assert_ptr_null(dc.db.ssl_ca);
    ck_assert_ptr_null(dc.db.ssl_cert);
    /* empty values are unset, as the dev stack's plain configs write them */
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("mysql_ssl = off\nmysql_ssl_ca =\nmysql_password_file =\n"), 0);
    ck_assert_ptr_null(dc.db.primary);
    ck_assert_ptr_null(dc.db.ssl_ca);
}
END_TEST

START_TEST(test_verify_with_files)
{
    ck_assert_int_eq(read_conf("mysql_user = svc\nmysql_password_file = @D@/pw\nmysql_ssl = verify\n"
                               "mysql_ssl_ca = @D@/ca.pem\nmysql_ssl_cert = @D@/cert.pem\n"
                               "mysql_ssl_key = @D@/key.pem\n"), 0);
    ck_assert_str_eq(dc.db.user, "svc");
    ck_assert_str_eq(dc.db.password, "hunter2");
    ck_assert_int_eq(dc.db.ssl, MC_DB_SSL_VERIFY);
    ck_assert_ptr_nonnull(strstr(dc.db.ssl_ca, "ca.pem"));
    ck_assert_ptr_nonnull(strstr(dc.db.ssl_cert, "cert.pem"));
    ck_assert_ptr_nonnull(strstr(dc.db.ssl_key, "key.pem"));
    ck_assert_str_eq(mc_db_ssl_name(dc.db.ssl), "verify");
    mc_db_conf_free(&dc);
    ck_assert_ptr_null(dc.password);
    ck_assert_ptr_null(dc.db.password);
}
END_TEST

START_TEST(test_on_without_ca)
{
    ck_assert_int_eq(read_conf("mysql_ssl = on\n"), 0);
    ck_assert_int_eq(dc.db.ssl, MC_DB_SSL_ON);
    ck_assert_str_eq(mc_db_ssl_name(dc.db.ssl), "on");
}
END_TEST

START_TEST(test_bad_mode)
{
    ck_assert_int_eq(read_conf("mysql_ssl = yes\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "mysql_ssl \"yes\" is not off, on or verify"));
}
END_TEST

START_TEST(test_verify_needs_ca)
{
    ck_assert_int_eq(read_conf("mysql_ssl = verify\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "needs mysql_ssl_ca"));
}
END_TEST

START_TEST(test_files_need_ssl)
{
    ck_assert_int_eq(read_conf("mysql_ssl_ca = @D@/ca.pem\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "need mysql_ssl on or verify"));
}
END_TEST

START_TEST(test_cert_without_key)
{
    ck_assert_int_eq(read_conf("mysql_ssl = on\nmysql_ssl_cert = @D@/cert.pem\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "go together"));
}
END_TEST

START_TEST(test_unreadable_ca)
{
    ck_assert_int_eq(read_conf("mysql_ssl = verify\nmysql_ssl_ca = @D@/nope.pem\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "mysql_ssl_ca: cannot open"));
    ck_assert_ptr_nonnull(strstr(err, "nope.pem"));
}
END_TEST

START_TEST(test_password_twice)
{
    ck_assert_int_eq(read_conf("mysql_password = a\nmysql_password_file = @D@/pw\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "not both"));
}
END_TEST

START_TEST(test_password_file_missing_or_empty)
{
    ck_assert_int_eq(read_conf("mysql_password_file = @D@/missing\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "mysql_password_file: cannot open"));
    mc_conf_free(conf);
    put("empty", "\n");
    ck_assert_int_eq(read_conf("mysql_password_file = @D@/empty\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "mysql_password_file:"));
    ck_assert_ptr_nonnull(strstr(err, "is empty"));
}
END_TEST

START_TEST(test_error_is_config)
{
    ck_assert_int_eq(mc_db_error_is_config(ER_ACCESS_DENIED_ERROR), 1);
    ck_assert_int_eq(mc_db_error_is_config(ER_DBACCESS_DENIED_ERROR), 1);
    ck_assert_int_eq(mc_db_error_is_config(ER_BAD_DB_ERROR), 1);
    ck_assert_int_eq(mc_db_error_is_config(CR_SSL_CONNECTION_ERROR), 1);
    /* a server that is down, gone or busy is not a configuration error */
    ck_assert_int_eq(mc_db_error_is_config(CR_CONN_HOST_ERROR), 0);
    ck_assert_int_eq(mc_db_error_is_config(CR_CONNECTION_ERROR), 0);
    ck_assert_int_eq(mc_db_error_is_config(CR_SERVER_LOST), 0);
    ck_assert_int_eq(mc_db_error_is_config(ER_CON_COUNT_ERROR), 0);
    ck_assert_int_eq(mc_db_error_is_config(0), 0);
}
END_TEST

static Suite *db_conf_suite(void)
{
    Suite *s = suite_create("db_conf");
    TCase *tc = tcase_create("read");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_replicas_and_bounds);
    tcase_add_test(tc, test_verify_with_files);
    tcase_add_test(tc, test_on_without_ca);
    tcase_add_test(tc, test_bad_mode);
    tcase_add_test(tc, test_verify_needs_ca);
    tcase_add_test(tc, test_files_need_ssl);
    tcase_add_test(tc, test_cert_without_key);
    tcase_add_test(tc, test_unreadable_ca);
    tcase_add_test(tc, test_password_twice);
    tcase_add_test(tc, test_password_file_missing_or_empty);
    tcase_add_test(tc, test_error_is_config);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    static const char *const names[] = {"ca.pem", "cert.pem", "key.pem", "pw", "empty", "svc.conf", NULL};

    strcpy(tmp_dir, "/tmp/mc_test_db_conf_XXXXXX");
    return tf_run(db_conf_suite(), tmp_dir, names);
}
