/*
 * Unit tests for which worker a chat message goes to
 * (relay-worker/worker_users.c, compiled in with msg_pack.c): a set that
 * was never announced wants everything; an announced one wants a message
 * when it holds one of its recipients, read from the packed list at the
 * end of msg_pack()'s bytes (packed or not, cut short or not); full, add,
 * del and all change the set as the worker says.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

relay_conf_t relay_conf;

/* A message of room 12 to the given recipients, packed as the relay-worker
 * packs it for its workers. */
static link_msg_t pack(uint64_t *rcpt, size_t n, uint8_t **buf)
{
    Minichat__ChatMessage m = MINICHAT__CHAT_MESSAGE__INIT;
    link_msg_t lm;

    m.room = 12;
    m.seq = 7;
    m.sender = 42;
    m.body = "hi";
    m.members_ver = 3;
    m.recipients = rcpt;
    m.n_recipients = n;
    memset(&lm, 0, sizeof(lm));
    *buf = msg_pack(&m, &lm.len, &lm.rcpt_off);
    ck_assert_ptr_nonnull(*buf);
    lm.msg = *buf;
    lm.room = 12;
    lm.ver = 3;
    lm.n_rcpt = n;
    return lm;
}

static void apply(link_users_t *u, int full, uint64_t *add, size_t n_add, uint64_t *del, size_t n_del, int all)
{
    Minichat__UserSet us = MINICHAT__USER_SET__INIT;

    us.full = full;
    us.add = add;
    us.n_add = n_add;
    us.del = del;
    us.n_del = n_del;
    us.all = all;
    ck_assert_int_eq(link_users_apply(u, &us), 0);
}

START_TEST(test_never_announced_wants_all)
{
    link_users_t u;
    uint64_t r[] = {42, 43};
    uint8_t *buf;
    link_msg_t m = pack(r, 2, &buf);

    memset(&u, 0, sizeof(u));
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    /* changes before any full set are ignored: still everything */
    apply(&u, 0, (uint64_t[]){99}, 1, NULL, 0, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    free(buf);
    link_users_free(&u);
}
END_TEST

START_TEST(test_set_decides)
{
    link_users_t u;
    uint64_t r[] = {42, 300, 1ULL << 62}; /* one, two and nine-byte varints */
    uint8_t *buf, *none_buf;
    link_msg_t m = pack(r, 3, &buf), none = pack(NULL, 0, &none_buf);

    memset(&u, 0, sizeof(u));
    apply(&u, 1, NULL, 0, NULL, 0, 0); /* an empty set */
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 0);
    ck_assert_int_eq(link_users_wants(&u, &none, 5), 0);

    apply(&u, 0, (uint64_t[]){7, 1ULL << 62}, 2, NULL, 0, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);   /* the last recipient */
    apply(&u, 0, NULL, 0, (uint64_t[]){1ULL << 62}, 1, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 0);
    apply(&u, 0, (uint64_t[]){300}, 1, NULL, 0, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);

    /* a full set replaces the old one */
    apply(&u, 1, (uint64_t[]){7}, 1, NULL, 0, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 0);
    apply(&u, 1, (uint64_t[]){42}, 1, NULL, 0, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);

    /* all: everything, and changes ignored until the next full set */
    apply(&u, 1, NULL, 0, NULL, 0, 0);
    apply(&u, 0, NULL, 0, NULL, 0, 1);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    ck_assert_int_eq(link_users_wants(&u, &none, 5), 1);
    apply(&u, 0, NULL, 0, (uint64_t[]){42}, 1, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    free(buf);
    free(none_buf);
    link_users_free(&u);
}
END_TEST

/* A message its sender's only connection on a worker published: that
 * worker gets it only for its other recipients; other workers as before. */
START_TEST(test_sender_alone_on_its_worker)
{
    link_users_t u;
    uint64_t r[] = {42, 300};
    uint8_t *buf, *one_buf;
    link_msg_t m = pack(r, 2, &buf), one = pack((uint64_t[]){42}, 1, &one_buf);

    memset(&u, 0, sizeof(u));
    apply(&u, 1, (uint64_t[]){42}, 1, NULL, 0, 0); /* the worker holds the sender only */
    m.alone_link = 5;
    m.alone_user = 42;
    one.alone_link = 5;
    one.alone_user = 42;
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 0);   /* its origin: the sender has the ack */
    ck_assert_int_eq(link_users_wants(&u, &one, 5), 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 6), 1);   /* another worker with the sender: another device */
    apply(&u, 0, (uint64_t[]){300}, 1, NULL, 0, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);   /* another recipient there */
    m.alone_link = 0;
    apply(&u, 1, (uint64_t[]){42}, 1, NULL, 0, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);   /* not alone: as before */
    free(buf);
    free(one_buf);
    link_users_free(&u);
}
END_TEST

/* The list unpacked (one field per id), and tails that are not what
 * msg_pack() writes: never a read past the end, and the worker gets the
 * message (it judges it). */
START_TEST(test_odd_tails)
{
    static const uint8_t unpacked[] = {0x08, 0x0c, 0x38, 0x2a, 0x38, 0xac, 0x02}; /* room 12; 42, 300 */
    static const uint8_t cut_varint[] = {0x08, 0x0c, 0x3a, 0x02, 0x2a, 0xac};      /* 300 cut short */
    static const uint8_t long_len[] = {0x08, 0x0c, 0x3a, 0x7f, 0x2a};             /* length past the end */
    static const uint8_t other[] = {0x08, 0x0c, 0x10, 0x07};                      /* not field 7 */
    static const uint8_t endless[] = {0x08, 0x0c, 0x38, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0x01};
    link_users_t u;
    link_msg_t m;

    memset(&u, 0, sizeof(u));
    memset(&m, 0, sizeof(m));
    apply(&u, 1, (uint64_t[]){300}, 1, NULL, 0, 0);
    m.rcpt_off = 2;

    m.msg = unpacked;
    m.len = sizeof(unpacked);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    apply(&u, 1, (uint64_t[]){43}, 1, NULL, 0, 0);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 0);

    m.msg = cut_varint;
    m.len = sizeof(cut_varint);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    m.msg = long_len;
    m.len = sizeof(long_len);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    m.msg = other;
    m.len = sizeof(other);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    m.msg = endless;
    m.len = sizeof(endless);
    ck_assert_int_eq(link_users_wants(&u, &m, 5), 1);
    link_users_free(&u);
}
END_TEST

static Suite *worker_users_suite(void)
{
    Suite *s = suite_create("worker_users");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_never_announced_wants_all);
    tcase_add_test(tc, test_set_decides);
    tcase_add_test(tc, test_odd_tails);
    tcase_add_test(tc, test_sender_alone_on_its_worker);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(worker_users_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
