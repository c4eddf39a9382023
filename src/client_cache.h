/*
 * client_cache.h: the memory of one worker's clients. Places for struct client are taken from
 * malloc a block at a time and kept for the next client when one leaves, as PgBouncer's slab
 * cache does. Clients are long-lived and all one size: carved from the heap one by one, between
 * the short-lived buffers and login state of their logins, they leave holes no later
 * allocation fits (about 10% more memory per idle client after a burst of logins). Used by its
 * worker's thread only, or inside world_stop.
 */
#ifndef SLUICE_CLIENT_CACHE_H
#define SLUICE_CLIENT_CACHE_H

#include <stddef.h>

struct client;
struct client_cache_block;
struct client_cache_place;

struct client_cache {
    struct client_cache_block *blocks; /* every block taken, freed with the cache */
    struct client_cache_place *unused; /* places of clients that left, the latest first */
    size_t n_places;                   /* in all the blocks */
    size_t n_unused;
};

void client_cache_init(struct client_cache *cache);
/* Frees every block: no client may be left. */
void client_cache_free(struct client_cache *cache);
/* A zeroed place for one client, or NULL when out of memory. */
struct client *client_cache_take(struct client_cache *cache);
/* The place of a freed client, for the next one. */
void client_cache_give_back(struct client_cache *cache, struct client *c);

#endif
