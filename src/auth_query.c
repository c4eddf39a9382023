/*
 * auth_query.c: looks up users missing from auth_file in PostgreSQL and caches the answers.
 * One libpq connection per look-up source (server, database, auth_user, query), opened and driven
 * without blocking (PQconnectStartParams, PQsendQueryParams, worker 0's event loop), runs the
 * queued look-ups one after another. libpq is used here only, never in the data path.
 * Worker 0 is the service for every worker: a login elsewhere holds a ticket on its own worker,
 * asks worker 0 by mail, and the answer (a copy of the secret, or a failure) comes back by mail
 * to that ticket. On worker 0 itself the same steps are plain calls, as with one worker.
 */
#include "auth_query.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <libpq-fe.h>

#include "client.h"
#include "client_auth.h"
#include "config.h"
#include "log.h"
#include "secret.h"
#include "worker.h"

/* Answers older than this many TTLs are dropped by the janitor (a spray of names stays bounded). */
#define AUTH_CACHE_KEEP_TTLS 2
#define AUTH_CACHE_MIN_KEEP_SECONDS 60.0

enum auth_conn_state {
    AUTH_CONN_CLOSED,
    AUTH_CONN_RESOLVING,   /* a host name, looked up by the worker's resolver, not libpq's */
    AUTH_CONN_CONNECTING,  /* PQconnectPoll until PGRES_POLLING_OK */
    AUTH_CONN_IDLE,
    AUTH_CONN_QUERYING,    /* one look-up sent, its results not all read */
};

TAILQ_HEAD(auth_user_list, auth_cached_user);
TAILQ_HEAD(auth_ticket_list, auth_ticket);

/* Where look-ups go: one connection as auth_user, and the users waiting for it in order. */
struct auth_source {
    struct auth_source *next;
    struct auth_query *owner;
    char *host;
    int port;
    char *dbname;
    char *user;
    char *query;
    PGconn *pg;
    struct event *ev;
    enum auth_conn_state state;
    struct auth_user_list queue;    /* waiting to be looked up, oldest first */
    struct auth_cached_user *current; /* being looked up now */
    double busy_since;              /* start of the connect or the query under way */
    double idle_since;
    bool got_result;                /* the current look-up's rows came */
    char *result_secret;            /* their answer: the secret, NULL for none */
    char *result_error;             /* or why the query failed */
    bool reused;                    /* served a look-up before: it may have been closed since */
    struct evdns_getaddrinfo_request *dns_request;
    char hostaddr[INET6_ADDRSTRLEN]; /* the resolved address of host, or "" for libpq to use host */
};

/* A login waiting for a look-up: its worker and its ticket there, never a pointer to the client. */
struct auth_waiter {
    struct worker *worker;
    uint64_t ticket;
};

struct auth_cached_user {
    TAILQ_ENTRY(auth_cached_user) link;       /* owner->users */
    TAILQ_ENTRY(auth_cached_user) queue_link; /* source->queue while queued */
    struct auth_source *source;
    struct userlist_entry entry;    /* valid when found */
    bool found;                     /* the last answer had a usable secret */
    bool answered;                  /* an answer came at least once */
    double fetched_at;
    bool pending;                   /* queued or being looked up */
    struct auth_waiter *waiters;
    size_t n_waiters, cap_waiters;
    char *name;
    uint64_t lookups, hits;
};

/*
 * One login's look-up, on the client's worker: waiting (in q->waiting) until its answer comes,
 * then holding the client's own copy of the secret until the client closes.
 */
struct auth_ticket {
    TAILQ_ENTRY(auth_ticket) link;  /* q->waiting while waiting */
    uint64_t id;
    struct client *client;
    bool waiting;
    bool found;
    struct userlist_entry entry;    /* valid when found */
};

struct auth_query {
    struct worker *worker;
    /* The service: only worker 0's has sources and users. */
    struct auth_source *sources;
    struct auth_user_list users;
    struct auth_query_stats stats;
    /* Its own clients' look-ups. */
    struct auth_ticket_list waiting;
    uint64_t next_ticket;
};

/* Mail from a login's worker to worker 0: look user up for a login to database. */
struct auth_request {
    struct mail mail;               /* first: deliver casts it back */
    struct auth_waiter waiter;
    char *user;
    char *database;
};

/* Mail from worker 0 back to the login's worker: the answer for one ticket. */
struct auth_answer {
    struct mail mail;               /* first: deliver casts it back */
    uint64_t ticket;
    bool failed;                    /* the look-up failed: the login is refused */
    bool found;
    struct userlist_entry entry;    /* a copy of the secret, when found */
};

static void auth_source_drive(struct auth_source *src);

struct auth_query *auth_query_new(struct worker *w)
{
    struct auth_query *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->worker = w;
    TAILQ_INIT(&q->users);
    TAILQ_INIT(&q->waiting);
    return q;
}

static void auth_source_close(struct auth_source *src)
{
    if (src->dns_request) {
        struct evdns_getaddrinfo_request *request = src->dns_request;
        src->dns_request = NULL;
        evdns_getaddrinfo_cancel(request);
    }
    if (src->ev) {
        event_free(src->ev);
        src->ev = NULL;
    }
    if (src->pg) {
        PQfinish(src->pg);
        src->pg = NULL;
    }
    src->state = AUTH_CONN_CLOSED;
}

static void auth_user_free(struct auth_cached_user *u)
{
    userlist_entry_clear(&u->entry);
    free(u->waiters);
    free(u->name);
    free(u);
}

void auth_query_free(struct auth_query *q)
{
    if (!q)
        return;
    while (!TAILQ_EMPTY(&q->users)) {
        struct auth_cached_user *u = TAILQ_FIRST(&q->users);
        TAILQ_REMOVE(&q->users, u, link);
        auth_user_free(u);
    }
    while (q->sources) {
        struct auth_source *src = q->sources;
        q->sources = src->next;
        auth_source_close(src);
        free(src->host);
        free(src->dbname);
        free(src->user);
        free(src->query);
        free(src);
    }
    free(q);
}

/* ---- finding sources and cached users ---- */

struct auth_target {
    const char *host;
    int port;
    const char *dbname;
    const char *user;
    const char *query;
};

/* auth_query's target for a login to database, or false when it has no auth_user. */
static bool auth_target_for(const struct config *cfg, const char *database, struct auth_target *t)
{
    const struct config_database *db = config_find_database(cfg, database);
    if (!db)
        return false;
    t->user = config_effective_auth_user(cfg, db);
    t->query = config_effective_auth_query(cfg, db);
    t->dbname = config_effective_auth_dbname(cfg, db);
    t->host = db->host ? db->host : "127.0.0.1";
    t->port = db->port;
    return t->user && *t->user && t->query && *t->query && t->dbname;
}

static struct auth_source *auth_source_find(struct auth_query *q, const struct auth_target *t,
                                            bool create)
{
    struct auth_source *src;
    for (src = q->sources; src; src = src->next)
        if (src->port == t->port && strcmp(src->host, t->host) == 0 &&
            strcmp(src->dbname, t->dbname) == 0 && strcmp(src->user, t->user) == 0 &&
            strcmp(src->query, t->query) == 0)
            return src;
    if (!create || !(src = calloc(1, sizeof(*src))))
        return NULL;
    src->owner = q;
    src->host = strdup(t->host);
    src->port = t->port;
    src->dbname = strdup(t->dbname);
    src->user = strdup(t->user);
    src->query = strdup(t->query);
    TAILQ_INIT(&src->queue);
    if (!src->host || !src->dbname || !src->user || !src->query) {
        free(src->host);
        free(src->dbname);
        free(src->user);
        free(src->query);
        free(src);
        return NULL;
    }
    src->next = q->sources;
    q->sources = src;
    return src;
}

static struct auth_cached_user *auth_user_find(struct auth_query *q, struct auth_source *src,
                                               const char *name)
{
    struct auth_cached_user *u;
    TAILQ_FOREACH(u, &q->users, link)
        if (u->source == src && strcmp(u->name, name) == 0)
            return u;
    return NULL;
}

static bool auth_user_add_waiter(struct auth_cached_user *u, const struct auth_waiter *waiter)
{
    if (u->n_waiters == u->cap_waiters) {
        size_t cap = u->cap_waiters ? 2 * u->cap_waiters : 4;
        struct auth_waiter *grown = realloc(u->waiters, cap * sizeof(*grown));
        if (!grown)
            return false;
        u->waiters = grown;
        u->cap_waiters = cap;
    }
    u->waiters[u->n_waiters++] = *waiter;
    return true;
}

/* ---- answering the clients ---- */

/* The worker whose auth_query is the service: worker 0 (a worker outside a world is its own). */
static struct worker *auth_service_worker(struct worker *w)
{
    return w->world && w->world->n_workers > 0 ? w->world->workers[0] : w;
}

/* The ticket's answer is in: it keeps its own copy of the secret (entry NULL: none). */
static void auth_ticket_settle(struct auth_query *q, struct auth_ticket *t, bool *failed,
                               const struct userlist_entry *entry)
{
    if (t->waiting)
        TAILQ_REMOVE(&q->waiting, t, link);
    t->waiting = false;
    if (*failed || !entry)
        return;
    t->found = userlist_entry_copy(&t->entry, entry);
    if (!t->found) {
        log_error("auth_query: out of memory keeping the secret of user \"%s\"", entry->name);
        *failed = true;
    }
}

/* On the login's worker: its ticket was answered; the client, if still there, goes on. */
static void auth_ticket_answer(struct auth_query *q, uint64_t id, bool failed,
                               const struct userlist_entry *entry)
{
    struct auth_ticket *t;

    TAILQ_FOREACH(t, &q->waiting, link)
        if (t->id == id)
            break;
    if (!t)
        return; /* its client closed meanwhile */
    auth_ticket_settle(q, t, &failed, entry);
    client_auth_lookup_done(t->client, failed);
}

static void auth_answer_deliver(struct worker *receiver, struct mail *mail)
{
    struct auth_answer *answer = (struct auth_answer *)mail;

    /* Delivered by worker_destroy once the loop ended: its clients are about to be closed. */
    if (receiver->auth_query && !event_base_got_exit(receiver->base))
        auth_ticket_answer(receiver->auth_query, answer->ticket, answer->failed,
                           answer->found ? &answer->entry : NULL);
    userlist_entry_clear(&answer->entry);
    free(answer);
}

/*
 * On the service: tells one waiting login the outcome (entry NULL: no such user). A login on
 * this worker is answered by a call, one on another worker by mail with a copy of the secret.
 */
static void auth_answer_waiter(struct worker *self, const struct auth_waiter *waiter, bool failed,
                               const struct userlist_entry *entry)
{
    struct auth_answer *answer;

    if (waiter->worker == self) {
        if (self->auth_query)
            auth_ticket_answer(self->auth_query, waiter->ticket, failed, entry);
        return;
    }
    answer = mail_new(sizeof(*answer), auth_answer_deliver);
    if (!answer) {
        /* Its login times out (client_login_timeout) rather than hang: nothing else to do. */
        log_error("auth_query: out of memory answering a login on worker %u", waiter->worker->index);
        return;
    }
    answer->ticket = waiter->ticket;
    answer->failed = failed;
    if (!failed && entry) {
        answer->found = userlist_entry_copy(&answer->entry, entry);
        answer->failed = !answer->found;
        if (answer->failed)
            log_error("auth_query: out of memory answering for user \"%s\"", entry->name);
    }
    worker_post(waiter->worker, &answer->mail);
}

/* The look-up of u ended: every login waiting for it goes on (or fails, if it failed). */
static void auth_user_wake(struct auth_query *q, struct auth_cached_user *u, bool failed)
{
    struct auth_waiter *waiters = u->waiters;
    size_t n = u->n_waiters;

    u->waiters = NULL;
    u->n_waiters = u->cap_waiters = 0;
    u->pending = false;
    for (size_t i = 0; i < n; i++)
        auth_answer_waiter(q->worker, &waiters[i], failed, !failed && u->found ? &u->entry : NULL);
    free(waiters);
}

static void auth_user_answered(struct auth_query *q, struct auth_cached_user *u, const char *secret)
{
    struct worker *w = q->worker;

    u->answered = true;
    u->fetched_at = worker_now(w);
    u->found = secret && *secret && userlist_entry_set(&u->entry, u->name, secret);
    if (!u->found)
        userlist_entry_clear(&u->entry);
    if (u->found)
        q->stats.lookups_found++;
    else
        q->stats.lookups_not_found++;
    if (secret && *secret && !u->found)
        log_warning("auth_query: the secret returned for user \"%s\" is malformed; the user is refused",
                    u->name);
    /* Each login gets a copy: SCRAM keys for a plain password are derived here, once per answer. */
    if (u->found && u->entry.kind == SECRET_PLAIN)
        userlist_scram_verifier(&u->entry);
    log_debug("auth_query: user \"%s\" %s", u->name, u->found ? "found" : "not found");
    auth_user_wake(q, u, false);
}

static void auth_user_failed(struct auth_query *q, struct auth_cached_user *u)
{
    q->stats.lookups_failed++;
    auth_user_wake(q, u, true);
}

/* The connection is unusable: whatever waits for it fails; a later login opens a new one. */
static void auth_source_clear_result(struct auth_source *src);
static void auth_source_connect(struct auth_source *src);

static void auth_source_fail(struct auth_source *src, const char *what, const char *why)
{
    struct auth_query *q = src->owner;
    char reason[512];
    size_t len;

    auth_source_clear_result(src);
    if (src->reused && src->current) {
        /* A kept connection PostgreSQL closed meanwhile (restart, idle timeout): one retry. */
        struct auth_cached_user *u = src->current;
        src->current = NULL;
        auth_source_close(src);
        log_debug("auth_query: connection as \"%s\" lost (%s), reconnecting", src->user,
                  why ? why : "");
        TAILQ_INSERT_HEAD(&src->queue, u, queue_link);
        auth_source_connect(src);
        return;
    }

    snprintf(reason, sizeof(reason), "%s", why && *why ? why : "unknown error");
    len = strlen(reason);
    while (len > 0 && (reason[len - 1] == '\n' || reason[len - 1] == ' '))
        reason[--len] = '\0';
    log_warning("auth_query: %s as auth_user \"%s\" to %s:%d database \"%s\" failed: %s; "
                "logins of users not in auth_file are refused until it works",
                what, src->user, src->host, src->port, src->dbname, reason);
    auth_source_close(src);
    if (src->current) {
        struct auth_cached_user *u = src->current;
        src->current = NULL;
        auth_user_failed(q, u);
    }
    while (!TAILQ_EMPTY(&src->queue)) {
        struct auth_cached_user *u = TAILQ_FIRST(&src->queue);
        TAILQ_REMOVE(&src->queue, u, queue_link);
        auth_user_failed(q, u);
    }
}

/* ---- the libpq connection ---- */

static void auth_source_event_cb(evutil_socket_t fd, short what, void *arg)
{
    auth_source_drive(arg);
}

/* Waits for the socket to be readable (and writable, if asked) before driving again. */
static bool auth_source_wait(struct auth_source *src, bool write)
{
    struct worker *w = src->owner->worker;
    int fd = PQsocket(src->pg);
    if (src->ev)
        event_free(src->ev);
    src->ev = NULL;
    if (fd < 0) {
        auth_source_fail(src, "waiting on the connection", PQerrorMessage(src->pg));
        return false;
    }
    src->ev = event_new(w->base, fd, EV_READ | (write ? EV_WRITE : 0), auth_source_event_cb, src);
    if (!src->ev || event_add(src->ev, NULL) != 0) {
        auth_source_fail(src, "waiting on the connection", "could not register the socket");
        return false;
    }
    return true;
}

/* auth_user's password is its auth_file entry, as PgBouncer: a password libpq can send. */
static bool auth_source_password(struct auth_source *src, const char **password)
{
    struct worker *w = src->owner->worker;
    struct userlist_entry *entry = w->users ? userlist_find(w->users, src->user) : NULL;

    *password = NULL;
    if (!entry || !*entry->secret)
        return true;
    if (entry->kind != SECRET_PLAIN) {
        auth_source_fail(src, "connecting", "auth_user's auth_file secret is a hash; it must be the password itself");
        return false;
    }
    *password = entry->secret;
    return true;
}

static void auth_source_start(struct auth_source *src);

static void auth_source_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct auth_source *src = arg;
    const void *address = NULL;

    if (result == EVUTIL_EAI_CANCEL) {
        if (res)
            evutil_freeaddrinfo(res);
        return; /* closed meanwhile */
    }
    src->dns_request = NULL;
    if (result == 0 && res && res->ai_family == AF_INET)
        address = &((struct sockaddr_in *)res->ai_addr)->sin_addr;
    else if (result == 0 && res && res->ai_family == AF_INET6)
        address = &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
    if (!address || !inet_ntop(res->ai_family, address, src->hostaddr, sizeof(src->hostaddr))) {
        if (res)
            evutil_freeaddrinfo(res);
        auth_source_fail(src, "resolving the host name", result ? evutil_gai_strerror(result) : "no address");
        return;
    }
    evutil_freeaddrinfo(res);
    auth_source_start(src);
}

/*
 * Opens the connection. libpq would resolve a host name with a blocking getaddrinfo(): the
 * worker's resolver does it instead, and libpq gets the address as hostaddr (host stays, for TLS).
 */
static void auth_source_connect(struct auth_source *src)
{
    struct worker *w = src->owner->worker;
    struct in6_addr ignored;
    struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                     .ai_protocol = IPPROTO_TCP };
    struct evdns_getaddrinfo_request *request;

    src->hostaddr[0] = '\0';
    if (src->host[0] == '/' || !w->dns || inet_pton(AF_INET, src->host, &ignored) == 1 ||
        inet_pton(AF_INET6, src->host, &ignored) == 1) {
        auth_source_start(src);
        return;
    }
    src->state = AUTH_CONN_RESOLVING;
    src->busy_since = worker_now(w);
    src->reused = false;
    /* The answer may come before this returns (a name from /etc/hosts). */
    request = evdns_getaddrinfo(w->dns, src->host, NULL, &hints, auth_source_resolved, src);
    if (src->state == AUTH_CONN_RESOLVING && !src->hostaddr[0])
        src->dns_request = request;
}

static void auth_source_start(struct auth_source *src)
{
    struct worker *w = src->owner->worker;
    const struct config *cfg = w->cfg;
    char port[16];
    const char *password;
    const char *keys[12], *values[12];
    size_t n = 0;

    if (!auth_source_password(src, &password))
        return;
    snprintf(port, sizeof(port), "%d", src->port);
#define AUTH_PARAM(k, v) do { keys[n] = (k); values[n] = (v); n++; } while (0)
    AUTH_PARAM("host", src->host);
    if (src->hostaddr[0])
        AUTH_PARAM("hostaddr", src->hostaddr);
    AUTH_PARAM("port", port);
    AUTH_PARAM("dbname", src->dbname);
    AUTH_PARAM("user", src->user);
    if (password)
        AUTH_PARAM("password", password);
    AUTH_PARAM("application_name", "sluice auth_query");
    AUTH_PARAM("sslmode", src->host[0] == '/' ? "disable" : cfg->server_tls_sslmode);
    if (cfg->server_tls_ca_file)
        AUTH_PARAM("sslrootcert", cfg->server_tls_ca_file);
    if (cfg->server_tls_cert_file && cfg->server_tls_key_file) {
        AUTH_PARAM("sslcert", cfg->server_tls_cert_file);
        AUTH_PARAM("sslkey", cfg->server_tls_key_file);
    }
#undef AUTH_PARAM
    keys[n] = values[n] = NULL;
    src->reused = false;
    src->pg = PQconnectStartParams(keys, values, 0);
    src->busy_since = worker_now(w);
    if (!src->pg || PQstatus(src->pg) == CONNECTION_BAD) {
        auth_source_fail(src, "connecting", src->pg ? PQerrorMessage(src->pg) : "out of memory");
        return;
    }
    src->state = AUTH_CONN_CONNECTING;
    auth_source_wait(src, true);
}

static void auth_source_poll_connect(struct auth_source *src)
{
    switch (PQconnectPoll(src->pg)) {
    case PGRES_POLLING_READING:
        auth_source_wait(src, false);
        return;
    case PGRES_POLLING_WRITING:
        auth_source_wait(src, true);
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(src->pg, 1) != 0) {
            auth_source_fail(src, "connecting", PQerrorMessage(src->pg));
            return;
        }
        src->state = AUTH_CONN_IDLE;
        src->idle_since = worker_now(src->owner->worker);
        auth_source_drive(src);
        return;
    default:
        auth_source_fail(src, "connecting", PQerrorMessage(src->pg));
        return;
    }
}

static void auth_source_send_next(struct auth_source *src)
{
    struct auth_cached_user *u = TAILQ_FIRST(&src->queue);
    const char *params[1];

    if (!u) {
        auth_source_wait(src, false); /* to notice PostgreSQL closing it */
        return;
    }
    TAILQ_REMOVE(&src->queue, u, queue_link);
    src->current = u;
    params[0] = u->name;
    if (!PQsendQueryParams(src->pg, src->query, 1, NULL, params, NULL, NULL, 0)) {
        auth_source_fail(src, "sending auth_query", PQerrorMessage(src->pg));
        return;
    }
    src->state = AUTH_CONN_QUERYING;
    src->busy_since = worker_now(src->owner->worker);
    auth_source_wait(src, PQflush(src->pg) == 1);
}

/* Keeps what one result of auth_query says: the first row's second column is the secret. */
static void auth_source_take_result(struct auth_source *src, PGresult *res)
{
    ExecStatusType status = PQresultStatus(res);

    if (src->result_error || src->got_result)
        return; /* the first result decides; libpq sends at most one for one statement */
    if (status != PGRES_TUPLES_OK) {
        src->result_error = strdup(PQresultErrorMessage(res));
        if (!src->result_error)
            src->result_error = strdup("out of memory");
        return;
    }
    if (PQnfields(res) < 2) {
        src->result_error = strdup("auth_query must return two columns: the user name and its secret");
        return;
    }
    src->got_result = true;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 1))
        src->result_secret = strdup(PQgetvalue(res, 0, 1));
}

static void auth_source_clear_result(struct auth_source *src)
{
    free_secret(src->result_secret);
    free(src->result_error);
    src->result_secret = src->result_error = NULL;
    src->got_result = false;
}

/* All results of the look-up are in: answer its user, then send the next one. */
static void auth_source_finish_query(struct auth_source *src)
{
    struct auth_query *q = src->owner;
    struct auth_cached_user *u = src->current;

    src->current = NULL;
    src->state = AUTH_CONN_IDLE;
    src->reused = true;
    src->idle_since = worker_now(q->worker);
    if (src->result_error || !src->got_result) {
        char reason[512];
        size_t len;
        snprintf(reason, sizeof(reason), "%s", src->result_error ? src->result_error : "no result");
        len = strlen(reason);
        while (len > 0 && (reason[len - 1] == '\n' || reason[len - 1] == ' '))
            reason[--len] = '\0';
        log_warning("auth_query for user \"%s\" (as auth_user \"%s\") failed: %s", u->name, src->user,
                    reason);
        auth_source_clear_result(src);
        auth_user_failed(q, u);
    } else {
        char *secret = src->result_secret;
        src->result_secret = NULL;
        auth_source_clear_result(src);
        auth_user_answered(q, u, secret);
        free_secret(secret);
    }
    if (src->state == AUTH_CONN_IDLE)
        auth_source_send_next(src);
}

static void auth_source_read(struct auth_source *src)
{
    int flushed = PQflush(src->pg);
    if (flushed < 0 || !PQconsumeInput(src->pg)) {
        auth_source_fail(src, "running auth_query", PQerrorMessage(src->pg));
        return;
    }
    while (!PQisBusy(src->pg)) {
        PGresult *res = PQgetResult(src->pg);
        if (!res) {
            auth_source_finish_query(src);
            return;
        }
        auth_source_take_result(src, res);
        PQclear(res);
    }
    auth_source_wait(src, flushed == 1);
}

/* One step of the connection's state machine, after an event or when work is queued. */
static void auth_source_drive(struct auth_source *src)
{
    switch (src->state) {
    case AUTH_CONN_CLOSED:
        if (!TAILQ_EMPTY(&src->queue))
            auth_source_connect(src);
        return;
    case AUTH_CONN_RESOLVING:
        return; /* auth_source_resolved goes on */
    case AUTH_CONN_CONNECTING:
        auth_source_poll_connect(src);
        return;
    case AUTH_CONN_IDLE:
        if (TAILQ_EMPTY(&src->queue)) {
            /* Readable while idle: a notice, or PostgreSQL closed it (then a later look-up reconnects). */
            if (!PQconsumeInput(src->pg) || PQstatus(src->pg) == CONNECTION_BAD)
                auth_source_close(src);
            else
                auth_source_wait(src, false);
            return;
        }
        auth_source_send_next(src);
        return;
    case AUTH_CONN_QUERYING:
        auth_source_read(src);
        return;
    }
}

/* ---- the cache ---- */

static struct auth_cached_user *auth_user_new(struct auth_query *q, struct auth_source *src,
                                              const char *name)
{
    struct auth_cached_user *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->name = strdup(name);
    if (!u->name) {
        free(u);
        return NULL;
    }
    u->source = src;
    TAILQ_INSERT_TAIL(&q->users, u, link);
    return u;
}

static bool auth_user_is_fresh(const struct auth_query *q, const struct auth_cached_user *u)
{
    double ttl = q->worker->cfg->auth_query_cache_ttl;
    return u->answered && ttl > 0 && worker_now(q->worker) - u->fetched_at < ttl;
}

/*
 * On the service: one login's look-up. ANSWERED with *answer, a fresh cached user; WAIT: the
 * waiter is answered when the look-up ends (maybe before this returns); NOT_USED; FAILED.
 */
static enum auth_query_outcome auth_service_lookup(struct auth_query *q, const char *user,
                                                   const char *database,
                                                   const struct auth_waiter *waiter,
                                                   const struct auth_cached_user **answer)
{
    struct auth_target target;
    struct auth_source *src;
    struct auth_cached_user *u;

    *answer = NULL;
    if (!auth_target_for(q->worker->cfg, database, &target))
        return AUTH_QUERY_NOT_USED;
    src = auth_source_find(q, &target, true);
    u = src ? auth_user_find(q, src, user) : NULL;
    if (src && !u)
        u = auth_user_new(q, src, user);
    if (!u) {
        log_error("auth_query: out of memory looking up user \"%s\"", user);
        return AUTH_QUERY_FAILED;
    }
    if (!u->pending && auth_user_is_fresh(q, u)) {
        u->hits++;
        q->stats.cache_hits++;
        *answer = u;
        return AUTH_QUERY_ANSWERED;
    }
    if (!auth_user_add_waiter(u, waiter)) {
        log_error("auth_query: out of memory looking up user \"%s\"", user);
        return AUTH_QUERY_FAILED;
    }
    if (u->pending) {
        q->stats.coalesced++;
        return AUTH_QUERY_WAIT;
    }
    u->pending = true;
    u->lookups++;
    TAILQ_INSERT_TAIL(&src->queue, u, queue_link);
    if (src->state == AUTH_CONN_CLOSED || src->state == AUTH_CONN_IDLE)
        auth_source_drive(src);
    return AUTH_QUERY_WAIT;
}

static void auth_request_free(struct auth_request *req)
{
    if (!req)
        return;
    free(req->user);
    free(req->database);
    free(req);
}

/* On worker 0: a login on another worker asks; it is answered now (cache) or when its look-up ends. */
static void auth_request_deliver(struct worker *receiver, struct mail *mail)
{
    struct auth_request *req = (struct auth_request *)mail;
    struct auth_query *q = receiver->auth_query;
    const struct auth_cached_user *u = NULL;
    enum auth_query_outcome outcome;

    /* worker_destroy delivers the last mail after every loop ended, worker 0 last: the asking
     * worker may be freed already, so nothing is looked up or answered then. */
    if (!q || event_base_got_exit(receiver->base)) {
        auth_request_free(req);
        return;
    }
    outcome = auth_service_lookup(q, req->user, req->database, &req->waiter, &u);
    switch (outcome) {
    case AUTH_QUERY_WAIT:
        break;
    case AUTH_QUERY_ANSWERED:
    case AUTH_QUERY_NOT_USED:
        auth_answer_waiter(receiver, &req->waiter, false, u && u->found ? &u->entry : NULL);
        break;
    case AUTH_QUERY_FAILED:
        auth_answer_waiter(receiver, &req->waiter, true, NULL);
        break;
    }
    auth_request_free(req);
}

/* From a worker other than 0: the look-up goes to worker 0 by mail. */
static enum auth_query_outcome auth_query_ask_service(struct auth_query *q,
                                                      const struct auth_ticket *t,
                                                      const struct client *c)
{
    struct auth_request *req = mail_new(sizeof(*req), auth_request_deliver);

    if (!req || !(req->user = strdup(c->user)) || !(req->database = strdup(c->database))) {
        auth_request_free(req);
        log_error("auth_query: out of memory looking up user \"%s\"", c->user);
        return AUTH_QUERY_FAILED;
    }
    req->waiter.worker = q->worker;
    req->waiter.ticket = t->id;
    worker_post(auth_service_worker(q->worker), &req->mail);
    return AUTH_QUERY_WAIT;
}

static struct auth_ticket *auth_ticket_new(struct auth_query *q, struct client *c)
{
    struct auth_ticket *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    auth_query_forget_client(q, c); /* one look-up per login; a leftover would leak */
    t->id = ++q->next_ticket;
    t->client = c;
    t->waiting = true;
    TAILQ_INSERT_TAIL(&q->waiting, t, link);
    c->login->auth_ticket = t;
    return t;
}

enum auth_query_outcome auth_query_begin(struct auth_query *q, struct client *c,
                                         struct userlist_entry **entry)
{
    struct auth_target target;
    struct auth_ticket *t;
    const struct auth_cached_user *u;
    enum auth_query_outcome outcome;
    bool failed = false;

    *entry = NULL;
    /* The config is the same object on every worker: whether auth_query applies is known here. */
    if (!auth_target_for(q->worker->cfg, c->database, &target))
        return AUTH_QUERY_NOT_USED;
    if (!(t = auth_ticket_new(q, c))) {
        log_error("auth_query: out of memory looking up user \"%s\"", c->user);
        return AUTH_QUERY_FAILED;
    }
    if (auth_service_worker(q->worker) != q->worker)
        return auth_query_ask_service(q, t, c);
    outcome = auth_service_lookup(q, c->user, c->database,
                                  &(struct auth_waiter){ .worker = q->worker, .ticket = t->id }, &u);
    /* WAIT: t may be answered, and its client closed, already: t is not touched again. */
    if (outcome != AUTH_QUERY_ANSWERED)
        return outcome;
    auth_ticket_settle(q, t, &failed, u->found ? &u->entry : NULL);
    if (failed)
        return AUTH_QUERY_FAILED;
    *entry = t->found ? &t->entry : NULL;
    return AUTH_QUERY_ANSWERED;
}

struct userlist_entry *auth_query_cached(struct auth_query *q, const struct client *c)
{
    struct auth_ticket *t = c->login ? c->login->auth_ticket : NULL;

    (void)q;
    return t && !t->waiting && t->found ? &t->entry : NULL;
}

void auth_query_forget_client(struct auth_query *q, struct client *c)
{
    struct auth_ticket *t = c->login ? c->login->auth_ticket : NULL;

    if (!t)
        return;
    if (t->waiting)
        TAILQ_REMOVE(&q->waiting, t, link);
    c->login->auth_ticket = NULL;
    userlist_entry_clear(&t->entry);
    free(t);
}

void auth_query_janitor(struct auth_query *q, double now)
{
    const struct config *cfg = q->worker->cfg;
    double keep = AUTH_CACHE_KEEP_TTLS * cfg->auth_query_cache_ttl;
    struct auth_cached_user *u, *next;
    struct auth_source *src;

    if (keep < AUTH_CACHE_MIN_KEEP_SECONDS)
        keep = AUTH_CACHE_MIN_KEEP_SECONDS;
    for (src = q->sources; src; src = src->next) {
        bool busy = src->state == AUTH_CONN_RESOLVING || src->state == AUTH_CONN_CONNECTING ||
                    src->state == AUTH_CONN_QUERYING;
        if (busy && cfg->server_connect_timeout > 0 &&
            now - src->busy_since > cfg->server_connect_timeout) {
            char why[64];
            snprintf(why, sizeof(why), "no answer within %g seconds (server_connect_timeout)",
                     cfg->server_connect_timeout);
            auth_source_fail(src, src->state == AUTH_CONN_CONNECTING ? "connecting" : "running auth_query",
                             why);
        } else if (src->state == AUTH_CONN_IDLE && TAILQ_EMPTY(&src->queue) &&
                   cfg->server_idle_timeout > 0 && now - src->idle_since > cfg->server_idle_timeout) {
            auth_source_close(src);
        }
    }
    for (u = TAILQ_FIRST(&q->users); u; u = next) {
        next = TAILQ_NEXT(u, link);
        if (!u->pending && u->n_waiters == 0 && (!u->answered || now - u->fetched_at > keep)) {
            TAILQ_REMOVE(&q->users, u, link);
            auth_user_free(u);
        }
    }
}

const struct auth_query_stats *auth_query_stats(const struct auth_query *q)
{
    return &q->stats;
}

size_t auth_query_user_names(const struct auth_query *q, const char **names, size_t cap)
{
    size_t n = 0;
    const struct auth_cached_user *u;
    if (!q)
        return 0;
    TAILQ_FOREACH(u, &q->users, link) {
        if (n < cap)
            names[n] = u->name;
        n++;
    }
    return n;
}

bool auth_query_user_info(const struct auth_query *q, const char *name,
                          struct auth_query_user_info *out)
{
    const struct auth_cached_user *u;
    bool any = false;

    memset(out, 0, sizeof(*out));
    if (!q)
        return false;
    TAILQ_FOREACH(u, &q->users, link) {
        if (strcmp(u->name, name) != 0)
            continue;
        any = true;
        out->lookups += u->lookups;
        out->cache_hits += u->hits;
        if (u->answered && u->fetched_at > out->cached_since) {
            out->cached_since = u->fetched_at;
            out->found = u->found;
        }
    }
    return any;
}
