"""A plain client idle for a while gives up its input and output buffers (the worker's janitor,
after IDLE_BUFFER_RELEASE_SECONDS = 1 s without input, checked every 200 ms); the conn layer makes
them again when it next reads or writes. Every way a sleeping client can be read, written to or
looked at must find them there: its next query, large results and queries, client_idle_timeout,
KILL, KILL_CLIENT and shutdown errors, SHOW CLIENTS and SHOW MEM. Each test lets the clients sleep
past the delay before touching them. Only a client without a backend (CLIENT_IDLE) sleeps: one in
session pooling keeps its backend between queries, and a NOTIFY still reaches it after a pause."""

import signal
import time

import harness
from harness import ADMIN, check, check_equal, console, error_messages, one_value, show

suite = harness.Suite()
test = suite.test

# Past the 1 s delay and one more janitor pass (200 ms), with room for a slow machine.
SLEEP = 1.6


def asleep():
    time.sleep(SLEEP)


def start(t, settings=None, databases=None):
    all_settings = {"admin_users": ADMIN[0]}
    all_settings.update(settings or {})
    users = dict(harness.default_users(t.cluster))
    users.update(dict([ADMIN]))
    return t.sluice(settings=all_settings, databases=databases, users=users)


def closing_errors(wire, what):
    """The ErrorResponses a client got before sluice closed it."""
    errors = error_messages(wire.read_until_closed(10))
    check_equal(len(errors), 1, f"{what}: ErrorResponses before the close")
    return errors[0]


@test("a client idle past the delay runs its next queries, large results and large queries",
      sluice_only=True)
def queries_after_sleep(t):
    s = start(t)
    conn = s.connect()
    check_equal(one_value(conn, "SELECT 1"), 1, "first query")
    asleep()
    check_equal(one_value(conn, "SELECT 2"), 2, "query after a sleep")
    asleep()
    size = 2_000_000
    check_equal(len(one_value(conn, "SELECT repeat('x', %s)", (size,))), size,
                "a result of many buffer chunks after a sleep")
    asleep()
    text = "y" * 300_000
    check_equal(one_value(conn, "SELECT length(%s)", (text,)), len(text),
                "a query of many reads after a sleep")
    wire = s.wire()
    wire.login()
    wire.query_ok("SELECT 1")
    asleep()
    result = wire.extended("SELECT $1::int + 1", ("41",))
    check_equal(result.first_value(), "42", "extended protocol after a sleep")
    asleep()
    check_equal(wire.query_ok("SELECT 'again'").first_value(), "again", "simple query after another")


def client_buffers(admin):
    """SHOW MEM's client_buffers row: (clients holding their buffers, bytes of one pair)."""
    rows = {r["name"]: r for r in show(admin, "MEM")}
    check("client_buffers" in rows, f"SHOW MEM rows: {sorted(rows)}")
    return rows["client_buffers"]["used"], rows["client_buffers"]["size"]


@test("a client that logs in and sends nothing gives up its buffers at once, before the idle delay",
      sluice_only=True)
def buffers_given_up_after_login(t):
    s = start(t, settings={"workers": 2})
    admin = console(s)
    held, pair = client_buffers(admin)
    check_equal(held, 1, "clients holding buffers with only the console connected")
    check(pair > 0, f"size of the console's buffer pair: {pair}")
    clients = []
    for _ in range(20):
        wire = s.wire()
        wire.login()
        clients.append(wire)
    # Checked at once: the idle delay (1 s) has not passed for the last of them.
    held, _ = client_buffers(admin)
    check_equal(held, 1, "clients holding buffers after 20 logins (only the console, which is asking)")
    busy = s.connect()
    with busy.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
        held, _ = client_buffers(admin)
        check_equal(held, 2, "a client inside a transaction keeps its buffers")
        cur.execute("COMMIT")
    for i, wire in enumerate(clients):
        check_equal(wire.query_ok(f"SELECT {i}").first_value(), str(i), f"client {i} after its login")
    asleep()
    held, _ = client_buffers(admin)
    check_equal(held, 1, "clients holding buffers once all have slept past the delay")


@test("session pooling: a client keeps its backend (and its buffers) while idle; a NOTIFY reaches it",
      sluice_only=True)
def notify_while_asleep(t):
    s = start(t, settings={"pool_mode": "session"})
    wire = s.wire()
    wire.login()
    wire.query_ok("LISTEN idle_channel")
    asleep()
    other = s.connect()
    with other.cursor() as cur:
        cur.execute("NOTIFY idle_channel, 'wake up'")
    wire.settimeout(10)
    kind, payload = wire.read_message()
    check_equal(kind, "A", "NotificationResponse to the paused client")
    check("wake up" in payload.decode(errors="replace"), f"payload of the notification: {payload!r}")
    check_equal(wire.query_ok("SELECT 'after'").first_value(), "after", "a query afterwards")


@test("client_idle_timeout reaches a sleeping client with 57P05", sluice_only=True)
def idle_timeout_while_asleep(t):
    s = start(t, settings={"client_idle_timeout": 3})
    wire = s.wire()
    wire.login()
    wire.query_ok("SELECT 1")
    error = closing_errors(wire, "client_idle_timeout")
    check_equal(error.get("C"), "57P05", "SQLSTATE")
    check_equal(one_value(s.connect(), "SELECT 1"), 1, "a new client afterwards")


@test("SHOW CLIENTS and SHOW MEM with sleeping clients; they still work afterwards",
      sluice_only=True)
def admin_sees_sleepers(t):
    s = start(t, settings={"workers": 2})
    sleepers = [s.connect() for _ in range(6)]
    for conn in sleepers:
        one_value(conn, "SELECT 1")
    admin = console(s)
    asleep()
    rows = [r for r in show(admin, "CLIENTS") if r["database"] == harness.APP_DB]
    check_equal(len(rows), len(sleepers), "sleeping clients in SHOW CLIENTS")
    check(all(r["sluice_state"] == "idle" for r in rows),
          f"states: {[r['sluice_state'] for r in rows]}")
    check(show(admin, "MEM"), "SHOW MEM rows")
    for i, conn in enumerate(sleepers):
        check_equal(one_value(conn, "SELECT %s::int", (i,)), i, f"sleeper {i} afterwards")


@test("KILL and KILL_CLIENT reach sleeping clients with their error", sluice_only=True)
def kill_while_asleep(t):
    s = start(t, settings={"workers": 2}, databases={"otherdb": t.cluster.database_line()})
    doomed = s.wire()
    doomed.login(database="otherdb")
    doomed.query_ok("SELECT 1")
    target = s.wire()
    target.login()
    target.query_ok("SELECT 1")
    keep = s.connect()
    one_value(keep, "SELECT 1")
    admin = console(s)
    asleep()
    with admin.cursor() as cur:
        cur.execute("KILL otherdb")
    error = closing_errors(doomed, "KILL")
    check_equal(error.get("C"), "57P01", "KILL SQLSTATE")
    check("KILL" in error.get("M", ""), f"KILL message: {error.get('M')}")
    target_id = [r["ptr"] for r in show(admin, "CLIENTS") if r["port"] == harness.local_port(target)]
    check_equal(len(target_id), 1, "the sleeping client in SHOW CLIENTS")
    with admin.cursor() as cur:
        cur.execute(f"KILL_CLIENT {target_id[0]}")
    error = closing_errors(target, "KILL_CLIENT")
    check_equal(error.get("C"), "57P01", "KILL_CLIENT SQLSTATE")
    check_equal(one_value(keep, "SELECT 'kept'"), "kept", "the other sleeper still works")


@test("shutdown reaches a sleeping client with 57P01 and sluice exits", sluice_only=True)
def shutdown_while_asleep(t):
    s = start(t)
    wire = s.wire()
    wire.login()
    wire.query_ok("SELECT 1")
    asleep()
    s.signal(signal.SIGTERM)
    error = closing_errors(wire, "shutdown")
    check_equal(error.get("C"), "57P01", "shutdown SQLSTATE")
    check_equal(s.wait_exit(10), 0, "exit status")


if __name__ == "__main__":
    raise SystemExit(suite.run())
