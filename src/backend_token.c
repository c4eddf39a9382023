/*
 * backend_token.c: the access key sluice signs backend IAM tokens with, and the signing itself.
 * The credentials file is the AWS shared-credentials format; only its [default] profile is read,
 * with sluice's optional "expiration" (ISO 8601 UTC, as STS prints it) so that a key known to be
 * dead is refused here, with a clear log line, instead of by the server.
 */
#include "backend_token.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "sigv4.h"

#define CREDENTIALS_PROFILE "default"
#define ISO_DATE_LEN 20 /* "YYYY-MM-DDTHH:MM:SSZ" */

struct backend_credentials {
    char *source;                /* the file, or "the environment", for messages */
    char *access_key_id;
    char *secret_access_key;
    char *session_token;         /* NULL: none */
    time_t expiration;           /* 0: not known */
};

int backend_token_needed(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_databases; i++)
        if (cfg->databases[i].auth_token)
            return 1;
    return 0;
}

static void free_secret(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

void backend_credentials_free(struct backend_credentials *creds)
{
    if (!creds)
        return;
    free(creds->source);
    free(creds->access_key_id);
    free_secret(creds->secret_access_key);
    free_secret(creds->session_token);
    free(creds);
}

/* "YYYY-MM-DDTHH:MM:SSZ" (fractions of a second allowed before the Z) -> time_t; false if not. */
static bool parse_iso_date(const char *text, time_t *out)
{
    struct tm tm = {0};
    int consumed = 0;

    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &consumed) != 6 || consumed != ISO_DATE_LEN - 1)
        return false;
    text += consumed;
    if (*text == '.')
        text += 1 + strspn(text + 1, "0123456789");
    if (strcmp(text, "Z") != 0 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return *out != (time_t)-1;
}

static char *trim(char *s)
{
    char *end;
    while (*s == ' ' || *s == '\t')
        s++;
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        *--end = '\0';
    return s;
}

static int credentials_fail(struct backend_credentials *creds, char *err, size_t err_len,
                            const char *path, int line, const char *what)
{
    if (line > 0)
        snprintf(err, err_len, "%s:%d: %s", path, line, what);
    else
        snprintf(err, err_len, "%s: %s", path, what);
    backend_credentials_free(creds);
    return -1;
}

/* One "name = value" of the [default] profile; unknown names (region, output...) are ignored. */
static bool credentials_take(struct backend_credentials *creds, const char *name, const char *value,
                             bool *bad_date)
{
    char **field = NULL;

    if (strcmp(name, "aws_access_key_id") == 0)
        field = &creds->access_key_id;
    else if (strcmp(name, "aws_secret_access_key") == 0)
        field = &creds->secret_access_key;
    else if (strcmp(name, "aws_session_token") == 0 || strcmp(name, "aws_security_token") == 0)
        field = &creds->session_token;
    else if (strcmp(name, "expiration") == 0) {
        *bad_date = !parse_iso_date(value, &creds->expiration);
        return true;
    }
    if (!field)
        return true;
    free_secret(*field);
    *field = strdup(value);
    return *field != NULL;
}

int backend_credentials_load_string(const char *text, const char *path,
                                    struct backend_credentials **out, char *err, size_t err_len)
{
    struct backend_credentials *creds = calloc(1, sizeof(*creds));
    char *copy = strdup(text);
    char *line, *next;
    bool in_profile = false;
    int lineno = 0;

    *out = NULL;
    if (!creds || !copy || !(creds->source = strdup(path))) {
        free(copy);
        return credentials_fail(creds, err, err_len, path, 0, "out of memory");
    }
    for (line = copy; line; line = next) {
        char *eq, *stripped;
        bool bad_date = false;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        stripped = trim(line);
        if (*stripped == '\0' || *stripped == '#' || *stripped == ';')
            continue;
        if (*stripped == '[') {
            char *close = strchr(stripped, ']');
            if (!close) {
                free_secret(copy);
                return credentials_fail(creds, err, err_len, path, lineno, "expected [profile]");
            }
            *close = '\0';
            in_profile = strcmp(trim(stripped + 1), CREDENTIALS_PROFILE) == 0;
            continue;
        }
        eq = strchr(stripped, '=');
        if (!eq) {
            free_secret(copy);
            return credentials_fail(creds, err, err_len, path, lineno, "expected name = value");
        }
        *eq = '\0';
        if (in_profile && !credentials_take(creds, trim(stripped), trim(eq + 1), &bad_date)) {
            free_secret(copy);
            return credentials_fail(creds, err, err_len, path, lineno, "out of memory");
        }
        if (bad_date) {
            free_secret(copy);
            return credentials_fail(creds, err, err_len, path, lineno,
                                    "expiration: expected YYYY-MM-DDTHH:MM:SSZ (UTC)");
        }
    }
    free_secret(copy);
    if (!creds->access_key_id || !creds->secret_access_key || !*creds->access_key_id ||
        !*creds->secret_access_key)
        return credentials_fail(creds, err, err_len, path, 0,
                                "[default] needs aws_access_key_id and aws_secret_access_key");
    *out = creds;
    return 0;
}

static int credentials_from_environment(struct backend_credentials **out, char *err, size_t err_len)
{
    const char *id = getenv("AWS_ACCESS_KEY_ID");
    const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
    const char *session = getenv("AWS_SESSION_TOKEN");
    struct backend_credentials *creds;

    *out = NULL;
    if (!id || !*id || !secret || !*secret) {
        snprintf(err, err_len, "auth_token = on needs credentials: set server_auth_token_credentials, "
                               "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in sluice's environment");
        return -1;
    }
    creds = calloc(1, sizeof(*creds));
    if (!creds)
        return credentials_fail(creds, err, err_len, "the environment", 0, "out of memory");
    creds->source = strdup("the environment (AWS_ACCESS_KEY_ID)");
    creds->access_key_id = strdup(id);
    creds->secret_access_key = strdup(secret);
    creds->session_token = session && *session ? strdup(session) : NULL;
    if (!creds->source || !creds->access_key_id || !creds->secret_access_key ||
        (session && *session && !creds->session_token))
        return credentials_fail(creds, err, err_len, "the environment", 0, "out of memory");
    *out = creds;
    return 0;
}

int backend_credentials_load(const char *path, struct backend_credentials **out, char *err,
                             size_t err_len)
{
    char *text;
    int rc;

    if (!path)
        return credentials_from_environment(out, err, err_len);
    *out = NULL;
    text = config_read_file(path, NULL, err, err_len);
    if (!text)
        return -1;
    rc = backend_credentials_load_string(text, path, out, err, err_len);
    free_secret(text);
    return rc;
}

int backend_token_sign(const struct backend_credentials *creds, const char *region, const char *host,
                       int port, const char *user, time_t now, char **token, char *err,
                       size_t err_len)
{
    char amz_date[SIGV4_AMZ_DATE_LEN + 1];
    struct sigv4_rds_token_request req;

    *token = NULL;
    if (!creds) {
        snprintf(err, err_len, "no credentials to sign an IAM token with");
        return -1;
    }
    if (creds->expiration > 0 && now >= creds->expiration) {
        char when[32];
        struct tm tm;
        gmtime_r(&creds->expiration, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
        snprintf(err, err_len, "the access key %s from %s expired at %s: refresh it and reload",
                 creds->access_key_id, creds->source, when);
        return -1;
    }
    if (sigv4_format_amz_date(now, amz_date) != 0) {
        snprintf(err, err_len, "the clock is out of range for SigV4");
        return -1;
    }
    req = (struct sigv4_rds_token_request){
        .host = host,
        .port = port,
        .user = user,
        .region = region,
        .access_key_id = creds->access_key_id,
        .secret_access_key = creds->secret_access_key,
        .session_token = creds->session_token,
        .amz_date = amz_date,
        .expires = SIGV4_RDS_DEFAULT_EXPIRES,
    };
    return sigv4_presign_rds_token(&req, token, NULL, err, err_len);
}
