/*
 * backend_token.h: IAM tokens toward PostgreSQL. For a database with auth_token = on, sluice signs
 * an RDS-format token (the SigV4 code sluice-token uses) as the password of each new backend
 * connection, with the access key from server_auth_token_credentials (the AWS shared-credentials
 * format, profile [default]) or from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
 */
#ifndef SLUICE_BACKEND_TOKEN_H
#define SLUICE_BACKEND_TOKEN_H

#include <stddef.h>
#include <time.h>

struct config;
struct backend_credentials;

/* True if a [databases] line has auth_token = on (credentials are then needed). */
int backend_token_needed(const struct config *cfg);

/*
 * Loads the credentials: from path (server_auth_token_credentials) or, when path is NULL, from the
 * environment. Returns 0 and sets *out (free with backend_credentials_free), or -1 with the reason
 * in err (never a secret).
 */
int backend_credentials_load(const char *path, struct backend_credentials **out, char *err,
                             size_t err_len);
/* Same, from a text in memory (tests); path is used in messages only. */
int backend_credentials_load_string(const char *text, const char *path,
                                    struct backend_credentials **out, char *err, size_t err_len);
void backend_credentials_free(struct backend_credentials *creds);

/*
 * Signs a token for user at host:port in region, valid from now for the SDKs' 900 seconds.
 * Returns 0 and sets *token (free it), or -1 with the reason in err: no credentials, credentials
 * past their expiration, or a signing failure.
 */
int backend_token_sign(const struct backend_credentials *creds, const char *region, const char *host,
                       int port, const char *user, time_t now, char **token, char *err,
                       size_t err_len);

#endif
