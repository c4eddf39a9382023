/*
 * prepared.h: named prepared statements of the extended protocol in transaction pooling.
 * A client's statement names are its own, but its next transaction may run on another backend.
 * So sluice remembers each client's statements (name -> query and parameter types), gives each
 * distinct statement one backend-side name ("sluice_<n>") shared by every client that prepares
 * the same text and types, prepares it on whichever backend needs it (once per backend, at most
 * max_prepared_statements each, least recently used closed first), and rewrites the name in the
 * client's Parse, Bind, Describe and Close. A statement whose plan went stale (a schema change)
 * is retired: the next Parse of its text gets a new one. The unnamed statement stays the
 * backend's own; each client keeps a copy, to parse it again where its Bind lands.
 *
 * Three owners: the process owns one registry (every distinct statement, refcounted), shared by
 * every worker, because a backend moves between workers and keeps what was prepared on it; each
 * client owns its name map; each backend owns the set of statements prepared on it, in LRU order.
 * Threads: the registry's table and the last reference of a statement are under its lock; other
 * references are atomic counts; a statement's identity (definition, backend name, command) never
 * changes once made. A client's or backend's map is used by its owning worker only, unlocked.
 * Everything here is pure bookkeeping: it builds messages into a msgbuf and never does I/O.
 * One lookup per message costs a hash probe, never a scan.
 */
#ifndef SLUICE_PREPARED_H
#define SLUICE_PREPARED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "proto.h"

#define PREPARED_NAME_LEN 48       /* "sluice_<n>" with its NUL, at most */
#define PREPARED_SEED_LEN 16       /* hash key: names come from the network, so keep them keyed */

/* ---- client messages (bodies as in proto.h; pointers point into the body) ---- */

/* 'P' Parse. */
struct prepared_parse {
    const char *name;               /* "" is the unnamed statement: not managed here */
    const char *query;
    uint16_t n_params;
    const uint8_t *param_types;     /* n_params int32 OIDs in network order */
    const uint8_t *definition;      /* query, its NUL, n_params and the types: what identifies */
    size_t definition_len;          /* a statement (the body without the name) */
};

/* Name, query and types each in place; the body must end after the last type. */
enum proto_result prepared_parse_parse(const uint8_t *body, size_t len, struct prepared_parse *out);

/*
 * 'B' Bind: portal and statement names. The rest (formats, parameter values, result formats) is
 * checked for shape, so a rewrite never copies a truncated message, and passed on as it is.
 */
enum proto_result prepared_parse_bind(const uint8_t *body, size_t len, const char **portal,
                                      const char **statement);

/* 'D' Describe and 'C' Close: *kind is 'S' (statement) or 'P' (portal), then the name. */
enum proto_result prepared_parse_target(const uint8_t *body, size_t len, char *kind,
                                        const char **name);

/*
 * Appends message type ('P', 'B', 'D' or 'C') with this body to out, the statement name replaced
 * by backend_name; every other byte is copied as it is. PROTO_ERROR (nothing appended) if the
 * body is malformed or a Describe/Close names a portal, which is never renamed.
 */
enum proto_result prepared_rewrite(struct msgbuf *out, char type, const uint8_t *body, size_t len,
                                   const char *backend_name);

/* ---- the registry: every distinct statement of the process ---- */

struct prepared_registry;

/*
 * Every field but the counts and retired is written once, before the statement is published
 * (under the registry's lock), and only read after: any worker may read them without a lock.
 */
struct prepared_statement {
    uint64_t id;                            /* unique within the registry, never reused */
    char backend_name[PREPARED_NAME_LEN];   /* its name on every backend */
    atomic_size_t refs;                     /* every reference below: the last one frees it */
    atomic_uint client_refs;                /* client names bound to it */
    atomic_uint server_refs;                /* backends that have it prepared */
    atomic_uint reply_refs;                 /* Parse and Bind replies still owed for it */
    bool retired;                           /* no longer found by its definition (under the
                                               registry's lock) */
    uint8_t command;                        /* what session.c answers for it instead of the
                                               backend (enum session_command), 0: nothing */
    struct prepared_registry *registry;
    uint64_t hash;
    size_t definition_len;
    uint8_t definition[];                   /* a Parse body without the name; starts with the
                                               query text and its NUL */
};

/*
 * One per process, used by every worker at once. seed keys the hash of names and query texts
 * (random bytes). NULL if out of memory.
 */
struct prepared_registry *prepared_registry_new(const uint8_t seed[PREPARED_SEED_LEN]);
/* Frees every statement: free every client's and backend's map first, on every worker. */
void prepared_registry_free(struct prepared_registry *registry);
/* Statements found by their definition (not retired). */
size_t prepared_registry_count(struct prepared_registry *registry);
/* Statements allocated, retired ones included: 0 once nothing holds any. */
size_t prepared_registry_live(struct prepared_registry *registry);

/*
 * The backend statement no longer fits its definition (the schema changed under it): later
 * Parses of the same definition get a new statement, prepared afresh; this one lives on for the
 * names and backends that hold it.
 */
void prepared_statement_retire(struct prepared_statement *stmt);
/* The same for every statement: after DDL, any of them may have changed. */
void prepared_registry_retire_all(struct prepared_registry *registry);

/* Parse message preparing stmt under its backend name, for a backend that lacks it. */
void prepared_build_parse(struct msgbuf *out, const struct prepared_statement *stmt);
/* Close 'S' of a backend name (an evicted statement). */
void prepared_build_close(struct msgbuf *out, const char *backend_name);

/* ---- open-addressing hash table (internal; here so the structs below can be embedded) ---- */

struct prepared_slot {
    uint64_t hash;
    void *item;         /* NULL: empty */
};

struct prepared_table {
    struct prepared_slot *slots;    /* NULL while empty: an empty table costs nothing */
    size_t cap;
    size_t n;
};

/* ---- per client: its names ---- */

/*
 * The client's unnamed statement: the backend's own, but kept here too, because the client's
 * Bind may land on another backend than its Parse (after a Sync), or after sluice's own queries
 * (parameter sync), which destroy it. It is then parsed again where the Bind lands.
 */
struct prepared_unnamed {
    uint8_t *definition;            /* a Parse body without the name, as in prepared_statement */
    size_t len;
    size_t cap;
    uint64_t serial;                /* which Parse made it (a client serial); 0: none */
    uint64_t defined;               /* which Parse's definition is held, cleared or not */
    uint8_t command;                /* as in prepared_statement */
};

struct prepared_client {
    struct prepared_registry *registry;
    struct prepared_table names;
    uint64_t last_serial;           /* every name bound gets the next one */
    struct prepared_unnamed unnamed;
};

enum prepared_add_result {
    PREPARED_ADDED,
    PREPARED_NAME_IN_USE,   /* the client already has a statement of that name: 42P05 */
    PREPARED_UNNAMED,       /* "": the unnamed statement stays with the current backend */
    PREPARED_NO_MEMORY,
};

void prepared_client_init(struct prepared_client *client, struct prepared_registry *registry);
/*
 * Binds parse->name to the statement with parse's definition, creating it or sharing the one
 * other clients have (command is recorded when it is created: the same text is the same
 * command). *out gets the statement when ADDED. A Parse that then fails on the backend
 * must be undone with prepared_client_remove, as Postgres forgets it too.
 */
enum prepared_add_result prepared_client_add(struct prepared_client *client,
                                             const struct prepared_parse *parse, uint8_t command,
                                             struct prepared_statement **out);
/*
 * The serial of the binding prepared_client_add just made for name (0 if none): what
 * prepared_client_unbind undoes when that Parse fails, and no later binding of the same name.
 */
uint64_t prepared_client_serial(const struct prepared_client *client, const char *name);
/* The Parse that made this binding (or unnamed statement) failed or was skipped on the backend:
 * Postgres has no such name, so neither does the client. Nothing happens if the name was bound
 * again since. */
void prepared_client_unbind(struct prepared_client *client, uint64_t serial);
/* NULL if the client has no statement of that name: 26000 for a Bind or Describe. */
struct prepared_statement *prepared_client_lookup(const struct prepared_client *client,
                                                  const char *name);
/* Close 'S' or DEALLOCATE name: false if there was none (not an error, as in Postgres). */
bool prepared_client_remove(struct prepared_client *client, const char *name);
/* DISCARD ALL, DEALLOCATE ALL: every named statement goes (the unnamed one stays, as in
 * Postgres). */
void prepared_client_forget_all(struct prepared_client *client);
/*
 * Names a client's Close, DEALLOCATE [ALL] or DISCARD ALL took away, kept until the backend has
 * run it: the client's next messages must not see them, but a command the backend skips (an
 * earlier error in the pipeline) or refuses (a failed transaction) leaves them to the client in
 * Postgres. NULL: nothing taken.
 */
struct prepared_taken;
/* As prepared_client_remove, the name kept in *taken (made if NULL). */
bool prepared_client_take(struct prepared_client *client, const char *name,
                          struct prepared_taken **taken);
/* As prepared_client_forget_all, the names kept in *taken (made if NULL). */
void prepared_client_take_all(struct prepared_client *client, struct prepared_taken **taken);
/* The command never ran: each name comes back unless the client bound it again since. Frees
 * taken. Undo the client's later steps first (prepared_client_unbind): latest first. */
void prepared_client_give_back(struct prepared_client *client, struct prepared_taken *taken);
/* The command ran: the names are gone for good. */
void prepared_taken_free(struct prepared_taken *taken);
/* Disconnect: everything goes. Leaves the client as prepared_client_init did. */
void prepared_client_free(struct prepared_client *client);
/* A Parse of the unnamed statement: keeps a copy of its definition. false if out of memory. */
bool prepared_client_set_unnamed(struct prepared_client *client,
                                 const struct prepared_parse *parse, uint8_t command);
/* Close of the unnamed statement, or a simple Query (which destroys it). */
void prepared_client_clear_unnamed(struct prepared_client *client);
/*
 * A simple Query that cleared the unnamed statement made by Parse serial (command) was skipped
 * by the backend (an earlier error in the pipeline): the statement is the client's again, unless
 * a later Parse of the unnamed statement has replaced its definition since.
 */
void prepared_client_restore_unnamed(struct prepared_client *client, uint64_t serial,
                                     uint8_t command);
/* Parse message of the client's unnamed statement, for a backend that lost it. */
void prepared_build_unnamed_parse(struct msgbuf *out, const struct prepared_client *client);
size_t prepared_client_count(const struct prepared_client *client);

/* ---- per backend: what is prepared there ---- */

struct prepared_server_entry;

struct prepared_server {
    struct prepared_table entries;
    struct prepared_server_entry *newest;   /* LRU order, most recently used first */
    struct prepared_server_entry *oldest;
    size_t capacity;                        /* max_prepared_statements, at least 1 */
};

enum prepared_ensure_result {
    PREPARED_ON_SERVER,      /* already prepared there: use it */
    PREPARED_PARSE_NEEDED,   /* send prepared_build_parse(stmt) first (after the Close below) */
    PREPARED_ENSURE_NO_MEMORY,
};

void prepared_server_init(struct prepared_server *server, size_t capacity);
/*
 * Makes stmt the most recently used statement of this backend, recording it as prepared there if
 * it was not. The caller holds stmt (a client's name for it); a statement already there costs
 * no lock. victim gets the backend name of the statement evicted to make room (send its Close
 * before the Parse), or "" if none was. PREPARED_ENSURE_NO_MEMORY changes nothing.
 */
enum prepared_ensure_result prepared_server_ensure(struct prepared_server *server,
                                                   struct prepared_statement *stmt,
                                                   char victim[PREPARED_NAME_LEN]);
bool prepared_server_has(const struct prepared_server *server,
                         const struct prepared_statement *stmt);
/*
 * The backend does not have stmt after all: the Parse sluice sent failed, or was skipped after an
 * earlier error in the same pipeline. stmt may be freed if nothing else holds it.
 */
bool prepared_server_forget(struct prepared_server *server, struct prepared_statement *stmt);
/* DISCARD ALL / DEALLOCATE ALL ran on the backend, or it is closing. */
void prepared_server_forget_all(struct prepared_server *server);
size_t prepared_server_count(const struct prepared_server *server);

/*
 * A reply to a Parse or Bind of stmt is owed: stmt stays allocated until prepared_reply_settled.
 * The caller holds stmt already; only the settling of its last reference takes the lock.
 */
void prepared_reply_owed(struct prepared_statement *stmt);
void prepared_reply_settled(struct prepared_statement *stmt);

#endif
