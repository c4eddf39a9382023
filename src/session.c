/*
 * session.c: transaction pooling without surprises. Each client message that touches session
 * state passes through here on its way to a backend:
 *   - named prepared statements (Parse/Bind/Describe/Close) are renamed to the shared backend
 *     statement and prepared on whichever backend the client has now, once per backend;
 *   - SET, RESET and set_config(..., false) are noted and, once their transaction commits,
 *     become the client's settings, replayed on whichever backend it gets next; RESET returns to
 *     the client's own startup values;
 *   - statements that leave state that cannot move (temp tables, LISTEN, advisory locks...) pin
 *     the client to its backend until it clears that state or leaves, or are refused
 *     (pinning = reject);
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
        struct reply_expectation *items = malloc(cap * sizeof(*items));
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
    return c->pool && c->pool->mode == POOL_MODE_TRANSACTION;
}

static bool session_prepared_enabled(const struct client *c)
{
    return c->worker->cfg->max_prepared_statements > 0;
}

/*
 * Every SET a client makes is followed and replayed wherever it lands, rather than pinned: the
 * server's ParameterStatus gives the value of a parameter it reports, the client's own text that
 * of the others. (role and session_authorization still pin: the lexer sees to that.)
 */
static bool session_param_is_followed(const char *name)
{
    (void)name;
    return true;
}

void session_tracking_init(struct session_tracking *t)
{
    memset(t, 0, sizeof(*t));
    param_set_init(&t->startup);
    param_changes_init(&t->changes);
    param_set_init(&t->txn_client);
    param_set_init(&t->txn_server);
}

void session_tracking_free(struct session_tracking *t)
{
    param_set_free(&t->startup);
    param_changes_free(&t->changes);
    param_set_free(&t->txn_client);
    param_set_free(&t->txn_server);
}

static uint32_t pin_bit(enum pin_reason reason)
{
    return 1u << (unsigned)reason;
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

/*
 * reason: the first statement's; pins: the bits of every reason the query pins for (a later
 * UNLISTEN * alone must not release a client that also holds a temporary table).
 */
static void session_pin(struct client *c, enum pin_reason reason, uint32_t pins, const char *sql,
                        size_t len)
{
    struct pool *pool = c->pool;
    struct session_tracking *t = &c->session;

    pins |= pin_bit(reason);
    t->pins |= pins;
    /* State made after a statement that cleared it stays. */
    t->pending_unpins &= ~pins;
    t->txn_unpins &= ~pins;
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
    c->session.pins = 0;
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

static void session_reject(struct client *c, enum pin_reason reason, uint32_t msg_len)
{
    struct msgbuf *mb = &c->worker->scratch;
    char sql[512];
    session_reject_sql(sql, sizeof(sql), reason);
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    msgbuf_reset(mb);
    proto_build_query(mb, sql);
    conn_send(&c->server->conn, mb);
}

static void session_fail(struct client *c, const char *message)
{
    client_fail(c, "08P01", message);
}

/* ---- settings and pins, statement by statement ---- */

/* What RESET ALL returns to its startup value: settings that pinned because sluice could not
 * follow them. role and session_authorization survive RESET ALL in PostgreSQL. */
#define PINS_CLEARED_BY_RESET_ALL                                                             \
    ((1u << PIN_SET) | (1u << PIN_SET_CONFIG) | (1u << PIN_SESSION_CHARACTERISTICS) |         \
     (1u << PIN_SET_FROM_CURRENT) | (1u << PIN_SET_BEFORE_SAVEPOINT_ROLLBACK))
/* DISCARD ALL clears everything but a LOADed library. */
#define PINS_CLEARED_BY_DISCARD_ALL (~(1u << PIN_LOAD))

/* Has the client's open transaction (or the query on its way) changed settings or pins? */
static bool session_transaction_matters(const struct session_tracking *t)
{
    return t->txn_saved || t->changes.n > 0 || t->txn_unpins != 0 || t->pending_unpins != 0;
}

static void session_save_transaction_start(struct client *c);

/*
 * Notes a change, or where the transaction ends. A settings change first keeps what the client
 * and its backend have now: the server's ParameterStatus replies change c->params on their way.
 * An end matters only to a transaction that changed something.
 */
static int session_note_change(struct client *c, enum param_change_kind kind, const char *name,
                               const char *text, size_t text_len)
{
    struct session_tracking *t = &c->session;
    bool ends = kind == PARAM_CHANGE_COMMIT || kind == PARAM_CHANGE_ROLLBACK ||
                kind == PARAM_CHANGE_ROLLBACK_TO;

    if (ends && !session_transaction_matters(t))
        return 0;
    if (!ends)
        session_save_transaction_start(c);
    if (param_changes_add(&t->changes, kind, name, text, text_len) != 0)
        return -1;
    /* Pipelined: the ReadyForQuery after those still owed ends this statement's group. */
    t->changes.items[t->changes.n - 1].tag = t->ready_count + c->pending_ready + 1;
    return 0;
}

/* The pins a statement's effect clears, once it has run and its transaction committed. */
static uint32_t session_unpins_of(const struct pinning_statement *st)
{
    switch (st->effect) {
    case PIN_EFFECT_RESET:
        /* RESET ROLE, SET ROLE NONE; RESET SESSION AUTHORIZATION: each clears only its own */
        return strcmp(st->name, "role") == 0 ? pin_bit(PIN_SET_ROLE)
                                             : pin_bit(PIN_SET_SESSION_AUTHORIZATION);
    case PIN_EFFECT_RESET_ALL:
        return PINS_CLEARED_BY_RESET_ALL;
    case PIN_EFFECT_DISCARD_ALL:
        return PINS_CLEARED_BY_DISCARD_ALL;
    case PIN_EFFECT_DEALLOCATE_ALL:
        return pin_bit(PIN_PREPARE);
    case PIN_EFFECT_DISCARD_TEMP:
        return pin_bit(PIN_TEMP_TABLE);
    case PIN_EFFECT_UNLISTEN_ALL:
        return pin_bit(PIN_LISTEN);
    case PIN_EFFECT_CLOSE_ALL:
        return pin_bit(PIN_CURSOR_WITH_HOLD);
    case PIN_EFFECT_ADVISORY_UNLOCK_ALL:
        return pin_bit(PIN_ADVISORY_LOCK);
    default:
        return 0;
    }
}

/* Notes what one statement does to settings; a pin reason if it cannot be followed. */
static enum pin_reason session_note_statement(struct client *c, const char *sql,
                                              const struct pinning_statement *st)
{
    struct session_tracking *t = &c->session;
    int rc = 0;

    switch (st->effect) {
    case PIN_EFFECT_TRACKED_SET:
        /* set_config(name, expression, false): only a reported value can be known */
        if (st->value_len == 0 && !param_set_get(&c->pool->defaults, st->name))
            return PIN_SET_CONFIG;
        rc = session_note_change(c, PARAM_CHANGE_SET, st->name,
                                 st->value_len ? sql + st->value_start : NULL, st->value_len);
        break;
    case PIN_EFFECT_TRACKED_RESET:
        rc = session_note_change(c, PARAM_CHANGE_RESET, st->name, NULL, 0);
        break;
    case PIN_EFFECT_RESET_ALL:
    case PIN_EFFECT_DISCARD_ALL:
        rc = session_note_change(c, PARAM_CHANGE_RESET_ALL, NULL, NULL, 0);
        break;
    case PIN_EFFECT_COMMIT:
        rc = session_note_change(c, PARAM_CHANGE_COMMIT, NULL, NULL, 0);
        break;
    case PIN_EFFECT_ROLLBACK:
        rc = session_note_change(c, PARAM_CHANGE_ROLLBACK, NULL, NULL, 0);
        break;
    case PIN_EFFECT_ROLLBACK_TO:
        rc = session_note_change(c, PARAM_CHANGE_ROLLBACK_TO, NULL, NULL, 0);
        break;
    default:
        break;
    }
    if (rc != 0)
        return PIN_SET; /* cannot follow it without memory: keeping the backend stays correct */
    t->pending_unpins |= session_unpins_of(st);
    if (st->effect == PIN_EFFECT_DISCARD_ALL)
        t->unpin_is_discard_all = true;
    return PIN_NONE;
}

static void session_save_transaction_start(struct client *c)
{
    struct session_tracking *t = &c->session;

    if (t->txn_saved)
        return;
    if (param_set_copy(&t->txn_client, &c->params) != 0 ||
        param_set_copy(&t->txn_server, &c->server->params) != 0) {
        /* Without a copy a rollback cannot be undone here: keep the backend instead. */
        session_pin(c, PIN_SET, 0, "", 0);
        return;
    }
    t->txn_saved = true;
}

/*
 * Goes through a query statement by statement (only when the scan found something to act on):
 * notes its setting changes and the pins it clears, and returns the bits of every pin reason in
 * it. *reason gets a pin reason if it had none and a setting cannot be followed.
 */
static uint32_t session_note_query(struct client *c, const char *sql, size_t len,
                                   const struct pinning_rules *rules, enum pin_reason *reason)
{
    struct pinning_statement st;
    size_t offset = 0;
    uint32_t pins = 0;

    while (pinning_next_statement(sql, len, &offset, rules, &st)) {
        enum pin_reason unfollowed = session_note_statement(c, sql, &st);
        enum pin_reason why = st.reason != PIN_NONE ? st.reason : unfollowed;

        if (why == PIN_NONE)
            continue;
        pins |= pin_bit(why);
        if (*reason == PIN_NONE)
            *reason = why;
    }
    return pins;
}

/* Is the query worth going through statement by statement? Rarely: most change nothing. */
static bool session_must_note(const struct client *c, const struct pinning_summary *summary,
                              enum pin_reason reason)
{
    return reason != PIN_NONE || summary->has_effect ||
           (summary->ends_transaction && session_transaction_matters(&c->session));
}

/* The transaction's changes are undone: back to what the client and its backend had before. */
static void session_transaction_rolled_back(struct client *c)
{
    struct session_tracking *t = &c->session;

    if (t->txn_saved) {
        param_set_copy(&c->params, &t->txn_client);
        if (c->server)
            param_set_copy(&c->server->params, &t->txn_server);
    }
    t->txn_saved = false;
    t->txn_changed = false;
    t->txn_unpins = 0;
}

/* Which of the transaction's changes a ROLLBACK TO SAVEPOINT undid is not known: keep the
 * backend, whose session is right whatever they were. */
static void session_savepoint_rolled_back(struct client *c)
{
    if (c->session.txn_changed && strcmp(c->worker->cfg->pinning, "off") != 0)
        session_pin(c, PIN_SET_BEFORE_SAVEPOINT_ROLLBACK, 0, "ROLLBACK TO SAVEPOINT",
                    strlen("ROLLBACK TO SAVEPOINT"));
}

static void session_clear_pins(struct client *c, uint32_t cleared)
{
    struct session_tracking *t = &c->session;

    t->pins &= ~cleared;
    if (!c->pinned || t->pins != 0)
        return;
    /* After the client's own DISCARD ALL the backend holds nothing sluice does not follow. */
    if (t->unpin_is_discard_all && c->server)
        c->server->session_dirty = false;
    log_info("C-%llu: %s/%s@%s:%d no longer pinned: it cleared its session state",
             (unsigned long long)c->id, c->database, c->user, c->addr, c->port);
    session_unpin(c);
}

static void session_transaction_committed(struct client *c)
{
    struct session_tracking *t = &c->session;

    if (t->txn_unpins)
        session_clear_pins(c, t->txn_unpins);
    t->txn_unpins = 0;
    t->unpin_is_discard_all = false;
    t->txn_saved = false;
    t->txn_changed = false;
}

static void session_apply_change(struct client *c, const struct param_change *change, char after)
{
    struct session_tracking *t = &c->session;

    switch (change->kind) {
    case PARAM_CHANGE_COMMIT:
        session_transaction_committed(c);
        return;
    case PARAM_CHANGE_ROLLBACK:
        session_transaction_rolled_back(c);
        t->pending_unpins = 0;
        return;
    case PARAM_CHANGE_ROLLBACK_TO:
        session_savepoint_rolled_back(c);
        return;
    case PARAM_CHANGE_SET:
    case PARAM_CHANGE_RESET:
    case PARAM_CHANGE_RESET_ALL:
        break;
    }
    session_save_transaction_start(c);
    if (params_apply_change(change, &t->startup, &c->pool->defaults, &c->params,
                            &c->server->params) != 0) {
        session_pin(c, PIN_SET, 0, "", 0);
        return;
    }
    t->txn_changed = true;
    if (change->kind != PARAM_CHANGE_SET) {
        /* The backend went back to its own defaults, the client to its startup values. */
        t->report_params = true;
        if (after != 'I')
            t->params_resync = true;
    }
}

void session_ready_for_query(struct client *c, char before, char after)
{
    struct session_tracking *t = &c->session;
    bool failed = t->statement_failed;
    size_t settled = 0;

    t->statement_failed = false;
    t->ready_count++;
    if (t->changes.n == 0 && !t->txn_saved && t->pending_unpins == 0 && t->txn_unpins == 0)
        return;
    while (settled < t->changes.n && t->changes.items[settled].tag <= t->ready_count)
        settled++;
    if (before == 'E' || failed) {
        /* Nothing these statements did stays; the transaction may have ended or recovered. */
        param_changes_drop_first(&t->changes, settled);
        t->pending_unpins = 0;
        if (after == 'I')
            session_transaction_rolled_back(c);
        else if (after == 'T')
            session_savepoint_rolled_back(c);
        if (after == 'I')
            t->unpin_is_discard_all = false;
        return;
    }
    for (size_t i = 0; i < settled; i++)
        session_apply_change(c, &t->changes.items[i], after);
    param_changes_drop_first(&t->changes, settled);
    t->txn_unpins |= t->pending_unpins;
    t->pending_unpins = 0;
    if (after == 'I')
        session_transaction_committed(c);
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
static void session_answer_deallocate(struct client *c, uint32_t msg_len)
{
    struct msgbuf *mb = &c->worker->scratch;
    static const uint8_t complete[] = { 'C', 0, 0, 0, 15, 'D', 'E', 'A', 'L', 'L', 'O', 'C', 'A', 'T', 'E', 0 };
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    msgbuf_reset(mb);
    msgbuf_append(mb, complete, sizeof(complete));
    proto_build_ready_for_query(mb, c->server->ready_status ? c->server->ready_status : 'I');
    conn_send(&c->conn, mb);
}

/* ---- simple query ---- */

static enum session_step session_query(struct client *c, uint32_t msg_len, bool in_flight)
{
    struct server *s = c->server;
    const char *sql;
    struct pinning_summary summary;

    if (msg_len > SESSION_MAX_SCANNED_QUERY) {
        reply_queue_push(&s->replies, REPLY_SYNC, NULL);
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
    uint32_t pins = 0;
    if (session_must_note(c, &summary, reason))
        pins = session_note_query(c, sql, len, &rules, &reason);

    if (summary.forgets_statements) {
        prepared_client_forget_all(&c->prepared);
        prepared_server_forget_all(&s->prepared);
    }
    bool reject = reason != PIN_NONE && strcmp(c->worker->cfg->pinning, "reject") == 0;
    if (reject) {
        reply_queue_push(&s->replies, REPLY_SYNC, NULL);
        session_reject(c, reason, msg_len);
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
            session_answer_deallocate(c, msg_len);
            return SESSION_ANSWERED;
        }
        if (!session_rewrite_deallocates(c, sql, len, &rules, &rewritten, &is_rewritten)) {
            msgbuf_free(&rewritten);
            client_fail(c, "53200", "out of memory for prepared statements");
            return SESSION_CLOSED;
        }
    }
    reply_queue_push(&s->replies, REPLY_SYNC, NULL);
    if (reason != PIN_NONE && strcmp(c->worker->cfg->pinning, "off") != 0)
        session_pin(c, reason, pins, sql, len);
    if (!is_rewritten) {
        msgbuf_free(&rewritten);
        return SESSION_FORWARD;
    }
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    proto_build_query(mb, (const char *)rewritten.data);
    msgbuf_free(&rewritten);
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    conn_send(&s->conn, mb);
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
        reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL);
    }
    /* Close first: Parse must not fail because the backend has it after all. */
    prepared_build_close(mb, stmt->backend_name);
    reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL);
    prepared_build_parse(mb, stmt);
    reply_queue_push_binding(&s->replies, parse_reply, stmt, binding);
    return conn_send(&s->conn, mb);
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
        reply_queue_push(&s->replies, REPLY_PARSE, NULL);
        if (!replacement)
            return SESSION_FORWARD;
        evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
        conn_send(&s->conn, replacement);
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
        conn_write(&c->conn, parse_complete, sizeof(parse_complete));
        return SESSION_HANDLED;
    }
    session_inject_parse(c, stmt, ensured == PREPARED_PARSE_NEEDED ? victim : NULL, REPLY_PARSE,
                         binding);
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
    struct pinning_summary summary;
    size_t query_len = strlen(parse.query);
    enum pin_reason reason = pinning_scan(parse.query, query_len, &rules, &summary);
    uint32_t pins = 0;
    if (session_must_note(c, &summary, reason))
        pins = session_note_query(c, parse.query, query_len, &rules, &reason);
    if (reason == PIN_NONE || strcmp(c->worker->cfg->pinning, "off") == 0)
        return session_parse_statement(c, &parse, NULL, msg_len, in_flight);
    if (strcmp(c->worker->cfg->pinning, "reject") != 0) {
        session_pin(c, reason, pins, parse.query, query_len);
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
    if (failed) {
        client_fail(c, "53200", "out of memory for prepared statements");
        return SESSION_CLOSED;
    }
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
    if (!conn_send(&c->server->conn, mb)) {
        client_fail(c, "53200", "out of memory");
        return SESSION_CLOSED;
    }
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
    if (type == 'C')
        reply_queue_push(&s->replies, REPLY_CLOSE, NULL);
    if (kind != 'S' || !*name || !session_prepared_enabled(c))
        return SESSION_FORWARD;

    const char *backend_name;
    if (type == 'C') {
        /* Other clients may share the backend statement: it stays; only the name goes. */
        prepared_client_remove(&c->prepared, name);
        backend_name = SESSION_NO_STATEMENT;
    } else {
        backend_name = session_backend_name(c, name, &failed);
        if (failed) {
            client_fail(c, "53200", "out of memory for prepared statements");
            return SESSION_CLOSED;
        }
        if (!backend_name)
            return SESSION_FORWARD;
    }
    struct msgbuf *mb = &c->worker->scratch;
    msgbuf_reset(mb);
    if (prepared_rewrite(mb, (char)type, body, msg_len - 4, backend_name) != PROTO_OK ||
        !conn_send(&s->conn, mb)) {
        session_fail(c, "malformed Describe or Close message");
        return SESSION_CLOSED;
    }
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
        reply_queue_push(&c->server->replies, REPLY_SYNC, NULL);
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
