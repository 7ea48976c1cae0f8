/*
 * Unit tests for lib/src/redis_slot.c and lib/src/redis_cluster.c: key slots
 * with Redis's hashtag rules (values checked against Redis's own CLUSTER
 * KEYSLOT), the slot map from a CLUSTER SLOTS reply built by hand, and the
 * MOVED/ASK texts, malformed ones included.
 */
#include <check.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/redis_cluster.h"
#include "minichat/redis_slot.h"

#define S(lit) (lit), (sizeof(lit) - 1)

START_TEST(test_slot_known)
{
    ck_assert_uint_eq(mc_crc16(S("123456789")), 0x31c3); /* the XMODEM check value */
    ck_assert_uint_eq(mc_redis_slot(S("foo")), 12182);
    ck_assert_uint_eq(mc_redis_slot(S("bar")), 5061);
    ck_assert_uint_eq(mc_redis_slot(S("")), 0);
    ck_assert_uint_eq(mc_redis_slot(S("{user1000}.following")), mc_redis_slot(S("{user1000}.followers")));
    ck_assert_uint_eq(mc_redis_slot(S("{user1000}.following")), mc_redis_slot(S("user1000")));
    ck_assert_uint_eq(mc_redis_slot(S("{r:12}:seq")), mc_redis_slot(S("{r:12}:idem:7")));
    ck_assert_uint_eq(mc_redis_slot(S("{r:12}:seq")), mc_redis_slot(S("r:12")));
}
END_TEST

START_TEST(test_slot_hashtag_rules)
{
    /* "{}" hashes the whole key, and so does a '{' with no '}' after it */
    ck_assert_uint_eq(mc_redis_slot(S("foo{}{bar}")), mc_crc16(S("foo{}{bar}")) & 16383);
    ck_assert_uint_eq(mc_redis_slot(S("foo{bar")), mc_crc16(S("foo{bar")) & 16383);
    ck_assert_uint_eq(mc_redis_slot(S("{}")), mc_crc16(S("{}")) & 16383);
    /* the first '{' and the first '}' after it */
    ck_assert_uint_eq(mc_redis_slot(S("foo{{bar}}zap")), mc_redis_slot(S("{bar")));
    ck_assert_uint_eq(mc_redis_slot(S("foo{bar}{zap}")), mc_redis_slot(S("bar")));
    ck_assert_uint_eq(mc_redis_slot(S("}foo{bar}")), mc_redis_slot(S("bar")));
    /* a NUL inside a key is a byte like any other */
    ck_assert_uint_eq(mc_redis_slot("a\0b", 3), mc_crc16("a\0b", 3) & 16383);
}
END_TEST

/* --- hand-built replies ------------------------------------------------- */

static redisReply *r_int(long long v)
{
    redisReply *r = calloc(1, sizeof(redisReply));

    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static redisReply *r_str(const char *s)
{
    redisReply *r = calloc(1, sizeof(redisReply));

    r->type = REDIS_REPLY_STRING;
    r->len = strlen(s);
    r->str = strdup(s);
    return r;
}

static redisReply *r_arr(size_t n, ...)
{
    redisReply *r = calloc(1, sizeof(redisReply));
    va_list ap;
    size_t i;

    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof(redisReply *));
    va_start(ap, n);
    for (i = 0; i < n; i++) {
        r->element[i] = va_arg(ap, redisReply *);
    }
    va_end(ap);
    return r;
}

static void rfree(redisReply *r)
{
    size_t i;

    if (r->type == REDIS_REPLY_ARRAY) {
        for (i = 0; i < r->elements; i++) {
            rfree(r->element[i]);
        }
        free(r->element);
    }
    free(r->str);
    free(r);
}

static redisReply *node(const char *host, int port)
{
    return r_arr(3, r_str(host), r_int(port), r_str("07c37dfeb235213a872192d90877d0cd55635b91"));
}

START_TEST(test_slot_tags_cover_every_slot)
{
    char tag[MC_REDIS_SLOT_TAG_MAX], key[32];
    unsigned slot;
    size_t n;
    int kn;

    for (slot = 0; slot < MC_REDIS_SLOTS; slot++) {
        n = mc_redis_slot_tag(slot, tag);
        ck_assert_uint_gt(n, 1);
        ck_assert_uint_lt(n, MC_REDIS_SLOT_TAG_MAX);
        ck_assert_uint_eq(strlen(tag), n);
        ck_assert_ptr_null(strchr(tag, '{'));
        ck_assert_ptr_null(strchr(tag, '}'));
        /* used as a hashtag, it lands on its slot */
        kn = snprintf(key, sizeof(key), "{%s}:pend", tag);
        ck_assert_uint_eq(mc_redis_slot(key, (size_t)kn), slot);
    }
    /* the same tag every time, and the first numbers first */
    ck_assert_uint_eq(mc_redis_slot_tag(mc_redis_slot("p0", 2), tag), 2);
    ck_assert_str_eq(tag, "p0");
}
END_TEST

START_TEST(test_slotmap_parse)
{
    mc_redis_slotmap_t *m = malloc(sizeof(*m));
    mc_redis_addr_t a;
    redisReply *r;

    /* three masters with a replica each; the first one serves two ranges */
    r = r_arr(4, r_arr(4, r_int(0), r_int(5000), node("127.0.0.1", 17000), node("127.0.0.1", 17004)),
             r_arr(4, r_int(5001), r_int(10922), node("127.0.0.1", 17001), node("127.0.0.1", 17005)),
             r_arr(4, r_int(10923), r_int(16000), node("", 17002), node("127.0.0.1", 17003)),
             r_arr(3, r_int(16001), r_int(16383), node("127.0.0.1", 17000)));
    ck_assert_int_eq(mc_redis_slotmap_parse(m, r, "10.0.0.9"), 0);
    ck_assert_uint_eq(m->nnodes, 3);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 0), 0);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 5000), 0);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 5001), 1);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 10923), 2);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 16383), 0);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 16384), -1);
    ck_assert_str_eq(m->nodes[2].host, "10.0.0.9"); /* "" is the node asked */
    ck_assert_int_eq(m->nodes[2].port, 17002);
    ck_assert_int_eq(mc_redis_addr_parse(S("127.0.0.1:17001"), &a), 0);
    ck_assert_int_eq(mc_redis_slotmap_find(m, &a), 1);
    a.port = 17005;
    ck_assert_int_eq(mc_redis_slotmap_find(m, &a), -1); /* replicas are not in the map */
    mc_redis_slotmap_free(m);
    rfree(r);

    /* a gap: slots nobody serves stay -1 */
    r = r_arr(1, r_arr(3, r_int(100), r_int(200), node("h", 1)));
    ck_assert_int_eq(mc_redis_slotmap_parse(m, r, NULL), 0);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 99), -1);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 150), 0);
    ck_assert_int_eq(mc_redis_slotmap_owner(m, 201), -1);
    mc_redis_slotmap_free(m);
    rfree(r);
    free(m);
}
END_TEST

START_TEST(test_slotmap_malformed)
{
    mc_redis_slotmap_t *m = malloc(sizeof(*m));
    redisReply *bad[9];
    size_t i;

    bad[0] = r_str("ERR This instance has cluster support disabled");
    bad[1] = r_arr(0);                                                             /* no slot */
    bad[2] = r_arr(1, r_arr(2, r_int(0), r_int(16383)));                              /* no master */
    bad[3] = r_arr(1, r_arr(3, r_int(0), r_int(16384), node("h", 1)));                /* past the last slot */
    bad[4] = r_arr(1, r_arr(3, r_int(10), r_int(9), node("h", 1)));                   /* reversed */
    bad[5] = r_arr(1, r_arr(3, r_int(0), r_int(1), node("h", 0)));                    /* port 0 */
    bad[6] = r_arr(1, r_arr(3, r_int(0), r_int(1), r_arr(2, r_int(1), r_int(2))));       /* host not a string */
    bad[7] = r_arr(1, r_arr(3, r_int(0), r_int(1), node("", 7000)));                  /* "" and no default */
    bad[8] = r_arr(2, r_arr(3, r_int(0), r_int(1), node("h", 1)), r_str("junk"));      /* good, then junk */
    for (i = 0; i < 9; i++) {
        ck_assert_msg(mc_redis_slotmap_parse(m, bad[i], NULL) == -1, "case %zu", i);
        ck_assert_uint_eq(m->nnodes, 0);
        ck_assert_ptr_null(m->nodes);
        ck_assert_int_eq(mc_redis_slotmap_owner(m, 0), -1);
        rfree(bad[i]);
    }
    free(m);
}
END_TEST

START_TEST(test_redirect)
{
    mc_redis_redirect_t r;

    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 3999 127.0.0.1:6381"), &r), 0);
    ck_assert_int_eq(r.ask, 0);
    ck_assert_uint_eq(r.slot, 3999);
    ck_assert_str_eq(r.addr.host, "127.0.0.1");
    ck_assert_int_eq(r.addr.port, 6381);
    ck_assert_int_eq(mc_redis_redirect_parse(S("ASK 16383 ::1:7002"), &r), 0);
    ck_assert_int_eq(r.ask, 1);
    ck_assert_uint_eq(r.slot, 16383);
    ck_assert_str_eq(r.addr.host, "::1");
    ck_assert_int_eq(r.addr.port, 7002);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 0 :7000"), &r), 0); /* unknown endpoint */
    ck_assert_str_eq(r.addr.host, "");

    r.slot = 77;
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 16384 h:1"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED -1 h:1"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 1 h"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 1 h:"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 1 h:65536"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 1 h:0"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 1 h:1 extra"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED 1"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED "), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVED  1 h:1"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("MOVEDX 1 h:1"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("ASKING 1 h:1"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("moved 1 h:1"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(S("ERR wrong"), &r), -1);
    ck_assert_int_eq(mc_redis_redirect_parse(NULL, 0, &r), -1);
    ck_assert_uint_eq(r.slot, 77); /* untouched on failure */
}
END_TEST

START_TEST(test_error_class)
{
    ck_assert_int_eq(mc_redis_error_class(S("MOVED 1 h:1")), MC_REDIS_ERR_MOVED);
    ck_assert_int_eq(mc_redis_error_class(S("ASK 1 h:1")), MC_REDIS_ERR_ASK);
    ck_assert_int_eq(mc_redis_error_class(S("TRYAGAIN Multiple keys request during rehashing of slot")),
                     MC_REDIS_ERR_TRYAGAIN);
    ck_assert_int_eq(mc_redis_error_class(S("CLUSTERDOWN The cluster is down")), MC_REDIS_ERR_CLUSTERDOWN);
    ck_assert_int_eq(mc_redis_error_class(S("CLUSTERDOWN Hash slot not served")), MC_REDIS_ERR_CLUSTERDOWN);
    ck_assert_int_eq(mc_redis_error_class(S("LOADING Redis is loading the dataset in memory")), MC_REDIS_ERR_LOADING);
    ck_assert_int_eq(mc_redis_error_class(S("NOSCRIPT No matching script. Please use EVAL.")), MC_REDIS_ERR_NOSCRIPT);
    ck_assert_int_eq(mc_redis_error_class(S("ERR unknown command")), MC_REDIS_ERR_OTHER);
    ck_assert_int_eq(mc_redis_error_class(S("ASKING")), MC_REDIS_ERR_OTHER);
    ck_assert_int_eq(mc_redis_error_class(S("")), MC_REDIS_ERR_OTHER);
    ck_assert_int_eq(mc_redis_error_class(NULL, 0), MC_REDIS_ERR_OTHER);
}
END_TEST

START_TEST(test_addr_parse)
{
    mc_redis_addr_t a;
    char longhost[400];

    ck_assert_int_eq(mc_redis_addr_parse(S("localhost:6379"), &a), 0);
    ck_assert_str_eq(a.host, "localhost");
    ck_assert_int_eq(a.port, 6379);
    memset(longhost, 'h', sizeof(longhost));
    memcpy(longhost + sizeof(longhost) - 5, ":6379", 5);
    ck_assert_int_eq(mc_redis_addr_parse(longhost, sizeof(longhost), &a), -1);
    ck_assert_int_eq(mc_redis_addr_parse(S("6379"), &a), -1);
    ck_assert_int_eq(mc_redis_addr_parse(S("h:+1"), &a), -1);
    ck_assert_int_eq(mc_redis_addr_parse("h\0x:1", 5, &a), -1);
}
END_TEST

static Suite *redis_cluster_suite(void)
{
    Suite *s = suite_create("redis_cluster");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_slot_known);
    tcase_add_test(tc, test_slot_hashtag_rules);
    tcase_add_test(tc, test_slot_tags_cover_every_slot);
    tcase_add_test(tc, test_slotmap_parse);
    tcase_add_test(tc, test_slotmap_malformed);
    tcase_add_test(tc, test_redirect);
    tcase_add_test(tc, test_error_class);
    tcase_add_test(tc, test_addr_parse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(redis_cluster_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
