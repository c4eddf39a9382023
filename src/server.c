/*
 * server.c: the backend state machine. Connects to PostgreSQL (TCP or unix socket), logs in with
 * trust, cleartext, md5 or SCRAM-SHA-256, then passes replies to its linked client, watching only
 * ReadyForQuery (to know when the transaction ends) and ParameterStatus (to track the session).
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <openssl/err.h>
#include <openssl/crypto.h>

#include "auth_md5.h"
#include "client.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "server_token.h"
#include "timeval.h"

/* PostgreSQL never sends a message larger than 1 GB. */
#define SERVER_MAX_MESSAGE (1024u * 1024u * 1024u)
#define SCRAM_MECHANISM "SCRAM-SHA-256"

static void server_read_cb(struct conn *conn, void *arg);
static void server_drain_cb(struct conn *conn, void *arg);
static void server_event_cb(struct conn *conn, enum conn_event event, void *arg);

static const struct conn_callbacks server_conn_callbacks = {
    .on_read = server_read_cb,
    .on_drain = server_drain_cb,
    .on_event = server_event_cb,
};

static void server_cleanup_input(struct server *s);

/* ---- lifecycle ---- */

/* The pool list a server in this state belongs to, and its count; NULL when closed. */
static struct server_list *server_pool_list(struct server *s, enum server_state state, int **count)
{
    struct pool *pool = s->pool;
    switch (state) {
    case SERVER_CONNECTING:
    case SERVER_LOGIN:
        *count = &pool->n_new;
        return &pool->new_servers;
    case SERVER_IDLE:
        *count = &pool->n_idle;
        return &pool->idle_servers;
    case SERVER_ACTIVE:
    case SERVER_INTERNAL:
    case SERVER_BEING_CANCELED:
    case SERVER_CLEANUP:
        *count = &pool->n_used;
        return &pool->used_servers;
    case SERVER_CLOSED:
        break;
    }
    *count = NULL;
    return NULL;
}

/* What other workers read to find an idle backend to borrow (pool_limits.h). */
static void server_count_idle(struct server *s, int delta)
{
    atomic_fetch_add(&s->pool->shared->idle_on[s->worker->index], delta);
}

/* Moves the server between the pool's lists as its state changes; idle ones go to the front. */
static void server_set_state(struct server *s, enum server_state state)
{
    int *from_count, *to_count;
    struct server_list *from = server_pool_list(s, s->state, &from_count);
    struct server_list *to = server_pool_list(s, state, &to_count);
    s->state = state;
    if (from == to)
        return;
    if (from) {
        TAILQ_REMOVE(from, s, link);
        (*from_count)--;
        if (from == &s->pool->idle_servers)
            server_count_idle(s, -1);
    }
    if (to) {
        if (state == SERVER_IDLE)
            TAILQ_INSERT_HEAD(to, s, link);
        else
            TAILQ_INSERT_TAIL(to, s, link);
        (*to_count)++;
        if (to == &s->pool->idle_servers)
            server_count_idle(s, +1);
    }
}

/* ---- moving between workers ---- */

bool server_can_leave_worker(struct server *s)
{
    return s->state != SERVER_CLOSED && !s->client && !s->cancel_in_flight && !s->scram &&
           conn_can_leave_loop(&s->conn);
}

void server_leave_worker(struct server *s)
{
    int *count;
    struct server_list *list = server_pool_list(s, s->state, &count);
    if (list) {
        TAILQ_REMOVE(list, s, link);
        (*count)--;
        if (list == &s->pool->idle_servers)
            server_count_idle(s, -1);
    }
    s->state = SERVER_IDLE; /* idle, in no list until it joins its new worker */
    s->worker->n_servers--;
}

void server_join_worker(struct server *s, struct worker *w, struct pool *pool)
{
    s->worker = w;
    s->pool = pool;
    w->n_servers++;
    conn_join_loop(&s->conn, w->base, &w->flusher);
    TAILQ_INSERT_HEAD(&pool->idle_servers, s, link);
    pool->n_idle++;
    server_count_idle(s, +1);
}

void server_close_in_transit(struct server *s, struct worker *w, struct shared_pool *shared,
                             const char *reason)
{
    log_debug("S-%llu: %s/%s closing on its way between workers: %s", (unsigned long long)s->id,
              shared->db_name, shared->user_name, reason);
    s->state = SERVER_CLOSED;
    conn_close(&s->conn);
    pool_registry_add_servers(&w->world->pools, shared, -1);
    w->server_closed = true;
    TAILQ_INSERT_TAIL(&w->dead_servers, s, link);
    worker_schedule_reap(w);
}

static void server_forget_cancel(struct server *s);

static int server_start_connect(struct server *s)
{
    struct worker *w = s->worker;

#define SERVER_CONNECT(addr, len)                                                                  \
    conn_open_connect(&s->conn, w->base, &w->flusher, (struct sockaddr *)(addr), (len),           \
                      &server_conn_callbacks, s)
    if (s->host[0] == '/') {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        int n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", s->host, s->port);
        if (n < 0 || (size_t)n >= sizeof(sun.sun_path))
            return -1;
        return SERVER_CONNECT(&sun, sizeof(sun));
    }
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port) };
    if (inet_pton(AF_INET, s->host, &sin.sin_addr) == 1)
        return SERVER_CONNECT(&sin, sizeof(sin));
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)s->port) };
    if (inet_pton(AF_INET6, s->host, &sin6.sin6_addr) == 1)
        return SERVER_CONNECT(&sin6, sizeof(sin6));
#undef SERVER_CONNECT
    /* A name is resolved again for every backend (no cache): after a failover that moves the
     * name, the next backend goes to the new address. */
    return conn_open_connect_host(&s->conn, w->base, &w->flusher, w->dns, s->host, s->port,
                                  &server_conn_callbacks, s);
}

/* Between tries to open a backend while the process is out of descriptors (the janitor retries). */
#define SERVER_DESCRIPTOR_RETRY_SECONDS 0.1

static bool server_error_is_descriptor_shortage(int err)
{
    return err == EMFILE || err == ENFILE;
}

/*
 * No descriptor for the backend's socket: not the database's fault, so no login failure is
 * recorded and no client fails; they wait (query_wait_timeout) while the pool tries again on the
 * janitor's next ticks, once clients or backends have let descriptors go.
 */
static void server_out_of_descriptors(struct server *s, int err)
{
    struct worker *w = s->worker;
    struct pool *pool = s->pool;
    unsigned long held_back;

    if (log_rate_allow(&w->descriptor_log, worker_now(w), WORKER_FLOOD_LOG_INTERVAL, &held_back))
        log_warning("pool %s/%s: could not open a backend connection: %s: out of file descriptors "
                    "(raise ulimit -n or LimitNOFILE, or lower max_client_conn); %d clients wait, "
                    "retrying (%lu more such failures since the last such line)",
                    pool->db_name, pool->user_name, strerror(err), pool->n_waiting, held_back);
    pool->descriptor_retry_at = worker_now(w) + SERVER_DESCRIPTOR_RETRY_SECONDS;
    server_close(s, "out of file descriptors");
}

struct server *server_connect(struct pool *pool)
{
    struct worker *w = pool->worker;
    /* The caller counted it (pool.c reserves room under the registry lock): give it back. */
    if (pool->hosts.n == 0) {
        pool_count_server(pool, -1);
        return NULL; /* its host list could not be made (out of memory at a reload) */
    }
    struct server *s = calloc(1, sizeof(*s));
    if (!s) {
        pool_count_server(pool, -1);
        return NULL;
    }
    s->host_index = pool->host_index < pool->hosts.n ? pool->host_index : 0;
    s->host = strdup(pool->hosts.hosts[s->host_index]);
    s->port = pool->hosts.ports[s->host_index];
    if (!s->host) {
        free(s);
        pool_count_server(pool, -1);
        return NULL;
    }
    s->worker = w;
    s->pool = pool;
    s->id = world_next_id(w->world);
    s->state = SERVER_CLOSED; /* not in a list yet */
    s->connect_time = worker_now(w);
    s->last_used = s->connect_time;
    param_set_init(&s->params);
    prepared_server_init(&s->prepared, w->cfg->max_prepared_statements > 0
                                           ? (size_t)w->cfg->max_prepared_statements : 1);
    server_set_state(s, SERVER_CONNECTING);
    w->n_servers++;
    log_debug("S-%llu: %s/%s connecting to %s:%d", (unsigned long long)s->id, pool->db_name,
              pool->user_name, s->host, s->port);
    if (server_start_connect(s) != 0) {
        if (server_error_is_descriptor_shortage(errno)) {
            server_out_of_descriptors(s, errno);
            return NULL;
        }
        char message[256];
        snprintf(message, sizeof(message), "could not connect to the database server at %s:%d",
                 s->host, s->port);
        pool_login_failed(pool, s->host_index, "08006", message, false);
        server_close(s, message);
        return NULL;
    }
    return s;
}

void server_close(struct server *s, const char *reason)
{
    struct worker *w = s->worker;
    struct pool *pool = s->pool;

    if (s->state == SERVER_CLOSED)
        return;
    if (s->client) {
        /* A client cannot go on without its backend's session. */
        struct client *c = s->client;
        s->client = NULL;
        c->server = NULL;
        client_fail(c, "08006", "the connection to the database server was closed");
    }
    server_forget_cancel(s);
    if (s->state == SERVER_IDLE || s->state == SERVER_ACTIVE || s->state == SERVER_INTERNAL ||
        s->state == SERVER_BEING_CANCELED || s->state == SERVER_CLEANUP) {
        /* Its own few bytes, not the worker's scratch buffer: a caller may be building a reply
         * there (the admin console's RECONNECT, KILL and RELOAD close backends mid-reply). */
        static const uint8_t terminate[] = { 'X', 0, 0, 0, 4 };
        conn_write(&s->conn, terminate, sizeof(terminate));
        conn_flush(&s->conn);
    }
    log_debug("S-%llu: %s/%s closing: %s", (unsigned long long)s->id, pool->db_name,
              pool->user_name, reason);
    server_set_state(s, SERVER_CLOSED);
    conn_close(&s->conn);
    w->n_servers--;
    pool_count_server(pool, -1);
    TAILQ_INSERT_TAIL(&w->dead_servers, s, link);
    worker_schedule_reap(w);
    pool_server_gone(pool, s);
}

void server_fail_client(struct server *s, const char *sqlstate, const char *message,
                        const char *reason)
{
    struct client *c = s->client;
    if (c) {
        s->client = NULL;
        c->server = NULL;
        client_fail(c, sqlstate, message);
    }
    server_close(s, reason);
}

void server_free(struct server *s)
{
    conn_close(&s->conn);
    if (s->scram) {
        OPENSSL_cleanse(s->scram, sizeof(*s->scram));
        free(s->scram);
    }
    free(s->internal_error);
    free(s->host);
    param_set_free(&s->params);
    prepared_server_forget_all(&s->prepared);
    reply_queue_free(&s->replies);
    session_backend_free(&s->session);
    free(s);
}

/*
 * The backend could not be logged in to: the pool hears why, then the server goes. permanent:
 * trying again cannot help until someone changes something (a certificate refused, a password).
 */
static void server_login_failed_as(struct server *s, const char *sqlstate, const char *message, bool permanent)
{
    struct pool *pool = s->pool;
    log_warning("S-%llu: %s/%s login to %s:%d failed: %s", (unsigned long long)s->id,
                pool->db_name, pool->user_name, s->host, s->port, message);
    s->worker->stats.servers_failed++;
    pool->stats.servers_failed++;
    pool_login_failed(pool, s->host_index, sqlstate, message, permanent);
    server_close(s, message);
}

/* A login error from its SQLSTATE: permanent unless waiting can cure it (pool.c decides). */
static void server_login_failed(struct server *s, const char *sqlstate, const char *message)
{
    server_login_failed_as(s, sqlstate, message, pool_login_error_is_permanent(sqlstate));
}

/* ---- libevent callbacks ---- */

static void server_read_cb(struct conn *conn, void *arg)
{
    server_process_input(arg);
}

static void server_drain_cb(struct conn *conn, void *arg)
{
    struct server *s = arg;
    if (s->client && s->client->reading_paused)
        client_unpause(s->client);
}

static void server_send_startup(struct server *s)
{
    struct pool *pool = s->pool;
    struct startup_param params[3];
    size_t n = 0;

    params[n++] = (struct startup_param){ "user", pool->user_name };
    params[n++] = (struct startup_param){ "database", pool->dbname };
    if (pool->application_name)
        params[n++] = (struct startup_param){ "application_name", pool->application_name };
    struct msgbuf *mb = &s->worker->scratch;
    msgbuf_reset(mb);
    proto_build_startup(mb, params, n);
    if (!conn_send(&s->conn, mb))
        server_out_of_memory(s);
}

/*
 * The backend is gone (restart, failover, network cut) under its client. A transaction-mode
 * client needs no more than a new backend for its next transaction, so it keeps its connection
 * and only the transaction under way fails. Not where the protocol cannot be kept whole: a
 * message half passed in either direction, or several pipelined queries awaiting replies (each
 * would need its own answer). A session, or a pinned client, lost state it cannot get back.
 */
static bool server_spare_client(struct server *s, const char *sqlstate, const char *message)
{
    struct client *c = s->client;
    if (!c || c->pool_mode != POOL_MODE_TRANSACTION || c->pinned || s->worker->shutting_down ||
        c->pending_ready > 1 || c->forward_remaining > 0 || s->forward_remaining > 0)
        return false;
    /* As if the backend had failed every request in flight: a Parse it never answered leaves
     * the client's statement unprepared, to be prepared again on the next backend. */
    static const uint8_t idle = 'I';
    while (s->replies.count > 0) {
        session_server_reply(s, 'E', NULL, 0);
        session_server_reply(s, 'Z', &idle, 1);
    }
    s->client = NULL;
    c->server = NULL;
    if (session_tracks(c))
        session_backend_lost(c);
    client_backend_lost(c, s->ready_status != 'I', sqlstate, message);
    return true;
}

static void server_lost(struct server *s, const char *why)
{
    struct client *c = s->client;
    char message[512];
    if (s->state == SERVER_CONNECTING || s->state == SERVER_LOGIN) {
        snprintf(message, sizeof(message), "could not connect to the database server at %s:%d: %s",
                 s->host, s->port, why);
        server_login_failed(s, "08006", message);
        return;
    }
    snprintf(message, sizeof(message), "the connection to the database server was lost: %s", why);
    if (c && !server_spare_client(s, "08006", message)) {
        bool session = c->pool_mode == POOL_MODE_SESSION || c->pinned;
        s->client = NULL;
        c->server = NULL;
        client_fail(c, "08006", session ? "the database server closed the connection unexpectedly: "
                                          "this session and its state (settings, prepared statements, "
                                          "temporary tables) are gone; connect again"
                                        : "the database server closed the connection unexpectedly");
    }
    server_close(s, why);
}

void server_out_of_memory(struct server *s)
{
    struct client *c = s->client;
    if (s->state == SERVER_CONNECTING || s->state == SERVER_LOGIN) {
        server_login_failed(s, "53200", "out of memory");
        return;
    }
    if (c) {
        s->client = NULL;
        c->server = NULL;
        client_fail(c, "53200", "out of memory");
    }
    server_close(s, "out of memory");
}

static bool server_wants_tls(const struct server *s)
{
    return s->worker->tls.server_ctx && s->host[0] != '/';
}

static void server_send_ssl_request(struct server *s)
{
    uint8_t request[8];
    uint32_t length = htonl(8), code = htonl(PROTO_SSL_REQUEST);
    memcpy(request, &length, 4);
    memcpy(request + 4, &code, 4);
    if (!conn_write(&s->conn, request, sizeof(request))) {
        server_out_of_memory(s);
        return;
    }
    s->awaiting_ssl_answer = true;
}

/* 'S': continue over TLS on the same socket; the handshake's end sends the startup. */
static void server_start_tls(struct server *s)
{
    SSL *ssl = tls_new_server_ssl(&s->worker->tls, s->host);
    if (!ssl || conn_start_tls(&s->conn, ssl, false) != 0) {
        server_login_failed(s, "08006", "could not start TLS with the database server");
        return;
    }
    s->tls = true;
}

/* The answer to SSLRequest: one byte, before any protocol message. */
static void server_handle_ssl_answer(struct server *s)
{
    uint8_t answer;
    if (evbuffer_remove(s->conn.in, &answer, 1) != 1)
        return;
    s->awaiting_ssl_answer = false;
    if (answer == 'S') {
        server_start_tls(s);
        return;
    }
    if (answer == 'N' && s->worker->tls.server_mode < TLS_MODE_REQUIRE) {
        server_send_startup(s);
        return;
    }
    server_login_failed_as(s, "08006", answer == 'N'
                                           ? "the database server does not accept SSL connections, and server_tls_sslmode requires it"
                                           : "unexpected answer from the database server to SSLRequest",
                           true);
}

static void server_event_cb(struct conn *conn, enum conn_event event, void *arg)
{
    struct server *s = arg;

    switch (event) {
    case CONN_EVENT_CONNECTED:
        if (s->tcp_connected) {
            server_send_startup(s); /* TLS handshake finished */
            return;
        }
        s->tcp_connected = true;
        conn_tune_socket(conn->fd, s->worker->cfg->tcp_keepalive);
        conn_start_reading(conn);
        server_set_state(s, SERVER_LOGIN);
        if (server_wants_tls(s))
            server_send_ssl_request(s);
        else
            server_send_startup(s);
        return;
    case CONN_EVENT_EOF:
        server_lost(s, "server closed the connection");
        return;
    case CONN_EVENT_ERROR:
        if (s->tls) {
            unsigned long err = conn_tls_error(conn);
            /* OpenSSL's error only says "certificate verify failed"; the verify result says why.
             * Below verify-ca nothing is verified, so the result would not be the cause. */
            const char *refused = s->worker->tls.server_mode >= TLS_MODE_VERIFY_CA
                                      ? tls_verify_failure(conn_ssl(conn))
                                      : NULL;
            if (err || refused) {
                char text[256], message[400];
                if (refused) {
                    snprintf(message, sizeof(message),
                             "the database server's certificate was refused: %s "
                             "(server_tls_sslmode, server_tls_ca_file)", refused);
                } else {
                    ERR_error_string_n(err, text, sizeof(text));
                    snprintf(message, sizeof(message), "TLS error with the database server: %s", text);
                }
                if (refused && s->state == SERVER_LOGIN) {
                    server_login_failed_as(s, "08006", message, true); /* no wait will change it */
                    return;
                }
                server_lost(s, message);
                return;
            }
        }
        if (s->state == SERVER_CONNECTING && server_error_is_descriptor_shortage(conn->error)) {
            server_out_of_descriptors(s, conn->error); /* the socket, after the name was resolved */
            return;
        }
        server_lost(s, conn->error == EHOSTUNREACH && !conn->open ? "could not resolve the host name"
                                                                 : strerror(conn->error));
        return;
    }
}

/* ---- logging in to PostgreSQL ---- */

static void server_send_password(struct server *s, const char *password)
{
    struct msgbuf *mb = &s->worker->scratch;
    msgbuf_reset(mb);
    proto_build_password(mb, password);
    if (!conn_send(&s->conn, mb))
        server_out_of_memory(s);
}

static void server_scram_start(struct server *s, const uint8_t *data, size_t data_len)
{
    char out[SCRAM_MAX_MESSAGE + 1];
    size_t out_len;

    if (!proto_sasl_offers(data, data_len, SCRAM_MECHANISM)) {
        server_login_failed(s, "28000", "the database server offers no SASL mechanism sluice supports");
        return;
    }
    s->scram = calloc(1, sizeof(*s->scram));
    if (!s->scram || scram_client_first(s->scram, NULL, out, sizeof(out), &out_len) != 0) {
        server_login_failed(s, "53200", "could not start SCRAM authentication");
        return;
    }
    struct msgbuf *mb = &s->worker->scratch;
    msgbuf_reset(mb);
    proto_build_sasl_initial(mb, SCRAM_MECHANISM, out, out_len);
    if (!conn_send(&s->conn, mb))
        server_out_of_memory(s);
}

static void server_scram_continue(struct server *s, const uint8_t *data, size_t data_len)
{
    char out[SCRAM_MAX_MESSAGE + 1], err[128], message[256];
    size_t out_len;

    struct pool *pool = s->pool;
    int answered = !s->scram ? -1
                   : pool->password ? scram_client_final(s->scram, pool->password, data, data_len, out,
                                                        sizeof(out), &out_len, err, sizeof(err))
                                    : scram_client_final_passthrough(s->scram, pool->passthrough, data,
                                                                     data_len, out, sizeof(out),
                                                                     &out_len, err, sizeof(err));
    if (answered != 0) {
        snprintf(message, sizeof(message), "SCRAM exchange with the database server failed: %s",
                 s->scram ? err : "unexpected message");
        server_login_failed(s, "08P01", message);
        return;
    }
    struct msgbuf *mb = &s->worker->scratch;
    msgbuf_reset(mb);
    proto_build_sasl_response(mb, out, out_len);
    if (!conn_send(&s->conn, mb))
        server_out_of_memory(s);
}

static void server_scram_final(struct server *s, const uint8_t *data, size_t data_len)
{
    char err[128];
    if (!s->scram || scram_client_verify_server(s->scram, data, data_len, err, sizeof(err)) != 0) {
        server_login_failed(s, "28000", "the database server did not prove it knows the password");
        return;
    }
    OPENSSL_cleanse(s->scram, sizeof(*s->scram));
    free(s->scram);
    s->scram = NULL;
}

/* Reads a replaced credentials file before signing, so rotated keys need no reload. */
static void server_refresh_token_keys(struct server_token_signer *signer)
{
    char err[512], key_id[128];
    int rc = server_token_signer_refresh(signer, err, sizeof(err));
    if (rc < 0)
        log_warning("server_auth_token: %s; signing with the keys read before", err);
    else if (rc > 0) {
        server_token_signer_key_id(signer, key_id, sizeof(key_id));
        log_info("server_auth_token: read new keys from %s (access key %s)", signer->path, key_id);
    }
}

/* server_auth_token: a fresh RDS IAM token is the password, and only a cleartext request takes it. */
static void server_send_token(struct server *s, uint32_t code)
{
    struct pool *pool = s->pool;
    struct worker *w = s->worker;
    char err[256], message[400], method[32];
    char *token = NULL;

    if (code != AUTH_REQ_PASSWORD) {
        if (code == AUTH_REQ_MD5 || code == AUTH_REQ_SASL)
            snprintf(method, sizeof(method), "%s", code == AUTH_REQ_MD5 ? "md5" : "SCRAM");
        else
            snprintf(method, sizeof(method), "method %u", code);
        snprintf(message, sizeof(message),
                 "the database server asks for %s authentication, but server_auth_token sends an "
                 "IAM token, which only a cleartext password request takes (RDS with IAM "
                 "authentication, or a sluice with auth_type = token)", method);
        server_login_failed(s, "28000", message);
        return;
    }
    if (w->server_token_signer)
        server_refresh_token_keys(w->server_token_signer);
    if (!w->server_token_signer ||
        server_token_signer_sign(w->server_token_signer, pool->host, pool->port, pool->user_name,
                                 w->cfg->server_auth_token_region, time(NULL), &token, err,
                                 sizeof(err)) != 0) {
        snprintf(message, sizeof(message), "could not sign an IAM token: %s",
                 w->server_token_signer ? err : "no AWS credentials are loaded");
        server_login_failed(s, "28000", message);
        return;
    }
    w->stats.server_tokens_signed++;
    server_send_password(s, token);
    OPENSSL_cleanse(w->scratch.data, w->scratch.len);
    server_token_free(token);
}

/* The backend refused a token login: say with which key and scope, never the token itself. */
static void server_log_token_refused(struct server *s)
{
    struct pool *pool = s->pool;
    struct worker *w = s->worker;
    char key_id[128] = "(none)";
    w->stats.server_token_login_failures++;
    if (w->server_token_signer)
        server_token_signer_key_id(w->server_token_signer, key_id, sizeof(key_id));
    log_warning("S-%llu: %s/%s: the IAM token login was refused; it was signed with access key "
                "%s for region %s, endpoint %s:%d, user %s (check the key is valid and allowed "
                "to connect, and server_auth_token_region)",
                (unsigned long long)s->id, pool->db_name, pool->user_name,
                key_id,
                w->cfg->server_auth_token_region ? w->cfg->server_auth_token_region : "(none)",
                pool->host, pool->port, pool->user_name);
}

/* With no password, a SCRAM exchange can be answered with a client's keys, and an md5 one with
 * the hash auth_query found (pass-through). */
static bool server_may_pass_through(const struct pool *pool, uint32_t code)
{
    if (code == AUTH_REQ_MD5)
        return pool->md5_secret != NULL;
    return pool->passthrough && (code == AUTH_REQ_SASL || code == AUTH_REQ_SASL_CONTINUE ||
                                 code == AUTH_REQ_SASL_FINAL);
}

static const char *server_no_password_reason(const struct pool *pool)
{
    if (pool->passthrough)
        return "the database server asks for md5 or a cleartext password, and sluice has only a "
               "client's SCRAM key for this user: SCRAM pass-through needs scram-sha-256 in "
               "pg_hba.conf (or md5 with a SCRAM verifier stored)";
    if (pool->needs_client_key)
        return "the database server asks for a password, and none is configured for this user: "
               "SCRAM pass-through can log in only once a client of this user has logged in with SCRAM";
    return "the database server asks for a password, and none is configured for this database";
}

static void server_handle_auth_request(struct server *s, const uint8_t *body, size_t body_len)
{
    struct pool *pool = s->pool;
    uint32_t code;
    const uint8_t *data;
    size_t data_len;
    char answer[MD5_PASSWORD_LEN + 1];

    if (proto_parse_auth_request(body, body_len, &code, &data, &data_len) != PROTO_OK) {
        server_login_failed(s, "08P01", "malformed authentication request from the database server");
        return;
    }
    if (code != AUTH_REQ_OK && pool->server_auth_token) {
        server_send_token(s, code);
        return;
    }
    if (code != AUTH_REQ_OK && !pool->password && !server_may_pass_through(pool, code)) {
        server_login_failed(s, "28000", server_no_password_reason(pool));
        return;
    }
    switch (code) {
    case AUTH_REQ_OK:
        return;
    case AUTH_REQ_PASSWORD:
        server_send_password(s, pool->password);
        return;
    case AUTH_REQ_MD5:
        if (data_len != 4)
            break;
        md5_client_response(pool->password ? pool->password : pool->md5_secret, pool->user_name,
                            data, answer);
        server_send_password(s, answer);
        return;
    case AUTH_REQ_SASL:
        server_scram_start(s, data, data_len);
        return;
    case AUTH_REQ_SASL_CONTINUE:
        server_scram_continue(s, data, data_len);
        return;
    case AUTH_REQ_SASL_FINAL:
        server_scram_final(s, data, data_len);
        return;
    default:
        break;
    }
    char message[128];
    snprintf(message, sizeof(message), "the database server asks for an unsupported authentication method (%u)", code);
    server_login_failed(s, "28000", message);
}

static void server_run_internal(struct server *s, enum server_internal_purpose purpose, const char *sql);
static void server_back_to_pool(struct server *s);

/*
 * target_session_attrs: is this server the kind the pool settles on? PostgreSQL 14 and later
 * report in_hot_standby and default_transaction_read_only at login, as libpq relies on.
 */
static bool server_matches_target(struct server *s, char *why, size_t why_len)
{
    enum target_session_attrs target = s->pool->target;
    if (target == TARGET_ANY)
        return true;
    const char *standby = param_set_get(&s->params, "in_hot_standby");
    const char *read_only = param_set_get(&s->params, "default_transaction_read_only");
    if (!standby || !read_only) {
        snprintf(why, why_len, "target_session_attrs = %s needs PostgreSQL 14 or later: the server at "
                 "%s:%d does not report in_hot_standby", hostlist_target_name(target), s->host, s->port);
        return false;
    }
    bool in_hot_standby = strcmp(standby, "on") == 0, is_read_only = strcmp(read_only, "on") == 0;
    if (hostlist_target_accepts(target, in_hot_standby, is_read_only))
        return true;
    snprintf(why, why_len, "the database server at %s:%d is %s, and target_session_attrs is %s",
             s->host, s->port, in_hot_standby ? "a standby" : is_read_only ? "read-only" : "read-write",
             hostlist_target_name(target));
    return false;
}

static void server_login_complete(struct server *s)
{
    struct pool *pool = s->pool;
    char why[400];

    if (!server_matches_target(s, why, sizeof(why))) {
        /* Not a failure of the server: the next host of the list is tried. */
        server_login_failed(s, param_set_get(&s->params, "in_hot_standby") ? "08006" : "0A000", why);
        return;
    }
    pool_login_succeeded(pool, s->host_index);
    s->worker->stats.servers_connected++;
    pool->stats.servers_connected++;
    if (!pool->has_defaults)
        pool_set_defaults(pool, &s->params);
    if (s->state == SERVER_CLOSED)
        return;
    log_debug("S-%llu: %s/%s logged in, backend pid %u", (unsigned long long)s->id, pool->db_name,
              pool->user_name, s->backend_pid);
    if (pool->connect_query && *pool->connect_query) {
        server_run_internal(s, INTERNAL_CONNECT_QUERY, pool->connect_query);
        return;
    }
    pool_server_ready(pool, s);
}

static void server_error_text(const uint8_t *body, size_t body_len, char *sqlstate, char *message,
                              size_t message_len)
{
    struct proto_error e;
    if (proto_parse_error(body, body_len, &e) != PROTO_OK) {
        memset(&e, 0, sizeof(e));
    }
    snprintf(sqlstate, 6, "%s", e.sqlstate ? e.sqlstate : "08P01");
    snprintf(message, message_len, "%s", e.message ? e.message : "unknown error");
}

static void server_login_message(struct server *s, uint8_t type, const uint8_t *body, size_t body_len)
{
    const char *name, *value;
    char sqlstate[6], message[512], full[600];

    switch (type) {
    case 'R':
        server_handle_auth_request(s, body, body_len);
        return;
    case 'S':
        if (proto_parse_parameter_status(body, body_len, &name, &value) == PROTO_OK)
            param_set_put(&s->params, name, value);
        return;
    case 'K':
        proto_parse_backend_key_data(body, body_len, &s->backend_pid, &s->backend_key);
        return;
    case 'E':
        server_error_text(body, body_len, sqlstate, message, sizeof(message));
        snprintf(full, sizeof(full), "the database server refused the login: %s", message);
        if (s->pool->server_auth_token && strncmp(sqlstate, "28", 2) == 0)
            server_log_token_refused(s);
        server_login_failed(s, sqlstate, full);
        return;
    case 'Z':
        proto_parse_ready_for_query(body, body_len, &s->ready_status);
        server_login_complete(s);
        return;
    case 'N':
    case 'v':
        return;
    default:
        server_login_failed(s, "08P01", "unexpected message from the database server during login");
        return;
    }
}

static void server_report_to_client(struct client *c, const char *name, const char *value)
{
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    proto_build_parameter_status(mb, name, value);
    conn_send(&c->conn, mb);
}

/* ---- sluice's own queries ---- */

static void server_run_internal(struct server *s, enum server_internal_purpose purpose, const char *sql)
{
    struct msgbuf *mb = &s->worker->scratch;
    s->purpose = purpose;
    s->internal_start = worker_now(s->worker);
    s->error_in_internal = false;
    free(s->internal_error);
    s->internal_error = NULL;
    session_internal_query(s);
    server_set_state(s, SERVER_INTERNAL);
    msgbuf_reset(mb);
    proto_build_query(mb, sql);
    if (!conn_send(&s->conn, mb))
        server_out_of_memory(s);
}

void server_run_check(struct server *s, const char *query)
{
    log_debug("S-%llu: %s/%s idle since %.1f s ago: checking with server_check_query",
              (unsigned long long)s->id, s->pool->db_name, s->pool->user_name,
              worker_now(s->worker) - s->last_used);
    server_run_internal(s, INTERNAL_CHECK, query);
}

/* After a successful sync the session holds the client's settings and the pool's defaults. */
static void server_record_synced_params(struct server *s, const struct client *c)
{
    const struct param_set *defaults = &s->pool->defaults;
    for (size_t i = 0; i < s->params.n;) {
        const char *name = s->params.entries[i].name;
        if (!param_set_get(&c->params, name) && !param_set_get(defaults, name)) {
            param_set_remove(&s->params, name);
            continue;
        }
        if (!param_set_get(&c->params, name))
            param_set_put(&s->params, name, param_set_get(defaults, name));
        i++;
    }
    for (size_t i = 0; i < c->params.n; i++) {
        const struct param_entry *e = &c->params.entries[i];
        if (e->is_sql)
            param_set_put_sql(&s->params, e->name, e->value);
        else
            param_set_put(&s->params, e->name, e->value);
    }
}

static void server_internal_done(struct server *s)
{
    struct pool *pool = s->pool;
    struct client *c = s->client;
    enum server_internal_purpose purpose = s->purpose;
    char message[600];

    s->purpose = INTERNAL_NONE;
    switch (purpose) {
    case INTERNAL_CONNECT_QUERY:
        if (s->error_in_internal) {
            snprintf(message, sizeof(message), "connect_query failed: %s", s->internal_error);
            server_login_failed(s, s->internal_sqlstate, message);
            return;
        }
        pool_server_ready(pool, s);
        return;
    case INTERNAL_PARAM_SYNC:
        if (!c) {
            pool_server_ready(pool, s);
            return;
        }
        if (s->error_in_internal) {
            snprintf(message, sizeof(message), "could not apply the session's settings: %s",
                     s->internal_error);
            s->client = NULL;
            c->server = NULL;
            param_set_copy(&s->params, &pool->defaults);
            client_fail(c, s->internal_sqlstate, message);
            server_close(s, "settings could not be applied");
            return;
        }
        server_record_synced_params(s, c);
        c->session.report_params = false;
        server_set_state(s, SERVER_ACTIVE);
        client_resume(c);
        return;
    case INTERNAL_ROLLBACK:
        if (s->error_in_internal || s->ready_status != 'I') {
            server_close(s, "could not roll back the transaction a client left open");
            return;
        }
        server_back_to_pool(s);
        return;
    case INTERNAL_CHECK:
        pool_server_checked(pool, s, !s->error_in_internal && s->ready_status == 'I');
        return;
    case INTERNAL_RESET:
        if (s->error_in_internal) {
            server_close(s, "server_reset_query failed");
            return;
        }
        param_set_copy(&s->params, &pool->defaults);
        s->session_dirty = false;
        prepared_server_forget_all(&s->prepared);
        pool_server_ready(pool, s);
        return;
    case INTERNAL_NONE:
        break;
    }
    server_close(s, "internal query finished with no purpose");
}

static void server_internal_message(struct server *s, uint8_t type, const uint8_t *body, size_t body_len)
{
    const char *name, *value;
    char sqlstate[6], message[512];

    switch (type) {
    case 'S':
        if (proto_parse_parameter_status(body, body_len, &name, &value) != PROTO_OK)
            return;
        param_set_put(&s->params, name, value);
        /* The server's spelling of a value the client asked for becomes the client's. */
        if (s->client && param_set_get(&s->client->params, name))
            param_set_put(&s->client->params, name, value);
        /* After a RESET the client was told the backend's defaults: tell it its own values. */
        if (s->client && s->client->session.report_params && s->purpose == INTERNAL_PARAM_SYNC)
            server_report_to_client(s->client, name, value);
        return;
    case 'E':
        server_error_text(body, body_len, sqlstate, message, sizeof(message));
        s->error_in_internal = true;
        memcpy(s->internal_sqlstate, sqlstate, sizeof(s->internal_sqlstate));
        free(s->internal_error);
        s->internal_error = strdup(message);
        return;
    case 'Z':
        proto_parse_ready_for_query(body, body_len, &s->ready_status);
        server_internal_done(s);
        return;
    case 'C':
    case 'N':
    case 'T':
    case 'D':
    case 'I':
    case 'A':
        return;
    default:
        server_close(s, "unexpected message during an internal query");
        return;
    }
}

static void server_idle_message(struct server *s, uint8_t type, const uint8_t *body, size_t body_len)
{
    const char *name, *value;
    switch (type) {
    case 'S':
        if (proto_parse_parameter_status(body, body_len, &name, &value) == PROTO_OK)
            param_set_put(&s->params, name, value);
        return;
    case 'N':
    case 'A':
        return;
    default:
        /* A FATAL (57P01 admin shutdown...) or anything else from an idle backend: drop it. */
        server_close(s, "unexpected message from an idle backend");
        return;
    }
}

/* The next message's type and length once its header is in; a length no PostgreSQL sends (over
 * max_len) loses the backend. false: no message to read now. */
static bool server_peek_header(struct server *s, uint32_t max_len, uint8_t *type, uint32_t *msg_len)
{
    enum proto_result r = conn_peek_header(s->conn.in, max_len, type, msg_len);
    if (r == PROTO_ERROR)
        server_lost(s, "invalid message length from the database server");
    return r == PROTO_OK;
}

typedef void (*server_message_handler)(struct server *s, uint8_t type, const uint8_t *body,
                                       size_t body_len);

/* Most messages read outside SERVER_ACTIVE (ParameterStatus, ReadyForQuery) fit here. */
#define SERVER_SMALL_MESSAGE 256

/*
 * Reads whole messages while the server stays in the given state. Each message leaves the input
 * before its handler runs: a ReadyForQuery that ends the login or one of sluice's own queries
 * hands the backend to a waiting client at once, and whatever that client does in the same call
 * (leaving mid-query puts the backend in SERVER_CLEANUP, which reads this input) must start at
 * the next message, not count this one as the answer to the client's query.
 */
static void server_consume_messages(struct server *s, enum server_state state,
                                    server_message_handler handler)
{
    uint8_t small[SERVER_SMALL_MESSAGE];
    while (s->state == state) {
        struct evbuffer *in = s->conn.in;
        uint8_t type;
        uint32_t msg_len;
        if (!server_peek_header(s, CONN_MAX_INSPECTED_MESSAGE, &type, &msg_len))
            return;
        size_t whole = (size_t)msg_len + 1;
        if (evbuffer_get_length(in) < whole)
            return;
        uint8_t *msg = whole <= sizeof(small) ? small : malloc(whole);
        if (!msg) {
            server_out_of_memory(s);
            return;
        }
        evbuffer_remove(in, msg, whole);
        handler(s, type, msg + PROTO_HEADER_LEN, msg_len - 4);
        if (msg != small)
            free(msg);
    }
    server_process_input(s);
}

/* ---- passing replies to the client ---- */

static void server_pause(struct server *s)
{
    conn_stop_reading(&s->conn);
    s->reading_paused = true;
}

void server_unpause(struct server *s)
{
    if (!s->reading_paused || s->state == SERVER_CLOSED)
        return;
    s->reading_paused = false;
    conn_start_reading(&s->conn);
    server_process_input(s);
}

/* A ReadyForQuery from the backend, before it is passed on: what the client's statements did to
 * its session is settled. */
static void server_settle_ready(struct server *s, char status)
{
    struct client *c = s->client;
    char before = s->ready_status;
    s->ready_status = status;
    s->ready_time = worker_now(s->worker);
    if (session_tracks(c))
        session_ready_for_query(c, before, status);
}

/*
 * A RESET (or DISCARD ALL) that ends outside a transaction: the backend reported its own
 * defaults, and it is about to be given back. The client's own values (its startup ones) that
 * differ go to it now, before its ReadyForQuery, as PostgreSQL reports what RESET restored;
 * the next backend it gets is set to them (server_sync_params) without telling it again.
 * A client that keeps its backend (pinned) is set back before its next statement instead,
 * which reports them (server_resync_params).
 */
static void server_report_reset_values(struct server *s, struct client *c, char status)
{
    if (!c->session.report_params || c->session.params_resync || status != 'I' || c->pinned)
        return;
    c->session.report_params = false;
    for (size_t i = 0; i < c->params.n; i++) {
        const struct param_entry *e = &c->params.entries[i];
        const char *reported = param_set_get(&s->params, e->name);
        if (e->is_sql || !params_is_tracked(e->name) || (reported && strcmp(reported, e->value) == 0))
            continue;
        server_report_to_client(c, e->name, e->value);
    }
}

/* ReadyForQuery passed to the client: is the transaction over, and the backend free to go? */
static void server_ready_for_query(struct server *s, char status)
{
    struct client *c = s->client;
    struct pool_stats *stats = &s->pool->stats;
    double now = worker_now(s->worker);
    if (c->pending_ready > 0)
        c->pending_ready--;
    if (c->pending_ready == 0 && !c->unsynced) {
        histogram_observe(&stats->query_latency, now - c->query_start);
        stats->query_time += now - c->query_start;
    }
    if (status != 'I' || c->pending_ready > 0 || c->unsynced || c->forward_remaining > 0)
        return;
    stats->xact_count++;
    stats->xact_time += now - s->last_used;
    server_transaction_maybe_over(s);
}

void server_transaction_maybe_over(struct server *s)
{
    struct client *c = s->client;
    if (s->ready_status != 'I' || c->pending_ready > 0 || c->unsynced || c->forward_remaining > 0)
        return;
    /* A pinned client keeps its backend for its whole session, as in session mode. */
    if ((c->pool_mode == POOL_MODE_TRANSACTION && !c->pinned) || s->worker->shutting_down)
        server_release(s);
}

/* A message small enough for sluice to read is read whole: true while its rest is still to come.
 * A larger one is passed on as it arrives, unread. */
static bool server_awaits_rest(struct evbuffer *in, uint32_t msg_len)
{
    return msg_len <= CONN_MAX_INSPECTED_MESSAGE && evbuffer_get_length(in) < (size_t)msg_len + 1;
}

static void server_track_parameter(struct server *s, struct evbuffer *in, uint32_t msg_len)
{
    const char *name, *value;
    if (msg_len > CONN_MAX_INSPECTED_MESSAGE)
        return;
    const uint8_t *msg = conn_pullup_message(in, msg_len);
    if (!msg || proto_parse_parameter_status(msg + PROTO_HEADER_LEN, msg_len - 4, &name, &value) != PROTO_OK)
        return;
    param_set_put(&s->params, name, value);
    if (params_is_tracked(name))
        param_set_put(&s->client->params, name, value);
}

/*
 * An ErrorResponse from a backend linked to a client: a FATAL (57P01 at a fast shutdown...) means
 * the backend is about to close. If its client can be spared, it gets the error as an ERROR of its
 * transaction and the backend is closed now: returns true. Else the FATAL is passed on as it is.
 */
static bool server_fatal_spares_client(struct server *s, struct evbuffer *in, uint32_t msg_len)
{
    struct proto_error e;
    char sqlstate[6], message[512];
    if (msg_len > CONN_MAX_INSPECTED_MESSAGE)
        return false;
    const uint8_t *msg = conn_pullup_message(in, msg_len);
    if (!msg || proto_parse_error(msg + PROTO_HEADER_LEN, msg_len - 4, &e) != PROTO_OK || !e.severity ||
        (strcmp(e.severity, "FATAL") != 0 && strcmp(e.severity, "PANIC") != 0))
        return false;
    server_error_text(msg + PROTO_HEADER_LEN, msg_len - 4, sqlstate, message, sizeof(message));
    if (!server_spare_client(s, sqlstate, message))
        return false;
    server_close(s, message);
    return true;
}

static void server_forward_input(struct server *s)
{
    struct evbuffer *in = s->conn.in;

    while (s->state == SERVER_ACTIVE) {
        struct client *c = s->client;
        if (s->forward_remaining > 0) {
            size_t moved = conn_forward(&s->conn, &c->conn, &s->forward_remaining);
            s->pool->stats.bytes_sent += moved;
            if (s->forward_remaining > 0)
                return;
            if (conn_output_is_full(&c->conn)) {
                server_pause(s);
                conn_want_drain(&c->conn);
                return;
            }
            continue;
        }
        uint8_t type;
        uint32_t msg_len;
        if (!server_peek_header(s, SERVER_MAX_MESSAGE, &type, &msg_len))
            return;
        if (type == 'Z') {
            uint8_t ready[PROTO_HEADER_LEN + 1];
            if (msg_len != 5) {
                server_lost(s, "malformed ReadyForQuery from the database server");
                return;
            }
            if (evbuffer_copyout(in, ready, sizeof(ready)) < (ev_ssize_t)sizeof(ready))
                return;
            uint32_t whole = sizeof(ready);
            char status = (char)ready[PROTO_HEADER_LEN];
            session_server_reply(s, 'Z', ready + PROTO_HEADER_LEN, 1);
            server_settle_ready(s, status);
            server_report_reset_values(s, c, status);
            conn_forward(&s->conn, &c->conn, &whole);
            s->pool->stats.bytes_sent += sizeof(ready);
            server_ready_for_query(s, status);
            if (s->client == c && c->held_for_names)
                client_names_settled(c);
            continue;
        }
        if (type == 'S') {
            if (server_awaits_rest(in, msg_len))
                return;
            server_track_parameter(s, in, msg_len);
        }
        if (type == 'E') {
            c->session.statement_failed = true;
            if (server_awaits_rest(in, msg_len))
                return;
            if (server_fatal_spares_client(s, in, msg_len))
                return;
        }
        if (session_server_inspects(s, type)) {
            if (server_awaits_rest(in, msg_len))
                return;
            bool inspectable = msg_len <= CONN_MAX_INSPECTED_MESSAGE;
            const uint8_t *msg = inspectable ? conn_pullup_message(in, msg_len) : NULL;
            if (session_server_reply(s, type, msg ? msg + PROTO_HEADER_LEN : NULL,
                                     msg ? msg_len - 4 : 0)) {
                evbuffer_drain(in, (size_t)msg_len + 1); /* sluice's own, or replaced */
                continue;
            }
        }
        s->forward_remaining = msg_len + 1;
    }
    server_process_input(s);
}

void server_process_input(struct server *s)
{
    if (s->reading_paused)
        return;
    switch (s->state) {
    case SERVER_LOGIN:
        if (s->awaiting_ssl_answer) {
            server_handle_ssl_answer(s);
            if (s->state != SERVER_LOGIN || s->awaiting_ssl_answer)
                break;
        }
        server_consume_messages(s, SERVER_LOGIN, server_login_message);
        break;
    case SERVER_IDLE:
        server_consume_messages(s, SERVER_IDLE, server_idle_message);
        break;
    case SERVER_INTERNAL:
        server_consume_messages(s, SERVER_INTERNAL, server_internal_message);
        break;
    case SERVER_BEING_CANCELED:
        server_consume_messages(s, SERVER_BEING_CANCELED, server_idle_message);
        break;
    case SERVER_CLEANUP:
        server_cleanup_input(s);
        break;
    case SERVER_ACTIVE:
        server_forward_input(s);
        break;
    case SERVER_CONNECTING:
    case SERVER_CLOSED:
        break;
    }
}

/* ---- linking to clients ---- */

void server_set_idle(struct server *s)
{
    s->last_used = worker_now(s->worker);
    server_set_state(s, SERVER_IDLE);
}

/* Starts the SETs that give the backend its client's settings; false if none is needed. */
static bool server_sync_params(struct server *s)
{
    struct client *c = s->client;
    struct msgbuf sql;
    bool started = false;

    msgbuf_init(&sql);
    if (params_build_sync(&c->params, &s->pool->defaults, &s->params, &sql) > 0) {
        msgbuf_append(&sql, "", 1);
        if (!sql.failed) {
            server_run_internal(s, INTERNAL_PARAM_SYNC, (const char *)sql.data);
            started = true;
        }
    }
    msgbuf_free(&sql);
    if (!started)
        c->session.report_params = false;
    return started;
}

void server_link_client(struct server *s, struct client *c)
{
    s->client = c;
    s->linked_mode = c->pool_mode;
    s->last_used = worker_now(s->worker);
    client_server_linked(c, s);
    if (!server_sync_params(s))
        server_set_state(s, SERVER_ACTIVE);
}

bool server_resync_params(struct server *s)
{
    struct client *c = s->client;

    c->session.params_resync = false;
    /* In a failed transaction a SET would fail too; the rollback restores the settings. Idle:
     * a pinned client's backend, which it keeps. */
    if (s->state != SERVER_ACTIVE || s->ready_status == 'E')
        return false;
    return server_sync_params(s);
}

/*
 * A backend can be reused only if nothing of the last client's is under way on it: no reply owed,
 * no half-sent message. An open transaction is fine: it is rolled back first.
 */
static bool server_is_quiet_after(const struct server *s, const struct client *c)
{
    return s->state == SERVER_ACTIVE && c->pending_ready == 0 && !c->unsynced &&
           c->forward_remaining == 0 && s->forward_remaining == 0 &&
           evbuffer_get_length(s->conn.in) == 0;
}

static void server_back_to_pool(struct server *s)
{
    struct pool *pool = s->pool;
    const struct config *cfg = s->worker->cfg;
    double now = worker_now(s->worker);

    if (s->close_needed || s->worker->shutting_down ||
        (cfg->server_lifetime > 0 && now - s->connect_time > cfg->server_lifetime)) {
        server_close(s, s->close_needed ? "configuration changed" : "server_lifetime reached");
        return;
    }
    if (s->replies.count > 0) {
        /* Never expected: replies sluice still waits for would be matched to the next client's
         * messages. A backend whose state is not known goes to no one. */
        log_error("S-%llu: %s/%s: %u replies still owed at the end of a transaction", (unsigned long long)s->id,
                  pool->db_name, pool->user_name, s->replies.count);
        server_close(s, "replies owed at the end of a transaction");
        return;
    }
    if (pool_above_size(pool)) {
        server_close(s, "more backends than pool_size (lowered by a reload)");
        return;
    }
    if (s->cancel_in_flight) {
        /* The cancel could still reach PostgreSQL and stop the next client's query. */
        server_set_state(s, SERVER_BEING_CANCELED);
        return;
    }
    if (s->session_dirty) {
        /* A pinned client left state behind: clear all of it, prepared statements included. */
        server_run_internal(s, INTERNAL_RESET, "DISCARD ALL");
        return;
    }
    bool reset = s->linked_mode == POOL_MODE_SESSION || cfg->server_reset_query_always;
    if (reset && cfg->server_reset_query && *cfg->server_reset_query) {
        server_run_internal(s, INTERNAL_RESET, cfg->server_reset_query);
        return;
    }
    pool_server_ready(pool, s);
}

/* The cleaned backend has answered all it owed: roll back what is left open, then reuse it. */
static void server_cleanup_done(struct server *s)
{
    if (s->cancel_in_flight)
        return; /* cancel_request_free comes back here: a late cancel must not hit the ROLLBACK */
    if (s->replies.count > 0) {
        server_close(s, "the replies of a client that left could not be accounted for");
        return;
    }
    log_debug("S-%llu: %s/%s cleaned after its client left (%.3f s)", (unsigned long long)s->id,
              s->pool->db_name, s->pool->user_name, worker_now(s->worker) - s->cleanup_start);
    if (s->ready_status != 'I') {
        server_run_internal(s, INTERNAL_ROLLBACK, "ROLLBACK");
        return;
    }
    server_back_to_pool(s);
}

/*
 * Stands in for a client that left: CopyFail ends any COPY FROM STDIN the backend waits in (or is
 * about to start; PostgreSQL ignores it otherwise), and Sync ends an extended-protocol batch.
 */
static bool server_send_end_of_input(struct server *s, bool sync)
{
    struct msgbuf mb;
    msgbuf_init(&mb);
    proto_build_copy_fail(&mb, "the client disconnected");
    if (sync)
        proto_build_sync(&mb);
    bool sent = conn_send(&s->conn, &mb);
    msgbuf_free(&mb);
    return sent;
}

/* A ReadyForQuery during cleanup: one fewer owed. false once the backend left SERVER_CLEANUP. */
static bool server_cleanup_ready(struct server *s, const uint8_t *ready)
{
    if (s->cleanup_owed == 0) {
        server_close(s, "unexpected ReadyForQuery from a backend being cleaned");
        return false;
    }
    session_server_reply(s, 'Z', ready + PROTO_HEADER_LEN, 1);
    s->ready_status = (char)ready[PROTO_HEADER_LEN];
    if (--s->cleanup_owed > 0) {
        /* The next pipelined query runs now: stop it too. A cancel still open is dropped by
         * server_send_cancel; another goes once it has closed (cancel_request_free). */
        s->cleanup_cancel_again = s->cancel_in_flight != NULL;
        server_send_cancel(s);
        return true;
    }
    server_cleanup_done(s);
    return s->state == SERVER_CLEANUP;
}

/* SERVER_CLEANUP: reads what the backend still sends for a client that left, keeping only what
 * sluice tracks (ReadyForQuery, ParameterStatus, the answers to its own Parse and Close). */
static void server_cleanup_input(struct server *s)
{
    struct evbuffer *in = s->conn.in;
    while (s->state == SERVER_CLEANUP) {
        if (s->forward_remaining > 0) {
            s->forward_remaining = conn_skip_input(in, s->forward_remaining);
            if (s->forward_remaining > 0)
                return;
            continue;
        }
        uint8_t type;
        uint32_t msg_len;
        enum proto_result r = conn_peek_header(in, SERVER_MAX_MESSAGE, &type, &msg_len);
        if (r == PROTO_INCOMPLETE)
            return;
        if (r == PROTO_ERROR || (type == 'Z' && msg_len != 5) || type == 'W') {
            server_close(s, "unexpected message from a backend being cleaned");
            return;
        }
        bool tracked = type != 'Z' && type != 'S' && session_server_inspects(s, type);
        bool inspected = type == 'Z' || ((type == 'S' || tracked) && msg_len <= CONN_MAX_INSPECTED_MESSAGE);
        const uint8_t *msg = inspected ? conn_pullup_message(in, msg_len) : NULL;
        if (inspected && !msg)
            return;
        if (type == 'S') {
            const char *name, *value;
            if (proto_parse_parameter_status(msg + PROTO_HEADER_LEN, msg_len - 4, &name, &value) == PROTO_OK)
                param_set_put(&s->params, name, value);
        } else if (type == 'G' && !server_send_end_of_input(s, false)) {
            server_out_of_memory(s);
            return;
        } else if (tracked) {
            session_server_reply(s, type, msg ? msg + PROTO_HEADER_LEN : NULL, msg ? msg_len - 4 : 0);
        }
        if (type == 'Z') {
            uint8_t ready[PROTO_HEADER_LEN + 1];
            memcpy(ready, msg, sizeof(ready));
            evbuffer_drain(in, sizeof(ready));
            if (!server_cleanup_ready(s, ready))
                return;
            continue;
        }
        s->forward_remaining = msg_len + 1;
    }
}

/*
 * The client left with work under way: cancel it at once (a client killed at its timeout must
 * not leave its query running with its locks held), fail a COPY from the client, end an
 * extended-protocol batch with Sync, and read what the backend still owes before reuse.
 */
static void server_clean_after(struct server *s, struct client *c)
{
    server_send_cancel(s);
    if (c->forward_remaining > 0) {
        /* Half a message of the client's is on the wire: the stream cannot be resumed. */
        server_close(s, "client left in the middle of a message");
        return;
    }
    if (!server_send_end_of_input(s, c->unsynced)) {
        server_close(s, "out of memory");
        return;
    }
    s->cleanup_owed = c->pending_ready + (c->unsynced ? 1 : 0);
    s->cleanup_cancel_again = false;
    s->cleanup_start = worker_now(s->worker);
    server_set_state(s, SERVER_CLEANUP);
    log_debug("S-%llu: %s/%s client left mid-query: cancelling, %u ReadyForQuery owed",
              (unsigned long long)s->id, s->pool->db_name, s->pool->user_name, s->cleanup_owed);
    if (s->reading_paused) {
        s->reading_paused = false;
        conn_start_reading(&s->conn);
    }
    server_process_input(s);
}

void server_client_left(struct server *s)
{
    struct client *c = s->client;
    s->client = NULL;
    if (c && s->state == SERVER_ACTIVE && (c->pending_ready > 0 || c->unsynced)) {
        server_clean_after(s, c);
        return;
    }
    if (!c || !server_is_quiet_after(s, c)) {
        /* Mid-query or mid-message: never hand this session to anyone else. */
        server_close(s, "client left while the backend was busy");
        return;
    }
    if (s->ready_status != 'I') {
        server_run_internal(s, INTERNAL_ROLLBACK, "ROLLBACK");
        return;
    }
    server_back_to_pool(s);
}

void server_release(struct server *s)
{
    struct client *c = s->client;
    s->client = NULL;
    c->server = NULL;
    server_back_to_pool(s);
    client_transaction_done(c);
}

/* ---- cancel ---- */

struct cancel_request {
    struct bufferevent *bev;
    struct server *server;     /* NULL once the server closed */
    bool connecting;           /* still inside server_send_cancel */
    bool finished;
};

static void cancel_request_free(struct cancel_request *req)
{
    struct server *s = req->server;
    bufferevent_free(req->bev);
    free(req);
    if (!s)
        return;
    s->cancel_in_flight = NULL;
    log_debug("S-%llu: cancel request for backend pid %u finished", (unsigned long long)s->id,
              s->backend_pid);
    if (s->state == SERVER_CLEANUP && s->cleanup_cancel_again && s->cleanup_owed > 0) {
        s->cleanup_cancel_again = false;
        server_send_cancel(s); /* for the query that started while this one was open */
    } else if (s->state == SERVER_BEING_CANCELED)
        server_back_to_pool(s);
    else if (s->state == SERVER_CLEANUP && s->cleanup_owed == 0)
        server_cleanup_done(s);
}

static void server_forget_cancel(struct server *s)
{
    if (s->cancel_in_flight)
        s->cancel_in_flight->server = NULL;
    s->cancel_in_flight = NULL;
}

/* PostgreSQL closes the connection once it has signalled the backend: then the request is done. */
static void cancel_request_done(struct bufferevent *bev, short what, void *arg)
{
    struct cancel_request *req = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    req->finished = true;
    if (!req->connecting)
        cancel_request_free(req);
}

static void cancel_request_written(struct bufferevent *bev, void *arg)
{
    /* PostgreSQL closes the connection after reading the request; wait for that EOF. */
}

static int cancel_request_connect(struct server *s, struct bufferevent *bev)
{
    if (s->host[0] == '/') {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", s->host, s->port);
        return bufferevent_socket_connect(bev, (struct sockaddr *)&sun, sizeof(sun));
    }
    if (s->worker->dns)
        return bufferevent_socket_connect_hostname(bev, s->worker->dns, AF_UNSPEC, s->host, s->port);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port) };
    if (inet_pton(AF_INET, s->host, &sin.sin_addr) != 1)
        return -1;
    return bufferevent_socket_connect(bev, (struct sockaddr *)&sin, sizeof(sin));
}

void server_send_cancel(struct server *s)
{
    if (s->cancel_in_flight) {
        log_debug("S-%llu: cancel request for backend pid %u already under way", (unsigned long long)s->id,
                  s->backend_pid);
        return;
    }
    struct cancel_request *req = calloc(1, sizeof(*req));
    if (!req)
        return;
    req->bev = bufferevent_socket_new(s->worker->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!req->bev) {
        free(req);
        return;
    }
    struct msgbuf *mb = &s->worker->scratch;
    msgbuf_reset(mb);
    proto_build_cancel_request(mb, s->backend_pid, s->backend_key);
    bufferevent_setcb(req->bev, NULL, cancel_request_written, cancel_request_done, req);
    bufferevent_enable(req->bev, EV_READ | EV_WRITE);
    bufferevent_write(req->bev, mb->data, mb->len);
    double timeout = s->worker->cfg->server_connect_timeout;
    if (timeout > 0) {
        /* A PostgreSQL that never answers must not hold the backend forever. */
        struct timeval tv = timeval_from_seconds(timeout);
        bufferevent_set_timeouts(req->bev, &tv, &tv);
    }

    req->connecting = true;
    int rc = cancel_request_connect(s, req->bev);
    req->connecting = false;
    if (rc != 0)
        log_warning("S-%llu: %s/%s could not send a cancel request for backend pid %u: %s",
                    (unsigned long long)s->id, s->pool->db_name, s->pool->user_name, s->backend_pid,
                    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    if (rc != 0 || req->finished) {
        bufferevent_free(req->bev);
        free(req);
        return;
    }
    req->server = s;
    s->cancel_in_flight = req;
    log_debug("S-%llu: cancel request sent for backend pid %u", (unsigned long long)s->id, s->backend_pid);
}
