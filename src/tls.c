/*
 * tls.c: the two OpenSSL contexts, built from the config at start and on reload. On the client
 * side sluice is the TLS server (client_tls_*); on the server side it is PostgreSQL's TLS client
 * (server_tls_*). All the expensive work happens here, once; a connection costs one SSL_new.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* PostgreSQL 17's ALPN protocol id, length-prefixed as the wire format wants it. */
static const unsigned char alpn_postgresql[] = "\x0apostgresql";
#define ALPN_POSTGRESQL_LEN (sizeof alpn_postgresql - 1)

/* Binds cached sessions to sluice, as OpenSSL requires when client certificates are verified. */
static const unsigned char session_id_context[] = "sluice";

/*
 * Key exchange groups. Toward clients X25519 comes first: libpq's OpenSSL sends an X25519 key
 * share by default, so the handshake needs no retry. Toward PostgreSQL P-256 comes first:
 * PostgreSQL up to 17 accepts only its ssl_ecdh_curve (prime256v1 by default), and a first key
 * share it refuses costs a HelloRetryRequest round trip on every backend connection.
 */
#define CLIENT_SIDE_GROUPS "X25519:P-256"
#define SERVER_SIDE_GROUPS "P-256:X25519"

/* One session ticket per full handshake instead of OpenSSL's two: most clients never resume. */
#define TICKETS_PER_HANDSHAKE 1

/*
 * tls_ciphers shortcuts (TLS 1.2 and older; TLS 1.3 suites are all AEAD). PgBouncer's names with
 * today's meanings: "secure" keeps forward-secret AEAD ciphers only, "fast" is the same set with
 * AES-128 and ChaCha20 first, "normal" adds non-forward-secret and CBC ciphers, "compat" is
 * OpenSSL's HIGH, "all" everything that authenticates and encrypts.
 */
#define CIPHERS_SECURE "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!DSS"
#define CIPHERS_FAST                                                                        \
    "ECDHE+AES128+AESGCM:ECDHE+CHACHA20:ECDHE+AESGCM:DHE+AES128+AESGCM:DHE+CHACHA20:"       \
    "DHE+AESGCM:!aNULL:!DSS"
#define CIPHERS_NORMAL                                                                      \
    "HIGH+EECDH:HIGH+EDH:HIGH+RSA:+SHA384:+SHA256:!CAMELLIA:!ARIA:!DSS:!aNULL"
#define CIPHERS_COMPAT "HIGH:!aNULL"
#define CIPHERS_ALL "ALL:!aNULL:!eNULL"
#define SUITES_FAST "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"

#define SHOWN_VALUE_MAX 60 /* longest piece of a setting's value quoted in an error */

/* The settings of one side, with the prefix that names them in messages. */
struct side_settings {
    const char *prefix; /* "client_tls" or "server_tls" */
    const char *sslmode;
    const char *key_file;
    const char *cert_file;
    const char *ca_file;
    const char *protocols;
    const char *ciphers;
};

struct cipher_shortcut {
    const char *name;
    const char *ciphers; /* TLS 1.2 and older */
    const char *suites;  /* TLS 1.3; NULL: OpenSSL's default */
};

static const struct cipher_shortcut cipher_shortcuts[] = {
    {"default", CIPHERS_SECURE, NULL},
    {"secure", CIPHERS_SECURE, NULL},
    {"fast", CIPHERS_FAST, SUITES_FAST},
    {"normal", CIPHERS_NORMAL, NULL},
    {"compat", CIPHERS_COMPAT, NULL},
    {"legacy", CIPHERS_COMPAT, NULL},
    {"all", CIPHERS_ALL, NULL},
    {"insecure", CIPHERS_ALL, NULL},
};

#define N_CIPHER_SHORTCUTS (sizeof cipher_shortcuts / sizeof cipher_shortcuts[0])

struct protocol_word {
    const char *name;
    int min, max; /* the range of versions the word stands for */
};

/* PgBouncer's tls_protocols words. */
static const struct protocol_word protocol_words[] = {
    {"secure", TLS1_2_VERSION, TLS1_3_VERSION},
    {"default", TLS1_2_VERSION, TLS1_3_VERSION},
    {"all", TLS1_VERSION, TLS1_3_VERSION},
    {"legacy", TLS1_VERSION, TLS1_3_VERSION},
    {"tlsv1", TLS1_VERSION, TLS1_VERSION},
    {"tlsv1.0", TLS1_VERSION, TLS1_VERSION},
    {"tlsv1.1", TLS1_1_VERSION, TLS1_1_VERSION},
    {"tlsv1.2", TLS1_2_VERSION, TLS1_2_VERSION},
    {"tlsv1.3", TLS1_3_VERSION, TLS1_3_VERSION},
};

#define N_PROTOCOL_WORDS (sizeof protocol_words / sizeof protocol_words[0])

/* The versions a tls_protocols list can name, in order; a list must name a range of them. */
static const int known_versions[] = {TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION};

#define N_KNOWN_VERSIONS (sizeof known_versions / sizeof known_versions[0])

static const char *const mode_names[] = {
    [TLS_MODE_DISABLE] = "disable",     [TLS_MODE_ALLOW] = "allow",
    [TLS_MODE_PREFER] = "prefer",       [TLS_MODE_REQUIRE] = "require",
    [TLS_MODE_VERIFY_CA] = "verify-ca", [TLS_MODE_VERIFY_FULL] = "verify-full",
};

#define N_MODES (sizeof mode_names / sizeof mode_names[0])

/* ---- errors ---------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t err_len, const char *fmt,
                                                      ...)
{
    va_list ap;

    /* Whatever OpenSSL queued has been read or is of no use now; leave nothing for the next
     * SSL_get_error on this thread to misread. */
    ERR_clear_error();
    if (err == NULL || err_len == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -1;
}

/* The reason OpenSSL gives for its first queued error (the cause; later ones only say which
 * call failed), for a message. Error strings never hold key material. */
static const char *openssl_reason(void)
{
    unsigned long code = ERR_peek_error();
    const char *reason = code != 0 ? ERR_reason_error_string(code) : NULL;

    return reason != NULL ? reason : "unknown OpenSSL error";
}

/* Error messages quote what was written, but never more than a short, one-line piece of it. */
static const char *shown(const char *value, char *buf, size_t cap)
{
    size_t n = 0;

    while (value[n] != '\0' && value[n] != '\n' && value[n] != '\r' && n + 4 < cap &&
           n < SHOWN_VALUE_MAX)
        n++;
    memcpy(buf, value, n);
    strcpy(buf + n, value[n] != '\0' ? "..." : "");
    return buf;
}

/*
 * fopen() first so that a missing or unreadable file is reported in the system's words
 * ("No such file or directory") rather than OpenSSL's.
 */
static int check_readable(const char *prefix, const char *suffix, const char *path, char *err,
                          size_t err_len)
{
    FILE *file = fopen(path, "r");

    if (file == NULL)
        return fail(err, err_len, "%s_%s %s: %s", prefix, suffix, path, strerror(errno));
    fclose(file);
    return 0;
}

/* Encrypted keys are refused instead of prompting on a terminal for a passphrase. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    return 0;
}

/* What a file OpenSSL refused holds, for a message that says what is wrong with it. */
struct pem_contents {
    bool any;         /* a "-----BEGIN" line at all (else DER, or no certificate file) */
    bool certificate; /* -----BEGIN CERTIFICATE----- or TRUSTED CERTIFICATE */
    bool private_key; /* -----BEGIN ... PRIVATE KEY----- */
    bool encrypted;   /* a key under a passphrase */
};

static struct pem_contents look_into(const char *path)
{
    struct pem_contents seen = {false, false, false, false};
    char line[256];
    FILE *file = fopen(path, "r");

    if (file == NULL)
        return seen;
    while (fgets(line, sizeof line, file) != NULL) {
        bool begin = strncmp(line, "-----BEGIN ", 11) == 0;

        seen.any |= begin;
        seen.certificate |= begin && strstr(line, "CERTIFICATE-----") != NULL;
        seen.private_key |= begin && strstr(line, "PRIVATE KEY-----") != NULL;
        seen.encrypted |= (begin || strncmp(line, "Proc-Type:", 10) == 0) &&
                          strstr(line, "ENCRYPTED") != NULL;
    }
    explicit_bzero(line, sizeof line); /* a line of a key file is key material */
    fclose(file);
    return seen;
}

enum pem_wanted {
    WANT_CERTIFICATES,
    WANT_PRIVATE_KEY,
};

/* "could not load ...", said as precisely as the file allows. */
static int load_failed(const char *prefix, const char *suffix, const char *path,
                       enum pem_wanted wanted, char *err, size_t err_len)
{
    struct pem_contents seen = look_into(path);
    const char *what = wanted == WANT_PRIVATE_KEY      ? "the private key"
                       : strcmp(suffix, "ca_file") == 0 ? "CA certificates"
                                                        : "a certificate";

    if (!seen.any)
        return fail(err, err_len, "%s_%s %s: could not load %s: the file holds no PEM data "
                    "(no -----BEGIN line)", prefix, suffix, path, what);
    if (wanted == WANT_PRIVATE_KEY && seen.encrypted)
        return fail(err, err_len, "%s_%s %s: could not load %s: it is encrypted, and sluice "
                    "cannot ask for a passphrase; store it unencrypted, readable by sluice only",
                    prefix, suffix, path, what);
    if (wanted == WANT_PRIVATE_KEY && !seen.private_key)
        return fail(err, err_len, "%s_%s %s: could not load %s: the file holds no private key",
                    prefix, suffix, path, what);
    if (wanted == WANT_CERTIFICATES && !seen.certificate)
        return fail(err, err_len, "%s_%s %s: could not load %s: the file holds no certificate",
                    prefix, suffix, path, what);
    return fail(err, err_len, "%s_%s %s: could not load %s: %s", prefix, suffix, path, what,
                openssl_reason());
}

/* ---- modes, protocols, ciphers --------------------------------------------------------- */

bool tls_parse_mode(const char *text, enum tls_mode *mode)
{
    if (text == NULL) {
        *mode = TLS_MODE_DISABLE;
        return true;
    }
    for (size_t i = 0; i < N_MODES; i++) {
        if (strcasecmp(text, mode_names[i]) == 0) {
            *mode = (enum tls_mode)i;
            return true;
        }
    }
    return false;
}

static const struct protocol_word *find_protocol_word(const char *word)
{
    for (size_t i = 0; i < N_PROTOCOL_WORDS; i++)
        if (strcasecmp(word, protocol_words[i].name) == 0)
            return &protocol_words[i];
    return NULL;
}

static int version_index(int version)
{
    for (size_t i = 0; i < N_KNOWN_VERSIONS; i++)
        if (known_versions[i] == version)
            return (int)i;
    return -1;
}

static bool is_protocol_separator(char c)
{
    return c == ',' || c == ':' || c == ' ' || c == '\t';
}

/* Marks in wanted[] the versions each word of a tls_protocols list names. */
static int collect_protocol_versions(const char *prefix, const char *text,
                                     bool wanted[N_KNOWN_VERSIONS], char *err, size_t err_len)
{
    char word[SHOWN_VALUE_MAX + 4];

    for (const char *c = text; *c != '\0';) {
        const struct protocol_word *found;
        size_t n = 0;

        while (is_protocol_separator(*c))
            c++;
        while (c[n] != '\0' && !is_protocol_separator(c[n]))
            n++;
        if (n == 0)
            break;
        if (n <= SHOWN_VALUE_MAX) {
            memcpy(word, c, n);
            word[n] = '\0';
        } else {
            memcpy(word, c, SHOWN_VALUE_MAX);
            strcpy(word + SHOWN_VALUE_MAX, "...");
        }
        c += n;
        found = find_protocol_word(word);
        if (found == NULL)
            return fail(err, err_len,
                        "%s_protocols: unknown protocol '%s'; expected secure, all, legacy or a "
                        "list of tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3",
                        prefix, word);
        for (int i = version_index(found->min); i <= version_index(found->max); i++)
            wanted[i] = true;
    }
    return 0;
}

/*
 * tls_protocols -> the range OpenSSL is to allow. OpenSSL 3 takes a minimum and a maximum
 * version only, so a list that skips a version in the middle is refused rather than widened.
 */
static int parse_protocols(const char *prefix, const char *text, int *min, int *max, char *err,
                           size_t err_len)
{
    bool wanted[N_KNOWN_VERSIONS] = {false};
    char buf[SHOWN_VALUE_MAX + 4];
    int lowest = -1, highest = -1;

    if (collect_protocol_versions(prefix, text, wanted, err, err_len) != 0)
        return -1;
    for (int i = 0; i < (int)N_KNOWN_VERSIONS; i++) {
        if (!wanted[i])
            continue;
        if (lowest >= 0 && highest != i - 1)
            return fail(err, err_len,
                        "%s_protocols: '%s' leaves out a version between two it allows; OpenSSL "
                        "can only allow a range such as tlsv1.2,tlsv1.3",
                        prefix, shown(text, buf, sizeof buf));
        if (lowest < 0)
            lowest = i;
        highest = i;
    }
    if (lowest < 0)
        return fail(err, err_len, "%s_protocols: no protocol given", prefix);
    *min = known_versions[lowest];
    *max = known_versions[highest];
    return 0;
}

/*
 * Protocol limits. TLS 1.0 and 1.1 may be allowed here, but OpenSSL 3's default security level
 * still refuses them unless the cipher string ends in ":@SECLEVEL=0".
 */
static int apply_protocols(SSL_CTX *ctx, const struct side_settings *side, char *err,
                           size_t err_len)
{
    int min, max;

    if (parse_protocols(side->prefix, side->protocols != NULL ? side->protocols : "secure", &min,
                        &max, err, err_len) != 0)
        return -1;
    if (SSL_CTX_set_min_proto_version(ctx, min) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, max) != 1)
        return fail(err, err_len, "%s_protocols: %s", side->prefix, openssl_reason());
    return 0;
}

static const struct cipher_shortcut *find_cipher_shortcut(const char *text)
{
    for (size_t i = 0; i < N_CIPHER_SHORTCUTS; i++)
        if (strcasecmp(text, cipher_shortcuts[i].name) == 0)
            return &cipher_shortcuts[i];
    return NULL;
}

/*
 * Splits an OpenSSL cipher string into TLS 1.3 suite names (they start with "TLS_") and the
 * rest, so that "TLS_AES_128_GCM_SHA256:ECDHE+AESGCM" restricts both protocol generations.
 * Both outputs have room for all of text.
 */
static void split_cipher_text(const char *text, char *ciphers, char *suites)
{
    size_t nc = 0, ns = 0;

    for (const char *c = text; *c != '\0';) {
        const char *start;
        size_t n;

        while (*c == ':' || *c == ',' || *c == ' ')
            c++;
        start = c;
        while (*c != '\0' && *c != ':' && *c != ',' && *c != ' ')
            c++;
        n = (size_t)(c - start);
        if (n == 0)
            break;
        if (n > 4 && strncmp(start, "TLS_", 4) == 0) {
            if (ns > 0)
                suites[ns++] = ':';
            memcpy(suites + ns, start, n);
            ns += n;
        } else {
            if (nc > 0)
                ciphers[nc++] = ':';
            memcpy(ciphers + nc, start, n);
            nc += n;
        }
    }
    ciphers[nc] = '\0';
    suites[ns] = '\0';
}

static int set_ciphers(SSL_CTX *ctx, const char *prefix, const char *shown_text,
                       const char *ciphers, const char *suites, char *err, size_t err_len)
{
    char buf[SHOWN_VALUE_MAX + 4];

    if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, suites != NULL ? suites : OSSL_default_ciphersuites()) != 1)
        return fail(err, err_len, "%s_ciphers: no cipher matches '%s'", prefix,
                    shown(shown_text, buf, sizeof buf));
    return 0;
}

static int apply_ciphers(SSL_CTX *ctx, const struct side_settings *side, char *err,
                         size_t err_len)
{
    const char *text = side->ciphers != NULL ? side->ciphers : "default";
    const struct cipher_shortcut *shortcut = find_cipher_shortcut(text);
    size_t len = strlen(text);
    char *ciphers, *suites;
    int rc;

    if (shortcut != NULL)
        return set_ciphers(ctx, side->prefix, text, shortcut->ciphers, shortcut->suites, err,
                           err_len);
    ciphers = malloc(len + 1);
    suites = malloc(len + 1);
    if (ciphers == NULL || suites == NULL) {
        free(ciphers);
        free(suites);
        return fail(err, err_len, "%s_ciphers: out of memory", side->prefix);
    }
    split_cipher_text(text, ciphers, suites);
    /* A string of TLS 1.3 suites only leaves TLS 1.2 at the secure default, and vice versa. */
    rc = set_ciphers(ctx, side->prefix, text, ciphers[0] != '\0' ? ciphers : CIPHERS_SECURE,
                     suites[0] != '\0' ? suites : NULL, err, err_len);
    free(ciphers);
    free(suites);
    return rc;
}

/* ---- certificates ---------------------------------------------------------------------- */

static bool is_key_mismatch(unsigned long code)
{
    return ERR_GET_LIB(code) == ERR_LIB_X509 &&
           (ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH ||
            ERR_GET_REASON(code) == X509_R_KEY_TYPE_MISMATCH);
}

static int key_mismatch(const struct side_settings *side, char *err, size_t err_len)
{
    return fail(err, err_len, "%s_key_file %s does not match %s_cert_file %s", side->prefix,
                side->key_file, side->prefix, side->cert_file);
}

/* The certificate chain and its private key; both files must be given. */
static int load_certificate_and_key(SSL_CTX *ctx, const struct side_settings *side, char *err,
                                    size_t err_len)
{
    if (check_readable(side->prefix, "cert_file", side->cert_file, err, err_len) != 0)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, side->cert_file) != 1)
        return load_failed(side->prefix, "cert_file", side->cert_file, WANT_CERTIFICATES,
                           err, err_len);
    if (check_readable(side->prefix, "key_file", side->key_file, err, err_len) != 0)
        return -1;
    if (SSL_CTX_use_PrivateKey_file(ctx, side->key_file, SSL_FILETYPE_PEM) != 1) {
        if (is_key_mismatch(ERR_peek_error()))
            return key_mismatch(side, err, err_len);
        return load_failed(side->prefix, "key_file", side->key_file, WANT_PRIVATE_KEY, err,
                           err_len);
    }
    /* A key of another type than the certificate's is accepted above into a slot of its own. */
    if (SSL_CTX_check_private_key(ctx) != 1)
        return key_mismatch(side, err, err_len);
    return 0;
}

static int load_ca_file(SSL_CTX *ctx, const char *prefix, const char *path, char *err,
                        size_t err_len)
{
    if (check_readable(prefix, "ca_file", path, err, err_len) != 0)
        return -1;
    if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1)
        return load_failed(prefix, "ca_file", path, WANT_CERTIFICATES, err, err_len);
    return 0;
}

/* ---- contexts -------------------------------------------------------------------------- */

/* What both sides share: protocol limits, ciphers, groups, and no renegotiation ever. */
static SSL_CTX *new_context(const SSL_METHOD *method, const struct side_settings *side,
                            const char *groups, char *err, size_t err_len)
{
    SSL_CTX *ctx = SSL_CTX_new(method);

    if (ctx == NULL) {
        fail(err, err_len, "%s: could not create a TLS context: %s", side->prefix,
             openssl_reason());
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /*
     * RELEASE_BUFFERS: an idle connection holds no read or write buffer (about 34 KB each),
     * and thousands of idle clients are normal. ACCEPT_MOVING_WRITE_BUFFER: a write retried
     * after WANT_WRITE may come from a different address once the evbuffer has moved.
     */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase);
    if (apply_protocols(ctx, side, err, err_len) != 0 ||
        apply_ciphers(ctx, side, err, err_len) != 0)
        goto failed;
    if (SSL_CTX_set1_groups_list(ctx, groups) != 1) {
        fail(err, err_len, "%s: could not set key exchange groups %s: %s", side->prefix, groups,
             openssl_reason());
        goto failed;
    }
    return ctx;

failed:
    SSL_CTX_free(ctx);
    return NULL;
}

/*
 * As PostgreSQL 17 does: a client that offers ALPN must offer "postgresql" (a TLS connection
 * meant for another protocol is refused); a client that offers none is let through.
 */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                       const unsigned char *in, unsigned int in_len, void *arg)
{
    unsigned char *selected = NULL;

    if (SSL_select_next_proto(&selected, out_len, alpn_postgresql, ALPN_POSTGRESQL_LEN, in,
                              in_len) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

/* sluice as the TLS server its clients connect to. */
static SSL_CTX *build_client_side(const struct side_settings *side, enum tls_mode mode,
                                  char *err, size_t err_len)
{
    SSL_CTX *ctx;

    if (side->key_file == NULL || side->cert_file == NULL) {
        fail(err, err_len, "%s_sslmode %s needs %s_key_file and %s_cert_file", side->prefix,
             mode_names[mode], side->prefix, side->prefix);
        return NULL;
    }
    if (mode >= TLS_MODE_VERIFY_CA && side->ca_file == NULL) {
        fail(err, err_len, "%s_sslmode %s needs %s_ca_file to check client certificates",
             side->prefix, mode_names[mode], side->prefix);
        return NULL;
    }
    ctx = new_context(TLS_server_method(), side, CLIENT_SIDE_GROUPS, err, err_len);
    if (ctx == NULL)
        return NULL;
    if (load_certificate_and_key(ctx, side, err, err_len) != 0)
        goto failed;
    if (mode >= TLS_MODE_VERIFY_CA) {
        STACK_OF(X509_NAME) *names;

        if (load_ca_file(ctx, side->prefix, side->ca_file, err, err_len) != 0)
            goto failed;
        /* Named in the CertificateRequest, so a client holding several certificates picks. */
        names = SSL_load_client_CA_file(side->ca_file);
        if (names != NULL)
            SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    /* Clients that resume skip the certificate signature and key exchange: tickets for
     * TLS 1.3, the server-side session cache (bounded by OpenSSL) for TLS 1.2. */
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_num_tickets(ctx, TICKETS_PER_HANDSHAKE);
    if (SSL_CTX_set_session_id_context(ctx, session_id_context,
                                       sizeof session_id_context - 1) != 1) {
        fail(err, err_len, "%s: could not set the session id context: %s", side->prefix,
             openssl_reason());
        goto failed;
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    ERR_clear_error();
    return ctx;

failed:
    SSL_CTX_free(ctx);
    return NULL;
}

/* sluice as PostgreSQL's TLS client. */
static SSL_CTX *build_server_side(const struct side_settings *side, enum tls_mode mode,
                                  char *err, size_t err_len)
{
    SSL_CTX *ctx;

    if ((side->key_file == NULL) != (side->cert_file == NULL)) {
        fail(err, err_len, "%s_key_file and %s_cert_file go together: give both or neither",
             side->prefix, side->prefix);
        return NULL;
    }
    ctx = new_context(TLS_client_method(), side, SERVER_SIDE_GROUPS, err, err_len);
    if (ctx == NULL)
        return NULL;
    if (side->cert_file != NULL && load_certificate_and_key(ctx, side, err, err_len) != 0)
        goto failed;
    if (mode >= TLS_MODE_VERIFY_CA) {
        if (side->ca_file != NULL) {
            if (load_ca_file(ctx, side->prefix, side->ca_file, err, err_len) != 0)
                goto failed;
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            /* As PgBouncer: without a CA file, the system's trusted certificates. */
            fail(err, err_len, "%s_ca_file: not set, and the system CA certificates could not "
                 "be loaded: %s", side->prefix, openssl_reason());
            goto failed;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    /* PostgreSQL 17 needs it for direct TLS and checks it when offered; older ones ignore it.
     * (This one call returns 0 on success.) */
    if (SSL_CTX_set_alpn_protos(ctx, alpn_postgresql, ALPN_POSTGRESQL_LEN) != 0) {
        fail(err, err_len, "%s: could not set ALPN: %s", side->prefix, openssl_reason());
        goto failed;
    }
    ERR_clear_error();
    return ctx;

failed:
    SSL_CTX_free(ctx);
    return NULL;
}

static int parse_side_mode(const struct side_settings *side, enum tls_mode *mode, char *err,
                           size_t err_len)
{
    char buf[SHOWN_VALUE_MAX + 4];

    if (tls_parse_mode(side->sslmode, mode))
        return 0;
    return fail(err, err_len,
                "%s_sslmode: unknown mode '%s'; expected disable, allow, prefer, require, "
                "verify-ca or verify-full",
                side->prefix, shown(side->sslmode, buf, sizeof buf));
}

int tls_contexts_load(const struct config *cfg, struct tls_contexts *out, char *err,
                      size_t err_len)
{
    const struct side_settings client_side = {
        "client_tls",          cfg->client_tls_sslmode,   cfg->client_tls_key_file,
        cfg->client_tls_cert_file, cfg->client_tls_ca_file, cfg->client_tls_protocols,
        cfg->client_tls_ciphers,
    };
    const struct side_settings server_side = {
        "server_tls",          cfg->server_tls_sslmode,   cfg->server_tls_key_file,
        cfg->server_tls_cert_file, cfg->server_tls_ca_file, cfg->server_tls_protocols,
        cfg->server_tls_ciphers,
    };
    struct tls_contexts built = {TLS_MODE_DISABLE, TLS_MODE_DISABLE, NULL, NULL};

    /* On failure *out holds nothing to free, whatever it held before. */
    memset(out, 0, sizeof *out);
    if (parse_side_mode(&client_side, &built.client_mode, err, err_len) != 0 ||
        parse_side_mode(&server_side, &built.server_mode, err, err_len) != 0)
        return -1;
    if (built.client_mode != TLS_MODE_DISABLE) {
        built.client_ctx = build_client_side(&client_side, built.client_mode, err, err_len);
        if (built.client_ctx == NULL)
            return -1;
    }
    if (built.server_mode != TLS_MODE_DISABLE) {
        built.server_ctx = build_server_side(&server_side, built.server_mode, err, err_len);
        if (built.server_ctx == NULL) {
            SSL_CTX_free(built.client_ctx);
            return -1;
        }
    }
    *out = built;
    return 0;
}

void tls_contexts_free(struct tls_contexts *tls)
{
    if (tls == NULL)
        return;
    /* Connections made from these contexts hold references and keep them alive. */
    SSL_CTX_free(tls->client_ctx);
    SSL_CTX_free(tls->server_ctx);
    tls->client_ctx = NULL;
    tls->server_ctx = NULL;
    tls->client_mode = TLS_MODE_DISABLE;
    tls->server_mode = TLS_MODE_DISABLE;
}

/* ---- connections ----------------------------------------------------------------------- */

SSL *tls_new_client_ssl(const struct tls_contexts *tls)
{
    SSL *ssl;

    if (tls == NULL || tls->client_ctx == NULL)
        return NULL;
    ssl = SSL_new(tls->client_ctx);
    if (ssl == NULL) {
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

static bool is_ip_address(const char *host)
{
    struct in6_addr address; /* large enough for either family */

    return inet_pton(AF_INET, host, &address) == 1 || inet_pton(AF_INET6, host, &address) == 1;
}

/* verify-full: the certificate must name host, as a DNS name or as an IP address. */
static bool expect_host(SSL *ssl, const char *host, bool is_ip)
{
    if (is_ip)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1;
    /* libpq's rule: a wildcard stands for a whole left-most label, never part of one. */
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(ssl, host) == 1;
}

SSL *tls_new_server_ssl(const struct tls_contexts *tls, const char *host)
{
    bool has_host = host != NULL && host[0] != '\0' && host[0] != '/';
    bool is_ip = has_host && is_ip_address(host);
    SSL *ssl;

    if (tls == NULL || tls->server_ctx == NULL)
        return NULL;
    /* Nothing to check the certificate against (no host, or a unix socket): refuse. */
    if (tls->server_mode == TLS_MODE_VERIFY_FULL && !has_host)
        return NULL;
    ssl = SSL_new(tls->server_ctx);
    if (ssl == NULL)
        goto failed;
    /* SNI carries host names only (RFC 6066); an address is never sent. */
    if (has_host && !is_ip && SSL_set_tlsext_host_name(ssl, host) != 1)
        goto failed;
    if (tls->server_mode == TLS_MODE_VERIFY_FULL && !expect_host(ssl, host, is_ip))
        goto failed;
    SSL_set_connect_state(ssl);
    return ssl;

failed:
    SSL_free(ssl);
    ERR_clear_error();
    return NULL;
}

void tls_describe(SSL *ssl, char *buf, size_t buf_len)
{
    const SSL_CIPHER *cipher;

    if (buf == NULL || buf_len == 0)
        return;
    buf[0] = '\0';
    if (ssl == NULL || !SSL_is_init_finished(ssl))
        return;
    cipher = SSL_get_current_cipher(ssl);
    snprintf(buf, buf_len, "%s/%s", SSL_get_version(ssl),
             cipher != NULL ? SSL_CIPHER_get_name(cipher) : "unknown");
}

const char *tls_verify_failure(SSL *ssl)
{
    long result;

    if (ssl == NULL)
        return NULL;
    result = SSL_get_verify_result(ssl);
    if (result == X509_V_OK)
        return NULL;
    return X509_verify_cert_error_string(result);
}
