/*
 * auth_scram.c: SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, in both directions.
 * Pure functions over caller-owned buffers: no I/O, no globals. Every message read from the
 * network is checked attribute by attribute before any key is computed from it.
 */
#include "auth_scram.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "digest.h"

#define SCRAM_VERIFIER_PREFIX "SCRAM-SHA-256$"
#define SCRAM_CLIENT_KEY_LABEL "Client Key"
#define SCRAM_SERVER_KEY_LABEL "Server Key"
/* A server may ask for any count; more than this is an attack on our CPU, not a policy. */
#define SCRAM_MAX_SERVER_ITERATIONS 10000000L
/* A fixed server nonce (tests) is capped so the joined nonce always fits scram_server.nonce. */
#define SCRAM_MAX_SERVER_NONCE_LEN 64
#define SCRAM_GS2_HEADER_LEN 3 /* "n,," or "y,,": authzid and channel binding are refused */
#define BASE64_LEN(raw_len) (4 * (((raw_len) + 2) / 3))
#define ARRAY_LEN(array) (sizeof(array) / sizeof((array)[0]))
/* client-first-bare "," server-first "," client-final-without-proof */
#define SCRAM_AUTH_MESSAGE_CAP (3 * (SCRAM_MAX_MESSAGE + 1))

enum scram_server_step {
    SCRAM_SERVER_EXPECT_FIRST = 0,
    SCRAM_SERVER_EXPECT_FINAL = 1,
    SCRAM_SERVER_DONE = 2,
};

enum scram_client_step {
    SCRAM_CLIENT_FIRST_SENT = 1,
    SCRAM_CLIENT_FINAL_SENT = 2,
    SCRAM_CLIENT_DONE = 3,
};

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* ---- small helpers ---------------------------------------------------------------------- */

static int scram_fail(char *err, size_t err_len, const char *reason)
{
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, "%s", reason);
    return -1;
}

/* Writes NUL-terminated base64 into out; false if out_cap cannot hold it. */
static bool base64_encode(const uint8_t *in, size_t len, char *out, size_t out_cap)
{
    size_t o = 0;

    if (out_cap < BASE64_LEN(len) + 1)
        return false;
    for (size_t i = 0; i < len; i += 3) {
        size_t left = len - i;
        uint32_t group = (uint32_t)in[i] << 16;

        if (left > 1)
            group |= (uint32_t)in[i + 1] << 8;
        if (left > 2)
            group |= in[i + 2];
        out[o++] = base64_alphabet[(group >> 18) & 0x3f];
        out[o++] = base64_alphabet[(group >> 12) & 0x3f];
        out[o++] = left > 1 ? base64_alphabet[(group >> 6) & 0x3f] : '=';
        out[o++] = left > 2 ? base64_alphabet[group & 0x3f] : '=';
    }
    out[o] = '\0';
    return true;
}

static int base64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Strict base64: length a multiple of 4, '=' only as final padding, no whitespace, unused low
 * bits zero. So every byte string has exactly one accepted encoding, and comparing encodings
 * is comparing bytes. false if malformed or if the result would not fit out_cap.
 */
static bool base64_decode(const char *in, size_t len, uint8_t *out, size_t out_cap,
                          size_t *out_len)
{
    size_t padding = 0;
    size_t o = 0;

    if (len % 4 != 0)
        return false;
    if (len > 0 && in[len - 1] == '=')
        padding = (in[len - 2] == '=') ? 2 : 1;
    if (len / 4 * 3 - padding > out_cap)
        return false;
    for (size_t i = 0; i < len; i += 4) {
        bool last = (i + 4 == len);
        size_t chars = last ? 4 - padding : 4;
        uint32_t group = 0;

        for (size_t j = 0; j < 4; j++) {
            int value = j < chars ? base64_value(in[i + j]) : 0;

            if (value < 0)
                return false;
            group = (group << 6) | (uint32_t)value;
        }
        if ((chars == 2 && (group & 0xffff) != 0) || (chars == 3 && (group & 0xff) != 0))
            return false;
        out[o++] = (uint8_t)(group >> 16);
        if (chars > 2)
            out[o++] = (uint8_t)(group >> 8);
        if (chars > 3)
            out[o++] = (uint8_t)group;
    }
    *out_len = o;
    return true;
}

/* RFC 5802 "printable": %x21-2B / %x2D-7E, everything visible but ','. */
static bool nonce_is_printable(const char *nonce, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)nonce[i];

        if (c < 0x21 || c > 0x7e || c == ',')
            return false;
    }
    return true;
}

/* RFC 5802 posit-number: no sign, no leading zero, no spaces; then 1..max. */
static bool parse_positive_number(const char *text, size_t len, long max, int *out)
{
    long value = 0;

    if (len == 0 || text[0] == '0')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        value = value * 10 + (text[i] - '0');
        if (value > max)
            return false;
    }
    *out = (int)value;
    return true;
}

/* The checks every incoming message gets before its attributes are read. NULL if acceptable. */
static const char *scram_message_problem(const uint8_t *msg, size_t len)
{
    if (len > SCRAM_MAX_MESSAGE)
        return "message too long";
    if (msg == NULL || len == 0)
        return "empty message";
    if (memchr(msg, '\0', len) != NULL)
        return "message contains a NUL byte";
    return NULL;
}

/* ---- attribute reader: "a=value,b=value", with values running up to the next ',' ---------- */

struct scram_cursor {
    const char *pos;
    const char *end;
};

static struct scram_cursor scram_cursor_over(const uint8_t *msg, size_t len)
{
    struct scram_cursor cur = {(const char *)msg, (const char *)msg + len};
    return cur;
}

static bool cursor_at(const struct scram_cursor *cur, char name)
{
    return cur->end - cur->pos >= 2 && cur->pos[0] == name && cur->pos[1] == '=';
}

/* Reads "<name>=<value>" up to the next ',' or the end, leaving the ',' unread. */
static bool read_attribute(struct scram_cursor *cur, char name, const char **value,
                           size_t *value_len)
{
    const char *start;
    const char *comma;

    if (!cursor_at(cur, name))
        return false;
    start = cur->pos + 2;
    comma = memchr(start, ',', (size_t)(cur->end - start));
    cur->pos = comma != NULL ? comma : cur->end;
    *value = start;
    *value_len = (size_t)(cur->pos - start);
    return true;
}

static bool read_comma(struct scram_cursor *cur)
{
    if (cur->pos >= cur->end || *cur->pos != ',')
        return false;
    cur->pos++;
    return true;
}

static bool cursor_at_end(const struct scram_cursor *cur)
{
    return cur->pos == cur->end;
}

/* ---- key derivation ------------------------------------------------------------------------ */

/* ---- passwords: the part of SASLprep (RFC 4013) that needs no Unicode tables ---------------- */

struct code_point_range {
    uint32_t first;
    uint32_t last;
};

/* RFC 3454 C.1.2, mapped to U+0020. Checked before B.1, as PostgreSQL does (U+200B is in both). */
static const struct code_point_range sasl_space_characters[] = {
    {0x00a0, 0x00a0}, {0x1680, 0x1680}, {0x2000, 0x200b},
    {0x202f, 0x202f}, {0x205f, 0x205f}, {0x3000, 0x3000},
};

/* RFC 3454 B.1, mapped to nothing. */
static const struct code_point_range sasl_mapped_to_nothing[] = {
    {0x00ad, 0x00ad}, {0x034f, 0x034f}, {0x1806, 0x1806}, {0x180b, 0x180d},
    {0x200b, 0x200d}, {0x2060, 0x2060}, {0xfe00, 0xfe0f}, {0xfeff, 0xfeff},
};

/*
 * What SASLprep refuses, so that PostgreSQL falls back to the raw bytes: RFC 3454 C.2-C.9 in
 * the BMP (C.2.1, ASCII controls, is checked apart; C.5, surrogates, never leave
 * utf8_decode), and beyond the BMP an approximation of "unassigned in Unicode 3.2" (A.1)
 * that is right for emoji and the like; the few scripts Unicode 3.2 had in plane 1 (Gothic,
 * Deseret, ...) are counted as unassigned too.
 */
static const struct code_point_range sasl_refused_characters[] = {
    {0x0080, 0x009f}, {0x0340, 0x0341}, {0x06dd, 0x06dd}, {0x070f, 0x070f},
    {0x180e, 0x180e}, {0x200e, 0x200f}, {0x2028, 0x202e}, {0x2061, 0x2063},
    {0x206a, 0x206f}, {0x2ff0, 0x2ffb}, {0xe000, 0xf8ff}, {0xfdd0, 0xfdef},
    {0xfff9, 0xffff}, {0x10000, 0x1ffff}, {0x2a6d7, 0x10ffff},
};

static bool code_point_in(uint32_t cp, const struct code_point_range *ranges, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (cp >= ranges[i].first && cp <= ranges[i].last)
            return true;
    return false;
}

/*
 * Decodes one UTF-8 sequence as strictly as PostgreSQL (no overlong forms, no surrogates,
 * nothing above U+10FFFF). Returns its length, or 0 if the bytes are not valid UTF-8.
 */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp)
{
    unsigned char lead = s[0];
    unsigned char low = 0x80, high = 0xbf;
    size_t len;

    if (lead < 0x80) {
        *cp = lead;
        return 1;
    }
    if (lead >= 0xc2 && lead <= 0xdf)
        len = 2;
    else if (lead >= 0xe0 && lead <= 0xef)
        len = 3;
    else if (lead >= 0xf0 && lead <= 0xf4)
        len = 4;
    else
        return 0;
    if (lead == 0xe0)
        low = 0xa0;
    else if (lead == 0xed)
        high = 0x9f;
    else if (lead == 0xf0)
        low = 0x90;
    else if (lead == 0xf4)
        high = 0x8f;
    if (s[1] < low || s[1] > high)
        return 0;
    *cp = lead & (0xff >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if (i > 1 && (s[i] < 0x80 || s[i] > 0xbf))
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3f);
    }
    return len;
}

/*
 * Writes into out (strlen(password) + 1 bytes) the password as PostgreSQL's SASLprep gives it,
 * as far as that is possible without the Unicode tables. PostgreSQL uses a pure ASCII password
 * as is, and the raw bytes whenever SASLprep fails (invalid UTF-8, a prohibited or unassigned
 * character, an empty result); both are reproduced here. Otherwise it maps C.1.2 spaces to
 * ' ' and drops B.1 characters, as we do, then applies NFKC, which we do not. So a password
 * that NFKC changes (full-width letters, ligatures, decomposed accents), holds a BMP character
 * unassigned in Unicode 3.2, or breaks the bidi rule, yields other keys than PostgreSQL's.
 * ASCII passwords, and non-ASCII ones that NFKC leaves alone (most text as people type it),
 * come out exactly as in PostgreSQL.
 */
static void sasl_prepare_password(const char *password, char *out)
{
    const unsigned char *in = (const unsigned char *)password;
    size_t in_len = strlen(password);
    size_t i = 0, o = 0;

    while (i < in_len) {
        uint32_t cp = 0;
        size_t n = utf8_decode(in + i, &cp);

        if (n == 0 || cp < 0x20 || cp == 0x7f)
            break; /* invalid UTF-8, or prohibited (C.2.1): PostgreSQL uses the raw bytes */
        if (code_point_in(cp, sasl_space_characters, ARRAY_LEN(sasl_space_characters))) {
            out[o++] = ' ';
        } else if (code_point_in(cp, sasl_refused_characters,
                                 ARRAY_LEN(sasl_refused_characters))) {
            break;
        } else if (!code_point_in(cp, sasl_mapped_to_nothing, ARRAY_LEN(sasl_mapped_to_nothing))) {
            memcpy(out + o, in + i, n);
            o += n;
        }
        i += n;
    }
    if (i < in_len || o == 0) {
        memcpy(out, password, in_len + 1);
        return;
    }
    out[o] = '\0';
}

/* SaltedPassword := Hi(SASLprep(password), salt, i), Hi being PBKDF2-HMAC-SHA-256. */
static bool scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                                  int iterations, uint8_t out[SCRAM_KEY_LEN])
{
    size_t password_len = strlen(password);
    char *prepared;
    bool derived = false;

    if (password_len > INT_MAX || salt_len > INT_MAX || iterations < 1)
        return false;
    prepared = OPENSSL_malloc(password_len + 1);
    if (prepared == NULL)
        return false;
    sasl_prepare_password(password, prepared);
    derived = PKCS5_PBKDF2_HMAC(prepared, (int)strlen(prepared), salt, (int)salt_len, iterations,
                                EVP_sha256(), SCRAM_KEY_LEN, out) == 1;
    OPENSSL_clear_free(prepared, password_len + 1);
    return derived;
}

static bool hmac_sha256(const uint8_t key[SCRAM_KEY_LEN], const void *data, size_t data_len,
                        uint8_t out[SCRAM_KEY_LEN])
{
    return digest_hmac_sha256(key, SCRAM_KEY_LEN, data, data_len, out);
}

/* ClientKey, StoredKey and ServerKey from SaltedPassword. */
static bool scram_derive_keys(const uint8_t salted_password[SCRAM_KEY_LEN],
                              uint8_t client_key[SCRAM_KEY_LEN],
                              uint8_t stored_key[SCRAM_KEY_LEN],
                              uint8_t server_key[SCRAM_KEY_LEN])
{
    return hmac_sha256(salted_password, SCRAM_CLIENT_KEY_LABEL,
                       strlen(SCRAM_CLIENT_KEY_LABEL), client_key) &&
           digest_sha256(client_key, SCRAM_KEY_LEN, stored_key) &&
           hmac_sha256(salted_password, SCRAM_SERVER_KEY_LABEL,
                       strlen(SCRAM_SERVER_KEY_LABEL), server_key);
}

/* AuthMessage := client-first-message-bare "," server-first-message "," client-final-w/o-proof */
static bool scram_auth_message(const char *client_first_bare, const char *server_first,
                               const char *final_without_proof, size_t final_len, char *out,
                               size_t *out_len)
{
    int n = snprintf(out, SCRAM_AUTH_MESSAGE_CAP, "%s,%s,%.*s", client_first_bare, server_first,
                     (int)final_len, final_without_proof);

    if (n < 0 || (size_t)n >= SCRAM_AUTH_MESSAGE_CAP)
        return false;
    *out_len = (size_t)n;
    return true;
}

static bool copy_out(const char *text, char *out, size_t out_cap, size_t *out_len)
{
    size_t len = strlen(text);

    if (out == NULL || len >= out_cap)
        return false;
    memcpy(out, text, len + 1);
    if (out_len != NULL)
        *out_len = len;
    return true;
}

/* ---- verifiers ------------------------------------------------------------------------------ */

static bool decode_key(const char *text, size_t len, uint8_t key[SCRAM_KEY_LEN])
{
    size_t key_len = 0;

    return base64_decode(text, len, key, SCRAM_KEY_LEN, &key_len) && key_len == SCRAM_KEY_LEN;
}

bool scram_parse_verifier(const char *secret, struct scram_verifier *out)
{
    struct scram_verifier v;
    const char *iterations, *salt, *stored_key, *server_key;
    bool parsed;

    if (secret == NULL || out == NULL)
        return false;
    if (strncmp(secret, SCRAM_VERIFIER_PREFIX, strlen(SCRAM_VERIFIER_PREFIX)) != 0)
        return false;
    memset(&v, 0, sizeof v);
    iterations = secret + strlen(SCRAM_VERIFIER_PREFIX);
    salt = strchr(iterations, ':');
    if (salt == NULL)
        return false;
    salt++;
    stored_key = strchr(salt, '$');
    if (stored_key == NULL)
        return false;
    stored_key++;
    server_key = strchr(stored_key, ':');
    if (server_key == NULL)
        return false;
    server_key++;
    parsed = parse_positive_number(iterations, (size_t)(salt - 1 - iterations), INT_MAX,
                                   &v.iterations) &&
             base64_decode(salt, (size_t)(stored_key - 1 - salt), v.salt, sizeof v.salt,
                           &v.salt_len) &&
             v.salt_len > 0 &&
             decode_key(stored_key, (size_t)(server_key - 1 - stored_key), v.stored_key) &&
             decode_key(server_key, strlen(server_key), v.server_key);
    if (parsed)
        *out = v;
    OPENSSL_cleanse(&v, sizeof v);
    return parsed;
}

bool scram_mock_verifier(const uint8_t nonce[SCRAM_MOCK_NONCE_LEN], const char *user, int iterations,
                         struct scram_verifier *out)
{
    uint8_t digest[DIGEST_SHA256_LEN] = { 0 };
    size_t user_len = strlen(user);
    struct scram_verifier v = {.iterations = iterations, .salt_len = SCRAM_MOCK_SALT_LEN};
    /* Keys from the secret nonce too: fixed per name, and out of reach of any password. */
    bool made = iterations >= 1 &&
                digest_sha256_pair(user, user_len, nonce, SCRAM_MOCK_NONCE_LEN, digest) &&
                digest_hmac_sha256(nonce, SCRAM_MOCK_NONCE_LEN, user, user_len, v.stored_key) &&
                digest_hmac_sha256(nonce, SCRAM_MOCK_NONCE_LEN, v.stored_key, SCRAM_KEY_LEN,
                                   v.server_key);
    memcpy(v.salt, digest, SCRAM_MOCK_SALT_LEN);
    OPENSSL_cleanse(digest, sizeof digest);
    if (made)
        *out = v;
    OPENSSL_cleanse(&v, sizeof v);
    return made;
}

bool scram_verifier_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                  int iterations, struct scram_verifier *out)
{
    struct scram_verifier v;
    uint8_t salted_password[SCRAM_KEY_LEN];
    uint8_t client_key[SCRAM_KEY_LEN];
    bool derived;

    if (password == NULL || salt == NULL || out == NULL || salt_len == 0 ||
        salt_len > SCRAM_MAX_SALT_LEN || iterations < 1)
        return false;
    memset(&v, 0, sizeof v);
    v.iterations = iterations;
    memcpy(v.salt, salt, salt_len);
    v.salt_len = salt_len;
    derived = scram_salted_password(password, salt, salt_len, iterations, salted_password) &&
              scram_derive_keys(salted_password, client_key, v.stored_key, v.server_key);
    if (derived)
        *out = v;
    OPENSSL_cleanse(salted_password, sizeof salted_password);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(&v, sizeof v);
    return derived;
}

static bool scram_verifier_is_usable(const struct scram_verifier *v)
{
    return v->iterations >= 1 && v->salt_len >= 1 && v->salt_len <= SCRAM_MAX_SALT_LEN;
}

bool scram_format_verifier(const struct scram_verifier *v, char *buf, size_t buf_len)
{
    char salt[BASE64_LEN(SCRAM_MAX_SALT_LEN) + 1];
    char stored_key[BASE64_LEN(SCRAM_KEY_LEN) + 1];
    char server_key[BASE64_LEN(SCRAM_KEY_LEN) + 1];
    int n;

    if (v == NULL || buf == NULL || !scram_verifier_is_usable(v))
        return false;
    base64_encode(v->salt, v->salt_len, salt, sizeof salt);
    base64_encode(v->stored_key, SCRAM_KEY_LEN, stored_key, sizeof stored_key);
    base64_encode(v->server_key, SCRAM_KEY_LEN, server_key, sizeof server_key);
    n = snprintf(buf, buf_len, SCRAM_VERIFIER_PREFIX "%d:%s$%s:%s", v->iterations, salt,
                 stored_key, server_key);
    return n >= 0 && (size_t)n < buf_len;
}

/* ---- server side ---------------------------------------------------------------------------- */

/* gs2-header: only "n,," or "y,," (no channel binding, no authorization identity). */
static const char *read_gs2_header(struct scram_cursor *cur, char *cbind_flag)
{
    if (cur->pos < cur->end && *cur->pos == 'p')
        return "channel binding not supported";
    if (cur->pos >= cur->end || (*cur->pos != 'n' && *cur->pos != 'y'))
        return "expected channel binding flag";
    *cbind_flag = *cur->pos++;
    if (!read_comma(cur))
        return "expected ',' after channel binding flag";
    if (cursor_at(cur, 'a'))
        return "authorization identity not supported";
    if (!read_comma(cur))
        return "expected ',' after gs2 header";
    return NULL;
}

/* Reads client-first-message into s: its flag, bare part and nonce. NULL if acceptable. */
static const char *read_client_first(struct scram_server *s, const uint8_t *msg, size_t len,
                                     const char **nonce, size_t *nonce_len)
{
    struct scram_cursor cur = scram_cursor_over(msg, len);
    const char *problem = read_gs2_header(&cur, &s->gs2_cbind_flag);
    const char *bare = cur.pos;
    const char *user;
    size_t user_len;

    if (problem != NULL)
        return problem;
    if (cursor_at(&cur, 'm'))
        return "unsupported mandatory extension (m=)";
    /* Any n= is fine: PostgreSQL takes the user from the startup packet, libpq sends "n=". */
    if (!read_attribute(&cur, 'n', &user, &user_len) || !read_comma(&cur))
        return "expected user name (n=)";
    if (!read_attribute(&cur, 'r', nonce, nonce_len))
        return "expected nonce (r=)";
    if (!nonce_is_printable(*nonce, *nonce_len))
        return "invalid nonce";
    if (!cursor_at_end(&cur))
        return "unsupported extension after the nonce";
    memcpy(s->client_first_bare, bare, (size_t)(cur.end - bare));
    s->client_first_bare[cur.end - bare] = '\0';
    return NULL;
}

/* The server's half of the nonce: the caller's fixed one, or base64 of fresh random bytes. */
static const char *make_server_nonce(const char *fixed, char *out, size_t out_cap)
{
    uint8_t raw[SCRAM_NONCE_LEN];

    if (fixed != NULL) {
        size_t len = strlen(fixed);

        if (len > SCRAM_MAX_SERVER_NONCE_LEN || !nonce_is_printable(fixed, len))
            return "invalid server nonce";
        memcpy(out, fixed, len + 1);
        return NULL;
    }
    if (RAND_bytes(raw, sizeof raw) != 1)
        return "could not generate a random nonce";
    base64_encode(raw, sizeof raw, out, out_cap);
    return NULL;
}

int scram_server_first(struct scram_server *s, const struct scram_verifier *verifier,
                       const char *server_nonce, const uint8_t *msg, size_t len, char *out,
                       size_t out_cap, size_t *out_len, char *err, size_t err_len)
{
    struct scram_verifier keys;
    char own_nonce[SCRAM_MAX_SERVER_NONCE_LEN + 1];
    char salt[BASE64_LEN(SCRAM_MAX_SALT_LEN) + 1];
    const char *client_nonce = NULL;
    size_t client_nonce_len = 0;
    const char *problem;
    int n;

    if (s == NULL || verifier == NULL)
        return scram_fail(err, err_len, "no exchange state");
    keys = *verifier; /* verifier may point into s */
    memset(s, 0, sizeof *s);
    s->step = SCRAM_SERVER_DONE;
    if (!scram_verifier_is_usable(&keys))
        return scram_fail(err, err_len, "invalid verifier");
    s->verifier = keys;
    OPENSSL_cleanse(&keys, sizeof keys);
    problem = scram_message_problem(msg, len);
    if (problem == NULL)
        problem = read_client_first(s, msg, len, &client_nonce, &client_nonce_len);
    if (problem == NULL)
        problem = make_server_nonce(server_nonce, own_nonce, sizeof own_nonce);
    if (problem != NULL)
        return scram_fail(err, err_len, problem);
    n = snprintf(s->nonce, sizeof s->nonce, "%.*s%s", (int)client_nonce_len, client_nonce,
                 own_nonce);
    if (n < 0 || (size_t)n >= sizeof s->nonce)
        return scram_fail(err, err_len, "nonce too long");
    base64_encode(s->verifier.salt, s->verifier.salt_len, salt, sizeof salt);
    snprintf(s->server_first, sizeof s->server_first, "r=%s,s=%s,i=%d", s->nonce, salt,
             s->verifier.iterations);
    if (!copy_out(s->server_first, out, out_cap, out_len))
        return scram_fail(err, err_len, "output buffer too small");
    s->step = SCRAM_SERVER_EXPECT_FINAL;
    return 0;
}

/*
 * Reads client-final-message: c= must echo our gs2 header, r= our joined nonce, p= a proof of
 * SCRAM_KEY_LEN bytes. *without_proof_len covers "c=...,r=...", the part signed in AuthMessage.
 */
static const char *read_client_final(const struct scram_server *s, const uint8_t *msg, size_t len,
                                     uint8_t proof[SCRAM_KEY_LEN], size_t *without_proof_len)
{
    struct scram_cursor cur = scram_cursor_over(msg, len);
    const char expected_header[SCRAM_GS2_HEADER_LEN] = {s->gs2_cbind_flag, ',', ','};
    uint8_t header[SCRAM_MAX_MESSAGE];
    size_t header_len = 0;
    const char *value;
    size_t value_len;

    if (!read_attribute(&cur, 'c', &value, &value_len))
        return "expected channel binding (c=)";
    if (!base64_decode(value, value_len, header, sizeof header, &header_len))
        return "invalid base64 in channel binding";
    if (header_len != SCRAM_GS2_HEADER_LEN || memcmp(header, expected_header, header_len) != 0)
        return "channel binding check failed";
    if (!read_comma(&cur) || !read_attribute(&cur, 'r', &value, &value_len))
        return "expected nonce (r=)";
    if (value_len != strlen(s->nonce) || memcmp(value, s->nonce, value_len) != 0)
        return "nonce mismatch";
    *without_proof_len = (size_t)(cur.pos - (const char *)msg);
    if (!read_comma(&cur))
        return "expected proof (p=)";
    if (!cursor_at(&cur, 'p'))
        return "unsupported extension before the proof";
    read_attribute(&cur, 'p', &value, &value_len);
    if (!decode_key(value, value_len, proof))
        return "invalid client proof";
    if (!cursor_at_end(&cur))
        return "unexpected data after proof";
    return NULL;
}

/* ClientKey := proof XOR HMAC(StoredKey, AuthMessage); right if H(ClientKey) == StoredKey. */
static bool scram_proof_is_right(const struct scram_verifier *v, const char *auth_message,
                                 size_t auth_message_len, const uint8_t proof[SCRAM_KEY_LEN],
                                 uint8_t client_key[SCRAM_KEY_LEN], bool *right)
{
    uint8_t client_signature[SCRAM_KEY_LEN];
    uint8_t stored_key[SCRAM_KEY_LEN];
    bool computed = hmac_sha256(v->stored_key, auth_message, auth_message_len, client_signature);

    if (computed) {
        for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
            client_key[i] = proof[i] ^ client_signature[i];
        computed = digest_sha256(client_key, SCRAM_KEY_LEN, stored_key);
    }
    *right = computed && CRYPTO_memcmp(stored_key, v->stored_key, SCRAM_KEY_LEN) == 0;
    if (!*right)
        OPENSSL_cleanse(client_key, SCRAM_KEY_LEN);
    OPENSSL_cleanse(stored_key, sizeof stored_key);
    return computed;
}

int scram_server_final(struct scram_server *s, const uint8_t *msg, size_t len, char *out,
                       size_t out_cap, size_t *out_len, char *err, size_t err_len)
{
    uint8_t proof[SCRAM_KEY_LEN];
    uint8_t server_signature[SCRAM_KEY_LEN];
    char auth_message[SCRAM_AUTH_MESSAGE_CAP];
    char server_final[BASE64_LEN(SCRAM_KEY_LEN) + 3];
    size_t auth_message_len = 0;
    size_t without_proof_len = 0;
    const char *problem;
    bool right = false;

    if (s == NULL || s->step != SCRAM_SERVER_EXPECT_FINAL)
        return scram_fail(err, err_len, "unexpected message");
    s->step = SCRAM_SERVER_DONE;
    if (out_len != NULL)
        *out_len = 0;
    if (out != NULL && out_cap > 0)
        out[0] = '\0';
    problem = scram_message_problem(msg, len);
    if (problem == NULL)
        problem = read_client_final(s, msg, len, proof, &without_proof_len);
    if (problem != NULL)
        return scram_fail(err, err_len, problem);
    if (!scram_auth_message(s->client_first_bare, s->server_first, (const char *)msg,
                            without_proof_len, auth_message, &auth_message_len) ||
        !scram_proof_is_right(&s->verifier, auth_message, auth_message_len, proof, s->client_key,
                              &right))
        return scram_fail(err, err_len, "could not compute the proof");
    if (!right)
        return 0;
    if (!hmac_sha256(s->verifier.server_key, auth_message, auth_message_len, server_signature))
        return scram_fail(err, err_len, "could not compute the server signature");
    memcpy(server_final, "v=", 2);
    base64_encode(server_signature, SCRAM_KEY_LEN, server_final + 2, sizeof server_final - 2);
    if (!copy_out(server_final, out, out_cap, out_len))
        return scram_fail(err, err_len, "output buffer too small");
    return 1;
}

/* ---- client side ---------------------------------------------------------------------------- */

int scram_client_first(struct scram_client *c, const char *client_nonce, char *out, size_t out_cap,
                       size_t *out_len)
{
    uint8_t raw[SCRAM_NONCE_LEN];
    int n;

    if (c == NULL)
        return -1;
    memset(c, 0, sizeof *c);
    c->step = SCRAM_CLIENT_DONE;
    if (client_nonce != NULL) {
        size_t len = strlen(client_nonce);

        if (len >= sizeof c->client_nonce || !nonce_is_printable(client_nonce, len))
            return -1;
        memcpy(c->client_nonce, client_nonce, len + 1);
    } else {
        if (RAND_bytes(raw, sizeof raw) != 1)
            return -1;
        base64_encode(raw, sizeof raw, c->client_nonce, sizeof c->client_nonce);
    }
    snprintf(c->client_first_bare, sizeof c->client_first_bare, "n=,r=%s", c->client_nonce);
    if (out == NULL)
        return -1;
    n = snprintf(out, out_cap, "n,,%s", c->client_first_bare);
    if (n < 0 || (size_t)n >= out_cap)
        return -1;
    if (out_len != NULL)
        *out_len = (size_t)n;
    c->step = SCRAM_CLIENT_FIRST_SENT;
    return 0;
}

struct scram_server_first_message {
    const char *nonce;
    size_t nonce_len;
    uint8_t salt[SCRAM_MAX_MESSAGE];
    size_t salt_len;
    int iterations;
};

/* Reads server-first-message: r= must extend our nonce, s= is a salt, i= a sane count. */
static const char *read_server_first(const struct scram_client *c, const uint8_t *msg, size_t len,
                                     struct scram_server_first_message *m)
{
    struct scram_cursor cur = scram_cursor_over(msg, len);
    size_t client_nonce_len = strlen(c->client_nonce);
    const char *value;
    size_t value_len;

    if (cursor_at(&cur, 'm'))
        return "unsupported mandatory extension (m=)";
    if (!read_attribute(&cur, 'r', &m->nonce, &m->nonce_len))
        return "expected nonce (r=)";
    if (!nonce_is_printable(m->nonce, m->nonce_len))
        return "invalid nonce";
    /* The server must add its own part: an echo of ours alone would make replays possible. */
    if (m->nonce_len <= client_nonce_len ||
        memcmp(m->nonce, c->client_nonce, client_nonce_len) != 0)
        return "nonce mismatch";
    if (!read_comma(&cur) || !read_attribute(&cur, 's', &value, &value_len))
        return "expected salt (s=)";
    if (!base64_decode(value, value_len, m->salt, sizeof m->salt, &m->salt_len) ||
        m->salt_len == 0)
        return "invalid salt";
    if (!read_comma(&cur) || !read_attribute(&cur, 'i', &value, &value_len))
        return "expected iteration count (i=)";
    if (!parse_positive_number(value, value_len, SCRAM_MAX_SERVER_ITERATIONS, &m->iterations))
        return "invalid iteration count";
    if (!cursor_at_end(&cur))
        return "unexpected data after iteration count";
    return NULL;
}

/* The proof and the server signature to expect, from ClientKey and ServerKey and AuthMessage. */
static bool scram_client_prove(struct scram_client *c, const uint8_t client_key[SCRAM_KEY_LEN],
                               const uint8_t server_key[SCRAM_KEY_LEN], const char *auth_message,
                               size_t auth_message_len, uint8_t proof[SCRAM_KEY_LEN])
{
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t client_signature[SCRAM_KEY_LEN];
    uint8_t server_signature[SCRAM_KEY_LEN];
    bool computed = digest_sha256(client_key, SCRAM_KEY_LEN, stored_key) &&
                    hmac_sha256(stored_key, auth_message, auth_message_len, client_signature) &&
                    hmac_sha256(server_key, auth_message, auth_message_len, server_signature);

    if (computed) {
        for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
            proof[i] = client_key[i] ^ client_signature[i];
        base64_encode(server_signature, SCRAM_KEY_LEN, c->expected_server_signature,
                      sizeof c->expected_server_signature);
    }
    OPENSSL_cleanse(stored_key, sizeof stored_key);
    OPENSSL_cleanse(client_signature, sizeof client_signature);
    return computed;
}

/* The keys a client proves with: derived from the password, or given (pass-through). */
static const char *scram_client_keys(struct scram_client *c, const char *password,
                                     const struct scram_passthrough *keys,
                                     const struct scram_server_first_message *m,
                                     uint8_t client_key[SCRAM_KEY_LEN],
                                     uint8_t server_key[SCRAM_KEY_LEN])
{
    uint8_t stored_key[SCRAM_KEY_LEN];
    bool derived;

    if (keys != NULL) {
        const struct scram_verifier *v = &keys->verifier;

        if (m->iterations != v->iterations || m->salt_len != v->salt_len ||
            memcmp(m->salt, v->salt, v->salt_len) != 0)
            return "the database server's verifier differs from the one the client logged in "
                   "with (salt or iteration count; was the password changed?)";
        memcpy(client_key, keys->client_key, SCRAM_KEY_LEN);
        memcpy(server_key, v->server_key, SCRAM_KEY_LEN);
        return NULL;
    }
    derived = scram_salted_password(password, m->salt, m->salt_len, m->iterations,
                                    c->salted_password) &&
              scram_derive_keys(c->salted_password, client_key, stored_key, server_key);
    OPENSSL_cleanse(stored_key, sizeof stored_key);
    return derived ? NULL : "could not compute the proof";
}

static int scram_client_answer(struct scram_client *c, const char *password,
                               const struct scram_passthrough *keys, const uint8_t *msg,
                               size_t len, char *out, size_t out_cap, size_t *out_len, char *err,
                               size_t err_len)
{
    struct scram_server_first_message m;
    char without_proof[SCRAM_MAX_MESSAGE + 1];
    char auth_message[SCRAM_AUTH_MESSAGE_CAP];
    char proof_base64[BASE64_LEN(SCRAM_KEY_LEN) + 1];
    uint8_t proof[SCRAM_KEY_LEN];
    uint8_t client_key[SCRAM_KEY_LEN];
    size_t auth_message_len = 0;
    const char *problem;
    bool proved;
    int n;

    if (c == NULL || c->step != SCRAM_CLIENT_FIRST_SENT)
        return scram_fail(err, err_len, "unexpected message");
    c->step = SCRAM_CLIENT_DONE;
    if (password == NULL && keys == NULL)
        return scram_fail(err, err_len, "no password");
    problem = scram_message_problem(msg, len);
    if (problem == NULL)
        problem = read_server_first(c, msg, len, &m);
    if (problem != NULL)
        return scram_fail(err, err_len, problem);
    memcpy(c->server_first, msg, len);
    c->server_first[len] = '\0';
    /* c=biws is base64("n,,"): we never ask for channel binding. */
    n = snprintf(without_proof, sizeof without_proof, "c=biws,r=%.*s", (int)m.nonce_len, m.nonce);
    if (n < 0 || (size_t)n >= sizeof without_proof ||
        !scram_auth_message(c->client_first_bare, c->server_first, without_proof, (size_t)n,
                            auth_message, &auth_message_len))
        return scram_fail(err, err_len, "message too long");
    problem = scram_client_keys(c, password, keys, &m, client_key, c->auth_message_signature_key);
    if (problem != NULL)
        return scram_fail(err, err_len, problem);
    proved = scram_client_prove(c, client_key, c->auth_message_signature_key, auth_message,
                                auth_message_len, proof);
    OPENSSL_cleanse(client_key, sizeof client_key);
    if (!proved)
        return scram_fail(err, err_len, "could not compute the proof");
    base64_encode(proof, SCRAM_KEY_LEN, proof_base64, sizeof proof_base64);
    if (out == NULL)
        return scram_fail(err, err_len, "output buffer too small");
    n = snprintf(out, out_cap, "%s,p=%s", without_proof, proof_base64);
    if (n < 0 || (size_t)n >= out_cap)
        return scram_fail(err, err_len, "output buffer too small");
    if (out_len != NULL)
        *out_len = (size_t)n;
    c->step = SCRAM_CLIENT_FINAL_SENT;
    return 0;
}

int scram_client_final(struct scram_client *c, const char *password, const uint8_t *msg, size_t len,
                       char *out, size_t out_cap, size_t *out_len, char *err, size_t err_len)
{
    return scram_client_answer(c, password, NULL, msg, len, out, out_cap, out_len, err, err_len);
}

int scram_client_final_passthrough(struct scram_client *c, const struct scram_passthrough *keys,
                                   const uint8_t *msg, size_t len, char *out, size_t out_cap,
                                   size_t *out_len, char *err, size_t err_len)
{
    return scram_client_answer(c, NULL, keys, msg, len, out, out_cap, out_len, err, err_len);
}

/* Copies a server's error text into err, with anything unprintable replaced: it ends up in logs. */
static int scram_server_error(const char *text, size_t len, char *err, size_t err_len)
{
    char printable[SCRAM_MAX_MESSAGE + 1];

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];

        printable[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    printable[len] = '\0';
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, "server error: %s", printable);
    return -1;
}

int scram_client_verify_server(struct scram_client *c, const uint8_t *msg, size_t len, char *err,
                               size_t err_len)
{
    struct scram_cursor cur = scram_cursor_over(msg, len);
    uint8_t expected[SCRAM_KEY_LEN];
    uint8_t received[SCRAM_KEY_LEN];
    const char *problem;
    const char *value;
    size_t value_len;
    bool same;

    if (c == NULL || c->step != SCRAM_CLIENT_FINAL_SENT)
        return scram_fail(err, err_len, "unexpected message");
    c->step = SCRAM_CLIENT_DONE;
    problem = scram_message_problem(msg, len);
    if (problem != NULL)
        return scram_fail(err, err_len, problem);
    if (read_attribute(&cur, 'e', &value, &value_len))
        return scram_server_error(value, value_len, err, err_len);
    if (!read_attribute(&cur, 'v', &value, &value_len))
        return scram_fail(err, err_len, "expected server signature (v=)");
    if (!cursor_at_end(&cur))
        return scram_fail(err, err_len, "unexpected data after signature");
    if (!decode_key(value, value_len, received))
        return scram_fail(err, err_len, "invalid server signature");
    if (!decode_key(c->expected_server_signature, strlen(c->expected_server_signature), expected))
        return scram_fail(err, err_len, "no expected server signature");
    same = CRYPTO_memcmp(expected, received, SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(expected, sizeof expected);
    if (!same)
        return scram_fail(err, err_len, "server signature does not match");
    return 0;
}
