/*
 * session.h: what transaction pooling does to a client's messages so that session state behaves
 * as on a dedicated connection: protocol-level prepared statements renamed to shared backend
 * statements and prepared wherever the client lands, statements that leave session state
 * detected (the client is then pinned to its backend), and the replies to messages sluice adds
 * on its own kept from the client.
 */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "params.h"

struct client;
struct server;
struct prepared_statement;
struct prepared_taken;

/* What the backend's next replies to sluice-tracked messages are, in order. */
enum reply_kind {
    REPLY_PARSE,          /* ParseComplete for the client */
    REPLY_PARSE_OURS,     /* ParseComplete for a Parse sluice added: not for the client */
    REPLY_PARSE_DUPLICATE,/* the error (42P05) of a Parse sluice repeats for a name the client
                             already has: replaced by one that names the client's statement */
    REPLY_CLOSE,          /* CloseComplete for the client */
    REPLY_CLOSE_OURS,     /* CloseComplete for a Close sluice added */
    REPLY_BIND,           /* BindComplete for the client */
    REPLY_BIND_OURS,      /* BindComplete for a Bind sluice added */
    REPLY_EXECUTE_OURS,   /* CommandComplete of a command sluice runs for the client's (retagged),
                             or of the client's DISCARD ALL */
    REPLY_SYNC,           /* ReadyForQuery ending a Sync or a simple Query */
};

/*
 * Statements that act on the client's own prepared statements, answered by sluice so a shared
 * backend never runs them (its statements belong to every client); and statements passed on as
 * they are whose Execute sluice must tell from others' (see session_backend.pipelined).
 */
enum session_command {
    SESSION_COMMAND_NONE,
    SESSION_COMMAND_DEALLOCATE,      /* DEALLOCATE name */
    SESSION_COMMAND_DEALLOCATE_ALL,  /* DEALLOCATE ALL */
    SESSION_COMMAND_DISCARD_ALL,     /* DISCARD ALL */
    SESSION_COMMAND_CLOSES_TRANSACTION, /* COMMIT or ROLLBACK, not AND CHAIN: passed on */
    SESSION_COMMAND_EMPTY_QUERY,     /* no statement at all: passed on */
};

/* The index-th CommandComplete of a query gets the tag of command instead of the backend's. */
struct reply_retag {
    uint32_t index;
    uint8_t command;                 /* enum session_command */
    struct prepared_taken *taken;    /* the client's names it took: given back if it never ran */
};

struct reply_expectation {
    enum reply_kind kind;
    struct prepared_statement *stmt; /* the statement a Parse prepares or a Bind uses (held) */
    uint64_t binding;                /* REPLY_PARSE: the client's name it binds (serial), or 0 */
    char *name;                      /* owned: REPLY_BIND, its portal if tracked in
                                        session_backend.portals; REPLY_PARSE_DUPLICATE, the
                                        client's statement name */
    struct prepared_taken *taken;    /* REPLY_CLOSE, REPLY_EXECUTE_OURS: the client's names its
                                        Close or command took, given back if it never runs */
    struct reply_retag *retags;      /* REPLY_SYNC, REPLY_EXECUTE_OURS: owned, or NULL */
    uint32_t n_retags;
    uint32_t completes;              /* CommandCompletes seen so far */
    bool query;                      /* REPLY_SYNC: of a simple Query or function call, which
                                        the backend ignores after an earlier error in an
                                        unsynced pipeline (no ReadyForQuery then) */
    uint64_t unnamed_serial;         /* query: the client's unnamed statement it cleared (its
                                        Parse's serial, 0: none), back if the query is skipped */
    uint8_t unnamed_command;
    uint32_t untracked;              /* query: Executes and Describes sent just before it (after
                                        the last message with an expectation) whose last replies
                                        (CommandComplete, EmptyQueryResponse, PortalSuspended,
                                        RowDescription, NoData) are still to come */
};

struct reply_queue {
    struct reply_expectation *items; /* ring; NULL until first used */
    uint32_t head;
    uint32_t count;
    uint32_t cap;
};

void reply_queue_free(struct reply_queue *q);
void reply_queue_clear(struct reply_queue *q);

/* A portal the client bound to a statement of enum session_command. */
struct session_portal {
    char *name;
    char *statement;       /* DEALLOCATE name: the name, as Postgres reads it */
    uint8_t command;
    bool done;             /* executed: PostgreSQL runs a portal once (55000 after) */
};

/* What transaction pooling keeps about one backend beyond the reply queue. */
struct session_backend {
    uint64_t unnamed_client;         /* the client whose unnamed statement the backend holds */
    uint64_t unnamed_serial;         /* and which of its Parses; 0: none sluice knows of */
    bool skipping;                   /* an error (the backend's, or one sluice raised) in the
                                        client's pipeline with no Sync after it yet: the backend
                                        skips to Sync, the client's messages pass as is */
    struct session_portal *portals;  /* portals of enum session_command statements */
    size_t n_portals;
    uint32_t untracked;              /* Executes and Describes passed on since the last message
                                        given an expectation: see reply_expectation.untracked */
    bool executed;                   /* an Execute passed on since the client's last Sync or
                                        simple query (not one of the empty query): the
                                        transaction's status is not known */
    bool pipelined;                  /* and one of them ran a statement in the transaction open
                                        now (PostgreSQL's XACT_FLAGS_PIPELINING): DISCARD ALL
                                        then fails. Not after an Execute of COMMIT, ROLLBACK or
                                        DISCARD ALL, which ends the transaction, nor for one of
                                        an empty query, which runs nothing */
    uint8_t execute_command;         /* the session_command of the portal of the Execute being
                                        passed on, for the above */
    bool may_owe_names;              /* the client's statements were taken since the last
                                        session_awaits_names that found none */
    bool unnamed_portal_of_query;    /* a simple query ran since the last Bind of the unnamed
                                        portal: any such portal is the query's (see
                                        session_close_query_portal) */
};

void session_backend_free(struct session_backend *b);
/* sluice runs a simple query of its own on the backend: its unnamed statement is gone. */
void session_internal_query(struct server *s);

enum session_step {
    SESSION_FORWARD,  /* pass the message as it is */
    SESSION_HANDLED,  /* sluice consumed the message and wrote what replaces it */
    SESSION_ANSWERED, /* sluice consumed the message and answered it itself: the backend owes
                         nothing for it */
    SESSION_WAIT,     /* the whole message (or its names) is not buffered yet */
    SESSION_CLOSED,   /* the client was failed */
};

/* The settings of a client and of its backend when its open transaction first changed them. */
struct session_txn_start {
    struct param_set client;
    struct param_set server;
};

/*
 * A client's session settings and pins as its transactions change them (transaction mode). What
 * a query's statements do is noted before it runs and applied at its ReadyForQuery, once it is
 * known to have succeeded; a transaction that rolls back restores what it began with.
 */
struct session_tracking {
    struct param_set startup;        /* the settings it logged in with: what RESET returns to */
    struct param_changes changes;    /* noted from statements sent, each tagged with the number of
                                        the ReadyForQuery that ends it (ready_count counts them) */
    unsigned long long ready_count;  /* ReadyForQuery messages passed to the client so far */
    struct session_txn_start *txn_start; /* restored on ROLLBACK: made by its first transaction
                                            that changes a setting, then kept (most clients never
                                            change one, and an idle client carries no copies) */
    bool txn_saved;                  /* txn_start holds the open transaction's start */
    bool txn_changed;                /* a change was applied since then */
    bool statement_failed;           /* an ErrorResponse since the last ReadyForQuery */
    bool params_resync;              /* a RESET inside a transaction: bring the backend back to the
                                        client's settings before its next query */
    bool report_params;              /* after a RESET: pass the values a sync sets on to the client */
    uint32_t pins;                   /* bits of enum pin_reason that keep it on its backend */
    uint32_t pending_unpins;         /* pins the statements sent since the last ReadyForQuery clear */
    uint32_t txn_unpins;             /* pins its open transaction clears if it commits */
    bool unpin_is_discard_all;       /* DISCARD ALL cleared them: the backend's session is clean */
};

void session_tracking_init(struct session_tracking *t);
void session_tracking_free(struct session_tracking *t);

/*
 * The backend passed a ReadyForQuery (status after, before it: the status before) to the
 * client: applies what the statements since the last one did, or drops it if they failed or
 * were rolled back, and clears pins their state no longer needs.
 */
void session_ready_for_query(struct client *c, char before, char after);
/* Its backend died under it: forget what its lost transaction changed (settings, pins). */
void session_backend_lost(struct client *c);

/* Does this client's traffic need the work below (transaction mode)? */
bool session_tracks(const struct client *c);

/*
 * Does the backend ignore what the client sends now, up to its next Sync (an error in its
 * pipeline)? A simple query or function call sent meanwhile then gets no ReadyForQuery.
 */
bool session_backend_skips_to_sync(const struct server *s);
/*
 * Has the backend still to say whether a Close, DEALLOCATE [ALL] or DISCARD ALL the client sent
 * ran? Until then the client's statements it names are taken, neither its nor gone: the client's
 * next batch (after a Sync or a simple query, which the backend runs whatever became of the
 * earlier one) must wait for the answer to see them as PostgreSQL would.
 */
bool session_awaits_names(struct server *s);
/*
 * A client message of this type and length is next in the client's input and its backend is
 * ready for it. Rewrites, injects or records what transaction pooling needs. in_flight: the
 * backend still owes replies to earlier messages.
 */
enum session_step session_client_message(struct client *c, uint8_t type, uint32_t msg_len,
                                         bool in_flight);

/*
 * The same for a client whose traffic is not tracked (session mode): only what keeps PostgreSQL
 * from crashing on the portal of a failed simple query (SESSION_FORWARD, _WAIT or _CLOSED).
 */
enum session_step session_guard_message(struct client *c, uint8_t type, uint32_t msg_len);

/* Must a reply of this type be shown to session_server_reply (whole) before it is passed on? */
bool session_server_inspects(const struct server *s, uint8_t type);

/*
 * A reply of this type from the backend, before it is passed on (body NULL if too large to
 * inspect): returns true if sluice consumed it (it answers a message sluice added, or sluice
 * sent the client its own version) and it must not reach the client.
 */
bool session_server_reply(struct server *s, uint8_t type, const uint8_t *body, size_t len);

/* The client leaves or the backend is reset: forget the client's pin. */
void session_unpin(struct client *c);

#endif
