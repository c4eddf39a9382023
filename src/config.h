/*
 * config.h: the one typed, validated configuration of a running sluice.
 * config_load() parses an INI file into a fresh struct; reload parses a new one and swaps it in,
 * so a bad file never replaces a good one.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "hostlist.h"

/* Threads a process runs at most (workers = N); the worker number takes 6 bits of cancel keys. */
#define CONFIG_MAX_WORKERS 64

enum pool_mode {
    POOL_MODE_UNSET = 0, /* per-database/user override not given: use the global one */
    POOL_MODE_SESSION,
    POOL_MODE_TRANSACTION,
};

enum auth_type {
    AUTH_TYPE_UNSET = 0,
    AUTH_TYPE_TRUST,
    AUTH_TYPE_MD5,   /* as PgBouncer: md5, or SCRAM when the stored secret is a SCRAM verifier */
    AUTH_TYPE_SCRAM, /* scram-sha-256 */
    AUTH_TYPE_PLAIN, /* cleartext password over the wire (PgBouncer's "plain") */
    AUTH_TYPE_TOKEN, /* RDS-style IAM token as the cleartext password (TLS only) */
};

/* One [databases] line: a client-visible name mapped to a backend. */
struct config_database {
    char *name;          /* client-visible database name */
    char *host;          /* host name, IP, or a unix socket directory (starts with '/');
                            default "127.0.0.1"; a comma-separated list is tried in order */
    int port;            /* default 5432; with a port list, its first entry */
    char *port_list;     /* "5432,5433": one port per host of a host list; NULL: port for all */
    enum target_session_attrs target_session_attrs; /* which of several hosts to settle on */
    char *dbname;        /* backend database name; default: name */
    char *user;          /* backend user; NULL: the client's user name */
    char *password;      /* backend password; NULL: the client's password if known, else none */
    int pool_size;       /* -1: default_pool_size */
    int min_pool_size;   /* -1: min_pool_size */
    int max_db_connections; /* 0: the global max_db_connections */
    int reserve_pool;    /* -1: reserve_pool_size */
    int max_db_client_connections; /* 0: the global max_db_client_connections */
    enum pool_mode pool_mode; /* POOL_MODE_UNSET: global */
    char *connect_query; /* run once on each new backend connection; NULL: none */
    char *application_name; /* default application_name for the backend; NULL: none */
    bool server_auth_token; /* log in with a freshly signed RDS IAM token as the password */
    char *auth_user;     /* auth_query's login for this database; NULL: the global auth_user */
    char *auth_query;    /* NULL: the global auth_query */
    char *auth_dbname;   /* NULL: the global auth_dbname, else this database's dbname */
};

/* One [users] line: per-user overrides. */
struct config_user {
    char *name;
    enum pool_mode pool_mode;  /* POOL_MODE_UNSET: database's or global */
    enum auth_type auth_type;  /* AUTH_TYPE_UNSET: global auth_type */
    int pool_size;             /* -1: the database's pool_size, else default_pool_size */
    int max_user_connections;  /* 0: the global max_user_connections */
    int max_user_client_connections; /* 0: the global max_user_client_connections */
};

/* One [peers] line: another sluice behind the same load balancer, by its peer_id. */
struct config_peer {
    int id;              /* 1..16383 */
    char *host;          /* host name, IP, or a unix socket directory (starts with '/') */
    int port;            /* default 6432 */
};

struct config {
    char *path;                  /* the file it came from */

    /* [sluice] */
    char *listen_addr;           /* "127.0.0.1"; "*" = all; comma-separated list; "" = no TCP */
    int listen_port;             /* 6432 */
    char *unix_socket_dir;       /* "/tmp"; "" = no unix socket */
    int unix_socket_mode;        /* 0777 */
    bool so_reuseport;           /* false */
    int workers;                 /* event-loop threads; 0: auto, as many as CPUs we may run on */
    char *steer_by_cpu;          /* "auto" | "on" | "off": new TCP connections go to workers by
                                    CPU (steering.h); auto: on where at most
                                    STEERING_AUTO_MAX_CPUS CPUs */
    bool io_uring;               /* true: batch writes through io_uring when the kernel allows */
    enum pool_mode pool_mode;    /* session */
    int default_pool_size;       /* 20 */
    int min_pool_size;           /* 0 */
    int max_client_conn;         /* 100 */
    int max_db_connections;      /* 0 = unlimited: backends per database, all users together */
    int max_user_connections;    /* 0 = unlimited: backends per user, all databases together */
    int max_db_client_connections;   /* 0 = unlimited: clients per database */
    int max_user_client_connections; /* 0 = unlimited: clients per user */
    int reserve_pool_size;       /* 0: extra backends a pool may open for clients that waited */
    double reserve_pool_timeout; /* 5 s: how long a client waits before the reserve is used */
    enum auth_type auth_type;    /* md5 */
    char *auth_file;             /* NULL = none */
    char *admin_users;           /* comma-separated; NULL = none */
    char *stats_users;           /* comma-separated; NULL = none */
    char *auth_user;             /* NULL = no auth_query: users must be in auth_file */
    char *auth_query;            /* looks up a user missing from auth_file: $1 = user name */
    char *auth_dbname;           /* NULL = the database the client asked for */
    double auth_query_cache_ttl; /* 60 s: how long a looked-up secret is used without asking again */

    double query_wait_timeout;      /* 120 s; 0 = forever */
    double client_idle_timeout;     /* 0 = off */
    double client_login_timeout;    /* 60 s */
    double autodb_idle_timeout;     /* 3600 s: databases made from "*" are freed unused this long; 0 = never */
    double idle_transaction_timeout;/* 0 = off */
    double query_timeout;           /* 0 = off: a longer query closes its backend and client */
    double server_idle_timeout;     /* 600 s */
    double server_lifetime;         /* 3600 s */
    double server_connect_timeout;  /* 15 s */
    double server_login_retry;      /* 15 s */
    double shutdown_timeout;        /* 30 s: how long SIGTERM waits for transactions */
    char *server_reset_query;       /* "DISCARD ALL" */
    bool server_reset_query_always; /* false: only in session mode */
    char *server_check_query;       /* "select 1" (PgBouncer's); "" = no check */
    double server_check_delay;      /* 30 s */
    char *ignore_startup_parameters;/* comma-separated names accepted and dropped */

    bool log_connections;        /* true */
    bool log_disconnections;     /* true */
    bool log_pooler_errors;      /* true */
    int verbose;                 /* 0 */
    int max_packet_size;         /* 2147483647: larger client messages are refused */
    int pkt_buf;                 /* 4096: the most bytes one read of a socket takes in */
    int tcp_keepalive;           /* 1 */
    char *pidfile;               /* NULL */
    double stats_period;         /* 60 s: periodic stats log line; 0 = off */
    bool syslog;                 /* false */
    char *syslog_ident;          /* "sluice" */
    char *syslog_facility;       /* "daemon" */

    /* TLS, client side (PgBouncer names and meanings) */
    char *client_tls_sslmode;    /* "disable" | allow | prefer | require | verify-ca | verify-full */
    char *client_tls_key_file;
    char *client_tls_cert_file;
    char *client_tls_ca_file;
    char *client_tls_protocols;  /* "secure" (tlsv1.2,tlsv1.3) | all | list like "tlsv1.3" */
    char *client_tls_ciphers;    /* "default" */
    /* TLS, server side */
    char *server_tls_sslmode;    /* "disable" */
    char *server_tls_ca_file;
    char *server_tls_key_file;
    char *server_tls_cert_file;
    char *server_tls_protocols;  /* "secure" */
    char *server_tls_ciphers;    /* "default" */

    /* RDS-style IAM token auth */
    char *auth_token_keys;       /* INI file: [ACCESS_KEY_ID] secret = ..., users = a,b */
    char *auth_token_region;     /* e.g. "us-east-1" */
    char *auth_token_endpoints;  /* comma-separated host:port values a token may be signed for */
    double auth_token_clock_skew;/* 60 s: how far in the future X-Amz-Date may be */
    bool auth_token_allow_unix_socket; /* false: tokens only over TLS */
    /* RDS IAM tokens sluice signs to log in to backends ([databases] server_auth_token=on) */
    char *server_auth_token_region;      /* region the tokens are signed for */
    char *server_auth_token_credentials; /* AWS shared credentials file; NULL: environment */
    char *server_auth_token_profile;     /* its section; "default" */

    /* operations */
    char *metrics_listen_addr;   /* NULL: metrics endpoint off */
    int metrics_port;            /* 0: off */
    int max_prepared_statements; /* 200 per backend; 0 = no protocol-level prepared statements */
    char *pinning;               /* "on" | "off" | "reject" */
    int peer_id;                 /* 0: peering off; else this instance's id in [peers] */

    /* [databases] and [users], in file order */
    struct config_database *databases;
    size_t n_databases;
    struct config_user *users;
    size_t n_users;
    /* [peers], in file order; the line for peer_id itself may be there and is never used */
    struct config_peer *peers;
    size_t n_peers;
};

/*
 * Parses the file at path. On success returns 0 and sets *out (free with config_free).
 * On failure returns -1 and writes "FILE:LINE: setting: what is wrong" into err.
 */
int config_load(const char *path, struct config **out, char *err, size_t err_len);

/* Parses an INI text held in memory (for tests); path is used in messages only. */
int config_load_string(const char *text, const char *path, struct config **out, char *err,
                       size_t err_len);

void config_free(struct config *cfg);

/*
 * Reads a whole text file into a NUL-terminated heap buffer (free with free()); *len, if given,
 * gets its length. Returns NULL with "FILE: reason" (or "FILE:LINE:" for a NUL byte) in err.
 */
char *config_read_file(const char *path, size_t *len, char *err, size_t err_len);

/* config_read_file, and the opened file's stat in *st: what was read, even where a helper
 * renames another file over the path meanwhile. */
struct stat;
char *config_read_file_stat(const char *path, size_t *len, struct stat *st, char *err,
                            size_t err_len);

const struct config_database *config_find_database(const struct config *cfg, const char *name);
/* The "*" line of [databases]: the fallback for names not listed; NULL if there is none. */
const struct config_database *config_fallback_database(const struct config *cfg);
/*
 * Fills dst with a copy of src for the database name (the "*" fallback made concrete): dbname is
 * src's own if it gives one, else name. 0, or -1 out of memory (dst left empty).
 */
int config_database_copy_as(struct config_database *dst, const struct config_database *src,
                            const char *name);
/* Frees what config_database_copy_as filled in. */
void config_database_clear(struct config_database *db);
const struct config_user *config_find_user(const struct config *cfg, const char *name);
/* The [peers] line for id, or NULL. */
const struct config_peer *config_find_peer(const struct config *cfg, int id);

/* Effective settings once overrides are applied. */
enum pool_mode config_effective_pool_mode(const struct config *cfg,
                                          const struct config_database *db,
                                          const struct config_user *user);
int config_effective_pool_size(const struct config *cfg, const struct config_database *db);
/* The size of a user's pool on db: the database's pool_size, else the user's, else the default. */
int config_user_pool_size(const struct config *cfg, const struct config_database *db,
                          const struct config_user *user);
/* The limits a database or user entry sets, else the global ones; NULL entry: the global one.
 * 0 means no limit. */
int config_effective_max_db_connections(const struct config *cfg, const struct config_database *db);
int config_effective_max_user_connections(const struct config *cfg, const struct config_user *user);
int config_effective_max_db_client_connections(const struct config *cfg,
                                               const struct config_database *db);
int config_effective_max_user_client_connections(const struct config *cfg,
                                                 const struct config_user *user);
int config_effective_reserve_pool(const struct config *cfg, const struct config_database *db);
enum auth_type config_effective_auth_type(const struct config *cfg, const struct config_user *user);
/* auth_query's settings for a database, its own where it has them; auth_user NULL: no auth_query. */
const char *config_effective_auth_user(const struct config *cfg, const struct config_database *db);
const char *config_effective_auth_query(const struct config *cfg, const struct config_database *db);
const char *config_effective_auth_dbname(const struct config *cfg, const struct config_database *db);

/* True if name is in a comma-separated list (spaces around items ignored). */
bool config_list_contains(const char *list, const char *name);

const char *config_pool_mode_name(enum pool_mode mode);
const char *config_auth_type_name(enum auth_type type);

/*
 * The [sluice] settings one at a time, for the admin console's SHOW CONFIG and SET. They are
 * numbered 0 .. config_setting_count() - 1 in the order the documentation lists them.
 */
size_t config_setting_count(void);
const char *config_setting_name(size_t i); /* NULL past the end */
/* Finds a setting by name, ignoring case; false if there is none. */
bool config_find_setting(const char *name, size_t *i);
/* A setting's value as SHOW CONFIG prints it: booleans 1/0, file modes in octal, unset as "". */
void config_format_setting(const struct config *cfg, size_t i, char *buf, size_t len);
/* The setting's default, printed the same way. */
void config_format_setting_default(size_t i, char *buf, size_t len);

enum config_set_result {
    CONFIG_SET_DONE,
    CONFIG_SET_INVALID,       /* err says why: "name: invalid value '...' (expected ...)" */
    CONFIG_SET_OUT_OF_MEMORY, /* cfg is unchanged */
};

/*
 * Changes one setting of cfg to value, which is accepted or refused exactly as it would be on a
 * "name = value" line of the file. On refusal cfg is unchanged.
 */
enum config_set_result config_set_setting(struct config *cfg, size_t i, const char *value,
                                          char *err, size_t err_len);

#endif
