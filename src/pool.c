/*
 * pool.c: one pool per (database, backend user). Hands idle backends to clients, queues clients
 * in FIFO order when none is free, opens backends up to pool_size, and retires them by age.
 */
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "client.h"
#include "log.h"
#include "server.h"

static char *pool_strdup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static bool pool_same_string(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* The backend password: the database line's, else the user's plain password from auth_file. */
static const char *pool_backend_password(struct worker *w, const struct config_database *db,
                                         const char *user_name)
{
    if (db->password)
        return db->password;
    struct userlist_entry *entry = w->users ? userlist_find(w->users, user_name) : NULL;
    if (entry && (entry->kind == SECRET_PLAIN || entry->kind == SECRET_MD5))
        return entry->secret;
    return NULL;
}

/* Without a password, a user known by a SCRAM verifier (auth_file or auth_query) logs in with a
 * client's keys: until one has logged in, no backend can be opened for it. */
static bool pool_needs_client_key(struct worker *w, const struct config_database *db,
                                  const char *user_name, const char *password)
{
    struct userlist_entry *entry = w->users ? userlist_find(w->users, user_name) : NULL;
    if (password)
        return false;
    if (entry)
        return entry->kind == SECRET_SCRAM;
    return config_effective_auth_user(w->cfg, db) != NULL;
}

static void pool_take_settings(struct pool *pool, const struct config_database *db,
                               const struct config *cfg)
{
    const struct config_user *user = config_find_user(cfg, pool->user_name);
    pool->mode = config_effective_pool_mode(cfg, db, user);
    pool->pool_size = config_effective_pool_size(cfg, db);
    pool->min_pool_size = db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size;
    if (pool->min_pool_size > pool->pool_size)
        pool->min_pool_size = pool->pool_size;
}

struct pool *pool_create(struct worker *w, const struct config_database *db, const char *user_name,
                         const struct config *cfg)
{
    struct pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->worker = w;
    pool->db_name = strdup(db->name);
    pool->user_name = strdup(user_name);
    pool->host = strdup(db->host ? db->host : "127.0.0.1");
    pool->port = db->port;
    pool->dbname = strdup(db->dbname ? db->dbname : db->name);
    pool->password = pool_strdup_or_null(pool_backend_password(w, db, user_name));
    pool->needs_client_key = pool_needs_client_key(w, db, user_name, pool->password);
    pool->connect_query = pool_strdup_or_null(db->connect_query);
    pool->application_name = pool_strdup_or_null(db->application_name);
    TAILQ_INIT(&pool->idle_servers);
    TAILQ_INIT(&pool->used_servers);
    TAILQ_INIT(&pool->new_servers);
    TAILQ_INIT(&pool->waiting_clients);
    TAILQ_INIT(&pool->login_clients);
    param_set_init(&pool->defaults);
    pool_take_settings(pool, db, cfg);
    if (!pool->db_name || !pool->user_name || !pool->host || !pool->dbname) {
        pool_destroy(pool);
        return NULL;
    }
    return pool;
}

static void pool_retire_servers(struct server_list *list)
{
    struct server *s;
    TAILQ_FOREACH(s, list, link)
        s->close_needed = true;
}

void pool_apply_config(struct pool *pool, const struct config_database *db, const struct config *cfg)
{
    const char *host = db->host ? db->host : "127.0.0.1";
    const char *dbname = db->dbname ? db->dbname : db->name;
    const char *password = pool_backend_password(pool->worker, db, pool->user_name);
    bool address_changed = strcmp(pool->host, host) != 0 || pool->port != db->port ||
                           strcmp(pool->dbname, dbname) != 0 ||
                           !pool_same_string(pool->password, password) ||
                           !pool_same_string(pool->connect_query, db->connect_query) ||
                           !pool_same_string(pool->application_name, db->application_name);
    pool->disabled = false;
    pool_take_settings(pool, db, cfg);
    pool->needs_client_key = pool_needs_client_key(pool->worker, db, pool->user_name, password);
    if (!address_changed)
        return;
    free(pool->host);
    free(pool->dbname);
    free(pool->password);
    free(pool->connect_query);
    free(pool->application_name);
    pool->host = strdup(host);
    pool->port = db->port;
    pool->dbname = strdup(dbname);
    pool->password = pool_strdup_or_null(password);
    pool->connect_query = pool_strdup_or_null(db->connect_query);
    pool->application_name = pool_strdup_or_null(db->application_name);
    pool_reconnect(pool, "configuration changed");
    pool->last_login_failure = 0;
    log_info("pool %s/%s: backend settings changed, reconnecting to %s:%d", pool->db_name,
             pool->user_name, pool->host, pool->port);
}

void pool_destroy(struct pool *pool)
{
    free(pool->db_name);
    free(pool->user_name);
    free(pool->host);
    free(pool->dbname);
    free(pool->password);
    free(pool->connect_query);
    free(pool->application_name);
    free(pool->last_login_error);
    if (pool->passthrough)
        OPENSSL_clear_free(pool->passthrough, sizeof(*pool->passthrough));
    if (pool->md5_secret)
        OPENSSL_clear_free(pool->md5_secret, strlen(pool->md5_secret) + 1);
    param_set_free(&pool->defaults);
    free(pool);
}

int pool_server_count(const struct pool *pool)
{
    return pool->n_idle + pool->n_used + pool->n_new;
}

static bool pool_in_login_backoff(const struct pool *pool)
{
    double retry = pool->worker->cfg->server_login_retry;
    return pool->last_login_failure > 0 &&
           worker_now(pool->worker) - pool->last_login_failure < retry;
}

/* Opens one more backend if the pool has room and is not backing off after a failed login. */
static bool pool_launch_server_for(struct pool *pool, bool for_login)
{
    struct worker *w = pool->worker;
    /* A paused pool opens no backend for queries, but one to learn the session defaults, so
     * logins still complete and wait with their first query like everyone else. */
    if (pool_server_count(pool) >= pool->pool_size || pool_in_login_backoff(pool) ||
        (pool->paused && !for_login))
        return false;
    int global_limit = w->cfg->max_db_connections;
    if (global_limit > 0 && (int)w->n_servers >= global_limit)
        return false;
    return server_connect(pool) != NULL;
}

static bool pool_launch_server(struct pool *pool)
{
    return pool_launch_server_for(pool, false);
}

static void pool_fail_clients(struct client_list *list, const char *sqlstate, const char *message)
{
    while (!TAILQ_EMPTY(list))
        client_fail(TAILQ_FIRST(list), sqlstate, message);
}

static void pool_fail_for_login_error(struct pool *pool)
{
    char message[600];
    snprintf(message, sizeof(message), "%s", pool->last_login_error ? pool->last_login_error
                                                                     : "could not connect to the database server");
    pool_fail_clients(&pool->login_clients, pool->last_login_sqlstate, message);
    pool_fail_clients(&pool->waiting_clients, pool->last_login_sqlstate, message);
}

void pool_request_defaults(struct pool *pool)
{
    if (pool->n_new > 0 || pool->n_idle + pool->n_used > 0)
        return; /* a backend is on its way or already reported */
    if (!pool_launch_server_for(pool, true) && pool_in_login_backoff(pool))
        pool_fail_for_login_error(pool);
}

void pool_request_server(struct pool *pool, struct client *client)
{
    struct server *s = pool->paused ? NULL : TAILQ_FIRST(&pool->idle_servers);
    if (s) {
        histogram_observe(&pool->stats.borrow_latency, worker_now(pool->worker) - client->wait_start);
        server_link_client(s, client);
        return;
    }
    TAILQ_INSERT_TAIL(&pool->waiting_clients, client, pool_link);
    client->in_pool_list = true;
    pool->n_waiting++;
    pool->stats.wait_count++;
    if (pool->paused)
        return;
    if (pool->n_waiting > pool->n_new && !pool_launch_server(pool) && pool->n_idle + pool->n_used == 0 &&
        pool->n_new == 0 && pool_in_login_backoff(pool))
        pool_fail_for_login_error(pool);
}

void pool_cancel_wait(struct pool *pool, struct client *client)
{
    TAILQ_REMOVE(&pool->waiting_clients, client, pool_link);
    pool->n_waiting--;
    pool->stats.wait_time += worker_now(pool->worker) - client->wait_start;
}

void pool_server_ready(struct pool *pool, struct server *s)
{
    struct client *c = pool->paused ? NULL : TAILQ_FIRST(&pool->waiting_clients);
    s->ready_status = 'I';
    if (!c) {
        server_set_idle(s);
        return;
    }
    histogram_observe(&pool->stats.borrow_latency, worker_now(pool->worker) - c->wait_start);
    pool_cancel_wait(pool, c);
    c->in_pool_list = false;
    server_link_client(s, c);
    client_process_input(c);
}

void pool_server_gone(struct pool *pool, struct server *s)
{
    /* Clients that were waiting for this one may need another. */
    while (pool->n_waiting > pool->n_new && pool_launch_server(pool))
        ;
}

void pool_login_failed(struct pool *pool, const char *sqlstate, const char *message)
{
    free(pool->last_login_error);
    pool->last_login_error = strdup(message);
    snprintf(pool->last_login_sqlstate, sizeof(pool->last_login_sqlstate), "%s", sqlstate);
    pool->last_login_failure = worker_now(pool->worker);
    /* Nobody else can serve them if no backend is logged in. */
    if (pool->n_idle + pool->n_used == 0)
        pool_fail_for_login_error(pool);
}

void pool_set_defaults(struct pool *pool, const struct param_set *server_params)
{
    if (param_set_copy(&pool->defaults, server_params) != 0)
        return;
    pool->has_defaults = true;
    pool->last_login_failure = 0;
    while (!TAILQ_EMPTY(&pool->login_clients))
        client_finish_login(TAILQ_FIRST(&pool->login_clients));
}

static bool pool_same_passthrough(const struct scram_passthrough *a, const struct scram_passthrough *b)
{
    return a->verifier.iterations == b->verifier.iterations &&
           a->verifier.salt_len == b->verifier.salt_len &&
           memcmp(a->verifier.salt, b->verifier.salt, a->verifier.salt_len) == 0 &&
           CRYPTO_memcmp(a->verifier.stored_key, b->verifier.stored_key, SCRAM_KEY_LEN) == 0 &&
           CRYPTO_memcmp(a->verifier.server_key, b->verifier.server_key, SCRAM_KEY_LEN) == 0 &&
           CRYPTO_memcmp(a->client_key, b->client_key, SCRAM_KEY_LEN) == 0;
}

void pool_set_passthrough(struct pool *pool, const struct scram_passthrough *keys)
{
    if (pool->passthrough && pool_same_passthrough(pool->passthrough, keys))
        return;
    bool first = !pool->passthrough;
    if (first && !(pool->passthrough = OPENSSL_malloc(sizeof(*keys))))
        return;
    *pool->passthrough = *keys;
    pool->needs_client_key = true;
    pool->prewarm_wait_logged = false;
    /* New keys (first login, or a password changed in PostgreSQL) may succeed where the last
     * backend login failed: no waiting out server_login_retry for them. */
    pool->last_login_failure = 0;
    log_info("pool %s/%s: SCRAM pass-through: backends now log in with the key of a client's login%s",
             pool->db_name, pool->user_name, first ? "" : " (the user's verifier changed)");
}

void pool_set_md5_secret(struct pool *pool, const char *secret)
{
    if (pool->md5_secret && strcmp(pool->md5_secret, secret) == 0)
        return;
    char *copy = strdup(secret);
    if (!copy)
        return;
    if (pool->md5_secret)
        OPENSSL_clear_free(pool->md5_secret, strlen(pool->md5_secret) + 1);
    pool->md5_secret = copy;
    pool->prewarm_wait_logged = false;
    pool->last_login_failure = 0;
    log_info("pool %s/%s: backends now log in with the md5 hash auth_query found for the user",
             pool->db_name, pool->user_name);
}

const char *pool_prewarm_blocker(const struct pool *pool)
{
    if (pool->needs_client_key && !pool->passthrough && !pool->md5_secret)
        return "waiting for a client login: SCRAM pass-through needs a client's key to open backends";
    return NULL;
}

/* min_pool_size's backends, unless they cannot log in yet (said once in the log). */
static bool pool_may_prewarm(struct pool *pool)
{
    const char *blocker = pool_prewarm_blocker(pool);
    if (!blocker)
        return true;
    if (!pool->prewarm_wait_logged)
        log_info("pool %s/%s: min_pool_size %d: no backend opened yet, %s (user has no password in "
                 "the configuration)", pool->db_name, pool->user_name, pool->min_pool_size, blocker);
    pool->prewarm_wait_logged = true;
    return false;
}

void pool_pause(struct pool *pool)
{
    pool->paused = true;
}

void pool_resume(struct pool *pool)
{
    if (!pool->paused)
        return;
    pool->paused = false;
    while (!TAILQ_EMPTY(&pool->idle_servers) && !TAILQ_EMPTY(&pool->waiting_clients))
        pool_server_ready(pool, TAILQ_FIRST(&pool->idle_servers));
    while (pool->n_waiting > pool->n_new && pool_launch_server(pool))
        ;
}

bool pool_is_quiet(const struct pool *pool)
{
    return pool->n_used == 0;
}

void pool_reconnect(struct pool *pool, const char *reason)
{
    /* Busy backends finish what they do, then close; idle ones close at once. */
    pool_retire_servers(&pool->used_servers);
    pool_retire_servers(&pool->new_servers);
    while (!TAILQ_EMPTY(&pool->idle_servers))
        server_close(TAILQ_FIRST(&pool->idle_servers), reason);
}

void pool_kill(struct pool *pool, const char *reason)
{
    struct worker *w = pool->worker;
    struct client *c, *next;
    for (c = TAILQ_FIRST(&w->clients); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->pool == pool)
            client_fail(c, "57P01", reason);
    }
    pool_close_servers(pool, reason);
}

void pool_close_servers(struct pool *pool, const char *reason)
{
    struct server_list *lists[] = { &pool->idle_servers, &pool->used_servers, &pool->new_servers };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        while (!TAILQ_EMPTY(lists[i]))
            server_close(TAILQ_FIRST(lists[i]), reason);
}

static void pool_expire_waiters(struct pool *pool, double now)
{
    double timeout = pool->worker->cfg->query_wait_timeout;
    char message[256];
    if (timeout <= 0)
        return;
    while (!TAILQ_EMPTY(&pool->waiting_clients)) {
        struct client *c = TAILQ_FIRST(&pool->waiting_clients);
        if (now - c->wait_start < timeout)
            break; /* FIFO: everyone behind waited less */
        snprintf(message, sizeof(message),
                 "query_wait_timeout: no database connection became free within %g seconds "
                 "(pool_size %d for %s/%s)",
                 timeout, pool->pool_size, pool->db_name, pool->user_name);
        pool->stats.wait_timeouts++;
        client_fail(c, "57014", message);
    }
}

static void pool_expire_servers(struct pool *pool, double now)
{
    const struct config *cfg = pool->worker->cfg;
    struct server *s, *next;

    for (s = TAILQ_FIRST(&pool->new_servers); s; s = next) {
        next = TAILQ_NEXT(s, link);
        if (cfg->server_connect_timeout > 0 && now - s->connect_time > cfg->server_connect_timeout) {
            char message[256];
            snprintf(message, sizeof(message),
                     "could not connect to the database server at %s:%d: timed out after %g seconds",
                     pool->host, pool->port, cfg->server_connect_timeout);
            pool_login_failed(pool, "08006", message);
            server_close(s, message);
        }
    }
    /* Idle list is most-recently-used first: the oldest idle ones are at the tail. */
    for (s = TAILQ_LAST(&pool->idle_servers, server_list); s; s = next) {
        next = TAILQ_PREV(s, server_list, link);
        bool too_old = cfg->server_lifetime > 0 && now - s->connect_time > cfg->server_lifetime;
        bool idle_too_long = cfg->server_idle_timeout > 0 && now - s->last_used > cfg->server_idle_timeout &&
                             pool_server_count(pool) > pool->min_pool_size;
        if (too_old || idle_too_long || s->close_needed)
            server_close(s, too_old ? "server_lifetime reached" : idle_too_long ? "server_idle_timeout reached"
                                                                                : "configuration changed");
    }
}

void pool_janitor(struct pool *pool, double now)
{
    pool_expire_waiters(pool, now);
    pool_expire_servers(pool, now);
    while (pool_server_count(pool) < pool->min_pool_size && !pool->disabled && pool_may_prewarm(pool) &&
           pool_launch_server(pool))
        ;
    while (pool->n_waiting > pool->n_new && pool_launch_server(pool))
        ;
}
