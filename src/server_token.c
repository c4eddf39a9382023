/*
 * server_token.c: AWS credentials for backend logins with RDS IAM tokens (server_auth_token), and
 * the signing of one token per backend login. The signing itself is sigv4.c's, the same code
 * sluice-token uses. Secrets are wiped when freed and never written into an error message.
 */
#include "server_token.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <openssl/crypto.h>

#include "config.h"
#include "errbuf.h"
#include "sigv4.h"

#define KEY_ID_NAME "aws_access_key_id"
#define SECRET_NAME "aws_secret_access_key"
#define SESSION_TOKEN_NAME "aws_session_token"

/* ---- credentials ---- */

static void wipe_string(char *s)
{
    if (s == NULL)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

void aws_credentials_clear(struct aws_credentials *c)
{
    wipe_string(c->access_key_id);
    wipe_string(c->secret_access_key);
    wipe_string(c->session_token);
    memset(c, 0, sizeof *c);
}

/* s[0..len) without blanks at either end, as a fresh string. */
static char *copy_trimmed(const char *s, size_t len)
{
    while (len > 0 && isspace((unsigned char)*s))
        s++, len--;
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    return strndup(s, len);
}

/* Replaces *field with the trimmed s[0..len); an empty value counts as not given. */
static int set_field(char **field, const char *s, size_t len)
{
    char *value = copy_trimmed(s, len);
    if (value == NULL)
        return -1;
    wipe_string(*field);
    *field = NULL;
    if (*value == '\0')
        free(value);
    else
        *field = value;
    return 0;
}

/* True when the line "[ name ]" (blanks allowed inside the brackets) names profile. */
static bool section_is(const char *line, size_t len, const char *profile)
{
    const char *close = memchr(line, ']', len);
    if (close == NULL)
        return false;
    char *name = copy_trimmed(line + 1, (size_t)(close - line - 1));
    bool same = name != NULL && strcmp(name, profile) == 0;
    free(name);
    return same;
}

/* One "name = value" line of the chosen profile. Returns 0, -1 (malformed) or -2 (memory). */
static int credentials_line(const char *line, size_t len, struct aws_credentials *out)
{
    const char *equals = memchr(line, '=', len);
    if (equals == NULL)
        return -1;
    char *name = copy_trimmed(line, (size_t)(equals - line));
    if (name == NULL)
        return -2;
    const char *value = equals + 1;
    size_t value_len = len - (size_t)(value - line);
    /* Names ignore case, as in the AWS CLI and SDKs (Python's configparser lowercases them). */
    char **field = strcasecmp(name, KEY_ID_NAME) == 0        ? &out->access_key_id
                   : strcasecmp(name, SECRET_NAME) == 0      ? &out->secret_access_key
                   : strcasecmp(name, SESSION_TOKEN_NAME) == 0 ? &out->session_token
                                                               : NULL;
    free(name);
    /* Other names (region, output, ...) belong to other tools: ignore them. */
    if (field == NULL)
        return 0;
    return set_field(field, value, value_len) == 0 ? 0 : -2;
}

int aws_credentials_parse(const char *text, const char *path, const char *profile,
                          struct aws_credentials *out, char *err, size_t err_len)
{
    bool in_profile = false, found = false;
    int lineno = 0;

    memset(out, 0, sizeof *out);
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        const char *next = end != NULL ? end + 1 : line + len;
        lineno++;
        while (len > 0 && isspace((unsigned char)*line))
            line++, len--;
        if (len == 0 || *line == '#' || *line == ';') {
            line = next;
            continue;
        }
        if (*line == '[') {
            in_profile = section_is(line, len, profile);
            found = found || in_profile;
        } else if (in_profile) {
            int rc = credentials_line(line, len, out);
            if (rc != 0) {
                errbuf_set(err, err_len, rc == -1 ? "%s:%d: expected name = value"
                                                  : "%s:%d: out of memory", path, lineno);
                aws_credentials_clear(out);
                return -1;
            }
        }
        line = next;
    }
    const char *missing = !found                        ? NULL
                          : out->access_key_id == NULL  ? KEY_ID_NAME
                          : out->secret_access_key == NULL ? SECRET_NAME
                                                          : "";
    if (missing == NULL || *missing != '\0') {
        if (missing == NULL)
            errbuf_set(err, err_len, "%s: no [%s] section", path, profile);
        else
            errbuf_set(err, err_len, "%s: [%s] has no %s", path, profile, missing);
        aws_credentials_clear(out);
        return -1;
    }
    return 0;
}

int aws_credentials_from_environment(const char *(*getenv_fn)(const char *name),
                                     struct aws_credentials *out, char *err, size_t err_len)
{
    const char *key_id = getenv_fn("AWS_ACCESS_KEY_ID");
    const char *secret = getenv_fn("AWS_SECRET_ACCESS_KEY");
    const char *session_token = getenv_fn("AWS_SESSION_TOKEN");

    memset(out, 0, sizeof *out);
    if (key_id == NULL || *key_id == '\0' || secret == NULL || *secret == '\0') {
        errbuf_set(err, err_len,
                   "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
                   "sluice's environment, or server_auth_token_credentials to a credentials file");
        return -1;
    }
    if (set_field(&out->access_key_id, key_id, strlen(key_id)) != 0 ||
        set_field(&out->secret_access_key, secret, strlen(secret)) != 0 ||
        (session_token != NULL &&
         set_field(&out->session_token, session_token, strlen(session_token)) != 0)) {
        aws_credentials_clear(out);
        errbuf_set(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- signing ---- */

int server_token_sign(const struct aws_credentials *creds, const char *host, int port,
                      const char *user, const char *region, time_t now, char **token, char *err,
                      size_t err_len)
{
    char amz_date[SIGV4_AMZ_DATE_LEN + 1];

    *token = NULL;
    if (sigv4_format_amz_date(now, amz_date) != 0) {
        errbuf_set(err, err_len, "the system clock is out of range");
        return -1;
    }
    struct sigv4_rds_token_request req = {
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

void server_token_free(char *token)
{
    wipe_string(token);
}

/* ---- the loaded credentials of a running sluice ---- */

static const char *environment_lookup(const char *name)
{
    return getenv(name);
}

/* Reads and parses the file; st gets the identity of the very file read, so that what is
 * remembered is what was read, even where a helper renames another file over the path
 * meanwhile. */
static int signer_read_file(const struct server_token_signer *signer, struct stat *st,
                            struct aws_credentials *creds, char *err, size_t err_len)
{
    size_t len = 0;
    char *text = config_read_file_stat(signer->path, &len, st, err, err_len);
    if (text == NULL)
        return -1;
    int rc = aws_credentials_parse(text, signer->path, signer->profile, creds, err, err_len);
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

static void signer_remember_file(struct server_token_signer *signer, const struct stat *st)
{
    signer->dev = st->st_dev;
    signer->ino = st->st_ino;
    signer->mtime = st->st_mtim;
    signer->size = st->st_size;
}

int server_token_signer_load(const char *path, const char *profile,
                             struct server_token_signer **out, char *err, size_t err_len)
{
    struct server_token_signer *signer = calloc(1, sizeof *signer);
    struct stat st;
    int rc;

    *out = NULL;
    if (signer == NULL) {
        errbuf_set(err, err_len, "out of memory");
        return -1;
    }
    pthread_mutex_init(&signer->lock, NULL);
    signer->profile = strdup(profile != NULL ? profile : AWS_DEFAULT_PROFILE);
    signer->path = path != NULL ? strdup(path) : NULL;
    if (signer->profile == NULL || (path != NULL && signer->path == NULL)) {
        errbuf_set(err, err_len, "out of memory");
        rc = -1;
    } else if (path == NULL) {
        rc = aws_credentials_from_environment(environment_lookup, &signer->creds, err, err_len);
    } else {
        rc = signer_read_file(signer, &st, &signer->creds, err, err_len);
        if (rc == 0)
            signer_remember_file(signer, &st);
    }
    if (rc != 0) {
        server_token_signer_free(signer);
        return -1;
    }
    *out = signer;
    return 0;
}

void server_token_signer_free(struct server_token_signer *signer)
{
    if (signer == NULL)
        return;
    aws_credentials_clear(&signer->creds);
    free(signer->path);
    free(signer->profile);
    pthread_mutex_destroy(&signer->lock);
    free(signer);
}

/* The file was replaced or changed since it was read: what signer_refresh_locked decides on. */
static bool signer_file_changed(const struct server_token_signer *signer, const struct stat *st)
{
    return st->st_dev != signer->dev || st->st_ino != signer->ino ||
           st->st_mtim.tv_sec != signer->mtime.tv_sec ||
           st->st_mtim.tv_nsec != signer->mtime.tv_nsec || st->st_size != signer->size;
}

static int signer_refresh_locked(struct server_token_signer *signer, char *err, size_t err_len)
{
    struct stat st;
    struct aws_credentials fresh;

    if (stat(signer->path, &st) != 0) {
        errbuf_set(err, err_len, "%s: cannot open: %s", signer->path, strerror(errno));
        return -1;
    }
    if (!signer_file_changed(signer, &st))
        return 0;
    int rc = signer_read_file(signer, &st, &fresh, err, err_len);
    /* A broken file is reported once, and read again only when it changes again. */
    signer_remember_file(signer, &st);
    if (rc != 0)
        return -1;
    aws_credentials_clear(&signer->creds);
    signer->creds = fresh;
    return 1;
}

int server_token_signer_refresh(struct server_token_signer *signer, char *err, size_t err_len)
{
    if (signer->path == NULL)
        return 0;
    /* One worker reads the file at a time; the others wait, then see it unchanged. */
    pthread_mutex_lock(&signer->lock);
    int rc = signer_refresh_locked(signer, err, err_len);
    pthread_mutex_unlock(&signer->lock);
    return rc;
}

int server_token_signer_sign(struct server_token_signer *signer, const char *host, int port,
                             const char *user, const char *region, time_t now, char **token,
                             char *err, size_t err_len)
{
    /* Signing is a few HMACs: holding the lock is cheaper than copying the keys out. */
    pthread_mutex_lock(&signer->lock);
    int rc = server_token_sign(&signer->creds, host, port, user, region, now, token, err, err_len);
    pthread_mutex_unlock(&signer->lock);
    return rc;
}

void server_token_signer_key_id(struct server_token_signer *signer, char *buf, size_t len)
{
    pthread_mutex_lock(&signer->lock);
    snprintf(buf, len, "%s", signer->creds.access_key_id ? signer->creds.access_key_id : "(none)");
    pthread_mutex_unlock(&signer->lock);
}
