/*
 * Authentication: the HS256 JWT of a WebSocket upgrade or a REST request,
 * from `Authorization: Bearer`, else `?token=` (an upgrade may also offer
 * it as a subprotocol entry: _ws.c finds it there and verifies it here).
 * Its `sub` is the user id.
 *
 * Each worker prepares the secret once (ngx_http_minichat_auth_init, from
 * init_process): every request then verifies against that key, which also
 * remembers the header its tokens share (lib/src/jwt.c).
 */
#include "ngx_http_minichat_module.h"
#include "minichat/jwt.h"


static mc_jwt_key_t  *ngx_http_minichat_jwt_key;


ngx_int_t
ngx_http_minichat_auth_init(ngx_cycle_t *cycle)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();

    ngx_http_minichat_jwt_key = mc_jwt_key_new(mcf->jwt_secret.data, mcf->jwt_secret.len);
    if (ngx_http_minichat_jwt_key == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "minichat: cannot prepare the JWT secret");
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_minichat_auth_exit(void)
{
    mc_jwt_key_free(ngx_http_minichat_jwt_key);
    ngx_http_minichat_jwt_key = NULL;
}


/* Finds the JWT (Authorization: Bearer, else ?token=) and verifies it. */
ngx_int_t
ngx_http_minichat_authenticate(ngx_http_request_t *r, ngx_str_t *token, uint64_t *user, const char **err)
{
    ngx_table_elt_t  *h;

    token->len = 0;

    h = r->headers_in.authorization;
    if (h && h->value.len > 7 && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0) {
        token->data = h->value.data + 7;
        token->len = h->value.len - 7;

    } else if (ngx_http_arg(r, (u_char *) "token", 5, token) != NGX_OK) {
        token->len = 0;
    }

    if (token->len == 0) {
        *err = "missing token";
        return NGX_DECLINED;
    }

    return ngx_http_minichat_verify_token(token, user, err);
}


/* Verifies a JWT; its `sub` goes to *user. */
ngx_int_t
ngx_http_minichat_verify_token(ngx_str_t *token, uint64_t *user, const char **err)
{
    mc_jwt_claims_t  claims;

    if (mc_jwt_verify(ngx_http_minichat_jwt_key, (const char *) token->data, token->len, (int64_t) ngx_time(),
                      &claims, err) != 0)
    {
        return NGX_DECLINED;
    }

    if (claims.sub > (uint64_t) INT64_MAX) {
        /* ids are JSON integers, which stop at 2^63 - 1 */
        *err = "user id above 2^63 - 1";
        return NGX_DECLINED;
    }

    *user = claims.sub;

    return NGX_OK;
}
