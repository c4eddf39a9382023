/*
 * params.h: session parameters that must follow a client from backend to backend in transaction
 * pooling (client_encoding, DateStyle, TimeZone, application_name, options from -c ...).
 * A client keeps only what it set itself; a pool keeps the values its backends start with;
 * a server keeps what it reported or what sluice applied. params_build_sync() writes the SQL
 * that makes a server's session match a client's.
 */
#ifndef SLUICE_PARAMS_H
#define SLUICE_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "proto.h"

struct param_entry {
    char *name;   /* stored as given; compared case-insensitively */
    char *value;
    bool is_sql;  /* value is SQL text as a client wrote it after SET name TO (replayed as is),
                     not a plain value to quote as a literal */
    bool shared;  /* name and value belong to the set this one was shared from (param_set_share):
                     not freed here */
};

/* Counts are 32-bit: a set holds a few dozen settings, and every client carries two sets. */
struct param_set {
    struct param_entry *entries;
    uint32_t n;
    uint32_t cap;
};

void param_set_init(struct param_set *set);
void param_set_free(struct param_set *set);
void param_set_clear(struct param_set *set);
/* Copies name and value; replaces an existing entry of the same name. 0 or -1 (no memory). */
int param_set_put(struct param_set *set, const char *name, const char *value);
/* The same for a value given as SQL text (param_entry.is_sql). */
int param_set_put_sql(struct param_set *set, const char *name, const char *sql_text);
/* The entry of that name, or NULL. */
const struct param_entry *param_set_find(const struct param_set *set, const char *name);
const char *param_set_get(const struct param_set *set, const char *name);
bool param_set_remove(struct param_set *set, const char *name);
int param_set_copy(struct param_set *dst, const struct param_set *src);
/*
 * Makes dst hold src's entries without copying their strings: src must stay unchanged and outlive
 * them (a client's startup settings, which its current ones start as). A later change to dst
 * copies what it changes. 0 or -1 (no memory; dst is then empty).
 */
int param_set_share(struct param_set *dst, const struct param_set *src);

/*
 * Startup parameters that sluice forwards to backends through SET rather than in the backend's
 * own startup packet. false for user, database, replication, options and _pq_.* names.
 */
bool params_is_session_setting(const char *name);

/*
 * Parameters PostgreSQL reports with ParameterStatus and whose change by a client must be
 * remembered for that client (client_encoding, DateStyle, TimeZone, IntervalStyle,
 * standard_conforming_strings, application_name, search_path, ...).
 */
bool params_is_tracked(const char *name);

/*
 * Parses a libpq "options" value ("-c a=b --c=d -c e=f\ g") into set, as the backend would:
 * words are separated by whitespace, a backslash takes the next character literally, and
 * "-c name=value", "-cname=value" and "--name=value" are accepted, with '-' in a name read as '_'.
 * A later value for the same name replaces the earlier one. Returns 0, or -1 with a reason in err
 * for any other switch or a setting without '=' or without a name (set may then hold the
 * settings that came before the bad one).
 */
int params_parse_options(const char *options, struct param_set *set, char *err, size_t err_len);

/*
 * Appends to sql the statements that move a server from its values to what the client expects:
 * for each client value that differs from the server's, SET name = 'value'; for each server value
 * the client did not set that differs from the pool's defaults, SET it back to the default, or
 * RESET it if the pool has no default. Returns the number of statements (0: nothing to do).
 * Names are quoted as identifiers, values as literals; statements are joined by "; " in a fixed
 * order (client entries, then server entries, each in set order). Names no SET can change
 * (user, database, options, _pq_.*, server_version, is_superuser...) are skipped. Any of the
 * three sets may be NULL (empty).
 */
size_t params_build_sync(const struct param_set *client, const struct param_set *pool_defaults,
                         const struct param_set *server, struct msgbuf *sql);

/*
 * What one statement did to the session's settings, in the order the statements ran. Applied
 * only once the statement is known to have succeeded (params_apply_change).
 */
enum param_change_kind {
    PARAM_CHANGE_SET,       /* SET name TO text (text NULL: the value is only known from the
                               server's ParameterStatus, e.g. set_config(name, $1, false)) */
    PARAM_CHANGE_RESET,     /* RESET name, SET name TO DEFAULT */
    PARAM_CHANGE_RESET_ALL, /* RESET ALL, DISCARD ALL */
    /* where the transaction ends or goes back: the caller acts on these, not
       params_apply_change */
    PARAM_CHANGE_COMMIT,
    PARAM_CHANGE_ROLLBACK,
    PARAM_CHANGE_ROLLBACK_TO,
};

struct param_change {
    enum param_change_kind kind;
    char *name;
    char *text;
    unsigned long long tag;   /* the caller's (which reply settles it); 0 when added */
};

struct param_changes {
    struct param_change *items;
    uint32_t n;                 /* 32-bit, as in param_set */
    uint32_t cap;
};

void param_changes_init(struct param_changes *changes);
void param_changes_clear(struct param_changes *changes);
void param_changes_free(struct param_changes *changes);
/* Copies name and text (either may be NULL for RESET ALL / an unknown value). 0 or -1. */
int param_changes_add(struct param_changes *changes, enum param_change_kind kind, const char *name,
                      const char *text, size_t text_len);
/* Drops the first n changes (all of them if n is larger), keeping the order of the rest. */
void param_changes_drop_first(struct param_changes *changes, size_t n);

/*
 * Applies one change that the server ran to the client's and the server's sets, as PostgreSQL
 * would: a SET takes the server's reported value for a name the server reports (found in
 * reported, the pool's defaults), else the client's text as given; a RESET returns the client to
 * its own startup value (startup) or, without one, to the server's default (no entry), and the
 * server to its default (its entry removed unless reported: reported values follow the server's
 * ParameterStatus); RESET ALL does that for every name. Returns -1 when out of memory.
 */
int params_apply_change(const struct param_change *change, const struct param_set *startup,
                        const struct param_set *reported, struct param_set *client,
                        struct param_set *server);

#endif
