/*
 * client.h: one client connection and its state machine:
 *   STARTUP -> AUTH -> LOGIN_WAIT -> IDLE <-> WAITING -> ACTIVE -> IDLE ... -> CLOSED
 * A client holds a backend only while ACTIVE; in transaction mode it gives it back at each
 * ReadyForQuery 'I', in session mode when it leaves.
 */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <netinet/in.h>
#include "auth_scram.h"
#include "conn.h"
#include "params.h"
#include "prepared.h"
#include "session.h"
#include "worker.h"

enum client_state {
    CLIENT_STARTUP,    /* reading SSLRequest/StartupMessage/CancelRequest */
    CLIENT_AUTH,       /* exchanging password messages */
    CLIENT_LOGIN_WAIT, /* authenticated; waiting for the pool's session defaults */
    CLIENT_IDLE,       /* logged in, no backend */
    CLIENT_WAITING,    /* has a message for a backend, queued in the pool */
    CLIENT_ACTIVE,     /* linked to a backend */
    CLIENT_CLOSING,    /* flushing a last message (an error) before closing */
    CLIENT_CLOSED,     /* waiting for the reaper */
};

struct client_lost_error;

enum client_auth_step {
    AUTH_STEP_NONE,
    AUTH_STEP_CLEARTEXT,
    AUTH_STEP_MD5,
    AUTH_STEP_SCRAM_FIRST,
    AUTH_STEP_SCRAM_FINAL,
    AUTH_STEP_TOKEN,
    AUTH_STEP_LOOKUP,  /* waiting for auth_query to find the user's secret */
};

/*
 * What only a login under way needs: made with the client, freed once its login is answered
 * (or with the client), so that a logged-in client does not carry it.
 */
struct client_login {
    TAILQ_ENTRY(client_login) link; /* worker->login_clients while listed */
    struct client *client;
    struct scram_server *scram;     /* only during SCRAM */
    struct auth_ticket *auth_ticket; /* its auth_query look-up, then its copy of the secret found */
    enum client_auth_step auth_step;
    bool listed;                    /* in worker->login_clients (oldest first: the login timeout) */
    uint8_t auth_method;            /* enum auth_type used for this login */
    uint8_t md5_salt[4];
};

struct client {
    TAILQ_ENTRY(client) link;       /* worker->clients, or worker->dead_clients once closed */
    TAILQ_ENTRY(client) pool_link;  /* pool->waiting_clients or pool->login_clients */

    struct worker *worker;
    struct conn conn;
    uint64_t id;
    enum client_state state;
    uint8_t pin_reason;             /* enum pin_reason */
    uint8_t pool_mode;              /* enum pool_mode of its pool at login: SET pool_mode applies
                                       to later logins */
    uint8_t admin_access;           /* enum admin_access */
    uint8_t addr_family;            /* AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC (not known) */

    struct pool *pool;
    struct limit_count *counted_database; /* counted against the client limits while set */
    struct limit_count *counted_user;
    struct server *server;          /* linked backend while ACTIVE */
    char *user;                     /* owned: one allocation holding user, then database */
    const char *database;           /* points into user's allocation */
    struct param_set params;        /* session settings this client asked for */
    struct session_tracking session; /* how its statements change them, and its pins */
    /* Its named prepared statements and its unnamed one (transaction mode): made by its first
     * Parse that needs them, NULL until then, so a client that never prepares one (an idle
     * one, most often) does not carry an empty table. */
    struct prepared_client *prepared;
    double pin_time;
    char *pin_statement;            /* the start of the statement that pinned it */
    struct client_login *login;     /* until its login is answered: NULL once logged in */
    struct client_lost_error *lost_error; /* what a lost backend's transaction reports: made when
                                             one is lost (client_backend_lost) */

    uint32_t cancel_pid;
    uint32_t cancel_key;

    /* transaction tracking on the client -> backend path */
    uint32_t forward_remaining;     /* bytes of the current message still to pass to the backend */
    uint32_t pending_ready;         /* ReadyForQuery replies the backend still owes (Query, Sync) */
    uint32_t discard_remaining;     /* bytes of a dropped message still to come */
    uint16_t port;

    /* One bit each, packed with the fields above: every idle client carries them. */
    bool in_pool_list : 1;
    bool pinned : 1;                /* keeps its backend until it leaves (session state) */
    bool registered_for_cancel : 1;
    bool cancel_pending : 1;        /* a CancelRequest came while sluice gave its backend its
                                       settings, before its statement was sent */
    bool unsynced : 1;              /* extended-protocol messages sent since the last Sync */
    bool reading_paused : 1;        /* backend's output is full */
    bool held_for_names : 1;        /* a new batch waits for session_awaits_names */
    bool batch_sealed : 1;          /* the last Sync, query or function call ends a batch
                                       whatever becomes of the messages before it */
    /* Its backend died inside a transaction (transaction mode), or its statement was cancelled
     * before it reached a backend: until the next Sync or query its messages are dropped, as
     * PostgreSQL skips to Sync after an error, and then it is told. */
    bool transaction_lost : 1;
    bool lost_error_sent : 1;       /* ErrorResponse sent: only ReadyForQuery is still owed */
    bool over_limit : 1;            /* accepted past max_client_conn: refused after startup */
    bool is_unix : 1;
    bool tls : 1;                   /* the connection was upgraded to TLS */
    bool direct_tls : 1;            /* TLS from the first byte (sslnegotiation=direct) */
    bool is_admin : 1;              /* logged in to the admin console, not a pool */
    bool tracks_prepared : 1;       /* max_prepared_statements > 0 at login (transaction mode) */

    double connect_time;
    double wait_start;              /* when it joined the wait queue */
    struct pool_ticket ticket;      /* its place in the queue every worker serves (pool_limits.h) */
    double query_start;             /* when the backend began to owe it a reply */
    double last_activity;
    uint8_t addr[16];               /* the peer's in_addr or in6_addr, as addr_family says, port
                                       its port: client_address() writes it out when a log line
                                       or SHOW CLIENTS needs it */
};

/* A client's address as the log and SHOW CLIENTS show it: inet_ntop's text, "unix" or "unknown". */
struct client_address {
    char text[INET6_ADDRSTRLEN];
};
/* By value, so that a log call can take client_address(c).text as it is. */
struct client_address client_address(const struct client *c);

/* Takes ownership of fd. NULL on failure (fd closed). */
struct client *client_create(struct worker *w, int fd, const struct sockaddr *addr, int addr_len,
                             bool is_unix);

/* Sends an ErrorResponse with severity FATAL and closes once it is written. */
void client_fail(struct client *c, const char *sqlstate, const char *message);
void client_failf(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Every state change goes through here, so the pool's client counts stay true. */
void client_set_state(struct client *c, enum client_state state);
/* The client proved who it is: find its pool and complete the login (client_auth.c calls it). */
void client_authenticated(struct client *c);
/* Closes now (unlinks its backend, which is kept only if clean). */
void client_close(struct client *c, const char *reason);
/* Frees the memory of a closed client (reaper only). */
void client_free(struct client *c);
/*
 * A CancelRequest for (pid, key) of w's registry: that client's running query is cancelled; one
 * that has not reached a backend yet is answered with 57014 and never runs; anything else is
 * ignored. requester_id: the connection that asked, for the log (it may be another worker's).
 */
void client_cancel_query(struct worker *w, uint32_t pid, uint32_t key, uint64_t requester_id);

/* The pool linked a backend to this waiting client. */
void client_server_linked(struct client *c, struct server *s);
/* The backend finished sluice's own work for this client (parameter sync): resume the client. */
void client_resume(struct client *c);
/* The backend answered for names the client's held batch waits on: it goes on if none is left. */
void client_names_settled(struct client *c);
/*
 * Its backend is gone (transaction mode, nothing half passed either way). The client stays: the
 * transaction under way fails with sqlstate and message, answered now for a query awaiting its
 * reply, or at its next message when it was idle in the transaction; the next transaction waits
 * for a new backend.
 */
void client_backend_lost(struct client *c, bool in_transaction, const char *sqlstate, const char *message);
/* The backend gave its last ReadyForQuery 'I' of the transaction (transaction mode). */
void client_transaction_done(struct client *c);
/* The pool knows its session defaults now: finish this client's login. */
void client_finish_login(struct client *c);
/* The backend's output drained: read from the client again. */
void client_unpause(struct client *c);
/* Processes buffered input (after a state change that allows progress). */
void client_process_input(struct client *c);

bool client_is_closed(const struct client *c);
/* Accepted past max_client_conn: counted in worker->n_refusing, not against the limit. */
void client_mark_over_limit(struct client *c);
/* Sends a client accepted past max_client_conn its 53300 and closes it (logged, rate-limited). */
void client_refuse_over_limit(struct client *c);

/*
 * Admin console: sends a reply the console deferred (PAUSE, WAIT_CLOSE) and lets the client
 * send its next command. The reply must end with ReadyForQuery.
 */
void client_admin_resume(struct client *c, const struct msgbuf *reply);

#endif
