/*
 * session.c: transaction pooling without surprises. Each client message that touches session
 * state passes through here on its way to a backend:
 *   - named prepared statements (Parse/Bind/Describe/Close) are renamed to the shared backend
 *     statement and prepared on whichever backend the client has now, once per backend;
 *   - SET, RESET and set_config(..., false) are noted and, once their transaction commits,
 *     become the client's settings, replayed on whichever backend it gets next; RESET returns to
 *     the client's own startup values (what they do is followed in session_settings.c);
 *   - statements that leave state that cannot move (temp tables, LISTEN, advisory locks...) pin
 *     the client to its backend until it clears that state or leaves (session_settings.c), or
 *     are refused (pinning = reject);
 *   - DEALLOCATE [ALL] and DISCARD ALL act on the client's own statements: the backend runs a
 *     harmless command in their place (or one raising the error Postgres would), whose
 *     CommandComplete sluice gives the client's tag, whichever protocol carries them (a pinned
 *     client's DISCARD ALL runs as such on what is in effect its own backend);
 *   - the unnamed statement is remembered and parsed again where its Bind lands;
 *   - a backend statement whose plan can no longer give its result type (0A000 after a schema
 *     change) is retired, so the next Parse prepares it afresh.
 * Replies to the messages sluice adds itself are counted in a queue and kept from the client.
 */
#include "session.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "conn.h"
#include "fault.h"
#include "pinning.h"
#include "pool.h"
#include "prepared.h"
#include "server.h"
#include "session_settings.h"

/* Queries larger than this are passed on without looking for session state in them. */
#define SESSION_MAX_SCANNED_QUERY (1024 * 1024)
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

/* What an expectation owns. Names it took are gone for good here (the command ran, or the
 * client and backend part): session_give_back is the other way out. */
static void reply_expectation_free(struct reply_expectation *e)
{
    for (uint32_t i = 0; i < e->n_retags; i++)
        prepared_taken_free(e->retags[i].taken);
    free(e->retags);
    free(e->name);
    prepared_taken_free(e->taken);
}

/* Takes item (what it owns is freed if it cannot be queued). */
static bool reply_queue_push_item(struct reply_queue *q, struct reply_expectation item)
{
    if (q->count == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 16;
        struct reply_expectation *items =
            fault_alloc_fails(FAULT_SITE_REPLY_QUEUE) ? NULL : malloc(cap * sizeof(*items));
        if (!items) {
            reply_expectation_free(&item);
            return false;
        }
        for (uint32_t i = 0; i < q->count; i++)
            items[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = items;
        q->head = 0;
        q->cap = cap;
    }
    q->items[(q->head + q->count) % q->cap] = item;
    q->count++;
    if (item.stmt)
        prepared_reply_owed(item.stmt);
    return true;
}

static bool reply_queue_push_binding(struct reply_queue *q, enum reply_kind kind,
                                     struct prepared_statement *stmt, uint64_t binding)
{
    return reply_queue_push_item(q, (struct reply_expectation){ .kind = kind, .stmt = stmt,
                                                                .binding = binding });
}

static bool reply_queue_push(struct reply_queue *q, enum reply_kind kind, struct prepared_statement *stmt)
{
    return reply_queue_push_binding(q, kind, stmt, 0);
}

static struct reply_expectation *reply_queue_front(const struct reply_queue *q)
{
    return q->count ? &q->items[q->head] : NULL;
}

/* The index-th expectation from the front (index < count). */
static struct reply_expectation *reply_queue_at(const struct reply_queue *q, uint32_t index)
{
    return &q->items[(q->head + index) % q->cap];
}

static void reply_queue_pop(struct reply_queue *q)
{
    if (!q->count)
        return;
    struct prepared_statement *stmt = q->items[q->head].stmt;
    reply_expectation_free(&q->items[q->head]);
    if (stmt)
        prepared_reply_settled(stmt);
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

/* ---- what sluice keeps about a backend ---- */

static void session_forget_portals(struct session_backend *b)
{
    for (size_t i = 0; i < b->n_portals; i++) {
        free(b->portals[i].name);
        free(b->portals[i].statement);
    }
    free(b->portals);
    b->portals = NULL;
    b->n_portals = 0;
}

void session_backend_free(struct session_backend *b)
{
    session_forget_portals(b);
    memset(b, 0, sizeof(*b));
}

void session_internal_query(struct server *s)
{
    /* A simple query destroys the unnamed statement; sluice's run between transactions, when
     * no portal is left either. */
    s->session.unnamed_client = 0;
    s->session.unnamed_serial = 0;
    s->session.skipping = false;
    session_forget_portals(&s->session);
}

static struct session_portal *session_find_portal(struct server *s, const char *name)
{
    for (size_t i = 0; i < s->session.n_portals; i++) {
        if (strcmp(s->session.portals[i].name, name) == 0)
            return &s->session.portals[i];
    }
    return NULL;
}

static void session_drop_portal(struct server *s, const char *name)
{
    struct session_portal *p = session_find_portal(s, name);
    if (!p)
        return;
    free(p->name);
    free(p->statement);
    *p = s->session.portals[--s->session.n_portals];
}

/*
 * Bind of portal to a statement whose text is one command sluice answers (or to any other, which
 * replaces what the portal was). false if out of memory.
 */
static bool session_track_portal(struct server *s, const char *portal, uint8_t command,
                                 const char *statement)
{
    struct session_backend *b = &s->session;
    if (b->n_portals == 0 && command == SESSION_COMMAND_NONE)
        return true;
    session_drop_portal(s, portal);
    if (command == SESSION_COMMAND_NONE)
        return true;
    struct session_portal *grown = realloc(b->portals, (b->n_portals + 1) * sizeof(*grown));
    if (!grown)
        return false;
    b->portals = grown;
    struct session_portal *p = &b->portals[b->n_portals];
    p->name = strdup(portal);
    p->statement = strdup(statement ? statement : "");
    p->command = command;
    p->done = false;
    if (!p->name || !p->statement) {
        free(p->name);
        free(p->statement);
        return false;
    }
    b->n_portals++;
    return true;
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

/* The client's statements, made at first use (see struct client). NULL if out of memory. */
static struct prepared_client *session_statements(struct client *c)
{
    if (!c->prepared && (c->prepared = malloc(sizeof(*c->prepared))))
        prepared_client_init(c->prepared, c->worker->prepared);
    return c->prepared;
}

/* The client's statement of that name, or NULL (a client with no statements yet has none). */
static struct prepared_statement *session_lookup(const struct client *c, const char *name)
{
    return c->prepared ? prepared_client_lookup(c->prepared, name) : NULL;
}

/* The client's unnamed statement: serial 0 if it has none. */
static const struct prepared_unnamed *session_unnamed(const struct client *c)
{
    static const struct prepared_unnamed none;
    return c->prepared ? &c->prepared->unnamed : &none;
}

/* DISCARD ALL, DEALLOCATE ALL: the client's named statements go. */
static void session_forget_statements(struct client *c)
{
    if (c->prepared)
        prepared_client_forget_all(c->prepared);
}

/*
 * The same, the names kept until the backend has run the command (see prepared_taken and
 * session_awaits_names).
 */
static void session_take_statements(struct client *c, struct prepared_taken **taken)
{
    if (c->prepared) {
        prepared_client_take_all(c->prepared, taken);
        c->server->session.may_owe_names = true;
    }
}

/* One name, as session_take_statements: false if the client has no statement by that name. */
static bool session_take_statement(struct client *c, const char *name,
                                   struct prepared_taken **taken)
{
    if (!c->prepared || !prepared_client_take(c->prepared, name, taken))
        return false;
    c->server->session.may_owe_names = true;
    return true;
}

/* A simple query, or a Close of the unnamed statement, destroys the client's. */
static void session_clear_unnamed(struct client *c)
{
    if (c->prepared)
        prepared_client_clear_unnamed(c->prepared);
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

static bool session_ensure(struct client *c, struct prepared_statement *stmt);
/* ---- statements sluice answers for the client: DEALLOCATE [ALL], DISCARD ALL ---- */

/* Runs in place of a client's command that succeeds: it changes nothing and returns no rows. */
#define SESSION_NOOP_SQL "DO $sluice$BEGIN END$sluice$"
/* The statement and portal sluice runs such commands under, in the extended protocol. */
#define SESSION_COMMAND_NAME "sluice_command"

static enum session_command session_command_of(const struct pinning_statement *st)
{
    switch (st->effect) {
    case PIN_EFFECT_DEALLOCATE:
        return SESSION_COMMAND_DEALLOCATE;
    case PIN_EFFECT_DEALLOCATE_ALL:
        return SESSION_COMMAND_DEALLOCATE_ALL;
    case PIN_EFFECT_DISCARD_ALL:
        return SESSION_COMMAND_DISCARD_ALL;
    default:
        return SESSION_COMMAND_NONE;
    }
}

/* The command a Parse's text is, if it is one statement that sluice answers. */
static enum session_command session_command_of_summary(const struct pinning_summary *sum)
{
    if (sum->n_statements == 0)
        return SESSION_COMMAND_EMPTY_QUERY;
    if (sum->n_statements != 1)
        return SESSION_COMMAND_NONE;   /* several: Postgres refuses such a Parse itself */
    if (sum->deallocates)
        return SESSION_COMMAND_DEALLOCATE;
    if (sum->forgets_statements)
        return sum->resets_untracked ? SESSION_COMMAND_DISCARD_ALL : SESSION_COMMAND_DEALLOCATE_ALL;
    if (sum->closes_transaction)
        return SESSION_COMMAND_CLOSES_TRANSACTION;
    return SESSION_COMMAND_NONE;
}

static const char *session_command_tag(uint8_t command)
{
    switch (command) {
    case SESSION_COMMAND_DEALLOCATE:
        return "DEALLOCATE";
    case SESSION_COMMAND_DEALLOCATE_ALL:
        return "DEALLOCATE ALL";
    case SESSION_COMMAND_DISCARD_ALL:
        return "DISCARD ALL";
    }
    return "";
}

/*
 * DISCARD ALL (as RESET ALL) when its transaction may have begun before it, in an unsynced
 * pipeline or a block opened by a query still running: see session_apply_command. message: what
 * Postgres says then.
 */
#define SESSION_DISCARD_CHECKED_SQL(message)                                                    \
    "DO $sluice$BEGIN IF pg_catalog.transaction_timestamp() < pg_catalog.statement_timestamp() " \
    "THEN RAISE EXCEPTION USING ERRCODE = '25001', "                                           \
    "MESSAGE = '" message "'; END IF; RESET ALL; END$sluice$"
#define SESSION_DISCARD_IN_PIPELINE_SQL                                                         \
    SESSION_DISCARD_CHECKED_SQL("DISCARD ALL cannot be executed within a pipeline")
#define SESSION_DISCARD_IN_BLOCK_SQL                                                            \
    SESSION_DISCARD_CHECKED_SQL("DISCARD ALL cannot run inside a transaction block")

static void session_append_text(struct msgbuf *out, const char *text)
{
    msgbuf_append(out, text, strlen(text));
}

/*
 * name as an SQL expression: hex-encoded, read in the client's encoding, so nothing in it can end
 * a literal or a dollar quote.
 */
static void session_append_name_expression(struct msgbuf *out, const char *name)
{
    static const char digits[] = "0123456789abcdef";
    session_append_text(out, "pg_catalog.convert_from(pg_catalog.decode('");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        char pair[2] = { digits[*p >> 4], digits[*p & 15] };
        msgbuf_append(out, pair, 2);
    }
    session_append_text(out, "', 'hex'), pg_catalog.pg_client_encoding())");
}

/* The RAISE of session_build_raise_sql, without DO around it. */
static void session_append_raise(struct msgbuf *out, const char *sqlstate,
                                 const char *message_format, const char *name)
{
    session_append_text(out, "RAISE EXCEPTION USING ERRCODE = '");
    msgbuf_append(out, sqlstate, strlen(sqlstate));
    session_append_text(out, "', MESSAGE = pg_catalog.format('");
    msgbuf_append(out, message_format, strlen(message_format));
    session_append_text(out, "', ");
    session_append_name_expression(out, name);
    session_append_text(out, ");");
}

/*
 * SQL that fails with sqlstate and format(message_format, name), in order and with the
 * transaction, as Postgres' own error would. message_format must hold neither a quote nor a
 * dollar sign.
 */
static void session_build_raise_sql(struct msgbuf *out, const char *sqlstate,
                                    const char *message_format, const char *name)
{
    session_append_text(out, "DO $sluice$BEGIN ");
    session_append_raise(out, sqlstate, message_format, name);
    session_append_text(out, " END$sluice$");
}

/*
 * What the backend runs for an Execute of a portal bound to DEALLOCATE [ALL]: command_sql (the
 * command in its place, or its error), unless the backend no longer holds the client's portal
 * (its Bind made it there): an Execute of COMMIT further on in the pipeline ended the transaction
 * that made it, and Postgres answers 34000 before it looks at anything else.
 */
static void session_build_portal_checked_sql(struct msgbuf *out, const char *portal,
                                             const struct msgbuf *command_sql)
{
    session_append_text(out, "DO $sluice_portal$BEGIN IF NOT EXISTS (SELECT FROM "
                             "pg_catalog.pg_cursors WHERE name = ");
    session_append_name_expression(out, portal);
    session_append_text(out, ") THEN ");
    session_append_raise(out, "34000", "portal \"%s\" does not exist", portal);
    /* command_sql holds only $sluice$ quotes and hex-encoded names: nothing ends this one */
    session_append_text(out, " END IF; EXECUTE $sluice_command$");
    msgbuf_append(out, command_sql->data, command_sql->len);
    session_append_text(out, "$sluice_command$; END$sluice_portal$");
}

/*
 * Applies a client's command to its own statements and appends the SQL the backend runs in its
 * place: a no-op, RESET ALL for DISCARD ALL (the backend then reports the parameters it resets,
 * which the client follows), or an error Postgres would raise. *retag: the backend's
 * CommandComplete for it must carry the command's tag. status_known: nothing before the command
 * can have changed the backend's last transaction status.
 */
static void session_apply_command(struct client *c, enum session_command command,
                                  const char *name, bool status_known, struct msgbuf *sql,
                                  bool *retag, struct prepared_taken **taken)
{
    struct server *s = c->server;
    *retag = true;
    if (status_known && s->ready_status == 'E') {
        /* The backend refuses the no-op too (25P02), and Postgres would not have run it. */
        session_append_text(sql, SESSION_NOOP_SQL);
        return;
    }
    switch (command) {
    case SESSION_COMMAND_DEALLOCATE:
        if (!session_take_statement(c, name, taken)) {
            session_build_raise_sql(sql, "26000", "prepared statement \"%s\" does not exist", name);
            *retag = false;
            return;
        }
        break;
    case SESSION_COMMAND_DEALLOCATE_ALL:
        session_take_statements(c, taken);
        break;
    case SESSION_COMMAND_DISCARD_ALL:
        if (status_known && s->ready_status == 'T') {
            session_build_raise_sql(sql, "25001",
                                    "DISCARD ALL cannot run inside a transaction block", "");
            *retag = false;
            return;
        }
        session_take_statements(c, taken);
        /* the settings it resets are followed by session_note_statement, as for RESET ALL */
        if (s->session.pipelined) {
            /* After an Execute in the transaction of the client's unsynced pipeline Postgres
             * refuses DISCARD ALL (25001); the check at run time is for an Execute of BEGIN,
             * or of COMMIT AND CHAIN, which leave a block open where it fails too. */
            session_append_text(sql, SESSION_DISCARD_IN_PIPELINE_SQL);
            return;
        }
        if (!status_known && !c->unsynced) {
            /* Behind simple queries still running (BEGIN and this in one write): the
             * transaction began before this query only if one of them opened a block. */
            session_append_text(sql, SESSION_DISCARD_IN_BLOCK_SQL);
            return;
        }
        session_append_text(sql, "RESET ALL");
        return;
    case SESSION_COMMAND_NONE:
    case SESSION_COMMAND_CLOSES_TRANSACTION:
    case SESSION_COMMAND_EMPTY_QUERY:
        break;
    }
    session_append_text(sql, SESSION_NOOP_SQL);
}

/* A pinned client's DISCARD ALL runs on its own backend: everything prepared there goes. */
static void session_discard_on_own_backend(struct client *c)
{
    session_forget_statements(c);
    prepared_server_forget_all(&c->server->prepared);
}

/* Takes taken (freed if it cannot be kept). */
static bool session_add_retag(struct reply_expectation *e, uint32_t index, uint8_t command,
                              struct prepared_taken *taken)
{
    struct reply_retag *grown = realloc(e->retags, (e->n_retags + 1) * sizeof(*grown));
    if (!grown) {
        prepared_taken_free(taken);
        return false;
    }
    e->retags = grown;
    e->retags[e->n_retags++] = (struct reply_retag){ index, command, taken };
    return true;
}

/*
 * Is the backend's last ReadyForQuery status still the transaction's status at the client's next
 * query? Only a query, a Sync or an Execute (of BEGIN, COMMIT...) can change it: Parse, Bind,
 * Describe and Close replies still owed do not.
 */
static bool session_status_known(const struct client *c, bool in_flight)
{
    return !in_flight || (c->pending_ready == 0 && !c->server->session.executed);
}

/*
 * A simple query's DEALLOCATE [ALL] and DISCARD ALL statements, each replaced in the text by what
 * session_apply_command says; sync gets the CommandCompletes to retag. *rewritten: out holds
 * the new text (NUL included). false if out of memory.
 */
static bool session_rewrite_commands(struct client *c, const char *sql, size_t len,
                                     const struct pinning_rules *rules, size_t n_statements,
                                     bool in_flight, struct msgbuf *out,
                                     struct reply_expectation *sync, bool *rewritten)
{
    struct pinning_statement st;
    size_t offset = 0, copied = 0;
    uint32_t index = 0;

    *rewritten = false;
    while (pinning_next_statement(sql, len, &offset, rules, &st)) {
        uint32_t this_index = index++;
        enum session_command command = session_command_of(&st);
        if (command == SESSION_COMMAND_NONE)
            continue;
        if (command == SESSION_COMMAND_DISCARD_ALL && c->pinned) {
            if (n_statements == 1)
                session_discard_on_own_backend(c);
            continue;
        }
        if (command == SESSION_COMMAND_DISCARD_ALL && n_statements > 1)
            continue;   /* Postgres refuses it in a multi-statement query: so does the backend */
        bool retag;
        struct prepared_taken *taken = NULL;
        msgbuf_append(out, sql + copied, st.start - copied);
        session_apply_command(c, command, st.name_truncated ? "" : st.name,
                              this_index == 0 && session_status_known(c, in_flight), out, &retag,
                              &taken);
        if (retag && !session_add_retag(sync, this_index, (uint8_t)command, taken))
            return false;
        copied = st.start + st.len;
        *rewritten = true;
    }
    msgbuf_append(out, sql + copied, len - copied);
    msgbuf_append(out, "", 1);
    return !out->failed;
}

/* Does the statement at p start with this keyword? */
static bool session_starts_with_word(const char *p, const char *word)
{
    size_t n = strlen(word);
    return strncasecmp(p, word, n) == 0 && !isalnum((unsigned char)p[n]) && p[n] != '_';
}

/*
 * Does a query (NUL-terminated) change the schema: ALTER, DROP, CREATE OR REPLACE? Then a shared
 * statement's result type may have changed under it, and Postgres would give 0A000 on its next
 * use. Every statement is retired instead, so each next Parse prepares afresh. A plain search
 * first: most queries hold none of these words.
 */
static bool session_changes_schema(const char *sql, size_t len, const struct pinning_rules *rules)
{
    struct pinning_statement st;
    size_t offset = 0;

    if (!strcasestr(sql, "alter") && !strcasestr(sql, "drop") && !strcasestr(sql, "replace"))
        return false;
    while (pinning_next_statement(sql, len, &offset, rules, &st)) {
        const char *head = sql + st.start;
        if (session_starts_with_word(head, "alter") || session_starts_with_word(head, "drop"))
            return true;
        if (session_starts_with_word(head, "create")) {
            const char *after = head + strlen("create");
            while (isspace((unsigned char)*after))
                after++;
            if (session_starts_with_word(after, "or"))
                return true;
        }
    }
    return false;
}

/* ---- simple query ---- */

static enum session_step session_query(struct client *c, uint32_t msg_len, bool in_flight)
{
    struct server *s = c->server;
    const char *sql;
    struct pinning_summary summary;

    /* A simple query destroys the unnamed statement, the client's as much as the backend's
     * (kept in the expectation: the backend may skip the query, see session_skip_to_sync). */
    struct reply_expectation sync = {
        .kind = REPLY_SYNC, .query = true, .untracked = s->session.untracked,
        .unnamed_serial = c->prepared ? c->prepared->unnamed.serial : 0,
        .unnamed_command = c->prepared ? c->prepared->unnamed.command : 0,
    };
    session_clear_unnamed(c);
    s->session.unnamed_client = 0;
    if (msg_len > SESSION_MAX_SCANNED_QUERY) {
        if (!reply_queue_push_item(&s->replies, sync))
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
    uint32_t pins = 0;
    if (session_must_note(c, &summary, reason))
        pins = session_note_query(c, sql, len, &rules, &reason);

    bool reject = reason != PIN_NONE && strcmp(c->worker->cfg->pinning, "reject") == 0;
    if (reject) {
        if (!reply_queue_push_item(&s->replies, sync) || !session_reject(c, reason, msg_len))
            return session_out_of_memory(c);
        return SESSION_HANDLED;
    }
    if (session_prepared_enabled(c) && session_changes_schema(sql, len, &rules))
        prepared_registry_retire_all(c->worker->prepared);
    struct msgbuf rewritten;
    bool is_rewritten = false;
    msgbuf_init(&rewritten);
    if ((summary.deallocates || summary.forgets_statements) && session_prepared_enabled(c) &&
        !session_rewrite_commands(c, sql, len, &rules, summary.n_statements, in_flight,
                                  &rewritten, &sync, &is_rewritten)) {
        msgbuf_free(&rewritten);
        free(sync.retags);
        return session_out_of_memory(c);
    }
    if (!reply_queue_push_item(&s->replies, sync)) {
        msgbuf_free(&rewritten);
        return session_out_of_memory(c);
    }
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

/* Type and length of a message whose body is body_len bytes. */
static void session_build_header(struct msgbuf *mb, char type, size_t body_len)
{
    uint32_t be_len = htonl((uint32_t)(body_len + 4));
    msgbuf_append(mb, &type, 1);
    msgbuf_append(mb, &be_len, 4);
}

static void session_build_close(struct msgbuf *mb, char kind, const char *name)
{
    session_build_header(mb, 'C', 1 + strlen(name) + 1);
    msgbuf_append(mb, &kind, 1);
    msgbuf_append(mb, name, strlen(name) + 1);
}

/*
 * Runs sql on the backend in place of a client's Execute or Parse: under a statement and portal
 * of sluice's own (the client's unnamed ones stay as they are), every reply but the last kept
 * from the client. The last is an error, or (retag) a CommandComplete given retag's tag.
 */
static bool session_inject_command(struct client *c, const char *sql, uint8_t retag,
                                   struct prepared_taken *taken)
{
    static const uint8_t no_parameters[2] = { 0, 0 };
    static const uint8_t bind_tail[6] = { 0, 0, 0, 0, 0, 0 };   /* no formats, values, results */
    static const uint8_t all_rows[4] = { 0, 0, 0, 0 };
    const size_t name_size = sizeof(SESSION_COMMAND_NAME);
    struct server *s = c->server;
    struct msgbuf *mb = &c->worker->scratch;
    struct reply_expectation execute = { .kind = REPLY_EXECUTE_OURS, .taken = taken };

    msgbuf_reset(mb);
    session_build_close(mb, 'P', SESSION_COMMAND_NAME);
    session_build_close(mb, 'S', SESSION_COMMAND_NAME);
    session_build_header(mb, 'P', name_size + strlen(sql) + 1 + sizeof(no_parameters));
    msgbuf_append(mb, SESSION_COMMAND_NAME, name_size);
    msgbuf_append(mb, sql, strlen(sql) + 1);
    msgbuf_append(mb, no_parameters, sizeof(no_parameters));
    session_build_header(mb, 'B', 2 * name_size + sizeof(bind_tail));
    msgbuf_append(mb, SESSION_COMMAND_NAME, name_size);
    msgbuf_append(mb, SESSION_COMMAND_NAME, name_size);
    msgbuf_append(mb, bind_tail, sizeof(bind_tail));
    session_build_header(mb, 'E', name_size + sizeof(all_rows));
    msgbuf_append(mb, SESSION_COMMAND_NAME, name_size);
    msgbuf_append(mb, all_rows, sizeof(all_rows));
    if (retag != SESSION_COMMAND_NONE && !session_add_retag(&execute, 0, retag, NULL)) {
        prepared_taken_free(taken);
        return false;
    }
    if (!reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL) ||
        !reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL) ||
        !reply_queue_push(&s->replies, REPLY_PARSE_OURS, NULL) ||
        !reply_queue_push(&s->replies, REPLY_BIND_OURS, NULL)) {
        reply_expectation_free(&execute);
        return false;
    }
    return reply_queue_push_item(&s->replies, execute) && conn_send(&s->conn, mb);
}

/*
 * A Parse of a name the client already has. PostgreSQL looks at the statement before its name:
 * a syntax error, a failed transaction (25P02, unless it is COMMIT or ROLLBACK) or an unknown
 * table is what the client gets, and 42P05 only for a statement that parses. So the backend does
 * the same: it parses the client's text under sluice's own name (which session_inject_command
 * closes before its next use), then again under that name, which it refuses with 42P05 (the
 * error sluice passes on, naming the client's statement). An error in the first is the
 * client's, as it is; the backend then skips the second, and the rest up to Sync.
 */
static enum session_step session_parse_existing(struct client *c,
                                                const struct prepared_parse *parse,
                                                uint32_t msg_len)
{
    struct server *s = c->server;
    struct msgbuf *mb = &c->worker->scratch;
    const size_t name_size = sizeof(SESSION_COMMAND_NAME);
    struct reply_expectation duplicate = { .kind = REPLY_PARSE_DUPLICATE };

    msgbuf_reset(mb);
    session_build_close(mb, 'S', SESSION_COMMAND_NAME);
    for (int i = 0; i < 2; i++) {
        session_build_header(mb, 'P', name_size + parse->definition_len);
        msgbuf_append(mb, SESSION_COMMAND_NAME, name_size);
        msgbuf_append(mb, parse->definition, parse->definition_len);
    }
    if (!(duplicate.name = strdup(parse->name)) ||
        !reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL) ||
        !reply_queue_push(&s->replies, REPLY_PARSE_OURS, NULL) ||
        !reply_queue_push_item(&s->replies, duplicate) || !conn_send(&s->conn, mb)) {
        free(duplicate.name);
        return session_out_of_memory(c);
    }
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);   /* parse points into it: used above */
    s->session.skipping = true;
    return SESSION_HANDLED;
}

/*
 * Before a Bind or Describe of the unnamed statement: the backend must hold the client's own.
 * Parsed again if the client's Parse went to another backend or sluice's queries destroyed it;
 * closed if the client has none, so the backend answers 26000 rather than use another's.
 */
static bool session_ensure_unnamed(struct client *c)
{
    struct server *s = c->server;
    const struct prepared_unnamed *u = session_unnamed(c);
    struct msgbuf *mb = &c->worker->scratch;

    if (u->serial != 0 && s->session.unnamed_client == c->id &&
        s->session.unnamed_serial == u->serial)
        return true;
    msgbuf_reset(mb);
    if (u->serial == 0) {
        session_build_close(mb, 'S', "");
        s->session.unnamed_client = 0;
        return reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL) && conn_send(&s->conn, mb);
    }
    prepared_build_unnamed_parse(mb, c->prepared); /* serial != 0: it has statements */
    s->session.unnamed_client = c->id;
    s->session.unnamed_serial = u->serial;
    return reply_queue_push(&s->replies, REPLY_PARSE_OURS, NULL) && conn_send(&s->conn, mb);
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
                                                 uint32_t msg_len, bool in_flight,
                                                 enum session_command command)
{
    struct server *s = c->server;
    struct prepared_statement *stmt = NULL;
    char victim[PREPARED_NAME_LEN];

    if (!parse->name[0] || !session_prepared_enabled(c)) {
        if (!parse->name[0] && session_prepared_enabled(c)) {
            struct prepared_client *statements = session_statements(c);
            if (!statements || !prepared_client_set_unnamed(statements, parse, (uint8_t)command))
                return session_out_of_memory(c);
            s->session.unnamed_client = c->id;
            s->session.unnamed_serial = statements->unnamed.serial;
        }
        /* Unnamed: if this Parse fails, the client has no unnamed statement, as in Postgres. */
        if (!reply_queue_push_binding(&s->replies, REPLY_PARSE, NULL,
                                      parse->name[0] ? 0 : session_unnamed(c)->serial))
            return session_out_of_memory(c);
        if (!replacement)
            return SESSION_FORWARD;
        evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
        if (!conn_send(&s->conn, replacement))
            return session_out_of_memory(c);
        return SESSION_HANDLED;
    }
    if (session_lookup(c, parse->name))
        return session_parse_existing(c, parse, msg_len);
    struct prepared_client *statements = session_statements(c);
    if (!statements || prepared_client_add(statements, parse, (uint8_t)command, &stmt) != PREPARED_ADDED)
        return session_out_of_memory(c);
    uint64_t binding = prepared_client_serial(statements, parse->name);
    enum prepared_ensure_result ensured = prepared_server_ensure(&s->prepared, stmt, victim);
    if (ensured == PREPARED_ENSURE_NO_MEMORY)
        return session_out_of_memory(c);
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1); /* parse may point into it: not used below */
    if (ensured == PREPARED_ON_SERVER && !in_flight && s->replies.count == 0 &&
        s->ready_status != 'E') {
        /* Nothing is owed before it: answer ParseComplete here. Not in a failed transaction,
         * where PostgreSQL refuses a Parse (25P02) unless it is COMMIT or ROLLBACK: the backend
         * then says which. */
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
    struct pinning_summary summary;
    size_t query_len = strlen(parse.query);
    enum pin_reason reason = pinning_scan(parse.query, query_len, &rules, &summary);
    enum session_command command = session_command_of_summary(&summary);
    uint32_t pins = 0;
    if (session_must_note(c, &summary, reason))
        pins = session_note_query(c, parse.query, query_len, &rules, &reason);
    if (session_prepared_enabled(c) && session_changes_schema(parse.query, query_len, &rules))
        prepared_registry_retire_all(c->worker->prepared);
    if (reason == PIN_NONE || strcmp(c->worker->cfg->pinning, "off") == 0)
        return session_parse_statement(c, &parse, NULL, msg_len, in_flight, command);
    if (strcmp(c->worker->cfg->pinning, "reject") != 0) {
        session_pin(c, reason, pins, parse.query, query_len);
        return session_parse_statement(c, &parse, NULL, msg_len, in_flight, command);
    }
    struct msgbuf rejected;
    struct prepared_parse replaced;
    enum session_step step;
    msgbuf_init(&rejected);
    session_build_rejected_parse(&rejected, &parse, reason);
    if (rejected.failed || prepared_parse_parse(rejected.data + PROTO_HEADER_LEN,
                                                rejected.len - PROTO_HEADER_LEN,
                                                &replaced) != PROTO_OK) {
        step = session_out_of_memory(c);
    } else {
        step = session_parse_statement(c, &replaced, &rejected, msg_len, in_flight,
                                       SESSION_COMMAND_NONE);
    }
    msgbuf_free(&rejected);
    return step;
}

/* The backend name for a client's statement name, preparing it there if needed. */
static const char *session_backend_name(struct client *c, const char *name, bool *failed)
{
    *failed = false;
    struct prepared_statement *stmt = session_lookup(c, name);
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

/* Where the NUL ending a string that starts at from is, looking no further than limit. */
static bool session_find_nul(struct evbuffer *in, size_t from, size_t limit, size_t *at)
{
    struct evbuffer_ptr start, end, found;
    bool to_the_end = limit >= evbuffer_get_length(in);
    if (from >= limit || evbuffer_ptr_set(in, &start, from, EVBUFFER_PTR_SET) != 0 ||
        (!to_the_end && evbuffer_ptr_set(in, &end, limit, EVBUFFER_PTR_SET) != 0))
        return false;
    found = evbuffer_search_range(in, "", 1, &start, to_the_end ? NULL : &end);
    if (found.pos < 0)
        return false;
    *at = (size_t)found.pos;
    return true;
}

/* The command a statement's text is (for DEALLOCATE name: the name, in name). */
static uint8_t session_statement_command(const struct client *c, uint8_t command,
                                         const uint8_t *definition, char name[PINNING_NAME_LEN])
{
    struct pinning_statement st;
    size_t offset = 0;

    name[0] = '\0';
    if (command != SESSION_COMMAND_DEALLOCATE)
        return command;
    const char *text = (const char *)definition;
    struct pinning_rules rules = session_rules(c);
    if (pinning_next_statement(text, strlen(text), &offset, &rules, &st) && !st.name_truncated)
        memcpy(name, st.name, PINNING_NAME_LEN);
    return command;
}

/*
 * The BindComplete a Bind is owed. A portal just tracked as one of sluice's commands is named in
 * it: if the Bind fails or is skipped, the backend has no such portal (or, in the transaction
 * the error aborts, none it can run), and the client's Execute of it must reach the backend to
 * be answered as PostgreSQL would (34000, 25P02), not run as the command.
 */
static bool session_push_bind(struct server *s, const char *portal, struct prepared_statement *stmt)
{
    struct reply_expectation e = { .kind = REPLY_BIND, .stmt = stmt };
    if (session_find_portal(s, portal) && !(e.name = strdup(portal)))
        return false;
    return reply_queue_push_item(&s->replies, e);
}

/* A Bind of the unnamed portal makes it the client's again. false: its first byte is not in. */
static bool session_note_bind_portal(struct client *c, uint32_t msg_len)
{
    uint8_t first[PROTO_HEADER_LEN + 1];

    if ((size_t)msg_len + 1 < sizeof(first))
        return true;   /* malformed, found so where it is parsed */
    if (evbuffer_copyout(c->conn.in, first, sizeof(first)) < (ev_ssize_t)sizeof(first))
        return false;
    if (first[PROTO_HEADER_LEN] == '\0')
        c->server->session.unnamed_portal_of_query = false;
    return true;
}

/* Bind: only its two names are rewritten; parameters (maybe large) stream on untouched. */
static enum session_step session_bind(struct client *c, uint32_t msg_len)
{
    struct server *s = c->server;
    struct evbuffer *in = c->conn.in;
    size_t whole = (size_t)msg_len + 1;
    size_t buffered = evbuffer_get_length(in);
    size_t limit = buffered < whole ? buffered : whole;
    size_t portal_end, name_end;
    char deallocated[PINNING_NAME_LEN];
    bool failed;

    if (!session_note_bind_portal(c, msg_len))
        return SESSION_WAIT;
    if (!session_prepared_enabled(c))
        return SESSION_FORWARD;
    /* The names may be as long as the message: look for their ends in what has arrived. */
    if (!session_find_nul(in, PROTO_HEADER_LEN, limit, &portal_end) ||
        !session_find_nul(in, portal_end + 1, limit, &name_end)) {
        if (buffered < whole)
            return SESSION_WAIT;
        session_fail(c, "malformed Bind message");
        return SESSION_CLOSED;
    }
    const uint8_t *msg = evbuffer_pullup(in, (ev_ssize_t)(name_end + 1));
    const char *portal = (const char *)msg + PROTO_HEADER_LEN;
    const char *name = (const char *)msg + portal_end + 1;
    if (!*name) {
        const struct prepared_unnamed *u = session_unnamed(c);
        uint8_t command = session_statement_command(c, u->command, u->definition, deallocated);
        if (!session_ensure_unnamed(c) ||
            !session_track_portal(s, portal, u->serial ? command : SESSION_COMMAND_NONE,
                                  deallocated) ||
            !session_push_bind(s, portal, NULL)) {
            return session_out_of_memory(c);
        }
        return SESSION_FORWARD;
    }
    struct prepared_statement *stmt = session_lookup(c, name);
    const char *backend_name = session_backend_name(c, name, &failed);
    uint8_t command = stmt ? session_statement_command(c, stmt->command, stmt->definition,
                                                       deallocated)
                           : SESSION_COMMAND_NONE;
    if (failed || !session_track_portal(s, portal, command, deallocated) ||
        !session_push_bind(s, portal, stmt)) {
        return session_out_of_memory(c);
    }
    if (!backend_name)
        return SESSION_FORWARD;

    size_t portal_len = portal_end - PROTO_HEADER_LEN;
    size_t old_prefix = name_end + 1;
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
    if (!conn_send(&s->conn, mb))
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
    if (!session_prepared_enabled(c))
        return SESSION_FORWARD;
    if (kind == 'P') {
        if (type == 'C')
            session_drop_portal(s, name);
        return SESSION_FORWARD;
    }
    if (!*name) {
        if (type == 'C') {
            session_clear_unnamed(c);
            s->session.unnamed_client = 0;
        } else if (!session_ensure_unnamed(c)) {
            return session_out_of_memory(c);
        }
        return SESSION_FORWARD;
    }

    const char *backend_name;
    if (type == 'C') {
        /* Other clients may share the backend statement: it stays; only the name goes, until
         * the CloseComplete (a Close skipped after an error leaves it, as in Postgres). */
        session_take_statement(c, name, &reply_queue_at(&s->replies, s->replies.count - 1)->taken);
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
    if (prepared_rewrite(mb, (char)type, body, msg_len - 4, backend_name) != PROTO_OK ||
        !conn_send(&s->conn, mb)) {
        session_fail(c, "malformed Describe or Close message");
        return SESSION_CLOSED;
    }
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    return SESSION_HANDLED;
}

/*
 * Execute of a portal bound to DISCARD ALL, pinned client or not: it runs as it is. PostgreSQL
 * refuses it in a transaction block or after another Execute of the same pipeline (25001), and
 * otherwise closes every portal too: no command run in its place would do all of that. The
 * backend's statements go with it: sluice prepares its shared statements there again when they
 * are next used (their Parse closes them first, in case the backend refused and still has
 * them). The client's names are taken until its CommandComplete, and given back if it fails. A
 * Close of sluice's own portal goes first, so that no earlier Execute's CommandComplete is taken
 * for this one's.
 */
static enum session_step session_execute_discard_all(struct client *c)
{
    struct server *s = c->server;
    struct msgbuf *mb = &c->worker->scratch;
    struct reply_expectation discard = { .kind = REPLY_EXECUTE_OURS };

    session_take_statements(c, &discard.taken);
    prepared_server_forget_all(&s->prepared);
    session_forget_portals(&s->session);
    msgbuf_reset(mb);
    session_build_close(mb, 'P', SESSION_COMMAND_NAME);
    if (!reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL)) {
        prepared_taken_free(discard.taken);
        return session_out_of_memory(c);
    }
    if (!reply_queue_push_item(&s->replies, discard) || !conn_send(&s->conn, mb))
        return session_out_of_memory(c);
    return SESSION_FORWARD;
}

/*
 * An Execute of the unnamed portal with no Bind of it since a simple query: the backend closes
 * that portal first, so the Execute finds none (34000), as after a query that succeeded, or
 * failed before it ran. PostgreSQL 15 keeps the unnamed portal of a query that failed while
 * running in a transaction block, with its text and plan in memory that the next message frees,
 * and an Execute of it reads them: with a long query its backend dies (SIGSEGV), and the
 * postmaster then ends every connection of every pool. A Close reads neither.
 */
static enum session_step session_close_query_portal(struct client *c)
{
    struct server *s = c->server;
    struct msgbuf *mb = &c->worker->scratch;

    msgbuf_reset(mb);
    session_build_close(mb, 'P', "");
    if (!reply_queue_push(&s->replies, REPLY_CLOSE_OURS, NULL) || !conn_send(&s->conn, mb))
        return session_out_of_memory(c);
    s->session.unnamed_portal_of_query = false;
    return SESSION_FORWARD;
}

/*
 * Session mode: messages pass as they are, but an Execute of the portal a failed simple query
 * left is still closed first (session_close_query_portal): a crash would end every pool's
 * connections, not only this client's.
 */
enum session_step session_guard_message(struct client *c, uint8_t type, uint32_t msg_len)
{
    struct server *s = c->server;

    switch (type) {
    case 'Q':
        s->session.unnamed_portal_of_query = true;
        return SESSION_FORWARD;
    case 'B':
        return session_note_bind_portal(c, msg_len) ? SESSION_FORWARD : SESSION_WAIT;
    case 'E': {
        if (!s->session.unnamed_portal_of_query || msg_len > CONN_MAX_INSPECTED_MESSAGE)
            return SESSION_FORWARD;
        const uint8_t *msg = conn_pullup_message(c->conn.in, msg_len);
        if (!msg)
            return SESSION_WAIT;
        bool unnamed = msg_len > 4 && msg[PROTO_HEADER_LEN] == '\0';
        return unnamed ? session_close_query_portal(c) : SESSION_FORWARD;
    }
    default:
        return SESSION_FORWARD;
    }
}

/*
 * Execute of a portal bound to DEALLOCATE [ALL]: the backend runs what
 * session_apply_command says instead, under sluice's own portal, and never the client's command.
 */
static enum session_step session_execute(struct client *c, uint32_t msg_len)
{
    struct server *s = c->server;
    bool query_portal = s->session.unnamed_portal_of_query;

    if ((s->session.n_portals == 0 && !query_portal) || msg_len > CONN_MAX_INSPECTED_MESSAGE)
        return SESSION_FORWARD;
    const uint8_t *msg = conn_pullup_message(c->conn.in, msg_len);
    if (!msg)
        return SESSION_WAIT;
    const char *portal = (const char *)msg + PROTO_HEADER_LEN;
    if (!memchr(portal, 0, msg_len - 4))
        return SESSION_FORWARD;   /* malformed: the backend says so */
    if (!*portal && query_portal)
        return session_close_query_portal(c);
    struct session_portal *p = session_find_portal(s, portal);
    if (!p)
        return SESSION_FORWARD;
    s->session.execute_command = p->command;
    if (p->command == SESSION_COMMAND_CLOSES_TRANSACTION ||
        p->command == SESSION_COMMAND_EMPTY_QUERY)
        return SESSION_FORWARD;
    if (p->command == SESSION_COMMAND_DISCARD_ALL)
        return session_execute_discard_all(c);
    struct msgbuf command_sql, sql;
    struct prepared_taken *taken = NULL;
    bool retag = false;
    msgbuf_init(&command_sql);
    msgbuf_init(&sql);
    if (p->done) {
        /* Its command ran (or the backend skipped it, and the transaction failed, where the
         * backend refuses this one with 25P02 as PostgreSQL would). */
        session_build_raise_sql(&command_sql, "55000", "portal \"%s\" cannot be run", portal);
    } else {
        session_apply_command(c, (enum session_command)p->command, p->statement, false,
                              &command_sql, &retag, &taken);
        p->done = true;
    }
    session_build_portal_checked_sql(&sql, portal, &command_sql);
    msgbuf_append(&sql, "", 1);
    sql.failed |= command_sql.failed;
    msgbuf_free(&command_sql);
    bool sent = !sql.failed && session_inject_command(c, (const char *)sql.data,
                                                      retag ? p->command : SESSION_COMMAND_NONE,
                                                      taken);
    if (sql.failed)
        prepared_taken_free(taken);
    msgbuf_free(&sql);
    evbuffer_drain(c->conn.in, (size_t)msg_len + 1);
    if (!sent)
        return session_out_of_memory(c);
    if (!retag)
        s->session.skipping = true;
    return SESSION_HANDLED;
}

static enum session_step session_dispatch(struct client *c, uint8_t type, uint32_t msg_len,
                                          bool in_flight);

/* An Execute passed on: what it leaves of the transaction, as PostgreSQL's exec_execute_message. */
static void session_note_execute(struct session_backend *b)
{
    if (b->execute_command == SESSION_COMMAND_EMPTY_QUERY)
        return;   /* it runs nothing: neither the transaction's status nor its flag changes */
    b->executed = true;
    if (b->execute_command == SESSION_COMMAND_CLOSES_TRANSACTION ||
        b->execute_command == SESSION_COMMAND_DISCARD_ALL)
        b->pipelined = false;   /* committed at once: the next message starts a new one */
    else
        b->pipelined = true;
}

/*
 * Counts the Executes and Describes passed on with no expectation of their own since the last
 * message that got one: a simple Query or function call behind them in an unsynced pipeline
 * must tell an error of theirs (after which the backend ignores the query) from its own.
 */
enum session_step session_client_message(struct client *c, uint8_t type, uint32_t msg_len,
                                         bool in_flight)
{
    struct server *s = c->server;
    uint32_t before = s->replies.count;
    bool skipping = s->session.skipping;
    enum session_step step = session_dispatch(c, type, msg_len, in_flight);
    if (step == SESSION_CLOSED || step == SESSION_WAIT)
        return step;
    bool pushed = s->replies.count != before;
    /* What sluice queues for an Execute or Describe goes before it (a Parse of the statement
     * evicted from this backend), except the Execute of a command sluice runs itself. */
    bool own = pushed && type == 'E' &&
               reply_queue_at(&s->replies, s->replies.count - 1)->kind == REPLY_EXECUTE_OURS;
    if ((type == 'E' || type == 'D') && !own && step != SESSION_ANSWERED && !skipping)
        s->session.untracked = pushed ? 1 : s->session.untracked + 1;
    else if (pushed)
        s->session.untracked = 0;
    if (type == 'Q' && step != SESSION_ANSWERED && !skipping)
        s->session.unnamed_portal_of_query = true;
    if (type == 'E' && step != SESSION_ANSWERED && !skipping)
        session_note_execute(&s->session);
    else if (type == 'S' || type == 'Q' || type == 'F')
        s->session.executed = s->session.pipelined = false;
    s->session.execute_command = SESSION_COMMAND_NONE;
    return step;
}

static enum session_step session_dispatch(struct client *c, uint8_t type, uint32_t msg_len,
                                          bool in_flight)
{
    struct server *s = c->server;

    if (s->session.skipping) {
        /* The backend ignores all of it up to Sync, as Postgres would after the error. */
        if (type == 'S') {
            s->session.skipping = false;
            if (!reply_queue_push(&s->replies, REPLY_SYNC, NULL))
                return session_out_of_memory(c);
        }
        return SESSION_FORWARD;
    }
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
    case 'E':
        return session_execute(c, msg_len);
    case 'S':
    case 'F': /* a function call ends with ReadyForQuery, as a Sync does */
        if (!reply_queue_push_item(&s->replies, (struct reply_expectation){
                                      .kind = REPLY_SYNC, .query = type == 'F',
                                      .untracked = s->session.untracked }))
            return session_out_of_memory(c);
        return SESSION_FORWARD;
    default:
        return SESSION_FORWARD;
    }
}

bool session_backend_skips_to_sync(const struct server *s)
{
    return s->session.skipping;
}

bool session_awaits_names(struct server *s)
{
    if (!s->session.may_owe_names)
        return false;   /* the usual case, without a look at every reply owed */
    for (uint32_t i = 0; i < s->replies.count; i++) {
        const struct reply_expectation *e = reply_queue_at(&s->replies, i);
        if (e->taken)
            return true;
        for (uint32_t j = 0; j < e->n_retags; j++) {
            if (e->retags[j].taken)
                return true;
        }
    }
    s->session.may_owe_names = false;
    return false;
}

/* ---- replies ---- */

/* Names a Close or command took that the backend never ran: the client has them again. */
static void session_give_back(struct server *s, struct prepared_taken **taken)
{
    if (s->client && s->client->prepared)
        prepared_client_give_back(s->client->prepared, *taken);
    else
        prepared_taken_free(*taken);
    *taken = NULL;
}

/* What a message the backend failed or skipped did to sluice's records is undone. */
static void session_undo(struct server *s, struct reply_expectation *e)
{
    bool parse = e->kind == REPLY_PARSE || e->kind == REPLY_PARSE_OURS;
    if (parse && e->stmt && prepared_server_has(&s->prepared, e->stmt))
        prepared_server_forget(&s->prepared, e->stmt);
    /* Maybe a Parse of the unnamed statement (the client's, or sluice's for its Bind): which
     * one the backend holds now is not known, so the next Bind of it parses it again. */
    if (parse && !e->stmt)
        s->session.unnamed_client = 0;
    /* The client's own Parse failed or was skipped: Postgres would not know the name. */
    if (e->binding && s->client && s->client->prepared)
        prepared_client_unbind(s->client->prepared, e->binding);
    /* The Bind failed or was skipped: sluice's command portal was never made. */
    if (e->kind == REPLY_BIND && e->name)
        session_drop_portal(s, e->name);
    if (e->taken)
        session_give_back(s, &e->taken);
}

/*
 * After an error the backend skips everything up to the next Sync: so do the expectations. They
 * are undone latest first, as the client made them: a name that a skipped DEALLOCATE took and a
 * skipped Parse then bound again is the client's old statement once both are undone.
 */
static void session_query_done(struct server *s, struct reply_expectation *e);

/*
 * A simple Query or function call sent after the messages that failed, before the client's Sync
 * (all of them already on their way when the error came), is skipped too: PostgreSQL ignores it
 * and sends no ReadyForQuery for it, so the client is owed one fewer, and without a Sync after it
 * its batch is still open (as a Flush would leave it). An error with the query first in the
 * queue is its own, and skips nothing, unless Executes or Describes sent just before it have
 * not all answered yet (reply_expectation.untracked).
 */
static bool session_skips(const struct reply_expectation *e, uint32_t index)
{
    /* first: the query's own error unless Executes or Describes before it still owe replies */
    return e->kind != REPLY_SYNC || (e->query && (index > 0 || e->untracked > 0));
}

/* Is type the last reply to an Execute or Describe? */
static bool session_ends_untracked(uint8_t type)
{
    return type == 'C' || type == 'I' || type == 's' || type == 'T' || type == 'n';
}

static void session_skip_to_sync(struct server *s)
{
    uint32_t n = 0, queries = 0;
    while (n < s->replies.count && session_skips(reply_queue_at(&s->replies, n), n))
        n++;
    for (uint32_t i = n; i-- > 0;) {
        struct reply_expectation *e = reply_queue_at(&s->replies, i);
        if (e->kind == REPLY_SYNC) {
            session_query_done(s, e); /* its commands never ran */
            if (s->client && s->client->prepared)
                prepared_client_restore_unnamed(s->client->prepared, e->unnamed_serial,
                                                e->unnamed_command);
            queries++;
        } else {
            session_undo(s, e);
        }
    }
    struct client *c = s->client;
    if (c && queries > 0) {
        c->pending_ready = c->pending_ready > queries ? c->pending_ready - queries : 0;
        if (n == s->replies.count)
            c->unsynced = true;
    }
    while (n-- > 0)
        reply_queue_pop(&s->replies);
}

/* A query's ReadyForQuery: its commands that never completed (an earlier statement failed)
 * took nothing. */
static void session_query_done(struct server *s, struct reply_expectation *e)
{
    for (uint32_t i = e->n_retags; i-- > 0;) {
        if (e->retags[i].taken)
            session_give_back(s, &e->retags[i].taken);
    }
}

/*
 * An error with no Sync owed after it: the backend now ignores every message up to the client's
 * next Sync, so the messages sluice passes on meanwhile must not be owed replies either (a Bind
 * read after the error would wait for a BindComplete that never comes, and every reply after it
 * would be matched to the wrong expectation, on this backend and for its next clients).
 */
static void session_backend_starts_skipping(struct server *s)
{
    s->session.skipping = true;
    s->session.untracked = 0; /* skipped: they owe nothing now */
}

/*
 * An error in reply to a Bind of a shared statement. 0A000 there is "cached plan must not change
 * result type": the backend statement is stale for good (the schema changed). Drivers prepare
 * again; that Parse must reach a backend, not be answered with the stale statement.
 */
static void session_bind_failed(struct server *s, struct prepared_statement *stmt,
                                const uint8_t *body, size_t len)
{
    struct proto_error error;
    if (!body || proto_parse_error(body, len, &error) != PROTO_OK || !error.sqlstate ||
        strcmp(error.sqlstate, "0A000") != 0)
        return;
    prepared_statement_retire(stmt);
    prepared_server_forget(&s->prepared, stmt);
}

/* The backend's 42P05 for sluice's repeated Parse, as PostgreSQL words it for the client's. */
static void session_send_duplicate(struct server *s, const char *name)
{
    static const char format[] = "prepared statement \"%s\" already exists";
    struct msgbuf *mb = &s->worker->scratch;
    size_t size = sizeof(format) + strlen(name);
    char *message = malloc(size);
    if (!s->client)
        goto done;
    if (!message) {
        client_fail(s->client, "53200", "out of memory");
        goto done;
    }
    snprintf(message, size, format, name);
    msgbuf_reset(mb);
    proto_build_error(mb, "ERROR", "42P05", message, NULL, NULL);
    if (!conn_send(&s->client->conn, mb))
        client_fail(s->client, "53200", "out of memory");
done:
    free(message);
}

/* Sends the client a CommandComplete with command's tag in place of the backend's. */
static void session_send_tag(struct server *s, uint8_t command)
{
    struct msgbuf *mb = &s->worker->scratch;
    if (!s->client)
        return;
    msgbuf_reset(mb);
    proto_build_command_complete(mb, session_command_tag(command));
    if (!conn_send(&s->client->conn, mb))
        client_fail(s->client, "53200", "out of memory");
}

/* A CommandComplete: true if sluice sent its own in its place. */
static bool session_command_complete(struct server *s, struct reply_expectation *e)
{
    if (e->kind == REPLY_EXECUTE_OURS) {
        uint8_t command = e->n_retags ? e->retags[0].command : SESSION_COMMAND_NONE;
        reply_queue_pop(&s->replies);
        if (command == SESSION_COMMAND_NONE)
            return false;
        session_send_tag(s, command);
        return true;
    }
    uint32_t index = e->completes++;
    for (uint32_t i = 0; i < e->n_retags; i++) {
        if (e->retags[i].index == index) {
            prepared_taken_free(e->retags[i].taken);   /* it ran: the names are gone */
            e->retags[i].taken = NULL;
            session_send_tag(s, e->retags[i].command);
            return true;
        }
    }
    return false;
}

bool session_server_inspects(const struct server *s, uint8_t type)
{
    const struct reply_expectation *e = reply_queue_front(&s->replies);
    if (type == 'E')
        return true; /* with nothing owed too: see session_backend_starts_skipping */
    if (!e)
        return s->session.untracked > 0 && session_ends_untracked(type);
    if (e->untracked > 0 && session_ends_untracked(type))
        return true;
    switch (type) {
    case '1':
    case '2':
    case '3':
        return true;
    case 'C':
        return e->kind == REPLY_EXECUTE_OURS || e->n_retags > 0;
    default:
        return false;
    }
}

/* Does reply type answer the expectation e? Then it is popped. */
static bool session_reply_matches(const struct reply_expectation *e, uint8_t type)
{
    switch (type) {
    case '1':
        return e->kind == REPLY_PARSE || e->kind == REPLY_PARSE_OURS ||
               e->kind == REPLY_PARSE_DUPLICATE;
    case '2':
        return e->kind == REPLY_BIND || e->kind == REPLY_BIND_OURS;
    case '3':
        return e->kind == REPLY_CLOSE || e->kind == REPLY_CLOSE_OURS;
    default:
        return false;
    }
}

bool session_server_reply(struct server *s, uint8_t type, const uint8_t *body, size_t len)
{
    struct reply_expectation *e = reply_queue_front(&s->replies);
    if (type == 'Z' && body && len == 1 && body[0] == 'I')
        session_forget_portals(&s->session);   /* the transaction is over: its portals too */
    if (type == 'Z' && !e) {
        s->session.skipping = false; /* whatever ended in an error has ended */
        s->session.untracked = 0;
        s->session.executed = s->session.pipelined = false;
    }
    if (type == 'E' && !e) {
        session_backend_starts_skipping(s);
        return false;
    }
    if (!e) {
        /* An Execute's or Describe's, answered before a query behind it is queued. */
        if (s->session.untracked > 0 && session_ends_untracked(type))
            s->session.untracked--;
        return false;
    }
    if (e->untracked > 0 && session_ends_untracked(type)) {
        e->untracked--;   /* an Execute's or Describe's before the query: not the query's */
        return false;
    }
    switch (type) {
    case '1':
    case '2':
    case '3': {
        if (!session_reply_matches(e, type))
            return false; /* not one sluice tracks: pass it on */
        bool ours = e->kind == REPLY_PARSE_OURS || e->kind == REPLY_CLOSE_OURS ||
                    e->kind == REPLY_BIND_OURS || e->kind == REPLY_PARSE_DUPLICATE;
        reply_queue_pop(&s->replies);
        return ours;
    }
    case 'C':
        return session_command_complete(s, e);
    case 'E': {
        /* (body NULL: none came, the backend was lost; or too large to read, then as it is) */
        bool replaced = e->kind == REPLY_PARSE_DUPLICATE && body;
        if (replaced)
            session_send_duplicate(s, e->name);
        if (e->kind == REPLY_BIND && e->stmt)
            session_bind_failed(s, e->stmt, body, len);
        session_skip_to_sync(s);
        if (!reply_queue_front(&s->replies))
            session_backend_starts_skipping(s);
        return replaced;
    }
    case 'Z':
        if (e->kind == REPLY_SYNC) {
            session_query_done(s, e);
            reply_queue_pop(&s->replies);
        }
        return false;
    default:
        return false;
    }
}
