/*
 * server_token.h: the AWS credentials sluice signs RDS IAM auth tokens with when it logs in to a
 * backend whose [databases] line says server_auth_token=on. The token (the same SigV4 presigned
 * URL as sluice-token prints) is sent as the cleartext password; a fresh one is signed for every
 * backend login. Credentials come from an AWS shared credentials file or from the environment.
 */
#ifndef SLUICE_SERVER_TOKEN_H
#define SLUICE_SERVER_TOKEN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#define AWS_DEFAULT_PROFILE "default"

/* One access key; strings are heap copies, wiped when cleared. */
struct aws_credentials {
    char *access_key_id;
    char *secret_access_key;
    char *session_token;     /* NULL: none (long-term keys) */
};

/*
 * Parses the text of an AWS shared credentials file (~/.aws/credentials): "[profile]" sections
 * holding aws_access_key_id, aws_secret_access_key and optionally aws_session_token; '#' and ';'
 * start comments. Fills *out from the section named profile. Returns 0; -1 with "PATH:LINE: what"
 * or "PATH: what" in err (path is used in messages only). Secrets never appear in err.
 */
int aws_credentials_parse(const char *text, const char *path, const char *profile,
                          struct aws_credentials *out, char *err, size_t err_len);

/*
 * Fills *out from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN as getenv_fn
 * returns them (getenv in sluice; a table in tests). Returns 0, or -1 with the reason in err.
 */
int aws_credentials_from_environment(const char *(*getenv_fn)(const char *name),
                                     struct aws_credentials *out, char *err, size_t err_len);

/* Wipes and frees the strings; *c is left empty. */
void aws_credentials_clear(struct aws_credentials *c);

/*
 * Signs the token for logging in as user to host:port in region at time now, valid
 * SIGV4_RDS_DEFAULT_EXPIRES seconds. Returns 0 and sets *token (wipe and free it with
 * server_token_free); -1 with the reason in err.
 */
int server_token_sign(const struct aws_credentials *creds, const char *host, int port,
                      const char *user, const char *region, time_t now, char **token, char *err,
                      size_t err_len);

/* Wipes and frees a token from server_token_sign. NULL is fine. */
void server_token_free(char *token);

/*
 * Where the credentials came from, so a changed file is read again before signing. Workers may
 * share one signer: the keys and the file's identity change (a refresh) and are read (a signing)
 * under lock only, through the functions below; path and profile never change after loading.
 */
struct server_token_signer {
    char *path;              /* server_auth_token_credentials; NULL: the environment */
    char *profile;
    pthread_mutex_t lock;
    struct aws_credentials creds; /* under lock */
    dev_t dev;               /* under lock: identity of the file last read, to notice a replaced file */
    ino_t ino;
    struct timespec mtime;
    off_t size;
};

/*
 * Loads credentials from path (profile: NULL means "default") or, when path is NULL, from the
 * environment. Returns 0 and sets *out (free with server_token_signer_free); -1 with err set.
 */
int server_token_signer_load(const char *path, const char *profile,
                             struct server_token_signer **out, char *err, size_t err_len);

void server_token_signer_free(struct server_token_signer *signer);

/*
 * Reads the credentials file again if it was replaced or changed since it was read, so keys that
 * a credentials helper rotates are picked up without a reload. Returns 1 when new keys were
 * loaded, 0 when nothing changed, -1 (err set, the old keys kept) when the new file is unusable.
 */
int server_token_signer_refresh(struct server_token_signer *signer, char *err, size_t err_len);

/*
 * server_token_sign with the keys the signer holds now: one consistent set, even while another
 * worker refreshes them. 0 and *token set, or -1 with err set.
 */
int server_token_signer_sign(struct server_token_signer *signer, const char *host, int port,
                             const char *user, const char *region, time_t now, char **token,
                             char *err, size_t err_len);

/* The access key id the signer holds now (no secret: for log lines), copied into buf. */
void server_token_signer_key_id(struct server_token_signer *signer, char *buf, size_t len);

#endif
