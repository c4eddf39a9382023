/*
 * test_config.c: sluice.ini parsing: defaults, every kind of value, errors that name file and
 * line, lines longer than inih's buffer, [databases]/[users] strings and the lookup helpers.
 */
#include "config.h"
#include "tap.h"

#include <ini.h>

#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char err[1024];

/* Loads text as "test.ini"; NULL on failure (the message is in err). */
static struct config *load(const char *text)
{
    struct config *cfg = NULL;

    err[0] = '\0';
    if (config_load_string(text, "test.ini", &cfg, err, sizeof err) != 0)
        return NULL;
    return cfg;
}

/* Loads text that must fail; returns the message ("" if it loaded). */
static const char *load_error(const char *text)
{
    struct config *cfg = load(text);

    if (cfg != NULL) {
        config_free(cfg);
        return "(loaded without error)";
    }
    return err;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static char *repeated(char c, size_t n)
{
    char *s = malloc(n + 1);

    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A heap string built with printf, for texts around long values. */
__attribute__((format(printf, 1, 2))) static char *text_of(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static void test_defaults(void)
{
    struct config *cfg = load("");

    ok(cfg != NULL, "an empty file loads");
    if (cfg == NULL)
        return;
    is_str(cfg->path, "test.ini", "the config remembers the file it came from");
    is_str(cfg->listen_addr, "127.0.0.1", "listen_addr defaults to 127.0.0.1");
    is_int(cfg->listen_port, 6432, "listen_port defaults to 6432");
    is_str(cfg->unix_socket_dir, "/tmp", "unix_socket_dir defaults to /tmp");
    is_int(cfg->unix_socket_mode, 0777, "unix_socket_mode defaults to 0777");
    is_int(cfg->so_reuseport, false, "so_reuseport defaults to off");
    is_int(cfg->workers, 0, "workers defaults to auto (0)");
    is_str(cfg->steer_by_cpu, "auto", "steer_by_cpu defaults to auto");
    is_int(cfg->io_uring, true, "io_uring defaults to on");
    is_int(cfg->pool_mode, POOL_MODE_SESSION, "pool_mode defaults to session");
    is_int(cfg->default_pool_size, 20, "default_pool_size defaults to 20");
    is_int(cfg->min_pool_size, 0, "min_pool_size defaults to 0");
    is_int(cfg->max_client_conn, 100, "max_client_conn defaults to 100");
    is_int(cfg->max_db_connections, 0, "max_db_connections defaults to unlimited");
    is_int(cfg->auth_type, AUTH_TYPE_MD5, "auth_type defaults to md5");
    is_str(cfg->auth_file, NULL, "auth_file defaults to none");
    is_str(cfg->admin_users, NULL, "admin_users defaults to none");
    is_str(cfg->stats_users, NULL, "stats_users defaults to none");
    ok(cfg->query_wait_timeout == 120, "query_wait_timeout defaults to 120 s");
    ok(cfg->client_idle_timeout == 0, "client_idle_timeout defaults to off");
    ok(cfg->client_login_timeout == 60, "client_login_timeout defaults to 60 s");
    ok(cfg->autodb_idle_timeout == 3600, "autodb_idle_timeout defaults to 3600 s");
    ok(cfg->idle_transaction_timeout == 0, "idle_transaction_timeout defaults to off");
    ok(cfg->server_idle_timeout == 600, "server_idle_timeout defaults to 600 s");
    ok(cfg->server_lifetime == 3600, "server_lifetime defaults to 3600 s");
    ok(cfg->server_connect_timeout == 15, "server_connect_timeout defaults to 15 s");
    ok(cfg->server_login_retry == 15, "server_login_retry defaults to 15 s");
    ok(cfg->shutdown_timeout == 30, "shutdown_timeout defaults to 30 s");
    is_str(cfg->server_reset_query, "DISCARD ALL", "server_reset_query defaults to DISCARD ALL");
    is_int(cfg->server_reset_query_always, false, "server_reset_query_always defaults to off");
    is_str(cfg->server_check_query, "select 1", "server_check_query defaults to select 1");
    ok(cfg->server_check_delay == 30, "server_check_delay defaults to 30 s");
    is_str(cfg->ignore_startup_parameters, NULL, "ignore_startup_parameters defaults to none");
    is_int(cfg->log_connections, true, "log_connections defaults to on");
    is_int(cfg->log_disconnections, true, "log_disconnections defaults to on");
    is_int(cfg->log_pooler_errors, true, "log_pooler_errors defaults to on");
    is_int(cfg->verbose, 0, "verbose defaults to 0");
    is_int(cfg->max_packet_size, 2147483647, "max_packet_size defaults to 2147483647");
    is_int(cfg->pkt_buf, 16384, "pkt_buf defaults to 16384");
    is_int(cfg->tcp_keepalive, 1, "tcp_keepalive defaults to 1");
    is_str(cfg->pidfile, NULL, "pidfile defaults to none");
    ok(cfg->stats_period == 60, "stats_period defaults to 60 s");
    is_int(cfg->syslog, false, "syslog defaults to off");
    is_str(cfg->syslog_ident, "sluice", "syslog_ident defaults to sluice");
    is_str(cfg->syslog_facility, "daemon", "syslog_facility defaults to daemon");
    is_str(cfg->client_tls_sslmode, "disable", "client_tls_sslmode defaults to disable");
    is_str(cfg->client_tls_key_file, NULL, "client_tls_key_file defaults to none");
    is_str(cfg->client_tls_cert_file, NULL, "client_tls_cert_file defaults to none");
    is_str(cfg->client_tls_ca_file, NULL, "client_tls_ca_file defaults to none");
    is_str(cfg->client_tls_protocols, "secure", "client_tls_protocols defaults to secure");
    is_str(cfg->client_tls_ciphers, "default", "client_tls_ciphers defaults to default");
    is_str(cfg->server_tls_sslmode, "disable", "server_tls_sslmode defaults to disable");
    is_str(cfg->server_tls_ca_file, NULL, "server_tls_ca_file defaults to none");
    is_str(cfg->server_tls_key_file, NULL, "server_tls_key_file defaults to none");
    is_str(cfg->server_tls_cert_file, NULL, "server_tls_cert_file defaults to none");
    is_str(cfg->server_tls_protocols, "secure", "server_tls_protocols defaults to secure");
    is_str(cfg->server_tls_ciphers, "default", "server_tls_ciphers defaults to default");
    is_str(cfg->auth_token_keys, NULL, "auth_token_keys defaults to none");
    is_str(cfg->auth_token_region, NULL, "auth_token_region defaults to none");
    is_str(cfg->auth_token_endpoints, NULL, "auth_token_endpoints defaults to none");
    ok(cfg->auth_token_clock_skew == 60, "auth_token_clock_skew defaults to 60 s");
    is_int(cfg->auth_token_allow_unix_socket, false, "auth_token_allow_unix_socket defaults to off");
    is_str(cfg->metrics_listen_addr, NULL, "metrics_listen_addr defaults to none");
    is_int(cfg->metrics_port, 0, "metrics_port defaults to off");
    is_int(cfg->max_prepared_statements, 200, "max_prepared_statements defaults to 200");
    is_str(cfg->pinning, "on", "pinning defaults to on");
    is_int(cfg->n_databases, 0, "no [databases] means no databases");
    is_int(cfg->n_users, 0, "no [users] means no users");
    config_free(cfg);
}

/*
 * Every setting in config.c's table, shown as SHOW CONFIG shows it, differs from its default in
 * cfg: a setting the file above does not set, or one whose value lands nowhere, fails here by
 * name (the typed assertions above cannot see a setting they do not list).
 */
static void every_setting_differs_from_its_default(const struct config *cfg)
{
    char value[256], dflt[256];
    size_t unchanged = 0;

    for (size_t i = 0; i < config_setting_count(); i++) {
        config_format_setting(cfg, i, value, sizeof value);
        config_format_setting_default(i, dflt, sizeof dflt);
        if (strcmp(value, dflt) == 0) {
            unchanged++;
            ok(0, "%s is set by the every-setting file (still its default '%s')",
               config_setting_name(i), dflt);
        }
    }
    is_int(unchanged, 0, "the every-setting file changes each of the %zu settings from its default",
           config_setting_count());
}

static void test_every_setting_is_read(void)
{
    struct config *cfg = load("[sluice]\n"
                              "listen_addr = *\n"
                              "listen_port = 7432\n"
                              "unix_socket_dir = /run/sluice\n"
                              "unix_socket_mode = 0700\n"
                              "so_reuseport = on\n"
                              "workers = 3\n"
                              "steer_by_cpu = off\n"
                              "io_uring = off\n"
                              "pool_mode = transaction\n"
                              "default_pool_size = 5\n"
                              "min_pool_size = 2\n"
                              "max_client_conn = 1000\n"
                              "max_db_connections = 50\n"
                              "max_user_connections = 40\n"
                              "max_db_client_connections = 900\n"
                              "max_user_client_connections = 800\n"
                              "reserve_pool_size = 3\n"
                              "reserve_pool_timeout = 2\n"
                              "auth_type = scram-sha-256\n"
                              "auth_file = /etc/sluice/userlist.txt\n"
                              "auth_user = lookup\n"
                              "auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename=$1\n"
                              "auth_dbname = authdb\n"
                              "auth_query_cache_ttl = 5\n"
                              "admin_users = alice, bob\n"
                              "stats_users = carol\n"
                              "query_wait_timeout = 0.5\n"
                              "client_idle_timeout = 300\n"
                              "client_login_timeout = 10\n"
                              "autodb_idle_timeout = 120\n"
                              "idle_transaction_timeout = 2.5\n"
                              "query_timeout = 90\n"
                              "server_idle_timeout = 60\n"
                              "server_lifetime = 1800\n"
                              "server_connect_timeout = 3\n"
                              "server_login_retry = 1\n"
                              "shutdown_timeout = 5\n"
                              "server_reset_query = RESET ALL\n"
                              "server_reset_query_always = yes\n"
                              "server_check_query = select 2\n"
                              "server_check_delay = 10\n"
                              "ignore_startup_parameters = extra_float_digits, search_path\n"
                              "log_connections = off\n"
                              "log_disconnections = false\n"
                              "log_pooler_errors = no\n"
                              "verbose = 2\n"
                              "max_packet_size = 1048576\n"
                              "pkt_buf = 8192\n"
                              "tcp_keepalive = 0\n"
                              "pidfile = /run/sluice.pid\n"
                              "stats_period = 0\n"
                              "syslog = 1\n"
                              "syslog_ident = pooler\n"
                              "syslog_facility = local3\n"
                              "client_tls_sslmode = require\n"
                              "client_tls_key_file = /k.pem\n"
                              "client_tls_cert_file = /c.pem\n"
                              "client_tls_ca_file = /ca.pem\n"
                              "client_tls_protocols = tlsv1.3\n"
                              "client_tls_ciphers = HIGH\n"
                              "server_tls_sslmode = verify-full\n"
                              "server_tls_ca_file = /sca.pem\n"
                              "server_tls_key_file = /sk.pem\n"
                              "server_tls_cert_file = /sc.pem\n"
                              "server_tls_protocols = tlsv1.2,tlsv1.3\n"
                              "server_tls_ciphers = ECDHE\n"
                              "auth_token_keys = /etc/sluice/keys.ini\n"
                              "auth_token_region = eu-west-1\n"
                              "auth_token_endpoints = db.example:5432\n"
                              "auth_token_clock_skew = 30\n"
                              "auth_token_allow_unix_socket = true\n"
                              "server_auth_token_region = us-east-2\n"
                              "server_auth_token_credentials = /etc/sluice/aws-credentials\n"
                              "server_auth_token_profile = sluice\n"
                              "metrics_listen_addr = 127.0.0.1\n"
                              "metrics_port = 9127\n"
                              "max_prepared_statements = 0\n"
                              "pinning = reject\n"
                              "peer_id = 16383\n");

    ok(cfg != NULL, "a file setting every [sluice] setting loads (%s)", err);
    if (cfg == NULL)
        return;
    is_str(cfg->listen_addr, "*", "listen_addr is read");
    is_int(cfg->listen_port, 7432, "listen_port is read");
    is_str(cfg->unix_socket_dir, "/run/sluice", "unix_socket_dir is read");
    is_int(cfg->unix_socket_mode, 0700, "unix_socket_mode is read as octal");
    is_int(cfg->so_reuseport, true, "so_reuseport is read");
    is_int(cfg->workers, 3, "workers is read");
    is_str(cfg->steer_by_cpu, "off", "steer_by_cpu is read");
    is_int(cfg->io_uring, false, "io_uring is read");
    is_int(cfg->pool_mode, POOL_MODE_TRANSACTION, "pool_mode is read");
    is_int(cfg->default_pool_size, 5, "default_pool_size is read");
    is_int(cfg->min_pool_size, 2, "min_pool_size is read");
    is_int(cfg->max_client_conn, 1000, "max_client_conn is read");
    is_int(cfg->max_db_connections, 50, "max_db_connections is read");
    is_int(cfg->max_user_connections, 40, "max_user_connections is read");
    is_int(cfg->max_db_client_connections, 900, "max_db_client_connections is read");
    is_int(cfg->max_user_client_connections, 800, "max_user_client_connections is read");
    is_int(cfg->reserve_pool_size, 3, "reserve_pool_size is read");
    ok(cfg->reserve_pool_timeout == 2, "reserve_pool_timeout is read");
    ok(cfg->autodb_idle_timeout == 120, "autodb_idle_timeout is read");
    ok(cfg->query_timeout == 90, "query_timeout is read");
    is_int(cfg->auth_type, AUTH_TYPE_SCRAM, "auth_type is read");
    is_str(cfg->auth_file, "/etc/sluice/userlist.txt", "auth_file is read");
    is_str(cfg->auth_user, "lookup", "auth_user is read");
    is_str(cfg->auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1", "auth_query is read");
    is_str(cfg->auth_dbname, "authdb", "auth_dbname is read");
    ok(cfg->auth_query_cache_ttl == 5, "auth_query_cache_ttl is read");
    is_str(cfg->admin_users, "alice, bob", "admin_users is read");
    is_str(cfg->stats_users, "carol", "stats_users is read");
    ok(cfg->query_wait_timeout == 0.5, "query_wait_timeout takes fractional seconds");
    ok(cfg->client_idle_timeout == 300, "client_idle_timeout is read");
    ok(cfg->client_login_timeout == 10, "client_login_timeout is read");
    ok(cfg->idle_transaction_timeout == 2.5, "idle_transaction_timeout is read");
    ok(cfg->server_idle_timeout == 60, "server_idle_timeout is read");
    ok(cfg->server_lifetime == 1800, "server_lifetime is read");
    ok(cfg->server_connect_timeout == 3, "server_connect_timeout is read");
    ok(cfg->server_login_retry == 1, "server_login_retry is read");
    ok(cfg->shutdown_timeout == 5, "shutdown_timeout is read");
    is_str(cfg->server_reset_query, "RESET ALL", "server_reset_query is read");
    is_int(cfg->server_reset_query_always, true, "server_reset_query_always is read");
    is_str(cfg->server_check_query, "select 2", "server_check_query is read");
    ok(cfg->server_check_delay == 10, "server_check_delay is read");
    is_str(cfg->ignore_startup_parameters, "extra_float_digits, search_path",
           "ignore_startup_parameters is read");
    is_int(cfg->log_connections, false, "log_connections is read");
    is_int(cfg->log_disconnections, false, "log_disconnections is read");
    is_int(cfg->log_pooler_errors, false, "log_pooler_errors is read");
    is_int(cfg->verbose, 2, "verbose is read");
    is_int(cfg->max_packet_size, 1048576, "max_packet_size is read");
    is_int(cfg->pkt_buf, 8192, "pkt_buf is read");
    is_int(cfg->tcp_keepalive, 0, "tcp_keepalive is read");
    is_str(cfg->pidfile, "/run/sluice.pid", "pidfile is read");
    ok(cfg->stats_period == 0, "stats_period is read");
    is_int(cfg->syslog, true, "syslog is read");
    is_str(cfg->syslog_ident, "pooler", "syslog_ident is read");
    is_str(cfg->syslog_facility, "local3", "syslog_facility is read");
    is_str(cfg->client_tls_sslmode, "require", "client_tls_sslmode is read");
    is_str(cfg->client_tls_key_file, "/k.pem", "client_tls_key_file is read");
    is_str(cfg->client_tls_cert_file, "/c.pem", "client_tls_cert_file is read");
    is_str(cfg->client_tls_ca_file, "/ca.pem", "client_tls_ca_file is read");
    is_str(cfg->client_tls_protocols, "tlsv1.3", "client_tls_protocols is read");
    is_str(cfg->client_tls_ciphers, "HIGH", "client_tls_ciphers is read");
    is_str(cfg->server_tls_sslmode, "verify-full", "server_tls_sslmode is read");
    is_str(cfg->server_tls_ca_file, "/sca.pem", "server_tls_ca_file is read");
    is_str(cfg->server_tls_key_file, "/sk.pem", "server_tls_key_file is read");
    is_str(cfg->server_tls_cert_file, "/sc.pem", "server_tls_cert_file is read");
    is_str(cfg->server_tls_protocols, "tlsv1.2,tlsv1.3", "server_tls_protocols is read");
    is_str(cfg->server_tls_ciphers, "ECDHE", "server_tls_ciphers is read");
    is_str(cfg->auth_token_keys, "/etc/sluice/keys.ini", "auth_token_keys is read");
    is_str(cfg->auth_token_region, "eu-west-1", "auth_token_region is read");
    is_str(cfg->auth_token_endpoints, "db.example:5432", "auth_token_endpoints is read");
    ok(cfg->auth_token_clock_skew == 30, "auth_token_clock_skew is read");
    is_int(cfg->auth_token_allow_unix_socket, true, "auth_token_allow_unix_socket is read");
    is_str(cfg->server_auth_token_region, "us-east-2", "server_auth_token_region is read");
    is_str(cfg->server_auth_token_credentials, "/etc/sluice/aws-credentials",
           "server_auth_token_credentials is read");
    is_str(cfg->server_auth_token_profile, "sluice", "server_auth_token_profile is read");
    is_str(cfg->metrics_listen_addr, "127.0.0.1", "metrics_listen_addr is read");
    is_int(cfg->metrics_port, 9127, "metrics_port is read");
    is_int(cfg->max_prepared_statements, 0, "max_prepared_statements is read");
    is_str(cfg->pinning, "reject", "pinning is read");
    is_int(cfg->peer_id, 16383, "peer_id is read");
    every_setting_differs_from_its_default(cfg);
    config_free(cfg);
}

static void test_booleans(void)
{
    static const char *const yes[] = {"1", "on", "true", "yes", "ON", "True", "YES"};
    static const char *const no[] = {"0", "off", "false", "no", "OFF", "False", "No"};
    char text[128];

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        struct config *cfg;

        snprintf(text, sizeof text, "[sluice]\nso_reuseport = %s\n", yes[i]);
        cfg = load(text);
        ok(cfg != NULL && cfg->so_reuseport, "boolean '%s' reads as true", yes[i]);
        config_free(cfg);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        struct config *cfg;

        snprintf(text, sizeof text, "[sluice]\nlog_connections = %s\n", no[i]);
        cfg = load(text);
        ok(cfg != NULL && !cfg->log_connections, "boolean '%s' reads as false", no[i]);
        config_free(cfg);
    }
    is_str(load_error("[sluice]\nsyslog = maybe\n"),
           "test.ini:2: syslog: invalid value 'maybe' (expected on/off, true/false, yes/no or 1/0)",
           "a boolean that is none of the words names file, line and setting");
    is_str(load_error("[sluice]\nsyslog = 2\n"),
           "test.ini:2: syslog: invalid value '2' (expected on/off, true/false, yes/no or 1/0)",
           "a boolean of 2 is refused");
}

static void test_integers(void)
{
    struct config *cfg;

    is_str(load_error("[sluice]\nlisten_port = abc\n"),
           "test.ini:2: listen_port: invalid value 'abc' (expected an integer 1-65535)",
           "a non-numeric port names file, line, setting and range");
    is_str(load_error("[sluice]\nlisten_port = 0\n"),
           "test.ini:2: listen_port: invalid value '0' (expected an integer 1-65535)",
           "a port below the range is refused");
    is_str(load_error("[sluice]\nlisten_port = 65536\n"),
           "test.ini:2: listen_port: invalid value '65536' (expected an integer 1-65535)",
           "a port above the range is refused");
    ok(starts_with(load_error("[sluice]\nlisten_port = 12abc\n"), "test.ini:2: listen_port:"),
       "an integer with trailing text is refused");
    ok(starts_with(load_error("[sluice]\nlisten_port =\n"), "test.ini:2: listen_port:"),
       "an empty integer is refused");
    ok(starts_with(load_error("[sluice]\nlisten_port = 6432.5\n"), "test.ini:2: listen_port:"),
       "a fractional integer is refused");
    ok(starts_with(load_error("[sluice]\nmax_client_conn = 99999999999999999999\n"),
                   "test.ini:2: max_client_conn:"),
       "an integer too large for any int is refused");
    ok(starts_with(load_error("[sluice]\nmin_pool_size = -1\n"), "test.ini:2: min_pool_size:"),
       "a negative count is refused");
    ok(starts_with(load_error("[sluice]\ndefault_pool_size = 0\n"),
                   "test.ini:2: default_pool_size:"),
       "a default_pool_size of 0 is refused");
    ok(starts_with(load_error("[sluice]\ntcp_keepalive = 2\n"), "test.ini:2: tcp_keepalive:"),
       "tcp_keepalive other than 0 or 1 is refused");
    cfg = load("[sluice]\nlisten_port = 1\n");
    ok(cfg != NULL && cfg->listen_port == 1, "the lowest port in range is accepted");
    config_free(cfg);
    cfg = load("[sluice]\nlisten_port = 65535\n");
    ok(cfg != NULL && cfg->listen_port == 65535, "the highest port in range is accepted");
    config_free(cfg);
}

static void test_file_modes(void)
{
    struct config *cfg = load("[sluice]\nunix_socket_mode = 600\n");

    ok(cfg != NULL && cfg->unix_socket_mode == 0600, "a file mode without a leading 0 is octal");
    config_free(cfg);
    is_str(load_error("[sluice]\nunix_socket_mode = 0800\n"),
           "test.ini:2: unix_socket_mode: invalid value '0800' (expected an octal file mode "
           "0-0777)",
           "a file mode with a non-octal digit is refused");
    ok(starts_with(load_error("[sluice]\nunix_socket_mode = 1777\n"),
                   "test.ini:2: unix_socket_mode:"),
       "a file mode above 0777 is refused");
}

static void test_seconds(void)
{
    struct config *cfg = load("[sluice]\nserver_lifetime = .25\nquery_wait_timeout = 0\n");

    ok(cfg != NULL && cfg->server_lifetime == 0.25, "seconds may start with a decimal point");
    ok(cfg != NULL && cfg->query_wait_timeout == 0, "zero seconds is accepted");
    config_free(cfg);
    is_str(load_error("[sluice]\nserver_lifetime = -1\n"),
           "test.ini:2: server_lifetime: invalid value '-1' (expected a number of seconds such "
           "as 30 or 0.5)",
           "negative seconds are refused");
    ok(starts_with(load_error("[sluice]\nserver_lifetime = 30s\n"), "test.ini:2: server_lifetime:"),
       "seconds with a unit suffix are refused");
    ok(starts_with(load_error("[sluice]\nserver_lifetime = 1e3\n"), "test.ini:2: server_lifetime:"),
       "seconds in exponent notation are refused");
    ok(starts_with(load_error("[sluice]\nserver_lifetime = inf\n"), "test.ini:2: server_lifetime:"),
       "infinite seconds are refused");
    ok(starts_with(load_error("[sluice]\nserver_lifetime = nan\n"), "test.ini:2: server_lifetime:"),
       "nan seconds are refused");
    ok(starts_with(load_error("[sluice]\nserver_lifetime = .\n"), "test.ini:2: server_lifetime:"),
       "a lone decimal point is refused");
    ok(starts_with(load_error("[sluice]\nserver_lifetime = 10000000000\n"),
                   "test.ini:2: server_lifetime:"),
       "seconds beyond a billion are refused");
}

static void test_pool_modes_and_auth_types(void)
{
    struct config *cfg;

    is_str(load_error("[sluice]\npool_mode = statement\n"),
           "test.ini:2: pool_mode: statement pooling is not supported (use session or "
           "transaction)",
           "statement pooling is refused with a clear reason");
    is_str(load_error("[sluice]\npool_mode = sessions\n"),
           "test.ini:2: pool_mode: invalid value 'sessions' (expected session or transaction)",
           "an unknown pool_mode is refused");
    cfg = load("[sluice]\nauth_type = trust\n");
    ok(cfg != NULL && cfg->auth_type == AUTH_TYPE_TRUST, "auth_type trust is read");
    config_free(cfg);
    cfg = load("[sluice]\nauth_type = plain\n");
    ok(cfg != NULL && cfg->auth_type == AUTH_TYPE_PLAIN, "auth_type plain is read");
    config_free(cfg);
    cfg = load("[sluice]\nauth_type = md5\n");
    ok(cfg != NULL && cfg->auth_type == AUTH_TYPE_MD5, "auth_type md5 is read");
    config_free(cfg);
    cfg = load("[sluice]\nauth_type = token\nauth_token_keys = /k.ini\nauth_token_region = x\n");
    ok(cfg != NULL && cfg->auth_type == AUTH_TYPE_TOKEN, "auth_type token is read");
    config_free(cfg);
    is_str(load_error("[sluice]\nauth_type = hba\n"),
           "test.ini:2: auth_type: 'hba' is not supported by sluice (expected trust, md5, "
           "scram-sha-256, plain or token)",
           "PgBouncer's auth_type hba is refused as not supported");
    ok(strstr(load_error("[sluice]\nauth_type = any\n"), "'any' is not supported") != NULL,
       "PgBouncer's auth_type any is refused as not supported");
    ok(strstr(load_error("[sluice]\nauth_type = cert\n"), "'cert' is not supported") != NULL,
       "PgBouncer's auth_type cert is refused as not supported");
    is_str(load_error("[sluice]\nauth_type = password\n"),
           "test.ini:2: auth_type: invalid value 'password' (expected trust, md5, "
           "scram-sha-256, plain or token)",
           "an unknown auth_type is refused");
}

static void test_choices(void)
{
    struct config *cfg = load("[sluice]\nserver_tls_sslmode = Verify-CA\npinning = OFF\n");

    ok(cfg != NULL, "choices are read without regard to case");
    if (cfg != NULL) {
        is_str(cfg->server_tls_sslmode, "verify-ca", "a choice is stored in its canonical spelling");
        is_str(cfg->pinning, "off", "pinning off is read");
    }
    config_free(cfg);
    is_str(load_error("[sluice]\nserver_tls_sslmode = required\n"),
           "test.ini:2: server_tls_sslmode: invalid value 'required' (expected one of: disable, "
           "allow, prefer, require, verify-ca, verify-full)",
           "an unknown sslmode names every mode that would do");
    ok(starts_with(load_error("[sluice]\nclient_tls_sslmode = strict\n"),
                   "test.ini:2: client_tls_sslmode: invalid value"),
       "an unknown client_tls_sslmode is refused");
    ok(starts_with(load_error("[sluice]\npinning = sometimes\n"), "test.ini:2: pinning:"),
       "an unknown pinning mode is refused");
    ok(starts_with(load_error("[sluice]\nsyslog_facility = kernel\n"),
                   "test.ini:2: syslog_facility:"),
       "an unknown syslog facility is refused");
    ok(starts_with(load_error("[sluice]\nclient_tls_protocols = tlsv1.4\n"),
                   "test.ini:2: client_tls_protocols:"),
       "an unknown TLS protocol is refused");
    ok(starts_with(load_error("[sluice]\nserver_tls_protocols =\n"),
                   "test.ini:2: server_tls_protocols:"),
       "an empty TLS protocol list is refused");
    cfg = load("[sluice]\nserver_tls_protocols = tlsv1.2 tlsv1.3\n");
    ok(cfg != NULL, "TLS protocols may be separated by spaces");
    config_free(cfg);
}

static void test_strings(void)
{
    struct config *cfg = load("[sluice]\nlisten_addr =\nunix_socket_dir =\nauth_file =\n"
                              "server_check_query =\n");

    ok(cfg != NULL, "empty string values load");
    if (cfg != NULL) {
        is_str(cfg->listen_addr, "", "an empty listen_addr stays empty (no TCP)");
        is_str(cfg->unix_socket_dir, "", "an empty unix_socket_dir stays empty (no socket)");
        is_str(cfg->auth_file, NULL, "an empty auth_file means none");
        is_str(cfg->server_check_query, "", "an empty server_check_query stays empty (no check)");
    }
    config_free(cfg);
}

static void test_file_structure(void)
{
    struct config *cfg;

    cfg = load("[sluice]\nlisten_port = 7000\nlisten_port = 7001\n");
    ok(cfg != NULL && cfg->listen_port == 7001, "a setting given twice: the last one wins");
    config_free(cfg);
    cfg = load("[sluice]\nlisten_addr = a\nlisten_addr = b\n");
    ok(cfg != NULL && strcmp(cfg->listen_addr, "b") == 0,
       "a string setting given twice: the last one wins");
    config_free(cfg);
    cfg = load("[pgbouncer]\nlisten_port = 7002\n");
    ok(cfg != NULL && cfg->listen_port == 7002, "[pgbouncer] is read as [sluice]");
    config_free(cfg);
    cfg = load("[SLUICE]\nLISTEN_PORT = 7003\n");
    ok(cfg != NULL && cfg->listen_port == 7003, "section and setting names ignore case");
    config_free(cfg);
    cfg = load("; comment\n# another\n\n[sluice]\n   ; indented comment\nlisten_port = 7004\n");
    ok(cfg != NULL && cfg->listen_port == 7004, "comment and blank lines are skipped");
    config_free(cfg);
    cfg = load("[sluice]\nlisten_addr = 127.0.0.1\n    listen_port = 7005\n");
    ok(cfg != NULL && cfg->listen_port == 7005 && strcmp(cfg->listen_addr, "127.0.0.1") == 0,
       "an indented line is a setting of its own, not a continuation of the one before");
    config_free(cfg);
    cfg = load("[sluice]\r\nlisten_port = 7006\r\nlisten_addr = x\r\n");
    ok(cfg != NULL && cfg->listen_port == 7006 && strcmp(cfg->listen_addr, "x") == 0,
       "CRLF line ends are read");
    config_free(cfg);
    cfg = load("\xEF\xBB\xBF[sluice]\nlisten_port = 7007\n");
    ok(cfg != NULL && cfg->listen_port == 7007, "a UTF-8 byte order mark is skipped");
    config_free(cfg);
    cfg = load("[sluice]\nlisten_port = 7008");
    ok(cfg != NULL && cfg->listen_port == 7008, "a last line without a newline is read");
    config_free(cfg);
    cfg = load("[sluice]\nlisten_port: 7009\n");
    ok(cfg != NULL && cfg->listen_port == 7009, "name: value is read as name = value (as inih)");
    config_free(cfg);
    cfg = load("[sluice] ; the main section\nlisten_port = 7010\n");
    ok(cfg != NULL && cfg->listen_port == 7010, "a comment after a section header is ignored");
    config_free(cfg);

    is_str(load_error("[sluice]\nlisten_port = 6432\nbogus_setting = 1\n"),
           "test.ini:3: bogus_setting: unknown setting", "unknown setting names file and line");
    is_str(load_error("[sluice]\n\n[extras]\n"),
           "test.ini:3: unknown section [extras] (expected [sluice], [databases] or [users])",
           "an unknown section is refused even when it holds nothing");
    is_str(load_error("listen_port = 6432\n"),
           "test.ini:1: listen_port: setting outside any section (start with [sluice])",
           "a setting before any section is refused");
    is_str(load_error("[sluice]\nlisten_port 6432\n"), "test.ini:2: expected 'name = value'",
           "a line without '=' is refused");
    is_str(load_error("[sluice\n"), "test.ini:1: section header has no closing ']'",
           "a section header without ']' is refused");
    is_str(load_error("%include /etc/sluice/more.ini\n"), "test.ini:1: %include is not supported",
           "PgBouncer's %%include is refused by name");
    is_str(load_error("[sluice]\n= 5\n"), "test.ini:2: : unknown setting",
           "a line with no setting name is refused");
}

static void test_inline_comments(void)
{
    struct config *cfg = load("[sluice]\n"
                              "listen_addr = 10.0.0.1 ; the private address\n"
                              "server_reset_query = SELECT 1;SELECT 2\n"
                              "server_check_query = select 1 # not a comment\n"
                              "syslog_ident =;x\n");

    ok(cfg != NULL, "settings with inline comments load (%s)", err);
    if (cfg == NULL)
        return;
    is_str(cfg->listen_addr, "10.0.0.1", "a ';' after a space starts an inline comment");
    is_str(cfg->server_reset_query, "SELECT 1;SELECT 2", "a ';' with no space before it is kept");
    is_str(cfg->server_check_query, "select 1 # not a comment", "a '#' inside a line is kept");
    is_str(cfg->syslog_ident, ";x", "a ';' right after '=' is kept (as inih)");
    config_free(cfg);
}

static void test_cross_checks(void)
{
    struct config *cfg;

    is_str(load_error("[sluice]\nlisten_port = 1\nclient_tls_sslmode = require\n"),
           "test.ini:3: client_tls_sslmode: 'require' needs client_tls_key_file and "
           "client_tls_cert_file",
           "client TLS without a key and certificate is refused at the sslmode line");
    cfg = load("[sluice]\nclient_tls_sslmode = prefer\nclient_tls_key_file = /k\n"
               "client_tls_cert_file = /c\n");
    ok(cfg != NULL, "client TLS with a key and certificate given after it loads");
    config_free(cfg);
    is_str(load_error("[sluice]\nauth_type = token\n"),
           "test.ini:2: auth_type: 'token' needs auth_token_keys and auth_token_region",
           "token auth without keys and region is refused at the auth_type line");
    is_str(load_error("[users]\nalice = auth_type=token\n"),
           "test.ini:2: [users] alice: auth_type: 'token' needs auth_token_keys and "
           "auth_token_region",
           "a token user without keys and region is refused at the user's line");
}

static void test_server_auth_token(void)
{
    struct config *cfg;
    const char *db = "[databases]\nrds = host=db.example port=5432 user=app server_auth_token=on\n";
    char text[512];

    snprintf(text, sizeof text, "[sluice]\nserver_tls_sslmode = verify-full\n"
             "server_auth_token_region = us-east-1\n%s", db);
    cfg = load(text);
    ok(cfg != NULL, "server_auth_token=on with verify-full and a region loads (%s)", err);
    if (cfg != NULL) {
        ok(config_find_database(cfg, "rds")->server_auth_token, "server_auth_token is read");
        is_str(cfg->server_auth_token_profile, "default", "the profile defaults to default");
        is_str(cfg->server_auth_token_credentials, NULL, "no credentials file: the environment");
        config_free(cfg);
    }
    cfg = load("[databases]\napp = host=db.example server_auth_token=off\n");
    ok(cfg != NULL && !config_find_database(cfg, "app")->server_auth_token,
       "server_auth_token=off needs nothing");
    config_free(cfg);

    snprintf(text, sizeof text, "[sluice]\nserver_tls_sslmode = prefer\n"
             "server_auth_token_region = us-east-1\n%s", db);
    is_str(load_error(text),
           "test.ini:2: [databases] rds: server_auth_token=on needs server_tls_sslmode = require, "
           "verify-ca or verify-full (RDS accepts IAM tokens only over TLS; now 'prefer')",
           "a token over a connection that may be plaintext is refused at the sslmode line");
    snprintf(text, sizeof text, "[sluice]\nserver_auth_token_region = us-east-1\n%s", db);
    is_str(load_error(text),
           "test.ini: [databases] rds: server_auth_token=on needs server_tls_sslmode = require, "
           "verify-ca or verify-full (RDS accepts IAM tokens only over TLS; now 'disable')",
           "the default server_tls_sslmode is refused too");
    snprintf(text, sizeof text, "[sluice]\nserver_tls_sslmode = require\n%s", db);
    is_str(load_error(text),
           "test.ini: [databases] rds: server_auth_token=on needs server_auth_token_region",
           "a token database without a region is refused");
    is_str(load_error("[sluice]\nserver_tls_sslmode = require\nserver_auth_token_region = x\n"
                      "[databases]\nrds = host=db.example password=pw server_auth_token=on\n"),
           "test.ini: [databases] rds: server_auth_token=on and password= cannot be used together "
           "(the token is the password)",
           "a password beside the token is refused");
    is_str(load_error("[sluice]\nserver_tls_sslmode = require\nserver_auth_token_region = x\n"
                      "[databases]\nrds = host=/run/postgresql server_auth_token=on\n"),
           "test.ini: [databases] rds: server_auth_token=on needs a TCP host (tokens are sent "
           "only over TLS, and unix sockets do not use TLS)",
           "a unix socket host is refused");
    is_str(load_error("[databases]\nrds = host=db.example server_auth_token=maybe\n"),
           "test.ini:2: [databases] rds: server_auth_token: invalid value 'maybe' (expected on or off)",
           "a value that is no boolean is refused");
}

static void test_peers(void)
{
    struct config *cfg = load("[sluice]\nlisten_port = 6432\npeer_id = 2\n"
                              "[peers]\n1 = host=10.0.0.11\n2 = host=10.0.0.12 port=7000\n"
                              "3 = host=/run/sluice-3 port=6433\n");

    ok(cfg != NULL, "a [peers] section with the instance's own id in it loads (%s)", err);
    if (cfg != NULL) {
        is_int(cfg->n_peers, 3, "[peers]: three peers are read");
        is_str(config_find_peer(cfg, 1)->host, "10.0.0.11", "[peers]: host is read");
        is_int(config_find_peer(cfg, 1)->port, 6432, "[peers]: port defaults to 6432");
        is_int(config_find_peer(cfg, 2)->port, 7000, "[peers]: port is read");
        is_str(config_find_peer(cfg, 3)->host, "/run/sluice-3", "[peers]: a unix socket directory");
        ok(config_find_peer(cfg, 4) == NULL, "[peers]: an id not listed is not found");
        config_free(cfg);
    }
    is_str(load_error("[sluice]\npeer_id = 16384\n"),
           "test.ini:2: peer_id: invalid value '16384' (expected an integer 0-16383)",
           "peer_id above PgBouncer's 16383 is refused");
    is_str(load_error("[sluice]\npeer_id = -1\n"),
           "test.ini:2: peer_id: invalid value '-1' (expected an integer 0-16383)",
           "a negative peer_id is refused");
    is_str(load_error("[sluice]\npeer_id = 1\n[peers]\n0 = host=a\n"),
           "test.ini:4: [peers] 0: a peer id is an integer 1-16383", "peer id 0 in [peers] is refused");
    is_str(load_error("[sluice]\npeer_id = 1\n[peers]\nx = host=a\n"),
           "test.ini:4: [peers] x: a peer id is an integer 1-16383", "a peer name is refused");
    is_str(load_error("[sluice]\npeer_id = 1\n[peers]\n2 = port=7000\n"),
           "test.ini:4: [peers] 2: host is required", "a peer without host is refused");
    is_str(load_error("[sluice]\npeer_id = 1\n[peers]\n2 = host=a pool_size=5\n"),
           "test.ini:4: [peers] 2: pool_size: not supported by sluice (each cancel is forwarded "
           "at once)",
           "PgBouncer's per-peer pool_size is refused with the reason");
    is_str(load_error("[sluice]\npeer_id = 1\n[peers]\n2 = host=a dbname=x\n"),
           "test.ini:4: [peers] 2: unknown keyword 'dbname'", "an unknown peer keyword is refused");
    is_str(load_error("[sluice]\n[peers]\n2 = host=a\n"),
           "test.ini:3: [peers] is set but peer_id is 0 (peering off): give this instance its "
           "peer_id (1-16383) in [sluice], or remove [peers]",
           "[peers] without peer_id is refused");
    is_str(load_error("[sluice]\nlisten_addr = 127.0.0.1\nlisten_port = 7000\npeer_id = 1\n"
                      "[peers]\n2 = host=localhost port=7000\n"),
           "test.ini:6: [peers] 2: host=localhost port=7000 is this instance's own address, but "
           "its peer_id is 1: cancels for peer 2 would come back here",
           "a peer entry for another id at this instance's own TCP address is refused");
    is_str(load_error("[sluice]\nunix_socket_dir = /run/s1\nlisten_port = 7000\npeer_id = 1\n"
                      "[peers]\n2 = host=/run/s1 port=7000\n"),
           "test.ini:6: [peers] 2: host=/run/s1 port=7000 is this instance's own address, but its "
           "peer_id is 1: cancels for peer 2 would come back here",
           "a peer entry for another id at this instance's own unix socket is refused");
    cfg = load("[sluice]\nlisten_addr = 127.0.0.1\nlisten_port = 7000\npeer_id = 1\n"
               "[peers]\n1 = host=127.0.0.1 port=7000\n2 = host=127.0.0.1 port=7001\n");
    ok(cfg != NULL, "the instance's own id at its own address is allowed (%s)", err);
    config_free(cfg);
    is_str(load_error("[sluice]\npeer_id = 1\nmax_client_conn = 200000\n"),
           "test.ini:3: max_client_conn: with peer_id set, cancel keys leave room for at most "
           "131070 clients per instance",
           "max_client_conn beyond what peered cancel keys can address is refused");
}

/*
 * Debian's inih takes its parsing rules from globals. Changing them makes inih read lines
 * differently from our own split, which must fail the load rather than run on another value.
 */
static void test_disagreement_with_inih_fails(void)
{
    char *saved_inline = ini_inline_comment_prefixes;
    char *saved_start = ini_start_comment_prefixes;
    char inline_hash[] = "#";
    char start_with_s[] = ";#s";

    ini_inline_comment_prefixes = inline_hash;
    is_str(load_error("[sluice]\nserver_check_query = select 1 # x\n"),
           "test.ini:2: could not read this line whole",
           "a line inih cuts differently fails the load");
    ini_inline_comment_prefixes = saved_inline;

    ini_start_comment_prefixes = start_with_s;
    is_str(load_error("[sluice]\nserver_check_query = select 1\nlisten_port = 7\n"),
           "test.ini:2: could not read this line whole",
           "a setting inih skips as a comment fails the load");
    is_str(load_error("[sluice]\nlisten_port = 7\nserver_check_query = select 1\n"),
           "test.ini:3: could not read this line whole",
           "a setting inih skips on the last line fails the load");
    ini_start_comment_prefixes = saved_start;

    is_str(load_error(" \xEF\xBB\xBF[sluice]\n"),
           "test.ini:1: expected 'name = value'",
           "a byte order mark after spaces is text, not a mark to skip");
}

/* ---- lines longer than inih's buffer ------------------------------------------------- */

/* Loads "[sluice]\nserver_reset_query = <x * n>" so that line 2 is exactly line_len long. */
static void check_exact_line_length(size_t line_len)
{
    const char *prefix = "server_reset_query = ";
    char *value = repeated('x', line_len - strlen(prefix));
    char *text = text_of("[sluice]\n%s%s\nlisten_port = 7100\n", prefix, value);
    struct config *cfg = load(text);

    ok(cfg != NULL, "a line of exactly %zu characters loads (%s)", line_len, err);
    if (cfg != NULL) {
        is_str(cfg->server_reset_query, value, "a line of exactly %zu characters keeps its value whole",
               line_len);
        is_int(cfg->listen_port, 7100, "the line after a %zu-character line is read", line_len);
    }
    config_free(cfg);
    free(text);
    free(value);
}

/* A [databases] line holding a password of n characters. */
static void check_long_password(size_t n)
{
    char *password = repeated('p', n);
    char *text = text_of("[databases]\nrds = host=mydb.abcdefghijkl.eu-west-1.rds.amazonaws.com "
                         "port=5432 dbname=app user=app_user password=%s pool_size=7\n"
                         "[sluice]\nlisten_port = 7200\n",
                         password);
    struct config *cfg = load(text);
    const struct config_database *db = cfg != NULL ? config_find_database(cfg, "rds") : NULL;

    ok(cfg != NULL && cfg->n_databases == 1,
       "a database line with a %zu-character password is one database (%s)", n, err);
    ok(db != NULL && db->password != NULL && strcmp(db->password, password) == 0,
       "a %zu-character password is read whole", n);
    ok(db != NULL && db->pool_size == 7, "the keyword after a %zu-character password is read", n);
    ok(cfg != NULL && cfg->listen_port == 7200,
       "the section after a %zu-character password line is read", n);
    config_free(cfg);
    free(text);
    free(password);
}

static void test_long_lines(void)
{
    char *filler = repeated('c', 5000);
    char *text;
    struct config *cfg;
    const struct config_database *db;

    check_exact_line_length(199);
    check_exact_line_length(200);
    check_exact_line_length(201);
    check_long_password(300);
    check_long_password(5000);

    text = text_of("[databases]\nbig = host=h password='a ;b#%s' ; comment %s\n", filler, filler);
    cfg = load(text);
    db = cfg != NULL ? config_find_database(cfg, "big") : NULL;
    ok(db != NULL && db->password != NULL && strlen(db->password) == 5005 &&
           strncmp(db->password, "a ;b#c", 6) == 0,
       "a 5000-character database line parses whole, quoted ';' kept, comment dropped");
    config_free(cfg);
    free(text);

    text = text_of("[sluice]\nserver_reset_query = SELECT %s ; a comment %s\n", filler, filler);
    cfg = load(text);
    ok(cfg != NULL && strlen(cfg->server_reset_query) == 5007 &&
           strncmp(cfg->server_reset_query, "SELECT cc", 9) == 0,
       "a long [sluice] line loses its inline comment just like a short one");
    config_free(cfg);
    free(text);

    text = text_of("; %s\n[sluice] ; %s\nlisten_port = 7300 ;%s\n", filler, filler, filler);
    cfg = load(text);
    ok(cfg != NULL && cfg->listen_port == 7300,
       "long comment lines and a long comment after a section header are ignored (%s)", err);
    config_free(cfg);
    free(text);

    text = text_of("[databases]\nbig = host=h password=%s\n\n[sluice]\nlisten_port = x\n", filler);
    is_str(load_error(text),
           "test.ini:5: listen_port: invalid value 'x' (expected an integer 1-65535)",
           "line numbers after a long line are still right");
    free(text);

    text = text_of("[sluice]\n%s\n", filler);
    is_str(load_error(text), "test.ini:2: expected 'name = value'",
           "a long line without '=' is refused with its line number");
    free(text);

    text = text_of("[sluice]\n%s = 1\n", filler);
    ok(starts_with(load_error(text), "test.ini:2: ccccc") &&
           strstr(err, ": unknown setting") != NULL && strlen(err) < 200,
       "a long unknown setting name is refused, shortened in the message");
    free(text);

    text = text_of("[sluice]\nlisten_port = %s\n", filler);
    ok(starts_with(load_error(text), "test.ini:2: listen_port: invalid value 'cccc") &&
           strstr(err, "...' (expected an integer 1-65535)") != NULL,
       "a long bad value is shortened in the message");
    free(text);
    free(filler);
}

/* ---- [databases] and [users] ---------------------------------------------------------- */

static void test_database_defaults(void)
{
    struct config *cfg = load("[databases]\nappdb =\n");
    const struct config_database *db = cfg != NULL ? config_find_database(cfg, "appdb") : NULL;

    ok(db != NULL, "a database line with no keywords loads (%s)", err);
    if (db == NULL) {
        config_free(cfg);
        return;
    }
    is_str(db->host, "127.0.0.1", "a database's host defaults to 127.0.0.1");
    is_int(db->port, 5432, "a database's port defaults to 5432");
    is_str(db->dbname, "appdb", "a database's dbname defaults to its name");
    is_str(db->user, NULL, "a database's user defaults to the client's");
    is_str(db->password, NULL, "a database's password defaults to none");
    is_int(db->pool_size, -1, "a database's pool_size defaults to default_pool_size");
    is_int(db->min_pool_size, -1, "a database's min_pool_size defaults to min_pool_size");
    is_int(db->max_db_connections, 0, "a database's max_db_connections defaults to unlimited");
    is_int(db->pool_mode, POOL_MODE_UNSET, "a database's pool_mode defaults to the global one");
    is_str(db->connect_query, NULL, "a database's connect_query defaults to none");
    is_str(db->application_name, NULL, "a database's application_name defaults to none");
    config_free(cfg);
}

static void test_database_keywords(void)
{
    struct config *cfg = load(
        "[databases]\n"
        "app = host=/var/run/postgresql port=5433 dbname=app_prod user=app password=s3cret "
        "pool_size=10 min_pool_size=2 max_db_connections=30 pool_mode=transaction "
        "connect_query='SET search_path = app' application_name=sluice\n"
        "spaced = host = db1   port =  6000\n"
        "quoted = password='it\\'s a \\\\ ;test#1' user='a b'\n"
        "hashes = password=abc#def;ghi\n"
        "commented = host=db2 ; host=db3\n");
    const struct config_database *db;

    ok(cfg != NULL, "database lines with every keyword load (%s)", err);
    if (cfg == NULL)
        return;
    is_int(cfg->n_databases, 5, "each database line is one database");
    db = config_find_database(cfg, "app");
    ok(db != NULL, "a database is found by its name");
    if (db != NULL) {
        is_str(db->host, "/var/run/postgresql", "a host starting with '/' is kept as a socket dir");
        is_int(db->port, 5433, "port is read");
        is_str(db->dbname, "app_prod", "dbname is read");
        is_str(db->user, "app", "user is read");
        is_str(db->password, "s3cret", "password is read");
        is_int(db->pool_size, 10, "pool_size is read");
        is_int(db->min_pool_size, 2, "min_pool_size is read");
        is_int(db->max_db_connections, 30, "max_db_connections is read");
        is_int(db->pool_mode, POOL_MODE_TRANSACTION, "pool_mode is read");
        is_str(db->connect_query, "SET search_path = app", "a quoted value keeps its spaces");
        is_str(db->application_name, "sluice", "application_name is read");
    }
    db = config_find_database(cfg, "spaced");
    ok(db != NULL && strcmp(db->host, "db1") == 0 && db->port == 6000,
       "spaces around '=' in keyword=value are allowed");
    db = config_find_database(cfg, "quoted");
    is_str(db != NULL ? db->password : NULL, "it's a \\ ;test#1",
           "a quoted value reads \\' and \\\\ and keeps ' ;' and '#'");
    is_str(db != NULL ? db->user : NULL, "a b", "a quoted user keeps its space");
    db = config_find_database(cfg, "hashes");
    is_str(db != NULL ? db->password : NULL, "abc#def;ghi",
           "an unquoted value keeps '#' and a ';' with no space before it");
    db = config_find_database(cfg, "commented");
    is_str(db != NULL ? db->host : NULL, "db2", "a ';' after a space outside quotes starts a comment");
    is_str(cfg->databases[0].name, "app", "databases keep file order (first)");
    is_str(cfg->databases[4].name, "commented", "databases keep file order (last)");
    config_free(cfg);
}

/* libpq's host and port lists and target_session_attrs, checked at load. */
static void test_host_lists(void)
{
    struct config *cfg = load(
        "[databases]\n"
        "pair = host=db1,db2 port=5433,5434 target_session_attrs=read-write\n"
        "shared = host=db1,db2,/run/pg port=6000\n");
    const struct config_database *db;

    ok(cfg != NULL, "host lists load (%s)", err);
    if (cfg == NULL)
        return;
    db = config_find_database(cfg, "pair");
    ok(db != NULL && strcmp(db->host, "db1,db2") == 0 && db->port == 5433 &&
       db->port_list != NULL && strcmp(db->port_list, "5433,5434") == 0 &&
       db->target_session_attrs == TARGET_READ_WRITE,
       "a host list keeps its hosts, its ports (the first as port) and target_session_attrs");
    db = config_find_database(cfg, "shared");
    ok(db != NULL && db->port == 6000 && db->port_list == NULL &&
       db->target_session_attrs == TARGET_ANY,
       "one port serves every host; target_session_attrs defaults to any");
    config_free(cfg);

    is_str(load_error("[databases]\napp = host=a,b,c port=1,2\n"),
           "test.ini:2: [databases] app: port: 2 ports for 3 hosts (give one port, or one per host)",
           "a port list must match the host list");
    is_str(load_error("[databases]\napp = host=a,,b\n"),
           "test.ini:2: [databases] app: host: empty entry in the list 'a,,b'",
           "an empty host in a list is refused");
    is_str(load_error("[databases]\napp = host=a,b port=1,x\n"),
           "test.ini:2: [databases] app: port: invalid port 'x' (expected 1-65535)",
           "a bad port in a list is named");
    ok(starts_with(load_error("[databases]\napp = host=a,b target_session_attrs=prefer-standby\n"),
                   "test.ini:2: [databases] app: target_session_attrs: invalid value 'prefer-standby'"),
       "a target_session_attrs sluice does not implement is refused at load");

    struct hostlist list;
    char why[128];
    ok(hostlist_parse("a,b", "1", 5432, &list, why, sizeof why) == 0 && list.n == 2 &&
       strcmp(list.hosts[1], "b") == 0 && list.ports[1] == 1, "one port applies to every host");
    hostlist_free(&list);
    ok(hostlist_target_accepts(TARGET_READ_WRITE, false, false) &&
       !hostlist_target_accepts(TARGET_READ_WRITE, false, true) &&
       !hostlist_target_accepts(TARGET_READ_WRITE, true, true) &&
       hostlist_target_accepts(TARGET_STANDBY, true, true) &&
       hostlist_target_accepts(TARGET_PRIMARY, false, true) &&
       hostlist_target_accepts(TARGET_READ_ONLY, false, true),
       "read-write needs a primary not read-only by default, as libpq decides");
}

static void test_database_errors(void)
{
    struct config *cfg;
    const char *message;

    is_str(load_error("[databases]\napp = host=db hots=db2\n"),
           "test.ini:2: [databases] app: unknown keyword 'hots'",
           "an unknown database keyword is named");
    is_str(load_error("[databases]\napp = host=db port=abc\n"),
           "test.ini:2: [databases] app: port: invalid value 'abc' (expected an integer 1-65535)",
           "a bad database port names file, line, database and keyword");
    ok(starts_with(load_error("[databases]\napp = pool_size=0\n"),
                   "test.ini:2: [databases] app: pool_size: invalid value '0'"),
       "a database pool_size of 0 is refused");
    is_str(load_error("[databases]\napp = pool_mode=statement\n"),
           "test.ini:2: [databases] app: pool_mode: statement pooling is not supported (use "
           "session or transaction)",
           "statement pooling is refused for a database");
    is_str(load_error("[databases]\napp = host=db password='hunter2\n"),
           "test.ini:2: [databases] app: password: quoted value has no closing quote",
           "an unterminated quote is refused without showing the password");
    message = load_error("[databases]\napp = host=db password=correct horse staple\n");
    is_str(message,
           "test.ini:2: [databases] app: expected keyword=value after password (a value holding "
           "spaces must be single-quoted: password='...')",
           "an unquoted password with spaces is refused");
    ok(strstr(message, "horse") == NULL, "the refusal of a password with spaces does not show it");
    message = load_error("[databases]\napp = host=db password=correct horse=staple\n");
    ok(strstr(message, "after password") != NULL && strstr(message, "horse") == NULL,
       "a password with spaces that looks like keyword=value is refused without showing it");
    message = load_error("[databases]\napp = password=hunter2 port=x\n");
    ok(strstr(message, "hunter2") == NULL, "an error on a line holding a password does not show it");
    is_str(load_error("[databases]\napp = host='db'port=1\n"),
           "test.ini:2: [databases] app: host: expected a space after the closing quote",
           "text glued to a closing quote is refused");
    is_str(load_error("[databases]\napp = host=\n"),
           "test.ini:2: [databases] app: host: empty value (leave the keyword out instead)",
           "an empty database value is refused");
    is_str(load_error("[databases]\napp = host\n"),
           "test.ini:2: [databases] app: host: expected '=' after the keyword",
           "a keyword without '=' is refused");
    is_str(load_error("[databases]\napp = 'host'=x\n"),
           "test.ini:2: [databases] app: expected keyword=value",
           "a line not starting with a keyword is refused");
    is_str(load_error("[databases]\n= host=x\n"),
           "test.ini:2: [databases]: missing database name before '='",
           "a database line without a name is refused");

    cfg = load("[databases]\napp = host=old port=1\nother = host=o\napp = host=new\n");
    ok(cfg != NULL && cfg->n_databases == 2, "a database given twice is one database");
    ok(cfg != NULL && strcmp(config_find_database(cfg, "app")->host, "new") == 0 &&
           config_find_database(cfg, "app")->port == 5432,
       "a database given twice: the last line wins whole");
    config_free(cfg);
}

static void test_users(void)
{
    struct config *cfg = load("[users]\n"
                              "alice = pool_mode=transaction auth_type=plain "
                              "max_user_connections=3\n"
                              "bob =\n");
    const struct config_user *user;

    ok(cfg != NULL && cfg->n_users == 2, "user lines load (%s)", err);
    if (cfg == NULL)
        return;
    user = config_find_user(cfg, "alice");
    ok(user != NULL, "a user is found by name");
    if (user != NULL) {
        is_int(user->pool_mode, POOL_MODE_TRANSACTION, "a user's pool_mode is read");
        is_int(user->auth_type, AUTH_TYPE_PLAIN, "a user's auth_type is read");
        is_int(user->max_user_connections, 3, "a user's max_user_connections is read");
    }
    user = config_find_user(cfg, "bob");
    ok(user != NULL && user->pool_mode == POOL_MODE_UNSET && user->auth_type == AUTH_TYPE_UNSET &&
           user->max_user_connections == 0,
       "a user line with no keywords overrides nothing");
    ok(config_find_user(cfg, "carol") == NULL, "an unlisted user is not found");
    config_free(cfg);

    is_str(load_error("[users]\nalice = password=x\n"),
           "test.ini:2: [users] alice: unknown keyword 'password'",
           "an unknown user keyword is named");
    ok(starts_with(load_error("[users]\nalice = auth_type=hba\n"),
                   "test.ini:2: [users] alice: auth_type: 'hba' is not supported"),
       "a user's unsupported auth_type is refused");
    ok(starts_with(load_error("[users]\nalice = max_user_connections=-1\n"),
                   "test.ini:2: [users] alice: max_user_connections: invalid value '-1'"),
       "a negative max_user_connections is refused");
    cfg = load("[users]\nalice = max_user_connections=1\nalice = max_user_connections=2\n");
    ok(cfg != NULL && cfg->n_users == 1 && cfg->users[0].max_user_connections == 2,
       "a user given twice: the last line wins");
    config_free(cfg);
}

static void test_user_pool_size(void)
{
    struct config *cfg = load("[sluice]\ndefault_pool_size = 7\n"
                              "[databases]\nsized = pool_size=3\nplain = port=5432\n"
                              "[users]\nalice = pool_size=5\nbob = pool_mode=session\n");
    const struct config_user *alice, *bob;

    ok(cfg != NULL, "user pool_size loads (%s)", err);
    if (cfg == NULL)
        return;
    alice = config_find_user(cfg, "alice");
    bob = config_find_user(cfg, "bob");
    is_int(alice->pool_size, 5, "a user's pool_size is read");
    is_int(bob->pool_size, -1, "a user without pool_size has none");
    is_int(config_user_pool_size(cfg, config_find_database(cfg, "plain"), alice), 5,
           "the user's pool_size sizes its pools on a database without pool_size");
    is_int(config_user_pool_size(cfg, config_find_database(cfg, "sized"), alice), 3,
           "the database's pool_size wins over the user's");
    is_int(config_user_pool_size(cfg, config_find_database(cfg, "plain"), bob), 7,
           "neither sets it: default_pool_size");
    is_int(config_user_pool_size(cfg, config_find_database(cfg, "plain"), NULL), 7,
           "a user without a [users] line: default_pool_size");
    config_free(cfg);
    ok(starts_with(load_error("[users]\nalice = pool_size=0\n"),
                   "test.ini:2: [users] alice: pool_size: invalid value '0'"),
       "a user's pool_size of 0 is refused");
}

static void test_fallback_database(void)
{
    struct config *cfg = load("[databases]\n* = host=10.0.0.5 port=6000\nfixed = dbname=other\n"
                              "[databases]\n");
    const struct config_database *fallback;
    struct config_database made;

    ok(cfg != NULL, "a \"*\" line loads (%s)", err);
    if (cfg == NULL)
        return;
    fallback = config_fallback_database(cfg);
    ok(fallback != NULL && fallback->dbname == NULL,
       "\"*\" is the fallback, with no dbname of its own");
    ok(config_database_copy_as(&made, fallback, "sales") == 0, "the fallback is made concrete");
    is_str(made.name, "sales", "the made database has the name asked for");
    is_str(made.dbname, "sales", "and it as the backend database");
    is_str(made.host, "10.0.0.5", "the fallback's host");
    is_int(made.port, 6000, "the fallback's port");
    config_database_clear(&made);
    ok(config_database_copy_as(&made, config_find_database(cfg, "fixed"), "x") == 0 &&
           strcmp(made.dbname, "other") == 0,
       "a dbname given on the line is kept");
    config_database_clear(&made);
    config_free(cfg);
    cfg = load("[databases]\nfixed = port=5432\n");
    ok(cfg != NULL && config_fallback_database(cfg) == NULL, "no \"*\" line: no fallback");
    config_free(cfg);
}

/* Connection limits: global defaults, and per database and per user overrides, as PgBouncer. */
static void test_connection_limits(void)
{
    struct config *cfg = load("[sluice]\n");
    ok(cfg != NULL, "an empty [sluice] loads (%s)", err);
    if (cfg == NULL)
        return;
    is_int(cfg->max_user_connections, 0, "max_user_connections defaults to unlimited");
    is_int(cfg->max_db_client_connections, 0, "max_db_client_connections defaults to unlimited");
    is_int(cfg->max_user_client_connections, 0, "max_user_client_connections defaults to unlimited");
    is_int(cfg->reserve_pool_size, 0, "reserve_pool_size defaults to 0");
    ok(cfg->reserve_pool_timeout == 5, "reserve_pool_timeout defaults to 5 s");
    ok(cfg->query_timeout == 0, "query_timeout defaults to off");
    is_int(config_effective_max_db_connections(cfg, NULL), 0, "no database limit by default");
    config_free(cfg);

    cfg = load("[sluice]\nmax_db_connections = 10\nmax_user_connections = 4\n"
               "max_db_client_connections = 50\nmax_user_client_connections = 7\n"
               "reserve_pool_size = 2\nreserve_pool_timeout = 0.5\nquery_timeout = 30\n"
               "[databases]\nown = max_db_connections=3 reserve_pool=1 max_db_client_connections=9\n"
               "newer = reserve_pool_size=4\nplain = host=db1\n"
               "[users]\nalice = max_user_connections=2 max_user_client_connections=1\n");
    ok(cfg != NULL, "every limit loads (%s)", err);
    if (cfg == NULL)
        return;
    const struct config_database *own = config_find_database(cfg, "own");
    const struct config_database *newer = config_find_database(cfg, "newer");
    const struct config_database *plain = config_find_database(cfg, "plain");
    const struct config_user *alice = config_find_user(cfg, "alice");
    ok(cfg->reserve_pool_timeout == 0.5 && cfg->query_timeout == 30, "timeouts are read");
    is_int(config_effective_max_db_connections(cfg, own), 3, "a database's own max_db_connections");
    is_int(config_effective_max_db_connections(cfg, plain), 10, "else the global max_db_connections");
    is_int(config_effective_max_user_connections(cfg, alice), 2, "a user's own max_user_connections");
    is_int(config_effective_max_user_connections(cfg, NULL), 4, "else the global max_user_connections");
    is_int(config_effective_max_db_client_connections(cfg, own), 9,
           "a database's own max_db_client_connections");
    is_int(config_effective_max_db_client_connections(cfg, plain), 50,
           "else the global max_db_client_connections");
    is_int(config_effective_max_user_client_connections(cfg, alice), 1,
           "a user's own max_user_client_connections");
    is_int(config_effective_max_user_client_connections(cfg, NULL), 7,
           "else the global max_user_client_connections");
    is_int(config_effective_reserve_pool(cfg, own), 1, "reserve_pool is read");
    is_int(config_effective_reserve_pool(cfg, newer), 4, "reserve_pool_size is read as its synonym");
    is_int(config_effective_reserve_pool(cfg, plain), 2, "else the global reserve_pool_size");
    config_free(cfg);

    ok(starts_with(load_error("[databases]\nx = reserve_pool=-1\n"),
                   "test.ini:2: [databases] x: reserve_pool: invalid value '-1'"),
       "a negative reserve_pool is refused");
    ok(starts_with(load_error("[sluice]\npkt_buf = 16777216\n"), "test.ini:2: pkt_buf:"),
       "a pkt_buf above 1 MB is refused");
    ok(starts_with(load_error("[sluice]\npkt_buf = 100\n"), "test.ini:2: pkt_buf:"),
       "a pkt_buf below 512 is refused");
    ok(starts_with(load_error("[sluice]\nworkers = 0\n"), "test.ini:2: workers:"),
       "workers = 0 is refused (auto is spelled auto)");
    ok(starts_with(load_error("[sluice]\nworkers = 65\n"), "test.ini:2: workers:"),
       "more than 64 workers are refused");
    ok(starts_with(load_error("[sluice]\nworkers = many\n"), "test.ini:2: workers:"),
       "a word other than auto is refused");
}

/* ---- helpers ------------------------------------------------------------------------- */

static void test_helpers(void)
{
    struct config *cfg = load("[sluice]\npool_mode = session\ndefault_pool_size = 9\n"
                              "[databases]\nplain =\ntx = pool_mode=transaction pool_size=4\n"
                              "[users]\nsess = pool_mode=session auth_type=trust\nnobody =\n");
    const struct config_database *plain, *tx;
    const struct config_user *sess, *nobody;

    ok(cfg != NULL, "the helper fixture loads (%s)", err);
    if (cfg == NULL)
        return;
    plain = config_find_database(cfg, "plain");
    tx = config_find_database(cfg, "tx");
    sess = config_find_user(cfg, "sess");
    nobody = config_find_user(cfg, "nobody");
    ok(config_find_database(cfg, "Plain") == NULL, "database lookup is case-sensitive");
    ok(config_find_database(cfg, "pla") == NULL, "database lookup wants the whole name");
    is_int(config_effective_pool_mode(cfg, plain, NULL), POOL_MODE_SESSION,
           "with no overrides the global pool_mode applies");
    is_int(config_effective_pool_mode(cfg, tx, NULL), POOL_MODE_TRANSACTION,
           "a database's pool_mode overrides the global one");
    is_int(config_effective_pool_mode(cfg, tx, nobody), POOL_MODE_TRANSACTION,
           "a user without pool_mode leaves the database's");
    is_int(config_effective_pool_mode(cfg, tx, sess), POOL_MODE_SESSION,
           "a user's pool_mode overrides the database's");
    is_int(config_effective_pool_mode(cfg, NULL, NULL), POOL_MODE_SESSION,
           "no database and no user: the global pool_mode");
    is_int(config_effective_pool_size(cfg, plain), 9, "a database without pool_size gets the default");
    is_int(config_effective_pool_size(cfg, tx), 4, "a database's pool_size overrides the default");
    is_int(config_effective_auth_type(cfg, sess), AUTH_TYPE_TRUST, "a user's auth_type overrides");
    is_int(config_effective_auth_type(cfg, nobody), AUTH_TYPE_MD5,
           "a user without auth_type gets the global one");
    is_int(config_effective_auth_type(cfg, NULL), AUTH_TYPE_MD5, "no user: the global auth_type");
    config_free(cfg);

    ok(config_list_contains("alice, bob ,carol", "bob"), "a list contains an item with spaces around it");
    ok(config_list_contains("alice, bob ,carol", "carol"), "a list contains its last item");
    ok(config_list_contains("alice", "alice"), "a one-item list contains its item");
    ok(!config_list_contains("alice, bob", "ali"), "a list does not contain part of an item");
    ok(!config_list_contains("alice, bob", "alice, bob"), "a list does not contain itself");
    ok(!config_list_contains("alice,,bob", ""), "an empty name is in no list");
    ok(!config_list_contains(NULL, "alice"), "no list contains nothing");
    ok(!config_list_contains("", "alice"), "an empty list contains nothing");

    is_str(config_pool_mode_name(POOL_MODE_TRANSACTION), "transaction", "pool mode names");
    is_str(config_pool_mode_name(POOL_MODE_SESSION), "session", "pool mode names (session)");
    is_str(config_auth_type_name(AUTH_TYPE_SCRAM), "scram-sha-256", "auth type names");
    is_str(config_auth_type_name(AUTH_TYPE_TOKEN), "token", "auth type names (token)");
}

/* ---- files ---------------------------------------------------------------------------- */

static void test_files(void)
{
    char path[] = "/tmp/sluice-test-config-XXXXXX";
    int fd = mkstemp(path);
    struct config *cfg = NULL;
    static const char text[] = "[sluice]\nlisten_port = 7400\n[databases]\napp = host=db\n";
    static const char with_nul[] = "[sluice]\nlisten_port = 1\0\n";

    ok(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1),
       "a config file can be written for the test");
    close(fd);
    ok(config_load(path, &cfg, err, sizeof err) == 0 && cfg != NULL && cfg->listen_port == 7400 &&
           cfg->n_databases == 1,
       "config_load reads a file (%s)", err);
    is_str(cfg != NULL ? cfg->path : NULL, path, "the loaded config remembers its path");
    config_free(cfg);

    fd = open(path, O_WRONLY | O_TRUNC);
    ok(fd >= 0 && write(fd, with_nul, sizeof with_nul - 1) == (ssize_t)(sizeof with_nul - 1),
       "a config file holding a NUL byte can be written for the test");
    close(fd);
    cfg = NULL;
    ok(config_load(path, &cfg, err, sizeof err) != 0 && cfg == NULL, "a file holding a NUL byte is refused");
    ok(strstr(err, ":2: holds a NUL byte") != NULL, "the NUL byte's line is named (%s)", err);
    unlink(path);

    ok(config_load("/nonexistent/sluice.ini", &cfg, err, sizeof err) != 0 && cfg == NULL,
       "a missing file is an error");
    ok(starts_with(err, "/nonexistent/sluice.ini: cannot open: "), "a missing file is named (%s)", err);
}

/* Writes text to path + ".new" and renames it over path, as a credentials helper does; returns
 * the new file's inode, or 0. */
static ino_t replace_file(const char *path, const char *text)
{
    char aside[64];
    struct stat st;
    snprintf(aside, sizeof aside, "%s.new", path);
    int fd = open(aside, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    bool written = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    if (fd >= 0)
        close(fd);
    if (!written || stat(aside, &st) != 0 || rename(aside, path) != 0)
        return 0;
    return st.st_ino;
}

/* config_read_file_stat: the identity is the file the text came from, replaced or not. */
static void test_read_file_stat(void)
{
    char path[] = "/tmp/sluice-test-read-XXXXXX";
    int fd = mkstemp(path);
    struct stat st;
    size_t len = 0;
    if (fd >= 0)
        close(fd);
    ino_t first = replace_file(path, "first\n");
    ino_t second = 0;
    char *text = config_read_file_stat(path, &len, &st, err, sizeof err);
    ok(first != 0 && text != NULL && strcmp(text, "first\n") == 0 && len == 6,
       "config_read_file_stat reads the file (%s)", err);
    ok(text != NULL && st.st_ino == first && st.st_size == 6,
       "its stat is the file read");
    free(text);
    /* The old file stays open, so the new one cannot be given its inode number. */
    FILE *held = fopen(path, "rb");
    second = replace_file(path, "second, longer\n");
    text = config_read_file_stat(path, &len, &st, err, sizeof err);
    ok(second != 0 && second != first && text != NULL && strcmp(text, "second, longer\n") == 0,
       "after a rename over the path, the new file is read (%s)", err);
    ok(text != NULL && st.st_ino == second && st.st_size == (off_t)strlen("second, longer\n"),
       "and its stat is the new file's, not the old one's");
    free(text);
    if (held)
        fclose(held);
    ok(config_read_file_stat("/nonexistent/credentials", &len, &st, err, sizeof err) == NULL &&
           starts_with(err, "/nonexistent/credentials: cannot open: "),
       "a missing file is an error (%s)", err);
    unlink(path);
}

/* ---- the sample config ---------------------------------------------------------------- */

/* Room for the names conf/sluice.ini documents in [sluice]. */
#define MAX_DOCUMENTED_SETTINGS 256
#define MAX_SETTING_NAME 64

struct documented_settings {
    char names[MAX_DOCUMENTED_SETTINGS][MAX_SETTING_NAME];
    size_t n;
};

static bool is_documented(const struct documented_settings *doc, const char *name)
{
    for (size_t k = 0; k < doc->n; k++)
        if (strcmp(doc->names[k], name) == 0)
            return true;
    return false;
}

/*
 * The settings the sample documents: the names of its commented-out "name = value" lines (';'
 * then a lower-case letter) in the [sluice] section, in order, each once. Prose comments start
 * "; " and are not names.
 */
static void read_documented_settings(const char *text, struct documented_settings *doc)
{
    bool in_sluice = false;

    doc->n = 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        size_t name_len = 0;

        if (line[0] == '[')
            in_sluice = strncmp(line, "[sluice]", 8) == 0;
        else if (in_sluice && line[0] == ';' && line[1] >= 'a' && line[1] <= 'z') {
            while (name_len < len - 1 && (line[1 + name_len] == '_' ||
                                          (line[1 + name_len] >= 'a' && line[1 + name_len] <= 'z') ||
                                          (line[1 + name_len] >= '0' && line[1 + name_len] <= '9')))
                name_len++;
        }
        if (name_len > 0 && name_len < MAX_SETTING_NAME && strncmp(line + 1 + name_len, " = ", 3) == 0 &&
            doc->n < MAX_DOCUMENTED_SETTINGS) {
            memcpy(doc->names[doc->n], line + 1, name_len);
            doc->names[doc->n][name_len] = '\0';
            if (!is_documented(doc, doc->names[doc->n]))
                doc->n++;
        }
        line += end != NULL ? len + 1 : len;
    }
}

/*
 * conf/sluice.ini documents exactly the settings config.c knows, in the table's order (SHOW CONFIG
 * lists them in the documented order): none documented but unknown, none known but undocumented.
 */
static void test_sample_documents_exactly_the_known_settings(const char *text)
{
    static struct documented_settings doc;
    size_t unknown = 0, undocumented = 0, i;
    bool in_order;

    read_documented_settings(text, &doc);
    ok(doc.n > 0, "the sample documents settings in [sluice] (%zu found)", doc.n);
    for (size_t k = 0; k < doc.n; k++) {
        if (!config_find_setting(doc.names[k], &i)) {
            unknown++;
            ok(0, "%s, documented in conf/sluice.ini, is a setting config.c knows", doc.names[k]);
        }
    }
    is_int(unknown, 0, "every setting conf/sluice.ini documents is known to config.c");
    for (i = 0; i < config_setting_count(); i++) {
        if (!is_documented(&doc, config_setting_name(i))) {
            undocumented++;
            ok(0, "%s, known to config.c, is documented in conf/sluice.ini", config_setting_name(i));
        }
    }
    is_int(undocumented, 0, "every setting config.c knows is documented in conf/sluice.ini");
    in_order = unknown == 0 && undocumented == 0 && doc.n == config_setting_count();
    for (size_t k = 0; in_order && k < doc.n; k++)
        in_order = strcmp(config_setting_name(k), doc.names[k]) == 0;
    ok(in_order, "config.c lists the settings in the order conf/sluice.ini documents them");
}

/* The sample with each commented-out "name = value" line (';' then a letter) made live. */
static char *uncommented(const char *text)
{
    char *out = malloc(strlen(text) + 1), *o = out;

    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) + 1 : strlen(line);

        if (line[0] == ';' && line[1] >= 'a' && line[1] <= 'z') {
            line++;
            len--;
        }
        memcpy(o, line, len);
        o += len;
        line += len;
    }
    *o = '\0';
    return out;
}

static void test_sample_config(void)
{
    const char *srcdir = getenv("SLUICE_SRCDIR");
    char path[4096];
    char *text, *live;
    struct config *sample = NULL, *defaults, *every;

    snprintf(path, sizeof path, "%s/conf/sluice.ini", srcdir != NULL ? srcdir : ".");
    text = config_read_file(path, NULL, err, sizeof err);
    ok(text != NULL, "the sample config can be read (%s)", err);
    if (text == NULL)
        return;
    ok(config_load(path, &sample, err, sizeof err) == 0, "the sample config loads (%s)", err);
    ok(sample != NULL && config_find_database(sample, "app") != NULL,
       "the sample config has a working [databases] line");
    config_free(sample);

    test_sample_documents_exactly_the_known_settings(text);

    live = uncommented(text);
    every = load(live);
    ok(every != NULL, "the sample config still loads with every setting line uncommented (%s)",
       err);
    defaults = load("");
    if (every != NULL && defaults != NULL) {
        ok(every->listen_port == defaults->listen_port &&
               every->unix_socket_mode == defaults->unix_socket_mode &&
               every->so_reuseport == defaults->so_reuseport &&
               every->io_uring == defaults->io_uring &&
               every->pool_mode == defaults->pool_mode &&
               every->default_pool_size == defaults->default_pool_size &&
               every->min_pool_size == defaults->min_pool_size &&
               every->max_client_conn == defaults->max_client_conn &&
               every->max_db_connections == defaults->max_db_connections &&
               every->auth_type == defaults->auth_type &&
               every->verbose == defaults->verbose &&
               every->max_packet_size == defaults->max_packet_size &&
               every->pkt_buf == defaults->pkt_buf &&
               every->tcp_keepalive == defaults->tcp_keepalive &&
               every->metrics_port == defaults->metrics_port &&
               every->max_prepared_statements == defaults->max_prepared_statements,
           "every integer default the sample shows is the real default");
        ok(every->query_wait_timeout == defaults->query_wait_timeout &&
               every->client_idle_timeout == defaults->client_idle_timeout &&
               every->client_login_timeout == defaults->client_login_timeout &&
               every->autodb_idle_timeout == defaults->autodb_idle_timeout &&
               every->idle_transaction_timeout == defaults->idle_transaction_timeout &&
               every->server_idle_timeout == defaults->server_idle_timeout &&
               every->server_lifetime == defaults->server_lifetime &&
               every->server_connect_timeout == defaults->server_connect_timeout &&
               every->server_login_retry == defaults->server_login_retry &&
               every->shutdown_timeout == defaults->shutdown_timeout &&
               every->server_check_delay == defaults->server_check_delay &&
               every->stats_period == defaults->stats_period &&
               every->auth_token_clock_skew == defaults->auth_token_clock_skew,
           "every timeout default the sample shows is the real default");
        ok(every->server_reset_query_always == defaults->server_reset_query_always &&
               every->log_connections == defaults->log_connections &&
               every->log_disconnections == defaults->log_disconnections &&
               every->log_pooler_errors == defaults->log_pooler_errors &&
               every->syslog == defaults->syslog &&
               every->auth_token_allow_unix_socket == defaults->auth_token_allow_unix_socket,
           "every boolean default the sample shows is the real default");
        ok(strcmp(every->listen_addr, defaults->listen_addr) == 0 &&
               strcmp(every->unix_socket_dir, defaults->unix_socket_dir) == 0 &&
               strcmp(every->server_reset_query, defaults->server_reset_query) == 0 &&
               strcmp(every->server_check_query, defaults->server_check_query) == 0 &&
               strcmp(every->syslog_ident, defaults->syslog_ident) == 0 &&
               strcmp(every->syslog_facility, defaults->syslog_facility) == 0 &&
               strcmp(every->client_tls_sslmode, defaults->client_tls_sslmode) == 0 &&
               strcmp(every->client_tls_protocols, defaults->client_tls_protocols) == 0 &&
               strcmp(every->client_tls_ciphers, defaults->client_tls_ciphers) == 0 &&
               strcmp(every->server_tls_sslmode, defaults->server_tls_sslmode) == 0 &&
               strcmp(every->server_tls_protocols, defaults->server_tls_protocols) == 0 &&
               strcmp(every->server_tls_ciphers, defaults->server_tls_ciphers) == 0 &&
               strcmp(every->pinning, defaults->pinning) == 0,
           "every string default the sample shows is the real default");
        ok(config_find_database(every, "reports") != NULL &&
               strcmp(config_find_database(every, "reports")->password, "s3cret; pass#1") == 0,
           "the sample's commented database example loads, quoted password whole");
        ok(config_find_user(every, "reporter") != NULL, "the sample's [users] example loads");
    }
    config_free(every);
    config_free(defaults);
    free(live);
    free(text);
}

/* ---- one setting at a time (SHOW CONFIG, SET) ----------------------------------------- */

static const char *formatted(const struct config *cfg, const char *name)
{
    static char buf[256];
    size_t i;

    if (!config_find_setting(name, &i))
        return "(no such setting)";
    config_format_setting(cfg, i, buf, sizeof buf);
    return buf;
}

static const char *formatted_default(const char *name)
{
    static char buf[256];
    size_t i;

    if (!config_find_setting(name, &i))
        return "(no such setting)";
    config_format_setting_default(i, buf, sizeof buf);
    return buf;
}

static void test_settings_are_listed_and_found(void)
{
    size_t i = 0;

    ok(config_setting_count() > 0 && config_setting_name(config_setting_count() - 1) != NULL,
       "the settings are listed one by one");
    ok(config_setting_name(config_setting_count()) == NULL, "no name past the last setting");
    ok(config_find_setting("Verbose", &i) && strcmp(config_setting_name(i), "verbose") == 0,
       "a setting is found by name whatever its case");
    ok(!config_find_setting("no_such_setting", &i), "an unknown name is not found");
}

static void test_settings_are_formatted(void)
{
    struct config *cfg = load("[sluice]\n");

    ok(cfg != NULL, "formatting: the defaults load (%s)", err);
    if (cfg == NULL)
        return;
    cfg->unix_socket_mode = 0700;
    cfg->so_reuseport = true;
    cfg->log_connections = false;
    cfg->query_wait_timeout = 0.5;
    cfg->pool_mode = POOL_MODE_TRANSACTION;
    cfg->auth_type = AUTH_TYPE_SCRAM;
    is_str(formatted(cfg, "unix_socket_mode"), "0700", "a file mode is shown in octal");
    is_str(formatted(cfg, "so_reuseport"), "1", "a true boolean is shown as 1");
    is_str(formatted(cfg, "log_connections"), "0", "a false boolean is shown as 0");
    is_str(formatted(cfg, "query_wait_timeout"), "0.5", "seconds are shown as a plain number");
    is_str(formatted(cfg, "pool_mode"), "transaction", "a pool mode is shown by name");
    is_str(formatted(cfg, "auth_type"), "scram-sha-256", "an auth type is shown by name");
    is_str(formatted(cfg, "listen_port"), "6432", "an integer is shown in decimal");
    is_str(formatted(cfg, "auth_file"), "", "a string not set is shown empty");
    is_str(formatted(cfg, "server_reset_query"), "DISCARD ALL", "a string is shown as it is");
    config_free(cfg);

    is_str(formatted_default("unix_socket_mode"), "0777", "default: file mode in octal");
    is_str(formatted_default("so_reuseport"), "0", "default: boolean as 0");
    is_str(formatted_default("workers"), "auto", "default: workers shown as auto");
    is_str(formatted_default("log_connections"), "1", "default: boolean as 1");
    is_str(formatted_default("pool_mode"), "session", "default: pool mode by name");
    is_str(formatted_default("auth_type"), "md5", "default: auth type by name");
    is_str(formatted_default("max_packet_size"), "2147483647", "default: integer");
    is_str(formatted_default("query_wait_timeout"), "120", "default: seconds");
    is_str(formatted_default("auth_file"), "", "default: a string with no default is empty");
    is_str(formatted_default("client_tls_protocols"), "secure", "default: a string");
}

static void test_setting_is_changed_as_the_file_would(void)
{
    struct config *cfg = load("[sluice]\n");
    char message[256];
    size_t verbose, reset_query, port;

    ok(cfg != NULL, "set: the defaults load (%s)", err);
    if (cfg == NULL)
        return;
    config_find_setting("verbose", &verbose);
    config_find_setting("server_reset_query", &reset_query);
    config_find_setting("listen_port", &port);

    is_int(config_set_setting(cfg, verbose, "3", message, sizeof message), CONFIG_SET_DONE,
           "set: a valid value is taken");
    is_int(cfg->verbose, 3, "set: the configuration holds the new value");
    is_int(config_set_setting(cfg, verbose, " 2 ", message, sizeof message), CONFIG_SET_DONE,
           "set: spaces around the value are dropped, as in the file");
    is_int(cfg->verbose, 2, "set: the trimmed value is taken");

    is_int(config_set_setting(cfg, verbose, "10", message, sizeof message), CONFIG_SET_INVALID,
           "set: a value the file refuses is refused");
    is_str(message, "verbose: invalid value '10' (expected an integer 0-9)",
           "set: the refusal says why, without a file and line");
    is_int(cfg->verbose, 2, "set: a refused value leaves the setting as it was");

    is_int(config_set_setting(cfg, port, "1; x", message, sizeof message), CONFIG_SET_INVALID,
           "set: a value holding ';' is refused");
    is_str(message, "listen_port: a value may not hold a line break, ';' or '#'",
           "set: the refusal names the setting and the character");
    is_int(config_set_setting(cfg, port, "1\nverbose = 9", message, sizeof message),
           CONFIG_SET_INVALID, "set: a value holding a line break is refused");
    is_int(cfg->verbose, 2, "set: a line break smuggles no second setting in");

    is_int(config_set_setting(cfg, reset_query, "RESET ALL", message, sizeof message),
           CONFIG_SET_DONE, "set: a string setting is taken");
    is_str(cfg->server_reset_query, "RESET ALL", "set: the configuration holds the new string");
    config_free(cfg);
}

static void test_set_checks_the_running_config(void)
{
    struct config *cfg = load("[sluice]\n");
    struct config *token_ready = load("[sluice]\nauth_token_keys = /k\nauth_token_region = r\n");
    char message[256];
    size_t auth_type;

    ok(cfg != NULL && token_ready != NULL, "set: configurations load (%s)", err);
    if (cfg == NULL || token_ready == NULL)
        return;
    config_find_setting("auth_type", &auth_type);
    is_int(config_set_setting(cfg, auth_type, "token", message, sizeof message), CONFIG_SET_INVALID,
           "set: auth_type token without the token settings is refused");
    is_str(message, "auth_type: 'token' needs auth_token_keys and auth_token_region",
           "set: the refusal says what is missing");
    is_int(cfg->auth_type, AUTH_TYPE_MD5, "set: auth_type unchanged after the refusal");
    is_int(config_set_setting(token_ready, auth_type, "token", message, sizeof message),
           CONFIG_SET_DONE, "set: auth_type token with the token settings is taken");
    is_int(config_set_setting(cfg, auth_type, "trust", message, sizeof message), CONFIG_SET_DONE,
           "set: auth_type trust is taken");
    is_int(cfg->auth_type, AUTH_TYPE_TRUST, "set: auth_type holds the new value");
    config_free(cfg);
    config_free(token_ready);
}

static void test_auth_query_settings(void)
{
    struct config *cfg = load("[sluice]\n"
                              "auth_user = lookup\n"
                              "auth_dbname = postgres\n"
                              "auth_query_cache_ttl = 5\n"
                              "[databases]\n"
                              "plain = dbname=app_prod\n"
                              "own = dbname=other auth_user=own_lookup auth_dbname=authdb "
                              "auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename = $1'\n");
    const struct config_database *plain, *own;
    struct config *defaults = load("[databases]\napp = dbname=app_prod\n");

    ok(cfg != NULL && defaults != NULL, "auth_query settings load (%s)", err);
    if (cfg == NULL || defaults == NULL) {
        config_free(cfg);
        config_free(defaults);
        return;
    }
    plain = config_find_database(cfg, "plain");
    own = config_find_database(cfg, "own");
    is_str(config_effective_auth_user(defaults, config_find_database(defaults, "app")), NULL,
           "auth_user defaults to none: no look-ups");
    ok(strstr(defaults->auth_query, "pg_authid") != NULL && strstr(defaults->auth_query, "rolcanlogin") &&
           strstr(defaults->auth_query, "rolvaliduntil"),
       "the default auth_query reads pg_authid and checks LOGIN and expiry");
    ok(defaults->auth_query_cache_ttl == 60, "auth_query_cache_ttl defaults to 60 s");
    is_str(config_effective_auth_dbname(defaults, config_find_database(defaults, "app")), "app_prod",
           "auth_dbname defaults to the database's dbname");
    is_str(config_effective_auth_user(cfg, plain), "lookup", "a database without its own auth_user uses the global one");
    is_str(config_effective_auth_dbname(cfg, plain), "postgres", "and the global auth_dbname");
    ok(cfg->auth_query_cache_ttl == 5, "auth_query_cache_ttl is read");
    is_str(config_effective_auth_user(cfg, own), "own_lookup", "a database's auth_user wins");
    is_str(config_effective_auth_dbname(cfg, own), "authdb", "a database's auth_dbname wins");
    is_str(config_effective_auth_query(cfg, own), "SELECT usename, passwd FROM pg_shadow WHERE usename = $1",
           "a database's auth_query wins");
    config_free(cfg);
    config_free(defaults);
}

int main(void)
{
    test_defaults();
    test_every_setting_is_read();
    test_booleans();
    test_integers();
    test_file_modes();
    test_seconds();
    test_pool_modes_and_auth_types();
    test_choices();
    test_strings();
    test_file_structure();
    test_inline_comments();
    test_cross_checks();
    test_server_auth_token();
    test_peers();
    test_disagreement_with_inih_fails();
    test_long_lines();
    test_database_defaults();
    test_database_keywords();
    test_database_errors();
    test_auth_query_settings();
    test_host_lists();
    test_users();
    test_user_pool_size();
    test_fallback_database();
    test_connection_limits();
    test_helpers();
    test_files();
    test_read_file_stat();
    test_sample_config();
    test_settings_are_listed_and_found();
    test_settings_are_formatted();
    test_setting_is_changed_as_the_file_would();
    test_set_checks_the_running_config();
    return tap_done();
}
