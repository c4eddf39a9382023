/*
 * autodb.h: databases made on demand from the "*" line of [databases] (PgBouncer's fallback
 * database). A client asking for a name not listed gets a database with "*"'s backend settings
 * and its own name as the backend database; once unused for autodb_idle_timeout it is freed,
 * its pools with it.
 */
#ifndef SLUICE_AUTODB_H
#define SLUICE_AUTODB_H

#include <stdbool.h>
#include "config.h"
#include "worker.h"

/* The database a name refers to now: a [databases] line, else one made from "*". NULL: none. */
const struct config_database *autodb_find(const struct worker *w, const char *name);
/* As autodb_find, but makes the database from "*" if it does not exist yet. NULL: no "*" line
 * (or out of memory). */
const struct config_database *autodb_find_or_create(struct worker *w, const char *name);
/* True if name is a database made from "*". */
bool autodb_is_auto(const struct worker *w, const char *name);

/* After a reload: each made database takes the new "*" line; one now listed, or left without a
 * "*" line, is dropped (its pools follow the listed line, or are disabled). */
void autodb_reload(struct worker *w);
/* Periodic: frees the made databases unused for autodb_idle_timeout, with their pools. */
void autodb_janitor(struct worker *w, double now);
void autodb_free_all(struct worker *w);

#endif
