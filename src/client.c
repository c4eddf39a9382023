/*
 * client.c: the client state machine. Reads the startup packet, has the client authenticated
 * (client_auth.c), answers the login from the pool's session defaults, then passes messages to a
 * backend: whole messages, moved as buffer chains, with only their 5-byte headers inspected.
 */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "admin.h"
#include "autodb.h"
#include "auth_query.h"
#include "client_auth.h"
#include "conn.h"
#include "log.h"
#include "peer.h"
#include "pool.h"
#include "server.h"
#include "session.h"

/* Bytes a client may have buffered while it has no backend; reading stops beyond this. */
#define CLIENT_READ_HIGH_WATER (256 * 1024)

static void client_read_cb(struct conn *conn, void *arg);
static void client_drain_cb(struct conn *conn, void *arg);
static void client_event_cb(struct conn *conn, enum conn_event event, void *arg);
static void client_handle_startup(struct client *c);
static void client_forward_input(struct client *c);

static const struct conn_callbacks client_conn_callbacks = {
    .on_read = client_read_cb,
    .on_drain = client_drain_cb,
    .on_event = client_event_cb,
};

/* ---- lifecycle ---- */

/* Kept in binary (19 bytes rather than 46 of text in every client); client_address() formats it. */
static void client_describe_peer(struct client *c, const struct sockaddr *addr, bool is_unix)
{
    c->is_unix = is_unix;
    c->port = 0;
    if (is_unix || !addr) {
        c->addr_family = AF_UNIX;
    } else if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
        c->addr_family = AF_INET;
        memcpy(c->addr, &sin->sin_addr, sizeof(sin->sin_addr));
        c->port = ntohs(sin->sin_port);
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
        c->addr_family = AF_INET6;
        memcpy(c->addr, &sin6->sin6_addr, sizeof(sin6->sin6_addr));
        c->port = ntohs(sin6->sin6_port);
    } else {
        c->addr_family = AF_UNSPEC;
    }
}

struct client_address client_address(const struct client *c)
{
    struct client_address out;
    switch (c->addr_family) {
    case AF_INET:
    case AF_INET6:
        if (inet_ntop(c->addr_family, c->addr, out.text, sizeof(out.text)))
            return out;
        break;
    case AF_UNIX:
        snprintf(out.text, sizeof(out.text), "unix");
        return out;
    }
    snprintf(out.text, sizeof(out.text), "unknown");
    return out;
}

struct client *client_create(struct worker *w, int fd, const struct sockaddr *addr, int addr_len,
                             bool is_unix)
{
    struct client *c = client_cache_take(&w->client_cache);
    struct client_login *login = calloc(1, sizeof(*login));
    if (!c || !login ||
        conn_open_accepted(&c->conn, w->base, &w->flusher, fd, &client_conn_callbacks, c) != 0) {
        evutil_closesocket(fd);
        free(login);
        if (c)
            client_cache_give_back(&w->client_cache, c);
        return NULL;
    }
    c->worker = w;
    c->id = world_next_id(w->world);
    c->state = CLIENT_STARTUP;
    c->connect_time = worker_now(w);
    c->last_activity = c->connect_time;
    param_set_init(&c->params);
    session_tracking_init(&c->session);
    client_describe_peer(c, addr, is_unix);
    /* TCP_NODELAY and SO_KEEPALIVE come from the listening socket (Linux copies them). */
    conn_start_reading(&c->conn);

    TAILQ_INSERT_TAIL(&w->clients, c, link);
    login->client = c;
    c->login = login;
    TAILQ_INSERT_TAIL(&w->login_clients, login, link);
    login->listed = true;
    w->n_clients++;
    return c;
}

void client_mark_over_limit(struct client *c)
{
    c->over_limit = true;
    c->worker->n_clients--;
    atomic_fetch_sub(&c->worker->world->n_clients, 1);
    c->worker->n_refusing++;
}

/* Every client refused for max_client_conn hears why; the log says so at most once a second. */
void client_refuse_over_limit(struct client *c)
{
    struct worker *w = c->worker;
    unsigned long held_back;

    if (log_rate_allow(&w->refusal_log, worker_now(w), WORKER_FLOOD_LOG_INTERVAL, &held_back)) {
        char more[80] = "";
        if (held_back > 0)
            snprintf(more, sizeof(more), " (%lu more refused since the last such line)", held_back);
        log_warning("C-%llu: %s:%d refused: max_client_conn (%d) reached%s", (unsigned long long)c->id,
                    client_address(c).text, c->port, w->cfg->max_client_conn, more);
    }
    client_fail(c, "53300", "sorry, too many clients already (max_client_conn reached)");
}

bool client_is_closed(const struct client *c)
{
    return c->state == CLIENT_CLOSED;
}

/* Every state change goes through here, so the pool's client counts stay true. */
void client_set_state(struct client *c, enum client_state state)
{
    struct pool *pool = c->pool;
    if (pool) {
        if (c->state == CLIENT_IDLE)
            pool->n_idle_clients--;
        else if (c->state == CLIENT_ACTIVE)
            pool->n_active_clients--;
        if (state == CLIENT_IDLE)
            pool->n_idle_clients++;
        else if (state == CLIENT_ACTIVE)
            pool->n_active_clients++;
    }
    c->state = state;
}

static void client_leave_login_list(struct client *c)
{
    if (!c->login || !c->login->listed)
        return;
    TAILQ_REMOVE(&c->worker->login_clients, c->login, link);
    c->login->listed = false;
}

/* Frees the state of a login (answered, or the client is gone), and its secrets with it. */
static void client_end_login(struct client *c)
{
    struct client_login *login = c->login;
    if (!login)
        return;
    client_leave_login_list(c);
    auth_query_forget_client(c->worker->auth_query, c);
    if (login->scram) {
        OPENSSL_cleanse(login->scram, sizeof(*login->scram));
        free(login->scram);
    }
    c->login = NULL;
    free(login);
}

static void client_leave_pool_list(struct client *c)
{
    if (!c->in_pool_list)
        return;
    if (c->state == CLIENT_WAITING)
        pool_cancel_wait(c->pool, c);
    else if (c->state == CLIENT_LOGIN_WAIT)
        TAILQ_REMOVE(&c->pool->login_clients, c, pool_link);
    c->in_pool_list = false;
}

/* Lets go of the backend (kept only if clean) and leaves every queue the client waits in. */
static void client_detach(struct client *c)
{
    if (c->server) {
        struct server *s = c->server;
        c->server = NULL;
        server_client_left(s);
    }
    client_leave_pool_list(c);
    client_leave_login_list(c);
    auth_query_forget_client(c->worker->auth_query, c);
}

static void client_log_disconnect(struct client *c, const char *reason)
{
    struct config *cfg = c->worker->cfg;
    if (!cfg->log_disconnections || c->state == CLIENT_STARTUP)
        return;
    log_info("C-%llu: %s/%s@%s:%d closing because: %s (age=%.3fs)", (unsigned long long)c->id,
             c->database ? c->database : "-", c->user ? c->user : "-", client_address(c).text,
             c->port, reason ? reason : "client left", worker_now(c->worker) - c->connect_time);
}

void client_close(struct client *c, const char *reason)
{
    struct worker *w = c->worker;

    if (c->state == CLIENT_CLOSED)
        return;
    client_log_disconnect(c, reason);
    if (c->is_admin)
        admin_client_closed(w, c);
    client_detach(c);
    session_unpin(c);
    pool_forget_client(c);
    client_set_state(c, CLIENT_CLOSED);
    if (c->registered_for_cancel)
        cancel_registry_remove(&w->cancels, c->cancel_pid);
    c->registered_for_cancel = false;
    /* The struct lives until the reaper, so callers up the stack may still read it. */
    conn_close(&c->conn);
    if (c->over_limit) {
        w->n_refusing--;
    } else {
        w->n_clients--;
        atomic_fetch_sub(&w->world->n_clients, 1);
    }
    TAILQ_REMOVE(&w->clients, c, link);
    TAILQ_INSERT_TAIL(&w->dead_clients, c, link);
    worker_schedule_reap(w);
}

void client_free(struct client *c)
{
    conn_close(&c->conn);
    client_end_login(c);
    param_set_free(&c->params);
    session_tracking_free(&c->session);
    if (c->prepared) {
        prepared_client_free(c->prepared);
        free(c->prepared);
    }
    free(c->lost_error);
    free(c->pin_statement);
    free(c->user);
    client_cache_give_back(&c->worker->client_cache, c);
}

void client_fail(struct client *c, const char *sqlstate, const char *message)
{
    struct msgbuf *mb = &c->worker->scratch;

    if (c->state == CLIENT_CLOSED || c->state == CLIENT_CLOSING)
        return;
    if (c->worker->cfg->log_pooler_errors)
        log_info("C-%llu: %s/%s@%s:%d error %s: %s", (unsigned long long)c->id,
                 c->database ? c->database : "-", c->user ? c->user : "-", client_address(c).text,
                 c->port, sqlstate, message);
    client_detach(c);
    msgbuf_reset(mb);
    proto_build_error(mb, "FATAL", sqlstate, message, NULL, NULL);
    if (!conn_send(&c->conn, mb)) {
        client_close(c, message);
        return;
    }
    /* Stop reading; the drain callback closes once the error is on the wire. */
    conn_stop_reading(&c->conn);
    conn_want_drain(&c->conn);
    client_set_state(c, CLIENT_CLOSING);
    c->last_activity = worker_now(c->worker);
}

void client_failf(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    client_fail(c, sqlstate, message);
}

/* ---- libevent callbacks ---- */

static void client_read_cb(struct conn *conn, void *arg)
{
    struct client *c = arg;
    c->last_activity = worker_now(c->worker);
    client_process_input(c);
}

static void client_drain_cb(struct conn *conn, void *arg)
{
    struct client *c = arg;

    if (c->state == CLIENT_CLOSING) {
        client_close(c, "error sent");
        return;
    }
    if (c->server && c->server->reading_paused)
        server_unpause(c->server);
    else if (c->state == CLIENT_IDLE && !c->server)
        conn_release_buffers(&c->conn); /* asked at login: see client_release_buffers_when_sent */
}

/*
 * A client that has just logged in gives up its buffers as soon as its login answer is on the
 * wire, if it sent nothing more: a burst of function instances that log in and then wait costs
 * no buffers, and the chunks freed by one login are taken by the next one's instead of being
 * left between the clients that stay (the idle timer frees them only after a second, when a
 * burst has made them all). The conn layer makes them again at the client's first query.
 */
static void client_release_buffers_when_sent(struct client *c)
{
    if (!c->conn.ssl)
        conn_want_drain(&c->conn);
}

static void client_log_tls_error(struct client *c)
{
    unsigned long err = conn_tls_error(&c->conn);
    char text[256];
    if (!err)
        return;
    c->worker->stats.tls_handshake_failures++;
    ERR_error_string_n(err, text, sizeof(text));
    log_info("C-%llu: %s:%d TLS error: %s", (unsigned long long)c->id, client_address(c).text,
             c->port, text);
}

static void client_event_cb(struct conn *conn, enum conn_event event, void *arg)
{
    struct client *c = arg;
    switch (event) {
    case CONN_EVENT_CONNECTED: {
        /* TLS handshake finished. Direct TLS requires ALPN "postgresql", as PostgreSQL does. */
        const unsigned char *alpn = NULL;
        unsigned int alpn_len = 0;
        c->worker->stats.tls_handshakes++;
        if (c->direct_tls) {
            SSL_get0_alpn_selected(conn_ssl(conn), &alpn, &alpn_len);
            if (alpn_len == 0)
                client_close(c, "direct TLS without the ALPN protocol \"postgresql\"");
        }
        return;
    }
    case CONN_EVENT_EOF:
        client_close(c, "client closed the connection");
        return;
    case CONN_EVENT_ERROR:
        if (c->tls)
            client_log_tls_error(c);
        client_close(c, strerror(conn->error));
        return;
    }
}

void client_process_input(struct client *c)
{
    if (!c->conn.in)
        return; /* buffers given up while idle (worker janitor): nothing was read since */
    switch (c->state) {
    case CLIENT_STARTUP:
        client_handle_startup(c);
        break;
    case CLIENT_AUTH:
        client_auth_input(c);
        break;
    case CLIENT_IDLE:
    case CLIENT_WAITING:
    case CLIENT_ACTIVE:
        client_forward_input(c);
        break;
    case CLIENT_LOGIN_WAIT:
        break; /* a pipelined query waits in the buffer until the login completes */
    case CLIENT_CLOSING:
    case CLIENT_CLOSED:
        if (c->conn.open)
            evbuffer_drain(c->conn.in, evbuffer_get_length(c->conn.in));
        break;
    }
}

/* ---- a cancel for a statement that has not started ---- */

/*
 * The client's next statement was cancelled before any of it reached a backend: it never runs,
 * and is answered as PostgreSQL answers a cancelled statement. ERROR 57014 now; its messages are
 * dropped up to its end (its Query or FunctionCall, or the Sync of an extended batch, as
 * PostgreSQL skips to Sync after an error), which is answered with ReadyForQuery. That skip is
 * the one a lost transaction uses (client_skip_lost_message), with its error already sent. Only
 * that statement: pipelined ones after it go on, as PostgreSQL cancels only the one running.
 * False if the client was failed.
 */
static bool client_answer_cancelled(struct client *c)
{
    struct msgbuf *mb = &c->worker->scratch;

    c->cancel_pending = false;
    msgbuf_reset(mb);
    proto_build_error(mb, "ERROR", "57014", "canceling statement due to user request", NULL, NULL);
    if (!conn_send(&c->conn, mb)) {
        client_fail(c, "53200", "out of memory");
        return false;
    }
    log_debug("C-%llu: statement cancelled before it reached a backend: answered without running it",
              (unsigned long long)c->id);
    c->transaction_lost = true;
    c->lost_error_sent = true;
    return true;
}

/*
 * A cancel for a client waiting for a backend (nothing of its statement sent anywhere: a waiting
 * client has no transaction open, its last backend was given back at ReadyForQuery 'I'). It
 * stays in the queue, its place kept, only if another statement follows whole in its input.
 * Otherwise it leaves, as a waiter that query_wait_timeout or a close ends does (its ticket taken
 * back). A backend already granted to it and on its way from another worker does not reach it
 * then: pool_adopt_server gives it to the next client waiting here, or back to the pool. That is
 * simpler than keeping the grant for a client that has nothing to send.
 */
static void client_cancel_waiting(struct client *c)
{
    if (!client_answer_cancelled(c))
        return;
    client_process_input(c); /* drops the statement (the end of its input not yet in: later) */
    if (c->state != CLIENT_WAITING || (!c->transaction_lost && conn_input_length(&c->conn) > 0))
        return;
    client_leave_pool_list(c);
    client_set_state(c, CLIENT_IDLE);
    client_unpause(c); /* the rest of the statement must be read to find its end */
}

/* ---- startup ---- */

void client_cancel_query(struct worker *w, uint32_t pid, uint32_t key, uint64_t requester_id)
{
    struct client *target = cancel_registry_find(&w->cancels, pid, key);

    /* Only a client with a query on its backend is cancelled: an idle one's old backend now runs
     * someone else's. */
    if (target && target->state == CLIENT_ACTIVE && target->server && target->server->client == target &&
        target->server->state == SERVER_ACTIVE)
        server_send_cancel(target->server);
    else if (target && !target->is_admin && target->state == CLIENT_WAITING)
        client_cancel_waiting(target);
    else if (target && !target->is_admin && target->state == CLIENT_ACTIVE && target->server &&
             target->server->state == SERVER_INTERNAL)
        /* Not now: that cancel would hit sluice's SET and cost the client its connection. Its
         * statement is answered once the SET is done (client_forward_input), or cancelled on
         * its backend if it is inside a transaction. */
        target->cancel_pending = true;
    else
        log_debug("C-%llu: cancel request matched no running query", (unsigned long long)requester_id);
}

/* As PostgreSQL does, the requester learns nothing: the connection just closes. */
static void client_handle_cancel(struct client *c, const struct startup_packet *sp)
{
    struct cancel_destination to;
    switch (cancel_registry_route(&c->worker->cancels, sp->cancel_pid, &to)) {
    case CANCEL_ROUTE_LOCAL:
        client_cancel_query(c->worker, sp->cancel_pid, sp->cancel_key, c->id);
        client_close(c, "cancel request handled");
        return;
    case CANCEL_ROUTE_WORKER:
        peer_pass_cancel_to_worker(c->worker, to.worker, sp->cancel_pid, sp->cancel_key, c->id);
        client_close(c, "cancel request passed to its worker");
        return;
    case CANCEL_ROUTE_PEER:
        peer_forward_cancel(c->worker, to.peer_id, to.forward_pid, sp->cancel_key);
        client_close(c, "cancel request forwarded to its peer");
        return;
    case CANCEL_ROUTE_LOOP:
        peer_log_dropped_cancel(c->worker, to.peer_id, "it was already forwarded once ([peers] of the "
                                "instances disagree on who that peer is)");
        client_close(c, "cancel request dropped");
        return;
    }
}

static bool client_wants_replication(const struct startup_packet *sp)
{
    const char *value = proto_startup_get(sp, "replication");
    if (!value)
        return false;
    return !(strcmp(value, "false") == 0 || strcmp(value, "0") == 0 || strcmp(value, "off") == 0 ||
             strcmp(value, "no") == 0);
}

static int client_keep_identity(struct client *c, const char *user, const char *database)
{
    size_t user_len = strlen(user), db_len = strlen(database);
    c->user = malloc(user_len + db_len + 2);
    if (!c->user)
        return -1;
    memcpy(c->user, user, user_len + 1);
    memcpy(c->user + user_len + 1, database, db_len + 1);
    c->database = c->user + user_len + 1;
    return 0;
}

/* Session settings from the startup packet become this client's own, applied by SET. */
static int client_take_settings(struct client *c, const struct startup_packet *sp, char *err,
                                size_t err_len)
{
    const struct config *cfg = c->worker->cfg;
    for (size_t i = 0; i < sp->n_params; i++) {
        const char *name = sp->params[i].name, *value = sp->params[i].value;
        if (strcmp(name, "options") == 0) {
            if (params_parse_options(value, &c->params, err, err_len) != 0)
                return -1;
            continue;
        }
        if (!params_is_session_setting(name) ||
            config_list_contains(cfg->ignore_startup_parameters, name))
            continue;
        if (param_set_put(&c->params, name, value) != 0) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
    }
    /* The startup settings (what RESET returns to) own the strings; the current ones share
     * them until a SET changes one, instead of a second copy of each in every client. */
    param_set_free(&c->session.startup);
    c->session.startup = c->params;
    param_set_init(&c->params);
    if (param_set_share(&c->params, &c->session.startup) != 0) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}

/* false if the client was failed */
static bool client_negotiate_version(struct client *c, const struct startup_packet *sp)
{
    uint32_t minor = sp->protocol & 0xffff;
    if (minor == 0 && sp->n_protocol_options == 0)
        return true;
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    proto_build_negotiate_version(mb, 0, sp->protocol_options, sp->n_protocol_options);
    if (conn_send(&c->conn, mb))
        return true;
    client_fail(c, "53200", "out of memory");
    return false;
}

static void client_handle_startup_message(struct client *c, const struct startup_packet *sp)
{
    struct worker *w = c->worker;
    char err[256];

    if (!client_negotiate_version(c, sp))
        return;
    if (c->over_limit) {
        client_refuse_over_limit(c);
        return;
    }
    if (w->shutting_down) {
        client_fail(c, "57P03", "the connection pooler is shutting down");
        return;
    }
    if (client_wants_replication(sp)) {
        client_fail(c, "08P01", "replication connections are not supported by the connection pooler");
        return;
    }
    const char *user = proto_startup_get(sp, "user");
    const char *database = proto_startup_get(sp, "database");
    if (!database || !*database)
        database = user;
    if (client_keep_identity(c, user, database) != 0) {
        client_fail(c, "53200", "out of memory");
        return;
    }
    if (client_take_settings(c, sp, err, sizeof(err)) != 0) {
        client_failf(c, "08P01", "invalid startup options: %s", err);
        return;
    }
    if (w->tls.client_mode >= TLS_MODE_REQUIRE && !c->tls && !c->is_unix) {
        client_failf(c, "28000", "SSL connection is required for user \"%s\": connect with sslmode=require or stronger",
                     c->user);
        return;
    }
    const struct config_database *db = autodb_find(w, c->database);
    c->is_admin = !db && admin_is_console_db(w->cfg, c->database);
    /* A name not listed is made from "*" once the client has logged in. */
    bool fallback = config_fallback_database(w->cfg) && c->database && strcmp(c->database, "*") != 0;
    if (!db && !c->is_admin && !fallback) {
        client_failf(c, "3D000", "database \"%s\" does not exist", c->database);
        return;
    }
    client_auth_begin(c);
}

/*
 * Answers 'S' and continues over TLS on the same socket. The 'S' goes out directly:
 * the client sends nothing until it has it, and nothing may sit unread before the handshake
 * (bytes buffered after SSLRequest would bypass TLS, as in CVE-2021-23214).
 */
static void client_start_tls(struct client *c)
{
    struct worker *w = c->worker;

    if (evbuffer_get_length(c->conn.in) > 0) {
        client_fail(c, "08P01", "received unencrypted data after SSL request");
        return;
    }
    conn_flush(&c->conn);
    SSL *ssl = tls_new_client_ssl(&w->tls);
    if (!ssl || evbuffer_get_length(c->conn.out) > 0 || send(c->conn.fd, "S", 1, MSG_NOSIGNAL) != 1) {
        if (ssl)
            SSL_free(ssl);
        client_close(c, "could not start TLS");
        return;
    }
    if (conn_start_tls(&c->conn, ssl, true) != 0) {
        client_close(c, "could not start TLS");
        return;
    }
    c->tls = true;
}

/* PostgreSQL 17's sslnegotiation=direct: the ClientHello comes first, without SSLRequest. */
static void client_start_direct_tls(struct client *c)
{
    SSL *ssl = tls_new_client_ssl(&c->worker->tls);
    if (!ssl || conn_start_tls(&c->conn, ssl, true) != 0) {
        client_close(c, "could not start TLS");
        return;
    }
    c->tls = true;
    c->direct_tls = true;
}

static void client_handle_startup(struct client *c)
{
    struct evbuffer *in = c->conn.in;
    uint8_t packet[PROTO_MAX_STARTUP_LEN];
    struct startup_packet sp;
    char err[256];

    while (c->state == CLIENT_STARTUP) {
        size_t available = evbuffer_get_length(in);
        uint32_t packet_len;
        if (available == 0)
            return;
        if (evbuffer_copyout(in, packet, 1) == 1 && packet[0] == PROTO_TLS_HANDSHAKE_BYTE) {
            /* A direct TLS ClientHello cannot be answered with a protocol error. */
            if (c->tls || !c->worker->tls.client_ctx)
                client_close(c, "direct TLS negotiation, and TLS is off (client_tls_sslmode)");
            else
                client_start_direct_tls(c);
            return;
        }
        if (available < 4)
            return;
        evbuffer_copyout(in, packet, 4);
        if (proto_peek_startup_length(packet, 4, &packet_len) != PROTO_OK) {
            client_fail(c, "08P01", "invalid startup packet length");
            return;
        }
        if (available < packet_len)
            return;
        evbuffer_remove(in, packet, packet_len);
        if (proto_parse_startup(packet, packet_len, &sp, err, sizeof(err)) != PROTO_OK) {
            client_fail(c, "08P01", err);
            return;
        }
        switch (sp.kind) {
        case STARTUP_SSL:
            if (c->worker->tls.client_ctx && !c->tls) {
                client_start_tls(c);
                return;
            }
            if (!conn_write(&c->conn, "N", 1)) {
                client_fail(c, "53200", "out of memory");
                return;
            }
            continue;
        case STARTUP_GSSENC:
            /* Encryption is not offered here: 'N', then the client may go on in plain text. */
            if (!conn_write(&c->conn, "N", 1)) {
                client_fail(c, "53200", "out of memory");
                return;
            }
            continue;
        case STARTUP_CANCEL:
            client_handle_cancel(c, &sp);
            return;
        case STARTUP_NORMAL:
            client_handle_startup_message(c, &sp);
            return;
        }
    }
}

/* The key a CancelRequest for this client must quote; false (client failed) when out of memory. */
static bool client_register_cancel(struct client *c)
{
    if (cancel_registry_add(&c->worker->cancels, c, &c->cancel_pid, &c->cancel_key) != 0) {
        client_fail(c, "53200", "out of memory");
        return false;
    }
    c->registered_for_cancel = true;
    return true;
}

/*
 * Ends a login, the console's or a pool's: mb holds the ParameterStatus messages, the cancel key
 * and ReadyForQuery follow them, and the client is idle from then on. what names it in the log.
 */
static void client_send_login_done(struct client *c, struct msgbuf *mb, const char *what)
{
    proto_build_backend_key_data(mb, c->cancel_pid, c->cancel_key);
    proto_build_ready_for_query(mb, 'I');
    if (!conn_send(&c->conn, mb)) {
        client_fail(c, "53200", "out of memory");
        return;
    }
    client_end_login(c);
    client_set_state(c, CLIENT_IDLE);
    client_release_buffers_when_sent(c);
    if (c->worker->cfg->log_connections)
        log_info("C-%llu: %s/%s@%s:%d %s ok", (unsigned long long)c->id, c->database, c->user,
                 client_address(c).text, c->port, what);
    client_process_input(c);
}

/* The console has no pool: its login completes at once, with its own parameters. */
static void client_admin_login(struct client *c)
{
    struct worker *w = c->worker;
    struct msgbuf *mb = &w->scratch;

    c->admin_access = admin_access_for(w->cfg, c->user);
    if (c->admin_access == ADMIN_ACCESS_NONE) {
        client_failf(c, "28000", "user \"%s\" is not allowed to use the admin console (admin_users, stats_users)",
                     c->user);
        return;
    }
    if (!client_register_cancel(c))
        return;
    msgbuf_reset(mb);
    admin_build_login_params(c, mb);
    client_send_login_done(c, mb, "admin console login");
}

void client_authenticated(struct client *c)
{
    struct worker *w = c->worker;
    const struct config_database *db;

    c->login->auth_step = AUTH_STEP_NONE;
    if (!client_auth_send_request(c, AUTH_REQ_OK, NULL, 0))
        return;
    if (c->is_admin) {
        client_admin_login(c);
        return;
    }
    db = autodb_find_or_create(w, c->database);
    if (!db) {
        client_failf(c, "3D000", "database \"%s\" does not exist", c->database);
        return;
    }
    if (admin_database_disabled(w, db->name)) {
        client_failf(c, "55000", "database \"%s\" is disabled (DISABLE on the admin console; ENABLE allows logins again)",
                     db->name);
        return;
    }
    struct pool *pool = worker_get_pool(w, db, c->user);
    if (!pool) {
        client_fail(c, "53200", "out of memory");
        return;
    }
    if (!pool_admit_client(pool, c))
        return;
    if (!client_register_cancel(c))
        return;
    c->pool = pool;
    /* Fixed for the session: state kept under one mode cannot be carried over to another. */
    c->pool_mode = (uint8_t)pool->mode;
    c->tracks_prepared = w->cfg->max_prepared_statements > 0;
    client_auth_count(c, true);
    if (pool->has_defaults) {
        client_finish_login(c);
        return;
    }
    client_set_state(c, CLIENT_LOGIN_WAIT);
    c->wait_start = worker_now(w); /* query_wait_timeout bounds this wait too, as in PgBouncer */
    TAILQ_INSERT_TAIL(&pool->login_clients, c, pool_link);
    c->in_pool_list = true;
    pool_request_defaults(pool);
}

void client_finish_login(struct client *c)
{
    struct msgbuf *mb = &c->worker->scratch;
    struct pool *pool = c->pool;

    if (c->state == CLIENT_LOGIN_WAIT && c->in_pool_list) {
        TAILQ_REMOVE(&pool->login_clients, c, pool_link);
        c->in_pool_list = false;
    }
    msgbuf_reset(mb);
    for (size_t i = 0; i < pool->defaults.n; i++) {
        const char *name = pool->defaults.entries[i].name;
        const char *value = param_set_get(&c->params, name);
        proto_build_parameter_status(mb, name, value ? value : pool->defaults.entries[i].value);
    }
    client_send_login_done(c, mb, "login");
}

/* ---- passing messages to the backend ---- */

/*
 * A message is checked against the protocol (proto_check_client_header, and the body where it is
 * small enough to hold whole) before any of it reaches a backend: what PostgreSQL would answer
 * with FATAL, or with an error that desynchronizes the stream, closes this client instead.
 * PROTO_INCOMPLETE: the body is not all in yet.
 */
static enum proto_result client_check_message(struct client *c, uint8_t type, uint32_t msg_len)
{
    char err[256];

    if (proto_check_client_header(type, msg_len, err, sizeof(err)) != PROTO_OK) {
        client_fail(c, "08P01", err);
        return PROTO_ERROR;
    }
    if (msg_len > CONN_MAX_INSPECTED_MESSAGE || !proto_client_body_has_structure(type))
        return PROTO_OK;
    const uint8_t *msg = conn_pullup_message(c->conn.in, msg_len);
    if (!msg)
        return PROTO_INCOMPLETE;
    if (proto_check_client_body(type, msg + PROTO_HEADER_LEN, msg_len - 4, err, sizeof(err)) != PROTO_OK) {
        client_fail(c, "08P01", err);
        return PROTO_ERROR;
    }
    return PROTO_OK;
}

/* Tracks which replies the backend owes, so the backend is given back at the right moment. */
static void client_note_message(struct client *c, uint8_t type)
{
    if (c->pending_ready == 0 && !c->unsynced)
        c->query_start = worker_now(c->worker);
    switch (type) {
    case 'Q': /* simple query: ends with ReadyForQuery */
    case 'F': /* function call: ends with ReadyForQuery */
    case 'S': /* Sync */
        /* A query inside an unsynced batch ends it only if nothing before it fails: else the
         * backend skips it with the rest, up to the Sync. */
        c->batch_sealed = type == 'S' || !c->unsynced;
        c->pending_ready++;
        c->unsynced = false;
        if (type != 'S' && c->pool)
            c->pool->stats.query_count++;
        break;
    case 'P': /* Parse, Bind, Describe, Execute, Close, Flush: no reply until Sync */
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'H':
        c->unsynced = true;
        if (type == 'E' && c->pool)
            c->pool->stats.query_count++;
        break;
    default: /* CopyData/CopyDone/CopyFail and anything else: part of what is under way */
        break;
    }
}

static void client_pause(struct client *c)
{
    conn_stop_reading(&c->conn);
    c->reading_paused = true;
}

void client_unpause(struct client *c)
{
    if (!c->reading_paused || c->state == CLIENT_CLOSED)
        return;
    c->reading_paused = false;
    conn_start_reading(&c->conn);
    client_process_input(c);
}

/*
 * Runs one console command and sends its reply. The reply gets a buffer of its own: commands close
 * clients and backends, whose last messages (an error, a Terminate) are built in the worker's
 * scratch buffer. False once the client is closing.
 */
static bool client_admin_command(struct client *c, const char *sql, uint32_t msg_len)
{
    struct msgbuf reply;

    msgbuf_init(&reply);
    bool answered = admin_execute(c->worker, c, sql, &reply);
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    bool open = c->state != CLIENT_CLOSED && c->state != CLIENT_CLOSING;
    if (open && !conn_send(&c->conn, &reply)) {
        client_fail(c, "53200", "out of memory");
        open = false;
    }
    msgbuf_free(&reply);
    if (open && !answered)
        client_set_state(c, CLIENT_WAITING); /* admin_janitor answers and sets it IDLE */
    return open;
}

/* The console speaks the simple query protocol only; its replies are built here, not forwarded. */
static void client_admin_input(struct client *c)
{
    struct evbuffer *in = c->conn.in;

    while (c->state == CLIENT_IDLE) {
        uint8_t type;
        uint32_t msg_len;
        const char *sql;
        enum proto_result r = conn_peek_header(in, CONN_MAX_INSPECTED_MESSAGE, &type, &msg_len);
        if (r == PROTO_INCOMPLETE)
            return;
        if (r == PROTO_ERROR) {
            client_fail(c, "08P01", "invalid message length");
            return;
        }
        if (type == 'X') {
            client_close(c, "client sent Terminate");
            return;
        }
        if (type != 'Q') {
            client_fail(c, "08P01", "the admin console accepts only simple queries");
            return;
        }
        const uint8_t *msg = conn_pullup_message(in, msg_len);
        if (!msg)
            return;
        if (proto_parse_query(msg + PROTO_HEADER_LEN, msg_len - 4, &sql) != PROTO_OK) {
            client_fail(c, "08P01", "malformed Query message");
            return;
        }
        if (!client_admin_command(c, sql, msg_len))
            return;
    }
}

void client_admin_resume(struct client *c, const struct msgbuf *reply)
{
    if (c->state != CLIENT_WAITING || !c->is_admin)
        return;
    if (!conn_send(&c->conn, reply)) {
        client_fail(c, "53200", "out of memory");
        return;
    }
    client_set_state(c, CLIENT_IDLE);
    client_admin_input(c);
}

/* Back to idle without its backend; what it sent meanwhile goes on (client_transaction_done). */
static void client_unlink(struct client *c);

/* A cancel that came while sluice gave the backend the client's settings inside a transaction
 * goes out once the statement is on its backend: a cancel reaching an idle backend does nothing,
 * so not before. */
static void client_send_pending_cancel(struct client *c)
{
    if (!c->cancel_pending || c->state != CLIENT_ACTIVE || c->forward_remaining > 0 ||
        c->server->state != SERVER_ACTIVE)
        return;
    c->cancel_pending = false;
    server_send_cancel(c->server);
}

/* The error a client's lost transaction reports, with the server's message: one allocation. */
struct client_lost_error {
    char sqlstate[6];
    char message[];
};

#define CLIENT_LOST_DETAIL "The connection to the database server was lost during this transaction " \
    "(if it was committing, it may or may not have committed). This connection stays open: the " \
    "next transaction runs on a new server connection."

/* For a lost transaction: its ErrorResponse, then (ready) ReadyForQuery 'I': no transaction. */
static bool client_send_lost_reply(struct client *c, bool error, bool ready)
{
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    if (error)
        proto_build_error(mb, "ERROR", c->lost_error->sqlstate, c->lost_error->message,
                          CLIENT_LOST_DETAIL, NULL);
    if (ready)
        proto_build_ready_for_query(mb, 'I');
    if (!conn_send(&c->conn, mb)) {
        client_fail(c, "53200", "out of memory");
        return false;
    }
    return true;
}

void client_backend_lost(struct client *c, bool in_transaction, const char *sqlstate, const char *message)
{
    bool owes_ready = c->pending_ready > 0, unsynced = c->unsynced;
    if (!owes_ready && !unsynced && !in_transaction) {
        /* Linked, but nothing of its own had started: wait again. Its query has not run yet,
         * so a cancel that waits for it still applies, on the next backend. */
        client_unlink(c);
        return;
    }
    size_t message_len = strlen(message);
    struct client_lost_error *lost = malloc(sizeof(*lost) + message_len + 1);
    if (!lost) {
        client_fail(c, "53200", "out of memory");
        return;
    }
    snprintf(lost->sqlstate, sizeof(lost->sqlstate), "%s", sqlstate);
    memcpy(lost->message, message, message_len + 1);
    free(c->lost_error);
    c->lost_error = lost;
    log_info("C-%llu: %s/%s@%s:%d lost its transaction with its database server connection (%s); "
             "the client stays connected", (unsigned long long)c->id, c->database, c->user,
             client_address(c).text, c->port, message);
    /* A query awaiting its reply gets it now; messages sent since its Sync get the error now and
     * ReadyForQuery at their Sync, as PostgreSQL answers a failed extended query. */
    if (owes_ready && !client_send_lost_reply(c, true, true))
        return;
    if (unsynced && !client_send_lost_reply(c, true, false))
        return;
    c->transaction_lost = unsynced || !owes_ready;
    c->lost_error_sent = unsynced;
    client_transaction_done(c);
}

/* A message of a lost transaction: dropped; a Sync or query ends the transaction's error. */
static bool client_skip_lost_message(struct client *c, uint8_t type, uint32_t msg_len)
{
    c->discard_remaining = conn_skip_input(c->conn.in, msg_len + 1);
    bool ends = type == 'S' || type == 'Q' || type == 'F';
    bool error = !c->lost_error_sent;
    c->lost_error_sent = true;
    if (ends)
        c->transaction_lost = false;
    return client_send_lost_reply(c, error, ends);
}

/*
 * A statement answered here, with no ReadyForQuery to come from the backend for it: the backend
 * may be free now. False if it was given back (client_transaction_done went on with the input).
 */
static bool client_keeps_backend(struct client *c)
{
    struct server *s = c->server;
    server_transaction_maybe_over(s);
    return c->server == s;
}

/*
 * Must a message wait before it starts the client's next batch (see session_awaits_names)?
 * Only where the batch before has certainly ended, so its answer comes whatever the client
 * sends next: not behind a query that was inside an unsynced batch, which the backend skips
 * up to a Sync not sent yet if something before it failed (what follows it then stays unheld:
 * it sees the names as taken). Not COPY data either, which belongs to a query under way.
 */
static bool client_holds_batch(struct client *c, uint8_t type)
{
    if (c->unsynced || c->pending_ready == 0 || !c->batch_sealed || type == 'd' || type == 'c' ||
        type == 'f' || !session_tracks(c))
        return false;
    c->held_for_names = session_awaits_names(c->server);
    return c->held_for_names;
}

void client_names_settled(struct client *c)
{
    if (!c->held_for_names || session_awaits_names(c->server))
        return;
    c->held_for_names = false;
    client_resume(c);
}

static void client_forward_input(struct client *c)
{
    if (c->is_admin) {
        client_admin_input(c);
        return;
    }

    struct evbuffer *in = c->conn.in;
    uint32_t max_len = (uint32_t)c->worker->cfg->max_packet_size;

    for (;;) {
        if (c->discard_remaining > 0) {
            c->discard_remaining = conn_skip_input(in, c->discard_remaining);
            if (c->discard_remaining > 0)
                return;
            continue;
        }
        if (c->forward_remaining > 0) {
            if (c->state != CLIENT_ACTIVE || c->server->state != SERVER_ACTIVE)
                return;
            size_t moved = conn_forward(&c->conn, &c->server->conn, &c->forward_remaining);
            c->pool->stats.bytes_received += moved;
            if (c->forward_remaining > 0)
                return;
            if (conn_output_is_full(&c->server->conn)) {
                client_pause(c);
                conn_want_drain(&c->server->conn);
                return;
            }
            continue;
        }
        uint8_t type;
        uint32_t msg_len;
        enum proto_result r = conn_peek_header(in, max_len, &type, &msg_len);
        if (r == PROTO_INCOMPLETE) {
            client_send_pending_cancel(c);
            return;
        }
        if (r == PROTO_ERROR) {
            client_fail(c, "08P01", "invalid message length (larger than max_packet_size?)");
            return;
        }
        if (type == 'X') {
            evbuffer_drain(in, evbuffer_get_length(in));
            client_close(c, "client sent Terminate");
            return;
        }
        r = client_check_message(c, type, msg_len);
        if (r != PROTO_OK)
            return; /* failed, or waiting for the rest of the message */
        if (c->transaction_lost) {
            if (!client_skip_lost_message(c, type, msg_len))
                return;
            if (!c->transaction_lost && c->state == CLIENT_ACTIVE && !client_keeps_backend(c))
                return;
            continue;
        }
        if (c->cancel_pending && c->state == CLIENT_IDLE) {
            /* Its backend was lost before the statement started: the cancel still applies. */
            if (!client_answer_cancelled(c))
                return;
            continue;
        }
        if (c->state == CLIENT_IDLE) {
            client_set_state(c, CLIENT_WAITING);
            c->wait_start = worker_now(c->worker);
            pool_request_server(c->pool, c);
        }
        if (c->state != CLIENT_ACTIVE || c->server->state != SERVER_ACTIVE) {
            /* Resumed by client_server_linked / client_resume; meanwhile, bounded buffering. */
            if (evbuffer_get_length(in) > CLIENT_READ_HIGH_WATER)
                client_pause(c);
            return;
        }
        bool in_flight = c->pending_ready > 0 || c->unsynced;
        if (client_holds_batch(c, type)) {
            /* Resumed by client_names_settled; meanwhile, bounded buffering. */
            if (evbuffer_get_length(in) > CLIENT_READ_HIGH_WATER)
                client_pause(c);
            return;
        }
        if (c->cancel_pending && !in_flight && c->server->ready_status == 'I') {
            /* Cancelled while sluice gave the backend its settings: the statement has not
             * started. (Inside a transaction it is sent and cancelled, so that the transaction
             * fails as PostgreSQL's would.) */
            if (!client_answer_cancelled(c))
                return;
            continue;
        }
        if (c->session.params_resync && !in_flight && server_resync_params(c->server))
            return; /* client_resume goes on once the backend has the client's settings again */
        if (session_tracks(c)) {
            enum session_step step = session_client_message(c, type, msg_len, in_flight);
            if (step == SESSION_WAIT || step == SESSION_CLOSED)
                return;
            if (step == SESSION_ANSWERED) {
                if (!client_keeps_backend(c))
                    return;
                continue;
            }
            /* A query the backend ignores (skipping to Sync) gets no ReadyForQuery of its own:
             * it only keeps the batch open, as a Flush would. */
            bool ignored = (type == 'Q' || type == 'F') && session_backend_skips_to_sync(c->server);
            client_note_message(c, ignored ? 'H' : type);
            if (step == SESSION_HANDLED)
                continue; /* replaced, or only the rest of it (forward_remaining) is left */
        } else {
            enum session_step step = session_guard_message(c, type, msg_len);
            if (step == SESSION_WAIT || step == SESSION_CLOSED)
                return;
            client_note_message(c, type);
        }
        c->forward_remaining = msg_len + 1;
    }
}

void client_server_linked(struct client *c, struct server *s)
{
    c->server = s;
    c->in_pool_list = false;
    client_set_state(c, CLIENT_ACTIVE);
    if (c->reading_paused) {
        c->reading_paused = false;
        conn_start_reading(&c->conn);
    }
}

void client_resume(struct client *c)
{
    if (c->state != CLIENT_ACTIVE)
        return;
    /* Input past CLIENT_READ_HIGH_WATER stopped reading while the backend took its settings:
     * read again, as client_server_linked does for a client that waited. Nothing else would. */
    if (c->reading_paused)
        client_unpause(c); /* and processes what is buffered */
    else
        client_process_input(c);
}

void client_transaction_done(struct client *c)
{
    c->cancel_pending = false; /* the query it was for has ended */
    client_unlink(c);
}

static void client_unlink(struct client *c)
{
    c->held_for_names = false;
    c->server = NULL;
    c->pending_ready = 0;
    c->unsynced = false;
    client_set_state(c, CLIENT_IDLE);
    if (c->worker->shutting_down) {
        client_fail(c, "57P01", "terminating connection because the connection pooler is shutting down");
        return;
    }
    if (conn_input_length(&c->conn) > 0)
        client_process_input(c);
}
