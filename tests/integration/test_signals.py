"""Operating sluice: SIGHUP reloads the config, SIGTERM and SIGINT shut down gracefully."""

import signal
import time

import harness
from harness import Background, check, check_equal, expect_pg_error, one_value, wait_for

suite = harness.Suite()
test = suite.test


def open_transaction(conn):
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


@test("SIGHUP: a larger pool_size takes effect without a restart", sluice_only=True)
def reload_pool_size(t):
    s = t.sluice(settings={"pool_mode": "transaction", "query_wait_timeout": 2},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    holder = s.connect()
    held_pid = open_transaction(holder)
    expect_pg_error(lambda: one_value(s.connect(), "SELECT 1"), None,
                    "a second transaction with pool_size=1 (query_wait_timeout)")
    s.databases["appdb"] = t.cluster.database_line(pool_size=3)
    s.write_config()
    s.reload()

    def two_more_transactions():
        b, c = s.connect(), s.connect()
        try:
            pids = {open_transaction(b), open_transaction(c)}
            return len(pids | {held_pid}) == 3
        finally:
            b.close()
            c.close()

    wait_for(two_more_transactions, 10, interval=0.5,
             what="three concurrent transactions after raising pool_size to 3")
    pid = one_value(holder, "SELECT pg_backend_pid()")
    check_equal(pid, held_pid, "the open transaction's backend across the reload")
    check(s.alive(), "sluice exited")


@test("SIGHUP: a database added to the config becomes reachable", sluice_only=True)
def reload_adds_database(t):
    s = t.sluice()
    wire = s.wire()
    expect_pg_error(lambda: wire.login(database="added_db"), "3D000", "database before reload")
    s.databases["added_db"] = t.cluster.database_line()
    s.write_config()
    s.reload()

    def reachable():
        return one_value(s.connect(dbname="added_db"), "SELECT current_database()") == "appdb"

    wait_for(reachable, 10, interval=0.3, what="added_db after SIGHUP")
    check_equal(one_value(s.connect(), "SELECT 1"), 1, "the existing database")


@test("SIGHUP with a broken config keeps the old one running and says why", sluice_only=True)
def reload_broken_config(t):
    s = t.sluice()
    conn = s.connect()
    good = s.config_text()
    s.write_config(good.replace("pool_mode = transaction", "pool_mode = sometimes"))
    s.reload()
    time.sleep(1.0)
    check(s.alive(), "sluice exited after a reload with a broken config")
    check_equal(one_value(conn, "SELECT 'old config'"), "old config", "existing client")
    check_equal(one_value(s.connect(), "SELECT 'new client'"), "new client", "new client")
    log = s.log_text()
    check("pool_mode" in log, "the log does not name the bad setting (pool_mode)")
    check(s.config_path in log or "sluice.ini" in log, "the log does not name the config file")
    # A fixed file is picked up by the next reload.
    s.databases["added_db"] = t.cluster.database_line()
    s.write_config()
    s.reload()
    wait_for(lambda: s.connect(dbname="added_db"), 10, interval=0.3,
             what="the next good reload to take effect")


@test("SIGHUP with an unreadable config keeps the old one running", sluice_only=True)
def reload_missing_config(t):
    s = t.sluice()
    harness.os.rename(s.config_path, s.config_path + ".moved")
    s.reload()
    time.sleep(1.0)
    check(s.alive(), "sluice exited after a reload with its config file gone")
    check_equal(one_value(s.connect(), "SELECT 1"), 1, "new client")


@test("SIGTERM with no clients exits promptly with status 0", sluice_only=True)
def sigterm_idle(t):
    s = t.sluice()
    s.connect().close()
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    status = s.wait_exit(10)
    check(status is not None, "sluice still running 10s after SIGTERM")
    check_equal(status, 0, "exit status after SIGTERM")
    check(time.monotonic() - started < 3, "shutdown took more than 3s with nothing to wait for")


@test("SIGINT exits like SIGTERM", sluice_only=True)
def sigint_idle(t):
    s = t.sluice()
    s.signal(signal.SIGINT)
    check_equal(s.wait_exit(10), 0, "exit status after SIGINT")


@test("SIGTERM lets a running transaction finish, refuses new clients, then exits",
      sluice_only=True)
def sigterm_waits_for_transaction(t):
    t.cluster.sql("DROP TABLE IF EXISTS shutdown_rows; CREATE TABLE shutdown_rows (n int);"
                  "GRANT ALL ON shutdown_rows TO PUBLIC")
    s = t.sluice(settings={"shutdown_timeout": 20})
    conn = s.connect()
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO shutdown_rows VALUES (1)")
    s.signal(signal.SIGTERM)
    time.sleep(0.5)
    check(s.alive(), "sluice exited while a transaction was open")
    expect_pg_error(lambda: s.connect(), None, "a new client during shutdown")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO shutdown_rows VALUES (2)")
        cur.execute("COMMIT")
    status = s.wait_exit(10)
    check(status is not None, "sluice still running 10s after the last transaction ended")
    check_equal(status, 0, "exit status")
    check_equal(t.cluster.sql("SELECT n FROM shutdown_rows ORDER BY n"), [(1,), (2,)],
                "rows of the transaction that was running at SIGTERM")


@test("SIGTERM: a transaction that never ends is cut off after shutdown_timeout", sluice_only=True)
def sigterm_bounded(t):
    t.cluster.sql("DROP TABLE IF EXISTS shutdown_bounded; CREATE TABLE shutdown_bounded (n int);"
                  "GRANT ALL ON shutdown_bounded TO PUBLIC")
    s = t.sluice(settings={"shutdown_timeout": 2})
    conn = s.connect()
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO shutdown_bounded VALUES (1)")
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    status = s.wait_exit(10)
    elapsed = time.monotonic() - started
    check(status is not None, "sluice still running 10s after SIGTERM with shutdown_timeout=2")
    check(1.5 <= elapsed <= 6, f"exited {elapsed:.1f}s after SIGTERM with shutdown_timeout=2")
    wait_for(lambda: t.cluster.count_backends("app") == 0, 10,
             what="backends closed after shutdown")
    check_equal(t.cluster.sql("SELECT count(*) FROM shutdown_bounded")[0][0], 0,
                "rows of the unfinished transaction (must be rolled back)")


@test("SIGTERM while a client waits for a backend: the waiter gets an error, not a hang",
      sluice_only=True)
def sigterm_with_waiter(t):
    s = t.sluice(settings={"shutdown_timeout": 2},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    holder = s.connect()
    open_transaction(holder)
    waiter = s.connect()
    waiting = Background(one_value, waiter, "SELECT 1")
    time.sleep(0.3)
    s.signal(signal.SIGTERM)
    check(waiting.error(15) is not None, "the waiting query succeeded")
    check(s.wait_exit(10) is not None, "sluice did not exit")


if __name__ == "__main__":
    raise SystemExit(suite.run())
