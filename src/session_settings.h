/*
 * session_settings.h: how session.c hands a client's statements to the settings and pins it
 * follows (session_settings.c). The calls client.c and server.c make are in session.h.
 */
#ifndef SLUICE_SESSION_SETTINGS_H
#define SLUICE_SESSION_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

#include "pinning.h"
#include "session.h"

/* How the lexer reads this client's statements (its standard_conforming_strings). */
struct pinning_rules session_rules(const struct client *c);
/* Is the query worth going through statement by statement? Rarely: most change nothing. */
bool session_must_note(const struct client *c, const struct pinning_summary *summary,
                       enum pin_reason reason);
/*
 * Notes each statement's setting changes and the pins it clears, to settle at the ReadyForQuery
 * that ends it; returns the bits of every pin reason in it. *reason gets a pin reason if it had
 * none and a setting cannot be followed.
 */
uint32_t session_note_query(struct client *c, const char *sql, size_t len,
                            const struct pinning_rules *rules, enum pin_reason *reason);
/*
 * Keeps the client on its backend: reason is the first statement's, pins the bits of every
 * reason the query pins for; sql (len bytes) is the statement shown by SHOW PINNED.
 */
void session_pin(struct client *c, enum pin_reason reason, uint32_t pins, const char *sql,
                 size_t len);

#endif
