"""Operating sluice: a restart without refused connections (so_reuseport, then SHUTDOWN of the old
process), and a pinned client as the admin console and /metrics show it."""

import re
import threading
import time

import psycopg2

import harness
from harness import ADMIN, check, check_equal, console, one_value, show, wait_for
from test_admin import TIMESTAMP, pool_row, run
from test_metrics import prometheus_parser, scrape

suite = harness.Suite()
test = suite.test

STREAM_THREADS = 4
STREAM_WARMUP_CONNECTIONS = 40  # served before the second sluice starts
STREAM_AFTER_EXIT_SECONDS = 1.0  # the stream runs on this long once the first sluice is gone
LOGIN_OK = re.compile(r"C-\d+: appdb/app@\S+ login ok")


def start(t, settings=None, port=None):
    """A sluice with an admin console and a /metrics endpoint; port: share another sluice's port."""
    metrics_port = harness.free_port()
    merged = {"admin_users": ADMIN[0], "metrics_listen_addr": "127.0.0.1", "metrics_port": metrics_port}
    merged.update(settings or {})
    if port:
        merged["listen_port"] = port
    users = dict(harness.default_users(t.cluster))
    users[ADMIN[0]] = ADMIN[1]
    s = t.sluice(settings=merged, users=users, start=False)
    if port:
        s.port = port
    s.metrics_url = f"http://127.0.0.1:{merged['metrics_port']}/metrics"
    s.start()
    return s


def failure_kind(error):
    """What a client of the stream saw go wrong, in the words an operator would use."""
    text = str(error)
    if "Connection refused" in text:
        return "refused: nothing listening"
    if "closed the connection unexpectedly" in text or "reset by peer" in text:
        return "closed: the connection ended without a reply"
    match = re.search(r"(FATAL|ERROR):\s+(.*)", text)
    if match:
        return f"{match.group(1)} {match.group(2).strip()}"
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


class ConnectionStream:
    """Threads that each connect, run SELECT 1 and disconnect, over and over, as functions do; every
    attempt that does not get its row back is kept as a failure."""

    def __init__(self, host, port, threads=STREAM_THREADS):
        self.host = host
        self.port = port
        self.served = 0
        self.failures = []  # (seconds since start, kind)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _once(self):
        """None if SELECT 1 came back, else what went wrong and when (at login or on the query)."""
        try:
            conn = psycopg2.connect(host=self.host, port=self.port, dbname=harness.APP_DB, user="app",
                                    password="app_pw", connect_timeout=10, sslmode="disable")
        except psycopg2.Error as e:
            return f"at login: {failure_kind(e)}"
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                check_equal(cur.fetchone()[0], 1, "SELECT 1")
            return None
        except psycopg2.Error as e:
            # An error sent while the client sat idle reaches it as a notice, before the query fails.
            told = "".join(conn.notices).strip()
            return f"on its query: {failure_kind(e)}" + (f" (after: {told})" if told else "")
        finally:
            conn.close()

    def _run(self):
        while not self._stop.is_set():
            failure = self._once()
            with self._lock:
                if failure:
                    self.failures.append((time.monotonic() - self._started, failure))
                else:
                    self.served += 1

    def served_so_far(self):
        with self._lock:
            return self.served

    def stop(self, timeout=30):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        check(not any(thread.is_alive() for thread in self._threads),
              f"a stream thread still runs {timeout}s after the stream was stopped")

    def failure_summary(self):
        counts = {}
        for _, kind in self.failures:
            counts[kind] = counts.get(kind, 0) + 1
        return "; ".join(f"{n} x {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def logins_served(s):
    return len(LOGIN_OK.findall(s.log_text()))


# ---- a restart without downtime ----------------------------------------------------------------------

@test("so_reuseport: a second sluice takes over the port and SHUTDOWN of the first refuses no "
      "connection", timeout=120, sluice_only=True)
def restart_without_refused_connections(t):
    old = start(t, settings={"so_reuseport": 1})
    stream = ConnectionStream(old.host, old.port)
    try:
        wait_for(lambda: stream.served_so_far() >= STREAM_WARMUP_CONNECTIONS, 30,
                 what=f"{STREAM_WARMUP_CONNECTIONS} connections through the first sluice")
        # Same configuration and port; its own unix socket directory, so each console stays reachable.
        new = start(t, settings={"so_reuseport": 1, "metrics_port": old.settings["metrics_port"]},
                    port=old.port)
        wait_for(lambda: logins_served(new) > 0, 15,
                 what="the kernel to hand some of the stream's connections to the second sluice")
        served_by_old = logins_served(old)

        admin = old.connect(dbname="sluice", user=ADMIN[0], password=ADMIN[1], unix=True)
        check_equal(run(admin, "SHUTDOWN"), "SHUTDOWN", "reply to SHUTDOWN on the first sluice")
        admin.close()
        check_equal(old.wait_exit(20), 0, "exit status of the first sluice after SHUTDOWN")
        served_at_exit = stream.served_so_far()
        time.sleep(STREAM_AFTER_EXIT_SECONDS)
        check(new.alive(), "the second sluice runs on")
        check(stream.served_so_far() > served_at_exit,
              "connections are served once the first sluice is gone")
    finally:
        stream.stop()
    t.note(f"{stream.served} connections served ({served_by_old} by the first sluice before "
           f"SHUTDOWN), {len(stream.failures)} failed")
    check_equal(len(stream.failures), 0,
                f"connections that failed during the restart ({stream.failure_summary()}; "
                f"first at {stream.failures[0][0]:.2f}s)" if stream.failures else "failed connections")
    check_equal(one_value(new.connect(), "SELECT 'second'"), "second", "a query through the second sluice")


@test("SHUTDOWN serves the clients it has until they leave: a login in progress completes, an idle "
      "client runs its next transaction, an open transaction commits", timeout=90, sluice_only=True)
def shutdown_serves_connected_clients(t):
    t.cluster.sql("DROP TABLE IF EXISTS shutdown_serves; CREATE TABLE shutdown_serves (n int);"
                  "GRANT ALL ON shutdown_serves TO PUBLIC")
    s = start(t, settings={"shutdown_timeout": 30})
    idle = s.connect()
    one_value(idle, "SELECT 1")
    in_transaction = s.connect()
    run(in_transaction, "BEGIN")
    run(in_transaction, "INSERT INTO shutdown_serves VALUES (1)")
    logging_in = s.wire()
    logging_in.send_startup("app")  # sluice now waits for the password
    admin = console(s)
    check_equal(run(admin, "SHUTDOWN"), "SHUTDOWN", "reply to SHUTDOWN")
    admin.close()
    wait_for(lambda: "SHUTDOWN command" in s.log_text(), 5, what="the shutdown to begin")

    check(s.alive(), "sluice exited while clients were connected")
    check(logging_in.finish_login("app_pw") == "I", "the login in progress completes")
    check_equal(logging_in.query_ok("SELECT 'logged in'").first_value(), "logged in",
                "a query from the client that logged in during SHUTDOWN")
    check_equal(one_value(idle, "SELECT 'still served'"), "still served", "the idle client's next query")
    run(in_transaction, "INSERT INTO shutdown_serves VALUES (2)")
    run(in_transaction, "COMMIT")
    check_equal(t.cluster.sql("SELECT count(*) FROM shutdown_serves")[0][0], 2, "rows committed")
    check(s.alive(), "sluice still serves its clients")

    logging_in.close()
    idle.close()
    in_transaction.close()
    started = time.monotonic()
    check_equal(s.wait_exit(10), 0, "exit status once the last client left")
    check(time.monotonic() - started < 5, "sluice exits soon after its last client leaves")


@test("SHUTDOWN serves a connection whose handshake completed before it and whose startup packet "
      "comes just after (the kernel defers such a connection's accept until its first bytes)",
      timeout=60, sluice_only=True)
def shutdown_serves_connections_still_deferred(t):
    s = start(t, settings={"shutdown_timeout": 30})
    early = [s.wire() for _ in range(8)]  # connected over TCP, nothing sent yet
    admin = console(s)
    check_equal(run(admin, "SHUTDOWN"), "SHUTDOWN", "reply to SHUTDOWN")
    admin.close()
    wait_for(lambda: "SHUTDOWN command" in s.log_text(), 5, interval=0.01, what="the shutdown to begin")
    for n, wire in enumerate(early):
        try:
            wire.send_startup("app")
            status = wire.finish_login("app_pw")
        except (harness.ConnectionClosed, OSError) as e:
            raise AssertionError(f"connection {n}, connected before SHUTDOWN, was dropped at its "
                                 f"login: {e}") from None
        check_equal(status, "I", f"connection {n}: its login")
        check_equal(wire.query_ok(f"SELECT {n}").first_value(), str(n), f"connection {n}: a query")
    for wire in early:
        wire.close()
    check_equal(s.wait_exit(10), 0, "exit status once the last client left")


# ---- pinning as the operator sees it ------------------------------------------------------------------

@test("a client pinned by CREATE TEMP TABLE: SHOW PINNED names it, the reason and the statement; SHOW POOLS "
      "and /metrics count it", sluice_only=True)
def pinned_client_is_visible(t):
    prometheus_parser()
    s = start(t, settings={"pool_mode": "transaction"})
    client = s.connect()
    one_value(client, "SELECT 1")
    admin = console(s)
    check_equal(show(admin, "PINNED"), [], "SHOW PINNED before any session state")
    check_equal(scrape(s).value("sluice_pool_pinned_clients", database="appdb", user="app"), 0,
                "sluice_pool_pinned_clients before")
    closed_before = scrape(s).value("sluice_client_connections_closed_total")

    run(client, "CREATE TEMP TABLE pinning (x int)")
    pid = one_value(client, "SELECT pg_backend_pid()")
    check_equal(one_value(client, "SELECT count(*) FROM pinning"), 0, "the temp table in the pinned session")

    rows = show(admin, "PINNED")
    check_equal(len(rows), 1, f"SHOW PINNED rows {rows}")
    row = rows[0]
    check_equal((row["database"], row["user"], row["reason"], row["statement"]),
                ("appdb", "app", "temporary table", "CREATE TEMP TABLE pinning (x int)"),
                "database, user, reason, statement")
    check(TIMESTAMP.match(row["since"] or ""), f"since {row['since']!r}")
    clients = {r["ptr"]: r for r in show(admin, "CLIENTS")}
    check(row["client"] in clients and clients[row["client"]]["database"] == "appdb",
          f"the pinned client {row['client']} in SHOW CLIENTS")
    check_equal(clients[row["client"]]["link"] is not None, True, "the pinned client keeps a backend")
    check_equal(pool_row(admin)["pinned"], 1, "SHOW POOLS pinned")

    page = scrape(s)
    check_equal(page.value("sluice_pool_pinned_clients", database="appdb", user="app"), 1,
                "sluice_pool_pinned_clients")
    check_equal(page.value("sluice_pool_pin_events_total", database="appdb", user="app",
                           reason="temp_table"), 1,
                "sluice_pool_pin_events_total{reason=\"temp_table\"}")
    check_equal(page.total("sluice_pool_pin_events_total"), 1, "pin events of every reason")
    check_equal(one_value(client, "SELECT pg_backend_pid()"), pid, "the backend of the pinned client")

    client.close()
    wait_for(lambda: pool_row(admin)["pinned"] == 0, 5, what="SHOW POOLS pinned back to 0")
    check_equal(show(admin, "PINNED"), [], "SHOW PINNED once the client left")
    page = scrape(s)
    check_equal(page.value("sluice_pool_pinned_clients", database="appdb", user="app"), 0,
                "sluice_pool_pinned_clients once the client left")
    check_equal(page.value("sluice_pool_pin_events_total", database="appdb", user="app",
                           reason="temp_table"), 1,
                "the pin event counter keeps its count")
    check_equal(page.value("sluice_client_connections_closed_total") - closed_before, 1,
                "client connections closed since the first scrape")


if __name__ == "__main__":
    raise SystemExit(suite.run())
