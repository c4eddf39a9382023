/*
 * auth_query.h: users missing from auth_file, looked up in PostgreSQL (auth_user, auth_query,
 * auth_dbname, as PgBouncer) over libpq's asynchronous API, and the cache of their answers
 * (auth_query_cache_ttl). One service for the process: worker 0's struct auth_query owns the
 * connections, the cache and its counters, so concurrent logins of one user on any worker wait
 * on one look-up. Every worker has a struct auth_query of its own for its clients' side: a login
 * on another worker asks worker 0 by mail and gets the answer (a copy of the secret) by mail.
 */
#ifndef SLUICE_AUTH_QUERY_H
#define SLUICE_AUTH_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "userlist.h"

struct worker;
struct client;
struct auth_query;
struct auth_cached_user;

/* Counters for metrics: look-ups by outcome, logins answered from the cache or a shared look-up.
 * Only worker 0's auth_query counts (the other workers' stay 0): read it, or sum them all. */
struct auth_query_stats {
    uint64_t lookups_found;
    uint64_t lookups_not_found;
    uint64_t lookups_failed;
    uint64_t cache_hits;
    uint64_t coalesced;        /* logins that joined a look-up already in flight */
};

/* What SHOW USERS says about a user the cache holds (worker 0's; the others hold no users). */
struct auth_query_user_info {
    bool found;                /* the last answer had a secret */
    double cached_since;       /* when that answer came; 0: none yet */
    uint64_t lookups;
    uint64_t cache_hits;
};

/* w's own: the service if w is worker 0 (or the only one), else its clients' side of it. */
struct auth_query *auth_query_new(struct worker *w);
void auth_query_free(struct auth_query *q);

enum auth_query_outcome {
    AUTH_QUERY_NOT_USED,   /* no auth_user for this database: the user is unknown */
    AUTH_QUERY_ANSWERED,   /* *entry set: the user's secret, or NULL for "no such user" */
    AUTH_QUERY_WAIT,       /* a look-up is under way: auth_query calls client_auth_lookup_done */
    AUTH_QUERY_FAILED,     /* the look-up could not start (logged) */
};

/*
 * Finds the secret of c->user, not in auth_file, for a login to c->database: from the cache while
 * it is younger than auth_query_cache_ttl, else from a look-up (shared with any in flight). q is
 * c's worker's. Off worker 0 the answer always comes later (AUTH_QUERY_WAIT), by mail.
 */
enum auth_query_outcome auth_query_begin(struct auth_query *q, struct client *c,
                                         struct userlist_entry **entry);
/* The secret the look-up found for c (c's own copy; NULL if none or not answered): later login steps. */
struct userlist_entry *auth_query_cached(struct auth_query *q, const struct client *c);
/* c closed: its look-up's answer will find nobody, and its copy of the secret is wiped. */
void auth_query_forget_client(struct auth_query *q, struct client *c);
/* Periodic: look-ups past server_connect_timeout fail, old answers and idle connections go. */
void auth_query_janitor(struct auth_query *q, double now);

const struct auth_query_stats *auth_query_stats(const struct auth_query *q);
/* Names the cache holds, each once, into names (up to cap); returns how many there are. */
size_t auth_query_user_names(const struct auth_query *q, const char **names, size_t cap);
/* false if the cache holds nothing for name. */
bool auth_query_user_info(const struct auth_query *q, const char *name,
                          struct auth_query_user_info *out);

#endif
