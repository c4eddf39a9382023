"""Console commands and settings PgBouncer users script against: SET of pool_mode, auth_type,
admin_users, stats_users and max_prepared_statements at run time; per-user pool_mode and
pool_size in [users]; the "*" fallback database and autodb_idle_timeout; KILL_CLIENT, DISABLE,
ENABLE, SUSPEND, SHOW STATE, SHOW DNS_HOSTS and SHOW DNS_ZONES. Real PostgreSQL, real clients."""

import collections
import os
import socket
import time

import harness
from harness import (ADMIN, Background, check, check_equal, console, expect_pg_error, one_value,
                     show, wait_for)

suite = harness.Suite()
test = suite.test

WATCHER = ("watcher", "watcher_pw")


def start(t, settings=None, databases=None, users_section=None):
    """A sluice with an admin user and a stats user, and an optional [users] section."""
    all_settings = {"admin_users": ADMIN[0], "stats_users": WATCHER[0]}
    all_settings.update(settings or {})
    users = dict(harness.default_users(t.cluster))
    users.update(dict([ADMIN, WATCHER]))
    s = t.sluice(settings=all_settings, databases=databases, users=users, start=False)
    if users_section:
        lines = "".join(f"{name} = {value}\n" for name, value in users_section.items())
        s.write_config(s.config_text() + "\n[users]\n" + lines)
    s.start()
    return s


def columns(conn, subject):
    with conn.cursor() as cur:
        cur.execute(f"SHOW {subject}")
        cur.fetchall()
        return [(d.name, d.type_code) for d in cur.description]


def run(conn, command):
    with conn.cursor() as cur:
        cur.execute(command)
        return cur.statusmessage


def config_value(admin, key):
    return {r["key"]: r for r in show(admin, "CONFIG")}[key]


def pool_rows(admin, database):
    return [r for r in show(admin, "POOLS") if r["database"] == database]


def database_names(admin):
    return [r["name"] for r in show(admin, "DATABASES")]


def unforced_line(cluster, **extra):
    """A [databases] value without user=: each client's own user logs in to PostgreSQL."""
    parts = [f"host={cluster.host}", f"port={cluster.port}"]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)


def login(s, user="app", password="app_pw", database="appdb"):
    """A login over the raw protocol, so a refusal comes back with its SQLSTATE (PgError)."""
    wire = s.wire()
    wire.login(user=user, password=password, database=database)
    return wire


def local_port(conn):
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        return sock.getsockname()[1]
    finally:
        sock.close()


def backend_pid(conn):
    return one_value(conn, "SELECT pg_backend_pid()")


# ---- SET at run time ---------------------------------------------------------------------------

@test("SET pool_mode = session: clients logging in afterwards keep their backend; SHOW CONFIG and "
      "SHOW POOLS show it; a client already in keeps working", sluice_only=True)
def set_pool_mode(t):
    s = start(t)  # pool_mode = transaction
    earlier = s.connect()
    check_equal(one_value(earlier, "SELECT 1"), 1, "a transaction-mode client before SET")
    admin = console(s)
    check_equal(run(admin, "SET pool_mode = session"), "SET", "SET pool_mode reply")
    check_equal(config_value(admin, "pool_mode")["value"], "session", "SHOW CONFIG pool_mode")
    check_equal(config_value(admin, "pool_mode")["changeable"], "yes", "pool_mode changeable")
    check_equal(pool_rows(admin, "appdb")[0]["pool_mode"], "session", "SHOW POOLS pool_mode")
    a, b = s.connect(), s.connect()
    first = backend_pid(a)
    # In transaction mode b would be handed a's idle backend; in session mode a keeps it.
    check(backend_pid(b) != first, "two session-mode clients have two backends")
    check_equal(backend_pid(a), first, "a keeps its backend between transactions")
    check_equal(one_value(earlier, "SELECT 2"), 2, "the client from before SET still works")
    run(admin, "SET pool_mode = transaction")
    c, d = s.connect(), s.connect()
    backend_pid(c), backend_pid(d)
    # Between transactions a transaction-mode client holds no backend (a session one keeps its own),
    # whichever worker serves it.
    idle_links = {r["port"]: r["link"] for r in show(admin, "CLIENTS")}
    check_equal([idle_links[local_port(c)], idle_links[local_port(d)]], [None, None],
                "transaction mode: c and d hold no backend between transactions")
    check(idle_links[local_port(a)] is not None, "the session client a keeps its backend")
    check_equal(pool_rows(admin, "appdb")[0]["pool_mode"], "transaction", "SHOW POOLS after SET back")
    expect_pg_error(lambda: run(admin, "SET pool_mode = statement"), "22023", "statement pooling")


@test("SET pool_mode = transaction: a session client already in keeps its backend and its session "
      "state, and that backend is reset before anyone else gets it", sluice_only=True)
def set_pool_mode_keeps_sessions(t):
    s = start(t, settings={"pool_mode": "session"},
              databases={"appdb": t.cluster.database_line(pool_size=2)})
    session = s.connect()
    run(session, "SET work_mem = '7MB'")
    pid = backend_pid(session)
    admin = console(s)
    check_equal(run(admin, "SET pool_mode = transaction"), "SET", "SET pool_mode reply")
    other = s.connect()
    for _ in range(3):
        check(backend_pid(other) != pid, "a transaction client never gets the session's backend")
    check_equal(backend_pid(session), pid, "the session client keeps its backend")
    check_equal(one_value(session, "SHOW work_mem"), "7MB", "and its session state")
    session.close()
    wait_for(lambda: pool_rows(admin, "appdb")[0]["sv_idle"] == 2, 10,
             what="the session's backend back in the pool")
    # With two backends idle, holding one in a transaction hands the next client the other.
    first, second = s.connect(autocommit=False), s.connect(autocommit=False)
    values = {one_value(first, "SHOW work_mem"), one_value(second, "SHOW work_mem")}
    check("7MB" not in values, f"the session's setting was reset before reuse: {values}")
    first.rollback()
    second.rollback()


@test("SET max_prepared_statements = 0: logins afterwards send named statements to PostgreSQL "
      "under their own names", sluice_only=True)
def set_max_prepared_statements(t):
    s = start(t, databases={"appdb": t.cluster.database_line(pool_size=1)})
    admin = console(s)

    def prepared_names():
        wire = s.wire()
        wire.login()
        wire.send(harness.parse_message("SELECT 1", name="mine") + harness.sync_message())
        wire.read_until_ready()
        names = [row[0] for row in wire.query_ok("SELECT name FROM pg_prepared_statements").rows]
        wire.send(harness.terminate_message())
        wire.close()
        return names

    check("mine" not in prepared_names(), "tracked statements are renamed on the backend")
    check_equal(run(admin, "SET max_prepared_statements = 0"), "SET", "SET reply")
    check_equal(config_value(admin, "max_prepared_statements")["value"], "0", "SHOW CONFIG")
    run(admin, "RECONNECT appdb")  # a fresh backend: no statement left from the first client
    check("mine" in prepared_names(), "with 0 the statement keeps its name")


@test("SET auth_type applies to the next login; token without keys is refused (22023)",
      sluice_only=True)
def set_auth_type(t):
    s = start(t)  # auth_type = scram-sha-256
    expect_pg_error(lambda: login(s, password="wrong"), "28P01", "wrong password under scram")
    admin = console(s)
    check_equal(run(admin, "SET auth_type = trust"), "SET", "SET auth_type reply")
    check_equal(config_value(admin, "auth_type")["value"], "trust", "SHOW CONFIG auth_type")
    conn = s.connect(password="wrong")
    check_equal(one_value(conn, "SELECT current_user"), "app", "trust lets any password in")
    run(admin, "SET auth_type = 'scram-sha-256'")
    expect_pg_error(lambda: login(s, password="wrong"), "28P01", "scram again after SET")
    check_equal(one_value(conn, "SELECT 1"), 1, "the client let in by trust stays")
    expect_pg_error(lambda: run(admin, "SET auth_type = token"), "22023", "token without keys")
    expect_pg_error(lambda: run(admin, "SET auth_type = pam"), "22023", "an auth_type sluice lacks")
    check_equal(config_value(admin, "auth_type")["value"], "scram-sha-256", "kept after refusals")


@test("SET stats_users and admin_users let the named users into the console at their next login",
      sluice_only=True)
def set_console_users(t):
    s = start(t)
    expect_pg_error(lambda: login(s, database="sluice"), "28000", "app before SET")
    admin = console(s)
    check_equal(run(admin, "SET stats_users = 'watcher, app'"), "SET", "SET stats_users")
    check_equal(config_value(admin, "stats_users")["value"], "watcher, app", "SHOW CONFIG stats_users")
    app = console(s, ("app", "app_pw"))
    check(show(app, "POOLS") is not None, "app may SHOW as a stats user")
    expect_pg_error(lambda: run(app, "PAUSE"), "42501", "app may not PAUSE as a stats user")
    run(admin, "SET admin_users = admin,app")
    app_admin = console(s, ("app", "app_pw"))
    check_equal(run(app_admin, "DISABLE appdb"), "DISABLE", "app may DISABLE as an admin user")
    run(app_admin, "ENABLE appdb")
    run(admin, "SET stats_users = watcher")
    run(admin, "SET admin_users = admin")
    expect_pg_error(lambda: login(s, database="sluice"), "28000", "app after both SETs")


# ---- [users]: pool_mode and pool_size per user -------------------------------------------------

@test("[users] pool_size sizes that user's pools unless the database sets pool_size; [users] "
      "pool_mode overrides the database's and the global one", sluice_only=True)
def per_user_pool_size_and_mode(t):
    cluster = t.cluster
    s = start(t, databases={"appdb": unforced_line(cluster, dbname="appdb"),
                            "small": unforced_line(cluster, dbname="appdb", pool_size=1,
                                                   pool_mode="transaction")},
              users_section={"app": "pool_mode=session pool_size=2"})
    admin = console(s)
    a, b = s.connect(), s.connect()
    check(backend_pid(a) != backend_pid(b), "session mode for app: two clients, two backends")
    check_equal(pool_rows(admin, "appdb")[0]["pool_mode"], "session", "SHOW POOLS pool_mode")
    third = s.connect()
    waiting = Background(one_value, third, "SELECT 'third'")
    wait_for(lambda: pool_rows(admin, "appdb")[0]["cl_waiting"] == 1, 10,
             what="the third client waiting on a pool of 2")
    check_equal(pool_rows(admin, "appdb")[0]["sv_active"], 2, "two backends, the user's pool_size")
    a.close()
    check_equal(waiting.result(10), "third", "the third client got the backend a left")
    # The database's pool_size wins over the user's.
    x, y = s.connect(dbname="small"), s.connect(dbname="small")
    backend_pid(x)
    late = Background(backend_pid, y)
    wait_for(lambda: pool_rows(admin, "small")[0]["cl_waiting"] == 1, 10,
             what="a second client waiting on the database's pool_size of 1")
    check_equal(pool_rows(admin, "small")[0]["pool_mode"], "session",
                "the user's pool_mode wins over the database's")
    x.close()
    check(late.result(10) > 0, "the second client got the backend once x left")
    users = {r["name"]: r["pool_mode"] for r in show(admin, "USERS")}
    check_equal(users.get("app"), "session", "SHOW USERS pool_mode of app")


@test("[users] pool_size out of range is refused at load", sluice_only=True)
def per_user_pool_size_refused(t):
    s = t.sluice(start=False)
    s.write_config(s.config_text() + "\n[users]\napp = pool_size=0\n")
    status, output = harness.run_tool([harness.sluice_binary(), "--check", "-c", s.config_path],
                                      None, 30)
    check(status != 0, f"--check of pool_size=0 fails: {output}")
    check("pool_size: invalid value '0'" in output, f"the message names the value: {output}")


# ---- the "*" fallback database ------------------------------------------------------------------

@test('"*" in [databases]: a database not listed is reached on the fallback\'s host, listed while '
      "used, and freed after autodb_idle_timeout", sluice_only=True)
def fallback_database(t):
    cluster = t.cluster
    s = start(t, settings={"autodb_idle_timeout": 1, "server_idle_timeout": 1},
              databases={"*": unforced_line(cluster)})
    admin = console(s)
    check_equal(config_value(admin, "autodb_idle_timeout")["value"], "1", "SHOW CONFIG")
    check("*" not in database_names(admin), '"*" is no database of its own')
    conn = s.connect(dbname="postgres")
    check_equal(one_value(conn, "SELECT current_database()"), "postgres", "backend database")
    rows = [r for r in show(admin, "DATABASES") if r["name"] == "postgres"]
    check_equal([(r["database"], r["port"]) for r in rows], [("postgres", cluster.port)],
                "SHOW DATABASES row of the made database")
    other = s.connect()  # appdb, made from "*" as well
    check_equal(one_value(other, "SELECT current_database()"), "appdb", "second made database")
    expect_pg_error(lambda: login(s, database="no_such_database"), "3D000",
                    "a name PostgreSQL does not have either")
    expect_pg_error(lambda: login(s, database="*"), "3D000", '"*" itself')
    conn.close()
    other.close()
    wait_for(lambda: "postgres" not in database_names(admin) and not pool_rows(admin, "postgres"),
             30, what="the unused made database and its pool freed")
    again = s.connect(dbname="postgres")
    check_equal(one_value(again, "SELECT current_database()"), "postgres", "made again on demand")


@test('RELOAD keeps a database made from "*"; without the "*" line, unlisted names are refused',
      sluice_only=True)
def fallback_database_reload(t):
    cluster = t.cluster
    s = start(t, databases={"*": unforced_line(cluster)})
    admin = console(s)
    conn = s.connect(dbname="postgres")
    check_equal(one_value(conn, "SELECT current_database()"), "postgres", "made database")
    s.settings["verbose"] = 1
    s.write_config(s.config_text().replace("[sluice]", "[sluice]\nverbose = 1", 1))
    check_equal(run(admin, "RELOAD"), "RELOAD", "RELOAD reply")
    check("postgres" in database_names(admin), "the made database is listed after RELOAD")
    check_equal(one_value(s.connect(dbname="postgres"), "SELECT 1"), 1, "and still served")
    s.write_config("\n".join(line for line in s.config_text().splitlines()
                             if not line.startswith("* =")) + "\n")
    run(admin, "RELOAD")
    expect_pg_error(lambda: login(s, database="template1"), "3D000", "an unlisted name without *")
    check_equal(one_value(conn, "SELECT 1"), 1, "a client already in stays")


# ---- control commands -------------------------------------------------------------------------

def client_ids(admin, user="app"):
    return [r["ptr"] for r in show(admin, "CLIENTS") if r["user"] == user]


@test("KILL_CLIENT closes one client by its SHOW CLIENTS id; others stay", sluice_only=True)
def kill_client(t):
    s = start(t)
    victim, bystander = s.connect(), s.connect()
    victim_pid = backend_pid(victim)
    admin = console(s)
    before = client_ids(admin)
    check_equal(len(before), 2, "two app clients in SHOW CLIENTS")
    # SHOW CLIENTS gives each client's own port: find the victim by it.
    victim_id = [r["ptr"] for r in show(admin, "CLIENTS") if r["port"] == local_port(victim)][0]
    check_equal(run(admin, f"KILL_CLIENT {victim_id.split('-')[1]}"), "KILL_CLIENT", "reply")
    error = expect_pg_error(lambda: one_value(victim, "SELECT 1"), None, "the killed client's query")
    check(victim.closed or "terminat" in str(error) or "closed" in str(error),
          f"the killed client's connection is gone: {error}")
    wait_for(lambda: victim_id not in client_ids(admin), 10, what="the killed client leaves SHOW CLIENTS")
    check_equal(one_value(bystander, "SELECT 1"), 1, "the other client is untouched")
    check(victim_pid > 0, "the victim had a backend")
    other_id = client_ids(admin)[0]
    check_equal(run(admin, f"KILL_CLIENT {other_id}"), "KILL_CLIENT", "the C-n form")
    expect_pg_error(lambda: run(admin, "KILL_CLIENT 999999"), "42704", "an id nobody has")
    expect_pg_error(lambda: run(admin, "KILL_CLIENT abc"), "22023", "not an id")
    expect_pg_error(lambda: run(admin, "KILL_CLIENT"), "42601", "no id")
    watcher = console(s, WATCHER)
    expect_pg_error(lambda: run(watcher, "KILL_CLIENT 1"), "42501", "a stats user")


@test("DISABLE refuses new logins to a database (55000), keeps its clients; ENABLE allows them",
      sluice_only=True)
def disable_enable(t):
    s = start(t)
    inside = s.connect()
    admin = console(s)
    check_equal(run(admin, "DISABLE appdb"), "DISABLE", "DISABLE reply")
    row = [r for r in show(admin, "DATABASES") if r["name"] == "appdb"][0]
    check_equal(row["disabled"], 1, "SHOW DATABASES disabled")
    error = expect_pg_error(lambda: login(s), "55000", "a login to a disabled database")
    check("disabled" in str(error), f"the message says why: {error}")
    check_equal(one_value(inside, "SELECT 1"), 1, "a client already in keeps working")
    check_equal(run(admin, "ENABLE appdb"), "ENABLE", "ENABLE reply")
    check_equal(one_value(s.connect(), "SELECT 1"), 1, "logins allowed again")
    row = [r for r in show(admin, "DATABASES") if r["name"] == "appdb"][0]
    check_equal(row["disabled"], 0, "SHOW DATABASES disabled after ENABLE")
    expect_pg_error(lambda: run(admin, "DISABLE nosuch"), "3D000", "an unknown database")
    expect_pg_error(lambda: run(admin, "DISABLE sluice"), "55000", "the console")
    expect_pg_error(lambda: run(admin, "DISABLE"), "42601", "no database")


@test("SHOW STATE says active, paused or suspended, with PgBouncer's columns", sluice_only=True)
def show_state(t):
    s = start(t)
    admin = console(s)
    check_equal(columns(admin, "STATE"), [("key", 25), ("value", 25)], "SHOW STATE columns")

    def state():
        return {r["key"]: r["value"] for r in show(admin, "STATE")}

    check_equal(state(), {"active": "yes", "paused": "no", "suspended": "no"}, "at start")
    run(admin, "PAUSE")
    check_equal(state(), {"active": "no", "paused": "yes", "suspended": "no"}, "after PAUSE")
    run(admin, "RESUME")
    check_equal(state(), {"active": "yes", "paused": "no", "suspended": "no"}, "after RESUME")
    watcher = console(s, WATCHER)
    check_equal(len(show(watcher, "STATE")), 3, "a stats user may SHOW STATE")


@test("SUSPEND answers once output is flushed, reads no client until RESUME, then all goes on",
      sluice_only=True)
def suspend_resume(t):
    s = start(t)
    conn = s.connect()
    check_equal(one_value(conn, "SELECT 1"), 1, "a client before SUSPEND")
    admin = console(s)
    check_equal(run(admin, "SUSPEND"), "SUSPEND", "SUSPEND reply")
    check_equal({r["key"]: r["value"] for r in show(admin, "STATE")}["suspended"], "yes",
                "SHOW STATE while suspended")
    pending = Background(one_value, conn, "SELECT 'after resume'")
    arriving = Background(lambda: one_value(s.connect(), "SELECT 'new client'"))
    for _ in range(3):  # the console is served meanwhile; the others are not read
        check_equal(len(show(admin, "STATE")), 3, "the console answers while suspended")
    check(not pending.done(), "a query sent while suspended is not run")
    check(not arriving.done(), "a new connection is not served while suspended")
    expect_pg_error(lambda: run(admin, "SUSPEND"), "55000", "SUSPEND twice")
    expect_pg_error(lambda: run(admin, "RESUME appdb"), "55000", "RESUME of one database")
    check_equal(run(admin, "RESUME"), "RESUME", "RESUME reply")
    check_equal(pending.result(10), "after resume", "the held query runs after RESUME")
    check_equal(arriving.result(10), "new client", "the held connection is served after RESUME")
    check_equal({r["key"]: r["value"] for r in show(admin, "STATE")}["active"], "yes",
                "SHOW STATE after RESUME")
    run(admin, "PAUSE appdb")
    expect_pg_error(lambda: run(admin, "SUSPEND"), "55000", "SUSPEND with a paused database")
    run(admin, "RESUME appdb")


@test("a message larger than the read limit, held by SUSPEND and read while sluice gives the backend the "
      "client's settings, is passed on whole (reading resumes after the settings)", sluice_only=True)
def large_message_during_settings_sync(t):
    # pkt_buf = 1 MiB: the first read after RESUME takes more than the 256 KiB a client may have
    # buffered while its backend is busy, so reading stops until the backend is ready for it.
    s = start(t, settings={"pool_mode": "transaction", "pkt_buf": 1048576},
              databases={"appdb": t.cluster.database_line(pool_size=1)})
    other = s.wire()
    other.login()
    other.query_ok("SELECT 1")  # the one backend now has the defaults
    sender = s.wire()
    sender.login(application_name="large_sender")  # linking it means a SET first
    admin = console(s)
    check_equal(run(admin, "SUSPEND"), "SUSPEND", "SUSPEND reply")
    size = 3_000_000
    query = harness.message("Q", f"SELECT length('{'x' * size}')".encode() + b"\0")
    sending = Background(sender.send, query)  # more than the socket holds while nobody reads
    time.sleep(0.3)
    check_equal(run(admin, "RESUME"), "RESUME", "RESUME reply")
    sender.settimeout(30)
    try:
        result = sender.read_until_ready()
    except (OSError, harness.ConnectionClosed) as e:
        raise AssertionError(f"no answer to the {size}-byte query within 30 s ({e}): sluice stopped "
                             "reading the client and did not start again") from None
    sending.result(10)
    check_equal(result.first_value(), str(size), "length of the large literal")
    check_equal(sender.query_ok("SHOW application_name").first_value(), "large_sender",
                "the client's setting on the backend")


@test("SHOW DNS_HOSTS lists the host names pools connect to; SHOW DNS_ZONES is empty",
      sluice_only=True)
def show_dns(t):
    cluster = t.cluster
    line = t.cluster.database_line().replace(f"host={cluster.host}", "host=localhost")
    s = start(t, databases={"appdb": line})
    admin = console(s)
    check_equal(columns(admin, "DNS_HOSTS"), [("hostname", 25), ("ttl", 20), ("addrs", 25)],
                "SHOW DNS_HOSTS columns")
    check_equal(columns(admin, "DNS_ZONES"), [("zonename", 25), ("serial", 20), ("count", 23)],
                "SHOW DNS_ZONES columns")
    check_equal(show(admin, "DNS_HOSTS"), [], "no pool yet: no host")
    conn = s.connect()
    check_equal(one_value(conn, "SELECT 1"), 1, "a query through localhost")
    rows = show(admin, "DNS_HOSTS")
    check_equal([r["hostname"] for r in rows], ["localhost"], "the host name")
    check("127.0.0.1" in rows[0]["addrs"] or "::1" in rows[0]["addrs"],
          f"the address reached: {rows[0]}")
    check_equal(show(admin, "DNS_ZONES"), [], "no zones")


# ---- several workers: one console for the whole process ----------------------------------------

FOUR_WORKERS = {"workers": 4, "default_pool_size": 20}
SPREAD = 12


def spread_clients(s, n=SPREAD):
    """TCP clients: each worker has its own SO_REUSEPORT socket and the kernel hashes every
    connection to one of them (or, with steer_by_cpu, picks by CPU: each is opened from the next
    CPU), so a dozen land on several workers."""
    clients = []
    for i in range(n):
        with harness.cpu_of_attempt(i):
            clients.append(s.connect(application_name=f"spread{i}"))
    return clients


def begin_transaction(conn):
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def app_clients(admin):
    return [r for r in show(admin, "CLIENTS") if r["database"] == "appdb"]


def app_backends(t):
    """pids of PostgreSQL's backends for appdb/app: what the pool holds."""
    rows = t.cluster.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND datname = 'appdb'")
    return {row[0] for row in rows}


def workers_of(admin):
    return {r["application_name"]: r["worker"] for r in app_clients(admin)}


@test("workers = 4: SHOW POOLS is one row for the pool all workers serve, counting every worker's "
      "clients and backends as the clients and PostgreSQL see them; SHOW CLIENTS and SERVERS list "
      "them all with their worker; SHOW WORKERS adds up to the same", sluice_only=True)
def four_workers_one_pool(t):
    s = start(t, settings=FOUR_WORKERS)
    clients = spread_clients(s)
    in_transaction = {begin_transaction(conn) for conn in clients[:5]}
    admin = console(s)
    rows = app_clients(admin)
    check_equal(sorted(r["application_name"] for r in rows), sorted(f"spread{i}" for i in range(SPREAD)),
                "SHOW CLIENTS lists the clients of every worker")
    served_by = {r["worker"] for r in rows}
    check(len(served_by) > 1 and served_by <= {0, 1, 2, 3}, f"workers serving the clients: {served_by}")
    pools = pool_rows(admin, "appdb")
    check_equal(len(pools), 1, "SHOW POOLS rows for appdb/app")
    check_equal((pools[0]["cl_active"], pools[0]["cl_waiting"], pools[0]["sv_active"]), (SPREAD, 0, 5),
                "(cl_active, cl_waiting, sv_active) with 5 transactions open")

    def pool_matches_postgres():
        backends = app_backends(t)
        row = pool_rows(admin, "appdb")[0]
        held = sum(row[k] for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
        servers = {r["remote_pid"] for r in show(admin, "SERVERS") if r["database"] == "appdb"}
        return held == len(backends) and servers == backends and in_transaction <= backends
    wait_for(pool_matches_postgres, 10, what="SHOW POOLS and SHOW SERVERS agree with pg_stat_activity")
    servers = [r for r in show(admin, "SERVERS") if r["database"] == "appdb"]
    check_equal({r["remote_pid"] for r in servers if r["link"]}, in_transaction,
                "the backends linked to a client are those of the open transactions")
    check(all(r["worker"] in (0, 1, 2, 3) for r in servers), f"SHOW SERVERS' workers: {servers}")

    workers = show(admin, "WORKERS")
    check_equal([r["worker"] for r in workers], [0, 1, 2, 3], "SHOW WORKERS rows")
    every_client = show(admin, "CLIENTS")
    check_equal({r["worker"]: r["clients"] for r in workers if r["clients"]},
                dict(collections.Counter(r["worker"] for r in every_client)),
                "SHOW WORKERS' clients per worker vs SHOW CLIENTS")
    check_equal(sum(r["servers"] for r in workers), len(servers), "SHOW WORKERS' servers vs SHOW SERVERS")
    check(all(r["loop_iterations"] > 0 and r["cpu_seconds"] is not None and r["cpu_seconds"] >= 0
              for r in workers), f"loop turns and CPU time of every worker: {workers}")
    lists = {r["list"]: r["items"] for r in show(admin, "LISTS")}
    check_equal((lists["pools"], lists["used_clients"]), (1, len(every_client)),
                "SHOW LISTS pools and used_clients")
    for conn in clients[:5]:
        run(conn, "COMMIT")


@test("workers = 4: KILL closes the database's clients and backends on every worker", sluice_only=True)
def four_workers_kill(t):
    s = start(t, settings=FOUR_WORKERS)
    clients = spread_clients(s)
    for conn in clients:
        check_equal(one_value(conn, "SELECT 1"), 1, "a query before KILL")
    admin = console(s)
    check(len(set(workers_of(admin).values())) > 1, f"clients on several workers: {workers_of(admin)}")
    stats = [r for r in show(admin, "STATS_TOTALS") if r["database"] == "appdb"]
    check(len(stats) == 1 and stats[0]["query_count"] >= SPREAD,
          f"SHOW STATS_TOTALS: one row for appdb counting the queries of every worker: {stats}")
    totals = {r["name"]: r["value"] for r in show(admin, "TOTALS")}
    check_equal(totals["total_query_count"], stats[0]["query_count"], "SHOW TOTALS total_query_count")
    check_equal(run(admin, "KILL appdb"), "KILL", "KILL reply")
    for conn in clients:
        expect_pg_error(lambda: one_value(conn, "SELECT 1"), None, "a killed client's query")
    wait_for(lambda: not app_clients(admin), 10, what="no appdb client left in SHOW CLIENTS")
    wait_for(lambda: not app_backends(t), 10, what="no appdb backend left in PostgreSQL")
    check_equal(pool_rows(admin, "appdb")[0]["cl_active"], 0, "SHOW POOLS cl_active after KILL")
    run(admin, "RESUME appdb")
    check_equal(one_value(s.connect(), "SELECT 'back'"), "back", "a login after RESUME")


@test("workers = 4: PAUSE answers once the transactions on every worker are done and holds the "
      "clients of every worker until RESUME", sluice_only=True)
def four_workers_pause_resume(t):
    s = start(t, settings=FOUR_WORKERS)
    clients = spread_clients(s)
    admin = console(s)
    worker_of = workers_of(admin)
    # One open transaction on each of two workers: PAUSE waits for both.
    first = clients[0]
    second = next(c for i, c in enumerate(clients) if worker_of[f"spread{i}"] != worker_of["spread0"])
    begin_transaction(first)
    begin_transaction(second)
    pausing = Background(run, admin, "PAUSE appdb")
    run(first, "COMMIT")
    watcher = console(s)
    wait_for(lambda: pool_rows(watcher, "appdb")[0]["sv_active"] == 1, 10,
             what="one transaction still open")
    check(not pausing.done(), "PAUSE answered while a transaction was open on another worker")
    run(second, "COMMIT")
    check_equal(pausing.result(10), "PAUSE", "PAUSE reply once both transactions ended")
    held = [Background(one_value, conn, "SELECT 'resumed'") for conn in clients]
    wait_for(lambda: pool_rows(watcher, "appdb")[0]["cl_waiting"] == SPREAD, 10,
             what=f"all {SPREAD} clients waiting while paused")
    check(not any(h.done() for h in held), "a paused client's query ran")
    check_equal([r["paused"] for r in show(watcher, "DATABASES") if r["name"] == "appdb"], [1],
                "SHOW DATABASES paused")
    check_equal(run(admin, "RESUME appdb"), "RESUME", "RESUME reply")
    check_equal([h.result(10) for h in held], ["resumed"] * SPREAD, "every held query after RESUME")


if __name__ == "__main__":
    raise SystemExit(suite.run())
