"""Session and transaction pooling: who gets which backend, when, and how many there are."""

import io
import socket
import threading
import time

import harness
from harness import Background, check, check_equal, expect_pg_error, one_value, wait_for

suite = harness.Suite()
test = suite.test


def single_backend_db(t, **extra):
    return {"appdb": t.cluster.database_line(pool_size=1, **extra)}


# ---- session mode --------------------------------------------------------------------------------

@test("session mode: a SET lasts for the client's whole session")
def session_set_persists(t):
    s = t.sluice(settings={"pool_mode": "session"}, databases=single_backend_db(t))
    conn = s.connect()
    one_value(conn, "SELECT set_config('work_mem', '7MB', false)")
    for _ in range(3):
        check_equal(one_value(conn, "SHOW work_mem"), "7MB", "work_mem later in the same session")


@test("session mode: the next client gets the backend reset (server_reset_query)", sluice_only=True)
def session_reset_between_clients(t):
    s = t.sluice(settings={"pool_mode": "session", "server_reset_query": "DISCARD ALL"},
                 databases=single_backend_db(t))
    first = s.connect()
    first_pid = one_value(first, "SELECT pg_backend_pid()")
    with first.cursor() as cur:
        cur.execute("SET work_mem = '7MB'")
        cur.execute("PREPARE leftover AS SELECT 1")
        cur.execute("CREATE TEMP TABLE leftover_temp (x int)")
    first.close()
    second = s.connect()
    check_equal(one_value(second, "SELECT pg_backend_pid()"), first_pid,
                "backend pid (pool of one: the same backend is reused)")
    check_equal(one_value(second, "SHOW work_mem"), "4MB", "work_mem seen by the next client")
    check_equal(one_value(second, "SELECT count(*) FROM pg_prepared_statements"), 0,
                "prepared statements left for the next client")
    check_equal(one_value(second, "SELECT count(*) FROM pg_class WHERE relname = 'leftover_temp'"),
                0, "temp tables left for the next client")


@test("session mode: a client keeps one backend; a second client waits for it", sluice_only=True)
def session_holds_backend(t):
    s = t.sluice(settings={"pool_mode": "session"}, databases=single_backend_db(t))
    first = s.connect()
    pid = one_value(first, "SELECT pg_backend_pid()")
    second = s.connect()
    waiting = Background(one_value, second, "SELECT pg_backend_pid()")
    time.sleep(1.0)
    check(not waiting.done(), "the second client got a backend while the first still held it")
    check_equal(one_value(first, "SELECT pg_backend_pid()"), pid, "first client's backend")
    first.close()
    check_equal(waiting.result(10), pid, "second client's backend once the first left")


# ---- transaction mode ----------------------------------------------------------------------------

@test("transaction mode: two clients interleave transactions over a pool of one")
def transaction_interleave(t):
    t.cluster.sql("DROP TABLE IF EXISTS interleave; CREATE TABLE interleave (who text, n int);"
                  "GRANT ALL ON interleave TO PUBLIC")
    s = t.sluice(settings={"pool_mode": "transaction"}, databases=single_backend_db(t))
    a, b = s.connect(), s.connect()
    pids = set()
    for n in range(5):
        for name, conn in (("a", a), ("b", b)):
            with conn.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("INSERT INTO interleave VALUES (%s, %s)", (name, n))
                cur.execute("SELECT pg_backend_pid()")
                pids.add(cur.fetchone()[0])
                cur.execute("COMMIT")
    check_equal(t.cluster.sql("SELECT count(*) FROM interleave")[0][0], 10, "rows committed")
    if not t.direct:
        check_equal(len(pids), 1, "distinct backends used by two clients with pool_size=1")


@test("transaction mode: a second client waits while the only backend is in a transaction",
      sluice_only=True)
def transaction_waits_for_commit(t):
    s = t.sluice(settings={"pool_mode": "transaction"}, databases=single_backend_db(t))
    a, b = s.connect(), s.connect()
    with a.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
    waiting = Background(one_value, b, "SELECT 'b ran'")
    time.sleep(1.0)
    check(not waiting.done(), "client b ran while client a's transaction held the only backend")
    with a.cursor() as cur:
        cur.execute("COMMIT")
    check_equal(waiting.result(10), "b ran", "client b's query after a committed")


@test("transaction mode: BEGIN ... COMMIT stays on one backend while others run", sluice_only=True)
def transaction_keeps_backend(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    a, b = s.connect(), s.connect()
    with a.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid(), txid_current()")
        pid, txid = cur.fetchone()
        for _ in range(5):
            check(one_value(b, "SELECT pg_backend_pid()") != pid,
                  "another client ran on the backend of an open transaction")
            cur.execute("SELECT pg_backend_pid(), txid_current()")
            check_equal(cur.fetchone(), (pid, txid), "backend and transaction id inside BEGIN")
        cur.execute("COMMIT")


@test("transaction mode: a failed transaction keeps its backend until ROLLBACK", sluice_only=True)
def failed_transaction_keeps_backend(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    a, b = s.connect(), s.connect()
    with a.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        expect_pg_error(lambda: cur.execute("SELECT 1/0"), "22012", "division by zero")
        check(one_value(b, "SELECT pg_backend_pid()") != pid,
              "another client ran on a backend whose transaction had failed")
        expect_pg_error(lambda: cur.execute("SELECT 1"), "25P02", "query in a failed transaction")
        cur.execute("ROLLBACK")
    check_equal(one_value(a, "SELECT 'after rollback'"), "after rollback", "query after ROLLBACK")


@test("transaction mode: extended protocol with the unnamed statement, interleaved clients")
def extended_protocol_unnamed(t):
    s = t.sluice(settings={"pool_mode": "transaction"}, databases=single_backend_db(t))
    a, b = s.wire(), s.wire()
    a.login()
    b.login()
    for n in range(5):
        for name, wire in (("a", a), ("b", b)):
            result = wire.extended("SELECT $1::int * 2, $2::text", (n, name))
            check(not result.errors, f"extended query failed: {result.errors}")
            check_equal(result.rows, [(str(n * 2), name)], "extended query rows")
            check_equal(result.status, "I", "ReadyForQuery status")


@test("transaction mode: pipelined extended queries (several Syncs in one write) all answer")
def extended_protocol_pipelined(t):
    s = t.sluice(settings={"pool_mode": "transaction"}, databases=single_backend_db(t))
    a, b = s.wire(), s.wire()
    a.login()
    b.login()
    batch = b"".join(harness.parse_message("SELECT $1::int + 100") + harness.bind_message((n,))
                     + harness.execute_message() + harness.sync_message() for n in range(10))
    a.send(batch)
    b.send(batch)
    for wire in (a, b):
        for n in range(10):
            result = wire.read_until_ready()
            check(not result.errors, f"pipelined query {n} failed: {result.errors}")
            check_equal(result.rows, [(str(n + 100),)], f"pipelined query {n}")


@test("transaction mode: after an extended-protocol error the client's Sync reaches the same "
      "backend")
def extended_protocol_error_then_sync(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    a, b = s.wire(), s.wire()
    a.login()
    b.login()
    a.send(harness.parse_message("SELEC broken") + harness.bind_message()
           + harness.execute_message())
    a.send(harness.flush_message())
    kind, payload = a.read_message()
    check_equal(kind, "E", "reply to a bad Parse")
    check_equal(harness.parse_fields(payload).get("C"), "42601", "SQLSTATE of the bad Parse")
    busy = b.extended("SELECT pg_sleep(0.2), 'b'")
    check(not busy.errors, f"other client failed: {busy.errors}")
    a.send(harness.sync_message())
    result = a.read_until_ready()
    check_equal(result.status, "I", "ReadyForQuery after Sync")
    result = a.extended("SELECT 'a again'")
    check_equal(result.rows, [("a again",)], "query after the error")


@test("transaction mode: pgbench -M extended through a small pool has no failures", timeout=90)
def pgbench_extended(t):
    cluster = t.cluster
    status, output = harness.run_tool([harness.pg_tool("pgbench"), "-i", "-q", "-s", "1",
                                       "-U", "app", harness.APP_DB],
                                      dict(cluster.env(), PGUSER="app", PGPASSWORD="app_pw"))
    check_equal(status, 0, f"pgbench -i (direct) failed:\n{output[-2000:]}")
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    status, output, summary = harness.run_pgbench(
        ["-M", "extended", "-S", "-c", "6", "-j", "2", "-T", "3", harness.APP_DB], s.env())
    t.note(output[-1500:])
    check_equal(status, 0, "pgbench exit status")
    check_equal(summary.get("failed", 0), 0, "failed transactions")
    check(summary.get("processed", 0) > 0, "no transactions processed")


@test("transaction mode: Execute and Flush without Sync keep the client's backend")
def flush_without_sync(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    a, b = s.wire(), s.wire()
    a.login()
    b.login()
    a.send(harness.parse_message("SELECT pg_backend_pid()") + harness.bind_message()
           + harness.execute_message() + harness.flush_message())
    kinds, pid = [], None
    while "C" not in kinds:
        kind, payload = a.read_message()
        kinds.append(kind)
        if kind == "D":
            pid = a._parse_row(payload)[0]
    check_equal(kinds, ["1", "2", "D", "C"], "replies before Sync")
    for _ in range(3):
        other = b.query_ok("SELECT pg_backend_pid()").rows[0][0]
        check(other != pid, "another client ran on a backend between Flush and Sync")
    a.send(harness.sync_message())
    check_equal(a.read_until_ready().status, "I", "ReadyForQuery after the Sync")


def fresh_copy_table(t):
    t.cluster.sql("DROP TABLE IF EXISTS copy_rows; CREATE TABLE copy_rows (n int, v text);"
                  "GRANT ALL ON copy_rows TO PUBLIC")


@test("transaction mode: COPY FROM STDIN and COPY TO STDOUT through the pool")
def copy_through_pool(t):
    fresh_copy_table(t)
    s = t.sluice(settings={"pool_mode": "transaction"}, databases=single_backend_db(t))
    conn = s.connect()
    data = io.StringIO("".join(f"{n}\tv{n}\n" for n in range(2000)))
    with conn.cursor() as cur:
        cur.copy_expert("COPY copy_rows FROM STDIN", data)
    out = io.StringIO()
    with conn.cursor() as cur:
        cur.copy_expert("COPY (SELECT n FROM copy_rows ORDER BY n) TO STDOUT", out)
    check_equal(out.getvalue().split(), [str(n) for n in range(2000)], "rows copied back out")
    check_equal(one_value(s.connect(), "SELECT count(*) FROM copy_rows"), 2000,
                "rows another client sees")


@test("transaction mode: a COPY in progress keeps its backend; others use another")
def copy_keeps_backend(t):
    fresh_copy_table(t)
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    copier, other = s.wire(), s.wire()
    copier.login()
    other.login()
    copier.send(harness.query_message("COPY copy_rows (n) FROM STDIN"))
    kind, _ = copier.read_message()
    check_equal(kind, "G", "CopyInResponse")
    copier.send(harness.message("d", b"1\n2\n"))
    for _ in range(3):
        result = other.query_ok("SELECT count(*) FROM copy_rows")
        check_equal(result.rows, [("0",)], "rows visible while the COPY is open")
    copier.send(harness.message("d", b"3\n") + harness.message("c"))
    result = copier.read_until_ready()
    check(not result.errors, f"COPY failed: {result.errors}")
    check_equal(result.tags, ["COPY 3"], "COPY command tag")
    check_equal(other.query_ok("SELECT count(*) FROM copy_rows").rows, [("3",)], "rows after COPY")


@test("transaction mode: CopyFail aborts the COPY and the backend is clean for the next client")
def copy_fail(t):
    fresh_copy_table(t)
    s = t.sluice(settings={"pool_mode": "transaction"}, databases=single_backend_db(t))
    copier = s.wire()
    copier.login()
    copier.send(harness.query_message("COPY copy_rows (n) FROM STDIN"))
    kind, _ = copier.read_message()
    check_equal(kind, "G", "CopyInResponse")
    copier.send(harness.message("d", b"1\n") + harness.message("f", harness.cstr("client gave up")))
    result = copier.read_until_ready()
    check(result.errors, "CopyFail did not produce an error")
    check_equal(result.status, "I", "ReadyForQuery status after CopyFail")
    conn = s.connect()
    check_equal(one_value(conn, "SELECT count(*) FROM copy_rows"), 0, "rows after CopyFail")


@test("a client logs in while every backend is busy (login needs no backend)", sluice_only=True)
def login_without_free_backend(t):
    s = t.sluice(settings={"pool_mode": "transaction", "query_wait_timeout": 30},
                 databases=single_backend_db(t))
    holder = s.connect()
    with holder.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
    started = time.monotonic()
    wire = s.wire()
    check_equal(wire.login(), "I", "ReadyForQuery status after login")
    check(time.monotonic() - started < 3, "login waited for the busy backend")
    wire.send(harness.query_message("SELECT 'served'"))
    reply = Background(wire.read_until_ready)
    time.sleep(0.5)
    check(not reply.done(), "the query ran while the only backend was in another transaction")
    with holder.cursor() as cur:
        cur.execute("COMMIT")
    check_equal(reply.result(10).rows, [("served",)], "query once the backend was free")


# ---- limits --------------------------------------------------------------------------------------

class BackendMonitor:
    """Samples pg_stat_activity on a direct connection until stopped; remembers the maximum."""

    def __init__(self, cluster, usename):
        self.cluster = cluster
        self.usename = usename
        self.maximum = 0
        self.samples = 0
        self._stop = threading.Event()
        self._conn = cluster.connect()
        self._thread = Background(self._run)

    def _run(self):
        query = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                 "AND usename = %s")
        with self._conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute(query, (self.usename,))
                self.maximum = max(self.maximum, cur.fetchone()[0])
                self.samples += 1
                time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.result(10)
        self._conn.close()


def run_clients(s, count, work, timeout):
    """count threads each running work(conn) on its own connection; returns the errors."""
    errors = []
    lock = threading.Lock()
    start = threading.Barrier(count)

    def client():
        try:
            start.wait(timeout)
            conn = s.connect()
            try:
                work(conn)
            finally:
                conn.close()
        except Exception as e:
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        errors.append(harness.TestFailure(f"{stuck} clients still running after {timeout}s"))
    return errors


def short_transactions(conn):
    with conn.cursor() as cur:
        for _ in range(3):
            cur.execute("SELECT pg_sleep(0.01)")
        cur.execute("BEGIN")
        cur.execute("SELECT count(*) FROM pg_class")
        cur.execute("COMMIT")


@test("transaction mode: 200 concurrent clients never use more than pool_size=5 backends",
      timeout=150, sluice_only=True)
def pool_size_bound_transaction(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 5,
                           "max_client_conn": 400, "query_wait_timeout": 120})
    monitor = BackendMonitor(t.cluster, "app")
    try:
        errors = run_clients(s, 200, short_transactions, timeout=120)
    finally:
        monitor.stop()
    t.note(f"max backends seen: {monitor.maximum} in {monitor.samples} samples")
    check(not errors, f"{len(errors)} of 200 clients failed; first: {errors[:1]}")
    check(monitor.samples >= 5, f"only {monitor.samples} samples of pg_stat_activity")
    check(1 <= monitor.maximum <= 5, f"backends in use peaked at {monitor.maximum}, pool_size=5")


@test("session mode: 50 concurrent clients never use more than pool_size=5 backends",
      timeout=150, sluice_only=True)
def pool_size_bound_session(t):
    s = t.sluice(settings={"pool_mode": "session", "default_pool_size": 5,
                           "query_wait_timeout": 120})
    monitor = BackendMonitor(t.cluster, "app")
    try:
        errors = run_clients(s, 50, short_transactions, timeout=120)
    finally:
        monitor.stop()
    t.note(f"max backends seen: {monitor.maximum} in {monitor.samples} samples")
    check(not errors, f"{len(errors)} of 50 clients failed; first: {errors[:1]}")
    check(1 <= monitor.maximum <= 5, f"backends in use peaked at {monitor.maximum}, pool_size=5")


@test("query_wait_timeout: a client waiting for a busy pool gets an error and is closed",
      sluice_only=True)
def query_wait_timeout(t):
    s = t.sluice(settings={"pool_mode": "transaction", "query_wait_timeout": 2},
                 databases=single_backend_db(t))
    holder = s.connect()
    with holder.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
    waiter = s.wire()
    waiter.login()
    started = time.monotonic()
    waiter.send(harness.query_message("SELECT 'should not run'"))
    messages = waiter.read_until_closed(15)
    elapsed = time.monotonic() - started
    errors = harness.error_messages(messages)
    check(errors, f"no ErrorResponse before the close; got {[k for k, _ in messages]}")
    check(errors[0].get("C") in ("57014", "08P01"), f"SQLSTATE {errors[0].get('C')}: {errors[0]}")
    check(not any(kind == "D" for kind, _ in messages), "the waiting query ran anyway")
    check(1.5 <= elapsed <= 6, f"error after {elapsed:.1f}s with query_wait_timeout=2")
    with holder.cursor() as cur:
        cur.execute("SELECT 'holder still works'")
        cur.execute("COMMIT")
    check_equal(one_value(s.connect(), "SELECT 'next'"), "next", "a new client after the timeout")


@test("max_client_conn: the extra client gets 53300 and the others keep working", sluice_only=True)
def max_client_conn(t):
    s = t.sluice(settings={"max_client_conn": 3})
    clients = [s.connect(), s.connect(unix=True), s.connect()]
    extra = s.wire()
    try:
        extra.login()
        raise harness.TestFailure("a fourth client logged in with max_client_conn=3")
    except harness.PgError as error:
        check_equal(error.sqlstate, "53300", "SQLSTATE for too many clients")
        check("too many clients" in error.message.lower(), f"message: {error.message!r}")
    except harness.ConnectionClosed:
        raise harness.TestFailure("the extra client was closed without an ErrorResponse")
    check(extra.is_closed_within(5), "the refused client's connection is still open")
    expect_pg_error(lambda: s.connect(), None, "a fourth libpq client")
    for n, conn in enumerate(clients):
        check_equal(one_value(conn, "SELECT %s", (n,)), n, f"existing client {n}")
    clients[0].close()

    def new_client_works():
        return one_value(s.connect(), "SELECT 'room again'") == "room again"

    wait_for(new_client_works, 5, interval=0.2, what="a client once one of three left")


@test("server_idle_timeout: idle backends above min_pool_size are closed", sluice_only=True)
def server_idle_timeout(t):
    s = t.sluice(settings={"server_idle_timeout": 1, "min_pool_size": 0})
    conn = s.connect()
    one_value(conn, "SELECT 1")
    check(t.cluster.count_backends("app") >= 1, "no backend opened for a query")
    wait_for(lambda: t.cluster.count_backends("app") == 0, 8, interval=0.2,
             what="idle backends to be closed after server_idle_timeout=1")
    check_equal(one_value(conn, "SELECT 'still works'"), "still works", "query after the close")


@test("server_lifetime: a backend older than server_lifetime is replaced", sluice_only=True)
def server_lifetime(t):
    s = t.sluice(settings={"server_lifetime": 1}, databases=single_backend_db(t))
    conn = s.connect()
    first = one_value(conn, "SELECT pg_backend_pid()")

    def replaced():
        return one_value(conn, "SELECT pg_backend_pid()") != first

    wait_for(replaced, 8, interval=0.3, what="a new backend after server_lifetime=1")


@test("client_idle_timeout: an idle client is closed", sluice_only=True)
def client_idle_timeout(t):
    s = t.sluice(settings={"client_idle_timeout": 1})
    wire = s.wire()
    wire.login()
    wire.query_ok("SELECT 1")
    started = time.monotonic()
    wire.read_until_closed(8)
    check(time.monotonic() - started >= 0.8, "closed before client_idle_timeout")
    check_equal(one_value(s.connect(), "SELECT 1"), 1, "a new client")


@test("1000 idle clients: active clients are still served and idle ones wake up", timeout=180,
      sluice_only=True)
def many_idle_clients(t):
    s = t.sluice(settings={"pool_mode": "transaction", "auth_type": "md5",
                           "max_client_conn": 1200, "default_pool_size": 2},
                 users={"app": "app_pw"})
    idle = []
    for _ in range(1000):
        wire = s.wire(timeout=20)
        wire.login()
        idle.append(wire)
    active = s.connect()
    started = time.monotonic()
    for n in range(50):
        check_equal(one_value(active, "SELECT %s", (n,)), n, "active client's query")
    elapsed = time.monotonic() - started
    t.note(f"50 queries beside 1000 idle clients: {elapsed:.2f}s")
    check(elapsed < 10, f"50 queries took {elapsed:.1f}s beside 1000 idle clients")
    for wire in idle[::50]:
        check_equal(wire.query_ok("SELECT 'awake'").rows, [("awake",)], "an idle client's query")
    check(t.cluster.count_backends("app") <= 2, "more backends than pool_size=2")


@test("out of file descriptors: sluice neither spins nor dies, and recovers", timeout=90,
      sluice_only=True)
def out_of_descriptors(t):
    s = t.sluice(settings={"max_client_conn": 1000}, start=False)
    s.start(max_open_files=64)
    flood = []
    for _ in range(100):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect((s.host, s.port))
            # The first bytes of a startup packet: the listener defers accept until data arrives
            # (TCP_DEFER_ACCEPT); with them sluice takes each connection at once.
            sock.sendall(b"\x00\x00")
        except OSError:
            sock.close()
            continue
        flood.append(sock)
    wait_for(lambda: "Too many open files; pausing accepts" in s.log_text(), 15,
             what="sluice to log that accept() failed with EMFILE and accepts are paused")
    check(s.alive(), "sluice exited when it ran out of descriptors")
    before = s.cpu_seconds()
    time.sleep(2)
    busy = s.cpu_seconds() - before
    t.note(f"CPU used in 2s while out of descriptors: {busy:.2f}s")
    check(busy < 0.8, f"sluice used {busy:.2f}s of CPU in 2s while out of descriptors (spinning)")
    for sock in flood:
        sock.close()

    def serves():
        return one_value(s.connect(), "SELECT 'recovered'") == "recovered"

    wait_for(serves, 15, interval=0.5, what="a normal client after the descriptors came back")


@test("min_pool_size: backends are open before the first client, which then logs in at once",
      sluice_only=True)
def min_pool_size_prewarms(t):
    line = t.cluster.database_line(min_pool_size=2, application_name="prewarm")
    s = t.sluice(settings={"pool_mode": "transaction"}, databases={"appdb": line})
    warm = wait_for(lambda: [b for b in t.cluster.backends(usename="app")
                             if b["application_name"] == "prewarm"] or None, 10,
                    what="backends opened for min_pool_size")
    rows = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
        [b for b in t.cluster.backends(usename="app") if b["application_name"] == "prewarm"]), 10,
        what="two backends for min_pool_size = 2")
    check(len(warm) >= 1, "no backend before any client")
    check_equal(len(rows), 2, "backends open with no client connected")
    conn = s.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    check(pid in {r["pid"] for r in rows}, f"the first client ran on a pre-opened backend ({pid})")


if __name__ == "__main__":
    raise SystemExit(suite.run())
