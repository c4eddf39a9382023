/*
 * cancel.h: the keys sluice hands to clients in BackendKeyData, and how a CancelRequest, which
 * arrives on a fresh connection, finds the client it names. The "process id" a client sees encodes
 * a slot in this registry, so the look-up is an index, and the random key is checked in constant
 * time. With peering on (peer_id > 0) the "process id" also carries this instance's peer_id, so
 * that an instance behind the same load balancer that receives the cancel can forward it to the
 * owner; the random key keeps all its 32 bits either way, as PostgreSQL's own key has. Each worker
 * has its own registry, and the "process id" also names the worker, so that a cancel accepted by
 * any worker reaches the one whose client it names.
 */
#ifndef SLUICE_CANCEL_H
#define SLUICE_CANCEL_H

#include <stddef.h>
#include <stdint.h>

struct client;

/* PgBouncer's limit: peer ids take 14 bits of the process id. */
#define CANCEL_PEER_ID_MAX 16383
/*
 * With peering on, the process id keeps 17 bits for the worker and the slot: this many clients per
 * instance, shared evenly by its workers (cancel_registry_max_clients: 131070 with one worker, 2046
 * each with 64).
 */
#define CANCEL_PEERED_MAX_CLIENTS 131070u

/* Where a CancelRequest belongs. */
enum cancel_route {
    CANCEL_ROUTE_LOCAL,     /* this worker's (or no one's): look it up here */
    CANCEL_ROUTE_WORKER,    /* another worker's of this process: pass it on to that worker */
    CANCEL_ROUTE_PEER,      /* another instance's: forward it */
    CANCEL_ROUTE_LOOP,      /* another instance's, but already forwarded once: drop it */
};

/* Where cancel_registry_route sends a cancel: the fields its route names are set. */
struct cancel_destination {
    unsigned worker;        /* CANCEL_ROUTE_WORKER: that worker's index */
    int peer_id;            /* CANCEL_ROUTE_PEER, CANCEL_ROUTE_LOOP: the instance that owns it */
    uint32_t forward_pid;   /* CANCEL_ROUTE_PEER: the process id to send it, marked as forwarded */
};

struct cancel_slot {
    struct client *client;
    uint32_t pid;
    uint32_t key;
};

struct cancel_registry {
    struct cancel_slot *slots;
    size_t n_slots;
    /* Unused slots, most recently freed first: the index + 1 of the first (0: none), and an
     * unused slot's pid holds the next one's the same way (its client is NULL, so no pid
     * matches it). No array beside slots: every logged-in client costs one slot only. */
    size_t free_head;
    uint32_t generation;   /* varies pids so a stale key does not match a reused slot */
    uint32_t random_keys[64]; /* drawn from the CSPRNG in batches: one call per 64 logins */
    size_t n_random_keys;
    int peer_id;           /* 0: peering off; fixed for the life of the process */
    unsigned worker;       /* this registry's worker, of n_workers (fixed for the process's life) */
    unsigned n_workers;
};

/*
 * peer_id: this instance's (0: peering off); worker: the index of the worker that owns the
 * registry, of n_workers (1-64). All three are encoded in every process id handed out.
 */
void cancel_registry_init(struct cancel_registry *reg, int peer_id, unsigned worker,
                          unsigned n_workers);
void cancel_registry_free(struct cancel_registry *reg);
/* Registers client; writes its pid and random key. 0, or -1 if out of memory or of slots. */
int cancel_registry_add(struct cancel_registry *reg, struct client *client, uint32_t *pid,
                        uint32_t *key);
void cancel_registry_remove(struct cancel_registry *reg, uint32_t pid);
/* The most clients one worker's registry holds (the process id has room for so many). */
size_t cancel_registry_max_clients(const struct cancel_registry *reg);
/*
 * Where a cancel for pid goes. CANCEL_ROUTE_WORKER: to->worker is the worker whose registry holds
 * it. CANCEL_ROUTE_PEER: to->peer_id is the owner and to->forward_pid the process id to send it,
 * marked as forwarded so that a [peers] section pointing in a circle cannot bounce it between
 * instances for ever (the one bit a client's process id never has). A forwarded pid of this
 * instance routes like the pid itself.
 */
enum cancel_route cancel_registry_route(const struct cancel_registry *reg, uint32_t pid,
                                        struct cancel_destination *to);
/* The client whose pid and key these are, or NULL. A forwarded pid finds the client too. */
struct client *cancel_registry_find(const struct cancel_registry *reg, uint32_t pid, uint32_t key);

#endif
