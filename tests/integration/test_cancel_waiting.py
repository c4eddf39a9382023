"""A cancel for a statement that has not reached a backend yet (transaction pooling, the pool's only
backend busy): the statement never runs. The client gets what PostgreSQL sends for a cancelled
statement, ERROR 57014 "canceling statement due to user request" and ReadyForQuery, at once, and its
connection goes on. Simple and extended protocol, with one worker and with the cancel landing on
another worker than its client's."""

import select
import socket
import threading
import time

import harness
from harness import ADMIN, Background, check, check_equal, console, one_value, show, wait_for

suite = harness.Suite()
test = suite.test

CANCELED = "canceling statement due to user request"


# ---- helpers ---------------------------------------------------------------------------------------

def start(t, workers, settings=None):
    """A sluice in transaction mode whose pool has one backend, with an admin user."""
    users = dict(harness.default_users(t.cluster))
    users[ADMIN[0]] = ADMIN[1]
    all_settings = {"workers": workers, "pool_mode": "transaction", "admin_users": ADMIN[0]}
    all_settings.update(settings or {})
    return t.sluice(settings=all_settings, databases={"appdb": t.cluster.database_line(pool_size=1)},
                    users=users)


def cl_waiting(admin):
    return sum(int(r["cl_waiting"]) for r in show(admin, "POOLS")
               if r["database"] == "appdb" and r["user"] == "app")


def wait_queued(admin, count=1):
    wait_for(lambda: cl_waiting(admin) == count, 10, what=f"SHOW POOLS cl_waiting = {count}")


def execute(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)


def fresh_table(t, name):
    t.cluster.sql(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (tag text); "
                  f"GRANT ALL ON {name} TO PUBLIC")


def rows_tagged(t, table, tag):
    return t.cluster.sql(f"SELECT count(*) FROM {table} WHERE tag = %s", (tag,))[0][0]


def hold_only_backend(s):
    """A client inside a transaction: the pool's only backend is its own until the transaction ends."""
    holder = s.connect(autocommit=False)
    check_equal(one_value(holder, "SELECT 'holding'"), "holding", "the holder's first statement")
    return holder


def hold_only_backend_elsewhere(s, admin, victim, attempts=100):
    """hold_only_backend on another worker than the victim's: the backend it releases travels to the
    victim's worker by a mail."""
    victim_worker = worker_of(admin, victim.sock.getsockname()[1])
    for attempt in range(attempts):
        with harness.cpu_of_attempt(attempt):
            holder = s.connect(autocommit=False)
        if worker_of(admin, harness.local_port(holder)) != victim_worker:
            check_equal(one_value(holder, "SELECT 'holding'"), "holding", "the holder's first statement")
            return holder
        holder.close()
    raise harness.TestFailure(f"{attempts} connections all landed on worker {victim_worker}")


def readable(wire, timeout):
    """Whether the server sent the client something within timeout (the reply is read afterwards)."""
    return bool(select.select([wire.sock], [], [], timeout)[0])


def login_wire(s):
    wire = s.wire()
    wire.login()
    return wire


def worker_of(admin, port):
    def row():
        rows = [r for r in show(admin, "CLIENTS") if r["addr"] == "127.0.0.1" and r["port"] == port]
        return rows[0] if rows else None
    return int(wait_for(row, 5, what=f"SHOW CLIENTS row for port {port}")["worker"])


def connection_for_cancel(s, admin, victim, same=False, attempts=100):
    """A TCP connection that landed on another worker than the victim's (same: on the victim's own).
    SO_REUSEPORT spreads connections: open them until one does."""
    victim_worker = worker_of(admin, victim.sock.getsockname()[1])
    for attempt in range(attempts):
        with harness.cpu_of_attempt(attempt):
            sock = socket.create_connection((s.host, s.port), timeout=10)
        # The CancelRequest's length word: sluice's listener (TCP_DEFER_ACCEPT) takes a connection
        # once bytes arrive, so SHOW CLIENTS lists it now rather than seconds later; sluice then
        # waits for the rest (send_cancel).
        sock.sendall(harness.cancel_packet(0, 0)[:4])
        if (worker_of(admin, sock.getsockname()[1]) == victim_worker) == same:
            return sock
        sock.close()
    raise harness.TestFailure(f"{attempts} TCP connections: none where it was wanted (worker "
                              f"{victim_worker}: {same})")


def send_cancel(sock, victim):
    """The rest of the CancelRequest on a connection_for_cancel socket."""
    sock.sendall(harness.cancel_packet(*victim.backend_key)[4:])
    sock.settimeout(10)
    sock.recv(1)  # sluice closes it once the cancel is passed on
    sock.close()


def cancel_from_other_worker(s, admin, victim):
    send_cancel(connection_for_cancel(s, admin, victim), victim)


def cancel_wire(s, victim):
    """Sends victim's CancelRequest on a new connection, as libpq does."""
    canceller = s.wire()
    canceller.send(harness.cancel_packet(*victim.backend_key))
    canceller.read_until_closed(10)
    canceller.close()


def check_cancelled_reply(result, what):
    """What PostgreSQL sends for a cancelled statement: the error, then ReadyForQuery 'I'."""
    check_equal([kind for kind, _ in result.messages], ["E", "Z"], f"{what}: messages")
    check_equal(result.errors[0].get("C"), "57014", f"{what}: SQLSTATE")
    check_equal(result.errors[0].get("M"), CANCELED, f"{what}: message")
    check_equal(result.errors[0].get("S"), "ERROR", f"{what}: severity")
    check_equal(result.status, "I", f"{what}: ReadyForQuery status")


# ---- psycopg2, simple protocol -----------------------------------------------------------------------

def psycopg2_insert_cancelled(t, workers):
    s = start(t, workers)
    admin = console(s)
    fresh_table(t, "cw_simple")
    holder = hold_only_backend(s)
    victim = s.connect()
    insert = Background(execute, victim, "INSERT INTO cw_simple VALUES ('cancelled')")
    wait_queued(admin)
    victim.cancel()
    answered_while_waiting = insert.wait(10)
    still_waiting = cl_waiting(admin)
    holder.rollback()  # the backend is free: a statement the cancel missed would run now
    error = insert.error(10)
    check_equal(rows_tagged(t, "cw_simple", "cancelled"), 0, "rows the cancelled INSERT wrote")
    check(answered_while_waiting, "the cancelled INSERT was not answered while it waited for the backend")
    check_equal(getattr(error, "pgcode", None), "57014", f"SQLSTATE of the cancelled INSERT ({error})")
    check(CANCELED in (getattr(error, "pgerror", "") or ""), f"message of the cancelled INSERT ({error})")
    check_equal(still_waiting, 0, "clients still queued once the cancelled one was answered")
    execute(victim, "INSERT INTO cw_simple VALUES ('after')")
    check_equal(rows_tagged(t, "cw_simple", "after"), 1, "the cancelled client's next INSERT")
    check_equal(one_value(holder, "SELECT 'holder again'"), "holder again", "the holder's next statement")


@test("transaction mode: a cancelled INSERT that waits for the pool's only backend never runs; "
      "psycopg2 gets 57014 at once and its connection goes on", sluice_only=True)
def psycopg2_cancel_while_waiting(t):
    psycopg2_insert_cancelled(t, 1)


@test("4 workers: a cancelled INSERT that waits for a backend never runs (psycopg2's cancel, any "
      "worker)", sluice_only=True)
def psycopg2_cancel_while_waiting_workers(t):
    psycopg2_insert_cancelled(t, 4)


@test("4 workers: a CancelRequest landing on another worker than its waiting client's answers the "
      "client's INSERT with 57014 without running it, every time", timeout=120, sluice_only=True)
def wire_cancel_from_other_worker(t):
    s = start(t, 4)
    admin = console(s)
    fresh_table(t, "cw_workers")
    victim = login_wire(s)
    for attempt in range(1, 4):
        tag = f"attempt {attempt}"
        holder = hold_only_backend(s)
        victim.send(harness.query_message(f"INSERT INTO cw_workers VALUES ('{tag}')"))
        wait_queued(admin)
        cancel_from_other_worker(s, admin, victim)
        answered_while_waiting = readable(victim, 10)
        holder.rollback()
        victim.settimeout(10)
        result = victim.read_until_ready()
        check_equal(rows_tagged(t, "cw_workers", tag), 0, f"{tag}: rows the cancelled INSERT wrote")
        check(answered_while_waiting, f"{tag}: the INSERT was not answered while it waited")
        check_cancelled_reply(result, tag)
        check_equal(victim.query_ok("SELECT 'after'").first_value(), "after", f"{tag}: the next query")
        holder.close()


@test("transaction mode: of pipelined queries waiting for a backend, a cancel answers only the "
      "first (57014); the next one keeps its place and runs", sluice_only=True)
def pipelined_queries_first_cancelled(t):
    s = start(t, 1)
    admin = console(s)
    fresh_table(t, "cw_pipelined")
    holder = hold_only_backend(s)
    victim = login_wire(s)
    victim.send(harness.query_message("INSERT INTO cw_pipelined VALUES ('first')") +
                harness.query_message("INSERT INTO cw_pipelined VALUES ('second')"))
    wait_queued(admin)
    cancel_wire(s, victim)
    answered_while_waiting = readable(victim, 10)
    still_waiting = cl_waiting(admin)
    holder.rollback()
    victim.settimeout(10)
    first, second = victim.read_until_ready(), victim.read_until_ready()
    check_equal(rows_tagged(t, "cw_pipelined", "first"), 0, "rows the cancelled first INSERT wrote")
    check(answered_while_waiting, "the first INSERT was not answered while it waited")
    check_cancelled_reply(first, "the first, cancelled INSERT")
    check_equal(still_waiting, 1, "clients queued after the cancel (the second INSERT waits)")
    check_equal((second.errors, second.tags, second.status), ([], ["INSERT 0 1"], "I"),
                "the second INSERT's reply")
    check_equal(rows_tagged(t, "cw_pipelined", "second"), 1, "rows the second INSERT wrote")


# ---- extended protocol ------------------------------------------------------------------------------

@test("transaction mode: a cancelled Parse/Bind/Execute/Sync waiting for a backend is answered with "
      "one 57014 and ReadyForQuery, and never runs", sluice_only=True)
def extended_batch_cancelled(t):
    s = start(t, 1)
    admin = console(s)
    fresh_table(t, "cw_extended")
    holder = hold_only_backend(s)
    victim = login_wire(s)
    victim.send(harness.parse_message("INSERT INTO cw_extended VALUES ($1)") +
                harness.bind_message(("cancelled",)) + harness.describe_message("P") +
                harness.execute_message() + harness.sync_message())
    wait_queued(admin)
    cancel_wire(s, victim)
    answered_while_waiting = readable(victim, 10)
    holder.rollback()
    victim.settimeout(10)
    result = victim.read_until_ready()
    check_equal(rows_tagged(t, "cw_extended", "cancelled"), 0, "rows the cancelled batch wrote")
    check(answered_while_waiting, "the batch was not answered while it waited")
    check_cancelled_reply(result, "the cancelled batch")
    after = victim.extended("INSERT INTO cw_extended VALUES ($1)", ("after",))
    check_equal((after.errors, after.tags), ([], ["INSERT 0 1"]), "the next batch")


@test("transaction mode: a cancelled extended batch whose Sync has not come yet gets 57014 at once; "
      "what follows up to its Sync is dropped and the Sync answered with ReadyForQuery",
      sluice_only=True)
def extended_batch_cancelled_before_sync(t):
    s = start(t, 1)
    admin = console(s)
    fresh_table(t, "cw_unsynced")
    holder = hold_only_backend(s)
    victim = login_wire(s)
    victim.send(harness.parse_message("INSERT INTO cw_unsynced VALUES ($1)") +
                harness.bind_message(("cancelled",)))
    wait_queued(admin)
    cancel_wire(s, victim)
    check(readable(victim, 10), "the batch was not answered while it waited")
    victim.settimeout(10)
    kind, payload = victim.read_message()
    check_equal(kind, "E", "the reply to the cancel")
    check_equal(harness.parse_fields(payload).get("C"), "57014", "its SQLSTATE")
    check_equal(cl_waiting(admin), 0, "clients queued once the batch was cancelled")
    victim.send(harness.execute_message() + harness.sync_message())
    rest = victim.read_until_ready()
    check_equal([kind for kind, _ in rest.messages], ["Z"], "the reply to the batch's Execute and Sync")
    check_equal(rest.status, "I", "ReadyForQuery status")
    holder.rollback()
    check_equal(victim.query_ok("SELECT 'after'").first_value(), "after", "the next query")
    check_equal(rows_tagged(t, "cw_unsynced", "cancelled"), 0, "rows the cancelled batch wrote")


@test("transaction mode: psycopg 3 (extended protocol): a cancelled INSERT waiting for a backend "
      "raises QueryCanceled and never runs", sluice_only=True)
def psycopg3_cancel_while_waiting(t):
    try:
        import psycopg
    except ImportError:
        raise harness.Skip("psycopg 3 is not installed (apt-get install python3-psycopg)")
    s = start(t, 1)
    admin = console(s)
    fresh_table(t, "cw_psycopg3")
    holder = hold_only_backend(s)
    conninfo = (f"host={s.host} port={s.port} dbname={harness.APP_DB} user=app password=app_pw "
                "connect_timeout=10")
    with psycopg.connect(conninfo, autocommit=True) as victim:
        insert = Background(victim.execute, "INSERT INTO cw_psycopg3 VALUES (%s)", ("cancelled",))
        wait_queued(admin)
        victim.cancel()
        answered_while_waiting = insert.wait(10)
        holder.rollback()
        error = insert.error(10)
        check_equal(rows_tagged(t, "cw_psycopg3", "cancelled"), 0, "rows the cancelled INSERT wrote")
        check(answered_while_waiting, "the INSERT was not answered while it waited")
        check(isinstance(error, psycopg.errors.QueryCanceled), f"error of the cancelled INSERT ({error!r})")
        check_equal(error.diag.message_primary, CANCELED, "its message")
        victim.execute("INSERT INTO cw_psycopg3 VALUES (%s)", ("after",))
        check_equal(rows_tagged(t, "cw_psycopg3", "after"), 1, "the cancelled client's next INSERT")


# ---- while sluice gives the backend the client's settings ----------------------------------------------

SETTING = "-c default_text_search_config=pg_catalog.simple"


def sync_blocked(t):
    rows = t.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                         "AND wait_event_type = 'Lock' AND query LIKE 'SET %%default_text_search_config%%'")
    return rows[0][0] > 0


@test("transaction mode: an INSERT cancelled while sluice's SET of the client's settings runs first "
      "never runs; the client keeps its settings and its connection", sluice_only=True)
def cancel_during_settings(t):
    s = start(t, 1)
    fresh_table(t, "cw_settings")
    warm = s.connect()
    check_equal(one_value(warm, "SELECT 1"), 1, "a backend opened")
    warm.close()
    # The SET checks pg_ts_config: it waits while another session holds that table locked.
    locker = t.cluster.connect(dbname=harness.APP_DB, autocommit=False)
    with locker.cursor() as cur:
        cur.execute("LOCK TABLE pg_ts_config IN ACCESS EXCLUSIVE MODE")
    victim = s.connect(options=SETTING)
    insert = Background(execute, victim, "INSERT INTO cw_settings VALUES ('cancelled')")
    wait_for(lambda: sync_blocked(t), 10, what="sluice's SET waiting on the lock")
    victim.cancel()
    locker.rollback()
    error = insert.error(10)
    check_equal(rows_tagged(t, "cw_settings", "cancelled"), 0, "rows the cancelled INSERT wrote")
    check_equal(getattr(error, "pgcode", None), "57014", f"SQLSTATE of the cancelled INSERT ({error})")
    check_equal(one_value(victim, "SHOW default_text_search_config"), "pg_catalog.simple",
                "the client's next query, with its setting")


# ---- the cancel racing the hand-over of the backend ------------------------------------------------------

SPREAD = tuple(i * 0.00005 for i in range(12))  # 0 to 0.55 ms, where the winner changes


@test("4 workers: a cancel racing the release, on another worker, of the backend its client waits "
      "for: the INSERT either ran or was answered 57014, never both, and no backend is left stuck",
      timeout=180,
      sluice_only=True)
def cancel_racing_handover(t):
    # Each attempt waits for a holder and a cancel connection on the right workers; under
    # ThreadSanitizer that can take longer than the default query_wait_timeout (30 s).
    s = start(t, 4, {"query_wait_timeout": 300})
    admin = console(s)
    fresh_table(t, "cw_race")
    victim = login_wire(s)
    outcomes = {"cancelled": 0, "ran": 0}
    for attempt in range(1, 25):
        tag = f"attempt {attempt}"
        holder = hold_only_backend_elsewhere(s, admin, victim)
        victim.send(harness.query_message(f"INSERT INTO cw_race VALUES ('{tag}')"))
        wait_queued(admin)
        # On the victim's worker, the cancel is handled as soon as it is read: the backend released
        # on the holder's worker may be on its way by mail then.
        sock = connection_for_cancel(s, admin, victim, same=True)
        go = threading.Barrier(2)
        release = Background(lambda: (go.wait(5), holder.rollback()))
        go.wait(5)
        time.sleep(SPREAD[attempt % len(SPREAD)])  # varies who wins: outcomes differ, not the check
        send_cancel(sock, victim)
        release.result(10)
        victim.settimeout(10)
        result = victim.read_until_ready()
        rows = rows_tagged(t, "cw_race", tag)
        codes = [e.get("C") for e in result.errors]
        check(codes in ([], ["57014"]), f"{tag}: errors {result.errors}")
        check_equal(rows, 0 if codes else 1, f"{tag}: rows of an INSERT answered with {codes}")
        outcomes["cancelled" if codes else "ran"] += 1
        check_equal(victim.query_ok("SELECT 'after'").first_value(), "after", f"{tag}: the next query")
        holder.close()
    check_equal(cl_waiting(admin), 0, "clients left waiting")
    fresh = s.connect()
    check_equal(one_value(fresh, "SELECT 'served'"), "served", "a new client's query (no backend stuck)")
    t.note(f"outcomes: {outcomes}")


if __name__ == "__main__":
    raise SystemExit(suite.run())
