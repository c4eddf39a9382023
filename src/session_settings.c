/*
 * session_settings.c: what a client's statements do to its session under transaction pooling.
 * SET, RESET and set_config(..., false) are noted as they pass and settle with the ReadyForQuery
 * that ends their statement: applied when it succeeded (kept across backends from then on),
 * undone with a rollback; statements that leave state no other backend can have pin the client
 * to its backend until it clears that state.
 */
#include "session_settings.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "log.h"
#include "params.h"
#include "pool.h"
#include "server.h"
#include "worker.h"

/* Kept in SHOW PINNED and the log: the start of the statement that pinned a client. */
#define SESSION_PIN_STATEMENT_LEN 200

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
}

void session_tracking_free(struct session_tracking *t)
{
    param_set_free(&t->startup);
    param_changes_free(&t->changes);
    if (t->txn_start) {
        param_set_free(&t->txn_start->client);
        param_set_free(&t->txn_start->server);
        free(t->txn_start);
        t->txn_start = NULL;
    }
}

static uint32_t pin_bit(enum pin_reason reason)
{
    return 1u << (unsigned)reason;
}

struct pinning_rules session_rules(const struct client *c)
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
void session_pin(struct client *c, enum pin_reason reason, uint32_t pins, const char *sql,
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
    c->pin_reason = (uint8_t)reason;
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
    atomic_fetch_add(&pool->shared->n_pinned, 1);
    if ((size_t)reason < sizeof(pool->stats.pin_events) / sizeof(pool->stats.pin_events[0]))
        pool->stats.pin_events[reason]++;
    log_info("C-%llu: %s/%s@%s:%d pinned to its backend: %s", (unsigned long long)c->id,
             c->database, c->user, client_address(c).text, c->port, pin_reason_name(reason));
}

void session_unpin(struct client *c)
{
    if (!c->pinned)
        return;
    c->pinned = false;
    c->session.pins = 0;
    if (c->pool) {
        c->pool->n_pinned--;
        atomic_fetch_sub(&c->pool->shared->n_pinned, 1);
    }
    free(c->pin_statement);
    c->pin_statement = NULL;
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
    if (!t->txn_start && (t->txn_start = malloc(sizeof(*t->txn_start)))) {
        param_set_init(&t->txn_start->client);
        param_set_init(&t->txn_start->server);
    }
    if (!t->txn_start || param_set_copy(&t->txn_start->client, &c->params) != 0 ||
        param_set_copy(&t->txn_start->server, &c->server->params) != 0) {
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
uint32_t session_note_query(struct client *c, const char *sql, size_t len,
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

bool session_must_note(const struct client *c, const struct pinning_summary *summary,
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
        param_set_copy(&c->params, &t->txn_start->client);
        if (c->server)
            param_set_copy(&c->server->params, &t->txn_start->server);
    }
    t->txn_saved = false;
    t->txn_changed = false;
    t->txn_unpins = 0;
}

/*
 * The client's backend died under its transaction: the transaction is gone as if rolled back, and
 * nothing noted in it will settle, so its settings return to where the transaction began.
 */
void session_backend_lost(struct client *c)
{
    struct session_tracking *t = &c->session;

    param_changes_drop_first(&t->changes, t->changes.n);
    t->pending_unpins = 0;
    t->statement_failed = false;
    session_transaction_rolled_back(c);
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
             (unsigned long long)c->id, c->database, c->user, client_address(c).text, c->port);
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
        /* Within a transaction, or on a pinned client's backend that stays, the client's own
         * values are applied before its next statement; otherwise at the next hand-out. */
        if (after != 'I' || c->pinned)
            t->params_resync = true;
    }
}

/* Puts back on the backend's set the reported parameters (ParameterStatus) it had in before. */
static int session_keep_reported(struct client *c, const struct param_set *before)
{
    for (uint32_t i = 0; i < before->n; i++) {
        const struct param_entry *e = &before->entries[i];
        if (param_set_find(&c->pool->defaults, e->name) &&
            param_set_put(&c->server->params, e->name, e->value) != 0)
            return -1;
    }
    return 0;
}

/*
 * A failed transaction that ended without an error since: a COMMIT or ROLLBACK among the settled
 * changes rolled it back (in a pipeline, an Execute of either; BEGIN may have opened the next
 * block behind it). The failed transaction's changes go with it; those noted after the end ran
 * in the next transaction and stay in *settled to be applied. false if no end was noted.
 */
static bool session_failed_transaction_ended(struct client *c, size_t *settled)
{
    struct session_tracking *t = &c->session;
    size_t end = 0;
    while (end < *settled && t->changes.items[end].kind != PARAM_CHANGE_COMMIT &&
           t->changes.items[end].kind != PARAM_CHANGE_ROLLBACK)
        end++;
    if (end == *settled)
        return false;
    param_changes_drop_first(&t->changes, end + 1);
    *settled -= end + 1;
    t->pending_unpins = 0;   /* which statement they came from is not kept: unpin later */
    /* The backend's reported parameters are what its ParameterStatus messages said last,
     * changes after the end included: they stay over the restore to the transaction's start. */
    struct param_set now;
    param_set_init(&now);
    bool copied = c->server && param_set_copy(&now, &c->server->params) == 0;
    session_transaction_rolled_back(c);
    if (c->server && (!copied || session_keep_reported(c, &now) != 0))
        session_pin(c, PIN_SET, 0, "", 0);   /* out of memory: the backend stays right */
    param_set_free(&now);
    t->unpin_is_discard_all = false;
    if (*settled > 0)
        session_save_transaction_start(c);   /* where the next transaction began */
    return true;
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
    bool ended = before == 'E' && !failed && after != 'E' &&
                 session_failed_transaction_ended(c, &settled);
    if (!ended && (before == 'E' || failed)) {
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
