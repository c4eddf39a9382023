"""TLS on both sides: clients reaching sluice (client_tls_*) and sluice reaching PostgreSQL
(server_tls_*), with the certificates of tests/tls/make-certs.sh, libpq, psql and raw sockets."""

import hashlib
import io
import os
import shutil
import socket
import ssl
import subprocess
import time

import psycopg2
import psycopg2.errors

import harness
from harness import Background, check, check_equal, expect_pg_error, one_value, wait_for

suite = harness.Suite()
test = suite.test

SERVER_CERT_SERIAL = 4096  # server.crt's serial in make-certs.sh
RENEWED_CERT_SERIAL = 8192  # the one these tests make to replace it


# ---- certificates and settings -------------------------------------------------------------------

def openssl(*args):
    result = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=60)
    check_equal(result.returncode, 0, f"openssl {args[0]} exit status ({result.stdout.strip()})")


def make_server_certificate(certs, directory, name, serial, dns_name="localhost"):
    """A certificate for dns_name (and 127.0.0.1) signed by the test CA; returns (cert, key)."""
    key, csr, ext, cert = (os.path.join(directory, f"{name}.{suffix}")
                           for suffix in ("key", "csr", "ext", "crt"))
    with open(ext, "w") as f:
        f.write("basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n"
                f"subjectAltName = DNS:{dns_name}, IP:127.0.0.1\n")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", f"/CN={dns_name}", "-out", csr)
    openssl("x509", "-req", "-in", csr, "-CA", os.path.join(certs, "ca.crt"), "-CAkey",
            os.path.join(certs, "ca.key"), "-set_serial", str(serial), "-days", "30", "-sha256",
            "-extfile", ext, "-out", cert)
    os.chmod(key, 0o600)
    return cert, key


def client_tls(certs, mode="require", **extra):
    """[sluice] settings for TLS towards clients with the test server certificate."""
    settings = {"client_tls_sslmode": mode,
                "client_tls_key_file": os.path.join(certs, "server.key"),
                "client_tls_cert_file": os.path.join(certs, "server.crt")}
    settings.update(extra)
    return settings


def unix_backend(t):
    """The app database reached over PostgreSQL's unix socket: client-side tests do not depend on
    how PostgreSQL treats TCP connections (it requires TLS from app there, see below)."""
    return {harness.APP_DB: t.cluster.database_line(unix=True)}


def verify_full(certs, **extra):
    """libpq parameters for a client that checks sluice's certificate and host name."""
    params = {"host": "localhost", "sslmode": "verify-full",
              "sslrootcert": os.path.join(certs, "ca.crt")}
    params.update(extra)
    return params


def psql(s, conninfo, sql, password="app_pw"):
    """Runs psql -c sql against conninfo; returns (exit status, output)."""
    env = s.env(password=password)
    return harness.run_tool([harness.pg_tool("psql"), "-X", "-At", "-c", sql, conninfo], env,
                            timeout=30)


def conninfo(s, **params):
    base = {"port": s.port, "dbname": harness.APP_DB, "user": "app", "connect_timeout": 10}
    base.update(params)
    return " ".join(f"{k}={v}" for k, v in base.items())


def presented_certificate(port, ca_file):
    """(serial, SHA-256 of the DER) of the certificate sluice presents after SSLRequest, read with
    Python's ssl module on a raw socket (checked against ca_file and the name localhost)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(harness.request_packet(harness.SSL_REQUEST_CODE))
        check_equal(sock.recv(1), b"S", "answer to SSLRequest")
        context = ssl.create_default_context(cafile=ca_file)
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            info = tls.getpeercert()
            der = tls.getpeercert(binary_form=True)
    finally:
        sock.close()
    return int(info["serialNumber"], 16), hashlib.sha256(der).hexdigest()


def file_fingerprint(cert_file):
    with open(cert_file) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


# ---- PostgreSQL with TLS ------------------------------------------------------------------------

# pg_hba lines put first: over TCP, app must use TLS (the others keep the harness's rules).
HBA_REQUIRE_TLS_FOR_APP = ("hostssl   all app 127.0.0.1/32 scram-sha-256\n"
                           "hostnossl all app 127.0.0.1/32 reject\n")


def postgres_reload(cluster):
    cluster.sql("SELECT pg_reload_conf()", dbname="postgres")


def postgres_ssl_is(cluster, wanted):
    """Waits until new PostgreSQL sessions see ssl = wanted (a reload is asynchronous)."""
    value = "on" if wanted else "off"
    wait_for(lambda: cluster.sql("SHOW ssl", dbname="postgres")[0][0] == value, 10,
             what=f"PostgreSQL to reload with ssl = {value}")


def install_postgres_certificate(cluster, cert, key):
    """Copies cert and key into the data directory, where ssl_cert_file and ssl_key_file point
    by default, owned by the account PostgreSQL runs as."""
    for source, name in ((cert, "server.crt"), (key, "server.key")):
        target = os.path.join(cluster.data_dir, name)
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)
        if cluster.account:
            os.chown(target, *cluster.account)


def tls_postgres(t):
    """The file's cluster with ssl = on (server.crt for localhost) and app required to use TLS
    over TCP (HBA_REQUIRE_TLS_FOR_APP). Idempotent: each server-side test calls it."""
    cluster = t.cluster
    certs = t.certificates()
    hba = os.path.join(cluster.data_dir, "pg_hba.conf")
    with open(hba) as f:
        rules = f.read()
    if cluster.sql("SHOW ssl", dbname="postgres")[0][0] == "on" and rules.startswith(
            HBA_REQUIRE_TLS_FOR_APP):
        return cluster
    install_postgres_certificate(cluster, os.path.join(certs, "server.crt"),
                                 os.path.join(certs, "server.key"))
    if not rules.startswith(HBA_REQUIRE_TLS_FOR_APP):
        with open(hba, "w") as f:
            f.write(HBA_REQUIRE_TLS_FOR_APP + rules)
    cluster.sql("ALTER SYSTEM SET ssl = on", dbname="postgres")
    postgres_reload(cluster)
    postgres_ssl_is(cluster, True)
    return cluster


class PostgresWithoutTls:
    """Within the block PostgreSQL answers SSLRequest with 'N' (ssl = off); after it, ssl = on."""

    def __init__(self, cluster):
        self.cluster = cluster

    def __enter__(self):
        self.cluster.sql("ALTER SYSTEM SET ssl = off", dbname="postgres")
        postgres_reload(self.cluster)
        postgres_ssl_is(self.cluster, False)
        return self.cluster

    def __exit__(self, *exc):
        self.cluster.sql("ALTER SYSTEM SET ssl = on", dbname="postgres")
        postgres_reload(self.cluster)
        postgres_ssl_is(self.cluster, True)
        return False


def localhost_line(cluster, user="app"):
    """A [databases] value reaching PostgreSQL by the name its certificate carries."""
    return cluster.database_line(user=user).replace(f"host={cluster.host} ", "host=localhost ", 1)


def backend_tls(mode, certs, ca="ca.crt", **extra):
    settings = {"server_tls_sslmode": mode}
    if ca:
        settings["server_tls_ca_file"] = os.path.join(certs, ca)
    settings.update(extra)
    return settings


def backend_uses_tls(conn):
    return one_value(conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


# ---- clients to sluice: verify-full, require, the unix socket ---------------------------------

@test("client TLS: psql with sslmode=verify-full, sslrootcert=ca.crt and host=localhost logs in "
      "over TLS", sluice_only=True)
def psql_verify_full(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs), databases=unix_backend(t))
    status, output = psql(s, conninfo(s, **verify_full(certs)), "SELECT 'through sluice over TLS'")
    check_equal(status, 0, f"psql exit status ({output.strip()})")
    check_equal(output.strip(), "through sluice over TLS", "psql output")
    conn = s.connect(**verify_full(certs))
    check(conn.info.ssl_in_use, "libpq reports no TLS on a verify-full connection")
    t.note(f"libpq: {conn.info.ssl_attribute('protocol')} {conn.info.ssl_attribute('cipher')}")
    check_equal(one_value(conn, "SELECT current_user"), "app", "current_user over TLS")


@test("client TLS: verify-full with sslrootcert of an unrelated CA is refused by libpq",
      sluice_only=True)
def client_rejects_unknown_ca(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs), databases=unix_backend(t))
    error = expect_pg_error(
        lambda: s.connect(**verify_full(certs, sslrootcert=os.path.join(certs, "other-ca.crt"))),
        None, "verify-full against an unrelated CA")
    check("certificate verify failed" in str(error), f"libpq's reason: {str(error).strip()}")


@test("client_tls_sslmode=require: a plaintext TCP client gets 28000 before any password is "
      "asked", sluice_only=True)
def require_refuses_plaintext(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs), databases=unix_backend(t))
    wire = s.wire()
    wire.send_startup("app")
    messages = wire.read_until_closed(10)
    kinds = [kind for kind, _ in messages]
    check("R" not in kinds, f"an AuthenticationRequest was sent to a plaintext client: {kinds}")
    errors = harness.error_messages(messages)
    check_equal(len(errors), 1, f"ErrorResponses in {kinds}")
    check_equal(errors[0].get("C"), "28000", "SQLSTATE")
    check("SSL" in errors[0].get("M", "") and "sslmode" in errors[0].get("M", ""),
          f"the message says what to do: {errors[0].get('M')!r}")
    status, output = psql(s, conninfo(s, host="127.0.0.1", sslmode="disable"), "SELECT 1")
    check(status != 0, "psql with sslmode=disable logged in")
    check("SSL connection is required" in output, f"psql's message: {output.strip()}")


@test("client_tls_sslmode=require: sslmode=require over TCP and a plaintext unix socket both "
      "work", sluice_only=True)
def require_allows_tls_and_unix_socket(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs), databases=unix_backend(t))
    tls_conn = s.connect(sslmode="require")
    check(tls_conn.info.ssl_in_use, "sslmode=require connection without TLS")
    check_equal(one_value(tls_conn, "SELECT 'tls'"), "tls", "query over TLS")
    unix_conn = s.connect(unix=True, sslmode="disable")
    check(not unix_conn.info.ssl_in_use, "the unix socket connection uses TLS")
    check_equal(one_value(unix_conn, "SELECT 'unix'"), "unix", "query over the unix socket")


@test("client_tls_sslmode=prefer: both TLS and plaintext clients log in", sluice_only=True)
def prefer_serves_both(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs, mode="prefer"), databases=unix_backend(t))
    check(s.connect(sslmode="require").info.ssl_in_use, "sslmode=require connection without TLS")
    check(not s.connect(sslmode="disable").info.ssl_in_use, "sslmode=disable connection uses TLS")


# ---- client certificates ------------------------------------------------------------------------

@test("direct TLS (PostgreSQL 17 sslnegotiation=direct): ClientHello first with ALPN postgresql "
      "logs in; without ALPN the connection is closed", sluice_only=True)
def direct_tls(t):
    import socket
    import ssl
    import struct
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs, "require", auth_type="trust"), databases=unix_backend(t))
    body = struct.pack("!I", 196608) + b"user\0app\0database\0" + harness.APP_DB.encode() + b"\0\0"
    startup = struct.pack("!I", len(body) + 4) + body

    def attempt(alpn):
        context = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
        if alpn:
            context.set_alpn_protocols(alpn)
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(startup)
                reply = b""
                while len(reply) < 9:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                return tls.selected_alpn_protocol(), reply
        except (ssl.SSLError, ConnectionError) as e:
            return None, repr(e).encode()

    alpn, reply = attempt(["postgresql"])
    check_equal(alpn, "postgresql", "ALPN agreed on a direct TLS connection")
    check_equal(reply[:9], b"R\0\0\0\x08\0\0\0\0", "AuthenticationOk over direct TLS")
    alpn, reply = attempt(None)
    check(not reply.startswith(b"R"), f"a direct TLS client without ALPN got {reply[:20]!r}")


@test("client_tls_sslmode=verify-ca: a client certificate from client_tls_ca_file logs in; none, "
      "or one from another CA, is refused", sluice_only=True)
def client_certificates(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs, mode="verify-ca",
                                     client_tls_ca_file=os.path.join(certs, "ca.crt")),
                 databases=unix_backend(t))
    path = lambda name: os.path.join(certs, name)  # noqa: E731
    conn = s.connect(**verify_full(certs, sslcert=path("client.crt"), sslkey=path("client.key")))
    check_equal(one_value(conn, "SELECT 'with a certificate'"), "with a certificate",
                "query with a client certificate")
    missing = os.path.join(s.dir, "no-such-client.crt")  # libpq goes on without a certificate
    no_cert = expect_pg_error(
        lambda: s.connect(**verify_full(certs, sslcert=missing, sslkey=missing)), None,
        "login without a client certificate")
    other = expect_pg_error(
        lambda: s.connect(**verify_full(certs, sslcert=path("other-client.crt"),
                                        sslkey=path("other-client.key"))), None,
        "login with a certificate from an unrelated CA")
    t.note(f"without a certificate: {str(no_cert).strip()}")
    t.note(f"unrelated CA: {str(other).strip()}")
    check("certificate" in str(no_cert), f"libpq's reason names the certificate: {no_cert}")
    check("unknown ca" in str(other) or "certificate" in str(other),
          f"libpq's reason names the CA: {other}")
    check_equal(one_value(conn, "SELECT 'still here'"), "still here",
                "the first client after two refusals")


@test("client_tls_sslmode=verify-ca: plaintext clients are refused with 28000 too",
      sluice_only=True)
def verify_ca_refuses_plaintext(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs, mode="verify-ca",
                                     client_tls_ca_file=os.path.join(certs, "ca.crt")),
                 databases=unix_backend(t))
    error = expect_pg_error(lambda: s.wire().login(), "28000", "plaintext login")
    check("SSL connection is required" in error.message, f"the message: {error.message!r}")


# ---- protocol versions --------------------------------------------------------------------------

@test("client_tls_protocols = tlsv1.3 refuses a client limited to TLS 1.2 and serves TLS 1.3",
      sluice_only=True)
def protocols_tls13_only(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs, client_tls_protocols="tlsv1.3"),
                 databases=unix_backend(t))
    error = expect_pg_error(
        lambda: s.connect(**verify_full(certs, ssl_max_protocol_version="TLSv1.2")), None,
        "a TLS 1.2 client")
    t.note(f"TLS 1.2 client: {str(error).strip()}")
    check("protocol version" in str(error) or "unsupported protocol" in str(error),
          f"libpq's reason names the protocol version: {error}")
    conn = s.connect(**verify_full(certs))
    check_equal(conn.info.ssl_attribute("protocol"), "TLSv1.3", "protocol negotiated")


@test("client_tls_protocols = tlsv1.2 refuses a client that wants TLS 1.3 only",
      sluice_only=True)
def protocols_tls12_only(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs, client_tls_protocols="tlsv1.2"),
                 databases=unix_backend(t))
    expect_pg_error(lambda: s.connect(**verify_full(certs, ssl_min_protocol_version="TLSv1.3")),
                    None, "a TLS 1.3-only client")
    conn = s.connect(**verify_full(certs))
    check_equal(conn.info.ssl_attribute("protocol"), "TLSv1.2", "protocol negotiated")


# An ECDHE-ECDSA suite (the test certificates hold P-256 keys) that OpenSSL's default order and
# PostgreSQL's (ssl_prefer_server_ciphers) rank below AES-256: chosen only when it is the only one.
TLS12_AES128_CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"


@test("client_tls_ciphers limits the TLS 1.2 ciphers sluice accepts from clients",
      sluice_only=True)
def client_ciphers(t):
    certs = t.certificates()
    default = t.sluice(settings=client_tls(certs, client_tls_protocols="tlsv1.2"),
                       databases=unix_backend(t))
    default_cipher = default.connect(**verify_full(certs)).info.ssl_attribute("cipher")
    check(default_cipher != TLS12_AES128_CIPHER,
          f"with client_tls_ciphers = default the cipher is {default_cipher}")
    s = t.sluice(settings=client_tls(certs, client_tls_protocols="tlsv1.2",
                                     client_tls_ciphers=TLS12_AES128_CIPHER),
                 databases=unix_backend(t))
    check_equal(s.connect(**verify_full(certs)).info.ssl_attribute("cipher"), TLS12_AES128_CIPHER,
                "cipher negotiated with client_tls_ciphers set")


# ---- reload -------------------------------------------------------------------------------------

@test("SIGHUP after replacing cert and key: new connections get the new certificate, a TLS "
      "session from before keeps working", sluice_only=True)
def reload_replaces_certificate(t):
    certs = t.certificates()
    s = t.sluice(settings=None, databases=unix_backend(t), start=False)
    cert, key = os.path.join(s.dir, "tls.crt"), os.path.join(s.dir, "tls.key")
    shutil.copyfile(os.path.join(certs, "server.crt"), cert)
    shutil.copyfile(os.path.join(certs, "server.key"), key)
    s.settings.update(client_tls(certs, client_tls_cert_file=cert, client_tls_key_file=key))
    s.write_config()
    s.start()
    ca = os.path.join(certs, "ca.crt")
    check_equal(presented_certificate(s.port, ca),
                (SERVER_CERT_SERIAL, file_fingerprint(os.path.join(certs, "server.crt"))),
                "certificate before the reload (serial, fingerprint)")
    old_session = s.connect(**verify_full(certs))
    check_equal(one_value(old_session, "SELECT 'before'"), "before", "query before the reload")

    renewed_cert, renewed_key = make_server_certificate(certs, s.dir, "renewed",
                                                        RENEWED_CERT_SERIAL)
    shutil.copyfile(renewed_key, key + ".new")
    shutil.copyfile(renewed_cert, cert + ".new")
    os.replace(key + ".new", key)
    os.replace(cert + ".new", cert)
    s.reload_and_wait()

    check_equal(presented_certificate(s.port, ca),
                (RENEWED_CERT_SERIAL, file_fingerprint(renewed_cert)),
                "certificate after the reload (serial, fingerprint)")
    new_session = s.connect(**verify_full(certs))
    check_equal(one_value(new_session, "SELECT 'new'"), "new", "query on a new TLS session")
    check_equal(one_value(old_session, "SELECT 'after'"), "after",
                "query on the TLS session opened before the reload")
    check(old_session.info.ssl_in_use, "the old session lost TLS")


@test("SIGHUP with a key that does not match the certificate keeps the running certificate",
      sluice_only=True)
def reload_with_mismatched_key_keeps_old(t):
    certs = t.certificates()
    s = t.sluice(settings=None, databases=unix_backend(t), start=False)
    cert, key = os.path.join(s.dir, "tls.crt"), os.path.join(s.dir, "tls.key")
    shutil.copyfile(os.path.join(certs, "server.crt"), cert)
    shutil.copyfile(os.path.join(certs, "server.key"), key)
    s.settings.update(client_tls(certs, client_tls_cert_file=cert, client_tls_key_file=key))
    s.write_config()
    s.start()
    renewed_cert, _ = make_server_certificate(certs, s.dir, "renewed", RENEWED_CERT_SERIAL)
    shutil.copyfile(renewed_cert, cert)  # the key stays the old one: they no longer match
    s.reload_and_wait(refused=True)   # a mismatched key is not accepted
    check("does not match" in s.log_text(), "the log says why:\n" + s.log_tail())
    check_equal(presented_certificate(s.port, os.path.join(certs, "ca.crt"))[0],
                SERVER_CERT_SERIAL, "serial of the certificate still presented")
    conn = s.connect(**verify_full(certs))
    check_equal(one_value(conn, "SELECT 'served'"), "served", "query after the failed reload")


# ---- sluice to PostgreSQL -----------------------------------------------------------------------

@test("server TLS: PostgreSQL requires TLS from app (hostssl); server_tls_sslmode=verify-full with "
      "host=localhost logs in and pg_stat_ssl says ssl", sluice_only=True)
def server_verify_full(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    direct = expect_pg_error(lambda: cluster.connect(dbname=harness.APP_DB, user="app",
                                                     password="app_pw", unix=False),
                             None, "app without TLS, directly (the hostnossl reject rule)")
    check("no encryption" in str(direct), f"PostgreSQL's reason: {str(direct).strip()}")
    s = t.sluice(settings=backend_tls("verify-full", certs),
                 databases={harness.APP_DB: localhost_line(cluster)})
    conn = s.connect()
    check_equal(backend_uses_tls(conn), True, "pg_stat_ssl.ssl of the backend through sluice")
    check_equal(one_value(conn, "SELECT current_user"), "app", "backend user")
    version = one_value(conn, "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    t.note(f"sluice to PostgreSQL: {version}")


@test("server TLS: verify-full with host=127.0.0.1 checks the certificate's IP address",
      sluice_only=True)
def server_verify_full_ip(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    s = t.sluice(settings=backend_tls("verify-full", certs),
                 databases={harness.APP_DB: cluster.database_line()})
    check_equal(backend_uses_tls(s.connect()), True, "pg_stat_ssl.ssl through sluice")


@test("server TLS: verify-full against the wrong CA fails with a clear error to the client",
      sluice_only=True)
def server_verify_full_wrong_ca(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    s = t.sluice(settings=backend_tls("verify-full", certs, ca="other-ca.crt"),
                 databases={harness.APP_DB: localhost_line(cluster)})
    error = expect_pg_error(lambda: s.wire().login(), "08006", "login through sluice")
    t.note(f"client sees: {error.message}")
    check("certificate" in error.message and ("verify failed" in error.message
                                              or "issuer" in error.message),
          f"the message names the certificate check: {error.message!r}")
    check_equal(cluster.count_backends(usename="app"), 0, "backends of app")


@test("server TLS: verify-full refuses a PostgreSQL certificate made for another host name; "
      "verify-ca accepts it", sluice_only=True)
def server_verify_full_host_name(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    work = os.path.join(t.cluster.base_dir, "other-name")
    os.makedirs(work, exist_ok=True)
    cert, key = make_server_certificate(certs, work, "db", 12288, dns_name="db.example.invalid")
    install_postgres_certificate(cluster, cert, key)
    try:
        postgres_reload(cluster)
        wait_for(lambda: presented_postgres_serial(cluster) == 12288, 10,
                 what="PostgreSQL to present the certificate for another name")
        ca_only = t.sluice(settings=backend_tls("verify-ca", certs),
                           databases={harness.APP_DB: localhost_line(cluster)})
        check_equal(backend_uses_tls(ca_only.connect()), True, "verify-ca, pg_stat_ssl.ssl")
        full = t.sluice(settings=backend_tls("verify-full", certs),
                        databases={harness.APP_DB: localhost_line(cluster)})
        error = expect_pg_error(lambda: full.wire().login(), "08006",
                                "verify-full, name mismatch")
        t.note(f"client sees: {error.message}")
        check("hostname mismatch" in error.message or "host name" in error.message,
              f"the message says the host name did not match: {error.message!r}")
    finally:
        install_postgres_certificate(cluster, os.path.join(certs, "server.crt"),
                                     os.path.join(certs, "server.key"))
        postgres_reload(cluster)
        wait_for(lambda: presented_postgres_serial(cluster) == SERVER_CERT_SERIAL, 10,
                 what="PostgreSQL to present server.crt again")


def presented_postgres_serial(cluster):
    """The serial of the certificate PostgreSQL presents now (no verification)."""
    sock = socket.create_connection((cluster.host, cluster.port), timeout=10)
    try:
        sock.sendall(harness.request_packet(harness.SSL_REQUEST_CODE))
        if sock.recv(1) != b"S":
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    finally:
        sock.close()
    result = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                            stdout=subprocess.PIPE, timeout=30)
    return int(result.stdout.decode().strip().split("=", 1)[1], 16)


@test("server TLS: require against a PostgreSQL without SSL fails with a clear error",
      sluice_only=True)
def server_require_without_ssl(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    with PostgresWithoutTls(cluster):
        s = t.sluice(settings=backend_tls("require", certs, ca=None),
                     databases={harness.APP_DB: cluster.database_line(user="scram_user")})
        error = expect_pg_error(lambda: s.wire().login(), "08006", "login through sluice")
        t.note(f"client sees: {error.message}")
        check("does not accept SSL" in error.message, f"the message says why: {error.message!r}")


@test("server TLS: prefer uses TLS when PostgreSQL offers it and falls back to plain when not",
      sluice_only=True)
def server_prefer_falls_back(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    # scram_user may log in without TLS over TCP (only app must use it).
    line = cluster.database_line(user="scram_user")
    with_tls = t.sluice(settings=backend_tls("prefer", certs, ca=None),
                        databases={harness.APP_DB: line})
    check_equal(backend_uses_tls(with_tls.connect()), True, "pg_stat_ssl.ssl with ssl = on")
    with_tls.stop()
    with PostgresWithoutTls(cluster):
        plain = t.sluice(settings=backend_tls("prefer", certs, ca=None),
                         databases={harness.APP_DB: line})
        conn = plain.connect()
        check_equal(backend_uses_tls(conn), False, "pg_stat_ssl.ssl with ssl = off")
        check_equal(one_value(conn, "SELECT current_user"), "scram_user", "backend user")


@test("TLS on both sides at once: verify-full from psql to sluice and from sluice to PostgreSQL",
      sluice_only=True)
def tls_both_sides(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    settings = client_tls(certs)
    settings.update(backend_tls("verify-full", certs))
    s = t.sluice(settings=settings,
                 databases={harness.APP_DB: localhost_line(cluster)})
    status, output = psql(s, conninfo(s, **verify_full(certs)),
                          "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    check_equal(status, 0, f"psql exit status ({output.strip()})")
    check_equal(output.strip(), "t", "pg_stat_ssl.ssl through sluice")


def backend_ssl(conn, column):
    return one_value(conn, f"SELECT {column} FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


@test("server_tls_protocols = tlsv1.2 and server_tls_ciphers: sluice's backend connection uses "
      "that version and cipher (pg_stat_ssl)", sluice_only=True)
def server_protocols_and_ciphers(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    default = t.sluice(settings=backend_tls("verify-full", certs),
                       databases={harness.APP_DB: localhost_line(cluster)})
    check_equal(backend_ssl(default.connect(), "version"), "TLSv1.3",
                "pg_stat_ssl.version with server_tls_protocols = secure")
    s = t.sluice(settings=backend_tls("verify-full", certs, server_tls_protocols="tlsv1.2"),
                 databases={harness.APP_DB: localhost_line(cluster)})
    conn = s.connect()
    check_equal(backend_ssl(conn, "version"), "TLSv1.2", "pg_stat_ssl.version with tlsv1.2")
    check(backend_ssl(conn, "cipher") != TLS12_AES128_CIPHER,
          "with server_tls_ciphers = default PostgreSQL prefers another cipher")
    limited = t.sluice(settings=backend_tls("verify-full", certs, server_tls_protocols="tlsv1.2",
                                            server_tls_ciphers=TLS12_AES128_CIPHER),
                       databases={harness.APP_DB: localhost_line(cluster)})
    check_equal(backend_ssl(limited.connect(), "cipher"), TLS12_AES128_CIPHER,
                "pg_stat_ssl.cipher with server_tls_ciphers set")


class PostgresAsksForCertificates:
    """Within the block PostgreSQL has ssl_ca_file = ca.crt, so it asks clients for a certificate
    (and shows the one given in pg_stat_ssl.client_dn); none is still accepted."""

    def __init__(self, cluster, certs):
        self.cluster = cluster
        self.certs = certs

    def _set(self, value):
        statement = f"ALTER SYSTEM SET ssl_ca_file = '{value}'" if value else \
            "ALTER SYSTEM RESET ssl_ca_file"
        self.cluster.sql(statement, dbname="postgres")
        postgres_reload(self.cluster)
        wait_for(lambda: self.cluster.sql("SHOW ssl_ca_file", dbname="postgres")[0][0] == value,
                 10, what=f"PostgreSQL to reload with ssl_ca_file = {value!r}")

    def __enter__(self):
        target = os.path.join(self.cluster.data_dir, "root.crt")
        shutil.copyfile(os.path.join(self.certs, "ca.crt"), target)
        if self.cluster.account:
            os.chown(target, *self.cluster.account)
        self._set("root.crt")
        return self.cluster

    def __exit__(self, *exc):
        self._set("")
        return False


@test("server_tls_cert_file and server_tls_key_file: sluice presents that certificate to "
      "PostgreSQL (pg_stat_ssl.client_dn)", sluice_only=True)
def server_client_certificate(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    with PostgresAsksForCertificates(cluster, certs):
        without = t.sluice(settings=backend_tls("verify-full", certs),
                           databases={harness.APP_DB: localhost_line(cluster)})
        check_equal(backend_ssl(without.connect(), "client_dn"), None,
                    "pg_stat_ssl.client_dn without server_tls_cert_file")
        s = t.sluice(settings=backend_tls(
            "verify-full", certs, server_tls_cert_file=os.path.join(certs, "client.crt"),
            server_tls_key_file=os.path.join(certs, "client.key")),
            databases={harness.APP_DB: localhost_line(cluster)})
        check_equal(backend_ssl(s.connect(), "client_dn"), "/CN=app",
                    "pg_stat_ssl.client_dn with server_tls_cert_file = client.crt")


# ---- traffic over TLS ---------------------------------------------------------------------------

@test("TLS on both sides: a 20 MB result, a 20 MB COPY FROM STDIN and COPY TO STDOUT arrive "
      "intact", sluice_only=True, timeout=120)
def tls_bulk_data(t):
    cluster = tls_postgres(t)
    certs = t.certificates()
    cluster.sql("DROP TABLE IF EXISTS tls_copy; CREATE TABLE tls_copy (n int, pad text);"
                "GRANT ALL ON tls_copy TO PUBLIC")
    settings = client_tls(certs)
    settings.update(backend_tls("verify-full", certs))
    s = t.sluice(settings=settings, databases={harness.APP_DB: localhost_line(cluster)})
    conn = s.connect(**verify_full(certs))
    big = one_value(conn, "SELECT repeat('0123456789', 2 * 1024 * 1024)")
    check_equal(len(big), 20 * 1024 * 1024, "length of a 20 MB value")
    check_equal(hashlib.sha256(big.encode()).hexdigest(),
                hashlib.sha256(("0123456789" * 2 * 1024 * 1024).encode()).hexdigest(),
                "content of the 20 MB value")
    rows = "".join(f"{n}\t{'x' * 200}-{n}\n" for n in range(100000))
    with conn.cursor() as cur:
        cur.copy_expert("COPY tls_copy FROM STDIN", io.StringIO(rows))
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT n, pad FROM tls_copy ORDER BY n) TO STDOUT", out)
    check_equal(cluster.sql("SELECT count(*), sum(n) FROM tls_copy")[0],
                (100000, sum(range(100000))), "rows copied in")
    check(out.getvalue() == rows, "COPY TO STDOUT differs from what was copied in")


@test("client_tls_sslmode=require: a cancel request (plaintext, as libpq sends it) still cancels "
      "a TLS client's query", sluice_only=True)
def cancel_under_require(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs), databases=unix_backend(t))
    victim = s.connect(**verify_full(certs))
    long_query = Background(one_value, victim, "SELECT pg_sleep(30)")
    wait_for(lambda: any("pg_sleep(30)" in (b["query"] or "") and b["state"] == "active"
                         for b in t.cluster.backends(usename="app")), 10,
             what="the query to start")
    victim.cancel()
    error = long_query.error(10)
    check(isinstance(error, psycopg2.errors.QueryCanceled),
          f"pg_sleep(30) ended with {error!r}, want QueryCanceled")
    check_equal(one_value(victim, "SELECT 'after cancel'"), "after cancel", "next query")


@test("40 clients doing TLS handshakes at once all log in and query", sluice_only=True,
      timeout=120)
def concurrent_handshakes(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs, default_pool_size=4), databases=unix_backend(t))

    def client(n):
        conn = psycopg2.connect(**dict(verify_full(certs), port=s.port, dbname=harness.APP_DB,
                                       user="app", password="app_pw", connect_timeout=20))
        try:
            return one_value(conn, f"SELECT {n}")
        finally:
            conn.close()

    calls = [Background(client, n) for n in range(40)]
    check_equal(sorted(call.result(60) for call in calls), list(range(40)), "answers")


@test("a client that drops or garbles its TLS handshake leaves sluice serving others",
      sluice_only=True)
def broken_handshakes(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs), databases=unix_backend(t))
    for garbage in (b"", b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.0\r\n\r\n" * 10):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sock.sendall(harness.request_packet(harness.SSL_REQUEST_CODE))
        check_equal(sock.recv(1), b"S", "answer to SSLRequest")
        if garbage:
            sock.sendall(garbage)
        sock.settimeout(5)
        try:
            sock.recv(1024)
        except (socket.timeout, OSError):
            pass
        sock.close()
    conn = s.connect(**verify_full(certs))
    check_equal(one_value(conn, "SELECT 'still serving'"), "still serving", "a good client")
    check(s.alive(), "sluice exited")


@test("a client that stalls after 'S' (no ClientHello) is closed after client_login_timeout",
      sluice_only=True)
def stalled_handshake(t):
    certs = t.certificates()
    s = t.sluice(settings=client_tls(certs, client_login_timeout=1), databases=unix_backend(t))
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    try:
        sock.sendall(harness.request_packet(harness.SSL_REQUEST_CODE))
        check_equal(sock.recv(1), b"S", "answer to SSLRequest")
        started = time.monotonic()
        sock.settimeout(10)
        try:
            rest = sock.recv(1024)
        except ConnectionResetError:
            rest = b""
        waited = time.monotonic() - started
    finally:
        sock.close()
    check_equal(rest, b"", "bytes sent to a client that never started its handshake")
    check(waited < 5, f"closed after {waited:.1f}s, client_login_timeout is 1s")
    check(s.connect(**verify_full(certs)).info.ssl_in_use, "a good client afterwards")


@test("SIGHUP from client_tls_sslmode=disable to require: new plaintext clients are refused, "
      "the plaintext session already open keeps working", sluice_only=True)
def reload_turns_tls_on(t):
    certs = t.certificates()
    s = t.sluice(databases=unix_backend(t))
    plain = s.connect()
    check(not plain.info.ssl_in_use, "TLS without client_tls_sslmode")
    s.settings.update(client_tls(certs))
    s.write_config()
    s.reload_and_wait()
    expect_pg_error(lambda: s.wire().login(), "28000", "a new plaintext client")
    check(s.connect(**verify_full(certs)).info.ssl_in_use, "a new TLS client")
    check_equal(one_value(plain, "SELECT 'old plain'"), "old plain",
                "the plaintext session from before the reload")


if __name__ == "__main__":
    raise SystemExit(suite.run())
