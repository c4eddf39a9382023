/*
 * test_cancel.c: the cancel keys handed to clients, with peering off and on, with one worker and
 * several: each key finds its client, another worker's key is routed to that worker, a peer's key
 * to that peer, marked as forwarded, and never forwarded twice.
 */
#include "cancel.h"

#include <stdbool.h>
#include <stdint.h>

#include "tap.h"

static int clients[3]; /* stand-ins: the registry only keeps the pointers */
#define CLIENT(i) ((struct client *)&clients[i])

static void test_unpeered_keys(void)
{
    struct cancel_registry reg;
    uint32_t pid[2], key[2];
    struct cancel_destination to;

    cancel_registry_init(&reg, 0, 0, 1);
    ok(cancel_registry_add(&reg, CLIENT(0), &pid[0], &key[0]) == 0 &&
           cancel_registry_add(&reg, CLIENT(1), &pid[1], &key[1]) == 0,
       "unpeered: two clients are registered");
    ok(pid[0] < 0x80000000u && pid[1] < 0x80000000u, "unpeered: pids stay below 2^31");
    ok(cancel_registry_find(&reg, pid[0], key[0]) == CLIENT(0), "unpeered: a key finds its client");
    ok(cancel_registry_find(&reg, pid[0], key[0] ^ 1) == NULL, "unpeered: a wrong key finds nothing");
    is_int(cancel_registry_route(&reg, pid[1] | (7u << 17), &to), CANCEL_ROUTE_LOCAL,
           "unpeered, one worker: every cancel is handled here");
    is_int(pid[0] & 0x3fffff, 1, "one worker: the pid's low bits are slot + 1, as before workers");
    cancel_registry_free(&reg);
}

static void test_peered_keys(void)
{
    struct cancel_registry reg, other;
    uint32_t pid, key, other_pid, other_key;
    struct cancel_destination to = { 0 };

    cancel_registry_init(&reg, 5, 0, 1);
    cancel_registry_init(&other, CANCEL_PEER_ID_MAX, 0, 1);
    ok(cancel_registry_add(&reg, CLIENT(0), &pid, &key) == 0, "peered: a client is registered");
    ok(cancel_registry_add(&other, CLIENT(1), &other_pid, &other_key) == 0,
       "peered: a client of peer 16383 is registered");
    ok(pid < 0x80000000u && other_pid < 0x80000000u, "peered: pids stay below 2^31");
    is_int(cancel_registry_route(&reg, pid, &to), CANCEL_ROUTE_LOCAL,
           "peered: a cancel with our own peer id is handled here");
    ok(cancel_registry_find(&reg, pid, key) == CLIENT(0), "peered: our key finds its client");
    is_int(cancel_registry_route(&reg, other_pid, &to), CANCEL_ROUTE_PEER,
           "peered: a cancel with another peer's id is forwarded");
    is_int(to.peer_id, CANCEL_PEER_ID_MAX, "peered: to the peer whose id the key carries");
    is_int(to.forward_pid, other_pid | 0x80000000u, "peered: the pid is sent marked as forwarded");
    is_int(cancel_registry_route(&other, to.forward_pid, &to), CANCEL_ROUTE_LOCAL,
           "peered: the owner handles the forwarded cancel");
    ok(cancel_registry_find(&other, other_pid | 0x80000000u, other_key) == CLIENT(1),
       "peered: the forwarded pid finds the owner's client");
    is_int(cancel_registry_route(&reg, other_pid | 0x80000000u, &to), CANCEL_ROUTE_LOOP, "peered: a forwarded cancel that is not ours is not forwarded again");
    ok(cancel_registry_find(&reg, other_pid, other_key) == NULL,
       "peered: another peer's key finds nothing here");
    cancel_registry_free(&reg);
    cancel_registry_free(&other);
}

/* The random part is drawn per client: 1000 keys, no two alike (a 32-bit collision in 1000 draws
 * has odds of about 1 in 10,000). */
static void test_keys_are_random(void)
{
    static uint32_t keys[1000];
    static int owner;
    struct cancel_registry reg;
    uint32_t pid;
    bool all_added = true, distinct = true;

    cancel_registry_init(&reg, 3, 0, 1);
    for (int i = 0; i < 1000; i++)
        all_added &= cancel_registry_add(&reg, (struct client *)&owner, &pid, &keys[i]) == 0;
    for (int i = 0; i < 1000 && distinct; i++)
        for (int j = i + 1; j < 1000; j++)
            if (keys[i] == keys[j])
                distinct = false;
    ok(all_added, "peered: 1000 clients are registered");
    ok(distinct, "peered: their random keys differ");
    cancel_registry_free(&reg);
}

#define N_WORKERS 4

/* Four workers, each with its own registry, as worker.c sets them up. */
static void init_workers(struct cancel_registry *regs, int peer_id, unsigned n_workers)
{
    for (unsigned i = 0; i < n_workers; i++)
        cancel_registry_init(&regs[i], peer_id, i, n_workers);
}

static void free_workers(struct cancel_registry *regs, unsigned n_workers)
{
    for (unsigned i = 0; i < n_workers; i++)
        cancel_registry_free(&regs[i]);
}

/* The worker is a digit of the pid's low 22 bits: place = (slot + 1) * n_workers + worker. */
static void test_worker_encoding(void)
{
    struct cancel_registry regs[N_WORKERS];
    uint32_t pid[N_WORKERS], key[N_WORKERS];
    bool all_added = true;

    init_workers(regs, 0, N_WORKERS);
    for (unsigned i = 0; i < N_WORKERS; i++)
        all_added &= cancel_registry_add(&regs[i], CLIENT(i % 3), &pid[i], &key[i]) == 0;
    ok(all_added, "4 workers: each registers a client");
    for (unsigned i = 0; i < N_WORKERS; i++)
        is_int(pid[i] & 0x3fffff, 1 * N_WORKERS + i, "4 workers: the first client's place is 4 + worker");
    ok(pid[0] < 0x80000000u && pid[3] < 0x80000000u, "4 workers: pids stay below 2^31");
    free_workers(regs, N_WORKERS);
}

static void test_worker_routes(void)
{
    struct cancel_registry regs[N_WORKERS];
    uint32_t pid[N_WORKERS][2], key[N_WORKERS][2];
    bool routed = true, found = true, not_elsewhere = true;

    init_workers(regs, 0, N_WORKERS);
    for (unsigned i = 0; i < N_WORKERS; i++)
        for (unsigned j = 0; j < 2; j++)
            cancel_registry_add(&regs[i], CLIENT(j), &pid[i][j], &key[i][j]);
    for (unsigned owner = 0; owner < N_WORKERS; owner++) {
        for (unsigned j = 0; j < 2; j++) {
            for (unsigned at = 0; at < N_WORKERS; at++) {
                struct cancel_destination to = { .worker = 99 };
                enum cancel_route route = cancel_registry_route(&regs[at], pid[owner][j], &to);
                if (at == owner)
                    routed &= route == CANCEL_ROUTE_LOCAL;
                else
                    routed &= route == CANCEL_ROUTE_WORKER && to.worker == owner;
                /* Another worker's registry never answers for it, right key or not. */
                if (at != owner)
                    not_elsewhere &= cancel_registry_find(&regs[at], pid[owner][j], key[owner][j]) == NULL;
            }
            found &= cancel_registry_find(&regs[owner], pid[owner][j], key[owner][j]) == CLIENT(j);
        }
    }
    ok(routed, "4 workers: a cancel is handled by the worker whose pid it names, passed on by the others");
    ok(found, "4 workers: the owner's registry finds each client by its key");
    ok(not_elsewhere, "4 workers: no other worker's registry finds it");
    ok(cancel_registry_find(&regs[2], (pid[2][0] & ~0x3fffffu) | 2u, key[2][0]) == NULL,
       "4 workers: a place with no slot (place < n_workers) finds nothing");
    cancel_registry_remove(&regs[1], pid[1][0]);
    ok(cancel_registry_find(&regs[1], pid[1][0], key[1][0]) == NULL,
       "4 workers: a removed client's key finds nothing");
    ok(cancel_registry_find(&regs[1], pid[1][1], key[1][1]) == CLIENT(1),
       "4 workers: its neighbour's still finds it");
    free_workers(regs, N_WORKERS);
}

/* Peering on with 64 workers: 14 bits of peer id, the worker and the slot share the pid. */
static void test_peered_workers(void)
{
    static struct cancel_registry regs[64];
    struct cancel_registry stranger;
    struct cancel_destination to = { 0 };
    uint32_t pid, key;

    init_workers(regs, CANCEL_PEER_ID_MAX, 64);
    cancel_registry_init(&stranger, 7, 0, 3);
    ok(cancel_registry_add(&regs[63], CLIENT(2), &pid, &key) == 0, "peered, 64 workers: worker 63 registers a client");
    is_int(pid >> 17, CANCEL_PEER_ID_MAX, "peered, 64 workers: bits 30..17 hold the peer id");
    is_int(pid & 0x1ffff, 1 * 64 + 63, "peered, 64 workers: bits 16..0 hold (slot + 1) * 64 + 63");
    is_int(cancel_registry_route(&stranger, pid, &to), CANCEL_ROUTE_PEER,
           "peered: another instance (3 workers) forwards it to its peer");
    is_int(to.peer_id, CANCEL_PEER_ID_MAX, "peered: to the peer in the key");
    uint32_t forwarded = to.forward_pid;
    is_int(cancel_registry_route(&regs[5], forwarded, &to), CANCEL_ROUTE_WORKER,
           "peered: the owner's worker 5 passes the forwarded cancel on");
    is_int(to.worker, 63, "peered: to worker 63");
    is_int(cancel_registry_route(&regs[63], forwarded, &to), CANCEL_ROUTE_LOCAL,
           "peered: worker 63 handles it");
    ok(cancel_registry_find(&regs[63], forwarded, key) == CLIENT(2),
       "peered: the forwarded pid finds the client at worker 63");
    free_workers(regs, 64);
    cancel_registry_free(&stranger);
}

/* The room of the pid is shared by the workers: CANCEL_PEERED_MAX_CLIENTS in all, peered. */
static void test_worker_capacity(void)
{
    static struct cancel_registry regs[64];
    static uint32_t pids[2046];
    struct cancel_registry one, three;
    uint32_t pid, key;
    bool all_added = true, in_range = true, found = true;

    cancel_registry_init(&one, 9, 0, 1);
    cancel_registry_init(&three, 9, 2, 3);
    init_workers(regs, 9, 64);
    is_int(cancel_registry_max_clients(&one), CANCEL_PEERED_MAX_CLIENTS,
           "peered, one worker: room for CANCEL_PEERED_MAX_CLIENTS, as before workers");
    is_int(cancel_registry_max_clients(&three), 43689, "peered, 3 workers: 43689 each (131071 / 3 - 1)");
    is_int(cancel_registry_max_clients(&regs[0]), 2046, "peered, 64 workers: 2046 each");
    for (size_t i = 0; i < 2046; i++) {
        all_added &= cancel_registry_add(&regs[63], CLIENT(i % 3), &pids[i], &key) == 0;
        in_range &= pids[i] < 0x80000000u && (pids[i] >> 17) == 9 && (pids[i] & 0x1ffff) % 64 == 63;
    }
    ok(all_added, "peered, 64 workers: worker 63 registers 2046 clients");
    ok(in_range, "peered, 64 workers: each pid keeps the peer id and names worker 63");
    ok(cancel_registry_add(&regs[63], CLIENT(0), &pid, &key) != 0,
       "peered, 64 workers: the 2047th is refused, not given another's pid");
    for (size_t i = 0; i < 2046; i++)
        found &= cancel_registry_route(&regs[0], pids[i], &(struct cancel_destination){ 0 }) == CANCEL_ROUTE_WORKER;
    ok(found, "peered, 64 workers: every one of them routes to its worker from worker 0");
    free_workers(regs, 64);
    cancel_registry_free(&one);
    cancel_registry_free(&three);
}

/* Slots of clients that left are handed out again, most recently freed first, past growth. */
static void test_slots_reused(void)
{
    enum { N = 600 }; /* past the first two sizes of the table (256, 512) */
    static int many[N];
    static uint32_t pids[N], keys[N];
    struct cancel_registry reg;
    bool added = true, found = true;
    uint32_t pid, key, second_pid, second_key;

    cancel_registry_init(&reg, 0, 0, 1);
    for (size_t i = 0; i < N; i++)
        added &= cancel_registry_add(&reg, (struct client *)&many[i], &pids[i], &keys[i]) == 0;
    ok(added, "600 clients are registered");
    for (size_t i = 0; i < N; i++)
        found &= cancel_registry_find(&reg, pids[i], keys[i]) == (struct client *)&many[i] &&
                 (pids[i] & 0x3fffff) == i + 1;
    ok(found, "each finds its own client, in slots taken lowest first");
    cancel_registry_remove(&reg, pids[10]);
    cancel_registry_remove(&reg, pids[500]);
    ok(cancel_registry_find(&reg, pids[10], keys[10]) == NULL, "a client that left is not found");
    ok(cancel_registry_add(&reg, CLIENT(0), &pid, &key) == 0 &&
           cancel_registry_add(&reg, CLIENT(1), &second_pid, &second_key) == 0,
       "two more are registered");
    is_int(pid & 0x3fffff, 501, "the slot freed last is taken first");
    is_int(second_pid & 0x3fffff, 11, "then the one freed before it");
    ok(pid != pids[500] && cancel_registry_find(&reg, pids[500], keys[500]) == NULL &&
           cancel_registry_find(&reg, pid, key) == CLIENT(0),
       "the slot's new client has a new pid, and the old one finds nothing");
    ok(cancel_registry_find(&reg, pids[599], keys[599]) == (struct client *)&many[599],
       "the others are still found");
    cancel_registry_free(&reg);
}

int main(void)
{
    test_unpeered_keys();
    test_peered_keys();
    test_keys_are_random();
    test_worker_encoding();
    test_worker_routes();
    test_peered_workers();
    test_worker_capacity();
    test_slots_reused();
    return tap_done();
}
