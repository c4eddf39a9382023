/*
 * pool_limits.h: the connection counts that max_db_connections, max_user_connections,
 * max_db_client_connections and max_user_client_connections are checked against, in one registry
 * owned beside the pools (the worker's today; the shared pool registry once pools are shared).
 * Backends count under their pool's database (the name clients ask for) and backend user;
 * clients under the database and the user they logged in as.
 */
#ifndef SLUICE_POOL_LIMITS_H
#define SLUICE_POOL_LIMITS_H

#include <stdbool.h>

struct limit_count {
    struct limit_count *next;
    char *name;
    int servers; /* backends connecting or connected */
    int clients; /* logged-in clients */
};

struct limit_registry {
    struct limit_count *databases;
    struct limit_count *users;
    bool server_closed; /* a backend closed: pools waiting on a limit may go on */
};

void limit_registry_init(struct limit_registry *r);
void limit_registry_free(struct limit_registry *r);
/* The count for a database or user name, created at zero on first use; NULL if out of memory.
 * It lives as long as the registry. */
struct limit_count *limit_registry_database(struct limit_registry *r, const char *name);
struct limit_count *limit_registry_user(struct limit_registry *r, const char *name);

/* True while count stays below limit (0: no limit). */
bool limit_has_room(int count, int limit);

#endif
