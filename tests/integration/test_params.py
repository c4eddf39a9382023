"""Session parameters under transaction pooling: each client keeps its own, none leak to others."""

import harness
from harness import check, check_equal, one_value

suite = harness.Suite()
test = suite.test


def shared_backend(t):
    """Transaction mode over a single backend: every client lands on the same one."""
    return t.sluice(settings={"pool_mode": "transaction"},
                    databases={"appdb": t.cluster.database_line(pool_size=1)})


@test("transaction mode: application_name from the startup packet survives pooling")
def application_name_survives(t):
    s = shared_backend(t)
    a = s.connect(application_name="client_a")
    b = s.connect(application_name="client_b")
    for _ in range(3):
        check_equal(one_value(a, "SHOW application_name"), "client_a", "client a's application_name")
        check_equal(one_value(b, "SHOW application_name"), "client_b", "client b's application_name")


@test("transaction mode: application_name is reported back in ParameterStatus")
def application_name_parameter_status(t):
    s = shared_backend(t)
    conn = s.connect(application_name="reported_name")
    check_equal(conn.get_parameter_status("application_name"), "reported_name",
                "application_name ParameterStatus after login")


@test("transaction mode: options=-c search_path=... survives pooling")
def options_search_path(t):
    t.cluster.sql("CREATE SCHEMA IF NOT EXISTS other_schema; "
                  "GRANT USAGE ON SCHEMA other_schema TO PUBLIC")
    s = shared_backend(t)
    custom = s.connect(options="-c search_path=other_schema")
    plain = s.connect()
    for _ in range(3):
        check_equal(one_value(custom, "SHOW search_path"), "other_schema",
                    "search_path of the client that asked for it")
        check_equal(one_value(plain, "SHOW search_path"), '"$user", public',
                    "search_path of another client on the same backend")


@test("transaction mode: options=-c statement_timeout=... applies to that client only")
def options_statement_timeout(t):
    s = shared_backend(t)
    strict = s.connect(options="-c statement_timeout=100")
    relaxed = s.connect()
    harness.expect_pg_error(lambda: one_value(strict, "SELECT pg_sleep(1)"), "57014",
                            "a query past the client's statement_timeout")
    check_equal(one_value(relaxed, "SELECT pg_sleep(0.3)::text"), "", "another client's query")
    check_equal(one_value(relaxed, "SHOW statement_timeout"), "0", "another client's setting")


@test("transaction mode: SET TimeZone in one client's transaction does not leak to another")
def timezone_does_not_leak(t):
    s = shared_backend(t)
    setter, other = s.connect(), s.connect()
    default_zone = one_value(other, "SHOW TimeZone")
    check(default_zone != "Asia/Tokyo", "the cluster's default time zone is the test value")
    with setter.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SET TimeZone = 'Asia/Tokyo'")
        cur.execute("COMMIT")
    check_equal(one_value(other, "SHOW TimeZone"), default_zone,
                "TimeZone of another client on the same backend")


@test("transaction mode: the client that SET TimeZone keeps it on its next transaction")
def timezone_follows_client(t):
    s = shared_backend(t)
    setter, other = s.connect(), s.connect()
    with setter.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SET TimeZone = 'Asia/Tokyo'")
        cur.execute("COMMIT")
    one_value(other, "SELECT 1")
    check_equal(one_value(setter, "SHOW TimeZone"), "Asia/Tokyo",
                "TimeZone of the client that set it, after another client used the backend")


@test("transaction mode: the ParameterStatus for a SET reaches only the client that sent it")
def parameter_status_goes_to_setter(t):
    s = shared_backend(t)
    setter, other = s.wire(), s.wire()
    setter.login()
    other.login()
    zone_before = other.parameters.get("TimeZone")
    result = setter.query_ok("BEGIN; SET TimeZone = 'Asia/Tokyo'; COMMIT")
    check_equal(setter.parameters.get("TimeZone"), "Asia/Tokyo", "setter's TimeZone status")
    check(not any(kind == "E" for kind, _ in result.messages), "errors")
    other.query_ok("SELECT 1")
    check_equal(other.parameters.get("TimeZone"), zone_before,
                "TimeZone ParameterStatus seen by the other client")


@test("transaction mode: client_encoding from the startup packet is kept per client")
def client_encoding_per_client(t):
    s = shared_backend(t)
    latin = s.connect(client_encoding="LATIN1")
    utf = s.connect(client_encoding="UTF8")
    for _ in range(2):
        check_equal(one_value(latin, "SHOW client_encoding"), "LATIN1", "LATIN1 client")
        check_equal(one_value(utf, "SHOW client_encoding"), "UTF8", "UTF8 client")


if __name__ == "__main__":
    raise SystemExit(suite.run())
