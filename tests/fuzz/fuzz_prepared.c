/*
 * fuzz_prepared.c: feeds arbitrary bytes to the extended-protocol parsers of prepared.c as
 * Parse, Bind, Describe and Close bodies, and checks what a successful parse promises: names and
 * the query end inside the body, the lengths add up, a rewrite parses back with the new name and
 * everything else unchanged, and renaming back gives the original bytes. Then it reads the input
 * as a script of client and backend operations and checks the bookkeeping against a model:
 * lookups, counts, capacity, and that nothing is left once everyone forgets.
 * Built with libFuzzer or with replay_main.c.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepared.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

#define NEW_NAME "sluice_0_42"
#define SCRIPT_CLIENTS 3
#define SCRIPT_SERVERS 2
#define SCRIPT_NAMES 8
#define SCRIPT_QUERIES 6
#define SCRIPT_CAPACITY 3

static const uint8_t fuzz_seed[PREPARED_SEED_LEN] = "fuzz-seed-16byte";

/* s starts inside buf[0..len) and its NUL is inside too. */
static bool string_inside(const char *s, const uint8_t *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;

    if (p < buf || p >= buf + len)
        return false;
    return memchr(p, '\0', (size_t)(buf + len - p)) != NULL;
}

static uint8_t *exact_copy(const uint8_t *data, size_t size)
{
    uint8_t *copy = calloc(size ? size : 1, 1);

    CHECK(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    return copy;
}

/* The rewritten message of mb: its header is right; *body points at its body. */
static size_t built_body(const struct msgbuf *mb, char type, const uint8_t **body)
{
    uint32_t net;

    CHECK(!mb->failed && mb->len >= 5 && mb->data[0] == (uint8_t)type);
    memcpy(&net, mb->data + 1, sizeof(net));
    CHECK(ntohl(net) == mb->len - 1);
    *body = mb->data + 5;
    return mb->len - 5;
}

/* Rewriting to new_name and back to the original name gives the original message. */
static void check_round_trip(char type, const uint8_t *body, size_t len, const char *original)
{
    struct msgbuf there, back;
    const uint8_t *renamed, *restored;
    size_t renamed_len, restored_len;

    msgbuf_init(&there);
    msgbuf_init(&back);
    CHECK(prepared_rewrite(&there, type, body, len, NEW_NAME) == PROTO_OK);
    renamed_len = built_body(&there, type, &renamed);
    CHECK(renamed_len == len - strlen(original) + strlen(NEW_NAME));
    CHECK(prepared_rewrite(&back, type, renamed, renamed_len, original) == PROTO_OK);
    restored_len = built_body(&back, type, &restored);
    CHECK(restored_len == len && memcmp(restored, body, len) == 0);
    msgbuf_free(&there);
    msgbuf_free(&back);
}

static void fuzz_parse(const uint8_t *body, size_t len)
{
    struct prepared_parse p, q;
    struct msgbuf mb;
    const uint8_t *renamed;
    size_t renamed_len;

    if (prepared_parse_parse(body, len, &p) != PROTO_OK)
        return;
    CHECK(string_inside(p.name, body, len) && string_inside(p.query, body, len));
    CHECK(p.definition == (const uint8_t *)p.name + strlen(p.name) + 1);
    CHECK(p.definition + p.definition_len == body + len);
    CHECK(p.param_types + (size_t)p.n_params * 4 == body + len);
    check_round_trip('P', body, len, p.name);

    msgbuf_init(&mb);
    prepared_rewrite(&mb, 'P', body, len, NEW_NAME);
    renamed_len = built_body(&mb, 'P', &renamed);
    CHECK(prepared_parse_parse(renamed, renamed_len, &q) == PROTO_OK);
    CHECK(strcmp(q.name, NEW_NAME) == 0 && strcmp(q.query, p.query) == 0);
    CHECK(q.n_params == p.n_params && q.definition_len == p.definition_len);
    CHECK(memcmp(q.definition, p.definition, p.definition_len) == 0);
    msgbuf_free(&mb);
}

static void fuzz_bind(const uint8_t *body, size_t len)
{
    const char *portal, *statement, *portal2, *statement2;
    struct msgbuf mb;
    const uint8_t *renamed;
    size_t renamed_len;

    if (prepared_parse_bind(body, len, &portal, &statement) != PROTO_OK)
        return;
    CHECK(string_inside(portal, body, len) && string_inside(statement, body, len));
    CHECK(statement == portal + strlen(portal) + 1);
    check_round_trip('B', body, len, statement);

    msgbuf_init(&mb);
    prepared_rewrite(&mb, 'B', body, len, NEW_NAME);
    renamed_len = built_body(&mb, 'B', &renamed);
    CHECK(prepared_parse_bind(renamed, renamed_len, &portal2, &statement2) == PROTO_OK);
    CHECK(strcmp(portal2, portal) == 0 && strcmp(statement2, NEW_NAME) == 0);
    msgbuf_free(&mb);
}

static void fuzz_targets(const uint8_t *body, size_t len)
{
    const char *name;
    struct msgbuf mb;
    char kind;

    if (prepared_parse_target(body, len, &kind, &name) != PROTO_OK) {
        msgbuf_init(&mb);
        CHECK(prepared_rewrite(&mb, 'D', body, len, NEW_NAME) == PROTO_ERROR && mb.len == 0);
        msgbuf_free(&mb);
        return;
    }
    CHECK(kind == 'S' || kind == 'P');
    CHECK(name == (const char *)body + 1 && strlen(name) == len - 2);
    if (kind == 'S') {
        check_round_trip('D', body, len, name);
        check_round_trip('C', body, len, name);
    }
}

/* ---- the bookkeeping, against a model ---- */

struct model {
    struct prepared_registry *registry;
    struct prepared_client clients[SCRIPT_CLIENTS];
    struct prepared_server servers[SCRIPT_SERVERS];
    int query_of[SCRIPT_CLIENTS][SCRIPT_NAMES];   /* -1: no such name */
};

static void build_parse_body(struct msgbuf *mb, int name, int query)
{
    char text[32];
    uint16_t n_params = htons((uint16_t)(query % 2));
    uint32_t type = htonl(23);

    snprintf(text, sizeof(text), "S_%d", name);
    msgbuf_append(mb, text, strlen(text) + 1);
    snprintf(text, sizeof(text), "SELECT %d", query / 2);
    msgbuf_append(mb, text, strlen(text) + 1);
    msgbuf_append(mb, &n_params, sizeof(n_params));
    if (query % 2)
        msgbuf_append(mb, &type, sizeof(type));
}

static void script_add(struct model *m, int client, int name, int query)
{
    struct prepared_statement *stmt = NULL;
    struct prepared_parse p;
    struct msgbuf mb;
    enum prepared_add_result r;

    msgbuf_init(&mb);
    build_parse_body(&mb, name, query);
    CHECK(prepared_parse_parse(mb.data, mb.len, &p) == PROTO_OK);
    r = prepared_client_add(&m->clients[client], &p, 0, &stmt);
    if (m->query_of[client][name] >= 0) {
        CHECK(r == PREPARED_NAME_IN_USE);
    } else {
        CHECK(r == PREPARED_ADDED && stmt != NULL && stmt->client_refs > 0);
        CHECK(stmt->definition_len == p.definition_len &&
              memcmp(stmt->definition, p.definition, p.definition_len) == 0);
        m->query_of[client][name] = query;
    }
    msgbuf_free(&mb);
}

static struct prepared_statement *script_lookup(struct model *m, int client, int name)
{
    char text[16];
    struct prepared_statement *stmt;

    snprintf(text, sizeof(text), "S_%d", name);
    stmt = prepared_client_lookup(&m->clients[client], text);
    CHECK((stmt != NULL) == (m->query_of[client][name] >= 0));
    return stmt;
}

static void script_remove(struct model *m, int client, int name)
{
    char text[16];

    snprintf(text, sizeof(text), "S_%d", name);
    CHECK(prepared_client_remove(&m->clients[client], text) == (m->query_of[client][name] >= 0));
    m->query_of[client][name] = -1;
}

static void script_use(struct model *m, int client, int name, int server)
{
    struct prepared_statement *stmt = script_lookup(m, client, name);
    struct prepared_server *s = &m->servers[server];
    char victim[PREPARED_NAME_LEN];
    bool was_there, was_full;

    if (stmt == NULL)
        return;
    was_there = prepared_server_has(s, stmt);
    was_full = prepared_server_count(s) == SCRIPT_CAPACITY;
    CHECK(prepared_server_ensure(s, stmt, victim) ==
          (was_there ? PREPARED_ON_SERVER : PREPARED_PARSE_NEEDED));
    CHECK((victim[0] != '\0') == (!was_there && was_full));
    CHECK(strcmp(victim, stmt->backend_name) != 0);
    CHECK(prepared_server_has(s, stmt) && prepared_server_count(s) <= SCRIPT_CAPACITY);
}

static void script_forget_all(struct model *m, int client)
{
    prepared_client_forget_all(&m->clients[client]);
    CHECK(prepared_client_count(&m->clients[client]) == 0);
    for (int name = 0; name < SCRIPT_NAMES; name++)
        m->query_of[client][name] = -1;
}

/* Each byte is one operation: what (3 bits), which client/name/query/server from the rest. */
static void fuzz_script(const uint8_t *data, size_t size)
{
    struct model m;

    m.registry = prepared_registry_new(fuzz_seed);
    CHECK(m.registry != NULL);
    for (int c = 0; c < SCRIPT_CLIENTS; c++) {
        prepared_client_init(&m.clients[c], m.registry);
        for (int name = 0; name < SCRIPT_NAMES; name++)
            m.query_of[c][name] = -1;
    }
    for (int s = 0; s < SCRIPT_SERVERS; s++)
        prepared_server_init(&m.servers[s], SCRIPT_CAPACITY);
    for (size_t i = 0; i + 1 < size; i += 2) {
        int op = data[i] & 7, client = (data[i] >> 3) % SCRIPT_CLIENTS;
        int name = data[i + 1] % SCRIPT_NAMES, query = (data[i + 1] >> 3) % SCRIPT_QUERIES;
        int server = (data[i] >> 6) % SCRIPT_SERVERS;
        struct prepared_statement *stmt;

        switch (op) {
        case 0:
        case 1:
            script_add(&m, client, name, query);
            break;
        case 2:
            script_remove(&m, client, name);
            break;
        case 3:
        case 4:
            script_use(&m, client, name, server);
            break;
        case 5:
            stmt = script_lookup(&m, client, name);
            if (stmt != NULL)
                prepared_server_forget(&m.servers[server], stmt);
            break;
        case 6:
            prepared_server_forget_all(&m.servers[server]);
            CHECK(prepared_server_count(&m.servers[server]) == 0);
            break;
        default:
            script_forget_all(&m, client);
            break;
        }
        CHECK(prepared_registry_count(m.registry) <=
              SCRIPT_CLIENTS * SCRIPT_NAMES + SCRIPT_SERVERS * SCRIPT_CAPACITY);
    }
    for (int c = 0; c < SCRIPT_CLIENTS; c++)
        script_forget_all(&m, c);
    for (int s = 0; s < SCRIPT_SERVERS; s++)
        prepared_server_forget_all(&m.servers[s]);
    CHECK(prepared_registry_count(m.registry) == 0);
    prepared_registry_free(m.registry);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *body = exact_copy(data, size);

    fuzz_parse(body, size);
    fuzz_bind(body, size);
    fuzz_targets(body, size);
    free(body);
    fuzz_script(data, size);
    return 0;
}
