/*
 * TLS to Redis: the client context built once from the minichat_redis_tls*
 * directives, and what each new connection to a Redis node does with it.
 * The transport itself is nginx's (ngx_ssl_create_connection,
 * ngx_ssl_handshake, c->recv/c->send), driven by
 * ngx_http_minichat_redis_node.c.
 *
 * Verification follows proxy_ssl_verify: the handshake always completes
 * (nginx's verify callback lets it), and the result is looked at after it,
 * so a refused certificate is logged with the reason OpenSSL gives
 * ("unable to get local issuer certificate", a name that does not match)
 * at ERR, instead of an alert from the middle of the handshake.  The name
 * is checked only when minichat_redis_tls_name gives one: Redis nodes are
 * addressed by IP, and a cluster announces its nodes by IP too.
 *
 * Redis 7 with tls-port and `port 0` listens for TLS only; a cluster with
 * tls-cluster yes announces its TLS ports in CLUSTER SLOTS and MOVED, so
 * every node the module learns of is reached with the same context.
 */
#include "ngx_http_minichat_module.h"
#include "ngx_http_minichat_redis.h"

#if !(NGX_SSL)
#error "the MiniChat module needs nginx built with SSL (--with-http_ssl_module)"
#endif


#define NGX_HTTP_MINICHAT_REDIS_TLS_DEPTH  5


/* Builds mcf->redis_ssl from the directives when minichat_redis_tls is on
 * (called from the main conf's merge, where the defaults are set). */
char *
ngx_http_minichat_redis_tls_merge(ngx_conf_t *cf, ngx_http_minichat_main_conf_t *mcf)
{
    ngx_pool_cleanup_t  *cln;
    ngx_ssl_t           *ssl;

    ngx_conf_init_value(mcf->redis_tls, 0);
    ngx_conf_init_value(mcf->redis_tls_verify, 1);

    if (!mcf->redis_tls) {
        return NGX_CONF_OK;
    }

    if (mcf->redis_tls_verify && mcf->redis_tls_ca_file.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"minichat_redis_tls_verify\" needs \"minichat_redis_tls_ca_file\" "
                           "(or \"minichat_redis_tls_verify off\")");
        return NGX_CONF_ERROR;
    }

    if ((mcf->redis_tls_certificate.len == 0) != (mcf->redis_tls_certificate_key.len == 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"minichat_redis_tls_certificate\" and \"minichat_redis_tls_certificate_key\" "
                           "go together");
        return NGX_CONF_ERROR;
    }

    if (mcf->redis_tls_name.len > 255) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"minichat_redis_tls_name\" is longer than 255 characters");
        return NGX_CONF_ERROR;
    }

    ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    ssl->log = cf->log;

    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2 | NGX_SSL_TLSv1_3, NULL) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;

    /* the node's output buffer may grow (realloc) between a write that
     * returned NGX_AGAIN and its retry; the bytes stay the same */
    SSL_CTX_set_mode(ssl->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);

    if (mcf->redis_tls_certificate.len
        && ngx_ssl_certificate(cf, ssl, &mcf->redis_tls_certificate, &mcf->redis_tls_certificate_key, NULL)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (mcf->redis_tls_verify
        && ngx_ssl_trusted_certificate(cf, ssl, &mcf->redis_tls_ca_file, NGX_HTTP_MINICHAT_REDIS_TLS_DEPTH)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    mcf->redis_ssl = ssl;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_minichat_redis_tls_connection(ngx_connection_t *c)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    u_char                          name[256];

    if (ngx_ssl_create_connection(mcf->redis_ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mcf->redis_tls_name.len) {
        ngx_cpystrn(name, mcf->redis_tls_name.data, mcf->redis_tls_name.len + 1);

        if (SSL_set_tlsext_host_name(c->ssl->connection, (char *) name) == 0) {
            ngx_ssl_error(NGX_LOG_ERR, c->log, 0, "minichat: SSL_set_tlsext_host_name(\"%s\") failed", name);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_minichat_redis_tls_check(ngx_connection_t *c, const char *host, int port)
{
    ngx_http_minichat_main_conf_t  *mcf = ngx_http_minichat_conf();
    long                            rc;

    if (!mcf->redis_tls_verify) {
        return NGX_OK;
    }

    /* without a certificate there is nothing the result would be about */
    if (SSL_get0_peer_certificate(c->ssl->connection) == NULL) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0, "minichat: redis %s:%d sent no TLS certificate; retrying",
                      host, port);
        return NGX_ERROR;
    }

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "minichat: redis %s:%d: TLS certificate verify error: (%l:%s); retrying",
                      host, port, rc, X509_verify_cert_error_string(rc));
        return NGX_ERROR;
    }

    if (mcf->redis_tls_name.len && ngx_ssl_check_host(c, &mcf->redis_tls_name) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "minichat: redis %s:%d: TLS certificate does not match \"%V\"; retrying",
                      host, port, &mcf->redis_tls_name);
        return NGX_ERROR;
    }

    return NGX_OK;
}
