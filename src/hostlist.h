/*
 * hostlist.h: libpq's multi-host targets in a [databases] line: host=a,b,c with port=5432 (one
 * port for every host) or port=5432,5433,5434 (one each), and target_session_attrs, which says
 * what kind of server to settle on among them (read-write: the primary after a failover).
 */
#ifndef SLUICE_HOSTLIST_H
#define SLUICE_HOSTLIST_H

#include <stdbool.h>
#include <stddef.h>

enum target_session_attrs {
    TARGET_ANY,        /* the first host that accepts the login */
    TARGET_READ_WRITE, /* one that accepts writes: not a standby, default_transaction_read_only off */
    TARGET_READ_ONLY,  /* the opposite */
    TARGET_PRIMARY,    /* not in hot standby */
    TARGET_STANDBY,    /* in hot standby */
};

struct hostlist {
    size_t n;
    char **hosts;   /* host names, IP addresses or unix socket directories */
    int *ports;
};

/*
 * Splits hosts ("a,b") and ports ("5432,5433", or NULL for default_port everywhere) by libpq's
 * rules: no empty entry, and either one port or as many ports as hosts. 0, or -1 with err set.
 */
int hostlist_parse(const char *hosts, const char *ports, int default_port, struct hostlist *out,
                   char *err, size_t err_len);
void hostlist_free(struct hostlist *list);

/* libpq's names: any, read-write, read-only, primary, standby. -1 for anything else. */
int hostlist_parse_target(const char *text, enum target_session_attrs *out);
const char *hostlist_target_name(enum target_session_attrs target);
/* Whether a server that reports these (in_hot_standby, default_transaction_read_only) will do. */
bool hostlist_target_accepts(enum target_session_attrs target, bool in_hot_standby, bool read_only);

#endif
