/*
 * Unit tests for the JWT payload reader (lib/src/jwt_claims.c).
 *
 * Its contract is to accept exactly what jansson's json_loadb with
 * JSON_REJECT_DUPLICATES returns an object for, and to report the
 * top-level sub, exp and nbf as jansson would show them.  So besides the
 * hand-written expectations, every payload here is also given to jansson
 * and the two answers must agree: a corpus of tricky and malformed
 * payloads, and a few hundred thousand mutations of them (bytes replaced,
 * inserted and deleted by a fixed-seed generator).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "minichat/jwt_claims.h"

static char scratch[8192];

static const char *corpus[] = {
    "{\"sub\":\"42\"}",
    "{\"sub\":42,\"exp\":4102444800,\"nbf\":1600000000}",
    " \t\r\n{ \"sub\" : \"7\" , \"exp\" : 1 } \n",
    "{}",
    "[]",
    "[{\"sub\":1}]",
    "\"sub\"",
    "42",
    "{\"sub\":\"1\"} x",
    "{\"sub\":\"1\",}",
    "{,\"sub\":\"1\"}",
    "{\"sub\" \"1\"}",
    "{\"sub\":}",
    "{\"sub\":\"1\"",
    "{\"sub\":\"1\"}}",
    "{\"sub\":1,\"sub\":2}",
    "{\"s\\u0075b\":\"9\"}",
    "{\"sub\":\"9\",\"s\\u0075b\":\"9\"}",
    "{\"a\":{\"b\":1,\"b\":2},\"sub\":1}",
    "{\"a\":{\"b\":1},\"b\":{\"b\":1},\"sub\":1}",
    "{\"a\":[1,2,{\"c\":null,\"d\":[true,false]}],\"sub\":\"5\"}",
    "{\"a\":[1,2,],\"sub\":1}",
    "{\"a\":[,1],\"sub\":1}",
    "{\"sub\":\"\\u0000\"}",
    "{\"\\u0000\":1,\"sub\":1}",
    "{\"sub\":\"\\ud83d\\ude00\"}",
    "{\"sub\":\"\\ud83d\"}",
    "{\"sub\":\"\\ude00\"}",
    "{\"sub\":\"\\ud83dx\"}",
    "{\"sub\":\"\\ud83d\\u0041\"}",
    "{\"sub\":\"\\uZZZZ\"}",
    "{\"sub\":\"\\u12\"}",
    "{\"sub\":\"\\x41\"}",
    "{\"sub\":\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"}",
    "{\"sub\":\"tab\there\"}",
    "{\"sub\":\"caf\xc3\xa9\"}",
    "{\"sub\":\"\xc3\"}",
    "{\"sub\":\"\xed\xa0\x80\"}",
    "{\"sub\":\"\xc0\xaf\"}",
    "{\"sub\":\"\xf4\x90\x80\x80\"}",
    "{\"sub\":1}\xc3\xa9",
    "{\"sub\":9223372036854775807}",
    "{\"sub\":9223372036854775808}",
    "{\"sub\":-9223372036854775808}",
    "{\"sub\":-9223372036854775809}",
    "{\"sub\":99999999999999999999999}",
    "{\"sub\":-0}",
    "{\"sub\":0}",
    "{\"sub\":01}",
    "{\"sub\":-}",
    "{\"sub\":1.}",
    "{\"sub\":.5}",
    "{\"sub\":1.5}",
    "{\"sub\":1e3}",
    "{\"sub\":1E+3}",
    "{\"sub\":1e-3}",
    "{\"sub\":1e}",
    "{\"sub\":1e+}",
    "{\"sub\":+1}",
    "{\"sub\":1e999}",
    "{\"sub\":-1e999}",
    "{\"sub\":1e-999}",
    "{\"sub\":true,\"exp\":false,\"nbf\":null}",
    "{\"sub\":tru}",
    "{\"sub\":truex}",
    "{\"sub\":nul}",
    "{\"sub\":NaN}",
    "{\"sub\":Infinity}",
    "{\"sub\":'1'}",
    "{sub:1}",
    "{\"sub\":\"12345678901234567890123456789\"}",
    "{\"sub\":\"1\",\"exp\":\"5\"}",
    "{\"sub\":\"1\",\"exp\":5.0}",
    "{\"sub\":\"1\",\"nbf\":[]}",
    "{\"sub\":\"1\",\"x\":{}}",
    "{\"sub\":\"1\",\"x\":{\"sub\":2}}",
    "{\"SUB\":1}",
    "{\"subx\":1}",
    "{\"su\":1}",
    "{\"\":1,\"\":2}",
    "{\"\":1,\"sub\":2}",
    "",
    " ",
    "{",
    "}",
    "{\"sub\":\"a\x01b\"}",
    "{\"sub\":\"a\x7f\"}",
    "{\"sub\":\"1\"\x0b}",
    "{\"sub\":\"1\"\xc2\xa0}",
};

/* What jansson makes of json[0..n): the same contract as the reader. */
static void jansson_claim(json_t *v, mc_claim_t *c)
{
    const char *s;
    size_t len;

    memset(c, 0, sizeof(*c));
    if (v == NULL) {
        return;
    }
    if (json_is_integer(v)) {
        c->kind = MC_CLAIM_INT;
        c->num = json_integer_value(v);
    } else if (json_is_string(v)) {
        c->kind = MC_CLAIM_STRING;
        s = json_string_value(v);
        len = json_string_length(v);
        c->len = len;
        if (len < sizeof(c->str)) {
            memcpy(c->str, s, len);
            c->str[len] = '\0';
        }
    } else {
        c->kind = MC_CLAIM_OTHER;
    }
}

static int jansson_read(const uint8_t *json, size_t n, mc_jwt_claims_raw_t *out)
{
    json_t *root;

    memset(out, 0, sizeof(*out));
    root = json_loadb((const char *)json, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    jansson_claim(json_object_get(root, "sub"), &out->sub);
    jansson_claim(json_object_get(root, "exp"), &out->exp);
    jansson_claim(json_object_get(root, "nbf"), &out->nbf);
    json_decref(root);
    return 0;
}

static int same_claim(const mc_claim_t *a, const mc_claim_t *b)
{
    if (a->kind != b->kind) {
        return 0;
    }
    if (a->kind == MC_CLAIM_INT) {
        return a->num == b->num;
    }
    if (a->kind == MC_CLAIM_STRING) {
        return a->len == b->len && (a->len >= sizeof(a->str) || memcmp(a->str, b->str, a->len + 1) == 0);
    }
    return 1;
}

/* Returns 1 when the reader and jansson agree on json[0..n). */
static int agree(const uint8_t *json, size_t n, int *accepted)
{
    mc_jwt_claims_raw_t mine, ref;
    int rc, ref_rc;

    rc = mc_jwt_claims_read(json, n, &mine, scratch, sizeof(scratch));
    ref_rc = jansson_read(json, n, &ref);
    if (accepted) {
        *accepted = rc == 0;
    }
    if (rc != ref_rc) {
        return 0;
    }
    return rc != 0 || (same_claim(&mine.sub, &ref.sub) && same_claim(&mine.exp, &ref.exp)
                       && same_claim(&mine.nbf, &ref.nbf));
}

START_TEST(test_agrees_with_jansson_on_corpus)
{
    size_t i, n;
    int ok;

    for (i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        n = strlen(corpus[i]);
        ok = agree((const uint8_t *)corpus[i], n, NULL);
        if (!ok) {
            ck_abort_msg("reader and jansson disagree on corpus[%zu] %s", i, corpus[i]);
        }
    }
}
END_TEST

START_TEST(test_embedded_nul)
{
    static const uint8_t in_string[] = "{\"sub\":\"a\0b\"}";
    static const uint8_t after[] = "{\"sub\":\"1\"}\0";
    static const uint8_t ws_nul[] = "{\"sub\":\"1\" \0}";

    ck_assert(agree(in_string, sizeof(in_string) - 1, NULL));
    ck_assert(agree(after, sizeof(after) - 1, NULL));
    ck_assert(agree(ws_nul, sizeof(ws_nul) - 1, NULL));
}
END_TEST

START_TEST(test_reads_claims)
{
    static const char j[] = "{\"x\":{\"sub\":1},\"sub\":\"12345\",\"exp\":4102444800,\"nbf\":-3,\"y\":[\"sub\"]}";
    mc_jwt_claims_raw_t c;

    ck_assert_int_eq(mc_jwt_claims_read((const uint8_t *)j, strlen(j), &c, scratch, sizeof(scratch)), 0);
    ck_assert_int_eq(c.sub.kind, MC_CLAIM_STRING);
    ck_assert_str_eq(c.sub.str, "12345");
    ck_assert_uint_eq(c.sub.len, 5);
    ck_assert_int_eq(c.exp.kind, MC_CLAIM_INT);
    ck_assert_int_eq(c.exp.num, 4102444800LL);
    ck_assert_int_eq(c.nbf.kind, MC_CLAIM_INT);
    ck_assert_int_eq(c.nbf.num, -3);

    ck_assert_int_eq(mc_jwt_claims_read((const uint8_t *)"{\"s\\u0075b\":7}", 14, &c, scratch, sizeof(scratch)), 0);
    ck_assert_int_eq(c.sub.kind, MC_CLAIM_INT);
    ck_assert_int_eq(c.sub.num, 7);
    ck_assert_int_eq(c.exp.kind, MC_CLAIM_ABSENT);

    ck_assert_int_eq(mc_jwt_claims_read((const uint8_t *)"{\"sub\":1.0,\"exp\":null}", 22, &c, scratch,
                                        sizeof(scratch)),
                     0);
    ck_assert_int_eq(c.sub.kind, MC_CLAIM_OTHER);
    ck_assert_int_eq(c.exp.kind, MC_CLAIM_OTHER);
}
END_TEST

START_TEST(test_refuses_malformed)
{
    static const char *bad[] = {
        "{\"sub\":1,\"sub\":1}", "{\"a\":{\"k\":1,\"k\":1}}", "{\"sub\":\"\\u0000\"}", "{\"sub\":\"\\udc00\"}",
        "{\"sub\":9223372036854775808}", "{\"sub\":1e400}", "{\"sub\":01}", "{\"sub\":\"\xff\"}",
        "{\"sub\":1} {}", "[1]", "",
    };
    mc_jwt_claims_raw_t c;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(mc_jwt_claims_read((const uint8_t *)bad[i], strlen(bad[i]), &c, scratch, sizeof(scratch)) == -1,
                      "accepted %s", bad[i]);
    }
}
END_TEST

START_TEST(test_scratch_too_small)
{
    static const char j[] = "{\"sub\":\"1\"}";
    char small[sizeof(j) - 1];
    mc_jwt_claims_raw_t c;

    ck_assert_int_eq(mc_jwt_claims_read((const uint8_t *)j, strlen(j), &c, small, sizeof(small)), -1);
    ck_assert_int_eq(mc_jwt_claims_read((const uint8_t *)j, strlen(j), &c, small, sizeof(small) + 1), 0);
}
END_TEST

/* {"sub":1,"a": + depth-1 levels of [ ... ] + } : the payload object is
 * level 1, as jansson counts. */
static size_t nested(char *out, int depth)
{
    size_t n = 0;
    int i;

    n += (size_t)sprintf(out, "{\"sub\":1,\"a\":");
    for (i = 1; i < depth; i++) {
        out[n++] = '[';
    }
    for (i = 1; i < depth; i++) {
        out[n++] = ']';
    }
    out[n++] = '}';
    return n;
}

START_TEST(test_depth_limit)
{
    static char j[6000];
    int accepted;

    ck_assert(agree((const uint8_t *)j, nested(j, 2048), &accepted));
    ck_assert(accepted);
    ck_assert(agree((const uint8_t *)j, nested(j, 2049), &accepted));
    ck_assert(!accepted);
}
END_TEST

START_TEST(test_agrees_with_jansson_on_mutations)
{
    static const char alphabet[] = "{}[]\":,\\u0123456789abcdefABCDEF-+.eEtrunlsfx \t\n\xc3\xa9\xed\xa0\x80\xff";
    uint8_t buf[256];
    uint32_t seed = 12345;
    size_t n, i, pos, c = sizeof(corpus) / sizeof(corpus[0]);
    int round, k, accepted, accepted_any = 0, refused_any = 0;

#define NEXT() (seed = seed * 1103515245u + 12345u, (seed >> 8))
    for (round = 0; round < 300000; round++) {
        i = NEXT() % c;
        n = strlen(corpus[i]);
        memcpy(buf, corpus[i], n);
        for (k = (int)(NEXT() % 3) + 1; k > 0; k--) {
            pos = n ? NEXT() % (n + 1) : 0;
            switch (NEXT() % 3) {
            case 0: /* replace */
                if (pos < n) {
                    buf[pos] = (uint8_t)alphabet[NEXT() % (sizeof(alphabet) - 1)];
                }
                break;
            case 1: /* insert */
                if (n + 1 < sizeof(buf)) {
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = (uint8_t)alphabet[NEXT() % (sizeof(alphabet) - 1)];
                    n++;
                }
                break;
            default: /* delete */
                if (pos < n) {
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    n--;
                }
                break;
            }
        }
        if (!agree(buf, n, &accepted)) {
            ck_abort_msg("reader and jansson disagree on mutation %d: %.*s", round, (int)n, buf);
        }
        accepted_any |= accepted;
        refused_any |= !accepted;
    }
#undef NEXT
    /* the mutations reach both answers */
    ck_assert(accepted_any && refused_any);
}
END_TEST

static Suite *jwt_claims_suite(void)
{
    Suite *s = suite_create("jwt_claims");
    TCase *tc = tcase_create("claims");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_agrees_with_jansson_on_corpus);
    tcase_add_test(tc, test_embedded_nul);
    tcase_add_test(tc, test_reads_claims);
    tcase_add_test(tc, test_refuses_malformed);
    tcase_add_test(tc, test_scratch_too_small);
    tcase_add_test(tc, test_depth_limit);
    tcase_add_test(tc, test_agrees_with_jansson_on_mutations);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jwt_claims_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
