"""The admin console: PgBouncer's SHOW and control commands on the virtual database "sluice" (also
"pgbouncer"), with PgBouncer's column names and types, read by psql, psycopg2 and a raw socket."""

import re
import socket
import struct
import time

import psycopg2
import psycopg2.errors

import harness
from harness import (ADMIN, Background, check, check_equal, console, expect_pg_error, one_value,
                     show, wait_for)

suite = harness.Suite()
test = suite.test

WATCHER = ("watcher", "watcher_pw")

# PgBouncer 1.18's result columns (name:type OID; 25 text, 23 int4, 20 int8, 1700 numeric), which
# the console reproduces; sluice's own columns come after them.
PGBOUNCER_COLUMNS = {
    "POOLS": "database:25, user:25, cl_active:23, cl_waiting:23, cl_active_cancel_req:23, "
             "cl_waiting_cancel_req:23, sv_active:23, sv_active_cancel:23, sv_being_canceled:23, "
             "sv_idle:23, sv_used:23, sv_tested:23, sv_login:23, maxwait:23, maxwait_us:23, "
             "pool_mode:25",
    "STATS": "database:25, total_xact_count:1700, total_query_count:1700, total_received:1700, "
             "total_sent:1700, total_xact_time:1700, total_query_time:1700, total_wait_time:1700, "
             "avg_xact_count:1700, avg_query_count:1700, avg_recv:1700, avg_sent:1700, "
             "avg_xact_time:1700, avg_query_time:1700, avg_wait_time:1700",
    "STATS_TOTALS": "database:25, xact_count:1700, query_count:1700, bytes_received:1700, "
                    "bytes_sent:1700, xact_time:1700, query_time:1700, wait_time:1700",
    "STATS_AVERAGES": "database:25, xact_count:1700, query_count:1700, bytes_received:1700, "
                      "bytes_sent:1700, xact_time:1700, query_time:1700, wait_time:1700",
    "DATABASES": "name:25, host:25, port:23, database:25, force_user:25, pool_size:23, "
                 "min_pool_size:23, reserve_pool:23, pool_mode:25, max_connections:23, "
                 "current_connections:23, paused:23, disabled:23",
    "USERS": "name:25, pool_mode:25",
    "CLIENTS": "type:25, user:25, database:25, state:25, addr:25, port:23, local_addr:25, "
               "local_port:23, connect_time:25, request_time:25, wait:23, wait_us:23, "
               "close_needed:23, ptr:25, link:25, remote_pid:23, tls:25, application_name:25",
    "SERVERS": "type:25, user:25, database:25, state:25, addr:25, port:23, local_addr:25, "
               "local_port:23, connect_time:25, request_time:25, wait:23, wait_us:23, "
               "close_needed:23, ptr:25, link:25, remote_pid:23, tls:25, application_name:25",
    "LISTS": "list:25, items:23",
    "CONFIG": "key:25, value:25, default:25, changeable:25",
    "MEM": "name:25, size:23, used:23, free:23, memtotal:23",
    "VERSION": "version:25",
    "TOTALS": "name:25, value:1700",
}
SLUICE_EXTRA_COLUMNS = {
    "POOLS": "pinned:23, waiting_all_pinned:23, sluice_prewarm:25",
    "USERS": "sluice_secret_source:25, sluice_cached_since:25, sluice_lookups:20, sluice_cache_hits:20",
    "CLIENTS": "sluice_state:25, worker:23",
    "SERVERS": "sluice_state:25, worker:23",
}
SLUICE_COMMANDS = {
    "PINNED": "client:25, database:25, user:25, since:25, reason:25, statement:25",
    "AUTH": "event:25, method:25, reason:25, count:20",
    "WORKERS": "worker:23, clients:23, servers:23, loop_iterations:20, cpu_seconds:1700, "
               "handoffs_in:20, handoffs_out:20",
}
LISTS_ROWS = ["databases", "users", "pools", "free_clients", "used_clients", "login_clients",
              "free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries", "dns_pending"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


def parse_columns(spec):
    columns = []
    for item in spec.split(","):
        name, oid = item.strip().rsplit(":", 1)
        columns.append((name, int(oid)))
    return columns


def start(t, settings=None, databases=None):
    """A sluice with an admin user and a stats user in its auth_file."""
    all_settings = {"admin_users": ADMIN[0], "stats_users": WATCHER[0]}
    all_settings.update(settings or {})
    users = dict(harness.default_users(t.cluster))
    users.update(dict([ADMIN, WATCHER]))
    return t.sluice(settings=all_settings, databases=databases, users=users)


def run(conn, command):
    with conn.cursor() as cur:
        cur.execute(command)
        return cur.statusmessage


def pool_row(conn, database="appdb", user="app"):
    rows = [r for r in show(conn, "POOLS") if r["database"] == database and r["user"] == user]
    check_equal(len(rows), 1, f"SHOW POOLS rows for {database}/{user}")
    return rows[0]


def database_row(conn, name):
    rows = [r for r in show(conn, "DATABASES") if r["name"] == name]
    check_equal(len(rows), 1, f"SHOW DATABASES rows named {name}")
    return rows[0]


def begin_transaction(conn):
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def single_backend_db(t):
    return {"appdb": t.cluster.database_line(pool_size=1)}


# ---- what the replies look like -------------------------------------------------------------------

@test("every SHOW names its columns, in order and with the type OIDs, as PgBouncer 1.18 does",
      sluice_only=True)
def show_columns_match_pgbouncer(t):
    s = start(t)
    s.connect()  # a pool, so the per-pool commands have a row
    admin = console(s)
    for subject, spec in list(PGBOUNCER_COLUMNS.items()) + list(SLUICE_COMMANDS.items()):
        with admin.cursor() as cur:
            cur.execute(f"SHOW {subject}")
            got = [(d.name, d.type_code) for d in cur.description]
            cur.fetchall()
            check_equal(cur.statusmessage, "SHOW", f"command tag of SHOW {subject}")
        want = parse_columns(spec)
        if subject in SLUICE_EXTRA_COLUMNS:
            want += parse_columns(SLUICE_EXTRA_COLUMNS[subject])
        check_equal(got, want, f"columns of SHOW {subject}")


@test("a reply is RowDescription, DataRows, CommandComplete and ReadyForQuery, byte for byte",
      sluice_only=True)
def reply_bytes(t):
    s = start(t)
    wire = s.wire()
    wire.login(user=ADMIN[0], password=ADMIN[1], database="sluice")
    check("server_version" in wire.parameters and wire.parameters.get("client_encoding"),
          f"console login parameters: {wire.parameters}")
    result = wire.query("SHOW LISTS")
    kinds = [kind for kind, _ in result.messages]
    check_equal(kinds, ["T"] + ["D"] * len(LISTS_ROWS) + ["C", "Z"], "message sequence")
    description = result.messages[0][1]
    check_equal(struct.unpack("!H", description[:2])[0], 2, "number of fields")
    offset, fields = 2, []
    for _ in range(2):
        end = description.index(b"\0", offset)
        name = description[offset:end].decode()
        fields.append((name,) + struct.unpack("!IhIhih", description[end + 1:end + 19]))
        offset = end + 19
    check_equal(offset, len(description), "RowDescription length")
    # name, table OID, column number, type OID, type size, type modifier, format
    check_equal(fields, [("list", 0, 0, 25, -1, -1, 0), ("items", 0, 0, 23, 4, -1, 0)],
                "RowDescription fields")
    check_equal([row[0] for row in result.rows], LISTS_ROWS, "SHOW LISTS rows")
    check_equal(result.tags, ["SHOW"], "CommandComplete")
    check_equal(result.status, "I", "ReadyForQuery status")

    stats = wire.query("SHOW STATS_TOTALS")
    numeric = stats.messages[0][1]
    end = numeric.index(b"\0", numeric.index(b"xact_count"))
    check_equal(struct.unpack("!IhIhih", numeric[end + 1:end + 19]), (0, 0, 1700, -1, -1, 0),
                "numeric column description")

    empty = wire.query("")
    check_equal([kind for kind, _ in empty.messages], ["I", "Z"], "reply to an empty query")
    semicolon = wire.query("show version;")
    check_equal(len(semicolon.rows), 1, "lower case with a trailing ';'")


@test("psql reads the console under both names", sluice_only=True)
def psql_reads_console(t):
    s = start(t)
    s.connect()
    for dbname in ("sluice", "pgbouncer"):
        env = s.env(user=ADMIN[0], password=ADMIN[1], dbname=dbname)
        status, output = harness.run_tool([harness.pg_tool("psql"), "-X", "-A", "-t", "-c", "SHOW VERSION"], env, 30)
        check_equal(status, 0, f"psql SHOW VERSION on {dbname}: {output}")
        check(output.startswith("sluice "), f"SHOW VERSION output: {output!r}")
        status, output = harness.run_tool([harness.pg_tool("psql"), "-X", "-A", "-t", "-c", "SHOW POOLS"], env, 30)
        check_equal(status, 0, f"psql SHOW POOLS on {dbname}: {output}")
        check(output.startswith("appdb|app|"), f"SHOW POOLS output: {output!r}")


@test("SHOW HELP and HELP send the command list as a notice", sluice_only=True)
def show_help(t):
    s = start(t)
    wire = s.wire()
    wire.login(user=ADMIN[0], password=ADMIN[1], database="sluice")
    for command in ("SHOW HELP", "HELP"):
        result = wire.query(command)
        check(not result.errors, f"{command}: {result.errors}")
        text = " ".join(n.get("M", "") for n in result.notices)
        for word in ("SHOW", "PAUSE", "RESUME", "KILL", "RELOAD", "WAIT_CLOSE", "SET"):
            check(word in text, f"{command} notice mentions {word}: {text!r}")
        check_equal(result.tags, ["SHOW"], f"{command} command tag")


# ---- values follow what clients do -------------------------------------------------------------------

@test("SHOW POOLS: a client waits while a transaction holds a pool of one", sluice_only=True)
def pools_count_waiting_client(t):
    s = start(t, databases=single_backend_db(t))
    holder, waiter = s.connect(), s.connect()
    admin = console(s)
    begin_transaction(holder)
    waiting = Background(one_value, waiter, "SELECT 'waited'")
    row = wait_for(lambda: (lambda r: r if r["cl_waiting"] == 1 else None)(pool_row(admin)), 10,
                   what="cl_waiting = 1")
    check_equal(row["sv_active"], 1, "sv_active while a transaction runs")
    check_equal(row["cl_active"], 1, "cl_active (the holder)")
    check_equal(row["pool_mode"], "transaction", "pool_mode")
    time.sleep(1.1)
    check(pool_row(admin)["maxwait"] >= 1, "maxwait after more than a second of waiting")
    run(holder, "COMMIT")
    check_equal(waiting.result(10), "waited", "the waiting client's query")
    row = wait_for(lambda: (lambda r: r if r["cl_waiting"] == 0 and r["sv_active"] == 0 else None)(
        pool_row(admin)), 10, what="pool quiet again")
    check_equal((row["cl_active"], row["sv_idle"]), (2, 1), "(cl_active, sv_idle) afterwards")


@test("SHOW CLIENTS and SHOW SERVERS: one row per connection, linked by their ids",
      sluice_only=True)
def clients_and_servers(t):
    s = start(t)
    clients = [s.connect(application_name=f"worker{n}") for n in range(3)]
    pid = begin_transaction(clients[0])
    admin = console(s)
    rows = [r for r in show(admin, "CLIENTS") if r["database"] == "appdb"]
    check_equal(sorted(r["application_name"] for r in rows), ["worker0", "worker1", "worker2"],
                "application_name of the appdb clients")
    check_equal(len({r["ptr"] for r in rows}), 3, "distinct client ids")
    for row in rows:
        check(re.match(r"^C-\d+$", row["ptr"]), f"client ptr {row['ptr']!r}")
        check(TIMESTAMP.match(row["connect_time"]), f"connect_time {row['connect_time']!r}")
        check_equal((row["type"], row["user"], row["addr"], row["state"]),
                    ("C", "app", "127.0.0.1", "active"), "type, user, addr, state")
        check_equal(row["local_port"], s.port, "local_port")
    linked = [r for r in rows if r["link"]]
    check_equal([r["application_name"] for r in linked], ["worker0"], "clients linked to a backend")
    servers = {r["ptr"]: r for r in show(admin, "SERVERS")}
    server = servers.get(linked[0]["link"])
    check(server is not None, f"the client's link {linked[0]['link']} in SHOW SERVERS {servers}")
    check_equal((server["state"], server["remote_pid"], server["link"]),
                ("active", pid, linked[0]["ptr"]), "the linked backend's state, pid and link")
    check_equal((server["database"], server["user"], server["port"]),
                ("appdb", "app", t.cluster.port), "the backend's pool and port")
    own = [r for r in show(admin, "CLIENTS") if r["database"] == "sluice"]
    check_equal(len(own), 1, "the console's own row")


def ipv6_loopback():
    """Can this machine listen on ::1?"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@test("SHOW CLIENTS gives each client's address and port: IPv4, IPv6 and the unix socket",
      sluice_only=True)
def clients_address_and_port(t):
    has_ipv6 = ipv6_loopback()
    s = start(t, settings={"listen_addr": "127.0.0.1,::1" if has_ipv6 else "127.0.0.1"})
    v4 = s.connect(application_name="over_ipv4")
    unix = s.connect(unix=True, application_name="over_unix")
    expected = {"over_ipv4": ("127.0.0.1", harness.local_port(v4)), "over_unix": ("unix", 0)}
    if has_ipv6:
        v6 = psycopg2.connect(host="::1", port=s.port, dbname="appdb", user="app", password="app_pw",
                              connect_timeout=10, sslmode="disable", application_name="over_ipv6")
        with socket.fromfd(v6.fileno(), socket.AF_INET6, socket.SOCK_STREAM) as dup:
            expected["over_ipv6"] = ("::1", dup.getsockname()[1])
    else:
        t.note("no IPv6 loopback on this machine: IPv6 not checked")
    for conn in [v4, unix]:
        one_value(conn, "SELECT 1")
    rows = {r["application_name"]: r for r in show(console(s), "CLIENTS")}
    for name, (addr, port) in expected.items():
        check(name in rows, f"a row for {name} in {sorted(rows)}")
        check_equal((rows[name]["addr"], rows[name]["port"]), (addr, port), f"{name}: addr, port")
    if has_ipv6:
        v6.close()


@test("SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS count transactions and queries",
      sluice_only=True)
def stats_count(t):
    s = start(t, settings={"stats_period": 1})
    conn = s.connect()
    admin = console(s)
    for n in range(10):
        one_value(conn, f"SELECT {n}")
    row = [r for r in show(admin, "STATS") if r["database"] == "appdb"][0]
    check(row["total_query_count"] >= 10, f"total_query_count {row['total_query_count']}")
    check(row["total_xact_count"] >= 10, f"total_xact_count {row['total_xact_count']}")
    check(row["total_received"] > 0 and row["total_sent"] > 0, f"bytes: {row}")
    check(row["total_query_time"] > 0, f"total_query_time {row['total_query_time']}")
    totals = [r for r in show(admin, "STATS_TOTALS") if r["database"] == "appdb"][0]
    check_equal(totals["query_count"], row["total_query_count"], "STATS_TOTALS query_count")
    summed = {r["name"]: r["value"] for r in show(admin, "TOTALS")}
    check_equal(summed["total_query_count"], row["total_query_count"], "TOTALS total_query_count")

    def busy():
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            one_value(conn, "SELECT 1")
    load = Background(busy)
    averages = wait_for(lambda: [r for r in show(admin, "STATS_AVERAGES")
                                 if r["database"] == "appdb" and r["query_count"] > 0], 8,
                        what="a nonzero avg query_count with stats_period = 1")
    check(averages[0]["query_time"] > 0, f"average query time: {averages[0]}")
    load.result(10)


@test("SHOW DATABASES, USERS, LISTS, CONFIG and MEM describe the running sluice",
      sluice_only=True)
def describe_configuration(t):
    s = start(t, settings={"default_pool_size": 4},
              databases={"otherdb": t.cluster.database_line(pool_size=2, pool_mode="session")})
    s.connect()
    admin = console(s)
    appdb = database_row(admin, "appdb")
    check_equal((appdb["host"], appdb["port"], appdb["database"], appdb["force_user"]),
                ("127.0.0.1", t.cluster.port, "appdb", "app"), "appdb backend")
    check_equal((appdb["pool_size"], appdb["pool_mode"], appdb["paused"]), (4, None, 0),
                "appdb pool_size (default_pool_size), pool_mode (not overridden), paused")
    other = database_row(admin, "otherdb")
    check_equal((other["pool_size"], other["pool_mode"]), (2, "session"), "otherdb overrides")
    check_equal(database_row(admin, "sluice")["database"], "sluice", "the console's own row")
    check("app" in [r["name"] for r in show(admin, "USERS")], "SHOW USERS lists app")
    lists = {r["list"]: r["items"] for r in show(admin, "LISTS")}
    check_equal((lists["databases"], lists["pools"]), (2, 1), "databases and pools in SHOW LISTS")
    check(lists["used_clients"] >= 2, f"used_clients {lists['used_clients']}")
    config = {r["key"]: r for r in show(admin, "CONFIG")}
    check_equal((config["default_pool_size"]["value"], config["default_pool_size"]["default"],
                 config["default_pool_size"]["changeable"]), ("4", "20", "yes"),
                "default_pool_size in SHOW CONFIG")
    check_equal(config["listen_port"]["changeable"], "no", "listen_port changeable")
    mem = {r["name"]: r for r in show(admin, "MEM")}
    check(mem["client_cache"]["used"] >= 2, f"client_cache: {mem.get('client_cache')}")


def client_cache_row(admin):
    return {r["name"]: r for r in show(admin, "MEM")}["client_cache"]


@test("SHOW MEM client_cache: a client that leaves gives its place to the next one (free)",
      sluice_only=True)
def client_cache_reuses_places(t):
    s = start(t, settings={"workers": 1})
    admin = console(s)
    clients = [s.connect() for _ in range(3)]
    for conn in clients:
        one_value(conn, "SELECT 1")
    full = client_cache_row(admin)
    for conn in clients:
        conn.close()
    def after_leaving():
        row = client_cache_row(admin)
        return row if row["used"] == full["used"] - 3 else None
    left = wait_for(after_leaving, 10, what="the three clients gone from client_cache")
    check_equal(left["free"], full["free"] + 3, "places kept after three clients left")
    check_equal(left["memtotal"], left["size"] * (left["used"] + left["free"]),
                "memtotal counts the places kept")
    again = [s.connect() for _ in range(3)]
    for conn in again:
        one_value(conn, "SELECT 1")
    row = client_cache_row(admin)
    check_equal((row["used"], row["free"]), (full["used"], full["free"]),
                "three new clients take the places the others left")


@test("SHOW AUTH counts logins and failed logins; SHOW PINNED answers", sluice_only=True)
def auth_counts(t):
    s = start(t)
    admin = console(s)

    def counts():
        return {(r["event"], r["method"]): r["count"] for r in show(admin, "AUTH") if not r["reason"]}
    before = counts()
    s.connect()
    wire = s.wire()
    expect_pg_error(lambda: wire.login(user="app", password="wrong"), "28P01", "wrong password")
    after = wait_for(lambda: (lambda c: c if c[("login_failed", "all")] > before[("login_failed", "all")]
                              else None)(counts()), 5, what="login_failed to move")
    check_equal(after[("login_failed", "all")] - before[("login_failed", "all")], 1, "failed logins")
    check_equal(after[("login_ok", "all")] - before[("login_ok", "all")], 1, "good logins")
    reasons = [r for r in show(admin, "AUTH") if r["event"] == "token_failure"]
    check(len(reasons) >= 20 and all(r["reason"] for r in reasons),
          f"one row per token failure reason: {len(reasons)}")
    check_equal(show(admin, "PINNED"), [], "SHOW PINNED rows")


# ---- PAUSE, RESUME, KILL, RECONNECT, WAIT_CLOSE ------------------------------------------------------

@test("PAUSE waits for a running transaction; new queries wait until RESUME", sluice_only=True)
def pause_and_resume(t):
    s = start(t)
    holder, later = s.connect(), s.connect()
    admin, watcher = console(s), console(s, WATCHER)
    begin_transaction(holder)
    pause = Background(run, admin, "PAUSE appdb")
    time.sleep(1.0)
    check(not pause.done(), "PAUSE answered while a transaction was running")
    check_equal(one_value(holder, "SELECT 'still inside'"), "still inside",
                "the running transaction goes on during PAUSE")
    run(holder, "COMMIT")
    check_equal(pause.result(10), "PAUSE", "PAUSE reply once the transaction ended")
    check_equal(database_row(watcher, "appdb")["paused"], 1, "SHOW DATABASES paused")
    held = Background(one_value, later, "SELECT 'after resume'")
    wait_for(lambda: pool_row(watcher)["cl_waiting"] == 1, 10, what="a query waiting in the pause")
    time.sleep(0.5)
    check(not held.done(), "a query ran while the pool was paused")
    check_equal(run(admin, "RESUME appdb"), "RESUME", "RESUME reply")
    check_equal(held.result(10), "after resume", "the held query after RESUME")
    check_equal(database_row(watcher, "appdb")["paused"], 0, "SHOW DATABASES paused after RESUME")


@test("PAUSE without a name holds every database; a console that leaves mid-PAUSE harms nothing",
      sluice_only=True)
def pause_all_and_leave(t):
    s = start(t, databases={"otherdb": t.cluster.database_line()})
    holder, other = s.connect(), s.connect(dbname="otherdb")
    one_value(other, "SELECT 1")
    begin_transaction(holder)
    wire = s.wire()
    wire.login(user=ADMIN[0], password=ADMIN[1], database="sluice")
    wire.send(harness.query_message("PAUSE"))
    time.sleep(0.5)
    wire.abort()
    admin = console(s)
    run(holder, "COMMIT")
    check_equal(run(admin, "PAUSE"), "PAUSE", "a second PAUSE once quiet")
    held = Background(one_value, other, "SELECT 'other'")
    time.sleep(1.0)
    check(not held.done(), "a query ran on another database of a paused sluice")
    expect_pg_error(lambda: run(admin, "RESUME otherdb"), "55000",
                    "RESUME of one database while all are paused")
    check_equal(run(admin, "RESUME"), "RESUME", "RESUME of everything")
    check_equal(held.result(10), "other", "the held query after RESUME")
    check_equal(one_value(holder, "SELECT 'appdb'"), "appdb", "appdb after RESUME")


@test("a pool first used while its database is paused starts paused", sluice_only=True)
def pause_holds_new_pool(t):
    s = start(t, databases={"otherdb": t.cluster.database_line()})
    admin = console(s)
    check_equal(run(admin, "PAUSE otherdb"), "PAUSE", "PAUSE of a database with no pool yet")
    newcomer = s.connect(dbname="otherdb")
    held = Background(one_value, newcomer, "SELECT 'after resume'")
    time.sleep(1.0)
    check(not held.done(), "a query ran on a new pool of a paused database")
    run(admin, "RESUME otherdb")
    check_equal(held.result(10), "after resume", "the held query after RESUME")


@test("PAUSE, RESUME, RECONNECT, KILL and WAIT_CLOSE of an unknown database: 3D000",
      sluice_only=True)
def unknown_database(t):
    s = start(t)
    admin = console(s)
    for command in ("PAUSE", "RESUME", "RECONNECT", "KILL", "WAIT_CLOSE"):
        expect_pg_error(lambda: run(admin, f"{command} nosuchdb"), "3D000", f"{command} nosuchdb")
    expect_pg_error(lambda: run(admin, "KILL"), "42601", "KILL without a database")
    check_equal(len(show(admin, "VERSION")), 1, "console usable after the errors")


@test("KILL closes that database's clients only and holds it until RESUME", sluice_only=True)
def kill_one_database(t):
    s = start(t, databases={"otherdb": t.cluster.database_line()})
    keep, doomed = s.connect(), s.connect(dbname="otherdb")
    keep_pid = one_value(keep, "SELECT pg_backend_pid()")
    one_value(doomed, "SELECT 1")
    admin = console(s)
    check_equal(run(admin, "KILL otherdb"), "KILL", "KILL reply")
    wait_for(lambda: not [r for r in show(admin, "CLIENTS") if r["database"] == "otherdb"], 10,
             what="otherdb's clients gone from SHOW CLIENTS")
    try:
        one_value(doomed, "SELECT 1")
        raise harness.TestFailure("a killed client could still run a query")
    except psycopg2.Error:
        pass
    check_equal(one_value(keep, "SELECT pg_backend_pid()"), keep_pid,
                "the other database's client keeps its backend")
    check_equal(database_row(admin, "otherdb")["paused"], 1, "otherdb paused after KILL")
    newcomer = s.connect(dbname="otherdb")
    held = Background(one_value, newcomer, "SELECT 'back'")
    time.sleep(0.5)
    check(not held.done(), "a query on a killed database ran before RESUME")
    run(admin, "RESUME otherdb")
    check_equal(held.result(10), "back", "query after RESUME")


@test("RECONNECT replaces the backends (pg_backend_pid changes)", sluice_only=True)
def reconnect(t):
    s = start(t, databases=single_backend_db(t))
    conn = s.connect()
    old_pid = one_value(conn, "SELECT pg_backend_pid()")
    admin = console(s)
    check_equal(run(admin, "RECONNECT appdb"), "RECONNECT", "RECONNECT reply")
    check(one_value(conn, "SELECT pg_backend_pid()") != old_pid, "backend after RECONNECT")
    wait_for(lambda: old_pid not in [b["pid"] for b in t.cluster.backends("app")], 10,
             what="the old backend to end")
    check_equal(run(admin, "RECONNECT"), "RECONNECT", "RECONNECT of every pool")


def psql_console(s, command):
    """Runs one console command with psql; returns (exit status, output)."""
    env = s.env(user=ADMIN[0], password=ADMIN[1], dbname="sluice")
    return harness.run_tool([harness.pg_tool("psql"), "-X", "-A", "-t", "-c", command], env, 30)


@test("RECONNECT, KILL and a RELOAD that close idle backends answer with a clean reply",
      sluice_only=True)
def commands_closing_idle_backends_reply_cleanly(t):
    s = start(t, databases={"otherdb": t.cluster.database_line()})
    app, other = s.connect(), s.connect(dbname="otherdb")
    admin = console(s)

    def idle_backends():
        one_value(app, "SELECT 1")
        one_value(other, "SELECT 1")
        check(t.cluster.count_backends("app") >= 2, "idle backends before the command")

    idle_backends()
    check_equal(run(admin, "RECONNECT appdb"), "RECONNECT", "psycopg2: RECONNECT appdb")
    idle_backends()
    status, output = psql_console(s, "RECONNECT")
    check_equal((status, output.strip()), (0, "RECONNECT"), "psql: RECONNECT")
    idle_backends()
    s.databases["appdb"] = t.cluster.database_line(application_name="after_reload")
    s.write_config()
    check_equal(run(admin, "RELOAD"), "RELOAD", "psycopg2: RELOAD that retires appdb's backends")
    idle_backends()
    status, output = psql_console(s, "KILL otherdb")
    check_equal((status, output.strip()), (0, "KILL"), "psql: KILL otherdb")
    check_equal(one_value(app, "SELECT 'works'"), "works", "appdb after the commands")
    check_equal(show(admin, "VERSION")[0]["version"].split()[0], "sluice", "console afterwards")


@test("WAIT_CLOSE answers once the backends that predate it are gone", sluice_only=True)
def wait_close(t):
    s = start(t, databases=single_backend_db(t))
    conn = s.connect()
    old_pid = begin_transaction(conn)
    admin = console(s)
    waiting = Background(run, admin, "WAIT_CLOSE appdb")
    time.sleep(1.0)
    check(not waiting.done(), "WAIT_CLOSE answered while an old backend was in a transaction")
    run(conn, "COMMIT")
    check_equal(waiting.result(10), "WAIT_CLOSE", "WAIT_CLOSE reply")
    check(one_value(conn, "SELECT pg_backend_pid()") != old_pid, "backend after WAIT_CLOSE")
    check_equal(run(admin, "WAIT_CLOSE"), "WAIT_CLOSE", "WAIT_CLOSE with nothing old left")


# ---- RELOAD, SET, SHUTDOWN ------------------------------------------------------------------------

@test("RELOAD applies a changed pool size; a broken file is refused (F0000)", sluice_only=True)
def reload_pool_size(t):
    s = start(t, databases=single_backend_db(t))
    a, b = s.connect(), s.connect()
    one_value(a, "SELECT 1")
    admin = console(s)
    s.databases["appdb"] = t.cluster.database_line(pool_size=3)
    s.write_config()
    check_equal(run(admin, "RELOAD"), "RELOAD", "RELOAD reply")
    check_equal(database_row(admin, "appdb")["pool_size"], 3, "pool_size after RELOAD")
    first = begin_transaction(a)
    second = Background(begin_transaction, b).result(10)
    check(first != second, "two transactions at once on a pool grown by RELOAD")
    run(a, "COMMIT")
    run(b, "COMMIT")
    with open(s.config_path, "a") as f:
        f.write("[sluice]\nno_such_setting = 1\n")
    expect_pg_error(lambda: run(admin, "RELOAD"), "F0000", "RELOAD of a broken file")
    check_equal(database_row(admin, "appdb")["pool_size"], 3, "pool_size kept")


@test("SET default_pool_size lets a waiting client in at once", sluice_only=True)
def set_pool_size(t):
    s = start(t, settings={"default_pool_size": 1})
    holder, waiter = s.connect(), s.connect()
    one_value(waiter, "SELECT 1")
    begin_transaction(holder)
    waiting = Background(one_value, waiter, "SELECT 'in'")
    admin = console(s)
    wait_for(lambda: pool_row(admin)["cl_waiting"] == 1, 10, what="a waiting client")
    check_equal(run(admin, "SET default_pool_size = 2"), "SET", "SET reply")
    check_equal(waiting.result(10), "in", "the waiting client got a second backend")
    config = {r["key"]: r["value"] for r in show(admin, "CONFIG")}
    check_equal(config["default_pool_size"], "2", "SHOW CONFIG after SET")
    check_equal(database_row(admin, "appdb")["pool_size"], 2, "SHOW DATABASES after SET")
    run(admin, "set query_wait_timeout to '7.5'")
    check_equal({r["key"]: r["value"] for r in show(admin, "CONFIG")}["query_wait_timeout"], "7.5",
                "quoted value with TO")
    run(holder, "COMMIT")


@test("SET refuses fixed settings (55P02), bad values (22023) and unknown names (42704)",
      sluice_only=True)
def set_refusals(t):
    s = start(t)
    admin = console(s)
    expect_pg_error(lambda: run(admin, "SET listen_port = 7000"), "55P02", "SET listen_port")
    expect_pg_error(lambda: run(admin, "SET default_pool_size = many"), "22023", "SET to a word")
    expect_pg_error(lambda: run(admin, "SET default_pool_size = 0"), "22023", "SET out of range")
    expect_pg_error(lambda: run(admin, "SET no_such_thing = 1"), "42704", "SET of an unknown name")
    expect_pg_error(lambda: run(admin, "SET default_pool_size"), "42601", "SET without a value")
    config = {r["key"]: r["value"] for r in show(admin, "CONFIG")}
    check_equal(config["default_pool_size"], "5", "default_pool_size unchanged")


@test("SHUTDOWN answers, then the daemon stops", sluice_only=True)
def shutdown(t):
    s = start(t)
    conn = s.connect()
    one_value(conn, "SELECT 1")
    admin = console(s)
    check_equal(run(admin, "SHUTDOWN"), "SHUTDOWN", "SHUTDOWN reply")
    check_equal(s.wait_exit(20), 0, "sluice exit status after SHUTDOWN")


# ---- who may do what ---------------------------------------------------------------------------

@test("a stats user may SHOW but not PAUSE, SET or SHUTDOWN (42501)", sluice_only=True)
def stats_user(t):
    s = start(t)
    watcher = console(s, WATCHER)
    check(show(watcher, "POOLS") is not None, "SHOW POOLS as a stats user")
    for command in ("PAUSE", "RESUME", "SET verbose = 1", "SHUTDOWN", "RELOAD", "KILL appdb"):
        expect_pg_error(lambda: run(watcher, command), "42501", f"{command} as a stats user")
    check_equal(len(show(watcher, "VERSION")), 1, "the stats user's console after the refusals")
    check(s.alive(), "sluice still running")


@test("a user in neither admin_users nor stats_users is refused (28000)", sluice_only=True)
def non_admin_refused(t):
    s = start(t)
    for dbname in ("sluice", "pgbouncer"):
        wire = s.wire()
        expect_pg_error(lambda: wire.login(user="app", password="app_pw", database=dbname), "28000",
                        f"app logging in to {dbname}")
    wire = s.wire()
    expect_pg_error(lambda: wire.login(user=ADMIN[0], password="wrong", database="sluice"), "28P01",
                    "admin with a wrong password")


@test("an unknown command gets 42601 and the console stays usable", sluice_only=True)
def unknown_command(t):
    s = start(t)
    admin = console(s)
    for command in ("SHOW NONSENSE", "FROBNICATE", "SELECT 1", "SHOW", "SHOW POOLS; SHOW STATS",
                    "PAUSE 'unterminated"):
        error = expect_pg_error(lambda: run(admin, command), "42601", command)
        check(str(error).strip(), f"{command}: an error message")
    error = expect_pg_error(lambda: run(admin, "FROBNICATE"), "42601", "FROBNICATE")
    check("unknown command: FROBNICATE" in str(error), f"message: {error}")
    check_equal(show(admin, "VERSION")[0]["version"].split()[0], "sluice", "SHOW VERSION afterwards")


if __name__ == "__main__":
    raise SystemExit(suite.run())
