"""Client authentication against the auth file, and sluice's own logins to PostgreSQL."""

import base64
import struct
import threading

import harness
from harness import APP_DB, Background, check, check_equal, expect_pg_error, md5_secret

suite = harness.Suite()
test = suite.test

# auth_type, client user, its password, how the auth file stores the secret
LOGIN_CASES = [
    ("trust", "trust_user", None, "empty"),
    ("md5", "md5_user", "md5_pw", "md5"),
    ("md5", "app", "app_pw", "plain"),
    ("md5", "scram_user", "scram_pw", "scram"),
    ("scram-sha-256", "app", "app_pw", "plain"),
    ("scram-sha-256", "scram_user", "scram_pw", "scram"),
    ("plain", "app", "app_pw", "plain"),
]

# What each auth_type must ask a client for first: AuthenticationRequest codes from the protocol.
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10


SECRET_PHRASE = {"empty": "an empty secret", "plain": "a plain secret", "md5": "an md5 secret",
                 "scram": "a SCRAM verifier"}


def secret_for(cluster, user, password, kind):
    if kind == "empty":
        return ""
    if kind == "plain":
        return password
    if kind == "md5":
        return md5_secret(user, password)
    return cluster.scram_verifier(user)


def sluice_for(t, auth_type, user, password, kind, **settings):
    users = {user: secret_for(t.cluster, user, password, kind)}
    return t.sluice(settings=dict(auth_type=auth_type, **settings), users=users)


def make_login_test(auth_type, user, password, kind, unix):
    transport = "unix socket" if unix else "TCP"

    @test(f"auth_type={auth_type} with {SECRET_PHRASE[kind]}: {user} logs in over {transport}")
    def login(t):
        s = sluice_for(t, auth_type, user, password, kind)
        conn = s.connect(user=user, password=password, unix=unix)
        with conn.cursor() as cur:
            cur.execute("SELECT 41 + 1")
            check_equal(cur.fetchone()[0], 42, "query result after login")


for case in LOGIN_CASES:
    for over_unix in (False, True):
        make_login_test(*case, unix=over_unix)


def make_challenge_test(auth_type, kind, user, password, want_code):
    @test(f"auth_type={auth_type} with {SECRET_PHRASE[kind]} asks for request code {want_code}",
          sluice_only=True)
    def challenge(t):
        s = sluice_for(t, auth_type, user, password, kind)
        wire = s.wire()
        wire.login(user=user, password=password)
        check(wire.auth_requests, "no authentication request was sent")
        check_equal(wire.auth_requests[0], want_code, "first authentication request")
        if want_code == AUTH_SASL:
            check_equal(wire.sasl_mechanisms, ["SCRAM-SHA-256"],
                        "SASL mechanisms offered without TLS (no -PLUS without channel binding)")
        check_equal(wire.auth_requests[-1], AUTH_OK, "last authentication message")


make_challenge_test("trust", "empty", "trust_user", None, AUTH_OK)
make_challenge_test("md5", "md5", "md5_user", "md5_pw", AUTH_MD5)
make_challenge_test("md5", "plain", "app", "app_pw", AUTH_MD5)
make_challenge_test("md5", "scram", "scram_user", "scram_pw", AUTH_SASL)
make_challenge_test("scram-sha-256", "plain", "app", "app_pw", AUTH_SASL)
make_challenge_test("scram-sha-256", "scram", "scram_user", "scram_pw", AUTH_SASL)
make_challenge_test("plain", "plain", "app", "app_pw", AUTH_CLEARTEXT)


def make_wrong_password_test(auth_type, user, password, kind):
    @test(f"auth_type={auth_type} with {SECRET_PHRASE[kind]}: a wrong password gets 28P01")
    def wrong_password(t):
        s = sluice_for(t, auth_type, user, password, kind)
        wire = s.wire()
        error = expect_pg_error(lambda: wire.login(user=user, password="not-" + (password or "")),
                                "28P01", "login with a wrong password")
        check(f'password authentication failed for user "{user}"' in error.message,
              f"error text should be PostgreSQL's, got {error.message!r}")
        check(wire.is_closed_within(5), "connection still open after the authentication failure")
        check(s.connect(user=user, password=password).closed == 0, "the right password still works")


make_wrong_password_test("md5", "md5_user", "md5_pw", "md5")
make_wrong_password_test("md5", "app", "app_pw", "plain")
make_wrong_password_test("scram-sha-256", "app", "app_pw", "plain")
make_wrong_password_test("scram-sha-256", "scram_user", "scram_pw", "scram")
make_wrong_password_test("plain", "app", "app_pw", "plain")


@test("libpq reports a wrong password as PostgreSQL does")
def wrong_password_libpq(t):
    s = t.sluice()
    error = expect_pg_error(lambda: s.connect(user="app", password="wrong"), None, "wrong password")
    check('password authentication failed for user "app"' in str(error),
          f"libpq error text: {str(error).strip()!r}")


def make_unknown_user_test(auth_type):
    @test(f"auth_type={auth_type}: an unknown user gets the same 28P01 text as a wrong password")
    def unknown_user(t):
        s = t.sluice(settings={"auth_type": auth_type})
        known = expect_pg_error(lambda: s.wire().login(user="app", password="wrong"), "28P01",
                                "wrong password")
        unknown = expect_pg_error(lambda: s.wire().login(user="nobody", password="wrong"), "28P01",
                                  "unknown user")
        check_equal(unknown.message.replace('"nobody"', '"app"'), known.message,
                    "unknown-user error text (user name aside)")


make_unknown_user_test("md5")
make_unknown_user_test("scram-sha-256")


@test("auth_type=trust: a user missing from the auth file is refused, whatever user the database "
      "line logs in as", sluice_only=True)
def trust_requires_listed_user(t):
    cluster = t.cluster
    own_user_line = f"host={cluster.host} port={cluster.port} dbname={APP_DB}"
    s = t.sluice(settings={"auth_type": "trust"}, databases={"own_user_db": own_user_line})
    # appdb's line logs in to PostgreSQL as app whoever the client is; own_user_db as the client.
    for database in (APP_DB, "own_user_db"):
        wire = s.wire()
        error = expect_pg_error(lambda: wire.login(user="nobody", password=None, database=database),
                                "28000", f"trust login to {database} as a user not in the auth file")
        check_equal(error.message, '"trust" authentication failed for user "nobody"',
                    "error text (PostgreSQL's and PgBouncer's for a failed trust login)")
        check(wire.is_closed_within(5), "connection still open after the refusal")
    conn = s.connect(user="trust_user", password=None)
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        check_equal(cur.fetchone()[0], "app", "backend user for a listed user under trust")


@test("an unknown user is challenged like a known one (no user enumeration)", sluice_only=True)
def unknown_user_challenged(t):
    s = t.sluice(settings={"auth_type": "scram-sha-256"})
    known, unknown = s.wire(), s.wire()
    expect_pg_error(lambda: known.login(user="app", password="wrong"), "28P01", "wrong password")
    expect_pg_error(lambda: unknown.login(user="nobody", password="wrong"), "28P01", "unknown user")
    check_equal(unknown.auth_requests, known.auth_requests,
                "authentication requests sent to an unknown user vs a known one")


def scram_challenge(s, user, password="wrong"):
    """One SCRAM login attempt: returns the server-first attributes (salt s=, count i=), the
    PgError that ends it and the client-final message sent."""
    wire = s.wire()
    wire.send_startup(user)
    kind, payload = wire.read_message()
    check_equal((kind, struct.unpack("!I", payload[:4])[0]), ("R", AUTH_SASL), "first request")
    client = harness.ScramClient(password)
    first = client.client_first()
    wire.send(harness.message("p", harness.cstr("SCRAM-SHA-256") + struct.pack("!i", len(first))
                              + first))
    kind, payload = wire.read_message()
    check_equal((kind, struct.unpack("!I", payload[:4])[0]), ("R", 11), "SASLContinue")
    server_first = payload[4:]
    attributes = dict(item.split("=", 1) for item in server_first.decode().split(","))
    client_final = client.client_final(server_first)
    wire.send(harness.message("p", client_final))
    error = expect_pg_error(lambda: wire.finish_login(password), "28P01", f"SCRAM login as {user}")
    return attributes, error, client_final.decode()


@test("SCRAM: an unknown user's salt and count are stable and look like a real user's",
      sluice_only=True)
def scram_unknown_user_not_told_apart(t):
    # Every real user's verifier has 10000 iterations here: a mock showing 4096 would stand out.
    s = t.sluice(settings={"auth_type": "scram-sha-256"},
                 users={"app": harness.scram_secret("app_pw", iterations=10000),
                        "scram_user": harness.scram_secret("scram_pw", iterations=10000)})
    real, real_error, _ = scram_challenge(s, "app")
    first, first_error, _ = scram_challenge(s, "nobody")
    second, _, _ = scram_challenge(s, "nobody")
    other, _, _ = scram_challenge(s, "somebody")
    check_equal(second["s"], first["s"], "salt shown to an unknown user on a second attempt")
    check(other["s"] != first["s"], "two unknown names were shown the same salt")
    check_equal(first["i"], real["i"], "iteration count shown to an unknown user vs a real one")
    check_equal(len(base64.b64decode(first["s"])), len(base64.b64decode(real["s"])),
                "salt length shown to an unknown user vs a real one")
    check_equal(first_error.message.replace('"nobody"', '"app"'), real_error.message,
                "error for an unknown user vs a wrong password")


@test("an unknown database gets 3D000")
def unknown_database(t):
    s = t.sluice()
    for unix in (False, True):
        wire = s.wire(unix=unix)
        error = expect_pg_error(lambda: wire.login(database="nosuchdb"), "3D000",
                                "login to an unknown database")
        check("nosuchdb" in error.message, f"error should name the database: {error.message!r}")
        check(wire.is_closed_within(5), "connection still open after 3D000")
    check(s.connect().closed == 0, "a known database still works")


@test("a startup packet without a user name is refused with an ErrorResponse")
def startup_without_user(t):
    s = t.sluice()
    wire = s.wire()
    wire.send(harness.startup_packet({"database": APP_DB}))
    messages = wire.read_until_closed(10)
    errors = harness.error_messages(messages)
    check(errors, f"no ErrorResponse; got {[k for k, _ in messages]}")
    check(errors[0].get("C") in ("28000", "08P01"), f"SQLSTATE {errors[0].get('C')}")


def make_backend_auth_test(role, unix):
    transport = "unix socket" if unix else "TCP"

    @test(f"sluice logs in to PostgreSQL as {role} over {transport}", sluice_only=True)
    def backend_login(t):
        line = t.cluster.database_line(user=role, unix=unix)
        s = t.sluice(databases={"backend_db": line})
        conn = s.connect(dbname="backend_db")
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, current_database()")
            check_equal(cur.fetchone(), (role, APP_DB), "backend user and database")


for backend_role in ("scram_user", "md5_user", "trust_user"):
    for over_unix in (False, True):
        make_backend_auth_test(backend_role, over_unix)


@test("a wrong backend password gives the client an error, not a hang", sluice_only=True)
def backend_wrong_password(t):
    line = t.cluster.database_line(user="scram_user", password="not-the-password")
    s = t.sluice(databases={"broken_db": line}, settings={"query_wait_timeout": 5})
    started = harness.time.monotonic()
    try:
        conn = s.connect(dbname="broken_db")
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        raise harness.TestFailure("query through a backend with a wrong password succeeded")
    except harness.psycopg2.Error as error:
        t.note(f"client saw: {str(error).strip()}")
    elapsed = harness.time.monotonic() - started
    check(elapsed < 10, f"error took {elapsed:.1f}s")
    check(s.connect().closed == 0, "another database still works")


@test("passwords never reach the log", sluice_only=True)
def no_secrets_in_log(t):
    # Only secrets that pass through sluice are looked for: under SCRAM a client's password never
    # does, so wrong passwords go to a sluice with auth_type=plain (cleartext), and under SCRAM the
    # client's proof is looked for instead. app_pw is in the auth file and the database line:
    # sluice derives SCRAM keys from it and logs in to PostgreSQL with it.
    plain = t.sluice(settings={"auth_type": "plain", "verbose": 2})
    scram = t.sluice(settings={"auth_type": "scram-sha-256", "verbose": 2})
    secrets = {"app_pw": "the auth file's and the backend's password"}
    for s in (plain, scram):
        s.connect(user="app", password="app_pw").close()
    for secret, unix in (("wrong-secret-one", False), ("wrong-secret-two", True)):
        expect_pg_error(lambda: plain.wire(unix=unix).login(user="app", password=secret), "28P01",
                        "cleartext login with a wrong password")
        secrets[secret] = "a wrong cleartext password"
    _, _, client_final = scram_challenge(scram, "app", password="wrong-secret-three")
    proof = client_final.split(",p=", 1)[1]
    secrets[proof] = "a SCRAM client proof"
    for s in (plain, scram):
        s.stop()
    log = plain.log_text() + scram.log_text()
    leaked = [f"{what} ({secret!r})" for secret, what in secrets.items() if secret in log]
    check_equal(leaked, [], "secrets found in the log")


@test("workers = 4: the first SCRAM logins of a user whose auth file secret is its password, at "
      "once on every worker (each may derive the user's keys), all log in", sluice_only=True,
      timeout=120)
def scram_first_logins_across_workers(t):
    s = t.sluice(settings={"auth_type": "scram-sha-256", "workers": 4})
    logins = 40
    barrier = threading.Barrier(logins)
    errors = []

    def login():
        try:
            barrier.wait(30)
            conn = s.connect(user="app", password="app_pw")
            with conn.cursor() as cur:
                cur.execute("SELECT current_user")
                if cur.fetchone()[0] != "app":
                    errors.append("logged in as someone else")
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [Background(login) for _ in range(logins)]
    for thread in threads:
        thread.wait(60)
    check_equal(errors, [], "failed logins")


if __name__ == "__main__":
    raise SystemExit(suite.run())
