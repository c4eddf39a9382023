/*
 * sigv4.h: the pieces of AWS Signature Version 4 that RDS-style IAM tokens need, as pure functions:
 * SigV4 URI encoding, percent-decoding, the canonical query and request of a presigned GET "/",
 * the string to sign, the signing key and the signature. sigv4_presign_rds_token() builds a token
 * byte for byte as the AWS SDKs print it; auth_token.c verifies tokens with the same pieces.
 */
#ifndef SLUICE_SIGV4_H
#define SLUICE_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_RDS_SERVICE "rds-db"
#define SIGV4_SCOPE_TERMINATOR "aws4_request"
#define SIGV4_AMZ_DATE_LEN 16        /* "YYYYMMDDTHHMMSSZ" */
#define SIGV4_SCOPE_DATE_LEN 8       /* "YYYYMMDD" */
#define SIGV4_KEY_LEN 32             /* HMAC-SHA-256 output */
#define SIGV4_HEX_LEN 64             /* SHA-256 or HMAC-SHA-256 as lowercase hex */
#define SIGV4_MAX_EXPIRES 604800     /* SigV4's own limit on X-Amz-Expires (7 days) */
#define SIGV4_RDS_DEFAULT_EXPIRES 900
#define SIGV4_HTTPS_DEFAULT_PORT 443 /* the SDKs leave it out of the signed host header */

/* One query parameter, decoded (the bytes the signer meant, before any encoding). */
struct sigv4_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* What the signature was computed from, step by step, so each step can be checked alone. */
struct sigv4_steps {
    char canonical_request_sha256[SIGV4_HEX_LEN + 1];
    unsigned char signing_key[SIGV4_KEY_LEN];
    char signature[SIGV4_HEX_LEN + 1];
};

/* Everything a SigV4 signature of a presigned GET "/" with only "host" signed depends on. */
struct sigv4_signing_input {
    const char *secret_access_key;
    const char *canonical_host;      /* value of the host header, see sigv4_canonical_host() */
    const struct sigv4_param *params;/* every query parameter except X-Amz-Signature, any order */
    size_t n_params;
    const char *amz_date;            /* X-Amz-Date, "YYYYMMDDTHHMMSSZ" */
    const char *scope_date;          /* "YYYYMMDD" from the credential scope */
    const char *region;
    const char *service;
};

/* The inputs of an RDS IAM auth token, as given to the SDKs' generate_db_auth_token. */
struct sigv4_rds_token_request {
    const char *host;
    int port;
    const char *user;
    const char *region;
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token;       /* NULL or "": none */
    const char *amz_date;            /* "YYYYMMDDTHHMMSSZ", see sigv4_format_amz_date() */
    int expires;                     /* seconds, 1..SIGV4_MAX_EXPIRES; the SDKs use 900 */
};

/*
 * Returns s[0..len) encoded the SigV4 way in a fresh string: A-Za-z0-9-_.~ kept, every other byte
 * (also '/') written as %XX with uppercase hex. NULL when out of memory.
 */
char *sigv4_uri_encode(const char *s, size_t len);

/*
 * Percent-decodes s[0..len) into a fresh string (*out, length *out_len). '+' decodes to a space,
 * as form encoding means it: a SigV4 encoder never leaves a '+' unencoded. Returns 0; -1 if a '%'
 * is not followed by two hex digits or a byte decodes to NUL; -2 when out of memory.
 */
int sigv4_percent_decode(const char *s, size_t len, char **out, size_t *out_len);

/* Encodes each parameter, sorts by encoded name then encoded value, joins "n=v&n=v". */
char *sigv4_canonical_query(const struct sigv4_param *params, size_t n_params);

/*
 * The host header value botocore signs for HOST:PORT: the host lowercased, then ":PORT" unless
 * the port is HTTPS's default 443. NULL if out of memory.
 */
char *sigv4_canonical_host(const char *host, size_t host_len, int port);

/* "GET\n/\n<query>\nhost:<host>\n\nhost\n<SHA-256 of the empty payload>". */
char *sigv4_canonical_request(const char *canonical_host, const char *canonical_query);

/* "AWS4-HMAC-SHA256\n<amz_date>\n<date>/<region>/<service>/aws4_request\n<hash hex>". */
char *sigv4_string_to_sign(const char *amz_date, const char *scope_date, const char *region,
                           const char *service, const char *canonical_request_sha256);

/* Lowercase hex SHA-256 of data into out (SIGV4_HEX_LEN + 1 bytes). */
void sigv4_sha256_hex(const void *data, size_t len, char *out);

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" secret, date), region), service), "aws4_request"). */
int sigv4_signing_key(const char *secret_access_key, const char *scope_date, const char *region,
                      const char *service, unsigned char key[SIGV4_KEY_LEN]);

/* Lowercase hex HMAC-SHA-256(key, string_to_sign) into out (SIGV4_HEX_LEN + 1 bytes). */
int sigv4_signature_hex(const unsigned char key[SIGV4_KEY_LEN], const char *string_to_sign,
                        char *out);

/* All the steps above for one presigned GET "/". Returns 0, or -1 when out of memory. */
int sigv4_sign(const struct sigv4_signing_input *in, struct sigv4_steps *steps);

/* "YYYYMMDDTHHMMSSZ" for t in UTC into out (SIGV4_AMZ_DATE_LEN + 1 bytes); -1 if out of range. */
int sigv4_format_amz_date(time_t t, char *out);

/* Parses "YYYYMMDDTHHMMSSZ" (a real UTC date, years 1970-9999) into *t. Returns 0 or -1. */
int sigv4_parse_amz_date(const char *s, size_t len, time_t *t);

/*
 * Builds the token the AWS SDKs' generate_db_auth_token prints for req: "HOST:PORT/?" and the
 * parameters in sorted order, X-Amz-Signature last. On success returns 0 and sets *token (free it);
 * steps may be NULL. On bad input returns -1 with the reason in err (the secret never appears).
 */
int sigv4_presign_rds_token(const struct sigv4_rds_token_request *req, char **token,
                            struct sigv4_steps *steps, char *err, size_t err_len);

#endif
