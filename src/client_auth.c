/*
 * client_auth.c: how a client proves who it is: trust, cleartext, md5, SCRAM-SHA-256 against the
 * auth_file, or an RDS-style IAM token over TLS. Wrong passwords and unknown users look the same.
 */
#include "client_auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth_md5.h"
#include "auth_query.h"
#include "auth_scram.h"
#include "auth_token.h"
#include "client.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "userlist.h"

/* Password and SASL messages are small; anything larger during login is an attack or a bug. */
#define CLIENT_MAX_AUTH_MESSAGE (TOKEN_MAX_LEN + 1024)
#define SCRAM_MECHANISM "SCRAM-SHA-256"

/* Drawn once at start and only read after: what makes mock SCRAM salts unguessable. */
static uint8_t mock_auth_nonce[SCRAM_MOCK_NONCE_LEN];

int client_auth_init(void)
{
    return RAND_bytes(mock_auth_nonce, sizeof(mock_auth_nonce)) == 1 ? 0 : -1;
}

bool client_auth_send_request(struct client *c, uint32_t code, const void *data, size_t len)
{
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    proto_build_auth_request(mb, code, data, len);
    if (conn_send(&c->conn, mb))
        return true;
    client_fail(c, "53200", "out of memory");
    return false;
}

/* One place counts logins, by outcome, method and transport. */
void client_auth_count(struct client *c, bool ok)
{
    struct worker_stats *st = &c->worker->stats;
    size_t method = c->login->auth_method < 8 ? c->login->auth_method : 0;
    if (ok) {
        st->logins_ok++;
        st->logins_ok_by_method[method]++;
        st->logins_ok_tls += c->tls;
    } else {
        st->logins_failed++;
        st->logins_failed_by_method[method]++;
        st->logins_failed_tls += c->tls;
    }
}

static void client_auth_failed(struct client *c)
{
    /* Same words for a wrong password and an unknown user: no user enumeration. */
    client_auth_count(c, false);
    client_failf(c, "28P01", "password authentication failed for user \"%s\"", c->user);
}

/* The user's secret: its auth_file line, else what auth_query found for it (NULL: unknown). */
static struct userlist_entry *client_auth_entry(struct client *c)
{
    struct worker *w = c->worker;
    struct userlist_entry *entry = w->users ? userlist_find(w->users, c->user) : NULL;
    if (!entry && !c->is_admin)
        entry = auth_query_cached(w->auth_query, c);
    return entry;
}

static void client_auth_start_method(struct client *c, enum auth_type type,
                                     struct userlist_entry *entry);

void client_auth_begin(struct client *c)
{
    struct worker *w = c->worker;
    const struct config_user *cu = config_find_user(w->cfg, c->user);
    enum auth_type type = config_effective_auth_type(w->cfg, cu);
    struct userlist_entry *entry = w->users ? userlist_find(w->users, c->user) : NULL;

    client_set_state(c, CLIENT_AUTH);
    c->login->auth_method = (uint8_t)type;
    /* Tokens carry their own proof; everyone else not in auth_file may be in PostgreSQL. */
    if (!entry && !c->is_admin && type != AUTH_TYPE_TOKEN) {
        /* Set first: a look-up that fails at once answers this client before it returns. */
        c->login->auth_step = AUTH_STEP_LOOKUP;
        enum auth_query_outcome outcome = auth_query_begin(w->auth_query, c, &entry);
        if (outcome == AUTH_QUERY_WAIT)
            return;
        c->login->auth_step = AUTH_STEP_NONE;
        switch (outcome) {
        case AUTH_QUERY_WAIT:
            return;
        case AUTH_QUERY_FAILED:
            client_auth_failed(c);
            return;
        case AUTH_QUERY_NOT_USED:
        case AUTH_QUERY_ANSWERED:
            break;
        }
    }
    client_auth_start_method(c, type, entry);
}

void client_auth_lookup_done(struct client *c, bool failed)
{
    const struct config_user *cu;

    if (c->state != CLIENT_AUTH || c->login->auth_step != AUTH_STEP_LOOKUP)
        return;
    c->login->auth_step = AUTH_STEP_NONE;
    if (failed) {
        client_auth_failed(c);
        return;
    }
    cu = config_find_user(c->worker->cfg, c->user);
    client_auth_start_method(c, config_effective_auth_type(c->worker->cfg, cu), client_auth_entry(c));
}

static void client_auth_start_method(struct client *c, enum auth_type type,
                                     struct userlist_entry *entry)
{
    struct worker *w = c->worker;

    c->login->auth_method = (uint8_t)type;
    switch (type) {
    case AUTH_TYPE_TRUST:
        /* As PgBouncer: trust skips the password, not the auth file. */
        if (!entry) {
            log_info("C-%llu: %s/%s@%s:%d no such user", (unsigned long long)c->id, c->database,
                     c->user, client_address(c).text, c->port);
            client_auth_count(c, false);
            client_failf(c, "28000", "\"trust\" authentication failed for user \"%s\"", c->user);
            return;
        }
        client_authenticated(c);
        return;
    case AUTH_TYPE_PLAIN:
        c->login->auth_step = AUTH_STEP_CLEARTEXT;
        client_auth_send_request(c, AUTH_REQ_PASSWORD, NULL, 0);
        return;
    case AUTH_TYPE_MD5:
        /* As PgBouncer: a SCRAM secret cannot answer md5, so such users get SCRAM. */
        if (!(entry && entry->kind == SECRET_SCRAM)) {
            if (RAND_bytes(c->login->md5_salt, sizeof(c->login->md5_salt)) != 1) {
                client_fail(c, "XX000", "could not generate a random salt");
                return;
            }
            c->login->auth_step = AUTH_STEP_MD5;
            client_auth_send_request(c, AUTH_REQ_MD5, c->login->md5_salt, sizeof(c->login->md5_salt));
            return;
        }
        c->login->auth_method = AUTH_TYPE_SCRAM;
        /* fall through */
    case AUTH_TYPE_SCRAM: {
        struct msgbuf *mb = &w->scratch;
        c->login->auth_step = AUTH_STEP_SCRAM_FIRST;
        msgbuf_reset(mb);
        proto_build_auth_sasl(mb, SCRAM_MECHANISM);
        if (!conn_send(&c->conn, mb))
            client_fail(c, "53200", "out of memory");
        return;
    }
    case AUTH_TYPE_TOKEN:
        if (!c->tls && !(c->is_unix && w->cfg->auth_token_allow_unix_socket)) {
            client_auth_count(c, false);
            client_failf(c, "28000", "token authentication for user \"%s\" requires an SSL connection: connect with sslmode=require or stronger",
                         c->user);
            return;
        }
        c->login->auth_step = AUTH_STEP_TOKEN;
        client_auth_send_request(c, AUTH_REQ_PASSWORD, NULL, 0);
        return;
    case AUTH_TYPE_UNSET:
        break;
    }
    client_fail(c, "28000", "no authentication method is configured for this user");
}

static bool client_check_cleartext(struct client *c, struct userlist_entry *entry, const char *password)
{
    /* As PostgreSQL and PgBouncer: an empty password never logs anyone in. */
    if (!entry || !*password || !*entry->secret)
        return false;
    switch (entry->kind) {
    case SECRET_PLAIN: {
        size_t a = strlen(entry->secret), b = strlen(password);
        return a == b && CRYPTO_memcmp(entry->secret, password, a) == 0;
    }
    case SECRET_MD5: {
        char computed[MD5_PASSWORD_LEN + 1];
        md5_stored_secret(password, c->user, computed);
        return CRYPTO_memcmp(computed, entry->secret, MD5_PASSWORD_LEN) == 0 &&
               strlen(entry->secret) == MD5_PASSWORD_LEN;
    }
    case SECRET_SCRAM: {
        struct scram_verifier derived;
        const struct scram_verifier *stored = &entry->scram;
        if (!scram_verifier_from_password(password, stored->salt, stored->salt_len,
                                          stored->iterations, &derived))
            return false;
        return CRYPTO_memcmp(derived.stored_key, stored->stored_key, SCRAM_KEY_LEN) == 0;
    }
    }
    return false;
}

/*
 * A verifier no password matches, so an unknown user walks the same path as a wrong password. Its
 * salt and iteration count must look like a real user's: the same on every attempt for one name
 * (derived from the name and this per-process secret) and a count the real users have.
 */
static void client_mock_verifier(struct client *c, struct scram_verifier *v)
{
    if (!scram_mock_verifier(mock_auth_nonce, c->user, userlist_mock_iterations(c->worker->users), v)) {
        /* Out of memory only: still a verifier nobody can answer, with a real-looking salt size. */
        memset(v, 0, sizeof(*v));
        v->iterations = SCRAM_DEFAULT_ITERATIONS;
        v->salt_len = SCRAM_MOCK_SALT_LEN;
        RAND_bytes(v->stored_key, SCRAM_KEY_LEN);
        RAND_bytes(v->server_key, SCRAM_KEY_LEN);
    }
}

static void client_scram_first(struct client *c, struct userlist_entry *entry, const uint8_t *body,
                               size_t body_len)
{
    const char *mech;
    const uint8_t *data;
    size_t data_len, out_len;
    char out[SCRAM_MAX_MESSAGE + 1], err[128];
    struct scram_verifier mock;
    const struct scram_verifier *verifier = entry ? userlist_scram_verifier(entry) : NULL;

    if (proto_parse_sasl_initial(body, body_len, &mech, &data, &data_len) != PROTO_OK) {
        client_fail(c, "08P01", "malformed SASLInitialResponse message");
        return;
    }
    if (strcmp(mech, SCRAM_MECHANISM) != 0) {
        client_fail(c, "28000", "client selected an invalid SASL authentication mechanism");
        return;
    }
    if (!verifier) {
        client_mock_verifier(c, &mock);
        verifier = &mock;
    }
    c->login->scram = calloc(1, sizeof(*c->login->scram));
    if (!c->login->scram) {
        client_fail(c, "53200", "out of memory");
        return;
    }
    if (scram_server_first(c->login->scram, verifier, NULL, data, data_len, out, sizeof(out), &out_len,
                           err, sizeof(err)) != 0) {
        client_failf(c, "08P01", "malformed SCRAM message: %s", err);
        return;
    }
    c->login->auth_step = AUTH_STEP_SCRAM_FINAL;
    client_auth_send_request(c, AUTH_REQ_SASL_CONTINUE, out, out_len);
}

/* The pool this login goes to, if it logs in to PostgreSQL as the client with no password. */
static struct pool *client_passthrough_pool(struct client *c)
{
    struct worker *w = c->worker;
    const struct config_database *db = config_find_database(w->cfg, c->database);
    struct pool *pool;

    if (c->is_admin || !db || db->password || (db->user && strcmp(db->user, c->user) != 0))
        return NULL;
    pool = worker_get_pool(w, db, c->user);
    return pool && !pool->password ? pool : NULL;
}

/*
 * SCRAM pass-through: a pool with no password for this user keeps the ClientKey the client's proof
 * revealed, so its backends can log in as the user with the verifier's keys.
 */
static void client_keep_passthrough(struct client *c)
{
    struct scram_passthrough keys;
    struct pool *pool = client_passthrough_pool(c);

    if (!pool)
        return;
    keys.verifier = c->login->scram->verifier;
    memcpy(keys.client_key, c->login->scram->client_key, SCRAM_KEY_LEN);
    pool_set_passthrough(pool, &keys);
    OPENSSL_cleanse(&keys, sizeof(keys));
}

/* A right password against an md5 hash from auth_query: backends can answer md5 with the hash. */
static void client_password_authenticated(struct client *c, const struct userlist_entry *entry)
{
    struct pool *pool;

    /* An auth_file md5 hash is the pool's password already; this is for auth_query's. */
    if (entry->kind == SECRET_MD5 && (pool = client_passthrough_pool(c)))
        pool_set_md5_secret(pool, entry->secret);
    client_authenticated(c);
}

static void client_scram_final(struct client *c, const uint8_t *body, size_t body_len)
{
    char out[SCRAM_MAX_MESSAGE + 1], err[128];
    size_t out_len;
    int verdict = scram_server_final(c->login->scram, body, body_len, out, sizeof(out), &out_len, err,
                                     sizeof(err));
    if (verdict == 1)
        client_keep_passthrough(c);
    OPENSSL_cleanse(c->login->scram, sizeof(*c->login->scram));
    free(c->login->scram);
    c->login->scram = NULL;
    if (verdict < 0) {
        client_failf(c, "08P01", "malformed SCRAM message: %s", err);
        return;
    }
    if (verdict == 0) {
        client_auth_failed(c);
        return;
    }
    if (client_auth_send_request(c, AUTH_REQ_SASL_FINAL, out, out_len))
        client_authenticated(c);
}

static void client_check_token(struct client *c, const uint8_t *body, size_t body_len)
{
    struct worker *w = c->worker;
    const struct config *cfg = w->cfg;
    const char *token;
    enum token_failure why = TOKEN_FAIL_UNKNOWN_ACCESS_KEY;

    if (proto_parse_password(body, body_len, &token) != PROTO_OK) {
        client_fail(c, "08P01", "malformed password message");
        return;
    }
    struct token_policy policy = {
        .region = cfg->auth_token_region,
        .endpoints = cfg->auth_token_endpoints,
        .clock_skew_seconds = (int)cfg->auth_token_clock_skew,
        .max_expires = TOKEN_DEFAULT_MAX_EXPIRES,
    };
    if (w->token_keys &&
        token_verify(w->token_keys, &policy, token, strlen(token), c->user, time(NULL), &why) == 0) {
        w->stats.token_logins_ok++;
        client_authenticated(c);
        return;
    }
    if ((size_t)why < sizeof(w->stats.token_failures) / sizeof(w->stats.token_failures[0]))
        w->stats.token_failures[why]++;
    client_auth_count(c, false);
    log_info("C-%llu: %s/%s@%s:%d token login refused: %s", (unsigned long long)c->id,
             c->database, c->user, client_address(c).text, c->port, token_failure_message(why));
    client_failf(c, "28P01", "token authentication failed for user \"%s\": %s", c->user,
                 token_failure_message(why));
}

static void client_auth_message(struct client *c, const uint8_t *body, size_t body_len)
{
    struct userlist_entry *entry = client_auth_entry(c);
    const char *password;

    switch (c->login->auth_step) {
    case AUTH_STEP_CLEARTEXT:
        if (proto_parse_password(body, body_len, &password) != PROTO_OK) {
            client_fail(c, "08P01", "malformed password message");
            return;
        }
        if (client_check_cleartext(c, entry, password))
            client_password_authenticated(c, entry);
        else
            client_auth_failed(c);
        return;
    case AUTH_STEP_MD5:
        if (proto_parse_password(body, body_len, &password) != PROTO_OK) {
            client_fail(c, "08P01", "malformed password message");
            return;
        }
        if (entry && entry->kind != SECRET_SCRAM && *entry->secret &&
            md5_check_response(entry->secret, c->user, c->login->md5_salt, password))
            client_password_authenticated(c, entry);
        else
            client_auth_failed(c);
        return;
    case AUTH_STEP_SCRAM_FIRST:
        client_scram_first(c, entry, body, body_len);
        return;
    case AUTH_STEP_TOKEN:
        client_check_token(c, body, body_len);
        return;
    case AUTH_STEP_SCRAM_FINAL:
        client_scram_final(c, body, body_len);
        return;
    case AUTH_STEP_LOOKUP:
    case AUTH_STEP_NONE:
        break;
    }
    client_fail(c, "08P01", "unexpected authentication message");
}

void client_auth_input(struct client *c)
{
    struct evbuffer *in = c->conn.in;

    while (c->state == CLIENT_AUTH) {
        uint8_t type;
        uint32_t msg_len;
        enum proto_result r = conn_peek_header(in, CLIENT_MAX_AUTH_MESSAGE, &type, &msg_len);
        if (r == PROTO_INCOMPLETE)
            return;
        if (r == PROTO_ERROR) {
            client_fail(c, "08P01", "invalid message length during authentication");
            return;
        }
        if (type != 'p') {
            client_failf(c, "08P01", "expected password response, got message type %d", type);
            return;
        }
        if (evbuffer_get_length(in) < (size_t)msg_len + 1)
            return;
        /* Taken out of the buffer first: a finished login goes on to read what follows it. */
        uint8_t message[CLIENT_MAX_AUTH_MESSAGE + 1];
        evbuffer_remove(in, message, (size_t)msg_len + 1);
        client_auth_message(c, message + PROTO_HEADER_LEN, msg_len - 4);
        OPENSSL_cleanse(message, (size_t)msg_len + 1);
    }
}
