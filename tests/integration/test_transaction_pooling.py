"""Transaction pooling without surprises: session state never leaks from one client to another
(statements that leave state pin their client to its backend, or are refused, or are let through
with pinning = off), tracked parameters follow their client, and named prepared statements of the
extended protocol work wherever a client's next transaction lands."""

import struct
import time

import harness
from harness import Background, check, check_equal, expect_pg_error, one_value, show, wait_for

suite = harness.Suite()
test = suite.test

PIN_LOG_LINE = "pinned to its backend"
DEFAULT_WORK_MEM = "4MB"
ADMIN = ("admin", "admin_pw")
BENCH_DB = "benchdb"
INT4_OID = 23
TEXT_OID = 25


def all_rows(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def run_statements(conn, statements):
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def transaction_pool(t, pool_size=1, **settings):
    """A sluice in transaction mode whose appdb pool has pool_size backends."""
    all_settings = {"pool_mode": "transaction"}
    all_settings.update(settings)
    return t.sluice(settings=all_settings,
                    databases={"appdb": t.cluster.database_line(pool_size=pool_size)})


def still_waiting(call, seconds=1.0):
    """True if a background call has not finished after a moment."""
    time.sleep(seconds)
    return not call.done()


# ---- the extended protocol, message by message ----------------------------------------------------

def close_message(kind, name):
    return harness.message("C", kind.encode() + harness.cstr(name))


def parameter_types(payload):
    """ParameterDescription ('t'): the parameter type OIDs."""
    count = struct.unpack("!H", payload[:2])[0]
    return [struct.unpack("!I", payload[2 + 4 * i:6 + 4 * i])[0] for i in range(count)]


def column_names(payload):
    """RowDescription ('T'): the column names."""
    count = struct.unpack("!H", payload[:2])[0]
    offset, names = 2, []
    for _ in range(count):
        end = payload.index(b"\0", offset)
        names.append(payload[offset:end].decode())
        offset = end + 1 + 18  # table OID, column number, type OID, size, modifier, format
    return names


class Protocol:
    """A logged-in raw protocol client speaking named statements, one Sync per call, as libpq's
    PQprepare / PQexecPrepared / PQdescribePrepared / PQclosePrepared do."""

    def __init__(self, endpoint):
        self.wire = endpoint.wire()
        self.wire.login()

    def sync(self, data):
        self.wire.send(data + harness.sync_message())
        return self.wire.read_until_ready()

    def prepare(self, name, sql, types=()):
        return self.sync(harness.parse_message(sql, name, types))

    def execute(self, name, params=()):
        return self.sync(harness.bind_message(params, statement=name) + harness.execute_message())

    def describe(self, name):
        return self.sync(harness.describe_message("S", name))

    def close(self, name):
        return self.sync(close_message("S", name))

    def query(self, sql):
        return self.wire.query(sql)

    def rows(self, name, params=()):
        """Executes a statement that must succeed; returns its rows."""
        result = self.execute(name, params)
        check(not result.errors, f"executing {name!r} failed: {result.errors}")
        check_equal(result.status, "I", f"ReadyForQuery status after executing {name!r}")
        return result.rows

    def prepare_ok(self, name, sql, types=()):
        result = self.prepare(name, sql, types)
        check(not result.errors, f"preparing {name!r} failed: {result.errors}")
        check_equal(kinds(result), ["1", "Z"], f"replies to Parse {name!r} + Sync")
        return result

    def value(self, sql):
        return self.wire.query_ok(sql).rows[0][0]


def kinds(result):
    return [kind for kind, _ in result.messages]


def sqlstates(result):
    return [error.get("C") for error in result.errors]


def check_error(result, sqlstate, what):
    check_equal(sqlstates(result), [sqlstate], f"{what}: SQLSTATEs")
    check_equal(result.status, "I", f"{what}: ReadyForQuery status after the error")


def hold_backend(conn):
    """Opens a transaction on conn, so its backend is taken until COMMIT; returns its pid."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def commit(conn):
    with conn.cursor() as cur:
        cur.execute("COMMIT")


# ---- session state stays with the client that made it -------------------------------------------

def check_state_stays_private(t, make_state, sees_own_state, sees_no_state):
    """Pool of one, clients A and B. A makes session state (make_state(a)); from then on A keeps
    the only backend: A sees its state in later transactions while B waits. Once A leaves, B gets
    that same backend and sees none of A's state (sees_no_state(b) checks it)."""
    s = transaction_pool(t)
    a, b = s.connect(), s.connect()
    pid = one_value(b, "SELECT pg_backend_pid()")
    make_state(a)
    check_equal(one_value(a, "SELECT pg_backend_pid()"), pid, "A's backend (pool of one)")
    sees_own_state(a)
    waiting = Background(one_value, b, "SELECT pg_backend_pid()")
    check(still_waiting(waiting), "B ran on the backend A is pinned to")
    sees_own_state(a)
    check(not waiting.done(), "B ran while A was still connected and pinned")
    a.close()
    check_equal(waiting.result(15), pid, "B's backend once A left (the same, reset)")
    sees_no_state(b)
    check(PIN_LOG_LINE in s.log_text(), f"no {PIN_LOG_LINE!r} line in sluice's log")


def check_setting_follows_client(t, make_setting, want):
    """Pool of one, clients A and B. A changes work_mem for its session (make_setting(a)); it is
    not pinned: B runs between A's transactions on the same backend and sees the default, while
    A sees its value in every transaction."""
    s = transaction_pool(t)
    a, b = s.connect(), s.connect()
    make_setting(a)
    for round_number in range(3):
        between = Background(all_rows, b, "SELECT current_setting('work_mem'), pg_backend_pid()")
        (b_work_mem, b_pid), = between.result(5)
        check_equal(b_work_mem, DEFAULT_WORK_MEM, f"B's work_mem (round {round_number})")
        check_equal(all_rows(a, "SELECT current_setting('work_mem'), pg_backend_pid()"),
                    [(want, b_pid)], f"A's work_mem and backend (round {round_number})")
    check(PIN_LOG_LINE not in s.log_text(), "a session setting pinned its client")


@test("SET work_mem is followed, not pinned: B runs between A's transactions at the default",
      sluice_only=True)
def set_is_followed(t):
    check_setting_follows_client(t, lambda a: run_statements(a, ["SET work_mem = '7MB'"]), "7MB")


@test("set_config(..., false) is followed, not pinned: B never sees the value", sluice_only=True)
def set_config_session_is_followed(t):
    check_setting_follows_client(
        t, lambda a: one_value(a, "SELECT set_config('work_mem', '9MB', false)"), "9MB")


@test("CREATE TEMP TABLE pins A; B finds no temp table after A leaves", sluice_only=True)
def temp_table_pins(t):
    def no_temp_table(b):
        check_equal(one_value(b, "SELECT to_regclass('pg_temp.a_private') IS NULL"), True,
                    "A's temp table seen from B")
        check_equal(one_value(b, "SELECT count(*) FROM pg_class WHERE relname = 'a_private'"), 0,
                    "pg_class rows for A's temp table")

    check_state_stays_private(
        t,
        lambda a: run_statements(a, ["CREATE TEMP TABLE a_private (x int)",
                                     "INSERT INTO a_private VALUES (1), (2)"]),
        lambda a: check_equal(one_value(a, "SELECT count(*) FROM a_private"), 2,
                              "rows in A's temp table"),
        no_temp_table)


@test("pg_advisory_lock pins A; no advisory lock is held once A leaves", sluice_only=True)
def advisory_lock_pins(t):
    held = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 "
            "AND pid = pg_backend_pid()")

    def no_lock(b):
        check_equal(one_value(b, held), 0, "advisory locks B's backend holds")
        check_equal(t.cluster.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0],
                    0, "advisory locks held anywhere")

    check_state_stays_private(
        t,
        lambda a: one_value(a, "SELECT pg_advisory_lock(4242)"),
        lambda a: check_equal(one_value(a, held), 1, "advisory locks A's backend holds"),
        no_lock)


@test("LISTEN pins A (A gets its notifications); B's backend listens to nothing", sluice_only=True)
def listen_pins(t):
    def gets_notification(a):
        payload = f"hello-{time.monotonic_ns()}"
        check_equal(all_rows(a, "SELECT pg_listening_channels()"), [("a_channel",)],
                    "A's listening channels")
        t.cluster.sql("SELECT pg_notify('a_channel', %s)", (payload,))

        def arrived():
            one_value(a, "SELECT 1")
            return any(n.payload == payload for n in a.notifies)
        wait_for(arrived, 10, interval=0.1, what="the notification to reach A")

    check_state_stays_private(
        t,
        lambda a: run_statements(a, ["LISTEN a_channel"]),
        gets_notification,
        lambda b: check_equal(one_value(b, "SELECT count(*) FROM pg_listening_channels()"), 0,
                              "channels B's backend listens to"))


@test("SQL PREPARE pins A (EXECUTE works later); B sees no prepared statement", sluice_only=True)
def sql_prepare_pins(t):
    check_state_stays_private(
        t,
        lambda a: run_statements(a, ["PREPARE a_statement (int) AS SELECT $1 + 1"]),
        lambda a: check_equal(one_value(a, "EXECUTE a_statement (41)"), 42, "A's EXECUTE"),
        lambda b: check_equal(one_value(b, "SELECT count(*) FROM pg_prepared_statements"), 0,
                              "prepared statements on B's backend"))


@test("DECLARE ... WITH HOLD pins A (FETCH works later); B sees no cursor", sluice_only=True)
def cursor_with_hold_pins(t):
    def fetches(a):
        check_equal(len(all_rows(a, "FETCH 2 FROM a_cursor")), 2, "rows fetched by A")

    check_state_stays_private(
        t,
        lambda a: run_statements(a, ["DECLARE a_cursor CURSOR WITH HOLD FOR "
                                     "SELECT generate_series(1, 100)"]),
        fetches,
        lambda b: check_equal(one_value(b, "SELECT count(*) FROM pg_cursors"), 0,
                              "cursors on B's backend"))


@test("SET inside an extended-protocol Parse is followed too", sluice_only=True)
def set_through_parse_is_followed(t):
    s = transaction_pool(t)
    a = Protocol(s)
    b = s.connect()
    result = a.wire.extended("SET work_mem = '6MB'", describe=False)
    check(not result.errors, f"SET through Parse/Bind/Execute failed: {result.errors}")
    check_equal(Background(one_value, b, "SHOW work_mem").result(5), DEFAULT_WORK_MEM,
                "B's work_mem while A is connected")
    check_equal(a.value("SHOW work_mem"), "6MB", "A's work_mem in its next transaction")
    check(PIN_LOG_LINE not in s.log_text(), "a SET through Parse pinned its client")


@test("SET LOCAL and set_config(..., true) do not pin: B runs between A's transactions",
      sluice_only=True)
def transaction_local_settings_do_not_pin(t):
    s = transaction_pool(t)
    a, b = s.connect(), s.connect()
    for round_number in range(3):
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SET LOCAL work_mem = '7MB'")
            cur.execute("SELECT set_config('statement_timeout', '5s', true)")
            cur.execute("SHOW work_mem")
            check_equal(cur.fetchone()[0], "7MB", "work_mem inside A's transaction")
            cur.execute("COMMIT")
        between = Background(all_rows, b, "SELECT current_setting('work_mem'), "
                                          "current_setting('statement_timeout')")
        check_equal(between.result(5), [(DEFAULT_WORK_MEM, "0")],
                    f"B's settings between A's transactions (round {round_number})")
        check_equal(one_value(a, "SHOW work_mem"), DEFAULT_WORK_MEM, "A's work_mem after COMMIT")
    check(PIN_LOG_LINE not in s.log_text(), "a transaction-local setting pinned its client")


@test("SET TimeZone is followed, not pinned: A keeps its TimeZone, B sees the default",
      sluice_only=True)
def timezone_follows_client(t):
    default = t.cluster.sql("SHOW TimeZone")[0][0]
    zone = "Asia/Tokyo" if default != "Asia/Tokyo" else "America/New_York"
    s = transaction_pool(t)
    a, b = s.connect(), s.connect()
    run_statements(a, [f"SET TimeZone = '{zone}'"])
    for round_number in range(3):
        between = Background(one_value, b, "SHOW TimeZone")
        check_equal(between.result(5), default, f"B's TimeZone (round {round_number})")
        check_equal(one_value(a, "SHOW TimeZone"), zone, f"A's TimeZone (round {round_number})")
    check_equal(one_value(b, "SELECT pg_backend_pid()"), one_value(a, "SELECT pg_backend_pid()"),
                "backend of A and B (pool of one)")
    check(PIN_LOG_LINE not in s.log_text(), "SET TimeZone pinned its client")


@test("pinning = reject: LISTEN and a temp table fail with 0A000 naming pinning; SET works",
      sluice_only=True)
def pinning_reject(t):
    s = transaction_pool(t, pinning="reject")
    conn = s.connect()
    for statement in ("LISTEN refused_channel", "CREATE TEMP TABLE refused (x int)"):
        error = expect_pg_error(lambda: run_statements(conn, [statement]), "0A000", statement)
        check("pinning" in str(error), f"the error does not name pinning: {str(error).strip()}")
        check_equal(one_value(conn, "SELECT 'still usable'"), "still usable",
                    f"query after the refused {statement!r}")
    check_equal(one_value(conn, "SELECT count(*) FROM pg_listening_channels()"), 0,
                "channels listened to after the refusal")
    run_statements(conn, ["SET work_mem = '7MB'"])
    check_equal(one_value(conn, "SHOW work_mem"), "7MB", "work_mem after a SET (followed)")
    check_equal(one_value(conn, "SELECT to_regclass('pg_temp.refused') IS NULL"), True,
                "the refused temp table exists")
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SET LOCAL work_mem = '7MB'")
        cur.execute("COMMIT")
    other = s.connect()
    check_equal(Background(one_value, other, "SELECT 1").result(5), 1,
                "another client's query (nobody is pinned)")
    check(PIN_LOG_LINE not in s.log_text(), "a refused statement pinned its client")


@test("pinning = off: SET work_mem does not pin (B runs while A is connected)", sluice_only=True)
def pinning_off(t):
    s = transaction_pool(t, pinning="off")
    a, b = s.connect(), s.connect()
    run_statements(a, ["SET work_mem = '7MB'", "CREATE TEMP TABLE unpinned (x int)"])
    check_equal(Background(one_value, b, "SELECT 'b ran'").result(5), "b ran",
                "B's query while A is connected")
    check_equal(one_value(a, "SELECT 'a ran'"), "a ran", "A's next query")
    check(PIN_LOG_LINE not in s.log_text(), "pinning = off pinned a client")


@test("a pinned client is logged with its pool and the kind of statement", sluice_only=True)
def pinned_client_is_logged(t):
    s = transaction_pool(t)
    conn = s.connect()
    run_statements(conn, ["SELECT 1"])
    check(PIN_LOG_LINE not in s.log_text(), "a plain SELECT pinned its client")
    run_statements(conn, ["CREATE TEMP TABLE logged_pin (x int)"])
    lines = wait_for(lambda: [line for line in s.log_text().splitlines() if PIN_LOG_LINE in line],
                     5, what="the pin to be logged")
    check_equal(len(lines), 1, "log lines about pinning")
    check("appdb/app" in lines[0], f"the log line does not name the pool: {lines[0]}")
    check("temporary table" in lines[0], f"the log line does not say why: {lines[0]}")


@test("SHOW PINNED and SHOW POOLS count a pinned client until it leaves", sluice_only=True)
def pinned_clients_are_listed(t):
    users = dict(harness.default_users(t.cluster))
    users[ADMIN[0]] = ADMIN[1]
    s = t.sluice(settings={"pool_mode": "transaction", "admin_users": ADMIN[0]}, users=users)
    admin = s.connect(dbname="sluice", user=ADMIN[0], password=ADMIN[1])

    def pinned_in_pools():
        rows = [r for r in show(admin, "POOLS") if r["database"] == "appdb"]
        check_equal(len(rows), 1, "SHOW POOLS rows for appdb")
        check("pinned" in rows[0], f"SHOW POOLS has no pinned column: {sorted(rows[0])}")
        return rows[0]["pinned"]

    conn = s.connect()
    run_statements(conn, ["SELECT 1"])
    check_equal(show(admin, "PINNED"), [], "SHOW PINNED before any session state")
    check_equal(pinned_in_pools(), 0, "pinned clients in SHOW POOLS before any session state")
    run_statements(conn, ["CREATE TEMP TABLE visible_pin (x int)"])
    rows = show(admin, "PINNED")
    check_equal(len(rows), 1, "SHOW PINNED rows")
    check_equal((rows[0]["database"], rows[0]["user"]), ("appdb", "app"), "pinned client's pool")
    check("temp" in rows[0]["reason"], f"reason in SHOW PINNED: {rows[0]['reason']!r}")
    check("visible_pin" in (rows[0]["statement"] or ""),
          f"statement in SHOW PINNED: {rows[0]['statement']!r}")
    check_equal(pinned_in_pools(), 1, "pinned clients in SHOW POOLS")
    conn.close()
    wait_for(lambda: show(admin, "PINNED") == [], 5,
             what="SHOW PINNED to forget the client that left")
    check_equal(pinned_in_pools(), 0, "pinned clients in SHOW POOLS after the client left")


@test("pinning = reject refuses session state sent through the extended protocol too",
      sluice_only=True)
def pinning_reject_extended(t):
    s = transaction_pool(t, pinning="reject")
    a = Protocol(s)
    b = s.connect()
    result = a.wire.extended("LISTEN refused_channel", describe=False)
    check_equal(sqlstates(result), ["0A000"], "SQLSTATEs of LISTEN through Parse/Bind/Execute")
    check("pinning" in result.errors[0].get("M", ""), f"error message: {result.errors[0]}")
    check_equal(result.status, "I", "ReadyForQuery status after the refusal")
    check_equal(a.value("SELECT count(*) FROM pg_listening_channels()"), "0",
                "channels listened to after the refusal")
    # A named statement: refused in the same pipeline, whichever of its messages reports it.
    result = a.sync(harness.parse_message("SELECT set_config('work_mem', $1, false)", "S_set",
                                          (TEXT_OID,))
                    + harness.bind_message(("7MB",), statement="S_set")
                    + harness.execute_message())
    check_equal(sqlstates(result), ["0A000"], "SQLSTATEs of a named set_config(..., false)")
    check_equal(result.status, "I", "ReadyForQuery status after the refusal")
    check_equal(a.value("SHOW work_mem"), DEFAULT_WORK_MEM, "work_mem after the named refusal")
    check_equal(Background(one_value, b, "SELECT 'b ran'").result(5), "b ran",
                "another client's query (nobody is pinned)")
    check(PIN_LOG_LINE not in s.log_text(), "a refused statement pinned its client")


@test("a pinned client leaving mid-transaction: its backend is rolled back and reset",
      sluice_only=True)
def pinned_client_leaves_mid_transaction(t):
    s = transaction_pool(t)
    a, b = s.connect(), s.connect()
    pid = one_value(b, "SELECT pg_backend_pid()")
    with a.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_advisory_lock(777)")
        cur.execute("SET work_mem = '5MB'")
        cur.execute("CREATE TEMP TABLE left_open (x int)")
    waiting = Background(all_rows, b, "SELECT pg_backend_pid(), current_setting('work_mem'), "
                                      "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'), "
                                      "to_regclass('pg_temp.left_open') IS NULL")
    check(still_waiting(waiting), "B ran inside A's open transaction")
    a.close()
    check_equal(waiting.result(15), [(pid, DEFAULT_WORK_MEM, 0, True)],
                "B's backend, work_mem, advisory locks and whether A's temp table is gone")


# ---- named prepared statements of the extended protocol ------------------------------------------

@test("two clients use the same statement name for different queries; each gets its own results")
def same_name_different_queries(t):
    s = transaction_pool(t)
    a, b = Protocol(s), Protocol(s)
    a.prepare_ok("S_1", "SELECT 'a:' || $1::text")
    b.prepare_ok("S_1", "SELECT $1::int * 10, 'b'")
    for n in range(5):
        check_equal(a.rows("S_1", (n,)), [(f"a:{n}",)], f"A's S_1 (round {n})")
        check_equal(b.rows("S_1", (n,)), [(str(n * 10), "b")], f"B's S_1 (round {n})")
    # Parse, Bind and Execute in one pipeline, both clients at once.
    for client, sql in ((a, "SELECT 'a pipelined'"), (b, "SELECT 'b pipelined'")):
        client.wire.send(harness.parse_message(sql, "S_2") + harness.bind_message(statement="S_2")
                         + harness.execute_message() + harness.sync_message())
    for client, want in ((a, "a pipelined"), (b, "b pipelined")):
        result = client.wire.read_until_ready()
        check(not result.errors, f"pipelined Parse/Bind/Execute failed: {result.errors}")
        check_equal(kinds(result), ["1", "2", "D", "C", "Z"], "replies to the pipeline")
        check_equal(result.rows, [(want,)], "pipelined S_2")


def run_on_another_backend(t, s, client, name, params=()):
    """Executes client's statement `name` (which returns pg_backend_pid() first) until it has run
    on two backends: another client's open transaction holds the backend it ran on last. Returns
    the set of backend pids it ran on."""
    holder = s.connect()
    pids = {int(client.rows(name, params)[0][0])}
    for _attempt in range(5):
        held = hold_backend(holder)
        pid = int(client.rows(name, params)[0][0])
        check(pid != held, "the statement ran on a backend inside another client's transaction")
        pids.add(pid)
        commit(holder)
        if len(pids) >= 2:
            return pids
    raise harness.TestFailure(f"the statement never moved to a second backend: {pids}")


@test("a statement prepared on one backend runs on another", sluice_only=True)
def prepared_moves_between_backends(t):
    s = transaction_pool(t, pool_size=2)
    a = Protocol(s)
    a.prepare_ok("S_1", "SELECT pg_backend_pid(), $1::int + 1")
    pids = run_on_another_backend(t, s, a, "S_1", (41,))
    t.note(f"S_1 ran on backends {sorted(pids)}")
    check_equal(a.rows("S_1", (1,))[0][1], "2", "S_1's result after moving")


@test("Describe of a statement, with no Bind, on a backend that never saw its Parse",
      sluice_only=True)
def describe_on_fresh_backend(t):
    s = transaction_pool(t, pool_size=2)
    a = Protocol(s)
    holder = s.connect()
    a.prepare_ok("S_meta", "SELECT pg_backend_pid() AS pid, $1::int AS n, 'x'::text AS t")
    first = int(a.rows("S_meta", (1,))[0][0])
    # Only one backend exists yet: the holder's transaction takes it.
    held = hold_backend(holder)
    check_equal(held, first, "backend taken by the holder (the only one so far)")
    result = a.describe("S_meta")
    check(not result.errors, f"Describe failed: {result.errors}")
    check_equal(kinds(result), ["t", "T", "Z"], "replies to Describe S + Sync")
    check_equal(parameter_types(result.messages[0][1]), [INT4_OID], "parameter types")
    check_equal(column_names(result.messages[1][1]), ["pid", "n", "t"], "column names")
    second = int(a.rows("S_meta", (2,))[0][0])
    check(second != first, "S_meta still ran on the backend held by another transaction")
    commit(holder)


@test("Describe of a statement in the same pipeline as its Parse (getMetaData)")
def parse_describe_pipeline(t):
    s = transaction_pool(t)
    a = Protocol(s)
    result = a.sync(harness.parse_message("SELECT $1::text AS word", "S_desc")
                    + harness.describe_message("S", "S_desc"))
    check(not result.errors, f"Parse + Describe failed: {result.errors}")
    check_equal(kinds(result), ["1", "t", "T", "Z"], "replies to Parse + Describe S + Sync")
    check_equal(parameter_types(result.messages[1][1]), [TEXT_OID], "parameter types")
    check_equal(a.rows("S_desc", ("hi",)), [("hi",)], "S_desc executed afterwards")


@test("Close of a statement, then Bind to it: 26000; another client's identical statement lives")
def close_then_bind(t):
    s = transaction_pool(t)
    a, b = Protocol(s), Protocol(s)
    a.prepare_ok("S_1", "SELECT 'shared text'")
    b.prepare_ok("S_1", "SELECT 'shared text'")
    check_equal(a.rows("S_1"), [("shared text",)], "A's S_1 before Close")
    result = a.close("S_1")
    check(not result.errors, f"Close failed: {result.errors}")
    check_equal(kinds(result), ["3", "Z"], "replies to Close S + Sync")
    check_error(a.execute("S_1"), "26000", "Bind to the closed S_1")
    check_error(a.describe("S_1"), "26000", "Describe of the closed S_1")
    check_equal(b.rows("S_1"), [("shared text",)], "B's S_1 after A closed its own")
    result = a.close("S_never_prepared")
    check_equal(kinds(result), ["3", "Z"], "Close of a statement that does not exist")
    a.prepare_ok("S_1", "SELECT 'a again'")
    check_equal(a.rows("S_1"), [("a again",)], "S_1 prepared again after Close")
    check_equal(b.rows("S_1"), [("shared text",)], "B's S_1 at the end")


@test("Bind or Describe of an unknown statement name: 26000, as Postgres says")
def unknown_statement(t):
    s = transaction_pool(t)
    a, b = Protocol(s), Protocol(s)
    a.prepare_ok("S_secret", "SELECT 'a only'")
    check_error(b.execute("S_secret"), "26000", "B's Bind to A's statement name")
    check_error(b.execute("S_unknown"), "26000", "Bind to a name nobody prepared")
    check_error(b.describe("S_unknown"), "26000", "Describe of a name nobody prepared")
    # Whatever the names look like on the backend, another client's statement is out of reach.
    for guess in ("sluice_1", "sluice_2", "sluice_0", "sluice_0_1"):
        check_error(b.execute(guess), "26000", f"Bind to {guess!r}")
    check_equal(a.rows("S_secret"), [("a only",)], "A's statement afterwards")
    check_equal(b.value("SELECT 'b goes on'"), "b goes on", "B's next query")


@test("a Parse with a syntax error fails for that client only; Sync gives ReadyForQuery")
def parse_error(t):
    s = transaction_pool(t)
    a, b = Protocol(s), Protocol(s)
    b.prepare_ok("S_ok", "SELECT 'b ok'")
    result = a.prepare("S_bad", "SELEC 1")
    check_error(result, "42601", "Parse of a syntax error")
    check_equal(kinds(result), ["E", "Z"], "replies to the failed Parse + Sync")
    check_equal(b.rows("S_ok"), [("b ok",)], "B's statement after A's failed Parse")
    check_error(a.execute("S_bad"), "26000", "Bind to the statement whose Parse failed")
    # In one pipeline: the error skips the rest up to Sync.
    a.wire.send(harness.parse_message("SELEC 2", "S_bad2") + harness.bind_message(statement="S_bad2")
                + harness.execute_message() + harness.sync_message())
    result = a.wire.read_until_ready()
    check_error(result, "42601", "pipelined Parse of a syntax error")
    check_equal(kinds(result), ["E", "Z"], "replies to the failed pipeline")
    a.prepare_ok("S_bad", "SELECT 'fixed'")
    check_equal(a.rows("S_bad"), [("fixed",)], "the name prepared again with good text")
    check_equal(b.rows("S_ok"), [("b ok",)], "B's statement at the end")


@test("an error early in a pipeline skips its Parses: their names do not exist afterwards")
def pipeline_error_skips_parses(t):
    # With max_prepared_statements = 2 the third Parse evicts the first, which the client then
    # closes: nothing may keep using it while the replies are skipped.
    s = transaction_pool(t, max_prepared_statements=2)
    a = Protocol(s)
    pipeline = (harness.parse_message("SELECT 1/0") + harness.bind_message()
                + harness.execute_message())
    pipeline += b"".join(harness.parse_message(f"SELECT '{name}'", name)
                         for name in ("S_a", "S_b", "S_c"))
    pipeline += close_message("S", "S_a")
    result = a.sync(pipeline)
    check_error(result, "22012", "the pipeline")
    check_equal(kinds(result), ["1", "E", "Z"], "replies to the pipeline (1/0 fails at Bind)")
    for name in ("S_a", "S_b", "S_c"):
        check_error(a.execute(name), "26000", f"Bind to {name}, whose Parse was skipped")
    a.prepare_ok("S_b", "SELECT 'S_b'")
    check_equal(a.rows("S_b"), [("S_b",)], "S_b prepared again")


@test("DEALLOCATE, DEALLOCATE ALL and DISCARD ALL forget the client's statements only")
def deallocate_and_discard(t):
    s = transaction_pool(t)
    a, b = Protocol(s), Protocol(s)
    statements = {"S_1": "SELECT 'one'", "S_2": "SELECT 'two'"}
    for client in (a, b):
        for name, sql in statements.items():
            client.prepare_ok(name, sql)

    def b_still_works(after):
        for name, sql in statements.items():
            want = sql.split("'")[1]
            check_equal(b.rows(name), [(want,)], f"B's {name} after A's {after}")

    # Unquoted, the name is folded to s_1, which A does not have: Postgres' own 26000.
    check_error(a.query("DEALLOCATE S_1"), "26000", "DEALLOCATE of the folded name s_1")
    check_equal(a.rows("S_1"), [("one",)], "A's S_1 after DEALLOCATE of s_1")
    result = a.query('DEALLOCATE "S_1"')
    check(not result.errors, f"DEALLOCATE \"S_1\" failed: {result.errors}")
    check_equal(result.tags, ["DEALLOCATE"], "command tag of DEALLOCATE")
    check_error(a.execute("S_1"), "26000", "A's S_1 after DEALLOCATE S_1")
    check_equal(a.rows("S_2"), [("two",)], "A's S_2 after DEALLOCATE S_1")
    b_still_works("DEALLOCATE S_1")
    # A DEALLOCATE with the next query right behind it, in and out of a transaction block.
    for begin, status in (("", "I"), ("BEGIN", "T")):
        a.prepare_ok("S_1", statements["S_1"])
        if begin:
            check_equal(a.wire.query_ok(begin).status, "T", "status after BEGIN")
        a.wire.send(harness.query_message('DEALLOCATE "S_1"')
                    + harness.query_message("SELECT 'right behind'"))
        first, second = a.wire.read_until_ready(), a.wire.read_until_ready()
        check_equal((first.tags, first.status), (["DEALLOCATE"], status),
                    f"DEALLOCATE followed by a query ({begin or 'no transaction block'})")
        check_equal((second.rows, second.status), ([("right behind",)], status),
                    f"the query right behind DEALLOCATE ({begin or 'no transaction block'})")
        if begin:
            check_equal(a.wire.query_ok("COMMIT").status, "I", "status after COMMIT")
        b_still_works(f"pipelined DEALLOCATE ({begin or 'no transaction block'})")
    # A DEALLOCATE right behind another query, and one sharing its query string with another
    # statement: sluice cannot answer those itself.
    for name, messages in (
            ("behind a query", [harness.query_message("SELECT 'ahead'"),
                                harness.query_message('DEALLOCATE "S_1"')]),
            ("in a multi-statement query", [harness.query_message('DEALLOCATE "S_1"; SELECT 1')])):
        a.prepare_ok("S_1", statements["S_1"])
        a.wire.send(b"".join(messages))
        results = [a.wire.read_until_ready() for _ in messages]
        for result in results:
            check(not result.errors, f"DEALLOCATE {name}: {result.errors}")
        check("DEALLOCATE" in sum((result.tags for result in results), []),
              f"DEALLOCATE {name}: command tags {[result.tags for result in results]}")
        check_error(a.execute("S_1"), "26000", f"A's S_1 after DEALLOCATE {name}")
        b_still_works(f"DEALLOCATE {name}")

    a_has = {"S_2"}
    for command in ("DEALLOCATE ALL", "DISCARD ALL"):
        for name, sql in statements.items():
            if name not in a_has:
                a.prepare_ok(name, sql)
        a_has = set()
        result = a.query(command)
        check(not result.errors, f"{command} failed: {result.errors}")
        check_equal(result.tags, [command], f"command tag of {command}")
        for name in statements:
            check_error(a.execute(name), "26000", f"A's {name} after {command}")
        b_still_works(command)
    a.prepare_ok("S_1", "SELECT 'a later'")
    check_equal(a.rows("S_1"), [("a later",)], "A's S_1 prepared after DISCARD ALL")


def sluice_statements_on_backend(client):
    return int(client.value("SELECT count(*) FROM pg_prepared_statements "
                            "WHERE name LIKE 'sluice\\_%'"))


@test("max_prepared_statements = 2: five statements used in turn keep their results; the "
      "backend never holds more than 2", sluice_only=True)
def eviction(t):
    s = transaction_pool(t, max_prepared_statements=2)
    a = Protocol(s)
    names = [f"S_{k}" for k in range(5)]
    for k, name in enumerate(names):
        a.prepare_ok(name, f"SELECT {k} AS k, $1::int + {k}")
        check(sluice_statements_on_backend(a) <= 2, "more than 2 statements prepared on the backend")
    most = 0
    for round_number in range(3):
        for k, name in enumerate(names):
            check_equal(a.rows(name, (100,)), [(str(k), str(100 + k))],
                        f"{name} (round {round_number})")
            count = sluice_statements_on_backend(a)
            most = max(most, count)
            check(count <= 2, f"{count} statements prepared on the backend after {name}")
    # All five in one pipeline: each Bind finds its statement prepared, whatever was evicted.
    a.wire.send(b"".join(harness.bind_message((k,), statement=name) + harness.execute_message()
                         for k, name in enumerate(names)) + harness.sync_message())
    result = a.wire.read_until_ready()
    check(not result.errors, f"pipelined executions failed: {result.errors}")
    check_equal(result.rows, [(str(k), str(2 * k)) for k in range(5)], "pipelined results")
    check(sluice_statements_on_backend(a) <= 2, "more than 2 statements after the pipeline")
    t.note(f"at most {most} sluice statements seen on the backend")


@test("max_prepared_statements = 2: named portals of three statements in one transaction",
      sluice_only=True)
def eviction_with_open_portals(t):
    # The third Bind makes room by closing the first statement, whose portal is still open.
    s = transaction_pool(t, max_prepared_statements=2)
    a = Protocol(s)
    for k in range(3):
        a.prepare_ok(f"S_{k}", f"SELECT generate_series(1, 3) + {10 * k}")
    data = harness.query_message("BEGIN")
    a.wire.send(data)
    check_equal(a.wire.read_until_ready().status, "T", "status after BEGIN")
    pipeline = b"".join(harness.bind_message(portal=f"P_{k}", statement=f"S_{k}")
                        for k in range(3))
    pipeline += b"".join(harness.execute_message(f"P_{k}", 1) for k in range(3))
    result = a.sync(pipeline)
    check(not result.errors, f"executing open portals failed: {result.errors}")
    check_equal(result.rows, [("1",), ("11",), ("21",)], "first row of each portal")
    result = a.sync(harness.execute_message("P_0"))
    check(not result.errors, f"fetching the rest of P_0 failed: {result.errors}")
    check_equal(result.rows, [("2",), ("3",)], "the rest of P_0")
    check_equal(a.wire.query_ok("COMMIT").status, "I", "status after COMMIT")


@test("ALTER TABLE changing a result type: the prepared SELECT * fails with 0A000, as on "
      "Postgres; the next statement works")
def plan_result_type_changes(t):
    t.cluster.sql("DROP TABLE IF EXISTS alter_me; CREATE TABLE alter_me (id int, v int);"
                  "INSERT INTO alter_me VALUES (1, 10); GRANT ALL ON alter_me TO PUBLIC")
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("S_star", "SELECT * FROM alter_me")
    check_equal(a.rows("S_star"), [("1", "10")], "S_star before ALTER TABLE")
    t.cluster.sql("ALTER TABLE alter_me ALTER COLUMN v TYPE text")
    result = a.execute("S_star")
    check_error(result, "0A000", "S_star after ALTER TABLE")
    check("result type" in result.errors[0].get("M", ""),
          f"error message: {result.errors[0].get('M')!r}")
    check_equal(a.value("SELECT 'next'"), "next", "simple query after the error")
    a.prepare_ok("S_after", "SELECT v FROM alter_me")
    check_equal(a.rows("S_after"), [("10",)], "a new statement after the error")


# ---- pgbench --------------------------------------------------------------------------------------

def bench_database(t):
    """benchdb, owned by app, initialized once per cluster with pgbench -i directly."""
    cluster = t.cluster
    cluster.pgbench_database(BENCH_DB, scale=1)
    return cluster.database_line(dbname=BENCH_DB, pool_size=10)


def bench(t, args, timeout=120):
    s = t.sluice(settings={"pool_mode": "transaction", "max_client_conn": 500},
                 databases={BENCH_DB: bench_database(t)})
    status, output, summary = harness.run_pgbench(["-n"] + list(args) + [BENCH_DB],
                                                  s.env(dbname=BENCH_DB), timeout)
    t.note("pgbench " + " ".join(args))
    t.note("\n".join(output.splitlines()[-12:]))
    check_equal(status, 0, "pgbench exit status")
    check(summary.get("processed", 0) > 0, "no transactions processed")
    check_equal(summary.get("failed", 0), 0, "failed transactions")
    return summary


@test("pgbench -M prepared -S -c 100 -j 2 over pool_size = 10: no failed transaction",
      timeout=120)
def pgbench_prepared_select(t):
    bench(t, ["-M", "prepared", "-S", "-c", "100", "-j", "2", "-T", "5"])


@test("pgbench -M extended -S -c 100 -j 2 over pool_size = 10: no failed transaction",
      timeout=120)
def pgbench_extended_select(t):
    bench(t, ["-M", "extended", "-S", "-c", "100", "-j", "2", "-T", "5"])


@test("pgbench TPC-B -M prepared -c 20 -j 20 over pool_size = 10: no failed transaction",
      timeout=120)
def pgbench_prepared_tpcb(t):
    # PostgreSQL 15's pgbench prepares a script's statements with a blocking PQprepare when a
    # client first reaches them. With fewer threads than clients, a thread can block on one of its
    # clients waiting for a backend while another of its own clients holds that backend
    # mid-transaction (BEGIN ... END): it never gets to send that client's END. One thread per
    # client (-j = -c) rules that out for multi-statement scripts.
    bench(t, ["-M", "prepared", "-c", "20", "-j", "20", "-T", "5"])


if __name__ == "__main__":
    raise SystemExit(suite.run())
