/*
 * test_cancel.c: the cancel keys handed to clients, with peering off and on: each key finds its
 * client, a peer's key is routed to that peer, marked as forwarded, and never forwarded twice.
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
    uint32_t pid[2], key[2], forward_pid = 0;
    int peer_id = -1;

    cancel_registry_init(&reg, 0);
    ok(cancel_registry_add(&reg, CLIENT(0), &pid[0], &key[0]) == 0 &&
           cancel_registry_add(&reg, CLIENT(1), &pid[1], &key[1]) == 0,
       "unpeered: two clients are registered");
    ok(pid[0] < 0x80000000u && pid[1] < 0x80000000u, "unpeered: pids stay below 2^31");
    ok(cancel_registry_find(&reg, pid[0], key[0]) == CLIENT(0), "unpeered: a key finds its client");
    ok(cancel_registry_find(&reg, pid[0], key[0] ^ 1) == NULL, "unpeered: a wrong key finds nothing");
    is_int(cancel_registry_route(&reg, pid[1] | (7u << 17), &peer_id, &forward_pid), CANCEL_ROUTE_LOCAL,
           "unpeered: every cancel is handled here");
    cancel_registry_free(&reg);
}

static void test_peered_keys(void)
{
    struct cancel_registry reg, other;
    uint32_t pid, key, other_pid, other_key, forward_pid = 0;
    int peer_id = -1;

    cancel_registry_init(&reg, 5);
    cancel_registry_init(&other, CANCEL_PEER_ID_MAX);
    ok(cancel_registry_add(&reg, CLIENT(0), &pid, &key) == 0, "peered: a client is registered");
    ok(cancel_registry_add(&other, CLIENT(1), &other_pid, &other_key) == 0,
       "peered: a client of peer 16383 is registered");
    ok(pid < 0x80000000u && other_pid < 0x80000000u, "peered: pids stay below 2^31");
    is_int(cancel_registry_route(&reg, pid, &peer_id, &forward_pid), CANCEL_ROUTE_LOCAL,
           "peered: a cancel with our own peer id is handled here");
    ok(cancel_registry_find(&reg, pid, key) == CLIENT(0), "peered: our key finds its client");
    is_int(cancel_registry_route(&reg, other_pid, &peer_id, &forward_pid), CANCEL_ROUTE_PEER,
           "peered: a cancel with another peer's id is forwarded");
    is_int(peer_id, CANCEL_PEER_ID_MAX, "peered: to the peer whose id the key carries");
    is_int(forward_pid, other_pid | 0x80000000u, "peered: the pid is sent marked as forwarded");
    is_int(cancel_registry_route(&other, forward_pid, &peer_id, &forward_pid), CANCEL_ROUTE_LOCAL,
           "peered: the owner handles the forwarded cancel");
    ok(cancel_registry_find(&other, other_pid | 0x80000000u, other_key) == CLIENT(1),
       "peered: the forwarded pid finds the owner's client");
    is_int(cancel_registry_route(&reg, other_pid | 0x80000000u, &peer_id, &forward_pid),
           CANCEL_ROUTE_LOOP, "peered: a forwarded cancel that is not ours is not forwarded again");
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

    cancel_registry_init(&reg, 3);
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

int main(void)
{
    test_unpeered_keys();
    test_peered_keys();
    test_keys_are_random();
    return tap_done();
}
