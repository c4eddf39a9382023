/*
 * admin.h: the admin console, a virtual database named "sluice" (also "pgbouncer", so existing
 * scripts and dashboards work) that answers PgBouncer's SHOW and control commands over the
 * simple query protocol.
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stdbool.h>
#include "proto.h"
#include "worker.h"

struct client;

enum admin_access {
    ADMIN_ACCESS_NONE,
    ADMIN_ACCESS_STATS,  /* stats_users: SHOW only */
    ADMIN_ACCESS_FULL,   /* admin_users: everything */
};

/* The process's console state, owned by worker 0 (admin_init there): paused and disabled
 * databases, clients whose reply waits (PAUSE, WAIT_CLOSE), the STATS averages. */
struct admin_state;

int admin_init(struct worker *w);
void admin_free(struct worker *w);

/* Is this database name the console (and not a configured database)? */
bool admin_is_console_db(const struct config *cfg, const char *name);
/* What the logged-in user may do on the console. */
enum admin_access admin_access_for(const struct config *cfg, const char *user);

/* ParameterStatus messages the console sends at login (server_version, client_encoding, ...). */
void admin_build_login_params(const struct client *c, struct msgbuf *out);

/*
 * Runs one simple query of a console client of worker w, with the world stopped: it shows and
 * steers every worker. Appends the whole reply (RowDescription/DataRow/CommandComplete or an
 * ErrorResponse, then ReadyForQuery) to out and returns true; or returns false when the reply
 * is deferred (PAUSE, WAIT_CLOSE): w's admin_janitor sends it later.
 */
bool admin_execute(struct worker *w, struct client *c, const char *sql, struct msgbuf *out);

/* A console client went away: forget any deferred reply for it. Any worker, any time. */
void admin_client_closed(struct worker *w, struct client *c);
/* Periodic, on every worker: completes the deferred replies of its console clients whose condition
 * now holds, holds its new pools of paused databases; on worker 0 also begins SHUTDOWN and
 * refreshes the averages of SHOW STATS at each stats_period. */
void admin_janitor(struct worker *w);

/*
 * Is this database held by PAUSE (or KILL) until RESUME? A pool created for it should start
 * paused (pool_pause); admin_janitor also pauses such pools on its tick. Any worker, any time.
 */
bool admin_database_paused(const struct worker *w, const char *db_name);
/* Is this database closed to new logins by DISABLE (until ENABLE)? Any worker, any time. */
bool admin_database_disabled(const struct worker *w, const char *db_name);

#endif
