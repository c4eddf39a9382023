/*
 * tls.h: the OpenSSL contexts sluice uses, one per side, built once from the config and rebuilt
 * on reload (new connections take the new context; live ones keep theirs, SSL_CTX is refcounted).
 *   client side: sluice is the TLS server toward its clients (client_tls_*).
 *   server side: sluice is the TLS client toward PostgreSQL (server_tls_*).
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/ssl.h>
#include "config.h"

/* PgBouncer's sslmode values, in order of strictness. */
enum tls_mode {
    TLS_MODE_DISABLE,
    TLS_MODE_ALLOW,
    TLS_MODE_PREFER,
    TLS_MODE_REQUIRE,
    TLS_MODE_VERIFY_CA,
    TLS_MODE_VERIFY_FULL,
};

struct tls_contexts {
    enum tls_mode client_mode;
    enum tls_mode server_mode;
    SSL_CTX *client_ctx;   /* NULL when client_mode is disable */
    SSL_CTX *server_ctx;   /* NULL when server_mode is disable */
};

/* "disable" ... "verify-full" -> mode; false if unknown (NULL -> disable). */
bool tls_parse_mode(const char *text, enum tls_mode *mode);

/*
 * Builds both contexts from cfg. Client side needs client_tls_key_file/cert_file when the mode is
 * not disable; verify-ca/verify-full also need client_tls_ca_file and then require a client
 * certificate it signed (below verify-ca none is asked for). Server side loads server_tls_ca_file
 * for verify-ca/full (the system's CA certificates when it is not set) and an optional client
 * certificate (server_tls_cert_file/key_file). Protocols: "secure" (TLS 1.2 and 1.3), "all",
 * "legacy", or a list like "tlsv1.2,tlsv1.3"; ciphers: "default", "secure", "fast", "normal",
 * "all" or an OpenSSL cipher string. Returns 0, or -1 with a reason naming the setting and file
 * in err; on failure *out is left disabled with nothing to free, so a reload builds into a fresh
 * struct and swaps it in only on success.
 */
int tls_contexts_load(const struct config *cfg, struct tls_contexts *out, char *err, size_t err_len);
void tls_contexts_free(struct tls_contexts *tls);

/* A new SSL for an accepted client, or NULL. */
SSL *tls_new_client_ssl(const struct tls_contexts *tls);
/*
 * A new SSL toward a backend host: SNI set for host names, and for verify-full the host name (or
 * IP address) checked against the certificate. NULL on failure, and for verify-full when host is
 * NULL, empty or a unix socket directory (nothing to check the certificate against).
 */
SSL *tls_new_server_ssl(const struct tls_contexts *tls, const char *host);

/* For logs and SHOW CLIENTS: "TLSv1.3/TLS_AES_256_GCM_SHA384" or "" when not TLS. */
void tls_describe(SSL *ssl, char *buf, size_t buf_len);

/*
 * Why the peer's certificate was refused ("certificate has expired", "hostname mismatch"), for
 * the log line of a failed handshake; NULL when no certificate was checked or it passed.
 */
const char *tls_verify_failure(SSL *ssl);

#endif
