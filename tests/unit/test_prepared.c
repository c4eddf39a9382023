/*
 * test_prepared.c: prepared statements in transaction pooling, as a specification: the messages
 * that name a statement are parsed and rewritten byte for byte, clients keep their own names,
 * equal statements share one backend name, references free what nobody holds, and each backend
 * keeps at most its capacity, closing the least recently used.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "prepared.h"
#include "tap.h"

#define OID_INT4 23
#define OID_TEXT 25
#define MANY_NAMES 1000
#define THREADS 4              /* workers */
#define THREAD_STEPS 50000     /* what each does */
#define THREAD_NAMES 32        /* names each worker's client may hold at once */
#define SHARED_QUERIES 12      /* texts every worker prepares (one statement each) */
#define BACKENDS 3             /* backends the workers pass between them */
#define BACKEND_CAPACITY 6     /* small: evictions free statements no client holds */
#define OWED_MAX 16            /* replies a worker may owe before it settles them */

static const uint8_t test_seed[PREPARED_SEED_LEN] = "0123456789abcdef";

/* ---- hand-built message bodies ---- */

struct bytes {
    uint8_t data[512];
    size_t len;
};

static void put(struct bytes *b, const void *data, size_t len)
{
    if (b->len + len > sizeof(b->data))
        abort();
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void put_str(struct bytes *b, const char *s)
{
    put(b, s, strlen(s) + 1);
}

static void put_u16(struct bytes *b, uint16_t v)
{
    uint8_t be[2] = { (uint8_t)(v >> 8), (uint8_t)v };

    put(b, be, sizeof(be));
}

static void put_u32(struct bytes *b, uint32_t v)
{
    uint8_t be[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };

    put(b, be, sizeof(be));
}

/* A whole message: type, length, body. */
static void message(struct bytes *out, char type, const struct bytes *body)
{
    out->len = 0;
    put(out, &type, 1);
    put_u32(out, (uint32_t)(body->len + 4));
    put(out, body->data, body->len);
}

static void parse_body(struct bytes *b, const char *name, const char *query, uint16_t n_types,
                       const uint32_t *types)
{
    b->len = 0;
    put_str(b, name);
    put_str(b, query);
    put_u16(b, n_types);
    for (uint16_t i = 0; i < n_types; i++)
        put_u32(b, types[i]);
}

/* Bind with one text format code, parameters "42" and NULL, one result format. */
static void bind_body(struct bytes *b, const char *portal, const char *statement)
{
    b->len = 0;
    put_str(b, portal);
    put_str(b, statement);
    put_u16(b, 1);
    put_u16(b, 0);
    put_u16(b, 2);
    put_u32(b, 2);
    put(b, "42", 2);
    put_u32(b, UINT32_MAX);   /* -1: NULL */
    put_u16(b, 1);
    put_u16(b, 1);
}

static void target_body(struct bytes *b, char kind, const char *name)
{
    b->len = 0;
    put(b, &kind, 1);
    put_str(b, name);
}

static bool built_equals(const struct msgbuf *mb, const struct bytes *want)
{
    return !mb->failed && mb->len == want->len && memcmp(mb->data, want->data, want->len) == 0;
}

/* ---- parsing ---- */

static void test_parse_reads_name_query_and_types(void)
{
    const uint32_t types[] = { OID_INT4, OID_TEXT };
    struct prepared_parse p;
    struct bytes b;

    parse_body(&b, "S_1", "SELECT $1, $2", 2, types);
    is_int(prepared_parse_parse(b.data, b.len, &p), PROTO_OK, "Parse: well formed");
    is_str(p.name, "S_1", "Parse: statement name");
    is_str(p.query, "SELECT $1, $2", "Parse: query text");
    is_int(p.n_params, 2, "Parse: number of parameter types");
    ok(p.param_types == b.data + 4 + 14 + 2, "Parse: the types follow the count");
    ok(p.param_types[3] == OID_INT4 && p.param_types[7] == OID_TEXT,
       "Parse: types in network order");
    ok(p.definition == b.data + 4 && p.definition_len == b.len - 4,
       "Parse: the definition is the body without the name");

    parse_body(&b, "", "SELECT 1", 0, NULL);
    ok(prepared_parse_parse(b.data, b.len, &p) == PROTO_OK && p.name[0] == '\0' && p.n_params == 0,
       "Parse: the unnamed statement with no types");
}

static void test_malformed_parse_is_rejected(void)
{
    const uint32_t types[] = { OID_INT4, OID_TEXT };
    struct prepared_parse p;
    struct bytes b;
    size_t accepted = 0;

    parse_body(&b, "S_1", "SELECT $1, $2", 2, types);
    for (size_t cut = 0; cut < b.len; cut++)
        accepted += prepared_parse_parse(b.data, cut, &p) != PROTO_ERROR;
    is_int(accepted, 0, "Parse: every truncation of the body is rejected");
    b.data[b.len++] = 0;
    is_int(prepared_parse_parse(b.data, b.len, &p), PROTO_ERROR,
           "Parse: a byte after the last type is rejected");
    parse_body(&b, "S_1", "SELECT 1", 2, types);
    b.data[4 + 9 + 1] = 3;   /* the count says three, two follow */
    is_int(prepared_parse_parse(b.data, b.len, &p), PROTO_ERROR,
           "Parse: fewer types than the count is rejected");
    b.len = 0;
    put(&b, "S_1", 3);
    is_int(prepared_parse_parse(b.data, b.len, &p), PROTO_ERROR,
           "Parse: a name without its NUL is rejected");
    is_int(prepared_parse_parse(NULL, 0, &p), PROTO_ERROR, "Parse: no body is rejected");
}

static void test_bind_reads_names_and_checks_shape(void)
{
    const char *portal, *statement;
    struct bytes b;
    size_t accepted = 0;

    bind_body(&b, "C_1", "S_1");
    is_int(prepared_parse_bind(b.data, b.len, &portal, &statement), PROTO_OK, "Bind: well formed");
    is_str(portal, "C_1", "Bind: portal name");
    is_str(statement, "S_1", "Bind: statement name");

    for (size_t cut = 0; cut < b.len; cut++)
        accepted += prepared_parse_bind(b.data, cut, &portal, &statement) != PROTO_ERROR;
    is_int(accepted, 0, "Bind: every truncation of the body is rejected");
    b.data[b.len++] = 7;
    is_int(prepared_parse_bind(b.data, b.len, &portal, &statement), PROTO_ERROR,
           "Bind: a byte after the result formats is rejected");

    b.len = 0;
    put_str(&b, "");
    put_str(&b, "S_1");
    put_u16(&b, 0);
    put_u16(&b, 1);
    put_u32(&b, 100);   /* a value longer than the message */
    put(&b, "xy", 2);
    put_u16(&b, 0);
    is_int(prepared_parse_bind(b.data, b.len, &portal, &statement), PROTO_ERROR,
           "Bind: a parameter length past the end is rejected");

    b.len = 0;
    put_str(&b, "");
    put_str(&b, "S_1");
    put_u16(&b, 0);
    put_u16(&b, 1);
    put_u32(&b, (uint32_t)-2);
    put_u16(&b, 0);
    is_int(prepared_parse_bind(b.data, b.len, &portal, &statement), PROTO_ERROR,
           "Bind: a parameter length below -1 is rejected");
}

static void test_describe_and_close_targets(void)
{
    const char *name;
    struct bytes b;
    char kind;

    target_body(&b, 'S', "S_1");
    ok(prepared_parse_target(b.data, b.len, &kind, &name) == PROTO_OK && kind == 'S' &&
           strcmp(name, "S_1") == 0,
       "target: a statement");
    target_body(&b, 'P', "");
    ok(prepared_parse_target(b.data, b.len, &kind, &name) == PROTO_OK && kind == 'P' &&
           name[0] == '\0',
       "target: the unnamed portal");
    target_body(&b, 'X', "S_1");
    is_int(prepared_parse_target(b.data, b.len, &kind, &name), PROTO_ERROR,
           "target: a kind other than S or P is rejected");
    target_body(&b, 'S', "S_1");
    is_int(prepared_parse_target(b.data, b.len - 1, &kind, &name), PROTO_ERROR,
           "target: a name without its NUL is rejected");
    b.data[b.len++] = 'x';
    is_int(prepared_parse_target(b.data, b.len, &kind, &name), PROTO_ERROR,
           "target: a byte after the name is rejected");
    is_int(prepared_parse_target(b.data, 1, &kind, &name), PROTO_ERROR,
           "target: a kind alone is rejected");
    is_int(prepared_parse_target(b.data, 0, &kind, &name), PROTO_ERROR,
           "target: an empty body is rejected");
}

/* ---- rewriting ---- */

static void test_rewrite_parse_is_byte_exact(void)
{
    const uint32_t types[] = { OID_INT4 };
    struct bytes body, want_body, want;
    struct msgbuf mb;

    parse_body(&body, "S_1", "SELECT $1", 1, types);
    parse_body(&want_body, "sluice_7", "SELECT $1", 1, types);
    message(&want, 'P', &want_body);
    msgbuf_init(&mb);
    is_int(prepared_rewrite(&mb, 'P', body.data, body.len, "sluice_7"), PROTO_OK,
           "rewrite Parse: succeeds");
    ok(built_equals(&mb, &want), "rewrite Parse: header and body byte for byte");

    msgbuf_reset(&mb);
    message(&want, 'P', &body);
    prepared_rewrite(&mb, 'P', want_body.data, want_body.len, "S_1");
    ok(built_equals(&mb, &want), "rewrite Parse: renaming back gives the original message");
    msgbuf_free(&mb);
}

static void test_rewrite_bind_keeps_parameters(void)
{
    struct bytes body, want_body, want;
    struct msgbuf mb;

    bind_body(&body, "C_1", "S_1");
    bind_body(&want_body, "C_1", "sluice_12");
    message(&want, 'B', &want_body);
    msgbuf_init(&mb);
    is_int(prepared_rewrite(&mb, 'B', body.data, body.len, "sluice_12"), PROTO_OK,
           "rewrite Bind: succeeds");
    ok(built_equals(&mb, &want), "rewrite Bind: portal, formats and values copied exactly");

    msgbuf_reset(&mb);
    bind_body(&body, "", "");
    bind_body(&want_body, "", "sluice_1");
    message(&want, 'B', &want_body);
    prepared_rewrite(&mb, 'B', body.data, body.len, "sluice_1");
    ok(built_equals(&mb, &want), "rewrite Bind: an empty statement name can be replaced too");
    msgbuf_free(&mb);
}

static void test_rewrite_describe_and_close(void)
{
    struct bytes body, want_body, want;
    struct msgbuf mb;

    msgbuf_init(&mb);
    target_body(&body, 'S', "S_1");
    target_body(&want_body, 'S', "sluice_2");
    message(&want, 'D', &want_body);
    is_int(prepared_rewrite(&mb, 'D', body.data, body.len, "sluice_2"), PROTO_OK,
           "rewrite Describe S: succeeds");
    ok(built_equals(&mb, &want), "rewrite Describe S: byte for byte");

    msgbuf_reset(&mb);
    message(&want, 'C', &want_body);
    prepared_rewrite(&mb, 'C', body.data, body.len, "sluice_2");
    ok(built_equals(&mb, &want), "rewrite Close S: byte for byte");

    msgbuf_reset(&mb);
    target_body(&body, 'P', "C_1");
    is_int(prepared_rewrite(&mb, 'D', body.data, body.len, "sluice_2"), PROTO_ERROR,
           "rewrite Describe P: portals are never renamed");
    is_int(mb.len, 0, "rewrite refused: nothing appended");
    is_int(prepared_rewrite(&mb, 'E', body.data, body.len, "sluice_2"), PROTO_ERROR,
           "rewrite: Execute names no statement");
    target_body(&body, 'S', "S_1");
    is_int(prepared_rewrite(&mb, 'C', body.data, body.len - 1, "sluice_2"), PROTO_ERROR,
           "rewrite: a malformed body is refused");
    is_int(mb.len, 0, "rewrite refused: still nothing appended");
    msgbuf_free(&mb);
}

/* ---- registry and clients ---- */

static enum prepared_add_result add(struct prepared_client *client, const char *name,
                                    const char *query, uint16_t n_types, const uint32_t *types,
                                    struct prepared_statement **stmt)
{
    struct bytes b;
    struct prepared_parse p;

    parse_body(&b, name, query, n_types, types);
    if (prepared_parse_parse(b.data, b.len, &p) != PROTO_OK)
        abort();
    return prepared_client_add(client, &p, 0, stmt);
}

static void test_build_parse_and_close(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    const uint32_t types[] = { OID_TEXT };
    struct prepared_statement *stmt = NULL;
    struct prepared_client client;
    struct bytes want_body, want;
    struct msgbuf mb;

    prepared_client_init(&client, reg);
    add(&client, "S_1", "SELECT $1::text", 1, types, &stmt);
    msgbuf_init(&mb);
    prepared_build_parse(&mb, stmt);
    parse_body(&want_body, stmt->backend_name, "SELECT $1::text", 1, types);
    message(&want, 'P', &want_body);
    ok(built_equals(&mb, &want), "build Parse: the statement under its backend name");
    is_str((const char *)stmt->definition, "SELECT $1::text",
           "statement: the definition starts with the query text");

    msgbuf_reset(&mb);
    prepared_build_close(&mb, "sluice_9");
    target_body(&want_body, 'S', "sluice_9");
    message(&want, 'C', &want_body);
    ok(built_equals(&mb, &want), "build Close: statement kind and backend name");
    msgbuf_free(&mb);
    prepared_client_forget_all(&client);
    prepared_registry_free(reg);
}

static void test_clients_keep_their_own_names(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *a = NULL, *b = NULL;
    struct prepared_client alice, bob;

    prepared_client_init(&alice, reg);
    prepared_client_init(&bob, reg);
    is_int(add(&alice, "P_1", "SELECT 1", 0, NULL, &a), PREPARED_ADDED, "alice adds P_1");
    is_int(add(&bob, "P_1", "SELECT 2", 0, NULL, &b), PREPARED_ADDED,
           "bob adds P_1 too: names belong to their client");
    ok(a != b && strcmp(a->backend_name, b->backend_name) != 0,
       "same name, different queries: different backend statements");
    ok(prepared_client_lookup(&alice, "P_1") == a && prepared_client_lookup(&bob, "P_1") == b,
       "each client's P_1 leads to its own statement");
    is_int(prepared_registry_count(reg), 2, "registry: two statements");
    is_int(add(&alice, "P_1", "SELECT 1", 0, NULL, &a), PREPARED_NAME_IN_USE,
           "a name already in use is refused, even for the same query (42P05)");
    is_int(add(&alice, "", "SELECT 3", 0, NULL, &a), PREPARED_UNNAMED,
           "the unnamed statement is not managed");
    is_int(prepared_registry_count(reg), 2, "registry: refusals created nothing");
    ok(prepared_client_lookup(&alice, "P_2") == NULL, "an unknown name finds nothing (26000)");
    ok(prepared_client_lookup(&alice, "p_1") == NULL, "names are case-sensitive");
    prepared_client_forget_all(&alice);
    prepared_client_forget_all(&bob);
    prepared_registry_free(reg);
}

static void test_equal_statements_are_shared(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    const uint32_t int4[] = { OID_INT4 }, text[] = { OID_TEXT };
    struct prepared_statement *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    struct prepared_client alice, bob;

    prepared_client_init(&alice, reg);
    prepared_client_init(&bob, reg);
    add(&alice, "S_1", "SELECT $1", 1, int4, &a);
    add(&bob, "P0_1", "SELECT $1", 1, int4, &b);
    ok(a == b, "same query and types from two clients: one statement");
    is_int(a->client_refs, 2, "shared statement: two client references");
    add(&bob, "P0_2", "SELECT $1", 1, text, &c);
    ok(c != a, "same query, other parameter types: another statement");
    add(&bob, "P0_3", "SELECT $1", 0, NULL, &d);
    ok(d != a && d != c, "same query, types left to the server: another statement");
    is_int(prepared_registry_count(reg), 3, "registry: three distinct statements");
    prepared_client_forget_all(&alice);
    prepared_client_forget_all(&bob);
    prepared_registry_free(reg);
}

static void test_references_free_what_nobody_holds(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *a = NULL, *b = NULL;
    struct prepared_client alice, bob;

    prepared_client_init(&alice, reg);
    prepared_client_init(&bob, reg);
    add(&alice, "S_1", "SELECT 1", 0, NULL, &a);
    add(&bob, "S_9", "SELECT 1", 0, NULL, &b);
    ok(prepared_client_remove(&alice, "S_1"), "alice closes S_1");
    is_int(b->client_refs, 1, "the statement lives on for bob");
    ok(prepared_client_lookup(&bob, "S_9") == b, "bob's name still works");
    ok(!prepared_client_remove(&alice, "S_1"), "closing it again finds nothing (not an error)");
    ok(prepared_client_remove(&bob, "S_9"), "bob closes S_9");
    is_int(prepared_registry_count(reg), 0, "the last client gone: the statement is freed");
    is_int(add(&alice, "S_1", "SELECT 1", 0, NULL, &a), PREPARED_ADDED,
           "a closed name can be used again");
    prepared_client_forget_all(&alice);
    prepared_registry_free(reg);
}

static void test_forget_all_leaves_an_idle_client_empty(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *stmt = NULL;
    struct prepared_client client;
    char name[32], query[64];

    prepared_client_init(&client, reg);
    ok(client.names.slots == NULL && prepared_client_count(&client) == 0,
       "a client with no statements holds no memory for them");
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "S_%d", i);
        snprintf(query, sizeof(query), "SELECT %d", i % 5);
        add(&client, name, query, 0, NULL, &stmt);
    }
    is_int(prepared_client_count(&client), 20, "twenty names");
    is_int(prepared_registry_count(reg), 5, "five distinct statements behind them");
    prepared_client_forget_all(&client);
    ok(client.names.slots == NULL && prepared_client_count(&client) == 0,
       "forget all (DISCARD ALL, disconnect): nothing left, no memory held");
    is_int(prepared_registry_count(reg), 0, "forget all: the statements are freed");
    ok(prepared_client_lookup(&client, "S_1") == NULL, "forget all: names are gone");
    prepared_registry_free(reg);
}

static void test_taken_names_come_back_unless_bound_again(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *one = NULL, *two = NULL, *again = NULL;
    struct prepared_taken *taken = NULL;
    struct prepared_client client;

    prepared_client_init(&client, reg);
    add(&client, "S_1", "SELECT 1", 0, NULL, &one);
    add(&client, "S_2", "SELECT 2", 0, NULL, &two);
    ok(prepared_client_take(&client, "S_1", &taken) && taken != NULL,
       "take (DEALLOCATE S_1 sent): found and kept");
    ok(prepared_client_lookup(&client, "S_1") == NULL, "take: the client's next messages miss it");
    ok(!prepared_client_take(&client, "S_9", &taken), "take of a name the client has not: false");
    prepared_client_give_back(&client, taken);
    ok(prepared_client_lookup(&client, "S_1") == one, "give back (never ran): the name is back");
    is_int(prepared_registry_count(reg), 2, "give back: the statements are still held");

    taken = NULL;
    prepared_client_take_all(&client, &taken);
    is_int(prepared_client_count(&client), 0, "take all (DEALLOCATE ALL sent): no names left");
    add(&client, "S_2", "SELECT 'again'", 0, NULL, &again);
    prepared_client_give_back(&client, taken);
    ok(prepared_client_lookup(&client, "S_1") == one &&
       prepared_client_lookup(&client, "S_2") == again,
       "give back: a name bound again since keeps its newer statement");
    is_int(prepared_registry_count(reg), 2, "give back: the statement it replaced is freed");

    taken = NULL;
    prepared_client_take(&client, "S_1", &taken);
    prepared_taken_free(taken);
    ok(prepared_client_lookup(&client, "S_1") == NULL, "taken and ran: the name is gone");
    is_int(prepared_registry_count(reg), 1, "taken and ran: its statement is freed");
    prepared_client_forget_all(&client);
    prepared_registry_free(reg);
}

static void test_many_names_stay_findable(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *stmts[MANY_NAMES];
    struct prepared_client client;
    char name[32], query[64];
    int wrong = 0;

    prepared_client_init(&client, reg);
    for (int i = 0; i < MANY_NAMES; i++) {
        snprintf(name, sizeof(name), "pdo_stmt_%08d", i);
        snprintf(query, sizeof(query), "SELECT %d", i);
        if (add(&client, name, query, 0, NULL, &stmts[i]) != PREPARED_ADDED)
            wrong++;
    }
    for (int i = 0; i < MANY_NAMES; i += 2) {
        snprintf(name, sizeof(name), "pdo_stmt_%08d", i);
        if (!prepared_client_remove(&client, name))
            wrong++;
    }
    for (int i = 0; i < MANY_NAMES; i++) {
        snprintf(name, sizeof(name), "pdo_stmt_%08d", i);
        if (prepared_client_lookup(&client, name) != (i % 2 ? stmts[i] : NULL))
            wrong++;
    }
    is_int(wrong, 0, "%d names added, every other one removed: each lookup is right", MANY_NAMES);
    is_int(prepared_client_count(&client), MANY_NAMES / 2, "half the names remain");
    is_int(prepared_registry_count(reg), MANY_NAMES / 2, "and half the statements");
    prepared_client_forget_all(&client);
    prepared_registry_free(reg);
}

static void test_backend_names_are_never_reused(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *a = NULL, *b = NULL, *c = NULL;
    struct prepared_client x, y;

    prepared_client_init(&x, reg);
    prepared_client_init(&y, reg);
    add(&x, "S_1", "SELECT 1", 0, NULL, &a);
    add(&y, "S_1", "SELECT 1", 0, NULL, &b);
    is_str(a->backend_name, "sluice_1", "backend name: prefix and statement number");
    ok(a == b, "clients of any worker share one statement and one name");
    prepared_statement_retire(a);
    add(&y, "S_2", "SELECT 1", 0, NULL, &c);
    is_str(c->backend_name, "sluice_2", "a retired statement's text gets the next number");
    prepared_client_forget_all(&x);
    prepared_client_forget_all(&y);
    is_int(prepared_registry_live(reg), 0, "nothing holds them: both are freed");
    add(&x, "S_1", "SELECT 1", 0, NULL, &a);
    is_str(a->backend_name, "sluice_3", "numbers of freed statements are not reused");
    prepared_client_forget_all(&x);
    prepared_registry_free(reg);
}

/* ---- backends ---- */

static void test_backend_prepares_once(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *stmt = NULL;
    struct prepared_client client;
    struct prepared_server one, two;
    char victim[PREPARED_NAME_LEN];

    prepared_client_init(&client, reg);
    prepared_server_init(&one, 10);
    prepared_server_init(&two, 10);
    add(&client, "S_1", "SELECT 1", 0, NULL, &stmt);
    is_int(prepared_server_ensure(&one, stmt, victim), PREPARED_PARSE_NEEDED,
           "first use on a backend: Parse needed");
    is_str(victim, "", "no victim while there is room");
    is_int(prepared_server_ensure(&one, stmt, victim), PREPARED_ON_SERVER,
           "second use on that backend: already prepared");
    is_int(prepared_server_ensure(&two, stmt, victim), PREPARED_PARSE_NEEDED,
           "another backend (the next transaction): Parse needed there too");
    is_int(stmt->server_refs, 2, "prepared on two backends");

    ok(prepared_server_forget(&one, stmt), "forget: the Parse failed on the first backend");
    ok(!prepared_server_has(&one, stmt), "forgotten: not on the first backend any more");
    is_int(prepared_server_ensure(&one, stmt, victim), PREPARED_PARSE_NEEDED,
           "after forgetting: Parse needed again");
    prepared_server_forget_all(&one);
    prepared_server_forget_all(&two);
    is_int(stmt->server_refs, 0, "forget all: no backend holds it");
    prepared_client_forget_all(&client);
    prepared_registry_free(reg);
}

static void test_backend_evicts_least_recently_used(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *a = NULL, *b = NULL, *c = NULL;
    struct prepared_client client;
    struct prepared_server server;
    char victim[PREPARED_NAME_LEN], b_name[PREPARED_NAME_LEN], a_name[PREPARED_NAME_LEN];

    prepared_client_init(&client, reg);
    prepared_server_init(&server, 2);
    add(&client, "A", "SELECT 'a'", 0, NULL, &a);
    add(&client, "B", "SELECT 'b'", 0, NULL, &b);
    add(&client, "C", "SELECT 'c'", 0, NULL, &c);
    memcpy(a_name, a->backend_name, sizeof(a_name));
    memcpy(b_name, b->backend_name, sizeof(b_name));
    prepared_server_ensure(&server, a, victim);
    prepared_server_ensure(&server, b, victim);
    prepared_server_ensure(&server, a, victim);   /* a is now more recent than b */
    is_int(prepared_server_ensure(&server, c, victim), PREPARED_PARSE_NEEDED,
           "at capacity: the new statement still needs its Parse");
    is_str(victim, b_name, "at capacity: the least recently used one is the victim to Close");
    is_int(prepared_server_count(&server), 2, "capacity is kept");
    ok(prepared_server_has(&server, a) && prepared_server_has(&server, c) &&
           !prepared_server_has(&server, b),
       "the victim is gone, the others stay");
    is_int(prepared_server_ensure(&server, b, victim), PREPARED_PARSE_NEEDED,
           "after eviction: using it again means preparing it again");
    is_str(victim, a_name, "and the oldest of the rest makes room");
    prepared_server_forget_all(&server);
    prepared_client_forget_all(&client);
    prepared_registry_free(reg);
}

static void test_backend_keeps_statements_clients_forgot(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *a = NULL, *again = NULL;
    struct prepared_client client;
    struct prepared_server server;
    char victim[PREPARED_NAME_LEN];
    char name[PREPARED_NAME_LEN];

    prepared_client_init(&client, reg);
    prepared_server_init(&server, 1);
    add(&client, "S_1", "SELECT 1", 0, NULL, &a);
    memcpy(name, a->backend_name, sizeof(name));
    prepared_server_ensure(&server, a, victim);
    prepared_client_forget_all(&client);
    is_int(prepared_registry_count(reg), 1,
           "no client holds it, but the backend has it prepared: it stays");
    add(&client, "S_7", "SELECT 1", 0, NULL, &again);
    ok(again == a && strcmp(again->backend_name, name) == 0,
       "the same query later gets the same backend name");
    is_int(prepared_server_ensure(&server, again, victim), PREPARED_ON_SERVER,
           "and needs no new Parse on that backend");
    prepared_client_forget_all(&client);
    add(&client, "S_2", "SELECT 2", 0, NULL, &again);
    prepared_server_ensure(&server, again, victim);
    is_str(victim, name, "evicting a statement no client holds closes it on the backend");
    is_int(prepared_registry_count(reg), 1, "and frees it: only the new statement is left");
    prepared_server_forget_all(&server);
    prepared_client_forget_all(&client);
    is_int(prepared_registry_count(reg), 0, "nothing holds anything: the registry is empty");
    prepared_registry_free(reg);
}

static void test_retired_statement_is_prepared_afresh(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct prepared_statement *old = NULL, *fresh = NULL, *other = NULL;
    struct prepared_client alice, bob;
    struct prepared_server server;
    char victim[PREPARED_NAME_LEN];

    prepared_client_init(&alice, reg);
    prepared_client_init(&bob, reg);
    prepared_server_init(&server, 10);
    add(&alice, "S_1", "SELECT * FROM t", 0, NULL, &old);
    prepared_server_ensure(&server, old, victim);
    prepared_statement_retire(old);
    is_int(prepared_registry_count(reg), 0, "a retired statement is no longer found by its text");
    ok(prepared_client_lookup(&alice, "S_1") == old, "the name bound to it still leads to it");
    add(&bob, "S_1", "SELECT * FROM t", 0, NULL, &fresh);
    ok(fresh != old && strcmp(fresh->backend_name, old->backend_name) != 0,
       "the same text parsed again: a new backend statement");
    is_int(prepared_server_ensure(&server, fresh, victim), PREPARED_PARSE_NEEDED,
           "the new statement must be prepared on the backend that had the old one");
    ok(prepared_server_forget(&server, old), "the backend forgets the old one");
    ok(prepared_client_remove(&alice, "S_1"), "the last name of the old one goes: it is freed");
    add(&alice, "S_2", "SELECT 2", 0, NULL, &other);
    prepared_registry_retire_all(reg);
    is_int(prepared_registry_count(reg), 0, "after DDL no statement is found by its text");
    ok(prepared_client_lookup(&alice, "S_2") == other && prepared_client_lookup(&bob, "S_1") == fresh,
       "but every name still leads to its statement");
    prepared_server_forget_all(&server);
    prepared_client_free(&alice);
    prepared_client_free(&bob);
    prepared_registry_free(reg);
}

static void test_unnamed_statement_is_kept_for_another_backend(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    const uint32_t int4[] = { OID_INT4 };
    struct prepared_client client;
    struct prepared_parse p;
    struct bytes body, want;
    struct msgbuf mb;
    uint64_t first;

    prepared_client_init(&client, reg);
    msgbuf_init(&mb);
    ok(client.unnamed.serial == 0, "a new client has no unnamed statement");
    parse_body(&body, "", "SELECT $1", 1, int4);
    prepared_parse_parse(body.data, body.len, &p);
    ok(prepared_client_set_unnamed(&client, &p, 0), "Parse of the unnamed statement is kept");
    first = client.unnamed.serial;
    ok(first != 0, "it gets a serial");
    prepared_build_unnamed_parse(&mb, &client);
    message(&want, 'P', &body);
    ok(built_equals(&mb, &want), "the Parse built again is the client's, byte for byte");
    parse_body(&body, "", "SELECT 'a longer query than the first one'", 0, NULL);
    prepared_parse_parse(body.data, body.len, &p);
    prepared_client_set_unnamed(&client, &p, 0);
    ok(client.unnamed.serial > first, "a new Parse replaces it with a new serial");
    msgbuf_reset(&mb);
    prepared_build_unnamed_parse(&mb, &client);
    message(&want, 'P', &body);
    ok(built_equals(&mb, &want), "the Parse built again is the newest");
    is_int(prepared_registry_count(reg), 0, "the unnamed statement is never shared");
    prepared_client_clear_unnamed(&client);
    ok(client.unnamed.serial == 0, "Close or a simple query: no unnamed statement");
    prepared_client_free(&client);
    ok(client.unnamed.definition == NULL, "disconnect frees it");
    msgbuf_free(&mb);
    prepared_registry_free(reg);
}

/* ---- several workers at once ---- */

/* Backends no worker is using; taking one moves it to the taker, as a hand-over mail would. */
struct idle_backends {
    pthread_mutex_t lock;
    struct prepared_server *idle[BACKENDS];
    size_t n;
    pthread_barrier_t start;   /* every worker Parses the same text at the same moment */
};

struct worker_model {
    pthread_t thread;
    unsigned index;
    uint64_t random;
    struct prepared_registry *reg;
    struct idle_backends *backends;
    struct prepared_client client;
    struct prepared_statement *named[THREAD_NAMES];   /* what each name "s<i>" is bound to */
    char query_of[THREAD_NAMES][64];
    struct prepared_statement *owed[OWED_MAX];        /* replies not settled yet */
    size_t n_owed;
    struct prepared_statement *together;   /* its statement for the text all Parse at once */
    int wrong;
};

static unsigned next_random(struct worker_model *m, unsigned bound)
{
    m->random ^= m->random << 13;
    m->random ^= m->random >> 7;
    m->random ^= m->random << 17;
    return (unsigned)(m->random % bound);
}

static struct prepared_server *backend_take(struct idle_backends *b)
{
    struct prepared_server *server = NULL;

    pthread_mutex_lock(&b->lock);
    if (b->n > 0)
        server = b->idle[--b->n];
    pthread_mutex_unlock(&b->lock);
    return server;
}

static void backend_give_back(struct idle_backends *b, struct prepared_server *server)
{
    pthread_mutex_lock(&b->lock);
    b->idle[b->n++] = server;
    pthread_mutex_unlock(&b->lock);
}

static void settle_owed(struct worker_model *m)
{
    while (m->n_owed > 0)
        prepared_reply_settled(m->owed[--m->n_owed]);
}

/* A Parse: half the texts are the same on every worker, half are this worker's own. */
static void model_parse_or_close(struct worker_model *m)
{
    unsigned slot = next_random(m, THREAD_NAMES);
    char name[16];

    snprintf(name, sizeof(name), "s%u", slot);
    if (m->named[slot] != NULL) {
        if (!prepared_client_remove(&m->client, name))
            m->wrong++;
        m->named[slot] = NULL;
        return;
    }
    if (next_random(m, 2))
        snprintf(m->query_of[slot], sizeof(m->query_of[slot]), "SELECT %u",
                 next_random(m, SHARED_QUERIES));
    else
        snprintf(m->query_of[slot], sizeof(m->query_of[slot]), "SELECT %u /* worker %u */",
                 next_random(m, SHARED_QUERIES), m->index);
    if (add(&m->client, name, m->query_of[slot], 0, NULL, &m->named[slot]) != PREPARED_ADDED ||
        strcmp((const char *)m->named[slot]->definition, m->query_of[slot]) != 0)
        m->wrong++;
}

/* A transaction on a borrowed backend: its statements prepared there, replies owed for them. */
static void model_transaction(struct worker_model *m, bool discard_all)
{
    struct prepared_server *server = backend_take(m->backends);
    char victim[PREPARED_NAME_LEN];

    if (server == NULL)
        return;
    if (discard_all)
        prepared_server_forget_all(server);
    for (unsigned i = 0; i < 4; i++) {
        struct prepared_statement *stmt = m->named[next_random(m, THREAD_NAMES)];

        if (stmt == NULL)
            continue;
        if (prepared_server_ensure(server, stmt, victim) == PREPARED_ENSURE_NO_MEMORY ||
            (victim[0] != '\0' && strncmp(victim, "sluice_", 7) != 0))
            m->wrong++;
        if (m->n_owed == OWED_MAX)
            settle_owed(m);
        prepared_reply_owed(stmt);
        m->owed[m->n_owed++] = stmt;
        if (next_random(m, 8) == 0)
            prepared_server_forget(server, stmt);   /* its Parse failed */
    }
    backend_give_back(m->backends, server);
}

static void *model_worker(void *arg)
{
    struct worker_model *m = arg;

    pthread_barrier_wait(&m->backends->start);
    if (add(&m->client, "together", "SELECT 'together'", 0, NULL, &m->together) != PREPARED_ADDED)
        m->wrong++;
    pthread_barrier_wait(&m->backends->start);   /* all hold it now: equal means shared */
    for (unsigned step = 0; step < THREAD_STEPS; step++) {
        unsigned what = next_random(m, 100);
        struct prepared_statement *stmt = m->named[next_random(m, THREAD_NAMES)];

        if (what < 40)
            model_parse_or_close(m);
        else if (what < 80)
            model_transaction(m, false);
        else if (what < 82)
            model_transaction(m, true);
        else if (what < 88 && stmt != NULL)
            prepared_statement_retire(stmt);   /* 0A000 on a Bind */
        else if (what < 89)
            prepared_registry_retire_all(m->reg);   /* DDL */
        else if (what < 91) {
            prepared_client_forget_all(&m->client);   /* DISCARD ALL */
            memset(m->named, 0, sizeof(m->named));
        } else if (what < 95)
            settle_owed(m);
        else
            (void)prepared_registry_count(m->reg);
    }
    settle_owed(m);
    return NULL;
}

/* Once every worker stopped: each count says who holds the statement. */
static int model_wrong_counts(struct worker_model *models, struct prepared_server *servers)
{
    int wrong = 0;

    for (unsigned t = 0; t < THREADS; t++) {
        for (unsigned i = 0; i < THREAD_NAMES; i++) {
            struct prepared_statement *stmt = models[t].named[i];
            unsigned names = 0, backends = 0;

            if (stmt == NULL)
                continue;
            for (unsigned u = 0; u < THREADS; u++)
                for (unsigned j = 0; j < THREAD_NAMES; j++)
                    names += models[u].named[j] == stmt;
            for (unsigned b = 0; b < BACKENDS; b++)
                backends += prepared_server_has(&servers[b], stmt);
            if (stmt->client_refs != names || stmt->server_refs != backends ||
                stmt->reply_refs != 0 || stmt->refs != names + backends)
                wrong++;
        }
    }
    return wrong;
}

static void test_workers_share_one_registry(void)
{
    struct prepared_registry *reg = prepared_registry_new(test_seed);
    struct idle_backends backends = { .n = 0 };
    struct prepared_server servers[BACKENDS];
    static struct worker_model models[THREADS];
    int wrong = 0, started = 0;

    pthread_mutex_init(&backends.lock, NULL);
    pthread_barrier_init(&backends.start, NULL, THREADS);
    for (unsigned b = 0; b < BACKENDS; b++) {
        prepared_server_init(&servers[b], BACKEND_CAPACITY);
        backends.idle[backends.n++] = &servers[b];
    }
    for (unsigned t = 0; t < THREADS; t++) {
        memset(&models[t], 0, sizeof(models[t]));
        models[t].index = t;
        models[t].random = 0x9e3779b97f4a7c15ULL * (t + 1);
        models[t].reg = reg;
        models[t].backends = &backends;
        prepared_client_init(&models[t].client, reg);
        started += pthread_create(&models[t].thread, NULL, model_worker, &models[t]) == 0;
    }
    for (unsigned t = 0; t < THREADS; t++) {
        pthread_join(models[t].thread, NULL);
        wrong += models[t].wrong;
    }
    is_int(started, THREADS, "%d workers ran at once", THREADS);
    is_int(wrong, 0, "every Parse found or made the statement of its text, on every worker");
    is_int(model_wrong_counts(models, servers), 0,
           "afterwards each statement counts exactly the names and backends that hold it");
    for (unsigned t = 1; t < THREADS; t++)
        wrong += models[t].together != models[0].together;
    is_int(wrong, 0, "the same text parsed by every worker at once: one statement for all");
    for (unsigned t = 0; t < THREADS; t++)
        prepared_client_free(&models[t].client);
    for (unsigned b = 0; b < BACKENDS; b++)
        prepared_server_forget_all(&servers[b]);
    is_int(prepared_registry_live(reg), 0, "every worker's clients and backends gone: all freed");
    pthread_mutex_destroy(&backends.lock);
    pthread_barrier_destroy(&backends.start);
    prepared_registry_free(reg);
}

int main(void)
{
    test_parse_reads_name_query_and_types();
    test_malformed_parse_is_rejected();
    test_bind_reads_names_and_checks_shape();
    test_describe_and_close_targets();
    test_rewrite_parse_is_byte_exact();
    test_rewrite_bind_keeps_parameters();
    test_rewrite_describe_and_close();
    test_build_parse_and_close();
    test_clients_keep_their_own_names();
    test_equal_statements_are_shared();
    test_references_free_what_nobody_holds();
    test_forget_all_leaves_an_idle_client_empty();
    test_taken_names_come_back_unless_bound_again();
    test_many_names_stay_findable();
    test_backend_names_are_never_reused();
    test_backend_prepares_once();
    test_backend_evicts_least_recently_used();
    test_backend_keeps_statements_clients_forgot();
    test_retired_statement_is_prepared_afresh();
    test_unnamed_statement_is_kept_for_another_backend();
    test_workers_share_one_registry();
    return tap_done();
}
