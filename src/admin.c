/*
 * admin.c: the admin console. Reads PgBouncer's console commands, answers SHOW from the live
 * state of every worker (a console client may land on any of them) with PgBouncer's column names
 * and types, and steers pools (PAUSE, RESUME, RECONNECT, KILL, WAIT_CLOSE) and the process (RELOAD,
 * SHUTDOWN, SET). Each command runs with the world stopped, so it sees and changes the whole
 * process at once. PAUSE and WAIT_CLOSE answer once their condition holds: the janitor of the
 * worker that owns the console client checks it on every tick.
 */
#include "admin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <event2/buffer.h>

#include "admin_parse.h"
#include "auth_query.h"
#include "auth_token.h"
#include "autodb.h"
#include "client.h"
#include "listener.h"
#include "log.h"
#include "pinning.h"
#include "pool.h"
#include "server.h"
#include "world_view.h"
#include "build-config.h"

#define CONSOLE_NAME "sluice"
#define CONSOLE_NAME_PGBOUNCER "pgbouncer"

#define SHOWN_COMMAND_MAX 200        /* how much of an unknown command the error quotes */
#define DEFAULT_AVERAGE_PERIOD 60.0  /* seconds, when stats_period is 0 (no stats log line) */
#define USEC_PER_SEC 1000000.0
/* SUSPEND answers within this long (PgBouncer's suspend_timeout default): connections whose
 * output the peer still has not read by then are closed, as PgBouncer closes them. */
#define SUSPEND_FLUSH_SECONDS 10.0

/* ---- state ---- */

enum deferred_kind {
    DEFERRED_PAUSE,      /* until every backend of the affected pools is free */
    DEFERRED_WAIT_CLOSE, /* until the affected pools have no backend older than the command */
    DEFERRED_SUSPEND,    /* until every connection but the consoles' has written its output */
};

struct deferred_reply {
    struct deferred_reply *next;
    struct client *client;
    struct worker *worker;  /* the client's: only its janitor answers it */
    enum deferred_kind kind;
    char *db_name;       /* NULL: every pool */
    uint64_t id_limit;   /* WAIT_CLOSE: backends with an id up to this predate the command */
    double since;        /* when the command came */
};

/* Counters of one database, summed over its pools. Times in seconds. */
struct stat_totals {
    uint64_t xact_count;
    uint64_t query_count;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    double xact_time;
    double query_time;
    double wait_time;
};

/* Per-second rates and per-transaction/query times over the last averaging period. */
struct stat_averages {
    uint64_t xact_count;     /* per second */
    uint64_t query_count;    /* per second */
    uint64_t bytes_received; /* per second */
    uint64_t bytes_sent;     /* per second */
    uint64_t xact_time;      /* microseconds per transaction */
    uint64_t query_time;     /* microseconds per query */
    uint64_t wait_time;      /* microseconds waited per second, as PgBouncer counts it */
};

struct database_averages {
    char *db_name;
    struct stat_totals previous; /* totals at the last period boundary */
    struct stat_averages current;
};

/* A set of database names, owned copies. */
struct db_names {
    char **names;
    size_t n;
};

/*
 * The console's state is the process's: worker 0 owns it (admin_state_of). Commands change it with
 * the world stopped; what the data path of every worker reads at any time (logins, new pools) and
 * what a console client leaving on any worker changes is under lock, a leaf lock (nothing is
 * called while it is held).
 */
struct admin_state {
    pthread_mutex_t lock;
    struct deferred_reply *deferred; /* under lock */
    bool pause_all;              /* under lock. PAUSE without a name: every pool, new ones included */
    struct db_names paused;      /* under lock. PAUSE db and KILL db */
    struct db_names disabled;    /* under lock. DISABLE db: no new logins until ENABLE */
    atomic_bool shutdown_requested; /* SHUTDOWN: worker 0 begins it on its next tick, after the reply */
    /* Worker 0's janitor and the console, with the world stopped. */
    double period_start;         /* of the current averaging period; 0: not started */
    struct database_averages *averages;
    size_t n_averages;
};

/* ---- which [sluice] settings SET may change (config.c owns the settings themselves) ---- */

/*
 * Settings read afresh wherever they are used, and pool sizes, which pools take again right
 * after SET. Every other setting needs the file and a RELOAD or restart.
 */
static const char *const changeable_settings[] = {
    "default_pool_size",
    "min_pool_size",
    "max_client_conn",
    "max_db_connections",
    "query_wait_timeout",
    "client_idle_timeout",
    "client_login_timeout",
    "idle_transaction_timeout",
    "server_idle_timeout",
    "server_lifetime",
    "server_connect_timeout",
    "server_login_retry",
    "shutdown_timeout",
    "server_reset_query_always",
    "server_check_delay",
    "log_connections",
    "log_disconnections",
    "log_pooler_errors",
    "verbose",
    "max_packet_size",
    "stats_period",
    "auth_token_clock_skew",
    "autodb_idle_timeout",
    /* Taken at each login: a client keeps what it logged in with (its pool mode, whether its
     * prepared statements are tracked), so state it built under one is never read under another. */
    "pool_mode",
    "max_prepared_statements",
    "auth_type",
    "admin_users",
    "stats_users",
};

static bool setting_changeable(const char *name)
{
    for (size_t i = 0; i < sizeof(changeable_settings) / sizeof(changeable_settings[0]); i++)
        if (strcmp(changeable_settings[i], name) == 0)
            return true;
    return false;
}

/* ---- result sets: proto.c builds the messages, the console checks the row shapes ---- */

/* A result set being written to a msgbuf: one RowDescription, DataRows, one CommandComplete. */
struct result {
    struct msgbuf *out;
    size_t n_columns;
    size_t row;          /* what proto_data_row_begin returned for the DataRow being built */
    size_t n_values;     /* values written in it so far */
};

static void result_begin(struct result *r, struct msgbuf *out, const struct proto_column *columns,
                         size_t n_columns)
{
    r->out = out;
    r->n_columns = n_columns;
    r->n_values = 0;
    proto_build_row_description(out, columns, n_columns);
}

static void result_row_begin(struct result *r)
{
    r->row = proto_data_row_begin(r->out, (uint16_t)r->n_columns);
    r->n_values = 0;
}

/* A text value; NULL sends SQL NULL. */
static void result_text(struct result *r, const char *value)
{
    if (r->n_values >= r->n_columns) {
        log_error("admin console: a row has more values than columns; value dropped");
        return;
    }
    r->n_values++;
    proto_data_row_add(r->out, value);
}

static void result_int(struct result *r, long long value)
{
    char text[32];
    snprintf(text, sizeof(text), "%lld", value);
    result_text(r, text);
}

/* int4 columns: clamped, so a large count never wraps into a negative one. */
static void result_int4(struct result *r, long long value)
{
    result_int(r, value > INT32_MAX ? INT32_MAX : value < INT32_MIN ? INT32_MIN : value);
}

static void result_uint(struct result *r, uint64_t value)
{
    char text[32];
    snprintf(text, sizeof(text), "%llu", (unsigned long long)value);
    result_text(r, text);
}

static void result_row_end(struct result *r)
{
    if (r->n_values < r->n_columns)
        log_error("admin console: a row has fewer values than columns; padded with NULLs");
    while (r->n_values < r->n_columns)
        result_text(r, NULL);
    proto_data_row_end(r->out, r->row);
}

/* ---- small helpers ---- */

/* The process's console state, whichever worker asks (worker 0 owns it). */
static struct admin_state *admin_state_of(const struct worker *w)
{
    return w->world->workers[0]->admin;
}

static uint64_t seconds_to_usec(double seconds)
{
    return seconds > 0 ? (uint64_t)(seconds * USEC_PER_SEC + 0.5) : 0;
}

/* PgBouncer's timestamp format, in UTC: "2026-11-27 08:00:00 UTC". */
static void format_time(double when, char *buf, size_t len)
{
    time_t seconds = (time_t)when;
    struct tm tm;
    if (when <= 0 || !gmtime_r(&seconds, &tm)) {
        buf[0] = '\0';
        return;
    }
    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* An address as SHOW CLIENTS/SERVERS prints it: "unix" for a unix socket. */
static void format_sockaddr(const struct sockaddr_storage *ss, char *addr, size_t len, int *port)
{
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, addr, (socklen_t)len);
        *port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, addr, (socklen_t)len);
        *port = ntohs(sin6->sin6_port);
    } else if (ss->ss_family == AF_UNIX) {
        snprintf(addr, len, "unix");
    } else {
        addr[0] = '\0';
    }
}

/* The local (or, with peer, remote) end of a connection's socket; false if it has none. */
static bool socket_address(const struct conn *conn, bool peer, char *addr, size_t len, int *port)
{
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);
    evutil_socket_t fd = conn && conn->open ? conn->fd : -1;

    addr[0] = '\0';
    *port = 0;
    if (fd < 0)
        return false;
    memset(&ss, 0, sizeof(ss));
    int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &ss_len)
                  : getsockname(fd, (struct sockaddr *)&ss, &ss_len);
    if (rc != 0)
        return false;
    format_sockaddr(&ss, addr, len, port);
    return true;
}

/* The process id of a client on a unix socket (SO_PEERCRED); 0 over TCP. */
static int unix_peer_pid(const struct conn *conn)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    evutil_socket_t fd = conn && conn->open ? conn->fd : -1;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    return (int)cred.pid;
}

static void tls_text(const struct conn *conn, bool tls, char *buf, size_t len)
{
    buf[0] = '\0';
    if (tls && conn_ssl(conn))
        tls_describe(conn_ssl(conn), buf, len);
}

static bool is_console_name(const char *name)
{
    return strcmp(name, CONSOLE_NAME) == 0 || strcmp(name, CONSOLE_NAME_PGBOUNCER) == 0;
}

/* ---- which databases PAUSE (or KILL) holds, and which DISABLE closes ---- */

static bool db_names_contain(const struct db_names *set, const char *db_name)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->names[i], db_name) == 0)
            return true;
    return false;
}

bool admin_database_paused(const struct worker *w, const char *db_name)
{
    struct admin_state *a = admin_state_of(w);
    if (!a)
        return false;
    pthread_mutex_lock(&a->lock);
    bool paused = a->pause_all || db_names_contain(&a->paused, db_name);
    pthread_mutex_unlock(&a->lock);
    return paused;
}

bool admin_database_disabled(const struct worker *w, const char *db_name)
{
    struct admin_state *a = admin_state_of(w);
    if (!a)
        return false;
    pthread_mutex_lock(&a->lock);
    bool disabled = db_names_contain(&a->disabled, db_name);
    pthread_mutex_unlock(&a->lock);
    return disabled;
}

/* Whether PAUSE without a name holds every pool. */
static bool admin_pause_all(struct admin_state *a)
{
    pthread_mutex_lock(&a->lock);
    bool all = a->pause_all;
    pthread_mutex_unlock(&a->lock);
    return all;
}

static int db_names_add(struct db_names *set, const char *db_name)
{
    if (db_names_contain(set, db_name))
        return 0;
    char **grown = realloc(set->names, (set->n + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    set->names = grown;
    set->names[set->n] = strdup(db_name);
    if (!set->names[set->n])
        return -1;
    set->n++;
    return 0;
}

static void db_names_remove(struct db_names *set, const char *db_name)
{
    for (size_t i = 0; i < set->n; i++) {
        if (strcmp(set->names[i], db_name) != 0)
            continue;
        free(set->names[i]);
        set->names[i] = set->names[--set->n];
        return;
    }
}

static void db_names_clear(struct db_names *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->names[i]);
    set->n = 0;
}

/* The sets above as the console changes them: under the state's lock. */
static int admin_names_add(struct admin_state *a, struct db_names *set, const char *db_name)
{
    pthread_mutex_lock(&a->lock);
    int rc = db_names_add(set, db_name);
    pthread_mutex_unlock(&a->lock);
    return rc;
}

static void admin_names_remove(struct admin_state *a, struct db_names *set, const char *db_name)
{
    pthread_mutex_lock(&a->lock);
    db_names_remove(set, db_name);
    pthread_mutex_unlock(&a->lock);
}

/* A pool created after PAUSE (a new user of a paused database) is held as well. */
static void admin_hold_new_pools(struct worker *w)
{
    struct pool *pool;
    TAILQ_FOREACH(pool, &w->pools, link)
        if (!pool->paused && admin_database_paused(w, pool->db_name))
            pool_pause(pool);
}

/* ---- statistics ---- */

static void add_pool_totals(const struct pool *pool, struct stat_totals *t)
{
    t->xact_count += pool->stats.xact_count;
    t->query_count += pool->stats.query_count;
    t->bytes_received += pool->stats.bytes_received;
    t->bytes_sent += pool->stats.bytes_sent;
    t->xact_time += pool->stats.xact_time;
    t->query_time += pool->stats.query_time;
    t->wait_time += pool->stats.wait_time;
}

/* A database's counters: its pools on every worker, summed. */
static void group_totals(const struct pool_group *group, struct stat_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < group->n_pools; i++)
        add_pool_totals(group->pools[i], t);
}

static struct database_averages *admin_find_averages(struct admin_state *a, const char *db_name)
{
    for (size_t i = 0; i < a->n_averages; i++)
        if (strcmp(a->averages[i].db_name, db_name) == 0)
            return &a->averages[i];
    return NULL;
}

static struct database_averages *admin_averages_entry(struct admin_state *a, const char *db_name)
{
    struct database_averages *entry = admin_find_averages(a, db_name);
    if (entry)
        return entry;
    struct database_averages *grown = realloc(a->averages, (a->n_averages + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    a->averages = grown;
    entry = &a->averages[a->n_averages];
    memset(entry, 0, sizeof(*entry));
    entry->db_name = strdup(db_name);
    if (!entry->db_name)
        return NULL;
    a->n_averages++;
    return entry;
}

/* Growth of a counter over the period (0 if it went down, as a removed pool's would). */
static double growth(double now, double before)
{
    return now > before ? now - before : 0;
}

/* PgBouncer's averages: counts per second over the period, times per transaction or query. */
static void compute_averages(const struct stat_totals *now, const struct stat_totals *before,
                             double period, struct stat_averages *avg)
{
    double xacts = growth((double)now->xact_count, (double)before->xact_count);
    double queries = growth((double)now->query_count, (double)before->query_count);

    memset(avg, 0, sizeof(*avg));
    if (period <= 0)
        return;
    avg->xact_count = (uint64_t)(xacts / period);
    avg->query_count = (uint64_t)(queries / period);
    avg->bytes_received = (uint64_t)(growth((double)now->bytes_received, (double)before->bytes_received) / period);
    avg->bytes_sent = (uint64_t)(growth((double)now->bytes_sent, (double)before->bytes_sent) / period);
    if (xacts > 0)
        avg->xact_time = seconds_to_usec(growth(now->xact_time, before->xact_time) / xacts);
    if (queries > 0)
        avg->query_time = seconds_to_usec(growth(now->query_time, before->query_time) / queries);
    avg->wait_time = seconds_to_usec(growth(now->wait_time, before->wait_time) / period);
}

static double averaging_period(const struct worker *w)
{
    return w->cfg->stats_period > 0 ? w->cfg->stats_period : DEFAULT_AVERAGE_PERIOD;
}

/* At each period boundary (worker 0's janitor): the averages of the period that ended, for every
 * database, over every worker's pools. */
static void admin_refresh_averages(struct worker *w, double now)
{
    struct admin_state *a = admin_state_of(w);
    struct pool_groups databases;

    if (a->period_start <= 0) {
        a->period_start = now;
        return;
    }
    double period = now - a->period_start;
    if (period < averaging_period(w))
        return;
    world_stop(w);
    if (pool_groups_collect(w->world, POOL_GROUP_BY_DATABASE, &databases) != 0) {
        world_resume(w);
        return; /* out of memory: the next tick tries again, over a longer period */
    }
    for (size_t i = 0; i < databases.n_groups; i++) {
        const struct pool_group *group = &databases.groups[i];
        struct database_averages *entry = admin_averages_entry(a, group->db_name);
        if (!entry)
            continue;
        struct stat_totals totals;
        group_totals(group, &totals);
        compute_averages(&totals, &entry->previous, period, &entry->current);
        entry->previous = totals;
    }
    a->period_start = now;
    pool_groups_free(&databases);
    world_resume(w);
}

static void database_averages_of(struct worker *w, const char *db_name, struct stat_averages *avg)
{
    const struct database_averages *entry = admin_find_averages(admin_state_of(w), db_name);
    if (entry)
        *avg = entry->current;
    else
        memset(avg, 0, sizeof(*avg));
}

/* ---- replies ---- */

struct request {
    struct worker *w;
    struct client *c;
    struct msgbuf *out;
    const char *sql;
    struct command cmd;
};

static void reply_error(struct request *req, const char *sqlstate, const char *hint,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void reply_error(struct request *req, const char *sqlstate, const char *hint,
                        const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    proto_build_error(req->out, "ERROR", sqlstate, message, NULL, hint);
}

static const char *arg(const struct request *req, size_t i)
{
    return i < req->cmd.n_tokens ? req->cmd.tokens[i].text : NULL;
}

/* The command as the user wrote it, shortened and on one line, for error messages. */
static void shown_command(const char *sql, char *buf, size_t len)
{
    size_t n = 0;
    while (isspace((unsigned char)*sql))
        sql++;
    for (; *sql && n + 4 < len && n < SHOWN_COMMAND_MAX; sql++)
        buf[n++] = isprint((unsigned char)*sql) ? *sql : ' ';
    if (*sql && n >= 3) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == ';'))
        n--;
    buf[n] = '\0';
}

/* The process's pools, grouped; false (53200 written) when out of memory. */
static bool collect_groups(struct request *req, enum pool_group_key key, struct pool_groups *out)
{
    if (pool_groups_collect(req->w->world, key, out) == 0)
        return true;
    reply_error(req, "53200", NULL, "out of memory");
    return false;
}

static void reply_unknown_command(struct request *req)
{
    char shown[SHOWN_COMMAND_MAX + 4];
    shown_command(req->sql, shown, sizeof(shown));
    reply_error(req, "42601", "SHOW HELP lists the console's commands.", "unknown command: %s",
                shown);
}

/* ---- SHOW ---- */

static void show_help(struct request *req)
{
    static const char usage[] =
        "Console usage\n"
        "\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
        "\tSHOW LISTS|MEM|STATE|DNS_HOSTS|DNS_ZONES\n"
        "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
        "\tSHOW PINNED|AUTH|WORKERS\n"
        "\tSET key = arg\n"
        "\tRELOAD\n"
        "\tPAUSE [<db>]\n"
        "\tRESUME [<db>]\n"
        "\tRECONNECT [<db>]\n"
        "\tKILL <db>\n"
        "\tKILL_CLIENT <client_id>\n"
        "\tSUSPEND\n"
        "\tDISABLE <db>\n"
        "\tENABLE <db>\n"
        "\tSHUTDOWN\n"
        "\tWAIT_CLOSE [<db>]";
    proto_build_notice(req->out, "NOTICE", "00000", usage);
    proto_build_command_complete(req->out, "SHOW");
}

static void show_version(struct request *req)
{
    static const struct proto_column columns[] = { {"version", PROTO_TYPE_TEXT} };
    struct result r;
    result_begin(&r, req->out, columns, 1);
    result_row_begin(&r);
    result_text(&r, "sluice " PACKAGE_VERSION);
    result_row_end(&r);
    proto_build_command_complete(req->out, "SHOW");
}

/* PgBouncer's server states: login, idle, active, tested (reset or check running). */
static const char *server_state_name(const struct server *s)
{
    switch (s->state) {
    case SERVER_CONNECTING:
    case SERVER_LOGIN:
        return "login";
    case SERVER_IDLE:
        return "idle";
    case SERVER_ACTIVE:
        return "active";
    case SERVER_INTERNAL:
        if (s->purpose == INTERNAL_CONNECT_QUERY)
            return "login";
        return s->client ? "active" : "tested";
    case SERVER_BEING_CANCELED:
        return "being_canceled";
    case SERVER_CLEANUP:
        return "used"; /* PgBouncer's state for a backend cleaned before reuse */
    case SERVER_CLOSED:
        break;
    }
    return "closed";
}

/* sluice's own, finer state (extra column of SHOW SERVERS). */
static const char *server_detail_name(const struct server *s)
{
    switch (s->state) {
    case SERVER_CONNECTING:
        return "connecting";
    case SERVER_LOGIN:
        return "login";
    case SERVER_IDLE:
        return "idle";
    case SERVER_ACTIVE:
        return "active";
    case SERVER_INTERNAL:
        switch (s->purpose) {
        case INTERNAL_CONNECT_QUERY:
            return "connect_query";
        case INTERNAL_PARAM_SYNC:
            return "param_sync";
        case INTERNAL_RESET:
            return "reset";
        case INTERNAL_ROLLBACK:
            return "rollback";
        case INTERNAL_CHECK:
            return "tested";
        case INTERNAL_NONE:
            break;
        }
        return "internal";
    case SERVER_BEING_CANCELED:
        return "being_canceled";
    case SERVER_CLEANUP:
        return "cleanup";
    case SERVER_CLOSED:
        break;
    }
    return "closed";
}

/* PgBouncer's client states: "active" covers logged-in clients with or without a backend. */
static const char *client_state_name(const struct client *c)
{
    switch (c->state) {
    case CLIENT_STARTUP:
    case CLIENT_AUTH:
        return "login";
    case CLIENT_LOGIN_WAIT:
        return "waiting";
    case CLIENT_IDLE:
    case CLIENT_ACTIVE:
        return "active";
    case CLIENT_WAITING:
        return c->is_admin ? "active" : "waiting";
    case CLIENT_CLOSING:
    case CLIENT_CLOSED:
        break;
    }
    return "justfree";
}

static const char *client_detail_name(const struct client *c)
{
    switch (c->state) {
    case CLIENT_STARTUP:
        return "startup";
    case CLIENT_AUTH:
        return "auth";
    case CLIENT_LOGIN_WAIT:
        return "login_wait";
    case CLIENT_IDLE:
        return "idle";
    case CLIENT_WAITING:
        return c->is_admin ? "console_wait" : "waiting";
    case CLIENT_ACTIVE:
        return "active";
    case CLIENT_CLOSING:
        return "closing";
    case CLIENT_CLOSED:
        break;
    }
    return "closed";
}

struct pool_counts {
    int sv_active, sv_idle, sv_used, sv_tested, sv_login;
    int sv_active_cancel, sv_being_canceled; /* cancel requests in flight; backends held for them */
    int cl_active, cl_waiting;
    int pinned, waiting_all_pinned;
    double max_wait;
};

static void count_servers(const struct server_list *list, struct pool_counts *counts)
{
    const struct server *s;
    TAILQ_FOREACH(s, list, link) {
        const char *state = server_state_name(s);
        counts->sv_active_cancel += s->cancel_in_flight != NULL;
        if (strcmp(state, "active") == 0)
            counts->sv_active++;
        else if (strcmp(state, "idle") == 0)
            counts->sv_idle++;
        else if (strcmp(state, "tested") == 0)
            counts->sv_tested++;
        else if (strcmp(state, "login") == 0)
            counts->sv_login++;
        else if (strcmp(state, "being_canceled") == 0)
            counts->sv_being_canceled++;
        else if (strcmp(state, "used") == 0)
            counts->sv_used++;
    }
}

/* Adds one pool's counts to counts; max_wait is the longest of them. */
static void pool_counts_add(const struct pool *pool, double now, struct pool_counts *counts)
{
    const struct client *c;

    count_servers(&pool->idle_servers, counts);
    count_servers(&pool->used_servers, counts);
    count_servers(&pool->new_servers, counts);
    counts->cl_active += pool->n_active_clients + pool->n_idle_clients;
    counts->cl_waiting += pool->n_waiting;
    counts->pinned += pool->n_pinned;
    counts->waiting_all_pinned += pool_waiting_all_pinned(pool); /* pinned: counted process-wide */
    TAILQ_FOREACH(c, &pool->login_clients, pool_link) {
        counts->cl_waiting++;
        if (now - c->connect_time > counts->max_wait)
            counts->max_wait = now - c->connect_time;
    }
    c = TAILQ_FIRST(&pool->waiting_clients); /* FIFO: the first has waited longest */
    if (c && now - c->wait_start > counts->max_wait)
        counts->max_wait = now - c->wait_start;
}

/* One pool as the operator sees it: its pools on every worker, counted together. */
static void group_counts_of(const struct pool_group *group, double now, struct pool_counts *counts)
{
    memset(counts, 0, sizeof(*counts));
    for (size_t i = 0; i < group->n_pools; i++)
        pool_counts_add(group->pools[i], now, counts);
}

/* Why min_pool_size waits: NULL once the pool of one worker can open backends (the pools of a
 * (database, user) share their backends, so that worker opens them for the process). */
static const char *group_prewarm_blocker(const struct pool_group *group)
{
    const char *why = NULL;
    for (size_t i = 0; i < group->n_pools; i++) {
        const char *blocker = pool_prewarm_blocker(group->pools[i]);
        if (!blocker)
            return NULL;
        why = why ? why : blocker;
    }
    return why;
}

static void show_pools(struct request *req)
{
    static const struct proto_column columns[] = {
        {"database", PROTO_TYPE_TEXT}, {"user", PROTO_TYPE_TEXT},
        {"cl_active", PROTO_TYPE_INT4}, {"cl_waiting", PROTO_TYPE_INT4},
        {"cl_active_cancel_req", PROTO_TYPE_INT4}, {"cl_waiting_cancel_req", PROTO_TYPE_INT4},
        {"sv_active", PROTO_TYPE_INT4}, {"sv_active_cancel", PROTO_TYPE_INT4},
        {"sv_being_canceled", PROTO_TYPE_INT4}, {"sv_idle", PROTO_TYPE_INT4},
        {"sv_used", PROTO_TYPE_INT4}, {"sv_tested", PROTO_TYPE_INT4},
        {"sv_login", PROTO_TYPE_INT4}, {"maxwait", PROTO_TYPE_INT4},
        {"maxwait_us", PROTO_TYPE_INT4}, {"pool_mode", PROTO_TYPE_TEXT},
        {"pinned", PROTO_TYPE_INT4}, /* sluice's own: clients keeping their backend */
        {"waiting_all_pinned", PROTO_TYPE_INT4}, /* sluice's own: cl_waiting while every
                                                    backend is pinned, else 0 */
        {"sluice_prewarm", PROTO_TYPE_TEXT}, /* sluice's own: why min_pool_size waits, if it does */
    };
    double now = worker_now(req->w);
    struct pool_groups pools;
    struct result r;

    if (!collect_groups(req, POOL_GROUP_BY_POOL, &pools))
        return;
    result_begin(&r, req->out, columns, sizeof(columns) / sizeof(columns[0]));
    for (size_t i = 0; i < pools.n_groups; i++) {
        const struct pool_group *group = &pools.groups[i];
        struct pool_counts counts;
        group_counts_of(group, now, &counts);
        uint64_t wait_us = seconds_to_usec(counts.max_wait);
        result_row_begin(&r);
        result_text(&r, group->db_name);
        result_text(&r, group->user_name);
        result_int4(&r, counts.cl_active);
        result_int4(&r, counts.cl_waiting);
        result_int4(&r, 0); /* cancel requests are answered at once, never queued */
        result_int4(&r, 0);
        result_int4(&r, counts.sv_active);
        result_int4(&r, counts.sv_active_cancel);
        result_int4(&r, counts.sv_being_canceled);
        result_int4(&r, counts.sv_idle);
        result_int4(&r, counts.sv_used);
        result_int4(&r, counts.sv_tested);
        result_int4(&r, counts.sv_login);
        result_int4(&r, (long long)(wait_us / 1000000));
        result_int4(&r, (long long)(wait_us % 1000000));
        result_text(&r, config_pool_mode_name(group->pools[0]->mode));
        result_int4(&r, counts.pinned);
        result_int4(&r, counts.waiting_all_pinned);
        result_text(&r, group_prewarm_blocker(group));
        result_row_end(&r);
    }
    pool_groups_free(&pools);
    proto_build_command_complete(req->out, "SHOW");
}

static void put_totals(struct result *r, const struct stat_totals *t)
{
    result_uint(r, t->xact_count);
    result_uint(r, t->query_count);
    result_uint(r, t->bytes_received);
    result_uint(r, t->bytes_sent);
    result_uint(r, seconds_to_usec(t->xact_time));
    result_uint(r, seconds_to_usec(t->query_time));
    result_uint(r, seconds_to_usec(t->wait_time));
}

static void put_averages(struct result *r, const struct stat_averages *avg)
{
    result_uint(r, avg->xact_count);
    result_uint(r, avg->query_count);
    result_uint(r, avg->bytes_received);
    result_uint(r, avg->bytes_sent);
    result_uint(r, avg->xact_time);
    result_uint(r, avg->query_time);
    result_uint(r, avg->wait_time);
}

enum stats_view { STATS_BOTH, STATS_TOTALS_ONLY, STATS_AVERAGES_ONLY };

/* SHOW STATS, STATS_TOTALS and STATS_AVERAGES: one row per database. */
static void show_stats_view(struct request *req, enum stats_view view)
{
    static const struct proto_column both[] = {
        {"database", PROTO_TYPE_TEXT}, {"total_xact_count", PROTO_TYPE_NUMERIC},
        {"total_query_count", PROTO_TYPE_NUMERIC}, {"total_received", PROTO_TYPE_NUMERIC},
        {"total_sent", PROTO_TYPE_NUMERIC}, {"total_xact_time", PROTO_TYPE_NUMERIC},
        {"total_query_time", PROTO_TYPE_NUMERIC}, {"total_wait_time", PROTO_TYPE_NUMERIC},
        {"avg_xact_count", PROTO_TYPE_NUMERIC}, {"avg_query_count", PROTO_TYPE_NUMERIC},
        {"avg_recv", PROTO_TYPE_NUMERIC}, {"avg_sent", PROTO_TYPE_NUMERIC},
        {"avg_xact_time", PROTO_TYPE_NUMERIC}, {"avg_query_time", PROTO_TYPE_NUMERIC},
        {"avg_wait_time", PROTO_TYPE_NUMERIC},
    };
    static const struct proto_column one[] = {
        {"database", PROTO_TYPE_TEXT}, {"xact_count", PROTO_TYPE_NUMERIC},
        {"query_count", PROTO_TYPE_NUMERIC}, {"bytes_received", PROTO_TYPE_NUMERIC},
        {"bytes_sent", PROTO_TYPE_NUMERIC}, {"xact_time", PROTO_TYPE_NUMERIC},
        {"query_time", PROTO_TYPE_NUMERIC}, {"wait_time", PROTO_TYPE_NUMERIC},
    };
    struct pool_groups databases;
    struct result r;

    if (!collect_groups(req, POOL_GROUP_BY_DATABASE, &databases))
        return;
    if (view == STATS_BOTH)
        result_begin(&r, req->out, both, sizeof(both) / sizeof(both[0]));
    else
        result_begin(&r, req->out, one, sizeof(one) / sizeof(one[0]));
    for (size_t i = 0; i < databases.n_groups; i++) {
        const struct pool_group *group = &databases.groups[i];
        struct stat_totals totals;
        struct stat_averages averages;
        group_totals(group, &totals);
        database_averages_of(req->w, group->db_name, &averages);
        result_row_begin(&r);
        result_text(&r, group->db_name);
        if (view != STATS_AVERAGES_ONLY)
            put_totals(&r, &totals);
        if (view != STATS_TOTALS_ONLY)
            put_averages(&r, &averages);
        result_row_end(&r);
    }
    pool_groups_free(&databases);
    proto_build_command_complete(req->out, "SHOW");
}

static void show_stats(struct request *req) { show_stats_view(req, STATS_BOTH); }
static void show_stats_totals(struct request *req) { show_stats_view(req, STATS_TOTALS_ONLY); }
static void show_stats_averages(struct request *req) { show_stats_view(req, STATS_AVERAGES_ONLY); }

static void name_value_row(struct result *r, const char *name, uint64_t value)
{
    result_row_begin(r);
    result_text(r, name);
    result_uint(r, value);
    result_row_end(r);
}

/* SHOW TOTALS: every database's counters summed, and the averages summed likewise. */
static void show_totals(struct request *req)
{
    static const struct proto_column columns[] = {
        {"name", PROTO_TYPE_TEXT}, {"value", PROTO_TYPE_NUMERIC},
    };
    struct stat_totals t;
    struct stat_averages avg;
    struct worker *wk;
    const struct pool *pool;
    struct result r;

    memset(&t, 0, sizeof(t));
    memset(&avg, 0, sizeof(avg));
    WORLD_FOR_EACH_POOL(req->w->world, i, wk, pool)
        add_pool_totals(pool, &t);
    for (size_t i = 0; i < admin_state_of(req->w)->n_averages; i++) {
        const struct stat_averages *one = &admin_state_of(req->w)->averages[i].current;
        avg.xact_count += one->xact_count;
        avg.query_count += one->query_count;
        avg.bytes_received += one->bytes_received;
        avg.bytes_sent += one->bytes_sent;
        avg.xact_time += one->xact_time;
        avg.query_time += one->query_time;
        avg.wait_time += one->wait_time;
    }
    result_begin(&r, req->out, columns, 2);
    name_value_row(&r, "total_xact_count", t.xact_count);
    name_value_row(&r, "total_query_count", t.query_count);
    name_value_row(&r, "total_received", t.bytes_received);
    name_value_row(&r, "total_sent", t.bytes_sent);
    name_value_row(&r, "total_xact_time", seconds_to_usec(t.xact_time));
    name_value_row(&r, "total_query_time", seconds_to_usec(t.query_time));
    name_value_row(&r, "total_wait_time", seconds_to_usec(t.wait_time));
    name_value_row(&r, "avg_xact_count", avg.xact_count);
    name_value_row(&r, "avg_query_count", avg.query_count);
    name_value_row(&r, "avg_recv", avg.bytes_received);
    name_value_row(&r, "avg_sent", avg.bytes_sent);
    name_value_row(&r, "avg_xact_time", avg.xact_time);
    name_value_row(&r, "avg_query_time", avg.query_time);
    name_value_row(&r, "avg_wait_time", avg.wait_time);
    proto_build_command_complete(req->out, "SHOW");
}

/* A database's row; pools: its pools on every worker (NULL: it has none). */
static void database_row(struct request *req, struct result *r, const struct config_database *db,
                         const struct pool_group *pools)
{
    const struct config *cfg = req->w->cfg;
    int servers = 0;
    bool paused = admin_database_paused(req->w, db->name);
    for (size_t i = 0; pools && i < pools->n_pools; i++) {
        servers += pool_server_count(pools->pools[i]);
        paused = paused || pools->pools[i]->paused;
    }
    result_row_begin(r);
    result_text(r, db->name);
    result_text(r, db->host ? db->host : "127.0.0.1");
    result_int4(r, db->port);
    result_text(r, db->dbname ? db->dbname : db->name);
    result_text(r, db->user);
    result_int4(r, config_effective_pool_size(cfg, db));
    result_int4(r, db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size);
    result_int4(r, config_effective_reserve_pool(cfg, db));
    result_text(r, db->pool_mode != POOL_MODE_UNSET ? config_pool_mode_name(db->pool_mode) : NULL);
    result_int4(r, db->max_db_connections);
    result_int4(r, servers);
    result_int4(r, paused ? 1 : 0);
    result_int4(r, admin_database_disabled(req->w, db->name) ? 1 : 0);
    result_row_end(r);
}

static void show_databases(struct request *req)
{
    static const struct proto_column columns[] = {
        {"name", PROTO_TYPE_TEXT}, {"host", PROTO_TYPE_TEXT},
        {"port", PROTO_TYPE_INT4}, {"database", PROTO_TYPE_TEXT},
        {"force_user", PROTO_TYPE_TEXT}, {"pool_size", PROTO_TYPE_INT4},
        {"min_pool_size", PROTO_TYPE_INT4}, {"reserve_pool", PROTO_TYPE_INT4},
        {"pool_mode", PROTO_TYPE_TEXT}, {"max_connections", PROTO_TYPE_INT4},
        {"current_connections", PROTO_TYPE_INT4}, {"paused", PROTO_TYPE_INT4},
        {"disabled", PROTO_TYPE_INT4},
    };
    const struct config *cfg = req->w->cfg;
    struct pool_groups databases;
    struct result r;

    if (!collect_groups(req, POOL_GROUP_BY_DATABASE, &databases))
        return;
    result_begin(&r, req->out, columns, sizeof(columns) / sizeof(columns[0]));
    for (size_t i = 0; i < cfg->n_databases; i++)
        if (&cfg->databases[i] != config_fallback_database(cfg)) /* "*" is no database */
            database_row(req, &r, &cfg->databases[i],
                         pool_groups_find(&databases, cfg->databases[i].name, NULL));
    /* Databases made from "*", listed as PgBouncer lists them, while they have pools; each worker
     * makes its own from "*", all alike. */
    for (size_t i = 0; i < databases.n_groups; i++) {
        const struct pool_group *group = &databases.groups[i];
        const struct worker *owner = group->pools[0]->worker;
        if (autodb_is_auto(owner, group->db_name))
            database_row(req, &r, autodb_find(owner, group->db_name), group);
    }
    pool_groups_free(&databases);
    /* The console itself, as PgBouncer lists its own "pgbouncer" database. */
    result_row_begin(&r);
    result_text(&r, CONSOLE_NAME);
    result_text(&r, NULL);
    result_int4(&r, cfg->listen_port);
    result_text(&r, CONSOLE_NAME);
    result_text(&r, NULL);
    result_int4(&r, 0);
    result_int4(&r, 0);
    result_int4(&r, 0);
    result_text(&r, NULL);
    result_int4(&r, 0);
    result_int4(&r, 0);
    result_int4(&r, 0);
    result_int4(&r, 0);
    result_row_end(&r);
    proto_build_command_complete(req->out, "SHOW");
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every user sluice knows of: auth_file, [users], what auth_query looked up and the backend users
 * of the pools, on every worker; sorted. */
static const char **collect_user_names(struct worker *w, size_t *n_out)
{
    size_t cap = w->cfg->n_users + (w->users ? w->users->n_entries : 0);
    struct worker *wk;
    const struct pool *pool;
    WORLD_FOR_EACH_WORKER(w->world, i, wk)
        cap += auth_query_user_names(wk->auth_query, NULL, 0);
    WORLD_FOR_EACH_POOL(w->world, i, wk, pool)
        cap++;
    const char **names = calloc(cap ? cap : 1, sizeof(*names));
    size_t n = 0;
    if (!names)
        return NULL;
    WORLD_FOR_EACH_WORKER(w->world, i, wk)
        n += auth_query_user_names(wk->auth_query, names + n, cap - n);
    for (size_t i = 0; w->users && i < w->users->n_entries; i++)
        names[n++] = w->users->entries[i].name;
    for (size_t i = 0; i < w->cfg->n_users; i++)
        names[n++] = w->cfg->users[i].name;
    WORLD_FOR_EACH_POOL(w->world, i, wk, pool)
        names[n++] = pool->user_name;
    qsort(names, n, sizeof(*names), compare_names);
    size_t unique = 0;
    for (size_t i = 0; i < n; i++)
        if (unique == 0 || strcmp(names[unique - 1], names[i]) != 0)
            names[unique++] = names[i];
    *n_out = unique;
    return names;
}

/* What every worker's auth_query knows of a user: look-ups and hits summed, the latest answer.
 * false if none looked it up. */
static bool world_user_info(struct worker *w, const char *name, struct auth_query_user_info *info)
{
    struct auth_query_user_info one;
    struct worker *wk;
    bool looked_up = false;

    memset(info, 0, sizeof(*info));
    WORLD_FOR_EACH_WORKER(w->world, i, wk) {
        if (!auth_query_user_info(wk->auth_query, name, &one))
            continue;
        looked_up = true;
        info->lookups += one.lookups;
        info->cache_hits += one.cache_hits;
        if (one.cached_since > info->cached_since) {
            info->cached_since = one.cached_since;
            info->found = one.found;
        }
    }
    return looked_up;
}

/* SHOW USERS' sluice columns: auth_file, or what auth_query found (or not) and when. */
static void put_user_secret_source(struct result *r, struct worker *w, const char *name)
{
    struct auth_query_user_info info;
    char since[64];
    bool looked_up = world_user_info(w, name, &info);

    if (w->users && userlist_find(w->users, name))
        result_text(r, "auth_file");
    else if (looked_up && info.cached_since > 0)
        result_text(r, info.found ? "auth_query" : "auth_query: not found");
    else
        result_text(r, looked_up ? "auth_query: not answered" : NULL);
    format_time(info.cached_since, since, sizeof(since));
    result_text(r, info.cached_since > 0 ? since : NULL);
    result_uint(r, info.lookups);
    result_uint(r, info.cache_hits);
}

static void show_users(struct request *req)
{
    static const struct proto_column columns[] = {
        {"name", PROTO_TYPE_TEXT}, {"pool_mode", PROTO_TYPE_TEXT},
        /* sluice's own: where the secret came from, and auth_query's work for the user */
        {"sluice_secret_source", PROTO_TYPE_TEXT}, {"sluice_cached_since", PROTO_TYPE_TEXT},
        {"sluice_lookups", PROTO_TYPE_INT8}, {"sluice_cache_hits", PROTO_TYPE_INT8},
    };
    size_t n = 0;
    const char **names = collect_user_names(req->w, &n);
    struct result r;

    if (!names) {
        reply_error(req, "53200", NULL, "out of memory");
        return;
    }
    result_begin(&r, req->out, columns, sizeof(columns) / sizeof(columns[0]));
    for (size_t i = 0; i < n; i++) {
        const struct config_user *user = config_find_user(req->w->cfg, names[i]);
        result_row_begin(&r);
        result_text(&r, names[i]);
        result_text(&r, user && user->pool_mode != POOL_MODE_UNSET ? config_pool_mode_name(user->pool_mode)
                                                                  : NULL);
        put_user_secret_source(&r, req->w, names[i]);
        result_row_end(&r);
    }
    free(names);
    proto_build_command_complete(req->out, "SHOW");
}

/* SHOW CLIENTS and SHOW SERVERS share their columns. */
static const struct proto_column connection_columns[] = {
    {"type", PROTO_TYPE_TEXT}, {"user", PROTO_TYPE_TEXT}, {"database", PROTO_TYPE_TEXT},
    {"state", PROTO_TYPE_TEXT}, {"addr", PROTO_TYPE_TEXT}, {"port", PROTO_TYPE_INT4},
    {"local_addr", PROTO_TYPE_TEXT}, {"local_port", PROTO_TYPE_INT4},
    {"connect_time", PROTO_TYPE_TEXT}, {"request_time", PROTO_TYPE_TEXT},
    {"wait", PROTO_TYPE_INT4}, {"wait_us", PROTO_TYPE_INT4},
    {"close_needed", PROTO_TYPE_INT4}, {"ptr", PROTO_TYPE_TEXT}, {"link", PROTO_TYPE_TEXT},
    {"remote_pid", PROTO_TYPE_INT4}, {"tls", PROTO_TYPE_TEXT},
    {"application_name", PROTO_TYPE_TEXT},
    {"sluice_state", PROTO_TYPE_TEXT}, /* sluice's own finer state */
    {"worker", PROTO_TYPE_INT4},       /* sluice's own: the worker thread that serves it */
};
#define N_CONNECTION_COLUMNS (sizeof(connection_columns) / sizeof(connection_columns[0]))

static void put_local_address(struct result *r, const struct conn *conn, int listen_port)
{
    char addr[64];
    int port;
    socket_address(conn, false, addr, sizeof(addr), &port);
    if (strcmp(addr, "unix") == 0)
        port = listen_port;
    result_text(r, addr);
    result_int4(r, port);
}

static void put_wait(struct result *r, double seconds)
{
    uint64_t usec = seconds_to_usec(seconds);
    result_int4(r, (long long)(usec / 1000000));
    result_int4(r, (long long)(usec % 1000000));
}

static void client_row(struct request *req, struct result *r, struct client *c, double now)
{
    char text[128], ptr[32], link[32];
    const char *app = param_set_get(&c->params, "application_name");
    bool waiting = c->state == CLIENT_WAITING && !c->is_admin;

    snprintf(ptr, sizeof(ptr), "C-%llu", (unsigned long long)c->id);
    if (c->server)
        snprintf(link, sizeof(link), "S-%llu", (unsigned long long)c->server->id);
    result_row_begin(r);
    result_text(r, "C");
    result_text(r, c->user);
    result_text(r, c->database);
    result_text(r, client_state_name(c));
    result_text(r, client_address(c).text);
    result_int4(r, c->port);
    put_local_address(r, &c->conn, req->w->cfg->listen_port);
    format_time(c->connect_time, text, sizeof(text));
    result_text(r, text);
    format_time(c->query_start > 0 ? c->query_start : c->connect_time, text, sizeof(text));
    result_text(r, text);
    put_wait(r, waiting ? now - c->wait_start : 0);
    result_int4(r, 0); /* clients are never marked to close later */
    result_text(r, ptr);
    result_text(r, c->server ? link : NULL);
    result_int4(r, c->is_unix ? unix_peer_pid(&c->conn) : 0);
    tls_text(&c->conn, c->tls, text, sizeof(text));
    result_text(r, text);
    result_text(r, app ? app : "");
    result_text(r, client_detail_name(c));
    result_int4(r, c->worker->index);
    result_row_end(r);
}

static void show_clients(struct request *req)
{
    double now = worker_now(req->w);
    struct worker *wk;
    struct client *c;
    struct result r;

    result_begin(&r, req->out, connection_columns, N_CONNECTION_COLUMNS);
    WORLD_FOR_EACH_WORKER(req->w->world, i, wk)
        TAILQ_FOREACH(c, &wk->clients, link)
            client_row(req, &r, c, now);
    proto_build_command_complete(req->out, "SHOW");
}

static void server_row(struct result *r, struct server *s, const struct worker *owner)
{
    char text[128], ptr[32], link[32];
    const struct pool *pool = s->pool;
    const char *app = param_set_get(&s->params, "application_name");
    int port;

    snprintf(ptr, sizeof(ptr), "S-%llu", (unsigned long long)s->id);
    if (s->client)
        snprintf(link, sizeof(link), "C-%llu", (unsigned long long)s->client->id);
    result_row_begin(r);
    result_text(r, "S");
    result_text(r, pool->user_name);
    result_text(r, pool->db_name);
    result_text(r, server_state_name(s));
    if (!socket_address(&s->conn, true, text, sizeof(text), &port)) {
        snprintf(text, sizeof(text), "%s", s->host[0] == '/' ? "unix" : s->host);
        port = s->port;
    }
    if (strcmp(text, "unix") == 0)
        port = s->port;
    result_text(r, text);
    result_int4(r, port);
    put_local_address(r, &s->conn, 0);
    format_time(s->connect_time, text, sizeof(text));
    result_text(r, text);
    format_time(s->last_used > 0 ? s->last_used : s->connect_time, text, sizeof(text));
    result_text(r, text);
    put_wait(r, 0);
    result_int4(r, s->close_needed ? 1 : 0);
    result_text(r, ptr);
    result_text(r, s->client ? link : NULL);
    result_int4(r, (long long)s->backend_pid);
    tls_text(&s->conn, s->tls, text, sizeof(text));
    result_text(r, text);
    result_text(r, app ? app : "");
    result_text(r, server_detail_name(s));
    result_int4(r, owner->index);
    result_row_end(r);
}

static void show_servers(struct request *req)
{
    struct worker *wk;
    struct pool *pool;
    struct server *s;
    struct result r;

    result_begin(&r, req->out, connection_columns, N_CONNECTION_COLUMNS);
    WORLD_FOR_EACH_POOL(req->w->world, w_index, wk, pool) {
        struct server_list *lists[] = { &pool->used_servers, &pool->idle_servers, &pool->new_servers };
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
            TAILQ_FOREACH(s, lists[i], link)
                server_row(&r, s, wk);
    }
    proto_build_command_complete(req->out, "SHOW");
}

static size_t count_clients(const struct client_list *list)
{
    const struct client *c;
    size_t n = 0;
    TAILQ_FOREACH(c, list, link)
        n++;
    return n;
}

static size_t count_logins(const struct client_login_list *list)
{
    const struct client_login *login;
    size_t n = 0;
    TAILQ_FOREACH(login, list, link)
        n++;
    return n;
}

/* Listed databases ("*" is none) and the ones made from "*" (SHOW DATABASES' rows). */
static size_t count_databases(const struct worker *w, const struct pool_groups *databases)
{
    size_t n = w->cfg->n_databases - (config_fallback_database(w->cfg) ? 1 : 0);
    for (size_t i = 0; i < databases->n_groups; i++)
        if (autodb_is_auto(databases->groups[i].pools[0]->worker, databases->groups[i].db_name))
            n++;
    return n;
}

static void show_lists(struct request *req)
{
    static const struct proto_column columns[] = {
        {"list", PROTO_TYPE_TEXT}, {"items", PROTO_TYPE_INT4},
    };
    struct worker *w = req->w, *wk;
    struct pool_groups pools, databases;
    size_t n_users = 0, n_clients = 0, n_login_clients = 0, n_servers = 0;
    struct result r;

    if (!collect_groups(req, POOL_GROUP_BY_POOL, &pools))
        return;
    if (!collect_groups(req, POOL_GROUP_BY_DATABASE, &databases)) {
        pool_groups_free(&pools);
        return;
    }
    WORLD_FOR_EACH_WORKER(w->world, i, wk) {
        n_clients += count_clients(&wk->clients);
        n_login_clients += count_logins(&wk->login_clients);
        n_servers += wk->n_servers;
    }
    const char **names = collect_user_names(w, &n_users);
    free(names);
    result_begin(&r, req->out, columns, 2);
    /* PgBouncer's rows; sluice frees objects at once and resolves names through evdns: 0. */
    const struct {
        const char *name;
        size_t items;
    } rows[] = {
        {"databases", count_databases(w, &databases)},
        {"users", n_users},
        {"pools", pools.n_groups},
        {"free_clients", 0},
        {"used_clients", n_clients},
        {"login_clients", n_login_clients},
        {"free_servers", 0},
        {"used_servers", n_servers},
        {"dns_names", 0},
        {"dns_zones", 0},
        {"dns_queries", 0},
        {"dns_pending", 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        result_row_begin(&r);
        result_text(&r, rows[i].name);
        result_int4(&r, (long long)rows[i].items);
        result_row_end(&r);
    }
    pool_groups_free(&pools);
    pool_groups_free(&databases);
    proto_build_command_complete(req->out, "SHOW");
}

/* free: places kept for later objects (the workers' client caches); memtotal counts them too. */
static void mem_row(struct result *r, const char *name, size_t size, size_t used, size_t free)
{
    result_row_begin(r);
    result_text(r, name);
    result_int4(r, (long long)size);
    result_int4(r, (long long)used);
    result_int4(r, (long long)free);
    result_int4(r, (long long)(size * (used + free)));
    result_row_end(r);
}

static size_t buffered_bytes(const struct conn *conn)
{
    if (!conn->open)
        return 0;
    return conn_input_length(conn) + (conn->out ? evbuffer_get_length(conn->out) : 0);
}

/*
 * SHOW MEM: PgBouncer lists its slab caches. sluice allocates each object on its own and frees it
 * when it closes, so "free" is always 0. client_buffers: the clients that hold their input and
 * output buffers (an idle one gives them up), size being one client's pair of empty buffers as
 * malloc made them; the last row is what sits in connection buffers now.
 */
static void show_mem(struct request *req)
{
    static const struct proto_column columns[] = {
        {"name", PROTO_TYPE_TEXT}, {"size", PROTO_TYPE_INT4}, {"used", PROTO_TYPE_INT4},
        {"free", PROTO_TYPE_INT4}, {"memtotal", PROTO_TYPE_INT4},
    };
    struct worker *wk;
    struct client *c;
    struct pool *pool;
    struct server *s;
    size_t n_servers = 0, n_pools = 0, buffered = 0;
    size_t n_holding = 0, pair_size = 0, n_places = 0, n_cached = 0;
    struct result r;

    WORLD_FOR_EACH_WORKER(req->w->world, i, wk) {
        n_places += wk->client_cache.n_places; /* clients closed and not yet freed hold theirs */
        n_cached += wk->client_cache.n_unused;
        TAILQ_FOREACH(c, &wk->clients, link) {
            buffered += buffered_bytes(&c->conn);
            if (c->conn.open && c->conn.in) {
                n_holding++;
                pair_size = malloc_usable_size(c->conn.in) + malloc_usable_size(c->conn.out);
            }
        }
    }
    WORLD_FOR_EACH_POOL(req->w->world, w_index, wk, pool) {
        struct server_list *lists[] = { &pool->used_servers, &pool->idle_servers, &pool->new_servers };
        n_pools++;
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
            TAILQ_FOREACH(s, lists[i], link) {
                n_servers++;
                buffered += buffered_bytes(&s->conn);
            }
    }
    result_begin(&r, req->out, columns, sizeof(columns) / sizeof(columns[0]));
    mem_row(&r, "client_cache", sizeof(struct client), n_places - n_cached, n_cached);
    mem_row(&r, "server_cache", sizeof(struct server), n_servers, 0);
    mem_row(&r, "pool_cache", sizeof(struct pool), n_pools, 0);
    mem_row(&r, "client_buffers", pair_size, n_holding, 0);
    mem_row(&r, "iobuf_bytes", 1, buffered, 0);
    proto_build_command_complete(req->out, "SHOW");
}

static void show_config(struct request *req)
{
    static const struct proto_column columns[] = {
        {"key", PROTO_TYPE_TEXT}, {"value", PROTO_TYPE_TEXT}, {"default", PROTO_TYPE_TEXT},
        {"changeable", PROTO_TYPE_TEXT},
    };
    char value[1024], default_value[1024];
    struct result r;

    result_begin(&r, req->out, columns, sizeof(columns) / sizeof(columns[0]));
    for (size_t i = 0; i < config_setting_count(); i++) {
        const char *name = config_setting_name(i);
        config_format_setting(req->w->cfg, i, value, sizeof(value));
        config_format_setting_default(i, default_value, sizeof(default_value));
        result_row_begin(&r);
        result_text(&r, name);
        result_text(&r, value);
        result_text(&r, default_value);
        result_text(&r, setting_changeable(name) ? "yes" : "no");
        result_row_end(&r);
    }
    proto_build_command_complete(req->out, "SHOW");
}

/* SHOW PINNED: clients holding a backend because of session state. */
static void show_pinned(struct request *req)
{
    static const struct proto_column columns[] = {
        {"client", PROTO_TYPE_TEXT}, {"database", PROTO_TYPE_TEXT}, {"user", PROTO_TYPE_TEXT},
        {"since", PROTO_TYPE_TEXT}, {"reason", PROTO_TYPE_TEXT}, {"statement", PROTO_TYPE_TEXT},
    };
    struct worker *wk;
    const struct client *c;
    char client_name[32], since[64];
    struct result r;

    result_begin(&r, req->out, columns, sizeof(columns) / sizeof(columns[0]));
    WORLD_FOR_EACH_WORKER(req->w->world, i, wk) TAILQ_FOREACH(c, &wk->clients, link) {
        if (!c->pinned)
            continue;
        snprintf(client_name, sizeof(client_name), "C-%llu", (unsigned long long)c->id);
        format_time(c->pin_time, since, sizeof(since));
        result_row_begin(&r);
        result_text(&r, client_name);
        result_text(&r, c->database);
        result_text(&r, c->user);
        result_text(&r, since);
        result_text(&r, pin_reason_name((enum pin_reason)c->pin_reason));
        result_text(&r, c->pin_statement); /* NULL if it could not be kept (out of memory) */
        result_row_end(&r);
    }
    proto_build_command_complete(req->out, "SHOW");
}

static void auth_row(struct result *r, const char *event, const char *method, const char *reason,
                     uint64_t count)
{
    result_row_begin(r);
    result_text(r, event);
    result_text(r, method);
    result_text(r, reason);
    result_uint(r, count);
    result_row_end(r);
}

/* SHOW AUTH: logins and their failures, token refusals by the check that refused them. */
static void show_auth(struct request *req)
{
    static const struct proto_column columns[] = {
        {"event", PROTO_TYPE_TEXT}, {"method", PROTO_TYPE_TEXT}, {"reason", PROTO_TYPE_TEXT},
        {"count", PROTO_TYPE_INT8},
    };
    struct worker_stats sum;
    const struct worker_stats *st = &sum;
    size_t n_reasons = sizeof(st->token_failures) / sizeof(st->token_failures[0]);
    uint64_t token_failed = 0;
    struct result r;

    world_stats_sum(req->w->world, &sum);
    for (size_t i = 0; i < n_reasons; i++)
        token_failed += st->token_failures[i];
    result_begin(&r, req->out, columns, sizeof(columns) / sizeof(columns[0]));
    auth_row(&r, "login_ok", "all", NULL, st->logins_ok);
    auth_row(&r, "login_failed", "all", NULL, st->logins_failed);
    for (int m = AUTH_TYPE_TRUST; m <= AUTH_TYPE_TOKEN; m++) {
        const char *method = config_auth_type_name((enum auth_type)m);
        auth_row(&r, "login_ok", method, NULL, st->logins_ok_by_method[m]);
        auth_row(&r, "login_failed", method, NULL, st->logins_failed_by_method[m]);
    }
    auth_row(&r, "login_ok", "over_tls", NULL, st->logins_ok_tls);
    auth_row(&r, "login_failed", "over_tls", NULL, st->logins_failed_tls);
    auth_row(&r, "login_ok", "token", NULL, st->token_logins_ok);
    auth_row(&r, "login_failed", "token", NULL, token_failed);
    for (size_t i = TOKEN_FAIL_OVERSIZED; i <= TOKEN_FAIL_OUT_OF_MEMORY && i < n_reasons; i++)
        auth_row(&r, "token_failure", "token", token_failure_message((enum token_failure)i),
                 st->token_failures[i]);
    auth_row(&r, "tls_handshake_ok", "tls", NULL, st->tls_handshakes);
    auth_row(&r, "tls_handshake_failed", "tls", NULL, st->tls_handshake_failures);
    proto_build_command_complete(req->out, "SHOW");
}

/* SHOW STATE (PgBouncer 1.22): which of active, paused (PAUSE of all) and suspended holds. */
static void show_state(struct request *req)
{
    static const struct proto_column columns[] = {
        {"key", PROTO_TYPE_TEXT}, {"value", PROTO_TYPE_TEXT},
    };
    bool pause_all = admin_pause_all(admin_state_of(req->w));
    const struct {
        const char *key;
        bool holds;
    } rows[] = {
        {"active", !pause_all && !req->w->suspended},
        {"paused", pause_all && !req->w->suspended},
        {"suspended", req->w->suspended},
    };
    struct result r;

    result_begin(&r, req->out, columns, 2);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        result_row_begin(&r);
        result_text(&r, rows[i].key);
        result_text(&r, rows[i].holds ? "yes" : "no");
        result_row_end(&r);
    }
    proto_build_command_complete(req->out, "SHOW");
}

/* A host to resolve: neither a unix socket directory nor an IP address. */
static bool host_is_name(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return host[0] != '/' && inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1;
}

/* Is this pool the first of the process with its host? (one row per host name) */
static bool first_pool_of_host(struct world *world, const struct pool *pool)
{
    struct worker *wk;
    const struct pool *other;
    WORLD_FOR_EACH_POOL(world, i, wk, other) {
        if (other == pool)
            return true;
        if (strcmp(other->host, pool->host) == 0)
            return false;
    }
    return true;
}

/* The addresses its connected backends reached for one host name, comma-separated, no repeats. */
static void host_addresses(struct world *world, const char *host, char *buf, size_t len)
{
    struct worker *wk;
    const struct pool *pool;
    const struct server *s;
    size_t used = 0;

    buf[0] = '\0';
    WORLD_FOR_EACH_POOL(world, w_index, wk, pool) {
        if (strcmp(pool->host, host) != 0)
            continue;
        const struct server_list *lists[] = { &pool->idle_servers, &pool->used_servers };
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
            TAILQ_FOREACH(s, lists[i], link) {
                char addr[64];
                int port;
                if (!socket_address(&s->conn, true, addr, sizeof(addr), &port) || strstr(buf, addr))
                    continue;
                int n = snprintf(buf + used, len - used, "%s%s", used ? "," : "", addr);
                if (n < 0 || (size_t)n >= len - used)
                    return;
                used += (size_t)n;
            }
        }
    }
}

/*
 * SHOW DNS_HOSTS: PgBouncer lists its DNS cache. sluice keeps none (each new backend resolves its
 * host afresh through evdns), so it lists the host names its pools connect to: ttl is 0 (nothing
 * cached), addrs the addresses its connected backends reached.
 */
static void show_dns_hosts(struct request *req)
{
    static const struct proto_column columns[] = {
        {"hostname", PROTO_TYPE_TEXT}, {"ttl", PROTO_TYPE_INT8}, {"addrs", PROTO_TYPE_TEXT},
    };
    struct worker *wk;
    const struct pool *pool;
    char addrs[1024];
    struct result r;

    result_begin(&r, req->out, columns, 3);
    WORLD_FOR_EACH_POOL(req->w->world, i, wk, pool) {
        if (!host_is_name(pool->host) || !first_pool_of_host(req->w->world, pool))
            continue;
        host_addresses(req->w->world, pool->host, addrs, sizeof(addrs));
        result_row_begin(&r);
        result_text(&r, pool->host);
        result_int(&r, 0);
        result_text(&r, addrs);
        result_row_end(&r);
    }
    proto_build_command_complete(req->out, "SHOW");
}

/* SHOW DNS_ZONES: zones exist only with c-ares's zone checks; like PgBouncer without them, none. */
static void show_dns_zones(struct request *req)
{
    static const struct proto_column columns[] = {
        {"zonename", PROTO_TYPE_TEXT}, {"serial", PROTO_TYPE_INT8}, {"count", PROTO_TYPE_INT4},
    };
    struct result r;

    result_begin(&r, req->out, columns, 3);
    proto_build_command_complete(req->out, "SHOW");
}

/* SHOW WORKERS (sluice's own): one row per worker thread: what it serves and how busy it is. */
static void show_workers(struct request *req)
{
    static const struct proto_column columns[] = {
        {"worker", PROTO_TYPE_INT4}, {"clients", PROTO_TYPE_INT4}, {"servers", PROTO_TYPE_INT4},
        {"loop_iterations", PROTO_TYPE_INT8}, {"cpu_seconds", PROTO_TYPE_NUMERIC},
        {"handoffs_in", PROTO_TYPE_INT8}, {"handoffs_out", PROTO_TYPE_INT8},
    };
    struct worker *wk;
    struct result r;
    char cpu[32];

    result_begin(&r, req->out, columns, sizeof(columns) / sizeof(columns[0]));
    WORLD_FOR_EACH_WORKER(req->w->world, i, wk) {
        struct worker_figures f;
        worker_figures_of(wk, &f);
        snprintf(cpu, sizeof(cpu), "%.6f", f.cpu_seconds);
        result_row_begin(&r);
        result_int4(&r, wk->index);
        result_int4(&r, (long long)f.clients);
        result_int4(&r, (long long)f.servers);
        result_uint(&r, f.loop_iterations);
        result_text(&r, f.cpu_seconds >= 0 ? cpu : NULL);
        result_uint(&r, f.handoffs_in);
        result_uint(&r, f.handoffs_out);
        result_row_end(&r);
    }
    proto_build_command_complete(req->out, "SHOW");
}

struct show_command {
    const char *subject;
    void (*run)(struct request *req);
};

static const struct show_command show_commands[] = {
    {"HELP", show_help},
    {"POOLS", show_pools},
    {"STATS", show_stats},
    {"STATS_TOTALS", show_stats_totals},
    {"STATS_AVERAGES", show_stats_averages},
    {"TOTALS", show_totals},
    {"DATABASES", show_databases},
    {"USERS", show_users},
    {"CLIENTS", show_clients},
    {"SERVERS", show_servers},
    {"LISTS", show_lists},
    {"CONFIG", show_config},
    {"MEM", show_mem},
    {"VERSION", show_version},
    {"PINNED", show_pinned},
    {"AUTH", show_auth},
    {"STATE", show_state},
    {"DNS_HOSTS", show_dns_hosts},
    {"DNS_ZONES", show_dns_zones},
    {"WORKERS", show_workers},
};

static bool run_show(struct request *req)
{
    if (req->cmd.n_tokens != 2) {
        reply_error(req, "42601", "SHOW HELP lists what SHOW can show.", "%s",
                    req->cmd.n_tokens < 2 ? "SHOW needs a subject" : "SHOW takes one subject");
        return true;
    }
    for (size_t i = 0; i < sizeof(show_commands) / sizeof(show_commands[0]); i++) {
        if (strcasecmp(arg(req, 1), show_commands[i].subject) == 0) {
            show_commands[i].run(req);
            return true;
        }
    }
    reply_unknown_command(req);
    return true;
}

static bool run_help(struct request *req)
{
    if (req->cmd.n_tokens != 1) {
        reply_unknown_command(req);
        return true;
    }
    show_help(req);
    return true;
}

/* ---- control commands ---- */

/* A listed database, or one made from "*" on any worker; NULL if neither. */
static const struct config_database *find_database(struct worker *w, const char *db_name)
{
    struct worker *wk;
    WORLD_FOR_EACH_WORKER(w->world, i, wk) {
        const struct config_database *db = autodb_find(wk, db_name);
        if (db)
            return db;
    }
    return NULL;
}

/* The database argument of PAUSE, RESUME, RECONNECT, KILL, WAIT_CLOSE: exists and is no console. */
static bool check_database_arg(struct request *req, const char *command, const char *db_name)
{
    if (is_console_name(db_name) && !find_database(req->w, db_name)) {
        reply_error(req, "55000", NULL, "%s cannot be applied to the admin console", command);
        return false;
    }
    if (!find_database(req->w, db_name)) {
        reply_error(req, "3D000", "SHOW DATABASES lists the databases.",
                    "database \"%s\" does not exist", db_name);
        return false;
    }
    return true;
}

/* Reads "COMMAND [db]"; false (error written) if the arguments are wrong. */
static bool optional_database(struct request *req, const char *command, const char **db_name)
{
    *db_name = NULL;
    if (req->cmd.n_tokens > 2) {
        reply_error(req, "42601", NULL, "%s takes at most one database name", command);
        return false;
    }
    if (req->cmd.n_tokens == 1)
        return true;
    *db_name = arg(req, 1);
    return check_database_arg(req, command, *db_name);
}

static bool pool_matches(const struct pool *pool, const char *db_name)
{
    return !db_name || strcmp(pool->db_name, db_name) == 0;
}

/* No pool of the database (NULL: any) on any worker has a backend linked to a client. */
static bool pools_quiet(struct world *world, const char *db_name)
{
    struct worker *wk;
    const struct pool *pool;
    WORLD_FOR_EACH_POOL(world, i, wk, pool)
        if (pool_matches(pool, db_name) && !pool_is_quiet(pool))
            return false;
    return true;
}

static bool list_has_backend_up_to(const struct server_list *list, uint64_t id_limit)
{
    const struct server *s;
    TAILQ_FOREACH(s, list, link)
        if (s->id <= id_limit)
            return true;
    return false;
}

static bool pools_have_backend_up_to(struct world *world, const char *db_name, uint64_t id_limit)
{
    struct worker *wk;
    const struct pool *pool;
    WORLD_FOR_EACH_POOL(world, i, wk, pool) {
        if (!pool_matches(pool, db_name))
            continue;
        if (list_has_backend_up_to(&pool->idle_servers, id_limit) ||
            list_has_backend_up_to(&pool->used_servers, id_limit) ||
            list_has_backend_up_to(&pool->new_servers, id_limit))
            return true;
    }
    return false;
}

static bool defer_reply(struct request *req, enum deferred_kind kind, const char *db_name,
                        uint64_t id_limit)
{
    struct admin_state *a = admin_state_of(req->w);
    struct deferred_reply *d = calloc(1, sizeof(*d));
    if (!d || (db_name && !(d->db_name = strdup(db_name)))) {
        free(d);
        reply_error(req, "53200", NULL, "out of memory");
        return true;
    }
    d->client = req->c;
    d->worker = req->w;
    d->kind = kind;
    d->id_limit = id_limit;
    d->since = worker_now(req->w);
    pthread_mutex_lock(&a->lock);
    d->next = a->deferred;
    a->deferred = d;
    pthread_mutex_unlock(&a->lock);
    return false;
}

/* What PAUSE, RESUME, RECONNECT, WAIT_CLOSE and KILL do to each pool of the database (NULL: every
 * pool), on every worker. */
enum pool_action { ACTION_PAUSE, ACTION_RESUME, ACTION_RECONNECT, ACTION_KILL };

static void act_on_pools(struct world *world, const char *db_name, enum pool_action action,
                         const char *reason)
{
    struct worker *wk;
    struct pool *pool;
    WORLD_FOR_EACH_POOL(world, i, wk, pool) {
        if (!pool_matches(pool, db_name))
            continue;
        switch (action) {
        case ACTION_PAUSE:
            pool_pause(pool);
            break;
        case ACTION_RESUME:
            pool_resume(pool);
            break;
        case ACTION_RECONNECT:
            pool_reconnect(pool, reason);
            break;
        case ACTION_KILL:
            pool_pause(pool);
            pool_kill(pool, reason);
            break;
        }
    }
}

static bool run_pause(struct request *req)
{
    struct admin_state *a = admin_state_of(req->w);
    const char *db_name;

    if (!optional_database(req, "PAUSE", &db_name))
        return true;
    if (db_name) {
        if (admin_names_add(a, &a->paused, db_name) != 0) {
            reply_error(req, "53200", NULL, "out of memory");
            return true;
        }
    } else {
        pthread_mutex_lock(&a->lock);
        a->pause_all = true;
        pthread_mutex_unlock(&a->lock);
    }
    act_on_pools(req->w->world, db_name, ACTION_PAUSE, NULL);
    log_info("C-%llu: PAUSE %s by %s", (unsigned long long)req->c->id, db_name ? db_name : "(all)",
             req->c->user);
    if (pools_quiet(req->w->world, db_name)) {
        proto_build_command_complete(req->out, "PAUSE");
        return true;
    }
    return defer_reply(req, DEFERRED_PAUSE, db_name, 0);
}

/* ---- SUSPEND: every socket but the consoles' stands still until RESUME ---- */

static void suspend_worker_connections(struct worker *w, bool suspended)
{
    struct client *c;
    struct pool *pool;
    struct server *s;

    w->suspended = suspended;
    listener_suspend_all(w, suspended);
    TAILQ_FOREACH(c, &w->clients, link)
        if (!c->is_admin)
            conn_suspend(&c->conn, suspended);
    TAILQ_FOREACH(pool, &w->pools, link) {
        struct server_list *lists[] = { &pool->used_servers, &pool->idle_servers, &pool->new_servers };
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
            TAILQ_FOREACH(s, lists[i], link)
                conn_suspend(&s->conn, suspended);
    }
}

/* Every worker's listeners and connections (the consoles' excepted) stop, or go on. */
static void suspend_connections(struct world *world, bool suspended)
{
    struct worker *wk;
    WORLD_FOR_EACH_WORKER(world, i, wk)
        suspend_worker_connections(wk, suspended);
}

/* Has every suspended connection of the worker written all its output? With close_laggards,
 * closes the ones that have not instead (the SUSPEND_FLUSH_SECONDS bound). */
static bool worker_output_flushed(struct worker *w, bool close_laggards)
{
    struct client *c, *next_client;
    struct pool *pool;
    struct server *s, *next_server;
    bool flushed = true;

    for (c = TAILQ_FIRST(&w->clients); c; c = next_client) {
        next_client = TAILQ_NEXT(c, link);
        if (c->is_admin || conn_output_flushed(&c->conn))
            continue;
        flushed = false;
        if (close_laggards)
            client_close(c, "SUSPEND: its output was not read in time");
    }
    TAILQ_FOREACH(pool, &w->pools, link) {
        struct server_list *lists[] = { &pool->used_servers, &pool->idle_servers, &pool->new_servers };
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
            for (s = TAILQ_FIRST(lists[i]); s; s = next_server) {
                next_server = TAILQ_NEXT(s, link);
                if (conn_output_flushed(&s->conn))
                    continue;
                flushed = false;
                if (close_laggards)
                    server_close(s, "SUSPEND: its output was not read in time");
            }
        }
    }
    return flushed;
}

static bool suspended_output_flushed(struct world *world, bool close_laggards)
{
    struct worker *wk;
    bool flushed = true;
    WORLD_FOR_EACH_WORKER(world, i, wk)
        flushed = worker_output_flushed(wk, close_laggards) && flushed;
    return flushed;
}

static bool run_suspend(struct request *req)
{
    struct admin_state *a = admin_state_of(req->w);

    if (req->cmd.n_tokens != 1) {
        reply_error(req, "42601", NULL, "SUSPEND takes no argument");
        return true;
    }
    pthread_mutex_lock(&a->lock);
    bool pause_all = a->pause_all, some_paused = a->paused.n > 0;
    pthread_mutex_unlock(&a->lock);
    if (req->w->suspended || pause_all) {
        reply_error(req, "55000", "RESUME first.", "already suspended/paused");
        return true;
    }
    if (some_paused) {
        reply_error(req, "55000", "RESUME the paused databases first.",
                    "cannot suspend with paused databases");
        return true;
    }
    log_info("C-%llu: SUSPEND by %s", (unsigned long long)req->c->id, req->c->user);
    suspend_connections(req->w->world, true);
    if (suspended_output_flushed(req->w->world, false)) {
        proto_build_command_complete(req->out, "SUSPEND");
        return true;
    }
    return defer_reply(req, DEFERRED_SUSPEND, NULL, 0);
}

static bool run_resume(struct request *req)
{
    struct admin_state *a = admin_state_of(req->w);
    const char *db_name;

    if (!optional_database(req, "RESUME", &db_name))
        return true;
    if (req->w->suspended) {
        if (db_name) {
            reply_error(req, "55000", "RESUME without a database name ends SUSPEND.",
                        "the pooler is suspended: \"%s\" cannot be resumed alone", db_name);
            return true;
        }
        suspend_connections(req->w->world, false);
        log_info("C-%llu: RESUME (after SUSPEND) by %s", (unsigned long long)req->c->id, req->c->user);
        proto_build_command_complete(req->out, "RESUME");
        return true;
    }
    if (db_name && admin_pause_all(a)) {
        reply_error(req, "55000", "RESUME without a database name resumes them all.",
                    "every database is paused (PAUSE without a name): \"%s\" cannot be resumed alone",
                    db_name);
        return true;
    }
    pthread_mutex_lock(&a->lock);
    if (db_name) {
        db_names_remove(&a->paused, db_name);
    } else {
        a->pause_all = false;
        db_names_clear(&a->paused);
    }
    pthread_mutex_unlock(&a->lock);
    act_on_pools(req->w->world, db_name, ACTION_RESUME, NULL);
    log_info("C-%llu: RESUME %s by %s", (unsigned long long)req->c->id, db_name ? db_name : "(all)",
             req->c->user);
    proto_build_command_complete(req->out, "RESUME");
    return true;
}

static bool run_reconnect(struct request *req)
{
    const char *db_name;

    if (!optional_database(req, "RECONNECT", &db_name))
        return true;
    act_on_pools(req->w->world, db_name, ACTION_RECONNECT, "RECONNECT");
    log_info("C-%llu: RECONNECT %s by %s", (unsigned long long)req->c->id,
             db_name ? db_name : "(all)", req->c->user);
    proto_build_command_complete(req->out, "RECONNECT");
    return true;
}

static bool run_wait_close(struct request *req)
{
    const char *db_name;
    uint64_t id_limit = atomic_load(&req->w->world->next_id);

    if (!optional_database(req, "WAIT_CLOSE", &db_name))
        return true;
    act_on_pools(req->w->world, db_name, ACTION_RECONNECT, "RECONNECT");
    if (!pools_have_backend_up_to(req->w->world, db_name, id_limit)) {
        proto_build_command_complete(req->out, "WAIT_CLOSE");
        return true;
    }
    return defer_reply(req, DEFERRED_WAIT_CLOSE, db_name, id_limit);
}

/* KILL db: drops the database's clients and backends, and holds it as PgBouncer does. */
static bool run_kill(struct request *req)
{
    struct admin_state *a = admin_state_of(req->w);
    const char *db_name = arg(req, 1);
    char reason[ADMIN_MAX_TOKEN_LEN + 64];

    if (req->cmd.n_tokens != 2) {
        reply_error(req, "42601", NULL, "KILL takes one database name");
        return true;
    }
    if (!check_database_arg(req, "KILL", db_name))
        return true;
    if (admin_names_add(a, &a->paused, db_name) != 0) {
        reply_error(req, "53200", NULL, "out of memory");
        return true;
    }
    snprintf(reason, sizeof(reason),
             "terminating connection due to administrator command (KILL %s)", db_name);
    log_info("C-%llu: KILL %s by %s", (unsigned long long)req->c->id, db_name, req->c->user);
    act_on_pools(req->w->world, db_name, ACTION_KILL, reason);
    proto_build_command_complete(req->out, "KILL");
    return true;
}

/* DISABLE db / ENABLE db: refuse or allow new logins to it; clients already in stay. */
static bool run_disable_enable(struct request *req, bool disable)
{
    struct admin_state *a = admin_state_of(req->w);
    const char *command = disable ? "DISABLE" : "ENABLE";
    const char *db_name = arg(req, 1);

    if (req->cmd.n_tokens != 2) {
        reply_error(req, "42601", NULL, "%s takes one database name", command);
        return true;
    }
    if (!check_database_arg(req, command, db_name))
        return true;
    if (!disable) {
        admin_names_remove(a, &a->disabled, db_name);
    } else if (admin_names_add(a, &a->disabled, db_name) != 0) {
        reply_error(req, "53200", NULL, "out of memory");
        return true;
    }
    log_info("C-%llu: %s %s by %s", (unsigned long long)req->c->id, command, db_name, req->c->user);
    proto_build_command_complete(req->out, command);
    return true;
}

static bool run_disable(struct request *req) { return run_disable_enable(req, true); }
static bool run_enable(struct request *req) { return run_disable_enable(req, false); }

/* A client id as SHOW CLIENTS prints it in ptr ("C-12"), or PgBouncer's bare number ("12"). */
static bool parse_client_id(const char *text, uint64_t *id)
{
    char *end;
    if (strncasecmp(text, "C-", 2) == 0)
        text += 2;
    if (!isdigit((unsigned char)*text))
        return false;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *id = value;
    return true;
}

/* A live client of any worker (ids are unique in the process). */
static struct client *find_client(struct world *world, uint64_t id)
{
    struct worker *wk;
    struct client *c;
    WORLD_FOR_EACH_WORKER(world, i, wk)
        TAILQ_FOREACH(c, &wk->clients, link)
            if (c->id == id && c->state != CLIENT_CLOSING && c->state != CLIENT_CLOSED)
                return c;
    return NULL;
}

/* KILL_CLIENT id (PgBouncer 1.23): closes one client; a backend it was using mid-query goes too. */
static bool run_kill_client(struct request *req)
{
    uint64_t id;
    struct client *target;

    if (req->cmd.n_tokens != 2) {
        reply_error(req, "42601", NULL, "KILL_CLIENT takes one client id");
        return true;
    }
    if (!parse_client_id(arg(req, 1), &id)) {
        reply_error(req, "22023", "SHOW CLIENTS lists the ids (ptr column, e.g. C-12 or 12).",
                    "invalid client id \"%s\"", arg(req, 1));
        return true;
    }
    target = find_client(req->w->world, id);
    if (!target) {
        reply_error(req, "42704", "SHOW CLIENTS lists the clients connected now.",
                    "client C-%llu not found", (unsigned long long)id);
        return true;
    }
    if (target == req->c) {
        reply_error(req, "55000", "Close this connection instead.",
                    "KILL_CLIENT cannot close the console connection that sends it");
        return true;
    }
    log_info("C-%llu: KILL_CLIENT C-%llu (%s/%s@%s:%d) by %s", (unsigned long long)req->c->id,
             (unsigned long long)id, target->database ? target->database : "",
             target->user ? target->user : "", client_address(target).text, target->port,
             req->c->user);
    client_fail(target, "57P01", "terminating connection due to administrator command (KILL_CLIENT)");
    proto_build_command_complete(req->out, "KILL_CLIENT");
    return true;
}

static bool run_reload(struct request *req)
{
    const struct config *before = req->w->cfg;

    if (req->cmd.n_tokens != 1) {
        reply_error(req, "42601", NULL, "RELOAD takes no argument");
        return true;
    }
    log_info("C-%llu: RELOAD by %s", (unsigned long long)req->c->id, req->c->user);
    worker_reload(req->w);
    /* A successful reload always swaps in a new configuration. */
    if (req->w->cfg == before) {
        reply_error(req, "F0000", "The log says what is wrong with it.",
                    "the configuration file could not be loaded; the running configuration is kept");
        return true;
    }
    struct worker *wk;
    WORLD_FOR_EACH_WORKER(req->w->world, i, wk)
        admin_hold_new_pools(wk);
    proto_build_command_complete(req->out, "RELOAD");
    return true;
}

static bool run_shutdown(struct request *req)
{
    if (req->cmd.n_tokens != 1) {
        reply_error(req, "42601", NULL, "SHUTDOWN takes no argument");
        return true;
    }
    /* Begun on the next tick, so this reply reaches the client before the console closes. */
    atomic_store(&admin_state_of(req->w)->shutdown_requested, true);
    log_info("C-%llu: SHUTDOWN by %s", (unsigned long long)req->c->id, req->c->user);
    proto_build_command_complete(req->out, "SHUTDOWN");
    return true;
}

/* ---- SET ---- */

/* Every worker's pools take their sizes from the configuration again (what a reload does). */
static void admin_apply_pool_settings(struct worker *w)
{
    struct worker *wk;
    struct pool *pool;
    WORLD_FOR_EACH_POOL(w->world, i, wk, pool) {
        const struct config_database *db = autodb_find(wk, pool->db_name);
        if (db && !pool->disabled)
            pool_apply_config(pool, db, w->cfg);
    }
}

static bool run_set(struct request *req)
{
    const struct command *cmd = &req->cmd;
    char err[512];

    bool has_separator = cmd->n_tokens == 4 &&
                         (cmd->tokens[2].kind == TOKEN_EQUALS ||
                          (cmd->tokens[2].kind == TOKEN_WORD && strcasecmp(cmd->tokens[2].text, "TO") == 0));
    if (!has_separator || cmd->tokens[1].kind != TOKEN_WORD || cmd->tokens[3].kind == TOKEN_EQUALS) {
        reply_error(req, "42601", NULL, "syntax: SET key = value");
        return true;
    }
    const char *name = arg(req, 1), *value = arg(req, 3);
    size_t index;
    if (!config_find_setting(name, &index)) {
        reply_error(req, "42704", "SHOW CONFIG lists the settings.", "unrecognized setting \"%s\"", name);
        return true;
    }
    const char *setting = config_setting_name(index);
    if (!setting_changeable(setting)) {
        reply_error(req, "55P02", "Change it in the configuration file, then RELOAD or restart.",
                    "setting \"%s\" cannot be changed at run time", setting);
        return true;
    }
    switch (config_set_setting(req->w->cfg, index, value, err, sizeof(err))) {
    case CONFIG_SET_DONE:
        break;
    case CONFIG_SET_INVALID:
        reply_error(req, "22023", NULL, "%s", err);
        return true;
    case CONFIG_SET_OUT_OF_MEMORY:
        reply_error(req, "53200", NULL, "out of memory");
        return true;
    }
    const struct config *cfg = req->w->cfg;
    if (strcmp(setting, "verbose") == 0)
        log_configure(cfg->verbose, cfg->syslog, cfg->syslog_ident, cfg->syslog_facility);
    if (strcmp(setting, "default_pool_size") == 0 || strcmp(setting, "min_pool_size") == 0 ||
        strcmp(setting, "pool_mode") == 0)
        admin_apply_pool_settings(req->w);
    log_info("C-%llu: SET %s = %s by %s", (unsigned long long)req->c->id, setting, value,
             req->c->user);
    proto_build_command_complete(req->out, "SET");
    return true;
}

/* ---- dispatch ---- */

struct admin_command {
    const char *name;
    enum admin_access needs;
    bool (*run)(struct request *req); /* false: reply deferred */
};

static const struct admin_command admin_commands[] = {
    {"SHOW", ADMIN_ACCESS_STATS, run_show},
    {"HELP", ADMIN_ACCESS_STATS, run_help},
    {"PAUSE", ADMIN_ACCESS_FULL, run_pause},
    {"RESUME", ADMIN_ACCESS_FULL, run_resume},
    {"RECONNECT", ADMIN_ACCESS_FULL, run_reconnect},
    {"KILL", ADMIN_ACCESS_FULL, run_kill},
    {"RELOAD", ADMIN_ACCESS_FULL, run_reload},
    {"SHUTDOWN", ADMIN_ACCESS_FULL, run_shutdown},
    {"WAIT_CLOSE", ADMIN_ACCESS_FULL, run_wait_close},
    {"SET", ADMIN_ACCESS_FULL, run_set},
    {"DISABLE", ADMIN_ACCESS_FULL, run_disable},
    {"ENABLE", ADMIN_ACCESS_FULL, run_enable},
    {"KILL_CLIENT", ADMIN_ACCESS_FULL, run_kill_client},
    {"SUSPEND", ADMIN_ACCESS_FULL, run_suspend},
};

static bool admin_dispatch(struct request *req)
{
    const char *why = NULL;
    struct command *cmd = &req->cmd;

    if (!admin_tokenize(req->sql, cmd, &why)) {
        reply_error(req, "42601", NULL, "syntax error in console command: %s", why);
        return true;
    }
    if (cmd->n_tokens > 0 && cmd->tokens[cmd->n_tokens - 1].kind == TOKEN_SEMICOLON)
        cmd->n_tokens--;
    if (cmd->n_tokens == 0) {
        proto_build_empty_query_response(req->out);
        return true;
    }
    for (size_t i = 0; i < cmd->n_tokens; i++) {
        if (cmd->tokens[i].kind == TOKEN_SEMICOLON) {
            reply_error(req, "42601", NULL, "the console runs one command at a time");
            return true;
        }
    }
    if (cmd->tokens[0].kind != TOKEN_WORD) {
        reply_unknown_command(req);
        return true;
    }
    for (size_t i = 0; i < sizeof(admin_commands) / sizeof(admin_commands[0]); i++) {
        const struct admin_command *command = &admin_commands[i];
        if (strcasecmp(cmd->tokens[0].text, command->name) != 0)
            continue;
        /* Asked afresh each time: a RELOAD that removes a user from admin_users takes effect. */
        if (admin_access_for(req->w->cfg, req->c->user) < command->needs) {
            reply_error(req, "42501", "Users in admin_users may run it; stats_users may only SHOW.",
                        "permission denied for %s: user \"%s\" is not in admin_users", command->name,
                        req->c->user);
            return true;
        }
        return command->run(req);
    }
    reply_unknown_command(req);
    return true;
}

/* ---- the interface ---- */

int admin_init(struct worker *w)
{
    struct admin_state *a = calloc(1, sizeof(*a));
    if (!a) {
        log_error("admin console: out of memory");
        return -1;
    }
    pthread_mutex_init(&a->lock, NULL);
    atomic_init(&a->shutdown_requested, false);
    w->admin = a;
    return 0;
}

void admin_free(struct worker *w)
{
    struct admin_state *a = w->admin;
    if (!a)
        return;
    while (a->deferred) {
        struct deferred_reply *d = a->deferred;
        a->deferred = d->next;
        free(d->db_name);
        free(d);
    }
    db_names_clear(&a->paused);
    free(a->paused.names);
    db_names_clear(&a->disabled);
    free(a->disabled.names);
    for (size_t i = 0; i < a->n_averages; i++)
        free(a->averages[i].db_name);
    free(a->averages);
    pthread_mutex_destroy(&a->lock);
    free(a);
    w->admin = NULL;
}

bool admin_is_console_db(const struct config *cfg, const char *name)
{
    return name && is_console_name(name) && !config_find_database(cfg, name);
}

enum admin_access admin_access_for(const struct config *cfg, const char *user)
{
    if (config_list_contains(cfg->admin_users, user))
        return ADMIN_ACCESS_FULL;
    if (config_list_contains(cfg->stats_users, user))
        return ADMIN_ACCESS_STATS;
    return ADMIN_ACCESS_NONE;
}

void admin_build_login_params(const struct client *c, struct msgbuf *out)
{
    const char *encoding = param_set_get(&c->params, "client_encoding");
    const char *app = param_set_get(&c->params, "application_name");

    /* DateStyle ISO spares psycopg2 its SET DATESTYLE; libpq needs the encoding. */
    proto_build_parameter_status(out, "server_version", PACKAGE_VERSION "/sluice");
    proto_build_parameter_status(out, "server_encoding", "UTF8");
    proto_build_parameter_status(out, "client_encoding", encoding ? encoding : "UTF8");
    proto_build_parameter_status(out, "DateStyle", "ISO, MDY");
    proto_build_parameter_status(out, "TimeZone", "UTC");
    proto_build_parameter_status(out, "integer_datetimes", "on");
    proto_build_parameter_status(out, "standard_conforming_strings", "on");
    proto_build_parameter_status(out, "application_name", app ? app : "");
}

bool admin_execute(struct worker *w, struct client *c, const char *sql, struct msgbuf *out)
{
    struct request *req = calloc(1, sizeof(*req)); /* the tokens are large for a stack */
    if (!req) {
        proto_build_error(out, "ERROR", "53200", "out of memory", NULL, NULL);
        proto_build_ready_for_query(out, 'I');
        return true;
    }
    req->w = w;
    req->c = c;
    req->out = out;
    req->sql = sql;
    /* A command sees and steers the whole process: every other worker waits meanwhile. */
    world_stop(w);
    bool answered = admin_dispatch(req);
    world_resume(w);
    free(req);
    if (answered)
        proto_build_ready_for_query(out, 'I');
    return answered;
}

void admin_client_closed(struct worker *w, struct client *c)
{
    struct admin_state *a = admin_state_of(w);
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    struct deferred_reply **link = &a->deferred;
    while (*link) {
        struct deferred_reply *d = *link;
        if (d->client != c) {
            link = &d->next;
            continue;
        }
        *link = d->next;
        free(d->db_name);
        free(d);
    }
    pthread_mutex_unlock(&a->lock);
}

/* With the world stopped: the conditions read every worker's pools and connections. */
static bool deferred_condition_holds(struct worker *w, const struct deferred_reply *d)
{
    if (d->kind == DEFERRED_PAUSE)
        return pools_quiet(w->world, d->db_name);
    if (d->kind == DEFERRED_SUSPEND)
        return suspended_output_flushed(w->world, worker_now(w) - d->since >= SUSPEND_FLUSH_SECONDS);
    return !pools_have_backend_up_to(w->world, d->db_name, d->id_limit);
}

/* This worker's deferred replies, oldest last; NULL (and *n 0) if none or out of memory. */
static struct deferred_reply **admin_deferred_of(struct admin_state *a, const struct worker *w,
                                                 size_t *n)
{
    struct deferred_reply **mine = NULL;
    size_t count = 0;

    pthread_mutex_lock(&a->lock);
    for (struct deferred_reply *d = a->deferred; d; d = d->next)
        count += d->worker == w;
    if (count > 0 && (mine = calloc(count, sizeof(*mine))) != NULL) {
        count = 0;
        for (struct deferred_reply *d = a->deferred; d; d = d->next)
            if (d->worker == w)
                mine[count++] = d;
    }
    pthread_mutex_unlock(&a->lock);
    *n = mine ? count : 0;
    return mine;
}

static void admin_unlink_deferred(struct admin_state *a, struct deferred_reply *d)
{
    pthread_mutex_lock(&a->lock);
    for (struct deferred_reply **link = &a->deferred; *link; link = &(*link)->next) {
        if (*link == d) {
            *link = d->next;
            break;
        }
    }
    pthread_mutex_unlock(&a->lock);
}

/*
 * With the world stopped: the first of this worker's deferred replies whose condition holds,
 * unlinked; NULL if none. The conditions are checked without the lock (closing a laggard calls
 * into client code); only this worker's own thread removes its entries meanwhile.
 */
static struct deferred_reply *admin_take_ready_reply(struct worker *w)
{
    struct admin_state *a = admin_state_of(w);
    struct deferred_reply *ready = NULL;
    size_t n;
    struct deferred_reply **mine = admin_deferred_of(a, w, &n);

    for (size_t i = 0; i < n && !ready; i++)
        if (deferred_condition_holds(w, mine[i]))
            ready = mine[i];
    free(mine);
    if (ready)
        admin_unlink_deferred(a, ready);
    return ready;
}

static const char *deferred_command_name(enum deferred_kind kind)
{
    switch (kind) {
    case DEFERRED_PAUSE:
        return "PAUSE";
    case DEFERRED_WAIT_CLOSE:
        return "WAIT_CLOSE";
    case DEFERRED_SUSPEND:
        break;
    }
    return "SUSPEND";
}

/* Answers the deferred replies of this worker's console clients whose condition holds. */
static void admin_complete_deferred(struct worker *w)
{
    struct deferred_reply *d;
    struct msgbuf reply;
    size_t n;

    free(admin_deferred_of(admin_state_of(w), w, &n));
    if (n == 0)
        return; /* the usual case: no world_stop */
    msgbuf_init(&reply);
    /*
     * One at a time: resuming a client runs its next command, which may change the list (a new
     * deferred reply, or a client that left).
     */
    for (;;) {
        world_stop(w);
        d = admin_take_ready_reply(w);
        world_resume(w);
        if (!d)
            break;
        struct client *c = d->client;
        msgbuf_reset(&reply);
        proto_build_command_complete(&reply, deferred_command_name(d->kind));
        proto_build_ready_for_query(&reply, 'I');
        free(d->db_name);
        free(d);
        client_admin_resume(c, &reply);
    }
    msgbuf_free(&reply);
}

void admin_janitor(struct worker *w)
{
    struct admin_state *a = admin_state_of(w);
    if (!a)
        return;
    /* The process-wide work is worker 0's, which owns the state. */
    if (w->admin && atomic_exchange(&a->shutdown_requested, false))
        worker_drain_all(w, "SHUTDOWN command");
    admin_hold_new_pools(w);
    if (w->admin)
        admin_refresh_averages(w, worker_now(w));
    admin_complete_deferred(w);
}
