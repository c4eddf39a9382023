/*
 * peer.c: forwards a CancelRequest to where its client lives. To another worker of this process:
 * a mail with the pid and key, which that worker looks up in its own registry. To another instance
 * (its peer_id in the pid): each forward is its own short connection: connect, write the 16 bytes,
 * wait for the peer to close. The requester is not kept waiting either way (its connection closes
 * at once, as for a cancel of this worker's).
 */
#include "peer.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>

#include "client.h"
#include "log.h"
#include "timeval.h"
#include "worker.h"

#define DROPPED_LOG_INTERVAL 1.0 /* seconds between two "cancel dropped" lines */

struct peer_forward {
    TAILQ_ENTRY(peer_forward) link;
    struct worker *worker;
    struct bufferevent *bev;
    int peer_id;
    bool connecting; /* inside peer_connect: the event callback only records the end */
    bool finished;
};

/* A cancel on its way to another worker: numbers only, nothing of the sender's state. */
struct worker_cancel {
    struct mail mail;
    uint32_t pid;
    uint32_t key;
    uint64_t requester_id;
};

static void worker_cancel_deliver(struct worker *receiver, struct mail *mail)
{
    struct worker_cancel *cancel = (struct worker_cancel *)mail;
    /* Mail left when the loop has ended is delivered while the worker is torn down: a cancel
     * started then would outlive the loop. Its clients are being closed anyway. */
    if (!event_base_got_exit(receiver->base) && !event_base_got_break(receiver->base))
        client_cancel_query(receiver, cancel->pid, cancel->key, cancel->requester_id);
    free(cancel);
}

void peer_pass_cancel_to_worker(struct worker *w, unsigned worker, uint32_t pid, uint32_t key,
                                uint64_t requester_id)
{
    if (worker >= w->world->n_workers) {
        log_debug("C-%llu: cancel request for worker %u dropped: there are %zu workers",
                  (unsigned long long)requester_id, worker, w->world->n_workers);
        return;
    }
    struct worker_cancel *cancel = mail_new(sizeof(*cancel), worker_cancel_deliver);
    if (!cancel) {
        log_warning("C-%llu: cancel request for worker %u dropped: out of memory",
                    (unsigned long long)requester_id, worker);
        return;
    }
    cancel->pid = pid;
    cancel->key = key;
    cancel->requester_id = requester_id;
    log_debug("C-%llu: cancel request passed from worker %u to worker %u",
              (unsigned long long)requester_id, w->index, worker);
    worker_post(w->world->workers[worker], &cancel->mail);
}

static void peer_forward_free(struct peer_forward *f)
{
    TAILQ_REMOVE(&f->worker->peer_forwards.active, f, link);
    bufferevent_free(f->bev);
    free(f);
}

/* The peer closes once it has handled the request; an error or timeout ends it as well. */
static void peer_forward_event(struct bufferevent *bev, short what, void *arg)
{
    struct peer_forward *f = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        log_warning("cancel request forwarded to peer %d failed: %s", f->peer_id,
                    (what & BEV_EVENT_TIMEOUT) ? "timed out"
                                               : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    else
        log_debug("cancel request forwarded to peer %d", f->peer_id);
    f->finished = true;
    if (!f->connecting)
        peer_forward_free(f);
}

static int peer_connect(struct worker *w, struct bufferevent *bev, const struct config_peer *peer)
{
    if (peer->host[0] == '/') {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        int n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", peer->host, peer->port);
        if (n < 0 || (size_t)n >= sizeof(sun.sun_path))
            return -1;
        return bufferevent_socket_connect(bev, (struct sockaddr *)&sun, sizeof(sun));
    }
    if (w->dns)
        return bufferevent_socket_connect_hostname(bev, w->dns, AF_UNSPEC, peer->host, peer->port);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)peer->port) };
    if (inet_pton(AF_INET, peer->host, &sin.sin_addr) != 1)
        return -1;
    return bufferevent_socket_connect(bev, (struct sockaddr *)&sin, sizeof(sin));
}

void peer_forwards_init(struct peer_forwards *forwards)
{
    TAILQ_INIT(&forwards->active);
    forwards->dropped_log = (struct log_rate){ 0 };
}

void peer_log_dropped_cancel(struct worker *w, int peer_id, const char *why)
{
    unsigned long held_back;

    /* A flood of bogus cancels must not flood the log. */
    if (!log_rate_allow(&w->peer_forwards.dropped_log, worker_now(w), DROPPED_LOG_INTERVAL,
                        &held_back))
        return;
    if (held_back > 0)
        log_warning("cancel request for peer %d dropped: %s (and %lu more dropped cancels not logged)",
                    peer_id, why, held_back);
    else
        log_warning("cancel request for peer %d dropped: %s", peer_id, why);
}

void peer_forward_cancel(struct worker *w, int peer_id, uint32_t pid, uint32_t key)
{
    const struct config_peer *peer = config_find_peer(w->cfg, peer_id);
    if (!peer) {
        peer_log_dropped_cancel(w, peer_id, "no such peer in [peers]");
        return;
    }
    struct peer_forward *f = calloc(1, sizeof(*f));
    if (!f) {
        peer_log_dropped_cancel(w, peer_id, "out of memory");
        return;
    }
    f->worker = w;
    f->peer_id = peer_id;
    f->bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!f->bev) {
        free(f);
        peer_log_dropped_cancel(w, peer_id, "out of memory");
        return;
    }
    TAILQ_INSERT_TAIL(&w->peer_forwards.active, f, link);
    struct msgbuf *mb = &w->scratch;
    msgbuf_reset(mb);
    proto_build_cancel_request(mb, pid, key);
    bufferevent_setcb(f->bev, NULL, NULL, peer_forward_event, f);
    bufferevent_enable(f->bev, EV_READ | EV_WRITE);
    bufferevent_write(f->bev, mb->data, mb->len);
    double timeout = w->cfg->server_connect_timeout;
    if (timeout > 0) {
        /* A peer that never answers must not keep the forward for ever. */
        struct timeval tv = timeval_from_seconds(timeout);
        bufferevent_set_timeouts(f->bev, &tv, &tv);
    }
    f->connecting = true;
    int rc = peer_connect(w, f->bev, peer);
    f->connecting = false;
    if (rc != 0 && !f->finished)
        log_warning("cancel request for peer %d not forwarded: cannot connect to %s port %d", peer_id,
                    peer->host, peer->port);
    if (rc != 0 || f->finished)
        peer_forward_free(f);
}

void peer_forward_free_all(struct worker *w)
{
    while (!TAILQ_EMPTY(&w->peer_forwards.active))
        peer_forward_free(TAILQ_FIRST(&w->peer_forwards.active));
}
