/*
 * conn.c: sockets with buffers for both sides of the proxy. Message bytes move between
 * connections as evbuffer chains, never copied on the hot path; each connection is written with
 * one writev per loop iteration, and reads need no FIONREAD round trip.
 */
#include "conn.h"

#include <pthread.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/uio.h>
#include <event2/dns.h>
#include <openssl/err.h>

#include "fault.h"
#include "write_batch.h"

/* What one read takes in until the owner sets read_size from pkt_buf (PgBouncer's default). */
#define CONN_READ_CHUNK 4096
/* The most plaintext one TLS record carries: each write seals up to this much into one record. */
#define CONN_TLS_RECORD 16384
/* Records decrypted per read event before other connections get their turn. */
#define CONN_TLS_READS_PER_EVENT 4

static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_write_cb(evutil_socket_t fd, short what, void *arg);
static void conn_tls_readable(struct conn *conn);
static void conn_tls_seal(struct conn *conn);
static void conn_after_write(struct conn *conn, int error);
static void conn_fail_later(struct conn *conn, int error);

/* ---- the flusher ---- */

/* Connections with bytes for a socket the kernel has not pushed back on go in the batch (TLS
 * ones once their output is sealed). */
static bool conn_batchable(const struct conn *conn)
{
    return conn->open && !conn->connecting && !conn->failed && !conn->write_pending &&
           evbuffer_get_length(conn->wire) > 0;
}

static bool conn_seal_and_check_batchable(struct conn *conn)
{
    if (conn->ssl && conn->open && !conn->failed)
        conn_tls_seal(conn); /* no callback runs: failures surface through the read path */
    return conn_batchable(conn);
}

/* Queues the output of the next batchable connection; returns how many bytes that is. */
static size_t conn_queue_in_batch(struct conn *conn, struct write_batch *batch)
{
    struct evbuffer_iovec chains[WRITE_BATCH_MAX_IOV];
    struct iovec pieces[WRITE_BATCH_MAX_IOV];
    size_t length = 0;
    int count = evbuffer_peek(conn->wire, -1, NULL, chains, WRITE_BATCH_MAX_IOV);

    if (count > WRITE_BATCH_MAX_IOV)
        count = WRITE_BATCH_MAX_IOV; /* the rest goes in the next batch */
    for (int i = 0; i < count; i++) {
        pieces[i].iov_base = chains[i].iov_base;
        pieces[i].iov_len = chains[i].iov_len;
        length += chains[i].iov_len;
    }
    write_batch_add(batch, conn->fd, pieces, count);
    return length;
}

/*
 * Sends the batchable connections at the head of the dirty list in one system call; returns how
 * many (0: the head is not batchable). Bytes sent are drained from every connection before any
 * callback runs, since a callback may close another connection of the same batch.
 */
static int conn_flush_batch(struct conn_flusher *flusher)
{
    struct conn *sent[WRITE_BATCH_SIZE];
    size_t lengths[WRITE_BATCH_SIZE];
    ssize_t results[WRITE_BATCH_SIZE];
    int n = 0;

    while (n < WRITE_BATCH_SIZE && !TAILQ_EMPTY(&flusher->dirty) &&
           conn_seal_and_check_batchable(TAILQ_FIRST(&flusher->dirty))) {
        struct conn *conn = TAILQ_FIRST(&flusher->dirty);
        TAILQ_REMOVE(&flusher->dirty, conn, dirty_link);
        conn->dirty = false;
        lengths[n] = conn_queue_in_batch(conn, flusher->batch);
        sent[n++] = conn;
    }
    if (n == 0)
        return 0;
    int rc = write_batch_send(flusher->batch, results);
    if (rc < 0) {
        write_batch_free(flusher->batch);
        flusher->batch = NULL;
        flusher->batch_error = -rc;
    }
    for (int i = 0; i < n; i++) {
        if (results[i] > 0)
            evbuffer_drain(sent[i]->wire, (size_t)results[i]);
    }
    for (int i = 0; i < n; i++) {
        struct conn *conn = sent[i];
        ssize_t result = results[i];
        if (!conn->open)
            continue;
        if (result == -ECANCELED)
            conn_flush(conn); /* never submitted: the plain way */
        else if (result >= 0 && (size_t)result == lengths[i] && evbuffer_get_length(conn->wire) > 0)
            conn_mark_dirty(conn); /* more pieces than one send takes: the next batch */
        else
            conn_after_write(conn, result < 0 ? (int)-result : (result == 0 ? EPIPE : 0));
    }
    return n;
}

static void conn_flusher_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn_flusher *flusher = arg;
    flusher->scheduled = false;
    /* A flush can run callbacks that mark more connections dirty: take them as they come. */
    while (!TAILQ_EMPTY(&flusher->dirty)) {
        if (flusher->batch && conn_flush_batch(flusher) > 0)
            continue;
        struct conn *conn = TAILQ_FIRST(&flusher->dirty);
        TAILQ_REMOVE(&flusher->dirty, conn, dirty_link);
        conn->dirty = false;
        conn_flush(conn);
    }
}

static BIO_METHOD *conn_wire_method_new(void);

/* One BIO method for the process, never freed: a TLS backend that moved to another worker keeps
 * the BIOs it was made with, whichever worker's flusher is gone first. Immutable once made. */
static pthread_once_t wire_method_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *wire_method;

static void conn_wire_method_make(void)
{
    wire_method = conn_wire_method_new();
}

int conn_flusher_init(struct conn_flusher *flusher, struct event_base *base)
{
    memset(flusher, 0, sizeof(*flusher));
    TAILQ_INIT(&flusher->dirty);
    flusher->read_size = CONN_READ_CHUNK;
    flusher->event = event_new(base, -1, 0, conn_flusher_cb, flusher);
    pthread_once(&wire_method_once, conn_wire_method_make);
    flusher->wire_method = wire_method;
    return flusher->event && flusher->wire_method ? 0 : -1;
}

bool conn_flusher_use_io_uring(struct conn_flusher *flusher, bool on, char *why, size_t why_len)
{
    if (!on) {
        write_batch_free(flusher->batch);
        flusher->batch = NULL;
        return true;
    }
    if (!flusher->batch)
        flusher->batch = write_batch_new(why, why_len);
    return flusher->batch != NULL;
}

void conn_flusher_free(struct conn_flusher *flusher)
{
    if (flusher->event)
        event_free(flusher->event);
    flusher->event = NULL;
    write_batch_free(flusher->batch);
    flusher->batch = NULL;
    flusher->wire_method = NULL; /* the process's: not freed */
}

void conn_mark_dirty(struct conn *conn)
{
    struct conn_flusher *flusher = conn->flusher;
    if (conn->dirty || !conn->open)
        return;
    conn->dirty = true;
    TAILQ_INSERT_TAIL(&flusher->dirty, conn, dirty_link);
    if (!flusher->scheduled) {
        flusher->scheduled = true;
        event_active(flusher->event, 0, 0);
    }
}

static void conn_undirty(struct conn *conn)
{
    if (!conn->dirty)
        return;
    TAILQ_REMOVE(&conn->flusher->dirty, conn, dirty_link);
    conn->dirty = false;
}

/* ---- buffers given up while idle ---- */

/* Bytes in a buffer, 0 for one given up by conn_release_buffers. */
static size_t conn_buffered(const struct evbuffer *buf)
{
    return buf ? evbuffer_get_length(buf) : 0;
}

size_t conn_input_length(const struct conn *conn)
{
    return conn_buffered(conn->in);
}

bool conn_release_buffers(struct conn *conn)
{
    if (!conn->open || !conn->in || conn->ssl || conn->connecting || conn->dirty ||
        conn->write_pending || conn->failed || conn->want_drain ||
        evbuffer_get_length(conn->in) > 0 || evbuffer_get_length(conn->out) > 0)
        return false;
    evbuffer_free(conn->in);
    evbuffer_free(conn->out);
    conn->in = conn->out = conn->wire = NULL;
    return true;
}

/* The input and output buffers (plain: the output is what goes on the wire); false if out of
 * memory, with neither made. */
static bool conn_make_buffers(struct conn *conn)
{
    conn->in = evbuffer_new();
    conn->out = evbuffer_new();
    if (!conn->in || !conn->out) {
        if (conn->in)
            evbuffer_free(conn->in);
        if (conn->out)
            evbuffer_free(conn->out);
        conn->in = conn->out = NULL;
        return false;
    }
    conn->wire = conn->out;
    return true;
}

/*
 * Makes the buffers of a connection that gave them up again, before anything reads into or
 * writes onto them. false if out of memory: the failure then surfaces through the read path.
 */
static bool conn_wake(struct conn *conn)
{
    if (conn->in || !conn->open)
        return true;
    if (!conn_make_buffers(conn)) {
        conn_fail_later(conn, ENOMEM);
        return false;
    }
    return true;
}

/* ---- opening and closing ---- */

static void conn_init_common(struct conn *conn, struct event_base *base, struct conn_flusher *flusher,
                             const struct conn_callbacks *cb, void *arg)
{
    memset(conn, 0, sizeof(*conn));
    conn->fd = -1;
    conn->base = base;
    conn->flusher = flusher;
    conn->cb = cb;
    conn->arg = arg;
}

static int conn_attach(struct conn *conn, evutil_socket_t fd)
{
    if (!conn_make_buffers(conn))
        return -1;
    conn->fd = fd;
    event_assign(&conn->read_event, conn->base, fd, EV_READ | EV_PERSIST, conn_read_cb, conn);
    conn->open = true;
    return 0;
}

/*
 * The write event, made on first use (see struct conn). NULL if out of memory. Assigned in
 * memory of its own rather than by event_new, so that closing a connection between two workers'
 * loops frees it without event_free's look at the loop it last belonged to, as for read_event.
 */
static struct event *conn_write_event(struct conn *conn)
{
    if (!conn->write_event) {
        conn->write_event = malloc(event_get_struct_event_size());
        if (!conn->write_event)
            return NULL;
        event_assign(conn->write_event, conn->base, conn->fd, EV_WRITE | EV_PERSIST,
                     conn_write_cb, conn);
    }
    return conn->write_event;
}

int conn_open_accepted(struct conn *conn, struct event_base *base, struct conn_flusher *flusher,
                       evutil_socket_t fd, const struct conn_callbacks *cb, void *arg)
{
    /* The listener accepts with SOCK_NONBLOCK: no fcntl here. */
    conn_init_common(conn, base, flusher, cb, arg);
    return conn_attach(conn, fd);
}

int conn_open_connect(struct conn *conn, struct event_base *base, struct conn_flusher *flusher,
                      const struct sockaddr *addr, socklen_t addr_len,
                      const struct conn_callbacks *cb, void *arg)
{
    conn_init_common(conn, base, flusher, cb, arg);
    evutil_socket_t fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (conn_attach(conn, fd) != 0) {
        close(fd);
        return -1;
    }
    struct event *write_event = conn_write_event(conn);
    if (!write_event) {
        conn_close(conn); /* closes fd */
        errno = ENOMEM;
        return -1;
    }
    conn->connecting = true;
    /* Either way, the write event reports the outcome (immediately for unix sockets). */
    if (connect(fd, addr, addr_len) != 0 && errno != EINPROGRESS) {
        conn->error = errno;
        event_active(write_event, EV_WRITE, 0);
        return 0;
    }
    event_add(write_event, NULL);
    conn->write_pending = true;
    return 0;
}

/*
 * evdns may report a cancelled look-up after the connection (and the struct holding it) is gone,
 * so the callback gets this ticket, not the conn; closing the conn clears ticket->conn. The
 * request is kept here, not in every conn: only a backend whose host is a name has one.
 */
struct conn_dns_ticket {
    struct conn *conn;
    struct evdns_getaddrinfo_request *request; /* NULL until evdns_getaddrinfo returns */
};

static void conn_dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct conn_dns_ticket *ticket = arg;
    struct conn *conn = ticket->conn;
    free(ticket);
    if (!conn || result == EVUTIL_EAI_CANCEL) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    conn->dns_ticket = NULL;
    if (result != 0 || !res) {
        conn->error = EHOSTUNREACH;
        if (res)
            evutil_freeaddrinfo(res);
        conn->cb->on_event(conn, CONN_EVENT_ERROR, conn->arg);
        return;
    }
    struct sockaddr_storage addr;
    socklen_t addr_len = (socklen_t)res->ai_addrlen;
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    evutil_freeaddrinfo(res);
    struct conn_flusher *flusher = conn->flusher;
    struct event_base *base = conn->base;
    const struct conn_callbacks *cb = conn->cb;
    void *cb_arg = conn->arg;
    if (conn_open_connect(conn, base, flusher, (struct sockaddr *)&addr, addr_len, cb,
                          cb_arg) != 0) {
        conn->error = errno;
        cb->on_event(conn, CONN_EVENT_ERROR, cb_arg);
    }
}

int conn_open_connect_host(struct conn *conn, struct event_base *base, struct conn_flusher *flusher,
                           struct evdns_base *dns, const char *host, int port,
                           const struct conn_callbacks *cb, void *arg)
{
    struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                     .ai_protocol = IPPROTO_TCP };
    char port_text[16];

    conn_init_common(conn, base, flusher, cb, arg);
    if (!dns)
        return -1;
    snprintf(port_text, sizeof(port_text), "%d", port);
    struct conn_dns_ticket *ticket = malloc(sizeof(*ticket));
    if (!ticket)
        return -1;
    ticket->conn = conn;
    ticket->request = NULL;
    conn->dns_ticket = ticket;
    /* The request may complete (and call back, freeing the ticket) before this returns. */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(dns, host, port_text, &hints, conn_dns_cb, ticket);
    if (conn->dns_ticket)
        conn->dns_ticket->request = req;
    return 0;
}

void conn_close(struct conn *conn)
{
    struct conn_dns_ticket *ticket = conn->dns_ticket;
    if (ticket) {
        conn->dns_ticket = NULL;
        ticket->conn = NULL; /* the callback frees it, perhaps inside the cancel below */
        if (ticket->request)
            evdns_getaddrinfo_cancel(ticket->request);
    }
    if (!conn->open)
        return;
    conn_undirty(conn);
    conn->open = false;
    if (conn->base) { /* NULL: between two workers' loops, in neither */
        event_del(&conn->read_event);
        if (conn->write_event)
            event_del(conn->write_event);
    }
    free(conn->write_event);
    conn->write_event = NULL;
    conn->read_armed = conn->write_pending = false;
    if (conn->ssl) {
        SSL_free(conn->ssl); /* and its BIOs, which leave the socket open */
        conn->ssl = NULL;
    }
    if (conn->in) { /* NULL: given up while idle (conn_release_buffers) */
        evbuffer_free(conn->in);
        if (conn->wire != conn->out)
            evbuffer_free(conn->wire);
        evbuffer_free(conn->out);
    }
    conn->in = conn->out = conn->wire = NULL;
    evutil_closesocket(conn->fd);
    conn->fd = -1;
}

/* ---- moving between workers ---- */

bool conn_can_leave_loop(struct conn *conn)
{
    if (!conn->open || conn->connecting || conn->tls_handshaking || conn->dns_ticket)
        return false;
    if (conn->dirty)
        conn_flush(conn);
    /* Output still waiting for the kernel, or bytes read and not handled: it stays here. */
    return !conn->write_pending && !conn->failed && conn_buffered(conn->wire) == 0 &&
           conn_buffered(conn->out) == 0 && conn_buffered(conn->in) == 0;
}

bool conn_leave_loop(struct conn *conn)
{
    if (!conn_can_leave_loop(conn))
        return false;
    conn_undirty(conn);
    event_del(&conn->read_event);
    conn->base = NULL;
    conn->flusher = NULL;
    return true;
}

void conn_join_loop(struct conn *conn, struct event_base *base, struct conn_flusher *flusher)
{
    conn->base = base;
    conn->flusher = flusher;
    event_assign(&conn->read_event, base, conn->fd, EV_READ | EV_PERSIST, conn_read_cb, conn);
    if (conn->write_event)
        event_assign(conn->write_event, base, conn->fd, EV_WRITE | EV_PERSIST, conn_write_cb, conn);
    if (conn->read_armed)
        event_add(&conn->read_event, NULL);
    /* Input that arrived in transit is still in the socket: the read event reports it. */
}

/* ---- interest in readability and writability ---- */

/* Adds or removes one of a connection's events: returns whether it is added now, to remember. */
static bool conn_set_interest(struct event *event, bool armed, bool want)
{
    if (want == armed)
        return armed;
    if (want)
        event_add(event, NULL);
    else
        event_del(event);
    return want;
}

/* The owner reads, and SUSPEND does not hold the connection. */
static bool conn_wants_input(const struct conn *conn)
{
    return conn->reading && !conn->suspended;
}

/* The read event is wanted while the owner reads, and while OpenSSL needs input of its own. */
static void conn_arm_read(struct conn *conn)
{
    bool want = conn->open &&
                (conn_wants_input(conn) || conn->tls_handshaking || conn->tls_write_wants_read);
    conn->read_armed = conn_set_interest(&conn->read_event, conn->read_armed, want);
}

/* false if the write event could not be made (out of memory). */
static bool conn_arm_write(struct conn *conn, bool want)
{
    if (want == conn->write_pending)
        return true;
    struct event *write_event = conn_write_event(conn);
    if (!write_event)
        return false;
    conn->write_pending = conn_set_interest(write_event, conn->write_pending, want);
    return true;
}

/* ---- plain socket I/O ---- */

static void conn_report_error(struct conn *conn, int error)
{
    conn->error = error;
    conn->tls_handshaking = false;
    conn->tls_write_wants_read = false;
    conn_stop_reading(conn);
    conn->cb->on_event(conn, error ? CONN_EVENT_ERROR : CONN_EVENT_EOF, conn->arg);
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *conn = arg;
    struct evbuffer_iovec vec[2];

    if (conn->failed) {
        conn_report_error(conn, conn->error);
        return;
    }
    if (conn->ssl) {
        conn_tls_readable(conn);
        return;
    }
    if (conn->suspended)
        return; /* an event queued before SUSPEND */
    if (!conn->in && !conn_wake(conn))
        return; /* reported through this path next (conn_fail_later) */
    int n_vec = evbuffer_reserve_space(conn->in, (ev_ssize_t)conn->flusher->read_size, vec, 2);
    if (n_vec <= 0) {
        conn_report_error(conn, ENOMEM);
        return;
    }
    /* The reserved space can be larger than asked for: the read takes pkt_buf at most. */
    struct iovec iov[2];
    size_t room = conn->flusher->read_size;
    for (int i = 0; i < n_vec; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len < room ? vec[i].iov_len : room;
        room -= iov[i].iov_len;
    }
    ssize_t n = readv(fd, iov, n_vec);
    if (n < 0) {
        evbuffer_commit_space(conn->in, vec, 0);
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_report_error(conn, errno);
        return;
    }
    if (n == 0) {
        evbuffer_commit_space(conn->in, vec, 0);
        conn_report_error(conn, 0);
        return;
    }
    size_t left = (size_t)n;
    for (int i = 0; i < n_vec; i++) {
        size_t take = left < vec[i].iov_len ? left : vec[i].iov_len;
        vec[i].iov_len = take;
        left -= take;
    }
    evbuffer_commit_space(conn->in, vec, n_vec);
    conn->cb->on_read(conn, conn->arg);
}

static void conn_finish_connect(struct conn *conn)
{
    int error = conn->error;
    socklen_t len = sizeof(error);
    conn->connecting = false;
    event_del(conn->write_event);
    conn->write_pending = false;
    if (!error && getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0)
        error = errno;
    if (error) {
        conn->error = error;
        conn->cb->on_event(conn, CONN_EVENT_ERROR, conn->arg);
        return;
    }
    conn->cb->on_event(conn, CONN_EVENT_CONNECTED, conn->arg);
}

static void conn_notify_drain(struct conn *conn)
{
    if (!conn->want_drain || conn_buffered(conn->out) > 0 || conn_buffered(conn->wire) > 0)
        return;
    conn->want_drain = false;
    conn->cb->on_drain(conn, conn->arg);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *conn = arg;
    if (conn->connecting) {
        conn_finish_connect(conn);
        return;
    }
    conn_flush(conn);
}

void conn_flush(struct conn *conn)
{
    if (!conn->open || conn->connecting || conn->failed || !conn->wire)
        return; /* no wire: the buffers were given up empty, nothing to write */
    if (conn->ssl) {
        conn_tls_seal(conn);
        if (conn->failed)
            return;
    }
    while (evbuffer_get_length(conn->wire) > 0) {
        int n = evbuffer_write(conn->wire, conn->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        conn_after_write(conn, n < 0 ? errno : EPIPE);
        return;
    }
    conn_after_write(conn, 0);
}

/* A write failed: the error surfaces through the read path, outside whatever called us. */
static void conn_fail_later(struct conn *conn, int error)
{
    conn->failed = true;
    conn->error = error;
    event_active(&conn->read_event, EV_READ, 0);
}

/* After a write: waits for writability if output is left, reports an error or a drain. */
static void conn_after_write(struct conn *conn, int error)
{
    if (error && error != EAGAIN && error != EWOULDBLOCK && error != EINTR) {
        conn_fail_later(conn, error);
        return;
    }
    bool left = conn_buffered(conn->wire) > 0;
    if (!conn_arm_write(conn, left)) {
        conn_fail_later(conn, ENOMEM);
        return;
    }
    if (!left)
        conn_notify_drain(conn);
}

void conn_want_drain(struct conn *conn)
{
    if (!conn_wake(conn))
        return;
    conn->want_drain = true;
    /* Reported from the flusher (at once if nothing is left to write), not inside the caller. */
    conn_mark_dirty(conn);
}

void conn_start_reading(struct conn *conn)
{
    if (!conn->open || conn->reading)
        return;
    conn->reading = true;
    conn_arm_read(conn);
    /* Records OpenSSL already took off the socket raise no event: read them next iteration. */
    if (conn->ssl && !conn->tls_handshaking && !conn->suspended && SSL_has_pending(conn->ssl))
        event_active(&conn->read_event, EV_READ, 0);
}

void conn_suspend(struct conn *conn, bool suspended)
{
    if (conn->suspended == suspended)
        return;
    conn->suspended = suspended;
    if (!conn->open)
        return;
    conn_arm_read(conn);
    if (!suspended && conn->ssl && !conn->tls_handshaking && conn->reading &&
        SSL_has_pending(conn->ssl))
        event_active(&conn->read_event, EV_READ, 0);
}

bool conn_output_flushed(const struct conn *conn)
{
    return !conn->open || (conn_buffered(conn->out) == 0 && conn_buffered(conn->wire) == 0);
}

void conn_read_now(struct conn *conn)
{
    if (conn->open && !conn->ssl && conn_wants_input(conn))
        conn_read_cb(conn->fd, EV_READ, conn);
}

void conn_stop_reading(struct conn *conn)
{
    if (!conn->open || !conn->reading)
        return;
    conn->reading = false;
    conn_arm_read(conn);
}

/* ---- TLS ---- */

/* Records why OpenSSL failed (for the log and the client's message) and returns an errno. */
static int conn_tls_failure(struct conn *conn, int ssl_error)
{
    int saved = errno;
    unsigned long err = ERR_peek_last_error();
    if (err)
        conn->tls_error = err;
    ERR_clear_error();
    if (ssl_error == SSL_ERROR_SYSCALL && saved != 0)
        return saved;
    return EPROTO;
}

static void conn_tls_read(struct conn *conn);

/*
 * OpenSSL's records are appended to conn->wire as they are made, through this BIO, and go out
 * with every other connection's bytes at the end of the loop iteration: no copy through a memory
 * BIO, and no buffer kept by OpenSSL between writes.
 */
static int conn_wire_write(BIO *bio, const char *data, size_t len, size_t *written)
{
    struct conn *conn = BIO_get_data(bio);

    if (conn == NULL || evbuffer_add(conn->wire, data, len) != 0)
        return 0;
    *written = len;
    return 1;
}

static long conn_wire_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    (void)bio;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* the flusher does the flushing */
}

static int conn_wire_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

static BIO_METHOD *conn_wire_method_new(void)
{
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sluice wire");

    if (method != NULL &&
        (BIO_meth_set_write_ex(method, conn_wire_write) != 1 ||
         BIO_meth_set_ctrl(method, conn_wire_ctrl) != 1 ||
         BIO_meth_set_create(method, conn_wire_create) != 1)) {
        BIO_meth_free(method);
        method = NULL;
    }
    return method;
}

/* After an OpenSSL call: records it made are queued for the flusher. */
static void conn_tls_note_records(struct conn *conn, size_t wire_before)
{
    if (evbuffer_get_length(conn->wire) > wire_before)
        conn_mark_dirty(conn);
}

static void conn_tls_handshake(struct conn *conn)
{
    size_t wire_before = evbuffer_get_length(conn->wire);
    errno = 0;
    ERR_clear_error();
    int rc = SSL_do_handshake(conn->ssl);
    conn_tls_note_records(conn, wire_before);
    if (rc == 1) {
        conn->tls_handshaking = false;
        conn_arm_read(conn);
        conn->cb->on_event(conn, CONN_EVENT_CONNECTED, conn->arg);
        if (!conn->open)
            return;
        if (evbuffer_get_length(conn->out) > 0)
            conn_mark_dirty(conn);
        /* The first message often arrives with the client's Finished and is already read. */
        if (conn_wants_input(conn) && SSL_has_pending(conn->ssl))
            conn_tls_read(conn);
        return;
    }
    int ssl_error = SSL_get_error(conn->ssl, rc);
    if (ssl_error == SSL_ERROR_WANT_READ)
        return;
    int error = conn_tls_failure(conn, ssl_error);
    /* The alert that says why goes out now, before the owner closes the socket. */
    (void)evbuffer_write(conn->wire, conn->fd);
    conn_report_error(conn, error);
}

/*
 * Decrypts what has arrived into conn->in and hands it to the owner. The socket is read again
 * only while OpenSSL holds part of a record: a whole record leaves nothing pending, and the next
 * bytes raise the read event, so no read ends in EAGAIN.
 */
static void conn_tls_read(struct conn *conn)
{
    bool got = false;
    bool ended = false;
    int error = 0;
    size_t wire_before = evbuffer_get_length(conn->wire);

    for (int i = 0; i < CONN_TLS_READS_PER_EVENT; i++) {
        struct evbuffer_iovec vec;
        size_t n = 0;
        if (evbuffer_reserve_space(conn->in, (ev_ssize_t)conn->flusher->read_size, &vec, 1) != 1) {
            error = ENOMEM;
            break;
        }
        errno = 0;
        ERR_clear_error();
        if (vec.iov_len > conn->flusher->read_size)
            vec.iov_len = conn->flusher->read_size;
        int rc = SSL_read_ex(conn->ssl, vec.iov_base, vec.iov_len, &n);
        if (rc == 1) {
            vec.iov_len = n;
            evbuffer_commit_space(conn->in, &vec, 1);
            got = true;
            if (!SSL_has_pending(conn->ssl))
                break;
            continue;
        }
        evbuffer_commit_space(conn->in, &vec, 0);
        int ssl_error = SSL_get_error(conn->ssl, rc);
        if (ssl_error == SSL_ERROR_WANT_READ)
            break;
        if (ssl_error == SSL_ERROR_ZERO_RETURN)
            ended = true; /* close_notify, or a bare EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
        else
            error = conn_tls_failure(conn, ssl_error);
        break;
    }
    conn_tls_note_records(conn, wire_before); /* reading can answer too: a KeyUpdate, an alert */
    if (got) {
        conn->cb->on_read(conn, conn->arg);
        if (!conn->open)
            return;
    }
    if (ended || error) {
        conn_report_error(conn, error);
        return;
    }
    if (conn_wants_input(conn) && SSL_has_pending(conn->ssl))
        event_active(&conn->read_event, EV_READ, 0);
}

static void conn_tls_readable(struct conn *conn)
{
    if (conn->tls_handshaking) {
        conn_tls_handshake(conn);
        return;
    }
    if (conn->tls_write_wants_read) {
        conn->tls_write_wants_read = false;
        conn_arm_read(conn);
        conn_mark_dirty(conn); /* the flusher seals what waited */
    }
    if (conn_wants_input(conn))
        conn_tls_read(conn);
}

/*
 * Seals the owner's output into records, up to 16 KB each, onto the wire. Runs no callback: a
 * failure marks the connection failed and surfaces through the read path, as for plain sockets.
 */
static void conn_tls_seal(struct conn *conn)
{
    if (conn->tls_handshaking || conn->tls_write_wants_read)
        return; /* sealed once the handshake is over, or once OpenSSL has read what it needs */
    size_t wire_before = evbuffer_get_length(conn->wire);
    while (evbuffer_get_length(conn->out) > 0) {
        size_t len = evbuffer_get_length(conn->out);
        size_t written = 0;
        if (len > CONN_TLS_RECORD)
            len = CONN_TLS_RECORD;
        const unsigned char *data = evbuffer_pullup(conn->out, (ev_ssize_t)len);
        errno = 0;
        ERR_clear_error();
        int rc = data ? SSL_write_ex(conn->ssl, data, len, &written) : 0;
        if (rc == 1) {
            evbuffer_drain(conn->out, written);
            continue;
        }
        int ssl_error = data ? SSL_get_error(conn->ssl, rc) : SSL_ERROR_SSL;
        if (ssl_error == SSL_ERROR_WANT_READ) {
            conn->tls_write_wants_read = true;
            conn_arm_read(conn);
            break;
        }
        conn_fail_later(conn, data ? conn_tls_failure(conn, ssl_error) : ENOMEM);
        return;
    }
    conn_tls_note_records(conn, wire_before);
}

/*
 * OpenSSL reads straight from the socket and writes its records onto conn->wire (above), from
 * where they go out with every other connection's bytes. A direct TLS client (no SSLRequest) sent its
 * ClientHello before sluice knew it spoke TLS: those bytes sit in conn->in, and go back in front
 * of the socket in a buffering BIO, so OpenSSL reads them first.
 */
static int conn_attach_bios(struct conn *conn, SSL *ssl)
{
    size_t len = evbuffer_get_length(conn->in);
    BIO *socket_in = BIO_new_socket(conn->fd, BIO_NOCLOSE);
    BIO *records = BIO_new(conn->flusher->wire_method);
    BIO *buffer = len > 0 ? BIO_new(BIO_f_buffer()) : NULL;
    if (!socket_in || !records || (len > 0 && !buffer)) {
        BIO_free(buffer);
        BIO_free(socket_in);
        BIO_free(records);
        return -1;
    }
    BIO *input = socket_in;
    if (buffer) {
        input = BIO_push(buffer, socket_in);
        const uint8_t *bytes = evbuffer_pullup(conn->in, (ev_ssize_t)len);
        if (BIO_set_buffer_read_data(input, (void *)bytes, (long)len) != 1) {
            BIO_free_all(input);
            BIO_free(records);
            return -1;
        }
        evbuffer_drain(conn->in, len);
    }
    BIO_set_data(records, conn);
    SSL_set_bio(ssl, input, records);
    return 0;
}

int conn_start_tls(struct conn *conn, SSL *ssl, bool accepting)
{
    if (!conn->open || conn->ssl || !conn_wake(conn) || evbuffer_get_length(conn->out) > 0 ||
        (!accepting && evbuffer_get_length(conn->in) > 0)) {
        SSL_free(ssl);
        return -1;
    }
    bool replay = evbuffer_get_length(conn->in) > 0;
    struct evbuffer *wire = evbuffer_new();
    if (!wire || conn_attach_bios(conn, ssl) != 0) {
        if (wire)
            evbuffer_free(wire);
        SSL_free(ssl);
        return -1;
    }
    conn->wire = wire;
    /* One read takes every record that has arrived, not a header then a body. */
    SSL_set_read_ahead(ssl, 1);
    /* Clients and servers often close without close_notify; that is an EOF, not an attack:
     * every message carries its own length, so a cut message is seen anyway. */
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (accepting)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    conn->ssl = ssl;
    conn->tls_handshaking = true;
    conn->tls_error = 0;
    conn_arm_read(conn);
    /* A ClientHello to send, or one already buffered: take the first step in the loop, not
     * inside the caller. Otherwise the peer's ClientHello raises the read event. */
    if (replay || !accepting)
        event_active(&conn->read_event, EV_READ, 0);
    return 0;
}

SSL *conn_ssl(const struct conn *conn)
{
    return conn->ssl;
}

unsigned long conn_tls_error(struct conn *conn)
{
    return conn->tls_error;
}

/* ---- messages ---- */

bool conn_write(struct conn *conn, const void *data, size_t len)
{
    if (!conn->open || (!conn->out && !conn_wake(conn)) || fault_alloc_fails(FAULT_SITE_OUTPUT) ||
        evbuffer_add(conn->out, data, len) != 0)
        return false;
    conn_mark_dirty(conn);
    return true;
}

bool conn_send(struct conn *conn, const struct msgbuf *mb)
{
    if (mb->failed)
        return false;
    return conn_write(conn, mb->data, mb->len);
}

size_t conn_forward(struct conn *src, struct conn *dst, uint32_t *remaining)
{
    size_t available = conn_buffered(src->in);
    size_t amount = available < *remaining ? available : *remaining;

    if (amount == 0 || (!dst->out && !conn_wake(dst)))
        return 0;
    if (amount == available)
        evbuffer_add_buffer(dst->out, src->in);
    else
        evbuffer_remove_buffer(src->in, dst->out, amount);
    *remaining -= (uint32_t)amount;
    conn_mark_dirty(dst);
    return amount;
}

enum proto_result conn_peek_header(struct evbuffer *buf, uint32_t max_len, uint8_t *type,
                                   uint32_t *msg_len)
{
    uint8_t header[PROTO_HEADER_LEN];

    if (evbuffer_copyout(buf, header, sizeof(header)) < (ev_ssize_t)sizeof(header))
        return PROTO_INCOMPLETE;
    return proto_peek_header(header, sizeof(header), max_len, type, msg_len);
}

const uint8_t *conn_pullup_message(struct evbuffer *buf, uint32_t msg_len)
{
    size_t whole = (size_t)msg_len + 1;

    if (evbuffer_get_length(buf) < whole)
        return NULL;
    return evbuffer_pullup(buf, (ev_ssize_t)whole);
}

uint32_t conn_skip_input(struct evbuffer *buf, uint32_t remaining)
{
    size_t buffered = evbuffer_get_length(buf);
    size_t now = buffered < remaining ? buffered : remaining;

    evbuffer_drain(buf, now);
    return remaining - (uint32_t)now;
}

void conn_tune_socket(evutil_socket_t fd, bool keepalive)
{
    int on = 1, keepalive_value = keepalive ? 1 : 0;
    /* Both fail harmlessly with EOPNOTSUPP/ENOPROTOOPT on unix sockets. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    /* Set either way: libevent's evconnlistener_new_bind turns SO_KEEPALIVE on for every
     * listener, and accepted sockets inherit it, so "off" must be said explicitly. */
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keepalive_value, sizeof(keepalive_value));
}

bool conn_output_is_full(const struct conn *conn)
{
    size_t sealed = conn->open && conn->wire != conn->out ? evbuffer_get_length(conn->wire) : 0;
    return conn->open && conn_buffered(conn->out) + sealed > CONN_OUTPUT_HIGH_WATER;
}
