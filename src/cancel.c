/*
 * cancel.c: maps the (pid, key) pairs sluice gives clients back to the clients. A pid is
 *     peering off:  bit 31: 0          bits 30..22: generation   bits 21..0: place
 *     peering on:   bit 31: forwarded  bits 30..17: peer_id      bits 16..0: place
 * where place = (slot + 1) * n_workers + worker: the worker whose registry holds the client, and
 * its slot there. The worker is a digit of the place rather than a bit field of its own, so that
 * the room is shared evenly whatever the number of workers (a 6-bit field for 64 workers would
 * leave one worker 2046 slots, peered, where it had 131070), and with one worker the place is
 * slot + 1, as it was before there were workers. The generation varies pids so that a slot's next
 * client does not get the pid its last one had. Bit 31 is never set in a pid handed out: it marks
 * a forwarded cancel.
 */
#include "cancel.h"

#include <stdlib.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#define CANCEL_PLACE_BITS 22
#define CANCEL_PEERED_PLACE_BITS 17
#define CANCEL_GENERATION_MASK 0x1ffu /* 9 bits: pid stays below 2^31 */
#define CANCEL_FORWARDED_BIT 0x80000000u

static uint32_t cancel_place_mask(const struct cancel_registry *reg)
{
    return (1u << (reg->peer_id ? CANCEL_PEERED_PLACE_BITS : CANCEL_PLACE_BITS)) - 1;
}

void cancel_registry_init(struct cancel_registry *reg, int peer_id, unsigned worker,
                          unsigned n_workers)
{
    reg->peer_id = peer_id;
    reg->n_workers = n_workers > 0 ? n_workers : 1;
    reg->worker = worker < reg->n_workers ? worker : 0;
    reg->slots = NULL;
    reg->n_slots = 0;
    reg->free_head = 0;
    reg->generation = 1;
    reg->n_random_keys = 0;
}

void cancel_registry_free(struct cancel_registry *reg)
{
    free(reg->slots);
    cancel_registry_init(reg, reg->peer_id, reg->worker, reg->n_workers);
}

/* As many slots as fit below the mask, less one: with one worker the all-ones place is never
 * handed out, as before there were workers. */
size_t cancel_registry_max_clients(const struct cancel_registry *reg)
{
    return cancel_place_mask(reg) / reg->n_workers - 1;
}

/* Puts slot index at the head of the unused ones. */
static void cancel_slot_release(struct cancel_registry *reg, size_t index)
{
    reg->slots[index] = (struct cancel_slot){ .client = NULL, .pid = (uint32_t)reg->free_head };
    reg->free_head = index + 1;
}

static int cancel_registry_grow(struct cancel_registry *reg)
{
    size_t max_slots = cancel_registry_max_clients(reg);
    size_t new_count = reg->n_slots ? reg->n_slots * 2 : 256;
    if (new_count > max_slots)
        new_count = max_slots;
    if (new_count <= reg->n_slots)
        return -1;
    struct cancel_slot *slots = realloc(reg->slots, new_count * sizeof(*slots));
    if (!slots)
        return -1;
    reg->slots = slots;
    /* Push new slots so the lowest index is handed out first. */
    for (size_t i = new_count; i > reg->n_slots; i--)
        cancel_slot_release(reg, i - 1);
    reg->n_slots = new_count;
    return 0;
}

int cancel_registry_add(struct cancel_registry *reg, struct client *client, uint32_t *pid,
                        uint32_t *key)
{
    if (reg->free_head == 0 && cancel_registry_grow(reg) != 0)
        return -1;
    if (reg->n_random_keys == 0) {
        if (RAND_bytes((unsigned char *)reg->random_keys, sizeof(reg->random_keys)) != 1)
            return -1;
        reg->n_random_keys = sizeof(reg->random_keys) / sizeof(reg->random_keys[0]);
    }
    size_t slot = reg->free_head - 1;
    reg->free_head = reg->slots[slot].pid;
    uint32_t random_key = reg->random_keys[--reg->n_random_keys];
    reg->random_keys[reg->n_random_keys] = 0;
    uint32_t place = (uint32_t)(slot + 1) * reg->n_workers + reg->worker;
    uint32_t new_pid;
    if (reg->peer_id) {
        new_pid = ((uint32_t)reg->peer_id << CANCEL_PEERED_PLACE_BITS) | place;
    } else {
        reg->generation = (reg->generation + 1) & CANCEL_GENERATION_MASK;
        if (reg->generation == 0)
            reg->generation = 1;
        new_pid = (reg->generation << CANCEL_PLACE_BITS) | place;
    }
    reg->slots[slot] = (struct cancel_slot){ .client = client, .pid = new_pid, .key = random_key };
    *pid = new_pid;
    *key = random_key;
    return 0;
}

static struct cancel_slot *cancel_slot_for_pid(const struct cancel_registry *reg, uint32_t pid)
{
    uint32_t place = pid & cancel_place_mask(reg);
    uint32_t index_plus_one = place / reg->n_workers;
    if (place % reg->n_workers != reg->worker || index_plus_one == 0 || index_plus_one > reg->n_slots)
        return NULL;
    struct cancel_slot *slot = &reg->slots[index_plus_one - 1];
    if (!slot->client || slot->pid != pid)
        return NULL;
    return slot;
}

void cancel_registry_remove(struct cancel_registry *reg, uint32_t pid)
{
    struct cancel_slot *slot = cancel_slot_for_pid(reg, pid);
    if (!slot)
        return;
    cancel_slot_release(reg, (size_t)(slot - reg->slots));
}

enum cancel_route cancel_registry_route(const struct cancel_registry *reg, uint32_t pid,
                                        struct cancel_destination *to)
{
    if (reg->peer_id) {
        int owner = (int)((pid & ~CANCEL_FORWARDED_BIT) >> CANCEL_PEERED_PLACE_BITS);
        if (owner != reg->peer_id) {
            to->peer_id = owner;
            if (pid & CANCEL_FORWARDED_BIT)
                return CANCEL_ROUTE_LOOP;
            to->forward_pid = pid | CANCEL_FORWARDED_BIT;
            return CANCEL_ROUTE_PEER;
        }
    }
    unsigned worker = (pid & cancel_place_mask(reg)) % reg->n_workers;
    if (worker == reg->worker)
        return CANCEL_ROUTE_LOCAL;
    to->worker = worker;
    return CANCEL_ROUTE_WORKER;
}

struct client *cancel_registry_find(const struct cancel_registry *reg, uint32_t pid, uint32_t key)
{
    if (reg->peer_id)
        pid &= ~CANCEL_FORWARDED_BIT; /* a peer forwarded it to us */
    struct cancel_slot *slot = cancel_slot_for_pid(reg, pid);
    if (!slot || CRYPTO_memcmp(&slot->key, &key, sizeof(key)) != 0)
        return NULL;
    return slot->client;
}
