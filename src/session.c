/*
 * session.c: transaction pooling without surprises. Each client message that touches session
 * state passes through here on its way to a backend:
 *   - named prepared statements (Parse/Bind/Describe/Close) are renamed to the shared backend
 *     statement and prepared on whichever backend the client has now, once per backend;
 *   - statements that leave state in the session (SET, temp tables, LISTEN...) pin the client to
 *     its backend until it leaves, or are refused (pinning = reject);
 *   - DISCARD ALL / DEALLOCATE ALL forget what the client and the backend had.
 * Replies to the Parse and Close messages sluice adds itself are counted in a queue and kept
 * from the client.
 */
#include "session.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "conn.h"
#include "fault.h"
#include "log.h"
#include "params.h"
#include "pinning.h"
#include "pool.h"
#include "prepared.h"
#include "server.h"

/* Queries larger than this are passed on without looking for session state in them. */
#define SESSION_MAX_SCANNED_QUERY (1024 * 1024)
/* Bind's portal and statement names must fit in this many bytes after the header. */
#define SESSION_MAX_BIND_NAMES 1024
/* Kept in SHOW PINNED and the log: the start of the statement that pinned a client. */
#define SESSION_PIN_STATEMENT_LEN 200
/* A backend name no statement ever has: closing or using it touches nothing shared. */
#define SESSION_NO_STATEMENT "sluice_none"

/* ---- the reply queue ---- */

static void reply_queue_pop(struct reply_queue *q);

void reply_queue_free(struct reply_queue *q)
{
    reply_queue_clear(q);
    free(q->items);
    memset(q, 0, sizeof(*q));
}

void reply_queue_clear(struct reply_queue *q)
{
    while (q->count)
        reply_queue_pop(q);
    q->head = 0;
}

static bool reply_queue_push_binding(struct reply_queue *q, enum reply_kind kind,
                                     struct prepared_statement *stmt, uint64_t binding)
{
    if (q->count == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 16;
        struct reply_expectation *items =
            fault_alloc_fails(FAULT_SITE_REPLY_QUEUE) ? NULL : malloc(cap * sizeof(*items));
        if (!items)
            return false;
        for (uint32_t i = 0; i < q->count; i++)
            items[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = items;
        q->head = 0;
        q->cap = cap;
    }
    q->items[(q->head + q->count) % q->cap] = (struct reply_expectation){ kind, stmt, binding };
    q->count++;
    if (stmt)
        prepared_reply_owed(stmt);
    return true;
}

static bool reply_queue_push(struct reply_queue *q, enum reply_kind kind, struct prepared_statement *stmt)
{
    return reply_queue_push_binding(q, kind, stmt, 0);
}

static struct reply_expectation *reply_queue_front(struct reply_queue *q)
{
    return q->count ? &q->items[q->head] : NULL;
}

static void reply_queue_pop(struct reply_queue *q)
{
    if (!q->count)
        return;
    struct prepared_statement *stmt = q->items[q->head].stmt;
    if (stmt)
        prepared_reply_settled(stmt);
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

/* ---- helpers ---- */

bool session_tracks(const struct client *c)
{
    return c->pool && c->pool_mode == POOL_MODE_TRANSACTION;
}

static bool session_prepared_enabled(const struct client *c)
{
    return c->tracks_prepared;
}

/*
 * Parameters the backend reports with ParameterStatus, so a SET of one is followed and replayed
 * rather than pinned. search_path is reported only from PostgreSQL 18: its SET pins.
 */
static bool session_param_is_followed(const char *name)
{
    return params_is_tracked(name) && strcasecmp(name, "search_path") != 0;
}

static struct pinning_rules session_rules(const struct client *c)
{
    const char *scs = param_set_get(&c->params, "standard_conforming_strings");
    if (!scs && c->pool)
        scs = param_set_get(&c->pool->defaults, "standard_conforming_strings");
    return (struct pinning_rules){
        .is_tracked = session_param_is_followed,
        .standard_conforming_strings = !scs || strcasecmp(scs, "off") != 0,
    };
}

static void session_pin(struct client *c, enum pin_reason reason, const char *sql, size_t len)
{
    struct pool *pool = c->pool;
    if (c->pinned)
        return;
    c->pinned = true;
    c->pin_reason = (int)reason;
    c->pin_time = worker_now(c->worker);
    size_t keep = len < SESSION_PIN_STATEMENT_LEN ? len : SESSION_PIN_STATEMENT_LEN;
    c->pin_statement = malloc(keep + 1);
    if (c->pin_statement) {
        memcpy(c->pin_statement, sql, keep);
        c->pin_statement[keep] = '\0';
    }
    if (c->server)
        c->server->session_dirty = true;
    pool->n_pinned++;
    if ((size_t)reason < sizeof(pool->stats.pin_events) / sizeof(pool->stats.pin_events[0]))
        pool->stats.pin_events[reason]++;
    log_info("C-%llu: %s/%s@%s:%d pinned to its backend: %s", (unsigned long long)c->id,
             c->database, c->user, c->addr, c->port, pin_reason_name(reason));
}

void session_unpin(struct client *c)
{
    if (!c->pinned)
        return;
    c->pinned = false;
    if (c->pool)
        c->pool->n_pinned--;
    free(c->pin_statement);
    c->pin_statement = NULL;
}

/* pinning = reject: what the backend runs instead, raising the error itself so replies stay in
 * order. */
static void session_reject_sql(char *sql, size_t size, enum pin_reason reason)
{
    snprintf(sql, size,
             "DO $sluice$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = "
             "'%s would leave session state on a shared connection (pinning = reject)', "
             "HINT = 'Use a database with pool_mode = session for this client.'; END$sluice$",
             pin_reason_name(reason));
}

static bool session_reject(struct client *c, enum pin_reason reason, uint32_t msg_len)
{
    struct msgbuf *mb = &c->worker->scratch;
    char sql[512];
    session_reject_sql(sql, sizeof(sql), reason);
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    msgbuf_reset(mb);
    proto_build_query(mb, sql);
    return conn_send(&c->server->conn, mb);
}

static void session_fail(struct client *c, const char *message)
{
    client_fail(c, "08P01", message);
}

/* A message or an owed reply could not be recorded: the client and its backend go. */
static enum session_step session_out_of_memory(struct client *c)
{
    server_out_of_memory(c->server);
    return SESSION_CLOSED;
}

/* Values sluice applied with SET may have been reset: make the next hand-out apply them again. */
static void session_forget_applied_params(struct server *s)
{
    for (size_t i = 0; i < s->params.n;) {
        if (!param_set_get(&s->pool->defaults, s->params.entries[i].name)) {
            param_set_remove(&s->params, s->params.entries[i].name);
            continue;
        }
        i++;
    }
}

static bool session_ensure(struct client *c, struct prepared_statement *stmt);

/* Is the query one DEALLOCATE of a statement the client prepared? *st gets it. */
static bool session_is_own_deallocate(struct client *c, const char *sql, size_t len,
                                      const struct pinning_rules *rules,
                                      struct pinning_statement *st)
{
    size_t offset = 0;
    return pinning_next_statement(sql, len, &offset, rules, st) &&
           st->effect == PIN_EFFECT_DEALLOCATE && !st->name_truncated &&
           prepared_client_lookup(&c->prepared, st->name) != NULL;
}

/*
 * DEALLOCATE name of a client's statement, in a query sluice passes on: the backend knows the
 * statement by another name, and may not have it prepared. Each such DEALLOCATE becomes one of
 * the backend statement, prepared there first if need be so the command succeeds as it would
 * have; the client and the backend then forget it. Everything else is copied as written.
 * *rewritten: some DEALLOCATE was the client's (out holds the new query text, NUL included).
 */
static bool session_rewrite_deallocates(struct client *c, const char *sql, size_t len,
                                        const struct pinning_rules *rules, struct msgbuf *out,
                                        bool *rewritten)
{
    static const char deallocate[] = "DEALLOCATE ";
    struct pinning_statement st;
    size_t offset = 0, copied = 0;

    *rewritten = false;
    while (pinning_next_statement(sql, len, &offset, rules, &st)) {
        struct prepared_statement *stmt = NULL;
        if (st.effect == PIN_EFFECT_DEALLOCATE && !st.name_truncated)
            stmt = prepared_client_lookup(&c->prepared, st.name);
        if (!stmt)
            continue;
        if (!session_ensure(c, stmt))
            return false;
        msgbuf_append(out, sql + copied, st.start - copied);
        msgbuf_append(out, deallocate, sizeof(deallocate) - 1);
        msgbuf_append(out, stmt->backend_name, strlen(stmt->backend_name));
        copied = st.start + st.len;
        prepared_server_forget(&c->server->prepared, stmt);
        prepared_client_remove(&c->prepared, st.name);
        *rewritten = true;
    }
    msgbuf_append(out, sql + copied, len - copied);
    msgbuf_append(out, "", 1);
    return !out->failed;
}

/* Answers a DEALLOCATE of the client's own statements without the backend. */
static bool session_answer_deallocate(struct client *c, uint32_t msg_len)
{
    struct msgbuf *mb = &c->worker->scratch;
    static const uint8_t complete[] = { 'C', 0, 0, 0, 15, 'D', 'E', 'A', 'L', 'L', 'O', 'C', 'A', 'T', 'E', 0 };
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    msgbuf_reset(mb);
    msgbuf_append(mb, complete, sizeof(complete));
    proto_build_ready_for_query(mb, c->server->ready_status ? c->server->ready_status : 'I');
    return conn_send(&c->conn, mb);
}

/* ---- simple query ---- */

static enum session_step session_query(struct client *c, uint32_t msg_len, bool in_flight)
{
    struct server *s = c->server;
    const char *sql;
    struct pinning_summary summary;

    if (msg_len > SESSION_MAX_SCANNED_QUERY) {
        if (!reply_queue_push(&s->replies, REPLY_SYNC, NULL))
            return session_out_of_memory(c);
        return SESSION_FORWARD;
    }
    const uint8_t *msg = conn_pullup_message(c->conn.in, msg_len);
    if (!msg)
        return SESSION_WAIT;
    if (proto_parse_query(msg + PROTO_HEADER_LEN, msg_len - 4, &sql) != PROTO_OK) {
        session_fail(c, "malformed Query message");
        return SESSION_CLOSED;
    }
    size_t len = msg_len - 5;
    struct pinning_rules rules = session_rules(c);
    enum pin_reason reason = pinning_scan(sql, len, &rules, &summary);

    if (summary.forgets_statements) {
        prepared_client_forget_all(&c->prepared);
        prepared_server_forget_all(&s->prepared);
    }
    if (summary.resets_untracked)
        session_forget_applied_params(s);
    bool reject = reason != PIN_NONE && strcmp(c->worker->cfg->pinning, "reject") == 0;
    if (reject) {
        if (!reply_queue_push(&s->replies, REPLY_SYNC, NULL) || !session_reject(c, reason, msg_len))
            return session_out_of_memory(c);
        return SESSION_HANDLED;
    }
    struct msgbuf rewritten;
    bool is_rewritten = false;
    msgbuf_init(&rewritten);
    if (summary.deallocates && session_prepared_enabled(c)) {
        struct pinning_statement st;
        if (!in_flight && summary.n_statements == 1 &&
            session_is_own_deallocate(c, sql, len, &rules, &st)) {
            prepared_client_remove(&c->prepared, st.name);
            if (!session_answer_deallocate(c, msg_len))
                return session_out_of_memory(c);
            return SESSION_ANSWERED;
        }
        if (!session_rewrite_deallocates(c, sql, len, &rules, &rewritten, &is_rewritten)) {
            msgbuf_free(&rewritten);
            return session_out_of_memory(c);
        }
    }
    if (!reply_queue_push(&s->replies, REPLY_SYNC, NULL)) {
        msgbuf_free(&rewritten);
        return session_out_of_memory(c);
    }
    if (reason != PIN_NONE && strcmp(c->worker->cfg->pinning, "off") != 0)
        session_pin(c, reason, sql, len);
    if (!is_rewritten) {
        msgbuf_free(&rewritten);
        return SESSION_FORWARD;
    }
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    proto_build_query(mb, (const char *)rewritten.data);
    msgbuf_free(&rewritten);
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    if (!conn_send(&s->conn, mb))
        return session_out_of_memory(c);
    return SESSION_HANDLED;
}

/* ---- extended protocol ---- */

/* Closes then prepares stmt on the client's backend; both replies are sluice's own. */
static bool session_inject_parse(struct client *c, struct prepared_statement *stmt,
                                 const char *victim, enum reply_kind parse_reply, uint64_t binding)
{
    struct server *s = c->server;
    struct msgbuf *mb = &c->worker->scratch;

    msgbuf_reset(mb);
    if (victim && *victim) {
        prepared_build_close(mb, victim);
        if (!reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL))
            return false;
    }
    /* Close first: Parse must not fail because the backend has it after all. */
    prepared_build_close(mb, stmt->backend_name);
    if (!reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL))
        return false;
    prepared_build_parse(mb, stmt);
    return reply_queue_push_binding(&s->replies, parse_reply, stmt, binding) &&
           conn_send(&s->conn, mb);
}

/* Makes sure stmt is prepared on the client's backend, preparing it first if not. */
static bool session_ensure(struct client *c, struct prepared_statement *stmt)
{
    char victim[PREPARED_NAME_LEN];
    switch (prepared_server_ensure(&c->server->prepared, stmt, victim)) {
    case PREPARED_ON_SERVER:
        return true;
    case PREPARED_PARSE_NEEDED:
        return session_inject_parse(c, stmt, victim, REPLY_PARSE_OURS, 0);
    case PREPARED_ENSURE_NO_MEMORY:
        break;
    }
    return false;
}

/*
 * A client's Parse, or (replacement != NULL) the Parse sent in its place, on its way to the
 * backend: named statements go through the registry, the unnamed one as it is.
 */
static enum session_step session_parse_statement(struct client *c,
                                                 const struct prepared_parse *parse,
                                                 const struct msgbuf *replacement,
                                                 uint32_t msg_len, bool in_flight)
{
    struct server *s = c->server;
    struct prepared_statement *stmt = NULL;
    char victim[PREPARED_NAME_LEN];

    if (!parse->name[0] || !session_prepared_enabled(c)) {
        if (!reply_queue_push(&s->replies, REPLY_PARSE, NULL))
            return session_out_of_memory(c);
        if (!replacement)
            return SESSION_FORWARD;
        evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
        if (!conn_send(&s->conn, replacement))
            return session_out_of_memory(c);
        return SESSION_HANDLED;
    }
    /* Parsing a name again replaces it (PostgreSQL would refuse: drivers close first). */
    prepared_client_remove(&c->prepared, parse->name);
    if (prepared_client_add(&c->prepared, parse, &stmt) != PREPARED_ADDED) {
        client_fail(c, "53200", "out of memory for prepared statements");
        return SESSION_CLOSED;
    }
    uint64_t binding = prepared_client_serial(&c->prepared, parse->name);
    enum prepared_ensure_result ensured = prepared_server_ensure(&s->prepared, stmt, victim);
    if (ensured == PREPARED_ENSURE_NO_MEMORY) {
        client_fail(c, "53200", "out of memory for prepared statements");
        return SESSION_CLOSED;
    }
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1); /* parse may point into it: not used below */
    if (ensured == PREPARED_ON_SERVER && !in_flight && s->replies.count == 0) {
        /* Nothing is owed before it: answer ParseComplete here. */
        static const uint8_t parse_complete[] = { '1', 0, 0, 0, 4 };
        if (!conn_write(&c->conn, parse_complete, sizeof(parse_complete)))
            return session_out_of_memory(c);
        return SESSION_HANDLED;
    }
    if (!session_inject_parse(c, stmt, ensured == PREPARED_PARSE_NEEDED ? victim : NULL,
                              REPLY_PARSE, binding))
        return session_out_of_memory(c);
    return SESSION_HANDLED;
}

/*
 * pinning = reject for a Parse: the statement becomes one that raises the error when it runs,
 * under the same name and with the same parameter types, so the client's Bind still fits and
 * the error arrives in order.
 */
static void session_build_rejected_parse(struct msgbuf *out, const struct prepared_parse *parse,
                                         enum pin_reason reason)
{
    char sql[512];
    size_t query_len = strlen(parse->query) + 1;
    const uint8_t *types = parse->definition + query_len;   /* n_params and the type OIDs */
    size_t types_len = parse->definition_len - query_len;
    size_t name_len = strlen(parse->name) + 1;

    session_reject_sql(sql, sizeof(sql), reason);
    size_t sql_len = strlen(sql) + 1;
    uint32_t be_len = htonl((uint32_t)(4 + name_len + sql_len + types_len));
    msgbuf_append(out, "P", 1);
    msgbuf_append(out, &be_len, 4);
    msgbuf_append(out, parse->name, name_len);
    msgbuf_append(out, sql, sql_len);
    msgbuf_append(out, types, types_len);
}

static enum session_step session_parse(struct client *c, uint32_t msg_len, bool in_flight)
{
    struct prepared_parse parse;

    const uint8_t *msg = conn_pullup_message(c->conn.in, msg_len);
    if (!msg)
        return SESSION_WAIT;
    if (prepared_parse_parse(msg + PROTO_HEADER_LEN, msg_len - 4, &parse) != PROTO_OK) {
        session_fail(c, "malformed Parse message");
        return SESSION_CLOSED;
    }
    struct pinning_rules rules = session_rules(c);
    enum pin_reason reason = pinning_scan(parse.query, strlen(parse.query), &rules, NULL);
    if (reason == PIN_NONE || strcmp(c->worker->cfg->pinning, "off") == 0)
        return session_parse_statement(c, &parse, NULL, msg_len, in_flight);
    if (strcmp(c->worker->cfg->pinning, "reject") != 0) {
        session_pin(c, reason, parse.query, strlen(parse.query));
        return session_parse_statement(c, &parse, NULL, msg_len, in_flight);
    }
    struct msgbuf rejected;
    struct prepared_parse replaced;
    enum session_step step;
    msgbuf_init(&rejected);
    session_build_rejected_parse(&rejected, &parse, reason);
    if (rejected.failed || prepared_parse_parse(rejected.data + PROTO_HEADER_LEN,
                                                rejected.len - PROTO_HEADER_LEN,
                                                &replaced) != PROTO_OK) {
        client_fail(c, "53200", "out of memory");
        step = SESSION_CLOSED;
    } else {
        step = session_parse_statement(c, &replaced, &rejected, msg_len, in_flight);
    }
    msgbuf_free(&rejected);
    return step;
}

/* The backend name for a client's statement name, preparing it there if needed. */
static const char *session_backend_name(struct client *c, const char *name, bool *failed)
{
    *failed = false;
    struct prepared_statement *stmt = prepared_client_lookup(&c->prepared, name);
    if (!stmt)
        /* Unknown: the backend reports it (26000) under the client's own name, unless that name
         * could be one of sluice's shared statements. */
        return strncmp(name, "sluice_", 7) == 0 ? SESSION_NO_STATEMENT : NULL;
    if (!session_ensure(c, stmt)) {
        *failed = true;
        return NULL;
    }
    return stmt->backend_name;
}

/* Bind: only its two names are rewritten; parameters (maybe large) stream on untouched. */
static enum session_step session_bind(struct client *c, uint32_t msg_len)
{
    struct evbuffer *in = c->conn.in;
    size_t whole = (size_t)msg_len + 1;
    size_t want = whole < PROTO_HEADER_LEN + SESSION_MAX_BIND_NAMES ? whole : PROTO_HEADER_LEN + SESSION_MAX_BIND_NAMES;
    bool failed;

    if (!session_prepared_enabled(c))
        return SESSION_FORWARD;
    if (evbuffer_get_length(in) < want)
        return SESSION_WAIT;
    const uint8_t *msg = evbuffer_pullup(in, (ev_ssize_t)want);
    const char *portal = (const char *)msg + PROTO_HEADER_LEN;
    const uint8_t *end = msg + want;
    const uint8_t *portal_end = memchr(portal, 0, (size_t)(end - (const uint8_t *)portal));
    const uint8_t *name_end = portal_end ? memchr(portal_end + 1, 0, (size_t)(end - portal_end - 1)) : NULL;
    if (!name_end) {
        session_fail(c, want == whole ? "malformed Bind message" : "Bind names too long");
        return SESSION_CLOSED;
    }
    const char *name = (const char *)portal_end + 1;
    if (!*name)
        return SESSION_FORWARD;
    const char *backend_name = session_backend_name(c, name, &failed);
    if (failed)
        return session_out_of_memory(c);
    if (!backend_name)
        return SESSION_FORWARD;

    size_t portal_len = (size_t)(portal_end - (const uint8_t *)portal);
    size_t old_prefix = PROTO_HEADER_LEN + portal_len + 1 + strlen(name) + 1;
    size_t new_name_len = strlen(backend_name);
    uint32_t new_len = (uint32_t)(msg_len - strlen(name) + new_name_len);
    uint8_t header[PROTO_HEADER_LEN];
    uint32_t be_len = htonl(new_len);
    header[0] = 'B';
    memcpy(header + 1, &be_len, 4);
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    msgbuf_append(mb, header, sizeof(header));
    msgbuf_append(mb, portal, portal_len + 1);
    msgbuf_append(mb, backend_name, new_name_len + 1);
    if (!conn_send(&c->server->conn, mb))
        return session_out_of_memory(c);
    evbuffer_drain(in, old_prefix);
    c->forward_remaining = (uint32_t)(whole - old_prefix);
    return SESSION_HANDLED;
}

/* Describe and Close of a statement: renamed; Close of one also forgets it for this client only. */
static enum session_step session_target(struct client *c, uint8_t type, uint32_t msg_len)
{
    struct server *s = c->server;
    char kind;
    const char *name;
    bool failed;

    if (msg_len > CONN_MAX_INSPECTED_MESSAGE) {
        session_fail(c, "malformed Describe or Close message");
        return SESSION_CLOSED;
    }
    const uint8_t *msg = conn_pullup_message(c->conn.in, msg_len);
    if (!msg)
        return SESSION_WAIT;
    const uint8_t *body = msg + PROTO_HEADER_LEN;
    if (prepared_parse_target(body, msg_len - 4, &kind, &name) != PROTO_OK) {
        session_fail(c, "malformed Describe or Close message");
        return SESSION_CLOSED;
    }
    if (type == 'C' && !reply_queue_push(&s->replies, REPLY_CLOSE, NULL))
        return session_out_of_memory(c);
    if (kind != 'S' || !*name || !session_prepared_enabled(c))
        return SESSION_FORWARD;

    const char *backend_name;
    if (type == 'C') {
        /* Other clients may share the backend statement: it stays; only the name goes. */
        prepared_client_remove(&c->prepared, name);
        backend_name = SESSION_NO_STATEMENT;
    } else {
        backend_name = session_backend_name(c, name, &failed);
        if (failed)
            return session_out_of_memory(c);
        if (!backend_name)
            return SESSION_FORWARD;
    }
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    if (prepared_rewrite(mb, (char)type, body, msg_len - 4, backend_name) != PROTO_OK) {
        session_fail(c, "malformed Describe or Close message");
        return SESSION_CLOSED;
    }
    if (!conn_send(&s->conn, mb))
        return session_out_of_memory(c);
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    return SESSION_HANDLED;
}

enum session_step session_client_message(struct client *c, uint8_t type, uint32_t msg_len,
                                         bool in_flight)
{
    switch (type) {
    case 'Q':
        return session_query(c, msg_len, in_flight);
    case 'P':
        return session_parse(c, msg_len, in_flight);
    case 'B':
        return session_bind(c, msg_len);
    case 'D':
    case 'C':
        return session_target(c, type, msg_len);
    case 'S':
        if (!reply_queue_push(&c->server->replies, REPLY_SYNC, NULL))
            return session_out_of_memory(c);
        return SESSION_FORWARD;
    default:
        return SESSION_FORWARD;
    }
}

/* ---- replies ---- */

/* After an error the backend skips everything up to the next Sync: so do the expectations. */
static void session_skip_to_sync(struct server *s)
{
    struct reply_expectation *e;
    while ((e = reply_queue_front(&s->replies)) && e->kind != REPLY_SYNC) {
        if (e->stmt && prepared_server_has(&s->prepared, e->stmt))
            prepared_server_forget(&s->prepared, e->stmt);
        /* The client's own Parse failed or was skipped: Postgres would not know the name. */
        if (e->binding && s->client)
            prepared_client_unbind(&s->client->prepared, e->binding);
        reply_queue_pop(&s->replies);
    }
}

bool session_server_reply(struct server *s, uint8_t type)
{
    struct reply_expectation *e = reply_queue_front(&s->replies);
    if (!e)
        return false;
    switch (type) {
    case '1':
    case '3': {
        if (e->kind == REPLY_SYNC)
            return false; /* not one of ours: pass it on */
        bool ours = e->kind == REPLY_PARSE_OURS || e->kind == REPLY_CLOSE_OURS;
        reply_queue_pop(&s->replies);
        return ours;
    }
    case 'E':
        session_skip_to_sync(s);
        return false;
    case 'Z':
        if (e->kind == REPLY_SYNC)
            reply_queue_pop(&s->replies);
        return false;
    default:
        return false;
    }
}
