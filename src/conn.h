/*
 * conn.h: what client and server connections share: sending built messages, moving message bytes
 * from one side to the other without copying, socket options, and peeking at headers.
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <event2/bufferevent.h>
#include <event2/buffer.h>
#include "proto.h"

/* Past this much unsent output on one side, sluice stops reading the other side. */
#define CONN_OUTPUT_HIGH_WATER (256 * 1024)
/* Largest message sluice buffers whole to look inside (ParameterStatus, errors, auth). */
#define CONN_MAX_INSPECTED_MESSAGE (64 * 1024)

/* Appends a built message (or several) to the connection's output. false if mb failed. */
bool conn_send(struct bufferevent *bev, const struct msgbuf *mb);

/*
 * Moves up to *remaining bytes from src's input to dst's output (evbuffer chain moves, no copy).
 * Decrements *remaining by what moved. Returns the number of bytes moved.
 */
size_t conn_forward(struct bufferevent *src, struct bufferevent *dst, uint32_t *remaining);

/*
 * Looks at the next message in buf: PROTO_INCOMPLETE if fewer than 5 bytes, PROTO_ERROR if its
 * length is out of range, else PROTO_OK with type and length (length field, counting itself).
 */
enum proto_result conn_peek_header(struct evbuffer *buf, uint32_t max_len, uint8_t *type,
                                   uint32_t *msg_len);

/*
 * Makes the next whole message contiguous: returns a pointer to its first byte (the type) when
 * 1 + msg_len bytes are buffered, else NULL.
 */
const uint8_t *conn_pullup_message(struct evbuffer *buf, uint32_t msg_len);

/* TCP_NODELAY and keepalive on TCP sockets; harmless no-ops on unix sockets. */
void conn_tune_socket(int fd, bool keepalive);

/* Is dst's output backed up past CONN_OUTPUT_HIGH_WATER? */
bool conn_output_is_full(struct bufferevent *dst);

#endif
