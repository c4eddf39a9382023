"""Output batched through io_uring, and writev where io_uring is off or refused: same bytes, same order."""

import hashlib
import os
import threading
import time

import harness
from harness import check, check_equal, one_value, wait_for

suite = harness.Suite()
test = suite.test

BATCHED = "writes are batched through io_uring"
REFUSED = "io_uring is not available (Operation not permitted)"
ROWS = 200000  # about 8 MB of DataRows: many batches, many pieces per send


def big_result_matches(conn):
    """The rows of a large result arrive whole and in order: checked against Postgres's own digest."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT i, md5(i::text) FROM generate_series(1, {ROWS}) i ORDER BY i")
        digest = hashlib.md5()
        count = 0
        for i, text in cur:
            check_equal(i, count + 1, "row order")
            digest.update(text.encode())
            count += 1
    check_equal(count, ROWS, "rows received")
    expected = one_value(conn, f"SELECT md5(string_agg(md5(i::text), '' ORDER BY i)) "
                               f"FROM generate_series(1, {ROWS}) i")
    check_equal(digest.hexdigest(), expected, "digest of every row")


def client_tls(t):
    """[sluice] settings for TLS towards clients, with the suite's test certificate."""
    certs = t.certificates()
    return {"client_tls_sslmode": "require",
            "client_tls_key_file": os.path.join(certs, "server.key"),
            "client_tls_cert_file": os.path.join(certs, "server.crt")}


def clients_get_their_own_answers(s, clients=20, queries=200, **connect_args):
    """Many clients at once, each checking that every answer is the one to its own query."""
    errors = []

    def client(number):
        try:
            conn = s.connect(**connect_args)
            for q in range(queries):
                tag = f"{number}-{q}"
                got = one_value(conn, f"SELECT '{tag}'::text || repeat('.', {q % 50})")
                if got != tag + "." * (q % 50):
                    errors.append(f"client {number} sent {tag} and got {got!r}")
                    return
            conn.close()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(f"client {number}: {error}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    check_equal(errors, [], "answers that were not the client's own")


@test("io_uring on (the default): the log says so, and a large result arrives whole and in order")
def batched_large_result(t):
    s = t.sluice()
    wait_for(lambda: BATCHED in s.log_text(), 5, what="the io_uring line in the log")
    big_result_matches(s.connect())


@test("io_uring on: 20 clients over a pool of 5, each gets only its own answers")
def batched_concurrent_clients(t):
    s = t.sluice()
    clients_get_their_own_answers(s)


@test("over TLS, records queued with the batch: a large result arrives whole and in order, "
      "and 20 clients each get only their own answers")
def batched_tls(t):
    s = t.sluice(settings=client_tls(t))
    wait_for(lambda: BATCHED in s.log_text(), 5, what="the io_uring line in the log")
    conn = s.connect(sslmode="require")
    check(conn.info.ssl_in_use, "the connection does not use TLS")
    big_result_matches(conn)
    clients_get_their_own_answers(s, sslmode="require")


@test("over TLS with io_uring = off: the same large result and concurrent load through writev")
def writev_tls(t):
    settings = client_tls(t)
    settings["io_uring"] = "off"
    s = t.sluice(settings=settings)
    big_result_matches(s.connect(sslmode="require"))
    clients_get_their_own_answers(s, clients=10, queries=100, sslmode="require")


@test("io_uring = off: writev carries the same large result and the same concurrent load")
def writev_when_off(t):
    s = t.sluice(settings={"io_uring": "off"})
    big_result_matches(s.connect())
    clients_get_their_own_answers(s, clients=10, queries=100)
    check(BATCHED not in s.log_text(), "io_uring = off, yet the log says writes are batched")


@test("io_uring refused by seccomp (as in a container): sluice says why and serves with writev")
def refused_falls_back_to_writev(t):
    s = t.sluice(start=False)
    s.start(refuse_io_uring=True)
    wait_for(lambda: REFUSED in s.log_text(), 5, what="the refusal in the log")
    check(BATCHED not in s.log_text(), "the log claims batching although io_uring was refused")
    big_result_matches(s.connect())
    clients_get_their_own_answers(s, clients=10, queries=100)


@test("reload turns io_uring off and on again under a connected client, which goes on working")
def reload_switches_io_uring(t):
    s = t.sluice()
    conn = s.connect()
    check_equal(one_value(conn, "SELECT 1"), 1, "before the reloads")
    s.settings["io_uring"] = "off"
    s.write_config()
    s.reload()
    wait_for(lambda: "io_uring = off: writing each connection with writev" in s.log_text(), 5,
             what="the switch to writev in the log")
    check_equal(one_value(conn, "SELECT 2"), 2, "with writev")
    s.settings["io_uring"] = "on"
    s.write_config()
    s.reload()
    wait_for(lambda: s.log_text().count(BATCHED) >= 2, 5, what="the switch back in the log")
    check_equal(one_value(conn, "SELECT 3"), 3, "batched again")
    big_result_matches(conn)


@test("a client that stops reading a large result does not hold up the batch for the others")
def stalled_reader_does_not_block_others(t):
    s = t.sluice(databases={"appdb": t.cluster.database_line(pool_size=2)})
    stalled = s.wire()
    stalled.login()
    stalled.send(harness.query_message(
        f"SELECT repeat('x', 1000) FROM generate_series(1, {ROWS // 20})"))  # about 20 MB
    time.sleep(0.5)  # its socket buffers fill up; sluice must wait for writability
    other = s.connect()
    started = time.monotonic()
    for i in range(50):
        check_equal(one_value(other, f"SELECT {i}"), i, "another client's answer")
    t.note(f"50 queries of another client while one stalls: {time.monotonic() - started:.3f}s")
    stalled.settimeout(30)
    rows = 0
    while True:
        kind, payload = stalled.read_message()
        if kind == "D":
            rows += 1
        elif kind == "Z":
            break
        elif kind == "E":
            raise harness.TestFailure(f"error for the stalled client: {payload!r}")
    check_equal(rows, ROWS // 20, "rows the stalled client finally read")


if __name__ == "__main__":
    raise SystemExit(suite.run())
