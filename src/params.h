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
#include "proto.h"

struct param_entry {
    char *name;   /* stored as given; compared case-insensitively */
    char *value;
};

struct param_set {
    struct param_entry *entries;
    size_t n;
    size_t cap;
};

void param_set_init(struct param_set *set);
void param_set_free(struct param_set *set);
void param_set_clear(struct param_set *set);
/* Copies name and value; replaces an existing entry of the same name. 0 or -1 (no memory). */
int param_set_put(struct param_set *set, const char *name, const char *value);
const char *param_set_get(const struct param_set *set, const char *name);
bool param_set_remove(struct param_set *set, const char *name);
int param_set_copy(struct param_set *dst, const struct param_set *src);

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

#endif
