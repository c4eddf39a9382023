"""auth_query: users missing from the auth file are looked up in PostgreSQL (auth_user, auth_query,
as PgBouncer), their answers cached for auth_query_cache_ttl, and SCRAM pass-through logs in to
PostgreSQL with the key recovered from the client's proof, so no plain password is stored anywhere."""

import os
import re
import threading
import urllib.request
from contextlib import closing

import psycopg2

import harness
from harness import (ADMIN, APP_DB, Background, check, check_equal, console, expect_pg_error, show,
                     wait_for)

suite = harness.Suite()
test = suite.test

# The look-up role: a superuser, as the default auth_query reads pg_authid.
AUTH_USER, AUTH_PASSWORD = "sluice_auth", "lookup_pw"
BENCH_DB = "aqbench"
BURST = 100
_roles_lock = threading.Lock()


def ensure_auth_user(cluster):
    with _roles_lock:
        if not cluster.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (AUTH_USER,), dbname="postgres"):
            cluster.sql(f"CREATE ROLE {AUTH_USER} LOGIN SUPERUSER PASSWORD '{AUTH_PASSWORD}'",
                        dbname="postgres")


def create_role(cluster, name, password, extra=""):
    """A role stored with a SCRAM verifier (PostgreSQL 15's default), never in sluice's auth file."""
    cluster.sql(f"DROP ROLE IF EXISTS {name}", dbname="postgres")
    cluster.sql(f"SET password_encryption = 'scram-sha-256'; "
                f"CREATE ROLE {name} LOGIN PASSWORD '{password}' {extra}", dbname="postgres")
    cluster.sql(f"GRANT ALL ON SCHEMA public TO {name}")


def start(t, settings=None, auth_password=AUTH_PASSWORD, databases=None):
    """A sluice whose auth file holds only auth_user and an admin: everyone else is looked up."""
    ensure_auth_user(t.cluster)
    cluster = t.cluster
    all_settings = {"auth_user": AUTH_USER, "auth_type": "scram-sha-256",
                    "admin_users": ADMIN[0], "auth_query_cache_ttl": 60}
    all_settings.update(settings or {})
    # No user= and no password=: the backend login is the client's own, by SCRAM pass-through.
    line = f"host={cluster.host} port={cluster.port} dbname={APP_DB}"
    dbs = {APP_DB: line}
    dbs.update(databases or {})
    return t.sluice(settings=all_settings, databases=dbs,
                    users={AUTH_USER: auth_password, ADMIN[0]: ADMIN[1]})


def show_users(s):
    with closing(console(s)) as admin:
        return {row["name"]: row for row in show(admin, "USERS")}


def show_pools(s):
    with closing(console(s)) as admin:
        return show(admin, "POOLS")


def psycopg3():
    try:
        import psycopg
    except ImportError:
        raise harness.Skip("psycopg 3 is not installed")
    return psycopg


def psycopg3_connect(s, user, password, dbname=APP_DB):
    psycopg = psycopg3()
    return psycopg.connect(host=s.host, port=s.port, dbname=dbname, user=user, password=password,
                           sslmode="disable", connect_timeout=10, autocommit=True)


def psql(s, user, password, sql, dbname=APP_DB):
    env = s.env(user=user, password=password, dbname=dbname)
    return harness.run_tool([harness.pg_tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                             "-c", sql], env, 30)


@test("a user not in the auth file logs in through auth_query over SCRAM (psycopg 3) and runs "
      "queries on backends opened by SCRAM pass-through", sluice_only=True)
def lookup_and_passthrough(t):
    psycopg3()
    create_role(t.cluster, "aq_alice", "alice_pw")
    s = start(t, settings={"pool_mode": "transaction"})
    with psycopg3_connect(s, "aq_alice", "alice_pw") as conn:
        row = conn.execute("SELECT current_user, count(*) FROM generate_series(1, 10)").fetchone()
        check_equal(tuple(row), ("aq_alice", 10), "query result through the pass-through backend")
        backends = t.cluster.backends(usename="aq_alice")
        check(len(backends) >= 1, "no backend logged in as aq_alice")
        with open(s.auth_path) as f:
            check("aq_alice" not in f.read(), "aq_alice is in sluice's auth file")
        check("password=" not in s.config_text(), "the config holds a password")
    check("SCRAM pass-through" in s.log_text(), "the log does not say the pool uses pass-through")
    status, output = psql(s, "aq_alice", "alice_pw", "SELECT current_user")
    check_equal((status, output.strip()), (0, "aq_alice"), "psql through auth_query")


@test("session pooling: an auth_query user's session runs on a pass-through backend (psql)",
      sluice_only=True)
def session_pooling(t):
    create_role(t.cluster, "aq_heidi", "heidi_pw")
    s = start(t, settings={"pool_mode": "session"})
    status, output = psql(s, "aq_heidi", "heidi_pw",
                          "CREATE TEMP TABLE t AS SELECT 42 AS x; SELECT current_user, x FROM t")
    check_equal((status, output.strip().splitlines()[-1]), (0, "aq_heidi|42"),
                "psql session through pass-through")


@test("the look-up connection closed by PostgreSQL is opened again for the next look-up",
      sluice_only=True)
def lookup_connection_reopened(t):
    create_role(t.cluster, "aq_ivan", "ivan_pw")
    create_role(t.cluster, "aq_judy", "judy_pw")
    s = start(t)
    s.connect(user="aq_ivan", password="ivan_pw").close()
    check(t.cluster.count_backends(usename=AUTH_USER) >= 1, "no look-up connection as auth_user")
    t.cluster.terminate_backends(usename=AUTH_USER)
    conn = s.connect(user="aq_judy", password="judy_pw")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        check_equal(cur.fetchone()[0], "aq_judy", "user looked up after the connection was closed")
    check("failed" not in s.log_text(), f"a failure was logged:\n{s.log_tail()}")


@test("per database: auth_user, auth_dbname and auth_query (a SECURITY DEFINER function, no "
      "superuser); a database without auth_user looks nobody up", sluice_only=True)
def per_database_settings(t):
    cluster = t.cluster
    create_role(cluster, "aq_kate", "kate_pw")
    with _roles_lock:
        cluster.sql("DROP FUNCTION IF EXISTS public.sluice_lookup(name); DROP ROLE IF EXISTS aq_lookup; "
                    "CREATE ROLE aq_lookup LOGIN PASSWORD 'aq_lookup_pw'", dbname="postgres")
        cluster.sql("CREATE FUNCTION public.sluice_lookup(p_user name, OUT uname name, OUT phash text) "
                    "RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS "
                    "$$ SELECT rolname, rolpassword FROM pg_authid WHERE rolname = p_user "
                    "AND rolcanlogin $$; "
                    "REVOKE ALL ON FUNCTION public.sluice_lookup(name) FROM PUBLIC; "
                    "GRANT EXECUTE ON FUNCTION public.sluice_lookup(name) TO aq_lookup", dbname="postgres")
    line = f"host={cluster.host} port={cluster.port} dbname={APP_DB}"
    s = t.sluice(settings={"auth_type": "scram-sha-256", "admin_users": ADMIN[0]},
                 databases={APP_DB: line + " auth_user=aq_lookup auth_dbname=postgres "
                                           "auth_query='SELECT uname, phash FROM public.sluice_lookup($1)'",
                            "other": line},
                 users={"aq_lookup": "aq_lookup_pw", ADMIN[0]: ADMIN[1]})
    conn = s.connect(user="aq_kate", password="kate_pw")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database()")
        check_equal(cur.fetchone(), ("aq_kate", APP_DB), "user and database")
    check(any(b["usename"] == "aq_lookup" and b["datname"] == "postgres" for b in cluster.backends()),
          "no look-up connection as aq_lookup to auth_dbname postgres")
    expect_pg_error(lambda: s.wire().login(user="aq_kate", password="kate_pw", database="other"),
                    "28P01", "a database without auth_user")
    check_equal(show_users(s)["aq_kate"]["sluice_lookups"], 1, "look-ups (none for 'other')")


@test("a role stored with an md5 hash: auth_type md5 checks it and backends answer md5 with it",
      sluice_only=True)
def md5_passthrough(t):
    cluster = t.cluster
    cluster.sql("DROP ROLE IF EXISTS aq_md5", dbname="postgres")
    cluster.sql("SET password_encryption = 'md5'; CREATE ROLE aq_md5 LOGIN PASSWORD 'md5_secret_pw'",
                dbname="postgres")
    s = start(t, settings={"auth_type": "md5", "pool_mode": "transaction"})
    conn = s.connect(user="aq_md5", password="md5_secret_pw")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        check_equal(cur.fetchone()[0], "aq_md5", "user on a backend logged in with the md5 hash")
    expect_pg_error(lambda: s.wire().login(user="aq_md5", password="wrong"), "28P01",
                    "a wrong password of an md5 role")


@test("a database given by host name: the look-up connection's name is resolved by sluice's "
      "resolver", sluice_only=True)
def lookup_by_host_name(t):
    create_role(t.cluster, "aq_mia", "mia_pw")
    s = start(t, databases={APP_DB: f"host=localhost port={t.cluster.port} dbname={APP_DB}"})
    conn = s.connect(user="aq_mia", password="mia_pw")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        check_equal(cur.fetchone()[0], "aq_mia", "user through a database given as localhost")
    check_equal(show_users(s)["aq_mia"]["sluice_lookups"], 1, "look-ups")


@test("a wrong password gets 28P01 and does not poison the cache", sluice_only=True)
def wrong_password(t):
    create_role(t.cluster, "aq_bob", "bob_pw")
    s = start(t)
    error = expect_pg_error(lambda: s.wire().login(user="aq_bob", password="not_bob"), "28P01",
                            "wrong password of an auth_query user")
    check_equal(error.message, 'password authentication failed for user "aq_bob"', "message")
    conn = s.connect(user="aq_bob", password="bob_pw")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        check_equal(cur.fetchone()[0], "aq_bob", "user after a wrong attempt")
    users = show_users(s)
    check_equal(users["aq_bob"]["sluice_lookups"], 1, "look-ups for aq_bob (the second login used the cache)")
    check_equal(users["aq_bob"]["sluice_secret_source"], "auth_query", "aq_bob's secret source")
    check(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", users["aq_bob"]["sluice_cached_since"] or ""),
          f"cached_since: {users['aq_bob']['sluice_cached_since']!r}")
    check_equal(users[AUTH_USER]["sluice_secret_source"], "auth_file", "auth_user's secret source")


@test("an expired role (rolvaliduntil), a NOLOGIN role and an unknown user get the same 28P01",
      sluice_only=True)
def refused_roles(t):
    create_role(t.cluster, "aq_expired", "expired_pw", "VALID UNTIL '2001-01-01'")
    create_role(t.cluster, "aq_nologin", "nologin_pw")
    t.cluster.sql("ALTER ROLE aq_nologin NOLOGIN", dbname="postgres")
    s = start(t)
    messages = {}
    for user, password in (("aq_expired", "expired_pw"), ("aq_nologin", "nologin_pw"),
                           ("aq_nobody", "whatever")):
        error = expect_pg_error(lambda: s.wire().login(user=user, password=password), "28P01",
                                f"login as {user}")
        messages[user] = error.message.replace(f'"{user}"', '"X"')
    check_equal(len(set(messages.values())), 1, f"messages differ: {messages}")
    check_equal(t.cluster.count_backends(usename="aq_expired"), 0, "backends of the expired role")
    check(show_users(s)["aq_nobody"]["sluice_secret_source"] == "auth_query: not found",
          "SHOW USERS does not say aq_nobody was not found")


def scram_salt(s, user):
    """The salt and iteration count sluice's SCRAM challenge shows to user."""
    import struct
    wire = s.wire()
    wire.send_startup(user)
    kind, payload = wire.read_message()
    check_equal((kind, struct.unpack("!I", payload[:4])[0]), ("R", 10), "SASL request")
    client = harness.ScramClient("wrong")
    first = client.client_first()
    wire.send(harness.message("p", harness.cstr("SCRAM-SHA-256") + struct.pack("!i", len(first))
                              + first))
    kind, payload = wire.read_message()
    check_equal((kind, struct.unpack("!I", payload[:4])[0]), ("R", 11), "SASLContinue")
    attributes = dict(item.split("=", 1) for item in payload[4:].decode().split(","))
    wire.close()
    return attributes["s"], attributes["i"]


@test("a user auth_query does not find gets a SCRAM challenge whose salt is stable per name",
      sluice_only=True)
def unknown_user_salt(t):
    import base64
    create_role(t.cluster, "aq_grace", "grace_pw")
    s = start(t)
    real_salt, real_count = scram_salt(s, "aq_grace")
    verifier = t.cluster.scram_verifier("aq_grace")
    check_equal(real_salt, verifier.split("$")[1].split(":")[1], "a found user's salt is PostgreSQL's")
    first = scram_salt(s, "aq_nobody")
    second = scram_salt(s, "aq_nobody")
    other = scram_salt(s, "aq_somebody")
    check_equal(second, first, "an unknown user's salt and count on a second attempt")
    check(other[0] != first[0], "two unknown names were shown the same salt")
    check_equal(first[1], real_count, "iteration count of an unknown user vs a real one")
    check_equal(len(base64.b64decode(first[0])), len(base64.b64decode(real_salt)), "salt length")


@test("the password changed in PostgreSQL (ALTER ROLE) is honoured after auth_query_cache_ttl; "
      "old backends keep working and new ones log in with the new verifier", sluice_only=True,
      timeout=120)
def password_change(t):
    create_role(t.cluster, "aq_carol", "old_pw")
    s = start(t, settings={"auth_query_cache_ttl": 1, "pool_mode": "transaction"})
    held = s.connect(user="aq_carol", password="old_pw")
    with held.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        old_pid = cur.fetchone()[0]
    t.cluster.sql("SET password_encryption = 'scram-sha-256'; ALTER ROLE aq_carol PASSWORD 'new_pw'",
                  dbname="postgres")

    def new_password_works():
        try:
            s.connect(user="aq_carol", password="new_pw").close()
            return True
        except psycopg2.OperationalError:
            return False
    wait_for(new_password_works, 15, interval=0.2, what="a login with the new password")
    expect_pg_error(lambda: s.wire().login(user="aq_carol", password="old_pw"), "28P01",
                    "the old password after the change")
    with held.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        check_equal(cur.fetchone()[0], old_pid, "the client logged in before the change keeps its backend")
    # New backends: the old ones are gone, so the next query needs a pass-through login.
    held.close()
    t.cluster.terminate_backends(usename="aq_carol")
    status, output = psql(s, "aq_carol", "new_pw", "SELECT current_user, pg_backend_pid()")
    check_equal(status, 0, f"psql with the new password on a new backend: {output}")
    user, pid = output.strip().split("|")
    check_equal(user, "aq_carol", "user on the new backend")
    check(int(pid) != old_pid, "the query ran on the old backend")


@test("auth_user's own password wrong: a clear log line and 28P01 for clients, no crash",
      sluice_only=True)
def auth_user_wrong_password(t):
    create_role(t.cluster, "aq_dave", "dave_pw")
    s = start(t, auth_password="not_the_lookup_pw")
    for _ in range(2):
        expect_pg_error(lambda: s.wire().login(user="aq_dave", password="dave_pw"), "28P01",
                        "login while auth_user cannot log in")
    log = s.log_text()
    check(re.search(r'auth_query: connecting as auth_user "sluice_auth" .*failed: .*password '
                    r'authentication failed', log), f"no clear log line:\n{s.log_tail()}")
    check(s.alive(), "sluice is not running")
    conn = s.connect(user=ADMIN[0], password=ADMIN[1], dbname="sluice")
    conn.close()


@test("auth_user's auth_file entry must be its password: a hash gives a log line and 28P01 at once",
      sluice_only=True)
def auth_user_secret_is_a_hash(t):
    create_role(t.cluster, "aq_leo", "leo_pw")
    s = start(t, auth_password=harness.md5_secret(AUTH_USER, AUTH_PASSWORD),
              settings={"client_login_timeout": 60})
    error = expect_pg_error(lambda: s.wire(timeout=20).login(user="aq_leo", password="leo_pw"),
                            "28P01", "login while auth_user's secret is a hash")
    check("timeout" not in error.message, f"message: {error.message}")
    check("auth_file secret is a hash" in s.log_text(), f"no clear log line:\n{s.log_tail()}")


@test(f"a burst of {BURST} concurrent logins of one new user costs one look-up", sluice_only=True, timeout=120)
def burst_one_lookup(t):
    create_role(t.cluster, "aq_erin", "erin_pw")
    metrics_port = harness.free_port()
    # A look-up slow enough that every login of the burst arrives while it is in flight.
    slow_query = ("SELECT rolname, rolpassword FROM pg_catalog.pg_authid, pg_catalog.pg_sleep(1) "
                  "WHERE rolname = $1 AND rolcanlogin")
    s = start(t, settings={"max_client_conn": 300, "auth_query": slow_query,
                           "metrics_listen_addr": "127.0.0.1", "metrics_port": metrics_port})
    barrier = threading.Barrier(BURST)
    errors = []

    def login():
        try:
            barrier.wait(30)
            conn = s.connect(user="aq_erin", password="erin_pw")
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [Background(login) for _ in range(BURST)]
    for thread in threads:
        thread.wait(60)
    check_equal(errors, [], "failed logins in the burst")
    users = show_users(s)
    check_equal(users["aq_erin"]["sluice_lookups"], 1, f"look-ups for {BURST} concurrent logins")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    found = re.search(r'^sluice_auth_query_lookups_total\{result="found"\} (\d+)', metrics, re.M)
    joined = re.search(r"^sluice_auth_query_coalesced_total (\d+)", metrics, re.M)
    hits = re.search(r"^sluice_auth_query_cache_hits_total (\d+)", metrics, re.M)
    check(found and joined and hits, "auth_query metrics missing")
    check_equal(int(found.group(1)), 1, "sluice_auth_query_lookups_total{result=found}")
    check_equal(int(joined.group(1)) + int(hits.group(1)), BURST - 1,
                "logins that joined the look-up or used its answer")
    check(int(joined.group(1)) > 0, "no login joined the look-up in flight")


@test(f"workers = 4: a burst of {BURST} concurrent logins of one new user, spread over the workers, "
      "costs one look-up on one auth_user connection", sluice_only=True, timeout=120)
def burst_one_lookup_across_workers(t):
    cluster = t.cluster
    lookup_role = "aq_lookup_workers"
    create_role(cluster, "aq_wendy", "wendy_pw")
    # Its own auth_user, so that the look-up connections counted below are this sluice's only.
    with _roles_lock:
        cluster.sql(f"DROP ROLE IF EXISTS {lookup_role}; "
                    f"CREATE ROLE {lookup_role} LOGIN SUPERUSER PASSWORD 'lookup_w_pw'", dbname="postgres")
    metrics_port = harness.free_port()
    slow_query = ("SELECT rolname, rolpassword FROM pg_catalog.pg_authid, pg_catalog.pg_sleep(1) "
                  "WHERE rolname = $1 AND rolcanlogin")
    s = t.sluice(settings={"workers": 4, "auth_user": lookup_role, "auth_query": slow_query,
                           "auth_type": "scram-sha-256", "auth_query_cache_ttl": 60,
                           "max_client_conn": 300, "metrics_listen_addr": "127.0.0.1",
                           "metrics_port": metrics_port},
                 databases={APP_DB: f"host={cluster.host} port={cluster.port} dbname={APP_DB}"},
                 users={lookup_role: "lookup_w_pw"})
    barrier = threading.Barrier(BURST)
    errors = []

    def login():
        try:
            barrier.wait(30)
            s.connect(user="aq_wendy", password="wendy_pw").close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [Background(login) for _ in range(BURST)]
    for thread in threads:
        thread.wait(60)
    check_equal(errors, [], "failed logins in the burst")
    check_equal(cluster.count_backends(usename=lookup_role), 1, "look-up connections as auth_user")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    found = re.search(r'^sluice_auth_query_lookups_total\{result="found"\} (\d+)', metrics, re.M)
    joined = re.search(r"^sluice_auth_query_coalesced_total (\d+)", metrics, re.M)
    hits = re.search(r"^sluice_auth_query_cache_hits_total (\d+)", metrics, re.M)
    check(found and joined and hits, "auth_query metrics missing")
    check_equal(int(found.group(1)), 1, "sluice_auth_query_lookups_total{result=found}")
    check_equal(int(joined.group(1)) + int(hits.group(1)), BURST - 1,
                "logins that joined the look-up or used its cached answer")


@test("min_pool_size: a pass-through pool says why it cannot pre-warm until a client logged in",
      sluice_only=True)
def prewarm_waits_for_client(t):
    create_role(t.cluster, "aq_frank", "frank_pw")
    verifier = t.cluster.scram_verifier("aq_frank")
    cluster = t.cluster
    ensure_auth_user(cluster)
    # The auth file holds only the verifier, and the database line a fixed user: nothing to log in with.
    s = t.sluice(settings={"auth_type": "scram-sha-256", "admin_users": ADMIN[0],
                           "min_pool_size": 2, "pool_mode": "transaction"},
                 databases={APP_DB: f"host={cluster.host} port={cluster.port} dbname={APP_DB} "
                                    f"user=aq_frank"},
                 users={"aq_frank": verifier, ADMIN[0]: ADMIN[1]})
    wait_for(lambda: "cannot open backends" in s.log_text() or "waiting for a client login" in s.log_text(),
             10, what="the log line on min_pool_size waiting")
    pools = [p for p in show_pools(s) if p["user"] == "aq_frank"]
    check_equal(len(pools), 1, "aq_frank's pool")
    check("client login" in (pools[0]["sluice_prewarm"] or ""), f"SHOW POOLS: {pools[0]}")
    check_equal(cluster.count_backends(usename="aq_frank"), 0, "backends before any login")
    conn = s.connect(user="aq_frank", password="frank_pw")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        check_equal(cur.fetchone()[0], "aq_frank", "user")
    wait_for(lambda: cluster.count_backends(usename="aq_frank") >= 2, 15,
             what="min_pool_size backends after the first login")
    pools = [p for p in show_pools(s) if p["user"] == "aq_frank"]
    check_equal(pools[0]["sluice_prewarm"], None, "SHOW POOLS once a client logged in")


@test("pgbench -S -C with many distinct auth_query users, 50 clients at a time", sluice_only=True,
      timeout=600)
def pgbench_many_users(t):
    cluster = t.cluster
    cluster.pgbench_database(BENCH_DB, scale=1)
    n_users = int(os.environ.get("SLUICE_AUTHQ_BENCH_USERS", "200"))
    per_wave = 10
    names = [f"aq_bench{i}" for i in range(n_users)]
    statements = ["SET password_encryption = 'scram-sha-256'"]
    for name in names:
        statements.append(f"DROP ROLE IF EXISTS {name}")
        statements.append(f"CREATE ROLE {name} LOGIN PASSWORD '{name}_pw'")
        statements.append(f"GRANT pg_read_all_data TO {name}")
    cluster.sql("; ".join(statements), dbname="postgres")
    line = f"host={cluster.host} port={cluster.port} dbname={BENCH_DB}"
    # One backend per user, closed soon after its wave: 200 users must fit max_connections.
    s = start(t, settings={"pool_mode": "transaction", "default_pool_size": 1,
                           "server_idle_timeout": 1, "max_client_conn": 200},
              databases={BENCH_DB: line})
    failures = []

    def bench(name):
        status, output, summary = harness.run_pgbench(
            ["-n", "-S", "-C", "-c", "5", "-t", "4", BENCH_DB],
            s.env(user=name, password=f"{name}_pw", dbname=BENCH_DB), 120)
        if status != 0 or summary.get("processed", 0) != 20 or summary.get("failed", 0):
            failures.append(f"{name}: status {status}\n{output[-800:]}")
    for start_at in range(0, n_users, per_wave):
        runs = [Background(bench, name) for name in names[start_at:start_at + per_wave]]
        for run in runs:
            run.wait(180)
        check_equal(failures, [], "pgbench runs that failed")
    t.note(f"{n_users} users, pgbench -S -C -c 5 -t 4 each, {per_wave} at a time (50 clients)")
    users = show_users(s)
    for name in names:
        check_equal(users[name]["sluice_lookups"], 1, f"look-ups for {name}")


if __name__ == "__main__":
    suite.run()
