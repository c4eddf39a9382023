/*
 * test_scram.c: SCRAM-SHA-256 both ways: the RFC 7677 test vector, verifiers made by PostgreSQL 15,
 * and every malformed input the parsers must refuse without crashing.
 * Expected values not printed in the RFC were computed independently with python3 hashlib/hmac.
 */
#include "auth_scram.h"

#include <stdlib.h>

#include "tap.h"

/* RFC 7677 section 3 */
#define RFC_PASSWORD "pencil"
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE RFC_CLIENT_NONCE RFC_SERVER_NONCE
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CLIENT_NONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The verifier PostgreSQL would store for "pencil" with the RFC's salt and count. */
#define RFC_VERIFIER                                                                               \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"  \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
/* The RFC exchange as sluice's client side sends it: "n=" instead of "n=user". */
#define RFC_EMPTY_USER_CLIENT_FINAL                                                                \
    "c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="
#define RFC_EMPTY_USER_SERVER_FINAL "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="

/* Made by PostgreSQL 15 (CREATE ROLE ... PASSWORD with password_encryption=scram-sha-256). */
#define PG_ALICE_PASSWORD "correct horse battery staple"
#define PG_ALICE_VERIFIER                                                                          \
    "SCRAM-SHA-256$4096:QhPOPv2uqb1woDYdMouW2g==$N8vHfT44MpLPyWeXxirsN+q7U4c64EH7nz1T6Nk9/r4=:"  \
    "PCS48WXh/d7vBvfY7GpC0lYNz5GhfLjh1FAVaJ5VA38="
/* "pässwörd" in NFC UTF-8: SASLprep leaves it unchanged, so raw bytes match PostgreSQL. */
#define PG_BOB_PASSWORD "p\xc3\xa4ssw\xc3\xb6rd"
#define PG_BOB_WRONG_PASSWORD "p\xc3\xa4sssw\xc3\xb6rd"
#define PG_BOB_VERIFIER                                                                            \
    "SCRAM-SHA-256$4096:Akn/+MALiWgQhfdyvBFZxw==$9H6w8fqWidUWKAlsdQNpGZRydltXWoGF1tw52arFZIE=:"  \
    "DoklpylDqQVvbvjLDkZu8BZKOCWJ8EJmfLKG0k21wVo="

static const uint8_t rfc_salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                   0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};

struct exchange {
    char out[SCRAM_MAX_MESSAGE + 1];
    size_t out_len;
    char err[256];
};

static int server_first(struct scram_server *s, const struct scram_verifier *v, const char *nonce,
                        const char *msg, size_t len, struct exchange *x)
{
    x->err[0] = '\0';
    return scram_server_first(s, v, nonce, (const uint8_t *)msg, len, x->out, sizeof x->out,
                              &x->out_len, x->err, sizeof x->err);
}

static int server_final(struct scram_server *s, const char *msg, size_t len, struct exchange *x)
{
    x->err[0] = '\0';
    return scram_server_final(s, (const uint8_t *)msg, len, x->out, sizeof x->out, &x->out_len,
                              x->err, sizeof x->err);
}

static int client_final(struct scram_client *c, const char *password, const char *msg, size_t len,
                        struct exchange *x)
{
    x->err[0] = '\0';
    return scram_client_final(c, password, (const uint8_t *)msg, len, x->out, sizeof x->out,
                              &x->out_len, x->err, sizeof x->err);
}

static int client_verify(struct scram_client *c, const char *msg, size_t len, struct exchange *x)
{
    x->err[0] = '\0';
    return scram_client_verify_server(c, (const uint8_t *)msg, len, x->err, sizeof x->err);
}

/* A server that has answered the RFC's client-first and now waits for client-final. */
static void rfc_server_waiting_for_final(struct scram_server *s, const struct scram_verifier *v)
{
    struct exchange x;

    if (server_first(s, v, RFC_SERVER_NONCE, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &x) != 0)
        printf("# setup failed: %s\n", x.err);
}

/* A client that has sent client-first with the RFC's nonce and now waits for server-first. */
static void rfc_client_waiting_for_server_first(struct scram_client *c)
{
    char first[SCRAM_MAX_MESSAGE + 1];
    size_t first_len;

    if (scram_client_first(c, RFC_CLIENT_NONCE, first, sizeof first, &first_len) != 0)
        printf("# setup failed: scram_client_first\n");
}

/* Runs a whole exchange between the two sides; returns what scram_server_final returned. */
static int full_exchange(const struct scram_verifier *v, const char *password, int *client_verdict)
{
    struct scram_client c;
    struct scram_server s;
    struct exchange to_server, to_client;
    int verdict;

    *client_verdict = -2;
    if (scram_client_first(&c, NULL, to_server.out, sizeof to_server.out, &to_server.out_len) != 0)
        return -2;
    if (server_first(&s, v, NULL, to_server.out, to_server.out_len, &to_client) != 0)
        return -2;
    if (client_final(&c, password, to_client.out, to_client.out_len, &to_server) != 0)
        return -2;
    verdict = server_final(&s, to_server.out, to_server.out_len, &to_client);
    if (verdict == 1)
        *client_verdict = client_verify(&c, to_client.out, to_client.out_len, &to_server);
    return verdict;
}

/* ---- RFC 7677 ---------------------------------------------------------------------------- */

static void test_rfc7677_verifier(void)
{
    struct scram_verifier derived, parsed;
    char formatted[256];

    ok(scram_verifier_from_password(RFC_PASSWORD, rfc_salt, sizeof rfc_salt, 4096, &derived),
       "a verifier is derived from the RFC 7677 password and salt");
    ok(scram_format_verifier(&derived, formatted, sizeof formatted),
       "the derived verifier can be formatted");
    is_str(formatted, RFC_VERIFIER, "the derived verifier has PostgreSQL's format and keys");
    ok(scram_parse_verifier(RFC_VERIFIER, &parsed), "the formatted verifier parses back");
    ok(parsed.iterations == 4096 && parsed.salt_len == sizeof rfc_salt &&
           memcmp(parsed.salt, rfc_salt, sizeof rfc_salt) == 0 &&
           memcmp(parsed.stored_key, derived.stored_key, SCRAM_KEY_LEN) == 0 &&
           memcmp(parsed.server_key, derived.server_key, SCRAM_KEY_LEN) == 0,
       "parsing gives back the derived iterations, salt and keys");
}

static void test_rfc7677_server_side(const struct scram_verifier *v)
{
    struct scram_server s;
    struct exchange x;

    is_int(server_first(&s, v, RFC_SERVER_NONCE, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &x), 0,
           "server accepts the RFC 7677 client-first-message");
    is_str(x.out, RFC_SERVER_FIRST, "server answers with the RFC 7677 server-first-message");
    is_int(x.out_len, strlen(RFC_SERVER_FIRST), "server-first length is reported");
    is_int(server_final(&s, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &x), 1,
           "server accepts the RFC 7677 client proof");
    is_str(x.out, RFC_SERVER_FINAL, "server answers with the RFC 7677 server-final-message");
    is_int(server_final(&s, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &x), -1,
           "a second client-final in the same exchange is refused");
}

static void test_rfc7677_client_side(const struct scram_verifier *v)
{
    struct scram_client c;
    struct scram_server s;
    struct exchange x, unused;
    char first[SCRAM_MAX_MESSAGE + 1];
    size_t first_len = 0;

    is_int(scram_client_first(&c, RFC_CLIENT_NONCE, first, sizeof first, &first_len), 0,
           "client writes client-first with a given nonce");
    is_str(first, "n,,n=,r=" RFC_CLIENT_NONCE,
           "client-first leaves the user empty, as PostgreSQL expects");
    is_int(first_len, strlen(first), "client-first length is reported");
    is_int(client_final(&c, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &x), 0,
           "client accepts the RFC 7677 server-first-message");
    is_str(x.out, RFC_EMPTY_USER_CLIENT_FINAL,
           "client-final carries the RFC 7677 proof recomputed for an empty user");
    is_int(client_verify(&c, RFC_EMPTY_USER_SERVER_FINAL, strlen(RFC_EMPTY_USER_SERVER_FINAL),
                         &unused),
           0, "client accepts the server signature for the same exchange");

    server_first(&s, v, RFC_SERVER_NONCE, first, first_len, &unused);
    is_int(server_final(&s, x.out, x.out_len, &unused), 1,
           "the server side accepts the client side's proof for the RFC exchange");
    is_str(unused.out, RFC_EMPTY_USER_SERVER_FINAL,
           "and signs it with the signature the client expects");
}

/* ---- SCRAM pass-through -------------------------------------------------------------------- */

/* ClientKey = HMAC(SaltedPassword, "Client Key") for the RFC 7677 password, by python3 hmac. */
static const uint8_t rfc_client_key[SCRAM_KEY_LEN] = {
    0xa6, 0x0f, 0xc9, 0x23, 0xd6, 0x7e, 0x86, 0x44, 0xa9, 0x2d, 0x16, 0xb9, 0x6e, 0xda, 0x5e, 0xf4,
    0x65, 0x6b, 0x0c, 0x72, 0x5c, 0x48, 0x43, 0x74, 0xbe, 0x25, 0x53, 0x55, 0x76, 0x99, 0x6e, 0x8b,
};

static void test_client_key_recovered_from_rfc7677_proof(const struct scram_verifier *v)
{
    struct scram_server s;
    struct exchange x;

    server_first(&s, v, RFC_SERVER_NONCE, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &x);
    is_int(server_final(&s, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &x), 1,
           "pass-through: the RFC 7677 proof is accepted");
    ok(memcmp(s.client_key, rfc_client_key, SCRAM_KEY_LEN) == 0,
       "pass-through: ClientProof XOR HMAC(StoredKey, AuthMessage) gives the RFC password's ClientKey");
}

static void test_wrong_proof_recovers_no_key(const struct scram_verifier *v)
{
    static const uint8_t zero[SCRAM_KEY_LEN] = {0};
    const char *wrong = "c=biws,r=" RFC_NONCE ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    struct scram_server s;
    struct exchange x;

    server_first(&s, v, RFC_SERVER_NONCE, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &x);
    is_int(server_final(&s, wrong, strlen(wrong), &x), 0, "pass-through: a wrong proof is refused");
    ok(memcmp(s.client_key, zero, SCRAM_KEY_LEN) == 0, "and leaves no ClientKey behind");
}

/* sluice logs in to "PostgreSQL" (its own server side, as PostgreSQL would answer) with the key. */
static void test_passthrough_login_with_recovered_key(const struct scram_verifier *v)
{
    struct scram_passthrough keys = {.verifier = *v};
    struct scram_client c;
    struct scram_server backend;
    struct exchange x, with_password, backend_x;
    char first[SCRAM_MAX_MESSAGE + 1];
    size_t first_len = 0;

    memcpy(keys.client_key, rfc_client_key, SCRAM_KEY_LEN);
    scram_client_first(&c, RFC_CLIENT_NONCE, first, sizeof first, &first_len);
    is_int(scram_client_final_passthrough(&c, &keys, (const uint8_t *)RFC_SERVER_FIRST,
                                          strlen(RFC_SERVER_FIRST), x.out, sizeof x.out, &x.out_len,
                                          x.err, sizeof x.err),
           0, "pass-through: client-final is written from the ClientKey alone");
    is_str(x.out, RFC_EMPTY_USER_CLIENT_FINAL,
           "and carries the same proof as the password would (RFC exchange, empty user)");
    is_int(client_verify(&c, RFC_EMPTY_USER_SERVER_FINAL, strlen(RFC_EMPTY_USER_SERVER_FINAL),
                         &with_password),
           0, "the server's signature is checked with the verifier's ServerKey");

    server_first(&backend, v, NULL, first, first_len, &backend_x);
    scram_client_first(&c, RFC_CLIENT_NONCE, first, sizeof first, &first_len);
    scram_client_final_passthrough(&c, &keys, (const uint8_t *)backend_x.out, backend_x.out_len,
                                   x.out, sizeof x.out, &x.out_len, x.err, sizeof x.err);
    is_int(server_final(&backend, x.out, x.out_len, &backend_x), 1,
           "a server with a random nonce accepts the pass-through proof");
    is_int(client_verify(&c, backend_x.out, backend_x.out_len, &with_password), 0,
           "and the pass-through client accepts its signature");
}

static void test_passthrough_refuses_other_verifier(const struct scram_verifier *v)
{
    struct scram_passthrough keys = {.verifier = *v};
    struct scram_client c;
    struct exchange x;
    char first[SCRAM_MAX_MESSAGE + 1];
    const char *other_salt = "r=" RFC_NONCE ",s=QhPOPv2uqb1woDYdMouW2g==,i=4096";
    const char *other_count = "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=8192";

    memcpy(keys.client_key, rfc_client_key, SCRAM_KEY_LEN);
    scram_client_first(&c, RFC_CLIENT_NONCE, first, sizeof first, NULL);
    is_int(scram_client_final_passthrough(&c, &keys, (const uint8_t *)other_salt, strlen(other_salt),
                                          x.out, sizeof x.out, &x.out_len, x.err, sizeof x.err),
           -1, "pass-through: a server with another salt (password changed) is refused");
    ok(strstr(x.err, "verifier differs") != NULL, "with a reason that says so");
    scram_client_first(&c, RFC_CLIENT_NONCE, first, sizeof first, NULL);
    is_int(scram_client_final_passthrough(&c, &keys, (const uint8_t *)other_count,
                                          strlen(other_count), x.out, sizeof x.out, &x.out_len,
                                          x.err, sizeof x.err),
           -1, "pass-through: a server with another iteration count is refused");
    scram_client_first(&c, RFC_CLIENT_NONCE, first, sizeof first, NULL);
    is_int(scram_client_final_passthrough(&c, NULL, (const uint8_t *)RFC_SERVER_FIRST,
                                          strlen(RFC_SERVER_FIRST), x.out, sizeof x.out, &x.out_len,
                                          x.err, sizeof x.err),
           -1, "pass-through without keys is refused");
}

/* ---- verifiers made by PostgreSQL ------------------------------------------------------------ */

static void test_postgresql_verifiers(void)
{
    struct scram_verifier alice, bob;
    char formatted[256];
    int client_verdict;

    ok(scram_parse_verifier(PG_ALICE_VERIFIER, &alice), "a PostgreSQL 15 verifier parses");
    ok(scram_format_verifier(&alice, formatted, sizeof formatted) &&
           strcmp(formatted, PG_ALICE_VERIFIER) == 0,
       "a PostgreSQL 15 verifier formats back to the same text");
    is_int(full_exchange(&alice, PG_ALICE_PASSWORD, &client_verdict), 1,
           "client and server sides agree on the right password for a PostgreSQL verifier");
    is_int(client_verdict, 0, "the client side accepts the server's signature");
    is_int(full_exchange(&alice, "correct horse battery stapler", &client_verdict), 0,
           "a wrong password is a proof mismatch (0), not a protocol error");
    is_int(full_exchange(&alice, "", &client_verdict), 0, "an empty password is a proof mismatch");

    ok(scram_parse_verifier(PG_BOB_VERIFIER, &bob), "a verifier for a non-ASCII password parses");
    is_int(full_exchange(&bob, PG_BOB_PASSWORD, &client_verdict), 1,
           "a non-ASCII password SASLprep leaves unchanged logs in with its raw bytes");
    is_int(full_exchange(&bob, PG_BOB_WRONG_PASSWORD, &client_verdict), 0,
           "a different non-ASCII password is refused");
}

/*
 * Passwords go through SASLprep as PostgreSQL applies it. Each verifier here was made by
 * PostgreSQL 15 from the first password given for it (CREATE ROLE ... PASSWORD E'...').
 */
static void test_passwords_prepared_like_postgresql(void)
{
    static const struct {
        const char *name;
        const char *verifier;
        const char *password;
        int want;
    } cases[] = {
        {"a no-break space maps to a space",
         "SCRAM-SHA-256$4096:qqrKA7Vy3ZLsXEIKXWfsRA==$"
         "oQkKva8O/qRvLK015lCFUwfWYBU92/2Lq9OxzMdVzi8=:"
         "CI+3ZcKCN2EzZlep0oSn4bjtvQ3Tc05wf6CuAvz7MB0=",
         "pass\xc2\xa0word", 1},
        {"so the same password typed with a plain space logs in too",
         "SCRAM-SHA-256$4096:qqrKA7Vy3ZLsXEIKXWfsRA==$"
         "oQkKva8O/qRvLK015lCFUwfWYBU92/2Lq9OxzMdVzi8=:"
         "CI+3ZcKCN2EzZlep0oSn4bjtvQ3Tc05wf6CuAvz7MB0=",
         "pass word", 1},
        {"a zero-width space maps to a space (C.1.2 before B.1)",
         "SCRAM-SHA-256$4096:rLbvagjPiKjIYVX1giYDtg==$"
         "bFoPcMOfzyQJWuZB0mD/+81Kjc051nwIZLt7TJnvPoE=:"
         "qf7dMDdUuL41aI8UgwSk+2BA+MD3LBmHwgDcjnM/APM=",
         "pass\xe2\x80\x8bword", 1},
        {"a soft hyphen maps to nothing",
         "SCRAM-SHA-256$4096:TMchJ/Zp17KtIBYQRA5LWg==$"
         "tqcPjgF4ru0HgykRbKpzc3YCXLEu/qF7hDyGVasFwF4=:"
         "/evHIN5QMhYnj1gNUpWxoDDrEnpLL6ExXg9qSGGn/PU=",
         "pass\xc2\xadword", 1},
        {"so the password without it logs in too",
         "SCRAM-SHA-256$4096:TMchJ/Zp17KtIBYQRA5LWg==$"
         "tqcPjgF4ru0HgykRbKpzc3YCXLEu/qF7hDyGVasFwF4=:"
         "/evHIN5QMhYnj1gNUpWxoDDrEnpLL6ExXg9qSGGn/PU=",
         "password", 1},
        {"mapping keeps other non-ASCII characters",
         "SCRAM-SHA-256$4096:1OZu/GZgXbCKQgGzc3NEEw==$"
         "zR8rPSnuNPreAA0gUxRbiHYXuQBqq4yPKczdnwvFfVw=:"
         "yI1rxd5HjUuxUX22uteXTNwI51L9ZrsFnkFtnos3DJQ=",
         "\xc3\xa9t\xc3\xa9\xc2\xa0" "caf\xc3\xa9", 1},
        {"a password that maps to one space",
         "SCRAM-SHA-256$4096:iWnF2Nq/9fQR3QGR0xHhJQ==$"
         "xFqBpQ/ievoXi4cWz8qnVQvN9nPnIUXz+stKIU7KuSA=:"
         "bdBPZMcxm7oL5BGAaWSACNkv4SAnsBzIxec+Q6YBqdo=",
         "\xe2\x80\x8b", 1},
        {"an ASCII control character keeps the raw bytes",
         "SCRAM-SHA-256$4096:tqSZ4R8uF9v+zAInREZxlQ==$"
         "iimVuNOOQyx8HraO35X1F9YY3/P2sbkIhkiEFbpR+V8=:"
         "GpeJfLzwtJMH9DOZChXn+AqH7YVC2uuLq8t2ozkG4zw=",
         "\xc2\xa0pass\x01", 1},
        {"and its mapped form is another password",
         "SCRAM-SHA-256$4096:tqSZ4R8uF9v+zAInREZxlQ==$"
         "iimVuNOOQyx8HraO35X1F9YY3/P2sbkIhkiEFbpR+V8=:"
         "GpeJfLzwtJMH9DOZChXn+AqH7YVC2uuLq8t2ozkG4zw=",
         " pass\x01", 0},
        {"a password that maps to nothing keeps the raw bytes",
         "SCRAM-SHA-256$4096:k7zhMJ4yLx80e08GyuIF+g==$"
         "Mosb3L0rlSbILoype6QbjwavlGlYUOMfs8MOxIbsJ/o=:"
         "/uH58BAJxgpmdq7WQQAn9gebasIHSCZkoOqEc5hcdLo=",
         "\xc2\xad", 1},
        {"and the empty password is another one",
         "SCRAM-SHA-256$4096:k7zhMJ4yLx80e08GyuIF+g==$"
         "Mosb3L0rlSbILoype6QbjwavlGlYUOMfs8MOxIbsJ/o=:"
         "/uH58BAJxgpmdq7WQQAn9gebasIHSCZkoOqEc5hcdLo=",
         "", 0},
        {"an emoji (unassigned in Unicode 3.2) keeps the raw bytes",
         "SCRAM-SHA-256$4096:Owg0lpkL9G5q43vxLrZ0fQ==$"
         "qvCEVPCcRDoobtmTuBxtg/RCL6BG8G5LBjFxTclMpeg=:"
         "yig7wXGvPMPah3DmGmZZdX092ZCi8X2LKWg2yhsaR+E=",
         "pass\xc2\xa0word\xf0\x9f\x98\x80", 1},
        {"and its mapped form is another password",
         "SCRAM-SHA-256$4096:Owg0lpkL9G5q43vxLrZ0fQ==$"
         "qvCEVPCcRDoobtmTuBxtg/RCL6BG8G5LBjFxTclMpeg=:"
         "yig7wXGvPMPah3DmGmZZdX092ZCi8X2LKWg2yhsaR+E=",
         "pass word\xf0\x9f\x98\x80", 0},
        {"a private-use character keeps the raw bytes",
         "SCRAM-SHA-256$4096:346VIpWMvEpcbiw1Oc2URg==$"
         "9GSHNHnZFSbDvuftu6cvqGH46E6BUoKkpXaN0EOnPZg=:"
         "YzNCjty8JFE/2L8rNIjsNHzcWlR5OleibER1Va2gkBA=",
         "pass\xc2\xa0word\xee\x80\x80", 1},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct scram_verifier v;
        int client_verdict;

        scram_parse_verifier(cases[i].verifier, &v);
        is_int(full_exchange(&v, cases[i].password, &client_verdict), cases[i].want,
               "SASLprep: %s", cases[i].name);
    }
}

/* Invalid UTF-8 is hashed raw, even around a character SASLprep would map. */
static void test_invalid_utf8_passwords_used_raw(void)
{
    static const struct {
        const char *name;
        const char *password;
        const char *verifier; /* python3 hashlib over the raw bytes, RFC 7677 salt */
    } cases[] = {
        {"a stray continuation byte", "pass\xc2\xa0word\xff",
         "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
         "q8qrFzRGE8M10fe23MRidLCEkeBa02PHsh1OncmSv8M=:"
         "moxpFqRV/5+X7A4l28NmFUwxRslL1ZGozwao9tU1yGw="},
        {"an encoded surrogate", "pass\xc2\xa0word\xed\xa0\x80",
         "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
         "nT43jv1oPbg+Fgyt5WfxLjvb432r433aKWfuC+rouTA=:"
         "DIwvmjl4unWLR/kfCRq4h4+ZkFVzC66ozCoORSIHQiA="},
        {"an overlong encoding", "pass\xc2\xa0word\xc0\xa0",
         "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
         "t3kfOuvY4IORLJDOORXMw4E+F5xM9NwiB79b9MUB/KI=:"
         "q7znweP95lkLV8JLLIeEoh+LldxtB3iK2FWHiUzfnUU="},
        {"a three-byte overlong no-break space", "pass\xc2\xa0word\xe0\x82\xa0",
         "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
         "5CWWJLjxX/cuidRpJzbLjHgtlslqJWdvwwp1XCh8w9o=:"
         "SrfZY3Y05zR6iB97oezgC5bbPElqcdUycuh+2qKlvUA="},
        {"a code point above U+10FFFF", "pass\xc2\xa0word\xf4\x90\x80\x80",
         "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
         "vNzKh8S4Q2Z6DLpGU/c7grUrr2O8Uprnv+H8OdoDFNM=:"
         "aIyQHJ82tAhByQkbdVquq+rVvhUW80DX8kfWbGLVWY4="},
        {"a truncated sequence", "pass\xc2\xa0word\xe2\x80",
         "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
         "6zEUbJmH7tDM+b29c3QoZITrxT0i5tHs1EvoQ+Nbiyg=:"
         "0d6RGpVY7bRVQuP1xBBgV3pY/rLfNnW1zwBYVyWzSvo="},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct scram_verifier v;
        char formatted[256] = "";

        scram_verifier_from_password(cases[i].password, rfc_salt, sizeof rfc_salt, 4096, &v);
        scram_format_verifier(&v, formatted, sizeof formatted);
        is_str(formatted, cases[i].verifier, "a password with %s is hashed raw", cases[i].name);
    }
}

static void test_random_nonces(void)
{
    struct scram_client c1, c2;
    char first1[SCRAM_MAX_MESSAGE + 1], first2[SCRAM_MAX_MESSAGE + 1];
    size_t len1 = 0, len2 = 0;

    scram_client_first(&c1, NULL, first1, sizeof first1, &len1);
    scram_client_first(&c2, NULL, first2, sizeof first2, &len2);
    is_int(len1, strlen("n,,n=,r=") + 32, "a random client nonce is base64 of 24 bytes");
    ok(strcmp(first1, first2) != 0, "two exchanges get different client nonces");
}

/* ---- verifier parsing ---------------------------------------------------------------------- */

static void test_malformed_verifiers(void)
{
    static const struct {
        const char *name;
        const char *text;
    } cases[] = {
        {"empty text", ""},
        {"an md5 secret", "md553f48b7c4b76a86ce72276c5755f217d"},
        {"a lowercase prefix", "scram-sha-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7B"
                               "keZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2d"
                               "U="},
        {"no salt", "SCRAM-SHA-256$4096$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="},
        {"an empty salt", "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                          "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="},
        {"no server key", "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7Bke"
                          "ZkBFzpcXkuLmtbsT4qY="},
        {"zero iterations", "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7Bke"
                            "ZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="},
        {"negative iterations", "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7Bk"
                                "eZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2d"
                                "U="},
        {"iterations beyond int", "SCRAM-SHA-256$2147483648:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3Otc"
                                  "Pnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZq"
                                  "QxSrmfPwDl2dU="},
        {"salt in broken base64", "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$WG5d8oPm3OtcPnkdi4Uo7"
                                  "BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwD"
                                  "l2dU="},
        {"a 31-byte stored key", "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAAAAAAAAAAAAAAAAAAA"
                                 "AAAAAAAAAAAAAAAAAAAAA==:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwD"
                                 "l2dU="},
        {"a 33-byte server key", "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7"
                                 "BkeZkBFzpcXkuLmtbsT4qY=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                 "AAAA"},
        {"trailing data", RFC_VERIFIER "x"},
        {"a salt over 64 bytes", "SCRAM-SHA-256$4096:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$WG5d8oPm3OtcPnkdi4U"
                                 "o7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmf"
                                 "PwDl2dU="},
    };
    struct scram_verifier v;
    char small[64];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ok(!scram_parse_verifier(cases[i].text, &v), "a verifier with %s is refused",
           cases[i].name);
    ok(!scram_parse_verifier(NULL, &v), "a missing verifier is refused");
    scram_parse_verifier(RFC_VERIFIER, &v);
    ok(!scram_format_verifier(&v, small, sizeof small),
       "formatting into a too small buffer fails instead of truncating");
    ok(!scram_verifier_from_password("pencil", rfc_salt, 0, 4096, &v),
       "deriving a verifier with an empty salt fails");
    ok(!scram_verifier_from_password("pencil", rfc_salt, sizeof rfc_salt, 0, &v),
       "deriving a verifier with zero iterations fails");
}

/* ---- server side: malformed client-first ------------------------------------------------- */

struct bad_message {
    const char *name;
    const char *reason; /* part of the error text expected */
    const char *bytes;
    size_t len;
};

#define BAD(name, reason, literal) {name, reason, literal, sizeof(literal) - 1}

static void test_server_refuses_malformed_client_first(const struct scram_verifier *v)
{
    static const struct bad_message cases[] = {
        BAD("an empty message", "empty message", ""),
        BAD("a lone channel binding flag", "expected ',' after channel binding flag", "n"),
        BAD("a truncated gs2 header", "expected ',' after gs2 header", "n,"),
        BAD("a gs2 header only", "expected user name (n=)", "n,,"),
        BAD("an unknown channel binding flag", "expected channel binding flag", "x,,n=,r=abc"),
        BAD("an authorization identity", "authorization identity not supported",
            "n,a=admin,n=,r=abc"),
        BAD("a mandatory extension", "unsupported mandatory extension (m=)", "n,,m=ext,n=,r=abc"),
        BAD("no user name attribute", "expected user name (n=)", "n,,r=abc"),
        BAD("attributes out of order", "expected user name (n=)", "n,,r=abc,n="),
        BAD("no nonce", "expected nonce (r=)", "n,,n=,"),
        BAD("an empty nonce", "invalid nonce", "n,,n=,r="),
        BAD("a nonce with a space", "invalid nonce", "n,,n=,r=ab c"),
        BAD("a nonce with a DEL byte", "invalid nonce", "n,,n=,r=ab\x7f"),
        BAD("a nonce with a high byte", "invalid nonce", "n,,n=,r=ab\xc3\xa9"),
        BAD("an unknown extension after the nonce", "unsupported extension",
            "n,,n=,r=abc,x=1"),
        BAD("a trailing comma", "unsupported extension", "n,,n=,r=abc,"),
        BAD("an embedded NUL", "NUL byte", "n,,n=,r=ab\0cd"),
        BAD("a NUL in the user name", "NUL byte", "n,,n=a\0b,r=abc"),
        BAD("an uppercase attribute name", "expected user name (n=)", "n,,N=,r=abc"),
    };
    struct scram_server s;
    struct exchange x;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = server_first(&s, v, NULL, cases[i].bytes, cases[i].len, &x);

        is_int(rc, -1, "server refuses client-first with %s", cases[i].name);
        ok(strstr(x.err, cases[i].reason) != NULL, "and says why: %s", x.err);
    }
}

static void test_server_refuses_channel_binding(const struct scram_verifier *v)
{
    static const char msg[] = "p=tls-server-end-point,,n=,r=abc";
    struct scram_server s;
    struct exchange x;

    is_int(server_first(&s, v, NULL, msg, strlen(msg), &x), -1,
           "server refuses a client that requires channel binding");
    is_str(x.err, "channel binding not supported", "with a reason naming channel binding");
    is_int(server_final(&s, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &x), -1,
           "after a refused client-first, client-final is refused too");
}

static void test_server_message_sizes(const struct scram_verifier *v)
{
    char msg[SCRAM_MAX_MESSAGE + 2];
    struct scram_server s;
    struct exchange x;
    size_t prefix = strlen("n,,n=");
    size_t suffix = strlen(",r=abc");

    /* A long user name (which the server ignores) pads the message to exactly the limit. */
    memcpy(msg, "n,,n=", prefix);
    memset(msg + prefix, 'u', SCRAM_MAX_MESSAGE - prefix - suffix);
    memcpy(msg + SCRAM_MAX_MESSAGE - suffix, ",r=abc", suffix + 1);
    is_int(server_first(&s, v, NULL, msg, SCRAM_MAX_MESSAGE, &x), 0,
           "a client-first of exactly SCRAM_MAX_MESSAGE bytes is accepted");
    ok(strstr(x.out, "uuu") == NULL, "the user name is not echoed back");

    memmove(msg + prefix + 1, msg + prefix, SCRAM_MAX_MESSAGE - prefix + 1);
    is_int(server_first(&s, v, NULL, msg, SCRAM_MAX_MESSAGE + 1, &x), -1,
           "a client-first one byte over SCRAM_MAX_MESSAGE is refused");

    memset(msg, 'a', 200);
    memcpy(msg, "n,,n=,r=", 8);
    is_int(server_first(&s, v, NULL, msg, 200, &x), -1,
           "a client nonce too long to join with the server nonce is refused");
}

static void test_server_accepts_client_first_variants(const struct scram_verifier *v)
{
    static const char any_user[] = "n,,n=someone=2Celse\xff,r=" RFC_CLIENT_NONCE;
    static const char y_flag[] = "y,,n=,r=" RFC_CLIENT_NONCE;
    static const char y_final[] =
        "c=eSws,r=" RFC_NONCE ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    struct scram_server s;
    struct exchange x;

    is_int(server_first(&s, v, RFC_SERVER_NONCE, any_user, strlen(any_user), &x), 0,
           "server ignores whatever user name the client sends");
    is_int(server_first(&s, v, RFC_SERVER_NONCE, y_flag, strlen(y_flag), &x), 0,
           "server accepts the 'y' flag (client could bind, thinks we cannot)");
    is_int(server_final(&s, y_final, strlen(y_final), &x), 0,
           "after 'y', c=eSws (base64 of \"y,,\") passes the channel binding check");
}

/* ---- server side: malformed client-final -------------------------------------------------- */

static void test_server_refuses_malformed_client_final(const struct scram_verifier *v)
{
    static const struct bad_message cases[] = {
        BAD("an empty message", "empty message", ""),
        BAD("no channel binding", "expected channel binding (c=)",
            "r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("channel binding in broken base64", "invalid base64 in channel binding",
            "c=biw,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("channel binding for the 'y' flag after 'n'", "channel binding check failed",
            "c=eSws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("channel binding data", "channel binding check failed",
            "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=" RFC_NONCE
            ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("no nonce", "expected nonce (r=)",
            "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("only the client's nonce", "nonce mismatch",
            "c=biws,r=" RFC_CLIENT_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("a nonce with an extra character", "nonce mismatch",
            "c=biws,r=" RFC_NONCE "x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("a nonce missing its last character", "nonce mismatch",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("no proof", "expected proof (p=)", "c=biws,r=" RFC_NONCE),
        BAD("an empty proof", "invalid client proof", "c=biws,r=" RFC_NONCE ",p="),
        BAD("a proof in broken base64", "invalid client proof",
            "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ"),
        BAD("a proof with a non-canonical last character", "invalid client proof",
            "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVR="),
        BAD("a proof with whitespace", "invalid client proof",
            "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9 ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("a 31-byte proof", "invalid client proof",
            "c=biws,r=" RFC_NONCE ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="),
        BAD("a 33-byte proof", "invalid client proof",
            "c=biws,r=" RFC_NONCE ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        BAD("an extension before the proof", "unsupported extension",
            "c=biws,r=" RFC_NONCE ",x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("data after the proof", "unexpected data after proof", RFC_CLIENT_FINAL ",x=1"),
        BAD("an embedded NUL", "NUL byte",
            "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9\0ytag9zjfMHgsqmmiz7AndVQ="),
        BAD("attributes out of order", "expected channel binding (c=)",
            "r=" RFC_NONCE ",c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
    };
    struct scram_server s;
    struct exchange x;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rfc_server_waiting_for_final(&s, v);
        is_int(server_final(&s, cases[i].bytes, cases[i].len, &x), -1,
               "server refuses client-final with %s", cases[i].name);
        ok(strstr(x.err, cases[i].reason) != NULL && x.out[0] == '\0',
           "and says why without signing: %s", x.err);
    }
}

static void test_server_wrong_proof(const struct scram_verifier *v)
{
    static const char wrong[] =
        "c=biws,r=" RFC_NONCE ",p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    struct scram_server s;
    struct exchange x;

    rfc_server_waiting_for_final(&s, v);
    is_int(server_final(&s, wrong, strlen(wrong), &x), 0,
           "a well-formed proof that is wrong returns 0 (bad password)");
    is_str(x.out, "", "no server signature is written for a wrong proof");
}

static void test_server_client_final_boundaries(const struct scram_verifier *v)
{
    char oversized[SCRAM_MAX_MESSAGE + 2];
    struct scram_server s;
    struct exchange x;
    size_t full = strlen(RFC_CLIENT_FINAL);
    int accepted_prefixes = 0, accepted_changes = 0;

    memset(&s, 0, sizeof s);
    is_int(server_final(&s, RFC_CLIENT_FINAL, full, &x), -1,
           "client-final before client-first is refused");

    rfc_server_waiting_for_final(&s, v);
    memcpy(oversized, RFC_CLIENT_FINAL, full);
    memset(oversized + full, 'A', sizeof oversized - full);
    is_int(server_final(&s, oversized, SCRAM_MAX_MESSAGE + 1, &x), -1,
           "a client-final over SCRAM_MAX_MESSAGE is refused");

    for (size_t len = 0; len < full; len++) {
        rfc_server_waiting_for_final(&s, v);
        if (server_final(&s, RFC_CLIENT_FINAL, len, &x) != -1)
            accepted_prefixes++;
    }
    is_int(accepted_prefixes, 0,
           "every truncation of a valid client-final is refused as malformed");

    for (size_t i = 0; i < full; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char changed[sizeof RFC_CLIENT_FINAL];

            memcpy(changed, RFC_CLIENT_FINAL, sizeof changed);
            changed[i] = (char)(changed[i] ^ (1 << bit));
            rfc_server_waiting_for_final(&s, v);
            if (server_final(&s, changed, full, &x) == 1)
                accepted_changes++;
        }
    }
    is_int(accepted_changes, 0, "no single-bit change of a valid client-final is accepted");
}

/* ---- client side ----------------------------------------------------------------------------- */

static void test_client_refuses_malformed_server_first(void)
{
    static const struct bad_message cases[] = {
        BAD("an empty message", "empty message", ""),
        BAD("a mandatory extension", "unsupported mandatory extension (m=)",
            "m=ext,r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        BAD("no nonce", "expected nonce (r=)", "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        BAD("a nonce not starting with ours", "nonce mismatch",
            "r=X" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        BAD("a nonce without a server part", "nonce mismatch",
            "r=" RFC_CLIENT_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        BAD("a shorter nonce", "nonce mismatch", "r=rOprNG,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        BAD("a nonce with a space", "invalid nonce",
            "r=" RFC_NONCE " x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        BAD("no salt", "expected salt (s=)", "r=" RFC_NONCE ",i=4096"),
        BAD("an empty salt", "invalid salt", "r=" RFC_NONCE ",s=,i=4096"),
        BAD("a salt in broken base64", "invalid salt",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096"),
        BAD("a salt with a '-' character", "invalid salt",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6g-==,i=4096"),
        BAD("no iteration count", "expected iteration count (i=)",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=="),
        BAD("an empty iteration count", "invalid iteration count",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i="),
        BAD("zero iterations", "invalid iteration count",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0"),
        BAD("negative iterations", "invalid iteration count",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-4096"),
        BAD("a leading zero in the count", "invalid iteration count",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=04096"),
        BAD("a count with a sign", "invalid iteration count",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096"),
        BAD("a count with letters", "invalid iteration count",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x"),
        BAD("10,000,001 iterations", "invalid iteration count",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001"),
        BAD("a count overflowing 64 bits", "invalid iteration count",
            "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999999"),
        BAD("an extension after the count", "unexpected data after iteration count",
            RFC_SERVER_FIRST ",x=1"),
        BAD("attributes out of order", "expected nonce (r=)",
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=" RFC_NONCE ",i=4096"),
        BAD("an embedded NUL", "NUL byte", "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=40\09"),
        BAD("a server error instead", "expected nonce (r=)", "e=other-error"),
    };
    struct scram_client c;
    struct exchange x;
    char oversized[SCRAM_MAX_MESSAGE + 2];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rfc_client_waiting_for_server_first(&c);
        is_int(client_final(&c, RFC_PASSWORD, cases[i].bytes, cases[i].len, &x), -1,
               "client refuses server-first with %s", cases[i].name);
        ok(strstr(x.err, cases[i].reason) != NULL, "and says why: %s", x.err);
    }

    rfc_client_waiting_for_server_first(&c);
    memcpy(oversized, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST));
    memset(oversized + strlen(RFC_SERVER_FIRST), '0', sizeof oversized - strlen(RFC_SERVER_FIRST));
    is_int(client_final(&c, RFC_PASSWORD, oversized, SCRAM_MAX_MESSAGE + 1, &x), -1,
           "client refuses a server-first over SCRAM_MAX_MESSAGE");

    memset(&c, 0, sizeof c);
    is_int(client_final(&c, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &x), -1,
           "server-first before client-first is refused");
    rfc_client_waiting_for_server_first(&c);
    is_int(client_final(&c, NULL, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &x), -1,
           "server-first without a password is refused");
}

static void test_client_first_arguments(void)
{
    struct scram_client c;
    char out[SCRAM_MAX_MESSAGE + 1];
    char small[10];
    size_t len;

    is_int(scram_client_first(&c, "bad nonce", out, sizeof out, &len), -1,
           "client-first refuses a nonce with a space");
    is_int(scram_client_first(&c, "", out, sizeof out, &len), -1,
           "client-first refuses an empty nonce");
    is_int(scram_client_first(&c, RFC_CLIENT_NONCE, small, sizeof small, &len), -1,
           "client-first refuses a too small output buffer");
}

static void test_client_verifies_server_final(void)
{
    static const struct bad_message cases[] = {
        BAD("an empty message", "empty message", ""),
        BAD("a signature from another exchange", "server signature does not match",
            RFC_SERVER_FINAL),
        BAD("a signature in broken base64", "invalid server signature",
            "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg"),
        BAD("a 31-byte signature", "invalid server signature",
            "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="),
        BAD("no signature attribute", "expected server signature (v=)",
            "3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="),
        BAD("data after the signature", "unexpected data after signature",
            RFC_EMPTY_USER_SERVER_FINAL ",x=1"),
        BAD("an embedded NUL", "NUL byte", "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3M\0tSOg="),
    };
    struct scram_client c;
    struct exchange x, unused;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rfc_client_waiting_for_server_first(&c);
        client_final(&c, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &unused);
        is_int(client_verify(&c, cases[i].bytes, cases[i].len, &x), -1,
               "client refuses server-final with %s", cases[i].name);
        ok(strstr(x.err, cases[i].reason) != NULL, "and says why: %s", x.err);
    }

    rfc_client_waiting_for_server_first(&c);
    client_final(&c, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &unused);
    is_int(client_verify(&c, "e=invalid-proof", strlen("e=invalid-proof"), &x), -1,
           "a server error in server-final fails the exchange");
    is_str(x.err, "server error: invalid-proof", "and passes the server's reason on");

    rfc_client_waiting_for_server_first(&c);
    client_final(&c, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &unused);
    client_verify(&c, "e=bad\x1b[2Jtext", strlen("e=bad\x1b[2Jtext"), &x);
    is_str(x.err, "server error: bad?[2Jtext",
           "control characters in a server error are replaced before reaching a log");

    rfc_client_waiting_for_server_first(&c);
    is_int(client_verify(&c, RFC_EMPTY_USER_SERVER_FINAL, strlen(RFC_EMPTY_USER_SERVER_FINAL), &x),
           -1, "server-final before client-final is refused");

    rfc_client_waiting_for_server_first(&c);
    client_final(&c, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &unused);
    client_verify(&c, RFC_EMPTY_USER_SERVER_FINAL, strlen(RFC_EMPTY_USER_SERVER_FINAL), &x);
    is_int(client_verify(&c, RFC_EMPTY_USER_SERVER_FINAL, strlen(RFC_EMPTY_USER_SERVER_FINAL), &x),
           -1, "a second server-final in the same exchange is refused");
}

/* ---- arbitrary bytes ----------------------------------------------------------------------- */

/* xorshift: reproducible bytes without global state. */
static uint32_t next_random(uint32_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

static void test_arbitrary_bytes(const struct scram_verifier *v)
{
    static const char alphabet[] = "nypcrsivemx=,AZaz09+/\0\xff ";
    uint32_t state = 2463534242u;
    int unexpected = 0;

    for (int round = 0; round < 3000; round++) {
        char msg[SCRAM_MAX_MESSAGE + 8];
        size_t len = next_random(&state) % sizeof msg;
        struct scram_server s;
        struct scram_client c;
        struct exchange x;

        for (size_t i = 0; i < len; i++)
            msg[i] = alphabet[next_random(&state) % (sizeof alphabet - 1)];
        if (server_first(&s, v, NULL, msg, len, &x) == 0 && len > SCRAM_MAX_MESSAGE)
            unexpected++;
        rfc_server_waiting_for_final(&s, v);
        if (server_final(&s, msg, len, &x) == 1)
            unexpected++;
        rfc_client_waiting_for_server_first(&c);
        if (client_final(&c, RFC_PASSWORD, msg, len, &x) == 0)
            unexpected++;
    }
    is_int(unexpected, 0,
           "thousands of arbitrary messages neither crash a parser nor pass a check");
}

/* ---- the mock verifier an unknown user is challenged with ------------------------------- */

/* "SCRAM-SHA-256$<iterations>:<salt>$": what a client can see of a verifier. */
static void mock_public_part(const struct scram_verifier *v, char *out, size_t out_len)
{
    char formatted[256];

    out[0] = '\0';
    if (scram_format_verifier(v, formatted, sizeof formatted)) {
        char *end = strrchr(formatted, '$');
        if (end != NULL)
            end[1] = '\0';
        snprintf(out, out_len, "%s", formatted);
    }
}

static void test_mock_verifier(void)
{
    uint8_t nonce[SCRAM_MOCK_NONCE_LEN], other_nonce[SCRAM_MOCK_NONCE_LEN];
    struct scram_verifier first, again, bob, elsewhere;
    char first_public[256], again_public[256], bob_public[256], elsewhere_public[256];
    int client_verdict;

    for (size_t i = 0; i < sizeof nonce; i++) {
        nonce[i] = (uint8_t)(i + 1);
        other_nonce[i] = (uint8_t)(0xff - i);
    }
    ok(scram_mock_verifier(nonce, "alice", 10000, &first) &&
           scram_mock_verifier(nonce, "alice", 10000, &again) &&
           scram_mock_verifier(nonce, "bob", 10000, &bob) &&
           scram_mock_verifier(other_nonce, "alice", 10000, &elsewhere),
       "mock verifiers are made");
    mock_public_part(&first, first_public, sizeof first_public);
    mock_public_part(&again, again_public, sizeof again_public);
    mock_public_part(&bob, bob_public, sizeof bob_public);
    mock_public_part(&elsewhere, elsewhere_public, sizeof elsewhere_public);
    /* Expected: base64 of the first 16 bytes of SHA-256("alice" || nonce), from python3 hashlib. */
    is_str(first_public, "SCRAM-SHA-256$10000:QEl6shiLpgkQxIwVVrWhkw==$",
           "the mock salt is SHA-256(user || nonce) cut to 16 bytes, with the count asked for");
    is_str(again_public, first_public, "a second attempt for the same name sees the same salt");
    ok(memcmp(first.stored_key, again.stored_key, SCRAM_KEY_LEN) == 0 &&
           memcmp(first.server_key, again.server_key, SCRAM_KEY_LEN) == 0,
       "and the same keys");
    is_str(bob_public, "SCRAM-SHA-256$10000:Jb+aNe9UEEZcybollzq8VA==$",
           "another name gets another salt");
    ok(strcmp(elsewhere_public, first_public) != 0,
       "another process secret gives the same name another salt");
    is_int(full_exchange(&first, "alice", &client_verdict), 0,
           "no password passes a mock verifier (tried: the user name)");
    is_int(full_exchange(&first, "", &client_verdict), 0, "nor the empty password");
}

int main(void)
{
    struct scram_verifier rfc;

    if (!scram_verifier_from_password(RFC_PASSWORD, rfc_salt, sizeof rfc_salt, 4096, &rfc)) {
        printf("Bail out! cannot derive the RFC 7677 verifier\n");
        return 1;
    }
    test_rfc7677_verifier();
    test_rfc7677_server_side(&rfc);
    test_rfc7677_client_side(&rfc);
    test_client_key_recovered_from_rfc7677_proof(&rfc);
    test_wrong_proof_recovers_no_key(&rfc);
    test_passthrough_login_with_recovered_key(&rfc);
    test_passthrough_refuses_other_verifier(&rfc);
    test_postgresql_verifiers();
    test_passwords_prepared_like_postgresql();
    test_invalid_utf8_passwords_used_raw();
    test_random_nonces();
    test_malformed_verifiers();
    test_server_refuses_malformed_client_first(&rfc);
    test_server_refuses_channel_binding(&rfc);
    test_server_message_sizes(&rfc);
    test_server_accepts_client_first_variants(&rfc);
    test_server_refuses_malformed_client_final(&rfc);
    test_server_wrong_proof(&rfc);
    test_server_client_final_boundaries(&rfc);
    test_client_refuses_malformed_server_first();
    test_client_first_arguments();
    test_mock_verifier();
    test_client_verifies_server_final();
    test_arbitrary_bytes(&rfc);
    return tap_done();
}
