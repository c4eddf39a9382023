"""IAM tokens toward the backend (auth_token = on): a front sluice signs an RDS-format token for each
new backend connection and logs in with it over TLS to a back sluice that checks tokens offline
(auth_type = token) in front of PostgreSQL, as RDS would. No password is in the front's files."""

import os

import harness
from harness import APP_DB, check, check_equal, expect_pg_error, wait_for

suite = harness.Suite()
test = suite.test

# The key, region and function user test_token.py's token logins use.
from test_token import FUNCTION_USER, KEY_ID, REGION, SECRET, write_keys  # noqa: E402
BENCH_DB = "tokbench"


def back_sluice(t, dbname=APP_DB):
    """The 'RDS': TLS toward clients, token logins only, logging in to PostgreSQL as app."""
    certs = t.certificates()
    s = t.sluice(databases={dbname: t.cluster.database_line(dbname=dbname)}, users={}, start=False)
    keys_path = os.path.join(s.dir, "token-keys.ini")
    write_keys(keys_path, {KEY_ID: (SECRET, [FUNCTION_USER])})
    s.settings.update({
        "auth_type": "token",
        "auth_token_keys": keys_path,
        "auth_token_region": REGION,
        "auth_token_endpoints": f"127.0.0.1:{s.port}",
        "client_tls_sslmode": "require",
        "client_tls_key_file": os.path.join(certs, "server.key"),
        "client_tls_cert_file": os.path.join(certs, "server.crt"),
    })
    s.write_config()
    s.start()
    return s


def front_sluice(t, back, region=REGION, key_id=KEY_ID, secret=SECRET, expiration=None,
                 dbname=APP_DB, settings=None):
    """The proxy next to the functions: signs a token per backend connection, no password stored."""
    s = t.sluice(databases={dbname: f"host=127.0.0.1 port={back.port} dbname={dbname} "
                                    f"user={FUNCTION_USER} auth_token=on"},
                 users={"app": "app_pw"}, start=False)
    credentials = os.path.join(s.dir, "aws-credentials")
    with open(credentials, "w") as f:
        f.write(f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n")
        if expiration:
            f.write(f"expiration = {expiration}\n")
    os.chmod(credentials, 0o600)
    s.settings.update({"server_tls_sslmode": "require", "server_auth_token_region": region,
                       "server_auth_token_credentials": credentials, "pool_mode": "transaction"})
    s.settings.update(settings or {})
    s.write_config()
    s.start()
    return s


@test("a front sluice logs in to a token-checking back sluice with signed tokens, over TLS",
      sluice_only=True)
def token_chain(t):
    back = back_sluice(t)
    front = front_sluice(t, back)
    conn = front.connect(user="app", password="app_pw")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        check_equal(cur.fetchone()[0], "app", "user at PostgreSQL, behind the back sluice")
    check("password=" not in front.config_text(), "the front's config holds a password")
    check(f"{harness.APP_DB}/{FUNCTION_USER}@" in back.log_text() and "login ok" in back.log_text(),
          f"the back sluice logged no token login:\n{back.log_tail()}")
    check(SECRET not in front.log_text() + back.log_text(), "the secret key reached a log")


@test("pgbench -S -C through the token chain", sluice_only=True, timeout=180)
def token_chain_pgbench(t):
    t.cluster.pgbench_database(BENCH_DB, scale=1)
    back = back_sluice(t, dbname=BENCH_DB)
    front = front_sluice(t, back, dbname=BENCH_DB, settings={"default_pool_size": 4,
                                                             "server_lifetime": 1})
    status, output, summary = harness.run_pgbench(["-n", "-S", "-C", "-c", "8", "-j", "2", "-T", "4",
                                                   BENCH_DB],
                                                  front.env(dbname=BENCH_DB), 120)
    t.note("\n".join(output.splitlines()[-6:]))
    check_equal(status, 0, f"pgbench exit status:\n{output[-1500:]}")
    check(summary.get("processed", 0) > 0, "no transactions")
    check_equal(summary.get("failed", 0), 0, "failed transactions")


def refused_login(t, front, why):
    error = expect_pg_error(lambda: front.wire().login(user="app", password="app_pw"), None,
                            "login through a front sluice whose tokens are refused")
    wait_for(lambda: why in front.log_text(), 10, what=f"'{why}' in the front sluice's log")
    check(SECRET not in front.log_text(), "the secret key reached the log")
    return error


@test("a token for the wrong region: the front sluice's log says why the backend login failed",
      sluice_only=True)
def wrong_region(t):
    back = back_sluice(t)
    front = front_sluice(t, back, region="us-west-2")
    refused_login(t, front, "region")
    log = front.log_text()
    check("login to 127.0.0.1" in log and "token authentication failed" in log,
          f"front log:\n{front.log_tail()}")


@test("an expired key: sluice refuses to sign and says so in its log", sluice_only=True)
def expired_key(t):
    back = back_sluice(t)
    front = front_sluice(t, back, expiration="2020-01-01T00:00:00Z")
    refused_login(t, front, "expired at 2020-01-01 00:00:00 UTC")
    check_equal(back.log_text().count("login ok"), 0, "logins at the back sluice")


@test("a key the back sluice does not know (revoked): the front's log says so", sluice_only=True)
def revoked_key(t):
    back = back_sluice(t)
    front = front_sluice(t, back, key_id="AKIASLUICEREVOKED0001")
    refused_login(t, front, "not in auth_token_keys")


if __name__ == "__main__":
    suite.run()
