"""CancelRequest: each client's own BackendKeyData, reaching exactly that client's backend."""

import os
import time

import harness
from harness import Background, check, check_equal

suite = harness.Suite()
test = suite.test


def one_value(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


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
