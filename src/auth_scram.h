/*
 * auth_scram.h: SCRAM-SHA-256 (RFC 5802, RFC 7677) for both directions, as pure functions over
 * byte buffers: the server side authenticates clients, the client side logs in to PostgreSQL.
 * Channel binding is not offered (gs2 flag 'n' or 'y' accepted, 'p' refused).
 * Messages may hold any bytes: malformed ones are refused with a short reason, never trusted.
 * Reasons written to err are bare phrases ("nonce mismatch", "invalid client proof") for the
 * caller to put after its own context, such as "malformed SCRAM message: ".
 */
#ifndef SLUICE_AUTH_SCRAM_H
#define SLUICE_AUTH_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN 32
#define SCRAM_MAX_SALT_LEN 64
#define SCRAM_NONCE_LEN 24           /* raw random bytes before base64 */
#define SCRAM_DEFAULT_ITERATIONS 4096
#define SCRAM_MAX_MESSAGE 1024       /* any SCRAM message longer than this is refused */

struct scram_verifier {
    int iterations;
    uint8_t salt[SCRAM_MAX_SALT_LEN];
    size_t salt_len;
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t server_key[SCRAM_KEY_LEN];
};

/*
 * "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>" -> verifier. false if malformed: strict
 * base64, a salt of 1..SCRAM_MAX_SALT_LEN bytes, keys of exactly SCRAM_KEY_LEN bytes.
 */
bool scram_parse_verifier(const char *secret, struct scram_verifier *out);

/*
 * Derives a verifier from a password (PBKDF2-HMAC-SHA-256). false on failure. The password goes
 * through SASLprep as PostgreSQL applies it, short of NFKC (see auth_scram.c).
 */
bool scram_verifier_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                  int iterations, struct scram_verifier *out);

/*
 * The verifier shown to a user who has none (not in the auth file, or an md5 or empty secret), as
 * PostgreSQL's scram_mock_salt: the salt is SHA-256(user || nonce) cut to SCRAM_MOCK_SALT_LEN
 * bytes, so every attempt for one name sees the same salt, as for a real user, and without the
 * secret nonce nobody can tell it from a real one. No password matches its keys. false on failure.
 */
#define SCRAM_MOCK_SALT_LEN 16       /* PostgreSQL's salt length */
#define SCRAM_MOCK_NONCE_LEN 32
bool scram_mock_verifier(const uint8_t nonce[SCRAM_MOCK_NONCE_LEN], const char *user, int iterations,
                         struct scram_verifier *out);

/* Formats a verifier the way PostgreSQL stores it (buf at least 256 bytes). false if too small. */
bool scram_format_verifier(const struct scram_verifier *v, char *buf, size_t buf_len);

/* ---- server side: sluice authenticates a client ---- */
struct scram_server {
    struct scram_verifier verifier;
    char client_first_bare[SCRAM_MAX_MESSAGE + 1];
    char server_first[SCRAM_MAX_MESSAGE + 1];
    char nonce[128];                 /* client nonce + server nonce, as sent */
    int step;                        /* 0: expect client-first, 1: expect client-final, 2: done */
    char gs2_cbind_flag;             /* 'n' or 'y': client-final's c= must echo "<flag>,," */
    uint8_t client_key[SCRAM_KEY_LEN]; /* recovered from a right proof: what pass-through needs */
};

/*
 * Handles client-first-message (the SASLInitialResponse data) and starts a new exchange: s is
 * overwritten, so it need not be initialised. Writes server-first-message into out
 * (NUL-terminated, *out_len set). server_nonce may be NULL (random) or a fixed string (tests).
 * Returns 0, or -1 with a short reason in err (protocol violation).
 */
int scram_server_first(struct scram_server *s, const struct scram_verifier *verifier,
                       const char *server_nonce, const uint8_t *msg, size_t len, char *out,
                       size_t out_cap, size_t *out_len, char *err, size_t err_len);

/*
 * Handles client-final-message. Returns 1 if the proof is right (server-final written into out,
 * and the client's ClientKey, ClientProof XOR HMAC(StoredKey, AuthMessage), in s->client_key),
 * 0 if the proof is wrong (password mismatch), -1 on a malformed message (reason in err).
 * Whatever the outcome, the exchange is over: a further call returns -1.
 */
int scram_server_final(struct scram_server *s, const uint8_t *msg, size_t len, char *out,
                       size_t out_cap, size_t *out_len, char *err, size_t err_len);

/*
 * What SCRAM pass-through keeps once a client proved it knows the password: with the ClientKey and
 * the verifier's ServerKey, sluice can log in to PostgreSQL as that user without the password,
 * provided PostgreSQL stores the same verifier (same salt and count), as it does when the verifier
 * came from its pg_authid.
 */
struct scram_passthrough {
    struct scram_verifier verifier;
    uint8_t client_key[SCRAM_KEY_LEN];
};

/* ---- client side: sluice logs in to PostgreSQL ---- */
struct scram_client {
    char client_nonce[64];
    char client_first_bare[SCRAM_MAX_MESSAGE + 1];
    char server_first[SCRAM_MAX_MESSAGE + 1];
    uint8_t salted_password[SCRAM_KEY_LEN];
    uint8_t auth_message_signature_key[SCRAM_KEY_LEN]; /* ServerKey, to check server-final */
    char expected_server_signature[64];  /* base64 */
    int step;                        /* 1: client-first sent, 2: client-final sent, 3: done */
};

/*
 * Starts a new exchange (c need not be initialised) and writes client-first-message
 * ("n,,n=,r=<nonce>"): PostgreSQL takes the user from the startup packet, so n= stays empty.
 * client_nonce NULL = random. Returns 0, or -1 on a bad nonce or a too small out.
 */
int scram_client_first(struct scram_client *c, const char *client_nonce, char *out, size_t out_cap,
                       size_t *out_len);

/*
 * Handles server-first, writes client-final-message. Returns 0 or -1 (reason in err). The
 * iteration count a server may ask for is capped, so a hostile server cannot burn our CPU.
 */
int scram_client_final(struct scram_client *c, const char *password, const uint8_t *msg, size_t len,
                       char *out, size_t out_cap, size_t *out_len, char *err, size_t err_len);

/*
 * scram_client_final for pass-through: proves with a recovered ClientKey instead of a password.
 * The server's salt and count must be the verifier's (else -1, "the database server's verifier
 * differs", e.g. the password was changed in PostgreSQL since the client logged in).
 */
int scram_client_final_passthrough(struct scram_client *c, const struct scram_passthrough *keys,
                                   const uint8_t *msg, size_t len, char *out, size_t out_cap,
                                   size_t *out_len, char *err, size_t err_len);

/*
 * Checks server-final ("v=..."). Returns 0 if the server proved it knows the password, -1
 * otherwise; a server error ("e=...") is returned as -1 with its text in err.
 */
int scram_client_verify_server(struct scram_client *c, const uint8_t *msg, size_t len, char *err,
                               size_t err_len);

#endif
