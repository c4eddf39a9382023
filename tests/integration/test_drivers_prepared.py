"""Prepared statements in transaction pooling as real drivers use them: psycopg 3 (which sends
DEALLOCATE ALL through the extended protocol after a rollback), asyncpg (a statement cache shared
by every client of a small pool, no cache at all, a schema change under a cached statement), and
the raw protocol for what drivers rarely send (a Parse of a name that exists, Bind names over
1 KiB, DEALLOCATE inside a multi-statement query)."""

import asyncio
import time

import harness
from harness import check, check_equal

suite = harness.Suite()
test = suite.test

CONNECTIONS = 20


def transaction_pool(t, pool_size=1, **settings):
    all_settings = {"pool_mode": "transaction"}
    all_settings.update(settings)
    return t.sluice(settings=all_settings,
                    databases={"appdb": t.cluster.database_line(pool_size=pool_size)})


def conninfo(endpoint):
    return (f"host={endpoint.host} port={endpoint.port} dbname={harness.APP_DB} user=app "
            "password=app_pw sslmode=disable connect_timeout=10")


def psycopg3():
    try:
        import psycopg
    except ImportError:
        raise harness.Skip("psycopg 3 is not installed (apt-get install python3-psycopg)")
    return psycopg


def asyncpg_module():
    try:
        import asyncpg
    except ImportError:
        raise harness.Skip("asyncpg is not installed (apt-get install python3-asyncpg)")
    return asyncpg


def asyncpg_connect(asyncpg, endpoint, **kwargs):
    return asyncpg.connect(host=endpoint.host, port=endpoint.port, user="app", password="app_pw",
                           database=harness.APP_DB, ssl=False, **kwargs)


def kinds(result):
    return [kind for kind, _ in result.messages]


def sqlstates(result):
    return [error.get("C") for error in result.errors]


def close_message(kind, name):
    return harness.message("C", kind.encode() + harness.cstr(name))


def sluice_statements_on_backend(wire):
    """Shared statements sluice prepared on the backend (sluice_<n>)."""
    return int(wire.query_ok("SELECT count(*) FROM pg_prepared_statements "
                             "WHERE name ~ '^sluice_[0-9]+$'").rows[0][0])


# ---- psycopg 3 ------------------------------------------------------------------------------------

def psycopg3_rollback_rounds(t, **connect_args):
    """20 connections each get statements prepared, roll back (psycopg 3 then sends DEALLOCATE
    ALL with Parse/Bind/Execute) and go on querying; returns how many passed."""
    psycopg = psycopg3()
    s = transaction_pool(t, pool_size=2)
    connections = [psycopg.connect(conninfo(s), **connect_args) for _ in range(CONNECTIONS)]
    passed, failures = 0, []
    try:
        for number, conn in enumerate(connections):
            try:
                for k in range(6):
                    got = conn.execute("SELECT %s::int + 1", (k,)).fetchone()[0]
                    check_equal(got, k + 1, f"connection {number}: query {k} before rollback")
                conn.rollback()
                for k in range(6):
                    got = conn.execute("SELECT %s::int + 1", (k,)).fetchone()[0]
                    check_equal(got, k + 1, f"connection {number}: query {k} after rollback")
                    got = conn.execute("SELECT %s::text || 'x'", (str(k),)).fetchone()[0]
                    check_equal(got, f"{k}x", f"connection {number}: text query {k}")
                conn.commit()
                passed += 1
            except Exception as error:  # the driver's own error: count it, keep the first few
                failures.append(f"connection {number}: {error!r}")
                conn.rollback()
    finally:
        for conn in connections:
            conn.close()
    for failure in failures[:3]:
        t.note(failure)
    return passed


@test("psycopg 3, default prepare_threshold: 20 connections prepare, roll back (DEALLOCATE ALL "
      "over the extended protocol) and query on")
def psycopg3_default_rollback(t):
    check_equal(psycopg3_rollback_rounds(t), CONNECTIONS, "connections that passed")


@test("psycopg 3, prepare_threshold = 0: 20 connections prepare, roll back and query on")
def psycopg3_threshold_zero_rollback(t):
    check_equal(psycopg3_rollback_rounds(t, prepare_threshold=0), CONNECTIONS,
                "connections that passed")


@test("psycopg 3's DEALLOCATE ALL leaves asyncpg's cached statements and new asyncpg "
      "connections working on the same backend")
def psycopg3_deallocate_spares_asyncpg(t):
    psycopg = psycopg3()
    asyncpg = asyncpg_module()
    s = transaction_pool(t, pool_size=1)

    async def scenario():
        first = await asyncpg_connect(asyncpg, s)
        check_equal(await first.fetchval("SELECT $1::int * 2", 21), 42, "asyncpg before")
        with psycopg.connect(conninfo(s), prepare_threshold=0) as conn:
            check_equal(conn.execute("SELECT %s::int * 2", (21,)).fetchone()[0], 42,
                        "psycopg 3 before its rollback")
            conn.rollback()
            check_equal(conn.execute("SELECT %s::int * 3", (2,)).fetchone()[0], 6,
                        "psycopg 3 after its rollback")
            conn.commit()
        check_equal(await first.fetchval("SELECT $1::int * 2", 4), 8,
                    "asyncpg's cached statement after psycopg 3's DEALLOCATE ALL")
        await first.close()
        second = await asyncpg_connect(asyncpg, s)
        check_equal(await second.fetchval("SELECT $1::int * 2", 5), 10, "a new asyncpg connection")
        await second.close()

    asyncio.run(scenario())


# ---- asyncpg --------------------------------------------------------------------------------------

@test("asyncpg: five connections share a statement cache over a pool of two backends")
def asyncpg_shared_cache(t):
    asyncpg = asyncpg_module()
    s = transaction_pool(t, pool_size=2)

    async def client(number):
        conn = await asyncpg_connect(asyncpg, s)
        try:
            for k in range(20):
                got = await conn.fetchrow("SELECT $1::int AS n, $2::text AS who", k, f"c{number}")
                check_equal((got["n"], got["who"]), (k, f"c{number}"), f"client {number} round {k}")
        finally:
            await conn.close()

    async def scenario():
        await asyncio.gather(*(client(number) for number in range(5)))

    asyncio.run(scenario())


@test("asyncpg, statement_cache_size = 0 (unnamed statements), sharing one backend with a client "
      "of other settings: 50 rounds")
def asyncpg_no_cache(t):
    asyncpg = asyncpg_module()
    s = transaction_pool(t, pool_size=1)

    async def no_cache_rounds(conn, failures):
        for k in range(50):
            try:
                check_equal(await conn.fetchval("SELECT $1::int + 1", k), k + 1, f"round {k}")
            except Exception as error:
                failures.append(f"round {k}: {error!r}")

    async def other_rounds(other):
        for k in range(50):
            check_equal(await other.fetchval("SELECT current_setting('application_name')"),
                        "other", f"the other client's round {k}")

    async def scenario():
        # Another client with other settings shares the backend, so sluice applies this one's
        # settings again whenever the other had the backend between its Parse and its Bind.
        other = await asyncpg_connect(asyncpg, s, server_settings={"application_name": "other"})
        conn = await asyncpg_connect(asyncpg, s, statement_cache_size=0,
                                     server_settings={"application_name": "no_cache"})
        failures = []
        try:
            await asyncio.gather(no_cache_rounds(conn, failures), other_rounds(other))
        finally:
            await conn.close()
            await other.close()
        for failure in failures[:3]:
            t.note(failure)
        check_equal(len(failures), 0, "rounds that failed")

    asyncio.run(scenario())


@test("asyncpg: after another session's ALTER TABLE the cached statement is prepared afresh; "
      "new connections work too")
def asyncpg_schema_change(t):
    asyncpg = asyncpg_module()
    t.cluster.sql("DROP TABLE IF EXISTS schema_t; CREATE TABLE schema_t (id int, a int);"
                  "INSERT INTO schema_t VALUES (1, 10); GRANT ALL ON schema_t TO PUBLIC")
    s = transaction_pool(t, pool_size=2)
    query = "SELECT * FROM schema_t WHERE id = $1"

    async def scenario():
        first = await asyncpg_connect(asyncpg, s)
        check_equal(tuple(await first.fetchrow(query, 1)), (1, 10), "before ALTER TABLE")
        t.cluster.sql("ALTER TABLE schema_t ADD COLUMN b int DEFAULT 7")
        for k in range(3):
            check_equal(tuple(await first.fetchrow(query, 1)), (1, 10, 7),
                        f"the first connection after ALTER TABLE, call {k}")
        await first.close()
        for number in range(3):
            conn = await asyncpg_connect(asyncpg, s)
            check_equal(tuple(await conn.fetchrow(query, 1)), (1, 10, 7),
                        f"new connection {number} after ALTER TABLE")
            await conn.close()

    asyncio.run(scenario())


# ---- the raw protocol -----------------------------------------------------------------------------

class Protocol:
    def __init__(self, endpoint):
        self.wire = endpoint.wire()
        self.wire.login()

    def sync(self, data):
        self.wire.send(data + harness.sync_message())
        return self.wire.read_until_ready()

    def prepare_ok(self, name, sql):
        result = self.sync(harness.parse_message(sql, name))
        check(not result.errors, f"preparing {name!r} failed: {result.errors}")
        check_equal(kinds(result), ["1", "Z"], f"replies to Parse {name!r} + Sync")

    def execute(self, name, params=(), portal=""):
        return self.sync(harness.bind_message(params, portal=portal, statement=name)
                         + harness.execute_message(portal))

    def rows(self, name, params=()):
        result = self.execute(name, params)
        check(not result.errors, f"executing {name!r} failed: {result.errors}")
        return result.rows


def check_backend_free(s, a):
    """With pool_size 1: the one backend went back to the pool after a's Sync, so another client
    gets it (query_wait_timeout would fail it), and a's next query runs."""
    b = s.wire()
    b.login()
    check_equal(b.query_ok("SELECT 'b'").rows, [("b",)], "another client's query")
    check_equal(a.wire.query_ok("SELECT 'a again'").rows, [("a again",)],
                "the first client's next query")


@test("the unnamed statement survives a Sync and another client's turn on the backend before "
      "its Bind")
def unnamed_statement_across_sync(t):
    s = transaction_pool(t)
    a = s.wire()
    a.login(application_name="unnamed_a")
    b = s.wire()
    b.login(application_name="unnamed_b")
    # The messages of the issue: Parse, Describe, Flush; then Close (of the portal) and Sync.
    a.send(harness.parse_message("SELECT $1::int * 3") + harness.describe_message("S", "")
           + harness.flush_message())
    check_equal([a.read_message()[0] for _ in range(3)], ["1", "t", "T"],
                "replies to Parse + Describe + Flush")
    a.send(close_message("P", "") + harness.sync_message())
    result = a.read_until_ready()
    check_equal((result.errors, kinds(result)), ([], ["3", "Z"]), "Close of the portal + Sync")
    check_equal(b.query_ok("SELECT current_setting('application_name')").rows,
                [("unnamed_b",)], "the other client's turn")
    a.send(harness.bind_message((7,)) + harness.execute_message() + harness.sync_message())
    result = a.read_until_ready()
    check_equal((result.errors, result.rows), ([], [("21",)]), "Bind of the unnamed statement")
    # A failed Parse leaves no unnamed statement behind, here as on Postgres.
    a.send(harness.parse_message("SELEC 1") + harness.sync_message())
    check_equal(sqlstates(a.read_until_ready()), ["42601"], "Parse of a syntax error")
    a.send(harness.bind_message() + harness.execute_message() + harness.sync_message())
    check_equal(sqlstates(a.read_until_ready()), ["26000"], "Bind after the failed Parse")
    # A client that never prepared an unnamed statement cannot use another client's.
    b.send(harness.bind_message((1,)) + harness.execute_message() + harness.sync_message())
    check_equal(sqlstates(b.read_until_ready()), ["26000"], "Bind of an unnamed statement never prepared")


@test("ALTER TABLE run through sluice, by the simple or the extended protocol: a new client's "
      "Parse of the same text gets a statement prepared afresh")
def schema_change_through_sluice(t):
    t.cluster.sql("DROP TABLE IF EXISTS ddl_t; CREATE TABLE ddl_t (id int, a int);"
                  "INSERT INTO ddl_t VALUES (1, 10); ALTER TABLE ddl_t OWNER TO app")
    s = transaction_pool(t)
    query = "SELECT * FROM ddl_t"
    first = Protocol(s)
    first.prepare_ok("S_star", query)
    check_equal(first.rows("S_star"), [("1", "10")], "before ALTER TABLE")
    ddl = Protocol(s)
    ddl.wire.query_ok("ALTER TABLE ddl_t ADD COLUMN b int DEFAULT 7")
    second = Protocol(s)
    second.prepare_ok("S_star", query)
    check_equal(second.rows("S_star"), [("1", "10", "7")], "a new client after ALTER TABLE")
    result = ddl.wire.extended("ALTER TABLE ddl_t ADD COLUMN c int DEFAULT 8")
    check_equal((result.errors, result.tags), ([], ["ALTER TABLE"]),
                "ALTER TABLE through Parse/Bind/Execute")
    third = Protocol(s)
    third.prepare_ok("S_star", query)
    check_equal(third.rows("S_star"), [("1", "10", "7", "8")], "a new client after the second")


@test("DEALLOCATE and DISCARD ALL through Parse/Bind/Execute act on the client's statements only "
      "(DISCARD ALL runs as it is: other clients' statements are prepared again after it)")
def extended_deallocate_and_discard(t):
    s = transaction_pool(t)
    a, b = Protocol(s), Protocol(s)
    for client in (a, b):
        client.prepare_ok("S_1", "SELECT 'one'")
        client.prepare_ok("S_2", "SELECT 'two'")
    check_equal(a.rows("S_1") + a.rows("S_2"), [("one",), ("two",)], "A's statements")
    result = a.wire.extended('DEALLOCATE "S_1"')
    check_equal((result.errors, kinds(result), result.tags), ([], ["1", "2", "n", "C", "Z"],
                ["DEALLOCATE"]), "DEALLOCATE through the extended protocol")
    check_equal(sqlstates(a.execute("S_1")), ["26000"], "A's S_1 after DEALLOCATE")
    result = a.wire.extended('DEALLOCATE "S_1"')
    check_equal((sqlstates(result), kinds(result), result.status),
                (["26000"], ["1", "2", "n", "E", "Z"], "I"), "DEALLOCATE of a name A no longer has")
    result = a.wire.extended("DISCARD ALL")
    check_equal((result.errors, kinds(result), result.tags), ([], ["1", "2", "n", "C", "Z"],
                ["DISCARD ALL"]), "DISCARD ALL through the extended protocol")
    check_equal(sqlstates(a.execute("S_2")), ["26000"], "A's S_2 after DISCARD ALL")
    if not harness.DIRECT_MODE:
        # It ran as it is (PostgreSQL's own checks and effects, its portals closed): the shared
        # statements went with it, and sluice prepares B's there again.
        check_equal(sluice_statements_on_backend(b.wire), 0, "shared statements on the backend")
    check_equal(b.rows("S_1") + b.rows("S_2"), [("one",), ("two",)], "B's statements after")
    a.prepare_ok("S_1", "SELECT 'a again'")
    check_equal(a.rows("S_1"), [("a again",)], "A prepares S_1 again")


@test("Parse of a name the client already has: 42P05, the old statement stays")
def parse_existing_name(t):
    t.cluster.sql("DROP TABLE IF EXISTS dup_log; CREATE TABLE dup_log (v text);"
                  "GRANT ALL ON dup_log TO PUBLIC")
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("S_1", "SELECT 'old'")
    result = a.sync(harness.parse_message("SELECT 'new'", "S_1"))
    check_equal(sqlstates(result), ["42P05"], "SQLSTATEs of the second Parse")
    check_equal(result.errors[0].get("M"), 'prepared statement "S_1" already exists', "message")
    check_equal((kinds(result), result.status), (["E", "Z"], "I"), "replies")
    check_equal(a.rows("S_1"), [("old",)], "S_1 after the refused Parse")
    # In a pipeline: what came before is answered first, the rest is skipped up to Sync, and the
    # implicit transaction is rolled back, as on Postgres.
    pipeline = (harness.parse_message("INSERT INTO dup_log VALUES ('kept?')", "S_ins")
                + harness.bind_message(statement="S_ins") + harness.execute_message()
                + harness.parse_message("SELECT 'newer'", "S_1")
                + harness.bind_message(statement="S_1") + harness.execute_message())
    result = a.sync(pipeline)
    check_equal(kinds(result), ["1", "2", "C", "E", "Z"], "replies to the pipeline")
    check_equal(sqlstates(result), ["42P05"], "SQLSTATEs of the pipeline")
    check_equal(a.wire.query_ok("SELECT count(*) FROM dup_log").rows, [("0",)],
                "rows the rolled-back pipeline left")
    check_equal(a.rows("S_1"), [("old",)], "S_1 at the end")
    # Inside a transaction block the error fails the transaction.
    check_equal(a.wire.query_ok("BEGIN").status, "T", "status after BEGIN")
    result = a.sync(harness.parse_message("SELECT 'again'", "S_1"))
    check_equal((sqlstates(result), result.status), (["42P05"], "E"), "Parse inside BEGIN")
    check_equal(a.wire.query_ok("ROLLBACK").status, "I", "status after ROLLBACK")
    check_equal(a.rows("S_1"), [("old",)], "S_1 after the failed transaction")


@test("Parse of a name the client already has: as in PostgreSQL the statement is checked first "
      "(42601 for a syntax error, 25P02 in a failed transaction), 42P05 only for one that "
      "parses, ROLLBACK in a failed transaction included")
def parse_existing_name_statement_first(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("S_1", "SELECT 'old'")
    result = a.sync(harness.parse_message("SELEC 1", "S_1"))
    check_equal(sqlstates(result), ["42601"], "a syntax error under the name in use")
    check_equal(a.wire.query_ok("BEGIN").status, "T", "status after BEGIN")
    check_equal(sqlstates(a.wire.query("SELECT 1 / 0")), ["22012"], "the failing statement")
    result = a.sync(harness.parse_message("SELECT 'new'", "S_1"))
    check_equal((sqlstates(result), result.status), (["25P02"], "E"),
                "a statement under the name in use, in the failed transaction")
    result = a.sync(harness.parse_message("ROLLBACK", "S_1"))
    check_equal((sqlstates(result), result.status), (["42P05"], "E"),
                "ROLLBACK (which a failed transaction parses) under the name in use")
    check_equal(result.errors[0].get("M"), 'prepared statement "S_1" already exists', "message")
    check_equal(a.wire.query_ok("ROLLBACK").status, "I", "status after ROLLBACK")
    check_equal(a.rows("S_1"), [("old",)], "S_1 at the end")


@test("a Parse in a failed transaction of a statement its backend holds: 25P02, as PostgreSQL "
      "refuses it there, and the name is not made")
def parse_held_statement_in_failed_transaction(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("S_1", "SELECT 'one'")
    check_equal(a.wire.query_ok("BEGIN").status, "T", "status after BEGIN")
    check_equal(sqlstates(a.wire.query("SELECT 1 / 0")), ["22012"], "the failing statement")
    result = a.sync(harness.parse_message("SELECT 'one'", "S_2"))
    check_equal((kinds(result), sqlstates(result)), (["E", "Z"], ["25P02"]),
                "Parse of the text S_1 has, under a new name")
    check_equal(a.wire.query_ok("ROLLBACK").status, "I", "status after ROLLBACK")
    check_equal(sqlstates(a.execute("S_2")), ["26000"], "S_2, which the failed Parse did not make")
    check_equal(a.rows("S_1"), [("one",)], "S_1")


@test("Execute of a portal whose Bind to a DEALLOCATE statement failed: 34000, as the portal was "
      "never made, and the statement DEALLOCATE names stays")
def deallocate_portal_of_failed_bind(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("s_keep", "SELECT 'kept'")
    a.prepare_ok("s_dealloc", "DEALLOCATE s_keep")
    check_equal(a.wire.query_ok("BEGIN").status, "T", "status after BEGIN")
    result = a.sync(harness.bind_message((1,), portal="p_dealloc", statement="s_dealloc"))
    check_equal(sqlstates(result), ["08P01"], "a Bind with a parameter DEALLOCATE has not")
    result = a.sync(harness.execute_message("p_dealloc"))
    check_equal(sqlstates(result), ["34000"], "Execute of the portal the Bind did not make")
    check_equal(a.wire.query_ok("ROLLBACK").status, "I", "status after ROLLBACK")
    check_equal(a.rows("s_keep"), [("kept",)], "the statement DEALLOCATE names")


@test("a portal of DEALLOCATE ALL executed twice: the second Execute gets 55000, as PostgreSQL "
      "runs a portal once")
def deallocate_portal_executed_twice(t):
    s = transaction_pool(t)
    a = Protocol(s)
    result = a.sync(harness.parse_message("DEALLOCATE ALL") + harness.bind_message(portal="p")
                    + harness.execute_message("p") + harness.flush_message())
    check_equal((result.tags, result.errors), (["DEALLOCATE ALL"], []), "the first Execute")
    a.prepare_ok("s_1", "SELECT 'one'")
    result = a.sync(harness.bind_message(portal="p_all", statement="") + harness.execute_message("p_all")
                    + harness.execute_message("p_all"))
    check_equal((result.tags, sqlstates(result)), (["DEALLOCATE ALL"], ["55000"]),
                "the same portal executed twice in one pipeline")
    check_equal(sqlstates(a.execute("s_1")), ["26000"], "s_1 after the first DEALLOCATE ALL")


@test("DEALLOCATE, DEALLOCATE ALL and Close that PostgreSQL skips or refuses (an earlier error in "
      "the pipeline or the query, a failed transaction) leave the client its statements")
def skipped_deallocate_keeps_statements(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("s_1", "SELECT 'one'")
    a.prepare_ok("s_2", "SELECT 'two'")
    failing = (harness.parse_message("SELECT 10 / $1::int") + harness.bind_message((0,))
               + harness.execute_message())
    deallocate = (harness.parse_message("DEALLOCATE s_1") + harness.bind_message()
                  + harness.execute_message())
    deallocate_all = (harness.parse_message("DEALLOCATE ALL") + harness.bind_message()
                      + harness.execute_message())
    result = a.sync(failing + deallocate + deallocate_all + close_message("S", "s_2"))
    check_equal(sqlstates(result), ["22012"], "a pipeline whose first row fails")
    check_equal((a.rows("s_1"), a.rows("s_2")), ([("one",)], [("two",)]),
                "the statements after the skipped DEALLOCATE, DEALLOCATE ALL and Close")
    result = a.wire.query("SELECT 1 / 0; DEALLOCATE s_1; DEALLOCATE ALL")
    check_equal(sqlstates(result), ["22012"], "a query whose first statement fails")
    check_equal(a.rows("s_1"), [("one",)], "s_1 after the query's DEALLOCATEs, never run")
    check_equal(a.wire.query_ok("BEGIN").status, "T", "status after BEGIN")
    check_equal(sqlstates(a.wire.query("SELECT 1 / 0")), ["22012"], "the failing statement")
    check_equal(sqlstates(a.sync(deallocate_all)), ["25P02"], "DEALLOCATE ALL in the failed transaction")
    check_equal(sqlstates(a.sync(close_message("S", "s_2"))), [], "Close in the failed transaction")
    check_equal(a.wire.query_ok("ROLLBACK").status, "I", "status after ROLLBACK")
    check_equal(a.rows("s_1"), [("one",)], "s_1 at the end")
    check_equal(sqlstates(a.execute("s_2")), ["26000"], "s_2, closed in the failed transaction")


@test("DISCARD ALL by the extended protocol, as in PostgreSQL: refused in a transaction block and "
      "after another Execute of the pipeline (25001), leaving the client's statements; otherwise "
      "its portals are gone with its statements")
def extended_discard_all(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("s_1", "SELECT 'one'")
    discard = harness.parse_message("DISCARD ALL") + harness.bind_message() + harness.execute_message()
    check_equal(a.wire.query_ok("BEGIN").status, "T", "status after BEGIN")
    check_equal(sqlstates(a.sync(discard)), ["25001"], "DISCARD ALL in a transaction block")
    check_equal(a.wire.query_ok("ROLLBACK").status, "I", "status after ROLLBACK")
    result = a.sync(harness.parse_message("SELECT 1") + harness.bind_message()
                    + harness.execute_message() + discard)
    check_equal((result.rows, sqlstates(result)), ([("1",)], ["25001"]),
                "DISCARD ALL after another Execute of the pipeline")
    check_equal(a.rows("s_1"), [("one",)], "s_1 after the refused DISCARD ALLs")
    result = a.sync(harness.parse_message("DISCARD ALL") + harness.bind_message(portal="p")
                    + harness.execute_message("p") + harness.parse_message("SELECT 2")
                    + harness.bind_message(portal="p") + harness.execute_message("p"))
    check_equal((result.errors, result.tags, result.rows), ([], ["DISCARD ALL", "SELECT 1"], [("2",)]),
                "DISCARD ALL, then a Bind of its portal's name")
    check_equal(sqlstates(a.execute("s_1")), ["26000"], "s_1 after DISCARD ALL")


@test("a Bind of the unnamed statement skipped after an error: the backend keeps another "
      "client's unnamed statement, and the next Bind gets the client's own parsed again")
def unnamed_parse_skipped(t):
    s = transaction_pool(t)
    a = Protocol(s)
    b = Protocol(s)
    check_equal(kinds(a.sync(harness.parse_message("SELECT $1::int + 1"))), ["1", "Z"], "A's Parse")
    check_equal(kinds(b.sync(harness.parse_message("SELECT 'b'"))), ["1", "Z"], "B's Parse")
    result = a.sync(harness.execute_message("no_such_portal") + harness.bind_message((1,))
                    + harness.execute_message())
    check_equal(sqlstates(result), ["34000"], "an error, then A's Bind")
    result = a.execute("", (41,))
    check_equal((result.errors, result.rows), ([], [("42",)]), "A's next Bind of its statement")


@test("a Bind sent after the backend's error and before the Sync is owed nothing: the backend's "
      "next replies reach the client as they are (psycopg 3 executemany of a failing batch)")
def bind_after_error_before_sync(t):
    # One backend that keeps one statement: the second Parse makes sluice close the first on it,
    # and that CloseComplete is sluice's own, never the client's.
    s = transaction_pool(t, max_prepared_statements=1)
    a = Protocol(s)
    a.prepare_ok("S_div", "SELECT 10 / $1::int")
    # Rows of a pipeline with Flush and no Sync; the second fails (division by zero).
    a.wire.send(harness.bind_message((1,), statement="S_div") + harness.execute_message()
                + harness.bind_message((0,), statement="S_div") + harness.execute_message()
                + harness.flush_message())
    replies = []
    while not replies or replies[-1] != "E":
        replies.append(a.wire.read_message()[0])
    # (the planner may divide at Bind: its BindComplete then never comes)
    check(replies in (["2", "D", "C", "2", "E"], ["2", "D", "C", "E"]), f"replies up to the error: {replies}")
    # What the client sends after the error is skipped by PostgreSQL up to the Sync.
    result = a.sync(harness.bind_message((2,), statement="S_div") + harness.execute_message())
    check_equal((kinds(result), result.status), (["Z"], "I"), "the skipped row and Sync")
    for round_ in range(3):
        result = a.sync(harness.parse_message(f"SELECT {round_} + $1::int", f"S_{round_}")
                        + harness.bind_message((1,), statement=f"S_{round_}")
                        + harness.execute_message())
        check_equal((result.errors, kinds(result), result.rows),
                    ([], ["1", "2", "D", "C", "Z"], [(str(round_ + 1),)]),
                    f"Parse, Bind, Execute, Sync of a new statement, round {round_}")
    check_equal(a.rows("S_div", (5,)), [("2",)], "the first statement, prepared again by sluice")


@test("a simple query sent after an error in a pipeline, before its Sync, is ignored as by "
      "PostgreSQL, and the backend goes back to the pool after the Sync")
def query_ignored_after_pipeline_error(t):
    s = transaction_pool(t, query_wait_timeout=5)
    a = Protocol(s)
    a.wire.send(harness.parse_message("SELEC 1") + harness.flush_message())
    kind, _ = a.wire.read_message()
    check_equal(kind, "E", "reply to the bad Parse")
    a.wire.send(harness.query_message("SELECT 'ignored'") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.status), (["Z"], "I"), "the ignored query, then the Sync")
    check_backend_free(s, a)


@test("a simple query sent in the same write as a pipeline that fails before it, ahead of its "
      "Sync, is ignored as by PostgreSQL: no ReadyForQuery of its own, and the backend goes back "
      "to the pool after the Sync")
def query_in_flight_ignored_after_pipeline_error(t):
    s = transaction_pool(t, query_wait_timeout=5)
    a = Protocol(s)
    a.wire.send(harness.parse_message("SELEC 1") + harness.query_message("SELECT 'ignored'") +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.status), (["E", "Z"], "I"), "the bad Parse, then the Sync")
    # No Sync after the query: the batch stays open until the client sends one.
    a.wire.send(harness.parse_message("SELEC 2") + harness.query_message("SELECT 'ignored'") +
                harness.flush_message())
    kind, _ = a.wire.read_message()
    check_equal(kind, "E", "reply to the second bad Parse")
    a.wire.send(harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.status), (["Z"], "I"), "the Sync")
    check_backend_free(s, a)


@test("a simple query behind an Execute in the same write: ignored after the Execute's error, "
      "run (and its own error answered) after the Execute's CommandComplete, as by PostgreSQL")
def query_in_flight_after_execute(t):
    s = transaction_pool(t, query_wait_timeout=5)
    a = Protocol(s)
    a.wire.send(harness.parse_message("SELECT 1") + harness.bind_message(()) +
                harness.execute_message("missing") + harness.query_message("SELECT 'ignored'") +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.status), (["1", "2", "E", "Z"], "I"),
                "the Execute's error, then the Sync")
    a.wire.send(harness.parse_message("SELECT 1") + harness.bind_message(()) +
                harness.execute_message() + harness.query_message("SELEC 1") +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal(kinds(result), ["1", "2", "D", "C", "E", "Z"], "the Execute, then the query's error")
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.status), (["Z"], "I"), "the Sync")
    check_backend_free(s, a)


@test("a simple query the backend skips after an error in its pipeline leaves the client its "
      "unnamed statement, as in PostgreSQL, even after another client's query on the backend")
def skipped_query_keeps_unnamed(t):
    s = transaction_pool(t, query_wait_timeout=5)
    a = Protocol(s)
    # The Bind fails (08P01, one parameter too many): the query behind it is skipped.
    a.wire.send(harness.parse_message("SELECT $1::int + 1") + harness.bind_message((1, 2)) +
                harness.query_message("SELECT 'ignored'") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal(kinds(result), ["1", "E", "Z"], "the Parse, the Bind's error, the Sync")
    b = s.wire()
    b.login()
    check_equal(b.query_ok("SELECT 'b'").rows, [("b",)], "another client's query, same backend")
    a.wire.send(harness.bind_message((5,)) + harness.execute_message() + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.rows), (["2", "D", "C", "Z"], [("6",)]),
                "a Bind of the unnamed statement the skipped query left")


@test("a Describe of a statement sluice prepares again, an Execute that fails and a simple query, "
      "in one write: the query is skipped, as by PostgreSQL, and the replies stay in step")
def query_after_describe_of_evicted_statement(t):
    s = transaction_pool(t, query_wait_timeout=5, max_prepared_statements=1)
    a = Protocol(s)
    for name, sql in (("s1", "SELECT 1"), ("s2", "SELECT 2")):   # s2 evicts s1 on the backend
        a.wire.send(harness.parse_message(sql, name) + harness.sync_message())
        check_equal(kinds(a.wire.read_until_ready()), ["1", "Z"], f"Parse {name}")
    a.wire.send(harness.describe_message("S", "s1") + harness.execute_message("missing") +
                harness.query_message("SELECT 'ignored'") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.status), (["t", "T", "E", "Z"], "I"),
                "the Describe, the Execute's error, the Sync")
    check_equal(a.wire.query_ok("SELECT 'next'").rows, [("next",)], "the next query's replies")
    b = s.wire()
    b.login()
    check_equal(b.query_ok("SELECT 'b'").rows, [("b",)], "another client's query")


@test("a simple DISCARD ALL after an Execute in an unsynced pipeline fails with 25001, as in "
      "PostgreSQL, and leaves the client its statements; after an Execute of COMMIT it runs")
def discard_all_in_pipeline(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.wire.send(harness.parse_message("SELECT 41 + $1::int", "s1") + harness.sync_message())
    check_equal(kinds(a.wire.read_until_ready()), ["1", "Z"], "Parse s1")
    a.wire.send(harness.parse_message("SELECT 1") + harness.bind_message(()) +
                harness.execute_message() + harness.query_message("DISCARD ALL") +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), [e.get("C") for e in result.errors]),
                (["1", "2", "D", "C", "E", "Z"], ["25001"]), "DISCARD ALL in the pipeline")
    check_equal(kinds(a.wire.read_until_ready()), ["Z"], "the Sync")
    a.wire.send(harness.bind_message((1,), statement="s1") + harness.execute_message() +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.rows), (["2", "D", "C", "Z"], [("42",)]),
                "s1, which the refused DISCARD ALL left")
    # An Execute of COMMIT ends the pipeline's transaction: DISCARD ALL then runs.
    a.wire.send(harness.parse_message("SELECT 1") + harness.bind_message(()) +
                harness.execute_message() + harness.parse_message("COMMIT") +
                harness.bind_message(()) + harness.execute_message() +
                harness.query_message("DISCARD ALL") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal([kind for kind in kinds(result) if kind not in "NS"],
                ["1", "2", "D", "C", "1", "2", "C", "C", "Z"], "DISCARD ALL after COMMIT")
    check_equal(kinds(a.wire.read_until_ready()), ["Z"], "the Sync")
    a.wire.send(harness.bind_message((1,), statement="s1") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), [e.get("C") for e in result.errors]), (["E", "Z"], ["26000"]),
                "s1 after DISCARD ALL ran")


@test("DEALLOCATE ALL by a simple query behind a Describe, after an Execute answered at a Flush: "
      "tagged DEALLOCATE ALL, as by PostgreSQL")
def deallocate_query_after_answered_execute(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.wire.send(harness.parse_message("SELECT 1") + harness.bind_message((), portal="p1") +
                harness.execute_message("p1") + harness.flush_message())
    got = [a.wire.read_message()[0] for _ in range(4)]
    check_equal(got, ["1", "2", "D", "C"], "the Execute, read after the Flush")
    a.wire.send(harness.describe_message("P", "p1") + harness.query_message("DEALLOCATE ALL"))
    result = a.wire.read_until_ready()
    check_equal((kinds(result), result.tags), (["T", "C", "Z"], ["DEALLOCATE ALL"]),
                "the Describe, then DEALLOCATE ALL")


@test("a portal of DEALLOCATE ALL executed again after an Execute of COMMIT in the same pipeline: "
      "34000, the portal is gone with its transaction, as in PostgreSQL")
def deallocate_portal_after_commit_in_pipeline(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.wire.send(harness.parse_message("DEALLOCATE ALL") + harness.bind_message((), portal="p2") +
                harness.execute_message("p2") + harness.parse_message("COMMIT") +
                harness.bind_message(()) + harness.execute_message() +
                harness.execute_message("p2") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal(([kind for kind in kinds(result) if kind != "N"],
                 [error.get("C") for error in result.errors]),
                (["1", "2", "C", "1", "2", "C", "E", "Z"], ["34000"]),
                "the second Execute of the portal, after COMMIT")


@test("a portal of DEALLOCATE never executed, whose transaction an Execute of COMMIT ended in the "
      "same pipeline: its Execute gets 34000 and the client keeps its statements, as in PostgreSQL")
def deallocate_portal_first_executed_after_commit(t):
    s = transaction_pool(t)
    a = Protocol(s)
    for command in ("DEALLOCATE ALL", "DEALLOCATE a1", "DEALLOCATE nosuch"):
        a.wire.send(harness.parse_message("SELECT 7", name="a1") +
                    harness.parse_message(command) + harness.bind_message((), portal="p2") +
                    harness.parse_message("COMMIT") + harness.bind_message(()) +
                    harness.execute_message() + harness.execute_message("p2") +
                    harness.sync_message())
        result = a.wire.read_until_ready()
        check_equal(([kind for kind in kinds(result) if kind != "N"],
                     [error.get("C") for error in result.errors]),
                    (["1", "1", "2", "1", "2", "C", "E", "Z"], ["34000"]),
                    f"the first Execute of the portal of {command}, after COMMIT")
        a.wire.send(harness.bind_message((), statement="a1") + harness.execute_message() +
                    close_message("S", "a1") + harness.sync_message())
        result = a.wire.read_until_ready()
        check_equal((kinds(result), result.rows), (["2", "D", "C", "3", "Z"], [("7",)]),
                    f"a1 is still the client's after the portal of {command} failed")


@test("a SET in a simple query that PostgreSQL skips after an error earlier in the unsynced "
      "pipeline is not followed: the client keeps its setting")
def skipped_query_set_not_followed(t):
    s = transaction_pool(t)
    a = s.wire()
    a.login(application_name="before_a")
    b = s.wire()
    b.login(application_name="other_b")
    failing = harness.parse_message("SELECT 1/0") + harness.bind_message(()) + harness.execute_message()
    skipped = harness.query_message("SET application_name = 'skipped'")
    # the query in the same write as the failing Execute, or sent after the error was read
    for how in ("same write", "after a Flush"):
        if how == "same write":
            a.send(failing + skipped + harness.sync_message())
            want = (["1", "E", "Z"], ["22012"])
        else:
            a.send(failing + harness.flush_message())
            check_equal([a.read_message()[0] for _ in range(2)], ["1", "E"],
                        "the replies up to the error")
            a.send(skipped + harness.sync_message())
            want = (["Z"], [])
        result = a.read_until_ready()
        check_equal(([kind for kind in kinds(result) if kind != "S"], sqlstates(result)), want,
                    f"the batch whose query PostgreSQL skips ({how})")
        check_equal(b.query_ok("SELECT current_setting('application_name')").rows, [("other_b",)],
                    f"the other client's turn on the backend ({how})")
        check_equal(a.query_ok("SELECT current_setting('application_name')").rows, [("before_a",)],
                    f"the client's setting after the skipped SET ({how})")


def check_failed_query_portal(t, s):
    """BEGIN, a long query failing while it runs, then an Execute of the unnamed portal: 34000,
    and the backend, which PostgreSQL 15 would make read the query's freed plan, lives on."""
    t.cluster.sql("DROP TABLE IF EXISTS crash_div; CREATE TABLE crash_div (k int, x int);"
                  "INSERT INTO crash_div VALUES (0, 0), (1, 1); GRANT ALL ON crash_div TO PUBLIC")
    a = s.wire()
    a.login()
    # Long enough that the memory PostgreSQL frees after the query goes back to the system.
    failing = ("SELECT 10 / x FROM crash_div WHERE k = 0 AND k NOT IN (" +
               ", ".join(str(n) for n in range(1, 30001)) + ")")
    check_equal(kinds(a.query("BEGIN")), ["C", "Z"], "BEGIN")
    check_equal(sqlstates(a.query(failing)), ["22012"], "the query failing while it runs")
    a.send(harness.execute_message() + harness.sync_message())
    result = a.read_until_ready()
    check_equal((kinds(result), sqlstates(result)), (["E", "Z"], ["34000"]),
                "Execute of the unnamed portal in the failed transaction block")
    check_equal(kinds(a.query("ROLLBACK")), ["C", "Z"], "ROLLBACK on the same backend")
    check_equal(a.query_ok("SELECT 'alive'").rows, [("alive",)], "the client's next query")
    check("terminated by signal" not in open(t.cluster.log_path, errors="replace").read(),
          "no PostgreSQL backend died")


@test("an Execute of the unnamed portal a long simple query left when it failed in a transaction "
      "block: 34000, and the backend (PostgreSQL 15 reads that query's freed plan) does not die")
def execute_of_failed_query_portal(t):
    check_failed_query_portal(t, transaction_pool(t))


@test("the same in session mode, where sluice passes messages as they are: the portal is closed "
      "first, the backend does not die")
def execute_of_failed_query_portal_session_mode(t):
    check_failed_query_portal(t, transaction_pool(t, pool_mode="session"))


@test("a simple DISCARD ALL in a transaction block, sent behind another query or a Parse before "
      "their replies came: 25001 and a failed transaction, as in PostgreSQL, and the client's "
      "statements stay")
def discard_all_pipelined_in_transaction_block(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("s1", "SELECT 41 + $1::int")
    # Two simple queries in one write: the second one is sent before the first one's
    # ReadyForQuery says that a transaction block is open.
    a.wire.send(harness.query_message("BEGIN") + harness.query_message("DISCARD ALL"))
    check_equal(kinds(a.wire.read_until_ready()), ["C", "Z"], "BEGIN")
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result), result.status), (["E", "Z"], ["25001"], "E"),
                "DISCARD ALL behind it")
    result = a.wire.query("SELECT 1")
    check_equal((sqlstates(result), result.status), (["25P02"], "E"),
                "the next query, in the failed transaction")
    check_equal(a.wire.query("ROLLBACK").tags, ["ROLLBACK"], "ROLLBACK")
    # The same behind a Parse of the extended protocol, before its Sync.
    check_equal(a.wire.query("BEGIN").status, "T", "BEGIN")
    a.wire.send(harness.parse_message("SELECT 1") + harness.query_message("DISCARD ALL") +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result), result.status),
                (["1", "E", "Z"], ["25001"], "E"), "Parse, then DISCARD ALL")
    check_equal(kinds(a.wire.read_until_ready()), ["Z"], "the Sync")
    check_equal(a.wire.query("ROLLBACK").tags, ["ROLLBACK"], "ROLLBACK")
    check_equal(a.rows("s1", (1,)), [("42",)], "s1, which the refused DISCARD ALLs left")
    # Outside a block, behind a query still running, it runs.
    a.wire.send(harness.query_message("SELECT 1") + harness.query_message("DISCARD ALL"))
    check_equal(kinds(a.wire.read_until_ready()), ["T", "D", "C", "Z"], "SELECT 1")
    result = a.wire.read_until_ready()
    check_equal((result.tags, result.status), (["DISCARD ALL"], "I"), "DISCARD ALL behind it")
    result = a.sync(harness.bind_message((1,), statement="s1") + harness.execute_message())
    check_equal(sqlstates(result), ["26000"], "s1, which the DISCARD ALL that ran took away")


@test("Bind with statement and portal names of 1,200 bytes each")
def bind_long_names(t):
    s = transaction_pool(t)
    a = Protocol(s)
    statement = "S_" + "s" * 1198
    portal = "P_" + "p" * 1198
    a.prepare_ok(statement, "SELECT $1::int * 10")
    result = a.execute(statement, (4,), portal=portal)
    check(not result.errors, f"Bind with long names failed: {result.errors}")
    check_equal(result.rows, [("40",)], "rows")
    check_equal(kinds(result), ["2", "D", "C", "Z"], "replies")
    check_equal(a.rows(statement, (5,)), [("50",)], "the statement with an unnamed portal")
    # The Bind arriving in pieces, the first ending inside the statement name, the second with
    # nothing after the Bind.
    bind = harness.bind_message((6,), portal=portal, statement=statement)
    a.wire.send(bind[:1500])
    time.sleep(0.2)
    a.wire.send(bind[1500:])
    time.sleep(0.2)
    a.wire.send(harness.execute_message(portal) + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((result.errors, result.rows), ([], [("60",)]), "a Bind sent in pieces")


@test("DEALLOCATE and DEALLOCATE ALL inside multi-statement queries act on the client's "
      "statements only; the backend keeps the shared ones", sluice_only=True)
def deallocate_in_multi_statement_query(t):
    s = transaction_pool(t)
    a, b = Protocol(s), Protocol(s)
    for client in (a, b):
        client.prepare_ok("S_1", "SELECT 'one'")
        client.prepare_ok("S_2", "SELECT 'two'")
    check_equal(a.rows("S_1") + a.rows("S_2"), [("one",), ("two",)], "A's statements")
    held = sluice_statements_on_backend(b.wire)
    check_equal(held, 2, "shared statements on the backend")
    result = a.wire.query('SELECT 1; DEALLOCATE "S_1"; SELECT 2')
    check_equal((result.errors, result.tags, result.status),
                ([], ["SELECT 1", "DEALLOCATE", "SELECT 1"], "I"), "DEALLOCATE between two SELECTs")
    check_equal(sqlstates(a.execute("S_1")), ["26000"], "A's S_1 after DEALLOCATE")
    result = a.wire.query("SELECT 1; DEALLOCATE ALL; SELECT 2")
    check_equal((result.errors, result.tags, result.status),
                ([], ["SELECT 1", "DEALLOCATE ALL", "SELECT 1"], "I"),
                "DEALLOCATE ALL between two SELECTs")
    check_equal(sqlstates(a.execute("S_2")), ["26000"], "A's S_2 after DEALLOCATE ALL")
    result = a.wire.query("SELECT 1; DEALLOCATE S_nothing; SELECT 2")
    check_equal((sqlstates(result), result.tags), (["26000"], ["SELECT 1"]),
                "DEALLOCATE of a name A does not have")
    check_equal(result.errors[0].get("M"), 'prepared statement "s_nothing" does not exist',
                "its message")
    check_equal(sluice_statements_on_backend(b.wire), held, "shared statements on the backend after")
    check_equal(b.rows("S_1") + b.rows("S_2"), [("one",), ("two",)], "B's statements after")



@test("DISCARD ALL inside a multi-statement query or a transaction block fails with 25001, as on "
      "Postgres; the client's statements stay")
def discard_all_refused_in_transaction(t):
    s = transaction_pool(t)
    a = Protocol(s)
    a.prepare_ok("S_1", "SELECT 'one'")
    result = a.wire.query("SELECT 1; DISCARD ALL")
    check_equal((sqlstates(result), result.status), (["25001"], "I"),
                "DISCARD ALL in a multi-statement query")
    check_equal(a.wire.query_ok("BEGIN").status, "T", "status after BEGIN")
    result = a.wire.query("DISCARD ALL")
    check_equal((sqlstates(result), result.status), (["25001"], "E"),
                "DISCARD ALL inside a transaction block")
    check_equal(a.wire.query_ok("ROLLBACK").status, "I", "status after ROLLBACK")
    check_equal(a.rows("S_1"), [("one",)], "S_1 afterwards")
    result = a.wire.query("DISCARD ALL")
    check_equal((result.errors, result.tags, result.status), ([], ["DISCARD ALL"], "I"),
                "DISCARD ALL on its own")
    check_equal(sqlstates(a.execute("S_1")), ["26000"], "S_1 after DISCARD ALL")


if __name__ == "__main__":
    raise SystemExit(suite.run())
