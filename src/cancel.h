/*
 * cancel.h: the keys sluice hands to clients in BackendKeyData, and how a CancelRequest, which
 * arrives on a fresh connection, finds the client it names. The "process id" a client sees encodes
 * a slot in this registry, so the look-up is an index, and the random key is checked in constant
 * time. A later worker id can take the top bits.
 */
#ifndef SLUICE_CANCEL_H
#define SLUICE_CANCEL_H

#include <stddef.h>
#include <stdint.h>

struct client;

struct cancel_slot {
    struct client *client;
    uint32_t pid;
    uint32_t key;
};

struct cancel_registry {
    struct cancel_slot *slots;
    size_t n_slots;
    size_t *free_slots;    /* stack of unused slot indexes */
    size_t n_free;
    uint32_t generation;   /* varies pids so a stale key does not match a reused slot */
    uint32_t random_keys[64]; /* drawn from the CSPRNG in batches: one call per 64 logins */
    size_t n_random_keys;
};

void cancel_registry_init(struct cancel_registry *reg);
void cancel_registry_free(struct cancel_registry *reg);
/* Registers client; writes its pid and random key. 0, or -1 if out of memory. */
int cancel_registry_add(struct cancel_registry *reg, struct client *client, uint32_t *pid,
                        uint32_t *key);
void cancel_registry_remove(struct cancel_registry *reg, uint32_t pid);
/* The client whose pid and key these are, or NULL. */
struct client *cancel_registry_find(const struct cancel_registry *reg, uint32_t pid, uint32_t key);

#endif
