/*
 * test_params.c: session parameters as a specification: parameter sets, which names are session
 * settings and which reports are tracked, libpq "options" parsing, and the SQL that syncs a
 * server to a client.
 */
#include <stdlib.h>

#include "params.h"
#include "tap.h"

#define ERR_LEN 256

/* ---- param_set ---- */

static void test_put_get(void)
{
    struct param_set set;

    param_set_init(&set);
    is_int(param_set_put(&set, "TimeZone", "UTC"), 0, "set: put succeeds");
    is_str(param_set_get(&set, "TimeZone"), "UTC", "set: get returns what was put");
    is_str(param_set_get(&set, "timezone"), "UTC", "set: get ignores case, as GUC names do");
    is_str(param_set_get(&set, "TIMEZONE"), "UTC", "set: get ignores case (upper)");
    is_str(param_set_get(&set, "Time"), NULL, "set: a prefix is not a match");
    is_str(param_set_get(&set, "TimeZones"), NULL, "set: a longer name is not a match");
    is_str(param_set_get(&set, "DateStyle"), NULL, "set: absent name is NULL");

    is_int(param_set_put(&set, "timezone", "Europe/Paris"), 0,
           "set: put of the same name succeeds");
    is_int(set.n, 1, "set: same name in another case replaces instead of adding");
    is_str(param_set_get(&set, "TimeZone"), "Europe/Paris", "set: the value is replaced");
    is_str(set.entries[0].name, "TimeZone", "set: the name keeps its first spelling");

    is_int(param_set_put(&set, "x", ""), 0, "set: an empty value is stored");
    is_str(param_set_get(&set, "x"), "", "set: empty value is returned as empty, not NULL");
    is_int(param_set_put(&set, NULL, "v"), -1, "set: a NULL name is refused");
    is_int(param_set_put(&set, "y", NULL), -1, "set: a NULL value is refused");
    is_str(param_set_get(NULL, "x"), NULL, "set: get on a NULL set is NULL");
    param_set_free(&set);
    ok(set.entries == NULL && set.n == 0 && set.cap == 0, "set: free leaves an empty set");
}

static void test_put_copies(void)
{
    struct param_set set;
    char name[16] = "search_path", value[16] = "public";

    param_set_init(&set);
    param_set_put(&set, name, value);
    strcpy(name, "zzz");
    strcpy(value, "changed");
    is_str(param_set_get(&set, "search_path"), "public",
           "set: name and value are copied, not borrowed");
    param_set_free(&set);
}

static void test_order_and_growth(void)
{
    struct param_set set;
    char name[32], value[32];
    int all_found = 1;

    param_set_init(&set);
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        if (param_set_put(&set, name, value) != 0)
            all_found = 0;
    }
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "P%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        if (param_set_get(&set, name) == NULL || strcmp(param_set_get(&set, name), value) != 0)
            all_found = 0;
    }
    ok(all_found && set.n == 200, "set: grows to 200 entries and finds each one");
    is_str(set.entries[0].name, "p0", "set: entries keep insertion order (first)");
    is_str(set.entries[199].name, "p199", "set: entries keep insertion order (last)");
    param_set_free(&set);
}

static void test_remove(void)
{
    struct param_set set;

    param_set_init(&set);
    param_set_put(&set, "a", "1");
    param_set_put(&set, "b", "2");
    param_set_put(&set, "c", "3");
    ok(param_set_remove(&set, "B"), "remove: an existing name (any case) is removed");
    is_int(set.n, 2, "remove: the set shrinks by one");
    is_str(param_set_get(&set, "b"), NULL, "remove: the name is gone");
    ok(strcmp(set.entries[0].name, "a") == 0 && strcmp(set.entries[1].name, "c") == 0,
       "remove: the others keep their order");
    ok(!param_set_remove(&set, "b"), "remove: removing an absent name returns false");
    ok(param_set_remove(&set, "c"), "remove: the last entry can be removed");
    ok(param_set_remove(&set, "a"), "remove: the only entry can be removed");
    is_int(set.n, 0, "remove: the set is empty");
    param_set_free(&set);
}

static void test_clear_and_copy(void)
{
    struct param_set src, dst;

    param_set_init(&src);
    param_set_init(&dst);
    param_set_put(&src, "a", "1");
    param_set_put(&src, "b", "2");
    param_set_put(&dst, "old", "x");

    is_int(param_set_copy(&dst, &src), 0, "copy: succeeds");
    is_int(dst.n, 2, "copy: the destination holds exactly the source's entries");
    is_str(param_set_get(&dst, "old"), NULL, "copy: what the destination held before is gone");
    is_str(dst.entries[1].name, "b", "copy: order is kept");
    param_set_put(&src, "a", "changed");
    is_str(param_set_get(&dst, "a"), "1", "copy: is deep (changing the source leaves it)");
    is_int(param_set_copy(&dst, &dst), 0, "copy: onto itself is harmless");
    is_int(dst.n, 2, "copy: onto itself keeps the entries");

    param_set_clear(&dst);
    is_int(dst.n, 0, "clear: empties the set");
    is_int(param_set_put(&dst, "c", "3"), 0, "clear: the set can be used again");
    param_set_free(&src);
    param_set_free(&dst);
}

/* A client's current settings share its startup ones' strings; changing one copies only it. */
static void test_share(void)
{
    struct param_set startup, current, copy;

    param_set_init(&startup);
    param_set_init(&current);
    param_set_init(&copy);
    param_set_put(&startup, "DateStyle", "ISO");
    param_set_put(&startup, "TimeZone", "UTC");
    param_set_put(&startup, "application_name", "app");
    param_set_put(&current, "old", "x");

    is_int(param_set_share(&current, &startup), 0, "share: succeeds");
    is_int(current.n, 3, "share: the set holds exactly the source's entries");
    is_str(param_set_get(&current, "old"), NULL, "share: what the set held before is gone");
    ok(current.entries[1].value == startup.entries[1].value, "share: the strings are not copied");
    is_str(current.entries[2].name, "application_name", "share: order is kept");

    is_int(param_set_put(&current, "TimeZone", "Europe/Paris"), 0, "share: a changed entry is set");
    is_str(param_set_get(&current, "TimeZone"), "Europe/Paris", "share: the set has the new value");
    is_str(param_set_get(&startup, "TimeZone"), "UTC", "share: the source keeps its own");
    ok(current.entries[1].name != startup.entries[1].name,
       "share: a changed entry owns its name too");
    ok(param_set_remove(&current, "DateStyle"), "share: a shared entry can be removed");
    is_str(param_set_get(&startup, "DateStyle"), "ISO", "share: removing it leaves the source's");
    is_int(param_set_copy(&copy, &current), 0, "share: a copy of a sharing set succeeds");
    ok(copy.entries[0].value != startup.entries[2].value, "share: a copy owns its strings");
    is_int(param_set_share(&current, &current), 0, "share: with itself is harmless");
    is_int(current.n, 2, "share: with itself keeps the entries");

    /* Freed in either order: the sharing set never frees what it shares. */
    param_set_free(&current);
    is_str(param_set_get(&startup, "application_name"), "app",
           "share: freeing the sharing set leaves the source whole");
    param_set_free(&startup);
    is_str(param_set_get(&copy, "application_name"), "app",
           "share: a copy outlives the source");
    param_set_free(&copy);
}

/* ---- name classes ---- */

static void test_session_setting(void)
{
    ok(!params_is_session_setting("user"), "session setting: user is not");
    ok(!params_is_session_setting("database"), "session setting: database is not");
    ok(!params_is_session_setting("replication"), "session setting: replication is not");
    ok(!params_is_session_setting("options"), "session setting: options is not");
    ok(!params_is_session_setting("USER"), "session setting: user in capitals is not either");
    ok(!params_is_session_setting("_pq_.report_parameters"),
       "session setting: _pq_ protocol options are not");
    ok(params_is_session_setting("application_name"), "session setting: application_name is");
    ok(params_is_session_setting("TimeZone"), "session setting: TimeZone is");
    ok(params_is_session_setting("work_mem"), "session setting: work_mem is");
    ok(params_is_session_setting("myapp.tenant"), "session setting: a custom myapp.x name is");
    ok(params_is_session_setting("username"), "session setting: only exact names are excluded");
    ok(!params_is_session_setting(""), "session setting: an empty name is not");
    ok(!params_is_session_setting(NULL), "session setting: NULL is not");
}

static void test_tracked(void)
{
    static const char *const tracked[] = {
        "client_encoding", "DateStyle", "TimeZone", "IntervalStyle",
        "standard_conforming_strings", "application_name", "search_path",
        "default_transaction_read_only",
    };
    static const char *const untracked[] = {
        "in_hot_standby", "is_superuser", "session_authorization", "server_version",
        "server_encoding", "integer_datetimes", "work_mem", "user",
    };

    for (size_t i = 0; i < sizeof(tracked) / sizeof(tracked[0]); i++)
        ok(params_is_tracked(tracked[i]), "tracked: %s is tracked", tracked[i]);
    for (size_t i = 0; i < sizeof(untracked) / sizeof(untracked[0]); i++)
        ok(!params_is_tracked(untracked[i]), "tracked: %s is not tracked", untracked[i]);
    ok(params_is_tracked("datestyle"), "tracked: names match in any case (datestyle)");
    ok(params_is_tracked("TIMEZONE"), "tracked: names match in any case (TIMEZONE)");
    ok(!params_is_tracked("TimeZon"), "tracked: a prefix does not match");
    ok(!params_is_tracked(NULL), "tracked: NULL is not tracked");
}

/* ---- options ---- */

static int parse_options(const char *options, struct param_set *set, char *err)
{
    param_set_clear(set);
    err[0] = '\0';
    return params_parse_options(options, set, err, ERR_LEN);
}

static void test_options_accepted(void)
{
    struct param_set set;
    char err[ERR_LEN];

    param_set_init(&set);
    is_int(parse_options("-c search_path=app,public", &set, err), 0,
           "options: -c name=value is accepted");
    is_str(param_set_get(&set, "search_path"), "app,public", "options: -c value is stored");

    is_int(parse_options("-cwork_mem=64MB", &set, err), 0, "options: -cname=value is accepted");
    is_str(param_set_get(&set, "work_mem"), "64MB", "options: -cname value is stored");

    is_int(parse_options("--statement-timeout=5s", &set, err), 0,
           "options: --name=value is accepted");
    is_str(param_set_get(&set, "statement_timeout"), "5s",
           "options: dashes in a -- name become underscores");
    is_str(set.entries[0].name, "statement_timeout", "options: the stored name has underscores");

    is_int(parse_options("-c lock-timeout=1s", &set, err), 0,
           "options: dashes in a -c name are accepted");
    is_str(param_set_get(&set, "lock_timeout"), "1s",
           "options: dashes in a -c name become underscores too, as in the backend");

    is_int(parse_options("--application_name=a-b-c", &set, err), 0,
           "options: dashes in a value are accepted");
    is_str(param_set_get(&set, "application_name"), "a-b-c",
           "options: dashes in a value are kept");

    is_int(parse_options("-c a=1 --b=2 -cc=3", &set, err), 0, "options: several switches");
    ok(set.n == 3 && strcmp(set.entries[0].name, "a") == 0 &&
           strcmp(set.entries[2].name, "c") == 0,
       "options: several switches are stored in order");

    is_int(parse_options("  \t-c\na=1 \r\n ", &set, err), 0,
           "options: any whitespace separates, leading and trailing is ignored");
    is_str(param_set_get(&set, "a"), "1", "options: value read across newline separators");

    is_int(parse_options("-c application_name=my\\ app", &set, err), 0,
           "options: an escaped space is accepted");
    is_str(param_set_get(&set, "application_name"), "my app",
           "options: backslash-space is a space inside the value");

    is_int(parse_options("-c a=x\\\\y", &set, err), 0, "options: an escaped backslash is accepted");
    is_str(param_set_get(&set, "a"), "x\\y", "options: double backslash is one backslash");

    is_int(parse_options("-c a=x\\y", &set, err), 0,
           "options: a backslash before another character is accepted");
    is_str(param_set_get(&set, "a"), "xy", "options: backslash takes the next character as is");

    is_int(parse_options("-c a=b\\", &set, err), 0, "options: a trailing backslash is accepted");
    is_str(param_set_get(&set, "a"), "b", "options: a trailing backslash is dropped");

    is_int(parse_options("-c a=b=c", &set, err), 0, "options: '=' inside a value is accepted");
    is_str(param_set_get(&set, "a"), "b=c", "options: the value is everything after the first '='");

    is_int(parse_options("-c search_path=", &set, err), 0, "options: an empty value is accepted");
    is_str(param_set_get(&set, "search_path"), "", "options: empty value is stored as empty");

    is_int(parse_options("-c a=1 -c A=2", &set, err), 0, "options: a repeated name is accepted");
    ok(set.n == 1 && strcmp(param_set_get(&set, "a"), "2") == 0,
       "options: the later value of a repeated name wins");

    is_int(parse_options("", &set, err), 0, "options: an empty string is accepted");
    is_int(set.n, 0, "options: an empty string sets nothing");
    is_int(parse_options("   ", &set, err), 0, "options: whitespace alone is accepted");
    is_int(set.n, 0, "options: whitespace alone sets nothing");
    is_int(params_parse_options(NULL, &set, err, ERR_LEN), 0, "options: NULL sets nothing");
    param_set_free(&set);
}

static void test_options_refused(void)
{
    struct param_set set;
    char err[ERR_LEN];

    param_set_init(&set);
    is_int(parse_options("-B 100", &set, err), -1, "options: another backend switch is refused");
    ok(strstr(err, "\"-B\"") != NULL, "options: the error names the bad switch (%s)", err);

    is_int(parse_options("-c a=1 -x", &set, err), -1,
           "options: a bad switch after good ones is refused");
    ok(strstr(err, "\"-x\"") != NULL, "options: the error names the later bad switch (%s)", err);

    is_int(parse_options("search_path=x", &set, err), -1, "options: a bare setting is refused");
    ok(strstr(err, "search_path=x") != NULL, "options: the error quotes it (%s)", err);

    is_int(parse_options("-c", &set, err), -1, "options: -c with nothing after it is refused");
    ok(strstr(err, "-c") != NULL && strstr(err, "value") != NULL,
       "options: the error says -c needs a value (%s)", err);

    is_int(parse_options("-c work_mem", &set, err), -1, "options: -c name without '=' is refused");
    ok(strstr(err, "work_mem") != NULL, "options: the error names the setting (%s)", err);

    is_int(parse_options("--work_mem", &set, err), -1, "options: --name without '=' is refused");
    ok(strstr(err, "--work_mem") != NULL, "options: the error shows the switch (%s)", err);

    is_int(parse_options("-c =x", &set, err), -1, "options: -c with an empty name is refused");
    is_int(parse_options("--=x", &set, err), -1, "options: -- with an empty name is refused");
    is_int(parse_options("--", &set, err), -1, "options: a bare -- is refused");

    is_int(params_parse_options("-x", &set, NULL, 0), -1,
           "options: a NULL error buffer is allowed");
    param_set_free(&set);
}

/* ---- sync ---- */

static size_t sync_sql(const struct param_set *client, const struct param_set *pool,
                       const struct param_set *server, char *out, size_t out_len)
{
    struct msgbuf sql;
    size_t n;

    msgbuf_init(&sql);
    n = params_build_sync(client, pool, server, &sql);
    snprintf(out, out_len, "%.*s", (int)sql.len, sql.data ? (const char *)sql.data : "");
    msgbuf_free(&sql);
    return n;
}

static void test_sync(void)
{
    struct param_set client, pool, server;
    char sql[1024];

    param_set_init(&client);
    param_set_init(&pool);
    param_set_init(&server);

    param_set_put(&pool, "TimeZone", "UTC");
    param_set_put(&pool, "DateStyle", "ISO, MDY");
    param_set_copy(&server, &pool);
    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 0,
           "sync: a server at the pool defaults needs nothing for a client that set nothing");
    is_str(sql, "", "sync: nothing to do writes nothing");

    param_set_put(&client, "timezone", "UTC");
    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 0,
           "sync: a client value equal to the server's (name in another case) needs nothing");

    param_set_put(&client, "timezone", "Europe/Paris");
    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 1,
           "sync: a client value that differs needs one statement");
    is_str(sql, "SET \"timezone\" = 'Europe/Paris'", "sync: the statement SETs the client value");

    param_set_put(&client, "timezone", "utc");
    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 1,
           "sync: values compare case-sensitively");

    param_set_clear(&client);
    param_set_put(&client, "application_name", "billing");
    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 1,
           "sync: a client value the server does not have at all is SET");
    is_str(sql, "SET \"application_name\" = 'billing'", "sync: SET of a new name");

    param_set_clear(&client);
    param_set_put(&server, "TimeZone", "Asia/Tokyo");
    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 1,
           "sync: a server value left by another client goes back to the pool default");
    is_str(sql, "SET \"TimeZone\" = 'UTC'", "sync: the default is SET back");

    param_set_copy(&server, &pool);
    param_set_put(&server, "search_path", "tenant_7");
    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 1,
           "sync: a server value with no pool default is RESET");
    is_str(sql, "RESET \"search_path\"", "sync: RESET statement");

    param_set_put(&client, "TimeZone", "UTC");
    param_set_put(&server, "TimeZone", "Asia/Tokyo");
    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 2,
           "sync: a SET and a RESET make two statements");
    is_str(sql, "SET \"TimeZone\" = 'UTC'; RESET \"search_path\"",
           "sync: statements are joined by \"; \" with no trailing semicolon");

    param_set_free(&client);
    param_set_free(&pool);
    param_set_free(&server);
}

static void test_sync_order(void)
{
    struct param_set client, pool, server;
    char sql[1024];

    param_set_init(&client);
    param_set_init(&pool);
    param_set_init(&server);
    param_set_put(&pool, "b_default", "0");
    param_set_put(&server, "z_reset", "1");
    param_set_put(&server, "b_default", "1");
    param_set_put(&client, "m_client", "1");
    param_set_put(&client, "a_client", "2");

    is_int(sync_sql(&client, &pool, &server, sql, sizeof(sql)), 4, "sync order: four statements");
    is_str(sql,
           "SET \"m_client\" = '1'; SET \"a_client\" = '2'; RESET \"z_reset\"; "
           "SET \"b_default\" = '0'",
           "sync order: client entries in order, then server entries in order");

    param_set_free(&client);
    param_set_free(&pool);
    param_set_free(&server);
}

static void test_sync_quoting_and_skips(void)
{
    struct param_set client, server;
    char sql[1024];
    struct msgbuf mb;

    param_set_init(&client);
    param_set_init(&server);
    param_set_put(&client, "search_path", "it's \\here");
    is_int(sync_sql(&client, NULL, NULL, sql, sizeof(sql)), 1,
           "sync quoting: NULL pool and server sets count as empty");
    is_str(sql, "SET \"search_path\" = E'it''s \\\\here'",
           "sync quoting: the value is a literal with quotes and backslashes doubled");

    param_set_clear(&client);
    param_set_put(&client, "my\"ext.x", "1");
    sync_sql(&client, NULL, NULL, sql, sizeof(sql));
    is_str(sql, "SET \"my\"\"ext.x\" = '1'", "sync quoting: the name is a quoted identifier");

    param_set_clear(&client);
    param_set_put(&client, "user", "mallory");
    param_set_put(&client, "database", "other");
    param_set_put(&client, "options", "-c a=b");
    param_set_put(&client, "_pq_.x", "1");
    is_int(sync_sql(&client, NULL, NULL, sql, sizeof(sql)), 0,
           "sync skips: user, database, options and _pq_ names are never SET");

    param_set_clear(&client);
    param_set_put(&server, "server_version", "16.2");
    param_set_put(&server, "is_superuser", "off");
    param_set_put(&server, "session_authorization", "alice");
    param_set_put(&server, "server_encoding", "UTF8");
    param_set_put(&server, "integer_datetimes", "on");
    param_set_put(&server, "in_hot_standby", "off");
    is_int(sync_sql(&client, NULL, &server, sql, sizeof(sql)), 0,
           "sync skips: read-only reported parameters are never RESET");

    is_int(sync_sql(NULL, NULL, NULL, sql, sizeof(sql)), 0, "sync: all sets NULL does nothing");

    param_set_clear(&server);
    param_set_put(&client, "a", "1");
    msgbuf_init(&mb);
    msgbuf_append(&mb, "BEGIN; ", 7);
    params_build_sync(&client, NULL, &server, &mb);
    msgbuf_append(&mb, "", 1);
    is_str((const char *)mb.data, "BEGIN; SET \"a\" = '1'",
           "sync: statements are appended after what the buffer already holds");
    msgbuf_free(&mb);

    param_set_free(&client);
    param_set_free(&server);
}

static void test_options_feed_sync(void)
{
    struct param_set client;
    char err[ERR_LEN], sql[1024];

    param_set_init(&client);
    params_parse_options("-c search_path=app\\ schema,public --statement-timeout=0", &client, err,
                         ERR_LEN);
    is_int(sync_sql(&client, NULL, NULL, sql, sizeof(sql)), 2,
           "options to sync: each -c setting becomes a statement");
    is_str(sql, "SET \"search_path\" = 'app schema,public'; SET \"statement_timeout\" = '0'",
           "options to sync: startup options are replayed as SET");
    param_set_free(&client);
}

/* ---- SQL-text values and what a client's statements change ---- */

static void test_sync_replays_sql_text_as_written(void)
{
    struct param_set client, server;
    char sql[1024];

    param_set_init(&client);
    param_set_init(&server);
    param_set_put_sql(&client, "search_path", "app, \"Other Schema\", public");
    param_set_put_sql(&client, "work_mem", "'64MB'");
    is_int(sync_sql(&client, NULL, &server, sql, sizeof(sql)), 2,
           "sql text: each value the server lacks is SET");
    is_str(sql, "SET \"search_path\" TO app, \"Other Schema\", public; SET \"work_mem\" TO '64MB'",
           "sql text: a list and a literal are replayed as the client wrote them");

    param_set_put_sql(&server, "search_path", "app, \"Other Schema\", public");
    param_set_put_sql(&server, "work_mem", "'64MB'");
    is_int(sync_sql(&client, NULL, &server, sql, sizeof(sql)), 0,
           "sql text: the same text on the server needs nothing");

    param_set_put(&server, "work_mem", "'64MB'");
    is_int(sync_sql(&client, NULL, &server, sql, sizeof(sql)), 1,
           "sql text: a plain value with the same characters is not the same value");
    param_set_free(&client);
    param_set_free(&server);
}

static void apply(enum param_change_kind kind, const char *name, const char *text,
                  const struct param_set *startup, const struct param_set *reported,
                  struct param_set *client, struct param_set *server)
{
    struct param_changes changes;

    param_changes_init(&changes);
    param_changes_add(&changes, kind, name, text, text ? strlen(text) : 0);
    is_int(params_apply_change(&changes.items[0], startup, reported, client, server), 0,
           "apply: change %d of %s succeeds", kind, name ? name : "all");
    param_changes_free(&changes);
}

static void test_changes_follow_postgres(void)
{
    struct param_set startup, reported, client, server;
    const struct param_entry *e;

    param_set_init(&startup);
    param_set_init(&reported);
    param_set_init(&client);
    param_set_init(&server);
    param_set_put(&reported, "application_name", "");
    param_set_put(&reported, "TimeZone", "Etc/UTC");
    param_set_put(&startup, "application_name", "myapp");
    param_set_put(&startup, "TimeZone", "Asia/Tokyo");
    param_set_put(&startup, "statement_timeout", "100");
    param_set_copy(&client, &startup);
    param_set_copy(&server, &reported);

    /* the server reported the SET's value in its own spelling before the change is applied */
    param_set_put(&server, "TimeZone", "America/New_York");
    apply(PARAM_CHANGE_SET, "timezone", "'america/new_york'", &startup, &reported, &client, &server);
    is_str(param_set_get(&client, "TimeZone"), "America/New_York",
           "SET of a reported parameter: the client takes the server's spelling");
    e = param_set_find(&client, "TimeZone");
    ok(e && !e->is_sql, "SET of a reported parameter: a plain value");

    apply(PARAM_CHANGE_SET, "work_mem", "'7MB'", &startup, &reported, &client, &server);
    e = param_set_find(&client, "work_mem");
    ok(e && e->is_sql && strcmp(e->value, "'7MB'") == 0,
       "SET of a parameter the server does not report: the client's text as given");
    e = param_set_find(&server, "work_mem");
    ok(e && e->is_sql && strcmp(e->value, "'7MB'") == 0,
       "SET of a parameter the server does not report: the server has that text too");

    param_set_put(&server, "application_name", "");
    apply(PARAM_CHANGE_RESET, "application_name", NULL, &startup, &reported, &client, &server);
    is_str(param_set_get(&client, "application_name"), "myapp",
           "RESET: the client gets its startup value back, not the server's default");

    apply(PARAM_CHANGE_RESET, "work_mem", NULL, &startup, &reported, &client, &server);
    ok(param_set_get(&client, "work_mem") == NULL && param_set_get(&server, "work_mem") == NULL,
       "RESET of a value without a startup one: default on both sides");

    apply(PARAM_CHANGE_SET, "work_mem", "'8MB'", &startup, &reported, &client, &server);
    apply(PARAM_CHANGE_SET, "application_name", "'other'", &startup, &reported, &client, &server);
    param_set_put(&server, "TimeZone", "Etc/UTC");
    apply(PARAM_CHANGE_RESET_ALL, NULL, NULL, &startup, &reported, &client, &server);
    is_str(param_set_get(&client, "application_name"), "myapp",
           "RESET ALL: application_name back to the startup value");
    is_str(param_set_get(&client, "TimeZone"), "Asia/Tokyo",
           "RESET ALL: TimeZone back to the startup value (options -c)");
    is_str(param_set_get(&client, "statement_timeout"), "100",
           "RESET ALL: a startup value the server does not report is kept");
    ok(param_set_get(&client, "work_mem") == NULL, "RESET ALL: a SET without startup value is gone");
    ok(param_set_get(&server, "work_mem") == NULL,
       "RESET ALL: the server forgets what it does not report");
    is_str(param_set_get(&server, "TimeZone"), "Etc/UTC",
           "RESET ALL: reported server values are left to its ParameterStatus");

    apply(PARAM_CHANGE_SET, "TimeZone", NULL, &startup, &reported, &client, &server);
    is_str(param_set_get(&client, "TimeZone"), "Etc/UTC",
           "set_config(TimeZone, $1, false): the value the server reported");

    param_set_free(&startup);
    param_set_free(&reported);
    param_set_free(&client);
    param_set_free(&server);
}

static void test_changes_list(void)
{
    struct param_changes changes;

    param_changes_init(&changes);
    param_changes_drop_first(&changes, 1);
    is_int((int)changes.n, 0, "changes: dropping from an empty list does nothing");
    param_changes_add(&changes, PARAM_CHANGE_SET, "a", "'1'", 3);
    param_changes_add(&changes, PARAM_CHANGE_RESET, "b", NULL, 0);
    param_changes_add(&changes, PARAM_CHANGE_RESET_ALL, NULL, NULL, 0);
    param_changes_drop_first(&changes, 1);
    ok(changes.n == 2 && changes.items[0].kind == PARAM_CHANGE_RESET &&
           strcmp(changes.items[0].name, "b") == 0 && changes.items[1].name == NULL,
       "changes: dropping the first keeps the rest in order");
    param_changes_drop_first(&changes, 5);
    is_int((int)changes.n, 0, "changes: dropping more than there are empties the list");
    param_changes_free(&changes);
}

int main(void)
{
    test_put_get();
    test_put_copies();
    test_order_and_growth();
    test_remove();
    test_clear_and_copy();
    test_share();
    test_session_setting();
    test_tracked();
    test_options_accepted();
    test_options_refused();
    test_sync();
    test_sync_order();
    test_sync_quoting_and_skips();
    test_options_feed_sync();
    test_sync_replays_sql_text_as_written();
    test_changes_follow_postgres();
    test_changes_list();
    return tap_done();
}
