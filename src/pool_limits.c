/*
 * pool_limits.c: named connection counts per database and per user. A handful of names, looked up
 * when a pool is created or a client logs in, so a list is enough.
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
