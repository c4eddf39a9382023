"""PostgreSQL restarts, stops and fails over under sluice: clients keep their connections, only
transactions in flight fail, clients that ask meanwhile wait and are served once it answers, and a
host list with target_session_attrs follows the primary."""

import os
import re
import socket
import threading
import time

import harness
from harness import check, check_equal, one_value, wait_for

suite = harness.Suite()
test = suite.test

# What PostgreSQL says to a session it ends at a shutdown, and what sluice says for a lost one.
LOST_SQLSTATES = {"57P01", "57P02", "57P03", "08006"}


def fresh_table(cluster, name):
    cluster.sql(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (client int, n int);"
                f"GRANT ALL ON {name} TO PUBLIC")


class TransactionClient:
    """One psycopg2 connection in a thread running small write transactions until told to stop.
    Counts committed transactions, transactions that failed with an error (the connection kept),
    and disconnections (after which it connects again, to go on)."""

    def __init__(self, endpoint, number, table):
        self.endpoint = endpoint
        self.number = number
        self.table = table
        self.committed = 0
        self.failed = []        # SQLSTATEs of the failed transactions
        self.disconnects = []   # what the client saw when its connection closed
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        conn = self.endpoint.connect(autocommit=False)
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} VALUES (%s, %s)", (self.number, n))
                    cur.execute("SELECT pg_sleep(0.01)")
                    cur.execute(f"SELECT count(*) FROM {self.table} WHERE client = %s", (self.number,))
                conn.commit()
                self.committed += 1
            except harness.psycopg2.Error as e:
                if conn.closed:
                    self.disconnects.append(str(e).strip())
                    conn = self.endpoint.connect(autocommit=False)
                    continue
                self.failed.append(e.pgcode)
                conn.rollback()
        conn.close()


def run_clients_through(t, s, n_clients, table, outage):
    """n_clients TransactionClients: each commits before outage() and three times after it."""
    clients = [TransactionClient(s, i, table) for i in range(n_clients)]
    try:
        wait_for(lambda: all(c.committed > 0 for c in clients), 30, interval=0.1,
                 what="every client committing before the outage")
        outage()
        back = time.monotonic()
        after = [c.committed for c in clients]
        wait_for(lambda: all(c.committed > a for c, a in zip(clients, after)), 60, interval=0.02,
                 what="every client committing after the outage")
        t.note(f"every client committed again {time.monotonic() - back:.2f}s after PostgreSQL accepted "
               "connections")
        wait_for(lambda: all(c.committed >= a + 3 for c, a in zip(clients, after)), 60, interval=0.1,
                 what="every client committing three more transactions after the outage")
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.thread.join(10)
    return clients


def check_only_in_flight_failed(t, clients, pool_size):
    disconnects = [d for c in clients for d in c.disconnects]
    failed = [code for c in clients for code in c.failed]
    t.note(f"{sum(c.committed for c in clients)} transactions committed, {len(failed)} failed "
           f"({sorted(set(failed))}), {len(disconnects)} clients disconnected")
    check(not disconnects, f"{len(disconnects)} clients disconnected, the first saw: {disconnects[:1]}")
    check(set(failed) <= LOST_SQLSTATES, f"failed transactions' SQLSTATEs: {failed}")
    # At most pool_size transactions hold a backend at once; a backend that dies as it is handed
    # out may cost one more client its transaction, never all of them.
    check(len(failed) <= 2 * pool_size, f"{len(failed)} transactions failed with a pool of {pool_size}")


@test("transaction mode: pg_ctl restart -m fast under 20 clients over 5 backends: only transactions "
      "in flight fail, no client is disconnected", timeout=180, sluice_only=True)
def restart_under_load(t):
    fresh_table(t.cluster, "outage_restart")
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 5})
    clients = run_clients_through(t, s, 20, "outage_restart",
                                  lambda: t.cluster.pg_ctl("restart", "-m", "fast"))
    check_only_in_flight_failed(t, clients, 5)


def longest_stall(output):
    """The longest run of pgbench -P 1 progress lines reporting 0 tps."""
    longest = current = 0
    for tps in re.findall(r"progress: [\d.]+ s, ([\d.]+) tps", output):
        current = current + 1 if float(tps) == 0 else 0
        longest = max(longest, current)
    return longest


def aborted_clients(output):
    """Clients pgbench gave up on: each names itself in an error line ("client 3 script 0 aborted
    in command 4 ...", "client 3 aborted while ...")."""
    return len(set(re.findall(r"error: client (\d+)", output)))


@test("pgbench -c 20 in transaction mode with pg_ctl restart -m fast in the middle: at most the "
      "clients with a transaction in flight abort, and the others go on at once", timeout=180, sluice_only=True)
def pgbench_restart(t):
    t.cluster.pgbench_database("outage_bench", 1)
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 5},
                 databases={"outage_bench": t.cluster.database_line(dbname="outage_bench")})
    run = harness.Background(harness.run_pgbench,
                             ["-n", "-c", "20", "-j", "2", "-T", "24", "-P", "1", "outage_bench"],
                             s.env(dbname="outage_bench"), 120)
    time.sleep(4)
    t.cluster.pg_ctl("restart", "-m", "fast")
    status, output, summary = run.result(150)
    aborted = aborted_clients(output)
    stall = longest_stall(output)
    t.note(f"pgbench exit {status}, {aborted} of 20 clients aborted, "
           f"{summary.get('processed')} transactions, tps {summary.get('tps')}, "
           f"longest run of seconds without a transaction: {stall}")
    check(summary.get("processed", 0) > 0, f"pgbench processed nothing:\n{output[-2000:]}")
    # Before, the pool refused to reconnect for server_login_retry (15 s) after the restart.
    check(stall < 10, f"pgbench went {stall} seconds without a transaction:\n{output[-3000:]}")
    # pgbench ends a client at any error; only those with a transaction on one of the 5 backends
    # had one (a backend dying as it is handed out may add one more).
    check(aborted <= 10, f"{aborted} of 20 pgbench clients aborted:\n{output[-3000:]}")


def wire_query_sent(s, sql):
    wire = s.wire(timeout=60)
    wire.login()
    wire.send(harness.query_message(sql))
    return wire


@test("pg_ctl stop for seconds, then start: the 1000 clients that asked meanwhile wait, cheaply, and "
      "are all served after it", timeout=180, sluice_only=True)
def stop_then_start(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 3, "query_wait_timeout": 120,
                           "max_client_conn": 1100},
                 databases={"otherdb": t.cluster.database_line()})
    before = s.connect()
    check_equal(one_value(before, "SELECT 'before'"), "before", "a client connected before the outage")
    t.cluster.pg_ctl("stop", "-m", "fast")
    try:
        # Logged in before, and new logins during the outage (the pool's defaults are known), and
        # a login to a pool that never had a backend, which waits for its first one.
        waiters = [wire_query_sent(s, f"SELECT 'served {i}'") for i in range(1000)]
        old_client = harness.Background(one_value, before, "SELECT 'old client served'")
        first_login = harness.Background(lambda: one_value(s.connect(dbname="otherdb", connect_timeout=60),
                                                            "SELECT 'new pool'"))
        cpu_start, wall_start = s.cpu_seconds(), time.monotonic()
        time.sleep(4)
        cpu = (s.cpu_seconds() - cpu_start) / (time.monotonic() - wall_start)
        t.note(f"sluice CPU while 1000 clients waited for a stopped PostgreSQL: {cpu * 100:.1f}% of a core")
        check(not old_client.done() and not first_login.done(),
              f"a client finished while PostgreSQL was stopped: {old_client.error(0) if old_client.done() else ''}"
              f"{first_login.error(0) if first_login.done() else ''}")
        check(cpu < 0.25, f"sluice used {cpu * 100:.0f}% of a core while clients waited (a reconnect loop?)")
    finally:
        t.cluster.pg_ctl("start")
    check_equal(old_client.result(60), "old client served", "the client connected before the outage")
    check_equal(first_login.result(60), "new pool", "a login to a pool without a backend yet")
    for i, wire in enumerate(waiters):
        result = harness.QueryResult()
        wire.read_until_ready(result)
        check_equal((result.errors, result.rows), ([], [(f"served {i}",)]), f"waiting client {i}")


@test("transaction mode: a client idle inside a transaction whose backend dies gets an error for that "
      "transaction, keeps its connection, and its next transaction works", timeout=120, sluice_only=True)
def idle_in_transaction_survives(t):
    fresh_table(t.cluster, "outage_idle")
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    conn = s.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outage_idle VALUES (1, 1)")
    t.cluster.pg_ctl("restart", "-m", "fast")
    error = harness.expect_pg_error(lambda: one_value(conn, "SELECT count(*) FROM outage_idle"),
                                    tuple(LOST_SQLSTATES), "the next statement of the lost transaction")
    t.note(f"client saw: {str(error).strip()}")
    check_equal(conn.closed, 0, "the client's connection is closed")
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO outage_idle VALUES (2, 2)")
    conn.commit()
    check_equal(t.cluster.sql("SELECT client FROM outage_idle"), [(2,)],
                "rows committed (the lost transaction's row must not be)")


@test("transaction mode: a SET inside a transaction whose backend dies is undone with it; the client's "
      "settings from before the transaction follow it to the new backend", timeout=120, sluice_only=True)
def lost_transaction_undoes_set(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    conn = s.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SET TimeZone = 'Asia/Tokyo'")
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("SET TimeZone = 'America/Lima'")
        cur.execute("SET work_mem = '7MB'")
    t.cluster.pg_ctl("restart", "-m", "fast")
    harness.expect_pg_error(lambda: one_value(conn, "SELECT 1"), tuple(LOST_SQLSTATES),
                            "the next statement of the lost transaction")
    conn.rollback()
    check_equal(one_value(conn, "SHOW TimeZone"), "Asia/Tokyo",
                "TimeZone after the lost transaction (the committed SET, not the lost one)")
    conn.rollback()
    check_equal(one_value(conn, "SHOW work_mem"), "4MB", "work_mem after the lost transaction")
    conn.rollback()


@test("transaction mode: a client whose query is running when the backend dies gets that query's "
      "error and keeps its connection", timeout=120, sluice_only=True)
def running_query_survives(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2})
    conn = s.connect()
    running = harness.Background(one_value, conn, "SELECT pg_sleep(30)")
    wait_for(lambda: any("pg_sleep" in (b["query"] or "") for b in t.cluster.backends("app")), 10,
             what="the query running on its backend")
    t.cluster.pg_ctl("restart", "-m", "fast")
    error = running.error(30)
    check(isinstance(error, harness.psycopg2.Error) and error.pgcode in LOST_SQLSTATES,
          f"the running query's error: {error!r}")
    check_equal(conn.closed, 0, "the client's connection is closed")
    check_equal(one_value(conn, "SELECT 'next'"), "next", "the client's next query")


@test("transaction mode: prepared statements and SET parameters come back on the new backends after a "
      "restart", timeout=120, sluice_only=True)
def session_state_rebuilt(t):
    try:
        import psycopg
    except ImportError:
        raise harness.Skip("psycopg (3) is not installed")
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2,
                           "max_prepared_statements": 100})
    conn = psycopg.connect(host=s.host, port=s.port, dbname=harness.APP_DB, user="app",
                           password="app_pw", sslmode="disable", autocommit=True, prepare_threshold=0)
    try:
        conn.execute("SET application_name = 'outage-client'")
        query = "SELECT %s::int + 1, current_setting('application_name')"
        check_equal(conn.execute(query, (1,), prepare=True).fetchone(), (2, "outage-client"),
                    "before the restart")
        t.cluster.pg_ctl("restart", "-m", "fast")
        check_equal(conn.execute(query, (41,), prepare=True).fetchone(), (42, "outage-client"),
                    "the prepared statement after the restart")
        check(not conn.closed, "the connection was closed")
    finally:
        conn.close()


@test("session mode: a client whose backend dies gets a clear error and its connection closes; it is "
      "never handed a new session silently", timeout=120, sluice_only=True)
def session_mode_lost(t):
    s = t.sluice(settings={"pool_mode": "session", "default_pool_size": 2})
    conn = s.connect()
    with conn.cursor() as cur:
        cur.execute("SET application_name = 'my-session'")
    t.cluster.pg_ctl("restart", "-m", "fast")
    error = harness.expect_pg_error(lambda: one_value(conn, "SELECT current_setting('application_name')"),
                                    None, "a query after the session's backend died")
    t.note(f"client saw: {str(error).strip()}")
    check(conn.closed or _fails(lambda: one_value(conn, "SELECT 1")),
          "the connection went on after its session was lost")
    check_equal(one_value(s.connect(), "SELECT 'fresh'"), "fresh", "a new connection")


def _fails(fn):
    try:
        fn()
    except harness.psycopg2.Error:
        return True
    return False


@test("a wrong backend password reaches waiting clients at once (28P01), not after query_wait_timeout",
      timeout=60, sluice_only=True)
def permanent_login_error(t):
    s = t.sluice(settings={"query_wait_timeout": 120},
                 databases={"wrongpw": t.cluster.database_line(password="not_the_password")})
    started = time.monotonic()
    # The pool's first backend fails: the client waiting at its login is told (psycopg2 has no
    # SQLSTATE for an error at connect; the message is PostgreSQL's).
    error = harness.expect_pg_error(lambda: one_value(s.connect(dbname="wrongpw"), "SELECT 1"), None,
                                    "a query through a pool whose backend password is wrong")
    check("password authentication failed" in str(error), f"the client saw: {error}")
    check(time.monotonic() - started < 60, "the error waited for query_wait_timeout")
    # A client already logged in (a pool with a backend once) gets it at its query, with its SQLSTATE.
    s2 = t.sluice(settings={"query_wait_timeout": 120})
    wire = s2.wire()
    wire.login()
    wire.query_ok("SELECT 1")
    s2.databases[harness.APP_DB] = t.cluster.database_line(password="not_the_password")
    s2.write_config()
    s2.reload()
    wait_for(lambda: "backend settings changed" in s2.log_text(), 10, what="the reload")
    result = harness.QueryResult()
    wire.send(harness.query_message("SELECT 1"))
    try:
        wire.read_until_ready(result)
    except (harness.ConnectionClosed, OSError):
        pass
    check_equal([e.get("C") for e in result.errors], ["28P01"],
                "a logged-in client's query once the backend password is wrong")


# ---- a network cut: a forwarder that stops passing bytes without closing anything ----------------

class CuttableForwarder:
    """Forwards TCP connections from its own port to PostgreSQL's. cut() blackholes the connections
    open at that moment, as a cut network does: bytes vanish, nothing is closed. Connections made
    afterwards are forwarded again (the network came back, or the name points elsewhere)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.generation = 0
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            generation = self.generation
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst, generation), daemon=True).start()

    def _pump(self, src, dst, generation):
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    return
                if generation == self.generation:
                    dst.sendall(data)
            except OSError:
                return

    def cut(self):
        self.generation += 1

    def close(self):
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@test("a network cut under idle backends: server_check_query gets no answer, the pool drops them and "
      "the waiting client is served on a new connection", timeout=120, sluice_only=True)
def network_cut_check(t):
    forwarder = CuttableForwarder(t.cluster.port)
    try:
        line = f"host=127.0.0.1 port={forwarder.port} dbname=appdb user=app password=app_pw"
        s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 2,
                               "server_check_query": "select 1", "server_check_delay": 0,
                               "server_connect_timeout": 2},
                     databases={harness.APP_DB: line})
        conn = s.connect()
        check_equal(one_value(conn, "SELECT 'before'"), "before", "a query before the cut")
        forwarder.cut()
        after = harness.Background(one_value, conn, "SELECT 'after the cut'")
        check_equal(after.result(40), "after the cut", "the query that waited through the cut")
        check("server_check_query got no answer" in s.log_text(), "sluice did not log the check's timeout")
    finally:
        forwarder.close()


# ---- failover: two clusters, host=a,b target_session_attrs=read-write ----------------------------

def set_read_only(cluster, read_only):
    conn = cluster.connect(options="-c default_transaction_read_only=off")
    try:
        with conn.cursor() as cur:
            cur.execute(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if read_only else 'off'}")
    finally:
        conn.close()


def new_cluster(t, name):
    cluster = harness.Cluster(os.path.join(t._suite.base_dir(), name))
    os.makedirs(cluster.base_dir)
    try:
        cluster.start()
        cluster.sql("CREATE TABLE whereami (name text); GRANT ALL ON whereami TO PUBLIC;"
                    f"INSERT INTO whereami VALUES ('{name}')")
        fresh_table(cluster, "outage_failover")
    except Exception:
        cluster.stop()
        raise
    return cluster


@test("failover: host=a,b target_session_attrs=read-write uses the writable one, and after the two swap "
      "roles clients carry on on the new primary", timeout=300, sluice_only=True)
def failover_follows_primary(t):
    first = new_cluster(t, "first")
    second = None
    try:
        second = new_cluster(t, "second")
        set_read_only(first, True)
        first.pg_ctl("restart", "-m", "fast")
        line = (f"host=127.0.0.1,127.0.0.1 port={first.port},{second.port} dbname=appdb user=app "
                f"password=app_pw target_session_attrs=read-write")
        s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 3},
                     databases={harness.APP_DB: line})
        conn = s.connect()
        check_equal(one_value(conn, "SELECT name FROM whereami"), "second", "the primary sluice chose")
        with conn.cursor() as cur:
            cur.execute("INSERT INTO whereami VALUES ('written')")

        def swap():
            set_read_only(first, False)
            first.pg_ctl("restart", "-m", "fast")
            set_read_only(second, True)
            second.pg_ctl("restart", "-m", "fast")

        clients = run_clients_through(t, s, 6, "outage_failover", swap)
        check_only_in_flight_failed(t, clients, 3)
        check_equal(one_value(conn, "SELECT name FROM whereami ORDER BY name LIMIT 1"), "first",
                    "the server the same client uses after the swap")
        check(first.sql("SELECT count(*) FROM outage_failover")[0][0] > 0,
              "no transaction reached the new primary")
    finally:
        first.stop()
        if second:
            second.stop()


if __name__ == "__main__":
    raise SystemExit(suite.run())
