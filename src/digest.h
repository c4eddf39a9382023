/*
 * digest.h: SHA-256 and HMAC-SHA-256, the two primitives SCRAM and SigV4 are built from.
 * Computed with EVP digests directly: OpenSSL 3's one-shot HMAC() looks the MAC and the digest
 * up by name on every call, which made it the largest part of a SCRAM login's own work.
 */
#ifndef SLUICE_DIGEST_H
#define SLUICE_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_SHA256_LEN 32

bool digest_sha256(const void *data, size_t len, uint8_t out[DIGEST_SHA256_LEN]);
/* SHA-256 of first followed by second, without joining them in memory. */
bool digest_sha256_pair(const void *first, size_t first_len, const void *second, size_t second_len,
                        uint8_t out[DIGEST_SHA256_LEN]);

/* HMAC-SHA-256 (RFC 2104) of data under a key of any length. */
bool digest_hmac_sha256(const void *key, size_t key_len, const void *data, size_t data_len,
                        uint8_t out[DIGEST_SHA256_LEN]);

#endif
