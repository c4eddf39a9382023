"""Faults cost only the faulty: refused clients hear why, a client that breaks the protocol or vanishes
mid-query does not cost its backend or leave its locks, and running out of descriptors makes clients
wait rather than fail."""

import re
import socket
import struct
import threading
import time

import harness
from harness import check, check_equal, message, one_value, query_message, show, wait_for

suite = harness.Suite()
test = suite.test

TOO_MANY_CLIENTS = "53300"
PROTOCOL_VIOLATION = "08P01"


def first_error(messages):
    errors = harness.error_messages(messages)
    return errors[0] if errors else None


# ---- refused clients ------------------------------------------------------------------------------

def read_refusal(sock):
    """Reads one server message from a raw socket; returns its fields, or why there was none."""
    wire = harness.Wire(sock)
    try:
        kind, payload = wire.read_message()
    except (harness.ConnectionClosed, ConnectionResetError) as error:
        return {"none": f"{type(error).__name__}: {error}"}
    except OSError as error:
        return {"none": f"{type(error).__name__}: {error}"}
    if kind != "E":
        return {"none": f"message {kind!r} instead of an ErrorResponse"}
    return harness.parse_fields(payload)


@test("a flood past max_client_conn + 256: every refused client reads a 53300, and the log says so "
      "at most once a second", timeout=120, sluice_only=True)
def flood_refused_with_errors(t):
    limit = 10
    s = t.sluice(settings={"max_client_conn": limit, "auth_type": "md5"}, users={"app": "app_pw"})
    members = []
    for _ in range(limit):
        wire = s.wire()
        wire.login()
        members.append(wire)
    flood_size = limit + 256 + 60
    packet = harness.startup_packet({"user": "app", "database": harness.APP_DB})
    flood = []
    # Each sends the first bytes of its startup packet, so all are accepted and held at once,
    # as a burst of slow logins is; then each sends the rest and reads its answer.
    for _ in range(flood_size):
        sock = socket.create_connection((s.host, s.port), timeout=20)
        sock.sendall(packet[:4])
        flood.append(sock)
    for sock in flood:
        try:
            sock.sendall(packet[4:])
        except OSError:
            pass  # refused already: its answer is read below
    answers = [read_refusal(sock) for sock in flood]
    for sock in flood:
        sock.close()
    refused = [a for a in answers if a.get("C") == TOO_MANY_CLIENTS]
    others = [a for a in answers if a.get("C") != TOO_MANY_CLIENTS]
    t.note(f"{len(refused)} of {flood_size} read 53300; first other answer: {others[:1]}")
    check_equal(len(refused), flood_size, "flood clients that read a 53300 ErrorResponse")
    check("max_client_conn" in refused[0].get("M", ""), f"message: {refused[0]}")
    for wire in members:
        check_equal(wire.query_ok("SELECT 'still in'").rows, [("still in",)], "a member's query")
    def refusal_lines():
        return [line for line in s.log_text().splitlines() if "refused: max_client_conn" in line]

    def logged_or_counted():
        lines = refusal_lines()
        held_back = sum(int(n) for n in re.findall(r"\((\d+) more refused", "\n".join(lines)))
        named = sum(1 for line in lines if re.search(r"C-\d+: \S+ refused", line))
        return named + held_back

    # Refusals left out of the log are counted in the next line, at most a second later.
    wait_for(lambda: logged_or_counted() == flood_size, 10,
             what=f"the log to name or count all {flood_size} refusals")
    lines = refusal_lines()
    t.note(f"{len(lines)} log lines about refusals; last: {lines[-1:]}")
    check(len(lines) < flood_size / 10, f"{len(lines)} log lines for {flood_size} refusals: not rate-limited")


# ---- clients that break the protocol ----------------------------------------------------------------

def garbage_payloads():
    """Each: what a faulty client sends after login, with a query in flight before the garbage."""
    select = query_message("SELECT 1")
    return {
        "unknown message type": select + message("z", b"garbage"),
        "Sync with a body": select + b"S" + struct.pack("!I", 1000) + b"\0" * 996,
        "Execute over PostgreSQL's limit": select + b"E" + struct.pack("!I", 20004) + b"\0" * 20000,
        "Bind whose value runs past its end": (
            select + message("B", b"\0\0" + struct.pack("!HH", 0, 1) + struct.pack("!i", 500) + b"x"
                             + struct.pack("!H", 0))),
        "impossible length": select + b"Q" + struct.pack("!I", 2),
        "garbage mid extended batch": (harness.parse_message("SELECT pg_sleep(0.2)") + harness.bind_message()
                                       + harness.execute_message() + message("\x01", b"\xff" * 16)),
    }


def run_garbage_client(s, name, payload, in_transaction):
    wire = s.wire(timeout=20)
    wire.login()
    if in_transaction:
        wire.query_ok("BEGIN")
        wire.query_ok("INSERT INTO garbage_left VALUES (1)")
    wire.send(payload)
    messages = wire.read_until_closed(20)
    error = first_error(messages)
    check(error is not None, f"{name}: no ErrorResponse, got {[k for k, _ in messages]}")
    check_equal(error.get("C"), PROTOCOL_VIOLATION, f"{name}: SQLSTATE of {error}")


@test("clients that break the protocol get 08P01 and are closed; the pool's one backend survives "
      "and well-behaved clients go on without reconnects", timeout=120, sluice_only=True)
def protocol_violations_cost_only_the_client(t):
    t.cluster.sql("DROP TABLE IF EXISTS garbage_left; CREATE TABLE garbage_left (v int);"
                  "GRANT ALL ON garbage_left TO PUBLIC")
    s = t.sluice(settings={"pool_mode": "transaction"},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    good = s.connect()
    pid = one_value(good, "SELECT pg_backend_pid()")
    seen_pids, good_errors = set(), []
    stop = threading.Event()

    def well_behaved():
        conn = s.connect()
        while not stop.is_set():
            try:
                seen_pids.add(one_value(conn, "SELECT pg_backend_pid()"))
            except Exception as error:  # recorded; the test fails on it below
                good_errors.append(str(error).strip())
                return

    worker = threading.Thread(target=well_behaved, daemon=True)
    worker.start()
    for round_number in range(3):
        for name, payload in garbage_payloads().items():
            run_garbage_client(s, name, payload, in_transaction=round_number == 1)
    stop.set()
    worker.join(20)
    check(not good_errors, f"a well-behaved client failed: {good_errors[:1]}")
    check_equal(seen_pids, {pid}, "backend pids the well-behaved client saw")
    check_equal(one_value(good, "SELECT pg_backend_pid()"), pid, "the next query's backend pid")
    check_equal(one_value(good, "SELECT now() = statement_timestamp()"), True,
                "no transaction of a faulty client's left open on the backend")
    check_equal(t.cluster.sql("SELECT count(*) FROM garbage_left")[0][0], 0,
                "rows of faulty clients' transactions (rolled back)")
    app_pids = {b["pid"] for b in t.cluster.backends("app")}
    check_equal(app_pids, {pid}, "backends of the pool in pg_stat_activity")


ADMIN = ("admin", "admin_pw")


def sluice_with_console(t, pool_size):
    """A transaction-mode sluice over a pool of pool_size, with an admin user, and its console."""
    users = dict(harness.default_users(t.cluster))
    users[ADMIN[0]] = ADMIN[1]
    s = t.sluice(settings={"pool_mode": "transaction", "admin_users": ADMIN[0]}, users=users,
                 databases={"appdb": t.cluster.database_line(pool_size=pool_size)})
    return s, s.connect(dbname="sluice", user=ADMIN[0], password=ADMIN[1])


def worker_of(admin, wire):
    """The worker a logged-in raw connection of ours lives on (its row in SHOW CLIENTS)."""
    port = harness.local_port(wire)
    rows = [r for r in show(admin, "CLIENTS") if r["addr"] == "127.0.0.1" and r["port"] == port]
    check_equal(len(rows), 1, f"SHOW CLIENTS rows for port {port}")
    return int(rows[0]["worker"])


def login_wire_on_worker(s, admin, worker, attempts=100):
    """A logged-in raw connection accepted by the given worker (the others opened are closed)."""
    for attempt in range(attempts):
        with harness.cpu_of_attempt(attempt):
            wire = s.wire(timeout=20)
        wire.login()
        if worker_of(admin, wire) == worker:
            return wire
        wire.close()
    raise harness.TestFailure(f"{attempts} connections, none accepted by worker {worker}")


def appdb_waiting(admin):
    return sum(int(r["cl_waiting"]) for r in show(admin, "POOLS") if r["database"] == "appdb")


def check_closed_with_08p01(wire, what):
    error = first_error(wire.read_until_closed(20))
    check(error is not None, f"{what}: no ErrorResponse")
    check_equal(error.get("C"), PROTOCOL_VIOLATION, f"{what}: SQLSTATE of {error}")


@test("a faulty client that waits for the backend gets it as sluice's ROLLBACK for the client before "
      "ends, and breaks the protocol mid-query: the backend is cleaned and kept, round after round",
      timeout=240, sluice_only=True)
def faulty_waiter_after_rollback_keeps_backend(t):
    t.cluster.sql("DROP TABLE IF EXISTS garbage_left; CREATE TABLE garbage_left (v int);"
                  "GRANT ALL ON garbage_left TO PUBLIC")
    s, admin = sluice_with_console(t, pool_size=1)
    probe = s.connect()
    pid = one_value(probe, "SELECT pg_backend_pid()")
    payloads = list(garbage_payloads().items())
    for round_number in range(20):
        name, payload = payloads[round_number % len(payloads)]
        holder = s.wire(timeout=20)
        holder.login()
        holder.query_ok("BEGIN")
        holder.query_ok("INSERT INTO garbage_left VALUES (1)")
        # On the holder's worker the backend goes from the ROLLBACK straight to its first waiter.
        faulty = login_wire_on_worker(s, admin, worker_of(admin, holder))
        faulty.send(payload)
        wait_for(lambda: appdb_waiting(admin) == 1, 10, what="the faulty client to wait for the backend")
        holder.close()  # left in its transaction: sluice rolls it back, then the waiter gets the backend
        check_closed_with_08p01(faulty, f"round {round_number}, {name}")
        check_equal(one_value(probe, "SELECT pg_backend_pid()"), pid,
                    f"round {round_number} ({name}): the backend pid after the faulty client left")
    check_equal(t.cluster.sql("SELECT count(*) FROM garbage_left")[0][0], 0,
                "rows of the transactions left open (rolled back)")
    check_equal({b["pid"] for b in t.cluster.backends("app")}, {pid}, "backends of the pool")


@test("a faulty client that waits for a new backend gets it as its login ends, and breaks the "
      "protocol mid-query: the new backend is cleaned and kept", timeout=120, sluice_only=True)
def faulty_waiter_on_new_backend_keeps_it(t):
    s, admin = sluice_with_console(t, pool_size=1)
    probe = s.connect()
    one_value(probe, "SELECT 1")  # the pool knows its session defaults: logins need no backend now
    payloads = list(garbage_payloads().items())
    for round_number in range(6):
        name, payload = payloads[round_number % len(payloads)]
        t.cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'")
        wait_for(lambda: not [r for r in show(admin, "SERVERS") if r["database"] == "appdb"], 10,
                 what="sluice to drop the terminated backend")
        faulty = s.wire(timeout=20)
        faulty.login()
        faulty.send(payload)  # its query waits for the backend opened for it
        check_closed_with_08p01(faulty, f"round {round_number}, {name}")
        opened = {b["pid"] for b in t.cluster.backends("app")}
        pid = one_value(probe, "SELECT pg_backend_pid()")
        check_equal(opened, {pid}, f"round {round_number} ({name}): the backend opened for the faulty "
                                   "client, then the one the next query ran on")


# ---- clients that vanish mid-query -----------------------------------------------------------------

@test("a client that vanishes while its query holds a row lock: the query is cancelled at once, "
      "the lock is free and the backend is rolled back and reused", timeout=60, sluice_only=True)
def vanished_client_releases_locks(t):
    t.cluster.sql("DROP TABLE IF EXISTS locked_row; CREATE TABLE locked_row (id int PRIMARY KEY, v text);"
                  "INSERT INTO locked_row VALUES (1, 'a'); GRANT ALL ON locked_row TO PUBLIC")
    s = t.sluice(settings={"pool_mode": "transaction"},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    wire = s.wire()
    wire.login()
    wire.query_ok("BEGIN")
    wire.query_ok("SELECT v FROM locked_row WHERE id = 1 FOR UPDATE")
    pid = int(wire.query_ok("SELECT pg_backend_pid()").rows[0][0])
    wire.send(query_message("SELECT pg_sleep(30)"))
    wait_for(lambda: any(b["pid"] == pid and "pg_sleep" in (b.get("query") or "")
                         and b["state"] == "active" for b in t.cluster.backends("app")),
             10, what="the pg_sleep to be running")
    wire.abort()

    other = t.cluster.connect(dbname=harness.APP_DB)
    other.autocommit = True
    with other.cursor() as cur:
        cur.execute("SET lock_timeout = '5s'")
        cur.execute("SELECT v FROM locked_row WHERE id = 1 FOR UPDATE")
        check_equal(cur.fetchone()[0], "a", "the row another session locked after the client left")
    sleeping = [b for b in t.cluster.backends("app") if "pg_sleep(30)" in (b.get("query") or "")
                and b["state"] == "active"]
    check_equal(sleeping, [], "pg_sleep(30) still running")
    next_client = s.connect()
    check_equal(one_value(next_client, "SELECT pg_backend_pid()"), pid, "the next client's backend")
    check_equal(one_value(next_client, "SELECT now() = statement_timestamp()"), True,
                "the next client's statement runs outside the vanished client's transaction")


@test("a client that vanishes in the middle of COPY FROM STDIN or of an unsynced extended batch: "
      "its backend is cleaned and serves the next client", timeout=60, sluice_only=True)
def vanished_mid_copy_or_batch_keeps_backend(t):
    t.cluster.sql("DROP TABLE IF EXISTS copied; CREATE TABLE copied (v text); GRANT ALL ON copied TO PUBLIC")
    s = t.sluice(settings={"pool_mode": "transaction"},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    pid = one_value(s.connect(), "SELECT pg_backend_pid()")

    copier = s.wire()
    copier.login()
    copier.send(query_message("COPY copied FROM STDIN"))
    kind, _ = copier.read_message()
    check_equal(kind, "G", "answer to COPY FROM STDIN")
    copier.send(message("d", b"half a copy\n"))
    copier.abort()
    check_equal(one_value(s.connect(), "SELECT pg_backend_pid()"), pid, "backend after the COPY client left")
    check_equal(t.cluster.sql("SELECT count(*) FROM copied")[0][0], 0, "rows of the abandoned COPY")

    batcher = s.wire()
    batcher.login()
    batcher.send(harness.parse_message("SELECT pg_sleep(30)") + harness.bind_message()
                 + harness.execute_message() + harness.flush_message())
    wait_for(lambda: any(b["pid"] == pid and b["state"] == "active" and "pg_sleep(30)" in (b["query"] or "")
                         for b in t.cluster.backends("app")), 10, what="the unsynced pg_sleep to run")
    batcher.abort()
    next_client = s.connect()
    check_equal(one_value(next_client, "SELECT pg_backend_pid()"), pid, "backend after the batch client left")
    check_equal(one_value(next_client, "SELECT now() = statement_timestamp()"), True,
                "the next client's statement runs in a transaction of its own")


# ---- out of descriptors for a backend ---------------------------------------------------------------

@test("out of descriptors when a backend is needed: the log says so, the client waits and is served "
      "once descriptors free up", timeout=90, sluice_only=True)
def backend_descriptor_exhaustion_waits(t):
    s = t.sluice(settings={"pool_mode": "transaction", "max_client_conn": 200},
                 databases={"appdb": t.cluster.database_line(pool_size=2)}, start=False)
    s.start(max_open_files=48)
    holder = s.wire(timeout=30)
    holder.login()
    holder.query_ok("BEGIN")
    holder.query_ok("SELECT 1")  # holds the first backend
    waiter = s.wire(timeout=60)
    waiter.login()
    fillers = []
    for _ in range(80):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect((s.host, s.port))
            sock.sendall(b"\x00\x00")  # TCP_DEFER_ACCEPT: some bytes, so sluice accepts at once
        except OSError:
            sock.close()
            continue
        fillers.append(sock)
        if "pausing accepts" in s.log_text():
            break
    wait_for(lambda: "pausing accepts" in s.log_text(), 15,
             what="sluice to run out of descriptors accepting clients")
    waiter.send(query_message("SELECT 'served'"))
    wait_for(lambda: "out of file descriptors" in s.log_text(), 15,
             what="a log line saying a backend could not be opened for lack of descriptors")
    t.note([line for line in s.log_text().splitlines() if "out of file descriptors" in line][:1])
    for sock in fillers:
        sock.close()
    result = waiter.read_until_ready()
    check_equal(result.errors, [], "errors the waiting client got")
    check_equal(result.rows, [("served",)], "the waiting client's result")
    holder.query_ok("COMMIT")


if __name__ == "__main__":
    raise SystemExit(suite.run())
