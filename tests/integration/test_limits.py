"""Connection limits and timeouts, with PgBouncer's names and meanings: max_db_connections and
max_user_connections (global and per database/user, with eviction of idle backends), the reserve
pool, max_db_client_connections and max_user_client_connections, idle_transaction_timeout,
query_timeout, server_check_query/server_check_delay and pkt_buf. Backend counts are read from
pg_stat_activity."""

import time

import psycopg2

import harness
from harness import Background, check, check_equal, expect_pg_error, one_value, wait_for

suite = harness.Suite()
test = suite.test

OTHER_DB = "limits_other"


def begin(conn):
    """Opens a transaction that holds a backend; returns its pid."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def other_database(t):
    """A second PostgreSQL database, so that pg_stat_activity tells the two apart."""
    if not t.cluster.sql("SELECT 1 FROM pg_database WHERE datname = %s", (OTHER_DB,), dbname="postgres"):
        t.cluster.sql(f"CREATE DATABASE {OTHER_DB} OWNER app", dbname="postgres")


def any_user_line(t, dbname=harness.APP_DB, **extra):
    """A [databases] value without a forced user: one pool per client user."""
    parts = [f"host={t.cluster.host}", f"port={t.cluster.port}", f"dbname={dbname}"]
    return " ".join(parts + [f"{k}={v}" for k, v in extra.items()])


def start_with_users_section(t, settings, databases, users_section):
    """sluice with a [users] section (the harness writes [sluice] and [databases] only)."""
    s = t.sluice(settings=settings, databases=databases, start=False)
    s.write_config(s.config_text() + "\n[users]\n" + users_section + "\n")
    return s.start()


def still_waiting(background, what):
    time.sleep(1.0)
    check(not background.done(), what)


def refused(s, what, **login):
    wire = s.wire()
    try:
        wire.login(**login)
    except harness.PgError as error:
        check_equal(error.sqlstate, "53300", f"{what}: SQLSTATE")
        return error.message
    except harness.ConnectionClosed:
        raise harness.TestFailure(f"{what}: closed without an ErrorResponse")
    finally:
        wire.close()
    raise harness.TestFailure(f"{what}: the login succeeded")


# ---- max_db_connections ------------------------------------------------------------------------

@test("max_db_connections limits each database on its own, not all of them together",
      sluice_only=True)
def max_db_connections_per_database(t):
    other_database(t)
    s = t.sluice(settings={"max_db_connections": 2},
                 databases={"otherdb": t.cluster.database_line(dbname=OTHER_DB)})
    holders = [s.connect(), s.connect()]
    for conn in holders:
        begin(conn)
    third = Background(one_value, s.connect(), "SELECT 'third'")
    check_equal(one_value(s.connect(dbname="otherdb"), "SELECT 'other'"), "other",
                "a query on another database while appdb is at its limit")
    still_waiting(third, "a third appdb backend opened past max_db_connections = 2")
    check_equal(t.cluster.count_backends(datname=harness.APP_DB), 2, "appdb backends")
    with holders[0].cursor() as cur:
        cur.execute("ROLLBACK")
    check_equal(third.result(10), "third", "the waiting client once a backend is free")


@test("a database's own max_db_connections is enforced", sluice_only=True)
def max_db_connections_in_databases(t):
    s = t.sluice(databases={"appdb": t.cluster.database_line(pool_size=5, max_db_connections=1)})
    begin(s.connect())
    second = Background(one_value, s.connect(), "SELECT 'second'")
    still_waiting(second, "a second backend opened past the database's max_db_connections = 1")
    check_equal(t.cluster.count_backends(datname=harness.APP_DB), 1, "appdb backends")


@test("max_db_connections: an idle backend of another user's pool is closed to make room",
      sluice_only=True)
def max_db_connections_evicts_idle(t):
    s = t.sluice(settings={"auth_type": "trust", "max_db_connections": 1},
                 databases={"shared": any_user_line(t)})
    app = s.connect(dbname="shared")
    one_value(app, "SELECT 1")  # leaves app's backend idle in its pool
    check_equal([b["usename"] for b in t.cluster.backends(datname=harness.APP_DB)], ["app"],
                "backends before trust_user's query")
    trusting = s.connect(dbname="shared", user="trust_user", password=None)
    check_equal(Background(one_value, trusting, "SELECT current_user").result(10), "trust_user",
                "trust_user's query with the database at max_db_connections")
    wait_for(lambda: [b["usename"] for b in t.cluster.backends(datname=harness.APP_DB)] == ["trust_user"],
             10, what="app's idle backend closed for trust_user's")
    check_equal(one_value(app, "SELECT current_user"), "app", "app's next query (evicts again)")


# ---- max_user_connections ----------------------------------------------------------------------

@test("max_user_connections limits a user's backends over all databases", sluice_only=True)
def max_user_connections_global(t):
    other_database(t)
    s = t.sluice(settings={"max_user_connections": 2},
                 databases={"otherdb": t.cluster.database_line(dbname=OTHER_DB)})
    begin(s.connect())
    begin(s.connect(dbname="otherdb"))
    third = Background(one_value, s.connect(), "SELECT 'third'")
    still_waiting(third, "a third backend for app opened past max_user_connections = 2")
    check_equal(t.cluster.count_backends(usename="app"), 2, "app's backends")


@test("a user's own max_user_connections in [users] is enforced", sluice_only=True)
def max_user_connections_in_users(t):
    s = start_with_users_section(t, {"pool_mode": "session"},
                                 {"appdb": t.cluster.database_line(pool_size=6)},
                                 "app = max_user_connections=2")
    clients = [s.connect() for _ in range(6)]
    for conn in clients[:2]:
        one_value(conn, "SELECT 1")  # session mode: each keeps its backend
    waiting = [Background(one_value, conn, "SELECT 'late'") for conn in clients[2:]]
    time.sleep(1.0)
    check(not any(w.done() for w in waiting), "session clients got backends past max_user_connections")
    check_equal(t.cluster.count_backends(usename="app"), 2, "app's backends with six session clients")


@test("min_pool_size never evicts another pool's backend to fill itself", sluice_only=True)
def min_pool_size_does_not_evict(t):
    other_database(t)
    s = t.sluice(settings={"max_user_connections": 1},
                 databases={"appdb": t.cluster.database_line(min_pool_size=1),
                            "otherdb": t.cluster.database_line(dbname=OTHER_DB, min_pool_size=1)})
    wait_for(lambda: t.cluster.count_backends(usename="app") == 1, 10,
             what="one pre-warmed backend for app")
    seen = set()
    for _ in range(15):  # a few janitor rounds
        seen.update(b["pid"] for b in t.cluster.backends("app"))
        time.sleep(0.1)
    check_equal(len(seen), 1, "backends seen (the two pools took turns evicting each other)")
    check_equal(one_value(s.connect(dbname="otherdb"), "SELECT 'served'"), "served",
                "a client of either pool is still served (by eviction)")
    check_equal(one_value(s.connect(), "SELECT 'served'"), "served", "and of the other")


# ---- reserve pool ------------------------------------------------------------------------------

@test("reserve_pool_size: a client that waited reserve_pool_timeout gets an extra backend",
      sluice_only=True)
def reserve_pool(t):
    s = t.sluice(settings={"reserve_pool_size": 1, "reserve_pool_timeout": 0.5},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    holder = s.connect()
    held_pid = begin(holder)
    second = Background(one_value, s.connect(), "SELECT pg_backend_pid()")
    reserve_pid = second.result(10)
    check(reserve_pid != held_pid, "the waiting client got the held backend")
    third_conn = s.connect()
    begin(third_conn)  # takes the reserve backend and keeps it
    fourth = Background(one_value, s.connect(), "SELECT 'fourth'")
    still_waiting(fourth, "a backend opened past pool_size + reserve_pool_size")
    check_equal(t.cluster.count_backends(usename="app"), 2, "backends: pool_size 1 + reserve 1")


@test("a database's reserve_pool overrides reserve_pool_size; SHOW DATABASES shows it",
      sluice_only=True)
def reserve_pool_per_database(t):
    s = t.sluice(settings={"reserve_pool_size": 0, "reserve_pool_timeout": 0.5,
                           "admin_users": "app"},
                 databases={"appdb": t.cluster.database_line(pool_size=1, reserve_pool=1)})
    begin(s.connect())
    check_equal(Background(one_value, s.connect(), "SELECT 'reserve'").result(10), "reserve",
                "a waiting client served from the database's reserve pool")
    admin = s.connect(dbname="sluice")
    with admin.cursor() as cur:
        cur.execute("SHOW DATABASES")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, row)) for row in cur.fetchall()]
    check_equal([r["reserve_pool"] for r in rows if r["name"] == "appdb"], [1], "reserve_pool column")
    with admin.cursor() as cur:
        cur.execute("SHOW CONFIG")
        config = {row[0]: row[1] for row in cur.fetchall()}
    for name, value in (("reserve_pool_size", "0"), ("reserve_pool_timeout", "0.5"),
                        ("max_user_connections", "0"), ("max_db_client_connections", "0"),
                        ("max_user_client_connections", "0"), ("query_timeout", "0")):
        check_equal(config.get(name), value, f"SHOW CONFIG {name}")


# ---- client limits -----------------------------------------------------------------------------

@test("max_db_client_connections refuses the extra client of a database with 53300",
      sluice_only=True)
def max_db_client_connections(t):
    s = t.sluice(settings={"max_db_client_connections": 2},
                 databases={"otherdb": t.cluster.database_line(max_db_client_connections=1)})
    first, second = s.connect(), s.connect()
    message = refused(s, "a third appdb client")
    check("max_db_client_connections" in message and "appdb" in message, f"message: {message!r}")
    other = s.connect(dbname="otherdb")
    refused(s, "a second otherdb client (the database's own limit of 1)", database="otherdb")
    check_equal(one_value(first, "SELECT 1") + one_value(second, "SELECT 1") + one_value(other, "SELECT 1"),
                3, "the admitted clients still work")
    first.close()
    wait_for(lambda: one_value(s.connect(), "SELECT 'room'") == "room", 5, interval=0.2,
             what="a client once one of two left")


@test("a reload that lowers max_db_client_connections applies to the next client", sluice_only=True)
def max_db_client_connections_reload(t):
    s = t.sluice(settings={"max_db_client_connections": 5})
    kept = s.connect()
    s.settings["max_db_client_connections"] = 1
    s.write_config()
    s.reload_and_wait()
    refused(s, "a second client after the reload")
    check_equal(one_value(kept, "SELECT 'kept'"), "kept", "the client admitted before the reload")


@test("max_user_client_connections (global and in [users]) refuses with 53300", sluice_only=True)
def max_user_client_connections(t):
    s = start_with_users_section(t, {"max_user_client_connections": 2}, None,
                                 "scram_user = max_user_client_connections=1")
    app_clients = [s.connect(), s.connect()]
    message = refused(s, "a third app client")
    check("max_user_client_connections" in message and '"app"' in message, f"message: {message!r}")
    s.connect(user="scram_user", password="scram_pw")
    refused(s, "a second scram_user client", user="scram_user", password="scram_pw")
    check_equal(one_value(app_clients[0], "SELECT 'still'"), "still", "an admitted client")


# ---- timeouts ----------------------------------------------------------------------------------

@test("idle_transaction_timeout closes a client idle in a transaction (25P03) and rolls it back",
      sluice_only=True)
def idle_transaction_timeout(t):
    t.cluster.sql("DROP TABLE IF EXISTS idle_tx; CREATE TABLE idle_tx (n int); "
                  "GRANT ALL ON idle_tx TO PUBLIC")
    s = t.sluice(settings={"idle_transaction_timeout": 1},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    wire = s.wire()
    wire.login()
    wire.query_ok("BEGIN")
    wire.query_ok("INSERT INTO idle_tx VALUES (1)")
    errors = harness.error_messages(wire.read_until_closed(10))
    check_equal([e.get("C") for e in errors], ["25P03"], "SQLSTATE of the error before the close")
    check("idle-in-transaction" in errors[0].get("M", ""), f"message: {errors[0]!r}")
    conn = s.connect()
    check_equal(one_value(conn, "SELECT count(*) FROM idle_tx"), 0, "rows left by the closed client")
    check(not [b for b in t.cluster.backends("app") if b["state"] == "idle in transaction"],
          "a backend still idle in transaction")


@test("query_timeout: a longer query closes its backend; the client gets 57014", sluice_only=True)
def query_timeout(t):
    s = t.sluice(settings={"query_timeout": 1})
    wire = s.wire()
    wire.login()
    pid = int(wire.query_ok("SELECT pg_backend_pid()").rows[0][0])
    wire.send(harness.query_message("SELECT pg_sleep(60)"))
    errors = harness.error_messages(wire.read_until_closed(15))
    check_equal([e.get("C") for e in errors], ["57014"], "SQLSTATE of the error")
    check("query_timeout" in errors[0].get("M", ""), f"message: {errors[0]!r}")
    wait_for(lambda: pid not in [b["pid"] for b in t.cluster.backends("app")], 10,
             what="the timed-out query's backend to end")
    check_equal(one_value(s.connect(), "SELECT 'next'"), "next", "a new client")


# ---- server_check_query ------------------------------------------------------------------------

def check_log(t):
    t.cluster.sql("DROP TABLE IF EXISTS check_log; CREATE TABLE check_log (pid int); "
                  "GRANT ALL ON check_log TO PUBLIC")


@test("server_check_query runs on a backend idle longer than server_check_delay", sluice_only=True)
def server_check_query_runs(t):
    check_log(t)
    s = t.sluice(settings={"server_check_query": "INSERT INTO check_log SELECT pg_backend_pid()",
                           "server_check_delay": 0},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    conn = s.connect()
    pids = {one_value(conn, "SELECT pg_backend_pid()") for _ in range(4)}
    check_equal(len(pids), 1, "backends used (pool of one)")
    checks = one_value(conn, "SELECT count(*) FROM check_log WHERE pid = %s", (pids.pop(),))
    check(checks >= 3, f"server_check_query ran {checks} times for 4 hand-outs of an idle backend")


@test("server_check_query does not run within server_check_delay", sluice_only=True)
def server_check_query_skipped(t):
    check_log(t)
    s = t.sluice(settings={"server_check_query": "INSERT INTO check_log SELECT pg_backend_pid()",
                           "server_check_delay": 3600},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    conn = s.connect()
    for _ in range(3):
        one_value(conn, "SELECT 1")
    check_equal(one_value(conn, "SELECT count(*) FROM check_log"), 0, "checks run")


@test("a failed server_check_query closes that backend and another serves the client",
      sluice_only=True)
def server_check_query_fails(t):
    s = t.sluice(settings={"server_check_query": "SELECT 1/0", "server_check_delay": 0},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    conn = s.connect()
    first = one_value(conn, "SELECT pg_backend_pid()")
    second = one_value(conn, "SELECT pg_backend_pid()")
    check(second != first, "the backend that failed its check served the client")
    wait_for(lambda: first not in [b["pid"] for b in t.cluster.backends("app")], 10,
             what="the backend that failed its check to be closed")


# ---- pkt_buf -----------------------------------------------------------------------------------

def read_calls(pid):
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["syscr"])


@test("pkt_buf bounds the size of each read", sluice_only=True)
def pkt_buf_read_size(t):
    s = t.sluice(settings={"pkt_buf": 512})
    conn = s.connect()
    one_value(conn, "SELECT 1")
    size = 1_000_000
    before = read_calls(s.proc.pid)
    check_equal(len(one_value(conn, "SELECT repeat('x', %s)", (size,))), size, "result length")
    reads = read_calls(s.proc.pid) - before
    check(reads >= size // 512, f"{size} bytes from the backend came in {reads} reads of at most "
                                f"pkt_buf = 512 bytes")


if __name__ == "__main__":
    raise SystemExit(suite.run())
