/*
 * client_cache.c: blocks of places for struct client, one cache per worker (client_cache.h).
 * Built with AddressSanitizer, a place given back is poisoned until taken again, so that a
 * use after free is still reported (as it is for malloc's memory).
 */
#include "client_cache.h"

#include <stdlib.h>
#include <string.h>

#include "client.h"

#if defined(__SANITIZE_ADDRESS__)
#define CLIENT_CACHE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLIENT_CACHE_ASAN 1
#endif
#endif

#ifdef CLIENT_CACHE_ASAN
#include <sanitizer/asan_interface.h>
#define CLIENT_CACHE_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define CLIENT_CACHE_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define CLIENT_CACHE_POISON(p, n) ((void)(p), (void)(n))
#define CLIENT_CACHE_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Places per block: about 36 KB, below malloc's mmap threshold, so blocks come from the heap. */
#define CLIENT_CACHE_BLOCK_PLACES 64

/* An unused place: its first bytes link it to the next one. */
struct client_cache_place {
    struct client_cache_place *next;
};

struct client_cache_block {
    struct client_cache_block *next;
    struct client places[CLIENT_CACHE_BLOCK_PLACES];
};

void client_cache_init(struct client_cache *cache)
{
    memset(cache, 0, sizeof(*cache));
}

void client_cache_free(struct client_cache *cache)
{
    while (cache->blocks) {
        struct client_cache_block *block = cache->blocks;
        cache->blocks = block->next;
        CLIENT_CACHE_UNPOISON(block->places, sizeof(block->places));
        free(block);
    }
    client_cache_init(cache);
}

static void client_cache_put(struct client_cache *cache, struct client *c)
{
    struct client_cache_place *place = (struct client_cache_place *)c;
    place->next = cache->unused;
    cache->unused = place;
    cache->n_unused++;
    CLIENT_CACHE_POISON((char *)c + sizeof(*place), sizeof(*c) - sizeof(*place));
}

/* Adds a block; its places are handed out in address order. */
static bool client_cache_grow(struct client_cache *cache)
{
    struct client_cache_block *block = malloc(sizeof(*block));
    if (!block)
        return false;
    block->next = cache->blocks;
    cache->blocks = block;
    for (size_t i = CLIENT_CACHE_BLOCK_PLACES; i > 0; i--)
        client_cache_put(cache, &block->places[i - 1]);
    cache->n_places += CLIENT_CACHE_BLOCK_PLACES;
    return true;
}

struct client *client_cache_take(struct client_cache *cache)
{
    if (!cache->unused && !client_cache_grow(cache))
        return NULL;
    struct client_cache_place *place = cache->unused;
    cache->unused = place->next;
    cache->n_unused--;
    struct client *c = (struct client *)place;
    CLIENT_CACHE_UNPOISON(c, sizeof(*c));
    memset(c, 0, sizeof(*c));
    return c;
}

void client_cache_give_back(struct client_cache *cache, struct client *c)
{
    client_cache_put(cache, c);
}
