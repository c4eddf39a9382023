/*
 * fuzz_token.c: an RDS IAM auth token, which a client sends as its cleartext password, through
 * token_verify with a fixed key ring, policy and clock: those of botocore's published example
 * (tests/vectors/rds-auth-token.txt), so that its token in the corpus passes every check and
 * mutations of it reach each one. Checks that the verdict and the reason agree.
 * Built with libFuzzer (see README) or with replay_main.c to replay the corpus in `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEYRING "[akid]\nsecret = skid\nusers = someusername, other\n"
#define NOW 1478540400 /* 2016-11-07 17:40:00 UTC, 27 s after the example's X-Amz-Date */

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static const struct token_keyring *keyring(void)
{
    static struct token_keyring *ring;
    char err[256];

    if (ring == NULL)
        CHECK(token_keyring_load_string(KEYRING, "fuzz-keys.ini", &ring, err, sizeof(err)) == 0);
    return ring;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct token_policy policy = {
        .region = "us-east-1",
        .endpoints = "prod-instance.us-east-1.rds.amazonaws.com:3306, other.example:5432",
        .clock_skew_seconds = 60,
        .max_expires = 900,
    };
    /* An exact copy, not NUL-terminated: the token is a length and bytes, as from the wire. */
    char *token = malloc(size ? size : 1);
    enum token_failure why = TOKEN_FAIL_OUT_OF_MEMORY;

    CHECK(token != NULL);
    if (size)
        memcpy(token, data, size);
    int result = token_verify(keyring(), &policy, token, size, "someusername", NOW, &why);
    free(token);
    CHECK((result == 0) == (why == TOKEN_OK));
    CHECK(result == 0 || result == -1);
    const char *message = token_failure_message(why);
    CHECK(message != NULL && message[0] != '\0');
    return 0;
}
