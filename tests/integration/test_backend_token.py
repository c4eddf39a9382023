"""Backend logins with RDS IAM tokens (server_auth_token=on): a front sluice signs a fresh token for
each backend connection and sends it as its password over TLS to a back sluice that verifies
tokens offline (auth_type = token), in front of PostgreSQL, as RDS with IAM authentication
would. No database password is in the front sluice's configuration."""

import os
import threading
import time
import urllib.request

import harness
from harness import Background, check, check_equal, expect_pg_error, wait_for
from test_token import (KEY_ID, OTHER_KEY_ID, OTHER_SECRET, REGION, SECRET, SESSION_TOKEN, ca_file,
                        token_sluice)

suite = harness.Suite()
test = suite.test

NO_AWS_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                      "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None}


def environment_keys(key_id=KEY_ID, secret=SECRET, session_token=None):
    env = dict(NO_AWS_ENVIRONMENT, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
    if session_token:
        env["AWS_SESSION_TOKEN"] = session_token
    return env


def write_credentials(path, key_id, secret, profile="default", session_token=None):
    """An AWS shared credentials file, written aside and renamed over the old one, as a
    credentials helper does."""
    text = f"# written by the test\n[{profile}]\naws_access_key_id = {key_id}\n" \
           f"aws_secret_access_key = {secret}\n"
    if session_token:
        text += f"aws_session_token = {session_token}\n"
    with open(path + ".new", "w") as f:
        f.write(text)
    os.chmod(path + ".new", 0o600)
    os.rename(path + ".new", path)


def back_sluice(t, **kwargs):
    """The 'RDS' of the chain: token logins only, over TLS, checked against KEY_ID's secret."""
    return token_sluice(t, **kwargs)


def front_sluice(t, back, settings=None, env=None, dbname=harness.APP_DB, start=True, extra=""):
    """A sluice whose appdb logs in to back as app with a signed token: clients log in to it
    with app's password from its auth file, as usual."""
    certs = t.certificates()
    merged = {
        "server_tls_sslmode": "verify-full",
        "server_tls_ca_file": os.path.join(certs, "ca.crt"),
        "server_auth_token_region": REGION,
        "server_login_retry": 0,
    }
    merged.update(settings or {})
    line = f"host=localhost port={back.port} dbname={dbname} user=app server_auth_token=on{extra}"
    s = t.sluice(settings=merged, databases={harness.APP_DB: line, dbname: line}, start=False)
    if start:
        s.start(env=environment_keys() if env is None else env)
    return s


def psql(s, sql, user="app", password="app_pw"):
    return harness.run_tool([harness.pg_tool("psql"), "-X", "-At", "-c", sql],
                            s.env(user=user, password=password), timeout=30)


def check_no_secrets(*sluices, secrets=(SECRET, OTHER_SECRET)):
    for s in sluices:
        log = s.log_text()
        for secret in secrets:
            check(secret not in log, f"a log holds a secret ({secret[:12]}...)")
        check("X-Amz-Signature" not in log, "a log holds a token")


def expect_backend_login_error(t, front, reason):
    """psql through the front fails promptly with 28P01 and the back sluice's reason; the front's
    log says the IAM token login was refused, with which key and region."""
    started = time.monotonic()
    status, output = psql(front, "SELECT 1")
    elapsed = time.monotonic() - started
    check(status != 0, f"psql logged in: {output.strip()}")
    check(reason in output, f"psql's message does not say {reason!r}: {output.strip()}")
    t.note(f"psql: {output.strip()} ({elapsed:.1f} s)")
    wait_for(lambda: "IAM token login was refused" in front.log_text(), 10,
             what="the front sluice's log line")
    log = front.log_text()
    check(reason in log, f"the front's log does not say {reason!r}")
    return log


# ---- logging in ------------------------------------------------------------------------------

@test("psql through the front sluice: the backend login is a token signed with keys from the "
      "environment (with a session token), over verify-full TLS; queries run as app; nothing "
      "secret is logged even with verbose = 2", sluice_only=True)
def psql_through_token_chain(t):
    back = back_sluice(t, settings={"verbose": 2})
    front = front_sluice(t, back, settings={"verbose": 2},
                         env=environment_keys(session_token=SESSION_TOKEN))
    status, output = psql(front, "SELECT current_user, 41 + 1")
    check_equal(status, 0, f"psql exit status ({output.strip()})")
    check_equal(output.strip(), "app|42", "the query's result through both sluices")
    check("app@" in back.log_text() and "login ok" in back.log_text(),
          "the back sluice logged the front's token login as app")
    check(f"signing backend tokens with access key {KEY_ID} from the environment" in front.log_text(),
          "the front says where its keys came from")
    check_no_secrets(front, back, secrets=(SECRET, SESSION_TOKEN))


@test("pgbench -C through the front sluice: every backend connection logs in with its own "
      "token", timeout=180, sluice_only=True)
def pgbench_through_token_chain(t):
    t.cluster.pgbench_database("pgbench_token", 1)
    back = back_sluice(t)
    back.databases["pgbench_token"] = t.cluster.database_line(dbname="pgbench_token")
    back.write_config()
    back.reload_and_wait()
    front = front_sluice(t, back, dbname="pgbench_token",
                         settings={"server_lifetime": 0.5, "metrics_listen_addr": "127.0.0.1",
                                   "metrics_port": harness.free_port()})
    env = front.env(dbname="pgbench_token")
    status, output, summary = harness.run_pgbench(["-n", "-S", "-C", "-c", "4", "-j", "2",
                                                   "-T", "4"], env, timeout=120)
    check_equal(status, 0, f"pgbench exit status:\n{output[-1500:]}")
    check(summary.get("failed", 0) == 0, f"pgbench reports failed transactions: {summary}")
    t.note(f"tps = {summary.get('tps')}")
    url = f"http://127.0.0.1:{front.settings['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        metrics = response.read().decode()
    signed = [line for line in metrics.splitlines()
              if line.startswith("sluice_server_tokens_signed_total ")]
    check_equal(len(signed), 1, "one sluice_server_tokens_signed_total sample")
    count = float(signed[0].split()[1])
    t.note(f"tokens signed: {count:.0f}")
    check(count >= 2, f"backend connections renewed by server_lifetime signed one token each "
                      f"(tokens signed: {count})")
    check("sluice_server_token_login_failures_total 0" in metrics, "no backend token login failed")
    check_no_secrets(front, back)


@test("keys from server_auth_token_credentials (an AWS credentials file, named profile, session "
      "token), none in the environment", sluice_only=True)
def credentials_file(t):
    back = back_sluice(t)
    front = front_sluice(t, back, start=False)
    path = os.path.join(front.dir, "aws-credentials")
    with open(path, "w") as f:
        f.write(f"[default]\naws_access_key_id = {OTHER_KEY_ID}\n"
                f"aws_secret_access_key = {OTHER_SECRET}\n\n"
                f"[sluice]\naws_access_key_id = {KEY_ID}\n"
                f"aws_secret_access_key = {SECRET}\naws_session_token = {SESSION_TOKEN}\n")
    front.settings.update(server_auth_token_credentials=path, server_auth_token_profile="sluice")
    front.write_config()
    front.start(env=NO_AWS_ENVIRONMENT)
    status, output = psql(front, "SELECT current_user")
    check_equal(status, 0, f"psql exit status ({output.strip()})")
    check_equal(output.strip(), "app", "the query ran")
    check(f"access key {KEY_ID} from {path}" in front.log_text(), "the profile's key was used")
    check_no_secrets(front, back, secrets=(SECRET, OTHER_SECRET, SESSION_TOKEN))


@test("a credentials file replaced by a helper is read again: new backend logins use the new "
      "key without a reload", sluice_only=True)
def rotated_credentials_file(t):
    back = back_sluice(t)
    front = front_sluice(t, back, start=False, settings={"server_idle_timeout": 0})
    path = os.path.join(front.dir, "aws-credentials")
    write_credentials(path, "AKIAEXPIREDKEY000001", "an-old-secret")
    front.settings.update(server_auth_token_credentials=path)
    front.write_config()
    front.start(env=NO_AWS_ENVIRONMENT)
    expect_backend_login_error(t, front, "access key id that is not in auth_token_keys")
    write_credentials(path, KEY_ID, SECRET, session_token="rotated-session")
    status, output = psql(front, "SELECT current_user")
    check_equal(status, 0, f"psql after the file was replaced ({output.strip()})")
    check(f"read new keys from {path} (access key {KEY_ID})" in front.log_text(),
          "the front logs that it read new keys")


@test("workers = 4: backend logins on every worker sign tokens while a helper keeps replacing the "
      "credentials file: every token is signed with one whole pair of keys", timeout=180,
      sluice_only=True)
def rotating_credentials_file_across_workers(t):
    t.cluster.pgbench_database("pgbench_token", 1)
    back = back_sluice(t, keys={KEY_ID: (SECRET, ["app"]), OTHER_KEY_ID: (OTHER_SECRET, ["app"])})
    back.databases["pgbench_token"] = t.cluster.database_line(dbname="pgbench_token")
    back.write_config()
    back.reload_and_wait()
    # Short-lived backends: every worker keeps opening backends, each signing a token.
    front = front_sluice(t, back, dbname="pgbench_token", start=False,
                         settings={"workers": 4, "server_lifetime": 0.2})
    path = os.path.join(front.dir, "aws-credentials")
    write_credentials(path, KEY_ID, SECRET)
    front.settings.update(server_auth_token_credentials=path)
    front.write_config()
    front.start(env=NO_AWS_ENVIRONMENT)
    stop = threading.Event()

    def rotate():
        replaced = 0
        while not stop.is_set():
            key_id, secret = (OTHER_KEY_ID, OTHER_SECRET) if replaced % 2 == 0 else (KEY_ID, SECRET)
            write_credentials(path, key_id, secret)
            replaced += 1
            stop.wait(0.01)
        return replaced
    rotator = Background(rotate)
    try:
        status, output, summary = harness.run_pgbench(
            ["-n", "-S", "-C", "-c", "8", "-j", "4", "-T", "4"],
            front.env(dbname="pgbench_token"), timeout=120)
    finally:
        stop.set()
    t.note(f"credentials file replaced {rotator.result(30)} times; tps = {summary.get('tps')}")
    check_equal(status, 0, f"pgbench exit status:\n{output[-1500:]}")
    check(summary.get("failed", 0) == 0, f"pgbench reports failed transactions: {summary}")
    check("the IAM token login was refused" not in front.log_text(),
          f"a backend refused a token:\n{front.log_tail(10)}")
    check(f"read new keys from {path} (access key {OTHER_KEY_ID})" in front.log_text(),
          "the front read the replaced file")
    check_no_secrets(front, back)


@test("SIGHUP turning server_auth_token on for a database with a password: new backend logins "
      "sign tokens from then on", sluice_only=True)
def reload_turns_tokens_on(t):
    back = back_sluice(t)
    front = front_sluice(t, back, start=False)
    line = front.databases[harness.APP_DB]
    front.databases[harness.APP_DB] = line.replace("server_auth_token=on", "password=app_pw")
    front.write_config()
    front.start(env=environment_keys())
    status, output = psql(front, "SELECT 1")
    check(status != 0 and "token authentication failed" in output,
          f"a password is no token for the back sluice: {output.strip()}")
    front.databases[harness.APP_DB] = line
    front.write_config()
    front.reload()
    wait_for(lambda: "signing backend tokens with access key" in front.log_text(), 10,
             what="the reload loading the keys")
    status, output = psql(front, "SELECT current_user")
    check_equal(status, 0, f"psql after the reload ({output.strip()})")
    check_equal(output.strip(), "app", "the query ran")


# ---- refused logins --------------------------------------------------------------------------

@test("a key the back sluice does not know (an expired key): psql gets 28P01 with the reason at "
      "once, the front's log names the key and region", sluice_only=True)
def unknown_key_refused(t):
    back = back_sluice(t)
    front = front_sluice(t, back, env=environment_keys(key_id="AKIAEXPIREDKEY000001",
                                                       secret="an-old-secret"))
    log = expect_backend_login_error(t, front, "access key id that is not in auth_token_keys")
    check("access key AKIAEXPIREDKEY000001 for region " + REGION in log,
          "the front's log names the key and region it signed with")
    error = expect_pg_error(lambda: front.wire().login(user="app", password="app_pw"), "28P01",
                            "a raw login through the front")
    check("the database server refused the login" in error.message, f"message: {error.message}")
    check_no_secrets(front, back, secrets=("an-old-secret",))


@test("a wrong secret for a known key: a clear signature error, no hang", sluice_only=True)
def wrong_secret_refused(t):
    back = back_sluice(t)
    front = front_sluice(t, back, env=environment_keys(secret="not-the-secret"))
    expect_backend_login_error(t, front, "auth token signature does not match")
    check_no_secrets(front, back, secrets=(SECRET, "not-the-secret"))


@test("a wrong server_auth_token_region: a clear region error", sluice_only=True)
def wrong_region_refused(t):
    back = back_sluice(t)
    front = front_sluice(t, back, settings={"server_auth_token_region": "us-west-2"})
    log = expect_backend_login_error(t, front, "signed for another region")
    check("for region us-west-2" in log, "the front's log names the region it signed for")


@test("a backend that asks for SCRAM instead of a cleartext password: the login fails with a "
      "message saying the token needs cleartext", sluice_only=True)
def backend_asks_for_scram(t):
    back = back_sluice(t, settings={"auth_type": "scram-sha-256"})
    front = front_sluice(t, back)
    status, output = psql(front, "SELECT 1")
    check(status != 0, "psql logged in")
    check("asks for SCRAM authentication, but server_auth_token sends an IAM token" in output,
          f"psql's message: {output.strip()}")


# ---- configuration ---------------------------------------------------------------------------

@test("server_auth_token=on without server TLS, or without any keys, is refused at start with a "
      "clear message", sluice_only=True)
def refused_at_start(t):
    back = back_sluice(t)
    plain = front_sluice(t, back, settings={"server_tls_sslmode": "prefer"}, start=False)
    plain.start(wait=False, env=environment_keys())
    check(plain.wait_exit(15 * harness.TIMEOUT_SCALE) not in (None, 0), "sluice exits with an error")
    check("server_auth_token=on needs server_tls_sslmode = require, verify-ca or verify-full"
          in plain.log_text(), f"the message: {plain.log_tail(5)}")

    keyless = front_sluice(t, back, start=False)
    keyless.start(wait=False, env=NO_AWS_ENVIRONMENT)
    check(keyless.wait_exit(15 * harness.TIMEOUT_SCALE) not in (None, 0), "sluice exits with an error")
    check("server_auth_token: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
          in keyless.log_text(), f"the message: {keyless.log_tail(5)}")


if __name__ == "__main__":
    raise SystemExit(suite.run())
