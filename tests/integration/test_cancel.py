"""CancelRequest: each client's own BackendKeyData, reaching exactly that client's backend."""

import os
import re
import time

import harness
from harness import Background, check, check_equal, one_value, wait_for

suite = harness.Suite()
test = suite.test


def cancel_test(t, pool_mode, unix):
    s = t.sluice(settings={"pool_mode": pool_mode, "default_pool_size": 3})
    victim, bystander = s.connect(unix=unix), s.connect(unix=unix)
    long_query = Background(one_value, victim, "SELECT pg_sleep(30)")
    other_query = Background(one_value, bystander, "SELECT pg_sleep(2)::text || 'done'")
    time.sleep(0.7)
    check(not long_query.done(), "pg_sleep(30) ended before it was cancelled")
    cancelled_at = time.monotonic()
    victim.cancel()
    error = long_query.error(10)
    elapsed = time.monotonic() - cancelled_at
    check(error is not None, "pg_sleep(30) finished without error after cancel")
    check_equal(getattr(error, "pgcode", None), "57014", f"SQLSTATE of the cancelled query ({error})")
    check(elapsed < 5, f"cancel took {elapsed:.1f}s to take effect")
    check_equal(other_query.result(10), "done", "the other client's query")
    check_equal(one_value(victim, "SELECT 'after cancel'"), "after cancel",
                "the cancelled client's next query")


@test("transaction mode: cancel over TCP stops that client's query, not another's")
def cancel_transaction_tcp(t):
    cancel_test(t, "transaction", unix=False)


@test("transaction mode: cancel over the unix socket stops that client's query")
def cancel_transaction_unix(t):
    cancel_test(t, "transaction", unix=True)


@test("session mode: cancel stops that client's query, not another's")
def cancel_session(t):
    cancel_test(t, "session", unix=False)


@test("transaction mode: an idle client's cancel does not touch the query now on its old backend",
      sluice_only=True)
def cancel_from_idle_client(t):
    s = t.sluice(settings={"pool_mode": "transaction"},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    idle, busy = s.connect(), s.connect()
    idle_pid = one_value(idle, "SELECT pg_backend_pid()")
    running = Background(one_value, busy, "SELECT pg_backend_pid() || ' ' || pg_sleep(2)")
    time.sleep(0.5)
    idle.cancel()
    result = running.result(10)
    check(result.startswith(str(idle_pid)), f"busy client ran on another backend ({result})")


def query_running(t, sql):
    return t.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s",
                         (sql,))[0][0] > 0


def cancel_burst(t, settings):
    # One backend: the moment A's query is cancelled the backend goes to B, while cancel requests
    # for A may still be on their way to PostgreSQL.
    s = t.sluice(settings=dict({"pool_mode": "transaction"}, **settings),
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    long_query = "SELECT pg_sleep(5)"
    for round_number in range(1, 6):
        a, b = s.wire(), s.wire()
        a.login()
        b.login()
        pid, key = a.backend_key
        a.send(harness.query_message(long_query))
        wait_for(lambda: query_running(t, long_query), 10, what="A's pg_sleep(5) running")
        b.send(harness.query_message("SELECT 'B done' FROM pg_sleep(1)"))
        time.sleep(0.2)  # let B queue behind A
        cancellers = [s.wire() for _ in range(30)]
        for canceller in cancellers:
            canceller.send(harness.cancel_packet(pid, key))
        for canceller in cancellers:
            canceller.read_until_closed(10)
            canceller.close()
        a.settimeout(15)
        b.settimeout(15)
        a_result, b_result = a.read_until_ready(), b.read_until_ready()
        check_equal([e.get("C") for e in a_result.errors], ["57014"],
                    f"round {round_number}: errors of A's cancelled query")
        check_equal([e.get("M") for e in b_result.errors], [],
                    f"round {round_number}: errors of B's query, which nobody cancelled")
        check_equal(b_result.rows, [("B done",)], f"round {round_number}: B's result")
        check_equal(a.query_ok("SELECT 'A again'").rows, [("A again",)],
                    f"round {round_number}: A's next query")
        a.close()
        b.close()


@test("transaction mode: a burst of cancels for one client never cancels the next client's query",
      timeout=120, sluice_only=True)
def cancel_burst_spares_next_client(t):
    cancel_burst(t, {})


@test("4 workers: a burst of cancels, accepted by any worker, never cancels the next client's query",
      timeout=120, sluice_only=True)
def cancel_burst_spares_next_client_workers(t):
    cancel_burst(t, {"workers": 4})


WORKERS = 4
PLACE_MASK = (1 << 22) - 1  # peering off: the pid's bits 21..0 are (slot + 1) * workers + worker
PASSED_ON = re.compile(r"cancel request passed from worker (\d+) to worker (\d+)")


def key_worker(pid):
    """The worker whose client a cancel key names (the encoding of src/cancel.c)."""
    return (pid & PLACE_MASK) % WORKERS


@test("4 workers: a cancel on a fresh TCP connection stops its client's query, whichever worker "
      "the kernel gives it to", timeout=240, sluice_only=True)
def cancel_across_workers(t):
    s = t.sluice(settings={"workers": WORKERS, "verbose": 1, "default_pool_size": 10})
    rounds, passed_on, client_workers = 0, [], set()
    # Each libpq cancel comes from a new ephemeral port, so SO_REUSEPORT spreads them over the
    # workers: go on until at least 8 queries were cancelled and one cancel crossed workers.
    while rounds < 8 or (not passed_on and rounds < 24):
        rounds += 1
        victim, bystander = s.connect(), s.connect()
        owner = key_worker(victim.get_backend_pid())
        client_workers.add(owner)
        sql = f"SELECT pg_sleep(30) /* round {rounds} */"
        long_query = Background(one_value, victim, sql)
        other_query = Background(one_value, bystander, "SELECT pg_sleep(1)::text || 'done'")
        wait_for(lambda: query_running(t, sql) or long_query.done(), 10, what=f"round {rounds}: query running")
        check(not long_query.done(), f"round {rounds}: pg_sleep(30) ended before it was cancelled")
        log_before = len(PASSED_ON.findall(s.log_text()))
        with harness.cpu_of_attempt(rounds):   # with steer_by_cpu, the CPU picks the worker
            victim.cancel()
        check(long_query.wait(10), f"round {rounds}: pg_sleep(30) still running 10 s after its cancel")
        error = long_query.error(0)
        check(error is not None, f"round {rounds}: pg_sleep(30) was not cancelled")
        check_equal(getattr(error, "pgcode", None), "57014", f"round {rounds}: SQLSTATE ({error})")
        check_equal(other_query.result(10), "done", f"round {rounds}: the other client's query")
        check_equal(one_value(victim, "SELECT 'after cancel'"), "after cancel",
                    f"round {rounds}: the cancelled client's next query")
        crossings = PASSED_ON.findall(s.log_text())[log_before:]
        for source, target in crossings:
            check_equal(int(target), owner, f"round {rounds}: worker the cancel was passed to")
            passed_on.append((rounds, int(source), int(target)))
        victim.close()
        bystander.close()
    t.note(f"clients on workers {sorted(client_workers)}; cancels passed between workers: {passed_on}")
    check(passed_on, f"no cancel of {rounds} landed on another worker than its client's: the test "
          "proved nothing")


@test("each client gets its own BackendKeyData, even when sharing one backend", sluice_only=True)
def distinct_backend_keys(t):
    s = t.sluice(settings={"pool_mode": "transaction"},
                 databases={"appdb": t.cluster.database_line(pool_size=1)})
    keys = []
    for _ in range(5):
        wire = s.wire()
        wire.login()
        wire.query_ok("SELECT 1")
        check(wire.backend_key is not None, "no BackendKeyData after login")
        keys.append(wire.backend_key)
    check_equal(len(set(keys)), len(keys), f"distinct BackendKeyData among {keys}")


@test("a CancelRequest with an unknown key cancels nothing and is closed")
def cancel_unknown_key(t):
    s = t.sluice()
    busy = s.connect()
    running = Background(one_value, busy, "SELECT pg_sleep(1.5)::text || 'done'")
    time.sleep(0.3)
    bogus = s.wire()
    bogus.send(harness.cancel_packet(int.from_bytes(os.urandom(3), "big") + 1, os.urandom(4)))
    messages = bogus.read_until_closed(5)
    check_equal(messages, [], "reply to a CancelRequest")
    check_equal(running.result(10), "done", "query of the client nobody meant to cancel")


@test("a CancelRequest carrying a real client's key stops that client's query (raw socket)")
def cancel_raw_request(t):
    s = t.sluice()
    wire = s.wire()
    wire.login()
    pid, key = wire.backend_key
    wire.send(harness.query_message("SELECT pg_sleep(30)"))
    time.sleep(0.5)
    canceller = s.wire()
    canceller.send(harness.cancel_packet(pid, key))
    canceller.read_until_closed(5)
    wire.settimeout(10)
    result = wire.read_until_ready()
    check(result.errors, "pg_sleep(30) was not cancelled")
    check_equal(result.errors[0].get("C"), "57014", "SQLSTATE of the cancelled query")
    check_equal(wire.query_ok("SELECT 'alive'").rows, [("alive",)], "query after cancel")


if __name__ == "__main__":
    raise SystemExit(suite.run())
