"""workers = N: one event loop per thread. Pool limits hold across workers, a backend released on one
worker serves a client waiting on another (in the order clients started waiting), prepared
statements and cancels work whichever worker a client or a cancel lands on, and reload, KILL,
backends dying and max_client_conn behave as with one worker. TCP clients are spread over the
workers by the kernel (SO_REUSEPORT), so tests open connections until SHOW CLIENTS' worker column
shows them where they need to be."""

import asyncio
import os
import socket
import threading
import time

import psycopg2

import harness
from harness import ADMIN, Background, check, check_equal, console, one_value, show, wait_for

suite = harness.Suite()
test = suite.test

WORKERS_COLUMNS = ["worker", "clients", "servers", "loop_iterations", "cpu_seconds", "handoffs_in",
                   "handoffs_out"]
# What a client may see when its backend is terminated under it: PostgreSQL's FATAL (57P01) passed
# on, or the connection-failure class.
BACKEND_GONE_STATES = {"57P01", "08006", "08003", "08000", "08P01", None}


# ---- helpers ---------------------------------------------------------------------------------------

def start(t, workers, settings=None, databases=None):
    """A sluice with `workers` workers in transaction mode and an admin user."""
    all_settings = {"workers": workers, "pool_mode": "transaction", "admin_users": ADMIN[0]}
    all_settings.update(settings or {})
    users = dict(harness.default_users(t.cluster))
    users[ADMIN[0]] = ADMIN[1]
    return t.sluice(settings=all_settings, databases=databases, users=users)


def pool_of(t, size):
    return {"appdb": t.cluster.database_line(pool_size=size)}


def workers_table(admin):
    """SHOW WORKERS as {worker index: row}, numbers as numbers."""
    rows = show(admin, "WORKERS")
    table = {}
    for row in rows:
        check_equal(list(row), WORKERS_COLUMNS, "SHOW WORKERS columns")
        parsed = {k: float(v) if k == "cpu_seconds" else int(v) for k, v in row.items()}
        table[parsed["worker"]] = parsed
    return table


def worker_column(row, what):
    check("worker" in row, f"{what} has no worker column: {list(row)}")
    return int(row["worker"])


def worker_of(admin, conn, timeout=5):
    """The worker a TCP connection of ours lives on, by its port in SHOW CLIENTS (a connection just
    opened may not be accepted yet: wait for its row)."""
    port = harness.local_port(conn)

    def row():
        rows = [r for r in show(admin, "CLIENTS") if r["addr"] == "127.0.0.1" and r["port"] == port]
        check(len(rows) <= 1, f"SHOW CLIENTS has {len(rows)} rows for port {port}")
        return rows[0] if rows else None
    return worker_column(wait_for(row, timeout, what=f"SHOW CLIENTS row for port {port}"),
                         "SHOW CLIENTS")


def spread(admin, connect, workers, per_worker=1, attempts=200):
    """Opens connections with connect() until `workers` distinct workers each hold per_worker of
    them; returns {worker: [connections]} for those workers (the rest are closed). They are opened
    from each CPU in turn: with steer_by_cpu, one CPU reaches one worker."""
    by_worker = {}
    spare = []
    for attempt in range(attempts):
        with harness.cpu_of_attempt(attempt):
            conn = connect()
        index = worker_of(admin, conn)
        wanted = len(by_worker.get(index, [])) < per_worker and \
            (index in by_worker or len(by_worker) < workers)
        (by_worker.setdefault(index, []) if wanted else spare).append(conn)
        if len(by_worker) == workers and all(len(c) == per_worker for c in by_worker.values()):
            for extra in spare:
                extra.close()
            return by_worker
    raise harness.TestFailure(f"{attempts} TCP connections landed on workers {sorted(by_worker)} only; "
                              f"wanted {workers} workers with {per_worker} each")


def login_wire(s):
    wire = s.wire()
    wire.login()
    return wire


def cl_waiting(admin):
    return sum(int(r["cl_waiting"]) for r in show(admin, "POOLS")
               if r["database"] == "appdb" and r["user"] == "app")


def pgbench_script(s, name, text):
    path = os.path.join(s.dir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def appdb_clients(admin):
    return [r for r in show(admin, "CLIENTS") if r["database"] == "appdb"]


# ---- 1. many clients, one small pool ----------------------------------------------------------------

@test("workers = 4: 200 pgbench clients over a pool of 5 never have more than 5 backends, and every "
      "transaction commits", timeout=150, sluice_only=True)
def many_clients_small_pool(t):
    s = start(t, 4, {"default_pool_size": 5, "max_client_conn": 400})
    script = pgbench_script(s, "xact.sql", "BEGIN;\nSELECT pg_backend_pid();\nSELECT 1;\nCOMMIT;\n")
    admin = console(s)
    admin_worker = worker_of(admin, admin)
    sampler = harness.BackendSampler(t.cluster, usename="app", datname="appdb")
    bench = Background(harness.run_pgbench, ["-n", "-c", "200", "-j", "4", "-t", "5", "-f", script,
                                             "appdb"], s.env(), 120)
    busy_workers = set()
    try:
        while not bench.done():
            for index, row in workers_table(admin).items():
                if row["clients"] - (1 if index == admin_worker else 0) > 0:
                    busy_workers.add(index)
            time.sleep(0.1)
    finally:
        most = sampler.stop()
    status, output, summary = bench.result(0)
    check_equal(status, 0, f"pgbench exit status:\n{output[-2000:]}")
    check_equal(summary.get("processed"), 1000, f"transactions processed:\n{output[-2000:]}")
    check(most <= 5, f"{most} backends at once for a pool of 5 (sampled every 50 ms)")
    check(len(busy_workers) > 1, f"SHOW WORKERS showed clients on workers {sorted(busy_workers)} only")
    pools = [r for r in show(admin, "POOLS") if r["database"] == "appdb" and r["user"] == "app"]
    check_equal(len(pools), 1, "SHOW POOLS rows for appdb/app (one pool, whatever the workers)")
    t.note(f"most backends at once: {most}; clients seen on workers {sorted(busy_workers)}")


# ---- 2. waiting clients served by backends released on another worker --------------------------------

@test("workers = 2, pool of 1: a client waiting on one worker gets the backend released on the other",
      sluice_only=True)
def waiter_served_across_workers(t):
    s = start(t, 2, databases=pool_of(t, 1))
    admin = console(s)
    by_worker = spread(admin, s.connect, workers=2)
    (a, [waiter]), (b, [holder]) = sorted(by_worker.items())
    before = workers_table(admin)
    with holder.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        holder_pid = cur.fetchone()[0]
    waiting = Background(one_value, waiter, "SELECT pg_backend_pid()")
    wait_for(lambda: cl_waiting(admin) == 1, 10, what="SHOW POOLS cl_waiting = 1")
    check(not waiting.done(), "the waiter ran while the only backend was in another's transaction")
    with holder.cursor() as cur:
        cur.execute("COMMIT")
    check_equal(waiting.result(15), holder_pid, "backend pid the waiter got (pool of one)")
    after = workers_table(admin)
    check(after[b]["handoffs_out"] > before[b]["handoffs_out"],
          f"SHOW WORKERS handoffs_out of worker {b} (released the backend): "
          f"{before[b]['handoffs_out']} -> {after[b]['handoffs_out']}")
    check(after[a]["handoffs_in"] > before[a]["handoffs_in"],
          f"SHOW WORKERS handoffs_in of worker {a} (had the waiter): "
          f"{before[a]['handoffs_in']} -> {after[a]['handoffs_in']}")
    owners = [worker_column(r, "SHOW SERVERS") for r in show(admin, "SERVERS")
              if r["remote_pid"] == holder_pid]
    check_equal(owners, [a], "SHOW SERVERS' worker for the backend, idle after the waiter's query")
    check_equal(one_value(holder, "SELECT pg_backend_pid()"), holder_pid,
                "backend pid the first client gets back")


@test("workers = 4, pool of 1: clients waiting on three workers are served in the order they "
      "started waiting", sluice_only=True)
def waiters_fifo_across_workers(t):
    t.cluster.sql("DROP SEQUENCE IF EXISTS served_order; CREATE SEQUENCE served_order; "
                  "GRANT USAGE ON SEQUENCE served_order TO app")
    s = start(t, 4, databases=pool_of(t, 1))
    admin = console(s)
    by_worker = spread(admin, s.connect, workers=3, per_worker=2)
    groups = [conns for _, conns in sorted(by_worker.items())]
    order = [group[k] for k in range(2) for group in groups]  # w0, w1, w2, w0, w1, w2
    holder = s.connect()
    with holder.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
    queries = []
    for number, conn in enumerate(order, 1):
        queries.append(Background(one_value, conn,
                                  "SELECT nextval('served_order') FROM pg_sleep(0.05)"))
        wait_for(lambda: cl_waiting(admin) == number, 10, what=f"SHOW POOLS cl_waiting = {number}")
        time.sleep(0.02)  # FIFO across workers holds to within 5 ms (README): start waits apart
    with holder.cursor() as cur:
        cur.execute("COMMIT")
    served = [q.result(20) for q in queries]
    check_equal(served, sorted(served),
                "nextval each waiter got, in the order they started waiting (served in that order)")


# ---- 3. prepared statements across workers ----------------------------------------------------------

def round_trip(wire, data):
    wire.send(data)
    return wire.read_until_ready()


def prepare(wire, name, sql):
    result = round_trip(wire, harness.parse_message(sql, name) + harness.sync_message())
    check(not result.errors, f"Parse {name}: {result.errors}")


def execute(wire, name, value):
    result = round_trip(wire, harness.bind_message([value], statement=name) +
                               harness.execute_message() + harness.sync_message())
    check(not result.errors, f"Bind/Execute {name}({value}): {result.errors}")
    check_equal(len(result.rows), 1, f"rows from {name}({value})")
    return result.rows[0]


@test("workers = 2, pool of 1: a statement prepared by a client on one worker is used by a client on "
      "the other through the same backend, and each client's names stay its own", sluice_only=True)
def prepared_across_workers(t):
    s = start(t, 2, {"max_prepared_statements": 100}, databases=pool_of(t, 1))
    admin = console(s)
    by_worker = spread(admin, lambda: login_wire(s), workers=2)
    (_, [a]), (_, [b]) = sorted(by_worker.items())
    plus, times = "SELECT $1::int + 1, pg_backend_pid()", "SELECT $1::int * 10, pg_backend_pid()"
    before = sum(row["handoffs_in"] for row in workers_table(admin).values())
    prepare(a, "mine", plus)
    value, pid = execute(a, "mine", 1)
    check_equal(value, "2", "a: mine(1)")
    prepare(b, "same_text", plus)  # the text a prepared, under another name, on the other worker
    check_equal(execute(b, "same_text", 41), ("42", pid), "b: same_text(41) and its backend")
    prepare(b, "mine", times)  # a's name, another text
    check_equal(execute(b, "mine", 5), ("50", pid), "b: its own mine(5)")
    check_equal(execute(a, "mine", 5), ("6", pid), "a: its mine(5) after b's")
    check_equal(execute(b, "same_text", 1), ("2", pid), "b: same_text(1) again")
    check_equal(execute(a, "mine", 9), ("10", pid), "a: mine(9) again")
    after = sum(row["handoffs_in"] for row in workers_table(admin).values())
    check(after > before, "the backend never moved between workers (SHOW WORKERS handoffs_in)")


@test("workers = 4: 24 asyncpg clients (every statement prepared) over a pool of 3 get the right "
      "results", timeout=90, sluice_only=True)
def asyncpg_across_workers(t):
    try:
        import asyncpg
    except ImportError:
        raise harness.Skip("asyncpg is not installed (apt-get install python3-asyncpg)")
    s = start(t, 4, {"default_pool_size": 3, "max_prepared_statements": 100})
    admin = console(s)
    connected = threading.Event()
    proceed = threading.Event()

    async def client(number, conns):
        conn = await asyncpg.connect(host=s.host, port=s.port, user="app", password="app_pw",
                                     database="appdb", ssl=False)
        conns.append(conn)
        if len(conns) == 24:
            connected.set()
        while not proceed.is_set():
            await asyncio.sleep(0.02)
        try:
            for k in range(15):
                check_equal(await conn.fetchval("SELECT $1::int + $2::int", number, k), number + k,
                            f"client {number} round {k} sum")
                rows = await conn.fetch("SELECT n, $2::text AS who FROM generate_series(1, $1::int) n",
                                        k % 4 + 1, f"c{number}")
                check_equal([(r["n"], r["who"]) for r in rows],
                            [(n, f"c{number}") for n in range(1, k % 4 + 2)],
                            f"client {number} round {k} rows")
        finally:
            await conn.close()

    async def scenario():
        conns = []
        await asyncio.gather(*(client(number, conns) for number in range(24)))

    run = Background(asyncio.run, scenario())
    wait_for(lambda: connected.is_set() or run.done(), 30, what="24 asyncpg connections")
    try:
        workers = {worker_column(r, "SHOW CLIENTS") for r in appdb_clients(admin)}
    finally:
        proceed.set()
    run.result(60)
    check(len(workers) > 1, f"the asyncpg clients were all on workers {sorted(workers)}")


# ---- 4. cancel from another worker --------------------------------------------------------------------

def cancel_connection_on_other_worker(s, admin, victim_worker, attempts=100):
    """A raw TCP connection that landed on a worker other than victim_worker (before it sends
    anything, so SHOW CLIENTS lists it)."""
    for _ in range(attempts):
        sock = socket.create_connection((s.host, s.port), timeout=10)
        if worker_of(admin, _SocketConn(sock)) != victim_worker:
            return sock
        sock.close()
    raise harness.TestFailure(f"{attempts} TCP connections all landed on worker {victim_worker}")


class _SocketConn:
    def __init__(self, sock):
        self.sock = sock


def wait_active(t, sql):
    wait_for(lambda: t.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                   "AND query = %s", (sql,))[0][0] > 0, 10, what=f"{sql} running")


@test("workers = 2: a CancelRequest arriving on another worker cancels that client's query only",
      sluice_only=True)
def cancel_from_other_worker(t):
    s = start(t, 2, {"default_pool_size": 4})
    admin = console(s)
    bystanders = [conns[0] for conns in spread(admin, s.connect, workers=2).values()]
    victim = login_wire(s)
    victim_worker = worker_of(admin, victim)
    long_query = "SELECT pg_sleep(30)"
    for attempt in range(1, 4):
        others = [Background(one_value, conn, "SELECT pg_sleep(1.5)::text || 'done'")
                  for conn in bystanders]
        victim.send(harness.query_message(long_query))
        wait_active(t, long_query)
        sock = cancel_connection_on_other_worker(s, admin, victim_worker)
        pid, key = victim.backend_key
        sock.sendall(harness.cancel_packet(pid, key))
        sock.close()
        victim.settimeout(10)
        result = victim.read_until_ready()
        check_equal([e.get("C") for e in result.errors], ["57014"],
                    f"attempt {attempt}: errors of the cancelled query")
        for number, other in enumerate(others):
            check_equal(other.result(10), "done", f"attempt {attempt}: bystander {number}'s query")
        check_equal(victim.query_ok("SELECT 'after'").first_value(), "after",
                    f"attempt {attempt}: the cancelled client's next query")


@test("workers = 2: psycopg2's cancel (a new TCP connection each time, on either worker) cancels "
      "that client's query every time", sluice_only=True)
def cancel_psycopg2_repeated(t):
    s = start(t, 2, {"default_pool_size": 4})
    admin = console(s)
    victim, bystander = s.connect(), s.connect()
    for attempt in range(1, 7):
        long_query = Background(one_value, victim, "SELECT pg_sleep(30)")
        other = Background(one_value, bystander, "SELECT pg_sleep(1)::text || 'done'")
        wait_active(t, "SELECT pg_sleep(30)")
        victim.cancel()
        error = long_query.error(10)
        check_equal(getattr(error, "pgcode", None), "57014",
                    f"attempt {attempt}: SQLSTATE of the cancelled query ({error})")
        check_equal(other.result(10), "done", f"attempt {attempt}: the other client's query")
    check_equal(one_value(victim, "SELECT 'after'"), "after", "the cancelled client's next query")
    check_equal(len(show(admin, "WORKERS")), 2, "SHOW WORKERS rows")


# ---- 5. reload and KILL under load ----------------------------------------------------------------------

def pgbench_load(s, seconds):
    script = pgbench_script(s, "sleepy.sql", "BEGIN;\nSELECT pg_sleep(0.005);\nCOMMIT;\n")
    return Background(harness.run_pgbench, ["-n", "-c", "20", "-j", "4", "-f", script, "-T",
                                            str(seconds), "appdb"], s.env(), 60)


@test("workers = 4 under pgbench: a reload lowering default_pool_size from 5 to 2 holds on every "
      "worker", timeout=90, sluice_only=True)
def reload_under_load(t):
    s = start(t, 4, {"default_pool_size": 5, "max_client_conn": 100})
    sampler = harness.BackendSampler(t.cluster, usename="app", datname="appdb")
    try:
        bench = pgbench_load(s, 8)
        wait_for(lambda: t.cluster.count_backends("app", "appdb") >= 3, 15,
                 what="pgbench using more than 2 backends")
        s.settings["default_pool_size"] = 2
        s.write_config()
        s.reload()
        wait_for(lambda: t.cluster.count_backends("app", "appdb") <= 2, 15,
                 what="2 backends or fewer after the reload")
        settled = time.monotonic()
        status, output, summary = bench.result(60)
        most_after = sampler.max_since(settled)
    finally:
        sampler.stop()
    check_equal(status, 0, f"pgbench across the reload:\n{output[-2000:]}")
    check(summary.get("processed", 0) > 0, f"pgbench processed nothing:\n{output[-2000:]}")
    check(most_after <= 2, f"{most_after} backends at once after the reload to default_pool_size = 2")
    check(s.alive(), "sluice exited after the reload")


@test("workers = 4 under pgbench: KILL closes the database's clients and backends on every worker; "
      "new clients work after RESUME", timeout=90, sluice_only=True)
def kill_under_load(t):
    s = start(t, 4, {"default_pool_size": 5, "max_client_conn": 100})
    admin = console(s)
    bench = pgbench_load(s, 30)
    def logged_in():  # a client still logging in at KILL may log in after it, as in PgBouncer
        clients = [r for r in appdb_clients(admin) if r["state"] != "login"]
        return len(clients) == 20 and clients
    clients = wait_for(logged_in, 20, what="20 pgbench clients logged in (SHOW CLIENTS)")
    workers = {worker_column(r, "SHOW CLIENTS") for r in clients}
    with admin.cursor() as cur:
        cur.execute("KILL appdb")
    wait_for(lambda: not appdb_clients(admin), 10, what="no appdb clients in SHOW CLIENTS after KILL")
    status, output, _ = bench.result(20)  # every client was closed: pgbench ends long before -T 30
    check(status != 0, f"pgbench went on after KILL:\n{output[-2000:]}")
    wait_for(lambda: t.cluster.count_backends("app", "appdb") == 0, 10,
             what="no appdb backends after KILL")
    check(len(workers) > 1, f"the pgbench clients were all on workers {sorted(workers)}")
    with admin.cursor() as cur:
        cur.execute("RESUME appdb")
    for number in range(8):  # over TCP: several workers
        check_equal(one_value(s.connect(), "SELECT %s", (number,)), number,
                    f"new client {number} after RESUME")
    check(s.alive(), "sluice exited")


# ---- 6. backends dying while lent ---------------------------------------------------------------------

@test("workers = 2, pool of 2: backends terminated again and again under clients on both workers: "
      "only transactions in flight fail, clients go on", timeout=90, sluice_only=True)
def backends_terminated_under_load(t):
    s = start(t, 2, databases=pool_of(t, 2))
    admin = console(s)
    by_worker = spread(admin, s.connect, workers=2, per_worker=3)
    busy = [conns[k] for conns in by_worker.values() for k in range(2)]
    idle = [conns[2] for conns in by_worker.values()]  # never in a transaction during the storm
    stop = threading.Event()

    def transactions(conn):
        done, errors = 0, []
        while not stop.is_set():
            try:
                with conn.cursor() as cur:
                    cur.execute("BEGIN")
                    cur.execute("SELECT pg_backend_pid()")
                    cur.execute("SELECT pg_sleep(0.01)")
                    cur.execute("COMMIT")
                done += 1
            except psycopg2.Error as error:
                errors.append((error.pgcode, str(error).strip()[:120], conn.closed))
                check(not conn.closed, f"sluice closed the client after its backend died: {error}")
                try:  # whatever transaction state the client thinks it is in
                    with conn.cursor() as cur:
                        cur.execute("ROLLBACK")
                except psycopg2.Error:
                    pass
        return done, errors

    sampler = harness.BackendSampler(t.cluster, usename="app", datname="appdb")
    loops = [Background(transactions, conn) for conn in busy]
    terminated = 0
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not any(loop.done() for loop in loops):
            for backend in t.cluster.backends("app", "appdb"):
                t.cluster.sql("SELECT pg_terminate_backend(%s)", (backend["pid"],), dbname="postgres")
                terminated += 1
            time.sleep(0.25)
    finally:
        stop.set()
        most = sampler.stop()
    results = [loop.result(20) for loop in loops]
    all_errors = [e for _, errors in results for e in errors]
    for number, (done, errors) in enumerate(results):
        check(done > 0, f"client {number} completed no transaction; errors {errors[:3]}")
    for number, conn in enumerate(busy):  # the same connections, after the storm
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT %s", (number,))
            check_equal(cur.fetchone()[0], number, f"busy client {number}'s transaction after the storm")
            cur.execute("COMMIT")
    unexpected = [e for e in all_errors if e[0] not in BACKEND_GONE_STATES]
    check(not unexpected, f"errors other than a lost backend: {unexpected[:5]}")
    check(terminated > 0, "no backend was terminated")
    check(len(all_errors) <= terminated,  # a backend carries one transaction at a time
          f"{len(all_errors)} transactions failed for {terminated} backends terminated")
    check(most <= 2, f"{most} backends at once for a pool of 2")
    for number, conn in enumerate(idle):
        check_equal(one_value(conn, "SELECT %s", (number,)), number,
                    f"idle client {number}'s query after the storm")
    check(s.alive(), "sluice exited")

    def servers_match():
        servers = [r for r in show(admin, "SERVERS") if r["database"] == "appdb"]
        pids = {b["pid"] for b in t.cluster.backends("app", "appdb")}
        return len(servers) <= 2 and {r["remote_pid"] for r in servers} == pids and servers
    servers = wait_for(servers_match, 10, what="SHOW SERVERS listing exactly the backends PostgreSQL has")
    owners = {worker_column(r, "SHOW SERVERS") for r in servers}
    check(owners <= {0, 1}, f"SHOW SERVERS names workers {sorted(owners)} with workers = 2")
    t.note(f"{terminated} backends terminated; {len(all_errors)} transactions failed; "
           f"sqlstates {sorted({str(e[0]) for e in all_errors})}")


# ---- 7. max_client_conn ----------------------------------------------------------------------------------

@test("workers = 4, max_client_conn = 10: of 30 TCP clients at once exactly 10 log in, 20 get 53300",
      timeout=90, sluice_only=True)
def max_client_conn_across_workers(t):
    s = start(t, 4, {"max_client_conn": 10})

    def attempt(_):
        try:
            return login_wire(s)
        except harness.PgError as error:
            return error.sqlstate
        except (harness.ConnectionClosed, OSError) as error:
            return f"closed without an error: {error}"

    def burst(count):
        calls = [Background(attempt, n) for n in range(count)]
        outcomes = [call.result(60) for call in calls]
        logged_in = [o for o in outcomes if isinstance(o, harness.Wire)]
        refused = [o for o in outcomes if not isinstance(o, harness.Wire)]
        return logged_in, refused

    logged_in, refused = burst(30)
    check_equal(len(logged_in), 10, f"clients logged in (refusals: {sorted(set(refused))})")
    check_equal(refused, ["53300"] * 20, "what the other 20 got")
    for wire in logged_in:
        check_equal(wire.query_ok("SELECT 1").first_value(), "1", "a logged-in client's query")
    check_equal(attempt(0), "53300", "an 11th client while 10 are logged in")
    logged_in.pop().close()
    wait_for(lambda: isinstance(attempt_kept(attempt, logged_in), harness.Wire), 10,
             what="a new client logging in once one of the 10 left")
    check_equal(attempt(0), "53300", "an 11th client again")
    for wire in logged_in:
        wire.close()
    logged_in.clear()
    time.sleep(0.5)
    again, refused = burst(12)
    check_equal(len(again), 10, f"clients logged in after all left (refusals: {sorted(set(refused))})")
    for wire in again:
        wire.close()


def attempt_kept(attempt, kept):
    outcome = attempt(0)
    if isinstance(outcome, harness.Wire):
        kept.append(outcome)
    return outcome


# ---- 8. one worker, and SHOW WORKERS ---------------------------------------------------------------------

@test("workers = 1: clients are served and SHOW WORKERS has one row, worker 0", sluice_only=True)
def one_worker(t):
    s = start(t, 1)
    conn = s.connect()
    check_equal(one_value(conn, "SELECT 40 + 2"), 42, "a query")
    admin = console(s)
    table = workers_table(admin)
    check_equal(sorted(table), [0], "SHOW WORKERS' workers")
    check(table[0]["clients"] >= 2, f"SHOW WORKERS clients with a client and the console: {table[0]}")
    check(table[0]["servers"] >= 1, f"SHOW WORKERS servers after a query: {table[0]}")
    check_equal((table[0]["handoffs_in"], table[0]["handoffs_out"]), (0, 0), "handoffs with one worker")
    check_equal({worker_column(r, "SHOW CLIENTS") for r in show(admin, "CLIENTS")}, {0},
                "SHOW CLIENTS' workers")
    check_equal({worker_column(r, "SHOW SERVERS") for r in show(admin, "SERVERS")}, {0},
                "SHOW SERVERS' workers")


@test("workers = 4: SHOW WORKERS has one row per worker and counts each worker's clients",
      sluice_only=True)
def show_workers_rows(t):
    s = start(t, 4)
    admin = console(s)
    by_worker = spread(admin, s.connect, workers=2)
    for conns in by_worker.values():
        one_value(conns[0], "SELECT 1")
    table = workers_table(admin)
    check_equal(sorted(table), [0, 1, 2, 3], "SHOW WORKERS' workers")
    per_worker = {}
    for row in show(admin, "CLIENTS"):
        index = worker_column(row, "SHOW CLIENTS")
        per_worker[index] = per_worker.get(index, 0) + 1
    for index, row in table.items():
        check_equal(row["clients"], per_worker.get(index, 0),
                    f"worker {index}'s clients in SHOW WORKERS vs SHOW CLIENTS")
    servers = sum(row["servers"] for row in table.values())
    check_equal(servers, len(show(admin, "SERVERS")), "servers in SHOW WORKERS vs SHOW SERVERS")


# ---- 9. new connections steered by CPU (steer_by_cpu) ----------------------------------------------

def workers_reached(admin, connect, cpu, count=12):
    """The workers `count` connections opened from cpu land on (the connections stay open)."""
    reached = set()
    conns = []
    for _ in range(count):
        with harness.on_cpu(cpu):
            conns.append(connect())
        reached.add(worker_of(admin, conns[-1]))
    return reached, conns


def require_two_cpus():
    if len(harness.ALLOWED_CPUS) < 2:
        raise harness.Skip(f"steer_by_cpu needs two CPUs; this process may run on {harness.ALLOWED_CPUS}")


@test("steer_by_cpu = on, 2 workers: every connection from the first CPU reaches worker 0, every "
      "one from the second worker 1; a reload to off spreads them by the hash again",
      sluice_only=True)
def steered_by_cpu(t):
    require_two_cpus()
    s = start(t, 2, {"steer_by_cpu": "on"})
    admin = console(s)
    wait_for(lambda: "go to the worker of the CPU they arrive on" in s.log_text(), 5,
             what="the steering log line")
    first, conns = workers_reached(admin, s.connect, harness.ALLOWED_CPUS[0])
    second, more = workers_reached(admin, s.connect, harness.ALLOWED_CPUS[1])
    check_equal((first, second), ({0}, {1}), "workers reached from each CPU")
    s.settings["steer_by_cpu"] = "off"
    s.write_config()
    s.reload()
    wait_for(lambda: "spread over the workers by the kernel's hash" in s.log_text(), 5,
             what="the log line of the hash")
    after, others = workers_reached(admin, s.connect, harness.ALLOWED_CPUS[0], count=24)
    check_equal(after, {0, 1}, "workers reached from the first CPU after the reload")
    for conn in conns + more + others:
        conn.close()


@test("steer_by_cpu = auto, 2 workers: steered by CPU on a host of at most 4 CPUs, by the hash "
      "on a bigger one", sluice_only=True)
def steering_auto(t):
    require_two_cpus()
    s = start(t, 2)
    admin = console(s)
    small = len(harness.ALLOWED_CPUS) <= 4
    if small:
        wait_for(lambda: "go to the worker of the CPU they arrive on" in s.log_text(), 5,
                 what="the steering log line")
    reached, conns = workers_reached(admin, s.connect, harness.ALLOWED_CPUS[1], count=24)
    check_equal(reached, {1} if small else {0, 1},
                f"workers reached from the second CPU ({len(harness.ALLOWED_CPUS)} CPUs)")
    for conn in conns:
        conn.close()


@test("steer_by_cpu: a worker saturated while the other idles, 3 seconds in a row (simulated, "
      "SLUICE_FAULT_UNBALANCED), sends sluice back to the hash, which it logs",
      sluice_only=True, timeout=60)
def steering_given_up_when_unbalanced(t):
    require_two_cpus()
    with open(harness.sluice_binary(), "rb") as f:
        if b"SLUICE_FAULT_UNBALANCED" not in f.read():
            raise harness.Skip("sluice was built without fault injection")
    s = t.sluice(settings={"workers": 2, "steer_by_cpu": "on", "admin_users": ADMIN[0]},
                 users=dict(harness.default_users(t.cluster), **{ADMIN[0]: ADMIN[1]}),
                 start=False)
    s.start(env={"SLUICE_FAULT_UNBALANCED": "1"})
    wait_for(lambda: "one worker is saturated while the others idle" in s.log_text(), 10,
             what="the log line of going back to the hash")
    admin = console(s)
    reached, conns = workers_reached(admin, s.connect, harness.ALLOWED_CPUS[0], count=24)
    check_equal(reached, {0, 1}, "workers reached from one CPU once back on the hash")
    for conn in conns:
        conn.close()


if __name__ == "__main__":
    raise SystemExit(suite.run())
