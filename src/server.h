/*
 * server.h: one backend connection to PostgreSQL and its state machine:
 *   CONNECTING -> LOGIN -> IDLE <-> ACTIVE (linked to a client) -> ... -> CLOSED
 * with INTERNAL while it runs sluice's own queries (parameter sync, reset, connect_query).
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include "auth_scram.h"
#include "conn.h"
#include "params.h"
#include "prepared.h"
#include "session.h"
#include "worker.h"

enum server_state {
    SERVER_CONNECTING,
    SERVER_LOGIN,
    SERVER_IDLE,
    SERVER_ACTIVE,    /* linked to a client, passing its traffic */
    SERVER_INTERNAL,  /* running a query of sluice's own; replies are not forwarded */
    SERVER_BEING_CANCELED, /* back from its client, held until its cancel request has finished */
    SERVER_CLEANUP,   /* its client left mid-query: cancelled, replies still owed read and dropped */
    SERVER_CLOSED,
};

/* Why sluice runs its own query on a backend: decides what happens when it completes. */
enum server_internal_purpose {
    INTERNAL_NONE,
    INTERNAL_CONNECT_QUERY, /* after login, then ready */
    INTERNAL_PARAM_SYNC,    /* before a client's traffic, then active */
    INTERNAL_RESET,         /* server_reset_query after a session, then ready */
    INTERNAL_ROLLBACK,      /* a client left inside a transaction: roll it back, then reuse */
    INTERNAL_CHECK,         /* server_check_query before an idle backend is handed out */
};

struct server {
    TAILQ_ENTRY(server) link;       /* in one of the pool's lists, or worker->dead_servers */
    struct worker *worker;
    struct pool *pool;
    struct conn conn;
    enum server_state state;
    enum server_internal_purpose purpose;
    uint64_t id;
    char *host;                     /* the place of the pool's host list it connects to */
    int port;
    size_t host_index;
    unsigned handoff_to;            /* the worker it is being handed to (departing_servers) */
    unsigned handoff_retired;       /* shared_pool->retired when it left its worker */

    struct client *client;          /* linked client while ACTIVE or syncing for it */
    struct param_set params;        /* what this backend's session has now */
    struct prepared_server prepared; /* shared statements prepared on this backend */
    struct reply_queue replies;     /* replies owed to tracked messages, in order */
    struct session_backend session; /* unnamed statement, portals and errors sluice tracks */
    bool session_dirty;             /* a pinned client used it: reset before anyone else does */
    uint8_t linked_mode;            /* enum pool_mode of the last client linked: session resets */
    uint32_t backend_pid;
    uint32_t backend_key;
    struct cancel_request *cancel_in_flight; /* the open cancel connection for it, at most one */
    struct scram_client *scram;     /* only during SCRAM login */

    uint32_t forward_remaining;     /* bytes of the current message still to pass to the client
                                     * (SERVER_CLEANUP: to drop) */
    uint32_t cleanup_owed;          /* SERVER_CLEANUP: ReadyForQuery messages still to come */
    bool cleanup_cancel_again;      /* SERVER_CLEANUP: a query started while a cancel was open */
    double cleanup_start;
    char ready_status;              /* last ReadyForQuery status: 'I', 'T' or 'E' */
    bool error_in_internal;         /* sluice's own query failed */
    char internal_sqlstate[6];
    char *internal_error;
    bool close_needed;              /* retire instead of returning to the pool */
    bool reading_paused;            /* client's output is full */
    bool tcp_connected;
    bool awaiting_ssl_answer;       /* SSLRequest sent, 'S' or 'N' not read yet */
    bool tls;

    double connect_time;
    double last_used;
    double ready_time;              /* when its last ReadyForQuery reached the linked client */
    double internal_start;          /* when sluice's own query was sent */
    char local_addr[64];
};

/*
 * Starts connecting a new backend for pool (state CONNECTING), which the caller has counted
 * (pool_count_server); NULL on immediate failure, the count given back.
 */
struct server *server_connect(struct pool *pool);
/* Sends Terminate (if possible) and closes. The pool is told. */
void server_close(struct server *s, const char *reason);
/* Closes the backend and its linked client, which gets sqlstate and message (a FATAL). */
void server_fail_client(struct server *s, const char *sqlstate, const char *message,
                        const char *reason);
/* Runs server_check_query on an idle backend; the pool hears how it went (pool_server_checked). */
void server_run_check(struct server *s, const char *query);
/*
 * A message for the backend or a reply it owes could not be recorded (out of memory): what it
 * answers would no longer match. Its client, if any, gets 53200 and goes; the backend is closed
 * (during login: a failed login).
 */
void server_out_of_memory(struct server *s);
void server_free(struct server *s);

/*
 * A clean backend moves to another worker: server_can_leave_worker (its output is flushed, nothing
 * is linked or in flight), then server_leave_worker on the old worker's thread (out of its pool's
 * lists and loop), a mail, and server_join_worker on the new one's (into pool's idle list and w's
 * loop). A backend whose new worker has no pool for it any more is closed there with
 * server_close_in_transit.
 */
bool server_can_leave_worker(struct server *s);
void server_leave_worker(struct server *s);
void server_join_worker(struct server *s, struct worker *w, struct pool *pool);
void server_close_in_transit(struct server *s, struct worker *w, struct shared_pool *shared,
                             const char *reason);

/* Parks a clean backend in the pool's idle list. */
void server_set_idle(struct server *s);
/* Binds to a client; runs parameter sync first if the sessions differ. */
void server_link_client(struct server *s, struct client *c);
/*
 * Inside the client's transaction, after a RESET: gives the backend the client's settings again
 * before its next message. True if sluice's SETs are under way (client_resume follows).
 */
bool server_resync_params(struct server *s);
/*
 * Unbinds from its client when the client leaves. A backend with work of the client's under way is
 * cleaned (SERVER_CLEANUP: the query cancelled, a COPY failed, a batch synced, the replies read)
 * and then kept; one that cannot be cleaned (half a message sent) is closed, after the cancel.
 */
void server_client_left(struct server *s);
/* The transaction ended: unbinds from the client and hands itself back to the pool. */
void server_release(struct server *s);
/* Nothing is owed to the client any more: give the backend back if the transaction is over. */
void server_transaction_maybe_over(struct server *s);
/* Processes buffered input (after the client's output drained). */
void server_process_input(struct server *s);
void server_unpause(struct server *s);
/*
 * Asks PostgreSQL, on a new connection, to cancel what this backend is running. Until PostgreSQL
 * closes that connection the backend goes to no other client; a second request meanwhile is dropped.
 */
void server_send_cancel(struct server *s);
/* A backend in SERVER_CLEANUP longer than this is closed: its query ignored the cancel. */
#define SERVER_CLEANUP_TIMEOUT 10.0

#endif
