/*
 * auth_token.h: RDS-style IAM auth tokens (SigV4 presigned "connect" requests for service rds-db)
 * used as a cleartext password, verified offline against a key file of access keys.
 * The key file is INI: one [ACCESS_KEY_ID] section per key, with "secret = ..." and
 * "users = a, b" ("*" = any user). Reloading is loading a new ring and swapping it in.
 */
#ifndef SLUICE_AUTH_TOKEN_H
#define SLUICE_AUTH_TOKEN_H

#include <stddef.h>
#include <time.h>

#define TOKEN_MAX_LEN 8192           /* longer passwords are refused before any parsing */
#define TOKEN_MAX_PARAMETERS 32      /* a real token has 8 or 9 */
#define TOKEN_DEFAULT_MAX_EXPIRES 900

/* Why a token was refused. Every check has its own value. */
enum token_failure {
    TOKEN_OK = 0,
    TOKEN_FAIL_OVERSIZED,             /* longer than TOKEN_MAX_LEN */
    TOKEN_FAIL_MALFORMED,             /* not "HOST:PORT/?name=value&...", or too many parameters */
    TOKEN_FAIL_BAD_ENCODING,          /* bad %XX, %00, or a byte that cannot appear in a URL */
    TOKEN_FAIL_MISSING_PARAMETER,
    TOKEN_FAIL_DUPLICATE_PARAMETER,
    TOKEN_FAIL_WRONG_ACTION,          /* Action is not "connect" */
    TOKEN_FAIL_WRONG_ALGORITHM,       /* X-Amz-Algorithm is not AWS4-HMAC-SHA256 */
    TOKEN_FAIL_WRONG_SIGNED_HEADERS,  /* X-Amz-SignedHeaders is not exactly "host" */
    TOKEN_FAIL_BAD_CREDENTIAL_SCOPE,  /* X-Amz-Credential not KEY/DATE/REGION/rds-db/aws4_request */
    TOKEN_FAIL_BAD_DATE,              /* X-Amz-Date is not a real YYYYMMDDTHHMMSSZ */
    TOKEN_FAIL_CREDENTIAL_DATE_MISMATCH, /* credential scope date is not X-Amz-Date's day */
    TOKEN_FAIL_REGION_MISMATCH,       /* signed for another region than auth_token_region */
    TOKEN_FAIL_ENDPOINT_NOT_ALLOWED,  /* HOST:PORT is not in auth_token_endpoints */
    TOKEN_FAIL_UNKNOWN_ACCESS_KEY,    /* access key id not in the key file */
    TOKEN_FAIL_USER_MISMATCH,         /* DBUser is not the user of the startup packet */
    TOKEN_FAIL_USER_NOT_ALLOWED,      /* the key may not log in as this user */
    TOKEN_FAIL_BAD_EXPIRES,           /* X-Amz-Expires not a number in 1..max_expires */
    TOKEN_FAIL_NOT_YET_VALID,         /* X-Amz-Date later than now plus the allowed clock skew */
    TOKEN_FAIL_EXPIRED,               /* now is past X-Amz-Date + X-Amz-Expires */
    TOKEN_FAIL_BAD_SIGNATURE,         /* the signature does not match the key's secret */
    TOKEN_FAIL_OUT_OF_MEMORY,
};

/* What a token must have been signed for; all strings borrowed from the caller's config. */
struct token_policy {
    const char *region;               /* required: tokens for other regions are refused */
    const char *endpoints;            /* required: comma-separated host:port; host case-insensitive */
    int clock_skew_seconds;           /* how far X-Amz-Date may lie in the future; < 0 counts as 0 */
    int max_expires;                  /* largest X-Amz-Expires accepted; <= 0 means 900 */
};

/* The access keys of one key file; opaque, owned by whoever loaded it. */
struct token_keyring;

/*
 * Loads the key file at path. On success returns 0 and sets *ring (free with token_keyring_free).
 * On failure returns -1 and writes "FILE:LINE: what is wrong" (or "FILE: ...") into err.
 * Secrets never appear in err.
 */
int token_keyring_load(const char *path, struct token_keyring **ring, char *err, size_t err_len);

/* Same, from a text in memory (for tests); path is used in messages only. */
int token_keyring_load_string(const char *text, const char *path, struct token_keyring **ring,
                              char *err, size_t err_len);

/* Wipes the secrets and frees the ring. NULL is fine. */
void token_keyring_free(struct token_keyring *ring);

/* Number of access keys in the ring. */
size_t token_keyring_size(const struct token_keyring *ring);

/*
 * Verifies token[0..token_len) as the password of startup_user at time now. Parameters may come
 * in any order and with either SigV4 or form encoding. Returns 0 if every check passes, else -1
 * with the reason in *why (why may be NULL).
 */
int token_verify(const struct token_keyring *ring, const struct token_policy *policy,
                 const char *token, size_t token_len, const char *startup_user, time_t now,
                 enum token_failure *why);

/*
 * A sentence for the server log saying what was wrong and what to do. It never contains any part
 * of the token or of a secret. Clients should get PostgreSQL's generic 28P01 message instead.
 */
const char *token_failure_message(enum token_failure why);

#endif
