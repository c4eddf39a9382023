/*
 * listener.h: the listening sockets (TCP addresses and the unix socket) of one worker.
 * accept() running out of descriptors pauses accepting for a moment instead of spinning.
 */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdbool.h>
#include "worker.h"

struct listener;

/* Opens every listener the config asks for. 0, or -1 with the reason logged. */
int listener_open_all(struct worker *w);
/* Stops accepting (shutdown) and closes the sockets; removes the unix socket file. */
void listener_close_all(struct worker *w);
/* The same, after accepting (and handing to the worker) every connection already queued. */
void listener_close_all_after_pending(struct worker *w);

#endif
