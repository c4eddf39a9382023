"""pgbench through sluice: connection storms and TPC-B with no failed transaction."""

import harness
from harness import check, check_equal

suite = harness.Suite()
test = suite.test

BENCH_DB = "benchdb"


def bench_database(t):
    """benchdb, owned by app and initialized once per cluster with pgbench -i directly."""
    cluster = t.cluster
    cluster.pgbench_database(BENCH_DB, scale=2)
    return cluster.database_line(dbname=BENCH_DB)


def bench(t, s, args, timeout=120):
    # -n: no VACUUM/TRUNCATE of pgbench_history, so the history adds up across runs.
    status, output, summary = harness.run_pgbench(["-n"] + list(args) + [BENCH_DB],
                                                  s.env(dbname=BENCH_DB), timeout)
    t.note("pgbench " + " ".join(args))
    t.note("\n".join(output.splitlines()[-14:]))
    check_equal(status, 0, "pgbench exit status")
    check("processed" in summary, "pgbench printed no transaction count")
    check(summary["processed"] > 0, "no transactions processed")
    check_equal(summary.get("failed", 0), 0, "failed transactions")
    return summary


@test("pgbench -S -C -c 10 (a new connection per transaction), transaction mode", timeout=120)
def select_only_reconnect(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 5},
                 databases={BENCH_DB: bench_database(t)})
    summary = bench(t, s, ["-S", "-C", "-c", "10", "-j", "2", "-T", "4"])
    t.note(f"tps: {summary.get('tps')}")


@test("pgbench -S -C over the unix socket, session mode", timeout=120)
def select_only_reconnect_unix_session(t):
    s = t.sluice(settings={"pool_mode": "session", "default_pool_size": 10},
                 databases={BENCH_DB: bench_database(t)})
    status, output, summary = harness.run_pgbench(
        ["-n", "-S", "-C", "-c", "10", "-j", "2", "-T", "3", BENCH_DB],
        s.env(dbname=BENCH_DB, unix=True), 120)
    t.note(output[-1200:])
    check_equal(status, 0, "pgbench exit status")
    check(summary.get("processed", 0) > 0, "no transactions processed")
    check_equal(summary.get("failed", 0), 0, "failed transactions")


@test("pgbench TPC-B, -c 10 over pool_size=5, transaction mode", timeout=120)
def tpcb_transaction_mode(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 5},
                 databases={BENCH_DB: bench_database(t)})
    bench(t, s, ["-c", "10", "-j", "2", "-T", "5"])
    history = t.cluster.sql("SELECT count(*) FROM pgbench_history", dbname=BENCH_DB)[0][0]
    check(history > 0, "pgbench_history is empty after TPC-B")


@test("pgbench TPC-B with -M extended, transaction mode", timeout=120)
def tpcb_extended(t):
    s = t.sluice(settings={"pool_mode": "transaction", "default_pool_size": 5},
                 databases={BENCH_DB: bench_database(t)})
    bench(t, s, ["-M", "extended", "-c", "8", "-j", "2", "-T", "3"])


@test("pgbench TPC-B, session mode", timeout=120)
def tpcb_session_mode(t):
    s = t.sluice(settings={"pool_mode": "session", "default_pool_size": 10},
                 databases={BENCH_DB: bench_database(t)})
    bench(t, s, ["-c", "8", "-j", "2", "-T", "3"])


@test("pgbench balances add up after TPC-B through sluice", timeout=120)
def tpcb_consistent(t):
    bench_database(t)
    rows = t.cluster.sql("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                         "(SELECT sum(bbalance) FROM pgbench_branches), "
                         "(SELECT sum(tbalance) FROM pgbench_tellers), "
                         "(SELECT coalesce(sum(delta), 0) FROM pgbench_history)", dbname=BENCH_DB)
    accounts, branches, tellers, history = rows[0]
    check(history != 0, "no TPC-B transaction left a trace in pgbench_history")
    check_equal((accounts, branches, tellers), (history, history, history),
                "sums of account, branch and teller balances vs the history")


if __name__ == "__main__":
    raise SystemExit(suite.run())
