"""Where prepared statements in transaction mode, per-client session settings, the outage path
and pins meet: DISCARD ALL and DEALLOCATE ALL next to SET, pool resets, pipelines that fail part
way, backends that die with statements and settings pending. Every outcome is what a direct
connection to PostgreSQL gives (SLUICE_IT_DIRECT=1 runs the same checks against it)."""

import harness
from harness import check, check_equal

suite = harness.Suite()
test = suite.test

STARTUP = dict(application_name="myapp", options="-c TimeZone=Asia/Tokyo")


def transaction_pool(t, pool_size=1, settings=None):
    all_settings = {"pool_mode": "transaction"}
    all_settings.update(settings or {})
    return t.sluice(settings=all_settings,
                    databases={"appdb": t.cluster.database_line(pool_size=pool_size)})


def one_row(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def run_statements(conn, statements):
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def statement(sql, name=""):
    return harness.parse_message(sql, name) + harness.bind_message(statement=name) \
        + harness.execute_message()


@test("wire: DISCARD ALL of an unpinned client restores its startup values, reported with "
      "ParameterStatus; another client's SET on the same backend stays")
def discard_all_unpinned(t):
    s = transaction_pool(t)
    other = s.wire()
    other.login()
    other.query_ok("SET TimeZone = 'America/Lima'")
    a = s.wire()
    a.login(**STARTUP)
    a.query_ok("SET application_name = 'changed'; SET TimeZone = 'Europe/Paris'")
    check_equal((a.parameters["application_name"], a.parameters["TimeZone"]),
                ("changed", "Europe/Paris"), "reported after SET")
    r = a.query_ok("DISCARD ALL")
    check_equal(r.tags, ["DISCARD ALL"], "tags")
    check_equal((a.parameters["application_name"], a.parameters["TimeZone"]),
                ("myapp", "Asia/Tokyo"), "reported after DISCARD ALL")
    row = a.query_ok("SELECT current_setting('application_name'), current_setting('TimeZone')").rows
    check_equal(row, [("myapp", "Asia/Tokyo")], "values after DISCARD ALL")
    row = other.query_ok("SELECT current_setting('TimeZone')").rows
    check_equal(row, [("America/Lima",)], "the other client's TimeZone")
    check_equal(other.parameters["TimeZone"], "America/Lima", "the other client's reported TimeZone")


def check_discard_all_pinned(t, discard):
    """A pins its backend with a temp table, then DISCARD ALL: the temp table and every
    statement on the backend go, for B too, whose statements are prepared again."""
    s = transaction_pool(t)
    a, b = s.wire(), s.wire()
    a.login()
    b.login()
    b.send(harness.parse_message("SELECT 2", "sb") + harness.sync_message())
    b.read_until_ready()
    a.send(harness.parse_message("SELECT 1", "sa") + harness.sync_message())
    a.read_until_ready()
    a.query_ok("CREATE TEMP TABLE tt (x int)")
    discard(a)
    r = a.query_ok("SELECT count(*) FROM pg_tables WHERE tablename = 'tt'")
    check_equal(r.rows, [("0",)], "temp tables after DISCARD ALL")
    a.send(harness.bind_message(statement="sa") + harness.execute_message()
           + harness.sync_message())
    check_equal([e.get("C") for e in a.read_until_ready().errors], ["26000"], "sa after DISCARD")
    b.send(harness.bind_message(statement="sb") + harness.execute_message()
           + harness.sync_message())
    r = b.read_until_ready()
    check_equal((r.rows, r.errors), ([("2",)], []), "B's statement after A's DISCARD ALL")
    a.send(statement("SELECT 1", "sa") + harness.sync_message())
    r = a.read_until_ready()
    check_equal((r.rows, r.errors), ([("1",)], []), "sa prepared again")


@test("wire: DISCARD ALL (simple query) of a pinned client ends the temp table and statements")
def discard_all_pinned_simple(t):
    def discard(a):
        check_equal(a.query_ok("DISCARD ALL").tags, ["DISCARD ALL"], "tag")
    check_discard_all_pinned(t, discard)


@test("wire: DISCARD ALL (extended) of a pinned client ends the temp table and statements")
def discard_all_pinned_extended(t):
    def discard(a):
        a.send(statement("DISCARD ALL") + harness.sync_message())
        r = a.read_until_ready()
        check_equal((r.tags, r.errors), (["DISCARD ALL"], []), "tag")
    check_discard_all_pinned(t, discard)


@test("wire: RESET ALL of a client pinned by a temp table returns it to its startup values")
def reset_all_pinned(t):
    s = transaction_pool(t)
    a = s.wire()
    a.login(**STARTUP)
    a.query_ok("CREATE TEMP TABLE tt (x int)")
    a.query_ok("SET application_name = 'changed'; SET TimeZone = 'Europe/Paris'")
    a.query_ok("RESET ALL")
    for n in range(2):
        r = a.query_ok("SELECT current_setting('application_name'), current_setting('TimeZone'), "
                       "count(*) FROM tt")
        check_equal(r.rows, [("myapp", "Asia/Tokyo", "0")], f"values after RESET ALL ({n})")
        check_equal((a.parameters["application_name"], a.parameters["TimeZone"]),
                    ("myapp", "Asia/Tokyo"), f"reported after RESET ALL ({n})")


@test("wire: DEALLOCATE ALL and SET in one query; statements gone, setting kept")
def deallocate_all_with_set(t):
    s = transaction_pool(t)
    a = s.wire()
    a.login()
    a.send(harness.parse_message("SELECT 1", "s1") + harness.sync_message())
    a.read_until_ready()
    r = a.query_ok("SET TimeZone = 'Europe/Paris'; DEALLOCATE ALL; SET work_mem = '5MB'")
    check_equal(r.tags, ["SET", "DEALLOCATE ALL", "SET"], "tags")
    check_equal(a.parameters["TimeZone"], "Europe/Paris", "reported TimeZone")
    r = a.query_ok("SELECT current_setting('TimeZone'), current_setting('work_mem')")
    check_equal(r.rows, [("Europe/Paris", "5MB")], "settings")
    a.send(harness.bind_message(statement="s1") + harness.execute_message()
           + harness.sync_message())
    r = a.read_until_ready()
    check_equal([e.get("C") for e in r.errors], ["26000"], "s1 after DEALLOCATE ALL")
    r = a.query_ok("DEALLOCATE ALL; RESET ALL")
    check_equal(r.tags, ["DEALLOCATE ALL", "RESET"], "tags")
    r = a.query_ok("SELECT current_setting('work_mem')")
    check(r.rows != [("5MB",)], f"work_mem after RESET ALL: {r.rows}")


@test("wire: a SET in a pipeline whose later duplicate Parse fails (42P05) is dropped")
def set_dropped_by_duplicate_parse(t):
    s = transaction_pool(t, pool_size=2)
    a = s.wire()
    a.login()
    a.send(harness.parse_message("SELECT 1", "dup") + harness.sync_message())
    a.read_until_ready()
    a.send(statement("SET TimeZone = 'Europe/Paris'") + harness.parse_message("SELECT 2", "dup")
           + harness.bind_message(statement="dup") + harness.execute_message()
           + harness.sync_message())
    r = a.read_until_ready()
    check_equal([e.get("C") for e in r.errors], ["42P05"], "errors")
    holder = s.connect()
    for n in range(3):
        run_statements(holder, ["BEGIN", "SELECT 1"])
        got = a.query_ok("SELECT current_setting('TimeZone')").rows
        run_statements(holder, ["COMMIT"])
        check(got != [("Europe/Paris",)], f"TimeZone after the failed pipeline (round {n}): {got}")
    check(a.parameters.get("TimeZone") != "Europe/Paris", f"reported: {a.parameters.get('TimeZone')}")


@test("psycopg 3 default config: SET TimeZone, rollback (DEALLOCATE ALL), pinned then unpinned")
def psycopg3_default(t):
    try:
        import psycopg
    except ImportError:
        raise harness.Skip("psycopg 3 is not installed")
    s = transaction_pool(t, pool_size=2)
    dsn = s.env()
    conninfo = (f"host={dsn['PGHOST']} port={dsn['PGPORT']} dbname={dsn['PGDATABASE']} "
                f"user={dsn['PGUSER']} password={dsn['PGPASSWORD']}")
    a = psycopg.connect(conninfo, prepare_threshold=1)
    other = psycopg.connect(conninfo, autocommit=True)
    a.execute("SET TimeZone = 'Europe/Paris'")
    a.commit()
    for n in range(4):
        a.execute("SELECT %s::int", (n,)).fetchone()
        a.execute("SELECT %s::int", (n,)).fetchone()
        a.rollback()
    a.execute("CREATE TEMP TABLE tt (x int)")
    a.commit()
    for n in range(3):
        check_equal(a.execute("SELECT %s::int + count(*) FROM tt", (n,)).fetchone(), (n,), "pinned")
        a.commit()
    a.autocommit = True
    a.execute("DISCARD ALL")
    a.autocommit = False
    check_equal(a.info.parameter_status("TimeZone") != "Europe/Paris", True, "reported zone")
    for n in range(4):
        run = other.execute("SELECT current_setting('TimeZone')").fetchone()
        got = a.execute("SELECT current_setting('TimeZone'), %s::int", (n,)).fetchone()
        check(got[0] != "Europe/Paris", f"A zone after DISCARD: {got}")
        a.rollback()
        check(run[0] != "Europe/Paris", f"other zone: {run}")
    a.execute("SET TimeZone = 'Europe/Paris'")
    a.commit()
    for n in range(4):
        got = a.execute("SELECT current_setting('TimeZone'), %s::int", (n,)).fetchone()
        check_equal(got, ("Europe/Paris", n), "A zone after SET again")
        a.rollback()
        check_equal(other.execute("SELECT 1").fetchone(), (1,), "other")


@test("asyncpg: pool reset releases the pin and prepared statements keep working")
def asyncpg_reset(t):
    try:
        import asyncpg
    except ImportError:
        raise harness.Skip("asyncpg is not installed")
    import asyncio
    s = transaction_pool(t, pool_size=2)
    dsn = s.env()

    async def main():
        pool = await asyncpg.create_pool(
            host=dsn["PGHOST"], port=int(dsn["PGPORT"]), user=dsn["PGUSER"],
            password=dsn["PGPASSWORD"], database=dsn["PGDATABASE"], min_size=1, max_size=1,
            server_settings={"application_name": "apool"})
        async with pool.acquire() as conn:
            await conn.execute("SET TimeZone = 'Europe/Paris'")
            await conn.execute("CREATE TEMP TABLE tt (x int)")
            await conn.execute("LISTEN chan")
            check_equal(await conn.fetchval("SELECT $1::int + 1", 1), 2, "prepared")
        other = await asyncpg.connect(host=dsn["PGHOST"], port=int(dsn["PGPORT"]),
                                      user=dsn["PGUSER"], password=dsn["PGPASSWORD"],
                                      database=dsn["PGDATABASE"])
        for n in range(4):
            async with pool.acquire() as conn:
                check_equal(await conn.fetchval("SELECT $1::int + 1", n), n + 1, "after reset")
                row = await conn.fetchrow("SELECT current_setting('TimeZone') AS z, "
                                          "current_setting('application_name') AS a")
                check(row["z"] != "Europe/Paris", f"zone after reset: {row}")
                check_equal(row["a"], "apool", "application_name after reset")
                check_equal(await conn.fetchval(
                    "SELECT count(*) FROM pg_tables WHERE tablename = 'tt'"), 1, "temp table")
            check_equal(await other.fetchval("SELECT $1::int + 1", n), n + 1, "other")
        await other.close()
        await pool.close()
    asyncio.run(main())


@test("wire: backend killed mid-pipeline with a pending Parse and a noted SET", sluice_only=True)
def backend_killed_mid_pipeline(t):
    s = transaction_pool(t, pool_size=1)
    a = s.wire()
    a.login()
    a.query_ok("SET TimeZone = 'Europe/Paris'")
    a.send(harness.parse_message("SELECT 41", "s1") + harness.sync_message())
    a.read_until_ready()
    pid = a.query_ok("SELECT pg_backend_pid()").rows[0][0]
    a.send(statement("SET work_mem = '7MB'") + harness.parse_message("SELECT 42", "s2")
           + harness.bind_message(statement="s2") + statement("SELECT pg_sleep(5)")
           + harness.sync_message())
    import time
    time.sleep(1)
    t.cluster.sql(f"SELECT pg_terminate_backend({pid})")
    r = a.read_until_ready()
    check(r.errors, "errors of the lost transaction")
    r = a.query("SELECT current_setting('TimeZone'), current_setting('work_mem'), pg_backend_pid()")
    check_equal(r.errors, [], "errors on the next backend")
    check_equal(r.rows[0][:2], ("Europe/Paris", "4MB"), "settings on the next backend")
    a.send(harness.bind_message(statement="s1") + harness.execute_message()
           + harness.sync_message())
    r = a.read_until_ready()
    check_equal((r.rows, r.errors), ([("41",)], []), "s1 on the next backend")
    # The backend answered s2's Parse before it died: the client holds s2, as on Postgres.
    a.send(harness.bind_message(statement="s2") + harness.execute_message()
           + harness.sync_message())
    r = a.read_until_ready()
    check_equal((r.rows, r.errors), ([("42",)], []), "s2 on the next backend")


if __name__ == "__main__":
    raise SystemExit(suite.run())
