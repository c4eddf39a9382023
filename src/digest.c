/*
 * digest.c: SHA-256 and HMAC-SHA-256 over OpenSSL's EVP digests, the pads built here, so that a
 * login costs four digest computations and no algorithm look-ups by name.
 */
#include "digest.h"

#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define SHA256_BLOCK_LEN 64

/* SHA-256 of up to two pieces (second may be NULL), on a context the caller reuses. */
static bool sha256_on(EVP_MD_CTX *ctx, const void *first, size_t first_len, const void *second,
                      size_t second_len, uint8_t out[DIGEST_SHA256_LEN])
{
    unsigned int out_len = 0;

    return EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
           EVP_DigestUpdate(ctx, first, first_len) == 1 &&
           (second == NULL || EVP_DigestUpdate(ctx, second, second_len) == 1) &&
           EVP_DigestFinal_ex(ctx, out, &out_len) == 1 && out_len == DIGEST_SHA256_LEN;
}

bool digest_sha256(const void *data, size_t len, uint8_t out[DIGEST_SHA256_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool done = ctx != NULL && sha256_on(ctx, data, len, NULL, 0, out);

    EVP_MD_CTX_free(ctx);
    return done;
}

bool digest_sha256_pair(const void *first, size_t first_len, const void *second, size_t second_len,
                        uint8_t out[DIGEST_SHA256_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool done = ctx != NULL && sha256_on(ctx, first, first_len, second, second_len, out);

    EVP_MD_CTX_free(ctx);
    return done;
}

bool digest_hmac_sha256(const void *key, size_t key_len, const void *data, size_t data_len,
                        uint8_t out[DIGEST_SHA256_LEN])
{
    uint8_t pad[SHA256_BLOCK_LEN] = { 0 };
    uint8_t inner[DIGEST_SHA256_LEN];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool done = ctx != NULL;

    /* A key longer than a block is replaced by its digest (RFC 2104, section 2). */
    if (done && key_len > SHA256_BLOCK_LEN)
        done = sha256_on(ctx, key, key_len, NULL, 0, pad);
    else if (done)
        memcpy(pad, key, key_len);
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] ^= 0x36;
    done = done && sha256_on(ctx, pad, sizeof(pad), data, data_len, inner);
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] ^= 0x36 ^ 0x5c;
    done = done && sha256_on(ctx, pad, sizeof(pad), inner, sizeof(inner), out);
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    EVP_MD_CTX_free(ctx);
    return done;
}
