/*
 * test_pool_limits.c: the pool registry's pure parts: one shared record per (database, user),
 * the counts of max_db_connections and max_user_connections shared by the records that name the
 * same database or user, and the queue of waiting clients' tickets, oldest first, where a ticket
 * put back in line keeps its place.
 */
#include <stdlib.h>
#include <string.h>

#include "pool_limits.h"
#include "tap.h"

static void ticket_at(struct pool_ticket *t, double since)
{
    memset(t, 0, sizeof(*t));
    t->since = since;
}

/* The queue's order as the tickets' since values, "1 2 3". */
static void queue_text(struct shared_pool *sp, char *out, size_t len)
{
    struct pool_ticket *t;
    out[0] = '\0';
    TAILQ_FOREACH(t, &sp->tickets, link) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%g", used ? " " : "", t->since);
    }
}

static void test_shared_records_and_counts(struct pool_registry *reg)
{
    struct shared_pool *a = pool_registry_shared(reg, "db1", "alice");
    struct shared_pool *b = pool_registry_shared(reg, "db1", "bob");
    struct shared_pool *c = pool_registry_shared(reg, "db2", "alice");
    ok(a && b && c, "three shared records made");
    ok(pool_registry_shared(reg, "db1", "alice") == a, "the same (database, user) finds the same record");
    ok(a->db_count == b->db_count && a->db_count != c->db_count, "db1's records share one database count");
    ok(a->user_count == c->user_count && a->user_count != b->user_count, "alice's records share one user count");
    ok(POOL_LIMIT_COUNT(a, true) == POOL_LIMIT_COUNT(c, true) &&
           POOL_LIMIT_COUNT(a, false) == POOL_LIMIT_COUNT(b, false),
       "POOL_LIMIT_COUNT names the user count (same_user) or the database count");

    pool_registry_add_servers(reg, a, 2);
    pool_registry_add_servers(reg, b, 1);
    pool_registry_add_servers(reg, c, 1);
    is_int(atomic_load(&a->n_servers), 2, "db1/alice counts its own backends");
    is_int(a->db_count->servers, 3, "db1 counts the backends of alice and bob");
    is_int(a->user_count->servers, 3, "alice counts her backends on db1 and db2");
    pool_registry_add_servers(reg, a, -2);
    is_int(atomic_load(&a->n_servers), 0, "closing them takes them out of the pool's count");
    is_int(a->db_count->servers, 1, "... and of the database's");
    is_int(a->user_count->servers, 1, "... and of the user's");
    ok(limit_has_room(1, 2) && !limit_has_room(2, 2) && limit_has_room(100, 0),
       "limit_has_room: below the limit, or no limit (0)");
}

static void test_ticket_order(struct pool_registry *reg)
{
    struct shared_pool *sp = pool_registry_shared(reg, "db3", "carol");
    struct pool_ticket t[5];
    char text[64];
    for (int i = 0; i < 4; i++) {
        ticket_at(&t[i], i + 1);
        shared_pool_enqueue(sp, &t[i]);
    }
    queue_text(sp, text, sizeof(text));
    is_str(text, "1 2 3 4", "new tickets queue in the order they came");
    is_int(atomic_load(&sp->n_tickets), 4, "n_tickets counts them");

    shared_pool_enqueue(sp, &t[1]);
    is_int(atomic_load(&sp->n_tickets), 4, "a ticket already queued is not queued twice");

    shared_pool_dequeue(sp, &t[0]);
    shared_pool_dequeue(sp, &t[2]);
    ok(!t[0].queued && !t[2].queued, "dequeued tickets say so");
    shared_pool_dequeue(sp, &t[2]);
    is_int(atomic_load(&sp->n_tickets), 2, "dequeuing twice counts once");

    shared_pool_enqueue(sp, &t[2]); /* its backend was lost: back in line in its old place */
    queue_text(sp, text, sizeof(text));
    is_str(text, "2 3 4", "a ticket put back in line goes before the newer ones");
    shared_pool_enqueue(sp, &t[0]);
    queue_text(sp, text, sizeof(text));
    is_str(text, "1 2 3 4", "the oldest put back goes first");
    ticket_at(&t[4], 3); /* as old as one queued: after it */
    shared_pool_enqueue(sp, &t[4]);
    queue_text(sp, text, sizeof(text));
    is_str(text, "1 2 3 3 4", "a ticket as old as a queued one goes after it");
    ok(TAILQ_NEXT(&t[2], link) == &t[4], "... right after it");
    is_int(atomic_load(&sp->n_tickets), 5, "n_tickets counts every ticket in line");
}

int main(void)
{
    struct pool_registry reg;
    pool_registry_init(&reg);
    test_shared_records_and_counts(&reg);
    test_ticket_order(&reg);
    pool_registry_free(&reg);
    return tap_done();
}
