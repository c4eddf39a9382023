/*
 * worker.h: one event loop and everything it owns: listeners, clients, pools, the cancel
 * registry, timers and counters. Nothing in the data path is global, so several workers (each with
 * its own event_base and SO_REUSEPORT listener) can run side by side later.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <event2/event.h>
#include "cancel.h"
#include "client_cache.h"
#include "conn.h"
#include "config.h"
#include "peer.h"
#include "pool_limits.h"
#include "log.h"
#include "proto.h"
#include "tls.h"
#include "userlist.h"
#include "world.h"

struct client;
struct server;
struct pool;
struct listener;
struct steering_watch;
struct evdns_base;
struct token_keyring;
struct server_token_signer;
struct admin_state;
struct metrics_state;
struct prepared_registry;
struct autodb;
struct auth_query;

TAILQ_HEAD(client_list, client);
TAILQ_HEAD(client_login_list, client_login);
TAILQ_HEAD(server_list, server);
TAILQ_HEAD(pool_list, pool);
TAILQ_HEAD(autodb_list, autodb);

struct worker_stats {
    uint64_t clients_accepted;
    uint64_t clients_rejected;   /* max_client_conn */
    uint64_t logins_ok;
    uint64_t logins_failed;
    uint64_t logins_ok_by_method[8];     /* by enum auth_type */
    uint64_t logins_failed_by_method[8]; /* by enum auth_type */
    uint64_t logins_ok_tls;              /* of logins_ok, over TLS */
    uint64_t logins_failed_tls;          /* of logins_failed, over TLS */
    uint64_t servers_connected;
    uint64_t servers_failed;
    uint64_t tls_handshakes;
    uint64_t tls_handshake_failures;
    uint64_t token_logins_ok;
    uint64_t token_failures[32];   /* by enum token_failure */
    uint64_t server_tokens_signed;       /* IAM tokens signed for backend logins */
    uint64_t server_token_login_failures;/* backend logins with such a token that failed */
};

struct worker {
    struct world *world;           /* the process: the other workers and what they share */
    unsigned index;                /* 0..n_workers-1: in cancel keys, SHOW WORKERS, metrics */
    pthread_t thread;              /* its thread (worker 0: the main thread) */
    struct mailbox mailbox;        /* mail from other workers (worker_post) */
    /* Read by other threads without stopping this one (watchdog, SHOW WORKERS): atomics. */
    atomic_uint_fast64_t loop_iterations; /* turns of its event loop */
    atomic_int_fast64_t last_turn_usec;   /* CLOCK_MONOTONIC microseconds of its last turn */
    uint64_t handoffs_in;          /* backends received from other workers */
    uint64_t handoffs_out;         /* backends sent to other workers */

    struct event_base *base;
    struct evdns_base *dns;
    struct config *cfg;            /* owned; swapped on reload */
    struct userlist *users;        /* owned; NULL when no auth_file */
    struct tls_contexts tls;       /* owned; rebuilt on reload */
    struct token_keyring *token_keys; /* owned; NULL when auth_token_keys is unset */
    struct server_token_signer *server_token_signer; /* owned; NULL: no server_auth_token */
    struct auth_query *auth_query; /* owned: auth_query's connections and cache of secrets */

    struct listener *listeners;    /* singly linked, owned */
    struct steering_watch *steering; /* worker 0's: new connections steered by CPU or not */
    struct client_list clients;    /* every live client */
    struct client_cache client_cache; /* the memory of its clients, live and gone */
    struct client_login_list login_clients; /* not yet logged in, oldest first (login timeout) */
    struct pool_list pools;
    struct autodb_list autodbs;    /* databases made from "*" on demand (autodb.c) */
    bool server_closed;            /* a backend closed: pools waiting on a limit may go on */
    struct cancel_registry cancels;
    struct peer_forwards peer_forwards; /* cancels on their way to other instances (peer.c) */

    struct client_list dead_clients;  /* closed, freed by the reaper after the current callback */
    struct server_list dead_servers;
    struct server_list departing_servers; /* handed to other workers: sent after the current callback */
    struct conn_flusher flusher;   /* writes each dirty connection once per loop iteration */
    struct event *reaper;
    bool reap_scheduled;
    struct event *janitor;         /* periodic: timeouts, lifetimes, min_pool_size */
    struct event *signal_events[4];

    struct prepared_registry *prepared; /* the process's statements (worker 0 owns it) */
    struct admin_state *admin;     /* owned by admin.c */
    struct metrics_state *metrics; /* owned by metrics.c */

    struct msgbuf scratch;         /* reused to build outgoing messages */
    size_t n_clients;              /* logged in or logging in, counted against max_client_conn */
    size_t n_refusing;             /* accepted past max_client_conn, being told so (53300) */
    struct log_rate refusal_log;   /* one line a second about refused clients */
    struct log_rate descriptor_log; /* one line a second about running out of descriptors */
    size_t n_servers;
    struct worker_stats stats;

    bool suspended;                /* SUSPEND: sockets not read, no accepts, no maintenance */
    bool shutting_down;
    bool draining;                 /* SHUTDOWN: serving its clients until they leave */
    double listen_until;           /* draining: its listeners close then (worker_janitor_cb) */
    double shutdown_deadline;
};

/* Seconds between log lines about an event that comes in floods (refusals, descriptor shortages). */
#define WORKER_FLOOD_LOG_INTERVAL 1.0

/*
 * Sets up worker number index of world: its loop and listeners; worker 0 also the signals and what
 * the workers share, and takes ownership of cfg (the others read worker 0's). Workers are set up
 * in order, 0 first. 0, or -1 (logged).
 */
int worker_init(struct worker *w, struct config *cfg, struct world *world, unsigned index);
/* Worker 0, once every worker has its sockets: steer new connections by CPU (steer_by_cpu). */
void worker_start_steering(struct worker *w);
/* Runs its loop until its shutdown completes (on the calling thread). */
int worker_run(struct worker *w);
/* Runs worker_run on a new thread (workers 1..n-1). */
int worker_start_thread(struct worker *w);
void worker_destroy(struct worker *w);

/* Seconds since the epoch, from the loop's cached clock. */
double worker_now(struct worker *w);

/* Re-reads the config file (and auth_file); a bad file keeps the old settings. */
void worker_reload(struct worker *w);
/* Stops accepting; lets transactions finish within shutdown_timeout. */
void worker_begin_shutdown(struct worker *w, const char *why);
/*
 * Stops listening (serving the connections the kernel already queued) and serves every client it
 * has until they leave, within shutdown_timeout: with so_reuseport another sluice on the same port
 * takes the new connections, so none is refused.
 */
void worker_begin_drain(struct worker *w, const char *why);

/* Both of the above for every worker of the process (signals, the SHUTDOWN command). */
void worker_shutdown_all(struct worker *self, const char *why);
void worker_drain_all(struct worker *self, const char *why);

/* Closed objects are freed once the current callback returns. */
void worker_schedule_reap(struct worker *w);

/* The pool for (database entry, user), created on first use. NULL if out of memory. */
struct pool *worker_get_pool(struct worker *w, const struct config_database *db,
                             const char *client_user);

/* This worker's pool of that (database, backend user), made if the database still exists. */
struct pool *worker_find_pool(struct worker *w, const char *db_name, const char *user_name);

/* Called by the listener for each accepted socket. */
void worker_accept(struct worker *w, int fd, const struct sockaddr *addr, int addr_len,
                   bool is_unix);

#endif
