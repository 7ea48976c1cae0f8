/*
 * Unit tests for lib/src/room_rules.c: kind, title, idempotency key, member
 * lists and the direct room's two members, as the module and the
 * relay-worker both check them.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/room_rules.h"

#define S(lit) (lit), (sizeof(lit) - 1)

START_TEST(test_kind)
{
    ck_assert_ptr_null(mc_room_check_kind("group"));
    ck_assert_ptr_null(mc_room_check_kind("direct"));
    ck_assert_str_eq(mc_room_check_kind("channel"), "\"kind\" must be \"group\" or \"direct\"");
    ck_assert_ptr_nonnull(mc_room_check_kind(""));
    ck_assert_ptr_nonnull(mc_room_check_kind("Group"));
    ck_assert_ptr_nonnull(mc_room_check_kind("groups"));
    ck_assert_ptr_nonnull(mc_room_check_kind(NULL));
}
END_TEST

START_TEST(test_title)
{
    char buf[4 * 200];
    size_t i;

    ck_assert_ptr_null(mc_room_check_title(S("")));
    ck_assert_ptr_null(mc_room_check_title(S("general")));
    ck_assert_str_eq(mc_room_check_title(NULL, 0), "\"title\" must be a string of at most 191 characters");
    ck_assert_str_eq(mc_room_check_title(S("a\0b")), "\"title\" must not contain NUL");
    ck_assert_str_eq(mc_room_check_title(S("\xc0\xaf")), "\"title\" must be valid UTF-8");
    ck_assert_ptr_nonnull(mc_room_check_title(S("\xe4\xb8")));  /* truncated */
    ck_assert_ptr_nonnull(mc_room_check_title(S("\xed\xa0\x80"))); /* surrogate */

    /* characters, not bytes: 191 three-byte characters pass, 192 do not */
    for (i = 0; i < 192; i++) {
        memcpy(buf + 3 * i, "\xea\xb0\x80", 3); /* U+AC00 */
    }
    ck_assert_ptr_null(mc_room_check_title(buf, 3 * 191));
    ck_assert_str_eq(mc_room_check_title(buf, 3 * 192), "\"title\" must be a string of at most 191 characters");
    /* four-byte characters at the limit */
    for (i = 0; i < 192; i++) {
        memcpy(buf + 4 * i, "\xf0\x9f\x98\x80", 4);
    }
    ck_assert_ptr_null(mc_room_check_title(buf, 4 * 191));
    ck_assert_ptr_nonnull(mc_room_check_title(buf, 4 * 192));
    memset(buf, 'a', 192);
    ck_assert_ptr_null(mc_room_check_title(buf, 191));
    ck_assert_ptr_nonnull(mc_room_check_title(buf, 192));
}
END_TEST

START_TEST(test_idem_key)
{
    char key[66];
    const char *err = "the idempotency key must be 1 to 64 printable ASCII characters";

    ck_assert_ptr_null(mc_room_check_idem_key(S("k")));
    ck_assert_ptr_null(mc_room_check_idem_key(S("!~abc-123_XYZ")));
    ck_assert_str_eq(mc_room_check_idem_key(S("")), err);
    ck_assert_str_eq(mc_room_check_idem_key(NULL, 0), err);
    ck_assert_str_eq(mc_room_check_idem_key(NULL, 3), err);
    ck_assert_str_eq(mc_room_check_idem_key(S("a b")), err);     /* 0x20 */
    ck_assert_str_eq(mc_room_check_idem_key(S("a\x7f")), err);   /* DEL */
    ck_assert_str_eq(mc_room_check_idem_key(S("a\tb")), err);
    ck_assert_str_eq(mc_room_check_idem_key(S("\xc3\xa9")), err); /* not ASCII */
    ck_assert_str_eq(mc_room_check_idem_key(S("a\0b")), err);
    memset(key, 'k', sizeof(key));
    ck_assert_ptr_null(mc_room_check_idem_key(key, 64));
    ck_assert_str_eq(mc_room_check_idem_key(key, 65), err);
}
END_TEST

START_TEST(test_members)
{
    uint64_t ids[] = {7, 3, 7, 5, 3, 3};
    uint64_t zero[] = {4, 0, 9};
    uint64_t one[] = {42};
    size_t n;

    n = 6;
    ck_assert_ptr_null(mc_room_members(ids, &n, 6));
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(ids[0], 3);
    ck_assert_uint_eq(ids[1], 5);
    ck_assert_uint_eq(ids[2], 7);

    n = 3;
    ck_assert_str_eq(mc_room_members(zero, &n, 10), "\"members\" must hold positive integer user ids");

    /* the bound applies to the list as given, duplicates included */
    n = 6;
    ck_assert_str_eq(mc_room_members((uint64_t[]){1, 1, 1, 1, 1, 1}, &n, 5), "too many members");
    ck_assert_uint_eq(n, 6);

    n = 0;
    ck_assert_ptr_null(mc_room_members(NULL, &n, 10));
    ck_assert_uint_eq(n, 0);
    n = 1;
    ck_assert_ptr_null(mc_room_members(one, &n, 1));
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(one[0], 42);

    n = 2;
    ck_assert_ptr_null(mc_room_members((uint64_t[]){UINT64_MAX, 1}, &n, 2));
    ck_assert_uint_eq(n, 2);
}
END_TEST

START_TEST(test_count)
{
    ck_assert_ptr_null(mc_room_check_count("direct", 2));
    ck_assert_str_eq(mc_room_check_count("direct", 1), "a direct room has exactly two members");
    ck_assert_ptr_nonnull(mc_room_check_count("direct", 3));
    ck_assert_ptr_null(mc_room_check_count("group", 1));
    ck_assert_ptr_null(mc_room_check_count("group", 10000));
}
END_TEST

START_TEST(test_uniq)
{
    uint64_t ids[1000];
    size_t i;

    for (i = 0; i < 1000; i++) {
        ids[i] = (uint64_t)(999 - i) % 100 + 1;
    }
    ck_assert_uint_eq(mc_room_ids_uniq(ids, 1000), 100);
    for (i = 0; i < 100; i++) {
        ck_assert_uint_eq(ids[i], i + 1);
    }
    ck_assert_uint_eq(mc_room_ids_uniq(NULL, 0), 0);
}
END_TEST

static Suite *room_rules_suite(void)
{
    Suite *s = suite_create("room_rules");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_kind);
    tcase_add_test(tc, test_title);
    tcase_add_test(tc, test_idem_key);
    tcase_add_test(tc, test_members);
    tcase_add_test(tc, test_count);
    tcase_add_test(tc, test_uniq);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(room_rules_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
