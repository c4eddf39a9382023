/*
 * test_pinning.c: which query text pins a client to its backend in transaction pooling, as a
 * specification: each session-state statement pins, its transaction-local twin does not, and
 * quotes, comments and dollar quotes hide exactly what they hide from PostgreSQL.
 * Every query is scanned from a heap block of exactly its length, without a NUL, so the
 * sanitizer sees any read past the end.
 */
#include <stdlib.h>

#include "params.h"
#include "pinning.h"
#include "tap.h"

static const struct pinning_rules tracked_rules = {
    .is_tracked = params_is_tracked,
    .standard_conforming_strings = true,
};

static const struct pinning_rules backslash_strings_rules = {
    .is_tracked = params_is_tracked,
    .standard_conforming_strings = false,
};

static bool track_everything(const char *name)
{
    (void)name;
    return true;
}

static const struct pinning_rules track_all_rules = {
    .is_tracked = track_everything,
    .standard_conforming_strings = true,
};

static char *exact_copy(const char *sql, size_t len)
{
    char *copy = malloc(len ? len : 1);

    if (copy == NULL)
        abort();
    memcpy(copy, sql, len);
    return copy;
}

static enum pin_reason scan_with(const char *sql, const struct pinning_rules *rules,
                                 struct pinning_summary *sum)
{
    size_t len = strlen(sql);
    char *copy = exact_copy(sql, len);
    enum pin_reason reason = pinning_scan(copy, len, rules, sum);

    free(copy);
    return reason;
}

/* The single statement of sql, scanned with the tracked rules. */
static bool one_statement(const char *sql, const struct pinning_rules *rules,
                          struct pinning_statement *st)
{
    size_t len = strlen(sql), offset = 0;
    char *copy = exact_copy(sql, len);
    bool found = pinning_next_statement(copy, len, &offset, rules, st);

    free(copy);
    return found;
}

/* The query on one line, for a test name: newlines and tabs written as \n, \r and \t. */
static const char *shown(const char *sql)
{
    static char line[512];
    size_t n = 0;

    for (; *sql != '\0' && n + 3 < sizeof(line); sql++) {
        char escape = *sql == '\n' ? 'n' : *sql == '\r' ? 'r' : *sql == '\t' ? 't' : '\0';

        if (escape != '\0') {
            line[n++] = '\\';
            line[n++] = escape;
        } else {
            line[n++] = *sql;
        }
    }
    line[n] = '\0';
    return line;
}

static void pins(const char *sql, enum pin_reason want)
{
    is_str(pin_reason_name(scan_with(sql, &tracked_rules, NULL)), pin_reason_name(want),
           "pins (%s): %s", pin_reason_name(want), shown(sql));
}

static void does_not_pin(const char *sql)
{
    is_str(pin_reason_name(scan_with(sql, &tracked_rules, NULL)), pin_reason_name(PIN_NONE),
           "does not pin: %s", shown(sql));
}

static void has_effect(const char *sql, const struct pinning_rules *rules, enum pin_effect effect,
                       const char *name)
{
    struct pinning_statement st;

    if (!ok(one_statement(sql, rules, &st), "one statement: %s", sql))
        return;
    is_int(st.effect, effect, "effect of: %s", sql);
    is_str(st.name, name, "name in: %s", sql);
    is_int(st.reason, PIN_NONE, "and no pin: %s", sql);
}

/* ---- SET ---- */

static void test_set_of_untracked_parameters_pins(void)
{
    struct pinning_summary sum;

    pins("SET work_mem = '64MB'", PIN_SET);
    pins("SET work_mem TO '64MB'", PIN_SET);
    pins("set Work_Mem to 1", PIN_SET);
    pins("SET SESSION work_mem = 1", PIN_SET);
    pins("SET statement_timeout=-1", PIN_SET);
    pins("SET myapp.user_id = '42'", PIN_SET);
    pins("SET XML OPTION DOCUMENT", PIN_SET);
    pins("SET work_mem FROM CURRENT", PIN_SET_FROM_CURRENT);

    scan_with("set Work_Mem to 1", &tracked_rules, &sum);
    is_str(sum.param, "work_mem", "SET: an unquoted name is read in lower case");
    scan_with("SET \"Work\"\"Mem\" = 1", &tracked_rules, &sum);
    is_str(sum.param, "Work\"Mem", "SET: a quoted name is read as written, \"\" undone");
    scan_with("SET MyApp.\"User\" = '42'", &tracked_rules, &sum);
    is_str(sum.param, "myapp.User", "SET: the parts of a qualified name are joined by '.'");
    scan_with("SET XML OPTION DOCUMENT", &tracked_rules, &sum);
    is_str(sum.param, "xmloption", "SET XML OPTION sets xmloption");
}

static void test_set_value_is_located(void)
{
    const char *sql = "SET work_mem TO '64MB' ";
    struct pinning_statement st;

    one_statement(sql, &tracked_rules, &st);
    is_int(st.value_len, 6, "SET: value length");
    ok(st.value_len == 6 && memcmp(sql + st.value_start, "'64MB'", 6) == 0,
       "SET: value_start points at the value as written");
    is_int(st.start, 0, "SET: the statement starts at its first token");
    is_int(st.len, strlen(sql) - 1, "SET: the statement ends at its last token");
}

static void test_session_wide_forms_pin(void)
{
    pins("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
         PIN_SESSION_CHARACTERISTICS);
    pins("SET ROLE admin", PIN_SET_ROLE);
    pins("SET SESSION ROLE admin", PIN_SET_ROLE);
    pins("SET role = 'admin'", PIN_SET_ROLE);
    pins("SET \"ROLE\" TO admin", PIN_SET_ROLE);
    pins("SET SESSION AUTHORIZATION bob", PIN_SET_SESSION_AUTHORIZATION);
    pins("SET session_authorization = bob", PIN_SET_SESSION_AUTHORIZATION);
}

static void test_transaction_local_set_does_not_pin(void)
{
    does_not_pin("SET LOCAL work_mem = '1GB'");
    does_not_pin("set local role admin");
    does_not_pin("SET LOCAL SESSION AUTHORIZATION bob");
    does_not_pin("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    does_not_pin("SET SESSION TRANSACTION READ ONLY");
    does_not_pin("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'");
    does_not_pin("SET CONSTRAINTS ALL DEFERRED");
    does_not_pin("SET");
}

static void test_set_inside_other_statements_does_not_pin(void)
{
    does_not_pin("UPDATE t SET a = 1");
    does_not_pin("ALTER ROLE r SET work_mem = '1GB'");
    does_not_pin("ALTER DATABASE d SET search_path = app");
    does_not_pin("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = public "
                 "AS $$ SELECT 1 $$");
    does_not_pin("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2");
}

static void test_tracked_parameters_are_reported_not_pinned(void)
{
    const char *sql = "SET application_name = 'report'";
    struct pinning_statement st;
    struct pinning_summary sum;

    has_effect(sql, &tracked_rules, PIN_EFFECT_TRACKED_SET, "application_name");
    one_statement(sql, &tracked_rules, &st);
    ok(st.value_len == 8 && memcmp(sql + st.value_start, "'report'", 8) == 0,
       "tracked SET: the value is located for replay");
    has_effect("SET SESSION DateStyle TO ISO, DMY", &tracked_rules, PIN_EFFECT_TRACKED_SET,
               "datestyle");
    has_effect("SET TIME ZONE 'Europe/Paris'", &tracked_rules, PIN_EFFECT_TRACKED_SET, "TimeZone");
    has_effect("SET NAMES 'UTF8'", &tracked_rules, PIN_EFFECT_TRACKED_SET, "client_encoding");
    has_effect("SET SCHEMA 'app'", &tracked_rules, PIN_EFFECT_TRACKED_SET, "search_path");
    has_effect("SET search_path TO app, \"Other\", public", &tracked_rules,
               PIN_EFFECT_TRACKED_SET, "search_path");
    has_effect("SET standard_conforming_strings = on", &tracked_rules, PIN_EFFECT_TRACKED_SET,
               "standard_conforming_strings");
    has_effect("SET IntervalStyle = postgres", &tracked_rules, PIN_EFFECT_TRACKED_SET,
               "intervalstyle");

    scan_with("SET TimeZone = 'UTC'; SET client_encoding = 'UTF8'", &tracked_rules, &sum);
    ok(sum.reason == PIN_NONE && sum.changes_tracked && sum.n_statements == 2,
       "tracked SETs: no pin, a tracked change, both statements counted");
    scan_with("SET application_name = 'a'; SET work_mem = 1", &tracked_rules, &sum);
    ok(sum.reason == PIN_SET && strcmp(sum.param, "work_mem") == 0 && sum.changes_tracked,
       "a tracked SET does not hide an untracked one after it");
}

static void test_without_rules_nothing_is_tracked(void)
{
    struct pinning_summary sum;

    is_int(pinning_scan("SET TIME ZONE 'UTC'", 19, NULL, &sum), PIN_SET,
           "no rules: SET TIME ZONE pins");
    is_str(sum.param, "TimeZone", "no rules: the parameter is TimeZone");
}

static void test_role_is_never_tracked(void)
{
    struct pinning_statement st;
    char long_name[300];

    is_int(scan_with("SET ROLE admin", &track_all_rules, NULL), PIN_SET_ROLE,
           "SET ROLE pins even when the caller claims to track everything");
    is_int(scan_with("SET SESSION AUTHORIZATION bob", &track_all_rules, NULL),
           PIN_SET_SESSION_AUTHORIZATION,
           "SET SESSION AUTHORIZATION pins even when the caller claims to track everything");

    memcpy(long_name, "SET ", 4);
    memset(long_name + 4, 'x', 200);
    strcpy(long_name + 204, " = 1");
    one_statement(long_name, &track_all_rules, &st);
    ok(st.reason == PIN_SET && st.name_truncated && strlen(st.name) == PINNING_NAME_LEN - 1,
       "a name too long for the buffer is truncated and never treated as tracked");
}

/* ---- RESET and friends: they return to the pool's defaults ---- */

static void test_reset_does_not_pin(void)
{
    has_effect("RESET work_mem", &tracked_rules, PIN_EFFECT_RESET, "work_mem");
    has_effect("RESET TimeZone", &tracked_rules, PIN_EFFECT_TRACKED_RESET, "timezone");
    has_effect("RESET TIME ZONE", &tracked_rules, PIN_EFFECT_TRACKED_RESET, "TimeZone");
    has_effect("RESET ROLE", &tracked_rules, PIN_EFFECT_RESET, "role");
    has_effect("RESET SESSION AUTHORIZATION", &tracked_rules, PIN_EFFECT_RESET,
               "session_authorization");
    has_effect("RESET ALL", &tracked_rules, PIN_EFFECT_RESET_ALL, "");
    has_effect("SET work_mem TO DEFAULT", &tracked_rules, PIN_EFFECT_RESET, "work_mem");
    has_effect("SET application_name = DEFAULT", &tracked_rules, PIN_EFFECT_TRACKED_RESET,
               "application_name");
    has_effect("SET TIME ZONE LOCAL", &tracked_rules, PIN_EFFECT_TRACKED_RESET, "TimeZone");
    has_effect("SET NAMES", &tracked_rules, PIN_EFFECT_TRACKED_RESET, "client_encoding");
    has_effect("SET ROLE NONE", &tracked_rules, PIN_EFFECT_RESET, "role");
    has_effect("SET SESSION AUTHORIZATION DEFAULT", &tracked_rules, PIN_EFFECT_RESET,
               "session_authorization");
    has_effect("RESET TRANSACTION ISOLATION LEVEL", &tracked_rules, PIN_EFFECT_NONE, "");
}

static void test_discard_and_deallocate_are_reported(void)
{
    struct pinning_summary sum;

    has_effect("DISCARD ALL", &tracked_rules, PIN_EFFECT_DISCARD_ALL, "");
    has_effect("discard all", &tracked_rules, PIN_EFFECT_DISCARD_ALL, "");
    has_effect("DISCARD TEMP", &tracked_rules, PIN_EFFECT_DISCARD_TEMP, "");
    has_effect("discard temporary", &tracked_rules, PIN_EFFECT_DISCARD_TEMP, "");
    has_effect("DISCARD PLANS", &tracked_rules, PIN_EFFECT_NONE, "");
    has_effect("DEALLOCATE ALL", &tracked_rules, PIN_EFFECT_DEALLOCATE_ALL, "");
    has_effect("DEALLOCATE PREPARE ALL", &tracked_rules, PIN_EFFECT_DEALLOCATE_ALL, "");
    has_effect("DEALLOCATE S_1", &tracked_rules, PIN_EFFECT_DEALLOCATE, "s_1");
    has_effect("DEALLOCATE \"S_1\"", &tracked_rules, PIN_EFFECT_DEALLOCATE, "S_1");
    has_effect("DEALLOCATE PREPARE _pg3_0", &tracked_rules, PIN_EFFECT_DEALLOCATE, "_pg3_0");
    has_effect("DEALLOCATE prepare", &tracked_rules, PIN_EFFECT_DEALLOCATE, "prepare");

    scan_with("DISCARD ALL", &tracked_rules, &sum);
    ok(sum.forgets_statements && sum.changes_tracked && sum.resets_untracked && !sum.deallocates,
       "summary of DISCARD ALL: statements forgotten, parameters reset");
    scan_with("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;", &tracked_rules,
              &sum);
    ok(sum.reason == PIN_NONE && sum.resets_untracked && !sum.forgets_statements &&
           sum.n_statements == 4,
       "summary of a driver's reset query: nothing pins, parameters reset");
    scan_with("DEALLOCATE x; DEALLOCATE ALL", &tracked_rules, &sum);
    ok(sum.deallocates && sum.forgets_statements, "summary: DEALLOCATE name and DEALLOCATE ALL");
}

/* ---- set_config ---- */

static void test_set_config_not_local_pins(void)
{
    pins("SELECT set_config('a.b', 'c', false)", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c', 'f')", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c', 'off')", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c', 0::boolean)", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c', $3)", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c', NOT true)", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c', true OR x)", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c', (true))", PIN_SET_CONFIG);
    pins("SELECT pg_catalog.set_config('a.b', 'c', false)", PIN_SET_CONFIG);
    pins("SELECT \"set_config\"('a.b', 'c', false)", PIN_SET_CONFIG);
    pins("select SET_CONFIG ( 'a.b' , 'c' , FALSE )", PIN_SET_CONFIG);
    pins("SELECT 1 FROM t WHERE set_config('a.b', t.c, false) IS NOT NULL", PIN_SET_CONFIG);
    pins("SELECT set_config('a', set_config('b', 'c', false), true)", PIN_SET_CONFIG);
    pins("SELECT set_config('a', 'b', true), set_config('c', 'd', false)", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c', true", PIN_SET_CONFIG);
    pins("SELECT set_config('a.b', 'c')", PIN_SET_CONFIG);
}

static void test_set_config_local_does_not_pin(void)
{
    does_not_pin("SELECT set_config('a.b', 'c', true)");
    does_not_pin("SELECT set_config('a.b', 'c', TRUE)");
    does_not_pin("SELECT set_config('a.b', 'c', 't')");
    does_not_pin("SELECT set_config('a.b', 'c', ' Yes ')");
    does_not_pin("SELECT set_config('a.b', 'c', 'on')");
    does_not_pin("SELECT set_config('a.b', 'c', '1')");
    does_not_pin("SELECT set_config('a.b', 'c', true::boolean)");
    does_not_pin("SELECT set_config('a.b', 'c', 'true'::bool)");
    does_not_pin("SELECT set_config('a.b', concat('x', f(1, 2)), true)");
    does_not_pin("SELECT set_config('role', 'web', true), set_config('request.jwt', $1, true)");
    does_not_pin("SELECT set_config");
    does_not_pin("SELECT \"SET_CONFIG\"('a.b', 'c', false)");
}

/* ---- temporary objects ---- */

static void test_temporary_objects_pin(void)
{
    pins("CREATE TEMP TABLE t (a int)", PIN_TEMP_TABLE);
    pins("create temporary table t (a int)", PIN_TEMP_TABLE);
    pins("CREATE GLOBAL TEMPORARY TABLE t (a int)", PIN_TEMP_TABLE);
    pins("CREATE LOCAL TEMP TABLE t (a int)", PIN_TEMP_TABLE);
    pins("CREATE TEMP TABLE IF NOT EXISTS t (a int)", PIN_TEMP_TABLE);
    pins("CREATE TEMP TABLE t AS SELECT 1", PIN_TEMP_TABLE);
    pins("CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS", PIN_TEMP_TABLE);
    pins("CREATE TEMP TABLE t (a int) ON COMMIT PRESERVE ROWS", PIN_TEMP_TABLE);
    pins("CREATE TEMP TABLE t AS SELECT 1 AS drop", PIN_TEMP_TABLE);
    pins("CREATE TEMP VIEW v AS SELECT 1", PIN_TEMP_TABLE);
    pins("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", PIN_TEMP_TABLE);
    pins("CREATE TEMPORARY SEQUENCE s", PIN_TEMP_TABLE);
    pins("CREATE TABLE pg_temp.t (a int)", PIN_TEMP_TABLE);
    pins("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", PIN_TEMP_TABLE);
    pins("SELECT * INTO TEMP t FROM x", PIN_TEMP_TABLE);
    pins("SELECT 1 AS a INTO TEMPORARY TABLE t", PIN_TEMP_TABLE);
    pins("WITH a AS (SELECT 1) SELECT * INTO TEMP t FROM a", PIN_TEMP_TABLE);
    pins("(SELECT 1 INTO TEMP t)", PIN_TEMP_TABLE);
}

static void test_other_tables_do_not_pin(void)
{
    does_not_pin("CREATE TABLE t (a int)");
    does_not_pin("CREATE UNLOGGED TABLE t (a int)");
    does_not_pin("CREATE TABLE temp (a int)");
    does_not_pin("CREATE TABLE t AS SELECT * FROM temp");
    does_not_pin("SELECT * INTO t FROM x");
    does_not_pin("SELECT * INTO UNLOGGED t FROM x");
    does_not_pin("INSERT INTO t SELECT * FROM temp_data");
    does_not_pin("CREATE TEMP TABLE t (a int) ON COMMIT DROP");
    does_not_pin("CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1");
    does_not_pin("create temp table t (a int, b text) on commit drop");
}

/* ---- locks, LISTEN, cursors, PREPARE, LOAD ---- */

static void test_session_advisory_locks_pin(void)
{
    pins("SELECT pg_advisory_lock(1)", PIN_ADVISORY_LOCK);
    pins("SELECT pg_advisory_lock(1, 2)", PIN_ADVISORY_LOCK);
    pins("SELECT pg_advisory_lock_shared(1)", PIN_ADVISORY_LOCK);
    pins("SELECT pg_try_advisory_lock(hashtext('job'))", PIN_ADVISORY_LOCK);
    pins("SELECT pg_try_advisory_lock_shared(1)", PIN_ADVISORY_LOCK);
    pins("SELECT PG_ADVISORY_LOCK (1)", PIN_ADVISORY_LOCK);
    pins("SELECT pg_catalog.pg_advisory_lock(1)", PIN_ADVISORY_LOCK);
    pins("SELECT pg_advisory_lock/* why */(1)", PIN_ADVISORY_LOCK);
    pins("SELECT CASE WHEN ok THEN pg_try_advisory_lock(id) END FROM jobs", PIN_ADVISORY_LOCK);
    pins("WITH l AS (SELECT pg_advisory_lock(1)) SELECT * FROM l", PIN_ADVISORY_LOCK);
    pins("EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", PIN_ADVISORY_LOCK);
}

static void test_transaction_advisory_locks_do_not_pin(void)
{
    does_not_pin("SELECT pg_advisory_xact_lock(1)");
    does_not_pin("SELECT pg_try_advisory_xact_lock(1)");
    does_not_pin("SELECT pg_advisory_xact_lock_shared(1)");
    does_not_pin("SELECT pg_advisory_unlock(1)");
    does_not_pin("SELECT pg_advisory_unlock_all()");
    does_not_pin("SELECT my_pg_advisory_lock(1)");
    does_not_pin("SELECT pg_advisory_lock FROM t");
    does_not_pin("SELECT 'pg_advisory_lock(1)'");
}

static void test_listen_cursor_prepare_load_pin(void)
{
    pins("LISTEN jobs", PIN_LISTEN);
    pins("listen \"Jobs\"", PIN_LISTEN);
    pins("DECLARE c CURSOR WITH HOLD FOR SELECT 1", PIN_CURSOR_WITH_HOLD);
    pins("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1", PIN_CURSOR_WITH_HOLD);
    pins("declare c binary insensitive scroll cursor with hold for select 1", PIN_CURSOR_WITH_HOLD);
    pins("PREPARE q AS SELECT 1", PIN_PREPARE);
    pins("PREPARE q (int, text) AS SELECT $1, $2", PIN_PREPARE);
    pins("PREPARE transaction AS SELECT 1", PIN_PREPARE);
    pins("LOAD 'auto_explain'", PIN_LOAD);
}

static void test_their_neighbours_do_not_pin(void)
{
    does_not_pin("UNLISTEN *");
    does_not_pin("NOTIFY jobs, 'x'");
    does_not_pin("DECLARE c CURSOR FOR SELECT 1");
    does_not_pin("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1");
    does_not_pin("DECLARE hold CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold");
    does_not_pin("PREPARE TRANSACTION 'gid-1'");
    does_not_pin("COMMIT PREPARED 'gid-1'");
    does_not_pin("EXECUTE q(1)");
    does_not_pin("DEALLOCATE q");
    does_not_pin("CLOSE ALL");
    does_not_pin("SELECT 1 AS load, 2 AS listen");
}

/* ---- DO blocks run their body ---- */

static void test_do_blocks_are_read_as_code(void)
{
    pins("DO $$BEGIN PERFORM pg_advisory_lock(1); END$$", PIN_ADVISORY_LOCK);
    pins("DO $$ BEGIN SET search_path = app; END $$", PIN_SET);
    pins("DO LANGUAGE plpgsql $body$ BEGIN IF true THEN CREATE TEMP TABLE t (a int); END IF; "
         "END $body$",
         PIN_TEMP_TABLE);
    pins("DO 'BEGIN PERFORM set_config(''a.b'', ''c'', false); END'", PIN_SET_CONFIG);
    does_not_pin("DO $$ BEGIN PERFORM set_config('a.b', 'c', true); END $$");
    does_not_pin("DO $$ BEGIN RAISE NOTICE 'SET x = 1'; END $$");
    does_not_pin("DO $$ BEGIN UPDATE t SET a = 1; END $$");
    does_not_pin("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS "
                 "$$ BEGIN PERFORM pg_advisory_lock(1); END $$");
}

/* ---- what quoting and comments hide ---- */

static void test_quotes_and_comments_hide_statements(void)
{
    struct pinning_summary sum;

    does_not_pin("SELECT $$ SET work_mem = 1 $$");
    does_not_pin("$$ SET work_mem = 1 $$");
    does_not_pin("SELECT 'SET work_mem = 1; LISTEN x'");
    does_not_pin("SELECT 'it''s; SET work_mem = 1'");
    does_not_pin("SELECT E'\\' ; SET work_mem = 1; '");
    does_not_pin("SELECT e'\\\\'' ; SET work_mem = 1; '");
    does_not_pin("-- SET work_mem = 1");
    does_not_pin("SELECT 1 -- ; SET work_mem = 1");
    does_not_pin("/* SET /* nested */ work_mem = 1; */ SELECT 1");
    does_not_pin("/* a /* b */ ; SET work_mem = 1 */");
    does_not_pin("\"SET\" work_mem = 1");
    does_not_pin("SELECT 1 AS \"set\"; \"LISTEN\" x");
    does_not_pin("SELECT \"a;\"\"b\"; \"; SET work_mem = 1\"");
    does_not_pin("SELECT $fn$ SET work_mem = 1; $ $$ $fn $fn$");
    does_not_pin("SELECT $a$ $b$ ; SET work_mem = 1 $b$ $a$");
    does_not_pin("SELECT $_1$ ; LISTEN x $_1$");
    pins("SELECT $a$ $b$ SET x $b$ $a$; SET work_mem = 1", PIN_SET);
    pins("SELECT $fn$ x $FN$; SET y $fn$; LISTEN z", PIN_LISTEN);

    scan_with("-- only a comment\n/* and another */  ;; ", &tracked_rules, &sum);
    is_int(sum.n_statements, 0, "comments and semicolons alone are no statement");
}

static void test_what_quoting_does_not_hide(void)
{
    pins("SELECT 1; SET work_mem = 1", PIN_SET);
    pins("SELECT 'a;b'; LISTEN x", PIN_LISTEN);
    pins("SELECT 'it''s'; SET work_mem = 1", PIN_SET);
    pins("SELECT '\\'; SET work_mem = 1; --'", PIN_SET);
    pins("SELECT E'\\\\'; SET work_mem = 1", PIN_SET);
    pins("SELECT 1 -- comment\n; LISTEN x", PIN_LISTEN);
    pins("SELECT 1 -- comment\r; LISTEN x", PIN_LISTEN);
    pins("SELECT /* a /* b */ c */ 1; LISTEN x", PIN_LISTEN);
    pins("SELECT a$$b; SET work_mem = 1; SELECT $$", PIN_SET);
    pins("SELECT $1; SET work_mem = 1; SELECT $2", PIN_SET);
    pins("SELECT 1$$; SET x $$; LISTEN y", PIN_LISTEN);
    pins("SELECT x\"\"; LISTEN y", PIN_LISTEN);
    pins("SELECT 1 */ ; LISTEN x", PIN_LISTEN);
    pins("SELECT 2*--x\n3; LISTEN x", PIN_LISTEN);
}

static void test_backslashes_follow_standard_conforming_strings(void)
{
    const char *sql = "SELECT 'a\\'; SET work_mem = 1; SELECT '";

    is_int(scan_with(sql, &tracked_rules, NULL), PIN_SET,
           "standard strings: a backslash does not escape the quote, the SET is a statement");
    is_int(scan_with(sql, &backslash_strings_rules, NULL), PIN_NONE,
           "standard_conforming_strings off: the backslash escapes the quote, the SET is text");
    is_int(scan_with("SELECT '\\\\'; SET work_mem = 1", &backslash_strings_rules, NULL), PIN_SET,
           "standard_conforming_strings off: an escaped backslash ends nothing early");
}

static void test_statement_heads_after_whitespace_parentheses_and_comments(void)
{
    pins("  \n\t-- hello\n/* c */ SET work_mem = 1", PIN_SET);
    pins("((SELECT pg_advisory_lock(1)))", PIN_ADVISORY_LOCK);
    pins("/* x */ ( /* y */ SELECT 1 INTO TEMP t)", PIN_TEMP_TABLE);
    pins("SELECT 1;\n\n  listen x", PIN_LISTEN);
    pins("BEGIN; SET work_mem = 1; COMMIT", PIN_SET);
    pins("SELECT 1;;; ;LOAD 'x'", PIN_LOAD);
    pins("EXPLAIN (ANALYZE, BUFFERS) CREATE TEMP TABLE t AS SELECT 1", PIN_TEMP_TABLE);
}

/* ---- unterminated input ---- */

static void test_unterminated_input_is_read_safely(void)
{
    does_not_pin("SELECT 'unterminated; SET work_mem = 1");
    does_not_pin("SELECT \"unterminated; SET work_mem = 1");
    does_not_pin("SELECT $$unterminated; SET work_mem = 1");
    does_not_pin("SELECT $tag$unterminated; SET work_mem = 1 $tag");
    does_not_pin("SELECT /* unterminated; SET work_mem = 1");
    does_not_pin("SELECT /* /* */ still a comment; SET work_mem = 1");
    does_not_pin("SELECT E'ends in a backslash\\");
    does_not_pin("SELECT 'ends in a quote pair''");
    does_not_pin("SELECT $");
    does_not_pin("SELECT $a");
    does_not_pin("SELECT 1 -");
    does_not_pin("SELECT 1 /");
    does_not_pin("e");
    does_not_pin("E'");
    does_not_pin("(");
    does_not_pin(")))");
    pins("SET", PIN_NONE);
    pins("SET work_mem", PIN_SET);
    pins("CREATE", PIN_NONE);
    pins("CREATE TEMP TABLE", PIN_TEMP_TABLE);
    pins("DECLARE c CURSOR WITH HOLD", PIN_CURSOR_WITH_HOLD);
    pins("SELECT pg_advisory_lock(", PIN_ADVISORY_LOCK);
    is_int(pinning_scan(NULL, 0, NULL, NULL), PIN_NONE, "a NULL query pins nothing");
    is_int(pinning_scan("LISTEN x", 0, NULL, NULL), PIN_NONE, "only len bytes are read");
    is_int(pinning_scan("LISTEN x; SET a = 1", 8, NULL, NULL), PIN_LISTEN,
           "a query cut at len is read up to len");
}

/* ---- statements one by one ---- */

static void test_statements_are_listed_in_order(void)
{
    const char *sql = "SELECT 1; SET work_mem = 1 ; /* c */ DEALLOCATE \"S_1\";; LISTEN x -- end";
    size_t len = strlen(sql), offset = 0;
    struct pinning_statement st[4];
    size_t n = 0;

    while (n < 4 && pinning_next_statement(sql, len, &offset, &tracked_rules, &st[n]))
        n++;
    is_int(n, 4, "statements: four non-empty ones");
    is_int(offset, len, "statements: the offset ends at the end of the text");
    ok(st[0].start == 0 && st[0].len == 8 && st[0].reason == PIN_NONE, "statement 1: SELECT 1");
    ok(st[1].len == 16 && memcmp(sql + st[1].start, "SET work_mem = 1", 16) == 0 &&
           st[1].reason == PIN_SET,
       "statement 2: the SET, without its space and ';'");
    ok(memcmp(sql + st[2].start, "DEALLOCATE \"S_1\"", st[2].len) == 0 &&
           st[2].effect == PIN_EFFECT_DEALLOCATE && strcmp(st[2].name, "S_1") == 0,
       "statement 3: the DEALLOCATE, without the comment before it");
    ok(st[3].len == 8 && memcmp(sql + st[3].start, "LISTEN x", 8) == 0 &&
           st[3].reason == PIN_LISTEN,
       "statement 4: LISTEN, without the comment after it");
    ok(!pinning_next_statement(sql, len, &offset, &tracked_rules, &st[0]),
       "statements: none after the last");
}

static void test_summary_reports_the_first_pin(void)
{
    struct pinning_summary sum;

    is_int(scan_with("LISTEN a; SET work_mem = 1", &tracked_rules, &sum), PIN_LISTEN,
           "summary: the first pinning statement is reported");
    is_str(sum.param, "", "summary: LISTEN names no parameter");
    is_int(sum.n_statements, 2, "summary: statements are counted");
    is_int(scan_with("SELECT 1; SET search_path = app; SET work_mem = 1; LISTEN a", &tracked_rules,
                     &sum),
           PIN_SET, "summary: a tracked SET before the first pin does not count as one");
    is_str(sum.param, "work_mem", "summary: the pinning statement's parameter is reported");
    ok(sum.changes_tracked && sum.n_statements == 4, "summary: the tracked SET is still reported");
}

/* ---- what clears a pin, and where a transaction ends ---- */

static void test_statements_that_clear_session_state_are_reported(void)
{
    struct pinning_summary sum;

    has_effect("UNLISTEN *", &tracked_rules, PIN_EFFECT_UNLISTEN_ALL, "");
    has_effect("UNLISTEN a_channel", &tracked_rules, PIN_EFFECT_NONE, "");
    has_effect("CLOSE ALL", &tracked_rules, PIN_EFFECT_CLOSE_ALL, "");
    has_effect("CLOSE a_cursor", &tracked_rules, PIN_EFFECT_NONE, "");
    has_effect("SELECT pg_advisory_unlock_all()", &tracked_rules, PIN_EFFECT_ADVISORY_UNLOCK_ALL,
               "");
    has_effect("SELECT pg_catalog.pg_advisory_unlock_all ( )", &tracked_rules,
               PIN_EFFECT_ADVISORY_UNLOCK_ALL, "");
    has_effect("SELECT pg_advisory_unlock(1)", &tracked_rules, PIN_EFFECT_NONE, "");
    has_effect("SELECT 'pg_advisory_unlock_all()'", &tracked_rules, PIN_EFFECT_NONE, "");
    scan_with("SELECT pg_advisory_unlock_all()", &tracked_rules, &sum);
    ok(sum.has_effect && sum.reason == PIN_NONE, "summary: an unlock is an effect, not a pin");
    scan_with("SELECT 1", &tracked_rules, &sum);
    ok(!sum.has_effect, "summary: a plain SELECT has no effect");
}

static void test_transaction_ends_are_reported(void)
{
    struct pinning_summary sum;

    has_effect("COMMIT", &tracked_rules, PIN_EFFECT_COMMIT, "");
    has_effect("end transaction", &tracked_rules, PIN_EFFECT_COMMIT, "");
    has_effect("COMMIT AND CHAIN", &tracked_rules, PIN_EFFECT_COMMIT, "");
    has_effect("COMMIT PREPARED 'x'", &tracked_rules, PIN_EFFECT_NONE, "");
    has_effect("ROLLBACK", &tracked_rules, PIN_EFFECT_ROLLBACK, "");
    has_effect("abort work", &tracked_rules, PIN_EFFECT_ROLLBACK, "");
    has_effect("ROLLBACK PREPARED 'x'", &tracked_rules, PIN_EFFECT_NONE, "");
    has_effect("ROLLBACK TO SAVEPOINT s", &tracked_rules, PIN_EFFECT_ROLLBACK_TO, "");
    has_effect("ROLLBACK TRANSACTION TO s", &tracked_rules, PIN_EFFECT_ROLLBACK_TO, "");
    has_effect("ROLLBACK AND NO CHAIN", &tracked_rules, PIN_EFFECT_ROLLBACK, "");
    scan_with("END", &tracked_rules, &sum);
    ok(sum.ends_transaction && !sum.has_effect,
       "summary: the end of a transaction is told apart from effects on the session");
}

/* An Execute of one of these leaves no transaction open; AND CHAIN opens the next block. */
static void test_transactions_closed_for_good_are_told(void)
{
    static const struct {
        const char *sql;
        bool closes;
    } cases[] = {
        { "COMMIT", true },
        { "end work", true },
        { "COMMIT AND NO CHAIN", true },
        { "COMMIT TRANSACTION AND NO CHAIN", true },
        { "ROLLBACK", true },
        { "abort transaction and no chain", true },
        { "COMMIT AND CHAIN", false },
        { "commit work and chain", false },
        { "ROLLBACK AND CHAIN", false },
        { "ABORT TRANSACTION AND CHAIN", false },
        { "ROLLBACK TO SAVEPOINT s", false },
        { "COMMIT PREPARED 'x'", false },
        { "BEGIN", false },
        { "SELECT 1", false },
        { "SELECT 1; COMMIT", true },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pinning_summary sum;
        scan_with(cases[i].sql, &tracked_rules, &sum);
        ok(sum.closes_transaction == cases[i].closes, "closes the transaction or not: %s",
           cases[i].sql);
    }
}

/* Tracking every parameter is how the pooler uses the lexer: SETs are followed, not pinned. */
static void test_every_set_is_followed_when_everything_is_tracked(void)
{
    struct pinning_statement st;
    const char *sql = "SET search_path TO app, \"Other\", public";

    has_effect("SET work_mem = '64MB'", &track_all_rules, PIN_EFFECT_TRACKED_SET, "work_mem");
    has_effect("SET extra_float_digits = 3", &track_all_rules, PIN_EFFECT_TRACKED_SET,
               "extra_float_digits");
    has_effect("SET myapp.user_id TO 42", &track_all_rules, PIN_EFFECT_TRACKED_SET,
               "myapp.user_id");
    has_effect("RESET work_mem", &track_all_rules, PIN_EFFECT_TRACKED_RESET, "work_mem");
    has_effect("SET work_mem TO DEFAULT", &track_all_rules, PIN_EFFECT_TRACKED_RESET, "work_mem");
    one_statement(sql, &track_all_rules, &st);
    ok(st.value_len == strlen("app, \"Other\", public") &&
           memcmp(sql + st.value_start, "app, \"Other\", public", st.value_len) == 0,
       "a search_path list is located whole, quotes and all, for replay as written");
    is_int(scan_with("SET work_mem FROM CURRENT", &track_all_rules, NULL), PIN_SET_FROM_CURRENT,
           "SET ... FROM CURRENT pins even when everything is tracked");
    is_int(scan_with("DO $$ BEGIN SET work_mem = 1; END $$", &track_all_rules, NULL), PIN_SET,
           "a SET inside a DO block still pins: its effect cannot be followed");
}

static void set_config_followed(const char *sql, const char *name, const char *value)
{
    struct pinning_statement st;

    if (!ok(one_statement(sql, &track_all_rules, &st), "one statement: %s", sql))
        return;
    ok(st.reason == PIN_NONE && st.effect == PIN_EFFECT_TRACKED_SET && strcmp(st.name, name) == 0,
       "set_config followed as SET %s: %s", name, sql);
    if (value == NULL)
        is_int(st.value_len, 0, "value only the server knows: %s", sql);
    else
        ok(st.value_len == strlen(value) && memcmp(sql + st.value_start, value, st.value_len) == 0,
           "value %s located: %s", value, sql);
}

static void test_set_config_session_is_followed_when_tracked(void)
{
    set_config_followed("SELECT set_config('work_mem', '9MB', false)", "work_mem", "'9MB'");
    set_config_followed("SELECT set_config('TimeZone', $1, 'off')", "TimeZone", NULL);
    set_config_followed("SELECT set_config('a.b', 42, false)", "a.b", "42");
    set_config_followed("SELECT set_config('a.b', lower('X'), false)", "a.b", NULL);
    is_int(scan_with("SELECT set_config($1, 'x', false)", &track_all_rules, NULL), PIN_SET_CONFIG,
           "set_config with a name only known at run time pins");
    is_int(scan_with("SELECT set_config('a', 'b', false), set_config('c', 'd', false)",
                     &track_all_rules, NULL),
           PIN_SET_CONFIG, "a second set_config in one statement pins");
    is_int(scan_with("SELECT set_config('a.b', 'c', false::boolean)", &track_all_rules, NULL),
           PIN_SET_CONFIG, "set_config with an is_local expression pins");
    is_int(scan_with("SELECT set_config('a.b', 'c', false)", &tracked_rules, NULL),
           PIN_SET_CONFIG, "set_config of a name the caller does not track pins");
}

static void test_reason_names(void)
{
    for (int r = PIN_NONE; r <= PIN_SET_BEFORE_SAVEPOINT_ROLLBACK; r++) {
        const char *name = pin_reason_name((enum pin_reason)r);

        ok(name != NULL && name[0] != '\0' && strcmp(name, "unknown") != 0,
           "reason %d has a name: %s", r, name);
    }
    is_str(pin_reason_name(PIN_TEMP_TABLE), "temporary table", "reason name: temporary table");
    is_str(pin_reason_name(PIN_ADVISORY_LOCK), "session advisory lock",
           "reason name: session advisory lock");
}

int main(void)
{
    test_set_of_untracked_parameters_pins();
    test_set_value_is_located();
    test_session_wide_forms_pin();
    test_transaction_local_set_does_not_pin();
    test_set_inside_other_statements_does_not_pin();
    test_tracked_parameters_are_reported_not_pinned();
    test_without_rules_nothing_is_tracked();
    test_role_is_never_tracked();
    test_reset_does_not_pin();
    test_discard_and_deallocate_are_reported();
    test_set_config_not_local_pins();
    test_set_config_local_does_not_pin();
    test_temporary_objects_pin();
    test_other_tables_do_not_pin();
    test_session_advisory_locks_pin();
    test_transaction_advisory_locks_do_not_pin();
    test_listen_cursor_prepare_load_pin();
    test_their_neighbours_do_not_pin();
    test_do_blocks_are_read_as_code();
    test_quotes_and_comments_hide_statements();
    test_what_quoting_does_not_hide();
    test_backslashes_follow_standard_conforming_strings();
    test_statement_heads_after_whitespace_parentheses_and_comments();
    test_unterminated_input_is_read_safely();
    test_statements_are_listed_in_order();
    test_summary_reports_the_first_pin();
    test_statements_that_clear_session_state_are_reported();
    test_transaction_ends_are_reported();
    test_transactions_closed_for_good_are_told();
    test_every_set_is_followed_when_everything_is_tracked();
    test_set_config_session_is_followed_when_tracked();
    test_reason_names();
    return tap_done();
}
