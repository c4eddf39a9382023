/*
 * userlist.c: loads the auth_file (PgBouncer's format) into a list of users and their secrets,
 * classifies each secret once, and keeps the SCRAM keys derived from plain passwords so that
 * PBKDF2 runs once per user.
 */
#include "userlist.h"

#include <ctype.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "secret.h"

#define MD5_SECRET_PREFIX "md5"
#define MD5_SECRET_HEX_LEN 32
#define SCRAM_SECRET_PREFIX "SCRAM-SHA-256$"
#define DERIVED_SALT_LEN 16
#define SHOWN_NAME_MAX 60 /* longest piece of a user name quoted back in an error message */

struct userlist_parser {
    const char *path;
    int lineno;
    struct userlist *list;
    char *err;
    size_t err_len;
};

__attribute__((format(printf, 2, 3))) static int fail(struct userlist_parser *p, const char *fmt,
                                                      ...)
{
    va_list ap;
    int used;

    if (p->err == NULL || p->err_len == 0)
        return -1;
    used = snprintf(p->err, p->err_len, "%s:%d: ", p->path, p->lineno);
    if (used < 0 || (size_t)used >= p->err_len)
        return -1;
    va_start(ap, fmt);
    vsnprintf(p->err + used, p->err_len - (size_t)used, fmt, ap);
    va_end(ap);
    return -1;
}

/* A user name for an error message: shortened, control characters replaced. */
static const char *shown_name(const char *name, char *buf, size_t cap)
{
    size_t i;

    for (i = 0; name[i] != '\0' && i + 4 < cap; i++)
        buf[i] = isprint((unsigned char)name[i]) ? name[i] : '?';
    if (name[i] != '\0' && i >= 3)
        memcpy(buf + i - 3, "...", 3);
    buf[i] = '\0';
    return buf;
}

static void clear_entry(struct userlist_entry *entry)
{
    free(entry->name);
    free_secret(entry->secret);
    explicit_bzero(&entry->scram, sizeof entry->scram);
    memset(entry, 0, sizeof *entry);
}

/*
 * Reads a double-quoted field starting at *cursor (on the opening quote), "" standing for one
 * '"'. Returns the unquoted copy and moves *cursor past the closing quote; NULL if the line ends
 * first (*cursor then points at the end) or memory runs out (*cursor unchanged).
 */
static char *read_quoted_field(const char **cursor, const char *line_end)
{
    const char *s = *cursor + 1;
    char *field = malloc((size_t)(line_end - s) + 1);
    char *out = field;

    if (field == NULL)
        return NULL;
    for (; s < line_end; s++) {
        if (*s == '"') {
            if (s + 1 < line_end && s[1] == '"') {
                *out++ = '"';
                s++;
                continue;
            }
            *out = '\0';
            *cursor = s + 1;
            return field;
        }
        *out++ = *s;
    }
    *out = '\0';
    free_secret(field);
    *cursor = line_end;
    return NULL;
}

/* PostgreSQL's own test: "md5" and 32 lowercase hex digits; anything else is no md5 hash. */
static bool is_md5_secret(const char *secret)
{
    return strlen(secret) == strlen(MD5_SECRET_PREFIX) + MD5_SECRET_HEX_LEN &&
           strncmp(secret, MD5_SECRET_PREFIX, strlen(MD5_SECRET_PREFIX)) == 0 &&
           strspn(secret + strlen(MD5_SECRET_PREFIX), "0123456789abcdef") == MD5_SECRET_HEX_LEN;
}

/* Sets entry->kind (and the parsed verifier) from entry->secret; false if a SCRAM secret is malformed. */
static bool classify_entry(struct userlist_entry *entry)
{
    if (is_md5_secret(entry->secret)) {
        entry->kind = SECRET_MD5;
        return true;
    }
    if (strncmp(entry->secret, SCRAM_SECRET_PREFIX, strlen(SCRAM_SECRET_PREFIX)) == 0) {
        entry->kind = SECRET_SCRAM;
        entry->scram_ready = scram_parse_verifier(entry->secret, &entry->scram);
        return entry->scram_ready;
    }
    entry->kind = SECRET_PLAIN;
    return true;
}

static int classify_secret(struct userlist_parser *p, struct userlist_entry *entry)
{
    char buf[SHOWN_NAME_MAX + 4];

    if (!classify_entry(entry))
        return fail(p, "user \"%s\": malformed SCRAM-SHA-256 secret",
                    shown_name(entry->name, buf, sizeof buf));
    return 0;
}

/* Adds entry to the list (taking what it owns), replacing an earlier line for the same user. */
static int add_entry(struct userlist_parser *p, struct userlist_entry *entry)
{
    struct userlist *list = p->list;
    struct userlist_entry *slot = userlist_find(list, entry->name);

    if (slot == NULL) {
        struct userlist_entry *grown =
            realloc(list->entries, (list->n_entries + 1) * sizeof *grown);

        if (grown == NULL)
            return fail(p, "out of memory");
        list->entries = grown;
        slot = &list->entries[list->n_entries++];
    } else {
        clear_entry(slot);
    }
    *slot = *entry;
    memset(entry, 0, sizeof *entry);
    return 0;
}

/* One line between start and end (no '\n'). */
static int parse_line(struct userlist_parser *p, const char *start, const char *end)
{
    struct userlist_entry entry = {0};
    const char *s = start;
    char buf[SHOWN_NAME_MAX + 4];

    while (s < end && isspace((unsigned char)*s))
        s++;
    if (s == end || *s == ';' || *s == '#')
        return 0;
    if (*s != '"')
        return fail(p, "expected a double-quoted user name at the start of the line");
    entry.name = read_quoted_field(&s, end);
    if (entry.name == NULL)
        return fail(p, s == end ? "user name has no closing quote" : "out of memory");
    if (entry.name[0] == '\0') {
        clear_entry(&entry);
        return fail(p, "empty user name");
    }
    if (s == end || !isspace((unsigned char)*s)) {
        fail(p, "user \"%s\": expected a space, then the double-quoted secret",
             shown_name(entry.name, buf, sizeof buf));
        clear_entry(&entry);
        return -1;
    }
    while (s < end && isspace((unsigned char)*s))
        s++;
    if (s == end || *s != '"') {
        fail(p, "user \"%s\": expected a double-quoted secret after the user name",
             shown_name(entry.name, buf, sizeof buf));
        clear_entry(&entry);
        return -1;
    }
    entry.secret = read_quoted_field(&s, end);
    if (entry.secret == NULL) {
        fail(p, s == end ? "user \"%s\": secret has no closing quote" : "user \"%s\": out of memory",
             shown_name(entry.name, buf, sizeof buf));
        clear_entry(&entry);
        return -1;
    }
    /* The rest of the line is ignored, as PgBouncer does. */
    if (classify_secret(p, &entry) != 0 || add_entry(p, &entry) != 0) {
        clear_entry(&entry);
        return -1;
    }
    return 0;
}

/* The count a user's SCRAM challenge shows; 0 for md5 and empty secrets, which get the mock. */
static int entry_iterations(const struct userlist_entry *entry)
{
    if (entry->kind == SECRET_SCRAM)
        return entry->scram.iterations;
    if (entry->kind == SECRET_PLAIN && entry->secret[0] != '\0')
        return SCRAM_DEFAULT_ITERATIONS; /* as userlist_scram_verifier derives it */
    return 0;
}

/* Boyer-Moore majority vote: one pass, and the answer is some real user's count in any case. */
static int typical_iterations(const struct userlist *list)
{
    int candidate = SCRAM_DEFAULT_ITERATIONS;
    size_t votes = 0;

    for (size_t i = 0; i < list->n_entries; i++) {
        int iterations = entry_iterations(&list->entries[i]);
        if (iterations == 0)
            continue;
        if (votes == 0) {
            candidate = iterations;
            votes = 1;
        } else if (iterations == candidate) {
            votes++;
        } else {
            votes--;
        }
    }
    return candidate;
}

int userlist_load_string(const char *text, const char *path, struct userlist **out, char *err,
                         size_t err_len)
{
    struct userlist_parser p = {.path = path != NULL ? path : "(auth_file)", .err = err,
                                .err_len = err_len};
    const char *line = text;

    *out = NULL;
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    p.list = calloc(1, sizeof *p.list);
    if (p.list == NULL) {
        fail(&p, "out of memory");
        return -1;
    }
    while (*line != '\0') {
        const char *newline = strchr(line, '\n');
        const char *end = newline != NULL ? newline : line + strlen(line);

        p.lineno++;
        if (parse_line(&p, line, end) != 0) {
            userlist_free(p.list);
            return -1;
        }
        line = newline != NULL ? newline + 1 : end;
    }
    p.list->mock_iterations = typical_iterations(p.list);
    *out = p.list;
    return 0;
}

int userlist_load(const char *path, struct userlist **out, char *err, size_t err_len)
{
    char *text;
    int result;

    *out = NULL;
    text = config_read_file(path, NULL, err, err_len);
    if (text == NULL)
        return -1;
    result = userlist_load_string(text, path, out, err, err_len);
    free_secret(text);
    return result;
}

void userlist_free(struct userlist *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->n_entries; i++)
        clear_entry(&list->entries[i]);
    free(list->entries);
    free(list);
}

struct userlist_entry *userlist_find(struct userlist *list, const char *name)
{
    if (list == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < list->n_entries; i++)
        if (strcmp(list->entries[i].name, name) == 0)
            return &list->entries[i];
    return NULL;
}

int userlist_mock_iterations(const struct userlist *list)
{
    return list != NULL ? list->mock_iterations : SCRAM_DEFAULT_ITERATIONS;
}

/* Publishes keys derived from a plain password; the first worker's win, later ones are dropped. */
static pthread_mutex_t derived_keys_lock = PTHREAD_MUTEX_INITIALIZER;

const struct scram_verifier *userlist_scram_verifier(struct userlist_entry *entry)
{
    uint8_t salt[DERIVED_SALT_LEN];
    struct scram_verifier derived;

    if (entry == NULL || entry->kind == SECRET_MD5)
        return NULL;
    if (atomic_load_explicit(&entry->scram_ready, memory_order_acquire))
        return &entry->scram;
    /* An empty password (kept for trust users, as PgBouncer does) must never log anyone in. */
    if (entry->kind != SECRET_PLAIN || entry->secret[0] == '\0')
        return NULL;
    /* PBKDF2 outside the lock: two workers may both derive the first time; one set of keys stays. */
    if (RAND_bytes(salt, sizeof salt) != 1 ||
        !scram_verifier_from_password(entry->secret, salt, sizeof salt, SCRAM_DEFAULT_ITERATIONS,
                                      &derived))
        return NULL;
    pthread_mutex_lock(&derived_keys_lock);
    if (!atomic_load_explicit(&entry->scram_ready, memory_order_relaxed)) {
        entry->scram = derived;
        atomic_store_explicit(&entry->scram_ready, true, memory_order_release);
    }
    pthread_mutex_unlock(&derived_keys_lock);
    explicit_bzero(&derived, sizeof derived);
    return &entry->scram;
}

bool userlist_entry_set(struct userlist_entry *entry, const char *name, const char *secret)
{
    clear_entry(entry);
    entry->name = strdup(name);
    entry->secret = strdup(secret);
    if (entry->name == NULL || entry->secret == NULL) {
        clear_entry(entry);
        return false;
    }
    if (!classify_entry(entry)) {
        clear_entry(entry);
        return false;
    }
    return true;
}

bool userlist_entry_copy(struct userlist_entry *dst, const struct userlist_entry *src)
{
    clear_entry(dst);
    dst->name = strdup(src->name);
    dst->secret = strdup(src->secret);
    if (dst->name == NULL || dst->secret == NULL) {
        clear_entry(dst);
        return false;
    }
    dst->kind = src->kind;
    if (atomic_load_explicit(&src->scram_ready, memory_order_acquire)) {
        dst->scram = src->scram;
        atomic_store_explicit(&dst->scram_ready, true, memory_order_relaxed);
    }
    return true;
}

void userlist_entry_clear(struct userlist_entry *entry)
{
    clear_entry(entry);
}
