"""Clients that vanish and backends that die: nothing dirty is handed on, the pool heals."""

import signal
import time

import harness
from harness import check, check_equal, expect_pg_error, wait_for

suite = harness.Suite()
test = suite.test


def one_value(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def fresh_table(t, name):
    t.cluster.sql(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (v text);"
                  f"GRANT ALL ON {name} TO PUBLIC")


def single_backend(t, pool_mode):
    return t.sluice(settings={"pool_mode": pool_mode},
                    databases={"appdb": t.cluster.database_line(pool_size=1)})


def no_idle_in_transaction(t):
    return not [b for b in t.cluster.backends("app") if b["state"] and "in transaction" in b["state"]]


def check_clean_after_vanish(t, s, table):
    wait_for(lambda: no_idle_in_transaction(t), 10, interval=0.1,
             what="no backend left 'idle in transaction' after the client vanished")
    conn = s.connect()
    check_equal(one_value(conn, f"SELECT count(*) FROM {table} WHERE v = 'dirty'"), 0,
                "uncommitted row visible to the next client")
    check_equal(one_value(conn, "SELECT now() = statement_timestamp()"), True,
                "next client's statement runs outside an inherited transaction")
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES ('clean')")
    check_equal(t.cluster.sql(f"SELECT v FROM {table}"), [("clean",)], "committed rows")


def make_raw_vanish_test(pool_mode):
    @test(f"{pool_mode} mode: a raw client that vanishes mid-transaction leaves no dirty backend")
    def raw_vanish(t):
        fresh_table(t, "vanish_raw")
        s = single_backend(t, pool_mode)
        wire = s.wire()
        wire.login()
        result = wire.query("BEGIN; INSERT INTO vanish_raw VALUES ('dirty')")
        check(not result.errors, f"insert failed: {result.errors}")
        check_equal(result.status, "T", "ReadyForQuery status inside the transaction")
        wire.abort()
        check_clean_after_vanish(t, s, "vanish_raw")


def make_psql_vanish_test(pool_mode):
    @test(f"{pool_mode} mode: a psql killed with SIGKILL mid-transaction leaves no dirty backend")
    def psql_vanish(t):
        fresh_table(t, "vanish_psql")
        s = single_backend(t, pool_mode)
        psql = harness.Psql(s.env())
        psql.run_until_marker("BEGIN;\nINSERT INTO vanish_psql VALUES ('dirty');")
        check(t.cluster.sql("SELECT count(*) FROM vanish_psql")[0][0] == 0,
              "the row committed before the client vanished")
        psql.kill()
        check_clean_after_vanish(t, s, "vanish_psql")


for mode in ("transaction", "session"):
    make_raw_vanish_test(mode)
    make_psql_vanish_test(mode)


@test("a client that vanishes in the middle of sending a query leaves the pool working")
def vanish_mid_message(t):
    s = single_backend(t, "transaction")
    wire = s.wire()
    wire.login()
    wire.send(b"Q" + harness.struct.pack("!I", 100) + b"SELECT 'half")
    wire.abort()
    check_equal(one_value(s.connect(), "SELECT 'next'"), "next", "next client's query")


@test("a client that vanishes while its query runs: the backend is not handed on busy",
      sluice_only=True)
def vanish_during_query(t):
    s = single_backend(t, "transaction")
    wire = s.wire()
    wire.login()
    wire.send(harness.query_message("SELECT pg_sleep(2)"))
    time.sleep(0.3)
    wire.abort()
    started = time.monotonic()
    conn = s.connect()
    check_equal(one_value(conn, "SELECT 'next'"), "next", "next client's query")
    t.note(f"next client waited {time.monotonic() - started:.1f}s")
    wait_for(lambda: no_idle_in_transaction(t), 10, what="no backend idle in transaction")


@test("transaction mode: a backend terminated mid-transaction errors that client; the next works")
def terminated_in_transaction(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    victim = s.connect()
    with victim.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    t.cluster.sql("SELECT pg_terminate_backend(%s)", (pid,), dbname="postgres")
    expect_pg_error(lambda: one_value(victim, "SELECT 1"), None,
                    "query on a terminated backend")
    fresh = s.connect()
    new_pid = one_value(fresh, "SELECT pg_backend_pid()")
    check(new_pid != pid, "the next client was given the terminated backend")
    check_equal(one_value(fresh, "SELECT 'works'"), "works", "next client's query")


@test("session mode: a terminated backend errors its client; a new connection works")
def terminated_in_session(t):
    s = t.sluice(settings={"pool_mode": "session"})
    victim = s.connect()
    pid = one_value(victim, "SELECT pg_backend_pid()")
    t.cluster.sql("SELECT pg_terminate_backend(%s)", (pid,), dbname="postgres")
    expect_pg_error(lambda: one_value(victim, "SELECT 1"), None,
                    "query on a terminated backend")
    fresh = s.connect()
    check(one_value(fresh, "SELECT pg_backend_pid()") != pid,
          "the next client was given the terminated backend")


@test("transaction mode: idle pooled backends that die are dropped quietly", sluice_only=True)
def terminated_while_idle(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 3})
    conns = [s.connect() for _ in range(3)]
    for conn in conns:
        one_value(conn, "SELECT 1")
    pids = {b["pid"] for b in t.cluster.backends("app")}
    check(pids, "no pooled backends to terminate")
    for pid in pids:
        t.cluster.sql("SELECT pg_terminate_backend(%s)", (pid,), dbname="postgres")
    time.sleep(0.5)
    for n, conn in enumerate(conns):
        check_equal(one_value(conn, "SELECT %s", (n,)), n,
                    f"client {n}'s query after its idle backends were terminated")
    check(not pids & {b["pid"] for b in t.cluster.backends("app")}, "terminated pids still listed")


@test("the pool reconnects after PostgreSQL terminates every backend at once", sluice_only=True)
def terminated_all(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    conn = s.connect()
    one_value(conn, "SELECT 1")
    t.cluster.terminate_backends("app")
    time.sleep(0.5)

    def works():
        return one_value(s.connect(), "SELECT 'back'") == "back"

    wait_for(works, 10, interval=0.3, what="a working query after all backends were terminated")


@test("a database whose server is down gives its clients an error, not a hang", sluice_only=True)
def backend_down(t):
    dead_port = harness.free_port()
    line = f"host=127.0.0.1 port={dead_port} dbname=appdb user=app password=app_pw"
    s = t.sluice(settings={"query_wait_timeout": 5, "server_connect_timeout": 3,
                           "server_login_retry": 1},
                 databases={"deaddb": line})
    started = time.monotonic()
    try:
        conn = s.connect(dbname="deaddb")
        one_value(conn, "SELECT 1")
        raise harness.TestFailure("a query to a database whose server is down succeeded")
    except harness.psycopg2.Error as error:
        t.note(f"client saw: {str(error).strip()}")
    elapsed = time.monotonic() - started
    check(elapsed < 12, f"the error took {elapsed:.1f}s")
    check_equal(one_value(s.connect(), "SELECT 'others fine'"), "others fine",
                "a client of another database")


@test("a psql killed with SIGTERM while idle leaves sluice serving", sluice_only=True)
def psql_killed_idle(t):
    s = t.sluice()
    psql = harness.Psql(s.env())
    psql.run_until_marker("SELECT 1;")
    psql.proc.send_signal(signal.SIGTERM)
    psql.kill()
    check_equal(one_value(s.connect(), "SELECT 2"), 2, "next client")


if __name__ == "__main__":
    raise SystemExit(suite.run())
