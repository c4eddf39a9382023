/*
 * test_sigv4.c: SigV4 signing and RDS IAM token verification against the AWS SDKs' own expected
 * tokens (SHARED_DIR/vectors/rds-auth-token.txt), then every reason a token can be refused, each
 * shown with a token that differs from a good one in that one respect, and the key file loader.
 */
#include "auth_token.h"
#include "sigv4.h"
#include "tap.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the vector file ---- */

#define VECTOR_MAX_FIELDS 32

struct vector {
    char *names[VECTOR_MAX_FIELDS];
    char *values[VECTOR_MAX_FIELDS];
    size_t n_fields;
};

struct vector_file {
    struct vector *vectors;
    size_t n_vectors;
};

static const char *vector_get(const struct vector *v, const char *name)
{
    for (size_t i = 0; i < v->n_fields; i++)
        if (strcmp(v->names[i], name) == 0)
            return v->values[i];
    return NULL;
}

static struct vector *vector_file_new_block(struct vector_file *vf)
{
    struct vector *grown = realloc(vf->vectors, (vf->n_vectors + 1) * sizeof *grown);
    if (grown == NULL)
        return NULL;
    vf->vectors = grown;
    memset(&vf->vectors[vf->n_vectors], 0, sizeof *vf->vectors);
    return &vf->vectors[vf->n_vectors++];
}

/* Blocks separated by blank lines; "name value" per line; '#' starts a comment line. */
static int vector_file_load(const char *path, struct vector_file *vf)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    struct vector *current = NULL;

    memset(vf, 0, sizeof *vf);
    if (f == NULL)
        return -1;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (line[0] == '#')
            continue;
        if (len == 0) {
            current = NULL;
            continue;
        }
        if (current == NULL && (current = vector_file_new_block(vf)) == NULL)
            break;
        char *space = strchr(line, ' ');
        if (space == NULL || current->n_fields == VECTOR_MAX_FIELDS)
            continue;
        *space = '\0';
        current->names[current->n_fields] = strdup(line);
        current->values[current->n_fields] = strdup(space + 1);
        current->n_fields++;
    }
    free(line);
    fclose(f);
    return 0;
}

static void vector_file_free(struct vector_file *vf)
{
    for (size_t i = 0; i < vf->n_vectors; i++)
        for (size_t j = 0; j < vf->vectors[i].n_fields; j++) {
            free(vf->vectors[i].names[j]);
            free(vf->vectors[i].values[j]);
        }
    free(vf->vectors);
}

static char *vector_file_path(void)
{
    const char *shared = getenv("SHARED_DIR");
    const char *srcdir = getenv("SLUICE_SRCDIR");
    char *path = NULL;

    if (srcdir == NULL)
        srcdir = ".";
    if (shared != NULL) {
        if (asprintf(&path, "%s/vectors/rds-auth-token.txt", shared) < 0)
            return NULL;
    } else if (asprintf(&path, "%s/tests/vectors/rds-auth-token.txt", srcdir) < 0) {
        return NULL;
    }
    return path;
}

static void hex_of(const unsigned char *bytes, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
}

/* ---- the vectors ---- */

static struct sigv4_rds_token_request request_from_vector(const struct vector *v)
{
    const char *session_token = vector_get(v, "session_token");
    return (struct sigv4_rds_token_request){
        .host = vector_get(v, "host"),
        .port = atoi(vector_get(v, "port")),
        .user = vector_get(v, "user"),
        .region = vector_get(v, "region"),
        .access_key_id = vector_get(v, "access_key_id"),
        .secret_access_key = vector_get(v, "secret_access_key"),
        .session_token = strcmp(session_token, "-") == 0 ? NULL : session_token,
        .amz_date = vector_get(v, "date"),
        .expires = atoi(vector_get(v, "expires")),
    };
}

static struct token_keyring *keyring_for_vector(const struct vector *v)
{
    struct token_keyring *ring = NULL;
    char *text = NULL;
    char err[256];

    if (asprintf(&text, "[%s]\nsecret = %s\nusers = %s\n", vector_get(v, "access_key_id"),
                 vector_get(v, "secret_access_key"), vector_get(v, "user")) < 0)
        return NULL;
    if (token_keyring_load_string(text, "vector-keys.ini", &ring, err, sizeof err) != 0)
        printf("# %s\n", err);
    free(text);
    return ring;
}

/* Moves X-Amz-Security-Token (if any) after the signature, as aws-sdk-rust prints it. */
static char *reorder_like_rust_sdk(const char *token)
{
    const char *start = strstr(token, "&X-Amz-Security-Token=");
    char *out;

    if (start == NULL)
        return strdup(token);
    const char *end = strchr(start + 1, '&');
    size_t before = (size_t)(start - token);
    size_t param_len = (size_t)(end - start);
    out = malloc(strlen(token) + 1);
    memcpy(out, token, before);
    strcpy(out + before, end);
    memcpy(out + strlen(out), start, param_len);
    out[strlen(token)] = '\0';
    return out;
}

/* Writes '~' as %7E, as form encoders do. */
static char *form_encode_tildes(const char *token)
{
    char *out = malloc(strlen(token) * 3 + 1);
    char *o = out;
    for (const char *c = token; *c; c++) {
        if (*c == '~') {
            memcpy(o, "%7E", 3);
            o += 3;
        } else {
            *o++ = *c;
        }
    }
    *o = '\0';
    return out;
}

static void test_vector_token(const struct vector *v)
{
    const char *name = vector_get(v, "name");
    struct sigv4_rds_token_request req = request_from_vector(v);
    struct sigv4_steps steps;
    char signing_key_hex[SIGV4_HEX_LEN + 1];
    char *token = NULL;
    char err[256] = "";

    is_int(sigv4_presign_rds_token(&req, &token, &steps, err, sizeof err), 0,
           "%s: presigning succeeds %s", name, err);
    hex_of(steps.signing_key, sizeof steps.signing_key, signing_key_hex);
    is_str(steps.canonical_request_sha256, vector_get(v, "canonical_request_sha256"),
           "%s: canonical request hash", name);
    is_str(signing_key_hex, vector_get(v, "signing_key"), "%s: signing key", name);
    is_str(steps.signature, vector_get(v, "signature"), "%s: signature", name);
    is_str(token, vector_get(v, "token"), "%s: token is byte-identical to the SDK's", name);
    free(token);

    struct token_keyring *ring = keyring_for_vector(v);
    char *endpoint = NULL;
    if (asprintf(&endpoint, "%s:%s", req.host, vector_get(v, "port")) < 0)
        return;
    struct token_policy policy = {.region = req.region, .endpoints = endpoint,
                                  .clock_skew_seconds = 60, .max_expires = 900};
    time_t signed_at;
    sigv4_parse_amz_date(req.amz_date, strlen(req.amz_date), &signed_at);
    time_t now = signed_at + 1;
    enum token_failure why = TOKEN_FAIL_OUT_OF_MEMORY;

    const char *sorted = vector_get(v, "token");
    token_verify(ring, &policy, sorted, strlen(sorted), req.user, now, &why);
    is_int(why, TOKEN_OK, "%s: the sorted token is accepted", name);

    const char *botocore = vector_get(v, "token_botocore");
    token_verify(ring, &policy, botocore, strlen(botocore), req.user, now, &why);
    is_int(why, TOKEN_OK, "%s: botocore's token (its own parameter order) is accepted", name);

    char *rust = reorder_like_rust_sdk(sorted);
    token_verify(ring, &policy, rust, strlen(rust), req.user, now, &why);
    is_int(why, TOKEN_OK, "%s: the security token after the signature is accepted", name);
    free(rust);

    char *form = form_encode_tildes(sorted);
    token_verify(ring, &policy, form, strlen(form), req.user, now, &why);
    is_int(why, TOKEN_OK, "%s: a form-encoded token (~ as %%7E) is accepted", name);
    free(form);

    token_verify(ring, &policy, sorted, strlen(sorted), req.user, signed_at + 901, &why);
    is_int(why, TOKEN_FAIL_EXPIRED, "%s: the token is refused once expired", name);

    free(endpoint);
    token_keyring_free(ring);
}

static void test_vector_signing_key(const struct vector *v)
{
    const char *date = vector_get(v, "date");
    char scope_date[SIGV4_SCOPE_DATE_LEN + 1];
    unsigned char key[SIGV4_KEY_LEN];
    char key_hex[SIGV4_HEX_LEN + 1];

    memcpy(scope_date, date, SIGV4_SCOPE_DATE_LEN);
    scope_date[SIGV4_SCOPE_DATE_LEN] = '\0';
    is_int(sigv4_signing_key(vector_get(v, "secret_access_key"), scope_date,
                             vector_get(v, "region"), vector_get(v, "service"), key),
           0, "%s: key derivation succeeds", vector_get(v, "name"));
    hex_of(key, sizeof key, key_hex);
    is_str(key_hex, vector_get(v, "signing_key"), "%s: signing key matches AWS's example",
           vector_get(v, "name"));
}

static void test_vectors(void)
{
    char *path = vector_file_path();
    struct vector_file vf;
    size_t n_tokens = 0, n_keys = 0;

    if (!ok(path != NULL && vector_file_load(path, &vf) == 0, "vector file %s is readable",
            path ? path : "(null)")) {
        free(path);
        return;
    }
    for (size_t i = 0; i < vf.n_vectors; i++) {
        const struct vector *v = &vf.vectors[i];
        if (vector_get(v, "token") != NULL) {
            test_vector_token(v);
            n_tokens++;
        } else if (vector_get(v, "signing_key") != NULL) {
            test_vector_signing_key(v);
            n_keys++;
        }
    }
    ok(n_tokens >= 5 && n_keys >= 1, "the file holds %zu token vectors and %zu key vectors",
       n_tokens, n_keys);
    vector_file_free(&vf);
    free(path);
}

/* ---- SigV4 pieces ---- */

static void test_uri_encoding(void)
{
    char *encoded = sigv4_uri_encode("AZaz09-_.~ /+=@%", 16);
    is_str(encoded, "AZaz09-_.~%20%2F%2B%3D%40%25", "unreserved kept, the rest %%XX uppercase");
    free(encoded);

    char *decoded = NULL;
    size_t len = 0;
    is_int(sigv4_percent_decode("a%2fb%7E+c", 10, &decoded, &len), 0, "decoding succeeds");
    is_str(decoded, "a/b~ c", "lowercase hex decodes and '+' is a space");
    free(decoded);
    is_int(sigv4_percent_decode("a%2", 3, &decoded, &len), -1, "a cut-off %%XX is refused");
    is_int(sigv4_percent_decode("a%zz", 4, &decoded, &len), -1, "non-hex %%XX is refused");
    is_int(sigv4_percent_decode("a%00", 4, &decoded, &len), -1, "%%00 is refused");
}

static void test_canonical_query_sorts_encoded_names(void)
{
    struct sigv4_param params[] = {
        {"b", 1, "2", 1}, {"a b", 3, "x", 1}, {"a", 1, "z/", 2}, {"A", 1, "", 0},
    };
    char *query = sigv4_canonical_query(params, 4);
    is_str(query, "A=&a=z%2F&a%20b=x&b=2", "canonical query sorted by encoded name");
    free(query);
}

static void test_canonical_host(void)
{
    char *host = sigv4_canonical_host("Db.Example.com", 14, 5432);
    is_str(host, "db.example.com:5432", "host header lowercased, port kept");
    free(host);
    host = sigv4_canonical_host("Db.Example.com", 14, 443);
    is_str(host, "db.example.com", "port 443 left out of the host header");
    free(host);
}

static void test_amz_dates(void)
{
    char text[SIGV4_AMZ_DATE_LEN + 1];
    time_t t = 0;

    is_int(sigv4_format_amz_date(1478540373, text), 0, "time formats");
    is_str(text, "20161107T173933Z", "time formats as X-Amz-Date");
    is_int(sigv4_parse_amz_date("20240229T235959Z", 16, &t), 0, "leap day parses");
    is_int(t, 1709251199, "leap day is the right second");
    is_int(sigv4_parse_amz_date("20230229T000000Z", 16, &t), -1, "Feb 29 of 2023 is refused");
    is_int(sigv4_parse_amz_date("20231301T000000Z", 16, &t), -1, "month 13 is refused");
    is_int(sigv4_parse_amz_date("20231201T240000Z", 16, &t), -1, "hour 24 is refused");
    is_int(sigv4_parse_amz_date("20231201 000000Z", 16, &t), -1, "missing T is refused");
    is_int(sigv4_parse_amz_date("20231201T000000", 15, &t), -1, "missing Z is refused");
}

/* What sluice-token does: format the current time, then presign. */
static void test_tool_presign_from_time(void)
{
    char date[SIGV4_AMZ_DATE_LEN + 1];
    sigv4_format_amz_date(1478540373, date);
    struct sigv4_rds_token_request req = {
        .host = "prod-instance.us-east-1.rds.amazonaws.com", .port = 3306,
        .user = "someusername", .region = "us-east-1", .access_key_id = "akid",
        .secret_access_key = "skid", .session_token = "", .amz_date = date, .expires = 900,
    };
    char *token = NULL;
    char err[256] = "";

    is_int(sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err), 0,
           "presigning from a time_t succeeds");
    is_str(token,
           "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=someusername"
           "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20161107%2Fus-east-1%2F"
           "rds-db%2Faws4_request&X-Amz-Date=20161107T173933Z&X-Amz-Expires=900"
           "&X-Amz-SignedHeaders=host&X-Amz-Signature="
           "d1138cdbc0ca63eec012ec0fc6c2267e03642168f5884a7795320d4c18374c61",
           "an empty session token means none, and the token is botocore's");
    free(token);
}

/* botocore 1.43 lowercases the signed host and leaves port 443 out of it. */
static void test_presign_host_like_botocore(void)
{
    struct sigv4_rds_token_request req = {
        .host = "Db.Example.com", .port = 443, .user = "u", .region = "us-east-1",
        .access_key_id = "akid", .secret_access_key = "skid", .amz_date = "20161107T173933Z",
        .expires = 900,
    };
    char *token = NULL;
    char err[256];

    sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err);
    is_str(token,
           "Db.Example.com:443/?Action=connect&DBUser=u&X-Amz-Algorithm=AWS4-HMAC-SHA256"
           "&X-Amz-Credential=akid%2F20161107%2Fus-east-1%2Frds-db%2Faws4_request"
           "&X-Amz-Date=20161107T173933Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
           "&X-Amz-Signature=55390fa63dd1469125da4150af213913f2f3d9580080e927efae7a526902de60",
           "port 443 and a capitalised host sign as botocore signs them");
    free(token);
    req.port = 5432;
    sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err);
    ok(token != NULL && strstr(token, "9bae57af7d5716200d63b1bf2842014f653d33bc78d53495d47322f9"
                                      "2fcfee59") != NULL,
       "a capitalised host on port 5432 signs as botocore signs it");
    free(token);
}

static void test_presign_refuses_bad_input(void)
{
    struct sigv4_rds_token_request good = {
        .host = "db.example.com", .port = 5432, .user = "app", .region = "us-east-1",
        .access_key_id = "AKID", .secret_access_key = "TOPSECRET",
        .amz_date = "20261127T080000Z", .expires = 900,
    };
    struct sigv4_rds_token_request req;
    char *token = NULL;
    char err[256];

    req = good;
    req.port = 70000;
    is_int(sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err), -1, "port 70000");
    req = good;
    req.amz_date = "2026-11-27";
    is_int(sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err), -1, "a bad date");
    req = good;
    req.expires = 0;
    is_int(sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err), -1, "expires 0");
    req = good;
    req.host = "db.example.com/x";
    is_int(sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err), -1, "host with '/'");
    req = good;
    req.region = "us-east-1/x";
    is_int(sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err), -1, "region with '/'");
    req = good;
    req.user = "";
    is_int(sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err), -1, "empty user");
    ok(strstr(err, "user") != NULL, "the error names what is missing: %s", err);
    req = good;
    req.secret_access_key = NULL;
    is_int(sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err), -1, "no secret");
    ok(token == NULL, "no token is returned on error");
}

/* ---- refusals: a good token edited in one respect ---- */

#define GOOD_HOST "db.example.com"
#define GOOD_PORT 5432
#define GOOD_USER "app"
#define GOOD_REGION "us-east-1"
#define GOOD_KEY_ID "AKIDEXAMPLE"
#define GOOD_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define GOOD_DATE "20261127T080000Z"
#define GOOD_SIGNED_AT ((time_t)1795766400)

static const char test_keys[] =
    "# access keys allowed to sign tokens\n"
    "[" GOOD_KEY_ID "]\n"
    "secret = " GOOD_SECRET "\n"
    "users = " GOOD_USER ", reporting, app ops\n"
    "\n"
    "[AKIDLIMITED]\n"
    "secret = limited-secret\n"
    "users = someone_else\n";

static struct token_keyring *test_ring;
static const struct token_policy test_policy = {
    .region = GOOD_REGION,
    .endpoints = "other.example.com:6432, DB.Example.com:5432",
    .clock_skew_seconds = 60,
    .max_expires = 900,
};

/* Every part of a token; NULL leaves that parameter out. */
struct token_spec {
    const char *host;
    int port;
    const char *action, *user, *algorithm, *date, *expires, *signed_headers, *security_token;
    const char *access_key_id, *scope_date, *region, *service, *terminator;
    const char *credential;          /* the whole X-Amz-Credential, instead of the parts */
    const char *secret;              /* what it is signed with */
    bool omit_signature;
    bool sign_host_as_written;       /* as SDKs that keep the host's capitals sign it */
};

static struct token_spec good_spec(void)
{
    return (struct token_spec){
        .host = GOOD_HOST, .port = GOOD_PORT, .action = "connect", .user = GOOD_USER,
        .algorithm = SIGV4_ALGORITHM, .date = GOOD_DATE, .expires = "900",
        .signed_headers = "host", .access_key_id = GOOD_KEY_ID, .scope_date = "20261127",
        .region = GOOD_REGION, .service = SIGV4_RDS_SERVICE, .terminator = "aws4_request",
        .secret = GOOD_SECRET,
    };
}

static void add_param(struct sigv4_param *params, size_t *n, const char *name, const char *value)
{
    if (value == NULL)
        return;
    params[(*n)++] = (struct sigv4_param){name, strlen(name), value, strlen(value)};
}

/* Signs whatever the spec says, correctly, so that only the edited check can fail. */
static char *build_token(const struct token_spec *s)
{
    struct sigv4_param params[16];
    size_t n = 0;
    char *credential = NULL, *host = NULL, *query = NULL, *token = NULL;
    struct sigv4_steps steps;

    if (s->credential != NULL)
        credential = strdup(s->credential);
    else if (asprintf(&credential, "%s/%s/%s/%s/%s", s->access_key_id, s->scope_date, s->region,
                      s->service, s->terminator) < 0)
        return NULL;
    add_param(params, &n, "Action", s->action);
    add_param(params, &n, "DBUser", s->user);
    add_param(params, &n, "X-Amz-Algorithm", s->algorithm);
    add_param(params, &n, "X-Amz-Credential", credential);
    add_param(params, &n, "X-Amz-Date", s->date);
    add_param(params, &n, "X-Amz-Expires", s->expires);
    add_param(params, &n, "X-Amz-Security-Token", s->security_token);
    add_param(params, &n, "X-Amz-SignedHeaders", s->signed_headers);
    if (s->sign_host_as_written) {
        if (asprintf(&host, "%s:%d", s->host, s->port) < 0)
            host = NULL;
    } else {
        host = sigv4_canonical_host(s->host, strlen(s->host), s->port);
    }
    query = sigv4_canonical_query(params, n);
    struct sigv4_signing_input in = {
        .secret_access_key = s->secret, .canonical_host = host, .params = params, .n_params = n,
        .amz_date = s->date ? s->date : GOOD_DATE, .scope_date = s->scope_date,
        .region = s->region, .service = s->service,
    };
    sigv4_sign(&in, &steps);
    if (asprintf(&token, "%s:%d/?%s%s%s", s->host, s->port, query,
                 s->omit_signature ? "" : "&X-Amz-Signature=",
                 s->omit_signature ? "" : steps.signature) < 0)
        token = NULL;
    free(credential);
    free(host);
    free(query);
    return token;
}

static enum token_failure verify_as(const char *token, const char *user, time_t now)
{
    enum token_failure why = TOKEN_FAIL_OUT_OF_MEMORY;
    token_verify(test_ring, &test_policy, token, strlen(token), user, now, &why);
    return why;
}

static enum token_failure verify_spec_at(const struct token_spec *s, time_t now)
{
    char *token = build_token(s);
    enum token_failure why = verify_as(token, GOOD_USER, now);
    free(token);
    return why;
}

static enum token_failure verify_spec(const struct token_spec *s)
{
    return verify_spec_at(s, GOOD_SIGNED_AT + 10);
}

/* Replaces the first occurrence of from in token with to. */
static char *edited(const char *token, const char *from, const char *to)
{
    const char *at = strstr(token, from);
    char *out = NULL;
    if (at == NULL || asprintf(&out, "%.*s%s%s", (int)(at - token), token, to,
                               at + strlen(from)) < 0)
        return strdup(token);
    return out;
}

static void expect_edit(const char *from, const char *to, enum token_failure want,
                        const char *what)
{
    struct token_spec s = good_spec();
    char *good = build_token(&s);
    char *bad = edited(good, from, to);
    is_int(verify_as(bad, GOOD_USER, GOOD_SIGNED_AT + 10), want, "%s", what);
    free(good);
    free(bad);
}

static void test_good_token_is_accepted(void)
{
    struct token_spec s = good_spec();
    is_int(verify_spec(&s), TOKEN_OK, "a well-formed, fresh token for a listed endpoint passes");
    s.host = "DB.EXAMPLE.COM";
    is_int(verify_spec(&s), TOKEN_OK, "the endpoint's host compares case-insensitively");
    s.sign_host_as_written = true;
    is_int(verify_spec(&s), TOKEN_OK, "a capitalised host signed as written passes too");
    s.host = GOOD_HOST;
    s.user = "app ops";
    char *token = build_token(&s);
    char *form = edited(token, "app%20ops", "app+ops");
    is_int(verify_as(form, "app ops", GOOD_SIGNED_AT), TOKEN_OK,
           "a form-encoded space ('+') decodes to a space");
    free(form);
    free(token);
    is_int(token_verify(test_ring, &test_policy, "x", 1, GOOD_USER, GOOD_SIGNED_AT, NULL), -1,
           "why may be NULL");
}

static void test_oversized_and_long_tokens(void)
{
    struct token_spec s = good_spec();
    size_t filler_len = 1700;
    char *filler = malloc(TOKEN_MAX_LEN + 1);

    memset(filler, 'A', TOKEN_MAX_LEN);
    filler[filler_len] = '\0';
    s.security_token = filler;
    char *token = build_token(&s);
    ok(strlen(token) > 1800, "a token with a long session token is %zu bytes", strlen(token));
    is_int(verify_as(token, GOOD_USER, GOOD_SIGNED_AT), TOKEN_OK, "and it passes");

    filler_len += TOKEN_MAX_LEN - strlen(token);
    free(token);
    memset(filler, 'A', TOKEN_MAX_LEN);
    filler[filler_len] = '\0';
    token = build_token(&s);
    is_int(strlen(token), TOKEN_MAX_LEN, "a token of exactly the maximum length");
    is_int(verify_as(token, GOOD_USER, GOOD_SIGNED_AT), TOKEN_OK, "passes");
    free(token);

    filler[filler_len] = 'A';
    filler[filler_len + 1] = '\0';
    token = build_token(&s);
    is_int(verify_as(token, GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_OVERSIZED,
           "one byte more is refused as oversized");
    free(token);
    free(filler);
}

static void test_malformed(void)
{
    static const char *const shapes[] = {
        "hunter2",
        "db.example.com:5432?Action=connect",
        "db.example.com/?Action=connect&DBUser=app",
        "db.example.com:0/?Action=connect&DBUser=app",
        "db.example.com:65536/?Action=connect&DBUser=app",
        "https://db.example.com:5432/?Action=connect&DBUser=app",
        "db.example.com:5432/?",
        "db.example.com:5432/x?Action=connect",
        ":5432/?Action=connect",
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        is_int(verify_as(shapes[i], GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_MALFORMED,
               "not HOST:PORT/?query: \"%s\"", shapes[i]);
    is_int(verify_as("", GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_MALFORMED, "empty password");
    expect_edit("&X-Amz-Date=", "&X-Amz-Date&x=", TOKEN_FAIL_MALFORMED,
                "a parameter without '=' is malformed");
    expect_edit("&X-Amz-Date=", "&&X-Amz-Date=", TOKEN_FAIL_MALFORMED,
                "an empty parameter is malformed");
    expect_edit("&X-Amz-Date=", "&=x&X-Amz-Date=", TOKEN_FAIL_MALFORMED,
                "a parameter without a name is malformed");

    struct token_spec s = good_spec();
    char *token = build_token(&s);
    char *many = NULL;
    size_t len = strlen(token);
    many = malloc(len + TOKEN_MAX_PARAMETERS * 8 + 1);
    strcpy(many, token);
    for (int i = 0; i < TOKEN_MAX_PARAMETERS; i++)
        len += (size_t)sprintf(many + len, "&p%02d=1", i);
    is_int(verify_as(many, GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_MALFORMED,
           "more than %d parameters is malformed", TOKEN_MAX_PARAMETERS);
    free(many);
    free(token);
}

static void test_bad_encoding(void)
{
    expect_edit("DBUser=app", "DBUser=a%G1", TOKEN_FAIL_BAD_ENCODING, "%G1 is bad encoding");
    expect_edit("DBUser=app", "DBUser=app%2", TOKEN_FAIL_BAD_ENCODING, "a cut-off %2");
    expect_edit("DBUser=app", "DBUser=app%00", TOKEN_FAIL_BAD_ENCODING, "%00 in a value");
    expect_edit("DBUser=app", "DBUser=a p", TOKEN_FAIL_BAD_ENCODING, "a raw space");
    expect_edit("DBUser=app", "DBUser=app#x", TOKEN_FAIL_BAD_ENCODING, "a raw '#'");
    expect_edit("DBUser=app", "DBUser=\xc3\xa9", TOKEN_FAIL_BAD_ENCODING, "raw UTF-8");
}

static void test_missing_parameters(void)
{
    static const char *const names[] = {"Action", "DBUser", "X-Amz-Algorithm",
                                        "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                                        "X-Amz-SignedHeaders"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct token_spec s = good_spec();
        const char **fields[] = {&s.action, &s.user, &s.algorithm, &s.credential, &s.date,
                                 &s.expires, &s.signed_headers};
        if (fields[i] == &s.credential) {
            /* build_token always writes a credential, so cut it out of the text instead */
            char *good = build_token(&s);
            char *cut = edited(good, "&X-Amz-Credential=" GOOD_KEY_ID "%2F20261127%2F"
                                     "us-east-1%2Frds-db%2Faws4_request", "");
            is_int(verify_as(cut, GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_MISSING_PARAMETER,
                   "without %s", names[i]);
            free(good);
            free(cut);
            continue;
        }
        *fields[i] = NULL;
        is_int(verify_spec(&s), TOKEN_FAIL_MISSING_PARAMETER, "without %s", names[i]);
    }
    struct token_spec s = good_spec();
    s.omit_signature = true;
    is_int(verify_spec(&s), TOKEN_FAIL_MISSING_PARAMETER, "without X-Amz-Signature");
}

static void test_duplicate_parameters(void)
{
    expect_edit("&X-Amz-Date=", "&DBUser=app&X-Amz-Date=", TOKEN_FAIL_DUPLICATE_PARAMETER,
                "DBUser twice");
    expect_edit("&X-Amz-Date=", "&X-Amz-Signature=00&X-Amz-Date=",
                TOKEN_FAIL_DUPLICATE_PARAMETER, "X-Amz-Signature twice");
    expect_edit("&X-Amz-Date=", "&DBUs%65r=app&X-Amz-Date=", TOKEN_FAIL_DUPLICATE_PARAMETER,
                "a name repeated under another encoding");
}

static void test_request_shape_refusals(void)
{
    struct token_spec s = good_spec();
    s.action = "Connect";
    is_int(verify_spec(&s), TOKEN_FAIL_WRONG_ACTION, "Action=Connect is not connect");

    s = good_spec();
    s.algorithm = "AWS4-HMAC-SHA512";
    is_int(verify_spec(&s), TOKEN_FAIL_WRONG_ALGORITHM, "another algorithm");

    s = good_spec();
    s.signed_headers = "host;x-amz-date";
    is_int(verify_spec(&s), TOKEN_FAIL_WRONG_SIGNED_HEADERS, "more signed headers than host");
    s.signed_headers = "Host";
    is_int(verify_spec(&s), TOKEN_FAIL_WRONG_SIGNED_HEADERS, "SignedHeaders=Host");

    s = good_spec();
    s.service = "rds";
    is_int(verify_spec(&s), TOKEN_FAIL_BAD_CREDENTIAL_SCOPE, "service rds, not rds-db");
    s = good_spec();
    s.terminator = "aws4_req";
    is_int(verify_spec(&s), TOKEN_FAIL_BAD_CREDENTIAL_SCOPE, "scope not ending in aws4_request");
    s = good_spec();
    s.credential = GOOD_KEY_ID "/20261127/us-east-1/rds-db";
    is_int(verify_spec(&s), TOKEN_FAIL_BAD_CREDENTIAL_SCOPE, "a four-part credential");
    s.credential = GOOD_KEY_ID "/20261127/us-east-1/rds-db/aws4_request/x";
    is_int(verify_spec(&s), TOKEN_FAIL_BAD_CREDENTIAL_SCOPE, "a six-part credential");
    s.credential = GOOD_KEY_ID "//us-east-1/rds-db/aws4_request";
    is_int(verify_spec(&s), TOKEN_FAIL_BAD_CREDENTIAL_SCOPE, "an empty credential part");

    s = good_spec();
    s.date = "20261327T080000Z";
    s.scope_date = "20261327";
    is_int(verify_spec(&s), TOKEN_FAIL_BAD_DATE, "month 13 in X-Amz-Date");
    s.date = "2026-11-27T08:00";
    s.scope_date = "2026-11-";
    is_int(verify_spec(&s), TOKEN_FAIL_BAD_DATE, "an ISO date with dashes");

    s = good_spec();
    s.scope_date = "20261126";
    is_int(verify_spec(&s), TOKEN_FAIL_CREDENTIAL_DATE_MISMATCH,
           "credential scope dated the day before X-Amz-Date");
}

static void test_policy_refusals(void)
{
    struct token_spec s = good_spec();
    s.region = "us-west-2";
    is_int(verify_spec(&s), TOKEN_FAIL_REGION_MISMATCH, "signed for us-west-2");

    s = good_spec();
    s.host = "evil.example.com";
    is_int(verify_spec(&s), TOKEN_FAIL_ENDPOINT_NOT_ALLOWED, "signed for another host");
    s = good_spec();
    s.port = 5433;
    is_int(verify_spec(&s), TOKEN_FAIL_ENDPOINT_NOT_ALLOWED, "signed for another port");
    s = good_spec();
    s.host = "other.example.com";
    s.port = 6432;
    is_int(verify_spec(&s), TOKEN_OK, "the first listed endpoint works too");
}

static void test_identity_refusals(void)
{
    struct token_spec s = good_spec();
    s.access_key_id = "AKIDUNKNOWN";
    is_int(verify_spec(&s), TOKEN_FAIL_UNKNOWN_ACCESS_KEY, "a key id not in the key file");

    s = good_spec();
    char *token = build_token(&s);
    is_int(verify_as(token, "reporting", GOOD_SIGNED_AT), TOKEN_FAIL_USER_MISMATCH,
           "DBUser app, but the startup packet says reporting");
    is_int(verify_as(token, NULL, GOOD_SIGNED_AT), TOKEN_FAIL_USER_MISMATCH,
           "no startup user at all");
    free(token);

    s = good_spec();
    s.access_key_id = "AKIDLIMITED";
    s.secret = "limited-secret";
    is_int(verify_spec(&s), TOKEN_FAIL_USER_NOT_ALLOWED, "a key whose users line omits app");
    s.user = "someone_else";
    token = build_token(&s);
    is_int(verify_as(token, "someone_else", GOOD_SIGNED_AT), TOKEN_OK,
           "the same key for its own user passes");
    free(token);
}

static void test_validity_window(void)
{
    struct token_spec s = good_spec();
    static const char *const bad_expires[] = {"901", "0", "-5", "abc", "", "9999999999", "+900"};
    for (size_t i = 0; i < sizeof bad_expires / sizeof bad_expires[0]; i++) {
        s.expires = bad_expires[i];
        is_int(verify_spec(&s), TOKEN_FAIL_BAD_EXPIRES, "X-Amz-Expires=\"%s\"", bad_expires[i]);
    }
    s = good_spec();
    s.expires = "60";
    is_int(verify_spec_at(&s, GOOD_SIGNED_AT + 60), TOKEN_OK, "a short expiry is fine in time");
    is_int(verify_spec_at(&s, GOOD_SIGNED_AT + 61), TOKEN_FAIL_EXPIRED,
           "and expired a second later");

    s = good_spec();
    is_int(verify_spec_at(&s, GOOD_SIGNED_AT - 60), TOKEN_OK,
           "dated 60 s ahead of our clock passes with 60 s skew");
    is_int(verify_spec_at(&s, GOOD_SIGNED_AT - 61), TOKEN_FAIL_NOT_YET_VALID,
           "dated 61 s ahead is not yet valid");
    is_int(verify_spec_at(&s, GOOD_SIGNED_AT + 900), TOKEN_OK, "valid at date + expires");
    is_int(verify_spec_at(&s, GOOD_SIGNED_AT + 901), TOKEN_FAIL_EXPIRED, "expired after");
}

static void test_signature_refusals(void)
{
    struct token_spec s = good_spec();
    s.secret = "not-the-secret";
    is_int(verify_spec(&s), TOKEN_FAIL_BAD_SIGNATURE, "signed with another secret");

    s = good_spec();
    char *token = build_token(&s);
    char *last = token + strlen(token) - 1;
    *last = *last == '0' ? '1' : '0';
    is_int(verify_as(token, GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_BAD_SIGNATURE,
           "one signature digit changed");
    token[strlen(token) - 1] = '\0';
    is_int(verify_as(token, GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_BAD_SIGNATURE,
           "a signature one digit short");
    free(token);

    expect_edit("DBUser=app", "DBUser=reporting", TOKEN_FAIL_USER_MISMATCH,
                "DBUser edited after signing (startup user app)");
    token = build_token(&s);
    char *swapped = edited(token, "DBUser=app", "DBUser=reporting");
    is_int(verify_as(swapped, "reporting", GOOD_SIGNED_AT), TOKEN_FAIL_BAD_SIGNATURE,
           "DBUser edited after signing to another allowed user");
    free(swapped);
    swapped = edited(token, "X-Amz-Expires=900", "X-Amz-Expires=899");
    is_int(verify_as(swapped, GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_BAD_SIGNATURE,
           "X-Amz-Expires edited after signing");
    free(swapped);
    swapped = edited(token, "&X-Amz-Signature=", "&X-Amz-Extra=1&X-Amz-Signature=");
    is_int(verify_as(swapped, GOOD_USER, GOOD_SIGNED_AT), TOKEN_FAIL_BAD_SIGNATURE,
           "an unsigned extra parameter");
    free(swapped);
    free(token);
}

static void test_failure_messages(void)
{
    enum token_failure all[] = {
        TOKEN_OK, TOKEN_FAIL_OVERSIZED, TOKEN_FAIL_MALFORMED, TOKEN_FAIL_BAD_ENCODING,
        TOKEN_FAIL_MISSING_PARAMETER, TOKEN_FAIL_DUPLICATE_PARAMETER, TOKEN_FAIL_WRONG_ACTION,
        TOKEN_FAIL_WRONG_ALGORITHM, TOKEN_FAIL_WRONG_SIGNED_HEADERS,
        TOKEN_FAIL_BAD_CREDENTIAL_SCOPE, TOKEN_FAIL_BAD_DATE,
        TOKEN_FAIL_CREDENTIAL_DATE_MISMATCH, TOKEN_FAIL_REGION_MISMATCH,
        TOKEN_FAIL_ENDPOINT_NOT_ALLOWED, TOKEN_FAIL_UNKNOWN_ACCESS_KEY, TOKEN_FAIL_USER_MISMATCH,
        TOKEN_FAIL_USER_NOT_ALLOWED, TOKEN_FAIL_BAD_EXPIRES, TOKEN_FAIL_NOT_YET_VALID,
        TOKEN_FAIL_EXPIRED, TOKEN_FAIL_BAD_SIGNATURE, TOKEN_FAIL_OUT_OF_MEMORY,
    };
    size_t n = sizeof all / sizeof all[0];
    bool distinct = true;
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(token_failure_message(all[i]), token_failure_message(all[j])) == 0)
                distinct = false;
    ok(distinct, "each of the %zu outcomes has its own message", n);
    ok(strstr(token_failure_message(TOKEN_FAIL_EXPIRED), "expired") != NULL,
       "the expiry message says expired");
}

/* ---- the key file ---- */

static char *load_error(const char *text)
{
    struct token_keyring *ring = NULL;
    static char err[512];

    err[0] = '\0';
    if (token_keyring_load_string(text, "keys.ini", &ring, err, sizeof err) == 0) {
        token_keyring_free(ring);
        return NULL;
    }
    return ring == NULL ? err : "a ring was returned with the error";
}

static void expect_load_error(const char *text, const char *want, const char *what)
{
    const char *err = load_error(text);
    if (!ok(err != NULL && strstr(err, want) != NULL, "key file %s: \"%s\"", what,
            err ? err : "(loaded)"))
        printf("#   want it to contain \"%s\"\n", want);
}

static char *write_temp_file(const char *text)
{
    char *path = strdup("/tmp/sluice-test-keys-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        free(path);
        return NULL;
    }
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        printf("# short write to %s\n", path);
    close(fd);
    return path;
}

static void test_keyring_file(void)
{
    struct token_keyring *ring = NULL;
    char err[512] = "";
    char *path = write_temp_file(test_keys);

    is_int(token_keyring_load(path, &ring, err, sizeof err), 0, "the key file loads %s", err);
    is_int(token_keyring_size(ring), 2, "with its two keys");
    token_keyring_free(ring);
    unlink(path);
    free(path);

    is_int(token_keyring_load("/nonexistent/keys.ini", &ring, err, sizeof err), -1,
           "a missing file is an error");
    ok(strstr(err, "/nonexistent/keys.ini") != NULL, "naming the file: %s", err);

    /* inih reads at most 199 characters a line and would split longer ones in two */
    char long_users[400];
    memset(long_users, 'u', sizeof long_users - 1);
    long_users[sizeof long_users - 1] = '\0';
    char *text = NULL;
    if (asprintf(&text, "[AKID]\nsecret = s\nusers = %s\n", long_users) < 0)
        return;
    path = write_temp_file(text);
    is_int(token_keyring_load(path, &ring, err, sizeof err), -1, "a too-long line is refused");
    char *where = NULL;
    if (asprintf(&where, "%s:3:", path) >= 0)
        ok(strstr(err, where) != NULL, "naming FILE:LINE: %s", err);
    unlink(path);
    free(path);
    free(where);
    free(text);
}

static void test_keyring_syntax(void)
{
    ok(load_error("  [AKID]\n  secret = s\n  users = a\n  users = b, c\n") == NULL,
       "indented settings and several users lines load");
    ok(load_error("\xEF\xBB\xBF[AKID]\nsecret = s\nusers = *\n") == NULL,
       "a UTF-8 byte order mark is fine");

    expect_load_error("secret = s\n", "keys.ini:1:", "setting outside a section");
    expect_load_error("[AKID]\nsecret = s\n", "keys.ini:1: [AKID] has no users", "no users");
    expect_load_error("[AKID]\nusers = a\n", "keys.ini:1: [AKID] has no secret", "no secret");
    expect_load_error("[AKID]\nsecret = s\nsecret = t\nusers = a\n", "keys.ini:3:",
                      "secret twice");
    expect_load_error("[AKID]\nsecret = s\nusers = a\n\n[AKID]\nsecret = t\nusers = b\n",
                      "keys.ini:5: access key id [AKID] appears twice (first on line 1)",
                      "the same key twice");
    expect_load_error("[AKID]\nsecret = s\nuser = a\n", "keys.ini:3: unknown setting 'user'",
                      "a misspelt setting");
    expect_load_error("[AKID]\nsecret = s\nusers = a,,b\n", "keys.ini:3:",
                      "an empty user name");
    expect_load_error("[AKID]\n\n[OTHER]\nsecret = s\nusers = a\n", "keys.ini:1:",
                      "an empty section");
    expect_load_error("[AKID]\nsecret = s\nusers = a\n[EMPTY]\n", "keys.ini:4:",
                      "an empty last section");
    expect_load_error("[AKID]\nsecret = s\nusers = a\nno equals sign here\n", "keys.ini:4:",
                      "a line that is not a setting");
    expect_load_error("[AK/ID]\nsecret = s\nusers = a\n", "keys.ini:1:", "a key id with '/'");
    expect_load_error("[AKID]\nsecret = s\nsecret = TOPSECRET\nusers = a\n", "keys.ini:3:",
                      "secret twice (again)");
    const char *err = load_error("[AKID]\nsecret = s\nsecret = TOPSECRET\nusers = a\n");
    ok(err != NULL && strstr(err, "TOPSECRET") == NULL, "errors never show a secret");
}

/* inih keeps at most 49 characters of a section name; key ids may be up to 128. */
static void test_long_access_key_id(void)
{
    const char *long_id = "AKIA0123456789012345678901234567890123456789012345678901234567";
    char *text = NULL;
    struct token_keyring *ring = NULL;
    char err[512] = "";

    if (asprintf(&text, "[%s]\nsecret = %s\nusers = %s\n", long_id, GOOD_SECRET, GOOD_USER) < 0)
        return;
    is_int(token_keyring_load_string(text, "long.ini", &ring, err, sizeof err), 0,
           "a %zu-character key id loads %s", strlen(long_id), err);
    struct token_spec s = good_spec();
    s.access_key_id = long_id;
    char *token = build_token(&s);
    enum token_failure why = TOKEN_FAIL_OUT_OF_MEMORY;
    token_verify(ring, &test_policy, token, strlen(token), GOOD_USER, GOOD_SIGNED_AT, &why);
    is_int(why, TOKEN_OK, "and a token signed with it passes");
    free(token);
    free(text);
    token_keyring_free(ring);
}

int main(void)
{
    char err[512] = "";

    test_vectors();
    test_uri_encoding();
    test_canonical_query_sorts_encoded_names();
    test_canonical_host();
    test_amz_dates();
    test_tool_presign_from_time();
    test_presign_host_like_botocore();
    test_presign_refuses_bad_input();

    if (!ok(token_keyring_load_string(test_keys, "test-keys.ini", &test_ring, err,
                                      sizeof err) == 0,
            "the test key file loads %s", err))
        return tap_done();
    test_good_token_is_accepted();
    test_oversized_and_long_tokens();
    test_malformed();
    test_bad_encoding();
    test_missing_parameters();
    test_duplicate_parameters();
    test_request_shape_refusals();
    test_policy_refusals();
    test_identity_refusals();
    test_validity_window();
    test_signature_refusals();
    test_failure_messages();
    token_keyring_free(test_ring);

    test_keyring_file();
    test_keyring_syntax();
    test_long_access_key_id();
    return tap_done();
}
