/*
 * steering.h: which worker a new TCP connection goes to, when there are several.
 *
 * Each worker has its own socket on the port (SO_REUSEPORT), and the kernel picks one of them for
 * each new connection: by a hash of the addresses, unless a program attached to the sockets picks.
 * With steer_by_cpu sluice attaches one that picks by the CPU the connection arrived on: that
 * CPU's place among the CPUs sluice may run on, modulo the number of workers. The connections of
 * a client thread then meet the worker of the CPU it ran on when it connected, instead of every
 * worker: on two cores shared with pgbench -c 50 -j 2 and PostgreSQL, two workers cost 1.04-1.05
 * times the CPU per transaction of one, against 1.11-1.12 by the hash (bench/RESULTS.md, which
 * also has the load where it makes no difference). Connections from the network arrive on the
 * CPU their network queue interrupts: spread as widely as the NIC's queues are.
 *
 * Where connections arrive on too few CPUs (a NIC with one queue, one client thread), one worker
 * would get them all: sluice watches what each worker's thread uses of its core, and goes back to
 * the hash if one is saturated while the rest idle (steering_unbalanced).
 *
 * Pure functions over plain arrays, unit-tested (but steering_allowed_cpus, which asks the
 * kernel); attaching the program is listener.c's, the watch is worker 0's (worker.c).
 */
#ifndef SLUICE_STEERING_H
#define SLUICE_STEERING_H

#include <stdbool.h>
#include <stddef.h>
#include <linux/filter.h>

/* auto steers where sluice may run on at most this many CPUs (see steering_wanted). */
#define STEERING_AUTO_MAX_CPUS 4

/*
 * Should new connections be steered, for steer_by_cpu = mode ("auto", "on", "off"), n_cpus CPUs
 * the process may run on, n_workers workers? Never for one worker, nor for more workers than
 * CPUs (no CPU would reach the others). auto: on a host of at most STEERING_AUTO_MAX_CPUS
 * CPUs, where the loops share the cores with the database and its clients and a wake-up per
 * client thread's burst counts most; off on bigger ones, where a client with fewer threads than
 * the host has CPUs would reach only some of the workers, and spreading each connection over all
 * of them counts more.
 */
bool steering_wanted(const char *mode, size_t n_cpus, size_t n_workers);

/* The CPUs the process may run on, ascending, into cpus (room for cap); how many. */
size_t steering_allowed_cpus(int *cpus, size_t cap);

/* The longest program the kernel takes (BPF_MAXINSNS). */
#define STEERING_MAX_PROGRAM 4096

/*
 * Builds into out (room for cap instructions) the classic BPF program that returns, for the CPU
 * a connection arrived on, the index of the worker's socket in the group: position of that CPU
 * in cpus (the CPUs the process may run on, ascending) modulo n_workers; a CPU not listed, its
 * number modulo n_workers. Sockets are indexed in the order they joined the group, which is the
 * order of the workers. Returns the program's length, or 0 if it does not fit (or n_workers < 2:
 * nothing to steer).
 */
size_t steering_build_program(const int *cpus, size_t n_cpus, unsigned n_workers,
                              struct sock_filter *out, size_t cap);

/* What the watch looks at over one window: the share of a core each worker's thread used. */
#define STEERING_SATURATED 0.85 /* a worker this busy cannot take more */
#define STEERING_IDLE_RATIO 0.5 /* while the rest, on average, use at most this part of it */
#define STEERING_WINDOWS 3      /* windows in a row before going back to the hash */

/*
 * Is steering leaving one worker saturated while the others, on average, use at most
 * STEERING_IDLE_RATIO of what it uses? busy[i]: the share of a core worker i used.
 */
bool steering_unbalanced(const double *busy, size_t n_workers);

#endif
