"""Where features meet: cancel requests, backend loss, timeouts and the backend state machine."""

import time

import harness
from harness import Background, check, check_equal, one_value, show, wait_for

suite = harness.Suite()
test = suite.test

SETTING = "-c default_text_search_config=pg_catalog.simple"


def lock_ts_config(t):
    """A new backend's SET default_text_search_config (its check reads pg_ts_config) waits for the rollback."""
    holder = t.cluster.connect(dbname=harness.APP_DB, autocommit=False)
    with holder.cursor() as cur:
        cur.execute("LOCK TABLE pg_ts_config IN ACCESS EXCLUSIVE MODE")
    return holder


def sync_blocked(t):
    rows = t.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                         "AND wait_event_type = 'Lock' AND query LIKE 'SET %%default_text_search_config%%'")
    return rows[0][0] > 0


def blocked_sync_pid(t):
    rows = t.cluster.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'app' "
                         "AND wait_event_type = 'Lock' AND query LIKE 'SET %%default_text_search_config%%'")
    return rows[0][0]


def start_synced_query(t, s, sql):
    """A client whose settings differ from the backend's: sluice's SET runs, and blocks, first."""
    warm = s.connect()
    check_equal(one_value(warm, "SELECT 1"), 1, "a backend opened")
    warm.close()
    holder = lock_ts_config(t)
    client = s.connect(options=SETTING)
    query = Background(one_value, client, sql)
    wait_for(lambda: sync_blocked(t), 10, what="sluice's SET waiting on the lock")
    return holder, client, query


@test("transaction mode: a cancel that comes while sluice gives the backend the client's settings "
      "cancels the client's query, not sluice's SET (the client keeps its connection)",
      sluice_only=True)
def cancel_during_param_sync(t):
    s = t.sluice(settings={"pool_mode": "transaction"},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    holder, client, query = start_synced_query(t, s, "SELECT pg_sleep(30)")
    client.cancel()
    # A cancel that reached the SET ends its lock wait; give it the time to do so.
    try:
        wait_for(lambda: not sync_blocked(t), 2, what="the SET cancelled")
    except harness.TestFailure:
        pass
    holder.rollback()
    error = query.error(15)
    check(error is not None, "pg_sleep(30) finished without error after cancel")
    check_equal(getattr(error, "pgcode", None), "57014", f"SQLSTATE of the cancelled query ({error})")
    check_equal(one_value(client, "SHOW default_text_search_config"), "pg_catalog.simple",
                "the client's next query, with its setting")


@test("transaction mode: a cancel waiting for the client's query survives the loss of the backend "
      "that was being given the client's settings", sluice_only=True)
def pending_cancel_survives_backend_loss(t):
    s = t.sluice(settings={"pool_mode": "transaction"},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    holder, client, query = start_synced_query(t, s, "SELECT pg_sleep(8)")
    pid = blocked_sync_pid(t)
    client.cancel()
    t.cluster.sql("SELECT pg_terminate_backend(%s)", (pid,), dbname="postgres")
    holder.rollback()
    error = query.error(20)
    check(error is not None, "pg_sleep(8) ran to its end: the cancel was forgotten with the backend")
    check_equal(getattr(error, "pgcode", None), "57014", f"SQLSTATE of the cancelled query ({error})")
    check_equal(one_value(client, "SHOW default_text_search_config"), "pg_catalog.simple",
                "the client's next query, with its setting")


def running(t, sql):
    rows = t.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                         "AND state = 'active' AND query = %s", (sql,))
    return rows[0][0] > 0


@test("a client that leaves with pipelined queries has each of them cancelled in turn, not only "
      "the first (the next one starts while the first cancel request may still be open)",
      sluice_only=True)
def pipelined_queries_cancelled_after_client_left(t):
    s = t.sluice(settings={"pool_mode": "transaction"},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    first, second, third = ("SELECT pg_sleep(30), 1", "SELECT pg_sleep(30), 2",
                            "SELECT pg_sleep(30), 3")
    wire = s.wire()
    wire.login()
    wire.send(harness.query_message(first) + harness.query_message(second) +
              harness.query_message(third))
    wait_for(lambda: running(t, first), 10, what="the first query running")
    wire.close()
    # The backend is closed after SERVER_CLEANUP_TIMEOUT (10 s) if a query ignores the cancel;
    # PostgreSQL would then go on sleeping. Each query must end well before either.
    for sql in (first, second, third):
        wait_for(lambda: not running(t, sql), 8, what=f"{sql} cancelled")
    client = s.connect()
    check_equal(one_value(client, "SELECT 'reused'"), "reused", "the next client's query")


ADMIN = ("admin", "admin_pw")


def pool_servers(admin):
    row = [r for r in show(admin, "POOLS") if r["database"] == "appdb" and r["user"] == "app"][0]
    return sum(row[k] for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login",
                                "sv_being_canceled") if k in row)


def cleanup_then_console(t, command, then=None):
    t.cluster.sql("CREATE TABLE IF NOT EXISTS interactions_t (v int); GRANT ALL ON interactions_t TO app; "
                  "TRUNCATE interactions_t")
    users = dict(harness.default_users(t.cluster))
    users.update(dict([ADMIN]))
    s = t.sluice(settings={"pool_mode": "transaction", "admin_users": ADMIN[0]},
                 databases={"appdb": t.cluster.database_line(pool_size=2)}, users=users)
    admin = s.connect(dbname="sluice", user=ADMIN[0], password=ADMIN[1])
    sleeper = "BEGIN; INSERT INTO interactions_t VALUES (1); SELECT pg_sleep(30)"
    wire = s.wire()
    wire.login()
    wire.send(harness.query_message(sleeper))
    wait_for(lambda: running(t, sleeper), 10, what="the query running")
    pid = t.cluster.sql("SELECT pid FROM pg_stat_activity WHERE query = %s", (sleeper,))[0][0]
    wire.close()
    with admin.cursor() as cur:
        cur.execute(command)
        if then:
            cur.execute(then)
    wait_for(lambda: t.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                   (pid,))[0][0] == 0, 15, what="the cleaned backend closed")
    check_equal(t.cluster.sql("SELECT count(*) FROM interactions_t")[0][0], 0,
                "rows of the left client's transaction")
    client = s.connect()
    check_equal(one_value(client, "SELECT 'after'"), "after", "a new client's query")
    wait_for(lambda: pool_servers(admin) == t.cluster.count_backends(usename="app"), 10,
             what="SHOW POOLS' backends matching pg_stat_activity")


@test("RECONNECT while a backend is cleaned after its client left: rolled back, then closed, "
      "and SHOW POOLS counts what PostgreSQL has", sluice_only=True)
def reconnect_during_cleanup(t):
    cleanup_then_console(t, "RECONNECT appdb")


@test("KILL while a backend is cleaned after its client left: closed, its transaction with it, "
      "and SHOW POOLS counts what PostgreSQL has", sluice_only=True)
def kill_during_cleanup(t):
    cleanup_then_console(t, "KILL appdb", then="RESUME appdb")


@test("query_timeout also bounds sluice's SETs before the client's query: a backend stuck in them "
      "does not hold the client past it", sluice_only=True)
def query_timeout_covers_param_sync(t):
    s = t.sluice(settings={"pool_mode": "transaction", "query_timeout": 1},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    warm = s.connect()
    check_equal(one_value(warm, "SELECT 1"), 1, "a backend opened")
    warm.close()
    holder = lock_ts_config(t)
    try:
        wire = s.wire()
        wire.login(options=SETTING)
        wire.send(harness.query_message("SELECT 'ran'"))
        wait_for(lambda: sync_blocked(t), 10, what="sluice's SET waiting on the lock")
        pid = blocked_sync_pid(t)
        # query_timeout is 1 s; the lock is held until the client has its answer.
        errors = harness.error_messages(wire.read_until_closed(15))
    finally:
        holder.rollback()
    check_equal([e.get("C") for e in errors], ["57014"], "SQLSTATE of the error")
    check("query_timeout" in errors[0].get("M", ""), f"message: {errors[0]!r}")
    wait_for(lambda: pid not in [b["pid"] for b in t.cluster.backends("app")], 10,
             what="the stuck backend to end")
    check_equal(one_value(s.connect(), "SELECT 'next'"), "next", "a new client")

if __name__ == "__main__":
    raise SystemExit(suite.run())
