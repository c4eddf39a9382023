/*
 * fuzz_scram.c: the SCRAM-SHA-256 messages a client sends while sluice authenticates it. An input
 * is client-first-message, a NUL byte, then client-final-message; both go through the server
 * side of auth_scram.c with RFC 7677's example verifier and server nonce, so the seed that is
 * RFC 7677's own exchange reaches a successful proof. Checks that every answer is a
 * NUL-terminated string of the length reported, and that a refusal says why.
 * Built with libFuzzer (see README) or with replay_main.c to replay the corpus in `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OUT_LEN 2048
#define ERR_LEN 256
/* RFC 7677, section 3 */
#define RFC_PASSWORD "pencil"
#define RFC_SALT "\x5b\x6d\x99\x68\x9d\x12\x35\x8e\xec\xa0\x4b\x14\x12\x36\xfa\x81"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static const struct scram_verifier *rfc_verifier(void)
{
    static struct scram_verifier verifier;
    static int ready;

    if (!ready) {
        CHECK(scram_verifier_from_password(RFC_PASSWORD, (const uint8_t *)RFC_SALT,
                                           16, 4096, &verifier));
        ready = 1;
    }
    return &verifier;
}

/* Copies bytes into a block of exactly that size, so the sanitizer sees any read past it. */
static uint8_t *exact_copy(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);

    CHECK(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    return copy;
}

static void check_answer(int result, const char *out, size_t out_len, const char *err)
{
    if (result < 0) {
        CHECK(memchr(err, '\0', ERR_LEN) != NULL && err[0] != '\0');
        return;
    }
    CHECK(out_len < OUT_LEN && out[out_len] == '\0' && strlen(out) == out_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *split = memchr(data, '\0', size);
    size_t first_len = split ? (size_t)(split - data) : size;
    struct scram_server server;
    char out[OUT_LEN], err[ERR_LEN];
    size_t out_len = 0;
    uint8_t *first = exact_copy(data, first_len);

    err[0] = '\0';
    int result = scram_server_first(&server, rfc_verifier(), RFC_SERVER_NONCE, first, first_len, out,
                                    sizeof(out), &out_len, err, sizeof(err));
    free(first);
    check_answer(result, out, out_len, err);
    if (result < 0 || split == NULL)
        return 0;
    size_t final_len = size - first_len - 1;
    uint8_t *final = exact_copy(split + 1, final_len);
    err[0] = '\0';
    out_len = 0;
    result = scram_server_final(&server, final, final_len, out, sizeof(out), &out_len, err, sizeof(err));
    free(final);
    check_answer(result, out, out_len, err);
    if (result == 1)
        CHECK(strncmp(out, "v=", 2) == 0);
    /* The exchange is over whatever the outcome: another final message is refused. */
    err[0] = '\0';
    CHECK(scram_server_final(&server, (const uint8_t *)"x", 1, out, sizeof(out), &out_len, err,
                             sizeof(err)) == -1);
    return 0;
}
