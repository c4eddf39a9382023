/*
 * world_view.h: the process as the admin console and the metrics page show it. Each worker has its
 * own struct pool per (database, user); the operator sees one pool: the workers' pools grouped by
 * (database, user), or by database, with their counters summed. Also each worker's own figures
 * (SHOW WORKERS, sluice_worker_*). Everything here reads other workers' state: call it between
 * world_stop and world_resume.
 */
#ifndef SLUICE_WORLD_VIEW_H
#define SLUICE_WORLD_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "pool.h"
#include "worker.h"
#include "world.h"

/* Every pool of every worker; pool is each in turn (break leaves only the inner loop). */
#define WORLD_FOR_EACH_POOL(world, i, wk, pool)                                                    \
    WORLD_FOR_EACH_WORKER(world, i, wk)                                                            \
    TAILQ_FOREACH(pool, &(wk)->pools, link)

enum pool_group_key {
    POOL_GROUP_BY_POOL,     /* one group per (database, user): SHOW POOLS, per-pool metrics */
    POOL_GROUP_BY_DATABASE, /* one group per database: SHOW STATS, SHOW DATABASES */
};

/* One pool as the operator sees it: the pools of that name on the workers that have one. */
struct pool_group {
    const char *db_name;
    const char *user_name;   /* NULL when grouped by database */
    struct pool **pools;     /* n_pools, in worker order; pools[0] gives names, mode and size */
    size_t n_pools;
    size_t first_seen;       /* position of its first pool in worker 0's list, then worker 1's... */
};

struct pool_groups {
    struct pool **pools;        /* every pool of the process, group after group */
    size_t n_pools;
    struct pool_group *groups;  /* in order of first appearance: with one worker, its list order */
    size_t n_groups;
};

/* Groups every worker's pools. 0, or -1 when out of memory (out is then empty). */
int pool_groups_collect(struct world *world, enum pool_group_key key, struct pool_groups *out);
void pool_groups_free(struct pool_groups *groups);
/* The group of this database (and user, unless grouped by database), or NULL. */
const struct pool_group *pool_groups_find(const struct pool_groups *groups, const char *db_name,
                                          const char *user_name);

/* Adds one pool's counters and histograms to sum. */
void pool_stats_add(struct pool_stats *sum, const struct pool_stats *one);
/* The counters of the group's pools, summed. */
void pool_group_stats(const struct pool_group *group, struct pool_stats *sum);

/* The workers' login and TLS counters, summed. */
void world_stats_sum(struct world *world, struct worker_stats *sum);

/* One worker's own figures: SHOW WORKERS and the sluice_worker_* metrics. */
struct worker_figures {
    size_t clients;            /* client connections it serves, consoles included */
    size_t servers;            /* backends its pools hold now */
    uint64_t loop_iterations;
    double cpu_seconds;        /* its thread's CPU time; negative if it cannot be read */
    uint64_t handoffs_in;
    uint64_t handoffs_out;
};
void worker_figures_of(const struct worker *wk, struct worker_figures *out);
/* CPU time wk's thread has used, in seconds (any thread may ask); -1 if it cannot be read. */
double worker_cpu_seconds(const struct worker *wk);

#endif
