/*
 * conn.h: one socket with its input and output buffers, shared by client and server connections.
 *
 * Plain sockets use two bare events and evbuffers: a read is one readv into reserved space, and
 * output is written by one writev per connection per loop iteration (the worker's flusher),
 * registering for writability only when the kernel did not take everything. That keeps the
 * per-transaction cost to one read and one write on each side. A TLS connection drives OpenSSL
 * over the same socket and the same two events: records are read ahead (one read per wake-up,
 * not one per record header and body), and output is sealed into records in memory (one per
 * 16 KB) that go out like a plain socket's bytes, in the same batch.
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>
#include "proto.h"

/* Past this much unsent output on one side, sluice stops reading the other side. */
#define CONN_OUTPUT_HIGH_WATER (256 * 1024)
/* Largest message sluice buffers whole to look inside (ParameterStatus, errors, auth). */
#define CONN_MAX_INSPECTED_MESSAGE (64 * 1024)

enum conn_event {
    CONN_EVENT_CONNECTED, /* outgoing connect finished, or TLS handshake finished */
    CONN_EVENT_EOF,
    CONN_EVENT_ERROR,
};

struct conn;
struct evdns_base;
struct conn_dns_ticket;

typedef void (*conn_read_fn)(struct conn *conn, void *arg);
typedef void (*conn_drain_fn)(struct conn *conn, void *arg);
typedef void (*conn_event_fn)(struct conn *conn, enum conn_event event, void *arg);

/* What a connection's owner is told; one constant table per kind of owner, not one copy per conn. */
struct conn_callbacks {
    conn_read_fn on_read;
    conn_drain_fn on_drain;        /* output became empty after a caller asked (conn_want_drain) */
    conn_event_fn on_event;
};

/* The worker-wide list of connections with output to write, flushed once per loop iteration. */
TAILQ_HEAD(conn_list, conn);
struct write_batch;
struct conn_flusher {
    struct conn_list dirty;
    struct event *event;
    bool scheduled;
    struct write_batch *batch;     /* io_uring: every socket's output in one system call; or NULL */
    int batch_error;               /* errno that made the flusher drop io_uring, for the log */
    BIO_METHOD *wire_method;       /* the BIO through which OpenSSL's records reach conn->wire */
    size_t read_size;              /* pkt_buf: the most bytes one read takes in, for every conn */
};

struct conn {
    evutil_socket_t fd;
    int error;                     /* errno of the failure, 0 if none */
    struct event_base *base;
    struct conn_flusher *flusher;
    struct evbuffer *in;
    struct evbuffer *out;
    struct evbuffer *wire;         /* bytes for the socket: out itself, or out's TLS records */
    struct event read_event;
    /* Made when first needed (a connect, or output the kernel did not take whole), then kept:
     * most clients never need one, and each idle client is one struct event smaller. */
    struct event *write_event;
    SSL *ssl;                      /* TLS: NULL on a plain socket */
    unsigned long tls_error;       /* the OpenSSL error that failed the connection, 0 if none */
    struct conn_dns_ticket *dns_ticket; /* a host name's look-up under way, and its request; it
                                           outlives the conn if the look-up is cancelled */

    const struct conn_callbacks *cb;
    void *arg;                     /* passed to every callback */

    TAILQ_ENTRY(conn) dirty_link;
    /* One bit each: every idle client carries a conn. */
    bool dirty : 1;                /* in the flusher's list */
    bool reading : 1;              /* the owner wants input */
    bool suspended : 1;            /* SUSPEND: not read, whatever the owner wants */
    bool read_armed : 1;           /* read event added */
    bool write_pending : 1;        /* write event added: the kernel did not take everything */
    bool tls_handshaking : 1;
    bool tls_write_wants_read : 1; /* OpenSSL must read before it can write on */
    bool connecting : 1;
    bool want_drain : 1;
    bool failed : 1;               /* a write failed: reported through the read path */
    bool open : 1;
};

int conn_flusher_init(struct conn_flusher *flusher, struct event_base *base);
void conn_flusher_free(struct conn_flusher *flusher);
/*
 * Sends the plain sockets' output of each loop iteration as one io_uring batch (on), or with one
 * writev per connection (off). true, or false with the reason when io_uring is unavailable (the
 * flusher then uses writev).
 */
bool conn_flusher_use_io_uring(struct conn_flusher *flusher, bool on, char *why, size_t why_len);

/* Wraps an accepted socket. 0, or -1 (fd not closed). */
int conn_open_accepted(struct conn *conn, struct event_base *base, struct conn_flusher *flusher,
                       evutil_socket_t fd, const struct conn_callbacks *cb, void *arg);
/* Starts a non-blocking connect; on_event(CONNECTED) or (ERROR) follows. 0, or -1. */
int conn_open_connect(struct conn *conn, struct event_base *base, struct conn_flusher *flusher,
                      const struct sockaddr *addr, socklen_t addr_len,
                      const struct conn_callbacks *cb, void *arg);
/* The same, resolving host first with evdns. */
int conn_open_connect_host(struct conn *conn, struct event_base *base, struct conn_flusher *flusher,
                           struct evdns_base *dns, const char *host, int port,
                           const struct conn_callbacks *cb, void *arg);
/* Closes the socket and frees the buffers; safe to call twice. No callback runs afterwards. */
void conn_close(struct conn *conn);

/*
 * Continues over TLS on the same socket (accepting: sluice is the server). Output must be empty;
 * input too, except when accepting a direct TLS client, whose ClientHello is already in it (the
 * callers that must refuse bytes sent before the handshake check that themselves).
 * on_event(CONNECTED) reports the end of the handshake. 0, or -1 (ssl freed).
 */
int conn_start_tls(struct conn *conn, SSL *ssl, bool accepting);
/* The SSL of a TLS connection, or NULL. */
SSL *conn_ssl(const struct conn *conn);
/* The latest OpenSSL error of a TLS connection (0 if none). */
unsigned long conn_tls_error(struct conn *conn);

/*
 * A connection moves to another worker's loop: conn_leave_loop on the thread that owns it now
 * (false, and nothing changes, while it has output the kernel has not taken or is still being
 * set up), then conn_join_loop on the new owner's thread, after a hand-over that orders the two.
 */
bool conn_can_leave_loop(struct conn *conn);
bool conn_leave_loop(struct conn *conn);
void conn_join_loop(struct conn *conn, struct event_base *base, struct conn_flusher *flusher);

void conn_start_reading(struct conn *conn);
/* Reads what has already arrived now, not at the next loop iteration (a deferred accept). */
void conn_read_now(struct conn *conn);
void conn_stop_reading(struct conn *conn);
/* SUSPEND (true) stops reading the socket until RESUME (false); output is still written. */
void conn_suspend(struct conn *conn, bool suspended);
/* Has everything written to the connection gone to the kernel? (true once closed) */
bool conn_output_flushed(const struct conn *conn);

/* Output was added: it is written by the flusher at the end of this loop iteration. */
void conn_mark_dirty(struct conn *conn);
/* Writes what the kernel takes now. */
void conn_flush(struct conn *conn);
/* Calls on_drain once the output is empty (now, if it already is, at the next flush). */
void conn_want_drain(struct conn *conn);

/* Appends a built message (or several) to the output. false if mb failed or the conn is closed. */
bool conn_send(struct conn *conn, const struct msgbuf *mb);
bool conn_write(struct conn *conn, const void *data, size_t len);

/*
 * Moves up to *remaining bytes from src's input to dst's output (evbuffer chain moves, no copy).
 * Decrements *remaining by what moved. Returns the number of bytes moved.
 */
size_t conn_forward(struct conn *src, struct conn *dst, uint32_t *remaining);

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

/*
 * Drops what is buffered of the `remaining` bytes of a message being skipped; returns how many
 * of them are still to arrive (0: the message is gone).
 */
uint32_t conn_skip_input(struct evbuffer *buf, uint32_t remaining);

/* TCP_NODELAY and keepalive on TCP sockets; harmless no-ops on unix sockets. */
void conn_tune_socket(evutil_socket_t fd, bool keepalive);

/*
 * Gives up the buffers of an idle plain connection whose input and output are empty (true if it
 * did): about 300 bytes less per idle client. The conn layer makes them again before it next reads
 * or writes (its read path, conn_write, conn_send, conn_forward, conn_want_drain), so its owner
 * need not know; only code that looks at conn->in or conn->out itself must allow for NULL there,
 * and use conn_input_length.
 */
bool conn_release_buffers(struct conn *conn);
/* Bytes read and not yet taken by the owner (0 while the buffers are given up). */
size_t conn_input_length(const struct conn *conn);

/* Is the output backed up past CONN_OUTPUT_HIGH_WATER? */
bool conn_output_is_full(const struct conn *conn);

#endif
