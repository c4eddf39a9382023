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

/* Appends the whole text exposition (format 0.0.4) to out: every worker's state, pools of the
 * same (database, user) summed, and one sample per worker of sluice_worker_*. The world stopped. */
void metrics_render(struct worker *w, struct msgbuf *out);

/* Periodic, worker 0 only: stats_period log line, systemd STATUS= (both stop the world when due). */
void metrics_janitor(struct worker *w, double now);

/* systemd notifications; no-ops without NOTIFY_SOCKET or without libsystemd. notify_ready runs on
 * w's own thread (it stops the world to count); notify_stopping with the world stopped. */
void notify_ready(struct worker *w);
void notify_reloading(struct worker *w);
void notify_stopping(struct worker *w);

#endif
