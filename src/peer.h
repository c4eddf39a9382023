/*
 * peer.h: forwarding a CancelRequest to where the client it names lives: another worker of this
 * process, or the sluice instance that owns it when several sit behind one load balancer (peer_id
 * and [peers], as in PgBouncer).
 */
#ifndef SLUICE_PEER_H
#define SLUICE_PEER_H

#include <stdint.h>
#include <sys/queue.h>

#include "log.h"

struct worker;
struct peer_forward;

/* A worker's cancels on their way to peers, and the rate limit of the "dropped" log line. */
struct peer_forwards {
    TAILQ_HEAD(, peer_forward) active;
    struct log_rate dropped_log;
};

/*
 * Sends the CancelRequest (pid, key) to the [peers] entry for peer_id and forgets it once the peer
 * closes the connection, as PostgreSQL does once it has signalled the backend. A peer id with no
 * [peers] entry is dropped and logged.
 */
void peer_forward_cancel(struct worker *w, int peer_id, uint32_t pid, uint32_t key);
/*
 * Hands the CancelRequest (pid, key) to worker number `worker` of this process, which acts on it
 * as on a cancel it received itself (client_cancel_query). requester_id: the connection that asked.
 */
void peer_pass_cancel_to_worker(struct worker *w, unsigned worker, uint32_t pid, uint32_t key,
                                uint64_t requester_id);
/* A cancel not forwarded (unknown peer, or already forwarded once): logged, at most once a second. */
void peer_log_dropped_cancel(struct worker *w, int peer_id, const char *why);
void peer_forwards_init(struct peer_forwards *forwards);
/* Abandons the forwards still under way (shutdown). */
void peer_forward_free_all(struct worker *w);

#endif
