/*
 * metrics.h: what an operator watches from outside: a Prometheus /metrics endpoint served from
 * the worker's own event loop (evhttp), the periodic stats log line (stats_period), and systemd
 * notifications (READY, RELOADING, STOPPING, STATUS, WATCHDOG).
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include "proto.h"
#include "worker.h"

struct metrics_state;

/* Starts the HTTP endpoint if metrics_port is set. 0, or -1 (logged). */
int metrics_init(struct worker *w);
void metrics_free(struct worker *w);
/* After a reload: restart the endpoint if its address changed. */
void metrics_reconfigure(struct worker *w);

/* Appends the whole text exposition (format 0.0.4) to out. Pure over the worker's state. */
void metrics_render(struct worker *w, struct msgbuf *out);

/* Periodic: stats_period log line, systemd STATUS= and WATCHDOG=1. */
void metrics_janitor(struct worker *w, double now);

/* systemd notifications; no-ops without NOTIFY_SOCKET or without libsystemd. */
void notify_ready(struct worker *w);
void notify_reloading(struct worker *w);
void notify_stopping(struct worker *w);

#endif
