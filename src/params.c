/*
 * params.c: session parameters that follow a client from backend to backend: small ordered
 * name/value sets, which names are session settings and which ParameterStatus reports a client
 * may change, the libpq "options" switches, and the SQL that makes a server match a client.
 * Parameter names compare case-insensitively, as PostgreSQL's GUC names do.
 */
#include "errbuf.h"
#include "params.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARAM_SET_INITIAL_CAP 8
#define PROTOCOL_OPTION_PREFIX "_pq_."
#define STATEMENT_SEPARATOR "; "
#define ERROR_SWITCH_SHOWN 64   /* how much of a bad switch an error message quotes */

/* Startup parameters that are not GUCs: the backend's own startup packet carries them. */
static const char *const startup_only_names[] = { "user", "database", "replication", "options" };

/* GUC_REPORT parameters a client may change with SET, so a backend's report must follow it. */
static const char *const tracked_names[] = {
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "IntervalStyle",
    "scram_iterations",
    "search_path",
    "standard_conforming_strings",
    "TimeZone",
};

/* Reported by the server but not changeable by a client's SET: never part of a sync. */
static const char *const read_only_reported_names[] = {
    "in_hot_standby",
    "integer_datetimes",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ASCII-only case folding, so the locale (Turkish dotless i...) cannot change a match. */
static int ascii_tolower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static bool name_equal(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; a++, b++) {
        if (ascii_tolower((unsigned char)*a) != ascii_tolower((unsigned char)*b))
            return false;
    }
    return *a == *b;
}

static bool name_has_prefix(const char *name, const char *prefix)
{
    for (; *prefix != '\0'; name++, prefix++) {
        if (ascii_tolower((unsigned char)*name) != ascii_tolower((unsigned char)*prefix))
            return false;
    }
    return true;
}

static bool name_in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (name_equal(name, list[i]))
            return true;
    }
    return false;
}

/* ---- param_set ---- */

void param_set_init(struct param_set *set)
{
    set->entries = NULL;
    set->n = 0;
    set->cap = 0;
}

/* Frees an entry's strings unless another set owns them. */
static void free_entry_strings(struct param_entry *entry)
{
    if (entry->shared)
        return;
    free(entry->name);
    free(entry->value);
}

void param_set_clear(struct param_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        free_entry_strings(&set->entries[i]);
    set->n = 0;
}

void param_set_free(struct param_set *set)
{
    param_set_clear(set);
    free(set->entries);
    param_set_init(set);
}

static struct param_entry *find_entry(const struct param_set *set, const char *name)
{
    if (set == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < set->n; i++) {
        if (name_equal(set->entries[i].name, name))
            return &set->entries[i];
    }
    return NULL;
}

static int ensure_room(struct param_set *set)
{
    size_t cap;
    struct param_entry *grown;

    if (set->n < set->cap)
        return 0;
    cap = set->cap ? (size_t)set->cap * 2 : PARAM_SET_INITIAL_CAP;
    if (cap > UINT32_MAX || cap > SIZE_MAX / sizeof(*grown))
        return -1;
    grown = realloc(set->entries, cap * sizeof(*grown));
    if (grown == NULL)
        return -1;
    set->entries = grown;
    set->cap = (uint32_t)cap;
    return 0;
}

static int put_entry(struct param_set *set, const char *name, const char *value, bool is_sql)
{
    struct param_entry *existing;
    char *name_copy, *value_copy;

    if (name == NULL || value == NULL)
        return -1;
    value_copy = strdup(value);
    if (value_copy == NULL)
        return -1;
    existing = find_entry(set, name);
    if (existing != NULL && existing->shared) {
        /* The entry becomes this set's own: its name too, as its owner keeps the shared one. */
        name_copy = strdup(existing->name);
        if (name_copy == NULL) {
            free(value_copy);
            return -1;
        }
        existing->name = name_copy;
        existing->value = NULL;
        existing->shared = false;
    }
    if (existing != NULL) {
        free(existing->value);
        existing->value = value_copy;
        existing->is_sql = is_sql;
        return 0;
    }
    name_copy = strdup(name);
    if (name_copy == NULL || ensure_room(set) != 0) {
        free(name_copy);
        free(value_copy);
        return -1;
    }
    set->entries[set->n].name = name_copy;
    set->entries[set->n].value = value_copy;
    set->entries[set->n].is_sql = is_sql;
    set->entries[set->n].shared = false;
    set->n++;
    return 0;
}

int param_set_put(struct param_set *set, const char *name, const char *value)
{
    return put_entry(set, name, value, false);
}

int param_set_put_sql(struct param_set *set, const char *name, const char *sql_text)
{
    return put_entry(set, name, sql_text, true);
}

const struct param_entry *param_set_find(const struct param_set *set, const char *name)
{
    return find_entry(set, name);
}

const char *param_set_get(const struct param_set *set, const char *name)
{
    const struct param_entry *entry = find_entry(set, name);

    return entry ? entry->value : NULL;
}

bool param_set_remove(struct param_set *set, const char *name)
{
    struct param_entry *entry = find_entry(set, name);
    size_t index;

    if (entry == NULL)
        return false;
    index = (size_t)(entry - set->entries);
    free_entry_strings(entry);
    memmove(entry, entry + 1, (set->n - index - 1) * sizeof(*entry));
    set->n--;
    return true;
}

int param_set_share(struct param_set *dst, const struct param_set *src)
{
    if (dst == src)
        return 0;
    param_set_clear(dst);
    if (dst->cap < src->n) {
        struct param_entry *grown = realloc(dst->entries, src->n * sizeof(*grown));
        if (grown == NULL)
            return -1;
        dst->entries = grown;
        dst->cap = src->n;
    }
    for (size_t i = 0; i < src->n; i++) {
        dst->entries[i] = src->entries[i];
        dst->entries[i].shared = true;
    }
    dst->n = src->n;
    return 0;
}

int param_set_copy(struct param_set *dst, const struct param_set *src)
{
    if (dst == src)
        return 0;
    param_set_clear(dst);
    for (size_t i = 0; i < src->n; i++) {
        if (put_entry(dst, src->entries[i].name, src->entries[i].value, src->entries[i].is_sql) != 0) {
            param_set_clear(dst);
            return -1;
        }
    }
    return 0;
}

/* ---- which names are which ---- */

bool params_is_session_setting(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return false;
    if (name_has_prefix(name, PROTOCOL_OPTION_PREFIX))
        return false;
    return !name_in_list(name, startup_only_names, ARRAY_LEN(startup_only_names));
}

bool params_is_tracked(const char *name)
{
    return name != NULL && name_in_list(name, tracked_names, ARRAY_LEN(tracked_names));
}

/* ---- libpq "options" ---- */

/*
 * Copies the next whitespace-separated word of *cursor into word, as the backend's
 * pg_split_opts() does: a backslash takes the next character literally (a trailing one is
 * dropped). Returns false when only whitespace is left.
 */
static bool next_word(const char **cursor, char *word)
{
    const char *p = *cursor;
    bool escaped = false;

    while (*p == ' ' || (*p >= '\t' && *p <= '\r'))
        p++;
    if (*p == '\0')
        return false;
    for (; *p != '\0'; p++) {
        bool is_space = *p == ' ' || (*p >= '\t' && *p <= '\r');

        if (is_space && !escaped)
            break;
        if (!escaped && *p == '\\') {
            escaped = true;
            continue;
        }
        escaped = false;
        *word++ = *p;
    }
    *word = '\0';
    *cursor = p;
    return true;
}

/*
 * Stores one "name=value" setting given to a -c or -- switch. Dashes in the name become
 * underscores, as the backend's ParseLongOption() does for both switches.
 */
static int put_setting(struct param_set *set, char *setting, const char *switch_text, char *err,
                       size_t err_len)
{
    char *equals = strchr(setting, '=');

    if (equals == NULL) {
        errbuf_set(err, err_len, "%s%.*s requires a value (name=value)", switch_text,
                  ERROR_SWITCH_SHOWN, setting);
        return -1;
    }
    if (equals == setting) {
        errbuf_set(err, err_len, "%s%.*s is missing a parameter name", switch_text,
                  ERROR_SWITCH_SHOWN, setting);
        return -1;
    }
    *equals = '\0';
    for (char *p = setting; *p != '\0'; p++) {
        if (*p == '-')
            *p = '_';
    }
    if (param_set_put(set, setting, equals + 1) != 0) {
        errbuf_set(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}

static int parse_option_words(const char *options, char *word, struct param_set *set, char *err,
                              size_t err_len)
{
    const char *cursor = options;

    while (next_word(&cursor, word)) {
        if (strcmp(word, "-c") == 0) {
            if (!next_word(&cursor, word)) {
                errbuf_set(err, err_len, "-c requires a value (name=value)");
                return -1;
            }
            if (put_setting(set, word, "-c ", err, err_len) != 0)
                return -1;
        } else if (strncmp(word, "-c", 2) == 0) {
            if (put_setting(set, word + 2, "-c", err, err_len) != 0)
                return -1;
        } else if (strncmp(word, "--", 2) == 0) {
            if (put_setting(set, word + 2, "--", err, err_len) != 0)
                return -1;
        } else {
            errbuf_set(err, err_len,
                      "unsupported switch \"%.*s\" in options: only -c name=value and "
                      "--name=value are accepted",
                      ERROR_SWITCH_SHOWN, word);
            return -1;
        }
    }
    return 0;
}

int params_parse_options(const char *options, struct param_set *set, char *err, size_t err_len)
{
    char *word;
    int rc;

    if (options == NULL)
        return 0;
    /* No word is longer than the whole value, so one buffer of that size holds each in turn. */
    word = malloc(strlen(options) + 1);
    if (word == NULL) {
        errbuf_set(err, err_len, "out of memory");
        return -1;
    }
    rc = parse_option_words(options, word, set, err, err_len);
    free(word);
    return rc;
}

/* ---- sync ---- */

/* Names whose value a SET can carry: session settings a client is allowed to change. */
static bool is_syncable(const char *name)
{
    return params_is_session_setting(name) &&
           !name_in_list(name, read_only_reported_names, ARRAY_LEN(read_only_reported_names));
}

static void begin_statement(struct msgbuf *sql, size_t *n_statements)
{
    if (*n_statements > 0)
        msgbuf_append(sql, STATEMENT_SEPARATOR, strlen(STATEMENT_SEPARATOR));
    (*n_statements)++;
}

/* A value the client wrote as SQL (a list, an identifier, a number...) is replayed as written. */
static void append_set(struct msgbuf *sql, const char *name, const char *value, bool is_sql,
                       size_t *n_statements)
{
    begin_statement(sql, n_statements);
    msgbuf_append(sql, "SET ", 4);
    proto_append_quoted_ident(sql, name);
    if (is_sql) {
        msgbuf_append(sql, " TO ", 4);
        msgbuf_append(sql, value, strlen(value));
        return;
    }
    msgbuf_append(sql, " = ", 3);
    proto_append_quoted_literal(sql, value);
}

static bool same_value(const struct param_entry *a, const struct param_entry *b)
{
    return a != NULL && b != NULL && a->is_sql == b->is_sql && strcmp(a->value, b->value) == 0;
}

static void append_reset(struct msgbuf *sql, const char *name, size_t *n_statements)
{
    begin_statement(sql, n_statements);
    msgbuf_append(sql, "RESET ", 6);
    proto_append_quoted_ident(sql, name);
}

size_t params_build_sync(const struct param_set *client, const struct param_set *pool_defaults,
                         const struct param_set *server, struct msgbuf *sql)
{
    size_t n_statements = 0;

    for (size_t i = 0; client != NULL && i < client->n; i++) {
        const struct param_entry *wanted = &client->entries[i];

        if (!is_syncable(wanted->name))
            continue;
        if (!same_value(wanted, find_entry(server, wanted->name)))
            append_set(sql, wanted->name, wanted->value, wanted->is_sql, &n_statements);
    }
    for (size_t i = 0; server != NULL && i < server->n; i++) {
        const struct param_entry *current = &server->entries[i];
        /* Runs at every backend hand-out: a server's values usually sit in the defaults' order,
         * and most still hold the default, which needs nothing. */
        const char *fallback = pool_defaults && i < pool_defaults->n &&
                                       strcmp(pool_defaults->entries[i].name, current->name) == 0
                                   ? pool_defaults->entries[i].value
                                   : param_set_get(pool_defaults, current->name);
        if (fallback != NULL && !current->is_sql && strcmp(fallback, current->value) == 0)
            continue;
        if (!is_syncable(current->name) || param_set_get(client, current->name) != NULL)
            continue;
        if (fallback == NULL)
            append_reset(sql, current->name, &n_statements);
        else
            append_set(sql, current->name, fallback, false, &n_statements);
    }
    return n_statements;
}

/* ---- changes a client's statements made ---- */

void param_changes_init(struct param_changes *changes)
{
    changes->items = NULL;
    changes->n = 0;
    changes->cap = 0;
}

void param_changes_clear(struct param_changes *changes)
{
    for (size_t i = 0; i < changes->n; i++) {
        free(changes->items[i].name);
        free(changes->items[i].text);
    }
    changes->n = 0;
}

void param_changes_free(struct param_changes *changes)
{
    param_changes_clear(changes);
    free(changes->items);
    param_changes_init(changes);
}

int param_changes_add(struct param_changes *changes, enum param_change_kind kind, const char *name,
                      const char *text, size_t text_len)
{
    struct param_change *change;

    if (changes->n == changes->cap) {
        size_t cap = changes->cap ? (size_t)changes->cap * 2 : PARAM_SET_INITIAL_CAP;
        if (cap > UINT32_MAX)
            return -1;
        struct param_change *grown = realloc(changes->items, cap * sizeof(*grown));
        if (grown == NULL)
            return -1;
        changes->items = grown;
        changes->cap = (uint32_t)cap;
    }
    change = &changes->items[changes->n];
    change->kind = kind;
    change->tag = 0;
    change->name = name ? strdup(name) : NULL;
    change->text = text ? strndup(text, text_len) : NULL;
    if ((name && !change->name) || (text && !change->text)) {
        free(change->name);
        free(change->text);
        return -1;
    }
    changes->n++;
    return 0;
}

void param_changes_drop_first(struct param_changes *changes, size_t n)
{
    if (n > changes->n)
        n = changes->n;
    if (n == 0)
        return;   /* items may be NULL: memmove must not see it */
    for (size_t i = 0; i < n; i++) {
        free(changes->items[i].name);
        free(changes->items[i].text);
    }
    memmove(changes->items, changes->items + n, (changes->n - n) * sizeof(*changes->items));
    changes->n -= n;
}

/* Back to the value the client started with, or to the server's default (no entry). */
static int reset_client_value(struct param_set *client, const struct param_set *startup,
                              const char *name)
{
    const struct param_entry *initial = find_entry(startup, name);

    if (initial == NULL) {
        param_set_remove(client, name);
        return 0;
    }
    return put_entry(client, name, initial->value, initial->is_sql);
}

/* The server's values it does not report go back to its defaults: sluice no longer knows them. */
static void forget_unreported(struct param_set *server, const struct param_set *reported)
{
    for (size_t i = 0; i < server->n;) {
        if (find_entry(reported, server->entries[i].name) == NULL) {
            param_set_remove(server, server->entries[i].name);
            continue;
        }
        i++;
    }
}

static int apply_set(const struct param_change *change, const struct param_set *reported,
                     struct param_set *client, struct param_set *server)
{
    const char *server_value;

    if (find_entry(reported, change->name) != NULL) {
        /* The server's spelling (ParameterStatus) is what the client has now. */
        server_value = param_set_get(server, change->name);
        if (server_value != NULL)
            return param_set_put(client, change->name, server_value);
    }
    if (change->text == NULL)
        return 0;
    if (put_entry(client, change->name, change->text, true) != 0)
        return -1;
    if (find_entry(reported, change->name) != NULL)
        return 0;
    return put_entry(server, change->name, change->text, true);
}

int params_apply_change(const struct param_change *change, const struct param_set *startup,
                        const struct param_set *reported, struct param_set *client,
                        struct param_set *server)
{
    switch (change->kind) {
    case PARAM_CHANGE_SET:
        return apply_set(change, reported, client, server);
    case PARAM_CHANGE_RESET:
        if (find_entry(reported, change->name) == NULL)
            param_set_remove(server, change->name);
        return reset_client_value(client, startup, change->name);
    case PARAM_CHANGE_RESET_ALL:
        forget_unreported(server, reported);
        if (startup == NULL) {
            param_set_clear(client);
            return 0;
        }
        return param_set_copy(client, startup);
    case PARAM_CHANGE_COMMIT:
    case PARAM_CHANGE_ROLLBACK:
    case PARAM_CHANGE_ROLLBACK_TO:
        break;
    }
    return 0;
}
