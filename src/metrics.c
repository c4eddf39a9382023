/*
 * metrics.c: what an operator watches from outside. The Prometheus /metrics endpoint (evhttp on
 * the worker's own loop, text format 0.0.4), the periodic "stats:" log line per pool, and the
 * systemd notifications (READY, RELOADING, STOPPING, STATUS, WATCHDOG).
 */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "auth_query.h"
#include "auth_token.h"
#include "build-config.h"
#include "client.h"
#include "listener.h"
#include "log.h"
#include "pinning.h"
#include "pool.h"
#include "server.h"
#include "stats.h"
#include "timeval.h"
#include "world_view.h"
#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define METRICS_PATH "/metrics"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_DEFAULT_ADDR "127.0.0.1"
#define METRICS_MAX_LISTENERS 8
#define METRICS_LISTEN_BACKLOG 64
/* A scraper that sends nothing, or reads nothing, for this long is dropped. */
#define METRICS_HTTP_TIMEOUT_SECONDS 10
#define METRICS_MAX_HEADERS_SIZE 8192
#define METRICS_MAX_BODY_SIZE 1024
/* accept() out of descriptors: stop accepting scrapes for this long instead of spinning. */
#define METRICS_ACCEPT_PAUSE_USEC 500000
/* systemd keeps the last STATUS=; a busy pooler changes it constantly, so send at most this often. */
#define STATUS_MIN_INTERVAL_SECONDS 1.0
#define STATUS_MAX_LEN 160

/* What the stats line needs from a pool's counters, kept from one line to the next. */
struct pool_snapshot {
    char *db_name;
    char *user_name;
    uint64_t xact_count;
    uint64_t query_count;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t query_replies;  /* query_latency.count: queries timed to their ReadyForQuery */
    uint64_t borrows;        /* borrow_latency.count */
    double xact_time;
    double query_time;
    double borrow_time;      /* borrow_latency.sum */
};

struct metrics_state {
    /* the HTTP endpoint, as it was opened (a reload compares against these) */
    struct evhttp *http;
    struct evconnlistener *listeners[METRICS_MAX_LISTENERS]; /* owned by http */
    size_t n_listeners;
    struct event *accept_resume;
    char *http_addr;
    int http_port;
    bool http_reuseport;
    struct msgbuf page;           /* the last rendered exposition, reused */

    /* stats_period */
    double stats_since;           /* time of the snapshot below; 0: none taken yet */
    struct pool_snapshot *snapshots;
    size_t n_snapshots;

    /* systemd */
    bool notify_on;               /* NOTIFY_SOCKET set and libsystemd in: STATUS= is worth making */
    char last_status[STATUS_MAX_LEN];
    double last_status_time;      /* last sent */
    double last_status_check;     /* last compared with the process's state */
    struct event *watchdog;       /* WATCHDOG=1 at half the interval systemd asked for */
    int64_t watchdog_stale_usec;  /* a worker whose loop has not turned for this long is stuck */
    struct log_rate stuck_log;    /* one line per interval about a stuck worker */
};

/* ---- text helpers ---- */

static void append_text(struct msgbuf *out, const char *text)
{
    msgbuf_append(out, text, strlen(text));
}

static void append_format(struct msgbuf *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void append_format(struct msgbuf *out, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        out->failed = true;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        msgbuf_append(out, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        out->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    msgbuf_append(out, big, (size_t)n);
    free(big);
}

/* Label values are quoted with \\, \" and \n escaped, as the text format requires. */
static void append_label_value(struct msgbuf *out, const char *value)
{
    msgbuf_append(out, "\"", 1);
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            append_text(out, "\\\\");
        else if (*p == '"')
            append_text(out, "\\\"");
        else if (*p == '\n')
            append_text(out, "\\n");
        else
            msgbuf_append(out, p, 1);
    }
    msgbuf_append(out, "\"", 1);
}

/* ---- exposition: families and samples ---- */

/* The labels of one sample: the pool's database and user (if any), then up to two more pairs. */
struct labels {
    const struct pool *pool;
    const char *names[2];
    const char *values[2];
};

static void family(struct msgbuf *out, const char *name, const char *type, const char *help)
{
    append_format(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void append_sample_name(struct msgbuf *out, const char *name, const char *suffix,
                               const struct labels *labels)
{
    append_text(out, name);
    append_text(out, suffix);
    if (!labels)
        return;
    const char *separator = "{";
    if (labels->pool) {
        append_text(out, "{database=");
        append_label_value(out, labels->pool->db_name);
        append_text(out, ",user=");
        append_label_value(out, labels->pool->user_name);
        separator = ",";
    }
    for (size_t i = 0; i < 2 && labels->names[i]; i++) {
        append_format(out, "%s%s=", separator, labels->names[i]);
        append_label_value(out, labels->values[i]);
        separator = ",";
    }
    if (separator[0] == ',')
        append_text(out, "}");
}

static void sample_count(struct msgbuf *out, const char *name, const char *suffix,
                         const struct labels *labels, uint64_t value)
{
    append_sample_name(out, name, suffix, labels);
    append_format(out, " %" PRIu64 "\n", value);
}

static void sample_value(struct msgbuf *out, const char *name, const struct labels *labels,
                         double value)
{
    append_sample_name(out, name, "", labels);
    append_format(out, " %.15g\n", value);
}

static struct labels pool_labels(const struct pool *pool, const char *name, const char *value)
{
    return (struct labels){ .pool = pool, .names = { name }, .values = { value } };
}

/* A count per state of one pool: the samples of a gauge labelled state="...". */
struct state_count {
    const char *state;
    int count;
};

static void sample_states(struct msgbuf *out, const char *name, const struct pool *pool,
                          const struct state_count *counts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct labels labels = pool_labels(pool, "state", counts[i].state);
        sample_count(out, name, "", &labels, (uint64_t)(counts[i].count > 0 ? counts[i].count : 0));
    }
}

/* Cumulative buckets with "le", then _sum and _count; struct histogram keeps them per bucket. */
static void sample_histogram(struct msgbuf *out, const char *name, const struct pool *pool,
                             const struct histogram *h)
{
    uint64_t cumulative = 0;
    char bound[32];
    for (int i = 0; i <= HISTOGRAM_BUCKETS; i++) {
        cumulative += h->counts[i];
        if (i < HISTOGRAM_BUCKETS)
            snprintf(bound, sizeof(bound), "%.15g", histogram_bounds[i]);
        else
            snprintf(bound, sizeof(bound), "+Inf");
        struct labels labels = pool_labels(pool, "le", bound);
        sample_count(out, name, "_bucket", &labels, cumulative);
    }
    struct labels labels = pool_labels(pool, NULL, NULL);
    append_sample_name(out, name, "_sum", &labels);
    append_format(out, " %.15g\n", h->sum);
    sample_count(out, name, "_count", &labels, cumulative);
}

/* ---- exposition: the worker as a whole ---- */

enum client_bucket { BUCKET_LOGIN, BUCKET_IDLE, BUCKET_WAITING, BUCKET_ACTIVE, BUCKET_CLOSING, N_BUCKETS };

static const char *const client_bucket_names[N_BUCKETS] = {
    [BUCKET_LOGIN] = "login", [BUCKET_IDLE] = "idle", [BUCKET_WAITING] = "waiting",
    [BUCKET_ACTIVE] = "active", [BUCKET_CLOSING] = "closing",
};

static enum client_bucket client_bucket_of(const struct client *c)
{
    switch (c->state) {
    case CLIENT_STARTUP:
    case CLIENT_AUTH:
    case CLIENT_LOGIN_WAIT:
        return BUCKET_LOGIN;
    case CLIENT_IDLE:
        return BUCKET_IDLE;
    case CLIENT_WAITING:
        return BUCKET_WAITING;
    case CLIENT_ACTIVE:
        return BUCKET_ACTIVE;
    case CLIENT_CLOSING:
    case CLIENT_CLOSED:
        return BUCKET_CLOSING;
    }
    return BUCKET_CLOSING;
}

static void render_client_connections(struct worker *w, struct msgbuf *out)
{
    uint64_t counts[N_BUCKETS][2] = { { 0 } };
    struct worker *wk;
    const struct client *c;
    WORLD_FOR_EACH_WORKER(w->world, i, wk)
        TAILQ_FOREACH(c, &wk->clients, link)
            counts[client_bucket_of(c)][c->tls ? 1 : 0]++;

    family(out, "sluice_client_connections", "gauge",
           "Client connections now open, by state (login covers startup, TLS and authentication) "
           "and by whether they use TLS.");
    for (int bucket = 0; bucket < N_BUCKETS; bucket++) {
        for (int tls = 0; tls < 2; tls++) {
            struct labels labels = { .names = { "state", "tls" },
                                     .values = { client_bucket_names[bucket], tls ? "true" : "false" } };
            sample_count(out, "sluice_client_connections", "", &labels, counts[bucket][tls]);
        }
    }
    family(out, "sluice_client_connections_max", "gauge", "max_client_conn: client connections allowed.");
    sample_count(out, "sluice_client_connections_max", "", NULL,
                 (uint64_t)(w->cfg->max_client_conn > 0 ? w->cfg->max_client_conn : 0));
}

static void render_client_totals(struct worker *w, const struct worker_stats *st, struct msgbuf *out)
{
    struct worker *wk;
    family(out, "sluice_client_connections_accepted_total", "counter",
           "Client connections accepted (including those then refused past max_client_conn).");
    sample_count(out, "sluice_client_connections_accepted_total", "", NULL, st->clients_accepted);
    /* Every accepted client is either still open (n_clients, or n_refusing while it is told it is
     * over max_client_conn) or has closed, whatever the cause. */
    uint64_t open_clients = 0;
    WORLD_FOR_EACH_WORKER(w->world, i, wk)
        open_clients += (uint64_t)wk->n_clients + (uint64_t)wk->n_refusing;
    family(out, "sluice_client_connections_closed_total", "counter",
           "Client connections closed, by either side, for any reason (accepted minus those still open).");
    sample_count(out, "sluice_client_connections_closed_total", "", NULL,
                 st->clients_accepted > open_clients ? st->clients_accepted - open_clients : 0);
    family(out, "sluice_client_connections_rejected_total", "counter",
           "Client connections refused: over max_client_conn, or arriving during shutdown.");
    sample_count(out, "sluice_client_connections_rejected_total", "", NULL, st->clients_rejected);

    family(out, "sluice_client_logins_total", "counter",
           "Client logins by result (failed: wrong password, unknown user, refused token, ...).");
    struct labels ok = { .names = { "result" }, .values = { "succeeded" } };
    struct labels failed = { .names = { "result" }, .values = { "failed" } };
    sample_count(out, "sluice_client_logins_total", "", &ok, st->logins_ok);
    sample_count(out, "sluice_client_logins_total", "", &failed, st->logins_failed);

    family(out, "sluice_client_logins_by_method_total", "counter",
           "Client logins by authentication method and result.");
    for (int m = AUTH_TYPE_TRUST; m <= AUTH_TYPE_TOKEN; m++) {
        const char *method = config_auth_type_name((enum auth_type)m);
        struct labels m_ok = { .names = { "method", "result" }, .values = { method, "succeeded" } };
        struct labels m_failed = { .names = { "method", "result" }, .values = { method, "failed" } };
        sample_count(out, "sluice_client_logins_by_method_total", "", &m_ok, st->logins_ok_by_method[m]);
        sample_count(out, "sluice_client_logins_by_method_total", "", &m_failed,
                     st->logins_failed_by_method[m]);
    }
    family(out, "sluice_client_tls_logins_total", "counter",
           "Client logins over TLS, by result (the rest of sluice_client_logins_total was plaintext).");
    sample_count(out, "sluice_client_tls_logins_total", "", &ok, st->logins_ok_tls);
    sample_count(out, "sluice_client_tls_logins_total", "", &failed, st->logins_failed_tls);

    family(out, "sluice_client_tls_handshakes_total", "counter",
           "TLS handshakes with clients, by result.");
    sample_count(out, "sluice_client_tls_handshakes_total", "", &ok, st->tls_handshakes);
    sample_count(out, "sluice_client_tls_handshakes_total", "", &failed, st->tls_handshake_failures);
}

/* A short, stable name per reason a token is refused: the "reason" label. */
static const char *const token_failure_slugs[] = {
    [TOKEN_FAIL_OVERSIZED] = "oversized",
    [TOKEN_FAIL_MALFORMED] = "malformed",
    [TOKEN_FAIL_BAD_ENCODING] = "bad_encoding",
    [TOKEN_FAIL_MISSING_PARAMETER] = "missing_parameter",
    [TOKEN_FAIL_DUPLICATE_PARAMETER] = "duplicate_parameter",
    [TOKEN_FAIL_WRONG_ACTION] = "wrong_action",
    [TOKEN_FAIL_WRONG_ALGORITHM] = "wrong_algorithm",
    [TOKEN_FAIL_WRONG_SIGNED_HEADERS] = "wrong_signed_headers",
    [TOKEN_FAIL_BAD_CREDENTIAL_SCOPE] = "bad_credential_scope",
    [TOKEN_FAIL_BAD_DATE] = "bad_date",
    [TOKEN_FAIL_CREDENTIAL_DATE_MISMATCH] = "credential_date_mismatch",
    [TOKEN_FAIL_REGION_MISMATCH] = "region_mismatch",
    [TOKEN_FAIL_ENDPOINT_NOT_ALLOWED] = "endpoint_not_allowed",
    [TOKEN_FAIL_UNKNOWN_ACCESS_KEY] = "unknown_access_key",
    [TOKEN_FAIL_USER_MISMATCH] = "user_mismatch",
    [TOKEN_FAIL_USER_NOT_ALLOWED] = "user_not_allowed",
    [TOKEN_FAIL_BAD_EXPIRES] = "bad_expires",
    [TOKEN_FAIL_NOT_YET_VALID] = "not_yet_valid",
    [TOKEN_FAIL_EXPIRED] = "expired",
    [TOKEN_FAIL_BAD_SIGNATURE] = "bad_signature",
    [TOKEN_FAIL_OUT_OF_MEMORY] = "out_of_memory",
};

_Static_assert(ARRAY_LEN(token_failure_slugs) <= ARRAY_LEN(((struct worker_stats *)0)->token_failures),
               "every token failure reason has a counter");

static void render_token_logins(const struct worker_stats *st, struct msgbuf *out)
{
    family(out, "sluice_token_logins_total", "counter", "Logins with a valid IAM auth token.");
    sample_count(out, "sluice_token_logins_total", "", NULL, st->token_logins_ok);
    family(out, "sluice_token_login_failures_total", "counter",
           "IAM auth tokens refused, by the check that refused them.");
    for (size_t why = 0; why < ARRAY_LEN(token_failure_slugs); why++) {
        if (!token_failure_slugs[why])
            continue;
        struct labels labels = { .names = { "reason" }, .values = { token_failure_slugs[why] } };
        sample_count(out, "sluice_token_login_failures_total", "", &labels, st->token_failures[why]);
    }
}

/* Backend logins with an IAM token sluice signed (server_auth_token). */
static void render_server_tokens(const struct worker_stats *st, struct msgbuf *out)
{
    family(out, "sluice_server_tokens_signed_total", "counter",
           "IAM auth tokens signed for backend logins (server_auth_token).");
    sample_count(out, "sluice_server_tokens_signed_total", "", NULL, st->server_tokens_signed);
    family(out, "sluice_server_token_login_failures_total", "counter",
           "Backend logins with a signed IAM auth token that the database server refused.");
    sample_count(out, "sluice_server_token_login_failures_total", "", NULL,
                 st->server_token_login_failures);
}

static void render_auth_query(struct worker *w, struct msgbuf *out)
{
    struct auth_query_stats sum = { 0 };
    const struct auth_query_stats *st = &sum;
    struct worker *wk;
    WORLD_FOR_EACH_WORKER(w->world, i, wk) {
        const struct auth_query_stats *one = auth_query_stats(wk->auth_query);
        sum.lookups_found += one->lookups_found;
        sum.lookups_not_found += one->lookups_not_found;
        sum.lookups_failed += one->lookups_failed;
        sum.cache_hits += one->cache_hits;
        sum.coalesced += one->coalesced;
    }
    struct labels found = { .names = { "result" }, .values = { "found" } };
    struct labels not_found = { .names = { "result" }, .values = { "not_found" } };
    struct labels failed = { .names = { "result" }, .values = { "failed" } };

    family(out, "sluice_auth_query_lookups_total", "counter",
           "auth_query look-ups in PostgreSQL, by result (failed: no connection as auth_user, or the "
           "query failed).");
    sample_count(out, "sluice_auth_query_lookups_total", "", &found, st->lookups_found);
    sample_count(out, "sluice_auth_query_lookups_total", "", &not_found, st->lookups_not_found);
    sample_count(out, "sluice_auth_query_lookups_total", "", &failed, st->lookups_failed);
    family(out, "sluice_auth_query_cache_hits_total", "counter",
           "Logins of users not in auth_file answered from the cache (auth_query_cache_ttl).");
    sample_count(out, "sluice_auth_query_cache_hits_total", "", NULL, st->cache_hits);
    family(out, "sluice_auth_query_coalesced_total", "counter",
           "Logins that waited for a look-up of the same user already in flight instead of their own.");
    sample_count(out, "sluice_auth_query_coalesced_total", "", NULL, st->coalesced);
}

/* ---- exposition: per pool ---- */

/* A short, stable name per reason a client is pinned to its backend: the "reason" label. */
static const char *const pin_reason_slugs[] = {
    [PIN_SET] = "set",
    [PIN_SET_ROLE] = "set_role",
    [PIN_SET_SESSION_AUTHORIZATION] = "set_session_authorization",
    [PIN_SESSION_CHARACTERISTICS] = "session_characteristics",
    [PIN_SET_CONFIG] = "set_config",
    [PIN_TEMP_TABLE] = "temp_table",
    [PIN_ADVISORY_LOCK] = "advisory_lock",
    [PIN_LISTEN] = "listen",
    [PIN_CURSOR_WITH_HOLD] = "cursor_with_hold",
    [PIN_PREPARE] = "prepare",
    [PIN_LOAD] = "load",
    [PIN_SET_FROM_CURRENT] = "set_from_current",
    [PIN_SET_BEFORE_SAVEPOINT_ROLLBACK] = "set_before_savepoint_rollback",
};

_Static_assert(ARRAY_LEN(pin_reason_slugs) <= ARRAY_LEN(((struct pool_stats *)0)->pin_events),
               "every pin reason has a counter");

static double pool_longest_wait(const struct pool *pool, double now)
{
    const struct client *first = TAILQ_FIRST(&pool->waiting_clients);
    if (!first || now < first->wait_start)
        return 0;
    return now - first->wait_start;
}

static int pool_servers_in_transaction(const struct pool *pool)
{
    int n = 0;
    const struct server *s;
    TAILQ_FOREACH(s, &pool->used_servers, link)
        if (s->ready_status == 'T' || s->ready_status == 'E')
            n++;
    return n;
}

/* One pool as the operator sees it: its pools on every worker, summed (the longest wait: the
 * longest of them). */
struct pool_view {
    const struct pool *first;  /* its names and pool_size */
    int active_clients, waiting_clients, idle_clients;
    int pinned, waiting_all_pinned;
    int idle_servers, used_servers, new_servers, in_transaction;
    bool paused;
    double longest_wait;
    struct pool_stats stats;
};

static void pool_view_of(const struct pool_group *group, double now, struct pool_view *v)
{
    memset(v, 0, sizeof(*v));
    v->first = group->pools[0];
    for (size_t i = 0; i < group->n_pools; i++) {
        const struct pool *pool = group->pools[i];
        v->active_clients += pool->n_active_clients;
        v->waiting_clients += pool->n_waiting;
        v->idle_clients += pool->n_idle_clients;
        v->pinned += pool->n_pinned > 0 ? pool->n_pinned : 0;
        v->waiting_all_pinned += pool_waiting_all_pinned(pool); /* pinned: counted process-wide */
        v->idle_servers += pool->n_idle;
        v->used_servers += pool->n_used;
        v->new_servers += pool->n_new;
        v->in_transaction += pool_servers_in_transaction(pool);
        v->paused = v->paused || pool->paused;
        double wait = pool_longest_wait(pool, now);
        if (wait > v->longest_wait)
            v->longest_wait = wait;
        pool_stats_add(&v->stats, &pool->stats);
    }
}

/* Every pool of the process as the operator sees it; NULL (and *n 0) when out of memory. */
static struct pool_view *pool_views_of(struct worker *w, size_t *n)
{
    struct pool_groups groups;
    *n = 0;
    if (pool_groups_collect(w->world, POOL_GROUP_BY_POOL, &groups) != 0)
        return NULL;
    struct pool_view *views = calloc(groups.n_groups ? groups.n_groups : 1, sizeof(*views));
    if (views) {
        double now = worker_now(w);
        for (size_t i = 0; i < groups.n_groups; i++)
            pool_view_of(&groups.groups[i], now, &views[i]);
        *n = groups.n_groups;
    }
    pool_groups_free(&groups);
    return views;
}

static struct labels view_labels(const struct pool_view *v, const char *name, const char *value)
{
    return pool_labels(v->first, name, value);
}

static void render_pool_clients(const struct pool_view *views, size_t n, struct msgbuf *out)
{
    family(out, "sluice_pool_client_connections", "gauge",
           "Logged-in clients of the pool: active (linked to a backend), waiting for one, idle.");
    for (size_t i = 0; i < n; i++) {
        const struct state_count counts[] = {
            { "active", views[i].active_clients },
            { "waiting", views[i].waiting_clients },
            { "idle", views[i].idle_clients },
        };
        sample_states(out, "sluice_pool_client_connections", views[i].first, counts, ARRAY_LEN(counts));
    }
    family(out, "sluice_pool_longest_wait_seconds", "gauge",
           "How long the client first in the pool's wait queue has waited for a backend (0: none waits).");
    for (size_t i = 0; i < n; i++) {
        struct labels labels = view_labels(&views[i], NULL, NULL);
        sample_value(out, "sluice_pool_longest_wait_seconds", &labels, views[i].longest_wait);
    }
    family(out, "sluice_pool_paused", "gauge", "1 while the pool is paused (PAUSE), else 0.");
    for (size_t i = 0; i < n; i++) {
        struct labels labels = view_labels(&views[i], NULL, NULL);
        sample_count(out, "sluice_pool_paused", "", &labels, views[i].paused ? 1 : 0);
    }
}

static void render_pool_pinning(const struct pool_view *views, size_t n, struct msgbuf *out)
{
    family(out, "sluice_pool_pinned_clients", "gauge",
           "Clients pinned to their backend until they leave, because a statement left session state.");
    for (size_t i = 0; i < n; i++) {
        struct labels labels = view_labels(&views[i], NULL, NULL);
        sample_count(out, "sluice_pool_pinned_clients", "", &labels, (uint64_t)views[i].pinned);
    }
    family(out, "sluice_pool_waiting_all_pinned_clients", "gauge",
           "Clients waiting for a backend while every backend the pool may open is held by a pinned "
           "client (0 otherwise): they wait until a pinned client clears its session state or leaves.");
    for (size_t i = 0; i < n; i++) {
        struct labels labels = view_labels(&views[i], NULL, NULL);
        sample_count(out, "sluice_pool_waiting_all_pinned_clients", "", &labels,
                     (uint64_t)views[i].waiting_all_pinned);
    }
    family(out, "sluice_pool_pin_events_total", "counter",
           "Clients pinned to their backend, by the kind of statement that pinned them.");
    for (size_t i = 0; i < n; i++) {
        for (size_t why = 0; why < ARRAY_LEN(pin_reason_slugs); why++) {
            if (!pin_reason_slugs[why])
                continue;
            struct labels labels = view_labels(&views[i], "reason", pin_reason_slugs[why]);
            sample_count(out, "sluice_pool_pin_events_total", "", &labels, views[i].stats.pin_events[why]);
        }
    }
}

static void render_pool_servers(const struct pool_view *views, size_t n, struct msgbuf *out)
{
    family(out, "sluice_pool_server_connections", "gauge",
           "Backend connections of the pool: idle, used (borrowed by a client or running sluice's "
           "own query), connecting (connecting or logging in).");
    for (size_t i = 0; i < n; i++) {
        const struct state_count counts[] = {
            { "idle", views[i].idle_servers }, { "used", views[i].used_servers },
            { "connecting", views[i].new_servers },
        };
        sample_states(out, "sluice_pool_server_connections", views[i].first, counts, ARRAY_LEN(counts));
    }
    family(out, "sluice_pool_server_connections_in_transaction", "gauge",
           "Used backends whose last ReadyForQuery said they are inside a transaction block.");
    for (size_t i = 0; i < n; i++) {
        struct labels labels = view_labels(&views[i], NULL, NULL);
        sample_count(out, "sluice_pool_server_connections_in_transaction", "", &labels,
                     (uint64_t)views[i].in_transaction);
    }
    family(out, "sluice_pool_server_connections_max", "gauge", "pool_size: backend connections allowed.");
    for (size_t i = 0; i < n; i++) {
        struct labels labels = view_labels(&views[i], NULL, NULL);
        int size = views[i].first->pool_size;
        sample_count(out, "sluice_pool_server_connections_max", "", &labels, (uint64_t)(size > 0 ? size : 0));
    }
    family(out, "sluice_pool_server_connection_setups_total", "counter",
           "Backend connections opened, by result (failed: could not connect or log in).");
    for (size_t i = 0; i < n; i++) {
        struct labels ok = view_labels(&views[i], "result", "succeeded");
        struct labels failed = view_labels(&views[i], "result", "failed");
        sample_count(out, "sluice_pool_server_connection_setups_total", "", &ok,
                     views[i].stats.servers_connected);
        sample_count(out, "sluice_pool_server_connection_setups_total", "", &failed,
                     views[i].stats.servers_failed);
    }
}

/* Plain per-pool counters, read from struct pool_stats. */
struct pool_counter {
    const char *name;
    const char *help;
    size_t offset;     /* of a uint64_t, or of a double (seconds) when is_seconds */
    bool is_seconds;
};

static const struct pool_counter pool_counters[] = {
    { "sluice_pool_transactions_total", "Transactions completed.",
      offsetof(struct pool_stats, xact_count), false },
    { "sluice_pool_queries_total",
      "Queries received from clients: simple Query and FunctionCall messages, extended-protocol Executes.",
      offsetof(struct pool_stats, query_count), false },
    { "sluice_pool_received_bytes_total", "Bytes received from clients and passed to backends.",
      offsetof(struct pool_stats, bytes_received), false },
    { "sluice_pool_sent_bytes_total", "Bytes sent to clients from backends.",
      offsetof(struct pool_stats, bytes_sent), false },
    { "sluice_pool_waits_total", "Times a client had to queue for a backend.",
      offsetof(struct pool_stats, wait_count), false },
    { "sluice_pool_wait_seconds_total", "Time clients spent queued for a backend.",
      offsetof(struct pool_stats, wait_time), true },
    { "sluice_pool_wait_timeouts_total",
      "Clients closed because query_wait_timeout passed while they queued.",
      offsetof(struct pool_stats, wait_timeouts), false },
    { "sluice_pool_transaction_seconds_total", "Time backends spent linked to a client for a transaction.",
      offsetof(struct pool_stats, xact_time), true },
};

static void render_pool_counters(const struct pool_view *views, size_t n, struct msgbuf *out)
{
    for (size_t c = 0; c < ARRAY_LEN(pool_counters); c++) {
        const struct pool_counter *counter = &pool_counters[c];
        family(out, counter->name, "counter", counter->help);
        for (size_t i = 0; i < n; i++) {
            const char *field = (const char *)&views[i].stats + counter->offset;
            struct labels labels = view_labels(&views[i], NULL, NULL);
            if (counter->is_seconds)
                sample_value(out, counter->name, &labels, *(const double *)field);
            else
                sample_count(out, counter->name, "", &labels, *(const uint64_t *)field);
        }
    }
}

static void render_pool_histograms(const struct pool_view *views, size_t n, struct msgbuf *out)
{
    family(out, "sluice_pool_borrow_latency_seconds", "histogram",
           "Time from a client's request for a backend to the backend being linked to it.");
    for (size_t i = 0; i < n; i++)
        sample_histogram(out, "sluice_pool_borrow_latency_seconds", views[i].first,
                         &views[i].stats.borrow_latency);
    family(out, "sluice_pool_query_latency_seconds", "histogram",
           "Time from a query's first message to the backend's ReadyForQuery.");
    for (size_t i = 0; i < n; i++)
        sample_histogram(out, "sluice_pool_query_latency_seconds", views[i].first,
                         &views[i].stats.query_latency);
}

/* ---- exposition: per worker ---- */

/* A gauge or counter with one sample per worker, labelled worker="i". */
struct worker_family {
    const char *name;
    const char *type;
    const char *help;
};

static void sample_worker(struct msgbuf *out, const char *name, unsigned index, double value)
{
    char worker[16];
    snprintf(worker, sizeof(worker), "%u", index);
    struct labels labels = { .names = { "worker" }, .values = { worker } };
    sample_value(out, name, &labels, value);
}

static void render_workers(struct worker *w, struct msgbuf *out)
{
    static const struct worker_family families[] = {
        { "sluice_worker_clients", "gauge", "Client connections the worker thread serves, consoles included." },
        { "sluice_worker_servers", "gauge", "Backend connections the worker thread holds now." },
        { "sluice_worker_loop_iterations_total", "counter", "Turns of the worker's event loop." },
        { "sluice_worker_cpu_seconds_total", "counter", "CPU time the worker's thread has used." },
        { "sluice_worker_handoffs_in_total", "counter", "Backends handed to this worker by others." },
        { "sluice_worker_handoffs_out_total", "counter", "Backends this worker handed to others." },
    };
    size_t n_workers = w->world->n_workers;
    struct worker_figures *figures = calloc(n_workers, sizeof(*figures));
    struct worker *wk;

    if (!figures) {
        out->failed = true;
        return;
    }
    WORLD_FOR_EACH_WORKER(w->world, i, wk)
        worker_figures_of(wk, &figures[i]);
    for (size_t f = 0; f < ARRAY_LEN(families); f++) {
        family(out, families[f].name, families[f].type, families[f].help);
        for (size_t i = 0; i < n_workers; i++) {
            const struct worker_figures *one = &figures[i];
            const double values[] = { (double)one->clients, (double)one->servers,
                                      (double)one->loop_iterations,
                                      one->cpu_seconds > 0 ? one->cpu_seconds : 0,
                                      (double)one->handoffs_in, (double)one->handoffs_out };
            _Static_assert(ARRAY_LEN(values) == ARRAY_LEN(families), "one value per family");
            sample_worker(out, families[f].name, (unsigned)i, values[f]);
        }
    }
    free(figures);
}

void metrics_render(struct worker *w, struct msgbuf *out)
{
    struct worker_stats stats;
    size_t n_views;
    struct pool_view *views = pool_views_of(w, &n_views);

    if (!views) {
        out->failed = true;
        return;
    }
    world_stats_sum(w->world, &stats);
    family(out, "sluice_info", "gauge", "Always 1; the version label says which sluice runs.");
    struct labels version = { .names = { "version" }, .values = { PACKAGE_VERSION } };
    sample_count(out, "sluice_info", "", &version, 1);
    render_client_connections(w, out);
    render_client_totals(w, &stats, out);
    render_token_logins(&stats, out);
    render_server_tokens(&stats, out);
    render_auth_query(w, out);
    render_pool_clients(views, n_views, out);
    render_pool_pinning(views, n_views, out);
    render_pool_servers(views, n_views, out);
    render_pool_counters(views, n_views, out);
    render_pool_histograms(views, n_views, out);
    render_workers(w, out);
    free(views);
}

/* ---- the HTTP endpoint ---- */

static void metrics_reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", "text/plain; charset=utf-8");
    evbuffer_add(evhttp_request_get_output_buffer(req), text, strlen(text));
    evhttp_send_reply(req, code, reason, NULL);
}

static void metrics_http_cb(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    struct metrics_state *m = w->metrics;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || strcmp(path, METRICS_PATH) != 0) {
        metrics_reply_text(req, HTTP_NOTFOUND, "Not Found", "not found: sluice serves only GET /metrics\n");
        return;
    }
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        metrics_reply_text(req, HTTP_BADMETHOD, "Method Not Allowed", "method not allowed: use GET\n");
        return;
    }
    msgbuf_reset(&m->page);
    world_stop(w); /* one consistent page of every worker's state */
    metrics_render(w, &m->page);
    world_resume(w);
    if (m->page.failed) {
        log_error("metrics: out of memory rendering %s", METRICS_PATH);
        metrics_reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory\n");
        return;
    }
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", METRICS_CONTENT_TYPE);
    if (method == EVHTTP_REQ_HEAD) {
        /* evhttp would send a body after a HEAD reply too, and no length: give the length only. */
        char length[32];
        snprintf(length, sizeof(length), "%zu", m->page.len);
        evhttp_add_header(headers, "Content-Length", length);
    } else {
        evbuffer_add(evhttp_request_get_output_buffer(req), m->page.data, m->page.len);
    }
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

static void metrics_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct metrics_state *m = arg;
    for (size_t i = 0; i < m->n_listeners; i++)
        evconnlistener_enable(m->listeners[i]);
}

/* Out of descriptors: pause, so the loop does not spin on a socket it cannot accept from. */
static void metrics_accept_error_cb(struct evconnlistener *evl, void *arg)
{
    struct metrics_state *m = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_warning("metrics: accept() failed: %s", evutil_socket_error_to_string(err));
    evconnlistener_disable(evl);
    struct timeval pause = { 0, METRICS_ACCEPT_PAUSE_USEC };
    evtimer_add(m->accept_resume, &pause);
}

static int metrics_listen_one(struct worker *w, const struct sockaddr *addr, int addr_len,
                              const char *description)
{
    struct metrics_state *m = w->metrics;
    if (m->n_listeners == METRICS_MAX_LISTENERS) {
        log_warning("metrics: more than %d addresses; not listening on %s", METRICS_MAX_LISTENERS,
                    description);
        return -1;
    }
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE;
    /* With so_reuseport a second sluice can start on the same ports, this one included. */
    if (m->http_reuseport)
        flags |= LEV_OPT_REUSEABLE_PORT;
    struct evconnlistener *evl = evconnlistener_new_bind(w->base, NULL, NULL, flags,
                                                         METRICS_LISTEN_BACKLOG, addr, addr_len);
    if (!evl) {
        log_error("metrics: could not listen on %s: %s", description,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    if (!evhttp_bind_listener(m->http, evl)) {
        log_error("metrics: could not serve HTTP on %s", description);
        evconnlistener_free(evl);
        return -1;
    }
    evconnlistener_set_error_cb(evl, metrics_accept_error_cb);
    m->listeners[m->n_listeners++] = evl;
    log_info("metrics: serving http://%s%s", description, METRICS_PATH);
    return 0;
}

static int metrics_listen_host(struct worker *w, const char *host, int port)
{
    return listener_for_each_address(w, "metrics_listen_addr", host, port, metrics_listen_one) > 0 ? 0 : -1;
}

static void metrics_close_http(struct metrics_state *m)
{
    if (m->http)
        evhttp_free(m->http); /* frees the bound listeners too */
    m->http = NULL;
    m->n_listeners = 0;
    if (m->accept_resume)
        evtimer_del(m->accept_resume);
    free(m->http_addr);
    m->http_addr = NULL;
    m->http_port = 0;
}

static const char *metrics_effective_addr(const struct config *cfg)
{
    return cfg->metrics_listen_addr && *cfg->metrics_listen_addr ? cfg->metrics_listen_addr
                                                                 : METRICS_DEFAULT_ADDR;
}

/*
 * The buffered socket of each HTTP connection. evhttp's own does not own its socket: evhttp
 * closes the socket when it frees a connection, while the buffered socket, its callbacks
 * deferred, takes its events off the loop a turn later. By then another worker may have accepted
 * a client on the same descriptor number, and this loop would touch that number (harmless to
 * the kernel, a data race to ThreadSanitizer). Owning the socket, it closes it after its events.
 */
static struct bufferevent *metrics_http_bufferevent(struct event_base *base, void *arg)
{
    (void)arg;
    return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
}

/* Opens the endpoint the config asks for (none when metrics_port is 0). */
static int metrics_open_http(struct worker *w)
{
    struct metrics_state *m = w->metrics;
    const struct config *cfg = w->cfg;
    if (cfg->metrics_port <= 0)
        return 0;
    m->http = evhttp_new(w->base);
    m->http_addr = strdup(metrics_effective_addr(cfg));
    if (!m->http || !m->http_addr) {
        log_error("metrics: out of memory");
        metrics_close_http(m);
        return -1;
    }
    m->http_port = cfg->metrics_port;
    m->http_reuseport = cfg->so_reuseport;
    evhttp_set_gencb(m->http, metrics_http_cb, w);
    evhttp_set_bevcb(m->http, metrics_http_bufferevent, NULL);
    evhttp_set_timeout(m->http, METRICS_HTTP_TIMEOUT_SECONDS);
    evhttp_set_max_headers_size(m->http, METRICS_MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(m->http, METRICS_MAX_BODY_SIZE);
    /* Every method reaches metrics_http_cb, which answers 405 itself instead of evhttp's 501. */
    evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                            EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);

    char *list = strdup(m->http_addr), *save = NULL;
    if (!list) {
        metrics_close_http(m);
        return -1;
    }
    int rc = 0;
    for (char *item = strtok_r(list, ", ", &save); item && rc == 0; item = strtok_r(NULL, ", ", &save))
        rc = metrics_listen_host(w, item, m->http_port);
    free(list);
    if (rc != 0)
        metrics_close_http(m);
    return rc;
}

/* ---- systemd ---- */

static void notify_send(const char *message)
{
#ifdef HAVE_LIBSYSTEMD
    int rc = sd_notify(0, message);
    if (rc < 0)
        log_warning("sd_notify failed: %s", strerror(-rc));
#else
    (void)message;
#endif
}

/* Worker 0's metrics state, which the whole process shares (NULL before metrics_init). */
static struct metrics_state *metrics_state_of(const struct worker *w)
{
    return w->world->workers[0]->metrics;
}

/* The STATUS= line: clients, backends and waiting clients of every worker (the world stopped). */
static void format_status(struct worker *w, char *status, size_t len)
{
    size_t clients = 0, servers = 0;
    int waiting = 0;
    struct worker *wk;
    const struct pool *pool;
    WORLD_FOR_EACH_WORKER(w->world, i, wk) {
        clients += wk->n_clients;
        servers += wk->n_servers;
    }
    WORLD_FOR_EACH_POOL(w->world, i, wk, pool)
        waiting += pool->n_waiting;
    snprintf(status, len, "%sclients: %zu, servers: %zu, waiting: %d",
             w->shutting_down ? "stopping: " : "", clients, servers, waiting);
}

/* Sends prefix (READY=1, ...) with the current STATUS= line in one message; the world stopped. */
static void notify_with_status(struct worker *w, const char *prefix)
{
    struct metrics_state *m = metrics_state_of(w);
    char message[STATUS_MAX_LEN + 64];
    char status[STATUS_MAX_LEN];
    format_status(w, status, sizeof(status));
    snprintf(message, sizeof(message), "%s%sSTATUS=%s", prefix, *prefix ? "\n" : "", status);
    notify_send(message);
    if (m) {
        snprintf(m->last_status, sizeof(m->last_status), "%s", status);
        m->last_status_time = worker_now(w);
    }
}

/* On w's own thread (start-up, after a reload): it stops the world to count every worker. */
void notify_ready(struct worker *w)
{
    world_stop(w);
    notify_with_status(w, "READY=1");
    world_resume(w);
}

void notify_reloading(struct worker *w)
{
    /* MONOTONIC_USEC lets Type=notify-reload units match this message to their reload request. */
    char message[128];
    snprintf(message, sizeof(message), "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading configuration",
             (unsigned long long)monotonic_usec());
    notify_send(message);
}

/* From worker_begin_shutdown and worker_begin_drain, which run with the world stopped. */
void notify_stopping(struct worker *w)
{
    notify_with_status(w, "STOPPING=1");
}

/* At most once a STATUS_MIN_INTERVAL_SECONDS, and only for a service manager that listens: counting
 * every worker's clients stops the world. */
static void metrics_update_status(struct worker *w, double now)
{
    struct metrics_state *m = w->metrics;
    char status[STATUS_MAX_LEN];
    if (!m->notify_on || now - m->last_status_time < STATUS_MIN_INTERVAL_SECONDS ||
        now - m->last_status_check < STATUS_MIN_INTERVAL_SECONDS)
        return;
    m->last_status_check = now;
    world_stop(w);
    format_status(w, status, sizeof(status));
    if (strcmp(status, m->last_status) != 0)
        notify_with_status(w, "");
    world_resume(w);
}

/*
 * The worker whose event loop has not turned for longest, if that is longer than stale_usec; NULL
 * if every loop turns. A worker that has not started its loop yet (last turn 0) is not counted.
 */
static const struct worker *stuck_worker(struct world *world, int64_t stale_usec, int64_t *idle_usec)
{
    const struct worker *stuck = NULL;
    struct worker *wk;
    int64_t now = monotonic_usec();
    *idle_usec = 0;
    WORLD_FOR_EACH_WORKER(world, i, wk) {
        int64_t last = atomic_load_explicit(&wk->last_turn_usec, memory_order_relaxed);
        if (last > 0 && now - last > stale_usec && now - last > *idle_usec) {
            stuck = wk;
            *idle_usec = now - last;
        }
    }
    return stuck;
}

/*
 * WATCHDOG=1 only while every worker's loop turns (each turns at least every janitor tick): a
 * worker stuck in a callback is a hung pooler for its clients, even if worker 0 still runs.
 * While the process stops, workers whose clients have left end their loops early: not stuck.
 */
static void metrics_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct metrics_state *m = w->metrics;
    int64_t idle_usec;
    const struct worker *stuck = stuck_worker(w->world, m->watchdog_stale_usec, &idle_usec);
    unsigned long held_back;

    if (stuck && !w->shutting_down && !w->draining) {
        if (log_rate_allow(&m->stuck_log, worker_now(w), (double)m->watchdog_stale_usec / 1e6, &held_back))
            log_warning("worker %u: its event loop has not turned for %.1f s: not pinging the systemd "
                        "watchdog", stuck->index, (double)idle_usec / 1e6);
        return;
    }
    notify_send("WATCHDOG=1");
}

/* WatchdogSec= in the unit: ping at half the interval, from the loop itself, so a stuck loop shows. */
static int metrics_start_watchdog(struct worker *w)
{
#ifdef HAVE_LIBSYSTEMD
    struct metrics_state *m = w->metrics;
    uint64_t interval_usec = 0;
    if (sd_watchdog_enabled(0, &interval_usec) <= 0 || interval_usec == 0)
        return 0;
    uint64_t half = interval_usec / 2;
    struct timeval period = timeval_from_usec(half);
    m->watchdog_stale_usec = (int64_t)half;
    m->watchdog = event_new(w->base, -1, EV_PERSIST, metrics_watchdog_cb, w);
    if (!m->watchdog || event_add(m->watchdog, &period) != 0) {
        log_error("could not start the systemd watchdog timer");
        return -1;
    }
    notify_send("WATCHDOG=1");
    log_info("systemd watchdog: pinging every %.3f s while every worker's loop turns", (double)half / 1e6);
#else
    (void)w;
#endif
    return 0;
}

/* ---- the stats line ---- */

static void pool_snapshot_take(struct pool_snapshot *snap, const struct pool_stats *st)
{
    snap->xact_count = st->xact_count;
    snap->query_count = st->query_count;
    snap->bytes_received = st->bytes_received;
    snap->bytes_sent = st->bytes_sent;
    snap->query_replies = st->query_latency.count;
    snap->borrows = st->borrow_latency.count;
    snap->xact_time = st->xact_time;
    snap->query_time = st->query_time;
    snap->borrow_time = st->borrow_latency.sum;
}

static void snapshots_free(struct pool_snapshot *snaps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(snaps[i].db_name);
        free(snaps[i].user_name);
    }
    free(snaps);
}

static const struct pool_snapshot *snapshot_find(const struct metrics_state *m, const struct pool_group *pool)
{
    for (size_t i = 0; i < m->n_snapshots; i++)
        if (strcmp(m->snapshots[i].db_name, pool->db_name) == 0 &&
            strcmp(m->snapshots[i].user_name, pool->user_name) == 0)
            return &m->snapshots[i];
    return NULL;
}

/* Remembers every pool's counters (summed over the workers) now; the next line reports the growth. */
static void stats_take_snapshots(struct metrics_state *m, const struct pool_groups *pools, double now)
{
    size_t n = pools->n_groups;
    struct pool_snapshot *snaps = calloc(n ? n : 1, sizeof(*snaps));
    if (!snaps)
        return; /* keep the old ones: the next line covers a longer span */
    for (size_t i = 0; i < n; i++) {
        const struct pool_group *pool = &pools->groups[i];
        struct pool_stats sum;
        snaps[i].db_name = strdup(pool->db_name);
        snaps[i].user_name = strdup(pool->user_name);
        pool_group_stats(pool, &sum);
        pool_snapshot_take(&snaps[i], &sum);
        if (!snaps[i].db_name || !snaps[i].user_name) {
            snapshots_free(snaps, i + 1);
            return;
        }
    }
    snapshots_free(m->snapshots, m->n_snapshots);
    m->snapshots = snaps;
    m->n_snapshots = n;
    m->stats_since = now;
}

static uint64_t per_second(uint64_t delta, double seconds)
{
    return (uint64_t)((double)delta / seconds + 0.5);
}

static uint64_t average_usec(double total_seconds, uint64_t count)
{
    return count ? (uint64_t)(total_seconds / (double)count * 1e6 + 0.5) : 0;
}

static void stats_log_pool(const struct pool_group *pool, const struct pool_snapshot *before, double seconds)
{
    static const struct pool_snapshot zero;
    struct pool_snapshot now;
    struct pool_stats sum;
    if (!before)
        before = &zero; /* a pool created since the last line: all of its activity is new */
    pool_group_stats(pool, &sum);
    pool_snapshot_take(&now, &sum);
    log_info("stats: pool %s/%s: %" PRIu64 " xacts/s, %" PRIu64 " queries/s, in %" PRIu64
             " B/s, out %" PRIu64 " B/s, xact %" PRIu64 " us, query %" PRIu64 " us, wait %" PRIu64 " us",
             pool->db_name, pool->user_name,
             per_second(now.xact_count - before->xact_count, seconds),
             per_second(now.query_count - before->query_count, seconds),
             per_second(now.bytes_received - before->bytes_received, seconds),
             per_second(now.bytes_sent - before->bytes_sent, seconds),
             average_usec(now.xact_time - before->xact_time, now.xact_count - before->xact_count),
             average_usec(now.query_time - before->query_time, now.query_replies - before->query_replies),
             average_usec(now.borrow_time - before->borrow_time, now.borrows - before->borrows));
}

/* At each stats_period: one line per pool of the process, its workers' pools summed. */
static void stats_period_tick(struct worker *w, double now)
{
    struct metrics_state *m = w->metrics;
    double period = w->cfg->stats_period;
    struct pool_groups pools;
    if (period <= 0) {
        m->stats_since = 0; /* switched back on by a reload: start afresh then */
        return;
    }
    if (m->stats_since > 0 && now - m->stats_since < period)
        return;
    world_stop(w);
    if (pool_groups_collect(w->world, POOL_GROUP_BY_POOL, &pools) == 0) {
        for (size_t i = 0; m->stats_since > 0 && i < pools.n_groups; i++)
            stats_log_pool(&pools.groups[i], snapshot_find(m, &pools.groups[i]), now - m->stats_since);
        stats_take_snapshots(m, &pools, now);
        pool_groups_free(&pools);
    }
    world_resume(w);
}

/* ---- life cycle ---- */

int metrics_init(struct worker *w)
{
    struct metrics_state *m = calloc(1, sizeof(*m));
    if (!m) {
        log_error("metrics: out of memory");
        return -1;
    }
    w->metrics = m;
    msgbuf_init(&m->page);
    m->accept_resume = evtimer_new(w->base, metrics_accept_resume_cb, m);
    if (!m->accept_resume) {
        log_error("metrics: could not create a timer");
        return -1;
    }
    if (metrics_open_http(w) != 0)
        return -1;
    if (metrics_start_watchdog(w) != 0)
        return -1;
#ifdef HAVE_LIBSYSTEMD
    m->notify_on = getenv("NOTIFY_SOCKET") != NULL;
#endif
    /* The first stats_period starts at the janitor's first tick, once every worker runs. */
    return 0;
}

void metrics_free(struct worker *w)
{
    struct metrics_state *m = w->metrics;
    if (!m)
        return;
    metrics_close_http(m);
    if (m->accept_resume)
        event_free(m->accept_resume);
    if (m->watchdog)
        event_free(m->watchdog);
    snapshots_free(m->snapshots, m->n_snapshots);
    msgbuf_free(&m->page);
    free(m);
    w->metrics = NULL;
}

static bool metrics_endpoint_changed(const struct metrics_state *m, const struct config *cfg)
{
    int port = cfg->metrics_port > 0 ? cfg->metrics_port : 0;
    if (port != m->http_port)
        return true;
    if (port == 0)
        return false;
    return strcmp(metrics_effective_addr(cfg), m->http_addr) != 0 || cfg->so_reuseport != m->http_reuseport;
}

/* From a reload on any worker, with the world stopped: the endpoint is worker 0's. */
void metrics_reconfigure(struct worker *w)
{
    struct metrics_state *m = metrics_state_of(w);
    if (!m || !metrics_endpoint_changed(m, w->cfg))
        return;
    w = w->world->workers[0];
    /* The old sockets go first: the new address may share the old port. */
    metrics_close_http(m);
    if (w->cfg->metrics_port <= 0) {
        log_info("metrics: endpoint turned off");
        return;
    }
    if (metrics_open_http(w) != 0)
        log_error("metrics: endpoint off until the next reload fixes metrics_listen_addr/metrics_port");
}

void metrics_janitor(struct worker *w, double now)
{
    if (!w->metrics)
        return;
    stats_period_tick(w, now);
    metrics_update_status(w, now);
}
