/*
 * The offline-push event's JSON (docs/push.md).  Ids are written as
 * decimal strings: a JSON number read by a JavaScript gateway is a double,
 * and a user or room id past 2^53 would silently become another one.  seq
 * and ts are numbers (a seq past 2^53 is not reachable; ts is milliseconds).
 * The object is built with jansson and dumped compact; jansson refuses a
 * string that is not valid UTF-8, which the batch's rows never hold.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "minichat/push_event.h"
#include "minichat/utf8.h"

/* Sets key to the decimal string of v.  Returns 0 or -1. */
static int push_set_id(json_t *o, const char *key, uint64_t v)
{
    char s[24];

    snprintf(s, sizeof(s), "%" PRIu64, v);
    return json_object_set_new(o, key, json_string(s));
}

int mc_push_event_json(uint64_t user, const mc_msgrow_t *row, mc_buf_t *out)
{
    json_t *o;
    char *s = NULL;
    size_t plen;
    int rc = -1;

    mc_buf_reset(out);
    o = json_object();
    if (o == NULL) {
        return -1;
    }
    plen = mc_utf8_prefix(row->body != NULL ? row->body : "", row->body_len, MC_PUSH_PREVIEW_CHARS);
    if (json_object_set_new(o, "v", json_integer(MC_PUSH_EVENT_VERSION)) != 0
        || json_object_set_new(o, "type", json_string("message")) != 0
        || push_set_id(o, "user", user) != 0
        || push_set_id(o, "room", row->room) != 0
        || json_object_set_new(o, "seq", json_integer((json_int_t)row->seq)) != 0
        || push_set_id(o, "sender", row->sender) != 0
        || json_object_set_new(o, "ts", json_integer((json_int_t)row->ts)) != 0
        || json_object_set_new(o, "preview", json_stringn(row->body != NULL ? row->body : "", plen)) != 0
        || json_object_set_new(o, "truncated", json_boolean(plen < row->body_len)) != 0)
    {
        goto done;
    }
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s == NULL) {
        goto done;
    }
    rc = mc_buf_append_str(out, s);

done:
    free(s);
    json_decref(o);
    if (rc != 0) {
        mc_buf_reset(out);
    }
    return rc;
}
