/*
 * test_tls.c: the OpenSSL contexts built from client_tls_* and server_tls_*: modes, protocol and
 * cipher settings, error messages, and real handshakes over an in-memory BIO pair, with
 * certificates made at test time by tests/tls/make-certs.sh.
 *
 * One struct tls_contexts talks to itself: its server side (sluice as PostgreSQL's TLS client,
 * tls_new_server_ssl) connects to its client side (sluice as its clients' TLS server,
 * tls_new_client_ssl), so one config describes both ends of a handshake.
 */
#include "tls.h"
#include "tap.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define HANDSHAKE_STEPS 32 /* a handshake takes a handful; more means it is stuck */
#define CERT_DIR_TEMPLATE "/tmp/sluice-test-tls-XXXXXX"
#define CERT_PATH_MAX (sizeof CERT_DIR_TEMPLATE + 32)

struct certs {
    char dir[sizeof CERT_DIR_TEMPLATE];
    char ca[CERT_PATH_MAX];
    char server_crt[CERT_PATH_MAX];
    char server_key[CERT_PATH_MAX];
    char client_crt[CERT_PATH_MAX];
    char client_key[CERT_PATH_MAX];
    char other_ca[CERT_PATH_MAX];
    char other_client_crt[CERT_PATH_MAX];
    char other_client_key[CERT_PATH_MAX];
    char ed25519_key[CERT_PATH_MAX];   /* a key of another type than server.crt's */
    char encrypted_key[CERT_PATH_MAX]; /* server.key under a passphrase */
    char garbage[CERT_PATH_MAX];       /* not PEM at all */
    char missing[CERT_PATH_MAX];       /* never created */
};

/* Both ends of one handshake, made from one config. */
struct session {
    struct tls_contexts tls;
    SSL *connecting; /* sluice toward PostgreSQL */
    SSL *accepting;  /* sluice toward its clients */
    bool handshake_ok;
};

static char err[1024];

/* ---- set-up ---------------------------------------------------------------------------- */

static void path_in(char *out, const struct certs *c, const char *name)
{
    snprintf(out, CERT_PATH_MAX, "%s/%s", c->dir, name);
}

static bool run(const char *command)
{
    return system(command) == 0;
}

static bool make_certs(struct certs *c)
{
    const char *srcdir = getenv("SLUICE_SRCDIR");
    char command[PATH_MAX + 4 * CERT_PATH_MAX];
    FILE *garbage;

    memcpy(c->dir, CERT_DIR_TEMPLATE, sizeof CERT_DIR_TEMPLATE);
    if (mkdtemp(c->dir) == NULL)
        return false;
    path_in(c->ca, c, "ca.crt");
    path_in(c->server_crt, c, "server.crt");
    path_in(c->server_key, c, "server.key");
    path_in(c->client_crt, c, "client.crt");
    path_in(c->client_key, c, "client.key");
    path_in(c->other_ca, c, "other-ca.crt");
    path_in(c->other_client_crt, c, "other-client.crt");
    path_in(c->other_client_key, c, "other-client.key");
    path_in(c->ed25519_key, c, "ed25519.key");
    path_in(c->encrypted_key, c, "encrypted.key");
    path_in(c->garbage, c, "garbage.pem");
    path_in(c->missing, c, "missing.pem");

    snprintf(command, sizeof command, "'%s/tests/tls/make-certs.sh' '%s'",
             srcdir != NULL ? srcdir : ".", c->dir);
    if (!run(command))
        return false;
    snprintf(command, sizeof command,
             "openssl genpkey -algorithm ED25519 -out '%s' 2>/dev/null && "
             "openssl pkey -in '%s' -aes256 -passout pass:secret -out '%s' 2>/dev/null",
             c->ed25519_key, c->server_key, c->encrypted_key);
    if (!run(command))
        return false;
    garbage = fopen(c->garbage, "w");
    if (garbage == NULL)
        return false;
    fputs("this is not a PEM file\n", garbage);
    fclose(garbage);
    return true;
}

static void remove_certs(const struct certs *c)
{
    char command[CERT_PATH_MAX + 16];

    snprintf(command, sizeof command, "rm -rf '%s'", c->dir);
    run(command);
}

/* A config with TLS off on both sides; tests turn on what they need. */
static struct config no_tls(void)
{
    struct config cfg;

    memset(&cfg, 0, sizeof cfg);
    return cfg;
}

/* Clients are served with server.crt; backends are checked against ca.crt. */
static struct config both_sides(const struct certs *c, char *client_mode, char *server_mode)
{
    struct config cfg = no_tls();

    cfg.client_tls_sslmode = client_mode;
    cfg.client_tls_cert_file = (char *)c->server_crt;
    cfg.client_tls_key_file = (char *)c->server_key;
    cfg.server_tls_sslmode = server_mode;
    cfg.server_tls_ca_file = (char *)c->ca;
    return cfg;
}

static const char *load_error(const struct config *cfg)
{
    struct tls_contexts tls;

    err[0] = '\0';
    if (tls_contexts_load(cfg, &tls, err, sizeof err) == 0) {
        tls_contexts_free(&tls);
        return "(loaded without error)";
    }
    return err;
}

static const char *expected(const char *fmt, const char *a, const char *b)
{
    static char buf[1024];

    snprintf(buf, sizeof buf, fmt, a, b);
    return buf;
}

/* ---- handshakes ------------------------------------------------------------------------ */

/* One handshake step; false when the handshake failed for good. */
static bool handshake_step(SSL *ssl, bool *done)
{
    int rc = SSL_do_handshake(ssl);
    int error;

    if (rc == 1) {
        *done = true;
        return true;
    }
    error = SSL_get_error(ssl, rc);
    return error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE;
}

static bool handshake(SSL *connecting, SSL *accepting)
{
    BIO *one, *other;
    bool connected = false, accepted = false;

    if (BIO_new_bio_pair(&one, 0, &other, 0) != 1)
        return false;
    SSL_set_bio(connecting, one, one);
    SSL_set_bio(accepting, other, other);
    for (int i = 0; i < HANDSHAKE_STEPS && !(connected && accepted); i++) {
        if (!connected && !handshake_step(connecting, &connected))
            break;
        if (!accepted && !handshake_step(accepting, &accepted))
            break;
    }
    ERR_clear_error();
    return connected && accepted;
}

/* Loads the contexts and makes both SSLs; false if any of that failed. */
static bool session_prepare(struct session *s, const struct config *cfg, const char *host)
{
    memset(s, 0, sizeof *s);
    err[0] = '\0';
    if (tls_contexts_load(cfg, &s->tls, err, sizeof err) != 0) {
        printf("# load failed: %s\n", err);
        return false;
    }
    s->connecting = tls_new_server_ssl(&s->tls, host);
    s->accepting = tls_new_client_ssl(&s->tls);
    return s->connecting != NULL && s->accepting != NULL;
}

static bool session_start(struct session *s, const struct config *cfg, const char *host)
{
    if (!session_prepare(s, cfg, host))
        return false;
    s->handshake_ok = handshake(s->connecting, s->accepting);
    return s->handshake_ok;
}

static void session_end(struct session *s)
{
    SSL_free(s->connecting);
    SSL_free(s->accepting);
    tls_contexts_free(&s->tls);
    memset(s, 0, sizeof *s);
}

static bool handshake_succeeds(const struct config *cfg, const char *host)
{
    struct session s;
    bool succeeded = session_start(&s, cfg, host);

    session_end(&s);
    return succeeded;
}

static bool starts_with(const char *text, const char *prefix)
{
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

static const char *describe(SSL *ssl)
{
    static char buf[128];

    tls_describe(ssl, buf, sizeof buf);
    return buf;
}

static const char *peer_common_name(SSL *ssl)
{
    static char buf[256];
    X509 *peer = SSL_get0_peer_certificate(ssl);

    buf[0] = '\0';
    if (peer == NULL)
        return NULL;
    X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, buf, sizeof buf);
    return buf;
}

/* ---- modes ----------------------------------------------------------------------------- */

static void test_mode_names(void)
{
    static const char *const names[] = {"disable",  "allow",     "prefer",
                                        "require",  "verify-ca", "verify-full"};
    static const enum tls_mode modes[] = {TLS_MODE_DISABLE, TLS_MODE_ALLOW,
                                          TLS_MODE_PREFER,  TLS_MODE_REQUIRE,
                                          TLS_MODE_VERIFY_CA, TLS_MODE_VERIFY_FULL};
    enum tls_mode mode;

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        mode = TLS_MODE_ALLOW;
        ok(tls_parse_mode(names[i], &mode) && mode == modes[i], "mode '%s' parses", names[i]);
    }
    mode = TLS_MODE_REQUIRE;
    ok(tls_parse_mode(NULL, &mode) && mode == TLS_MODE_DISABLE, "an unset mode means disable");
    ok(tls_parse_mode("Verify-Full", &mode) && mode == TLS_MODE_VERIFY_FULL,
       "modes are case-insensitive");
    ok(!tls_parse_mode("verify", &mode), "an unknown mode is refused");
    ok(!tls_parse_mode("", &mode), "an empty mode is refused");
}

static void test_disabled_sides_have_no_context(void)
{
    struct config cfg = no_tls();
    struct tls_contexts tls;

    is_int(tls_contexts_load(&cfg, &tls, err, sizeof err), 0, "TLS off on both sides loads");
    ok(tls.client_ctx == NULL && tls.server_ctx == NULL, "disabled sides have no context");
    ok(tls_new_client_ssl(&tls) == NULL, "no client SSL when client TLS is disabled");
    ok(tls_new_server_ssl(&tls, "localhost") == NULL,
       "no server SSL when server TLS is disabled");
    tls_contexts_free(&tls);
}

/* ---- loading --------------------------------------------------------------------------- */

static void test_valid_certificate_loads(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");
    struct tls_contexts tls;
    int rc = tls_contexts_load(&cfg, &tls, err, sizeof err);

    if (rc != 0)
        printf("# %s\n", err);
    is_int(rc, 0, "server.crt with server.key and ca.crt load");
    is_int(tls.client_mode, TLS_MODE_REQUIRE, "client mode is recorded");
    is_int(tls.server_mode, TLS_MODE_VERIFY_FULL, "server mode is recorded");
    ok(tls.client_ctx != NULL && tls.server_ctx != NULL, "both contexts are built");
    tls_contexts_free(&tls);
    ok(tls.client_ctx == NULL && tls.server_ctx == NULL, "freeing clears the contexts");
    tls_contexts_free(&tls);
    ok(1, "freeing twice is harmless");
}

static void test_cheap_settings_for_many_short_connections(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "require");
    struct tls_contexts tls;
    SSL *ssl;

    if (tls_contexts_load(&cfg, &tls, err, sizeof err) != 0) {
        ok(0, "contexts load: %s", err);
        return;
    }
    ok(SSL_CTX_get_options(tls.client_ctx) & SSL_OP_NO_RENEGOTIATION,
       "clients may not renegotiate");
    ok(SSL_CTX_get_options(tls.server_ctx) & SSL_OP_NO_RENEGOTIATION,
       "backends may not renegotiate");
    is_int(SSL_CTX_get_session_cache_mode(tls.client_ctx), SSL_SESS_CACHE_SERVER,
           "client side keeps a server session cache");
    ok(!(SSL_CTX_get_options(tls.client_ctx) & SSL_OP_NO_TICKET),
       "client side issues session tickets");
    is_int(SSL_CTX_get_num_tickets(tls.client_ctx), 1, "one ticket per full handshake");
    ssl = tls_new_client_ssl(&tls);
    ok(ssl != NULL && (SSL_get_mode(ssl) & SSL_MODE_RELEASE_BUFFERS),
       "client connections release their buffers when idle");
    SSL_free(ssl);
    ssl = tls_new_server_ssl(&tls, "localhost");
    ok(ssl != NULL && (SSL_get_mode(ssl) & SSL_MODE_RELEASE_BUFFERS),
       "backend connections release their buffers when idle");
    SSL_free(ssl);
    tls_contexts_free(&tls);
}

static void test_protocol_limits(const struct certs *c)
{
    static const struct {
        const char *text;
        int min, max;
    } cases[] = {
        {NULL, TLS1_2_VERSION, TLS1_3_VERSION},
        {"secure", TLS1_2_VERSION, TLS1_3_VERSION},
        {"tlsv1.3", TLS1_3_VERSION, TLS1_3_VERSION},
        {"tlsv1.2", TLS1_2_VERSION, TLS1_2_VERSION},
        {"TLSv1.2, tlsv1.3", TLS1_2_VERSION, TLS1_3_VERSION},
        {"all", TLS1_VERSION, TLS1_3_VERSION},
        {"legacy", TLS1_VERSION, TLS1_3_VERSION},
        {"tlsv1.1:tlsv1.2", TLS1_1_VERSION, TLS1_2_VERSION},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg = both_sides(c, "require", "require");
        struct tls_contexts tls;
        const char *name = cases[i].text != NULL ? cases[i].text : "(unset)";

        cfg.client_tls_protocols = (char *)cases[i].text;
        cfg.server_tls_protocols = (char *)cases[i].text;
        if (tls_contexts_load(&cfg, &tls, err, sizeof err) != 0) {
            ok(0, "protocols %s load: %s", name, err);
            continue;
        }
        ok(SSL_CTX_get_min_proto_version(tls.client_ctx) == cases[i].min &&
               SSL_CTX_get_max_proto_version(tls.client_ctx) == cases[i].max,
           "client_tls_protocols %s sets the client side's range", name);
        ok(SSL_CTX_get_min_proto_version(tls.server_ctx) == cases[i].min &&
               SSL_CTX_get_max_proto_version(tls.server_ctx) == cases[i].max,
           "server_tls_protocols %s sets the server side's range", name);
        tls_contexts_free(&tls);
    }
}

static void test_error_messages(const struct certs *c)
{
    struct config cfg;
    const char *got;

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_key_file = (char *)c->missing;
    is_str(load_error(&cfg), expected("client_tls_key_file %s: No such file or directory",
                                      c->missing, NULL),
           "a missing key file is named with the system's reason");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_cert_file = (char *)c->missing;
    is_str(load_error(&cfg), expected("client_tls_cert_file %s: No such file or directory",
                                      c->missing, NULL),
           "a missing certificate file is named");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_key_file = (char *)c->client_key;
    got = load_error(&cfg);
    is_str(got, expected("client_tls_key_file %s does not match client_tls_cert_file %s",
                         c->client_key, c->server_crt),
           "a key of another certificate is refused, naming both files");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_key_file = (char *)c->ed25519_key;
    is_str(load_error(&cfg), expected("client_tls_key_file %s does not match client_tls_cert_file %s",
                                      c->ed25519_key, c->server_crt),
           "a key of another type than the certificate's is refused the same way");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_cert_file = (char *)c->garbage;
    is_str(load_error(&cfg), expected("client_tls_cert_file %s: could not load a certificate: the "
                                      "file holds no PEM data (no -----BEGIN line)",
                                      c->garbage, NULL),
           "a file that is no certificate is named, and why");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_cert_file = (char *)c->server_key;
    is_str(load_error(&cfg), expected("client_tls_cert_file %s: could not load a certificate: the "
                                      "file holds no certificate", c->server_key, NULL),
           "a key given as the certificate is named");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_key_file = (char *)c->encrypted_key;
    got = load_error(&cfg);
    is_str(got, expected("client_tls_key_file %s: could not load the private key: it is "
                         "encrypted, and sluice cannot ask for a passphrase; store it "
                         "unencrypted, readable by sluice only", c->encrypted_key, NULL),
           "a passphrase-protected key is refused without prompting, saying why");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_key_file = (char *)c->server_crt;
    is_str(load_error(&cfg), expected("client_tls_key_file %s: could not load the private key: the "
                                      "file holds no private key", c->server_crt, NULL),
           "a certificate given as the key is named");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_key_file = NULL;
    is_str(load_error(&cfg),
           "client_tls_sslmode require needs client_tls_key_file and client_tls_cert_file",
           "TLS toward clients needs a key and a certificate");

    cfg = both_sides(c, "verify-ca", "disable");
    is_str(load_error(&cfg),
           "client_tls_sslmode verify-ca needs client_tls_ca_file to check client certificates",
           "client verify-ca needs a CA file");

    cfg = both_sides(c, "verify-full", "disable");
    cfg.client_tls_ca_file = (char *)c->missing;
    is_str(load_error(&cfg), expected("client_tls_ca_file %s: No such file or directory",
                                      c->missing, NULL),
           "a missing client CA file is named");

    cfg = both_sides(c, "disable", "verify-ca");
    cfg.server_tls_ca_file = (char *)c->garbage;
    got = load_error(&cfg);
    is_str(got, expected("server_tls_ca_file %s: could not load CA certificates: the file holds "
                         "no PEM data (no -----BEGIN line)", c->garbage, NULL),
           "a server CA file with no certificate is named");
    cfg.server_tls_ca_file = (char *)c->server_key;
    is_str(load_error(&cfg), expected("server_tls_ca_file %s: could not load CA certificates: the "
                                      "file holds no certificate", c->server_key, NULL),
           "a key given as the CA file is named");

    cfg = both_sides(c, "disable", "verify-full");
    cfg.server_tls_ca_file = (char *)c->missing;
    is_str(load_error(&cfg), expected("server_tls_ca_file %s: No such file or directory",
                                      c->missing, NULL),
           "a missing server CA file is named");

    cfg = both_sides(c, "disable", "require");
    cfg.server_tls_cert_file = (char *)c->client_crt;
    is_str(load_error(&cfg),
           "server_tls_key_file and server_tls_cert_file go together: give both or neither",
           "a client certificate toward backends needs its key");

    cfg = both_sides(c, "disable", "require");
    cfg.server_tls_cert_file = (char *)c->client_crt;
    cfg.server_tls_key_file = (char *)c->server_key;
    is_str(load_error(&cfg), expected("server_tls_key_file %s does not match server_tls_cert_file %s",
                                      c->server_key, c->client_crt),
           "a mismatched key toward backends names the server_tls settings");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_protocols = "tlsv1.2,tlsv9";
    is_str(load_error(&cfg),
           "client_tls_protocols: unknown protocol 'tlsv9'; expected secure, all, legacy or a "
           "list of tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3",
           "an unknown protocol name is named");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_protocols = "tlsv1.0,tlsv1.2";
    is_str(load_error(&cfg),
           "client_tls_protocols: 'tlsv1.0,tlsv1.2' leaves out a version between two it allows; "
           "OpenSSL can only allow a range such as tlsv1.2,tlsv1.3",
           "a list with a gap is refused rather than widened");

    cfg = both_sides(c, "disable", "require");
    cfg.server_tls_protocols = " , ";
    is_str(load_error(&cfg), "server_tls_protocols: no protocol given",
           "an empty protocol list is refused");

    cfg = both_sides(c, "require", "disable");
    cfg.client_tls_ciphers = "NOT-A-CIPHER";
    is_str(load_error(&cfg), "client_tls_ciphers: no cipher matches 'NOT-A-CIPHER'",
           "a cipher string that matches nothing is named");

    cfg = both_sides(c, "disable", "require");
    cfg.server_tls_ciphers = "TLS_NO_SUCH_SUITE";
    is_str(load_error(&cfg), "server_tls_ciphers: no cipher matches 'TLS_NO_SUCH_SUITE'",
           "an unknown TLS 1.3 suite is named");

    cfg = both_sides(c, "required", "disable");
    is_str(load_error(&cfg),
           "client_tls_sslmode: unknown mode 'required'; expected disable, allow, prefer, "
           "require, verify-ca or verify-full",
           "an unknown mode is named");
}

static void test_failed_load_leaves_nothing_to_free(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");
    struct tls_contexts tls;

    cfg.server_tls_ca_file = (char *)c->missing;
    memset(&tls, 0xff, sizeof tls);
    is_int(tls_contexts_load(&cfg, &tls, err, sizeof err), -1, "a bad server side fails the load");
    ok(tls.client_ctx == NULL && tls.server_ctx == NULL && tls.client_mode == TLS_MODE_DISABLE,
       "after a failed load the struct holds no context");
    tls_contexts_free(&tls);
}

/* ---- handshakes ------------------------------------------------------------------------ */

static void test_verify_full_by_name(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");
    struct session s;
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;

    ok(session_start(&s, &cfg, "localhost"), "verify-full handshake with localhost succeeds");
    is_str(tls_verify_failure(s.connecting), NULL, "the backend certificate passed");
    is_str(SSL_get_servername(s.accepting, TLSEXT_NAMETYPE_host_name), "localhost",
           "the host name is sent as SNI");
    ok(starts_with(describe(s.connecting), "TLSv1.3/TLS_"),
       "the connection is described as TLS 1.3 with its suite");
    printf("#   %s\n", describe(s.connecting));
    is_str(describe(s.connecting), describe(s.accepting), "both ends describe it alike");
    SSL_get0_alpn_selected(s.connecting, &alpn, &alpn_len);
    ok(alpn_len == 10 && memcmp(alpn, "postgresql", 10) == 0,
       "ALPN agrees on postgresql, as PostgreSQL 17 expects");
    session_end(&s);
    is_str(describe(NULL), "", "no TLS is described as empty");
}

static void test_verify_full_by_address(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");
    struct session s;

    ok(session_start(&s, &cfg, "127.0.0.1"), "verify-full with 127.0.0.1 matches the IP SAN");
    is_str(SSL_get_servername(s.accepting, TLSEXT_NAMETYPE_host_name), NULL,
           "an address is never sent as SNI");
    session_end(&s);
    ok(handshake_succeeds(&cfg, "::1"), "verify-full with ::1 matches the IPv6 SAN");

    ok(!session_start(&s, &cfg, "127.0.0.2"), "verify-full with another address fails");
    is_str(tls_verify_failure(s.connecting), "IP address mismatch",
           "the failure says the address did not match");
    session_end(&s);
}

static void test_verify_full_wrong_host(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");
    struct session s;

    ok(!session_start(&s, &cfg, "db.example.com"), "verify-full with a wrong host name fails");
    is_str(tls_verify_failure(s.connecting), "hostname mismatch",
           "the failure says the host name did not match");
    session_end(&s);
    if (session_prepare(&s, &cfg, "localhost")) {
        ok(tls_new_server_ssl(&s.tls, NULL) == NULL, "verify-full refuses a missing host");
        ok(tls_new_server_ssl(&s.tls, "/tmp") == NULL,
           "verify-full refuses a unix socket directory");
    }
    session_end(&s);
}

static void test_verify_ca(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-ca");
    struct session s;

    ok(handshake_succeeds(&cfg, "db.example.com"),
       "verify-ca trusts the CA without checking the host name");
    cfg.server_tls_ca_file = (char *)c->other_ca;
    ok(!session_start(&s, &cfg, "localhost"), "verify-ca with an unrelated CA fails");
    is_str(tls_verify_failure(s.connecting), "unable to get local issuer certificate",
           "the failure says the issuer is not trusted");
    session_end(&s);
    cfg.server_tls_sslmode = "require";
    ok(handshake_succeeds(&cfg, "db.example.com"), "require encrypts without verifying");
    cfg.server_tls_sslmode = "prefer";
    ok(handshake_succeeds(&cfg, "localhost"), "prefer encrypts without verifying");
}

static void test_client_certificates(const struct certs *c)
{
    struct config cfg = both_sides(c, "verify-ca", "require");
    struct session s;

    cfg.client_tls_ca_file = (char *)c->ca;
    ok(!handshake_succeeds(&cfg, "localhost"),
       "client verify-ca refuses a client without a certificate");

    cfg.server_tls_cert_file = (char *)c->client_crt;
    cfg.server_tls_key_file = (char *)c->client_key;
    ok(session_start(&s, &cfg, "localhost"), "client verify-ca accepts a certificate of the CA");
    is_str(peer_common_name(s.accepting), "app", "the client's certificate is seen (CN=app)");
    session_end(&s);

    cfg.client_tls_sslmode = "verify-full";
    ok(handshake_succeeds(&cfg, "localhost"), "client verify-full accepts it too");

    cfg.server_tls_cert_file = (char *)c->other_client_crt;
    cfg.server_tls_key_file = (char *)c->other_client_key;
    ok(!session_start(&s, &cfg, "localhost"),
       "client verify-full refuses a certificate of an unrelated CA");
    is_str(tls_verify_failure(s.accepting), "unable to get local issuer certificate",
           "the failure says why the client certificate was refused");
    session_end(&s);

    cfg = both_sides(c, "require", "require");
    cfg.client_tls_ca_file = (char *)c->ca;
    ok(session_start(&s, &cfg, "localhost"),
       "client require does not ask for a certificate, even with a CA file");
    ok(SSL_get0_peer_certificate(s.accepting) == NULL, "and none was sent");
    session_end(&s);
}

static void test_protocol_mismatch_and_tls12(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");
    struct session s;

    cfg.client_tls_protocols = "tlsv1.3";
    cfg.server_tls_protocols = "tlsv1.2";
    ok(!handshake_succeeds(&cfg, "localhost"), "no shared protocol version: no handshake");

    cfg.client_tls_protocols = "secure";
    ok(session_start(&s, &cfg, "localhost"), "TLS 1.2 handshake succeeds");
    is_str(describe(s.accepting), "TLSv1.2/ECDHE-ECDSA-AES256-GCM-SHA384",
           "TLS 1.2 with the default ciphers picks forward-secret AES-GCM");
    session_end(&s);
}

static void test_cipher_choices(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");
    struct session s;

    cfg.client_tls_ciphers = "fast";
    ok(session_start(&s, &cfg, "localhost"), "fast ciphers: handshake succeeds");
    is_str(describe(s.accepting), "TLSv1.3/TLS_AES_128_GCM_SHA256",
           "fast picks AES-128 in TLS 1.3, over the client's own preference");
    session_end(&s);

    cfg.server_tls_protocols = "tlsv1.2";
    ok(session_start(&s, &cfg, "localhost"), "fast ciphers over TLS 1.2: handshake succeeds");
    is_str(describe(s.accepting), "TLSv1.2/ECDHE-ECDSA-AES128-GCM-SHA256",
           "fast picks AES-128 in TLS 1.2");
    session_end(&s);

    cfg.server_tls_protocols = NULL;
    cfg.client_tls_ciphers = "TLS_CHACHA20_POLY1305_SHA256";
    ok(session_start(&s, &cfg, "localhost"), "a TLS 1.3 suite name: handshake succeeds");
    is_str(describe(s.accepting), "TLSv1.3/TLS_CHACHA20_POLY1305_SHA256",
           "a TLS 1.3 suite name restricts TLS 1.3");
    session_end(&s);

    cfg.server_tls_protocols = "tlsv1.2";
    cfg.client_tls_ciphers = "ECDHE-ECDSA-CHACHA20-POLY1305";
    ok(session_start(&s, &cfg, "localhost"), "an OpenSSL cipher name: handshake succeeds");
    is_str(describe(s.accepting), "TLSv1.2/ECDHE-ECDSA-CHACHA20-POLY1305",
           "an OpenSSL cipher name restricts TLS 1.2");
    session_end(&s);

    static const char *const shortcuts[] = {"default", "secure", "normal", "compat", "all"};
    cfg.server_tls_protocols = NULL;
    for (size_t i = 0; i < sizeof shortcuts / sizeof shortcuts[0]; i++) {
        cfg.client_tls_ciphers = (char *)shortcuts[i];
        cfg.server_tls_ciphers = (char *)shortcuts[i];
        ok(handshake_succeeds(&cfg, "localhost"), "ciphers '%s' on both sides work", shortcuts[i]);
    }
}

/* Resumes a session made by a first handshake; true if the second handshake reused it. */
static bool resumes(const struct config *cfg)
{
    struct session first, second;
    SSL_SESSION *saved = NULL;
    unsigned char byte;
    bool reused = false;

    if (!session_start(&first, cfg, "localhost"))
        goto done;
    /* TLS 1.3 tickets arrive after the handshake: a read takes them in. */
    SSL_read(first.connecting, &byte, 1);
    ERR_clear_error();
    saved = SSL_get1_session(first.connecting);
    if (!session_prepare(&second, cfg, "localhost"))
        goto done_second;
    SSL_free(second.accepting);
    /* The same client-side context, so that its ticket keys and session cache are the ones
     * that issued the session. */
    second.accepting = tls_new_client_ssl(&first.tls);
    SSL_set_session(second.connecting, saved);
    if (handshake(second.connecting, second.accepting))
        reused = SSL_session_reused(second.accepting) == 1;
done_second:
    session_end(&second);
done:
    SSL_SESSION_free(saved);
    session_end(&first);
    return reused;
}

static void test_session_resumption(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");

    ok(resumes(&cfg), "a TLS 1.3 client resumes with its ticket");
    cfg.server_tls_protocols = "tlsv1.2";
    ok(resumes(&cfg), "a TLS 1.2 client resumes");
    cfg.client_tls_sslmode = "verify-ca";
    cfg.client_tls_ca_file = (char *)c->ca;
    cfg.server_tls_cert_file = (char *)c->client_crt;
    cfg.server_tls_key_file = (char *)c->client_key;
    ok(resumes(&cfg), "a client with a certificate resumes too");
}

/* The config file's own defaults and spellings ("secure", "default", "verify-full") load. */
static void test_settings_from_a_config_file(const struct certs *c)
{
    char text[1024];
    struct config *cfg = NULL;
    struct session s;

    snprintf(text, sizeof text,
             "[sluice]\n"
             "client_tls_sslmode = verify-full\n"
             "client_tls_cert_file = %s\n"
             "client_tls_key_file = %s\n"
             "client_tls_ca_file = %s\n"
             "server_tls_sslmode = verify-full\n"
             "server_tls_ca_file = %s\n"
             "server_tls_cert_file = %s\n"
             "server_tls_key_file = %s\n",
             c->server_crt, c->server_key, c->ca, c->ca, c->client_crt, c->client_key);
    if (config_load_string(text, "sluice.ini", &cfg, err, sizeof err) != 0) {
        ok(0, "sluice.ini loads: %s", err);
        return;
    }
    ok(session_start(&s, cfg, "localhost"), "TLS settings from sluice.ini give a handshake");
    is_str(peer_common_name(s.accepting), "app", "with the client certificate checked");
    ok(SSL_CTX_get_min_proto_version(s.tls.client_ctx) == TLS1_2_VERSION,
       "the file's default protocols are TLS 1.2 and 1.3");
    session_end(&s);
    config_free(cfg);
}

static void test_connections_outlive_freed_contexts(const struct certs *c)
{
    struct config cfg = both_sides(c, "require", "verify-full");
    struct session s;
    char byte = 'x', got = 0;

    if (!session_prepare(&s, &cfg, "localhost")) {
        ok(0, "contexts load");
        session_end(&s);
        return;
    }
    /* As on reload: the contexts go, the connections made from them stay. */
    tls_contexts_free(&s.tls);
    ok(handshake(s.connecting, s.accepting), "a handshake completes after the contexts are freed");
    ok(SSL_write(s.connecting, &byte, 1) == 1 && SSL_read(s.accepting, &got, 1) == 1 && got == 'x',
       "and data flows");
    session_end(&s);
}

int main(void)
{
    struct certs certs;

    test_mode_names();
    test_disabled_sides_have_no_context();
    if (!make_certs(&certs)) {
        printf("Bail out! could not make test certificates in %s (SLUICE_SRCDIR=%s)\n", certs.dir,
               getenv("SLUICE_SRCDIR") != NULL ? getenv("SLUICE_SRCDIR") : ".");
        remove_certs(&certs);
        return 1;
    }
    test_valid_certificate_loads(&certs);
    test_cheap_settings_for_many_short_connections(&certs);
    test_protocol_limits(&certs);
    test_error_messages(&certs);
    test_failed_load_leaves_nothing_to_free(&certs);
    test_verify_full_by_name(&certs);
    test_verify_full_by_address(&certs);
    test_verify_full_wrong_host(&certs);
    test_verify_ca(&certs);
    test_client_certificates(&certs);
    test_protocol_mismatch_and_tls12(&certs);
    test_cipher_choices(&certs);
    test_session_resumption(&certs);
    test_settings_from_a_config_file(&certs);
    test_connections_outlive_freed_contexts(&certs);
    remove_certs(&certs);
    return tap_done();
}
