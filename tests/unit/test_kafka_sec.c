/*
 * Unit tests for the kafka_* security keys and the librdkafka properties
 * they become (lib/src/kafka_sec.c): each test writes a
 * config file (and the files it names) into a directory main() makes with
 * mkdtemp, loads it with the services' key list and reads the settings.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "minichat/kafka_sec.h"
#include "conf_files.h"

static const char *const KEYS[] = {MC_KAFKA_SEC_CONF_KEYS, NULL};
static char tmp_dir[64];
static char err[512];
static mc_conf_t *conf;
static mc_kafka_sec_t ks;

static void put(const char *name, const char *content)
{
    tf_put(tmp_dir, name, content);
}

/* Loads a config whose text has "@D@" replaced by tmp_dir and reads it.
 * Returns what mc_kafka_sec_read() returns; err holds the errors it recorded. */
static int read_conf(const char *text)
{
    int rc;

    conf = tf_load(tmp_dir, text, KEYS, err, sizeof(err));
    rc = mc_kafka_sec_read(conf, &ks);
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
    memset(&ks, 0, sizeof(ks));
    err[0] = '\0';
}

static void teardown(void)
{
    mc_kafka_sec_free(&ks);
    mc_conf_free(conf);
}

/* Returns the value of the librdkafka property name, or NULL when absent. */
static const char *prop(const char *name)
{
    const char *n, *v;
    int i;

    for (i = 0; mc_kafka_sec_prop(&ks, i, &n, &v) == 0; i++) {
        if (strcmp(n, name) == 0) {
            return v;
        }
    }
    return NULL;
}

/* Returns how many properties ks becomes. */
static int nprops(void)
{
    const char *n, *v;
    int i;

    for (i = 0; mc_kafka_sec_prop(&ks, i, &n, &v) == 0; i++) {
    }
    return i;
}

START_TEST(test_default_plaintext)
{
    ck_assert_int_eq(read_conf("\n"), 0);
    ck_assert_int_eq(ks.protocol, MC_KAFKA_PLAINTEXT);
    ck_assert_int_eq(nprops(), 1);
    ck_assert_str_eq(prop("security.protocol"), "plaintext");
    /* the dev stack's plain configs leave the file keys empty */
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("kafka_security_protocol = plaintext\nkafka_ssl_ca =\nkafka_ssl_cert =\n"
                               "kafka_ssl_key =\n"), 0);
    ck_assert_int_eq(nprops(), 1);
}
END_TEST

START_TEST(test_ssl_with_client_cert)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = ssl\nkafka_ssl_ca = @D@/ca.pem\n"
                               "kafka_ssl_cert = @D@/cert.pem\nkafka_ssl_key = @D@/key.pem\n"), 0);
    ck_assert_int_eq(ks.protocol, MC_KAFKA_SSL);
    ck_assert_str_eq(prop("security.protocol"), "ssl");
    ck_assert_ptr_nonnull(strstr(prop("ssl.ca.location"), "ca.pem"));
    ck_assert_ptr_nonnull(strstr(prop("ssl.certificate.location"), "cert.pem"));
    ck_assert_ptr_nonnull(strstr(prop("ssl.key.location"), "key.pem"));
    ck_assert_ptr_null(prop("sasl.password"));
    ck_assert_int_eq(nprops(), 4);
}
END_TEST

START_TEST(test_ssl_system_trust)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = ssl\n"), 0);
    ck_assert_ptr_null(prop("ssl.ca.location"));
    ck_assert_int_eq(nprops(), 1);
}
END_TEST

START_TEST(test_sasl_ssl)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = sasl_ssl\nkafka_ssl_ca = @D@/ca.pem\n"
                               "kafka_sasl_mechanism = SCRAM-SHA-512\nkafka_sasl_username = minichat\n"
                               "kafka_sasl_password_file = @D@/pw\n"), 0);
    ck_assert_str_eq(prop("security.protocol"), "sasl_ssl");
    ck_assert_str_eq(prop("sasl.mechanisms"), "SCRAM-SHA-512");
    ck_assert_str_eq(prop("sasl.username"), "minichat");
    ck_assert_str_eq(prop("sasl.password"), "hunter2");
    ck_assert_int_eq(mc_kafka_prop_secret("sasl.password"), 1);
    ck_assert_int_eq(mc_kafka_prop_secret("sasl.username"), 0);
    ck_assert_int_eq(mc_kafka_prop_secret("ssl.ca.location"), 0);
    mc_kafka_sec_free(&ks);
    ck_assert_ptr_null(ks.sasl_password);
}
END_TEST

START_TEST(test_sasl_plaintext_default_mechanism)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = sasl_plaintext\nkafka_sasl_username = u\n"
                               "kafka_sasl_password_file = @D@/pw\n"), 0);
    ck_assert_str_eq(prop("sasl.mechanisms"), "PLAIN");
    ck_assert_str_eq(mc_kafka_protocol_name(ks.protocol), "sasl_plaintext");
}
END_TEST

START_TEST(test_bad_protocol)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = tls\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "kafka_security_protocol \"tls\" is not plaintext, ssl"));
}
END_TEST

START_TEST(test_ssl_files_need_ssl)
{
    ck_assert_int_eq(read_conf("kafka_ssl_ca = @D@/ca.pem\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "need kafka_security_protocol ssl or sasl_ssl, not plaintext"));
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("kafka_security_protocol = sasl_plaintext\nkafka_ssl_ca = @D@/ca.pem\n"
                               "kafka_sasl_username = u\nkafka_sasl_password_file = @D@/pw\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "not sasl_plaintext"));
}
END_TEST

START_TEST(test_cert_without_key)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = ssl\nkafka_ssl_key = @D@/key.pem\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "go together"));
}
END_TEST

START_TEST(test_unreadable_files)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = ssl\nkafka_ssl_ca = @D@/nope.pem\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "kafka_ssl_ca: cannot open"));
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("kafka_security_protocol = sasl_ssl\nkafka_sasl_username = u\n"
                               "kafka_sasl_password_file = @D@/nope\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "kafka_sasl_password_file: cannot open"));
}
END_TEST

START_TEST(test_sasl_needs_user_and_password)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = sasl_ssl\nkafka_sasl_username = u\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "needs kafka_sasl_username and kafka_sasl_password_file"));
    mc_conf_free(conf);
    ck_assert_int_eq(read_conf("kafka_security_protocol = sasl_ssl\nkafka_sasl_password_file = @D@/pw\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "needs kafka_sasl_username"));
}
END_TEST

START_TEST(test_sasl_keys_need_sasl)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = ssl\nkafka_sasl_username = u\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "kafka_sasl_* keys need kafka_security_protocol sasl_plaintext or sasl_ssl"));
}
END_TEST

START_TEST(test_bad_mechanism)
{
    ck_assert_int_eq(read_conf("kafka_security_protocol = sasl_ssl\nkafka_sasl_mechanism = GSSAPI\n"
                               "kafka_sasl_username = u\nkafka_sasl_password_file = @D@/pw\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "kafka_sasl_mechanism \"GSSAPI\" is not PLAIN"));
}
END_TEST

static Suite *kafka_sec_suite(void)
{
    Suite *s = suite_create("kafka_sec");
    TCase *tc = tcase_create("read");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_default_plaintext);
    tcase_add_test(tc, test_ssl_with_client_cert);
    tcase_add_test(tc, test_ssl_system_trust);
    tcase_add_test(tc, test_sasl_ssl);
    tcase_add_test(tc, test_sasl_plaintext_default_mechanism);
    tcase_add_test(tc, test_bad_protocol);
    tcase_add_test(tc, test_ssl_files_need_ssl);
    tcase_add_test(tc, test_cert_without_key);
    tcase_add_test(tc, test_unreadable_files);
    tcase_add_test(tc, test_sasl_needs_user_and_password);
    tcase_add_test(tc, test_sasl_keys_need_sasl);
    tcase_add_test(tc, test_bad_mechanism);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    static const char *const names[] = {"ca.pem", "cert.pem", "key.pem", "pw", "svc.conf", NULL};

    strcpy(tmp_dir, "/tmp/mc_test_kafka_sec_XXXXXX");
    return tf_run(kafka_sec_suite(), tmp_dir, names);
}
