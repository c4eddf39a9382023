/*
 * client_auth.h: client authentication, between the startup packet and the login reply.
 */
#ifndef SLUICE_CLIENT_AUTH_H
#define SLUICE_CLIENT_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;

/* Draws the per-process secret mock SCRAM challenges are made from. 0, or -1 on failure. */
int client_auth_init(void);
/* Starts the method configured for the client's user (trust completes at once). */
void client_auth_begin(struct client *c);
/* Reads the client's password or SASL messages while it is in CLIENT_AUTH. */
void client_auth_input(struct client *c);
/* Sends an Authentication request ('R') with a code and its payload; false if the client was
 * failed instead (out of memory). */
bool client_auth_send_request(struct client *c, uint32_t code, const void *data, size_t len);
/*
 * auth_query's look-up for this client ended: go on with the secret it found (or the mock
 * challenge of an unknown user); failed: it could not be looked up (logged), 28P01.
 */
void client_auth_lookup_done(struct client *c, bool failed);
/* Counts a login by outcome, method and transport. */
void client_auth_count(struct client *c, bool ok);

#endif
