"""IAM-style token logins: a client sends an RDS auth token (SigV4, from sluice-token or an AWS SDK)
as its password over TLS; sluice checks it offline against auth_token_keys and logs in to
PostgreSQL with the database's own credentials."""

import calendar
import os
import random
import socket
import ssl
import subprocess
import time
import urllib.parse

import harness
from harness import Skip, check, check_equal, expect_pg_error

suite = harness.Suite()
test = suite.test

REGION = "eu-west-1"
# Functions log in as FUNCTION_USER, which is no PostgreSQL role: sluice uses app's credentials.
FUNCTION_USER = "lambda_fn"
KEY_ID = "AKIASLUICETEST000001"
SECRET = "sluice/Test+Secret/Key0000000000000000001"
OTHER_KEY_ID = "AKIASLUICETEST000002"
OTHER_SECRET = "sluice/Test+Secret/Key0000000000000000002"
# What STS hands out is 300-1000 characters of base64: the token grows by as much, encoded.
SESSION_TOKEN = ("IQoJb3JpZ2luX2VjE" + "Ab+/=" * 150 + "EXAMPLE")[:800]


# ---- tokens ---------------------------------------------------------------------------------------

def token_binary():
    explicit = os.environ.get("SLUICE_TOKEN_BIN")
    if explicit:
        return explicit
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "tools", "sluice-token"))


def amz_date(seconds_from_now=0):
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + seconds_from_now))


def make_token(port, user=FUNCTION_USER, host="localhost", region=REGION, key_id=KEY_ID,
               secret=SECRET, session_token=None, date=None, expires=None):
    """A token from sluice-token, the key given in the environment as a function would have it."""
    argv = [token_binary(), "--host", host, "--port", str(port), "--user", user,
            "--region", region]
    if date:
        argv += ["--date", date]
    if expires:
        argv += ["--expires", str(expires)]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
    env.pop("AWS_SESSION_TOKEN", None)
    if session_token:
        env["AWS_SESSION_TOKEN"] = session_token
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=30)
    check_equal(result.returncode, 0, f"sluice-token exit status ({result.stderr.strip()})")
    return result.stdout.strip()


def split_token(token):
    """'HOST:PORT/?a=1&b=2' -> ('HOST:PORT/?', ['a=1', 'b=2'])"""
    endpoint, query = token.split("/?", 1)
    return endpoint + "/?", query.split("&")


def reorder(token, names_in_order):
    """The same parameters in another order (names not listed keep their place at the end)."""
    prefix, params = split_token(token)
    by_name = {p.split("=", 1)[0]: p for p in params}
    ordered = [by_name.pop(name) for name in names_in_order if name in by_name]
    return prefix + "&".join(ordered + [p for p in params if p.split("=", 1)[0] in by_name])


BOTOCORE_ORDER = ["Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                  "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Security-Token",
                  "X-Amz-Signature"]
SIGNATURE_FIRST_ORDER = ["X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-SignedHeaders",
                         "X-Amz-Expires", "X-Amz-Date", "X-Amz-Credential", "X-Amz-Algorithm",
                         "DBUser", "Action"]


def token_param(token, name):
    if "/?" not in token:
        return None
    _, params = split_token(token)
    for p in params:
        key, _, value = p.partition("=")
        if key == name:
            return urllib.parse.unquote(value)
    return None


# ---- sluice with token logins -----------------------------------------------------------------

def write_keys(path, keys):
    """keys: {access key id: (secret, users)}; users a list or '*'."""
    with open(path, "w") as f:
        f.write("# access keys that may sign tokens for sluice\n")
        for key_id, (secret, users) in keys.items():
            users_text = users if isinstance(users, str) else ", ".join(users)
            f.write(f"[{key_id}]\nsecret = {secret}\nusers = {users_text}\n\n")
    os.chmod(path, 0o600)


DEFAULT_KEYS = {KEY_ID: (SECRET, [FUNCTION_USER, "app"]),
                OTHER_KEY_ID: (OTHER_SECRET, ["someone_else"])}


def token_sluice(t, keys=None, settings=None, users_section=None, start=True):
    """A sluice with auth_type = token, TLS towards clients (sslmode prefer, so plaintext clients
    reach the token check) and appdb logging in to PostgreSQL as app with app's password."""
    certs = t.certificates()
    s = t.sluice(settings=None, databases={harness.APP_DB: t.cluster.database_line()},
                 start=False)
    s.keys_path = os.path.join(s.dir, "token-keys.ini")
    write_keys(s.keys_path, DEFAULT_KEYS if keys is None else keys)
    s.settings.update({
        "auth_type": "token",
        "auth_token_keys": s.keys_path,
        "auth_token_region": REGION,
        "auth_token_endpoints": f"localhost:{s.port}",
        "client_tls_sslmode": "prefer",
        "client_tls_key_file": os.path.join(certs, "server.key"),
        "client_tls_cert_file": os.path.join(certs, "server.crt"),
    })
    s.settings.update(settings or {})
    s.write_config()
    if users_section:
        s.write_config(s.config_text() + "\n[users]\n"
                       + "".join(f"{user} = {value}\n" for user, value in users_section.items()))
    if start:
        s.start()
    return s


def ca_file(t):
    return os.path.join(t.certificates(), "ca.crt")


def tls_wire(t, s):
    """A raw protocol client over TLS (SSLRequest, then a verify-full handshake for localhost),
    to see SQLSTATEs and every message sluice sends."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(harness.request_packet(harness.SSL_REQUEST_CODE))
    check_equal(sock.recv(1), b"S", "answer to SSLRequest")
    context = ssl.create_default_context(cafile=ca_file(t))
    wire = harness.Wire(context.wrap_socket(sock, server_hostname="localhost"))
    with s._lock:
        s.connections.append(wire)
    return wire


def token_login(t, s, token, user=FUNCTION_USER):
    """Logs in over TLS with token as the password; returns the Wire (PgError if refused)."""
    wire = tls_wire(t, s)
    wire.login(user=user, password=token)
    return wire


def expect_refusal(t, s, token, reason, user=FUNCTION_USER):
    """The token login fails with 28P01 and a message containing reason; returns the message."""
    error = expect_pg_error(lambda: token_login(t, s, token, user), "28P01", f"login ({reason})")
    check(reason in error.message, f"message {error.message!r} does not say {reason!r}")
    return error.message


def verify_full_env(t, s, token, user=FUNCTION_USER):
    """psql/pgbench environment: verify-full to localhost, the token as PGPASSWORD."""
    env = s.env(user=user, password=token)
    env.update(PGHOST="localhost", PGSSLMODE="verify-full", PGSSLROOTCERT=ca_file(t))
    return env


def psql(env, sql):
    return harness.run_tool([harness.pg_tool("psql"), "-X", "-At", "-c", sql], env, timeout=30)


def check_not_logged(s, *secrets):
    log = s.log_text()
    for secret in secrets:
        check(secret not in log, f"sluice's log holds a secret ({secret[:24]}...)")


# ---- logging in -----------------------------------------------------------------------------------

@test("psql with PGPASSWORD=$(sluice-token ...) and sslmode=verify-full logs in; queries run as "
      "the backend user from [databases]", sluice_only=True)
def psql_token_login(t):
    s = token_sluice(t)
    token = make_token(s.port)
    t.note(f"token: {len(token)} bytes")
    status, output = psql(verify_full_env(t, s, token),
                          "SELECT current_user, session_user, "
                          "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())")
    check_equal(status, 0, f"psql exit status ({output.strip()})")
    check_equal(output.strip(), "app|app|f",
                "current_user, session_user and backend TLS (sluice logs in as app, over the "
                "plain TCP [databases] line)")
    check(f"{FUNCTION_USER}@" in s.log_text() and "login ok" in s.log_text(),
          "the login is logged under the function's user name")
    check_not_logged(s, token, token_param(token, "X-Amz-Signature"), SECRET)


@test("a token login runs several transactions through the pool on one connection",
      sluice_only=True)
def token_session_queries(t):
    s = token_sluice(t)
    wire = token_login(t, s, make_token(s.port))
    check_equal(wire.auth_requests, [3, 0], "authentication requests (cleartext password, ok)")
    for n in range(5):
        result = wire.query_ok(f"SELECT {n} + 1, current_user")
        check_equal(result.rows, [(str(n + 1), "app")], f"query {n}")


@test("per-user auth_type = token in [users]: the function logs in with a token, app with SCRAM",
      sluice_only=True)
def per_user_token(t):
    s = token_sluice(t, settings={"auth_type": "scram-sha-256"},
                     users_section={FUNCTION_USER: "auth_type=token"})
    wire = token_login(t, s, make_token(s.port))
    check_equal(wire.query_ok("SELECT current_user").rows, [("app",)], "function's query")
    app = s.wire()
    app.login(user="app", password="app_pw")
    check_equal(app.sasl_mechanisms, ["SCRAM-SHA-256"], "app is asked for SCRAM")
    expect_refusal(t, s, make_token(s.port, user="app"), "password authentication failed",
                   user="app")


@test("a key file entry with users = * lets its key sign for any user", sluice_only=True)
def any_user_key(t):
    s = token_sluice(t, keys={KEY_ID: (SECRET, "*")})
    for user in ("svc_a", "svc_b"):
        wire = token_login(t, s, make_token(s.port, user=user), user=user)
        check_equal(wire.query_ok("SELECT current_user").rows, [("app",)], f"{user}'s query")


# ---- TLS only ------------------------------------------------------------------------------------

@test("the same token over plaintext TCP is refused with 28000 before it is asked for",
      sluice_only=True)
def token_needs_tls(t):
    s = token_sluice(t)
    token = make_token(s.port)
    wire = s.wire()
    wire.send_startup(FUNCTION_USER)
    messages = wire.read_until_closed(10)
    kinds = [kind for kind, _ in messages]
    check("R" not in kinds, f"a password was asked for over plaintext: {kinds}")
    errors = harness.error_messages(messages)
    check_equal([e.get("C") for e in errors], ["28000"], "SQLSTATEs")
    check("requires an SSL connection" in errors[0].get("M", ""),
          f"the message: {errors[0].get('M')!r}")
    env = dict(verify_full_env(t, s, token), PGSSLMODE="disable", PGHOST="127.0.0.1")
    status, output = psql(env, "SELECT 1")
    check(status != 0, "psql logged in with a token over plaintext")
    check("requires an SSL connection" in output, f"psql's message: {output.strip()}")
    check_equal(len(token_login(t, s, token).query_ok("SELECT 1").rows), 1,
                "the same token over TLS")


@test("token logins over the unix socket: refused by default, allowed by "
      "auth_token_allow_unix_socket", sluice_only=True)
def token_unix_socket(t):
    s = token_sluice(t)
    error = expect_pg_error(lambda: s.wire(unix=True).login(user=FUNCTION_USER,
                                                           password=make_token(s.port)),
                            "28000", "token over the unix socket")
    check("SSL" in error.message, f"the message: {error.message!r}")
    allowed = token_sluice(t, settings={"auth_token_allow_unix_socket": "on"})
    wire = allowed.wire(unix=True)
    wire.login(user=FUNCTION_USER, password=make_token(allowed.port))
    check_equal(wire.query_ok("SELECT current_user").rows, [("app",)], "query")


# ---- refusals --------------------------------------------------------------------------------------

@test("an expired token (signed 20 minutes ago) gets 28P01 saying it expired", sluice_only=True)
def expired_token(t):
    s = token_sluice(t)
    token = make_token(s.port, date=amz_date(-20 * 60))
    message = expect_refusal(t, s, token, "expired")
    t.note(f"client sees: {message}")
    check("token login refused: auth token has expired" in s.log_text(),
          "one log line with the reason:\n" + s.log_tail())
    check_not_logged(s, token, token_param(token, "X-Amz-Signature"))


@test("a token dated beyond the clock skew is refused; one within it is accepted",
      sluice_only=True)
def future_token(t):
    s = token_sluice(t, settings={"auth_token_clock_skew": 60})
    expect_refusal(t, s, make_token(s.port, date=amz_date(10 * 60)), "dated in the future")
    token_login(t, s, make_token(s.port, date=amz_date(30)))


@test("wrong region, endpoint, key, user or secret: each refused with its own reason",
      sluice_only=True)
def refusal_reasons(t):
    s = token_sluice(t)
    port = s.port
    cases = [
        ("region", make_token(port, region="us-east-1"), "another region"),
        ("host", make_token(port, host="db.example.com"), "auth_token_endpoints"),
        ("port", make_token(port + 1 if port < 65535 else port - 1), "auth_token_endpoints"),
        ("unknown key", make_token(port, key_id="AKIANOTINTHEFILE0000"),
         "not in auth_token_keys"),
        ("token for another user", make_token(port, user="app"), "another user"),
        ("key not allowed this user", make_token(port, key_id=OTHER_KEY_ID, secret=OTHER_SECRET),
         "may not log in as this user"),
        ("wrong secret", make_token(port, secret="not-the-secret"), "signature does not match"),
        ("not a token", "hunter2", "not an auth token"),
    ]
    for what, token, reason in cases:
        message = expect_refusal(t, s, token, reason)
        t.note(f"{what}: {message}")
        check_not_logged(s, token if len(token) > 20 else "\0",
                         token_param(token, "X-Amz-Signature") or "\0")
    refusals = s.log_text().count("token login refused")
    check_equal(refusals, len(cases), "log lines for refused tokens")
    check_not_logged(s, SECRET, OTHER_SECRET)


@test("a token longer than sluice accepts (8192 bytes) is refused as too long, with 28P01",
      sluice_only=True)
def oversized_token(t):
    s = token_sluice(t)
    token = make_token(s.port, session_token="A" * 8200)
    check(len(token) > 8192, f"token of {len(token)} bytes")
    expect_refusal(t, s, token, "too long")
    token_login(t, s, make_token(s.port, session_token="A" * 6000)).query_ok("SELECT 1")


@test("a token signed for LOCALHOST:PORT matches the endpoint localhost:PORT", sluice_only=True)
def endpoint_host_case(t):
    s = token_sluice(t)
    wire = token_login(t, s, make_token(s.port, host="LOCALHOST"))
    check_equal(wire.query_ok("SELECT current_user").rows, [("app",)], "query")


@test("SIGHUP with a new auth_token_region: tokens for the old region are refused from then on",
      sluice_only=True)
def reload_changes_region(t):
    s = token_sluice(t)
    token_login(t, s, make_token(s.port))
    s.settings["auth_token_region"] = "ap-south-1"
    s.write_config()
    s.reload_and_wait()
    expect_refusal(t, s, make_token(s.port), "another region")
    token_login(t, s, make_token(s.port, region="ap-south-1"))


@test("a token signed for another database user than the startup packet's is refused even with "
      "users = *", sluice_only=True)
def user_must_match(t):
    s = token_sluice(t, keys={KEY_ID: (SECRET, "*")})
    expect_refusal(t, s, make_token(s.port, user="app"), "another user", user=FUNCTION_USER)


@test("the token never appears in sluice's log, even with verbose = 2", sluice_only=True)
def token_not_logged(t):
    s = token_sluice(t, settings={"verbose": 2, "log_connections": 1,
                                  "log_disconnections": 1, "log_pooler_errors": 1})
    good = make_token(s.port, session_token=SESSION_TOKEN)
    token_login(t, s, good).query_ok("SELECT 1")
    bad = make_token(s.port, secret="wrong-secret", session_token=SESSION_TOKEN)
    expect_refusal(t, s, bad, "signature does not match")
    expired = make_token(s.port, date=amz_date(-3600))
    expect_refusal(t, s, expired, "expired")
    for token in (good, bad, expired):
        check_not_logged(s, token, token_param(token, "X-Amz-Signature"),
                         urllib.parse.quote(SESSION_TOKEN, safe="")[:60])
    check_not_logged(s, SECRET, SESSION_TOKEN[:60])


# ---- the key file on SIGHUP ------------------------------------------------------------------------

@test("SIGHUP after removing a key from the key file: new logins with it fail at once; other "
      "keys and open sessions go on", sluice_only=True)
def reload_removes_key(t):
    keys = {KEY_ID: (SECRET, [FUNCTION_USER]), OTHER_KEY_ID: (OTHER_SECRET, [FUNCTION_USER])}
    s = token_sluice(t, keys=keys)
    open_session = token_login(t, s, make_token(s.port))
    token_login(t, s, make_token(s.port, key_id=OTHER_KEY_ID, secret=OTHER_SECRET))
    reusable = make_token(s.port)  # valid for 15 minutes
    token_login(t, s, reusable)

    write_keys(s.keys_path, {OTHER_KEY_ID: (OTHER_SECRET, [FUNCTION_USER])})
    s.reload_and_wait()
    expect_refusal(t, s, reusable, "not in auth_token_keys")
    expect_refusal(t, s, make_token(s.port), "not in auth_token_keys")
    token_login(t, s, make_token(s.port, key_id=OTHER_KEY_ID, secret=OTHER_SECRET))
    check_equal(open_session.query_ok("SELECT 'still open'").rows, [("still open",)],
                "the session that logged in with the removed key")


@test("SIGHUP with a broken key file keeps the running keys and logs why", sluice_only=True)
def reload_broken_key_file(t):
    s = token_sluice(t)
    with open(s.keys_path, "w") as f:
        f.write(f"[{KEY_ID}]\nusers = {FUNCTION_USER}\n")  # no secret
    s.reload_and_wait(refused=True)
    check("has no secret" in s.log_text(), "the log says why:\n" + s.log_tail())
    token_login(t, s, make_token(s.port)).query_ok("SELECT 1")


# ---- SDK formats --------------------------------------------------------------------------------

@test("tokens in other SDKs' parameter orders log in (botocore: X-Amz-Security-Token before "
      "X-Amz-Signature; signature first; shuffled)", sluice_only=True)
def parameter_orders(t):
    s = token_sluice(t)
    token = make_token(s.port, session_token=SESSION_TOKEN)
    prefix, params = split_token(token)
    check_equal([p.split("=", 1)[0] for p in params],
                sorted(BOTOCORE_ORDER[:7] + ["X-Amz-Security-Token"]) + ["X-Amz-Signature"],
                "sluice-token's parameter order (sorted, signature last)")
    botocore = reorder(token, BOTOCORE_ORDER)
    check(botocore != token, "the botocore order differs from sluice-token's")
    shuffled = params[:]
    random.Random(7).shuffle(shuffled)
    for name, variant in (("botocore", botocore),
                          ("signature first", reorder(token, SIGNATURE_FIRST_ORDER)),
                          ("shuffled", prefix + "&".join(shuffled))):
        wire = token_login(t, s, variant)
        check_equal(wire.query_ok("SELECT current_user").rows, [("app",)], f"{name} order")


@test("a long token (an 800-character session token) logs in through psql", sluice_only=True)
def long_session_token(t):
    s = token_sluice(t)
    token = make_token(s.port, session_token=SESSION_TOKEN)
    t.note(f"token: {len(token)} bytes")
    check(len(token) > 1200, f"token of {len(token)} bytes")
    status, output = psql(verify_full_env(t, s, token), "SELECT current_user")
    check_equal(status, 0, f"psql exit status ({output.strip()})")
    check_equal(output.strip(), "app", "current_user")


@test("a token from boto3's generate_db_auth_token logs in", sluice_only=True)
def boto3_token(t):
    try:
        import boto3
    except ImportError:
        raise Skip("boto3 is not installed (apt-get install python3-boto3)")
    s = token_sluice(t)
    client = boto3.client("rds", region_name=REGION, aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET, aws_session_token=SESSION_TOKEN)
    token = client.generate_db_auth_token(DBHostname="localhost", Port=s.port,
                                          DBUsername=FUNCTION_USER, Region=REGION)
    wire = token_login(t, s, token)
    check_equal(wire.query_ok("SELECT current_user").rows, [("app",)], "query")
    date = token_param(token, "X-Amz-Date")
    check_equal(token, reorder(make_token(s.port, session_token=SESSION_TOKEN, date=date),
                               BOTOCORE_ORDER),
                "boto3's token against sluice-token's for the same time, in botocore's order")


# ---- pgbench -----------------------------------------------------------------------------------

_pgbench_initialized = []


def pgbench_tables(t):
    """pgbench's tables in appdb, made once per file with pgbench -i directly."""
    if not _pgbench_initialized:
        env = dict(t.cluster.env(), PGUSER="app", PGPASSWORD="app_pw")
        status, output = harness.run_tool([harness.pg_tool("pgbench"), "-i", "-q", "-s", "1",
                                           harness.APP_DB], env, timeout=120)
        check_equal(status, 0, f"pgbench -i (direct) failed:\n{output[-2000:]}")
        _pgbench_initialized.append(True)


@test("pgbench -S -C with one token reused for every connection over TLS: 0 failed "
      "transactions", sluice_only=True, timeout=120)
def pgbench_token_storm(t):
    pgbench_tables(t)
    s = token_sluice(t, settings={"default_pool_size": 4})
    env = s.env(user=FUNCTION_USER, password=make_token(s.port))
    env.update(PGHOST="localhost", PGSSLMODE="require")
    status, output, summary = harness.run_pgbench(
        ["-n", "-S", "-C", "-c", "8", "-j", "2", "-T", "4", harness.APP_DB], env, 120)
    t.note("\n".join(output.splitlines()[-8:]))
    check_equal(status, 0, "pgbench exit status")
    check(summary.get("processed", 0) > 0, "no transactions processed")
    check_equal(summary.get("failed", 0), 0, "failed transactions")
    check_equal(s.log_text().count("token login refused"), 0, "refused token logins")


@test("pgbench -S -C TPS: plain SCRAM, SCRAM over TLS and a token over TLS, side by side",
      sluice_only=True, timeout=180)
def pgbench_login_methods(t):
    """The figures the token issue asks for; each run must also have no failed transaction."""
    pgbench_tables(t)
    certs = t.certificates()
    scram = t.sluice(settings={"default_pool_size": 4, "log_connections": 0,
                               "client_tls_sslmode": "prefer",
                               "client_tls_key_file": os.path.join(certs, "server.key"),
                               "client_tls_cert_file": os.path.join(certs, "server.crt")})
    token = token_sluice(t, settings={"default_pool_size": 4, "log_connections": 0})
    token_env = dict(token.env(user=FUNCTION_USER, password=make_token(token.port)),
                     PGHOST="localhost", PGSSLMODE="require")
    runs = [("SCRAM, plaintext", scram.env()),
            ("SCRAM over TLS", dict(scram.env(), PGHOST="localhost", PGSSLMODE="require")),
            ("token over TLS", token_env)]
    for name, env in runs:
        status, output, summary = harness.run_pgbench(
            ["-n", "-S", "-C", "-c", "8", "-j", "2", "-T", "5", harness.APP_DB], env, 120)
        check_equal(status, 0, f"{name}: pgbench exit status\n{output[-1500:]}")
        check_equal(summary.get("failed", 0), 0, f"{name}: failed transactions")
        check(summary.get("processed", 0) > 0, f"{name}: no transactions processed")
        t.note(f"{name}: tps = {summary.get('tps')}, latency {summary.get('latency_ms')} ms")


if __name__ == "__main__":
    raise SystemExit(suite.run())
