"""Settings of conf/sluice.ini whose effect no other file showed: each test fails if the setting
did nothing (checked by disabling its enforcement). tcp_keepalive (the keepalive timer on sluice's
sockets, read from /proc/net/tcp), unix_socket_mode, pidfile, ignore_startup_parameters,
server_reset_query and server_reset_query_always, the [databases] keywords pool_mode, dbname (its
default), connect_query and application_name, [users] auth_type, listen_addr, metrics_listen_addr,
min_pool_size in [sluice], log_connections, log_disconnections, log_pooler_errors, verbose,
syslog/syslog_ident/syslog_facility (through a /dev/log of sluice's own), server_connect_timeout
and server_login_retry. The TLS cipher, protocol and certificate settings are in test_tls.py."""

import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import urllib.request

import harness
from harness import check, check_equal, expect_pg_error, one_value, wait_for

suite = harness.Suite()
test = suite.test

TIMER_KEEPALIVE = 2  # /proc/net/tcp "tr" field: 1 retransmit, 2 keepalive, 4 zero-window probe


def socket_inodes(pid):
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def tcp_sockets(pid):
    """sluice's established TCP sockets: (local port, remote port, timer kind) each."""
    inodes = socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            state, timer, inode = fields[3], fields[5], fields[9]
            if inode not in inodes or state != "01":  # 01: ESTABLISHED
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            found.append((local_port, remote_port, int(timer.split(":")[0], 16)))
    return found


def client_and_backend_timers(s):
    """The timer kinds of sluice's socket to one idle client and of its socket to PostgreSQL,
    once no retransmission is pending on either."""
    conn = s.connect()
    check_equal(one_value(conn, "SELECT 1"), 1, "query")
    state = {}

    def settled():
        sockets = tcp_sockets(s.proc.pid)
        clients = [timer for local, _, timer in sockets if local == s.port]
        backends = [timer for _, remote, timer in sockets if remote == s.cluster.port]
        state.update(clients=clients, backends=backends)
        return len(clients) == 1 and len(backends) == 1 and 1 not in clients + backends
    wait_for(settled, 10, what=f"sluice's client and backend sockets (last seen: {state})")
    return state["clients"][0], state["backends"][0]


@test("tcp_keepalive = 1: sluice's socket to the client and to PostgreSQL run a keepalive timer",
      sluice_only=True)
def tcp_keepalive_on(t):
    s = t.sluice(settings={"tcp_keepalive": 1, "pool_mode": "session"})
    client_timer, backend_timer = client_and_backend_timers(s)
    check_equal(client_timer, TIMER_KEEPALIVE, "timer of sluice's socket to the client")
    check_equal(backend_timer, TIMER_KEEPALIVE, "timer of sluice's socket to PostgreSQL")


@test("tcp_keepalive = 0: neither socket runs a keepalive timer", sluice_only=True)
def tcp_keepalive_off(t):
    s = t.sluice(settings={"tcp_keepalive": 0, "pool_mode": "session"})
    client_timer, backend_timer = client_and_backend_timers(s)
    check_equal(client_timer, 0, "timer of sluice's socket to the client")
    check_equal(backend_timer, 0, "timer of sluice's socket to PostgreSQL")


@test("unix_socket_mode sets the permissions of the unix socket", sluice_only=True)
def unix_socket_mode(t):
    s = t.sluice(settings={"unix_socket_mode": "0700"})
    check_equal(oct(stat.S_IMODE(os.stat(s.unix_socket_path()).st_mode)), oct(0o700),
                "mode of the socket with unix_socket_mode = 0700")
    default = t.sluice()
    check_equal(oct(stat.S_IMODE(os.stat(default.unix_socket_path()).st_mode)), oct(0o777),
                "mode of the socket by default")
    check_equal(one_value(s.connect(unix=True), "SELECT 'over the socket'"), "over the socket",
                "a query over the 0700 socket (as its owner)")


@test("pidfile holds sluice's process id while it runs and is removed when it stops",
      sluice_only=True)
def pidfile(t):
    s = t.sluice(start=False)
    path = os.path.join(s.dir, "sluice.pid")
    s.settings["pidfile"] = path
    s.write_config()
    s.start()
    with open(path) as f:
        check_equal(f.read().strip(), str(s.proc.pid), "contents of the pidfile")
    s.stop()
    check(not os.path.exists(path), "the pidfile is left after sluice stopped")


def backend_extra_float_digits(s):
    wire = s.wire()
    wire.login(extra_float_digits="3")
    return wire.query("SHOW extra_float_digits").first_value()


@test("ignore_startup_parameters: a listed startup parameter is dropped, not set on the backend",
      sluice_only=True)
def ignore_startup_parameters(t):
    plain = t.sluice()
    check_equal(backend_extra_float_digits(plain), "3",
                "extra_float_digits from the startup packet, not ignored")
    s = t.sluice(settings={"ignore_startup_parameters": "extra_float_digits, search_path"})
    check_equal(backend_extra_float_digits(s), "1",
                "extra_float_digits from the startup packet, ignored (PostgreSQL's default)")


def counting_sequence(t, name):
    """A sequence app may call nextval on; returns a function giving how often it was called."""
    t.cluster.sql(f"DROP SEQUENCE IF EXISTS {name}")
    t.cluster.sql(f"CREATE SEQUENCE {name}")
    t.cluster.sql(f"GRANT USAGE, SELECT ON SEQUENCE {name} TO app")

    def calls():
        last_value, is_called = t.cluster.sql(f"SELECT last_value, is_called FROM {name}")[0]
        return last_value if is_called else 0
    return calls


@test("server_reset_query_always = on runs server_reset_query after each transaction in "
      "transaction mode; off does not", sluice_only=True)
def server_reset_query_always(t):
    resets = counting_sequence(t, "settings_reset_calls")
    reset_query = "SELECT nextval('settings_reset_calls')"
    off = t.sluice(settings={"server_reset_query": reset_query})
    conn = off.connect()
    for i in range(3):
        check_equal(one_value(conn, "SELECT %s", (i,)), i, "query with server_reset_query_always off")
    off.stop()
    check_equal(resets(), 0, "server_reset_query runs in transaction mode with the setting off")

    on = t.sluice(settings={"server_reset_query": reset_query, "server_reset_query_always": "on"})
    conn = on.connect()
    for i in range(3):
        check_equal(one_value(conn, "SELECT %s", (i,)), i, "query with server_reset_query_always on")
    wait_for(lambda: resets() >= 3, 10,
             what=f"server_reset_query after each of 3 transactions (ran {resets()} times)")


@test("server_reset_query: the query given is what runs when a session-mode client leaves",
      sluice_only=True)
def server_reset_query_value(t):
    resets = counting_sequence(t, "settings_session_resets")
    s = t.sluice(settings={"pool_mode": "session",
                           "server_reset_query": "SELECT nextval('settings_session_resets')"})
    for i in range(2):
        conn = s.connect()
        check_equal(one_value(conn, "SELECT %s", (i,)), i, f"query of session {i + 1}")
        conn.close()
        wait_for(lambda: resets() == i + 1, 10,
                 what=f"server_reset_query after session {i + 1} (ran {resets()} times)")


def second_client_outcome(s, dbname):
    """A first client runs a query and stays connected, idle; what a second one then gets from
    the same pool of one backend: its query's result, or the error that ended its wait."""
    first = s.connect(dbname=dbname)
    check_equal(one_value(first, "SELECT 'first'"), "first", f"{dbname}: the first client")
    wire = s.wire(timeout=30)
    try:
        wire.login(database=dbname)
        wire.send(harness.query_message("SELECT 'second'"))
        while True:
            kind, payload = wire.read_message()
            if kind == "E":
                return harness.parse_fields(payload).get("C")
            if kind == "D":
                return wire._parse_row(payload)[0]
    except harness.PgError as error:
        return error.sqlstate
    finally:
        first.close()


@test("[databases] pool_mode = session overrides the global transaction mode: an idle client "
      "keeps its backend", sluice_only=True)
def database_pool_mode(t):
    s = t.sluice(settings={"pool_mode": "transaction", "query_wait_timeout": 2},
                 databases={"txdb": t.cluster.database_line(pool_size=1),
                            "sessiondb": t.cluster.database_line(pool_size=1,
                                                                 pool_mode="session")})
    check_equal(second_client_outcome(s, "txdb"), "second",
                "second client of a transaction-mode pool of one")
    check_equal(second_client_outcome(s, "sessiondb"), "57014",
                "second client of a session-mode pool of one (query_wait_timeout's SQLSTATE)")


@test("[databases] without dbname: the backend database is the name clients ask for",
      sluice_only=True)
def database_name_default(t):
    line = t.cluster.database_line().replace(f"dbname={harness.APP_DB} ", "")
    check("dbname=" not in line, f"the line still names dbname: {line}")
    s = t.sluice(databases={harness.APP_DB: line})
    check_equal(one_value(s.connect(), "SELECT current_database()"), harness.APP_DB,
                "current_database() behind an entry without dbname")


@test("[databases] connect_query runs once on each new backend connection", sluice_only=True)
def connect_query(t):
    connects = counting_sequence(t, "settings_connect_calls")
    line = t.cluster.database_line(connect_query="'SELECT nextval(\\'settings_connect_calls\\')'",
                                   pool_size=2)
    s = t.sluice(databases={"connectdb": line})
    first, second = s.connect(dbname="connectdb"), s.connect(dbname="connectdb")
    first.autocommit = second.autocommit = False
    pids = {one_value(first, "SELECT pg_backend_pid()"), one_value(second, "SELECT pg_backend_pid()")}
    check_equal(len(pids), 2, "backends held by two open transactions")
    first.rollback()
    second.rollback()
    for _ in range(3):
        one_value(first, "SELECT 1")
        first.rollback()
    check_equal(connects(), 2, "connect_query runs (two backends opened)")


@test("[databases] application_name is the backends' application_name when the client sends none",
      sluice_only=True)
def database_application_name(t):
    s = t.sluice(databases={"appnamedb": t.cluster.database_line(application_name="from_config")})
    wire = s.wire()
    wire.login(database="appnamedb")
    check_equal(wire.query("SELECT application_name FROM pg_stat_activity "
                           "WHERE pid = pg_backend_pid()").first_value(),
                "from_config", "pg_stat_activity.application_name of the backend")


def log_lines_after(s, mark, needle):
    return [line for line in s.log_text()[mark:].splitlines() if needle in line]


def wrong_password_login(s):
    expect_pg_error(lambda: s.wire().login(password="wrong"), "28P01", "login with a wrong password")


@test("log_connections: 'login ok' is logged when on and not when off", sluice_only=True)
def log_connections(t):
    for value, want in (("on", 1), ("off", 0)):
        s = t.sluice(settings={"log_connections": value})
        mark = len(s.log_text())
        one_value(s.connect(), "SELECT 1")
        wait_for(lambda: len(log_lines_after(s, mark, "login ok")) >= want, 10, what="login line")
        check_equal(len(log_lines_after(s, mark, "login ok")), want,
                    f"'login ok' lines with log_connections = {value}")
        s.stop()


@test("log_disconnections: 'closing because' is logged when on and not when off",
      sluice_only=True)
def log_disconnections(t):
    for value, want in (("on", 1), ("off", 0)):
        s = t.sluice(settings={"log_disconnections": value})
        mark = len(s.log_text())
        conn = s.connect()
        one_value(conn, "SELECT 1")
        conn.close()
        # A client logging in after the close is handled after it: its line marks the close done.
        one_value(s.connect(), "SELECT 2")
        wait_for(lambda: len(log_lines_after(s, mark, "login ok")) >= 2, 10, what="login lines")
        check_equal(len(log_lines_after(s, mark, "closing because")), want,
                    f"'closing because' lines with log_disconnections = {value}")
        s.stop()


@test("log_pooler_errors: an error sluice sends a client is logged when on and not when off",
      sluice_only=True)
def log_pooler_errors(t):
    for value, want in (("on", 1), ("off", 0)):
        s = t.sluice(settings={"log_pooler_errors": value})
        mark = len(s.log_text())
        wrong_password_login(s)
        one_value(s.connect(), "SELECT 1")  # its login line follows the error's
        wait_for(lambda: len(log_lines_after(s, mark, "login ok")) >= 1, 10, what="login line")
        check_equal(len(log_lines_after(s, mark, "error 28P01")), want,
                    f"'error 28P01' lines with log_pooler_errors = {value}")
        s.stop()


@test("verbose = 1 adds DEBUG lines (a backend's login); verbose = 0 has none", sluice_only=True)
def verbose(t):
    for value, want in ((1, True), (0, False)):
        s = t.sluice(settings={"verbose": value})
        one_value(s.connect(), "SELECT 1")
        s.stop()
        check_equal(" DEBUG " in s.log_text() and "logged in, backend pid" in s.log_text(), want,
                    f"DEBUG lines with verbose = {value}")


@test("listen_addr: sluice listens on the address given and not on others", sluice_only=True)
def listen_addr(t):
    s = t.sluice(settings={"listen_addr": "127.0.0.2"}, start=False)
    s.host = "127.0.0.2"  # another loopback address: where clients (and wait_ready) connect
    s.start()
    check_equal(one_value(s.connect(), "SELECT 'on 127.0.0.2'"), "on 127.0.0.2",
                "a query over 127.0.0.2")
    try:
        socket.create_connection(("127.0.0.1", s.port), timeout=5).close()
        raise harness.TestFailure("sluice accepted a connection on 127.0.0.1")
    except ConnectionRefusedError:
        pass


@test("listen_addr = *: every local address; listen_addr empty: the unix socket only",
      sluice_only=True)
def listen_addr_all_and_none(t):
    everywhere = t.sluice(settings={"listen_addr": "*"})
    for address in ("127.0.0.1", "127.0.0.2"):
        socket.create_connection((address, everywhere.port), timeout=5).close()
    unix_only = t.sluice(settings={"listen_addr": ""}, start=False)
    unix_only.start(wait=False)
    wait_for(lambda: os.path.exists(unix_only.unix_socket_path()), 15,
             what="the unix socket of a sluice with listen_addr empty")
    check_equal(one_value(unix_only.connect(unix=True), "SELECT 'unix'"), "unix",
                "a query over the unix socket")
    try:
        socket.create_connection(("127.0.0.1", unix_only.port), timeout=5).close()
        raise harness.TestFailure("sluice with listen_addr empty accepted a TCP connection")
    except ConnectionRefusedError:
        pass


@test("metrics_listen_addr: /metrics is served on the address given and not on others",
      sluice_only=True)
def metrics_listen_addr(t):
    port = harness.free_port()
    s = t.sluice(settings={"metrics_listen_addr": "127.0.0.2", "metrics_port": port})
    one_value(s.connect(), "SELECT 1")
    with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=10) as reply:
        check_equal(reply.status, 200, "GET /metrics on 127.0.0.2")
        check(b"sluice_" in reply.read(), "the body holds sluice's metrics")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        raise harness.TestFailure("the metrics endpoint accepted a connection on 127.0.0.1")
    except ConnectionRefusedError:
        pass


@test("min_pool_size in [sluice] opens backends for a pool before its first client",
      sluice_only=True)
def global_min_pool_size(t):
    line = t.cluster.database_line(application_name="global_min_pool")
    t.sluice(settings={"min_pool_size": 2}, databases={"prewarmdb": line})

    def prewarmed():
        rows = [b for b in t.cluster.backends(usename="app")
                if b["application_name"] == "global_min_pool"]
        return rows if len(rows) == 2 else None
    wait_for(prewarmed, 10, what="two backends for min_pool_size = 2 with no client")


AUTH_OK, AUTH_CLEARTEXT, AUTH_SASL = 0, 3, 10


def first_auth_request(s, user, password):
    wire = s.wire()
    wire.login(user=user, password=password)
    check_equal(wire.auth_requests[-1], AUTH_OK, f"{user}: last authentication message")
    return wire.auth_requests[0]


@test("[users] auth_type overrides auth_type for that user only", sluice_only=True)
def user_auth_type(t):
    s = t.sluice(settings={"auth_type": "scram-sha-256"}, start=False)
    s.write_config(s.config_text() + "\n[users]\napp = auth_type=plain\n")
    s.start()
    check_equal(first_auth_request(s, "app", "app_pw"), AUTH_CLEARTEXT,
                "app's first authentication request ([users] auth_type=plain)")
    check_equal(first_auth_request(s, "scram_user", harness.ROLES["scram_user"][0]), AUTH_SASL,
                "scram_user's first authentication request (auth_type = scram-sha-256)")


class SyslogCapture:
    """A /dev/log of sluice's own: a unix datagram socket in a directory that a private mount
    namespace puts over /dev for the sluice process only (needs root and unshare)."""

    DEVICES = {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9)}

    def __init__(self, s):
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            raise harness.Skip("needs root and unshare(1) to give sluice its own /dev/log")
        self.dev_dir = os.path.join(s.dir, "dev")
        os.makedirs(self.dev_dir)
        for name, (major, minor) in self.DEVICES.items():
            os.mknod(os.path.join(self.dev_dir, name), 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.path.join(self.dev_dir, "log"))
        self.sock.settimeout(0.2)
        self.wrapper = os.path.join(s.dir, "with-own-dev-log.sh")
        with open(self.wrapper, "w") as f:
            f.write("#!/bin/sh\n"
                    "exec unshare --mount --propagation private sh -c "
                    "'mount --bind \"$0\" /dev && exec \"$@\"' "
                    f"'{self.dev_dir}' '{harness.sluice_binary()}' \"$@\"\n")
        os.chmod(self.wrapper, 0o755)
        probe = subprocess.run([self.wrapper, "--version"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise harness.Skip(f"cannot give sluice its own /dev/log: {probe.stderr.strip()}")
        self.messages = []

    def start(self, s):
        previous = os.environ.get("SLUICE_BIN")
        os.environ["SLUICE_BIN"] = self.wrapper
        try:
            s.start()
        finally:
            if previous is None:
                os.environ.pop("SLUICE_BIN")
            else:
                os.environ["SLUICE_BIN"] = previous

    def read(self):
        """The messages received so far, as (facility, severity, text)."""
        while True:
            try:
                data = self.sock.recv(65536).decode(errors="replace")
            except OSError:
                return self.messages
            match = re.match(r"<(\d+)>(.*)", data, re.S)
            if match:
                priority = int(match.group(1))
                self.messages.append((priority >> 3, priority & 7, match.group(2)))

    def close(self):
        self.sock.close()


SYSLOG_FACILITY_CODES = {"auth": 4, "authpriv": 10, "daemon": 3, "user": 1, "local3": 19}


@test("syslog = on sends the log to /dev/log with syslog_ident and syslog_facility, not stderr",
      sluice_only=True)
def syslog(t):
    for facility in ("local3", "auth", "authpriv"):
        s = t.sluice(settings={"syslog": "on", "syslog_ident": f"sluice-{facility}",
                               "syslog_facility": facility}, start=False)
        capture = SyslogCapture(s)
        try:
            capture.start(s)
            one_value(s.connect(), "SELECT 1")
            login = []

            def logged_login():
                login[:] = [m for m in capture.read() if "login ok" in m[2]]
                return login
            wait_for(logged_login, 10, what=f"a 'login ok' line on /dev/log ({capture.messages})")
            got_facility, severity, text = login[0]
            check_equal(got_facility, SYSLOG_FACILITY_CODES[facility],
                        f"facility of the line with syslog_facility = {facility}")
            check_equal(severity, 6, "severity of a LOG line (LOG_INFO)")
            check(f"sluice-{facility}[{s.proc.pid}]:" in text, f"ident and pid in {text!r}")
            check("login ok" not in s.log_text(), "the login line also went to stderr")
            s.stop()
        finally:
            capture.close()


class SilentServer:
    """A TCP server that accepts connections and never answers: a PostgreSQL that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def silent_database(server):
    return f"host=127.0.0.1 port={server.port} dbname=appdb user=app password=app_pw"


class RefusingServer(SilentServer):
    """A TCP server that accepts connections and closes them at once: a PostgreSQL going down."""

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            conn.close()


@test("server_connect_timeout: a PostgreSQL that never answers the login is given up on after it "
      "(and tried again while the client waits); the client's error names the timeout",
      sluice_only=True)
def server_connect_timeout(t):
    server = SilentServer()
    try:
        s = t.sluice(settings={"server_connect_timeout": 1, "query_wait_timeout": 4,
                               "server_login_retry": 1, "client_login_timeout": 30},
                     databases={"silentdb": silent_database(server)})
        error = expect_pg_error(lambda: s.wire(timeout=30).login(database="silentdb"), "08006",
                                "login to a database whose server never answers")
        check("timed out after 1 seconds" in error.message, f"the message: {error.message!r}")
        check("query_wait_timeout" in error.message, f"the message: {error.message!r}")
        # Without the timeout the first connection would hang until query_wait_timeout.
        check(len(server.accepted) >= 2,
              f"connections the silent server saw in 4 s with a 1 s timeout: {len(server.accepted)}")
    finally:
        server.close()


def refused_attempts(t, retry):
    """Connections a server that drops every login sees while one client waits 4 s."""
    server = RefusingServer()
    try:
        s = t.sluice(settings={"server_login_retry": retry, "query_wait_timeout": 4,
                               "client_login_timeout": 30},
                     databases={"silentdb": silent_database(server)})
        expect_pg_error(lambda: s.wire(timeout=30).login(database="silentdb"), "08006",
                        f"login while the server drops every connection, server_login_retry = {retry}")
        s.stop()
        return len(server.accepted)
    finally:
        server.close()


@test("server_login_retry caps the back-off between backend login attempts while clients wait: "
      "with 60 a dropped login is retried after 0.05, 0.1, 0.2... s (a handful of attempts in 4 s), "
      "with 0 every 0.05 s (dozens)", sluice_only=True)
def server_login_retry(t):
    capped_late = refused_attempts(t, 60)
    capped_early = refused_attempts(t, 0)
    t.note(f"attempts in 4 s: {capped_late} with server_login_retry = 60, {capped_early} with 0")
    check(2 <= capped_late <= 12, f"attempts with server_login_retry = 60: {capped_late}")
    check(capped_early >= 20, f"attempts with server_login_retry = 0: {capped_early}")


if __name__ == "__main__":
    raise SystemExit(suite.run())
