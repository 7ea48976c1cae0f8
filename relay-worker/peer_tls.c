/*
 * Who may speak for a node: the mesh's mutual TLS and its allowlist.
 *
 * With peer_tls_ca, peer_tls_cert and peer_tls_key set (PEM files), the gRPC
 * server asks every caller for a client certificate and refuses the TLS
 * handshake unless one is sent and chains to peer_tls_ca; the channels to
 * peers present this node's certificate and check that the peer's names the
 * peer's node (its subjectAltName DNS entry or, without one, its common
 * name; grpc checks it against the target name, which is set to the node
 * name).  A caller that passed the handshake must also be a configured peer:
 * its certificate's common name or one of its DNS subjectAltNames must be in
 * peer_tls_names (default: the node names of `peers`), and a batch it sends
 * must carry that name as from_node.  So any holder of a certificate of the
 * CA is not enough: the certificate must name a peer.
 *
 * The files are read and checked once at start with OpenSSL (the key matches
 * the certificate, the certificate chains to the CA), so that a wrong path or
 * file is a clear start-up error rather than a failed handshake later.
 *
 * Without the three keys the mesh runs in the clear and unauthenticated, as
 * before; a warning says so at start.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "minichat/conf.h"
#include "minichat/log.h"
#include "relay.h"

#define PEER_TLS_FILE_MAX (1 << 20)
#define PEER_TLS_NAMES_MAX 64
#define PEER_TLS_NAME_LEN 64

static char *tls_ca, *tls_cert, *tls_key;
static char tls_names[PEER_TLS_NAMES_MAX][PEER_TLS_NAME_LEN];
static size_t tls_nnames;

/* Reads a whole PEM file into a NUL-terminated malloc'ed string; NULL with
 * a log line when it cannot be read, is empty, too large or not PEM. */
static char *pem_read(const char *key, const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s = NULL;
    size_t n;

    if (f == NULL) {
        mc_error("config: %s \"%s\": %s", key, path, strerror(errno));
        return NULL;
    }
    s = malloc(PEER_TLS_FILE_MAX + 1);
    if (s == NULL) {
        mc_error("config: %s: out of memory", key);
        goto err;
    }
    n = fread(s, 1, PEER_TLS_FILE_MAX + 1, f);
    if (ferror(f) || n == 0 || n > PEER_TLS_FILE_MAX) {
        mc_error("config: %s \"%s\": %s", key, path,
                 ferror(f) ? "read error" : n == 0 ? "empty file" : "larger than 1 MiB");
        goto err;
    }
    s[n] = '\0';
    if (strlen(s) != n || strstr(s, "-----BEGIN ") == NULL) {
        mc_error("config: %s \"%s\" is not a PEM file", key, path);
        goto err;
    }
    fclose(f);
    return s;
err:
    free(s);
    fclose(f);
    return NULL;
}

/* Logs OpenSSL's first queued error after msg and clears the queue. */
static void ssl_fail(const char *msg, const char *path)
{
    char buf[256];
    unsigned long e = ERR_get_error();

    ERR_error_string_n(e, buf, sizeof(buf));
    mc_error("config: %s \"%s\"%s%s", msg, path, e ? ": " : "", e ? buf : "");
    ERR_clear_error();
}

/* Checks that the key matches the certificate and that the certificate
 * chains to the CA now.  Returns 0 or -1 with a log line. */
static int pem_check(const char *ca_path, const char *cert_path, const char *key_path)
{
    BIO *b = NULL;
    X509 *ca = NULL, *cert = NULL;
    EVP_PKEY *pk = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    int rc = -1, v;

    if ((b = BIO_new_mem_buf(tls_ca, -1)) == NULL || (ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
        ssl_fail("peer_tls_ca holds no certificate:", ca_path);
        goto done;
    }
    BIO_free(b);
    if ((b = BIO_new_mem_buf(tls_cert, -1)) == NULL || (cert = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
        ssl_fail("peer_tls_cert holds no certificate:", cert_path);
        goto done;
    }
    BIO_free(b);
    if ((b = BIO_new_mem_buf(tls_key, -1)) == NULL || (pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL) {
        ssl_fail("peer_tls_key holds no unencrypted private key:", key_path);
        goto done;
    }
    if (X509_check_private_key(cert, pk) != 1) {
        ssl_fail("peer_tls_key does not match peer_tls_cert:", key_path);
        goto done;
    }
    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();
    if (store == NULL || ctx == NULL || X509_STORE_add_cert(store, ca) != 1
        || X509_STORE_CTX_init(ctx, store, cert, NULL) != 1) {
        ssl_fail("peer_tls: out of memory checking", cert_path);
        goto done;
    }
    if (X509_verify_cert(ctx) != 1) {
        v = X509_STORE_CTX_get_error(ctx);
        mc_error("config: peer_tls_cert \"%s\" does not verify against peer_tls_ca \"%s\": %s", cert_path, ca_path,
                 X509_verify_cert_error_string(v));
        goto done;
    }
    rc = 0;
done:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    EVP_PKEY_free(pk);
    X509_free(cert);
    X509_free(ca);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

/* Adds the names of a list ("x,y z", or node@host:port entries when
 * at_form: the part before '@').  Returns 0 or -1 with a log line. */
static int names_add(const char *list, int at_form)
{
    const char *rest = list, *s, *e, *at;
    size_t n, len;

    while ((s = mc_conf_list_next(&rest, &len)) != NULL) {
        e = s + len;
        at = at_form ? memchr(s, '@', len) : NULL;
        n = (size_t)((at ? at : e) - s);
        if (n == 0 || n >= PEER_TLS_NAME_LEN || tls_nnames == PEER_TLS_NAMES_MAX) {
            mc_error("config: peer_tls_names: bad or too many names at \"%.*s\" (at most %d names of %d characters)",
                     (int)(e - s), s, PEER_TLS_NAMES_MAX, PEER_TLS_NAME_LEN - 1);
            return -1;
        }
        memcpy(tls_names[tls_nnames], s, n);
        tls_names[tls_nnames++][n] = '\0';
    }
    return 0;
}

int peer_tls_init(const relay_conf_t *conf)
{
    int set = (conf->peer_tls_ca != NULL) + (conf->peer_tls_cert != NULL) + (conf->peer_tls_key != NULL);

    /* main.c's conf_peers has refused names without TLS and a partial set */
    if (set == 0) {
        mc_warn("peers are not authenticated: peer_tls_ca, peer_tls_cert and peer_tls_key are unset, so gRPC "
                "between relay-workers is in the clear and anyone who reaches %s can deliver messages",
                conf->grpc_listen);
        return 0;
    }
    tls_ca = pem_read("peer_tls_ca", conf->peer_tls_ca);
    tls_cert = tls_ca ? pem_read("peer_tls_cert", conf->peer_tls_cert) : NULL;
    tls_key = tls_cert ? pem_read("peer_tls_key", conf->peer_tls_key) : NULL;
    if (tls_key == NULL || pem_check(conf->peer_tls_ca, conf->peer_tls_cert, conf->peer_tls_key) != 0
        || names_add(conf->peer_tls_names ? conf->peer_tls_names : conf->peers, conf->peer_tls_names == NULL) != 0) {
        peer_tls_free();
        return -1;
    }
    if (tls_nnames == 0) {
        mc_warn("peer_tls: no peers and no peer_tls_names: every caller will be refused");
    }
    mc_info("peer_tls: mutual TLS between relay-workers (CA %s), %zu allowed peer names", conf->peer_tls_ca,
            tls_nnames);
    return 0;
}

int peer_tls_enabled(void)
{
    return tls_key != NULL;
}

grpc_server_credentials *peer_tls_server_creds(void)
{
    grpc_ssl_pem_key_cert_pair pair;

    if (!peer_tls_enabled()) {
        return grpc_insecure_server_credentials_create();
    }
    pair.private_key = tls_key;
    pair.cert_chain = tls_cert;
    return grpc_ssl_server_credentials_create_ex(tls_ca, &pair, 1,
                                                 GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
}

grpc_channel_credentials *peer_tls_channel_creds(void)
{
    grpc_ssl_pem_key_cert_pair pair;

    if (!peer_tls_enabled()) {
        return grpc_insecure_credentials_create();
    }
    pair.private_key = tls_key;
    pair.cert_chain = tls_cert;
    return grpc_ssl_credentials_create(tls_ca, &pair, NULL, NULL);
}

/* Returns 1 when the value (not NUL-terminated) is an allowed name. */
static int name_allowed(const char *v, size_t n)
{
    size_t i;

    for (i = 0; i < tls_nnames; i++) {
        if (strlen(tls_names[i]) == n && memcmp(tls_names[i], v, n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Copies the first allowed value of the property into name; returns 1 when found. */
static int find_allowed(grpc_auth_context *ac, const char *prop, char *name, size_t size)
{
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ac, prop);
    const grpc_auth_property *p;

    while ((p = grpc_auth_property_iterator_next(&it)) != NULL) {
        if (p->value != NULL && p->value_length < size && name_allowed(p->value, p->value_length)) {
            memcpy(name, p->value, p->value_length);
            name[p->value_length] = '\0';
            return 1;
        }
    }
    return 0;
}

int peer_tls_caller(grpc_call *call, char *name, size_t size)
{
    grpc_auth_context *ac;
    int ok;

    if (!peer_tls_enabled()) {
        return 1;
    }
    ac = grpc_call_auth_context(call);
    if (ac == NULL) {
        return 0;
    }
    ok = grpc_auth_context_peer_is_authenticated(ac)
         && (find_allowed(ac, GRPC_X509_SAN_PROPERTY_NAME, name, size)
             || find_allowed(ac, GRPC_X509_CN_PROPERTY_NAME, name, size));
    grpc_auth_context_release(ac);
    return ok;
}

void peer_tls_free(void)
{
    free(tls_ca);
    free(tls_cert);
    if (tls_key) {
        OPENSSL_cleanse(tls_key, strlen(tls_key));
    }
    free(tls_key);
    tls_ca = tls_cert = tls_key = NULL;
    tls_nnames = 0;
}
