"""Clients that vanish and backends that die: nothing dirty is handed on, the pool heals."""

import re
import signal
import time

import harness
from harness import check, check_equal, expect_pg_error, one_value, wait_for

suite = harness.Suite()
test = suite.test


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
        # The clients wait for the server (query_wait_timeout), then hear why it failed: not
        # their own connect timeout.
        check("Connection refused" in str(error), f"the error names the cause: {error}")
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


# ---- allocations that fail (SLUICE_FAIL_ALLOC, src/fault.h) --------------------------------------

OUT_OF_MEMORY = "53200"


def require_fault_injection():
    """The hooks exist only in builds configured with --enable-fault-injection (the default of
    --enable-sanitizers); their variable's name is in the binary exactly then."""
    with open(harness.sluice_binary(), "rb") as f:
        if b"SLUICE_FAIL_ALLOC" not in f.read():
            raise harness.Skip("sluice was built without fault injection "
                               "(configure --enable-fault-injection, the default with --enable-sanitizers)")


def sluice_failing_allocation(t, site, n):
    """A sluice whose n-th allocation at site fails; one backend, so a backend whose replies went
    out of step would be the next client's. server_login_retry = 0: a failed backend login does
    not refuse the next clients for a while."""
    require_fault_injection()
    s = t.sluice(settings={"server_login_retry": 0},
                 databases={harness.APP_DB: t.cluster.database_line(pool_size=1)}, start=False)
    s.start(env={"SLUICE_FAIL_ALLOC": f"{site}:{n}"})
    return s


def fault_logged(s, site, n):
    return f"fault injection: allocation {n} at site {site} fails" in s.log_text()


def backend_login_ran_out_of_memory(s):
    return re.search(r"S-\d+: \S+ login to \S+ failed: out of memory", s.log_text()) is not None


def read_to_close(wire, result):
    """Reads replies into result until sluice closes the connection; fails if a ReadyForQuery
    comes instead."""
    try:
        wire.read_until_ready(result)
    except (harness.ConnectionClosed, OSError):
        return
    raise harness.TestFailure(f"the query completed (status {result.status!r}, errors {result.errors}) "
                              "where it should have failed")


def check_failed_out_of_memory(wire, result, what):
    check([e.get("C") for e in result.errors][-1:] == [OUT_OF_MEMORY],
          f"{what}: the last error is 53200 out of memory (errors: {result.errors})")
    check(wire.is_closed_within(5), f"{what}: the connection is closed after the error")


def check_serves(s, bystander, what):
    """bystander (logged in before the failure) and a new client both get their answers."""
    check_equal(bystander.query_ok("SELECT 'bystander'").rows, [("bystander",)], f"{what}: a client logged in before")
    late = s.wire()
    late.login()
    check_equal(late.query_ok("SELECT 'after'").rows, [("after",)], f"{what}: a client that logs in after")
    check_equal(late.query_ok("SELECT 'again'").rows, [("again",)], f"{what}: its second query")
    check(s.alive(), f"{what}: sluice is running")


@test("out of memory recording a query's reply: that client gets 53200 and is closed; others are served",
      sluice_only=True)
def reply_queue_allocation_fails(t):
    s = sluice_failing_allocation(t, "reply", 1)  # the first query of the process
    bystander = s.wire()
    bystander.login()
    victim = s.wire()
    victim.login()
    victim.send(harness.query_message("SELECT 'victim'"))
    result = harness.QueryResult()
    read_to_close(victim, result)
    check(fault_logged(s, "reply", 1), "sluice logged the failed allocation")
    check_equal(result.rows, [], "rows the victim received")
    check_failed_out_of_memory(victim, result, "the victim")
    check_serves(s, bystander, "after the failure")


@test("out of memory growing the reply queue mid-pipeline: the client gets 53200, its backend is not reused",
      sluice_only=True)
def reply_queue_growth_fails_mid_pipeline(t):
    # Allocation 1 makes room for 16 replies on the backend's first query; the 17th reply owed in
    # one pipeline needs allocation 2, when 16 of the messages have gone to the backend already.
    s = sluice_failing_allocation(t, "reply", 2)
    bystander = s.wire()
    bystander.login()
    victim = s.wire()
    victim.login()
    pipeline = b""
    for i in range(20):
        pipeline += (harness.parse_message(f"SELECT {i}") + harness.bind_message() +
                     harness.execute_message() + harness.sync_message())
    victim.send(pipeline)
    result = harness.QueryResult()
    for _ in range(20):
        try:
            victim.read_until_ready(result)
        except (harness.ConnectionClosed, OSError):
            break
    else:
        raise harness.TestFailure(f"all 20 rounds completed (errors {result.errors})")
    check(fault_logged(s, "reply", 2), "sluice logged the failed allocation")
    check_failed_out_of_memory(victim, result, "the victim")
    # The one backend still owed replies to the victim's pipeline: had it gone back to the pool,
    # these would receive the victim's rows.
    check_serves(s, bystander, "after the failure")


def prepared_session(wire, result):
    """A named statement prepared once and run twice over the extended protocol: sluice renames
    it, prepares it on the backend and rewrites each Bind (each a buffered write)."""
    wire.send(harness.parse_message("SELECT 41 + 1", name="answer") + harness.bind_message(statement="answer") +
              harness.execute_message() + harness.sync_message())
    wire.read_until_ready(result)
    wire.send(harness.bind_message(statement="answer") + harness.execute_message() + harness.sync_message())
    wire.read_until_ready(result)


@test("out of memory for any one buffered write, at login or in a query: that client gets 53200 and is "
      "closed, the next client is served", timeout=300, sluice_only=True)
def output_allocation_fails(t):
    in_query = []
    retried = []
    for n in range(1, 60):
        s = sluice_failing_allocation(t, "output", n)
        victim = s.wire()
        result = harness.QueryResult()
        phase = "login"
        try:
            victim.login()
            phase = "query"
            prepared_session(victim, result)
        except harness.PgError as e:  # refused at login
            result.errors.append(e.fields)
        except (harness.ConnectionClosed, OSError):
            pass
        else:
            check_equal(result.rows, [("42",), ("42",)], "the prepared statement's rows")
            if fault_logged(s, "output", n) and backend_login_ran_out_of_memory(s):
                # The write was the backend's, at its login: a failed backend login the client
                # need not see; it waited for the next attempt and was served.
                retried.append(n)
                s.stop()
                continue
            check(not fault_logged(s, "output", n), f"write {n} failed, yet the client saw no error")
            check(in_query, "no write failed while a query ran")
            t.note(f"{n - 1} writes checked, {len(in_query)} of them in a query, "
                   f"{len(retried)} of a backend login that was retried")
            return
        check(fault_logged(s, "output", n), f"write {n}: sluice logged the failed allocation")
        check_failed_out_of_memory(victim, result, f"write {n} ({phase})")
        if phase == "query":
            in_query.append(n)
        late = s.wire()
        late.login()
        after = harness.QueryResult()
        prepared_session(late, after)
        check_equal(after.rows, [("42",), ("42",)], f"write {n}: the next client's rows")
        s.stop()
    raise harness.TestFailure("the client still failed after 59 writes")


if __name__ == "__main__":
    raise SystemExit(suite.run())
