/*
 * listener.h: the listening sockets (TCP addresses and the unix socket) of one worker.
 * accept() running out of descriptors pauses accepting for a moment instead of spinning.
 */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdbool.h>
#include "worker.h"

struct listener;

/* Opens one listening socket for an address; description is "host:port" for logs. 0 or -1. */
typedef int (*listener_open_fn)(struct worker *w, const struct sockaddr *addr, int addr_len,
                                const char *description);
/*
 * Resolves host ("*": every local address) and calls open_one for each address it has.
 * Returns how many opened, or -1 if host does not resolve (logged, naming setting).
 */
int listener_for_each_address(struct worker *w, const char *setting, const char *host, int port,
                              listener_open_fn open_one);

/* Opens every listener the config asks for. 0, or -1 with the reason logged. */
int listener_open_all(struct worker *w);
/* Stops accepting (shutdown) and closes the sockets; removes the unix socket file. */
void listener_close_all(struct worker *w);
/* The same, after accepting (and handing to the worker) every connection already queued. */
void listener_close_all_after_pending(struct worker *w);
/*
 * SHUTDOWN, before the listeners close: the kernel stops deferring accepts until a connection's
 * first bytes are in (TCP_DEFER_ACCEPT). A connection whose handshake is done but whose first bytes
 * are still on their way sits outside the accept queue, and close() resets it; with the deferral
 * off it joins the queue as soon as its bytes come, so a short grace before closing serves it.
 */
void listener_stop_deferring(struct worker *w);
/*
 * Worker 0: on, new TCP connections go to the worker steering.h picks by CPU among cpus (the
 * CPUs the process may run on: steering_allowed_cpus), by a program attached to the group of
 * sockets of each address, which every worker's socket is in; off, the kernel's hash picks
 * again. false if it could not be done on some address (logged).
 */
bool listener_steer_by_cpu(struct worker *w, bool on, const int *cpus, size_t n_cpus);
/* SUSPEND: stop accepting, the sockets kept open (the kernel queues new connections); RESUME. */
void listener_suspend_all(struct worker *w, bool suspended);

#endif
