/*
 * test_digest.c: SHA-256 against FIPS 180-2's examples and HMAC-SHA-256 against RFC 4231's test
 * cases, including the key longer than a block (case 6) and the long message (case 7).
 */
#include "digest.h"

#include <stdio.h>
#include <string.h>

#include "tap.h"

static void hex(const uint8_t *bytes, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
}

static void check_sha256(const char *message, const char *expected, const char *what)
{
    uint8_t digest[DIGEST_SHA256_LEN];
    char text[2 * DIGEST_SHA256_LEN + 1];

    ok(digest_sha256(message, strlen(message), digest), "%s: computed", what);
    hex(digest, sizeof digest, text);
    is_str(text, expected, what);
}

static void check_hmac(const uint8_t *key, size_t key_len, const void *data, size_t data_len,
                       const char *expected, const char *what)
{
    uint8_t mac[DIGEST_SHA256_LEN];
    char text[2 * DIGEST_SHA256_LEN + 1];

    ok(digest_hmac_sha256(key, key_len, data, data_len, mac), "%s: computed", what);
    hex(mac, sizeof mac, text);
    is_str(text, expected, what);
}

static void test_sha256(void)
{
    check_sha256("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                 "SHA-256(\"abc\")");
    check_sha256("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                 "SHA-256 of the empty string");
    check_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                 "SHA-256 of the two-block FIPS message");
}

static void test_hmac_rfc4231(void)
{
    uint8_t key[131];

    memset(key, 0x0b, 20);
    check_hmac(key, 20, "Hi There", 8,
               "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", "RFC 4231 case 1");
    check_hmac((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28,
               "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "RFC 4231 case 2");
    memset(key, 0xaa, 20);
    uint8_t data[50];
    memset(data, 0xdd, sizeof data);
    check_hmac(key, 20, data, sizeof data,
               "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe", "RFC 4231 case 3");
    memset(key, 0xaa, sizeof key);
    check_hmac(key, sizeof key, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
               "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
               "RFC 4231 case 6: a 131-byte key is hashed first");
    const char *long_data = "This is a test using a larger than block-size key and a larger than "
                            "block-size data. The key needs to be hashed before being used by the "
                            "HMAC algorithm.";
    check_hmac(key, sizeof key, long_data, strlen(long_data),
               "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
               "RFC 4231 case 7: long key and long message");
    /* The edges of "longer than a block", against Python's hmac module. */
    check_hmac(key, 64, "exactly one block of key", 24,
               "6b86dff4b91fe689c94291f9648c1f7cea871c24c0aaee8b7b0f295528e85fe3",
               "a 64-byte key is used as it is");
    check_hmac(key, 65, "one byte more than a block", 26,
               "269d26c942a5ff9addf96cbc3a19c6d0cb4e0f377d714dd5657fda9b7dd3df29",
               "a 65-byte key is hashed first");
}

int main(void)
{
    test_sha256();
    test_hmac_rfc4231();
    return tap_done();
}
