/*
 * autodb.c: the databases made from "*" (see autodb.h). They live in the worker's list, apart
 * from the configuration, so a reload rebuilds them from the new "*" line instead of losing them.
 * One is unused when none of its pools has a client or a backend; PgBouncer's rule.
 */
#include "autodb.h"

#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "client.h"
#include "log.h"
#include "pool.h"

struct autodb {
    TAILQ_ENTRY(autodb) link;
    struct config_database db;  /* "*" made concrete for this name; owned */
    double unused_since;        /* 0 while a pool of it has a client or a backend */
};

static struct autodb *autodb_lookup(const struct worker *w, const char *name)
{
    struct autodb *entry;
    TAILQ_FOREACH(entry, &w->autodbs, link)
        if (strcmp(entry->db.name, name) == 0)
            return entry;
    return NULL;
}

const struct config_database *autodb_find(const struct worker *w, const char *name)
{
    const struct config_database *db = config_find_database(w->cfg, name);
    if (db == config_fallback_database(w->cfg) && db)
        return NULL; /* "*" is a pattern, never a database of its own */
    if (db || !name)
        return db;
    struct autodb *entry = autodb_lookup(w, name);
    return entry ? &entry->db : NULL;
}

bool autodb_is_auto(const struct worker *w, const char *name)
{
    return !config_find_database(w->cfg, name) && autodb_lookup(w, name) != NULL;
}

const struct config_database *autodb_find_or_create(struct worker *w, const char *name)
{
    const struct config_database *db = autodb_find(w, name);
    const struct config_database *fallback = config_fallback_database(w->cfg);
    if (db || !fallback || !name || config_find_database(w->cfg, name) == fallback)
        return db;
    struct autodb *entry = calloc(1, sizeof(*entry));
    if (!entry || config_database_copy_as(&entry->db, fallback, name) != 0) {
        free(entry);
        log_error("database \"%s\" from \"*\": out of memory", name);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&w->autodbs, entry, link);
    log_info("database \"%s\" made from the \"*\" line: %s:%d, database %s", name,
             entry->db.host ? entry->db.host : "127.0.0.1", entry->db.port, entry->db.dbname);
    return &entry->db;
}

static void autodb_free(struct worker *w, struct autodb *entry)
{
    TAILQ_REMOVE(&w->autodbs, entry, link);
    config_database_clear(&entry->db);
    free(entry);
}

void autodb_reload(struct worker *w)
{
    const struct config_database *fallback = config_fallback_database(w->cfg);
    struct autodb *entry, *next;

    for (entry = TAILQ_FIRST(&w->autodbs); entry; entry = next) {
        next = TAILQ_NEXT(entry, link);
        struct config_database fresh;
        if (!fallback || config_find_database(w->cfg, entry->db.name) ||
            config_database_copy_as(&fresh, fallback, entry->db.name) != 0) {
            autodb_free(w, entry);
            continue;
        }
        config_database_clear(&entry->db);
        entry->db = fresh;
    }
}

static bool pool_in_use(const struct pool *pool)
{
    return pool_server_count(pool) > 0 || pool->n_active_clients + pool->n_idle_clients > 0 ||
           pool->n_waiting > 0 || !TAILQ_EMPTY(&pool->login_clients);
}

static bool autodb_in_use(const struct worker *w, const char *name)
{
    const struct pool *pool;
    TAILQ_FOREACH(pool, &w->pools, link)
        if (strcmp(pool->db_name, name) == 0 && pool_in_use(pool))
            return true;
    return false;
}

/* A closing or closed client may still point at the pool: it must outlive them. */
static bool pool_referenced(const struct worker *w, const struct pool *pool)
{
    const struct client *c;
    TAILQ_FOREACH(c, &w->clients, link)
        if (c->pool == pool)
            return true;
    TAILQ_FOREACH(c, &w->dead_clients, link)
        if (c->pool == pool)
            return true;
    return false;
}

/* Frees the database's pools; false (nothing freed) if one is still referenced. */
static bool autodb_free_pools(struct worker *w, const char *name)
{
    struct pool *pool, *next;
    TAILQ_FOREACH(pool, &w->pools, link)
        if (strcmp(pool->db_name, name) == 0 && (pool_in_use(pool) || pool_referenced(w, pool)))
            return false;
    for (pool = TAILQ_FIRST(&w->pools); pool; pool = next) {
        next = TAILQ_NEXT(pool, link);
        if (strcmp(pool->db_name, name) != 0)
            continue;
        TAILQ_REMOVE(&w->pools, pool, link);
        pool_destroy(pool);
    }
    return true;
}

void autodb_janitor(struct worker *w, double now)
{
    double timeout = w->cfg->autodb_idle_timeout;
    struct autodb *entry, *next;

    for (entry = TAILQ_FIRST(&w->autodbs); entry; entry = next) {
        next = TAILQ_NEXT(entry, link);
        /* A paused one is kept, as PgBouncer keeps it: RESUME finds it as it was. */
        if (autodb_in_use(w, entry->db.name) || admin_database_paused(w, entry->db.name)) {
            entry->unused_since = 0;
            continue;
        }
        if (entry->unused_since <= 0)
            entry->unused_since = now;
        if (timeout <= 0 || now - entry->unused_since < timeout)
            continue;
        if (!autodb_free_pools(w, entry->db.name))
            continue;
        log_info("database \"%s\" (from \"*\") unused for %g s: freed (autodb_idle_timeout)",
                 entry->db.name, now - entry->unused_since);
        autodb_free(w, entry);
    }
}

void autodb_free_all(struct worker *w)
{
    while (!TAILQ_EMPTY(&w->autodbs))
        autodb_free(w, TAILQ_FIRST(&w->autodbs));
}
