"""Session settings and pins under transaction pooling, with the drivers that showed the bugs:
RESET ALL / RESET x / DISCARD ALL return a client to its own startup values (psycopg2), a plain
SET is followed per client and replayed wherever it lands instead of pinning (pgjdbc's connect-time
SET), settings changed in a transaction stay only if it commits, pins end when the client clears
the state that caused them, and a pool whose every backend is pinned says so."""

import os
import re
import shutil
import subprocess
import time
import urllib.request

import harness
from harness import Background, check, check_equal, one_value, wait_for

suite = harness.Suite()
test = suite.test

ADMIN = ("admin", "admin_pw")
PIN_LOG_LINE = "pinned to its backend"
STARTUP = dict(application_name="myapp", options="-c TimeZone=Asia/Tokyo")
JDBC_JAR = "/usr/share/java/postgresql.jar"


def run_statements(conn, statements):
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def app_and_zone(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('application_name'), current_setting('TimeZone')")
        return cur.fetchone()


def transaction_pool(t, pool_size=1, settings=None, users=None):
    all_settings = {"pool_mode": "transaction", "admin_users": ADMIN[0]}
    all_settings.update(settings or {})
    all_users = dict(users or harness.default_users(t.cluster))
    all_users.setdefault(ADMIN[0], ADMIN[1])
    return t.sluice(settings=all_settings, users=all_users,
                    databases={"appdb": t.cluster.database_line(pool_size=pool_size)})


def move_to_new_backends(t, s):
    """RECONNECT through the console: the pool's next transactions run on new backends. With
    several workers each prefers the idle backends it holds, so another client holding one is not
    enough to move a client to another backend."""
    if t.direct:
        return
    admin = s.connect(dbname="sluice", user=ADMIN[0], password=ADMIN[1])
    run_statements(admin, ["RECONNECT appdb"])
    admin.close()


def still_waiting(call, seconds=1.0):
    time.sleep(seconds)
    return not call.done()


# ---- RESET returns to the client's own startup values (psycopg2) --------------------------------

def check_reset_restores_startup(t, reset_statements, autocommit):
    """A client that logged in with application_name and options -c TimeZone changes both, then
    resets them: it gets its startup values back, as on a direct connection, on the backend it
    shares with a client that never set anything."""
    s = transaction_pool(t)
    other = s.connect()
    defaults = app_and_zone(other)
    check(defaults[1] != "Asia/Tokyo", f"the cluster's own TimeZone is the test value: {defaults}")
    conn = s.connect(autocommit=autocommit, **STARTUP)
    check_equal(app_and_zone(conn), ("myapp", "Asia/Tokyo"), "startup values after login")
    run_statements(conn, ["SET application_name = 'changed'", "SET TimeZone = 'Europe/Paris'"])
    if not autocommit:
        conn.commit()
    check_equal(app_and_zone(conn), ("changed", "Europe/Paris"), "values after SET")
    if not autocommit:
        conn.commit()
    run_statements(conn, reset_statements)
    # psycopg2 without autocommit: the SELECT runs in the same transaction as the reset.
    check_equal(app_and_zone(conn), ("myapp", "Asia/Tokyo"),
                f"values after {'; '.join(reset_statements)}")
    if not autocommit:
        conn.commit()
    check_equal(app_and_zone(other), defaults, "another client's values on the same backend")
    for round_number in range(2):
        check_equal(app_and_zone(conn), ("myapp", "Asia/Tokyo"),
                    f"values in a later transaction (round {round_number})")
        if not autocommit:
            conn.commit()
        check_equal(app_and_zone(other), defaults, f"the other client's (round {round_number})")
    check_equal(conn.get_parameter_status("application_name"), "myapp",
                "application_name the client was last told (ParameterStatus)")
    check_equal(conn.get_parameter_status("TimeZone"), "Asia/Tokyo",
                "TimeZone the client was last told (ParameterStatus)")


@test("psycopg2: RESET ALL returns to the client's startup application_name and options -c TimeZone")
def reset_all_restores_startup(t):
    check_reset_restores_startup(t, ["RESET ALL"], autocommit=True)


@test("psycopg2: RESET ALL inside a transaction: the same transaction sees the startup values")
def reset_all_in_transaction(t):
    check_reset_restores_startup(t, ["RESET ALL"], autocommit=False)


@test("psycopg2: RESET application_name and RESET TimeZone return to the startup values")
def reset_one_restores_startup(t):
    check_reset_restores_startup(t, ["RESET application_name", "SET TimeZone TO DEFAULT"],
                                 autocommit=True)


@test("psycopg2: DISCARD ALL returns to the client's startup values")
def discard_all_restores_startup(t):
    check_reset_restores_startup(t, ["DISCARD ALL"], autocommit=True)


@test("asyncpg: a pool's reset on release (RESET ALL...) keeps the startup server_settings")
def asyncpg_pool_reset_keeps_startup(t):
    try:
        import asyncio
        import asyncpg
    except ImportError:
        raise harness.Skip("asyncpg is not installed")
    s = transaction_pool(t)

    async def scenario():
        pool = await asyncpg.create_pool(
            host=s.host, port=s.port, user="app", password="app_pw", database=harness.APP_DB,
            ssl=False, min_size=1, max_size=1, statement_cache_size=0,
            server_settings={"application_name": "myapp", "TimeZone": "Asia/Tokyo"})
        seen = []
        try:
            for _ in range(3):
                async with pool.acquire() as conn:
                    seen.append(tuple(await conn.fetchrow(
                        "SELECT current_setting('application_name'), current_setting('TimeZone')")))
                    await conn.execute("SET TimeZone = 'Europe/Paris'; "
                                       "SET application_name = 'changed'")
                # released: asyncpg ran its reset query, RESET ALL included
        finally:
            await pool.close()
        return seen

    for i, row in enumerate(asyncio.run(scenario())):
        check_equal(row, ("myapp", "Asia/Tokyo"),
                    f"startup server_settings at acquire {i} (after the pool's reset)")


# ---- SET is followed, not pinned ----------------------------------------------------------------

JDBC_PROGRAM = r"""
import java.sql.*;

public class LongLivedConnections {
    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[3]);
        Connection[] connections = new Connection[n];
        for (int i = 0; i < n; i++) {
            connections[i] = DriverManager.getConnection(args[0], args[1], args[2]);
        }
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < n; i++) {
                try (Statement st = connections[i].createStatement();
                     ResultSet rs = st.executeQuery(
                         "SELECT current_setting('extra_float_digits'), " + i)) {
                    rs.next();
                    System.out.println("connection " + rs.getInt(2) + " extra_float_digits "
                                       + rs.getString(1));
                }
            }
        }
        for (Connection c : connections) {
            c.close();
        }
    }
}
"""


def run_java(t, directory, endpoint, n_connections):
    source = os.path.join(directory, "LongLivedConnections.java")
    with open(source, "w") as f:
        f.write(JDBC_PROGRAM)
    subprocess.run(["javac", "-cp", JDBC_JAR, "-d", directory, source], check=True, timeout=120,
                   capture_output=True)
    url = f"jdbc:postgresql://{endpoint.host}:{endpoint.port}/{harness.APP_DB}?sslmode=disable"
    return subprocess.run(["java", "-cp", f"{JDBC_JAR}:{directory}", "LongLivedConnections", url,
                           "app", "app_pw", str(n_connections)],
                          capture_output=True, text=True, timeout=120)


@test("pgjdbc: 4 long-lived connections on pool_size = 3 in transaction mode are all served",
      timeout=180)
def jdbc_connections_do_not_starve_the_pool(t):
    if not shutil.which("javac") or not shutil.which("java") or not os.path.exists(JDBC_JAR):
        raise harness.Skip("javac, java or pgjdbc is not installed")
    s = transaction_pool(t, pool_size=3, settings={"query_wait_timeout": 5})
    directory = os.path.join(suite.base_dir(), "jdbc")
    os.makedirs(directory, exist_ok=True)
    result = run_java(t, directory, s, 4)
    check_equal(result.returncode, 0, f"the Java program's exit status; stderr: {result.stderr}")
    lines = result.stdout.split("\n")
    for i in range(4):
        check(f"connection {i} extra_float_digits 3" in lines,
              f"connection {i} was served with its extra_float_digits: {result.stdout}")
    if not t.direct:
        check(PIN_LOG_LINE not in s.log_text(), "a JDBC connection was pinned")


@test("a client's SET TimeZone follows it across backends; others never see it; ROLLBACK drops it")
def set_follows_client_across_backends(t):
    s = transaction_pool(t, pool_size=2)
    a, holder, other = s.connect(autocommit=False), s.connect(), s.connect()
    default_zone = one_value(other, "SHOW TimeZone")
    run_statements(a, ["SET TimeZone = 'Asia/Tokyo'", "SET work_mem = '5MB'",
                       "SET search_path = \"Mixed Case\", public"])
    a.commit()
    run_statements(a, ["SET TimeZone = 'America/New_York'", "SET work_mem = '6MB'"])
    a.rollback()
    run_statements(a, ["SET LOCAL work_mem = '7MB'"])
    a.commit()
    run_statements(a, ["SET statement_timeout = '3s'"])
    try:
        run_statements(a, ["SELECT 1/0"])
    except Exception:
        pass
    a.rollback()
    pids = set()
    for round_number in range(4):
        if round_number == 2:
            move_to_new_backends(t, s)
        # Another client holds a backend in a transaction: A's next one runs on the other.
        run_statements(holder, ["BEGIN", "SELECT 1"])
        with a.cursor() as cur:
            cur.execute("SELECT current_setting('TimeZone'), current_setting('work_mem'), "
                        "current_setting('search_path'), current_setting('statement_timeout'), "
                        "pg_backend_pid()")
            zone, work_mem, search_path, timeout, pid = cur.fetchone()
        # The holder lets go first: A's backend is then the most recently used, the holder's next.
        run_statements(holder, ["COMMIT"])
        a.commit()
        pids.add(pid)
        check_equal((zone, work_mem, search_path, timeout),
                    ("Asia/Tokyo", "5MB", '"Mixed Case", public', "0"),
                    f"A's settings (round {round_number})")
        check_equal(one_value(other, "SELECT current_setting('TimeZone') || ' ' || "
                                     "current_setting('work_mem')"),
                    f"{default_zone} 4MB", f"another client's settings (round {round_number})")
    if not t.direct:
        check(len(pids) >= 2, f"A's transactions ran on {len(pids)} backend(s), want two or more")
        check(PIN_LOG_LINE not in s.log_text(), "a SET pinned its client")


def settings_on_each_backend(t, s, a, holder, sql, rounds=4):
    """(row, backend pid) of sql run by A (autocommit), with another client holding the other
    backend of a pool of two in turn, and the backends replaced halfway, so A's transactions
    run on more than one backend."""
    results = []
    for round_number in range(rounds):
        if round_number == rounds // 2:
            move_to_new_backends(t, s)
        run_statements(holder, ["BEGIN", "SELECT 1"])
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(sql + ", pg_backend_pid()")
            row = cur.fetchone()
            # The holder lets go first: A's backend is then the most recently used, the
            # holder's next.
            run_statements(holder, ["COMMIT"])
            cur.execute("COMMIT")
        results.append((row[:-1], row[-1]))
    return results


@test("replay: values that need quoting, lists, TO DEFAULT, reported and unreported parameters")
def replay_is_exact(t):
    s = transaction_pool(t, pool_size=2)
    a, holder, other = s.connect(), s.connect(), s.connect()
    defaults = one_value(other, "SELECT current_setting('DateStyle')")
    run_statements(a, ["SET myapp.note = 'it''s; -- not a comment'",
                       "SET application_name = 'o''brien'",
                       "SET DateStyle = SQL, DMY",
                       "SET search_path = other_schema, public",
                       "SET search_path TO DEFAULT",
                       "SET work_mem = '8MB'",
                       "SET work_mem TO DEFAULT",
                       "SELECT set_config('myapp.other', 'x''y', false)"])
    results = settings_on_each_backend(
        t, s, a, holder, "SELECT current_setting('myapp.note'), current_setting('application_name'), "
                   "current_setting('DateStyle'), current_setting('search_path'), "
                   "current_setting('work_mem'), current_setting('myapp.other')")
    for row, _ in results:
        check_equal(row, ("it's; -- not a comment", "o'brien", "SQL, DMY", '"$user", public',
                          "4MB", "x'y"), "A's settings")
    if not t.direct:
        check(len({pid for _, pid in results}) >= 2, "A's transactions ran on one backend only")
        check(PIN_LOG_LINE not in s.log_text(), "a SET pinned its client")
    check_equal(one_value(other, "SELECT current_setting('DateStyle') || ' ' || "
                                 "current_setting('application_name')"), defaults + " ",
                "another client's settings")


@test("SET ... FROM CURRENT keeps a SET LOCAL value for the session, as in PostgreSQL")
def set_from_current(t):
    s = transaction_pool(t, pool_size=2)
    a, other = s.connect(autocommit=False), s.connect()
    run_statements(a, ["SET LOCAL lock_timeout = '2s'", "SET lock_timeout FROM CURRENT"])
    a.commit()
    for round_number in range(3):
        check_equal(one_value(other, "SHOW lock_timeout"), "0",
                    f"another client's lock_timeout (round {round_number})")
        check_equal(one_value(a, "SHOW lock_timeout"), "2s", f"A's lock_timeout (round {round_number})")
        a.commit()


@test("ROLLBACK TO SAVEPOINT keeps the settings made before the savepoint, as in PostgreSQL")
def savepoint_rollback_keeps_earlier_settings(t):
    s = transaction_pool(t, pool_size=2)
    a, other = s.connect(autocommit=False), s.connect()
    run_statements(a, ["SET work_mem = '5MB'", "SAVEPOINT s", "SET work_mem = '6MB'",
                       "ROLLBACK TO SAVEPOINT s"])
    a.commit()
    run_statements(a, ["SET statement_timeout = '4s'", "SAVEPOINT s"])
    try:
        run_statements(a, ["SELECT 1/0"])
    except Exception:
        pass
    run_statements(a, ["ROLLBACK TO SAVEPOINT s"])
    a.commit()
    for round_number in range(3):
        check_equal(one_value(other, "SELECT current_setting('work_mem')"), "4MB",
                    f"another client's work_mem (round {round_number})")
        check_equal(one_value(a, "SELECT current_setting('work_mem') || ' ' || "
                                 "current_setting('statement_timeout')"), "5MB 4s",
                    f"A's settings (round {round_number})")
        a.commit()


@test("pipelined Syncs: a SET in a group that fails is dropped, one in a group that succeeds kept")
def pipelined_groups_settle_separately(t):
    s = transaction_pool(t, pool_size=2)
    a, holder = s.wire(), s.connect()
    a.login()

    def statement(sql):
        return harness.parse_message(sql) + harness.bind_message() + harness.execute_message()

    a.send(statement("SET work_mem = '5MB'") + harness.sync_message()
           + statement("SET statement_timeout = '3s'") + statement("SELECT 1/0")
           + harness.sync_message())
    first, second = a.read_until_ready(), a.read_until_ready()
    check_equal(first.errors, [], "errors of the first group")
    check_equal([e.get("C") for e in second.errors], ["22012"], "SQLSTATEs of the second group")
    pids = set()
    for round_number in range(4):
        if round_number == 2:
            move_to_new_backends(t, s)
        # Another client holds a backend meanwhile: A's transactions alternate between the two.
        run_statements(holder, ["BEGIN", "SELECT 1"])
        a.query_ok("BEGIN")
        row = a.query_ok("SELECT current_setting('work_mem'), current_setting('statement_timeout'), "
                         "pg_backend_pid()").rows[0]
        run_statements(holder, ["COMMIT"])
        a.query_ok("COMMIT")
        check_equal(row[:2], ("5MB", "0"), f"A's settings (round {round_number})")
        pids.add(row[2])
    if not t.direct:
        check(len(pids) >= 2, f"A's transactions ran on {len(pids)} backend(s), want two or more")


# ---- pins end when the state is cleared ---------------------------------------------------------

def check_pin_released(t, make_state, clear_state, state_is_gone):
    """Pool of one: A makes session state and keeps the backend (B waits); once A clears that
    state B is served while A is still connected, and nothing of A's is left on the backend."""
    s = transaction_pool(t)
    a, b = s.connect(), s.connect()
    make_state(a)
    waiting = Background(one_value, b, "SELECT pg_backend_pid()")
    check(still_waiting(waiting), "B ran on the backend A is pinned to")
    clear_state(a)
    pid = waiting.result(10)
    check_equal(one_value(a, "SELECT pg_backend_pid()"), pid, "A's backend (pool of one)")
    state_is_gone(b)
    check(PIN_LOG_LINE in s.log_text(), "the pin was not logged")
    check("no longer pinned" in s.log_text(), "the end of the pin was not logged")


@test("DISCARD ALL ends a temp table's pin", sluice_only=True)
def discard_all_releases(t):
    check_pin_released(
        t, lambda a: run_statements(a, ["CREATE TEMP TABLE gone (x int)", "LISTEN some_channel"]),
        lambda a: run_statements(a, ["DISCARD ALL"]),
        lambda b: check_equal(one_value(b, "SELECT count(*) FROM pg_class WHERE relname = 'gone'"),
                              0, "A's temp table"))


@test("DISCARD TEMP ends a temp table's pin", sluice_only=True)
def discard_temp_releases(t):
    check_pin_released(
        t, lambda a: run_statements(a, ["CREATE TEMP TABLE gone (x int)"]),
        lambda a: run_statements(a, ["DISCARD TEMP"]),
        lambda b: check_equal(one_value(b, "SELECT count(*) FROM pg_class WHERE relname = 'gone'"),
                              0, "A's temp table"))


@test("pg_advisory_unlock_all() ends an advisory lock's pin", sluice_only=True)
def advisory_unlock_all_releases(t):
    check_pin_released(
        t, lambda a: one_value(a, "SELECT pg_advisory_lock(4343)"),
        lambda a: one_value(a, "SELECT pg_advisory_unlock_all()"),
        lambda b: check_equal(one_value(b, "SELECT count(*) FROM pg_locks "
                                           "WHERE locktype = 'advisory'"), 0, "advisory locks"))


@test("UNLISTEN * ends a LISTEN's pin", sluice_only=True)
def unlisten_all_releases(t):
    check_pin_released(
        t, lambda a: run_statements(a, ["LISTEN some_channel"]),
        lambda a: run_statements(a, ["UNLISTEN *"]),
        lambda b: check_equal(one_value(b, "SELECT count(*) FROM pg_listening_channels()"), 0,
                              "channels listened to"))


@test("CLOSE ALL ends a cursor WITH HOLD's pin", sluice_only=True)
def close_all_releases(t):
    check_pin_released(
        t, lambda a: run_statements(a, ["DECLARE held CURSOR WITH HOLD FOR SELECT 1"]),
        lambda a: run_statements(a, ["CLOSE ALL"]),
        lambda b: check_equal(one_value(b, "SELECT count(*) FROM pg_cursors"), 0, "open cursors"))


@test("a pin stays while part of the state is left: UNLISTEN * with a temp table still there",
      sluice_only=True)
def partial_clear_keeps_pin(t):
    s = transaction_pool(t)
    a, b = s.connect(), s.connect()
    run_statements(a, ["CREATE TEMP TABLE kept (x int)", "LISTEN some_channel"])
    run_statements(a, ["UNLISTEN *"])
    waiting = Background(one_value, b, "SELECT 1")
    check(still_waiting(waiting), "B ran while A still holds a temp table")
    check_equal(one_value(a, "SELECT count(*) FROM kept"), 0, "A's temp table")
    a.close()
    check_equal(waiting.result(10), 1, "B once A left")


@test("an UNLISTEN * that is rolled back does not end the pin", sluice_only=True)
def rolled_back_clear_keeps_pin(t):
    s = transaction_pool(t)
    a, b = s.connect(autocommit=False), s.connect()
    run_statements(a, ["LISTEN some_channel"])
    a.commit()
    run_statements(a, ["UNLISTEN *"])
    a.rollback()
    waiting = Background(one_value, b, "SELECT 1")
    check(still_waiting(waiting), "B ran while A still listens")
    check_equal(one_value(a, "SELECT count(*) FROM pg_listening_channels()"), 1,
                "channels A listens to")
    a.rollback()
    a.close()
    check_equal(waiting.result(10), 1, "B once A left")


# ---- a pool whose every backend is pinned says so -----------------------------------------------

def metric_value(url, name):
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    pattern = re.compile(r'^' + name + r'\{([^}]*)\} (\S+)$', re.M)
    for labels, value in pattern.findall(body):
        if 'database="appdb"' in labels and 'user="app"' in labels:
            return float(value)
    return None


@test("every backend pinned with clients waiting: SHOW POOLS, /metrics and the log say so",
      sluice_only=True)
def all_pinned_is_reported(t):
    users = dict(harness.default_users(t.cluster))
    users[ADMIN[0]] = ADMIN[1]
    metrics_port = harness.free_port()
    s = transaction_pool(t, settings={"admin_users": ADMIN[0], "metrics_listen_addr": "127.0.0.1",
                                      "metrics_port": metrics_port}, users=users)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    admin = s.connect(dbname="sluice", user=ADMIN[0], password=ADMIN[1])

    def pools_row():
        with admin.cursor() as cur:
            cur.execute("SHOW POOLS")
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, row)) for row in cur.fetchall()]
        check_equal(names[:16], ["database", "user", "cl_active", "cl_waiting",
                                 "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
                                 "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used",
                                 "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode"],
                    "PgBouncer's SHOW POOLS columns come first, unchanged")
        return [r for r in rows if r["database"] == "appdb"][0]

    a, b = s.connect(), s.connect()
    run_statements(a, ["SELECT 1"])
    check_equal(pools_row()["waiting_all_pinned"], 0, "waiting_all_pinned with nobody pinned")
    check_equal(metric_value(metrics_url, "sluice_pool_waiting_all_pinned_clients"), 0.0,
                "metric with nobody pinned")
    run_statements(a, ["CREATE TEMP TABLE hog (x int)"])
    waiting = Background(one_value, b, "SELECT 1")
    wait_for(lambda: pools_row()["waiting_all_pinned"] == 1, 5,
             what="SHOW POOLS to count the client waiting on a fully pinned pool")
    check_equal(metric_value(metrics_url, "sluice_pool_waiting_all_pinned_clients"), 1.0,
                "metric while every backend is pinned and B waits")
    lines = wait_for(lambda: [line for line in s.log_text().splitlines()
                              if "backends are pinned" in line], 5, what="the log warning")
    check("appdb/app" in lines[0], f"the warning names the pool: {lines[0]}")
    time.sleep(1)
    check_equal(len([line for line in s.log_text().splitlines() if "backends are pinned" in line]),
                1, "warnings within a second (rate-limited)")
    run_statements(a, ["DISCARD ALL"])
    check_equal(waiting.result(10), 1, "B once A cleared its state")
    check_equal(pools_row()["waiting_all_pinned"], 0, "waiting_all_pinned once B was served")
    check_equal(metric_value(metrics_url, "sluice_pool_waiting_all_pinned_clients"), 0.0,
                "metric once B was served")


if __name__ == "__main__":
    raise SystemExit(suite.run())
