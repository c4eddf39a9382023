/*
 * auth_md5.c: PostgreSQL's md5 password scheme: the stored secret, the response a client sends
 * for a salt, and the server's constant-time check of that response. Pure functions.
 */
#include "auth_md5.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define MD5_PREFIX "md5"
#define MD5_PREFIX_LEN 3
#define MD5_HEX_LEN 32
#define MD5_DIGEST_BYTES 16
#define MD5_SALT_LEN 4
#define SCRAM_SECRET_PREFIX "SCRAM-SHA-256$"

/*
 * out = "md5" + hex(md5(first || second)), MD5_PASSWORD_LEN + 1 bytes. On an OpenSSL failure
 * out is left empty, which no check accepts.
 */
static void md5_hex_of_pair(const void *first, size_t first_len, const void *second,
                            size_t second_len, char *out)
{
    static const char hex_digits[] = "0123456789abcdef";
    uint8_t digest[MD5_DIGEST_BYTES];
    unsigned int digest_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool hashed = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
                  EVP_DigestUpdate(ctx, first, first_len) == 1 &&
                  EVP_DigestUpdate(ctx, second, second_len) == 1 &&
                  EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 &&
                  digest_len == MD5_DIGEST_BYTES;

    EVP_MD_CTX_free(ctx);
    out[0] = '\0';
    if (!hashed)
        return;
    memcpy(out, MD5_PREFIX, MD5_PREFIX_LEN);
    for (size_t i = 0; i < MD5_DIGEST_BYTES; i++) {
        out[MD5_PREFIX_LEN + 2 * i] = hex_digits[digest[i] >> 4];
        out[MD5_PREFIX_LEN + 2 * i + 1] = hex_digits[digest[i] & 0x0f];
    }
    out[MD5_PASSWORD_LEN] = '\0';
}

/* As PostgreSQL recognises one: "md5" and 32 lowercase hex digits, nothing else. */
static bool md5_is_stored_secret(const char *secret)
{
    return strlen(secret) == MD5_PASSWORD_LEN &&
           strncmp(secret, MD5_PREFIX, MD5_PREFIX_LEN) == 0 &&
           strspn(secret + MD5_PREFIX_LEN, "0123456789abcdef") == MD5_HEX_LEN;
}

void md5_stored_secret(const char *password, const char *user, char *out)
{
    if (out == NULL)
        return;
    out[0] = '\0';
    if (password == NULL || user == NULL)
        return;
    md5_hex_of_pair(password, strlen(password), user, strlen(user), out);
}

void md5_client_response(const char *secret, const char *user, const uint8_t salt[4], char *out)
{
    char stored[MD5_PASSWORD_LEN + 1];

    if (out == NULL)
        return;
    out[0] = '\0';
    if (secret == NULL || user == NULL || salt == NULL)
        return;
    /*
     * A SCRAM verifier cannot answer an md5 challenge. Hashing it as if it were a plain
     * password would let anyone who read the verifier log in with it.
     */
    if (strncmp(secret, SCRAM_SECRET_PREFIX, strlen(SCRAM_SECRET_PREFIX)) == 0)
        return;
    if (md5_is_stored_secret(secret))
        memcpy(stored, secret, sizeof stored);
    else
        md5_stored_secret(secret, user, stored);
    if (stored[0] == '\0')
        return;
    md5_hex_of_pair(stored + MD5_PREFIX_LEN, MD5_HEX_LEN, salt, MD5_SALT_LEN, out);
    OPENSSL_cleanse(stored, sizeof stored);
}

bool md5_check_response(const char *secret, const char *user, const uint8_t salt[4],
                        const char *response)
{
    char expected[MD5_PASSWORD_LEN + 1];
    bool right;

    if (secret == NULL || user == NULL || salt == NULL || response == NULL)
        return false;
    md5_client_response(secret, user, salt, expected);
    /*
     * An empty expectation means no md5 answer exists (SCRAM secret, OpenSSL failure). The
     * length is public (always MD5_PASSWORD_LEN); only the digits are compared in secret.
     */
    right = expected[0] != '\0' && strlen(response) == MD5_PASSWORD_LEN &&
            CRYPTO_memcmp(expected, response, MD5_PASSWORD_LEN) == 0;
    OPENSSL_cleanse(expected, sizeof expected);
    return right;
}
