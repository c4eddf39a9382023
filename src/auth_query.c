/*
 * auth_query.c: looks up users missing from auth_file in PostgreSQL and caches the answers.
 * One libpq connection per look-up source (server, database, auth_user, query), opened and driven
 * without blocking (PQconnectStartParams, PQsendQueryParams, the worker's event loop), runs the
 * queued look-ups one after another. libpq is used here only, never in the data path.
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

struct auth_cached_user {
    TAILQ_ENTRY(auth_cached_user) link;       /* owner->users */
    TAILQ_ENTRY(auth_cached_user) queue_link; /* source->queue while queued */
    struct auth_source *source;
    struct userlist_entry entry;    /* valid when found */
    bool found;                     /* the last answer had a usable secret */
    bool answered;                  /* an answer came at least once */
    double fetched_at;
    bool pending;                   /* queued or being looked up */
    struct client **waiters;
    size_t n_waiters, cap_waiters;
    char *name;
    uint64_t lookups, hits;
};

struct auth_query {
    struct worker *worker;
    struct auth_source *sources;
    struct auth_user_list users;
    struct auth_query_stats stats;
};

static void auth_source_drive(struct auth_source *src);

struct auth_query *auth_query_new(struct worker *w)
{
    struct auth_query *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->worker = w;
    TAILQ_INIT(&q->users);
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

static bool auth_user_add_waiter(struct auth_cached_user *u, struct client *c)
{
    if (u->n_waiters == u->cap_waiters) {
        size_t cap = u->cap_waiters ? 2 * u->cap_waiters : 4;
        struct client **grown = realloc(u->waiters, cap * sizeof(*grown));
        if (!grown)
            return false;
        u->waiters = grown;
        u->cap_waiters = cap;
    }
    u->waiters[u->n_waiters++] = c;
    c->auth_wait = u;
    return true;
}

/* ---- answering the clients ---- */

/* The look-up of u ended: every login waiting for it goes on (or fails, if it failed). */
static void auth_user_wake(struct auth_cached_user *u, bool failed)
{
    struct client **waiters = u->waiters;
    size_t n = u->n_waiters;

    u->waiters = NULL;
    u->n_waiters = u->cap_waiters = 0;
    u->pending = false;
    for (size_t i = 0; i < n; i++)
        waiters[i]->auth_wait = NULL;
    for (size_t i = 0; i < n; i++)
        client_auth_lookup_done(waiters[i], failed);
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
    log_debug("auth_query: user \"%s\" %s", u->name, u->found ? "found" : "not found");
    auth_user_wake(u, false);
}

static void auth_user_failed(struct auth_query *q, struct auth_cached_user *u)
{
    q->stats.lookups_failed++;
    auth_user_wake(u, true);
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
    if (src->result_secret) {
        explicit_bzero(src->result_secret, strlen(src->result_secret));
        free(src->result_secret);
    }
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
        if (secret) {
            explicit_bzero(secret, strlen(secret));
            free(secret);
        }
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

enum auth_query_outcome auth_query_begin(struct auth_query *q, struct client *c,
                                         struct userlist_entry **entry)
{
    struct auth_target target;
    struct auth_source *src;
    struct auth_cached_user *u;

    *entry = NULL;
    if (!auth_target_for(q->worker->cfg, c->database, &target))
        return AUTH_QUERY_NOT_USED;
    src = auth_source_find(q, &target, true);
    u = src ? auth_user_find(q, src, c->user) : NULL;
    if (src && !u)
        u = auth_user_new(q, src, c->user);
    if (!u) {
        log_error("auth_query: out of memory looking up user \"%s\"", c->user);
        return AUTH_QUERY_FAILED;
    }
    if (!u->pending && auth_user_is_fresh(q, u)) {
        u->hits++;
        q->stats.cache_hits++;
        *entry = u->found ? &u->entry : NULL;
        return AUTH_QUERY_ANSWERED;
    }
    if (!auth_user_add_waiter(u, c)) {
        log_error("auth_query: out of memory looking up user \"%s\"", c->user);
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

struct userlist_entry *auth_query_cached(struct auth_query *q, const struct client *c)
{
    struct auth_target target;
    struct auth_source *src;
    struct auth_cached_user *u;

    if (!q || !auth_target_for(q->worker->cfg, c->database, &target))
        return NULL;
    src = auth_source_find(q, &target, false);
    u = src ? auth_user_find(q, src, c->user) : NULL;
    return u && u->found ? &u->entry : NULL;
}

void auth_query_forget_client(struct auth_query *q, struct client *c)
{
    struct auth_cached_user *u = c->auth_wait;

    (void)q;
    if (!u)
        return;
    for (size_t i = 0; i < u->n_waiters; i++) {
        if (u->waiters[i] == c) {
            u->waiters[i] = u->waiters[--u->n_waiters];
            break;
        }
    }
    c->auth_wait = NULL;
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
