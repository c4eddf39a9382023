/*
 * pool.c: one pool per (database, backend user). Hands idle backends to clients, queues clients
 * in FIFO order when none is free, opens backends up to pool_size, and retires them by age.
 */
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include <event2/event.h>

#include "client.h"
#include "world.h"
#include "log.h"
#include "server.h"
#include "timeval.h"

static struct pool_registry *pool_registry_of(const struct pool *pool)
{
    return &pool->worker->world->pools;
}

/* The "every backend is pinned" warning is repeated at most this often while it lasts. */
#define POOL_ALL_PINNED_LOG_INTERVAL 10.0

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

/* The first backend login retry waits this long; the delay doubles up to server_login_retry. */
#define POOL_FIRST_RETRY_DELAY 0.05

static void pool_retry_cb(evutil_socket_t fd, short what, void *arg);
static void pool_lend_cb(evutil_socket_t fd, short what, void *arg);
static void pool_lend_idle(struct pool *pool, bool asked);
static void pool_release(struct pool *pool, struct server *s, bool keep_for_own);
static bool pool_needs_more_servers(const struct pool *pool);
static bool pool_launch_server(struct pool *pool);

/* host= and port= as places to try; the config was checked at load, so only memory can fail. */
static int pool_take_hosts(struct pool *pool, const struct config_database *db)
{
    char err[256];
    hostlist_free(&pool->hosts);
    pool->host_index = 0;
    pool->hosts_failed = 0;
    pool->target = db->target_session_attrs;
    if (hostlist_parse(pool->host, pool->port_list, pool->port, &pool->hosts, err, sizeof(err)) != 0) {
        log_error("pool %s/%s: %s", pool->db_name, pool->user_name, err);
        return -1;
    }
    return 0;
}

static void pool_take_settings(struct pool *pool, const struct config_database *db,
                               const struct config *cfg)
{
    const struct config_user *user = config_find_user(cfg, pool->user_name);
    pool->mode = config_effective_pool_mode(cfg, db, user);
    pool->pool_size = config_user_pool_size(cfg, db, user);
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
    pool->port_list = pool_strdup_or_null(db->port_list);
    pool->dbname = strdup(db->dbname ? db->dbname : db->name);
    pool->password = pool_strdup_or_null(pool_backend_password(w, db, user_name));
    pool->server_auth_token = db->server_auth_token;
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
    struct pool_registry *reg = pool_registry_of(pool);
    pool_registry_lock(reg);
    pool->db_count = limit_registry_database(&reg->limits, db->name);
    pool->user_count = limit_registry_user(&reg->limits, user_name);
    pool->shared = pool->user_name ? pool_registry_shared(reg, db->name, user_name) : NULL;
    /* Another worker's backends may have told the session defaults already. */
    if (pool->shared && pool->shared->has_defaults &&
        param_set_copy(&pool->defaults, &pool->shared->defaults) == 0)
        pool->has_defaults = true;
    pool_registry_unlock(reg);
    pool->retry_timer = evtimer_new(w->base, pool_retry_cb, pool);
    pool->lend_timer = evtimer_new(w->base, pool_lend_cb, pool);
    if (!pool->db_name || !pool->user_name || !pool->host || !pool->dbname || !pool->db_count ||
        !pool->user_count || !pool->shared || !pool->retry_timer || !pool->lend_timer ||
        (db->port_list && !pool->port_list) || pool_take_hosts(pool, db) != 0) {
        pool_destroy(pool);
        return NULL;
    }
    pool->shared->local[w->index] = pool;
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
                           !pool_same_string(pool->port_list, db->port_list) ||
                           pool->target != db->target_session_attrs ||
                           strcmp(pool->dbname, dbname) != 0 ||
                           !pool_same_string(pool->password, password) ||
                           pool->server_auth_token != db->server_auth_token ||
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
    free(pool->port_list);
    pool->host = strdup(host);
    pool->port = db->port;
    pool->port_list = pool_strdup_or_null(db->port_list);
    pool->dbname = strdup(dbname);
    pool->password = pool_strdup_or_null(password);
    pool->server_auth_token = db->server_auth_token;
    pool->connect_query = pool_strdup_or_null(db->connect_query);
    pool->application_name = pool_strdup_or_null(db->application_name);
    if (pool->host)
        pool_take_hosts(pool, db);
    pool_reconnect(pool, "configuration changed");
    pool_login_succeeded(pool, 0); /* a failure of the old settings says nothing of the new */
    log_info("pool %s/%s: backend settings changed, reconnecting to %s:%d", pool->db_name,
             pool->user_name, pool->host, pool->port);
}

void pool_destroy(struct pool *pool)
{
    if (pool->shared && pool->shared->local[pool->worker->index] == pool)
        pool->shared->local[pool->worker->index] = NULL;
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
    free(pool->port_list);
    hostlist_free(&pool->hosts);
    if (pool->retry_timer)
        event_free(pool->retry_timer);
    if (pool->lend_timer)
        event_free(pool->lend_timer);
    param_set_free(&pool->defaults);
    free(pool);
}

int pool_server_count(const struct pool *pool)
{
    return pool->n_idle + pool->n_used + pool->n_new;
}

int pool_total_server_count(struct pool *pool)
{
    return atomic_load(&pool->shared->n_servers);
}

/* The most backends the pool may have: pool_size and the reserve (PgBouncer's check_pool_size). */
static int pool_most_servers(const struct pool *pool)
{
    const struct config *cfg = pool->worker->cfg;
    return pool->pool_size + config_effective_reserve_pool(cfg, config_find_database(cfg, pool->db_name));
}

bool pool_above_size(struct pool *pool)
{
    /* Checked at every release: the reserve's look-up only when pool_size alone is exceeded. */
    int total = pool_total_server_count(pool);
    return total > pool->pool_size && total > pool_most_servers(pool);
}

static bool pool_in_login_backoff(const struct pool *pool)
{
    return pool->last_login_failure > 0 && worker_now(pool->worker) < pool->next_login_attempt;
}

/* Clients are told the last login error only while it is permanent and its retry delay runs. */
static bool pool_refuses_for_login_error(const struct pool *pool)
{
    return pool->login_error_permanent && pool_in_login_backoff(pool) &&
           pool->n_idle + pool->n_used == 0 && pool->n_new == 0;
}

/* ---- client limits: max_db_client_connections, max_user_client_connections ---- */

enum admission { ADMITTED, ADMISSION_NO_MEMORY, DATABASE_FULL, USER_FULL };

bool pool_admit_client(struct pool *pool, struct client *c)
{
    struct worker *w = pool->worker;
    const struct config *cfg = w->cfg;
    int db_limit = config_effective_max_db_client_connections(cfg, config_find_database(cfg, pool->db_name));
    int user_limit = config_effective_max_user_client_connections(cfg, config_find_user(cfg, c->user));
    struct pool_registry *reg = pool_registry_of(pool);
    enum admission verdict = ADMITTED;

    /* Counted in one step with the check: clients of every worker count against one limit. */
    pool_registry_lock(reg);
    struct limit_count *user_count = limit_registry_user(&reg->limits, c->user);
    if (!user_count)
        verdict = ADMISSION_NO_MEMORY;
    else if (!limit_has_room(pool->db_count->clients, db_limit))
        verdict = DATABASE_FULL;
    else if (!limit_has_room(user_count->clients, user_limit))
        verdict = USER_FULL;
    if (verdict == ADMITTED) {
        pool->db_count->clients++;
        user_count->clients++;
    }
    pool_registry_unlock(reg);

    switch (verdict) {
    case ADMISSION_NO_MEMORY:
        client_fail(c, "53200", "out of memory");
        return false;
    case DATABASE_FULL:
        client_failf(c, "53300", "sorry, too many clients already for database \"%s\" (max_db_client_connections = %d)",
                     pool->db_name, db_limit);
        return false;
    case USER_FULL:
        client_failf(c, "53300", "sorry, too many clients already for user \"%s\" (max_user_client_connections = %d)",
                     c->user, user_limit);
        return false;
    case ADMITTED:
        break;
    }
    c->counted_database = pool->db_count;
    c->counted_user = user_count;
    return true;
}

void pool_forget_client(struct client *c)
{
    if (!c->counted_database && !c->counted_user)
        return;
    struct pool_registry *reg = &c->worker->world->pools;
    pool_registry_lock(reg);
    if (c->counted_database)
        c->counted_database->clients--;
    if (c->counted_user)
        c->counted_user->clients--;
    pool_registry_unlock(reg);
    c->counted_database = NULL;
    c->counted_user = NULL;
}

/* ---- limits: pool_size, the reserve pool, max_db_connections, max_user_connections ---- */

void pool_count_server(struct pool *pool, int delta)
{
    pool_registry_add_servers(pool_registry_of(pool), pool->shared, delta);
    if (delta < 0)
        pool->worker->server_closed = true;
}

/* The reserve is for a client that has waited reserve_pool_timeout (the first waited longest). */
static bool pool_reserve_open(const struct pool *pool)
{
    const struct config *cfg = pool->worker->cfg;
    const struct client *first = TAILQ_FIRST(&pool->waiting_clients);
    return cfg->reserve_pool_timeout > 0 && first &&
           worker_now(pool->worker) - first->wait_start >= cfg->reserve_pool_timeout;
}

enum reservation { RESERVED, RESERVED_FROM_RESERVE, NO_ROOM, AT_DATABASE_LIMIT, AT_USER_LIMIT };

/*
 * Under the registry lock: counts one more backend if pool_size (or, for a client that waited
 * reserve_pool_timeout, the reserve pool), max_db_connections and max_user_connections all have
 * room, counting the backends of every worker.
 */
static enum reservation pool_reserve_locked(struct pool *pool, bool for_waiter, bool for_min_pool)
{
    const struct config *cfg = pool->worker->cfg;
    int count = atomic_load(&pool->shared->n_servers);
    bool from_reserve = false;
    /* Every worker tops the pool up to min_pool_size: the check and the count in one step. */
    if (for_min_pool && count >= pool->min_pool_size)
        return NO_ROOM;
    if (count >= pool->pool_size) {
        int reserve = config_effective_reserve_pool(cfg, config_find_database(cfg, pool->db_name));
        if (!for_waiter || count >= pool->pool_size + reserve || !pool_reserve_open(pool))
            return NO_ROOM;
        from_reserve = true;
    }
    int db_limit = config_effective_max_db_connections(cfg, config_find_database(cfg, pool->db_name));
    int user_limit = config_effective_max_user_connections(cfg, config_find_user(cfg, pool->user_name));
    if (!limit_has_room(pool->db_count->servers, db_limit))
        return AT_DATABASE_LIMIT;
    if (!limit_has_room(pool->user_count->servers, user_limit))
        return AT_USER_LIMIT;
    atomic_fetch_add(&pool->shared->n_servers, 1);
    pool->db_count->servers++;
    pool->user_count->servers++;
    return from_reserve ? RESERVED_FROM_RESERVE : RESERVED;
}

/* The idle backend unused longest among this worker's other pools of the same database (or user). */
static struct server *pool_eviction_candidate(struct pool *pool, bool same_user)
{
    struct server *oldest = NULL;
    struct pool *other;
    TAILQ_FOREACH(other, &pool->worker->pools, link) {
        if (other == pool || POOL_LIMIT_COUNT(other, same_user) != POOL_LIMIT_COUNT(pool, same_user))
            continue;
        struct server *s = TAILQ_LAST(&other->idle_servers, server_list);
        if (s && (!oldest || s->last_used < oldest->last_used))
            oldest = s;
    }
    return oldest;
}

/* At max_db_connections or max_user_connections: close an idle backend of another pool that
 * shares the limit, as PgBouncer does. False if there is none. */
static bool pool_evict_for(struct pool *pool, bool same_user)
{
    struct server *victim = pool_eviction_candidate(pool, same_user);
    if (!victim)
        return false;
    log_debug("pool %s/%s: %s reached: closing an idle backend of %s/%s to make room",
              pool->db_name, pool->user_name, same_user ? "max_user_connections" : "max_db_connections",
              victim->pool->db_name, victim->pool->user_name);
    server_close(victim, same_user ? "evicted for another pool (max_user_connections)"
                                   : "evicted for another pool (max_db_connections)");
    return true;
}

/* A worker asks another to close an idle backend of a pool sharing its limit, for its place. */
struct pool_eviction {
    struct mail mail;
    struct shared_pool *shared;      /* whose idle backend goes */
    struct shared_pool *for_shared;  /* whose backend takes its place */
    unsigned for_worker;
    bool same_user;
};

/* The place an evicted backend left, for the pool that asked: counted for it already. */
struct pool_place {
    struct mail mail;
    struct shared_pool *shared;
};

static void pool_place_deliver(struct worker *w, struct mail *mail)
{
    struct pool_place *place = (struct pool_place *)mail;
    struct shared_pool *shared = place->shared;
    free(place);
    struct pool *pool = shared->local[w->index];
    if (!pool || pool->disabled || (pool->n_waiting == 0 && TAILQ_EMPTY(&pool->login_clients))) {
        pool_registry_add_servers(&w->world->pools, shared, -1); /* nobody needs it any more */
        return;
    }
    server_connect(pool); /* gives the place back if it fails */
}

static void pool_eviction_deliver(struct worker *w, struct mail *mail)
{
    struct pool_eviction *eviction = (struct pool_eviction *)mail;
    struct pool *pool = eviction->shared->local[w->index];
    struct server *victim = pool ? TAILQ_LAST(&pool->idle_servers, server_list) : NULL;
    struct pool_place *place = victim ? mail_new(sizeof(*place), pool_place_deliver) : NULL;
    if (!place) {
        free(eviction);
        return;
    }
    /* The place changes hands in the counts before the victim leaves them: nobody else can take
     * it in between, and for a moment the counts say one more than there are, never one less. */
    pool_registry_add_servers(&w->world->pools, eviction->for_shared, +1);
    server_close(victim, eviction->same_user ? "evicted for another pool (max_user_connections)"
                                             : "evicted for another pool (max_db_connections)");
    place->shared = eviction->for_shared;
    worker_post(w->world->workers[eviction->for_worker], &place->mail);
    free(eviction);
}

/*
 * No idle backend of another pool sharing the limit on this worker: ask a worker that holds one
 * to close it and hand its place to this pool (pool_place_deliver opens the backend).
 */
static void pool_evict_elsewhere(struct pool *pool, bool same_user)
{
    struct pool_registry *reg = pool_registry_of(pool);
    struct world *world = pool->worker->world;
    struct shared_pool *victim_pool = NULL;
    int victim_worker = -1;

    pool_registry_lock(reg);
    for (struct shared_pool *sp = reg->pools; sp && victim_worker < 0; sp = sp->next) {
        if (sp == pool->shared || POOL_LIMIT_COUNT(sp, same_user) != POOL_LIMIT_COUNT(pool, same_user))
            continue;
        victim_worker = shared_pool_worker_with_idle(sp, world->n_workers, pool->worker->index);
        victim_pool = sp;
    }
    pool_registry_unlock(reg);
    if (victim_worker < 0)
        return;
    struct pool_eviction *eviction = mail_new(sizeof(*eviction), pool_eviction_deliver);
    if (!eviction)
        return;
    eviction->shared = victim_pool;
    eviction->for_shared = pool->shared;
    eviction->for_worker = pool->worker->index;
    eviction->same_user = same_user;
    worker_post(world->workers[victim_worker], &eviction->mail);
}

static enum reservation pool_reserve_server(struct pool *pool, bool for_waiter, bool may_evict,
                                           bool for_min_pool)
{
    struct pool_registry *reg = pool_registry_of(pool);
    pool_registry_lock(reg);
    enum reservation r = pool_reserve_locked(pool, for_waiter, for_min_pool);
    pool_registry_unlock(reg);
    if ((r == AT_DATABASE_LIMIT || r == AT_USER_LIMIT) && may_evict) {
        if (!pool_evict_for(pool, r == AT_USER_LIMIT)) {
            pool_evict_elsewhere(pool, r == AT_USER_LIMIT);
            return r;
        }
        pool_registry_lock(reg);
        r = pool_reserve_locked(pool, for_waiter, for_min_pool);
        pool_registry_unlock(reg);
    }
    return r;
}

enum launch_reason {
    LAUNCH_FOR_LOGIN,    /* logins wait for the session defaults a first backend reports */
    LAUNCH_FOR_WAITER,   /* a client waits for a backend */
    LAUNCH_FOR_MIN_POOL, /* min_pool_size: nobody waits, so no other pool's backend is evicted */
};

/* Opens one more backend if the pool has room and is not backing off after a failed login. */
static bool pool_launch_server_for(struct pool *pool, enum launch_reason reason)
{
    bool for_login = reason == LAUNCH_FOR_LOGIN;
    /* While logins fail, one attempt at a time: a server that is down gets no storm of them. */
    bool probing = pool->last_login_failure > 0 && pool->n_new > 0;
    /* A paused pool opens no backend for queries, but one to learn the session defaults, so
     * logins still complete and wait with their first query like everyone else. */
    if (pool_in_login_backoff(pool) || probing || worker_now(pool->worker) < pool->descriptor_retry_at ||
        (pool->paused && !for_login))
        return false;
    enum reservation r = pool_reserve_server(pool, reason == LAUNCH_FOR_WAITER, reason != LAUNCH_FOR_MIN_POOL,
                                             reason == LAUNCH_FOR_MIN_POOL);
    if (r != RESERVED && r != RESERVED_FROM_RESERVE)
        return false;
    if (r == RESERVED_FROM_RESERVE)
        log_info("pool %s/%s: a client waited over reserve_pool_timeout: opening a backend from the reserve pool",
                 pool->db_name, pool->user_name);
    return server_connect(pool) != NULL; /* counted here; given back if it fails */
}

static bool pool_launch_server(struct pool *pool)
{
    return pool_launch_server_for(pool, LAUNCH_FOR_WAITER);
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

/* The defaults a backend of another worker reported, if one has: true once they are ours. */
static bool pool_take_shared_defaults(struct pool *pool)
{
    struct pool_registry *reg = pool_registry_of(pool);
    struct param_set copy;
    bool found = false;
    param_set_init(&copy);
    pool_registry_lock(reg);
    if (pool->shared->has_defaults)
        found = param_set_copy(&copy, &pool->shared->defaults) == 0;
    pool_registry_unlock(reg);
    if (found)
        pool_set_defaults(pool, &copy);
    param_set_free(&copy);
    return found;
}

void pool_request_defaults(struct pool *pool)
{
    if (pool->n_new > 0 || pool->n_idle + pool->n_used > 0)
        return; /* a backend is on its way or already reported */
    if (!pool->has_defaults && pool_take_shared_defaults(pool))
        return;
    if (!pool_launch_server_for(pool, LAUNCH_FOR_LOGIN) && pool_refuses_for_login_error(pool))
        pool_fail_for_login_error(pool);
}

/* Waiting clients outnumber the backends on their way to them (logging in or being checked). */
static bool pool_needs_more_servers(const struct pool *pool)
{
    return pool->n_waiting > pool->n_new + pool->n_checking;
}

/* PgBouncer's server_check_query: a backend idle longer than server_check_delay is tested first. */
static bool pool_server_needs_check(const struct pool *pool, const struct server *s)
{
    const struct config *cfg = pool->worker->cfg;
    if (!cfg->server_check_query || !*cfg->server_check_query)
        return false;
    return cfg->server_check_delay <= 0 ||
           worker_now(pool->worker) - s->last_used > cfg->server_check_delay;
}

static void pool_start_check(struct pool *pool, struct server *s)
{
    pool->n_checking++;
    server_run_check(s, pool->worker->cfg->server_check_query);
}

void pool_server_checked(struct pool *pool, struct server *s, bool ok)
{
    pool->n_checking--;
    if (!ok || s->close_needed) {
        server_close(s, ok ? "configuration changed" : "server_check_query failed");
        return; /* pool_server_gone hands the waiter another backend */
    }
    pool_server_ready(pool, s);
}

/* ---- across workers: tickets, lending, hand-overs ---- */

/*
 * A waiter whose ticket was taken for a backend that has not reached it within this long gets a
 * ticket again: whatever became of that backend, the client is back in line on every worker.
 */
#define POOL_GRANT_LOST_SECONDS 1.0

/*
 * Puts back in line, in their old places, this worker's waiters whose ticket was taken for a
 * backend that has not reached them, if they have waited min_wait. Returns how many. One whose
 * backend is still on its way may get a second: the one that comes second finds nobody waiting
 * for it and is released like any other.
 */
static int pool_requeue_granted(struct pool *pool, double now, double min_wait)
{
    struct pool_registry *reg = pool_registry_of(pool);
    struct client *c;
    int requeued = 0;
    if (pool->n_waiting == 0)
        return 0;
    pool_registry_lock(reg);
    TAILQ_FOREACH(c, &pool->waiting_clients, pool_link) {
        if (!c->ticket.queued && now - c->wait_start >= min_wait) {
            c->ticket.since = c->wait_start;
            c->ticket.urgent = true;
            shared_pool_enqueue(pool->shared, &c->ticket);
            requeued++;
        }
    }
    pool_registry_unlock(reg);
    return requeued;
}

static void pool_requeue_lost_grants(struct pool *pool, double now)
{
    int requeued = pool_requeue_granted(pool, now, POOL_GRANT_LOST_SECONDS);
    if (requeued > 0)
        log_warning("pool %s/%s: %d waiting client%s had not received the backend handed to %s "
                    "after %g s: queued again", pool->db_name, pool->user_name, requeued,
                    requeued == 1 ? "" : "s", requeued == 1 ? "it" : "them", POOL_GRANT_LOST_SECONDS);
}

/* A backend on its way to this worker was closed: the waiter it was for goes back in line. */
static void pool_grant_lost(struct pool *pool)
{
    pool_requeue_granted(pool, worker_now(pool->worker), 0);
    pool_serve_waiters(pool);
}

struct pool_nudge {
    struct mail mail;
    struct shared_pool *shared;
    bool grant_lost; /* a backend sent to the receiver's waiter was closed on its way */
};

struct pool_handoff {
    struct mail mail;
    struct shared_pool *shared;
    struct server *server;
};

static void pool_nudge_deliver(struct worker *w, struct mail *mail)
{
    struct pool_nudge *nudge = (struct pool_nudge *)mail;
    struct pool *pool = nudge->shared->local[w->index];
    bool grant_lost = nudge->grant_lost;
    free(nudge);
    if (!pool)
        return;
    if (grant_lost) {
        pool_grant_lost(pool);
        return;
    }
    pool_lend_idle(pool, true); /* asked: another worker's client waits for it now */
    pool_serve_waiters(pool);
}

/* Asks worker to look at the pool again: lend its idle backends, or open one for its waiters
 * (grant_lost: first put back in line the waiter whose backend was closed on its way). */
static void pool_post_nudge_for(struct worker *to, struct shared_pool *shared, bool grant_lost)
{
    struct pool_nudge *nudge = mail_new(sizeof(*nudge), pool_nudge_deliver);
    if (!nudge)
        return; /* its janitor looks again within a tick (and requeues a lost grant in 1 s) */
    nudge->shared = shared;
    nudge->grant_lost = grant_lost;
    worker_post(to, &nudge->mail);
}

static void pool_post_nudge(struct worker *to, struct shared_pool *shared)
{
    pool_post_nudge_for(to, shared, false);
}

/* A worker other than this one that holds an idle backend of the pool, or -1. */
static int pool_worker_with_idle(const struct pool *pool)
{
    return shared_pool_worker_with_idle(pool->shared, pool->worker->world->n_workers,
                                        pool->worker->index);
}

/* A backend closed here, so there is room: the worker of the longest waiter may open one. */
static void pool_nudge_first_waiter(struct pool *pool)
{
    struct pool_registry *reg = pool_registry_of(pool);
    int to = -1;
    if (atomic_load(&pool->shared->n_tickets) == 0)
        return;
    pool_registry_lock(reg);
    struct pool_ticket *head = TAILQ_FIRST(&pool->shared->tickets);
    if (head && head->worker != pool->worker->index)
        to = (int)head->worker;
    pool_registry_unlock(reg);
    if (to >= 0)
        pool_post_nudge(pool->worker->world->workers[to], pool->shared);
}

/* A backend of this worker's own (running a query, logging in or being checked) will come back
 * to its waiters. */
static bool pool_expects_own_backend(const struct pool *pool)
{
    return pool->n_used > 0 || pool->n_new > 0 || pool->n_checking > 0;
}

/* The client queues here; its ticket puts it in line with the waiters of every worker. */
static void pool_take_ticket(struct pool *pool, struct client *c)
{
    struct pool_registry *reg = pool_registry_of(pool);
    c->ticket.since = c->wait_start;
    c->ticket.worker = pool->worker->index;
    c->ticket.urgent = !pool_expects_own_backend(pool);
    pool_registry_lock(reg);
    shared_pool_enqueue(pool->shared, &c->ticket);
    pool_registry_unlock(reg);
}

enum release {
    RELEASE_TO_LOCAL_WAITER, /* this worker's first waiter is the longest waiter (or has no ticket) */
    RELEASE_TO_OTHER_WORKER, /* a client of another worker has waited longest */
    RELEASE_TO_IDLE,         /* nobody waits */
    RELEASE_TO_IDLE_FOR_NOW, /* a client of another worker has only just begun to wait */
};

/*
 * A backend released on a worker goes to that worker's longest waiter unless a client of another
 * worker has waited this much longer: FIFO across workers to within a few milliseconds, while
 * under steady load most backends stay on their worker (a hand-over costs both workers a wake-up
 * and the backend a trip between loops).
 */
#define POOL_FIFO_SLACK_SECONDS 0.005
/*
 * A client whose worker has backends of its own running queries is likely to get one of them
 * back within this long: until then a backend of another worker is neither lent to it nor asked
 * for. Without it, under steady load the workers pass backends back and forth on a tenth of the
 * transactions, each pass costing both a wake-up, for a wait that was about to end anyway. The
 * client's own worker asks for one once it has waited this long (pool_borrow_for_waiters).
 */
#define POOL_BORROW_AFTER_SECONDS 0.002

/* Under the registry lock: who gets a backend released on this worker. */
static enum release pool_decide_release_locked(struct pool *pool, bool movable, bool keep_for_own,
                                               double now, unsigned *to)
{
    struct shared_pool *sp = pool->shared;
    struct pool_ticket *head = TAILQ_FIRST(&sp->tickets);
    struct client *local = TAILQ_FIRST(&pool->waiting_clients);

    if (local && (!movable || !head || !local->ticket.queued || head == &local->ticket ||
                  local->ticket.since <= head->since + POOL_FIFO_SLACK_SECONDS)) {
        shared_pool_dequeue(sp, &local->ticket);
        return RELEASE_TO_LOCAL_WAITER;
    }
    if (!head || !movable)
        return RELEASE_TO_IDLE;
    if (keep_for_own && !head->urgent && now - head->since < POOL_BORROW_AFTER_SECONDS)
        return RELEASE_TO_IDLE_FOR_NOW; /* its worker asks for it if it still waits by then */
    shared_pool_dequeue(sp, head);
    *to = head->worker;
    return RELEASE_TO_OTHER_WORKER;
}

/* After asking another worker for an idle backend: open one if none came by then. */
#define POOL_BORROW_WAIT_SECONDS 0.010

/* Looks at this worker's waiters again after delay (or sooner, if it was to already). */
static void pool_arm_lend(struct pool *pool, double delay)
{
    double at = worker_now(pool->worker) + delay;
    if (evtimer_pending(pool->lend_timer, NULL) && pool->lend_at <= at)
        return;
    pool->lend_at = at;
    struct timeval tv = timeval_from_seconds(delay);
    tv.tv_usec += 1; /* past the truncated fraction: when it fires, all of delay has gone by */
    evtimer_add(pool->lend_timer, &tv);
}

/*
 * An idle backend on another worker is borrowed rather than a new one opened, once this
 * worker's first waiter has waited POOL_BORROW_AFTER_SECONDS or at once if no backend of its own
 * will come back to it. True if the waiters are seen to: one is asked for (and one opened if it
 * has not come within POOL_BORROW_WAIT_SECONDS: that worker may use it first), or this worker's
 * own may come back first. False: the caller opens one if the pool has room.
 */
static bool pool_borrow_for_waiters(struct pool *pool)
{
    struct client *first = TAILQ_FIRST(&pool->waiting_clients);
    if (!first || pool->worker->world->n_workers < 2)
        return false;
    double waited = worker_now(pool->worker) - first->wait_start;
    bool may_wait = !first->ticket.urgent && waited < POOL_BORROW_AFTER_SECONDS;
    if (may_wait)
        pool_arm_lend(pool, POOL_BORROW_AFTER_SECONDS - waited); /* a backend of another worker
                                                                     kept for now comes then */
    int from = pool_worker_with_idle(pool);
    if (from < 0)
        return false;
    if (may_wait)
        return true;
    pool_post_nudge(pool->worker->world->workers[from], pool->shared);
    pool_arm_lend(pool, POOL_BORROW_WAIT_SECONDS);
    return true;
}

/* Opens backends while this worker's waiters outnumber those on their way (a paused pool opens none). */
static void pool_launch_for_waiters(struct pool *pool)
{
    while (pool_needs_more_servers(pool) && pool_launch_server(pool))
        ;
}

static void pool_lend_cb(evutil_socket_t fd, short what, void *arg)
{
    pool_serve_waiters(arg);
}

static void pool_leave_queue(struct pool *pool, struct client *client, bool ticket_settled);

/* ticket_settled: the caller took the client's ticket out of the queue under the lock already. */
static void pool_link_first_waiter(struct pool *pool, struct server *s, bool ticket_settled)
{
    struct client *c = TAILQ_FIRST(&pool->waiting_clients);
    histogram_observe(&pool->stats.borrow_latency, worker_now(pool->worker) - c->wait_start);
    pool_leave_queue(pool, c, ticket_settled);
    c->in_pool_list = false;
    server_link_client(s, c);
    client_process_input(c);
}

static void pool_handoff_deliver(struct worker *w, struct mail *mail)
{
    struct pool_handoff *handoff = (struct pool_handoff *)mail;
    struct shared_pool *shared = handoff->shared;
    struct server *s = handoff->server;
    free(handoff);
    pool_adopt_server(w, shared, s);
}

/*
 * The backend goes to worker to, whose longest waiter's ticket it took: out of this worker's pool
 * now, out of its loop and on its way once the current callback has returned (worker_reap), as
 * code up the stack may still look at it.
 */
static void pool_send_server(struct pool *pool, struct server *s, unsigned to)
{
    struct worker *w = pool->worker;
    server_leave_worker(s);
    s->handoff_to = to;
    s->handoff_retired = atomic_load(&pool->shared->retired);
    TAILQ_INSERT_TAIL(&w->departing_servers, s, link);
    worker_schedule_reap(w);
}

void pool_dispatch_server(struct server *s)
{
    struct worker *w = s->worker;
    struct shared_pool *shared = s->pool->shared;
    struct pool_handoff *handoff = mail_new(sizeof(*handoff), pool_handoff_deliver);
    if (!handoff || !conn_leave_loop(&s->conn)) {
        /* Out of memory, or it wrote since: it cannot travel. Its place goes to a new backend. */
        free(handoff);
        server_close_in_transit(s, w, shared, "could not be handed to another worker");
        pool_post_nudge_for(w->world->workers[s->handoff_to], shared, true);
        return;
    }
    handoff->shared = shared;
    handoff->server = s;
    w->handoffs_out++;
    worker_post(w->world->workers[s->handoff_to], &handoff->mail);
}

void pool_adopt_server(struct worker *w, struct shared_pool *shared, struct server *s)
{
    struct pool *pool = shared->local[w->index];
    if (!pool)
        pool = worker_find_pool(w, shared->db_name, shared->user_name);
    w->handoffs_in++;
    if (!pool) {
        server_close_in_transit(s, w, shared, "its pool is gone");
        return;
    }
    /* RECONNECT and KILL close the pool's backends on every worker; this one was between two. */
    if (s->handoff_retired != atomic_load(&shared->retired)) {
        server_close_in_transit(s, w, shared, "RECONNECT or KILL while it was handed over");
        pool_grant_lost(pool);
        return;
    }
    server_join_worker(s, w, pool);
    if (!pool->paused && !TAILQ_EMPTY(&pool->waiting_clients))
        pool_link_first_waiter(pool, s, false);
    else
        pool_server_ready(pool, s);
}

/* Idle backends here, clients waiting on other workers: the longest waiters get them. */
static void pool_lend_idle(struct pool *pool, bool asked)
{
    int budget = pool->n_idle;
    struct server *s;
    while (budget-- > 0 && !pool->paused && atomic_load(&pool->shared->n_tickets) > 0 &&
           (s = TAILQ_FIRST(&pool->idle_servers)) != NULL) {
        if (pool_server_needs_check(pool, s))
            pool_start_check(pool, s); /* then released like any other */
        else
            pool_release(pool, s, !asked);
    }
}

void pool_serve_waiters(struct pool *pool)
{
    struct server *s;
    while (!pool->paused && pool->n_waiting > pool->n_checking &&
           (s = TAILQ_FIRST(&pool->idle_servers)) != NULL) {
        if (pool_server_needs_check(pool, s))
            pool_start_check(pool, s);
        else
            pool_server_ready(pool, s);
    }
    if (!pool->paused && pool->n_idle > 0 && atomic_load(&pool->shared->n_tickets) > 0)
        pool_lend_idle(pool, false);
    if (pool_needs_more_servers(pool) && !pool->paused && pool_borrow_for_waiters(pool))
        return;
    pool_launch_for_waiters(pool);
}

void pool_request_server(struct pool *pool, struct client *client)
{
    struct server *s = pool->paused ? NULL : TAILQ_FIRST(&pool->idle_servers);
    if (s && !pool_server_needs_check(pool, s)) {
        histogram_observe(&pool->stats.borrow_latency, worker_now(pool->worker) - client->wait_start);
        server_link_client(s, client);
        return;
    }
    TAILQ_INSERT_TAIL(&pool->waiting_clients, client, pool_link);
    client->in_pool_list = true;
    pool->n_waiting++;
    pool->stats.wait_count++;
    pool_take_ticket(pool, client);
    if (pool->paused)
        return;
    if (s) {
        pool_start_check(pool, s); /* the client gets it, or another, once the check is done */
        return;
    }
    if (pool_borrow_for_waiters(pool))
        return;
    if (pool_needs_more_servers(pool) && !pool_launch_server(pool) && pool_refuses_for_login_error(pool))
        pool_fail_for_login_error(pool);
}

static void pool_leave_queue(struct pool *pool, struct client *client, bool ticket_settled)
{
    if (!ticket_settled) {
        struct pool_registry *reg = pool_registry_of(pool);
        pool_registry_lock(reg);
        shared_pool_dequeue(pool->shared, &client->ticket);
        pool_registry_unlock(reg);
    }
    TAILQ_REMOVE(&pool->waiting_clients, client, pool_link);
    pool->n_waiting--;
    pool->stats.wait_time += worker_now(pool->worker) - client->wait_start;
}

void pool_cancel_wait(struct pool *pool, struct client *client)
{
    pool_leave_queue(pool, client, false);
}

void pool_server_ready(struct pool *pool, struct server *s)
{
    pool_release(pool, s, true);
}

/* Whether the backend could be handed to another worker now (there is another). */
static bool pool_server_movable(const struct pool *pool, struct server *s)
{
    return pool->worker->world->n_workers > 1 && server_can_leave_worker(s);
}

/* keep_for_own: a backend nobody here waits for may stay a moment for this worker's clients. */
static void pool_release(struct pool *pool, struct server *s, bool keep_for_own)
{
    s->ready_status = 'I';
    if (pool->paused) {
        server_set_idle(s);
        return;
    }
    struct pool_registry *reg = pool_registry_of(pool);
    unsigned to = 0;
    enum release release = RELEASE_TO_IDLE;
    /* Nobody waits anywhere: no lock, no look at whether it could travel (a ticket queued
     * meanwhile is caught below). */
    if (!TAILQ_EMPTY(&pool->waiting_clients) || atomic_load(&pool->shared->n_tickets) > 0) {
        bool movable = pool_server_movable(pool, s);
        double now = worker_now(pool->worker);
        pool_registry_lock(reg);
        release = pool_decide_release_locked(pool, movable, keep_for_own, now, &to);
        pool_registry_unlock(reg);
    }

    switch (release) {
    case RELEASE_TO_LOCAL_WAITER:
        pool_link_first_waiter(pool, s, true);
        return;
    case RELEASE_TO_OTHER_WORKER:
        pool_send_server(pool, s, to);
        return;
    case RELEASE_TO_IDLE_FOR_NOW:
        server_set_idle(s);
        return;
    case RELEASE_TO_IDLE:
        server_set_idle(s);
        /* A ticket queued while it went idle did not see it: look again (after the mail). */
        if (atomic_load(&pool->shared->n_tickets) > 0 && pool_server_movable(pool, s))
            pool_post_nudge(pool->worker, pool->shared);
        return;
    }
}

void pool_server_gone(struct pool *pool, struct server *s)
{
    if (s->purpose == INTERNAL_CHECK) {
        pool->n_checking--; /* the check failed: another backend is used */
        /* Not an error from the query: the connection died under it. The server is most likely
         * gone, and its other idle backends with it: drop them now, so that the waiting clients
         * wait for new ones instead of trying each dead one in turn. */
        while (!TAILQ_EMPTY(&pool->idle_servers))
            server_close(TAILQ_FIRST(&pool->idle_servers),
                         "server_check_query ended without an answer: the database server is gone");
    }
    /* Clients that were waiting for this one may need another. */
    pool_serve_waiters(pool);
    pool_nudge_first_waiter(pool);
}

/*
 * Failures that waiting can cure: a server restarting or shutting down (57P01-57P03), unreachable
 * or refusing connections (class 08, but not 08P01, a protocol mismatch), out of connections or
 * memory (53), an operating system error (58). Anything else (28P01 wrong password, 28000, 3D000
 * no such database, 42501 no CONNECT privilege, a failing connect_query) needs a person.
 */
bool pool_login_error_is_permanent(const char *sqlstate)
{
    if (strcmp(sqlstate, "08P01") == 0)
        return true;
    return !(strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57", 2) == 0 ||
             strncmp(sqlstate, "53", 2) == 0 || strncmp(sqlstate, "58", 2) == 0);
}

static void pool_arm_retry(struct pool *pool, double delay)
{
    struct timeval tv = timeval_from_seconds(delay);
    evtimer_add(pool->retry_timer, &tv);
}

/*
 * A transient failure: try the next host at once if some are still untried, else wait. The wait
 * starts at tens of milliseconds (a restart is over in a moment) and doubles up to
 * server_login_retry, so a server that stays down costs one attempt per delay, whatever the
 * number of clients waiting.
 */
static void pool_back_off(struct pool *pool, double now)
{
    double cap = pool->worker->cfg->server_login_retry;
    if (++pool->hosts_failed < pool->hosts.n) {
        pool->next_login_attempt = now;
        pool_arm_retry(pool, 0);
        return;
    }
    pool->hosts_failed = 0;
    if (cap < POOL_FIRST_RETRY_DELAY)
        cap = POOL_FIRST_RETRY_DELAY;
    pool->login_retry_delay = pool->login_retry_delay > 0 ? pool->login_retry_delay * 2 : POOL_FIRST_RETRY_DELAY;
    if (pool->login_retry_delay > cap)
        pool->login_retry_delay = cap;
    pool->next_login_attempt = now + pool->login_retry_delay;
    pool_arm_retry(pool, pool->login_retry_delay);
}

void pool_login_failed(struct pool *pool, size_t host_index, const char *sqlstate, const char *message,
                       bool permanent)
{
    double now = worker_now(pool->worker);
    free(pool->last_login_error);
    pool->last_login_error = strdup(message);
    snprintf(pool->last_login_sqlstate, sizeof(pool->last_login_sqlstate), "%s", sqlstate);
    pool->last_login_failure = now;
    pool->login_error_permanent = permanent;
    if (pool->login_error_permanent) {
        evtimer_del(pool->retry_timer); /* the next attempt waits the whole server_login_retry */
        pool->next_login_attempt = now + pool->worker->cfg->server_login_retry;
        /* Nobody else can serve them if no backend is logged in. */
        if (pool->n_idle + pool->n_used == 0)
            pool_fail_for_login_error(pool);
        return;
    }
    /* Backends opened together fail together: only one on the host in use moves things on. */
    if (host_index != pool->host_index || now < pool->next_login_attempt || pool->hosts.n == 0)
        return;
    pool->host_index = (pool->host_index + 1) % pool->hosts.n;
    pool_back_off(pool, now);
}

void pool_login_succeeded(struct pool *pool, size_t host_index)
{
    bool was_failing = pool->last_login_failure > 0;
    pool->host_index = host_index < pool->hosts.n ? host_index : 0;
    pool->hosts_failed = 0;
    pool->login_retry_delay = 0;
    pool->next_login_attempt = 0;
    pool->last_login_failure = 0;
    pool->login_error_permanent = false;
    free(pool->last_login_error);
    pool->last_login_error = NULL;
    evtimer_del(pool->retry_timer);
    /* The server is back, and only this one backend was tried: open the rest the waiting
     * clients need on the next turn of the loop, once this one is theirs. */
    if (was_failing)
        pool_arm_retry(pool, 0);
}

/* The retry delay is over: open the backend the waiting clients (or logins) need. */
static void pool_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pool *pool = arg;
    /* The delay is over, even if the timer fired a moment before the clock says so. */
    pool->next_login_attempt = 0;
    if (pool->worker->suspended)
        return; /* RESUME runs the janitor, which opens it */
    if (!TAILQ_EMPTY(&pool->login_clients))
        pool_request_defaults(pool);
    pool_serve_waiters(pool);
}

void pool_set_defaults(struct pool *pool, const struct param_set *server_params)
{
    if (param_set_copy(&pool->defaults, server_params) != 0)
        return;
    pool->has_defaults = true;
    struct pool_registry *reg = pool_registry_of(pool);
    pool_registry_lock(reg);
    if (!pool->shared->has_defaults && param_set_copy(&pool->shared->defaults, server_params) == 0)
        pool->shared->has_defaults = true;
    pool_registry_unlock(reg);
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

/* Keeps keys for the pool's backend logins; false if they are the ones it had (or no memory). */
static bool pool_take_passthrough(struct pool *pool, const struct scram_passthrough *keys,
                                  bool *first)
{
    if (pool->passthrough && pool_same_passthrough(pool->passthrough, keys))
        return false;
    *first = !pool->passthrough;
    if (*first && !(pool->passthrough = OPENSSL_malloc(sizeof(*keys))))
        return false;
    *pool->passthrough = *keys;
    pool->needs_client_key = true;
    pool->prewarm_wait_logged = false;
    /* New keys (first login, or a password changed in PostgreSQL) may succeed where the last
     * backend login failed: no waiting out server_login_retry for them. */
    pool->last_login_failure = 0;
    return true;
}

static bool pool_take_md5_secret(struct pool *pool, const char *secret)
{
    if (pool->md5_secret && strcmp(pool->md5_secret, secret) == 0)
        return false;
    char *copy = strdup(secret);
    if (!copy)
        return false;
    if (pool->md5_secret)
        OPENSSL_clear_free(pool->md5_secret, strlen(pool->md5_secret) + 1);
    pool->md5_secret = copy;
    pool->prewarm_wait_logged = false;
    pool->last_login_failure = 0;
    return true;
}

/* A client's login secret, learned on one worker, for this (database, user)'s pool on another. */
struct pool_secret_mail {
    struct mail mail;
    struct shared_pool *shared;
    bool has_passthrough;
    struct scram_passthrough passthrough;
    char *md5_secret;
};

static void pool_secret_mail_free(struct pool_secret_mail *m)
{
    OPENSSL_cleanse(&m->passthrough, sizeof(m->passthrough));
    if (m->md5_secret)
        OPENSSL_clear_free(m->md5_secret, strlen(m->md5_secret) + 1);
    free(m);
}

static void pool_secret_deliver(struct worker *w, struct mail *mail)
{
    struct pool_secret_mail *m = (struct pool_secret_mail *)mail;
    struct pool *pool = m->shared->local[w->index];
    bool first;

    if (pool && m->has_passthrough)
        pool_take_passthrough(pool, &m->passthrough, &first);
    if (pool && m->md5_secret)
        pool_take_md5_secret(pool, m->md5_secret);
    pool_secret_mail_free(m);
}

/*
 * The pool is one per (database, user) for the process: its copies on the other workers get the
 * secret too, so that any of them opens backends (min_pool_size) without a login of its own.
 * A copy created later gets it from the first login on its worker.
 */
static void pool_share_secret(struct pool *pool, const struct scram_passthrough *keys,
                              const char *md5_secret)
{
    struct world *world = pool->worker->world;
    struct worker *wk;

    if (!world || !pool->shared)
        return;
    WORLD_FOR_EACH_WORKER(world, i, wk) {
        struct pool_secret_mail *m;
        if (wk == pool->worker || !(m = mail_new(sizeof(*m), pool_secret_deliver)))
            continue;
        m->shared = pool->shared;
        m->has_passthrough = keys != NULL;
        if (keys)
            m->passthrough = *keys;
        if (md5_secret && !(m->md5_secret = strdup(md5_secret))) {
            pool_secret_mail_free(m);
            continue;
        }
        worker_post(wk, &m->mail);
    }
}

void pool_set_passthrough(struct pool *pool, const struct scram_passthrough *keys)
{
    bool first = false;
    if (!pool_take_passthrough(pool, keys, &first))
        return;
    log_info("pool %s/%s: SCRAM pass-through: backends now log in with the key of a client's login%s",
             pool->db_name, pool->user_name, first ? "" : " (the user's verifier changed)");
    pool_share_secret(pool, keys, NULL);
}

void pool_set_md5_secret(struct pool *pool, const char *secret)
{
    if (!pool_take_md5_secret(pool, secret))
        return;
    log_info("pool %s/%s: backends now log in with the md5 hash auth_query found for the user",
             pool->db_name, pool->user_name);
    pool_share_secret(pool, NULL, secret);
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
    pool_serve_waiters(pool);
}

bool pool_is_quiet(const struct pool *pool)
{
    return pool->n_used == 0;
}

void pool_reconnect(struct pool *pool, const char *reason)
{
    atomic_fetch_add(&pool->shared->retired, 1);
    /* Busy backends finish what they do, then close; idle ones close at once. */
    pool_retire_servers(&pool->used_servers);
    pool_retire_servers(&pool->new_servers);
    while (!TAILQ_EMPTY(&pool->idle_servers))
        server_close(TAILQ_FIRST(&pool->idle_servers), reason);
}

void pool_kill(struct pool *pool, const char *reason)
{
    atomic_fetch_add(&pool->shared->retired, 1);
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

/* query_wait_timeout passed for a client waiting for a backend (or for the pool's first one). */
static void pool_fail_waiter(struct pool *pool, struct client *c, double timeout)
{
    char message[768];
    pool->stats.wait_timeouts++;
    if (pool->last_login_failure > 0 && pool->n_idle + pool->n_used == 0) {
        /* Not a busy pool: the server has been unreachable the whole time. Say why. */
        snprintf(message, sizeof(message),
                 "query_wait_timeout: no connection to the database server could be opened within %g seconds: %s",
                 timeout, pool->last_login_error ? pool->last_login_error : "unknown error");
        client_fail(c, pool->last_login_sqlstate, message);
        return;
    }
    snprintf(message, sizeof(message),
             "query_wait_timeout: no database connection became free within %g seconds "
             "(pool_size %d for %s/%s)",
             timeout, pool->pool_size, pool->db_name, pool->user_name);
    client_fail(c, "57014", message);
}

/* Both queues are FIFO: once one client has waited less than the timeout, so has everyone behind. */
static void pool_expire_waiters(struct pool *pool, double now)
{
    double timeout = pool->worker->cfg->query_wait_timeout;
    struct client_list *queues[] = { &pool->waiting_clients, &pool->login_clients };
    if (timeout <= 0)
        return;
    for (size_t i = 0; i < sizeof(queues) / sizeof(queues[0]); i++) {
        while (!TAILQ_EMPTY(queues[i]) && now - TAILQ_FIRST(queues[i])->wait_start >= timeout)
            pool_fail_waiter(pool, TAILQ_FIRST(queues[i]), timeout);
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
                     s->host, s->port, cfg->server_connect_timeout);
            pool_login_failed(pool, s->host_index, "08006", message, false);
            server_close(s, message);
        }
    }
    for (s = TAILQ_FIRST(&pool->used_servers); s; s = next) {
        next = TAILQ_NEXT(s, link);
        if (s->state == SERVER_CLEANUP && now - s->cleanup_start > SERVER_CLEANUP_TIMEOUT)
            server_close(s, "still busy after its client left and its query was cancelled");
    }
    /* A check with no answer: the network to the server is cut (a server that is gone would
     * have closed the connection). Its end drops the pool's other idle backends too. */
    TAILQ_FOREACH(s, &pool->used_servers, link) {
        if (s->state == SERVER_INTERNAL && s->purpose == INTERNAL_CHECK && cfg->server_connect_timeout > 0 &&
            now - s->internal_start > cfg->server_connect_timeout) {
            log_warning("pool %s/%s: server_check_query got no answer from %s:%d within %g s "
                        "(server_connect_timeout): the network to the server may be cut; dropping "
                        "the idle backends", pool->db_name, pool->user_name, s->host, s->port,
                        cfg->server_connect_timeout);
            server_close(s, "server_check_query got no answer within server_connect_timeout");
            break; /* the lists changed under the loop; another such check waits for the next tick */
        }
    }
    /* Idle list is most-recently-used first: the oldest idle ones are at the tail. */
    int total = TAILQ_EMPTY(&pool->idle_servers) ? 0 : pool_total_server_count(pool);
    int most = pool_most_servers(pool);
    for (s = TAILQ_LAST(&pool->idle_servers, server_list); s; s = next) {
        next = TAILQ_PREV(s, server_list, link);
        bool too_old = cfg->server_lifetime > 0 && now - s->connect_time > cfg->server_lifetime;
        bool idle_too_long = cfg->server_idle_timeout > 0 && now - s->last_used > cfg->server_idle_timeout &&
                             total > pool->min_pool_size;
        bool too_many = total > most; /* pool_size lowered by a reload */
        if (too_old || idle_too_long || too_many || s->close_needed) {
            total--;
            server_close(s, too_old ? "server_lifetime reached" : idle_too_long ? "server_idle_timeout reached"
                            : too_many ? "more backends than pool_size" : "configuration changed");
        }
    }
}

/* The backend owes its client replies: a query is under way. */
static bool pool_query_running(const struct client *c)
{
    return c->pending_ready > 0 || c->unsynced;
}

/* query_timeout: the backend is closed with the client, and its query cancelled. */
static void pool_query_timed_out(struct server *s, double timeout)
{
    char message[256];
    snprintf(message, sizeof(message),
             "canceling statement due to query_timeout (%g s): the connection to the "
             "database server was closed", timeout);
    /* PostgreSQL would notice the closed connection only when the query ends: cancel it too,
     * so the backend stops now. */
    server_send_cancel(s);
    server_fail_client(s, "57014", message, "query_timeout");
}

/*
 * query_timeout and idle_transaction_timeout, over the backends linked to clients. As PgBouncer,
 * a query past query_timeout closes its backend (and the client); a client idle in a transaction
 * past idle_transaction_timeout is closed, and its transaction rolled back.
 */
static void pool_expire_transactions(struct pool *pool, double now)
{
    const struct config *cfg = pool->worker->cfg;
    struct server *s, *next;

    if (cfg->query_timeout <= 0 && cfg->idle_transaction_timeout <= 0)
        return;
    for (s = TAILQ_FIRST(&pool->used_servers); s; s = next) {
        next = TAILQ_NEXT(s, link);
        struct client *c = s->client;
        if (s->state == SERVER_INTERNAL && s->purpose == INTERNAL_PARAM_SYNC && c) {
            /* sluice's SETs before the client's query are part of it: a backend stuck in them
             * (a lock) must not hold the client past every timeout. */
            if (cfg->query_timeout > 0 && now - s->internal_start >= cfg->query_timeout)
                pool_query_timed_out(s, cfg->query_timeout);
            continue;
        }
        if (s->state != SERVER_ACTIVE || !c)
            continue;
        if (pool_query_running(c)) {
            if (cfg->query_timeout <= 0 || now - c->query_start < cfg->query_timeout)
                continue;
            pool_query_timed_out(s, cfg->query_timeout);
            continue;
        }
        double idle = now - (s->ready_time > c->last_activity ? s->ready_time : c->last_activity);
        if (s->ready_status == 'I' || cfg->idle_transaction_timeout <= 0 || c->forward_remaining > 0 ||
            idle < cfg->idle_transaction_timeout)
            continue;
        client_fail(c, "25P03", "terminating connection due to idle-in-transaction timeout "
                                "(idle_transaction_timeout)");
    }
}

int pool_waiting_all_pinned(const struct pool *pool)
{
    if (pool->n_waiting == 0 || pool->pool_size <= 0 ||
        atomic_load(&pool->shared->n_pinned) < pool->pool_size)
        return 0;
    return pool->n_waiting;
}

/* Said at most once per POOL_ALL_PINNED_LOG_INTERVAL while it lasts. */
static void pool_warn_all_pinned(struct pool *pool, double now)
{
    int waiting = pool_waiting_all_pinned(pool);

    if (waiting == 0 || now - pool->last_all_pinned_log < POOL_ALL_PINNED_LOG_INTERVAL)
        return;
    pool->last_all_pinned_log = now;
    log_warning("pool %s/%s: all %d backends are pinned by clients holding session state "
                "(temporary tables, advisory locks, LISTEN, cursors WITH HOLD...); %d client%s "
                "wait until one clears it or leaves (SHOW PINNED lists them)",
                pool->db_name, pool->user_name, pool->pool_size, waiting, waiting == 1 ? "" : "s");
}

void pool_janitor(struct pool *pool, double now)
{
    pool_warn_all_pinned(pool, now);
    pool_requeue_lost_grants(pool, now);
    pool_expire_waiters(pool, now);
    pool_expire_transactions(pool, now);
    pool_expire_servers(pool, now);
    while (pool->min_pool_size > 0 && pool_total_server_count(pool) < pool->min_pool_size &&
           !pool->disabled && pool_may_prewarm(pool) &&
           pool_launch_server_for(pool, LAUNCH_FOR_MIN_POOL))
        ;
    if (!TAILQ_EMPTY(&pool->login_clients))
        pool_request_defaults(pool); /* its first backend could not be opened yet (descriptors) */
    pool_serve_waiters(pool);
}
