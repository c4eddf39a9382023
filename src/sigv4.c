/*
 * sigv4.c: AWS Signature Version 4 for presigned GET "/" requests with only "host" signed, which is
 * all an RDS IAM auth token is. Everything here is pure (no clock, no I/O) so the unit tests can
 * hold each step against the AWS SDKs' published values.
 */
#include "sigv4.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "errbuf.h"

/* SHA-256 of the empty string: a GET has no payload. */
#define SIGV4_EMPTY_PAYLOAD_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const char hex_upper[] = "0123456789ABCDEF";
static const char hex_lower[] = "0123456789abcdef";

/* A growing string; once an allocation fails every later append is a no-op and take() is NULL. */
struct strbuf {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
};

static void strbuf_append(struct strbuf *sb, const char *s, size_t len)
{
    if (sb->failed)
        return;
    if (sb->len + len + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (cap < sb->len + len + 1)
            cap *= 2;
        char *grown = realloc(sb->data, cap);
        if (grown == NULL) {
            sb->failed = true;
            return;
        }
        sb->data = grown;
        sb->cap = cap;
    }
    memcpy(sb->data + sb->len, s, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

static void strbuf_add(struct strbuf *sb, const char *s)
{
    strbuf_append(sb, s, strlen(s));
}

static char *strbuf_take(struct strbuf *sb)
{
    if (sb->failed) {
        free(sb->data);
        return NULL;
    }
    return sb->data != NULL ? sb->data : strdup("");
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

static void strbuf_append_encoded(struct strbuf *sb, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c)) {
            strbuf_append(sb, (const char *)&c, 1);
        } else {
            char escaped[3] = {'%', hex_upper[c >> 4], hex_upper[c & 0x0f]};
            strbuf_append(sb, escaped, sizeof escaped);
        }
    }
}

char *sigv4_uri_encode(const char *s, size_t len)
{
    struct strbuf sb = {0};
    strbuf_append_encoded(&sb, s, len);
    return strbuf_take(&sb);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int sigv4_percent_decode(const char *s, size_t len, char **out, size_t *out_len)
{
    char *decoded = malloc(len + 1);
    size_t n = 0;

    *out = NULL;
    if (decoded == NULL)
        return -2;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            int high = i + 2 < len ? hex_value(s[i + 1]) : -1;
            int low = i + 2 < len ? hex_value(s[i + 2]) : -1;
            if (high < 0 || low < 0)
                goto bad;
            c = (char)(high << 4 | low);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == '\0')
            goto bad;
        decoded[n++] = c;
    }
    decoded[n] = '\0';
    *out = decoded;
    *out_len = n;
    return 0;
bad:
    free(decoded);
    return -1;
}

/* An encoded parameter, for sorting. */
struct encoded_param {
    char *name;
    char *value;
};

static int compare_encoded_params(const void *a, const void *b)
{
    const struct encoded_param *x = a, *y = b;
    int by_name = strcmp(x->name, y->name);
    return by_name != 0 ? by_name : strcmp(x->value, y->value);
}

static void free_encoded_params(struct encoded_param *encoded, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(encoded[i].name);
        free(encoded[i].value);
    }
    free(encoded);
}

char *sigv4_canonical_query(const struct sigv4_param *params, size_t n_params)
{
    struct encoded_param *encoded = calloc(n_params ? n_params : 1, sizeof *encoded);
    struct strbuf sb = {0};

    if (encoded == NULL)
        return NULL;
    for (size_t i = 0; i < n_params; i++) {
        encoded[i].name = sigv4_uri_encode(params[i].name, params[i].name_len);
        encoded[i].value = sigv4_uri_encode(params[i].value, params[i].value_len);
        if (encoded[i].name == NULL || encoded[i].value == NULL) {
            free_encoded_params(encoded, n_params);
            return NULL;
        }
    }
    qsort(encoded, n_params, sizeof *encoded, compare_encoded_params);
    for (size_t i = 0; i < n_params; i++) {
        if (i > 0)
            strbuf_add(&sb, "&");
        strbuf_add(&sb, encoded[i].name);
        strbuf_add(&sb, "=");
        strbuf_add(&sb, encoded[i].value);
    }
    free_encoded_params(encoded, n_params);
    return strbuf_take(&sb);
}

char *sigv4_canonical_host(const char *host, size_t host_len, int port)
{
    struct strbuf sb = {0};
    char port_text[16];

    for (size_t i = 0; i < host_len; i++) {
        char c = host[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        strbuf_append(&sb, &c, 1);
    }
    if (port != SIGV4_HTTPS_DEFAULT_PORT) {
        snprintf(port_text, sizeof port_text, ":%d", port);
        strbuf_add(&sb, port_text);
    }
    return strbuf_take(&sb);
}

char *sigv4_canonical_request(const char *canonical_host, const char *canonical_query)
{
    struct strbuf sb = {0};
    strbuf_add(&sb, "GET\n/\n");
    strbuf_add(&sb, canonical_query);
    strbuf_add(&sb, "\nhost:");
    strbuf_add(&sb, canonical_host);
    strbuf_add(&sb, "\n\nhost\n" SIGV4_EMPTY_PAYLOAD_SHA256);
    return strbuf_take(&sb);
}

char *sigv4_string_to_sign(const char *amz_date, const char *scope_date, const char *region,
                           const char *service, const char *canonical_request_sha256)
{
    struct strbuf sb = {0};
    strbuf_add(&sb, SIGV4_ALGORITHM "\n");
    strbuf_add(&sb, amz_date);
    strbuf_add(&sb, "\n");
    strbuf_add(&sb, scope_date);
    strbuf_add(&sb, "/");
    strbuf_add(&sb, region);
    strbuf_add(&sb, "/");
    strbuf_add(&sb, service);
    strbuf_add(&sb, "/" SIGV4_SCOPE_TERMINATOR "\n");
    strbuf_add(&sb, canonical_request_sha256);
    return strbuf_take(&sb);
}

static void hex_encode_lower(const unsigned char *bytes, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex_lower[bytes[i] >> 4];
        out[2 * i + 1] = hex_lower[bytes[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

void sigv4_sha256_hex(const void *data, size_t len, char *out)
{
    unsigned char digest[DIGEST_SHA256_LEN];
    digest_sha256(data, len, digest);
    hex_encode_lower(digest, sizeof digest, out);
}

static int hmac_sha256(const void *key, size_t key_len, const char *data,
                       unsigned char out[SIGV4_KEY_LEN])
{
    return digest_hmac_sha256(key, key_len, data, strlen(data), out) ? 0 : -1;
}

int sigv4_signing_key(const char *secret_access_key, const char *scope_date, const char *region,
                      const char *service, unsigned char key[SIGV4_KEY_LEN])
{
    static const char prefix[] = "AWS4";
    size_t secret_len = strlen(secret_access_key);
    size_t first_key_len = sizeof prefix - 1 + secret_len;
    unsigned char *first_key = malloc(first_key_len);
    unsigned char step[SIGV4_KEY_LEN];
    int rc = -1;

    if (first_key == NULL)
        return -1;
    memcpy(first_key, prefix, sizeof prefix - 1);
    memcpy(first_key + sizeof prefix - 1, secret_access_key, secret_len);
    if (hmac_sha256(first_key, first_key_len, scope_date, step) == 0 &&
        hmac_sha256(step, sizeof step, region, step) == 0 &&
        hmac_sha256(step, sizeof step, service, step) == 0 &&
        hmac_sha256(step, sizeof step, SIGV4_SCOPE_TERMINATOR, key) == 0)
        rc = 0;
    OPENSSL_cleanse(first_key, first_key_len);
    OPENSSL_cleanse(step, sizeof step);
    free(first_key);
    return rc;
}

int sigv4_signature_hex(const unsigned char key[SIGV4_KEY_LEN], const char *string_to_sign,
                        char *out)
{
    unsigned char mac[SIGV4_KEY_LEN];
    if (hmac_sha256(key, SIGV4_KEY_LEN, string_to_sign, mac) != 0)
        return -1;
    hex_encode_lower(mac, sizeof mac, out);
    return 0;
}

int sigv4_sign(const struct sigv4_signing_input *in, struct sigv4_steps *steps)
{
    char *query = sigv4_canonical_query(in->params, in->n_params);
    char *request = query ? sigv4_canonical_request(in->canonical_host, query) : NULL;
    char *to_sign = NULL;
    int rc = -1;

    if (request == NULL)
        goto done;
    sigv4_sha256_hex(request, strlen(request), steps->canonical_request_sha256);
    to_sign = sigv4_string_to_sign(in->amz_date, in->scope_date, in->region, in->service,
                                   steps->canonical_request_sha256);
    if (to_sign == NULL)
        goto done;
    if (sigv4_signing_key(in->secret_access_key, in->scope_date, in->region, in->service,
                          steps->signing_key) != 0)
        goto done;
    rc = sigv4_signature_hex(steps->signing_key, to_sign, steps->signature);
done:
    free(query);
    free(request);
    free(to_sign);
    return rc;
}

int sigv4_format_amz_date(time_t t, char *out)
{
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 1970 || tm.tm_year + 1900 > 9999)
        return -1;
    return strftime(out, SIGV4_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) == SIGV4_AMZ_DATE_LEN ? 0 : -1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t year, int month, int day)
{
    year -= month <= 2;
    int64_t era = year / 400;
    int64_t year_of_era = year - era * 400;
    int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

static bool is_leap_year(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && is_leap_year(year) ? 29 : days[month - 1];
}

/* Reads n decimal digits at s; -1 if any is not a digit. */
static int read_digits(const char *s, int n)
{
    int value = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        value = value * 10 + (s[i] - '0');
    }
    return value;
}

int sigv4_parse_amz_date(const char *s, size_t len, time_t *t)
{
    if (len != SIGV4_AMZ_DATE_LEN || s[8] != 'T' || s[15] != 'Z')
        return -1;
    int year = read_digits(s, 4), month = read_digits(s + 4, 2), day = read_digits(s + 6, 2);
    int hour = read_digits(s + 9, 2), minute = read_digits(s + 11, 2);
    int second = read_digits(s + 13, 2);
    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) ||
        hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59)
        return -1;
    int64_t seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    if ((int64_t)(time_t)seconds != seconds)
        return -1;
    *t = (time_t)seconds;
    return 0;
}

/* The SDKs put the host into the token as given, so it must not carry URL syntax of its own. */
static bool is_plain_host(const char *host)
{
    if (*host == '\0')
        return false;
    for (const char *p = host; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c >= 0x7f || strchr("/?#@&%", c) != NULL)
            return false;
    }
    return true;
}

static bool is_empty(const char *s)
{
    return s == NULL || *s == '\0';
}

static int check_token_request(const struct sigv4_rds_token_request *req, char *err,
                               size_t err_len)
{
    time_t ignored;

    if (is_empty(req->host) || !is_plain_host(req->host)) {
        errbuf_set(err, err_len, "host must be a plain host name or address (no '/', '?', spaces)");
        return -1;
    }
    if (req->port < 1 || req->port > 65535) {
        errbuf_set(err, err_len, "port %d is not between 1 and 65535", req->port);
        return -1;
    }
    if (is_empty(req->user) || is_empty(req->region) || is_empty(req->access_key_id) ||
        is_empty(req->secret_access_key)) {
        errbuf_set(err, err_len, "%s is empty",
                  is_empty(req->user)            ? "user name"
                  : is_empty(req->region)        ? "region"
                  : is_empty(req->access_key_id) ? "access key id"
                                                 : "secret access key");
        return -1;
    }
    if (strspn(req->region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(req->region)) {
        errbuf_set(err, err_len, "region must be lowercase letters, digits and '-' (us-east-1)");
        return -1;
    }
    if (strpbrk(req->access_key_id, "/ \t\r\n") != NULL) {
        errbuf_set(err, err_len, "access key id must not contain '/' or spaces");
        return -1;
    }
    if (req->amz_date == NULL ||
        sigv4_parse_amz_date(req->amz_date, strlen(req->amz_date), &ignored) != 0) {
        errbuf_set(err, err_len, "date must be a real UTC time written YYYYMMDDTHHMMSSZ");
        return -1;
    }
    if (req->expires < 1 || req->expires > SIGV4_MAX_EXPIRES) {
        errbuf_set(err, err_len, "expires %d is not between 1 and %d seconds", req->expires,
                  SIGV4_MAX_EXPIRES);
        return -1;
    }
    return 0;
}

/* The parameters of one token before signing; the sigv4_param entries point into it or req. */
struct rds_token_parts {
    char scope_date[SIGV4_SCOPE_DATE_LEN + 1];
    char expires[16];
    char *credential;
    struct sigv4_param params[8];
    size_t n_params;
};

static void add_param(struct rds_token_parts *parts, const char *name, const char *value)
{
    parts->params[parts->n_params++] = (struct sigv4_param){name, strlen(name), value,
                                                            strlen(value)};
}

/* What generate_db_auth_token signs; the caller frees parts->credential. */
static int rds_token_parts_init(const struct sigv4_rds_token_request *req,
                                struct rds_token_parts *parts)
{
    struct strbuf credential = {0};

    memset(parts, 0, sizeof *parts);
    memcpy(parts->scope_date, req->amz_date, SIGV4_SCOPE_DATE_LEN);
    snprintf(parts->expires, sizeof parts->expires, "%d", req->expires);
    strbuf_add(&credential, req->access_key_id);
    strbuf_add(&credential, "/");
    strbuf_add(&credential, parts->scope_date);
    strbuf_add(&credential, "/");
    strbuf_add(&credential, req->region);
    strbuf_add(&credential, "/" SIGV4_RDS_SERVICE "/" SIGV4_SCOPE_TERMINATOR);
    parts->credential = strbuf_take(&credential);
    if (parts->credential == NULL)
        return -1;
    add_param(parts, "Action", "connect");
    add_param(parts, "DBUser", req->user);
    add_param(parts, "X-Amz-Algorithm", SIGV4_ALGORITHM);
    add_param(parts, "X-Amz-Credential", parts->credential);
    add_param(parts, "X-Amz-Date", req->amz_date);
    add_param(parts, "X-Amz-Expires", parts->expires);
    if (!is_empty(req->session_token))
        add_param(parts, "X-Amz-Security-Token", req->session_token);
    add_param(parts, "X-Amz-SignedHeaders", "host");
    return 0;
}

static int sign_rds_token(const struct sigv4_rds_token_request *req,
                          const struct rds_token_parts *parts, struct sigv4_steps *steps)
{
    char *canonical_host = sigv4_canonical_host(req->host, strlen(req->host), req->port);
    int rc = -1;

    if (canonical_host == NULL)
        return -1;
    struct sigv4_signing_input in = {
        .secret_access_key = req->secret_access_key,
        .canonical_host = canonical_host,
        .params = parts->params,
        .n_params = parts->n_params,
        .amz_date = req->amz_date,
        .scope_date = parts->scope_date,
        .region = req->region,
        .service = SIGV4_RDS_SERVICE,
    };
    rc = sigv4_sign(&in, steps);
    free(canonical_host);
    return rc;
}

/* "HOST:PORT/?<sorted query>&X-Amz-Signature=<hex>": the host and port as given, even 443. */
static char *format_rds_token(const struct sigv4_rds_token_request *req,
                              const struct rds_token_parts *parts, const char *signature)
{
    char *query = sigv4_canonical_query(parts->params, parts->n_params);
    struct strbuf sb = {0};
    char port_text[16];

    if (query == NULL)
        return NULL;
    snprintf(port_text, sizeof port_text, ":%d/?", req->port);
    strbuf_add(&sb, req->host);
    strbuf_add(&sb, port_text);
    strbuf_add(&sb, query);
    strbuf_add(&sb, "&X-Amz-Signature=");
    strbuf_add(&sb, signature);
    free(query);
    return strbuf_take(&sb);
}

int sigv4_presign_rds_token(const struct sigv4_rds_token_request *req, char **token,
                            struct sigv4_steps *steps, char *err, size_t err_len)
{
    struct sigv4_steps own_steps;
    struct rds_token_parts parts;

    *token = NULL;
    if (check_token_request(req, err, err_len) != 0)
        return -1;
    if (steps == NULL)
        steps = &own_steps;
    if (rds_token_parts_init(req, &parts) == 0 && sign_rds_token(req, &parts, steps) == 0)
        *token = format_rds_token(req, &parts, steps->signature);
    if (steps == &own_steps)
        OPENSSL_cleanse(&own_steps, sizeof own_steps);
    free(parts.credential);
    if (*token == NULL) {
        errbuf_set(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}
