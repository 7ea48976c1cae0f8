/*
 * Authentication: the HS256 JWT of a WebSocket upgrade or a REST request,
 * from `Authorization: Bearer`, else `?token=` (an upgrade may also offer
 * it as a subprotocol entry: _ws.c finds it there and verifies it here).
 * Its `sub` is the user id; `exp` is required, and `iss` and `aud` must match
 * minichat_jwt_issuer and minichat_jwt_audience when those are set.
 *
 * Each worker prepares the secret once (ngx_http_minichat_auth_init, from
 * init_process): every request then verifies against that key, which also
 * remembers the header its tokens share and the claims it expects
 * (lib/src/jwt.c).
 *
 * A token in `?token=` is part of the request line, which nginx writes to
 * the access log ($request, $request_uri, $args) and to every error log
 * line about the request.  Before anything is logged by this module, the
 * token is copied to the request's pool and its bytes in the request line,
 * the unparsed URI and the arguments are overwritten with '*' (they usually
 * share one buffer; each is checked in case another module made a copy).
 * Logging reads those same fields afterwards, so the access log line and
 * the error log lines of the request, and of the WebSocket connection it
 * becomes, show `token=****...`.  Lines nginx writes before the location
 * handler runs (a malformed request, a rewrite's log) cannot be covered
 * here; the default log formats have none for a well-formed upgrade.
 */
#include "ngx_http_minichat_module.h"
#include "minichat/jwt.h"


static void ngx_http_minichat_auth_hide(ngx_str_t *s, ngx_str_t *token);


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

    if (mc_jwt_key_expect(ngx_http_minichat_jwt_key,
                          mcf->jwt_issuer.len ? (const char *) mcf->jwt_issuer.data : NULL,
                          mcf->jwt_audience.len ? (const char *) mcf->jwt_audience.data : NULL) != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "minichat: cannot prepare the JWT claims");
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


/* Finds the JWT (Authorization: Bearer, else ?token=) and verifies it.  A
 * ?token= is hidden from the logs whether or not it is used. */
ngx_int_t
ngx_http_minichat_authenticate(ngx_http_request_t *r, ngx_str_t *token, uint64_t *user, time_t *exp,
    const char **err)
{
    ngx_table_elt_t  *h;
    ngx_str_t         arg;

    token->len = 0;

    if (ngx_http_minichat_auth_arg_token(r, &arg) != NGX_OK) {
        *err = "out of memory";
        return NGX_ERROR;
    }

    h = r->headers_in.authorization;
    if (h && h->value.len > 7 && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0) {
        token->data = h->value.data + 7;
        token->len = h->value.len - 7;

    } else {
        *token = arg;
    }

    if (token->len == 0) {
        *err = "missing token";
        return NGX_DECLINED;
    }

    return ngx_http_minichat_verify_token(token, user, exp, err);
}


/* Sets *token to a copy of the ?token= argument (len 0: none) and hides
 * the argument's bytes in what nginx logs.  NGX_ERROR: out of memory. */
ngx_int_t
ngx_http_minichat_auth_arg_token(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_str_t  value;

    token->len = 0;

    if (ngx_http_arg(r, (u_char *) "token", 5, &value) != NGX_OK || value.len == 0) {
        return NGX_OK;
    }

    token->data = ngx_pnalloc(r->pool, value.len);
    if (token->data == NULL) {
        return NGX_ERROR;
    }
    ngx_memcpy(token->data, value.data, value.len);
    token->len = value.len;

    ngx_http_minichat_auth_hide(&r->request_line, token);
    ngx_http_minichat_auth_hide(&r->unparsed_uri, token);
    ngx_http_minichat_auth_hide(&r->args, token);

    return NGX_OK;
}


/* Overwrites every occurrence of token in s with '*'. */
static void
ngx_http_minichat_auth_hide(ngx_str_t *s, ngx_str_t *token)
{
    u_char  *p, *last;

    if (s->data == NULL || s->len < token->len) {
        return;
    }

    last = s->data + s->len - token->len;

    for (p = s->data; p <= last; p++) {
        if (*p == token->data[0] && ngx_memcmp(p, token->data, token->len) == 0) {
            ngx_memset(p, '*', token->len);
            p += token->len - 1;
        }
    }
}


/* Verifies a JWT; its `sub` goes to *user and its `exp` to *exp. */
ngx_int_t
ngx_http_minichat_verify_token(ngx_str_t *token, uint64_t *user, time_t *exp, const char **err)
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
    *exp = (time_t) claims.exp;

    return NGX_OK;
}
