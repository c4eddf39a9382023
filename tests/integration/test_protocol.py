"""Protocol robustness with raw sockets: whatever a client sends, it gets an ErrorResponse where
the protocol allows one, its connection is closed, and sluice goes on serving everyone else."""

import struct
import time

import harness
from harness import (PROTOCOL_3_0, PROTOCOL_3_2, check, check_equal, error_messages, message,
                     startup_packet)

suite = harness.Suite()
test = suite.test


def still_serving(s):
    """sluice is alive and a well-behaved client gets an answer."""
    if hasattr(s, "alive"):
        check(s.alive(), "sluice exited")
    conn = s.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT 'still serving'")
        check_equal(cur.fetchone()[0], "still serving", "a normal client's query")
    conn.close()


def closed_with_optional_error(wire, timeout=10, sqlstates=None):
    """The connection closes; anything sent before must be ErrorResponses (with one of sqlstates)."""
    messages = wire.read_until_closed(timeout)
    kinds = [kind for kind, _ in messages]
    check(all(kind in ("E", "N") for kind in kinds), f"unexpected messages before close: {kinds}")
    if sqlstates:
        for fields in error_messages(messages):
            check(fields.get("C") in sqlstates, f"SQLSTATE {fields.get('C')}: {fields}")
    return messages


def closed_with_error(wire, sqlstates, timeout=10):
    messages = closed_with_optional_error(wire, timeout, sqlstates)
    check(error_messages(messages), "connection closed without an ErrorResponse")
    return error_messages(messages)[0]


# ---- the first packet ----------------------------------------------------------------------------

@test("garbage as the first packet: closed, sluice keeps serving")
def garbage_first_packet(t):
    s = t.sluice()
    wire = s.wire()
    wire.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    closed_with_optional_error(wire)
    still_serving(s)


@test("an unknown protocol version gets an ErrorResponse and is closed")
def unknown_protocol_version(t):
    s = t.sluice()
    wire = s.wire()
    wire.send(startup_packet({"user": "app", "database": "appdb"}, version=(9 << 16) | 9))
    closed_with_error(wire, ("0A000", "08P01"))
    still_serving(s)


@test("protocol 2.0 is refused with an error and a close")
def protocol_two(t):
    s = t.sluice()
    wire = s.wire()
    wire.send(startup_packet({"user": "app", "database": "appdb"}, version=2 << 16))
    # The reply may be a 3.0 ErrorResponse or, as PostgreSQL does, a 2.0 one ('E' then text):
    # both start with 'E'.
    received = b""
    wire.settimeout(10)
    while True:
        chunk = wire.sock.recv(4096)
        if not chunk:
            break
        received += chunk
    check(received[:1] == b"E", f"reply to a 2.0 startup: {received[:40]!r}")
    still_serving(s)


@test("a startup packet longer than 10000 bytes is refused before it is read")
def oversized_startup(t):
    s = t.sluice()
    wire = s.wire()
    # Announce 20000 bytes, send only the start: a server that waits for the rest is wrong.
    wire.send(struct.pack("!II", 20000, PROTOCOL_3_0) + b"user\0app\0" + b"x" * 100)
    closed_with_optional_error(wire, timeout=5, sqlstates=("08P01",))
    still_serving(s)


@test("a startup packet with a length below 8 is refused")
def undersized_startup(t):
    s = t.sluice()
    wire = s.wire()
    wire.send(struct.pack("!I", 3) + b"\0\0\0\0")
    closed_with_optional_error(wire, timeout=5, sqlstates=("08P01",))
    still_serving(s)


@test("a startup packet whose parameters are not terminated is refused")
def malformed_startup_parameters(t):
    s = t.sluice()
    wire = s.wire()
    body = struct.pack("!I", PROTOCOL_3_0) + b"user\0app\0database"
    wire.send(struct.pack("!I", len(body) + 4) + body)
    closed_with_optional_error(wire, timeout=5, sqlstates=("08P01",))
    still_serving(s)


@test("a truncated startup packet followed by a disconnect leaves sluice serving")
def truncated_startup(t):
    s = t.sluice()
    for cut in (2, 6, 15):
        wire = s.wire()
        wire.send(startup_packet({"user": "app", "database": "appdb"})[:cut])
        wire.abort()
    still_serving(s)


@test("SSLRequest gets 'N' and a plain startup on the same connection works")
def ssl_request_then_startup(t):
    s = t.sluice()
    wire = s.wire()
    wire.send(harness.request_packet(harness.SSL_REQUEST_CODE))
    check_equal(wire.read_byte(), b"N", "answer to SSLRequest")
    status = wire.login()
    check_equal(status, "I", "ReadyForQuery status after login")
    check_equal(wire.query_ok("SELECT 'plain after N'").rows, [("plain after N",)], "query")


@test("libpq with sslmode=prefer falls back to a plain connection")
def libpq_sslmode_prefer(t):
    s = t.sluice()
    conn = s.connect(sslmode="prefer")
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        check_equal(cur.fetchone()[0], 1, "query")


@test("GSSENCRequest gets 'N' and a plain startup on the same connection works",
      sluice_only=True)
def gssenc_request_then_startup(t):
    s = t.sluice()
    wire = s.wire()
    wire.send(harness.request_packet(harness.GSSENC_REQUEST_CODE))
    check_equal(wire.read_byte(), b"N", "answer to GSSENCRequest")
    wire.login()
    check_equal(wire.query_ok("SELECT 2").rows, [("2",)], "query")


@test("protocol 3.2 gets NegotiateProtocolVersion (or is served) and login completes")
def protocol_three_two(t):
    s = t.sluice()
    wire = s.wire()
    status = wire.login(version=PROTOCOL_3_2)
    check_equal(status, "I", "ReadyForQuery status")
    if wire.negotiate is not None:
        # PostgreSQL sends the whole version number (196608 for 3.0), the spec says the minor.
        check(wire.negotiate in (0, 2, PROTOCOL_3_0, PROTOCOL_3_2),
              f"NegotiateProtocolVersion offered version {wire.negotiate}")
    check(wire.backend_key is not None, "no BackendKeyData")
    check_equal(wire.query_ok("SELECT 3").rows, [("3",)], "query")


@test("a direct TLS ClientHello (first byte 0x16) is closed without harm")
def direct_tls_hello(t):
    s = t.sluice()
    wire = s.wire()
    hello = bytes([0x16, 0x03, 0x01, 0x00, 0x40]) + bytes(0x40)
    wire.send(hello)
    wire.read_until_closed(10)
    still_serving(s)


@test("a client that never finishes login is closed after client_login_timeout", sluice_only=True)
def slowloris(t):
    s = t.sluice(settings={"client_login_timeout": 2})
    silent = s.wire()
    partial = s.wire()
    partial.send(startup_packet({"user": "app", "database": "appdb"})[:10])
    unanswered = s.wire()
    unanswered.send_startup("app")
    kind, _ = unanswered.read_message()
    check_equal(kind, "R", "first reply to a complete startup packet")
    started = time.monotonic()
    still_serving(s)
    still_open = [name for name, wire in (("silent", silent), ("partial startup", partial),
                                          ("unanswered auth", unanswered))
                  if not wire.is_closed_within(max(0.1, started + 6 - time.monotonic()))]
    check(not still_open, f"still connected 6s into a 2s client_login_timeout: {still_open}")
    check(time.monotonic() - started >= 1.0, "closed well before client_login_timeout")
    still_serving(s)


# ---- after login ---------------------------------------------------------------------------------

@test("after login, the client sees the usual ParameterStatus values and BackendKeyData")
def startup_parameters(t):
    s = t.sluice()
    wire = s.wire()
    wire.login()
    for name in ("server_version", "client_encoding", "DateStyle", "TimeZone",
                 "integer_datetimes", "standard_conforming_strings", "server_encoding"):
        check(name in wire.parameters, f"no ParameterStatus for {name}: {sorted(wire.parameters)}")
    check(wire.parameters["server_version"].startswith("15"),
          f"server_version {wire.parameters['server_version']!r}")
    check(wire.backend_key is not None, "no BackendKeyData")


@test("a message length of 0xFFFFFFFF after login gets 08P01 and a close", sluice_only=True)
def huge_length_after_login(t):
    s = t.sluice()
    wire = s.wire()
    wire.login()
    wire.send(b"Q" + struct.pack("!I", 0xFFFFFFFF) + b"SELECT 1")
    closed_with_error(wire, ("08P01", "54000"))
    still_serving(s)


@test("a message over max_packet_size gets an ErrorResponse and a close", sluice_only=True)
def over_max_packet_size(t):
    s = t.sluice(settings={"max_packet_size": 65536})
    wire = s.wire()
    wire.login()
    wire.send(b"Q" + struct.pack("!I", 1 << 30) + b"SELECT 1")
    closed_with_error(wire, ("08P01", "54000"))
    still_serving(s)


@test("a message length below 4 after login gets 08P01 and a close", sluice_only=True)
def short_length_after_login(t):
    s = t.sluice()
    wire = s.wire()
    wire.login()
    wire.send(b"Q" + struct.pack("!I", 2) + b"xx")
    closed_with_error(wire, ("08P01",))
    still_serving(s)


@test("an unknown message type after login gets 08P01 and a close")
def unknown_message_type(t):
    s = t.sluice(databases={"appdb": t.cluster.database_line(pool_size=1)})
    wire = s.wire()
    wire.login()
    wire.send(message("z", b"\0\0\0\0"))
    closed_with_error(wire, ("08P01",))
    still_serving(s)


@test("a truncated query followed by a disconnect leaves sluice serving")
def truncated_query(t):
    s = t.sluice(databases={"appdb": t.cluster.database_line(pool_size=1)})
    wire = s.wire()
    wire.login()
    wire.send(b"Q" + struct.pack("!I", 200) + b"SELECT 'this is cut")
    time.sleep(0.2)
    wire.abort()
    still_serving(s)


@test("a query without its terminating NUL gets an ErrorResponse")
def query_without_nul(t):
    s = t.sluice()
    wire = s.wire()
    wire.login()
    wire.send(message("Q", b"SELECT 1"))
    messages = []
    try:
        wire.settimeout(10)
        result = wire.read_until_ready()
        messages = result.messages
    except harness.ConnectionClosed:
        pass
    check(any(kind == "E" for kind, _ in messages) or wire.is_closed_within(5),
          "no ErrorResponse and the connection is still open")
    check(not any(kind == "D" for kind, _ in messages), "the malformed query returned rows")
    still_serving(s)


@test("Terminate closes the connection cleanly")
def terminate_message(t):
    s = t.sluice()
    wire = s.wire()
    wire.login()
    wire.send(harness.terminate_message())
    check_equal(wire.read_until_closed(5), [], "messages after Terminate")
    still_serving(s)


@test("a startup packet on an established connection is a protocol violation")
def second_startup(t):
    s = t.sluice()
    wire = s.wire()
    wire.login()
    wire.send(startup_packet({"user": "app", "database": "appdb"}))
    closed_with_error(wire, ("08P01",))
    still_serving(s)


@test("many abrupt connections in a row do not exhaust sluice", timeout=90)
def connection_churn(t):
    s = t.sluice(settings={"max_client_conn": 50})
    for n in range(300):
        wire = s.wire()
        if n % 3 == 0:
            wire.send(startup_packet({"user": "app", "database": "appdb"})[:n % 20])
        wire.abort()
    # Each abort reaches sluice as an EOF or a reset; give it a moment to notice them all.
    harness.wait_for(lambda: still_serving(s) or True, 5, interval=0.2,
                     what="a normal client to be served after 300 aborted connections")


if __name__ == "__main__":
    raise SystemExit(suite.run())
