/*
 * The client protocol's dispatcher: one complete text message is one JSON
 * request.  The frame layer (_ws.c) has checked its UTF-8 (a violation
 * closes with 1007); here it is parsed,
 * its optional integer "id" taken, and its "op" looked up in the table
 * below; every op answers through its ngx_http_minichat_req_t.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/ws.h"


typedef ngx_int_t (*ngx_http_minichat_op_pt)(ngx_http_minichat_req_t *rq, json_t *req);

typedef struct {
    const char               *name;
    ngx_http_minichat_op_pt   handler;
} ngx_http_minichat_op_t;


static ngx_http_minichat_op_t  ngx_http_minichat_ops[] = {
    { "send",    ngx_http_minichat_op_send },
    { "read",    ngx_http_minichat_op_read },
    { "typing",  ngx_http_minichat_op_typing },
    { "history", ngx_http_minichat_op_history },
    { "resume",  ngx_http_minichat_op_resume },
    { "rooms",   ngx_http_minichat_op_rooms },
    { NULL, NULL }
};


ngx_int_t
ngx_http_minichat_ops_message(ngx_http_minichat_ws_t *ws, u_char *data, size_t len)
{
    ngx_http_minichat_req_t   rq;
    ngx_http_minichat_op_t   *op;
    json_t                   *req, *v;
    json_error_t              jerr;
    const char               *name;
    ngx_int_t                 rc;

    rq.ws = ws;
    rq.id = 0;
    rq.has_id = 0;

    req = json_loadb((const char *) data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL) {
        /* jansson's own words, such as "\u0000 is not allowed" */
        return ngx_http_minichat_req_error(&rq, "bad_request", jerr.text);
    }
    if (!json_is_object(req)) {
        json_decref(req);
        return ngx_http_minichat_req_error(&rq, "bad_request", "a request is a JSON object");
    }

    v = json_object_get(req, "id");
    if (v) {
        if (!json_is_integer(v)) {
            json_decref(req);
            return ngx_http_minichat_req_error(&rq, "bad_request", "\"id\" must be an integer");
        }
        rq.id = json_integer_value(v);
        rq.has_id = 1;
    }

    name = json_string_value(json_object_get(req, "op"));
    if (name == NULL) {
        json_decref(req);
        return ngx_http_minichat_req_error(&rq, "bad_request", "\"op\" must be a string");
    }

    if (ws->banned) {
        /* the ban event came; the close follows once the queue drains */
        json_decref(req);
        return ngx_http_minichat_conn_error_num(ws, rq.id, rq.has_id, "banned", "banned", "until", 0);
    }

    for (op = ngx_http_minichat_ops; op->name; op++) {
        if (ngx_strcmp(op->name, name) == 0) {
            break;
        }
    }

    if (op->name == NULL) {
        rc = ngx_http_minichat_req_error(&rq, "bad_request", "unknown op");
    } else {
        rc = op->handler(&rq, req);
    }

    json_decref(req);

    return ws->closed ? NGX_ERROR : rc;
}
