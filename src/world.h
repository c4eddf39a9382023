/*
 * world.h: the process: N workers, one thread and one event loop each, and the few things they
 * share. A client lives and dies on the worker that accepted it; a backend is owned by one worker
 * at a time and moves by a message to another worker's mailbox. What is shared is named here:
 * the pool registry (its own lock), the process-wide client count (an atomic), and the
 * configuration generation, which only changes while every worker is stopped (world_stop).
 */
#ifndef SLUICE_WORLD_H
#define SLUICE_WORLD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "pool_limits.h"

struct worker;

/*
 * A message for one worker: the sender embeds it in a larger struct, the receiving worker runs
 * deliver(receiver, mail) on its own thread, in the order mail was posted, and deliver frees it.
 */
struct mail;
typedef void (*mail_fn)(struct worker *receiver, struct mail *mail);
struct mail {
    struct mail *next;
    mail_fn deliver;
};

struct mailbox {
    pthread_mutex_t lock;
    struct mail *head, *tail;      /* under lock */
    int wake_fd;                   /* eventfd: a post wakes the receiver's loop */
    struct event *wake_event;
    bool wake_pending;             /* under lock: a wake-up is written and not read yet */
};

struct world {
    struct worker **workers;       /* n_workers, fixed for the life of the process */
    size_t n_workers;

    /* world_stop: who stopped the others (NULL: nobody), how often (it nests), how many of the
     * others are parked so far. */
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    struct worker *stopper;        /* under stop_lock */
    int stop_depth;                /* under stop_lock */
    size_t n_parked;               /* under stop_lock */

    struct pool_registry pools;    /* shared pool records and connection counts (its lock) */
    atomic_size_t n_clients;       /* logged in or logging in, all workers: max_client_conn */
    atomic_uint_fast64_t next_id;  /* client and backend ids, unique in the process */
    atomic_bool exiting;           /* shutdown finished on some worker: every loop ends */
};

int world_init(struct world *world, size_t n_workers);
void world_free(struct world *world);

/* Workers for cfg->workers (auto: the CPUs this process may run on). */
size_t world_worker_count(const struct config *cfg);

/*
 * Every worker but self stops at a safe point (between two callbacks, in its mailbox) and waits
 * until world_resume: in between, the caller may read and change any worker's state as if it
 * were its own. Nests; a worker waiting to stop the others is itself stopped meanwhile if another
 * got there first, so two callers never deadlock. Never call it holding a lock.
 */
void world_stop(struct worker *self);
void world_resume(struct worker *self);

#define WORLD_FOR_EACH_WORKER(world, i, wk)                                                        \
    for (size_t i = 0; i < (world)->n_workers && (((wk) = (world)->workers[i]), 1); i++)

/* A worker whose loop ended: it counts as stopped from now on, so world_stop never waits for it. */
void world_retire_worker(struct worker *self);

/* A new id for a client or backend, unique in the process (SHOW CLIENTS, KILL_CLIENT, logs). */
static inline uint64_t world_next_id(struct world *world)
{
    return atomic_fetch_add_explicit(&world->next_id, 1, memory_order_relaxed) + 1;
}

/* Hands mail to worker to (any thread may post, to itself too). */
/* A zeroed struct of size bytes whose first member is a struct mail that deliver delivers; NULL
 * if out of memory. */
void *mail_new(size_t size, mail_fn deliver);
void worker_post(struct worker *to, struct mail *mail);
/* The worker's own side: set up with its loop, run what was posted, free at the end. */
int mailbox_init(struct worker *w);
void worker_deliver_mail(struct worker *w);
void mailbox_free(struct worker *w);

#endif
