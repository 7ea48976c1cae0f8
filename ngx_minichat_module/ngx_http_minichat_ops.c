/*
 * The client protocol's dispatcher: one complete text message is one JSON
 * request.  The frame layer (_ws.c) has checked its UTF-8 (a violation
 * closes with 1007); here mc_op_decode() (lib/src/op.c) parses it and
 * checks every field, and the op's handler, looked up in the table below,
 * gets the decoded request; every op answers through its
 * ngx_http_minichat_req_t.
 */
#include "ngx_http_minichat_module.h"


typedef ngx_int_t (*ngx_http_minichat_op_pt)(ngx_http_minichat_req_t *rq, const mc_op_t *op);


/* indexed by mc_op_kind_t */
static ngx_http_minichat_op_pt  ngx_http_minichat_ops[] = {
    [MC_OP_SEND]    = ngx_http_minichat_op_send,
    [MC_OP_READ]    = ngx_http_minichat_op_read,
    [MC_OP_TYPING]  = ngx_http_minichat_op_typing,
    [MC_OP_HISTORY] = ngx_http_minichat_op_history,
    [MC_OP_RESUME]  = ngx_http_minichat_op_resume,
    [MC_OP_ROOMS]   = ngx_http_minichat_op_rooms,
};


ngx_int_t
ngx_http_minichat_ops_message(ngx_http_minichat_ws_t *ws, u_char *data, size_t len)
{
    ngx_http_minichat_req_t   rq;
    ngx_int_t                 rc;
    mc_op_t                   decoded, *op = &decoded;

    /* the strings of the decoded op live until mc_op_free(): a handler
     * copies what it keeps */
    rc = mc_op_decode(op, (const char *) data, len);

    rq.ws = ws;
    rq.id = op->id;
    rq.has_id = op->has_id;

    if (ws->banned && op->kind != MC_OP_NONE) {
        /* the ban event came; the close follows once the queue drains */
        mc_op_free(op);
        ngx_http_minichat_count(banned[NGX_HTTP_MINICHAT_BANNED_REFUSED], 1);
        return ngx_http_minichat_conn_error_num(ws, rq.id, rq.has_id, "banned", "banned", "until", 0);
    }

    if (rc != 0) {
        rc = ngx_http_minichat_req_error(&rq, "bad_request", op->err);
    } else {
        rc = ngx_http_minichat_ops[op->kind](&rq, op);
    }

    mc_op_free(op);

    return ws->closed ? NGX_ERROR : rc;
}
