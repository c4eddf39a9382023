/*
 * pool_limits.c: the pool registry: named connection counts per database and per user, and the
 * shared record of each (database, backend user). A handful of names, looked up when a pool is
 * created or a client logs in, so lists are enough.
 */
#include "pool_limits.h"

#include <stdlib.h>
#include <string.h>

void limit_registry_init(struct limit_registry *r)
{
    memset(r, 0, sizeof(*r));
}

static void limit_list_free(struct limit_count *list)
{
    while (list) {
        struct limit_count *next = list->next;
        free(list->name);
        free(list);
        list = next;
    }
}

void limit_registry_free(struct limit_registry *r)
{
    limit_list_free(r->databases);
    limit_list_free(r->users);
    memset(r, 0, sizeof(*r));
}

static struct limit_count *limit_list_get(struct limit_count **list, const char *name)
{
    for (struct limit_count *c = *list; c; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    struct limit_count *c = calloc(1, sizeof(*c));
    if (!c || !(c->name = strdup(name))) {
        free(c);
        return NULL;
    }
    c->next = *list;
    *list = c;
    return c;
}

struct limit_count *limit_registry_database(struct limit_registry *r, const char *name)
{
    return limit_list_get(&r->databases, name);
}

struct limit_count *limit_registry_user(struct limit_registry *r, const char *name)
{
    return limit_list_get(&r->users, name);
}

bool limit_has_room(int count, int limit)
{
    return limit <= 0 || count < limit;
}

void pool_registry_init(struct pool_registry *reg)
{
    memset(reg, 0, sizeof(*reg));
    pthread_mutex_init(&reg->lock, NULL);
    limit_registry_init(&reg->limits);
}

void pool_registry_free(struct pool_registry *reg)
{
    while (reg->pools) {
        struct shared_pool *sp = reg->pools;
        reg->pools = sp->next;
        param_set_free(&sp->defaults);
        free(sp->db_name);
        free(sp->user_name);
        free(sp);
    }
    limit_registry_free(&reg->limits);
    pthread_mutex_destroy(&reg->lock);
}

void pool_registry_lock(struct pool_registry *reg)
{
    pthread_mutex_lock(&reg->lock);
}

void pool_registry_unlock(struct pool_registry *reg)
{
    pthread_mutex_unlock(&reg->lock);
}

struct shared_pool *pool_registry_shared(struct pool_registry *reg, const char *db_name,
                                         const char *user_name)
{
    for (struct shared_pool *sp = reg->pools; sp; sp = sp->next)
        if (strcmp(sp->db_name, db_name) == 0 && strcmp(sp->user_name, user_name) == 0)
            return sp;
    struct shared_pool *sp = calloc(1, sizeof(*sp));
    if (!sp || !(sp->db_name = strdup(db_name)) || !(sp->user_name = strdup(user_name)) ||
        !(sp->db_count = limit_registry_database(&reg->limits, db_name)) ||
        !(sp->user_count = limit_registry_user(&reg->limits, user_name))) {
        if (sp) {
            free(sp->user_name);
            free(sp->db_name);
        }
        free(sp);
        return NULL;
    }
    TAILQ_INIT(&sp->tickets);
    param_set_init(&sp->defaults);
    sp->next = reg->pools;
    reg->pools = sp;
    return sp;
}

void shared_pool_enqueue(struct shared_pool *sp, struct pool_ticket *ticket)
{
    if (ticket->queued)
        return;
    /* In order of since: a ticket put back in line (its backend was lost on the way) keeps its
     * place; a new one, the usual case, goes at the end at once. */
    struct pool_ticket *before = TAILQ_LAST(&sp->tickets, pool_ticket_list);
    while (before && before->since > ticket->since)
        before = TAILQ_PREV(before, pool_ticket_list, link);
    if (before)
        TAILQ_INSERT_AFTER(&sp->tickets, before, ticket, link);
    else
        TAILQ_INSERT_HEAD(&sp->tickets, ticket, link);
    ticket->queued = true;
    atomic_fetch_add(&sp->n_tickets, 1);
}

void shared_pool_dequeue(struct shared_pool *sp, struct pool_ticket *ticket)
{
    if (!ticket->queued)
        return;
    TAILQ_REMOVE(&sp->tickets, ticket, link);
    ticket->queued = false;
    atomic_fetch_sub(&sp->n_tickets, 1);
}

int shared_pool_worker_with_idle(const struct shared_pool *sp, size_t n_workers, size_t except)
{
    for (size_t i = 0; i < n_workers; i++)
        if (i != except && atomic_load(&sp->idle_on[i]) > 0)
            return (int)i;
    return -1;
}

void pool_registry_add_servers(struct pool_registry *reg, struct shared_pool *sp, int delta)
{
    pool_registry_lock(reg);
    atomic_fetch_add(&sp->n_servers, delta);
    sp->db_count->servers += delta;
    sp->user_count->servers += delta;
    pool_registry_unlock(reg);
}
