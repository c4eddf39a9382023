/*
 * hostlist.c: splitting libpq-style host and port lists, and deciding whether a server is the
 * kind target_session_attrs asks for. Pure functions: no sockets, no config.
 */
#include "hostlist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Comma-separated entries of text, each non-empty; the array and strings are malloc'd. */
static int hostlist_split(const char *text, char ***out, size_t *n_out)
{
    size_t n = 1;
    for (const char *p = text; *p; p++)
        n += *p == ',';
    char **items = calloc(n, sizeof(*items));
    if (!items)
        return -1;
    const char *start = text;
    for (size_t i = 0; i < n; i++) {
        const char *end = strchr(start, ',');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        items[i] = strndup(start, len);
        if (!items[i] || len == 0) {
            for (size_t j = 0; j <= i; j++)
                free(items[j]);
            free(items);
            return len == 0 ? 1 : -1;
        }
        start = end ? end + 1 : start + len;
    }
    *out = items;
    *n_out = n;
    return 0;
}

static void hostlist_free_strings(char **items, size_t n)
{
    for (size_t i = 0; items && i < n; i++)
        free(items[i]);
    free(items);
}

static bool hostlist_parse_port(const char *text, int *port)
{
    char *end;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 1 || value > 65535)
        return false;
    *port = (int)value;
    return true;
}

static int hostlist_fill_ports(struct hostlist *out, const char *ports, int default_port, char *err,
                               size_t err_len)
{
    char **items = NULL;
    size_t n_items = 0;
    out->ports = calloc(out->n, sizeof(*out->ports));
    if (!out->ports) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (!ports) {
        for (size_t i = 0; i < out->n; i++)
            out->ports[i] = default_port;
        return 0;
    }
    int split = hostlist_split(ports, &items, &n_items);
    if (split != 0) {
        snprintf(err, err_len, split > 0 ? "port: empty entry in the list '%s'" : "out of memory", ports);
        return -1;
    }
    int rc = 0;
    if (n_items != 1 && n_items != out->n) {
        snprintf(err, err_len, "port: %zu ports for %zu hosts (give one port, or one per host)",
                 n_items, out->n);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < out->n; i++) {
        const char *text = items[n_items == 1 ? 0 : i];
        if (!hostlist_parse_port(text, &out->ports[i])) {
            snprintf(err, err_len, "port: invalid port '%s' (expected 1-65535)", text);
            rc = -1;
        }
    }
    hostlist_free_strings(items, n_items);
    return rc;
}

int hostlist_parse(const char *hosts, const char *ports, int default_port, struct hostlist *out,
                   char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    int split = hostlist_split(hosts, &out->hosts, &out->n);
    if (split != 0) {
        snprintf(err, err_len, split > 0 ? "host: empty entry in the list '%s'" : "out of memory", hosts);
        return -1;
    }
    if (hostlist_fill_ports(out, ports, default_port, err, err_len) != 0) {
        hostlist_free(out);
        return -1;
    }
    return 0;
}

void hostlist_free(struct hostlist *list)
{
    hostlist_free_strings(list->hosts, list->n);
    free(list->ports);
    memset(list, 0, sizeof(*list));
}

static const char *const target_names[] = {
    [TARGET_ANY] = "any",
    [TARGET_READ_WRITE] = "read-write",
    [TARGET_READ_ONLY] = "read-only",
    [TARGET_PRIMARY] = "primary",
    [TARGET_STANDBY] = "standby",
};

int hostlist_parse_target(const char *text, enum target_session_attrs *out)
{
    for (size_t i = 0; i < sizeof(target_names) / sizeof(target_names[0]); i++) {
        if (strcmp(text, target_names[i]) == 0) {
            *out = (enum target_session_attrs)i;
            return 0;
        }
    }
    return -1;
}

const char *hostlist_target_name(enum target_session_attrs target)
{
    return (size_t)target < sizeof(target_names) / sizeof(target_names[0]) ? target_names[target] : "?";
}

bool hostlist_target_accepts(enum target_session_attrs target, bool in_hot_standby, bool read_only)
{
    switch (target) {
    case TARGET_ANY:
        return true;
    case TARGET_READ_WRITE:
        return !in_hot_standby && !read_only;
    case TARGET_READ_ONLY:
        return in_hot_standby || read_only;
    case TARGET_PRIMARY:
        return !in_hot_standby;
    case TARGET_STANDBY:
        return in_hot_standby;
    }
    return false;
}
