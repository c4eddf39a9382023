/*
 * listener.c: opens the TCP and unix-socket listeners from the config and hands accepted sockets
 * to the worker. On EMFILE/ENFILE it stops accepting for a second rather than spin on the error.
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <event2/listener.h>

#include "conn.h"
#include "log.h"
#include "steering.h"

#define LISTEN_BACKLOG 4096
#define ACCEPT_PAUSE_SECONDS 1

struct listener {
    struct listener *next;
    struct worker *worker;
    struct evconnlistener *evl;
    struct event *resume_timer;
    bool is_unix;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char description[128];
};

static void listener_accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *addr,
                               int addr_len, void *arg)
{
    struct listener *l = arg;
    worker_accept(l->worker, fd, addr, addr_len, l->is_unix);
}

static void listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    if (!l->worker->suspended)
        evconnlistener_enable(l->evl);
}

static void listener_error_cb(struct evconnlistener *evl, void *arg)
{
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        struct timeval pause = { ACCEPT_PAUSE_SECONDS, 0 };
        log_warning("accept() on %s failed: %s; pausing accepts for %d s", l->description,
                    evutil_socket_error_to_string(err), ACCEPT_PAUSE_SECONDS);
        evconnlistener_disable(evl);
        evtimer_add(l->resume_timer, &pause);
        return;
    }
    log_warning("accept() on %s failed: %s", l->description, evutil_socket_error_to_string(err));
}

static void listener_attach(struct worker *w, struct listener *l)
{
    l->resume_timer = evtimer_new(w->base, listener_resume_cb, l);
    evconnlistener_set_error_cb(l->evl, listener_error_cb);
    l->next = w->listeners;
    w->listeners = l;
}

/*
 * With several workers the TCP sockets need SO_REUSEPORT even when so_reuseport is off, which
 * would let another process of the same user share the port unnoticed: a plain bind first tells
 * whether anyone holds it.
 */
static bool listener_port_taken(struct worker *w, const struct sockaddr *addr, int addr_len,
                                const char *description)
{
    if (w->index > 0 || w->cfg->so_reuseport || w->world->n_workers == 1)
        return false;
    int probe = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (probe < 0)
        return false;
    setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool taken = bind(probe, addr, (socklen_t)addr_len) != 0 && errno == EADDRINUSE;
    close(probe);
    if (taken)
        log_error("could not listen on %s: the address is in use by another process (set "
                  "so_reuseport = on to share it)", description);
    return taken;
}

static struct listener *listener_new(struct worker *w, const struct sockaddr *addr, int addr_len,
                                     bool is_unix, const char *description)
{
    struct listener *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE;
    /* Each worker has its own TCP socket on the port; the kernel spreads connections over them. */
    if ((w->cfg->so_reuseport || w->world->n_workers > 1) && !is_unix)
        flags |= LEV_OPT_REUSEABLE_PORT;
    /* TCP_DEFER_ACCEPT: the kernel hands over a connection once its first bytes are in, so the
     * accept and the first read happen in one wake-up (and silent connections cost nothing). */
    if (!is_unix)
        flags |= LEV_OPT_DEFERRED_ACCEPT;
    l->worker = w;
    l->is_unix = is_unix;
    snprintf(l->description, sizeof(l->description), "%s", description);
    if (!is_unix && listener_port_taken(w, addr, addr_len, description)) {
        free(l);
        return NULL;
    }
    l->evl = evconnlistener_new_bind(w->base, listener_accept_cb, l, flags, LISTEN_BACKLOG, addr, addr_len);
    if (!l->evl) {
        log_error("could not listen on %s: %s", description,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        free(l);
        return NULL;
    }
    if (!is_unix)
        conn_tune_socket(evconnlistener_get_fd(l->evl), w->cfg->tcp_keepalive);
    listener_attach(w, l);
    if (w->index == 0)
        log_info("listening on %s", description);
    return l;
}

int listener_for_each_address(struct worker *w, const char *setting, const char *host, int port,
                              listener_open_fn open_one)
{
    struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                     .ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG };
    struct evutil_addrinfo *res = NULL;
    char port_text[16];
    snprintf(port_text, sizeof(port_text), "%d", port);
    int rc = evutil_getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port_text, &hints, &res);
    if (rc != 0) {
        log_error("%s %s: %s", setting, host, evutil_gai_strerror(rc));
        return -1;
    }
    int opened = 0;
    for (struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next) {
        char description[128];
        bool v6 = ai->ai_family == AF_INET6;
        snprintf(description, sizeof(description), "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
        if (open_one(w, ai->ai_addr, (int)ai->ai_addrlen, description) == 0)
            opened++;
    }
    evutil_freeaddrinfo(res);
    return opened;
}

static int listener_open_tcp_one(struct worker *w, const struct sockaddr *addr, int addr_len,
                                 const char *description)
{
    return listener_new(w, addr, addr_len, false, description) ? 0 : -1;
}

static int listener_open_tcp(struct worker *w, const char *host, int port)
{
    return listener_for_each_address(w, "listen_addr", host, port, listener_open_tcp_one) > 0 ? 0 : -1;
}

static int listener_open_unix(struct worker *w, const char *dir, int port, int mode)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", dir, port);
    if (n < 0 || (size_t)n >= sizeof(sun.sun_path)) {
        log_error("unix_socket_dir %s: path too long", dir);
        return -1;
    }
    /* A stale socket file from a previous run: remove it only if nothing answers on it. */
    int probe = socket(AF_UNIX, SOCK_STREAM, 0);
    if (probe >= 0) {
        if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
            close(probe);
            log_error("unix socket %s is in use by another process", sun.sun_path);
            return -1;
        }
        close(probe);
    }
    unlink(sun.sun_path);
    struct listener *l = listener_new(w, (struct sockaddr *)&sun, sizeof(sun), true, sun.sun_path);
    if (!l)
        return -1;
    snprintf(l->unix_path, sizeof(l->unix_path), "%s", sun.sun_path);
    chmod(sun.sun_path, (mode_t)mode);
    return 0;
}

/* The unix socket is one for the process: each further worker listens on its own copy of it. */
static int listener_share_unix(struct worker *w)
{
    for (struct listener *first = w->world->workers[0]->listeners; first; first = first->next) {
        if (!first->is_unix)
            continue;
        struct listener *l = calloc(1, sizeof(*l));
        int fd = fcntl(evconnlistener_get_fd(first->evl), F_DUPFD_CLOEXEC, 0);
        if (!l || fd < 0) {
            free(l);
            if (fd >= 0)
                close(fd);
            log_error("could not share the unix socket with worker %u: %s", w->index, strerror(errno));
            return -1;
        }
        l->worker = w;
        l->is_unix = true;
        snprintf(l->description, sizeof(l->description), "%s", first->description);
        /* backlog -1: already listening */
        l->evl = evconnlistener_new(w->base, listener_accept_cb, l,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
        if (!l->evl) {
            close(fd);
            free(l);
            return -1;
        }
        listener_attach(w, l);
    }
    return 0;
}

int listener_open_all(struct worker *w)
{
    const struct config *cfg = w->cfg;
    if (cfg->listen_addr && *cfg->listen_addr) {
        char *list = strdup(cfg->listen_addr), *save = NULL;
        if (!list)
            return -1;
        for (char *item = strtok_r(list, ", ", &save); item; item = strtok_r(NULL, ", ", &save)) {
            if (listener_open_tcp(w, item, cfg->listen_port) != 0) {
                free(list);
                return -1;
            }
        }
        free(list);
    }
    if (w->index > 0) {
        if (listener_share_unix(w) != 0)
            return -1;
    } else if (cfg->unix_socket_dir && *cfg->unix_socket_dir &&
               listener_open_unix(w, cfg->unix_socket_dir, cfg->listen_port, cfg->unix_socket_mode) != 0) {
        return -1;
    }
    if (!w->listeners) {
        log_error("nothing to listen on: set listen_addr or unix_socket_dir");
        return -1;
    }
    return 0;
}

/*
 * close() resets the connections the kernel has completed but nobody accepted yet (with
 * so_reuseport, those it steered to this socket): take them first.
 */
static void listener_accept_pending(struct listener *l)
{
    evutil_socket_t fd = evconnlistener_get_fd(l->evl);
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int client = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0)
            return; /* EAGAIN: the queue is empty (out of descriptors: nothing more to take) */
        worker_accept(l->worker, client, (struct sockaddr *)&ss, (int)len, l->is_unix);
    }
}

void listener_close_all_after_pending(struct worker *w)
{
    for (struct listener *l = w->listeners; l; l = l->next)
        listener_accept_pending(l);
    listener_close_all(w);
}

void listener_stop_deferring(struct worker *w)
{
    int off = 0;
    for (struct listener *l = w->listeners; l; l = l->next)
        if (!l->is_unix && setsockopt(evconnlistener_get_fd(l->evl), IPPROTO_TCP, TCP_DEFER_ACCEPT,
                                      &off, sizeof(off)) != 0)
            log_warning("could not stop deferring accepts on %s: %s", l->description, strerror(errno));
}

bool listener_steer_by_cpu(struct worker *w, bool on, const int *cpus, size_t n_cpus)
{
    size_t len = 0;
    struct sock_filter *program = NULL;   /* the kernel keeps a copy */

    if (on) {
        program = calloc(STEERING_MAX_PROGRAM, sizeof(*program));
        if (program)
            len = steering_build_program(cpus, n_cpus, (unsigned)w->world->n_workers, program,
                                         STEERING_MAX_PROGRAM);
        if (len == 0) {
            free(program);
            return false;
        }
    }
    struct sock_fprog prog = { .len = (unsigned short)len, .filter = program };
    bool done = true;
    for (struct listener *l = w->listeners; l; l = l->next) {
        if (l->is_unix)
            continue;
        int fd = evconnlistener_get_fd(l->evl);
        int one = 1;
        int rc = on ? setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog))
                    : setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &one, sizeof(one));
        if (rc != 0 && !(!on && errno == ENOENT)) {
            log_warning("could not %s steering new connections by CPU on %s: %s",
                        on ? "start" : "stop", l->description, strerror(errno));
            done = false;
        }
    }
    free(program);
    return done;
}

void listener_suspend_all(struct worker *w, bool suspended)
{
    for (struct listener *l = w->listeners; l; l = l->next) {
        if (suspended)
            evconnlistener_disable(l->evl);
        else
            evconnlistener_enable(l->evl);
    }
}

void listener_close_all(struct worker *w)
{
    while (w->listeners) {
        struct listener *l = w->listeners;
        w->listeners = l->next;
        evconnlistener_free(l->evl);
        event_free(l->resume_timer);
        if (l->is_unix && l->unix_path[0])
            unlink(l->unix_path);
        free(l);
    }
}
