/*
 * pool_limits.h: the pool registry, the one thing every worker's pools share, under one lock:
 *  - the connection counts that max_db_connections, max_user_connections,
 *    max_db_client_connections and max_user_client_connections are checked against (backends
 *    count under their pool's database, the name clients ask for, and backend user; clients under
 *    the database and the user they logged in as);
 *  - one shared record per (database, backend user): how many backends it has on all workers
 *    (pool_size holds for the process), and the tickets of the clients waiting for one on any
 *    worker, oldest first, so that a backend released anywhere goes to the longest waiter.
 * Each worker keeps its own struct pool (pool.c) for the backends and clients it owns; pool.c
 * takes the lock to decide, and acts after releasing it.
 */
#ifndef SLUICE_POOL_LIMITS_H
#define SLUICE_POOL_LIMITS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/queue.h>
#include "config.h"
#include "params.h"

struct pool;

struct limit_count {
    struct limit_count *next;
    char *name;
    int servers; /* backends connecting or connected */
    int clients; /* logged-in clients */
};

struct limit_registry {
    struct limit_count *databases;
    struct limit_count *users;
};

/* A client waiting for a backend, as every worker sees it. Lives in the client. */
struct pool_ticket {
    TAILQ_ENTRY(pool_ticket) link; /* in shared_pool->tickets while queued */
    double since;                  /* when it started waiting */
    unsigned worker;               /* the client's */
    bool queued;                   /* under the lock: false once served, granted or gone */
    bool urgent;                   /* no backend of its worker's own is on its way back to it:
                                      a backend released on any worker goes to it at once */
};
TAILQ_HEAD(pool_ticket_list, pool_ticket);

struct shared_pool {
    struct shared_pool *next;
    char *db_name;
    char *user_name;
    struct limit_count *db_count;      /* max_db_connections' count for db_name (under the lock) */
    struct limit_count *user_count;    /* max_user_connections' count for user_name (under the lock) */
    atomic_int n_servers;              /* changed under the lock, read without it: backends on every worker, connecting ones and those
                                          on their way between workers included */
    struct pool_ticket_list tickets;   /* waiting clients of every worker, oldest first */
    atomic_int n_tickets;              /* changed under the lock, read without it */
    atomic_int n_pinned;               /* clients of every worker pinned to their backend */
    atomic_uint retired;               /* bumped by RECONNECT and KILL: a backend that left its
                                          worker before the last bump is closed where it arrives */
    /* Idle backends each worker holds: entry i changed by worker i only, read by any, to know
     * whom to ask for one. A worker that parks a backend checks n_tickets after counting it, and
     * one that queues a ticket checks these after counting it: one of the two sees the other. */
    atomic_int idle_on[CONFIG_MAX_WORKERS];
    struct param_set defaults;         /* what a fresh backend reports, once one has */
    bool has_defaults;
    /* Each worker's own pool for this (database, user), or NULL; entry i is written and read by
     * worker i only (hence outside the lock). */
    struct pool *local[CONFIG_MAX_WORKERS];
};

struct pool_registry {
    pthread_mutex_t lock;
    struct limit_registry limits;      /* under lock */
    struct shared_pool *pools;         /* under lock; freed only with the registry */
};

void pool_registry_init(struct pool_registry *reg);
void pool_registry_free(struct pool_registry *reg);
void pool_registry_lock(struct pool_registry *reg);
void pool_registry_unlock(struct pool_registry *reg);
/* Under the lock: the shared record for (database, backend user), made on first use; NULL if
 * out of memory. */
struct shared_pool *pool_registry_shared(struct pool_registry *reg, const char *db_name,
                                         const char *user_name);
/* Takes the lock: delta more backends for sp in its counts (pool_size's, max_db_connections' and
 * max_user_connections'), limits unchecked: a backend closed, or a place handed over by an
 * eviction. */
void pool_registry_add_servers(struct pool_registry *reg, struct shared_pool *sp, int delta);
/* The count of the limit pool p shares with other pools (a struct pool or a struct shared_pool):
 * max_user_connections' if same_user, else max_db_connections'. */
#define POOL_LIMIT_COUNT(p, same_user) ((same_user) ? (p)->user_count : (p)->db_count)
/* Under the lock: ticket joins the queue in order of since (new ones at the end), or leaves it
 * (if still queued). */
void shared_pool_enqueue(struct shared_pool *sp, struct pool_ticket *ticket);
/* A worker other than except, of the first n_workers, holding an idle backend of sp, or -1. */
int shared_pool_worker_with_idle(const struct shared_pool *sp, size_t n_workers, size_t except);
void shared_pool_dequeue(struct shared_pool *sp, struct pool_ticket *ticket);

void limit_registry_init(struct limit_registry *r);
void limit_registry_free(struct limit_registry *r);
/* The count for a database or user name, created at zero on first use; NULL if out of memory.
 * It lives as long as the registry. */
struct limit_count *limit_registry_database(struct limit_registry *r, const char *name);
struct limit_count *limit_registry_user(struct limit_registry *r, const char *name);

/* True while count stays below limit (0: no limit). */
bool limit_has_room(int count, int limit);

#endif
