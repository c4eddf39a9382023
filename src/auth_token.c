/*
 * auth_token.c: verifies RDS-style IAM auth tokens offline, and loads the key file that holds the
 * access keys allowed to sign them. The signature itself is computed by sigv4.c; this file owns the
 * token syntax, the policy checks, and which key may log in as which user.
 */
#include "auth_token.h"

#include "sigv4.h"

#include <errno.h>
#include <ini.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ANY_USER "*"
#define UTF8_BOM "\xEF\xBB\xBF"
#define RDS_CONNECT_ACTION "connect"
#define SIGNED_HEADERS_HOST_ONLY "host"
#define MAX_PORT 65535

/* ---- the key file ---- */

struct token_key {
    char *access_key_id;
    char *secret;
    char **users;
    size_t n_users;
    bool any_user;
    int line;                        /* where its section starts, for messages */
};

struct token_keyring {
    struct token_key *keys;
    size_t n_keys;
    size_t cap;
};

/* State shared by the line reader and the inih handler while one file is parsed. */
struct keyring_parser {
    struct token_keyring *ring;
    const char *path;
    FILE *file;
    char *line;                      /* the current physical line, from getline() */
    size_t line_cap;
    int lineno;
    int section_line;                /* line of the latest [section] header; 0: none yet */
    char *section_name;              /* its name, read whole (inih cuts names at 49 bytes) */
    bool section_has_settings;
    struct token_key *current;       /* key of the latest section, once a setting arrived */
    bool failed;
    char *err;
    size_t err_len;
};

static void parser_fail(struct keyring_parser *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error only, as "FILE:LINE: message". */
static void parser_fail(struct keyring_parser *p, int line, const char *fmt, ...)
{
    char message[512];
    va_list ap;

    if (p->failed)
        return;
    p->failed = true;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (p->err != NULL && p->err_len > 0)
        snprintf(p->err, p->err_len, "%s:%d: %s", p->path, line, message);
}

static void key_free(struct token_key *key)
{
    free(key->access_key_id);
    if (key->secret != NULL) {
        OPENSSL_cleanse(key->secret, strlen(key->secret));
        free(key->secret);
    }
    for (size_t i = 0; i < key->n_users; i++)
        free(key->users[i]);
    free(key->users);
}

void token_keyring_free(struct token_keyring *ring)
{
    if (ring == NULL)
        return;
    for (size_t i = 0; i < ring->n_keys; i++)
        key_free(&ring->keys[i]);
    free(ring->keys);
    free(ring);
}

size_t token_keyring_size(const struct token_keyring *ring)
{
    return ring != NULL ? ring->n_keys : 0;
}

static const struct token_key *keyring_find(const struct token_keyring *ring,
                                            const char *access_key_id)
{
    for (size_t i = 0; i < ring->n_keys; i++)
        if (strcmp(ring->keys[i].access_key_id, access_key_id) == 0)
            return &ring->keys[i];
    return NULL;
}

/* The key id ends up between '/' in X-Amz-Credential, so it must be plain printable text. */
static bool is_valid_access_key_id(const char *id)
{
    if (*id == '\0')
        return false;
    for (const char *c = id; *c; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || *c == '/')
            return false;
    return true;
}

static struct token_key *keyring_add(struct keyring_parser *p, const char *access_key_id)
{
    struct token_keyring *ring = p->ring;
    const struct token_key *existing = keyring_find(ring, access_key_id);

    if (existing != NULL) {
        parser_fail(p, p->section_line, "access key id [%s] appears twice (first on line %d)",
                    access_key_id, existing->line);
        return NULL;
    }
    if (!is_valid_access_key_id(access_key_id)) {
        parser_fail(p, p->section_line,
                    "[%s] is not an access key id (no spaces, '/' or control characters)",
                    access_key_id);
        return NULL;
    }
    if (ring->n_keys == ring->cap) {
        size_t cap = ring->cap ? ring->cap * 2 : 8;
        struct token_key *grown = realloc(ring->keys, cap * sizeof *grown);
        if (grown == NULL) {
            parser_fail(p, p->lineno, "out of memory");
            return NULL;
        }
        ring->keys = grown;
        ring->cap = cap;
    }
    struct token_key *key = &ring->keys[ring->n_keys];
    memset(key, 0, sizeof *key);
    key->line = p->section_line;
    key->access_key_id = strdup(access_key_id);
    if (key->access_key_id == NULL) {
        parser_fail(p, p->lineno, "out of memory");
        return NULL;
    }
    ring->n_keys++;
    return key;
}

static int key_set_secret(struct keyring_parser *p, struct token_key *key, const char *value)
{
    if (key->secret != NULL) {
        parser_fail(p, p->lineno, "secret for [%s] is given twice", key->access_key_id);
        return 0;
    }
    if (*value == '\0') {
        parser_fail(p, p->lineno, "secret for [%s] is empty", key->access_key_id);
        return 0;
    }
    key->secret = strdup(value);
    if (key->secret == NULL) {
        parser_fail(p, p->lineno, "out of memory");
        return 0;
    }
    return 1;
}

static int key_add_user(struct keyring_parser *p, struct token_key *key, const char *name,
                        size_t len)
{
    if (len == 1 && name[0] == ANY_USER[0]) {
        key->any_user = true;
        return 1;
    }
    char **grown = realloc(key->users, (key->n_users + 1) * sizeof *grown);
    if (grown == NULL) {
        parser_fail(p, p->lineno, "out of memory");
        return 0;
    }
    key->users = grown;
    key->users[key->n_users] = strndup(name, len);
    if (key->users[key->n_users] == NULL) {
        parser_fail(p, p->lineno, "out of memory");
        return 0;
    }
    key->n_users++;
    return 1;
}

/* "a, b, c" or "*"; several users lines add up, so long lists can be split. */
static int key_add_users(struct keyring_parser *p, struct token_key *key, const char *value)
{
    const char *item = value;

    for (;;) {
        const char *comma = strchr(item, ',');
        const char *end = comma != NULL ? comma : item + strlen(item);
        const char *start = item;
        while (start < end && (*start == ' ' || *start == '\t'))
            start++;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (start == end) {
            parser_fail(p, p->lineno, "users for [%s] has an empty name in its list",
                        key->access_key_id);
            return 0;
        }
        if (!key_add_user(p, key, start, (size_t)(end - start)))
            return 0;
        if (comma == NULL)
            return 1;
        item = comma + 1;
    }
}

static int keyring_handle_setting(void *user, const char *inih_section, const char *name,
                                  const char *value)
{
    struct keyring_parser *p = user;
    const char *section = p->section_name;

    (void)inih_section; /* ours is read whole from the header line */
    if (p->failed)
        return 0;
    if (section == NULL) {
        parser_fail(p, p->lineno, "'%s' is outside any section; put it under [ACCESS_KEY_ID]",
                    name);
        return 0;
    }
    if (!p->section_has_settings) {
        p->section_has_settings = true;
        p->current = keyring_add(p, section);
        if (p->current == NULL)
            return 0;
    }
    if (strcmp(name, "secret") == 0)
        return key_set_secret(p, p->current, value);
    if (strcmp(name, "users") == 0)
        return key_add_users(p, p->current, value);
    parser_fail(p, p->lineno, "unknown setting '%s' in [%s] (expected secret or users)", name,
                section);
    return 0;
}

/* A header followed by no settings at all is a mistake inih would pass over in silence. */
static void parser_check_section_end(struct keyring_parser *p)
{
    if (p->section_line > 0 && !p->section_has_settings)
        parser_fail(p, p->section_line, "[%s] has no secret and no users", p->section_name);
}

/* A "[name]" line: remembers the name whole; a missing ']' is left to inih to report. */
static bool parser_start_section(struct keyring_parser *p, const char *after_bracket)
{
    size_t name_len = strcspn(after_bracket, "]");

    parser_check_section_end(p);
    free(p->section_name);
    p->section_name = strndup(after_bracket, name_len);
    p->section_line = p->lineno;
    p->section_has_settings = false;
    p->current = NULL;
    if (p->section_name == NULL)
        parser_fail(p, p->lineno, "out of memory");
    return !p->failed;
}

/*
 * The fgets-like reader inih calls. It hands inih one whole physical line at a time and refuses
 * lines that do not fit inih's buffer (num - 1 characters), because fgets would silently split
 * them into two lines. Leading blanks are removed so that an indented "users = ..." is never
 * taken for a continuation of the previous value.
 */
static char *keyring_read_line(char *str, int num, void *stream)
{
    struct keyring_parser *p = stream;
    ssize_t read_len;

    if (p->failed)
        return NULL;
    errno = 0;
    read_len = getline(&p->line, &p->line_cap, p->file);
    if (read_len < 0) {
        if (ferror(p->file))
            parser_fail(p, p->lineno + 1, "cannot read: %s", strerror(errno));
        return NULL;
    }
    p->lineno++;
    size_t len = (size_t)read_len;
    while (len > 0 && (p->line[len - 1] == '\n' || p->line[len - 1] == '\r'))
        p->line[--len] = '\0';
    if (strlen(p->line) != len) {
        parser_fail(p, p->lineno, "line contains a NUL byte");
        return NULL;
    }
    char *start = p->line;
    if (p->lineno == 1 && strncmp(start, UTF8_BOM, strlen(UTF8_BOM)) == 0)
        start += strlen(UTF8_BOM);
    while (*start == ' ' || *start == '\t')
        start++;
    len = strlen(start);
    if (num < 1 || len > (size_t)num - 1) {
        parser_fail(p, p->lineno,
                    "line is %zu characters long; at most %d fit (a long users list can be "
                    "split over several users = lines)",
                    len, num - 1);
        return NULL;
    }
    if (*start == '[' && !parser_start_section(p, start + 1))
        return NULL;
    memcpy(str, start, len + 1);
    return str;
}

static void keyring_check_complete(struct keyring_parser *p)
{
    for (size_t i = 0; i < p->ring->n_keys && !p->failed; i++) {
        const struct token_key *key = &p->ring->keys[i];
        if (key->secret == NULL)
            parser_fail(p, key->line, "[%s] has no secret", key->access_key_id);
        else if (key->n_users == 0 && !key->any_user)
            parser_fail(p, key->line, "[%s] has no users line (users = * allows any user)",
                        key->access_key_id);
    }
}

static int keyring_parse_file(FILE *file, const char *path, struct token_keyring **ring,
                              char *err, size_t err_len)
{
    struct keyring_parser p = {
        .path = path, .file = file, .err = err, .err_len = err_len,
    };
    int rc;

    *ring = NULL;
    p.ring = calloc(1, sizeof *p.ring);
    if (p.ring == NULL) {
        snprintf(err, err_len, "%s: out of memory", path);
        return -1;
    }
    rc = ini_parse_stream(keyring_read_line, &p, keyring_handle_setting, &p);
    if (!p.failed)
        parser_check_section_end(&p);
    if (!p.failed && rc > 0)
        parser_fail(&p, rc, "expected [ACCESS_KEY_ID], name = value, or a # comment");
    if (!p.failed && rc < 0)
        parser_fail(&p, p.lineno, "out of memory");
    if (!p.failed)
        keyring_check_complete(&p);
    free(p.line);
    free(p.section_name);
    if (p.failed) {
        token_keyring_free(p.ring);
        return -1;
    }
    *ring = p.ring;
    return 0;
}

/* Parses a stream just opened and closes it; NULL: it could not be opened (errno says why), and
 * the error says "cannot <failed_to>". */
static int keyring_parse_opened(FILE *file, const char *failed_to, const char *path,
                                struct token_keyring **ring, char *err, size_t err_len)
{
    int rc;

    *ring = NULL;
    if (file == NULL) {
        snprintf(err, err_len, "%s: cannot %s: %s", path, failed_to, strerror(errno));
        return -1;
    }
    rc = keyring_parse_file(file, path, ring, err, err_len);
    fclose(file);
    return rc;
}

int token_keyring_load(const char *path, struct token_keyring **ring, char *err, size_t err_len)
{
    return keyring_parse_opened(fopen(path, "r"), "open", path, ring, err, err_len);
}

int token_keyring_load_string(const char *text, const char *path, struct token_keyring **ring,
                              char *err, size_t err_len)
{
    return keyring_parse_opened(fmemopen((void *)text, strlen(text), "r"), "read", path, ring, err,
                                err_len);
}

/* ---- token syntax ---- */

/* The parameters the checks look at; anything else is only signed over. */
enum known_param {
    PARAM_ACTION,
    PARAM_DB_USER,
    PARAM_ALGORITHM,
    PARAM_CREDENTIAL,
    PARAM_DATE,
    PARAM_EXPIRES,
    PARAM_SIGNED_HEADERS,
    PARAM_SIGNATURE,
    PARAM_SECURITY_TOKEN,
    KNOWN_PARAM_COUNT
};

static const char *const known_param_names[KNOWN_PARAM_COUNT] = {
    [PARAM_ACTION] = "Action",
    [PARAM_DB_USER] = "DBUser",
    [PARAM_ALGORITHM] = "X-Amz-Algorithm",
    [PARAM_CREDENTIAL] = "X-Amz-Credential",
    [PARAM_DATE] = "X-Amz-Date",
    [PARAM_EXPIRES] = "X-Amz-Expires",
    [PARAM_SIGNED_HEADERS] = "X-Amz-SignedHeaders",
    [PARAM_SIGNATURE] = "X-Amz-Signature",
    [PARAM_SECURITY_TOKEN] = "X-Amz-Security-Token",
};

/* X-Amz-Credential split into its five parts (pointers into one copy). */
struct credential_scope {
    char *copy;
    const char *access_key_id;
    const char *date;
    const char *region;
    const char *service;
    const char *terminator;
};

struct parsed_token {
    const char *host;                /* points into the token; not NUL-terminated */
    size_t host_len;
    const char *endpoint;            /* "HOST:PORT" as written in the token */
    size_t endpoint_len;
    int port;
    struct sigv4_param params[TOKEN_MAX_PARAMETERS]; /* decoded; X-Amz-Signature not among them */
    size_t n_params;
    struct sigv4_param signature;
    const struct sigv4_param *known[KNOWN_PARAM_COUNT];
    struct credential_scope scope;
    time_t date;
    long expires;
};

static void parsed_token_free(struct parsed_token *t)
{
    for (size_t i = 0; i < t->n_params; i++) {
        free((char *)t->params[i].name);
        free((char *)t->params[i].value);
    }
    free((char *)t->signature.name);
    free((char *)t->signature.value);
    free(t->scope.copy);
}

static bool is_port_text(const char *s, size_t len, int *port)
{
    int value = 0;
    if (len == 0 || len > 5 || s[0] == '0')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        value = value * 10 + (s[i] - '0');
    }
    *port = value;
    return value <= MAX_PORT;
}

/* "HOST:PORT": the host as the SDKs print it (a name, an IPv4 address, or [IPv6]). */
static enum token_failure parse_endpoint(struct parsed_token *t, const char *s, size_t len)
{
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || strchr("?#@&%=", c) != NULL)
            return TOKEN_FAIL_MALFORMED;
        if (c == ':')
            colon = s + i;
    }
    if (colon == NULL || colon == s || !is_port_text(colon + 1, len - (size_t)(colon + 1 - s),
                                                     &t->port))
        return TOKEN_FAIL_MALFORMED;
    t->endpoint = s;
    t->endpoint_len = len;
    t->host = s;
    t->host_len = (size_t)(colon - s);
    return TOKEN_OK;
}

static int find_known_param(const char *name)
{
    for (int i = 0; i < KNOWN_PARAM_COUNT; i++)
        if (strcmp(name, known_param_names[i]) == 0)
            return i;
    return -1;
}

static bool is_duplicate_name(const struct parsed_token *t, const char *name)
{
    for (size_t i = 0; i < t->n_params; i++)
        if (strcmp(t->params[i].name, name) == 0)
            return true;
    return t->signature.name != NULL && strcmp(t->signature.name, name) == 0;
}

static enum token_failure decode_part(const char *s, size_t len, char **out, size_t *out_len)
{
    int rc = sigv4_percent_decode(s, len, out, out_len);
    return rc == 0 ? TOKEN_OK : rc == -2 ? TOKEN_FAIL_OUT_OF_MEMORY : TOKEN_FAIL_BAD_ENCODING;
}

/* One "name=value" of the query, decoded and filed. */
static enum token_failure parse_param(struct parsed_token *t, const char *s, size_t len)
{
    const char *equals = memchr(s, '=', len);
    char *name = NULL, *value = NULL;
    size_t name_len = 0, value_len = 0;
    enum token_failure failure;

    if (equals == NULL || equals == s)
        return TOKEN_FAIL_MALFORMED;
    failure = decode_part(s, (size_t)(equals - s), &name, &name_len);
    if (failure == TOKEN_OK)
        failure = decode_part(equals + 1, len - (size_t)(equals + 1 - s), &value, &value_len);
    if (failure == TOKEN_OK && is_duplicate_name(t, name))
        failure = TOKEN_FAIL_DUPLICATE_PARAMETER;
    if (failure == TOKEN_OK && t->n_params == TOKEN_MAX_PARAMETERS)
        failure = TOKEN_FAIL_MALFORMED;
    if (failure != TOKEN_OK) {
        free(name);
        free(value);
        return failure;
    }
    struct sigv4_param param = {name, name_len, value, value_len};
    int known = find_known_param(name);
    if (known == PARAM_SIGNATURE) {
        t->signature = param;
        t->known[known] = &t->signature;
        return TOKEN_OK;
    }
    t->params[t->n_params] = param;
    if (known >= 0)
        t->known[known] = &t->params[t->n_params];
    t->n_params++;
    return TOKEN_OK;
}

/* Raw query bytes: printable ASCII without '#'; everything else must arrive percent-encoded. */
static bool is_query_text(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '#')
            return false;
    }
    return true;
}

static enum token_failure parse_query(struct parsed_token *t, const char *query, size_t len)
{
    size_t start = 0;

    if (len == 0)
        return TOKEN_FAIL_MALFORMED;
    if (!is_query_text(query, len))
        return TOKEN_FAIL_BAD_ENCODING;
    for (;;) {
        const char *amp = memchr(query + start, '&', len - start);
        size_t item_len = amp != NULL ? (size_t)(amp - (query + start)) : len - start;
        enum token_failure failure = parse_param(t, query + start, item_len);
        if (failure != TOKEN_OK)
            return failure;
        if (amp == NULL)
            break;
        start += item_len + 1;
    }
    for (int i = 0; i < KNOWN_PARAM_COUNT; i++)
        if (t->known[i] == NULL && i != PARAM_SECURITY_TOKEN)
            return TOKEN_FAIL_MISSING_PARAMETER;
    return TOKEN_OK;
}

static enum token_failure parse_token(struct parsed_token *t, const char *token, size_t len)
{
    const char *slash;
    enum token_failure failure;

    if (token == NULL || len == 0)
        return TOKEN_FAIL_MALFORMED;
    if (len > TOKEN_MAX_LEN)
        return TOKEN_FAIL_OVERSIZED;
    slash = memchr(token, '/', len);
    if (slash == NULL || (size_t)(slash - token) + 1 >= len || slash[1] != '?')
        return TOKEN_FAIL_MALFORMED;
    failure = parse_endpoint(t, token, (size_t)(slash - token));
    if (failure != TOKEN_OK)
        return failure;
    return parse_query(t, slash + 2, len - (size_t)(slash + 2 - token));
}

/* ---- checks ---- */

static bool param_is(const struct sigv4_param *param, const char *expected)
{
    return param->value_len == strlen(expected) && strcmp(param->value, expected) == 0;
}

/* "KEY/YYYYMMDD/REGION/SERVICE/aws4_request", every part non-empty. */
static enum token_failure parse_credential_scope(struct parsed_token *t)
{
    const char **parts[] = {&t->scope.access_key_id, &t->scope.date, &t->scope.region,
                            &t->scope.service, &t->scope.terminator};
    size_t n_parts = sizeof parts / sizeof parts[0];
    char *cursor;

    t->scope.copy = strdup(t->known[PARAM_CREDENTIAL]->value);
    if (t->scope.copy == NULL)
        return TOKEN_FAIL_OUT_OF_MEMORY;
    cursor = t->scope.copy;
    for (size_t i = 0; i < n_parts; i++) {
        char *slash = strchr(cursor, '/');
        if ((slash == NULL) != (i == n_parts - 1))
            return TOKEN_FAIL_BAD_CREDENTIAL_SCOPE;
        if (slash != NULL)
            *slash = '\0';
        if (*cursor == '\0')
            return TOKEN_FAIL_BAD_CREDENTIAL_SCOPE;
        *parts[i] = cursor;
        if (slash != NULL) /* the last part has none: NULL + 1 is undefined */
            cursor = slash + 1;
    }
    if (strcmp(t->scope.service, SIGV4_RDS_SERVICE) != 0 ||
        strcmp(t->scope.terminator, SIGV4_SCOPE_TERMINATOR) != 0)
        return TOKEN_FAIL_BAD_CREDENTIAL_SCOPE;
    return TOKEN_OK;
}

static enum token_failure check_request_shape(struct parsed_token *t)
{
    const struct sigv4_param *date = t->known[PARAM_DATE];
    enum token_failure failure;

    if (!param_is(t->known[PARAM_ACTION], RDS_CONNECT_ACTION))
        return TOKEN_FAIL_WRONG_ACTION;
    if (!param_is(t->known[PARAM_ALGORITHM], SIGV4_ALGORITHM))
        return TOKEN_FAIL_WRONG_ALGORITHM;
    if (!param_is(t->known[PARAM_SIGNED_HEADERS], SIGNED_HEADERS_HOST_ONLY))
        return TOKEN_FAIL_WRONG_SIGNED_HEADERS;
    failure = parse_credential_scope(t);
    if (failure != TOKEN_OK)
        return failure;
    if (sigv4_parse_amz_date(date->value, date->value_len, &t->date) != 0)
        return TOKEN_FAIL_BAD_DATE;
    if (strlen(t->scope.date) != SIGV4_SCOPE_DATE_LEN ||
        memcmp(t->scope.date, date->value, SIGV4_SCOPE_DATE_LEN) != 0)
        return TOKEN_FAIL_CREDENTIAL_DATE_MISMATCH;
    return TOKEN_OK;
}

/* Is "HOST:PORT" one of the comma-separated entries? Host names compare case-insensitively. */
static bool endpoint_allowed(const char *endpoints, const struct parsed_token *t)
{
    const char *item = endpoints;

    if (endpoints == NULL)
        return false;
    while (*item != '\0') {
        size_t len = strcspn(item, ",");
        const char *start = item, *end = item + len;
        while (start < end && (*start == ' ' || *start == '\t'))
            start++;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == t->endpoint_len &&
            strncasecmp(start, t->endpoint, t->endpoint_len) == 0)
            return true;
        item += len;
        if (*item == ',')
            item++;
    }
    return false;
}

static bool user_allowed(const struct token_key *key, const char *user)
{
    if (key->any_user)
        return true;
    for (size_t i = 0; i < key->n_users; i++)
        if (strcmp(key->users[i], user) == 0)
            return true;
    return false;
}

static enum token_failure check_policy(const struct parsed_token *t,
                                       const struct token_policy *policy)
{
    if (policy->region == NULL || strcmp(t->scope.region, policy->region) != 0)
        return TOKEN_FAIL_REGION_MISMATCH;
    if (!endpoint_allowed(policy->endpoints, t))
        return TOKEN_FAIL_ENDPOINT_NOT_ALLOWED;
    return TOKEN_OK;
}

static enum token_failure check_identity(const struct parsed_token *t,
                                         const struct token_key *key, const char *startup_user)
{
    const char *db_user = t->known[PARAM_DB_USER]->value;

    if (key == NULL)
        return TOKEN_FAIL_UNKNOWN_ACCESS_KEY;
    if (startup_user == NULL || strcmp(db_user, startup_user) != 0)
        return TOKEN_FAIL_USER_MISMATCH;
    if (!user_allowed(key, db_user))
        return TOKEN_FAIL_USER_NOT_ALLOWED;
    return TOKEN_OK;
}

/* X-Amz-Expires: plain decimal digits, 1..max_expires. */
static enum token_failure check_validity_window(struct parsed_token *t,
                                                const struct token_policy *policy, time_t now)
{
    const struct sigv4_param *expires = t->known[PARAM_EXPIRES];
    int max_expires = policy->max_expires > 0 ? policy->max_expires : TOKEN_DEFAULT_MAX_EXPIRES;
    int64_t skew = policy->clock_skew_seconds > 0 ? policy->clock_skew_seconds : 0;
    int64_t value = 0;

    if (expires->value_len == 0 || expires->value_len > 9)
        return TOKEN_FAIL_BAD_EXPIRES;
    for (size_t i = 0; i < expires->value_len; i++) {
        if (expires->value[i] < '0' || expires->value[i] > '9')
            return TOKEN_FAIL_BAD_EXPIRES;
        value = value * 10 + (expires->value[i] - '0');
    }
    if (value < 1 || value > max_expires)
        return TOKEN_FAIL_BAD_EXPIRES;
    t->expires = (long)value;
    if ((int64_t)t->date > (int64_t)now + skew)
        return TOKEN_FAIL_NOT_YET_VALID;
    if ((int64_t)now > (int64_t)t->date + value)
        return TOKEN_FAIL_EXPIRED;
    return TOKEN_OK;
}

/* Lowercases 64 hex digits into out; false if the text is not that. */
static bool normalize_signature(const struct sigv4_param *signature, char *out)
{
    if (signature->value_len != SIGV4_HEX_LEN)
        return false;
    for (size_t i = 0; i < SIGV4_HEX_LEN; i++) {
        char c = signature->value[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        out[i] = c;
    }
    return true;
}

/* Signs the token's query for canonical_host with the key and compares in constant time. */
static enum token_failure compare_signature(const struct parsed_token *t,
                                            const struct token_key *key,
                                            const char *canonical_host)
{
    struct sigv4_steps steps;
    char given[SIGV4_HEX_LEN];
    enum token_failure failure = TOKEN_FAIL_OUT_OF_MEMORY;

    if (canonical_host == NULL)
        return failure;
    struct sigv4_signing_input in = {
        .secret_access_key = key->secret,
        .canonical_host = canonical_host,
        .params = t->params,
        .n_params = t->n_params,
        .amz_date = t->known[PARAM_DATE]->value,
        .scope_date = t->scope.date,
        .region = t->scope.region,
        .service = t->scope.service,
    };
    if (sigv4_sign(&in, &steps) == 0) {
        bool same = normalize_signature(&t->signature, given) &&
                    CRYPTO_memcmp(given, steps.signature, SIGV4_HEX_LEN) == 0;
        failure = same ? TOKEN_OK : TOKEN_FAIL_BAD_SIGNATURE;
    }
    OPENSSL_cleanse(&steps, sizeof steps);
    return failure;
}

static bool has_uppercase(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            return true;
    return false;
}

/*
 * botocore signs the host lowercased; SDKs that sign it as written differ only when the host has
 * capitals, so then both forms are tried (the signer must still know the secret either way).
 */
static enum token_failure check_signature(const struct parsed_token *t,
                                          const struct token_key *key)
{
    char *canonical_host = sigv4_canonical_host(t->host, t->host_len, t->port);
    enum token_failure failure = compare_signature(t, key, canonical_host);

    free(canonical_host);
    if (failure != TOKEN_FAIL_BAD_SIGNATURE || !has_uppercase(t->host, t->host_len))
        return failure;
    canonical_host = t->port == SIGV4_HTTPS_DEFAULT_PORT ? strndup(t->host, t->host_len)
                                                   : strndup(t->endpoint, t->endpoint_len);
    failure = compare_signature(t, key, canonical_host);
    free(canonical_host);
    return failure;
}

static enum token_failure verify_parsed(struct parsed_token *t, const struct token_keyring *ring,
                                        const struct token_policy *policy,
                                        const char *startup_user, time_t now)
{
    enum token_failure failure = check_request_shape(t);
    const struct token_key *key;

    if (failure != TOKEN_OK)
        return failure;
    failure = check_policy(t, policy);
    if (failure != TOKEN_OK)
        return failure;
    key = ring != NULL ? keyring_find(ring, t->scope.access_key_id) : NULL;
    failure = check_identity(t, key, startup_user);
    if (failure != TOKEN_OK)
        return failure;
    failure = check_validity_window(t, policy, now);
    if (failure != TOKEN_OK)
        return failure;
    return check_signature(t, key);
}

int token_verify(const struct token_keyring *ring, const struct token_policy *policy,
                 const char *token, size_t token_len, const char *startup_user, time_t now,
                 enum token_failure *why)
{
    struct parsed_token parsed;
    enum token_failure failure;

    memset(&parsed, 0, sizeof parsed);
    failure = parse_token(&parsed, token, token_len);
    if (failure == TOKEN_OK)
        failure = verify_parsed(&parsed, ring, policy, startup_user, now);
    parsed_token_free(&parsed);
    if (why != NULL)
        *why = failure;
    return failure == TOKEN_OK ? 0 : -1;
}

const char *token_failure_message(enum token_failure why)
{
    switch (why) {
    case TOKEN_OK:
        return "token is valid";
    case TOKEN_FAIL_OVERSIZED:
        return "password is too long to be an auth token (more than 8192 bytes)";
    case TOKEN_FAIL_MALFORMED:
        return "password is not an auth token: expected HOST:PORT/?Action=connect&... "
               "as printed by generate-db-auth-token or sluice-token";
    case TOKEN_FAIL_BAD_ENCODING:
        return "auth token has a bad percent-encoding or a character that must be encoded";
    case TOKEN_FAIL_MISSING_PARAMETER:
        return "auth token lacks a required parameter (Action, DBUser, X-Amz-Algorithm, "
               "X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, "
               "X-Amz-Signature)";
    case TOKEN_FAIL_DUPLICATE_PARAMETER:
        return "auth token gives the same parameter twice";
    case TOKEN_FAIL_WRONG_ACTION:
        return "auth token is not for Action=connect";
    case TOKEN_FAIL_WRONG_ALGORITHM:
        return "auth token is not signed with AWS4-HMAC-SHA256";
    case TOKEN_FAIL_WRONG_SIGNED_HEADERS:
        return "auth token must sign exactly the host header (X-Amz-SignedHeaders=host)";
    case TOKEN_FAIL_BAD_CREDENTIAL_SCOPE:
        return "auth token credential is not KEY/DATE/REGION/rds-db/aws4_request: "
               "generate it for the rds-db service";
    case TOKEN_FAIL_BAD_DATE:
        return "auth token X-Amz-Date is not a valid YYYYMMDDTHHMMSSZ time";
    case TOKEN_FAIL_CREDENTIAL_DATE_MISMATCH:
        return "auth token credential date differs from its X-Amz-Date day";
    case TOKEN_FAIL_REGION_MISMATCH:
        return "auth token was signed for another region than auth_token_region";
    case TOKEN_FAIL_ENDPOINT_NOT_ALLOWED:
        return "auth token was generated for a host:port not listed in auth_token_endpoints";
    case TOKEN_FAIL_UNKNOWN_ACCESS_KEY:
        return "auth token is signed with an access key id that is not in auth_token_keys";
    case TOKEN_FAIL_USER_MISMATCH:
        return "auth token was generated for another user than the one logging in";
    case TOKEN_FAIL_USER_NOT_ALLOWED:
        return "the access key that signed the auth token may not log in as this user "
               "(see its users line in auth_token_keys)";
    case TOKEN_FAIL_BAD_EXPIRES:
        return "auth token X-Amz-Expires is not a number of seconds between 1 and the allowed "
               "maximum";
    case TOKEN_FAIL_NOT_YET_VALID:
        return "auth token is dated in the future: check the clock of the client that made it";
    case TOKEN_FAIL_EXPIRED:
        return "auth token has expired: generate a new one right before connecting";
    case TOKEN_FAIL_BAD_SIGNATURE:
        return "auth token signature does not match: wrong secret for this access key, "
               "or the token was altered";
    case TOKEN_FAIL_OUT_OF_MEMORY:
        return "out of memory while checking an auth token";
    }
    return "unknown auth token failure";
}
