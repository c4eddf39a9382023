/*
 * prepared.c: prepared-statement bookkeeping for transaction pooling: the extended-protocol
 * messages that name a statement (parsed and rewritten over byte buffers), the process's registry
 * of distinct statements, each client's names and each backend's LRU cache of what it has
 * prepared. Every map is a keyed hash table, so a message costs one probe however many
 * statements a client keeps, and a client with none costs no memory beyond its struct.
 * The registry is shared by every worker: its table under its lock; a statement's references
 * are atomic, and only its last one, which frees it, takes the lock (see statement_put).
 */
#include "prepared.h"
#include "reader.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MESSAGE_LEN_MAX 0x7fffffffu   /* the length field is a signed int32 */
#define TABLE_MIN_CAP 8               /* a power of two */
#define NOT_FOUND SIZE_MAX
#define BACKEND_NAME_PREFIX "sluice_"

struct prepared_registry {
    pthread_mutex_t lock;
    struct prepared_table statements;   /* under lock: by hash of the definition */
    uint64_t next_id;                   /* under lock */
    size_t live;                        /* under lock: statements allocated */
    uint8_t seed[PREPARED_SEED_LEN];    /* never changes: hashed without the lock */
};

struct prepared_server_entry {
    struct prepared_statement *stmt;
    struct prepared_server_entry *newer;
    struct prepared_server_entry *older;
};

/* A client's name for a statement. */
struct client_name {
    struct prepared_statement *stmt;
    uint64_t serial;
    size_t name_len;
    char name[];
};

/* ---- reading message bodies ---- */

/* A count followed by that many fixed-size items (format codes, type OIDs). */
static bool skip_counted(struct byte_reader *r, size_t item_size)
{
    uint16_t n;

    return read_u16(r, &n) && skip_bytes(r, (size_t)n * item_size);
}

static bool skip_bind_values(struct byte_reader *r)
{
    uint16_t n;
    int32_t value_len;

    if (!read_u16(r, &n))
        return false;
    for (uint16_t i = 0; i < n; i++) {
        if (!read_i32(r, &value_len) || value_len < -1)
            return false;
        if (value_len > 0 && !skip_bytes(r, (size_t)value_len))
            return false;
    }
    return true;
}

/* ---- parsing ---- */

enum proto_result prepared_parse_parse(const uint8_t *body, size_t len, struct prepared_parse *out)
{
    struct byte_reader r = { body, len, 0 };
    size_t definition_start;

    if (body == NULL || !read_cstring(&r, &out->name))
        return PROTO_ERROR;
    definition_start = r.pos;
    if (!read_cstring(&r, &out->query) || !read_u16(&r, &out->n_params))
        return PROTO_ERROR;
    out->param_types = body + r.pos;
    if (!skip_bytes(&r, (size_t)out->n_params * sizeof(uint32_t)) || r.pos != len)
        return PROTO_ERROR;
    out->definition = body + definition_start;
    out->definition_len = len - definition_start;
    return PROTO_OK;
}

/* Offset of the statement name in a Bind body, after checking the whole body's shape. */
static bool bind_layout(const uint8_t *body, size_t len, const char **portal, size_t *name_at)
{
    struct byte_reader r = { body, len, 0 };
    const char *statement;

    if (body == NULL || !read_cstring(&r, portal))
        return false;
    *name_at = r.pos;
    return read_cstring(&r, &statement) && skip_counted(&r, sizeof(uint16_t)) &&
           skip_bind_values(&r) && skip_counted(&r, sizeof(uint16_t)) && r.pos == len;
}

enum proto_result prepared_parse_bind(const uint8_t *body, size_t len, const char **portal,
                                      const char **statement)
{
    size_t name_at;

    if (!bind_layout(body, len, portal, &name_at))
        return PROTO_ERROR;
    *statement = (const char *)body + name_at;
    return PROTO_OK;
}

enum proto_result prepared_parse_target(const uint8_t *body, size_t len, char *kind,
                                        const char **name)
{
    struct byte_reader r = { body, len, 0 };

    if (body == NULL || len < 2 || (body[0] != 'S' && body[0] != 'P'))
        return PROTO_ERROR;
    r.pos = 1;
    if (!read_cstring(&r, name) || r.pos != len)
        return PROTO_ERROR;
    *kind = (char)body[0];
    return PROTO_OK;
}

/* ---- building ---- */

/* Type byte and length field of a message whose body will be body_len bytes. */
static bool append_header(struct msgbuf *out, char type, size_t body_len)
{
    uint32_t net;

    if (body_len > MESSAGE_LEN_MAX - sizeof(net)) {
        out->failed = true;
        return false;
    }
    net = htonl((uint32_t)(body_len + sizeof(net)));
    msgbuf_append(out, &type, 1);
    msgbuf_append(out, &net, sizeof(net));
    return !out->failed;
}

/* Where the statement name sits in a P, B, D or C body; false if malformed or a portal. */
static bool statement_name_at(char type, const uint8_t *body, size_t len, size_t *name_at)
{
    struct prepared_parse parse;
    const char *portal, *name;
    char kind;

    switch (type) {
    case 'P':
        *name_at = 0;
        return prepared_parse_parse(body, len, &parse) == PROTO_OK;
    case 'B':
        return bind_layout(body, len, &portal, name_at);
    case 'D':
    case 'C':
        *name_at = 1;
        return prepared_parse_target(body, len, &kind, &name) == PROTO_OK && kind == 'S';
    default:
        return false;
    }
}

enum proto_result prepared_rewrite(struct msgbuf *out, char type, const uint8_t *body, size_t len,
                                   const char *backend_name)
{
    size_t name_at, old_len, new_len = strlen(backend_name), tail_at;

    if (!statement_name_at(type, body, len, &name_at))
        return PROTO_ERROR;
    old_len = strlen((const char *)body + name_at);
    tail_at = name_at + old_len + 1;
    if (!append_header(out, type, len - old_len + new_len))
        return PROTO_OK;   /* out->failed says it: the input was fine */
    msgbuf_append(out, body, name_at);
    msgbuf_append(out, backend_name, new_len + 1);
    msgbuf_append(out, body + tail_at, len - tail_at);
    return PROTO_OK;
}

void prepared_build_parse(struct msgbuf *out, const struct prepared_statement *stmt)
{
    size_t name_len = strlen(stmt->backend_name) + 1;

    if (!append_header(out, 'P', name_len + stmt->definition_len))
        return;
    msgbuf_append(out, stmt->backend_name, name_len);
    msgbuf_append(out, stmt->definition, stmt->definition_len);
}

void prepared_build_close(struct msgbuf *out, const char *backend_name)
{
    size_t name_len = strlen(backend_name) + 1;

    if (!append_header(out, 'C', 1 + name_len))
        return;
    msgbuf_append(out, "S", 1);
    msgbuf_append(out, backend_name, name_len);
}

/* ---- hashing ---- */

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t rotate_left(uint64_t x, int bits)
{
    return (x << bits) | (x >> (64 - bits));
}

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotate_left(v[1], 13);
    v[1] ^= v[0];
    v[0] = rotate_left(v[0], 32);
    v[2] += v[3];
    v[3] = rotate_left(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = rotate_left(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = rotate_left(v[1], 17);
    v[1] ^= v[2];
    v[2] = rotate_left(v[2], 32);
}

/*
 * SipHash-2-4: names and query texts come from clients, and with an unkeyed hash one client could
 * send names that all collide and stall the worker's event loop.
 */
static uint64_t keyed_hash(const uint8_t key[PREPARED_SEED_LEN], const void *data, size_t len)
{
    const uint8_t *in = data;
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v[4] = {
        0x736f6d6570736575ULL ^ k0,
        0x646f72616e646f6dULL ^ k1,
        0x6c7967656e657261ULL ^ k0,
        0x7465646279746573ULL ^ k1,
    };
    uint64_t last = (uint64_t)len << 56;
    size_t whole = len - len % 8;

    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(in + i);

        v[3] ^= m;
        sip_round(v);
        sip_round(v);
        v[0] ^= m;
    }
    for (size_t i = 0; i < len % 8; i++)
        last |= (uint64_t)in[whole + i] << (8 * i);
    v[3] ^= last;
    sip_round(v);
    sip_round(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* Statement ids are sequential, not chosen by clients: a mixer spreads them well enough. */
static uint64_t id_hash(uint64_t id)
{
    id ^= id >> 30;
    id *= 0xbf58476d1ce4e5b9ULL;
    id ^= id >> 27;
    id *= 0x94d049bb133111ebULL;
    return id ^ (id >> 31);
}

/* ---- hash table: linear probing, at most 3/4 full, backward-shift deletion ---- */

typedef bool (*item_matches_fn)(const void *item, const void *key, size_t key_len);

static size_t table_find(const struct prepared_table *t, uint64_t hash, item_matches_fn matches,
                         const void *key, size_t key_len)
{
    size_t mask = t->cap - 1;

    if (t->cap == 0)
        return NOT_FOUND;
    for (size_t i = hash & mask; t->slots[i].item != NULL; i = (i + 1) & mask) {
        if (t->slots[i].hash == hash && matches(t->slots[i].item, key, key_len))
            return i;
    }
    return NOT_FOUND;
}

static void table_place(struct prepared_slot *slots, size_t cap, uint64_t hash, void *item)
{
    size_t i = hash & (cap - 1);

    while (slots[i].item != NULL)
        i = (i + 1) & (cap - 1);
    slots[i].hash = hash;
    slots[i].item = item;
}

static int table_grow(struct prepared_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : TABLE_MIN_CAP;
    struct prepared_slot *slots;

    if (cap > SIZE_MAX / sizeof(*slots))
        return -1;
    slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].item != NULL)
            table_place(slots, cap, t->slots[i].hash, t->slots[i].item);
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

static int table_insert(struct prepared_table *t, uint64_t hash, void *item)
{
    if ((t->n + 1) * 4 > t->cap * 3 && table_grow(t) != 0)
        return -1;
    table_place(t->slots, t->cap, hash, item);
    t->n++;
    return 0;
}

/* Is home cyclically in (hole, at]? Then the item at `at` may not move into the hole. */
static bool home_between(size_t hole, size_t home, size_t at)
{
    return hole <= at ? (hole < home && home <= at) : (hole < home || home <= at);
}

/* Empties slot i and moves later items of its probe run back, so no tombstones are needed. */
static void table_remove_at(struct prepared_table *t, size_t i)
{
    size_t mask = t->cap - 1, hole = i;

    t->slots[hole].item = NULL;
    for (size_t at = (hole + 1) & mask; t->slots[at].item != NULL; at = (at + 1) & mask) {
        if (home_between(hole, t->slots[at].hash & mask, at))
            continue;
        t->slots[hole] = t->slots[at];
        t->slots[at].item = NULL;
        hole = at;
    }
    if (--t->n == 0) {
        free(t->slots);
        t->slots = NULL;
        t->cap = 0;
    }
}

static void table_free(struct prepared_table *t)
{
    free(t->slots);
    t->slots = NULL;
    t->cap = 0;
    t->n = 0;
}

static bool same_item(const void *item, const void *key, size_t key_len)
{
    (void)key_len;
    return item == key;
}

/* ---- registry ---- */

struct prepared_registry *prepared_registry_new(const uint8_t seed[PREPARED_SEED_LEN])
{
    struct prepared_registry *registry = calloc(1, sizeof(*registry));

    if (registry == NULL)
        return NULL;
    if (pthread_mutex_init(&registry->lock, NULL) != 0) {
        free(registry);
        return NULL;
    }
    memcpy(registry->seed, seed, PREPARED_SEED_LEN);
    return registry;
}

void prepared_registry_free(struct prepared_registry *registry)
{
    if (registry == NULL)
        return;
    for (size_t i = 0; i < registry->statements.cap; i++)
        free(registry->statements.slots[i].item);
    table_free(&registry->statements);
    pthread_mutex_destroy(&registry->lock);
    free(registry);
}

size_t prepared_registry_count(struct prepared_registry *registry)
{
    size_t n;

    pthread_mutex_lock(&registry->lock);
    n = registry->statements.n;
    pthread_mutex_unlock(&registry->lock);
    return n;
}

size_t prepared_registry_live(struct prepared_registry *registry)
{
    size_t n;

    pthread_mutex_lock(&registry->lock);
    n = registry->live;
    pthread_mutex_unlock(&registry->lock);
    return n;
}

static bool definition_matches(const void *item, const void *key, size_t key_len)
{
    const struct prepared_statement *stmt = item;

    return stmt->definition_len == key_len && memcmp(stmt->definition, key, key_len) == 0;
}

/*
 * One more reference of this kind on a statement the caller already holds: no lock, since its
 * count cannot reach zero meanwhile. Relaxed, as for any reference count: the statement's
 * identity was published with its pointer.
 */
static void statement_hold(struct prepared_statement *stmt, atomic_uint *kind)
{
    atomic_fetch_add_explicit(&stmt->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(kind, 1, memory_order_relaxed);
}

/* Out of the registry's table, so no Parse finds it again. Under the registry's lock. */
static void statement_unpublish(struct prepared_statement *stmt)
{
    struct prepared_table *statements = &stmt->registry->statements;
    size_t i;

    if (stmt->retired)
        return;
    i = table_find(statements, stmt->hash, same_item, stmt, 0);
    if (i != NOT_FOUND)
        table_remove_at(statements, i);
    stmt->retired = true;
}

/*
 * Drops a reference of this kind. Any but the last is one atomic decrement. The last frees the
 * statement, and is dropped under the lock: another worker may be finding the statement in the
 * table right now (registry_acquire), and would then hold it again.
 */
static void statement_put(struct prepared_statement *stmt, atomic_uint *kind)
{
    struct prepared_registry *registry = stmt->registry;
    size_t refs = atomic_load_explicit(&stmt->refs, memory_order_relaxed);
    bool last;

    atomic_fetch_sub_explicit(kind, 1, memory_order_relaxed);
    while (refs > 1) {
        if (atomic_compare_exchange_weak_explicit(&stmt->refs, &refs, refs - 1,
                                                  memory_order_release, memory_order_relaxed))
            return;
    }
    pthread_mutex_lock(&registry->lock);
    last = atomic_fetch_sub_explicit(&stmt->refs, 1, memory_order_acq_rel) == 1;
    if (last) {
        statement_unpublish(stmt);
        registry->live--;
    }
    pthread_mutex_unlock(&registry->lock);
    if (last)
        free(stmt);
}

/* A new statement with one client reference, in the table. Under the registry's lock. */
static struct prepared_statement *statement_new(struct prepared_registry *registry, uint64_t hash,
                                                const uint8_t *definition, size_t len,
                                                uint8_t command)
{
    struct prepared_statement *stmt;

    if (len > SIZE_MAX - sizeof(*stmt))
        return NULL;
    stmt = calloc(1, sizeof(*stmt) + len);
    if (stmt == NULL)
        return NULL;
    /* Ids are never reused, so neither is a name some backend may still have prepared. */
    stmt->id = ++registry->next_id;
    snprintf(stmt->backend_name, sizeof(stmt->backend_name), BACKEND_NAME_PREFIX "%" PRIu64,
             stmt->id);
    stmt->registry = registry;
    stmt->hash = hash;
    stmt->command = command;
    stmt->definition_len = len;
    memcpy(stmt->definition, definition, len);
    atomic_init(&stmt->refs, 1);
    atomic_init(&stmt->client_refs, 1);
    if (table_insert(&registry->statements, hash, stmt) != 0) {
        free(stmt);
        return NULL;
    }
    registry->live++;
    return stmt;
}

/* The statement with this definition, created if new, with one more client reference. */
static struct prepared_statement *registry_acquire(struct prepared_registry *registry,
                                                   const uint8_t *definition, size_t len,
                                                   uint8_t command)
{
    uint64_t hash = keyed_hash(registry->seed, definition, len);
    struct prepared_statement *stmt;
    size_t i;

    pthread_mutex_lock(&registry->lock);
    i = table_find(&registry->statements, hash, definition_matches, definition, len);
    if (i != NOT_FOUND) {
        /* In the table, so its last reference is not being dropped: that takes the lock. */
        stmt = registry->statements.slots[i].item;
        statement_hold(stmt, &stmt->client_refs);
    } else {
        stmt = statement_new(registry, hash, definition, len, command);
    }
    pthread_mutex_unlock(&registry->lock);
    return stmt;
}

void prepared_statement_retire(struct prepared_statement *stmt)
{
    struct prepared_registry *registry = stmt->registry;

    pthread_mutex_lock(&registry->lock);
    statement_unpublish(stmt);
    pthread_mutex_unlock(&registry->lock);
}

void prepared_registry_retire_all(struct prepared_registry *registry)
{
    pthread_mutex_lock(&registry->lock);
    /* Every statement in the table is held by someone (released ones left it): none is freed. */
    for (size_t i = 0; i < registry->statements.cap; i++) {
        struct prepared_statement *stmt = registry->statements.slots[i].item;
        if (stmt != NULL)
            stmt->retired = true;
    }
    table_free(&registry->statements);
    pthread_mutex_unlock(&registry->lock);
}

/* ---- clients ---- */

static bool client_name_matches(const void *item, const void *key, size_t key_len)
{
    const struct client_name *entry = item;

    return entry->name_len == key_len && memcmp(entry->name, key, key_len) == 0;
}

static size_t client_find(const struct prepared_client *client, const char *name, uint64_t *hash)
{
    size_t len = strlen(name);

    *hash = keyed_hash(client->registry->seed, name, len);
    return table_find(&client->names, *hash, client_name_matches, name, len);
}

void prepared_client_init(struct prepared_client *client, struct prepared_registry *registry)
{
    client->registry = registry;
    client->names.slots = NULL;
    client->names.cap = 0;
    client->names.n = 0;
    client->last_serial = 0;
    memset(&client->unnamed, 0, sizeof(client->unnamed));
}

enum prepared_add_result prepared_client_add(struct prepared_client *client,
                                             const struct prepared_parse *parse, uint8_t command,
                                             struct prepared_statement **out)
{
    size_t name_len = strlen(parse->name);
    struct prepared_statement *stmt;
    struct client_name *entry;
    uint64_t hash;

    if (name_len == 0)
        return PREPARED_UNNAMED;
    if (client_find(client, parse->name, &hash) != NOT_FOUND)
        return PREPARED_NAME_IN_USE;
    stmt = registry_acquire(client->registry, parse->definition, parse->definition_len, command);
    if (stmt == NULL)
        return PREPARED_NO_MEMORY;
    entry = malloc(sizeof(*entry) + name_len + 1);
    if (entry != NULL) {
        entry->stmt = stmt;
        entry->serial = ++client->last_serial;
        entry->name_len = name_len;
        memcpy(entry->name, parse->name, name_len + 1);
    }
    if (entry == NULL || table_insert(&client->names, hash, entry) != 0) {
        free(entry);
        statement_put(stmt, &stmt->client_refs);   /* frees it if it was new */
        return PREPARED_NO_MEMORY;
    }
    *out = stmt;
    return PREPARED_ADDED;
}

struct prepared_statement *prepared_client_lookup(const struct prepared_client *client,
                                                  const char *name)
{
    uint64_t hash;
    size_t i = client_find(client, name, &hash);

    if (i == NOT_FOUND)
        return NULL;
    return ((struct client_name *)client->names.slots[i].item)->stmt;
}

static void client_name_free(struct client_name *entry)
{
    struct prepared_statement *stmt = entry->stmt;

    free(entry);
    statement_put(stmt, &stmt->client_refs);
}

uint64_t prepared_client_serial(const struct prepared_client *client, const char *name)
{
    uint64_t hash;
    size_t i = client_find(client, name, &hash);

    if (i == NOT_FOUND)
        return 0;
    return ((struct client_name *)client->names.slots[i].item)->serial;
}

void prepared_client_unbind(struct prepared_client *client, uint64_t serial)
{
    if (client->unnamed.serial == serial) {
        prepared_client_clear_unnamed(client);
        return;
    }
    /* A scan: only a failed Parse comes here. */
    for (size_t i = 0; i < client->names.cap; i++) {
        struct client_name *entry = client->names.slots[i].item;
        if (entry != NULL && entry->serial == serial) {
            table_remove_at(&client->names, i);
            client_name_free(entry);
            return;
        }
    }
}

/* Takes name out of the client's table: its entry (and hash), or NULL if it has no such name. */
static struct client_name *client_detach(struct prepared_client *client, const char *name,
                                         uint64_t *hash)
{
    size_t i = client_find(client, name, hash);
    if (i == NOT_FOUND)
        return NULL;
    struct client_name *entry = client->names.slots[i].item;
    table_remove_at(&client->names, i);
    return entry;
}

bool prepared_client_remove(struct prepared_client *client, const char *name)
{
    uint64_t hash;
    struct client_name *entry = client_detach(client, name, &hash);
    if (entry == NULL)
        return false;
    client_name_free(entry);
    return true;
}

struct prepared_taken {
    struct prepared_slot *entries;  /* hash and struct client_name, in the order taken */
    size_t n;
    size_t cap;
};

/* Keeps entry in *taken (made at first use); an entry that cannot be kept is freed. */
static void taken_keep(struct prepared_taken **taken, uint64_t hash, struct client_name *entry)
{
    struct prepared_taken *t = *taken;

    if (t == NULL && (t = *taken = calloc(1, sizeof(*t))) == NULL) {
        client_name_free(entry);
        return;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4;
        struct prepared_slot *grown = realloc(t->entries, cap * sizeof(*grown));
        if (grown == NULL) {
            client_name_free(entry);
            return;
        }
        t->entries = grown;
        t->cap = cap;
    }
    t->entries[t->n++] = (struct prepared_slot){ .hash = hash, .item = entry };
}

bool prepared_client_take(struct prepared_client *client, const char *name,
                          struct prepared_taken **taken)
{
    uint64_t hash;
    struct client_name *entry = client_detach(client, name, &hash);
    if (entry == NULL)
        return false;
    taken_keep(taken, hash, entry);
    return true;
}

void prepared_client_take_all(struct prepared_client *client, struct prepared_taken **taken)
{
    for (size_t i = 0; i < client->names.cap; i++) {
        if (client->names.slots[i].item != NULL)
            taken_keep(taken, client->names.slots[i].hash, client->names.slots[i].item);
    }
    table_free(&client->names);
}

void prepared_client_give_back(struct prepared_client *client, struct prepared_taken *taken)
{
    if (taken == NULL)
        return;
    for (size_t i = 0; i < taken->n; i++) {
        struct client_name *entry = taken->entries[i].item;
        uint64_t hash;
        if (client_find(client, entry->name, &hash) == NOT_FOUND &&
            table_insert(&client->names, hash, entry) == 0)
            continue;
        client_name_free(entry);   /* bound again since: the newer binding stays */
    }
    free(taken->entries);
    free(taken);
}

void prepared_taken_free(struct prepared_taken *taken)
{
    if (taken == NULL)
        return;
    for (size_t i = 0; i < taken->n; i++)
        client_name_free(taken->entries[i].item);
    free(taken->entries);
    free(taken);
}

void prepared_client_forget_all(struct prepared_client *client)
{
    for (size_t i = 0; i < client->names.cap; i++) {
        if (client->names.slots[i].item != NULL)
            client_name_free(client->names.slots[i].item);
    }
    table_free(&client->names);
}

void prepared_client_free(struct prepared_client *client)
{
    prepared_client_forget_all(client);
    free(client->unnamed.definition);
    memset(&client->unnamed, 0, sizeof(client->unnamed));
}

bool prepared_client_set_unnamed(struct prepared_client *client,
                                 const struct prepared_parse *parse, uint8_t command)
{
    struct prepared_unnamed *u = &client->unnamed;

    if (parse->definition_len > u->cap) {
        uint8_t *grown = realloc(u->definition, parse->definition_len);
        if (grown == NULL) {
            u->serial = 0;
            return false;
        }
        u->definition = grown;
        u->cap = parse->definition_len;
    }
    memcpy(u->definition, parse->definition, parse->definition_len);
    u->len = parse->definition_len;
    u->serial = ++client->last_serial;
    u->defined = u->serial;
    u->command = command;
    return true;
}

void prepared_client_restore_unnamed(struct prepared_client *client, uint64_t serial,
                                     uint8_t command)
{
    struct prepared_unnamed *u = &client->unnamed;
    if (serial == 0 || u->serial != 0 || u->defined != serial)
        return;
    u->serial = serial;
    u->command = command;
}

void prepared_client_clear_unnamed(struct prepared_client *client)
{
    client->unnamed.serial = 0;
    client->unnamed.command = 0;
}

void prepared_build_unnamed_parse(struct msgbuf *out, const struct prepared_client *client)
{
    if (!append_header(out, 'P', 1 + client->unnamed.len))
        return;
    msgbuf_append(out, "", 1);
    msgbuf_append(out, client->unnamed.definition, client->unnamed.len);
}

size_t prepared_client_count(const struct prepared_client *client)
{
    return client->names.n;
}

/* ---- backends ---- */

static bool entry_holds(const void *item, const void *key, size_t key_len)
{
    const struct prepared_server_entry *entry = item;

    (void)key_len;
    return entry->stmt == key;
}

static size_t server_find(const struct prepared_server *server,
                          const struct prepared_statement *stmt)
{
    return table_find(&server->entries, id_hash(stmt->id), entry_holds, stmt, 0);
}

static void lru_unlink(struct prepared_server *server, struct prepared_server_entry *entry)
{
    if (entry->newer != NULL)
        entry->newer->older = entry->older;
    else
        server->newest = entry->older;
    if (entry->older != NULL)
        entry->older->newer = entry->newer;
    else
        server->oldest = entry->newer;
    entry->newer = NULL;
    entry->older = NULL;
}

static void lru_push_newest(struct prepared_server *server, struct prepared_server_entry *entry)
{
    entry->newer = NULL;
    entry->older = server->newest;
    if (server->newest != NULL)
        server->newest->newer = entry;
    server->newest = entry;
    if (server->oldest == NULL)
        server->oldest = entry;
}

/* Drops the entry in slot i: out of the table and the LRU list, its statement released. */
static void server_drop_at(struct prepared_server *server, size_t i)
{
    struct prepared_server_entry *entry = server->entries.slots[i].item;
    struct prepared_statement *stmt = entry->stmt;

    table_remove_at(&server->entries, i);
    lru_unlink(server, entry);
    free(entry);
    statement_put(stmt, &stmt->server_refs);
}

void prepared_server_init(struct prepared_server *server, size_t capacity)
{
    server->entries.slots = NULL;
    server->entries.cap = 0;
    server->entries.n = 0;
    server->newest = NULL;
    server->oldest = NULL;
    server->capacity = capacity > 0 ? capacity : 1;
}

/* Makes room for one more: the least recently used statement goes, its name into victim. */
static void server_evict_oldest(struct prepared_server *server, char victim[PREPARED_NAME_LEN])
{
    struct prepared_statement *stmt = server->oldest->stmt;

    memcpy(victim, stmt->backend_name, PREPARED_NAME_LEN);
    server_drop_at(server, server_find(server, stmt));
}

enum prepared_ensure_result prepared_server_ensure(struct prepared_server *server,
                                                   struct prepared_statement *stmt,
                                                   char victim[PREPARED_NAME_LEN])
{
    size_t i = server_find(server, stmt);
    struct prepared_server_entry *entry;

    victim[0] = '\0';
    if (i != NOT_FOUND) {
        entry = server->entries.slots[i].item;
        lru_unlink(server, entry);
        lru_push_newest(server, entry);
        return PREPARED_ON_SERVER;
    }
    entry = calloc(1, sizeof(*entry));
    if (entry == NULL)
        return PREPARED_ENSURE_NO_MEMORY;
    entry->stmt = stmt;
    if (table_insert(&server->entries, id_hash(stmt->id), entry) != 0) {
        free(entry);
        return PREPARED_ENSURE_NO_MEMORY;   /* nothing changed */
    }
    statement_hold(stmt, &stmt->server_refs);
    /* Evict only now that nothing can fail; the new entry is not in the LRU list yet. */
    if (server->entries.n > server->capacity)
        server_evict_oldest(server, victim);
    lru_push_newest(server, entry);
    return PREPARED_PARSE_NEEDED;
}

bool prepared_server_has(const struct prepared_server *server,
                         const struct prepared_statement *stmt)
{
    return server_find(server, stmt) != NOT_FOUND;
}

bool prepared_server_forget(struct prepared_server *server, struct prepared_statement *stmt)
{
    size_t i = server_find(server, stmt);

    if (i == NOT_FOUND)
        return false;
    server_drop_at(server, i);
    return true;
}

void prepared_server_forget_all(struct prepared_server *server)
{
    struct prepared_server_entry *entry = server->newest, *older;

    while (entry != NULL) {
        struct prepared_statement *stmt = entry->stmt;

        older = entry->older;
        free(entry);
        statement_put(stmt, &stmt->server_refs);
        entry = older;
    }
    table_free(&server->entries);
    server->newest = NULL;
    server->oldest = NULL;
}

size_t prepared_server_count(const struct prepared_server *server)
{
    return server->entries.n;
}

void prepared_reply_owed(struct prepared_statement *stmt)
{
    statement_hold(stmt, &stmt->reply_refs);
}

void prepared_reply_settled(struct prepared_statement *stmt)
{
    statement_put(stmt, &stmt->reply_refs);
}
