/*
 * world_view.c: every worker's pools grouped as the operator sees them, counters summed over the
 * workers, and each worker's own figures (see world_view.h). Callers hold the world stopped.
 */
#include "world_view.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "timeval.h"

/* A pool and where it came in the workers' lists: the tie-break that keeps worker order. */
struct placed_pool {
    struct pool *pool;
    size_t seen;
};

static int compare_placed(const void *a, const void *b, void *key_arg)
{
    const struct placed_pool *x = a, *y = b;
    const enum pool_group_key *key = key_arg;
    int order = strcmp(x->pool->db_name, y->pool->db_name);
    if (order == 0 && *key == POOL_GROUP_BY_POOL)
        order = strcmp(x->pool->user_name, y->pool->user_name);
    if (order == 0)
        order = x->seen < y->seen ? -1 : x->seen > y->seen;
    return order;
}

static int compare_groups(const void *a, const void *b)
{
    const struct pool_group *x = a, *y = b;
    return x->first_seen < y->first_seen ? -1 : x->first_seen > y->first_seen;
}

static bool same_group(const struct pool *a, const struct pool *b, enum pool_group_key key)
{
    return strcmp(a->db_name, b->db_name) == 0 &&
           (key == POOL_GROUP_BY_DATABASE || strcmp(a->user_name, b->user_name) == 0);
}

/* Sorted by name (worker order within a name), then cut where the name changes. */
static void pool_groups_build(struct placed_pool *placed, enum pool_group_key key,
                              struct pool_groups *out)
{
    struct pool_group *group = NULL;

    qsort_r(placed, out->n_pools, sizeof(*placed), compare_placed, &key);
    for (size_t i = 0; i < out->n_pools; i++) {
        out->pools[i] = placed[i].pool;
        if (group && same_group(group->pools[0], placed[i].pool, key)) {
            group->n_pools++;
            continue;
        }
        group = &out->groups[out->n_groups++];
        group->db_name = placed[i].pool->db_name;
        group->user_name = key == POOL_GROUP_BY_POOL ? placed[i].pool->user_name : NULL;
        group->pools = &out->pools[i];
        group->n_pools = 1;
        group->first_seen = placed[i].seen;
    }
    qsort(out->groups, out->n_groups, sizeof(*out->groups), compare_groups);
}

int pool_groups_collect(struct world *world, enum pool_group_key key, struct pool_groups *out)
{
    struct worker *wk;
    struct pool *pool;
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    WORLD_FOR_EACH_POOL(world, i, wk, pool)
        n++;
    struct placed_pool *placed = calloc(n ? n : 1, sizeof(*placed));
    out->pools = calloc(n ? n : 1, sizeof(*out->pools));
    out->groups = calloc(n ? n : 1, sizeof(*out->groups));
    if (!placed || !out->pools || !out->groups) {
        free(placed);
        pool_groups_free(out);
        return -1;
    }
    WORLD_FOR_EACH_POOL(world, i, wk, pool) {
        placed[out->n_pools].pool = pool;
        placed[out->n_pools].seen = out->n_pools;
        out->n_pools++;
    }
    pool_groups_build(placed, key, out);
    free(placed);
    return 0;
}

void pool_groups_free(struct pool_groups *groups)
{
    free(groups->pools);
    free(groups->groups);
    memset(groups, 0, sizeof(*groups));
}

const struct pool_group *pool_groups_find(const struct pool_groups *groups, const char *db_name,
                                          const char *user_name)
{
    for (size_t i = 0; i < groups->n_groups; i++) {
        const struct pool_group *group = &groups->groups[i];
        if (strcmp(group->db_name, db_name) == 0 &&
            (!group->user_name || !user_name || strcmp(group->user_name, user_name) == 0))
            return group;
    }
    return NULL;
}

static void histogram_add(struct histogram *sum, const struct histogram *one)
{
    for (int i = 0; i <= HISTOGRAM_BUCKETS; i++)
        sum->counts[i] += one->counts[i];
    sum->count += one->count;
    sum->sum += one->sum;
}

void pool_stats_add(struct pool_stats *sum, const struct pool_stats *one)
{
    sum->xact_count += one->xact_count;
    sum->query_count += one->query_count;
    sum->bytes_received += one->bytes_received;
    sum->bytes_sent += one->bytes_sent;
    sum->wait_count += one->wait_count;
    sum->wait_time += one->wait_time;
    sum->xact_time += one->xact_time;
    sum->query_time += one->query_time;
    sum->servers_connected += one->servers_connected;
    sum->servers_failed += one->servers_failed;
    sum->wait_timeouts += one->wait_timeouts;
    for (size_t i = 0; i < sizeof(sum->pin_events) / sizeof(sum->pin_events[0]); i++)
        sum->pin_events[i] += one->pin_events[i];
    histogram_add(&sum->borrow_latency, &one->borrow_latency);
    histogram_add(&sum->query_latency, &one->query_latency);
}

void pool_group_stats(const struct pool_group *group, struct pool_stats *sum)
{
    memset(sum, 0, sizeof(*sum));
    for (size_t i = 0; i < group->n_pools; i++)
        pool_stats_add(sum, &group->pools[i]->stats);
}

static void add_counts(uint64_t *sum, const uint64_t *one, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sum[i] += one[i];
}

void world_stats_sum(struct world *world, struct worker_stats *sum)
{
    /* Every field is a uint64_t counter: add them as an array. */
    _Static_assert(sizeof(struct worker_stats) % sizeof(uint64_t) == 0, "worker_stats holds counters");
    const size_t n = sizeof(struct worker_stats) / sizeof(uint64_t);
    struct worker *wk;

    memset(sum, 0, sizeof(*sum));
    WORLD_FOR_EACH_WORKER(world, i, wk)
        add_counts((uint64_t *)sum, (const uint64_t *)&wk->stats, n);
}

double worker_cpu_seconds(const struct worker *wk)
{
    clockid_t clock;
    struct timespec ts;
    if (pthread_getcpuclockid(wk->thread, &clock) != 0 || clock_gettime(clock, &ts) != 0)
        return -1;
    return timespec_seconds(ts);
}

void worker_figures_of(const struct worker *wk, struct worker_figures *out)
{
    const struct client *c;
    const struct pool *pool;

    memset(out, 0, sizeof(*out));
    TAILQ_FOREACH(c, &wk->clients, link)
        out->clients++;
    TAILQ_FOREACH(pool, &wk->pools, link)
        out->servers += (size_t)pool_server_count(pool);
    out->loop_iterations = atomic_load_explicit(&wk->loop_iterations, memory_order_relaxed);
    out->cpu_seconds = worker_cpu_seconds(wk);
    out->handoffs_in = wk->handoffs_in;
    out->handoffs_out = wk->handoffs_out;
}
