"""Minimal reproductions of divergences the differential test (test_pipeline_differential) found
between PostgreSQL and sluice under transaction pooling, each one in the raw protocol, in the
style of test_drivers_prepared. A test of a divergence not fixed yet carries todo= (automake counts
it as XFAIL, and as XPASS, an error, once the fix lands: then drop its todo)."""

import harness
from harness import check_equal

suite = harness.Suite()
test = suite.test


def transaction_pool(t, pool_size=1, **settings):
    all_settings = {"pool_mode": "transaction"}
    all_settings.update(settings)
    return t.sluice(settings=all_settings,
                    databases={"appdb": t.cluster.database_line(pool_size=pool_size)})


def kinds(result):
    return [kind for kind, _ in result.messages]


def sqlstates(result):
    return [error.get("C") for error in result.errors]


class Protocol:
    def __init__(self, endpoint):
        self.wire = endpoint.wire()
        self.wire.login()

    def sync(self, data):
        self.wire.send(data + harness.sync_message())
        return self.wire.read_until_ready()


def client_with_s1(t):
    """A raw client of a transaction pool of one backend, with statement s1 prepared."""
    a = Protocol(transaction_pool(t))
    check_equal(kinds(a.sync(harness.parse_message("SELECT 41 + $1::int", "s1"))), ["1", "Z"],
                "Parse s1")
    return a


@test("a simple DISCARD ALL after an Execute of COMMIT and then a Parse in the same unsynced "
      "pipeline runs, as in PostgreSQL: the Parse started a new transaction, in which nothing was "
      "executed (seed 525)")
def discard_all_after_commit_then_parse(t):
    a = client_with_s1(t)
    # PostgreSQL refuses DISCARD ALL after an Execute in the pipeline's transaction
    # (XACT_FLAGS_PIPELINING); an Execute of COMMIT ends that transaction, and the Parse after
    # it starts the next one, whose flags are clear.
    a.wire.send(harness.parse_message("SELECT 1") + harness.bind_message(()) +
                harness.execute_message() + harness.parse_message("COMMIT") +
                harness.bind_message(()) + harness.execute_message() +
                harness.parse_message("SELECT 2") + harness.query_message("DISCARD ALL") +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal(([kind for kind in kinds(result) if kind not in "NS"], sqlstates(result),
                 result.tags),
                (["1", "2", "D", "C", "1", "2", "C", "1", "C", "Z"], [],
                 ["SELECT 1", "COMMIT", "DISCARD ALL"]),
                "the pipeline, then DISCARD ALL")
    check_equal(kinds(a.wire.read_until_ready()), ["Z"], "the Sync")
    result = a.sync(harness.bind_message((1,), statement="s1"))
    check_equal((kinds(result), sqlstates(result)), (["E", "Z"], ["26000"]),
                "s1 after DISCARD ALL ran")


@test("a simple DISCARD ALL after an Execute of DISCARD ALL and then a Parse in the same unsynced "
      "pipeline runs, as in PostgreSQL, which commits such an Execute at once (seed 1458)")
def discard_all_after_extended_discard_then_parse(t):
    a = client_with_s1(t)
    # DISCARD ALL may not run in a transaction block, so PostgreSQL commits the transaction
    # of its Execute right away (XACT_FLAGS_NEEDIMMEDIATECOMMIT), as after an Execute of COMMIT:
    # the Parse starts the next transaction.
    a.wire.send(harness.parse_message("DISCARD ALL") + harness.bind_message(()) +
                harness.execute_message() + harness.parse_message("SELECT 2") +
                harness.query_message("DISCARD ALL") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal(([kind for kind in kinds(result) if kind not in "NS"], sqlstates(result),
                 result.tags),
                (["1", "2", "C", "1", "C", "Z"], [], ["DISCARD ALL", "DISCARD ALL"]),
                "the pipeline, then DISCARD ALL")
    check_equal(kinds(a.wire.read_until_ready()), ["Z"], "the Sync")
    # s1 went with the first DISCARD ALL: sluice forgets it as PostgreSQL does.
    result = a.sync(harness.bind_message((1,), statement="s1"))
    check_equal((kinds(result), sqlstates(result)), (["E", "Z"], ["26000"]), "s1 after both")


def simple_query(a, sql):
    a.wire.send(harness.query_message(sql))
    return a.wire.read_until_ready()


def pipeline_then_discard_all(a, extended):
    """Sends the extended messages (sql, portal) each parsed, bound and executed, then a Parse,
    then a simple DISCARD ALL and a Sync: (kinds without notices and parameter statuses,
    sqlstates, tags) of the replies up to the query's ReadyForQuery; the Sync's is read."""
    data = b""
    for sql, portal in extended:
        data += (harness.parse_message(sql) + harness.bind_message((), portal=portal) +
                 harness.execute_message(portal))
    a.wire.send(data + harness.parse_message("SELECT 2") + harness.query_message("DISCARD ALL") +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal(kinds(a.wire.read_until_ready()), ["Z"], "the Sync")
    return ([kind for kind in kinds(result) if kind not in "NS"], sqlstates(result), result.tags)


@test("a simple DISCARD ALL after an Execute of ROLLBACK of a block the client opened, then a "
      "Parse, runs, as in PostgreSQL")
def discard_all_after_rollback_of_block(t):
    a = Protocol(transaction_pool(t))
    check_equal(simple_query(a, "BEGIN").tags, ["BEGIN"], "BEGIN")
    check_equal(pipeline_then_discard_all(a, [("SELECT 1", "p"), ("ROLLBACK", "")]),
                (["1", "2", "D", "C", "1", "2", "C", "1", "C", "Z"], [],
                 ["SELECT 1", "ROLLBACK", "DISCARD ALL"]), "the pipeline, then DISCARD ALL")
    check_equal(a.sync(b"").messages, [("Z", b"I")], "no transaction left")


@test("a simple DISCARD ALL after an Execute of COMMIT AND CHAIN, or of BEGIN, is refused, as "
      "in PostgreSQL: each leaves a transaction block open")
def discard_all_after_block_opened(t):
    a = Protocol(transaction_pool(t))
    for opened_by, sql in (("BEGIN", "COMMIT AND CHAIN"), (None, "BEGIN")):
        if opened_by:
            check_equal(simple_query(a, opened_by).tags, [opened_by], opened_by)
        check_equal(pipeline_then_discard_all(a, [(sql, "")]),
                    (["1", "2", "C", "1", "E", "Z"], ["25001"], [sql.split()[0]]),
                    f"{sql}, then DISCARD ALL")
        check_equal(simple_query(a, "ROLLBACK").tags, ["ROLLBACK"], "ROLLBACK")


@test("a simple DISCARD ALL after an Execute of the empty query runs, as in PostgreSQL, where "
      "such an Execute runs nothing; after one of a SELECT as well it is refused")
def discard_all_after_empty_query(t):
    a = Protocol(transaction_pool(t))
    check_equal(pipeline_then_discard_all(a, [("", "")]),
                (["1", "2", "I", "1", "C", "Z"], [], ["DISCARD ALL"]),
                "an empty query, then DISCARD ALL")
    check_equal(pipeline_then_discard_all(a, [("", ""), ("SELECT 1", "p"), ("", "")]),
                (["1", "2", "I", "1", "2", "D", "C", "1", "2", "I", "1", "E", "Z"], ["25001"],
                 ["SELECT 1"]),
                "a SELECT between empty queries, then DISCARD ALL")


@test("a simple DISCARD ALL after an Execute of the empty query, inside a block the client opened "
      "before: refused, as in PostgreSQL (the empty query changes nothing; seed 1313)")
def discard_all_after_empty_query_in_block(t):
    a = Protocol(transaction_pool(t))
    check_equal(simple_query(a, "BEGIN").tags, ["BEGIN"], "BEGIN")
    a.wire.send(harness.parse_message("") + harness.bind_message(()) + harness.execute_message() +
                harness.query_message("DISCARD ALL") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result), result.messages[-1]),
                (["1", "2", "I", "E", "Z"], ["25001"], ("Z", b"E")), "the batch, then DISCARD ALL")
    check_equal(kinds(a.wire.read_until_ready()), ["Z"], "the Sync")
    check_equal(simple_query(a, "ROLLBACK").tags, ["ROLLBACK"], "ROLLBACK")


@test("a DEALLOCATE that a failing query never reached, then DEALLOCATE s1 or DEALLOCATE ALL "
      "sent behind it before its reply: the later one drops s1, as in PostgreSQL (seeds 5, 50, "
      "62, 66 and long seed 6 of the variant that pipelines simple queries)")
def deallocate_behind_failed_deallocate(t):
    a = Protocol(transaction_pool(t))
    # DEALLOCATE s1 behind the failing one: PostgreSQL still has s1 and drops it.
    check_equal(kinds(a.sync(harness.parse_message("SELECT 41 + $1::int", "s1"))), ["1", "Z"],
                "Parse s1")
    a.wire.send(harness.query_message("SELECT 1 / 0; DEALLOCATE s1") +
                harness.query_message("DEALLOCATE s1"))
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result)), (["E", "Z"], ["22012"]),
                "the query that fails before its DEALLOCATE")
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result), result.tags), (["C", "Z"], [], ["DEALLOCATE"]),
                "DEALLOCATE s1 behind it")
    # DEALLOCATE ALL behind the failing one: s1 goes with it, a new Parse of s1 succeeds.
    check_equal(kinds(a.sync(harness.parse_message("SELECT 41 + $1::int", "s1"))), ["1", "Z"],
                "Parse s1 again")
    a.wire.send(harness.query_message("SELECT 1 / 0; DEALLOCATE s1") +
                harness.query_message("DEALLOCATE ALL"))
    check_equal(sqlstates(a.wire.read_until_ready()), ["22012"], "the failing query")
    check_equal(a.wire.read_until_ready().tags, ["DEALLOCATE ALL"], "DEALLOCATE ALL behind it")
    result = a.sync(harness.parse_message("SELECT 2", "s1"))
    check_equal((kinds(result), sqlstates(result)), (["1", "Z"], []),
                "a Parse of s1, which DEALLOCATE ALL dropped")



def close_statement(name):
    return harness.message("C", b"S" + name.encode() + b"\0")


@test("a Close of s1 skipped after an error, then a Sync and a Bind of s1 sent behind it before "
      "any reply: the Bind finds s1, as in PostgreSQL; after a Close that ran, it does not")
def bind_behind_skipped_close(t):
    a = client_with_s1(t)
    bind_s1 = (harness.bind_message((1,), statement="s1") + harness.execute_message() +
               harness.sync_message())
    a.wire.send(harness.parse_message("SELECT 1 / 0") + harness.bind_message(()) +
                harness.execute_message() + close_statement("s1") + harness.sync_message() +
                bind_s1)
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result)), (["1", "E", "Z"], ["22012"]),
                "the Bind that fails (constants are folded), and the Close skipped after it")
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result), result.rows), (["2", "D", "C", "Z"], [],
                                                                   [("42",)]),
                "s1 is still there")
    a.wire.send(close_statement("s1") + harness.sync_message() + bind_s1)
    check_equal(kinds(a.wire.read_until_ready()), ["3", "Z"], "the Close")
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result)), (["E", "Z"], ["26000"]), "s1 is gone")


@test("a Close of s1, a Bind that fails, then a query and a Sync in the same write: the Sync "
      "is not held for the Close's answer, which only the Sync brings (the backend skips the "
      "query after the error; differential seed 152)")
def sync_behind_skipped_query(t):
    a = client_with_s1(t)
    a.wire.send(close_statement("s1") + harness.bind_message((), statement="nosuch") +
                harness.query_message("DEALLOCATE ALL") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result)), (["3", "E", "Z"], ["26000"]),
                "the Close, the Bind's error, the Sync")
    result = a.sync(harness.bind_message((1,), statement="s1"))
    check_equal((kinds(result), sqlstates(result)), (["E", "Z"], ["26000"]), "s1 was closed")


@test("a DEALLOCATE and a COPY FROM STDIN in one query, its data in the same write: the data "
      "is not held for the DEALLOCATE's answer, the queries behind are")
def copy_behind_deallocate(t):
    a = client_with_s1(t)
    check_equal(simple_query(a, "CREATE TABLE copied_behind (n int)").tags, ["CREATE TABLE"],
                "a table")
    # The COPY data belongs to the query under way: held behind the DEALLOCATE's answer, it
    # would never come, nor would the answer.
    a.wire.send(harness.query_message("DEALLOCATE s1; COPY copied_behind FROM STDIN") +
                harness.message("d", b"5\n") + harness.message("c") +
                harness.query_message("DEALLOCATE s1") +
                harness.query_message("SELECT n FROM copied_behind"))
    result = a.wire.read_until_ready()
    check_equal((sqlstates(result), result.tags), ([], ["DEALLOCATE", "COPY 1"]),
                "DEALLOCATE and COPY FROM STDIN in one query")
    result = a.wire.read_until_ready()
    check_equal((sqlstates(result), result.tags), (["26000"], []), "s1 was gone")
    result = a.wire.read_until_ready()
    check_equal((sqlstates(result), result.rows), ([], [("5",)]), "the query behind")
    check_equal(simple_query(a, "DROP TABLE copied_behind").tags, ["DROP TABLE"], "dropped")



def extended(sql):
    return harness.parse_message(sql) + harness.bind_message(()) + harness.execute_message()


def application_name(a):
    return simple_query(a, "SHOW application_name").rows[0][0]


@test("a failed transaction ended by an Execute of COMMIT with BEGIN behind it in the same batch: "
      "the client's SET in the failed transaction is gone, and the client is not pinned, as it "
      "was when sluice took the recovery for a ROLLBACK TO SAVEPOINT (differential seed 548)")
def failed_transaction_ended_then_begin(t):
    s = transaction_pool(t, query_wait_timeout=3)
    a = Protocol(s)
    before = application_name(a)
    for sql in ("BEGIN", "SET application_name = 'in_failed'", "SELECT 1 / 0"):
        simple_query(a, sql)
    a.wire.send(extended("COMMIT") + extended("BEGIN") + harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((kinds(result), sqlstates(result), result.tags, result.messages[-1]),
                (["1", "2", "C", "1", "2", "C", "Z"], [], ["ROLLBACK", "BEGIN"], ("Z", b"T")),
                "COMMIT rolls the failed transaction back, BEGIN opens the next")
    check_equal(application_name(a), before, "the SET of the failed transaction is undone")
    check_equal(simple_query(a, "ROLLBACK").tags, ["ROLLBACK"], "ROLLBACK")
    b = Protocol(s)
    result = simple_query(b, "SELECT 2")
    check_equal((sqlstates(result), result.rows), ([], [("2",)]),
                "another client gets the only backend: the first is not pinned")


@test("a SET run after an Execute of COMMIT ended a failed transaction, in the same batch, stays "
      "the client's own: the next client of the backend does not get it")
def set_after_failed_transaction_ended(t):
    s = transaction_pool(t)
    a = Protocol(s)
    b = Protocol(s)
    before = application_name(b)
    for sql in ("BEGIN", "SET application_name = 'in_failed'", "SELECT 1 / 0"):
        simple_query(a, sql)
    a.wire.send(extended("COMMIT") + extended("SET application_name = 'after_end'") +
                harness.sync_message())
    result = a.wire.read_until_ready()
    check_equal((sqlstates(result), result.tags, result.messages[-1]),
                ([], ["ROLLBACK", "SET"], ("Z", b"I")), "COMMIT, then the SET")
    check_equal(application_name(a), "after_end", "the client keeps its SET")
    check_equal(application_name(b), before, "the other client of the backend does not")
    check_equal(application_name(a), "after_end", "nor does the first lose it")


if __name__ == "__main__":
    raise SystemExit(suite.run())
