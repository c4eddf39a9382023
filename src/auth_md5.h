/*
 * auth_md5.h: PostgreSQL's md5 password scheme, both directions.
 * Stored secret: "md5" + hex(md5(password || user));
 * on the wire:   "md5" + hex(md5(hex_secret || salt)).
 */
#ifndef SLUICE_AUTH_MD5_H
#define SLUICE_AUTH_MD5_H

#include <stdbool.h>
#include <stdint.h>

#define MD5_PASSWORD_LEN 35 /* "md5" + 32 hex digits */

/* out: MD5_PASSWORD_LEN + 1 bytes. "md5" + hex(md5(password || user)). */
void md5_stored_secret(const char *password, const char *user, char *out);

/*
 * What a client sends for the given salt. secret: a plain password or an md5 stored secret
 * ("md5" + 32 lowercase hex digits, used as the inner hash). out: MD5_PASSWORD_LEN + 1 bytes,
 * left empty when the secret cannot answer md5 (a SCRAM verifier).
 */
void md5_client_response(const char *secret, const char *user, const uint8_t salt[4], char *out);

/*
 * Server side: is the client's response right for this stored secret (plain or md5)?
 * Constant-time comparison. Always false for a SCRAM verifier.
 */
bool md5_check_response(const char *secret, const char *user, const uint8_t salt[4],
                        const char *response);

#endif
