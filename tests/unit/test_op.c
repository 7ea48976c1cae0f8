/*
 * Unit tests for lib/src/op.c: the client requests of docs/protocol.md
 * decoded into mc_op_t, every field's bounds, and the refusals in the words
 * the client sees.  Each test frees what it decoded, so ASan's leak check
 * covers mc_op_free().
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "minichat/op.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static mc_op_t op;

/* Decodes lit and returns mc_op_decode()'s result. */
#define decode(lit) mc_op_decode(&op, S(lit))

static void teardown(void)
{
    mc_op_free(&op);
}

START_TEST(test_send)
{
    ck_assert_int_eq(decode("{\"op\":\"send\",\"id\":7,\"room\":12,\"cid\":\"c-1\",\"body\":\"hi \\u00e9\"}"), 0);
    ck_assert_int_eq(op.kind, MC_OP_SEND);
    ck_assert_int_eq(op.has_id, 1);
    ck_assert_int_eq(op.id, 7);
    ck_assert_uint_eq(op.room, 12);
    ck_assert_uint_eq(op.cid_len, 3);
    ck_assert_mem_eq(op.cid, "c-1", 3);
    ck_assert_uint_eq(op.body_len, 5);
    ck_assert_mem_eq(op.body, "hi \xc3\xa9", 5);
}
END_TEST

START_TEST(test_send_refusals)
{
    ck_assert_int_eq(decode("{\"op\":\"send\",\"room\":0,\"cid\":\"c\",\"body\":\"b\"}"), -1);
    ck_assert_str_eq(op.err, "\"room\" must be a positive integer");
    ck_assert_int_eq(op.kind, MC_OP_SEND);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"send\",\"room\":\"12\",\"cid\":\"c\",\"body\":\"b\"}"), -1);
    ck_assert_str_eq(op.err, "\"room\" must be a positive integer");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"send\",\"room\":1,\"cid\":\"\",\"body\":\"b\"}"), -1);
    ck_assert_str_eq(op.err, "\"cid\" must be a string of 1 to 64 bytes");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"send\",\"room\":1,\"cid\":"
                            "\"0123456789012345678901234567890123456789012345678901234567890123\",\"body\":\"b\"}"),
                     0);
    ck_assert_uint_eq(op.cid_len, 64);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"send\",\"room\":1,\"cid\":"
                            "\"01234567890123456789012345678901234567890123456789012345678901234\",\"body\":\"b\"}"),
                     -1);
    ck_assert_str_eq(op.err, "\"cid\" must be a string of 1 to 64 bytes");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"send\",\"room\":1,\"cid\":\"c\",\"body\":\"\"}"), -1);
    ck_assert_str_eq(op.err, "\"body\" must be a non-empty string");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"send\",\"room\":1,\"cid\":\"c\",\"body\":[\"b\"]}"), -1);
    ck_assert_str_eq(op.err, "\"body\" must be a non-empty string");
    mc_op_free(&op);
    /* jansson refuses \u0000 itself: the message is its own */
    ck_assert_int_eq(decode("{\"op\":\"send\",\"room\":1,\"cid\":\"c\",\"body\":\"a\\u0000\"}"), -1);
    ck_assert_int_eq(op.kind, MC_OP_NONE);
    ck_assert_ptr_nonnull(strstr(op.err, "\\u0000"));
}
END_TEST

START_TEST(test_envelope)
{
    ck_assert_int_eq(decode("[1]"), -1);
    ck_assert_str_eq(op.err, "a request is a JSON object");
    ck_assert_int_eq(op.kind, MC_OP_NONE);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"typing\",\"id\":1.5,\"room\":1}"), -1);
    ck_assert_str_eq(op.err, "\"id\" must be an integer");
    ck_assert_int_eq(op.has_id, 0);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"id\":-3,\"op\":5}"), -1);
    ck_assert_str_eq(op.err, "\"op\" must be a string");
    ck_assert_int_eq(op.has_id, 1);
    ck_assert_int_eq(op.id, -3);
    ck_assert_int_eq(op.kind, MC_OP_NONE);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"sendx\",\"id\":2}"), -1);
    ck_assert_str_eq(op.err, "unknown op");
    ck_assert_int_eq(op.kind, MC_OP_UNKNOWN);
    ck_assert_int_eq(op.id, 2);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"read\",\"op\":\"send\"}"), -1);
    ck_assert_int_eq(op.kind, MC_OP_NONE);
    ck_assert_ptr_nonnull(strstr(op.err, "duplicate"));
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"typing\",\"room\":1} x"), -1);
    ck_assert_int_eq(op.kind, MC_OP_NONE);
    mc_op_free(&op);
    ck_assert_int_eq(mc_op_decode(&op, "", 0), -1);
    ck_assert_int_eq(op.kind, MC_OP_NONE);
    mc_op_free(&op);
    /* the largest id jansson reads, and one past it */
    ck_assert_int_eq(decode("{\"op\":\"typing\",\"id\":9223372036854775807,\"room\":9223372036854775807}"), 0);
    ck_assert_int_eq(op.id, INT64_MAX);
    ck_assert_uint_eq(op.room, INT64_MAX);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"typing\",\"room\":9223372036854775808}"), -1);
    ck_assert_int_eq(op.kind, MC_OP_NONE);
}
END_TEST

START_TEST(test_read_typing)
{
    ck_assert_int_eq(decode("{\"op\":\"read\",\"room\":3,\"seq\":0}"), 0);
    ck_assert_int_eq(op.kind, MC_OP_READ);
    ck_assert_int_eq(op.has_id, 0);
    ck_assert_uint_eq(op.room, 3);
    ck_assert_uint_eq(op.seq, 0);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"read\",\"room\":3,\"seq\":-1}"), -1);
    ck_assert_str_eq(op.err, "\"seq\" must be a non-negative integer");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"read\",\"room\":3}"), -1);
    ck_assert_str_eq(op.err, "\"seq\" must be a non-negative integer");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"typing\",\"room\":4}"), 0);
    ck_assert_int_eq(op.kind, MC_OP_TYPING);
    ck_assert_uint_eq(op.room, 4);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"typing\",\"room\":true}"), -1);
    ck_assert_str_eq(op.err, "\"room\" must be a positive integer");
}
END_TEST

START_TEST(test_history_rooms)
{
    ck_assert_int_eq(decode("{\"op\":\"history\",\"room\":3}"), 0);
    ck_assert_uint_eq(op.before, 0);
    ck_assert_uint_eq(op.limit, 0);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"history\",\"room\":3,\"before\":null,\"limit\":200}"), 0);
    ck_assert_uint_eq(op.limit, 200);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"history\",\"room\":3,\"before\":101,\"limit\":201}"), -1);
    ck_assert_str_eq(op.err, "\"limit\" must be an integer from 1 to 200");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"history\",\"room\":3,\"before\":0}"), -1);
    ck_assert_str_eq(op.err, "\"before\" must be a positive integer");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"rooms\",\"limit\":100,\"cursor\":\"abc\"}"), 0);
    ck_assert_int_eq(op.kind, MC_OP_ROOMS);
    ck_assert_uint_eq(op.limit, 100);
    ck_assert_str_eq(op.cursor, "abc");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"rooms\"}"), 0);
    ck_assert_ptr_null(op.cursor);
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"rooms\",\"limit\":0}"), -1);
    ck_assert_str_eq(op.err, "\"limit\" must be an integer from 1 to 100");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"rooms\",\"cursor\":7}"), -1);
    ck_assert_str_eq(op.err, "\"cursor\" must be a string from a rooms reply");
}
END_TEST

START_TEST(test_resume)
{
    char buf[4096];
    size_t n;
    int i;

    ck_assert_int_eq(decode("{\"op\":\"resume\",\"rooms\":{\"12\":100,\"13\":{\"seq\":4,\"epoch\":\"ab\"}}}"), 0);
    ck_assert_int_eq(op.kind, MC_OP_RESUME);
    ck_assert_uint_eq(op.nrooms, 2);
    ck_assert_uint_eq(op.rooms[0].room, 12);
    ck_assert_uint_eq(op.rooms[0].seq, 100);
    ck_assert_str_eq(op.rooms[0].epoch, "");
    ck_assert_uint_eq(op.rooms[1].room, 13);
    ck_assert_uint_eq(op.rooms[1].seq, 4);
    ck_assert_str_eq(op.rooms[1].epoch, "ab");
    mc_op_free(&op);

    ck_assert_int_eq(decode("{\"op\":\"resume\",\"rooms\":{}}"), -1);
    ck_assert_str_eq(op.err, "\"rooms\" must be an object of 1 to 100 rooms: {\"<room>\": <seq>}");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"resume\",\"rooms\":{\"0\":1}}"), -1);
    ck_assert_str_eq(op.err, "room keys must be positive integers");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"resume\",\"rooms\":{\"9223372036854775808\":1}}"), -1);
    ck_assert_str_eq(op.err, "room keys must be positive integers");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"resume\",\"rooms\":{\"-1\":1}}"), -1);
    ck_assert_str_eq(op.err, "room keys must be positive integers");
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"resume\",\"rooms\":{\"1\":{\"seq\":1,\"epoch\":\"01234567890123456\"}}}"), -1);
    ck_assert_ptr_nonnull(strstr(op.err, "each room needs a seq"));
    mc_op_free(&op);
    ck_assert_int_eq(decode("{\"op\":\"resume\",\"rooms\":{\"1\":{\"epoch\":\"a\"}}}"), -1);
    ck_assert_ptr_nonnull(strstr(op.err, "each room needs a seq"));
    mc_op_free(&op);

    /* 100 rooms fit, 101 do not */
    for (i = 100; i <= 101; i++) {
        int k;

        n = (size_t)snprintf(buf, sizeof(buf), "{\"op\":\"resume\",\"rooms\":{");
        for (k = 1; k <= i; k++) {
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s\"%d\":%d", k > 1 ? "," : "", k, k);
        }
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "}}");
        ck_assert_int_eq(mc_op_decode(&op, buf, n), i == 100 ? 0 : -1);
        if (i == 100) {
            ck_assert_uint_eq(op.nrooms, 100);
        }
        mc_op_free(&op);
    }
}
END_TEST

static Suite *op_suite(void)
{
    Suite *s = suite_create("op");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_send);
    tcase_add_test(tc, test_send_refusals);
    tcase_add_test(tc, test_envelope);
    tcase_add_test(tc, test_read_typing);
    tcase_add_test(tc, test_history_rooms);
    tcase_add_test(tc, test_resume);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(op_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
