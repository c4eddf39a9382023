/*
 * pool.h: one pool per (database, backend user): its idle and busy backends, the clients waiting
 * for one in FIFO order, the size limit, and the session defaults its backends start with.
 */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include "auth_scram.h"
#include "config.h"
#include "hostlist.h"
#include "params.h"
#include "stats.h"
#include "worker.h"

struct pool_stats {
    uint64_t xact_count;
    uint64_t query_count;
    uint64_t bytes_received;   /* from clients */
    uint64_t bytes_sent;       /* to clients */
    uint64_t wait_count;
    double wait_time;          /* seconds, summed */
    double xact_time;          /* seconds a backend was linked to a client, summed */
    double query_time;         /* seconds from a query's first message to its ReadyForQuery, summed */
    uint64_t servers_connected;
    uint64_t servers_failed;
    uint64_t wait_timeouts;    /* clients closed by query_wait_timeout */
    uint64_t pin_events[16];   /* clients pinned, by enum pin_reason */
    struct histogram borrow_latency;  /* request for a backend -> linked */
    struct histogram query_latency;   /* query's first message -> ReadyForQuery */
};

struct pool {
    TAILQ_ENTRY(pool) link;
    struct worker *worker;

    /* identity, owned copies (a reload can change the config underneath) */
    char *db_name;             /* client-visible */
    char *user_name;           /* backend user */
    char *host;                /* as configured: one host or a comma-separated list */
    int port;
    char *port_list;           /* as configured, or NULL */
    struct hostlist hosts;     /* host and port split into the places to try, in order */
    enum target_session_attrs target; /* what a backend's server must be to be kept */
    size_t host_index;         /* where new backends go: the last host that worked */
    size_t hosts_failed;       /* hosts that failed in a row since one worked */
    char *dbname;              /* backend database */
    char *password;            /* backend password or NULL */
    bool server_auth_token;    /* log in with a fresh RDS IAM token instead of password */
    struct scram_passthrough *passthrough; /* a client's SCRAM keys, when password is NULL */
    char *md5_secret;          /* an auth_query user's md5 hash, when password is NULL */
    bool needs_client_key;     /* no password: backends log in with a client's SCRAM keys */
    bool prewarm_wait_logged;  /* said once that min_pool_size waits for a client's login */
    char *connect_query;
    char *application_name;
    enum pool_mode mode;
    int pool_size;
    int min_pool_size;
    bool disabled;             /* its database left the config: refuse new logins */
    bool paused;               /* PAUSE: hand out no backend until RESUME */

    struct server_list idle_servers;    /* most recently used first */
    struct server_list used_servers;    /* linked to a client or running sluice's own query */
    struct server_list new_servers;     /* connecting or logging in */
    int n_idle, n_used, n_new;

    /* In the process's pool registry, read and changed under its lock: */
    struct shared_pool *shared;         /* this (database, user) on every worker */
    struct limit_count *db_count;       /* backends and clients of this database (all users) */
    struct limit_count *user_count;     /* backends of this backend user (all databases) */
    int n_checking;                     /* idle backends running server_check_query */

    struct client_list waiting_clients; /* FIFO: have a query, need a backend */
    struct client_list login_clients;   /* authenticated, waiting for the pool's defaults */
    int n_waiting;
    int n_active_clients;               /* linked to a backend */
    int n_idle_clients;                 /* logged in, no backend */
    int n_pinned;                       /* clients pinned to their backend */

    struct param_set defaults;          /* what a fresh backend reports; known once has_defaults */
    bool has_defaults;

    double last_all_pinned_log;         /* when "every backend is pinned" was last logged */
    double last_login_failure;          /* time of the last failed backend login, 0 if none */
    double descriptor_retry_at;         /* out of descriptors for a backend: no new one before */
    char *last_login_error;             /* its message, shown to clients while it stands */
    char last_login_sqlstate[6];
    bool login_error_permanent;         /* waiting cannot help (28P01, 3D000...): clients are told */
    double next_login_attempt;          /* no backend is opened before this */
    double login_retry_delay;           /* grows while logins keep failing, up to server_login_retry */
    struct event *retry_timer;          /* opens the next backend once the delay is over */
    struct event *lend_timer;           /* waiters here: borrow a backend of another worker now? */
    double lend_at;                     /* when lend_timer fires, while it is pending */

    struct pool_stats stats;
};

struct pool *pool_create(struct worker *w, const struct config_database *db, const char *user_name,
                         const struct config *cfg);
/* Applies a reloaded config to an existing pool; servers on a changed address are retired. */
void pool_apply_config(struct pool *pool, const struct config_database *db, const struct config *cfg);
void pool_destroy(struct pool *pool);

/* This worker's backends of the pool: idle, used and connecting. */
int pool_server_count(const struct pool *pool);
/* The pool's backends on every worker: what pool_size is held to. */
int pool_total_server_count(struct pool *pool);
/* More backends than pool_size and the reserve allow (pool_size was lowered by a reload). */
bool pool_above_size(struct pool *pool);

/*
 * A logged-in client needs a backend for the message waiting in its buffer. Links an idle backend
 * now, or queues the client (starting a new backend if the pool has room).
 */
void pool_request_server(struct pool *pool, struct client *client);
/* Logins wait for the pool's session defaults: make sure a backend is on its way to report them. */
void pool_request_defaults(struct pool *pool);
/* A client that was waiting leaves (closed or timed out). */
void pool_cancel_wait(struct pool *pool, struct client *client);
/* Hands idle backends to waiting clients and opens more if the limits allow. */
void pool_serve_waiters(struct pool *pool);

/*
 * A client authenticated for this pool: counts it against max_db_client_connections and
 * max_user_client_connections, or refuses it (53300) and returns false.
 */
bool pool_admit_client(struct pool *pool, struct client *client);
/* The client leaves: it no longer counts against the client limits. */
void pool_forget_client(struct client *client);
/* A backend of this pool starts connecting (+1) or is closed (-1). */
void pool_count_server(struct pool *pool, int delta);

/*
 * A backend finished its login or its reset and is clean: it goes to the client that has waited
 * longest on any worker (a waiter of this worker's, or by a mail to another worker), or stays
 * idle here.
 */
void pool_server_ready(struct pool *pool, struct server *server);
/*
 * A backend released on another worker for a client waiting here arrives (mail): it joins this
 * worker's loop and goes to the first client waiting here, or is released as above.
 */
void pool_adopt_server(struct worker *w, struct shared_pool *shared, struct server *server);
/* The reaper sends a backend pool_server_ready gave to another worker (worker->departing_servers). */
void pool_dispatch_server(struct server *server);
/* server_check_query finished on an idle backend: a waiter gets it, or (failed) it is closed. */
void pool_server_checked(struct pool *pool, struct server *server, bool ok);
/* A backend is gone (closed by either side); start another if clients wait. */
void pool_server_gone(struct pool *pool, struct server *server);
/*
 * A backend to hosts[host_index] could not log in. A transient failure (PostgreSQL restarting,
 * unreachable) leaves the clients waiting while the next host, or after a growing delay the same
 * ones, are tried; a permanent one (wrong password, no such database) is told to the clients.
 */
void pool_login_failed(struct pool *pool, size_t host_index, const char *sqlstate, const char *message,
                       bool permanent);
/* Whether a login error with this SQLSTATE needs a person rather than time. */
bool pool_login_error_is_permanent(const char *sqlstate);
/* A backend logged in: the next ones go to the same host, with no delay. */
void pool_login_succeeded(struct pool *pool, size_t host_index);
/* The first backend reported the session defaults: let waiting logins finish. */
void pool_set_defaults(struct pool *pool, const struct param_set *server_params);

/*
 * A client of this pool logged in with SCRAM against a verifier: keep its ClientKey, so that
 * backends (now and later) log in as that user without a password (SCRAM pass-through).
 */
void pool_set_passthrough(struct pool *pool, const struct scram_passthrough *keys);
/* A client logged in against an md5 hash from auth_query: backends answer md5 with it, as PgBouncer. */
void pool_set_md5_secret(struct pool *pool, const char *secret);
/* Why min_pool_size cannot open backends now, or NULL (SHOW POOLS). */
const char *pool_prewarm_blocker(const struct pool *pool);

/* PAUSE: stop handing out backends (those in use finish their transactions). */
void pool_pause(struct pool *pool);
/* RESUME: hand idle backends to the clients that waited. */
void pool_resume(struct pool *pool);
/* True once a paused pool has no backend linked to a client. */
bool pool_is_quiet(const struct pool *pool);
/* RECONNECT: close every backend as soon as it is free; new ones take their place. */
void pool_reconnect(struct pool *pool, const char *reason);
/* KILL: close every client and backend of the pool now. */
void pool_kill(struct pool *pool, const char *reason);
/* Closes every backend of the pool now (their clients, if any, get an error). */
void pool_close_servers(struct pool *pool, const char *reason);

/*
 * Clients waiting while every backend the pool may open is held by a pinned client, 0 otherwise:
 * nothing frees a backend for them but a pinned client clearing its state or leaving.
 */
int pool_waiting_all_pinned(const struct pool *pool);

/* Periodic work: wait timeouts, idle/lifetime limits, min_pool_size, the all-pinned warning. */
void pool_janitor(struct pool *pool, double now);

#endif
