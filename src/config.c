/*
 * config.c: reads sluice.ini into one typed, validated struct config. inih splits the lines; a
 * reader of our own feeds it the file from memory, a whole line at a time, so that no line is ever
 * cut at inih's fixed 200-byte line buffer. [databases] and [users] values are libpq-style
 * keyword=value strings parsed here, as are [peers] values. The [sluice] table below is the one list of settings: the
 * admin console's SHOW CONFIG and SET read and change them through it.
 */
#include "errbuf.h"
#include "config.h"
#include "cancel.h"
#include "secret.h"
#include "tls.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_FILE_SIZE (64u * 1024 * 1024)
#define MAX_SECONDS 1e9          /* ~31 years: keeps every timeout representable as a timeval */
#define SHOWN_VALUE_MAX 60       /* longest piece of a value quoted back in an error message */
#define KEYWORD_MAX 32           /* longer [databases] keywords are unknown by definition */
#define UTF8_BOM "\xEF\xBB\xBF"
#define SET_PATH "SET"          /* what a value given to config_set_setting is parsed as */
#define FALLBACK_DATABASE "*"   /* the [databases] line for names not listed */
/*
 * What inih is handed for a line too long for its buffer: the name and value are taken from our
 * own split of that line instead. Which lines were substituted is tracked by line number, never
 * by looking for this text, so a file that contains it means nothing special.
 */
#define LONG_LINE_STAND_IN "\x01=\x01"

enum section {
    SECTION_NONE,
    SECTION_SLUICE, /* [sluice], or [pgbouncer] so that PgBouncer files move over unchanged */
    SECTION_DATABASES,
    SECTION_USERS,
    SECTION_PEERS,
};

enum line_kind {
    LINE_BLANK, /* empty or a comment */
    LINE_SECTION,
    LINE_ENTRY,
};

/* One line of the file, split the way inih splits it. Pointers go into parser.line. */
struct line_parts {
    enum line_kind kind;
    const char *section; /* LINE_SECTION */
    const char *name;    /* LINE_ENTRY */
    /*
     * LINE_ENTRY. In [sluice]: trimmed, inline comment removed (as inih does). In [databases] and
     * [users]: everything after the '=', untrimmed: the keyword=value parser finds the comment
     * itself, so that a quoted "a ;b" keeps its ';'.
     */
    const char *value;
};

enum value_kind {
    VALUE_STRING,          /* stored as written, "" included */
    VALUE_OPTIONAL_STRING, /* stored as written; "" means not set (NULL) */
    VALUE_INT,
    VALUE_FILE_MODE,       /* octal, like chmod */
    VALUE_BOOL,
    VALUE_SECONDS,
    VALUE_POOL_MODE,
    VALUE_AUTH_TYPE,
    VALUE_CHOICE,          /* one of setting.choices, stored as the canonical spelling */
    VALUE_TLS_PROTOCOLS,
    VALUE_WORKERS,         /* "auto" (stored as 0) or a number of threads */
};

struct setting {
    const char *name;
    enum value_kind kind;
    size_t offset;               /* of the field in struct config */
    int min, max;                /* VALUE_INT, VALUE_FILE_MODE */
    const char *const *choices;  /* VALUE_CHOICE, NULL-terminated */
    const char *default_text;    /* parsed like a value from the file; NULL: field stays zero */
};

static const char *const tls_sslmodes[] = {"disable", "allow", "prefer", "require",
                                           "verify-ca", "verify-full", NULL};
static const char *const pinning_modes[] = {"on", "off", "reject", NULL};
static const char *const steering_modes[] = {"auto", "on", "off", NULL};
static const char *const syslog_facilities[] = {"auth", "authpriv", "daemon", "user",
                                                "local0", "local1", "local2", "local3",
                                                "local4", "local5", "local6", "local7", NULL};
static const char *const tls_protocol_words[] = {"secure", "all", "legacy", "default", "tlsv1",
                                                 "tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3",
                                                 NULL};

/* A role that can log in and whose password has not expired (rolvaliduntil), as PostgreSQL checks. */
#define AUTH_QUERY_DEFAULT                                                                         \
    "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin "  \
    "AND (rolvaliduntil IS NULL OR rolvaliduntil > pg_catalog.now())"

#define AT(field) offsetof(struct config, field)
#define STRING(name, dflt) {#name, VALUE_STRING, AT(name), 0, 0, NULL, dflt}
#define OPTIONAL(name) {#name, VALUE_OPTIONAL_STRING, AT(name), 0, 0, NULL, NULL}
#define INTEGER(name, lo, hi, dflt) {#name, VALUE_INT, AT(name), lo, hi, NULL, dflt}
#define BOOLEAN(name, dflt) {#name, VALUE_BOOL, AT(name), 0, 0, NULL, dflt}
#define SECONDS(name, dflt) {#name, VALUE_SECONDS, AT(name), 0, 0, NULL, dflt}
#define CHOICE(name, list, dflt) {#name, VALUE_CHOICE, AT(name), 0, 0, list, dflt}
#define TLS_PROTOCOLS(name) {#name, VALUE_TLS_PROTOCOLS, AT(name), 0, 0, NULL, "secure"}

/* Every [sluice] setting with its default; names and meanings follow PgBouncer's where it has one. */
static const struct setting settings[] = {
    STRING(listen_addr, "127.0.0.1"),
    INTEGER(listen_port, 1, 65535, "6432"),
    STRING(unix_socket_dir, "/tmp"),
    {"unix_socket_mode", VALUE_FILE_MODE, AT(unix_socket_mode), 0, 0777, NULL, "0777"},
    BOOLEAN(so_reuseport, "off"),
    {"workers", VALUE_WORKERS, AT(workers), 1, CONFIG_MAX_WORKERS, NULL, "auto"},
    CHOICE(steer_by_cpu, steering_modes, "auto"),
    BOOLEAN(io_uring, "on"),
    {"pool_mode", VALUE_POOL_MODE, AT(pool_mode), 0, 0, NULL, "session"},
    INTEGER(default_pool_size, 1, INT_MAX, "20"),
    INTEGER(min_pool_size, 0, INT_MAX, "0"),
    INTEGER(max_client_conn, 1, INT_MAX, "100"),
    INTEGER(max_db_connections, 0, INT_MAX, "0"),
    INTEGER(max_user_connections, 0, INT_MAX, "0"),
    INTEGER(max_db_client_connections, 0, INT_MAX, "0"),
    INTEGER(max_user_client_connections, 0, INT_MAX, "0"),
    INTEGER(reserve_pool_size, 0, INT_MAX, "0"),
    SECONDS(reserve_pool_timeout, "5"),
    {"auth_type", VALUE_AUTH_TYPE, AT(auth_type), 0, 0, NULL, "md5"},
    OPTIONAL(auth_file),
    OPTIONAL(auth_user),
    STRING(auth_query, AUTH_QUERY_DEFAULT),
    OPTIONAL(auth_dbname),
    SECONDS(auth_query_cache_ttl, "60"),
    OPTIONAL(admin_users),
    OPTIONAL(stats_users),

    SECONDS(query_wait_timeout, "120"),
    SECONDS(client_idle_timeout, "0"),
    SECONDS(client_login_timeout, "60"),
    SECONDS(autodb_idle_timeout, "3600"),
    SECONDS(idle_transaction_timeout, "0"),
    SECONDS(query_timeout, "0"),
    SECONDS(server_idle_timeout, "600"),
    SECONDS(server_lifetime, "3600"),
    SECONDS(server_connect_timeout, "15"),
    SECONDS(server_login_retry, "15"),
    SECONDS(shutdown_timeout, "30"),
    STRING(server_reset_query, "DISCARD ALL"),
    BOOLEAN(server_reset_query_always, "off"),
    STRING(server_check_query, "select 1"),
    SECONDS(server_check_delay, "30"),
    OPTIONAL(ignore_startup_parameters),

    BOOLEAN(log_connections, "on"),
    BOOLEAN(log_disconnections, "on"),
    BOOLEAN(log_pooler_errors, "on"),
    INTEGER(verbose, 0, 9, "0"),
    BOOLEAN(syslog, "off"),
    STRING(syslog_ident, "sluice"),
    CHOICE(syslog_facility, syslog_facilities, "daemon"),
    SECONDS(stats_period, "60"),
    OPTIONAL(pidfile),
    INTEGER(max_packet_size, 1024, INT_MAX, "2147483647"),
    INTEGER(pkt_buf, 512, 1024 * 1024, "16384"),
    INTEGER(tcp_keepalive, 0, 1, "1"),

    CHOICE(client_tls_sslmode, tls_sslmodes, "disable"),
    OPTIONAL(client_tls_key_file),
    OPTIONAL(client_tls_cert_file),
    OPTIONAL(client_tls_ca_file),
    TLS_PROTOCOLS(client_tls_protocols),
    STRING(client_tls_ciphers, "default"),
    CHOICE(server_tls_sslmode, tls_sslmodes, "disable"),
    OPTIONAL(server_tls_ca_file),
    OPTIONAL(server_tls_key_file),
    OPTIONAL(server_tls_cert_file),
    TLS_PROTOCOLS(server_tls_protocols),
    STRING(server_tls_ciphers, "default"),

    OPTIONAL(auth_token_keys),
    OPTIONAL(auth_token_region),
    OPTIONAL(auth_token_endpoints),
    SECONDS(auth_token_clock_skew, "60"),
    BOOLEAN(auth_token_allow_unix_socket, "off"),
    OPTIONAL(server_auth_token_region),
    OPTIONAL(server_auth_token_credentials),
    STRING(server_auth_token_profile, "default"),

    OPTIONAL(metrics_listen_addr),
    INTEGER(metrics_port, 0, 65535, "0"),
    INTEGER(max_prepared_statements, 0, INT_MAX, "200"),
    CHOICE(pinning, pinning_modes, "on"),
    INTEGER(peer_id, 0, CANCEL_PEER_ID_MAX, "0"),
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

struct parser {
    struct config *cfg;
    const char *path;
    const char *text; /* the whole file, NUL-terminated */
    size_t pos;       /* start of the next line in text */
    int lineno;
    enum section section;
    char *line;       /* the current line, split in place */
    size_t line_cap;
    struct line_parts current;
    int substituted_line; /* line number whose stand-in inih is reading; 0: none */
    int unhandled_entry_line; /* an entry line inih has not called the handler for yet; 0: none */
    int setting_line[N_SETTINGS]; /* where each [sluice] setting was last given; 0: default */
    int *user_lines;              /* the line of each cfg->users entry */
    int *peer_lines;              /* the line of each cfg->peers entry */
    bool failed;
    char *err;
    size_t err_len;
};

/* ---- errors ---------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static bool fail_at(struct parser *p, int line,
                                                          const char *fmt, ...)
{
    va_list ap;
    int used;

    if (p->failed)
        return false;
    p->failed = true;
    if (p->err == NULL || p->err_len == 0)
        return false;
    if (line > 0)
        used = snprintf(p->err, p->err_len, "%s:%d: ", p->path, line);
    else
        used = snprintf(p->err, p->err_len, "%s: ", p->path);
    if (used < 0 || (size_t)used >= p->err_len)
        return false;
    va_start(ap, fmt);
    vsnprintf(p->err + used, p->err_len - (size_t)used, fmt, ap);
    va_end(ap);
    return false;
}

/* Error messages quote what was written, but never more than a short, one-line piece of it. */
static const char *shown(const char *value, char *buf, size_t cap)
{
    size_t i;
    size_t limit = cap - 4;

    for (i = 0; value[i] != '\0' && i < limit; i++)
        buf[i] = isprint((unsigned char)value[i]) ? value[i] : '?';
    if (value[i] != '\0' && i >= 3)
        memcpy(buf + i - 3, "...", 3);
    buf[i] = '\0';
    return buf;
}

static bool fail_value(struct parser *p, const char *context, const char *name, const char *value,
                       const char *expected)
{
    char buf[SHOWN_VALUE_MAX + 4];

    return fail_at(p, p->lineno, "%s%s: invalid value '%s' (expected %s)", context, name,
                   shown(value, buf, sizeof buf), expected);
}

static char *copy_string(struct parser *p, const char *s)
{
    char *copy = strdup(s);

    if (copy == NULL)
        fail_at(p, p->lineno, "out of memory");
    return copy;
}

/* ---- values ---------------------------------------------------------------------------- */

static bool is_word(const char *text, const char *word)
{
    return strcasecmp(text, word) == 0;
}

static bool parse_integer(const char *text, int base, long long min, long long max, int *out)
{
    const char *digits = text[0] == '-' ? text + 1 : text;
    long long n;
    char *end;

    if (*digits == '\0')
        return false;
    for (const char *c = digits; *c != '\0'; c++)
        if (*c < '0' || *c >= '0' + base)
            return false;
    errno = 0;
    n = strtoll(text, &end, base);
    if (errno != 0 || *end != '\0' || n < min || n > max)
        return false;
    *out = (int)n;
    return true;
}

static bool parse_bool(const char *text, bool *out)
{
    if (is_word(text, "1") || is_word(text, "on") || is_word(text, "true") || is_word(text, "yes")) {
        *out = true;
        return true;
    }
    if (is_word(text, "0") || is_word(text, "off") || is_word(text, "false") ||
        is_word(text, "no")) {
        *out = false;
        return true;
    }
    return false;
}

/* Plain decimal seconds ("30", "0.5", ".25"): no signs, exponents, hex, inf or nan. */
static bool parse_seconds(const char *text, double *out)
{
    size_t digits = 0;
    const char *c = text;
    char *end;
    double seconds;

    for (; isdigit((unsigned char)*c); c++)
        digits++;
    if (*c == '.')
        for (c++; isdigit((unsigned char)*c); c++)
            digits++;
    if (*c != '\0' || digits == 0)
        return false;
    errno = 0;
    seconds = strtod(text, &end);
    if (errno != 0 || *end != '\0' || seconds > MAX_SECONDS)
        return false;
    *out = seconds;
    return true;
}

static bool parse_pool_mode(struct parser *p, const char *context, const char *name,
                            const char *text, enum pool_mode *out)
{
    if (is_word(text, "session")) {
        *out = POOL_MODE_SESSION;
        return true;
    }
    if (is_word(text, "transaction")) {
        *out = POOL_MODE_TRANSACTION;
        return true;
    }
    if (is_word(text, "statement"))
        return fail_at(p, p->lineno,
                       "%s%s: statement pooling is not supported (use session or transaction)",
                       context, name);
    return fail_value(p, context, name, text, "session or transaction");
}

static bool parse_auth_type(struct parser *p, const char *context, const char *name,
                            const char *text, enum auth_type *out)
{
    static const struct {
        const char *word;
        enum auth_type type;
    } types[] = {
        {"trust", AUTH_TYPE_TRUST}, {"md5", AUTH_TYPE_MD5},     {"scram-sha-256", AUTH_TYPE_SCRAM},
        {"plain", AUTH_TYPE_PLAIN}, {"token", AUTH_TYPE_TOKEN},
    };
    static const char *const pgbouncer_only[] = {"any", "hba", "cert", "pam", "ldap"};
    const char *expected = "trust, md5, scram-sha-256, plain or token";

    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (is_word(text, types[i].word)) {
            *out = types[i].type;
            return true;
        }
    }
    for (size_t i = 0; i < sizeof pgbouncer_only / sizeof pgbouncer_only[0]; i++)
        if (is_word(text, pgbouncer_only[i]))
            return fail_at(p, p->lineno, "%s%s: '%s' is not supported by sluice (expected %s)",
                           context, name, pgbouncer_only[i], expected);
    return fail_value(p, context, name, text, expected);
}

static const char *find_choice(const char *const *choices, const char *text)
{
    for (size_t i = 0; choices[i] != NULL; i++)
        if (is_word(text, choices[i]))
            return choices[i];
    return NULL;
}

/* "one of: a, b, c" for an error message. */
static void describe_choices(const char *const *choices, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "one of:");

    for (size_t i = 0; choices[i] != NULL && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s %s", i > 0 ? "," : "", choices[i]);
}

/* PgBouncer's tls_protocols: words from tls_protocol_words separated by commas, colons or spaces. */
static bool valid_tls_protocols(const char *text)
{
    char word[16];
    size_t n = 0;
    bool any = false;

    for (const char *c = text;; c++) {
        bool separator = *c == '\0' || *c == ',' || *c == ':' || isspace((unsigned char)*c);

        if (!separator) {
            if (n + 1 >= sizeof word)
                return false;
            word[n++] = *c;
            continue;
        }
        if (n > 0) {
            word[n] = '\0';
            if (find_choice(tls_protocol_words, word) == NULL)
                return false;
            any = true;
            n = 0;
        }
        if (*c == '\0')
            return any;
    }
}

static bool replace_string(struct parser *p, char **field, const char *text)
{
    char *copy = copy_string(p, text);

    if (copy == NULL)
        return false;
    free(*field);
    *field = copy;
    return true;
}

/* ---- [sluice] -------------------------------------------------------------------------- */

static const struct setting *find_setting(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (is_word(name, settings[i].name))
            return &settings[i];
    return NULL;
}

static bool apply_setting(struct parser *p, const struct setting *s, const char *text)
{
    void *field = (char *)p->cfg + s->offset;
    char expected[160];
    const char *choice;

    switch (s->kind) {
    case VALUE_STRING:
        return replace_string(p, field, text);
    case VALUE_OPTIONAL_STRING:
        if (*text != '\0')
            return replace_string(p, field, text);
        free(*(char **)field);
        *(char **)field = NULL;
        return true;
    case VALUE_INT:
        if (parse_integer(text, 10, s->min, s->max, field))
            return true;
        snprintf(expected, sizeof expected, "an integer %d-%d", s->min, s->max);
        return fail_value(p, "", s->name, text, expected);
    case VALUE_FILE_MODE:
        if (parse_integer(text, 8, s->min, s->max, field))
            return true;
        snprintf(expected, sizeof expected, "an octal file mode 0-0%o", (unsigned)s->max);
        return fail_value(p, "", s->name, text, expected);
    case VALUE_BOOL:
        if (parse_bool(text, field))
            return true;
        return fail_value(p, "", s->name, text, "on/off, true/false, yes/no or 1/0");
    case VALUE_SECONDS:
        if (parse_seconds(text, field))
            return true;
        return fail_value(p, "", s->name, text, "a number of seconds such as 30 or 0.5");
    case VALUE_POOL_MODE:
        return parse_pool_mode(p, "", s->name, text, field);
    case VALUE_AUTH_TYPE:
        return parse_auth_type(p, "", s->name, text, field);
    case VALUE_CHOICE:
        choice = find_choice(s->choices, text);
        if (choice != NULL)
            return replace_string(p, field, choice);
        describe_choices(s->choices, expected, sizeof expected);
        return fail_value(p, "", s->name, text, expected);
    case VALUE_WORKERS:
        if (is_word(text, "auto")) {
            *(int *)field = 0;
            return true;
        }
        if (parse_integer(text, 10, s->min, s->max, field))
            return true;
        snprintf(expected, sizeof expected, "auto or an integer %d-%d", s->min, s->max);
        return fail_value(p, "", s->name, text, expected);
    case VALUE_TLS_PROTOCOLS:
        if (valid_tls_protocols(text))
            return replace_string(p, field, text);
        return fail_value(p, "", s->name, text,
                          "secure, all, legacy or a list of tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3");
    }
    return fail_at(p, p->lineno, "%s: unhandled setting kind", s->name);
}

static bool handle_sluice_setting(struct parser *p, const char *name, const char *value)
{
    const struct setting *s = find_setting(name);
    char buf[SHOWN_VALUE_MAX + 4];

    if (s == NULL)
        return fail_at(p, p->lineno, "%s: unknown setting", shown(name, buf, sizeof buf));
    p->setting_line[s - settings] = p->lineno;
    return apply_setting(p, s, value);
}

static bool apply_defaults(struct parser *p)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].default_text != NULL && !apply_setting(p, &settings[i],
                                                               settings[i].default_text))
            return false;
    return true;
}

/* ---- [databases] and [users]: libpq-style keyword=value strings ------------------------ */

struct keyword_reader {
    const char *start;  /* the value as inih would start it: right after the '=' */
    const char *cursor;
    char key[KEYWORD_MAX];
    char *value;        /* owned by the caller once returned */
    bool value_quoted;
};

/* Text after a value that is no keyword=value: most often an unquoted value holding a space. */
static void fail_value_after(struct parser *p, const char *context, const char *prev_key)
{
    fail_at(p, p->lineno,
            "%sexpected keyword=value after %s (a value holding spaces must be single-quoted: "
            "%s='...')",
            context, prev_key, prev_key);
}

/*
 * Reads the next pair the way libpq reads a connection string: spaces around '=' are allowed, a
 * value holding spaces is single-quoted, and a backslash takes the next character literally (so
 * \' and \\ inside quotes). A ';' after a space outside quotes starts a comment, as anywhere else
 * in the file; inside quotes it is part of the value, so a password may hold " ;".
 * Returns 1 with a pair, 0 at the end, -1 on error. context names the line's entry, prev_key the
 * pair before (never the value: a value could be a password).
 */
static int read_keyword_pair(struct parser *p, struct keyword_reader *r, const char *context,
                             const char *prev_key)
{
    const char *s = r->cursor;
    size_t key_len = 0;
    char *out;

    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0' || (*s == ';' && s > r->start && isspace((unsigned char)s[-1])))
        return 0;
    while (isalnum((unsigned char)s[key_len]) || s[key_len] == '_')
        key_len++;
    if (key_len == 0 || key_len >= sizeof r->key) {
        if (prev_key == NULL)
            fail_at(p, p->lineno, "%sexpected keyword=value", context);
        else
            fail_value_after(p, context, prev_key);
        return -1;
    }
    memcpy(r->key, s, key_len);
    r->key[key_len] = '\0';
    s += key_len;
    while (isspace((unsigned char)*s))
        s++;
    if (*s != '=') {
        if (prev_key == NULL)
            fail_at(p, p->lineno, "%s%s: expected '=' after the keyword", context, r->key);
        else
            fail_value_after(p, context, prev_key);
        return -1;
    }
    for (s++; isspace((unsigned char)*s);)
        s++;
    r->value = out = malloc(strlen(s) + 1);
    if (out == NULL) {
        fail_at(p, p->lineno, "out of memory");
        return -1;
    }
    r->value_quoted = *s == '\'';
    if (r->value_quoted) {
        for (s++; *s != '\''; s++) {
            if (*s == '\\' && s[1] != '\0')
                s++;
            if (*s == '\0') {
                *out = '\0';
                fail_at(p, p->lineno, "%s%s: quoted value has no closing quote", context, r->key);
                return -1;
            }
            *out++ = *s;
        }
        s++;
        if (*s != '\0' && !isspace((unsigned char)*s)) {
            *out = '\0';
            fail_at(p, p->lineno, "%s%s: expected a space after the closing quote", context,
                    r->key);
            return -1;
        }
    } else {
        for (; *s != '\0' && !isspace((unsigned char)*s); s++) {
            if (*s == '\\' && s[1] != '\0')
                s++;
            *out++ = *s;
        }
    }
    *out = '\0';
    r->cursor = s;
    return 1;
}

static bool is_secret_keyword(const char *key)
{
    return strcmp(key, "password") == 0;
}

static const char *const database_keywords[] = {
    "host", "port", "dbname", "user", "password", "pool_size", "min_pool_size",
    "max_db_connections", "pool_mode", "connect_query", "application_name", "reserve_pool",
    "reserve_pool_size", "max_db_client_connections", "server_auth_token", "auth_user",
    "auth_query", "auth_dbname", "target_session_attrs", NULL,
};
static const char *const peer_keywords[] = {"host", "port", "pool_size", NULL};
static const char *const user_keywords[] = {"pool_mode", "auth_type", "max_user_connections",
                                            "pool_size", "max_user_client_connections", NULL};

static bool is_keyword(const char *const *keywords, const char *key)
{
    for (size_t i = 0; keywords[i] != NULL; i++)
        if (strcmp(keywords[i], key) == 0)
            return true;
    return false;
}

/* Sets one known keyword of a [databases] line (target: struct config_database). */
static bool set_database_keyword(struct parser *p, void *target, const char *context,
                                 const char *key, const char *value)
{
    struct config_database *db = target;
    char expected[64];
    char **string_field = NULL;
    int *int_field = NULL;
    int min = 0, max = INT_MAX;

    if (strcmp(key, "pool_mode") == 0)
        return parse_pool_mode(p, context, key, value, &db->pool_mode);
    if (strcmp(key, "target_session_attrs") == 0) {
        if (hostlist_parse_target(value, &db->target_session_attrs) == 0)
            return true;
        return fail_value(p, context, key, value, "any, read-write, read-only, primary or standby; "
                                                  "sluice does not implement prefer-standby");
    }
    if (strcmp(key, "port") == 0 && strchr(value, ',') != NULL) {
        /* libpq's port list, one per host; the first stands for them where one port is shown */
        char first[16];
        snprintf(first, sizeof first, "%.*s", (int)strcspn(value, ","), value);
        if (!parse_integer(first, 10, 1, 65535, &db->port))
            return fail_value(p, context, key, value, "a port 1-65535 or a comma-separated list of them");
        return replace_string(p, &db->port_list, value);
    }
    if (is_secret_keyword(key)) {
        char *copy = copy_string(p, value);

        if (copy == NULL)
            return false;
        free_secret(db->password);
        db->password = copy;
        return true;
    }
    if (strcmp(key, "server_auth_token") == 0) {
        if (parse_bool(value, &db->server_auth_token))
            return true;
        return fail_value(p, context, key, value, "on or off");
    }
    if (strcmp(key, "host") == 0)
        string_field = &db->host;
    else if (strcmp(key, "dbname") == 0)
        string_field = &db->dbname;
    else if (strcmp(key, "user") == 0)
        string_field = &db->user;
    else if (strcmp(key, "connect_query") == 0)
        string_field = &db->connect_query;
    else if (strcmp(key, "application_name") == 0)
        string_field = &db->application_name;
    else if (strcmp(key, "auth_user") == 0)
        string_field = &db->auth_user;
    else if (strcmp(key, "auth_query") == 0)
        string_field = &db->auth_query;
    else if (strcmp(key, "auth_dbname") == 0)
        string_field = &db->auth_dbname;
    else if (strcmp(key, "port") == 0)
        int_field = &db->port, min = 1, max = 65535;
    else if (strcmp(key, "pool_size") == 0)
        int_field = &db->pool_size, min = 1;
    else if (strcmp(key, "min_pool_size") == 0)
        int_field = &db->min_pool_size;
    else if (strcmp(key, "max_db_connections") == 0)
        int_field = &db->max_db_connections;
    else if (strcmp(key, "reserve_pool") == 0 || strcmp(key, "reserve_pool_size") == 0)
        int_field = &db->reserve_pool; /* PgBouncer's older and newer names */
    else if (strcmp(key, "max_db_client_connections") == 0)
        int_field = &db->max_db_client_connections;

    if (string_field != NULL)
        return replace_string(p, string_field, value);
    if (int_field == NULL)
        return fail_at(p, p->lineno, "%sunknown keyword '%s'", context, key);
    if (parse_integer(value, 10, min, max, int_field))
        return true;
    snprintf(expected, sizeof expected, "an integer %d-%d", min, max);
    return fail_value(p, context, key, value, expected);
}

/* Sets one known keyword of a [users] line (target: struct config_user). */
static bool set_user_keyword(struct parser *p, void *target, const char *context,
                             const char *key, const char *value)
{
    struct config_user *user = target;

    if (strcmp(key, "pool_mode") == 0)
        return parse_pool_mode(p, context, key, value, &user->pool_mode);
    if (strcmp(key, "auth_type") == 0)
        return parse_auth_type(p, context, key, value, &user->auth_type);
    if (strcmp(key, "max_user_connections") == 0) {
        if (parse_integer(value, 10, 0, INT_MAX, &user->max_user_connections))
            return true;
        return fail_value(p, context, key, value, "an integer 0-2147483647");
    }
    if (strcmp(key, "pool_size") == 0) {
        if (parse_integer(value, 10, 1, INT_MAX, &user->pool_size))
            return true;
        return fail_value(p, context, key, value, "an integer 1-2147483647");
    }
    if (strcmp(key, "max_user_client_connections") == 0) {
        if (parse_integer(value, 10, 0, INT_MAX, &user->max_user_client_connections))
            return true;
        return fail_value(p, context, key, value, "an integer 0-2147483647");
    }
    return fail_at(p, p->lineno, "%sunknown keyword '%s'", context, key);
}

/* Sets one keyword of a [peers] line (target: struct config_peer). */
static bool set_peer_keyword(struct parser *p, void *target, const char *context,
                             const char *key, const char *value)
{
    struct config_peer *peer = target;

    if (strcmp(key, "host") == 0)
        return replace_string(p, &peer->host, value);
    if (strcmp(key, "port") == 0) {
        if (parse_integer(value, 10, 1, 65535, &peer->port))
            return true;
        return fail_value(p, context, key, value, "an integer 1-65535");
    }
    /* PgBouncer queues forwarded cancels per peer up to pool_size; sluice sends each at once. */
    return fail_at(p, p->lineno, "%s%s: not supported by sluice (each cancel is forwarded at once)",
                   context, key);
}

typedef bool (*keyword_setter)(struct parser *p, void *target, const char *context,
                               const char *key, const char *value);

static void free_pair_value(struct keyword_reader *r)
{
    if (r->value != NULL && is_secret_keyword(r->key))
        explicit_bzero(r->value, strlen(r->value));
    free(r->value);
    r->value = NULL;
}

/*
 * Calls set() for each pair of a [databases] or [users] value. An unknown keyword is named in the
 * error, except right after an unquoted password, where it is most likely the rest of a password
 * that holds a space.
 */
static bool read_keyword_pairs(struct parser *p, const char *text, const char *context,
                               const char *const *keywords, keyword_setter set, void *target)
{
    struct keyword_reader r = {.start = text, .cursor = text};
    char prev_key[KEYWORD_MAX] = "";
    bool after_bare_secret = false;
    int got;

    while ((got = read_keyword_pair(p, &r, context, prev_key[0] ? prev_key : NULL)) > 0) {
        bool done;

        if (!is_keyword(keywords, r.key)) {
            if (after_bare_secret)
                fail_value_after(p, context, prev_key);
            else
                fail_at(p, p->lineno, "%sunknown keyword '%s'", context, r.key);
            free_pair_value(&r);
            return false;
        }
        if (r.value[0] == '\0') {
            free_pair_value(&r);
            return fail_at(p, p->lineno, "%s%s: empty value (leave the keyword out instead)",
                           context, r.key);
        }
        done = set(p, target, context, r.key, r.value);
        free_pair_value(&r);
        if (!done)
            return false;
        after_bare_secret = is_secret_keyword(r.key) && !r.value_quoted;
        snprintf(prev_key, sizeof prev_key, "%s", r.key);
    }
    if (got < 0)
        free_pair_value(&r);
    return got == 0;
}

static void free_database_fields(struct config_database *db)
{
    free(db->name);
    free(db->host);
    free(db->dbname);
    free(db->user);
    free_secret(db->password);
    free(db->connect_query);
    free(db->application_name);
    free(db->auth_user);
    free(db->auth_query);
    free(db->auth_dbname);
    free(db->port_list);
}

/* libpq's rules for host and port lists: no empty entry, one port or one per host. */
static bool check_host_list(struct parser *p, const char *context, const struct config_database *db)
{
    struct hostlist hosts;
    char err[256];

    if (hostlist_parse(db->host, db->port_list, db->port, &hosts, err, sizeof err) != 0)
        return fail_at(p, p->lineno, "%s%s", context, err);
    hostlist_free(&hosts);
    return true;
}

static bool handle_database(struct parser *p, const char *name, const char *value)
{
    struct config *cfg = p->cfg;
    struct config_database db = {.port = 5432, .pool_size = -1, .min_pool_size = -1,
                                 .reserve_pool = -1};
    char context[SHOWN_VALUE_MAX + 32];
    char buf[SHOWN_VALUE_MAX + 4];
    struct config_database *slot;

    if (*name == '\0')
        return fail_at(p, p->lineno, "[databases]: missing database name before '='");
    snprintf(context, sizeof context, "[databases] %s: ", shown(name, buf, sizeof buf));
    db.name = copy_string(p, name);
    if (db.name != NULL && read_keyword_pairs(p, value, context, database_keywords, set_database_keyword, &db)) {
        if (db.host == NULL)
            db.host = copy_string(p, "127.0.0.1");
        /* The "*" fallback's backend database is the name each client asks for. */
        if (db.dbname == NULL && strcmp(name, FALLBACK_DATABASE) != 0)
            db.dbname = copy_string(p, name);
        if (db.host != NULL)
            check_host_list(p, context, &db);
    }
    if (p->failed) {
        free_database_fields(&db);
        return false;
    }
    /* Given twice, the later line wins, as for settings (and as in PgBouncer). */
    slot = (struct config_database *)config_find_database(cfg, name);
    if (slot == NULL) {
        struct config_database *grown =
            realloc(cfg->databases, (cfg->n_databases + 1) * sizeof *grown);

        if (grown == NULL) {
            free_database_fields(&db);
            return fail_at(p, p->lineno, "out of memory");
        }
        cfg->databases = grown;
        slot = &cfg->databases[cfg->n_databases++];
    } else {
        free_database_fields(slot);
    }
    *slot = db;
    return true;
}

static bool handle_user(struct parser *p, const char *name, const char *value)
{
    struct config *cfg = p->cfg;
    struct config_user user = {.pool_size = -1};
    char context[SHOWN_VALUE_MAX + 32];
    char buf[SHOWN_VALUE_MAX + 4];
    struct config_user *slot;

    if (*name == '\0')
        return fail_at(p, p->lineno, "[users]: missing user name before '='");
    snprintf(context, sizeof context, "[users] %s: ", shown(name, buf, sizeof buf));
    if (!read_keyword_pairs(p, value, context, user_keywords, set_user_keyword, &user))
        return false;
    user.name = copy_string(p, name);
    if (user.name == NULL)
        return false;
    slot = (struct config_user *)config_find_user(cfg, name);
    if (slot == NULL) {
        struct config_user *grown = realloc(cfg->users, (cfg->n_users + 1) * sizeof *grown);
        int *lines = grown != NULL ? realloc(p->user_lines, (cfg->n_users + 1) * sizeof *lines)
                                   : NULL;

        if (grown != NULL)
            cfg->users = grown;
        if (lines == NULL) {
            free(user.name);
            return fail_at(p, p->lineno, "out of memory");
        }
        p->user_lines = lines;
        slot = &cfg->users[cfg->n_users++];
    } else {
        free(slot->name);
    }
    *slot = user;
    p->user_lines[slot - cfg->users] = p->lineno;
    return true;
}

static bool handle_peer(struct parser *p, const char *name, const char *value)
{
    struct config *cfg = p->cfg;
    struct config_peer peer = {.port = 6432};
    char context[SHOWN_VALUE_MAX + 32];
    char buf[SHOWN_VALUE_MAX + 4];
    struct config_peer *slot;

    snprintf(context, sizeof context, "[peers] %s: ", shown(name, buf, sizeof buf));
    if (!parse_integer(name, 10, 1, CANCEL_PEER_ID_MAX, &peer.id))
        return fail_at(p, p->lineno, "%sa peer id is an integer 1-%d", context, CANCEL_PEER_ID_MAX);
    if (!read_keyword_pairs(p, value, context, peer_keywords, set_peer_keyword, &peer)) {
        free(peer.host);
        return false;
    }
    if (peer.host == NULL)
        return fail_at(p, p->lineno, "%shost is required", context);
    slot = (struct config_peer *)config_find_peer(cfg, peer.id);
    if (slot == NULL) {
        struct config_peer *grown = realloc(cfg->peers, (cfg->n_peers + 1) * sizeof *grown);
        int *lines = grown != NULL ? realloc(p->peer_lines, (cfg->n_peers + 1) * sizeof *lines)
                                   : NULL;

        if (grown != NULL)
            cfg->peers = grown;
        if (lines == NULL) {
            free(peer.host);
            return fail_at(p, p->lineno, "out of memory");
        }
        p->peer_lines = lines;
        slot = &cfg->peers[cfg->n_peers++];
    } else {
        free(slot->host);
    }
    *slot = peer;
    p->peer_lines[slot - cfg->peers] = p->lineno;
    return true;
}

/* ---- lines ----------------------------------------------------------------------------- */

/* These three mirror inih r55's own helpers, so that a line we split ourselves splits the same. */
static char *trim_right(char *s)
{
    char *end = s + strlen(s);

    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static char *skip_space(char *s)
{
    while (*s != '\0' && isspace((unsigned char)*s))
        s++;
    return s;
}

/* First of chars, or the ';' of an inline comment (one that follows whitespace), or the end. */
static char *find_chars_or_comment(char *s, const char *chars)
{
    bool was_space = false;

    while (*s != '\0' && (chars == NULL || strchr(chars, *s) == NULL) &&
           !(was_space && *s == ';')) {
        was_space = isspace((unsigned char)*s);
        s++;
    }
    return s;
}

static enum section section_named(const char *name)
{
    if (is_word(name, "sluice") || is_word(name, "pgbouncer"))
        return SECTION_SLUICE;
    if (is_word(name, "databases"))
        return SECTION_DATABASES;
    if (is_word(name, "users"))
        return SECTION_USERS;
    if (is_word(name, "peers"))
        return SECTION_PEERS;
    return SECTION_NONE;
}

/* Splits start (a line, trimmed on both sides) in place into p->current. */
static bool split_line(struct parser *p, char *start)
{
    char buf[SHOWN_VALUE_MAX + 4];
    char *end, *value;

    memset(&p->current, 0, sizeof p->current);
    if (*start == '\0' || *start == ';' || *start == '#') {
        p->current.kind = LINE_BLANK;
        return true;
    }
    if (*start == '[') {
        end = find_chars_or_comment(start + 1, "]");
        if (*end != ']')
            return fail_at(p, p->lineno, "section header has no closing ']'");
        *end = '\0';
        p->current.kind = LINE_SECTION;
        p->current.section = start + 1;
        p->section = section_named(start + 1);
        if (p->section == SECTION_NONE)
            return fail_at(p, p->lineno,
                           "unknown section [%s] (expected [sluice], [databases] or [users])",
                           shown(start + 1, buf, sizeof buf));
        return true;
    }
    end = find_chars_or_comment(start, "=:");
    if (*end != '=' && *end != ':') {
        if (strncmp(start, "%include", 8) == 0)
            return fail_at(p, p->lineno, "%%include is not supported");
        return fail_at(p, p->lineno, "expected 'name = value'");
    }
    *end = '\0';
    p->current.kind = LINE_ENTRY;
    p->current.name = trim_right(start);
    value = end + 1;
    if (p->section == SECTION_SLUICE || p->section == SECTION_NONE) {
        *find_chars_or_comment(value, NULL) = '\0';
        value = trim_right(skip_space(value));
    }
    p->current.value = value;
    return true;
}

/* Takes the next line of p->text into p->line; false at the end of the text. */
static bool next_line(struct parser *p)
{
    const char *start = p->text + p->pos;
    const char *newline;
    size_t len;

    if (*start == '\0')
        return false;
    newline = strchr(start, '\n');
    len = newline != NULL ? (size_t)(newline - start) : strlen(start);
    p->pos += len + (newline != NULL);
    p->lineno++;
    if (p->lineno == 1 && len >= 3 && memcmp(start, UTF8_BOM, 3) == 0) {
        start += 3; /* a UTF-8 byte order mark, as inih skips it */
        len -= 3;
    }
    if (len + 1 > p->line_cap) {
        char *grown = realloc(p->line, len + 1);

        if (grown == NULL)
            return fail_at(p, p->lineno, "out of memory");
        p->line = grown;
        p->line_cap = len + 1;
    }
    memcpy(p->line, start, len);
    p->line[len] = '\0';
    return true;
}

/*
 * inih's reader: hands it one whole line per call. A line that fits inih's buffer goes as it is,
 * less its leading whitespace (inih would take an indented line as the continuation of the line
 * before, which no PgBouncer user expects); a longer one goes as a short stand-in, and the handler
 * uses our own split of it. Every line is split by us too, to know its section and to check inih.
 */
static char *read_line_for_inih(char *buf, int size, void *stream)
{
    struct parser *p = stream;
    char *start;
    size_t len;

    if (p->unhandled_entry_line > 0)
        fail_at(p, p->unhandled_entry_line, "could not read this line whole");
    if (p->failed || !next_line(p))
        return NULL;
    start = skip_space(trim_right(p->line));
    len = strlen(start);
    if (size < (int)sizeof LONG_LINE_STAND_IN + 3) {
        fail_at(p, p->lineno, "line buffer of %d bytes is too small", size);
        return NULL;
    }
    /*
     * inih's buffer must hold the line, a '\n' it may look for, and the NUL. On line 1 inih drops
     * a leading byte order mark; one that came after spaces is text to us, so inih must not see it.
     */
    if (len + 3 <= (size_t)size && !(p->lineno == 1 && strncmp(start, UTF8_BOM, 3) == 0)) {
        memcpy(buf, start, len + 1);
        p->substituted_line = 0;
    } else {
        memcpy(buf, LONG_LINE_STAND_IN, sizeof LONG_LINE_STAND_IN);
        p->substituted_line = p->lineno;
    }
    if (!split_line(p, start))
        return NULL;
    if (p->current.kind == LINE_ENTRY)
        p->unhandled_entry_line = p->lineno;
    else if (p->current.kind == LINE_BLANK)
        buf[0] = '\0';
    else if (p->current.kind == LINE_SECTION)
        snprintf(buf, (size_t)size, "[%s]", p->current.section);
    return buf;
}

/*
 * inih's handler. For a line handed whole, inih's split must equal ours, and every line we split
 * as an entry must reach this handler exactly once: if not, the line was not read whole and the
 * load fails rather than run on a cut or skipped value.
 */
static int handle_inih_entry(void *user, const char *section, const char *name, const char *value)
{
    struct parser *p = user;
    char buf[SHOWN_VALUE_MAX + 4];

    if (p->failed)
        return 0;
    if (p->current.kind != LINE_ENTRY || p->unhandled_entry_line != p->lineno)
        return fail_at(p, p->lineno, "could not read this line whole");
    p->unhandled_entry_line = 0;
    if (p->substituted_line != p->lineno &&
        (strcmp(name, p->current.name) != 0 ||
         (p->section == SECTION_SLUICE && strcmp(value, p->current.value) != 0)))
        return fail_at(p, p->lineno, "could not read this line whole");
    (void)section; /* ours is p->section: inih cuts section names at 49 characters */

    switch (p->section) {
    case SECTION_SLUICE:
        return handle_sluice_setting(p, p->current.name, p->current.value);
    case SECTION_DATABASES:
        return handle_database(p, p->current.name, p->current.value);
    case SECTION_USERS:
        return handle_user(p, p->current.name, p->current.value);
    case SECTION_PEERS:
        return handle_peer(p, p->current.name, p->current.value);
    case SECTION_NONE:
        break;
    }
    return fail_at(p, p->lineno, "%s: setting outside any section (start with [sluice])",
                   shown(p->current.name, buf, sizeof buf));
}

/* Kinds whose field is a heap string (char *), NULL when not set. */
static bool holds_string(enum value_kind kind)
{
    return kind == VALUE_STRING || kind == VALUE_OPTIONAL_STRING || kind == VALUE_CHOICE ||
           kind == VALUE_TLS_PROTOCOLS;
}

/* ---- checks across settings ------------------------------------------------------------ */

static int line_of(const struct parser *p, const char *setting_name)
{
    return p->setting_line[find_setting(setting_name) - settings];
}

/* A tls_sslmodes value that encrypts every backend connection (require or stronger). */
static bool server_tls_required(const struct config *cfg)
{
    enum tls_mode mode;
    return tls_parse_mode(cfg->server_tls_sslmode, &mode) && mode >= TLS_MODE_REQUIRE;
}

/* server_auth_token=on: a token is a bearer secret for 15 minutes, so it only travels over TLS. */
static bool check_server_auth_token(struct parser *p, const struct config_database *db)
{
    const struct config *cfg = p->cfg;

    if (!db->server_auth_token)
        return true;
    if (cfg->server_auth_token_region == NULL)
        return fail_at(p, 0, "[databases] %s: server_auth_token=on needs server_auth_token_region",
                       db->name);
    if (db->password != NULL)
        return fail_at(p, 0, "[databases] %s: server_auth_token=on and password= cannot be used "
                       "together (the token is the password)", db->name);
    if (db->host[0] == '/')
        return fail_at(p, 0, "[databases] %s: server_auth_token=on needs a TCP host (tokens are "
                       "sent only over TLS, and unix sockets do not use TLS)", db->name);
    if (!server_tls_required(cfg))
        return fail_at(p, line_of(p, "server_tls_sslmode"),
                       "[databases] %s: server_auth_token=on needs server_tls_sslmode = require, "
                       "verify-ca or verify-full (RDS accepts IAM tokens only over TLS; now '%s')",
                       db->name, cfg->server_tls_sslmode);
    return true;
}

static bool is_loopback_host(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
}

/*
 * A [peers] line for another id at this instance's own listening address: every cancel for that id
 * would come back here. Names are compared as written (no DNS look-up), which catches the usual
 * copy-and-paste slip.
 */
static bool is_own_address(const struct config *cfg, const struct config_peer *peer)
{
    const char *listen = cfg->listen_addr;

    if (peer->port != cfg->listen_port)
        return false;
    if (peer->host[0] == '/')
        return strcmp(peer->host, cfg->unix_socket_dir) == 0;
    if (config_list_contains(listen, peer->host))
        return true;
    return is_loopback_host(peer->host) &&
           (config_list_contains(listen, "*") || config_list_contains(listen, "0.0.0.0") ||
            config_list_contains(listen, "::") || config_list_contains(listen, "127.0.0.1") ||
            config_list_contains(listen, "localhost"));
}

/* peer_id and [peers] together. */
static bool check_peers(struct parser *p)
{
    const struct config *cfg = p->cfg;

    if (cfg->n_peers > 0 && cfg->peer_id == 0)
        return fail_at(p, p->peer_lines[0],
                       "[peers] is set but peer_id is 0 (peering off): give this instance its "
                       "peer_id (1-%d) in [sluice], or remove [peers]",
                       CANCEL_PEER_ID_MAX);
    if (cfg->peer_id > 0 && cfg->max_client_conn > (int)CANCEL_PEERED_MAX_CLIENTS)
        return fail_at(p, line_of(p, "max_client_conn"),
                       "max_client_conn: with peer_id set, cancel keys leave room for at most %u "
                       "clients per instance",
                       CANCEL_PEERED_MAX_CLIENTS);
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].id != cfg->peer_id && is_own_address(cfg, &cfg->peers[i]))
            return fail_at(p, p->peer_lines[i],
                           "[peers] %d: host=%s port=%d is this instance's own address, but its "
                           "peer_id is %d: cancels for peer %d would come back here",
                           cfg->peers[i].id, cfg->peers[i].host, cfg->peers[i].port, cfg->peer_id,
                           cfg->peers[i].id);
    return true;
}

/* Settings that only make sense together, checked once the whole file is read. */
static bool check_whole_config(struct parser *p)
{
    const struct config *cfg = p->cfg;
    bool token_ready = cfg->auth_token_keys != NULL && cfg->auth_token_region != NULL;

    if (strcmp(cfg->client_tls_sslmode, "disable") != 0 &&
        (cfg->client_tls_key_file == NULL || cfg->client_tls_cert_file == NULL))
        return fail_at(p, line_of(p, "client_tls_sslmode"),
                       "client_tls_sslmode: '%s' needs client_tls_key_file and "
                       "client_tls_cert_file",
                       cfg->client_tls_sslmode);
    if (cfg->auth_type == AUTH_TYPE_TOKEN && !token_ready)
        return fail_at(p, line_of(p, "auth_type"),
                       "auth_type: 'token' needs auth_token_keys and auth_token_region");
    for (size_t i = 0; i < cfg->n_users; i++)
        if (cfg->users[i].auth_type == AUTH_TYPE_TOKEN && !token_ready)
            return fail_at(p, p->user_lines[i],
                           "[users] %s: auth_type: 'token' needs auth_token_keys and "
                           "auth_token_region",
                           cfg->users[i].name);
    for (size_t i = 0; i < cfg->n_databases; i++)
        if (!check_server_auth_token(p, &cfg->databases[i]))
            return false;
    return check_peers(p);
}

/* ---- public ---------------------------------------------------------------------------- */

/* whole_file: check the settings together (a value given to SET is checked against the running
 * configuration instead). */
static int load_string(const char *text, const char *path, bool whole_file, struct config **out,
                       char *err, size_t err_len)
{
    struct parser p = {.path = path != NULL ? path : "(config)", .text = text,
                       .err = err, .err_len = err_len};
    int inih_result;

    if (err != NULL && err_len > 0)
        err[0] = '\0';
    *out = NULL;
    p.cfg = calloc(1, sizeof *p.cfg);
    if (p.cfg == NULL) {
        fail_at(&p, 0, "out of memory");
        return -1;
    }
    p.cfg->path = copy_string(&p, p.path);
    if (!p.failed && apply_defaults(&p)) {
        inih_result = ini_parse_stream(read_line_for_inih, &p, handle_inih_entry, &p);
        if (p.unhandled_entry_line > 0)
            fail_at(&p, p.unhandled_entry_line, "could not read this line whole");
        if (!p.failed && inih_result > 0)
            fail_at(&p, inih_result, "syntax error");
        else if (!p.failed && inih_result < 0)
            fail_at(&p, 0, "could not be parsed (inih error %d)", inih_result);
        if (!p.failed && whole_file)
            check_whole_config(&p);
    }
    free(p.line);
    free(p.user_lines);
    free(p.peer_lines);
    if (p.failed) {
        config_free(p.cfg);
        return -1;
    }
    *out = p.cfg;
    return 0;
}

int config_load_string(const char *text, const char *path, struct config **out, char *err,
                       size_t err_len)
{
    return load_string(text, path, true, out, err, err_len);
}

char *config_read_file(const char *path, size_t *len, char *err, size_t err_len)
{
    return config_read_file_stat(path, len, NULL, err, err_len);
}

char *config_read_file_stat(const char *path, size_t *len, struct stat *st, char *err,
                            size_t err_len)
{
    FILE *f;
    char *text = NULL;
    size_t used = 0, cap = 0;
    const char *why = NULL;
    int line = 1;

    f = fopen(path, "rb");
    if (f == NULL) {
        errbuf_set(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (st != NULL && fstat(fileno(f), st) != 0) {
        errbuf_set(err, err_len, "%s: cannot stat: %s", path, strerror(errno));
        fclose(f);
        return NULL;
    }
    for (;;) {
        size_t got;

        if (cap - used < 4096) {
            char *grown;

            cap = cap == 0 ? 8192 : cap * 2;
            grown = cap <= MAX_FILE_SIZE + 1 ? realloc(text, cap) : NULL;
            if (grown == NULL) {
                why = cap > MAX_FILE_SIZE + 1 ? "larger than 64 MiB" : "out of memory";
                break;
            }
            text = grown;
        }
        got = fread(text + used, 1, cap - used - 1, f);
        used += got;
        if (got == 0) {
            if (ferror(f))
                why = strerror(errno);
            break;
        }
    }
    fclose(f);
    if (why != NULL) {
        errbuf_set(err, err_len, "%s: cannot read: %s", path, why);
        free(text);
        return NULL;
    }
    text[used] = '\0';
    for (size_t i = 0; i < used; i++) {
        if (text[i] == '\n')
            line++;
        if (text[i] == '\0') {
            errbuf_set(err, err_len, "%s:%d: holds a NUL byte (not a text file?)", path, line);
            free(text);
            return NULL;
        }
    }
    if (len != NULL)
        *len = used;
    return text;
}

int config_load(const char *path, struct config **out, char *err, size_t err_len)
{
    char *text;
    int result;

    *out = NULL;
    text = config_read_file(path, NULL, err, err_len);
    if (text == NULL)
        return -1;
    result = config_load_string(text, path, out, err, err_len);
    free_secret(text); /* it may hold backend passwords */
    return result;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (holds_string(settings[i].kind))
            free(*(char **)((char *)cfg + settings[i].offset));
    for (size_t i = 0; i < cfg->n_databases; i++)
        free_database_fields(&cfg->databases[i]);
    free(cfg->databases);
    for (size_t i = 0; i < cfg->n_users; i++)
        free(cfg->users[i].name);
    free(cfg->users);
    for (size_t i = 0; i < cfg->n_peers; i++)
        free(cfg->peers[i].host);
    free(cfg->peers);
    free(cfg->path);
    free(cfg);
}

const struct config_database *config_find_database(const struct config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_databases; i++)
        if (strcmp(cfg->databases[i].name, name) == 0)
            return &cfg->databases[i];
    return NULL;
}

const struct config_peer *config_find_peer(const struct config *cfg, int id)
{
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].id == id)
            return &cfg->peers[i];
    return NULL;
}

const struct config_database *config_fallback_database(const struct config *cfg)
{
    return config_find_database(cfg, FALLBACK_DATABASE);
}

int config_database_copy_as(struct config_database *dst, const struct config_database *src,
                            const char *name)
{
    *dst = *src;
    dst->name = strdup(name);
    dst->host = src->host != NULL ? strdup(src->host) : NULL;
    dst->dbname = strdup(src->dbname != NULL ? src->dbname : name);
    dst->user = src->user != NULL ? strdup(src->user) : NULL;
    dst->password = src->password != NULL ? strdup(src->password) : NULL;
    dst->connect_query = src->connect_query != NULL ? strdup(src->connect_query) : NULL;
    dst->application_name = src->application_name != NULL ? strdup(src->application_name) : NULL;
    dst->port_list = src->port_list != NULL ? strdup(src->port_list) : NULL;
    if ((src->port_list != NULL && dst->port_list == NULL) || dst->name == NULL || dst->dbname == NULL || (src->host != NULL && dst->host == NULL) ||
        (src->user != NULL && dst->user == NULL) || (src->password != NULL && dst->password == NULL) ||
        (src->connect_query != NULL && dst->connect_query == NULL) ||
        (src->application_name != NULL && dst->application_name == NULL)) {
        config_database_clear(dst);
        return -1;
    }
    return 0;
}

void config_database_clear(struct config_database *db)
{
    free_database_fields(db);
    memset(db, 0, sizeof *db);
}

const struct config_user *config_find_user(const struct config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_users; i++)
        if (strcmp(cfg->users[i].name, name) == 0)
            return &cfg->users[i];
    return NULL;
}

enum pool_mode config_effective_pool_mode(const struct config *cfg,
                                          const struct config_database *db,
                                          const struct config_user *user)
{
    if (user != NULL && user->pool_mode != POOL_MODE_UNSET)
        return user->pool_mode;
    if (db != NULL && db->pool_mode != POOL_MODE_UNSET)
        return db->pool_mode;
    return cfg->pool_mode;
}

int config_effective_pool_size(const struct config *cfg, const struct config_database *db)
{
    if (db != NULL && db->pool_size >= 0)
        return db->pool_size;
    return cfg->default_pool_size;
}

int config_user_pool_size(const struct config *cfg, const struct config_database *db,
                          const struct config_user *user)
{
    if (db != NULL && db->pool_size >= 0)
        return db->pool_size;
    if (user != NULL && user->pool_size >= 0)
        return user->pool_size;
    return cfg->default_pool_size;
}

/* As PgBouncer: a database's or user's own limit when it sets one (above 0), else the global one. */
static int effective_limit(int own, int global)
{
    return own > 0 ? own : global;
}

int config_effective_max_db_connections(const struct config *cfg, const struct config_database *db)
{
    return effective_limit(db ? db->max_db_connections : 0, cfg->max_db_connections);
}

int config_effective_max_user_connections(const struct config *cfg, const struct config_user *user)
{
    return effective_limit(user ? user->max_user_connections : 0, cfg->max_user_connections);
}

int config_effective_max_db_client_connections(const struct config *cfg,
                                               const struct config_database *db)
{
    return effective_limit(db ? db->max_db_client_connections : 0, cfg->max_db_client_connections);
}

int config_effective_max_user_client_connections(const struct config *cfg,
                                                 const struct config_user *user)
{
    return effective_limit(user ? user->max_user_client_connections : 0,
                           cfg->max_user_client_connections);
}

int config_effective_reserve_pool(const struct config *cfg, const struct config_database *db)
{
    if (db != NULL && db->reserve_pool >= 0)
        return db->reserve_pool;
    return cfg->reserve_pool_size;
}

enum auth_type config_effective_auth_type(const struct config *cfg, const struct config_user *user)
{
    if (user != NULL && user->auth_type != AUTH_TYPE_UNSET)
        return user->auth_type;
    return cfg->auth_type;
}

const char *config_effective_auth_user(const struct config *cfg, const struct config_database *db)
{
    return db && db->auth_user ? db->auth_user : cfg->auth_user;
}

const char *config_effective_auth_query(const struct config *cfg, const struct config_database *db)
{
    return db && db->auth_query ? db->auth_query : cfg->auth_query;
}

const char *config_effective_auth_dbname(const struct config *cfg, const struct config_database *db)
{
    if (db && db->auth_dbname)
        return db->auth_dbname;
    if (cfg->auth_dbname)
        return cfg->auth_dbname;
    return db && db->dbname ? db->dbname : NULL;
}

bool config_list_contains(const char *list, const char *name)
{
    size_t name_len;

    if (list == NULL || name == NULL || *name == '\0')
        return false;
    name_len = strlen(name);
    while (*list != '\0') {
        const char *item = list, *end;

        while (isspace((unsigned char)*item))
            item++;
        end = strchr(item, ',');
        list = end != NULL ? end + 1 : item + strlen(item);
        if (end == NULL)
            end = item + strlen(item);
        while (end > item && isspace((unsigned char)end[-1]))
            end--;
        if ((size_t)(end - item) == name_len && memcmp(item, name, name_len) == 0)
            return true;
    }
    return false;
}

const char *config_pool_mode_name(enum pool_mode mode)
{
    switch (mode) {
    case POOL_MODE_SESSION:
        return "session";
    case POOL_MODE_TRANSACTION:
        return "transaction";
    case POOL_MODE_UNSET:
        break;
    }
    return "unset";
}

const char *config_auth_type_name(enum auth_type type)
{
    switch (type) {
    case AUTH_TYPE_TRUST:
        return "trust";
    case AUTH_TYPE_MD5:
        return "md5";
    case AUTH_TYPE_SCRAM:
        return "scram-sha-256";
    case AUTH_TYPE_PLAIN:
        return "plain";
    case AUTH_TYPE_TOKEN:
        return "token";
    case AUTH_TYPE_UNSET:
        break;
    }
    return "unset";
}

/* ---- one setting at a time (the admin console's SHOW CONFIG and SET) ------------------- */

size_t config_setting_count(void)
{
    return N_SETTINGS;
}

const char *config_setting_name(size_t i)
{
    return i < N_SETTINGS ? settings[i].name : NULL;
}

bool config_find_setting(const char *name, size_t *i)
{
    const struct setting *s = find_setting(name);

    if (s == NULL)
        return false;
    *i = (size_t)(s - settings);
    return true;
}

static void format_setting(const struct config *cfg, const struct setting *s, char *buf, size_t len)
{
    const void *field = (const char *)cfg + s->offset;
    const char *text;

    switch (s->kind) {
    case VALUE_STRING:
    case VALUE_OPTIONAL_STRING:
    case VALUE_CHOICE:
    case VALUE_TLS_PROTOCOLS:
        text = *(char *const *)field;
        snprintf(buf, len, "%s", text != NULL ? text : "");
        return;
    case VALUE_INT:
        snprintf(buf, len, "%d", *(const int *)field);
        return;
    case VALUE_WORKERS:
        if (*(const int *)field == 0)
            snprintf(buf, len, "auto");
        else
            snprintf(buf, len, "%d", *(const int *)field);
        return;
    case VALUE_FILE_MODE:
        snprintf(buf, len, "0%o", (unsigned)*(const int *)field);
        return;
    case VALUE_BOOL:
        snprintf(buf, len, "%d", *(const bool *)field ? 1 : 0);
        return;
    case VALUE_SECONDS:
        snprintf(buf, len, "%g", *(const double *)field);
        return;
    case VALUE_POOL_MODE:
        snprintf(buf, len, "%s", config_pool_mode_name(*(const enum pool_mode *)field));
        return;
    case VALUE_AUTH_TYPE:
        snprintf(buf, len, "%s", config_auth_type_name(*(const enum auth_type *)field));
        return;
    }
    buf[0] = '\0';
}

void config_format_setting(const struct config *cfg, size_t i, char *buf, size_t len)
{
    if (len == 0)
        return;
    if (i >= N_SETTINGS) {
        buf[0] = '\0';
        return;
    }
    format_setting(cfg, &settings[i], buf, len);
}

void config_format_setting_default(size_t i, char *buf, size_t len)
{
    struct config defaults = {0};
    struct parser p = {.cfg = &defaults, .path = "defaults"};
    const struct setting *s;

    if (len == 0)
        return;
    if (i >= N_SETTINGS) {
        buf[0] = '\0';
        return;
    }
    s = &settings[i];
    /* Parsed as config_load does, so the default reads exactly as a freshly loaded value. */
    if (s->default_text != NULL)
        apply_setting(&p, s, s->default_text);
    format_setting(&defaults, s, buf, len);
    if (holds_string(s->kind))
        free(*(char **)((char *)&defaults + s->offset));
}

/* Copies one setting's value from src to dst; strings are duplicated. false: out of memory. */
static bool copy_setting(struct config *dst, const struct config *src, const struct setting *s)
{
    void *to = (char *)dst + s->offset;
    const void *from = (const char *)src + s->offset;
    char *copy;

    switch (s->kind) {
    case VALUE_STRING:
    case VALUE_OPTIONAL_STRING:
    case VALUE_CHOICE:
    case VALUE_TLS_PROTOCOLS:
        copy = *(char *const *)from != NULL ? strdup(*(char *const *)from) : NULL;
        if (*(char *const *)from != NULL && copy == NULL)
            return false;
        free(*(char **)to);
        *(char **)to = copy;
        return true;
    case VALUE_INT:
    case VALUE_FILE_MODE:
    case VALUE_WORKERS:
        *(int *)to = *(const int *)from;
        return true;
    case VALUE_BOOL:
        *(bool *)to = *(const bool *)from;
        return true;
    case VALUE_SECONDS:
        *(double *)to = *(const double *)from;
        return true;
    case VALUE_POOL_MODE:
        *(enum pool_mode *)to = *(const enum pool_mode *)from;
        return true;
    case VALUE_AUTH_TYPE:
        *(enum auth_type *)to = *(const enum auth_type *)from;
        return true;
    }
    return false;
}

/* What check_whole_config would refuse in the running configuration with this one value. */
static bool fits_running_config(const struct config *cfg, const struct setting *s,
                                const struct config *parsed, char *err, size_t err_len)
{
    bool token_ready = cfg->auth_token_keys != NULL && cfg->auth_token_region != NULL;

    if (s->kind == VALUE_AUTH_TYPE && parsed->auth_type == AUTH_TYPE_TOKEN && !token_ready) {
        snprintf(err, err_len, "%s: 'token' needs auth_token_keys and auth_token_region", s->name);
        return false;
    }
    if (s->offset == offsetof(struct config, peer_id) && parsed->peer_id == 0 && cfg->n_peers > 0) {
        snprintf(err, err_len, "%s: 0 (peering off) while [peers] is set", s->name);
        return false;
    }
    if (s->offset == offsetof(struct config, max_client_conn) && cfg->peer_id > 0 &&
        parsed->max_client_conn > (int)CANCEL_PEERED_MAX_CLIENTS) {
        snprintf(err, err_len, "%s: with peer_id set, cancel keys leave room for at most %u clients",
                 s->name, CANCEL_PEERED_MAX_CLIENTS);
        return false;
    }
    return true;
}

/*
 * The value is parsed as the one line of a [sluice] section, so that it is accepted or refused
 * exactly as in the file. The message loses its "SET:2: " prefix: there is no file to point at.
 */
enum config_set_result config_set_setting(struct config *cfg, size_t i, const char *value,
                                          char *err, size_t err_len)
{
    struct config *parsed = NULL;
    const struct setting *s;
    const char *reason;
    size_t text_len;
    char *text;
    bool copied;

    if (i >= N_SETTINGS) {
        snprintf(err, err_len, "no such setting");
        return CONFIG_SET_INVALID;
    }
    s = &settings[i];
    if (strpbrk(value, "\r\n;#") != NULL) {
        snprintf(err, err_len, "%s: a value may not hold a line break, ';' or '#'", s->name);
        return CONFIG_SET_INVALID;
    }
    text_len = strlen("[sluice]\n = \n") + strlen(s->name) + strlen(value) + 1;
    text = malloc(text_len);
    if (text == NULL)
        return CONFIG_SET_OUT_OF_MEMORY;
    snprintf(text, text_len, "[sluice]\n%s = %s\n", s->name, value);
    if (load_string(text, SET_PATH, false, &parsed, err, err_len) != 0) {
        free(text);
        reason = err != NULL && err_len > 0 ? strstr(err, ": ") : NULL;
        if (reason != NULL && strncmp(err, SET_PATH ":", strlen(SET_PATH ":")) == 0)
            memmove(err, reason + 2, strlen(reason + 2) + 1);
        return CONFIG_SET_INVALID;
    }
    free(text);
    if (!fits_running_config(cfg, s, parsed, err, err_len)) {
        config_free(parsed);
        return CONFIG_SET_INVALID;
    }
    copied = copy_setting(cfg, parsed, s);
    config_free(parsed);
    return copied ? CONFIG_SET_DONE : CONFIG_SET_OUT_OF_MEMORY;
}
