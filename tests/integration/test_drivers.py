"""The four drivers applications use, in their default configurations, through sluice: psycopg 3,
asyncpg, node-postgres and pgjdbc. Each runs the same workload with more clients than backends:
its own connect-time settings, parameterised queries past its prepare threshold (named statements),
commit, rollback, an error inside a transaction, 50,000 rows, NULLs and binary-format types, COPY
where the driver has it, a cancelled query, and rows tagged with the client's id so that every
client sees only its own results. The results must be what the same code gets from PostgreSQL
itself (the workload is run both ways) and what the workload expects. Then the drivers' statement
timeouts firing while the statement still waits for a backend, and a subset in session mode.

The node and Java programs are in tests/integration/drivers/; they print their results as JSON."""

import asyncio
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time

import harness
from harness import Background, check, check_equal

suite = harness.Suite()
test = suite.test

CLIENTS = 12
POOL_SIZE = 3
SESSION_CLIENTS = 4
SESSION_POOL_SIZE = 2
PARAM_ROUNDS = 8        # past the prepare threshold of 5 of psycopg 3 and pgjdbc
COMMITTED_ROWS = 10
LARGE_ROWS = 50000
COPY_ROWS = 1000
BATCH_ROWS = 50
BIG_BYTES = 2 * 1024 * 1024  # one parameter and one value larger than any buffer on the way
JDBC_JAR = "/usr/share/java/postgresql.jar"
HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("SLUICE_SRCDIR") or os.path.join(HERE, "..", "..")
PROGRAMS = os.path.join(SRCDIR, "tests", "integration", "drivers")

# The statements every driver runs, with $n placeholders (psycopg 3 gets them as %s).
SETTINGS_SQL = ("SELECT current_setting('application_name'), current_setting('DateStyle'), "
                "current_setting('TimeZone'), current_setting('extra_float_digits'), "
                "current_setting('client_encoding'), current_setting('IntervalStyle'), "
                "current_setting('standard_conforming_strings')")
PARAMS_SQL = "SELECT $1::int AS client, $2::int * 2 AS doubled, $3::text AS tag"
INSERT_SQL = "INSERT INTO drv_items (client, k, v) VALUES ($1, $2, $3)"
DIVIDE_SQL = "SELECT 1 / $1::int"
OWN_ROWS_SQL = "SELECT client, k, v FROM drv_items WHERE client = $1 ORDER BY k"
LARGE_SQL = f"SELECT g + $1::int FROM generate_series(1, {LARGE_ROWS}) AS g"
TYPES_SQL = ("SELECT c, '\\xdeadbeef00ff'::bytea, 12345.678900 + c, "
             "timestamptz '2024-02-29 12:34:56.789+00' + make_interval(secs => c), "
             "json_build_object('client', c, 'list', json_build_array(1, 'two', null)), "
             "NULL::int, NULL::text FROM (SELECT $1::int AS c) AS p")
NULLS_SQL = "SELECT $1::text IS NULL, $2::int IS NULL, coalesce($3::text, 'was null')"
COPY_IN_SQL = "COPY drv_copy (client, k, v) FROM STDIN"
BATCH_SQL = "INSERT INTO drv_batch (client, k, v) VALUES ($1, $2, $3)"
# A batch whose third row repeats the first one's key: the whole batch is rolled back.
BAD_BATCH_KEYS = [1001, 1002, 1001, 1003]
BATCH_COUNT_SQL = "SELECT count(*)::int FROM drv_batch WHERE client = $1 AND k > 1000"
BATCH_CHECK_SQL = ("SELECT count(*)::int, sum(k)::int, "
                   "(count(*) FILTER (WHERE v <> 'c' || client || '-batch-' || k))::int "
                   "FROM drv_batch WHERE client = $1")
AFTER_SQL = "SELECT $1::int + 1000"
BIG_SQL = "SELECT md5(b), length(b), b FROM (SELECT $1::bytea AS b) AS p"


def copy_out_query(client):
    return f"SELECT client, k, v FROM drv_copy WHERE client = {client} ORDER BY k"


def copy_out_sql(client):
    return f"COPY ({copy_out_query(client)}) TO STDOUT"


def cancel_tag(driver, run, client):
    return f"cancel-{driver}-{run}-{client}"


def sleep_sql(tag):
    return f"SELECT pg_sleep(60) /* {tag} */"


def batch_rows(client):
    return [(client, k, f"c{client}-batch-{k}") for k in range(1, BATCH_ROWS + 1)]


def bad_batch_rows(client):
    return [(client, k, f"c{client}-batch-{k}") for k in BAD_BATCH_KEYS]


def big_value(client):
    """BIG_BYTES bytes, byte i being (7 * i + client) mod 256: the programs make the same."""
    pattern = bytes((7 * i + client) % 256 for i in range(256))
    return pattern * (BIG_BYTES // 256)


def big_result(value):
    """[md5, length, whether the value came back whole] of BIG_SQL's row."""
    return lambda row: [row[0], row[1], bytes(row[2]) == value]


def for_psycopg(sql):
    return re.sub(r"\$\d+", "%s", sql)


# ---- what every client's results must be ----------------------------------------------------------

def expected_result(client, driver):
    """What the workload gets on PostgreSQL, in the normalised form the programs print."""
    base_ms = 1709210096789  # 2024-02-29 12:34:56.789 UTC
    return {
        "client": client,
        "params": [[client, 2 * k, f"c{client}-{k}"] for k in range(PARAM_ROUNDS)],
        "error": "22012",
        "rows": [[client, k, f"c{client}-{k}"] for k in range(COMMITTED_ROWS)],
        "large": [LARGE_ROWS, LARGE_ROWS * (LARGE_ROWS + 1) // 2 + LARGE_ROWS * client],
        "large_fetched": (None if driver == "node" else
                          [LARGE_ROWS, LARGE_ROWS * (LARGE_ROWS + 1) // 2 + LARGE_ROWS * client]),
        "types": [client, "deadbeef00ff", f"{12345 + client}.678900", base_ms + 1000 * client,
                  {"client": client, "list": [1, "two", None]}, None, None],
        "nulls": [True, True, "was null"],
        "batch": [BATCH_ROWS, BATCH_ROWS * (BATCH_ROWS + 1) // 2, 0],
        "bad_batch": None if driver == "node" else ["23505", 0],
        "big": [hashlib.md5(big_value(client)).hexdigest(), BIG_BYTES, True],
        "copy": (None if driver == "node" else
                 [COPY_ROWS, COPY_ROWS * (COPY_ROWS + 1) // 2, 0]),
        "cancel": "57014",
        "after_cancel": client + 1000,
    }


def normalise(result):
    """JSON the drivers hand back as text becomes the value it encodes."""
    types = result.get("types")
    if types and isinstance(types[4], str):
        types[4] = json.loads(types[4])
    return result


def check_results(driver, results, clients, endpoint_label):
    check_equal(len(results), clients, f"{driver} via {endpoint_label}: clients that reported")
    settings = None
    for number, result in enumerate(sorted(results, key=lambda r: r["client"])):
        got = normalise(dict(result))
        client_settings = got.pop("settings")
        if settings is None:
            settings = client_settings
        check_equal(client_settings, settings,
                    f"{driver} via {endpoint_label}: client {number}'s settings against client 0's")
        want = expected_result(number, driver)
        for key in sorted(set(got) | set(want)):
            check_equal(got.get(key), want.get(key),
                        f"{driver} via {endpoint_label}: client {number}'s {key!r}")
    return settings


def check_cancels_logged(t, driver, run, clients):
    """The server said why each sleeping query ended: a cancel request reached it (57014). Its
    backends write to the log at once, so each STATEMENT line is matched by its backend's pid
    (the default log_line_prefix, '%m [%p] ') with the line that backend wrote before it."""
    last_line_of = {}
    cancelled = set()
    with open(t.cluster.log_path, errors="replace") as log:
        for line in log:
            match = re.match(r"\S+ \S+ \S+ \[(\d+)\] (.*)", line.rstrip("\n"))
            if not match:
                continue
            pid, text = match.groups()
            if (text.startswith("STATEMENT:  ")
                    and last_line_of.get(pid) == "ERROR:  canceling statement due to user request"):
                cancelled.add(text[len("STATEMENT:  "):])
            last_line_of[pid] = text
    for client in range(clients):
        tag = cancel_tag(driver, run, client)
        check(sleep_sql(tag) in cancelled, f"{driver}: PostgreSQL's log has no cancel of {tag}")


# ---- tables and endpoints -------------------------------------------------------------------------

def reset_tables(cluster):
    cluster.sql("DROP TABLE IF EXISTS drv_items, drv_copy, drv_batch; "
                "CREATE TABLE drv_items (client int, k int, v text, PRIMARY KEY (client, k)); "
                "CREATE TABLE drv_copy (client int, k int, v text); "
                "CREATE TABLE drv_batch (client int, k int, v text, PRIMARY KEY (client, k)); "
                "ALTER TABLE drv_items OWNER TO app; ALTER TABLE drv_copy OWNER TO app; "
                "ALTER TABLE drv_batch OWNER TO app")


def check_tables(t, driver, clients):
    """Nothing leaked between clients: only committed rows, each under its own client's id."""
    rows = t.cluster.sql("SELECT count(*), count(DISTINCT client), "
                         "count(*) FILTER (WHERE v <> 'c' || client || '-' || k) FROM drv_items")
    check_equal(list(rows[0]), [clients * COMMITTED_ROWS, clients, 0], f"{driver}: drv_items")


def pool(t, mode, pool_size):
    settings = {"pool_mode": mode, "query_wait_timeout": 120}
    return t.sluice(settings=settings,
                    databases={"appdb": t.cluster.database_line(pool_size=pool_size)})


def run_both_ways(t, driver, workload, mode="transaction", clients=CLIENTS, pool_size=POOL_SIZE,
                  compare_direct=True):
    """Runs workload(endpoint, clients, run) through sluice (and directly on PostgreSQL) and
    checks both; the settings each client saw must be the same both ways."""
    endpoint = pool(t, mode, pool_size)
    reset_tables(t.cluster)
    label = "PostgreSQL" if t.direct else f"sluice ({mode} mode)"
    results = workload(endpoint, clients, mode)
    settings = check_results(driver, results, clients, label)
    check_tables(t, driver, clients)
    check_cancels_logged(t, driver, mode, clients)
    if t.direct or not compare_direct:
        return
    reset_tables(t.cluster)
    direct = harness.DirectEndpoint(t.cluster)
    direct_results = workload(direct, clients, "direct")
    direct_settings = check_results(driver, direct_results, clients, "PostgreSQL")
    check_cancels_logged(t, driver, "direct", clients)
    check_equal(settings, direct_settings, f"{driver}: settings through sluice against PostgreSQL's")
    check_equal(sorted(results, key=lambda r: r["client"]),
                sorted(direct_results, key=lambda r: r["client"]),
                f"{driver}: results through sluice against PostgreSQL's")
    t.note(f"{driver} settings: {settings}")


def wait_until_running(cluster, tag, timeout=60):
    """Until the sleep carrying tag is running on some backend (it may first wait for one).
    Sleeping, not only active: asyncpg prepares a statement in a round trip of its own."""
    harness.wait_for(lambda: cluster.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query = %s",
        (sleep_sql(tag),))[0][0] > 0, timeout, interval=0.05, what=f"the query {tag} to run")


def run_clients(count, fn):
    """fn(client) in a thread per client, all at once; their results in client order."""
    calls = [Background(fn, client) for client in range(count)]
    return [call.result(240 * harness.TIMEOUT_SCALE) for call in calls]


# ---- psycopg 3 ------------------------------------------------------------------------------------

def psycopg3():
    try:
        import psycopg
    except ImportError:
        raise harness.Skip("psycopg 3 is not installed (apt-get install python3-psycopg)")
    # It logs a warning when a failed executemany's pipeline is closed; the error is checked.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    return psycopg


def psycopg3_workload(t):
    psycopg = psycopg3()

    def workload(endpoint, clients, run):
        conninfo = (f"host={endpoint.host} port={endpoint.port} dbname={harness.APP_DB} user=app "
                    "password=app_pw connect_timeout=10")
        return run_clients(clients, lambda client: psycopg3_client(t, psycopg, conninfo, client, run))

    return workload


def psycopg3_client(t, psycopg, conninfo, client, run):
    r = {"client": client}
    # Defaults: autocommit off (each first statement opens a transaction), prepare_threshold 5.
    with psycopg.connect(conninfo) as conn:
        r["settings"] = list(conn.execute(SETTINGS_SQL).fetchone())
        conn.commit()
        r["params"] = [list(conn.execute(for_psycopg(PARAMS_SQL), (client, k, f"c{client}-{k}"))
                            .fetchone()) for k in range(PARAM_ROUNDS)]
        conn.commit()
        for k in range(COMMITTED_ROWS):
            conn.execute(for_psycopg(INSERT_SQL), (client, k, f"c{client}-{k}"))
        conn.commit()
        for k in range(100, 105):
            conn.execute(for_psycopg(INSERT_SQL), (client, k, "rolled back"))
        conn.rollback()
        conn.execute(for_psycopg(INSERT_SQL), (client, 200, "failed transaction"))
        try:
            conn.execute(for_psycopg(DIVIDE_SQL), (0,))
            r["error"] = None
        except psycopg.Error as error:
            r["error"] = error.sqlstate
        conn.rollback()
        r["rows"] = [list(row) for row in conn.execute(for_psycopg(OWN_ROWS_SQL), (client,))]
        conn.commit()
        count = total = 0
        for (value,) in conn.execute(for_psycopg(LARGE_SQL), (client,)):
            count, total = count + 1, total + value
        r["large"] = [count, total]
        conn.commit()
        count = total = 0
        with conn.cursor(name=f"large_{client}") as cur:  # DECLARE, then FETCH itersize at a time
            cur.execute(for_psycopg(LARGE_SQL), (client,))
            for (value,) in cur:
                count, total = count + 1, total + value
        r["large_fetched"] = [count, total]
        conn.commit()
        with conn.cursor(binary=True) as cur:
            row = cur.execute(for_psycopg(TYPES_SQL), (client,)).fetchone()
        r["types"] = [row[0], row[1].hex(), str(row[2]), round(row[3].timestamp() * 1000), row[4],
                      row[5], row[6]]
        r["nulls"] = list(conn.execute(for_psycopg(NULLS_SQL), (None, None, None)).fetchone())
        conn.commit()
        with conn.cursor() as cur:  # psycopg 3.1 pipelines executemany: one Sync for them all
            cur.executemany(for_psycopg(BATCH_SQL), batch_rows(client))
        conn.commit()
        r["batch"] = list(conn.execute(for_psycopg(BATCH_CHECK_SQL), (client,)).fetchone())
        conn.commit()
        try:
            with conn.cursor() as cur:
                cur.executemany(for_psycopg(BATCH_SQL), bad_batch_rows(client))
            conn.commit()
            sqlstate = None
        except psycopg.Error as error:
            sqlstate = error.sqlstate
            conn.rollback()
        r["bad_batch"] = [sqlstate,
                          conn.execute(for_psycopg(BATCH_COUNT_SQL), (client,)).fetchone()[0]]
        conn.commit()
        value = big_value(client)
        r["big"] = big_result(value)(conn.execute(for_psycopg(BIG_SQL), (value,)).fetchone())
        conn.commit()
        r["copy"] = psycopg3_copy(conn, client)
        r["cancel"], r["after_cancel"] = psycopg3_cancel(t, psycopg, conn, client, run)
    return r


def psycopg3_copy(conn, client):
    with conn.cursor() as cur:
        with cur.copy(COPY_IN_SQL) as copy:
            for k in range(1, COPY_ROWS + 1):
                copy.write_row((client, k, f"c{client}-copy-{k}"))
        conn.commit()
        count = total = wrong = 0
        with cur.copy(copy_out_sql(client)) as copy:
            for row_client, k, v in copy.rows():
                count, total = count + 1, total + int(k)
                wrong += (int(row_client), v) != (client, f"c{client}-copy-{k}")
        conn.commit()
    return [count, total, wrong]


def psycopg3_cancel(t, psycopg, conn, client, run):
    tag = cancel_tag("psycopg3", run, client)
    sleeping = Background(conn.execute, sleep_sql(tag))
    wait_until_running(t.cluster, tag)
    conn.cancel()
    error = sleeping.error(30)
    sqlstate = error.sqlstate if isinstance(error, psycopg.Error) else repr(error)
    conn.rollback()
    after = conn.execute(for_psycopg(AFTER_SQL), (client,)).fetchone()[0]
    conn.commit()
    return sqlstate, after


@test("psycopg 3 (defaults): 12 clients over a pool of 3 in transaction mode get what PostgreSQL "
      "gives them", timeout=300)
def psycopg3_transaction_mode(t):
    run_both_ways(t, "psycopg3", psycopg3_workload(t))


# ---- asyncpg --------------------------------------------------------------------------------------

def asyncpg_module():
    try:
        import asyncpg
    except ImportError:
        raise harness.Skip("asyncpg is not installed (apt-get install python3-asyncpg)")
    return asyncpg


def asyncpg_workload(t):
    asyncpg = asyncpg_module()

    def workload(endpoint, clients, run):
        async def everyone():
            return await asyncio.gather(*(asyncpg_client(t, asyncpg, endpoint, client, run)
                                          for client in range(clients)))
        return list(asyncio.run(everyone()))

    return workload


async def asyncpg_client(t, asyncpg, endpoint, client, run):
    r = {"client": client}
    # Defaults: a statement cache of 100 (every query a named statement), binary results.
    conn = await asyncpg.connect(host=endpoint.host, port=endpoint.port, user="app",
                                 password="app_pw", database=harness.APP_DB)
    try:
        r["settings"] = list(await conn.fetchrow(SETTINGS_SQL))
        r["params"] = [list(await conn.fetchrow(PARAMS_SQL, client, k, f"c{client}-{k}"))
                       for k in range(PARAM_ROUNDS)]
        async with conn.transaction():
            for k in range(COMMITTED_ROWS):
                await conn.execute(INSERT_SQL, client, k, f"c{client}-{k}")
        transaction = conn.transaction()
        await transaction.start()
        for k in range(100, 105):
            await conn.execute(INSERT_SQL, client, k, "rolled back")
        await transaction.rollback()
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(INSERT_SQL, client, 200, "failed transaction")
        try:
            await conn.fetchval(DIVIDE_SQL, 0)
            r["error"] = None
        except asyncpg.PostgresError as error:
            r["error"] = error.sqlstate
        await transaction.rollback()
        r["rows"] = [list(row) for row in await conn.fetch(OWN_ROWS_SQL, client)]
        values = [row[0] for row in await conn.fetch(LARGE_SQL, client)]
        r["large"] = [len(values), sum(values)]
        count = total = 0
        async with conn.transaction():  # a portal, Execute with a row limit, again and again
            async for row in conn.cursor(LARGE_SQL, client, prefetch=1000):
                count, total = count + 1, total + row[0]
        r["large_fetched"] = [count, total]
        row = await conn.fetchrow(TYPES_SQL, client)
        r["types"] = [row[0], row[1].hex(), str(row[2]), round(row[3].timestamp() * 1000), row[4],
                      row[5], row[6]]
        r["nulls"] = list(await conn.fetchrow(NULLS_SQL, None, None, None))
        await conn.executemany(BATCH_SQL, batch_rows(client))  # Bind/Execute each, one Sync
        r["batch"] = list(await conn.fetchrow(BATCH_CHECK_SQL, client))
        try:
            await conn.executemany(BATCH_SQL, bad_batch_rows(client))
            sqlstate = None
        except asyncpg.PostgresError as error:
            sqlstate = error.sqlstate
        r["bad_batch"] = [sqlstate, await conn.fetchval(BATCH_COUNT_SQL, client)]
        value = big_value(client)
        r["big"] = big_result(value)(await conn.fetchrow(BIG_SQL, value))
        r["copy"] = await asyncpg_copy(conn, client)
        r["cancel"], r["after_cancel"] = await asyncpg_cancel(t, conn, client, run)
    finally:
        await conn.close()
    return r


async def asyncpg_copy(conn, client):
    await conn.copy_records_to_table(
        "drv_copy", columns=["client", "k", "v"],
        records=[(client, k, f"c{client}-copy-{k}") for k in range(1, COPY_ROWS + 1)])
    out = io.BytesIO()
    await conn.copy_from_query(copy_out_query(client), output=out)
    count = total = wrong = 0
    for line in out.getvalue().decode().splitlines():
        row_client, k, v = line.split("\t")
        count, total = count + 1, total + int(k)
        wrong += (int(row_client), v) != (client, f"c{client}-copy-{k}")
    return [count, total, wrong]


async def asyncpg_cancel(t, conn, client, run):
    """asyncpg cancels a query whose task is cancelled (as a timeout does): it sends a
    CancelRequest and reads the query's end before the connection is used again. The 57014 it
    swallows is checked in PostgreSQL's log."""
    tag = cancel_tag("asyncpg", run, client)
    sleeping = asyncio.ensure_future(conn.fetchval(sleep_sql(tag)))
    await asyncio.get_running_loop().run_in_executor(None, wait_until_running, t.cluster, tag)
    sleeping.cancel()
    try:
        await sleeping
        outcome = "finished"
    except asyncio.CancelledError:
        outcome = "57014"  # what the server answered is checked in its log
    return outcome, await conn.fetchval(AFTER_SQL, client)


@test("asyncpg (defaults): 12 clients over a pool of 3 in transaction mode get what PostgreSQL "
      "gives them", timeout=300)
def asyncpg_transaction_mode(t):
    run_both_ways(t, "asyncpg", asyncpg_workload(t))


@test("asyncpg: enum, composite and array-of-enum parameters (the driver's type introspection "
      "between its Parse and its Bind), 12 clients over a pool of 3", timeout=120)
def asyncpg_type_introspection(t):
    asyncpg = asyncpg_module()
    t.cluster.sql("DROP TABLE IF EXISTS drv_moods; DROP TYPE IF EXISTS drv_mood, drv_pair; "
                  "CREATE TYPE drv_mood AS ENUM ('sad', 'ok', 'happy'); "
                  "CREATE TYPE drv_pair AS (client int, mood drv_mood)")
    s = pool(t, "transaction", POOL_SIZE)
    moods = ["sad", "ok", "happy"]

    async def client(number):
        conn = await asyncpg.connect(host=s.host, port=s.port, user="app", password="app_pw",
                                     database=harness.APP_DB)
        try:
            mood = moods[number % 3]
            got = []
            for _ in range(3):
                row = await conn.fetchrow(
                    "SELECT $1::drv_mood, ($2::drv_pair).client, $3::drv_mood[], ROW($4, $1)::drv_pair",
                    mood, (number, mood), [mood, "ok"], number)
                got.append([row[0], row[1], list(row[2]), tuple(row[3])])
            return got
        finally:
            await conn.close()

    async def everyone():
        return await asyncio.gather(*(client(number) for number in range(CLIENTS)))

    for number, got in enumerate(asyncio.run(everyone())):
        mood = moods[number % 3]
        check_equal(got, [[mood, number, [mood, "ok"], (number, mood)]] * 3, f"client {number}")


# ---- node-postgres --------------------------------------------------------------------------------

def program_output(what, argv, env=None, timeout=240):
    result = subprocess.run(argv, capture_output=True, text=True, env=env,
                            timeout=timeout * harness.TIMEOUT_SCALE)
    check_equal(result.returncode, 0, f"{what}'s exit status; stderr:\n{result.stderr[-3000:]}\n"
                                      f"stdout:\n{result.stdout[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def node_workload(t):
    node_modules = os.path.join(SRCDIR, "tests", "node", "node_modules")
    if not shutil.which("node") or not os.path.isdir(os.path.join(node_modules, "pg")):
        raise harness.Skip("node or node-postgres (tests/node/node_modules/pg) is not installed")
    env = dict(os.environ, NODE_PATH=node_modules)
    program = os.path.join(PROGRAMS, "node_workload.js")

    def workload(endpoint, clients, run):
        spec = workload_spec(t, endpoint, clients, run, "node")
        return program_output("node_workload.js", ["node", program, json.dumps(spec)], env)

    return workload


def workload_spec(t, endpoint, clients, run, driver):
    """What the node and Java programs are told: where to connect, and the statements to run."""
    return {
        "host": endpoint.host, "port": endpoint.port, "database": harness.APP_DB,
        "user": "app", "password": "app_pw",
        "monitor_host": t.cluster.host, "monitor_port": t.cluster.port,
        "clients": clients, "param_rounds": PARAM_ROUNDS, "committed_rows": COMMITTED_ROWS,
        "copy_rows": COPY_ROWS, "batch_rows": BATCH_ROWS, "bad_batch_keys": BAD_BATCH_KEYS, "big_bytes": BIG_BYTES,
        "sql": {"settings": SETTINGS_SQL, "params": PARAMS_SQL, "insert": INSERT_SQL,
                "divide": DIVIDE_SQL, "own_rows": OWN_ROWS_SQL, "large": LARGE_SQL,
                "types": TYPES_SQL, "nulls": NULLS_SQL, "copy_in": COPY_IN_SQL,
                "after": AFTER_SQL, "batch": BATCH_SQL, "batch_check": BATCH_CHECK_SQL,
                "batch_count": BATCH_COUNT_SQL,
                "big": BIG_SQL},
        "copy_out": [copy_out_sql(client) for client in range(clients)],
        "sleep": [sleep_sql(cancel_tag(driver, run, client)) for client in range(clients)],
    }


@test("node-postgres (defaults, named queries): 12 clients over a pool of 3 in transaction mode "
      "get what PostgreSQL gives them", timeout=300)
def node_transaction_mode(t):
    run_both_ways(t, "node", node_workload(t))


# ---- pgjdbc ---------------------------------------------------------------------------------------

def jdbc_classes():
    """The directory with the Java programs compiled (once per file run)."""
    if not shutil.which("javac") or not shutil.which("java") or not os.path.exists(JDBC_JAR):
        raise harness.Skip("javac, java or pgjdbc (/usr/share/java/postgresql.jar) is not installed")
    classes = os.path.join(suite.base_dir(), "jdbc-classes")
    with _compile_lock:
        if not os.path.exists(os.path.join(classes, "JdbcWorkload.class")):
            os.makedirs(classes, exist_ok=True)
            result = subprocess.run(["javac", "-cp", JDBC_JAR, "-d", classes,
                                     os.path.join(PROGRAMS, "JdbcWorkload.java"),
                                     os.path.join(PROGRAMS, "JdbcQueryTimeout.java")],
                                    capture_output=True, text=True, timeout=180)
            check_equal(result.returncode, 0, f"javac JdbcWorkload.java:\n{result.stderr}")
    return classes


def jdbc_workload(t):
    classes = jdbc_classes()

    def workload(endpoint, clients, run):
        spec = workload_spec(t, endpoint, clients, run, "jdbc")
        return program_output("JdbcWorkload", ["java", "-cp", f"{JDBC_JAR}:{classes}",
                                               "JdbcWorkload", json.dumps(spec)])

    return workload


_compile_lock = threading.Lock()


@test("pgjdbc (defaults, prepareThreshold 5): 12 clients over a pool of 3 in transaction mode get "
      "what PostgreSQL gives them", timeout=300)
def jdbc_transaction_mode(t):
    run_both_ways(t, "jdbc", jdbc_workload(t))


# ---- a driver's timeout while the query still waits for a backend --------------------------------

TIMED_OUT_SQL = "INSERT INTO drv_timed_out SELECT 'ran' FROM pg_sleep(5)"
HOLD_BEFORE_RELEASE = 3  # seconds the backend stays taken: the driver's 1 s timer fires first
TIMEOUT_TODO = None


def timeout_pool(t):
    """A pool of one backend, and a client to take it; returns (sluice, holder)."""
    t.cluster.sql("DROP TABLE IF EXISTS drv_timed_out; CREATE TABLE drv_timed_out (v text); "
                  "ALTER TABLE drv_timed_out OWNER TO app")
    s = pool(t, "transaction", 1)
    return s, s.connect(autocommit=False)


def take_backend(holder):
    """The holder's open transaction keeps the only backend (until holder.commit())."""
    with holder.cursor() as cur:
        cur.execute("SELECT 1")


def check_timed_out_statement_had_no_effect(t, outcome, after, what):
    check_equal(outcome, "57014", f"{what}: what the timed-out statement ended with")
    check_equal(after, 42, f"{what}: the connection's next query")
    check_equal(t.cluster.sql("SELECT count(*) FROM drv_timed_out")[0][0], 0,
                f"{what}: rows the timed-out INSERT left")


@test("pgjdbc setQueryTimeout(1) fires while the statement waits for a backend: the statement is "
      "cancelled (57014), as on PostgreSQL, not run once a backend is free", timeout=120,
      todo=TIMEOUT_TODO)
def jdbc_query_timeout_while_waiting(t):
    classes = jdbc_classes()
    s, holder = timeout_pool(t)
    url = f"jdbc:postgresql://{s.host}:{s.port}/{harness.APP_DB}"
    proc = harness._track(subprocess.Popen(
        ["java", "-cp", f"{JDBC_JAR}:{classes}", "JdbcQueryTimeout", url, "app", "app_pw", "1",
         TIMED_OUT_SQL], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
    first_line = Background(proc.stdout.readline)
    check_equal(first_line.result(60 * harness.TIMEOUT_SCALE).strip(), "connected",
                "the Java program's first line")
    take_backend(holder)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    time.sleep(HOLD_BEFORE_RELEASE)  # orders the events; the outcome is checked below
    holder.commit()
    output, errors = proc.communicate("", timeout=60 * harness.TIMEOUT_SCALE)
    check_equal(proc.returncode, 0, f"the Java program's exit status; stderr:\n{errors[-3000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    check_timed_out_statement_had_no_effect(t, result["outcome"], result["after"], "pgjdbc")


@test("asyncpg execute(timeout=1) fires while the statement waits for a backend: the statement is "
      "cancelled, as on PostgreSQL, not run once a backend is free", timeout=120, todo=TIMEOUT_TODO)
def asyncpg_timeout_while_waiting(t):
    asyncpg = asyncpg_module()
    s, holder = timeout_pool(t)

    async def scenario():
        conn = await asyncpg.connect(host=s.host, port=s.port, user="app", password="app_pw",
                                     database=harness.APP_DB)
        try:
            take_backend(holder)
            try:
                await conn.execute(TIMED_OUT_SQL, timeout=1)
                outcome = "finished"
            except asyncio.TimeoutError:
                outcome = "57014"  # asyncpg's CancelRequest went out; the effect is checked below
            await asyncio.sleep(HOLD_BEFORE_RELEASE)  # orders the events
            await asyncio.get_running_loop().run_in_executor(None, holder.commit)
            return outcome, await conn.fetchval("SELECT 41 + 1")
        finally:
            await conn.close()

    outcome, after = asyncio.run(scenario())
    check_timed_out_statement_had_no_effect(t, outcome, after, "asyncpg")


# ---- session mode ---------------------------------------------------------------------------------

@test("session mode: the four drivers' workloads, 4 clients over a pool of 2", timeout=400)
def session_mode(t):
    skipped = []
    for driver, make in (("psycopg3", psycopg3_workload), ("asyncpg", asyncpg_workload),
                         ("node", node_workload), ("jdbc", jdbc_workload)):
        try:
            workload = make(t)
        except harness.Skip as why:
            skipped.append(f"{driver}: {why}")
            continue
        run_both_ways(t, driver, workload, mode="session", clients=SESSION_CLIENTS,
                      pool_size=SESSION_POOL_SIZE, compare_direct=False)
    if len(skipped) == 4:
        raise harness.Skip("; ".join(skipped))
    for line in skipped:
        t.note(f"skipped {line}")


if __name__ == "__main__":
    raise SystemExit(suite.run())
