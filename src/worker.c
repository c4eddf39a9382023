/*
 * worker.c: one event loop and what it owns. Accepts clients, finds pools, runs the periodic
 * janitor (timeouts, lifetimes), reloads the config on SIGHUP and shuts down in order on
 * SIGTERM/SIGINT. Closed connections are freed by the reaper, after the callback that closed them.
 */
#include "worker.h"

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <openssl/rand.h>

#include "admin.h"
#include "auth_query.h"
#include "auth_token.h"
#include "autodb.h"
#include "client.h"
#include "fault.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "prepared.h"
#include "server.h"
#include "server_token.h"
#include "steering.h"
#include "timeval.h"
#include "world_view.h"

#define JANITOR_INTERVAL_USEC 200000
/* A client accepted past max_client_conn that has not sent its startup packet by then is told
 * it is refused anyway, so a flood of silent connections does not hold descriptors for long. */
#define OVER_LIMIT_ANSWER_SECONDS 5.0
/* A client that does not read its final error is dropped after this long. */
#define CLOSING_GRACE_SECONDS 5.0
/* An idle plain client gives up its empty buffers (conn_release_buffers) after this long without
 * input: thousands of idle connections cost less, and one that works keeps its buffers, so
 * none are made again per transaction, only on the first read after a pause. */
#define IDLE_BUFFER_RELEASE_SECONDS 1.0
#define SHUTDOWN_FLUSH_USEC 100000
/* SHUTDOWN listens on this long, the kernel's accept deferral off, so that a connection it had
 * completed the handshake of before (its startup packet still on its way) is served, not reset
 * (listener_stop_deferring); then it takes what is queued and closes its sockets. */
#define DRAIN_LISTEN_GRACE_SECONDS 0.5

static void worker_reaper_cb(evutil_socket_t fd, short what, void *arg);
static void worker_janitor_cb(evutil_socket_t fd, short what, void *arg);
static void worker_apply_io_uring(struct worker *w);
static void worker_signal_cb(evutil_socket_t sig, short what, void *arg);
static void worker_prewarm_pools(struct worker *w);
static void worker_watch_steering(struct worker *w);

double worker_now(struct worker *w)
{
    /* Read from the vDSO each time (tens of nanoseconds): exact to the microsecond for the
     * latency figures, without the timerfd re-arm per loop iteration that libevent's precise
     * timer costs. */
    struct timespec ts;
    (void)w;
    clock_gettime(CLOCK_REALTIME, &ts);
    return timespec_seconds(ts);
}

static int worker_load_users(const struct config *cfg, struct userlist **out)
{
    char err[512];
    *out = NULL;
    if (!cfg->auth_file || !*cfg->auth_file)
        return 0;
    if (userlist_load(cfg->auth_file, out, err, sizeof(err)) != 0) {
        log_error("auth_file: %s", err);
        return -1;
    }
    return 0;
}

static bool same_text(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* TLS contexts and the token key file: loaded together, so a reload swaps all or nothing. */
static int worker_load_security(const struct config *cfg, struct tls_contexts *tls,
                                struct token_keyring **keys)
{
    char err[1024];
    *keys = NULL;
    if (tls_contexts_load(cfg, tls, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return -1;
    }
    if (cfg->auth_token_keys && *cfg->auth_token_keys &&
        token_keyring_load(cfg->auth_token_keys, keys, err, sizeof(err)) != 0) {
        log_error("auth_token_keys: %s", err);
        tls_contexts_free(tls);
        return -1;
    }
    return 0;
}

/* The AWS keys backend IAM tokens are signed with; none unless a database uses server_auth_token. */
static int worker_load_server_token_signer(const struct config *cfg,
                                           struct server_token_signer **out)
{
    char err[512];
    bool used = false;
    *out = NULL;
    for (size_t i = 0; i < cfg->n_databases; i++)
        used = used || cfg->databases[i].server_auth_token;
    if (!used)
        return 0;
    if (server_token_signer_load(cfg->server_auth_token_credentials, cfg->server_auth_token_profile,
                                 out, err, sizeof(err)) != 0) {
        log_error("server_auth_token: %s", err);
        return -1;
    }
    log_info("server_auth_token: signing backend tokens with access key %s from %s, region %s",
             (*out)->creds.access_key_id,
             cfg->server_auth_token_credentials ? cfg->server_auth_token_credentials
                                                : "the environment",
             cfg->server_auth_token_region);
    return 0;
}

static struct event_base *worker_new_base(void)
{
    /* One thread per loop: no locking inside libevent. */
    struct event_config *ec = event_config_new();
    if (!ec)
        return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    /* No EVENT_BASE_FLAG_PRECISE_TIMER: it re-arms a timerfd on every loop iteration, one
     * system call each time. Timeouts need only epoll's milliseconds; latencies are measured
     * with worker_now. */
    struct event_base *base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

static int worker_add_signals(struct worker *w)
{
    static const int signals[] = { SIGINT, SIGTERM, SIGHUP };
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
        w->signal_events[i] = evsignal_new(w->base, signals[i], worker_signal_cb, w);
        if (!w->signal_events[i] || event_add(w->signal_events[i], NULL) != 0)
            return -1;
    }
    return 0;
}

/* Worker 0 loads what the workers share (users, TLS, token keys and signer); the others read
 * the same objects, which change only while the world is stopped (reload). */
static int worker_load_shared(struct worker *w, struct config *cfg)
{
    if (w->index > 0) {
        const struct worker *first = w->world->workers[0];
        w->users = first->users;
        w->tls = first->tls;
        w->token_keys = first->token_keys;
        w->server_token_signer = first->server_token_signer;
        w->prepared = first->prepared;
        return 0;
    }
    if (worker_load_users(cfg, &w->users) != 0)
        return -1;
    if (worker_load_security(cfg, &w->tls, &w->token_keys) != 0)
        return -1;
    if (worker_load_server_token_signer(cfg, &w->server_token_signer) != 0)
        return -1;
    uint8_t seed[PREPARED_SEED_LEN];
    if (RAND_bytes(seed, sizeof(seed)) != 1 || !(w->prepared = prepared_registry_new(seed)))
        return -1;
    return 0;
}

int worker_init(struct worker *w, struct config *cfg, struct world *world, unsigned index)
{
    memset(w, 0, sizeof(*w));
    w->world = world;
    w->index = index;
    if (index == 0)
        w->thread = pthread_self(); /* worker 0 runs on the main thread: SHOW WORKERS' CPU time */
    w->mailbox.wake_fd = -1;
    w->cfg = cfg;
    TAILQ_INIT(&w->clients);
    client_cache_init(&w->client_cache);
    TAILQ_INIT(&w->login_clients);
    TAILQ_INIT(&w->pools);
    TAILQ_INIT(&w->autodbs);
    TAILQ_INIT(&w->dead_clients);
    TAILQ_INIT(&w->dead_servers);
    TAILQ_INIT(&w->departing_servers);
    peer_forwards_init(&w->peer_forwards);
    cancel_registry_init(&w->cancels, cfg->peer_id, index, (unsigned)world->n_workers);
    msgbuf_init(&w->scratch);

    w->base = worker_new_base();
    if (!w->base) {
        log_error("could not create the event loop");
        return -1;
    }
    if (mailbox_init(w) != 0)
        return -1;
    /* Host names in [databases] need a resolver; IP addresses and sockets do not. */
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!w->dns && index == 0)
        log_warning("no DNS resolver configured: [databases] hosts must be IP addresses or socket directories");
    if (worker_load_shared(w, cfg) != 0)
        return -1;
    if (conn_flusher_init(&w->flusher, w->base) != 0)
        return -1;
    w->flusher.read_size = (size_t)cfg->pkt_buf;
    worker_apply_io_uring(w);
    w->reaper = event_new(w->base, -1, 0, worker_reaper_cb, w);
    w->janitor = event_new(w->base, -1, EV_PERSIST, worker_janitor_cb, w);
    struct timeval tick = { 0, JANITOR_INTERVAL_USEC };
    if (!w->reaper || !w->janitor || event_add(w->janitor, &tick) != 0)
        return -1;
    /* Signals, the console's state and the metrics endpoint belong to the process: worker 0. */
    if (index == 0 && worker_add_signals(w) != 0) {
        log_error("could not install signal handlers");
        return -1;
    }
    if (index == 0 && (admin_init(w) != 0 || metrics_init(w) != 0))
        return -1;
    if (!(w->auth_query = auth_query_new(w)))
        return -1;
    if (listener_open_all(w) != 0)
        return -1;
    worker_prewarm_pools(w);
    return 0;
}

static void worker_note_turn(struct worker *w)
{
    atomic_store_explicit(&w->last_turn_usec, (int_fast64_t)monotonic_usec(),
                          memory_order_relaxed);
    atomic_fetch_add_explicit(&w->loop_iterations, 1, memory_order_relaxed);
}

int worker_run(struct worker *w)
{
    int rc = 0;
    worker_note_turn(w);
    for (;;) {
        if (event_base_loop(w->base, EVLOOP_ONCE) < 0) {
            rc = -1;
            break;
        }
        worker_note_turn(w);
        if (event_base_got_exit(w->base) || event_base_got_break(w->base))
            break;
    }
    world_retire_worker(w);
    return rc;
}

static void *worker_thread_main(void *arg)
{
    struct worker *w = arg;
    sigset_t all;
    /* Signals are worker 0's (libevent delivers them to one loop). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    worker_run(w);
    return NULL;
}

int worker_start_thread(struct worker *w)
{
    int err = pthread_create(&w->thread, NULL, worker_thread_main, w);
    if (err != 0) {
        log_error("could not start worker %u: %s", w->index, strerror(err));
        return -1;
    }
    return 0;
}

static void worker_reap(struct worker *w)
{
    /* Backends handed to other workers leave once nothing up the stack can touch them. */
    while (!TAILQ_EMPTY(&w->departing_servers)) {
        struct server *s = TAILQ_FIRST(&w->departing_servers);
        TAILQ_REMOVE(&w->departing_servers, s, link);
        pool_dispatch_server(s);
    }
    while (!TAILQ_EMPTY(&w->dead_clients)) {
        struct client *c = TAILQ_FIRST(&w->dead_clients);
        TAILQ_REMOVE(&w->dead_clients, c, link);
        client_free(c);
    }
    while (!TAILQ_EMPTY(&w->dead_servers)) {
        struct server *s = TAILQ_FIRST(&w->dead_servers);
        TAILQ_REMOVE(&w->dead_servers, s, link);
        server_free(s);
    }
}

void worker_destroy(struct worker *w)
{
    worker_deliver_mail(w); /* backends on their way here are closed with the rest */
    while (!TAILQ_EMPTY(&w->clients))
        client_close(TAILQ_FIRST(&w->clients), "shutting down");
    struct pool *pool;
    TAILQ_FOREACH(pool, &w->pools, link)
        pool_close_servers(pool, "shutting down");
    worker_reap(w);
    client_cache_free(&w->client_cache);
    while (!TAILQ_EMPTY(&w->pools)) {
        pool = TAILQ_FIRST(&w->pools);
        TAILQ_REMOVE(&w->pools, pool, link);
        pool_destroy(pool);
    }
    autodb_free_all(w);
    listener_close_all(w);
    free(w->steering);
    w->steering = NULL;
    auth_query_free(w->auth_query);
    w->auth_query = NULL;
    admin_free(w);
    metrics_free(w);
    for (size_t i = 0; i < sizeof(w->signal_events) / sizeof(w->signal_events[0]); i++)
        if (w->signal_events[i])
            event_free(w->signal_events[i]);
    if (w->reaper)
        event_free(w->reaper);
    conn_flusher_free(&w->flusher);
    peer_forward_free_all(w);
    mailbox_free(w);
    if (w->index == 0 && w->prepared)
        prepared_registry_free(w->prepared);
    if (w->janitor)
        event_free(w->janitor);
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->base)
        event_base_free(w->base);
    if (w->index == 0) { /* what the workers shared */
        if (w->users)
            userlist_free(w->users);
        tls_contexts_free(&w->tls);
        token_keyring_free(w->token_keys);
        server_token_signer_free(w->server_token_signer);
        config_free(w->cfg);
    }
    cancel_registry_free(&w->cancels);
    msgbuf_free(&w->scratch);
}

void worker_schedule_reap(struct worker *w)
{
    if (w->reap_scheduled)
        return;
    w->reap_scheduled = true;
    event_active(w->reaper, 0, 0);
}

static void worker_reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    w->reap_scheduled = false;
    worker_reap(w);
    /* After the callback that closed a backend, not inside it: a pool waiting on a database or
     * user limit may open one now, without waiting for the janitor's tick. */
    if (w->server_closed) {
        w->server_closed = false;
        struct pool *pool;
        TAILQ_FOREACH(pool, &w->pools, link)
            pool_serve_waiters(pool);
    }
}

/* ---- accepting ---- */

void worker_accept(struct worker *w, int fd, const struct sockaddr *addr, int addr_len, bool is_unix)
{
    int max_clients = w->cfg->max_client_conn;

    /* A draining worker still takes what reaches its listeners until they close. */
    if (w->shutting_down) {
        evutil_closesocket(fd);
        w->stats.clients_rejected++;
        return;
    }
    /* Counted before it exists, so two workers accepting at once cannot both take the last place. */
    size_t before = atomic_fetch_add(&w->world->n_clients, 1);
    bool over_limit = max_clients > 0 && before >= (size_t)max_clients;
    struct client *c = client_create(w, fd, addr, addr_len, is_unix);
    if (!c) {
        atomic_fetch_sub(&w->world->n_clients, 1);
        return;
    }
    w->stats.clients_accepted++;
    if (over_limit) {
        /* However many arrive, each reads its startup packet and is answered 53300; counted
         * apart, so the clients already in are not affected. Out of descriptors, accept()
         * pauses (listener.c) and the rest wait in the backlog for their answer. */
        client_mark_over_limit(c);
        w->stats.clients_rejected++;
    }
    /* TCP listeners defer the accept until data is in: read it in this same wake-up. */
    if (!is_unix)
        conn_read_now(&c->conn);
}

struct pool *worker_get_pool(struct worker *w, const struct config_database *db, const char *client_user)
{
    const char *user = db->user ? db->user : client_user;
    struct pool *pool;
    TAILQ_FOREACH(pool, &w->pools, link)
        if (strcmp(pool->db_name, db->name) == 0 && strcmp(pool->user_name, user) == 0)
            return pool;
    pool = pool_create(w, db, user, w->cfg);
    if (!pool)
        return NULL;
    TAILQ_INSERT_TAIL(&w->pools, pool, link);
    if (admin_database_paused(w, pool->db_name))
        pool_pause(pool);
    return pool;
}

struct pool *worker_find_pool(struct worker *w, const char *db_name, const char *user_name)
{
    const struct config_database *db = autodb_find(w, db_name);
    if (!db || (db->user && strcmp(db->user, user_name) != 0))
        return NULL;
    return worker_get_pool(w, db, user_name);
}

/* ---- periodic work ---- */

static void worker_expire_logins(struct worker *w, double now)
{
    double timeout = w->cfg->client_login_timeout;
    while (timeout > 0 && !TAILQ_EMPTY(&w->login_clients)) {
        struct client *c = TAILQ_FIRST(&w->login_clients)->client;
        if (now - c->connect_time < timeout)
            break;
        if (c->state == CLIENT_STARTUP && c->over_limit)
            client_refuse_over_limit(c);
        else if (c->state == CLIENT_STARTUP)
            client_close(c, "client_login_timeout: no startup packet in time");
        else
            client_fail(c, "08006", "client_login_timeout: the login did not complete in time");
    }
}

static void worker_expire_clients(struct worker *w, double now)
{
    double idle_timeout = w->cfg->client_idle_timeout;
    struct client *c, *next;
    for (c = TAILQ_FIRST(&w->clients); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->state == CLIENT_CLOSING && now - c->last_activity > CLOSING_GRACE_SECONDS)
            client_close(c, "did not read its final error");
        else if (c->over_limit && c->state == CLIENT_STARTUP && now - c->connect_time > OVER_LIMIT_ANSWER_SECONDS)
            client_refuse_over_limit(c);
        else if (c->state == CLIENT_IDLE && idle_timeout > 0 && now - c->last_activity > idle_timeout)
            client_fail(c, "57P05", "terminating connection due to client_idle_timeout");
        else if (w->shutting_down && (c->state == CLIENT_STARTUP || c->state == CLIENT_AUTH ||
                                      c->state == CLIENT_LOGIN_WAIT))
            client_fail(c, "57P03", "the connection pooler is shutting down");
        else if (c->state == CLIENT_IDLE && (w->shutting_down || (w->draining && c->is_admin)) &&
                 conn_input_length(&c->conn) == 0)
            client_fail(c, "57P01", "terminating connection because the connection pooler is shutting down");
        else if (c->state == CLIENT_IDLE && now - c->last_activity > IDLE_BUFFER_RELEASE_SECONDS)
            conn_release_buffers(&c->conn);
    }
}

static void worker_check_shutdown(struct worker *w, double now)
{
    if (w->draining && !w->shutting_down) {
        if ((w->n_clients > 0 || w->listeners) && now < w->shutdown_deadline)
            return;
        w->shutting_down = true; /* every client left, or shutdown_timeout passed */
    }
    if (!w->shutting_down)
        return;
    if (w->n_clients > 0 && now < w->shutdown_deadline)
        return;
    if (w->n_clients > 0)
        log_warning("shutdown_timeout reached with %zu clients still connected: closing them", w->n_clients);
    struct client *c, *next;
    for (c = TAILQ_FIRST(&w->clients); c; c = next) {
        next = TAILQ_NEXT(c, link);
        client_fail(c, "57P01", "terminating connection because the connection pooler is shutting down");
    }
    struct pool *pool;
    TAILQ_FOREACH(pool, &w->pools, link)
        pool_close_servers(pool, "shutting down");
    /* A moment for the last errors to reach their clients; worker_destroy closes the rest. */
    struct timeval flush_time = { 0, SHUTDOWN_FLUSH_USEC };
    event_base_loopexit(w->base, &flush_time);
}

/* The refusals and descriptor shortages left out of the log are counted there once a second. */
static void worker_log_held_back(struct worker *w, double now)
{
    unsigned long held_back;
    if (log_rate_summary_due(&w->refusal_log, now, WORKER_FLOOD_LOG_INTERVAL, &held_back))
        log_warning("clients refused: max_client_conn (%d) reached (%lu more refused since the last such line)",
                    w->cfg->max_client_conn, held_back);
    if (log_rate_summary_due(&w->descriptor_log, now, WORKER_FLOOD_LOG_INTERVAL, &held_back))
        log_warning("backend connections could not be opened: out of file descriptors (%lu more such "
                    "failures since the last such line)", held_back);
}

static void worker_janitor_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    double now = worker_now(w);
    struct pool *pool;

    if (w->flusher.batch_error) {
        log_warning("io_uring failed (%s): writing each connection with writev from now on",
                    strerror(w->flusher.batch_error));
        w->flusher.batch_error = 0;
    }

    /* Under SUSPEND every connection stands still: nothing times out or is opened. */
    if (!w->suspended) {
        worker_expire_logins(w, now);
        worker_expire_clients(w, now);
        TAILQ_FOREACH(pool, &w->pools, link)
            pool_janitor(pool, now);
        autodb_janitor(w, now);
    }
    admin_janitor(w);
    auth_query_janitor(w->auth_query, now);
    metrics_janitor(w, now);
    worker_log_held_back(w, now);
    worker_watch_steering(w);
    if (w->draining && w->listeners && now >= w->listen_until)
        listener_close_all_after_pending(w);
    worker_check_shutdown(w, now);
}

/* ---- steering new connections by CPU (steering.h): worker 0's ---- */

#define STEERING_WINDOW_TICKS (1000000 / JANITOR_INTERVAL_USEC) /* a window: a second */

struct steering_watch {
    int cpus[CPU_SETSIZE];        /* the process may run on, at start, ascending: what auto
                                     decides on and the program maps to workers */
    size_t n_cpus;
    bool attached;                /* the program is on the sockets */
    bool gave_up;                 /* back to the hash until a restart (logged) */
    unsigned ticks;               /* janitor ticks into the window */
    unsigned unbalanced_windows;  /* in a row */
    double window_start;          /* CLOCK_MONOTONIC seconds; 0: none started yet */
    double cpu_start[CONFIG_MAX_WORKERS]; /* each worker's CPU seconds then */
};

static void worker_steering_window_start(struct worker *w, struct steering_watch *sw)
{
    struct worker *wk;
    sw->ticks = 0;
    sw->window_start = monotonic_seconds();
    WORLD_FOR_EACH_WORKER(w->world, i, wk)
        sw->cpu_start[i] = worker_cpu_seconds(wk);
}

/* The window just ended: did it leave one worker saturated and the rest idle? */
static bool worker_steering_window_unbalanced(struct worker *w, struct steering_watch *sw)
{
    double busy[CONFIG_MAX_WORKERS];
    double elapsed = monotonic_seconds() - sw->window_start;
    struct worker *wk;
    if (elapsed <= 0)
        return false;
    WORLD_FOR_EACH_WORKER(w->world, i, wk)
        busy[i] = (worker_cpu_seconds(wk) - sw->cpu_start[i]) / elapsed;
    return fault_workers_unbalanced() || steering_unbalanced(busy, w->world->n_workers);
}

/* Puts the program on the sockets, or takes it off, as the config and the watch say. */
static void worker_apply_steering(struct worker *w)
{
    struct steering_watch *sw = w->steering;
    bool wanted = !w->cfg->so_reuseport && !sw->gave_up &&
                  steering_wanted(w->cfg->steer_by_cpu, sw->n_cpus, w->world->n_workers);
    if (wanted == sw->attached)
        return;
    if (!listener_steer_by_cpu(w, wanted, sw->cpus, sw->n_cpus) && wanted) {
        sw->gave_up = true;   /* logged; not tried again every second */
        return;
    }
    sw->attached = wanted;
    sw->unbalanced_windows = 0;
    sw->window_start = 0;   /* the watch starts one: not here, before the other threads run */
    if (wanted)
        log_info("new connections go to the worker of the CPU they arrive on (steer_by_cpu)");
    else
        log_info("new connections are spread over the workers by the kernel's hash");
}

/* Worker 0, once a janitor tick. */
static void worker_watch_steering(struct worker *w)
{
    struct steering_watch *sw = w->steering;
    if (!sw)
        return;
    worker_apply_steering(w);
    if (!sw->attached)
        return;
    if (sw->window_start == 0) {
        worker_steering_window_start(w, sw);
        return;
    }
    if (++sw->ticks < STEERING_WINDOW_TICKS)
        return;
    if (!worker_steering_window_unbalanced(w, sw)) {
        sw->unbalanced_windows = 0;
    } else if (++sw->unbalanced_windows >= STEERING_WINDOWS) {
        log_warning("steer_by_cpu: one worker is saturated while the others idle (connections "
                    "arrive on too few CPUs): spreading new connections by the kernel's hash "
                    "until a restart");
        sw->gave_up = true;
        worker_apply_steering(w);
        return;
    }
    worker_steering_window_start(w, sw);
}

void worker_start_steering(struct worker *w)
{
    if (w->world->n_workers < 2 || !(w->steering = calloc(1, sizeof(*w->steering))))
        return;
    w->steering->n_cpus = steering_allowed_cpus(w->steering->cpus, CPU_SETSIZE);
    worker_apply_steering(w);
    if (!w->steering->attached)
        log_info("new connections are spread over the workers by the kernel's hash "
                 "(steer_by_cpu = %s, %zu workers, %zu CPUs%s)", w->cfg->steer_by_cpu,
                 w->world->n_workers, w->steering->n_cpus,
                 w->cfg->so_reuseport ? ", so_reuseport" : "");
}

/* The io_uring setting, at start and on reload; a kernel or container that refuses io_uring
 * (io_uring_disabled, seccomp) leaves writev, which works everywhere. */
static void worker_apply_io_uring(struct worker *w)
{
    char why[128];
    bool had = w->flusher.batch != NULL;

    if (!conn_flusher_use_io_uring(&w->flusher, w->cfg->io_uring, why, sizeof(why))) {
        log_warning("io_uring is not available (%s): writing each connection with writev", why);
        return;
    }
    if (w->flusher.batch && !had)
        log_info("writes are batched through io_uring");
    else if (!w->flusher.batch && had)
        log_info("io_uring = off: writing each connection with writev");
}

/* ---- signals: reload and shutdown ---- */

/*
 * Databases with a fixed backend user and a min_pool_size get their pool at once, so the janitor
 * opens those backends before the first client: its login is answered without waiting.
 */
static void worker_prewarm_pools(struct worker *w)
{
    for (size_t i = 0; i < w->cfg->n_databases; i++) {
        const struct config_database *db = &w->cfg->databases[i];
        if (db == config_fallback_database(w->cfg))
            continue; /* a pattern, not a database */
        int min_size = db->min_pool_size >= 0 ? db->min_pool_size : w->cfg->min_pool_size;
        if (db->user && min_size > 0)
            worker_get_pool(w, db, db->user);
    }
}

static void worker_apply_config(struct worker *w, bool server_tls_changed)
{
    struct pool *pool;
    TAILQ_FOREACH(pool, &w->pools, link) {
        /* Backends opened under other TLS rules must not keep serving under the new ones. */
        if (server_tls_changed)
            pool_reconnect(pool, "server TLS settings changed");
        const struct config_database *db = autodb_find(w, pool->db_name);
        if (!db) {
            pool->disabled = true;
            continue;
        }
        pool_apply_config(pool, db, w->cfg);
    }
    worker_prewarm_pools(w);
}

static void worker_reload_config(struct worker *w)
{
    char err[1024];
    struct config *fresh = NULL;
    struct userlist *users = NULL;
    struct tls_contexts tls;
    struct token_keyring *keys = NULL;
    struct server_token_signer *signer = NULL;

    log_info("reloading configuration from %s", w->cfg->path);
    notify_reloading(w);
    if (config_load(w->cfg->path, &fresh, err, sizeof(err)) != 0) {
        log_error("reload failed, keeping the running configuration: %s", err);
        return;
    }
    if (worker_load_users(fresh, &users) != 0) {
        log_error("reload failed, keeping the running configuration");
        config_free(fresh);
        return;
    }
    if (worker_load_security(fresh, &tls, &keys) != 0) {
        log_error("reload failed, keeping the running configuration");
        if (users)
            userlist_free(users);
        config_free(fresh);
        return;
    }
    if (worker_load_server_token_signer(fresh, &signer) != 0) {
        log_error("reload failed, keeping the running configuration");
        tls_contexts_free(&tls);
        token_keyring_free(keys);
        if (users)
            userlist_free(users);
        config_free(fresh);
        return;
    }
    if (!same_text(fresh->listen_addr, w->cfg->listen_addr) || fresh->listen_port != w->cfg->listen_port)
        log_warning("listen_addr/listen_port changes take effect only after a restart");
    if (fresh->workers != w->cfg->workers)
        log_warning("workers changes take effect only after a restart (running %zu)", w->world->n_workers);
    if (fresh->peer_id != w->cancels.peer_id)
        log_warning("peer_id changes take effect only after a restart (cancel keys handed out carry "
                    "peer_id %d)", w->cancels.peer_id);
    bool server_tls_changed = tls.server_mode != w->tls.server_mode ||
                              !same_text(fresh->server_tls_ca_file, w->cfg->server_tls_ca_file) ||
                              !same_text(fresh->server_tls_cert_file, w->cfg->server_tls_cert_file) ||
                              !same_text(fresh->server_tls_key_file, w->cfg->server_tls_key_file) ||
                              !same_text(fresh->server_tls_protocols, w->cfg->server_tls_protocols) ||
                              !same_text(fresh->server_tls_ciphers, w->cfg->server_tls_ciphers);
    struct config *old_cfg = w->cfg;
    struct userlist *old_users = w->users;
    struct tls_contexts old_tls = w->tls;
    struct token_keyring *old_keys = w->token_keys;
    struct server_token_signer *old_signer = w->server_token_signer;
    struct worker *wk;

    /* One generation for every worker: all of them see the new one from the same moment. */
    world_stop(w);
    WORLD_FOR_EACH_WORKER(w->world, i, wk) {
        wk->cfg = fresh;
        wk->users = users;
        wk->tls = tls;
        wk->token_keys = keys;
        wk->server_token_signer = signer;
    }
    log_configure(fresh->verbose, fresh->syslog, fresh->syslog_ident, fresh->syslog_facility);
    WORLD_FOR_EACH_WORKER(w->world, i, wk) {
        worker_apply_io_uring(wk);
        autodb_reload(wk);
        wk->flusher.read_size = (size_t)fresh->pkt_buf;
        worker_apply_config(wk, server_tls_changed);
    }
    metrics_reconfigure(w);
    world_resume(w);
    config_free(old_cfg);
    if (old_users)
        userlist_free(old_users);
    /* Live TLS connections hold their own reference to the old contexts. */
    tls_contexts_free(&old_tls);
    token_keyring_free(old_keys);
    server_token_signer_free(old_signer);
    log_info("configuration reloaded");
}

void worker_reload(struct worker *w)
{
    worker_reload_config(w);
    notify_ready(w);
}

void worker_begin_shutdown(struct worker *w, const char *why)
{
    if (w->shutting_down) {
        /* A second signal: stop waiting. */
        w->shutdown_deadline = 0;
        return;
    }
    if (w->index == 0)
        log_info("%s: no new connections; waiting up to %g s for transactions to finish", why,
                 w->cfg->shutdown_timeout);
    w->shutting_down = true;
    if (w->index == 0)
        notify_stopping(w);
    w->shutdown_deadline = worker_now(w) + w->cfg->shutdown_timeout;
    listener_close_all(w);
    worker_expire_clients(w, worker_now(w));
    worker_check_shutdown(w, worker_now(w));
}

void worker_begin_drain(struct worker *w, const char *why)
{
    if (w->shutting_down || w->draining) {
        worker_begin_shutdown(w, why);
        return;
    }
    listener_stop_deferring(w);
    w->listen_until = worker_now(w) + DRAIN_LISTEN_GRACE_SECONDS;
    if (w->index == 0)
        log_info("%s: closing the listeners; serving the %zu clients connected until they leave, for up to %g s",
                 why, atomic_load(&w->world->n_clients), w->cfg->shutdown_timeout);
    w->draining = true;
    if (w->index == 0)
        notify_stopping(w);
    w->shutdown_deadline = worker_now(w) + w->cfg->shutdown_timeout;
    worker_expire_clients(w, worker_now(w));
    worker_check_shutdown(w, worker_now(w));
}

/* SHUTDOWN on the console: every worker stops listening and serves its clients until they leave. */
void worker_drain_all(struct worker *self, const char *why)
{
    struct worker *wk;
    world_stop(self);
    WORLD_FOR_EACH_WORKER(self->world, i, wk)
        worker_begin_drain(wk, why);
    world_resume(self);
}

/* Every worker stops accepting and finishes its transactions; the process ends when all have. */
void worker_shutdown_all(struct worker *self, const char *why)
{
    struct worker *wk;
    world_stop(self);
    WORLD_FOR_EACH_WORKER(self->world, i, wk)
        worker_begin_shutdown(wk, why);
    world_resume(self);
}

static void worker_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
    switch (sig) {
    case SIGHUP:
        worker_reload(w);
        break;
    case SIGINT:
        worker_shutdown_all(w, "SIGINT received");
        break;
    case SIGTERM:
        worker_shutdown_all(w, "SIGTERM received");
        break;
    default:
        break;
    }
}
